package image_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// ovmfCode and ovmfVars are Debian's OVMF (package ovmf) UEFI firmware.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// needImageTest skips unless OTGW_TEST_IMAGE=1 (make test-image sets it
// after make image): the test boots a whole firmware under emulation and
// takes about a minute of CPU.
func needImageTest(t *testing.T) {
	t.Helper()
	if os.Getenv("OTGW_TEST_IMAGE") != "1" {
		t.Skip("boots the firmware image in QEMU: run `make test-image` (sets OTGW_TEST_IMAGE=1)")
	}
	testenv.NeedRoot(t)
	testenv.NeedCmd(t, "qemu-system-x86_64")
	testenv.NeedCmd(t, "sfdisk")
	testenv.NeedCmd(t, "mke2fs")
	testenv.NeedCmd(t, "mtype")
	for _, f := range []string{ovmfCode, ovmfVars, "/dev/net/tun"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v (apt-get install ovmf; /dev/net/tun needs the tun module)", f, err)
		}
	}
}

// imagePath is the x86-generic disk image under test: OTGW_IMAGE, or what
// make image wrote.
func imagePath(t *testing.T) string { return boardImage(t, "OTGW_IMAGE", "x86-generic") }

// boardImage is board's disk image under test: the path in the
// environment variable env, or what make image BOARD=board wrote.
func boardImage(t *testing.T, env, board string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(testenv.ModuleRoot(t), "dist", "image", board+".img")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v: build it with `make image BOARD=%s`", err, board)
	}
	return p
}

// copyImage copies the image (sparse) into dir, so each test boots its
// own disk.
func copyImage(t *testing.T, src, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v: %s", src, err, out)
	}
	return dst
}

// setData provisions the image's data partition from files (name →
// content) with board/image/setdata.sh, as an operator would.
func setData(t *testing.T, img string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(testenv.ModuleRoot(t), "board", "image", "setdata.sh")
	if out, err := exec.Command(script, img, dir).CombinedOutput(); err != nil {
		t.Fatalf("setdata.sh: %v: %s", err, out)
	}
}

// partStart returns the byte offset of the GPT partition named name.
func partStart(t *testing.T, img, name string) int64 {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -d %s: %v", img, err)
	}
	re := regexp.MustCompile(`start=\s*(\d+),.*name="` + regexp.QuoteMeta(name) + `"`)
	m := re.FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s has no partition %q:\n%s", img, name, out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n * 512
}

// grubenv reads /grub/grubenv from the image's ESP (mtools, no mount)
// and returns its variables.
func grubenv(t *testing.T, img string) map[string]string {
	t.Helper()
	return grubenvFile(t, img, "/grub/grubenv")
}

// grubenvFile reads an environment block file from the ESP.
func grubenvFile(t *testing.T, img, file string) map[string]string {
	t.Helper()
	off := partStart(t, img, "otgw-esp")
	out, err := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, off), "::"+file).Output()
	if err != nil {
		t.Fatalf("mtype %s: %v", file, err)
	}
	if len(out) != 1024 || !bytes.HasPrefix(out, []byte("# GRUB Environment Block\n")) {
		t.Fatalf("grubenv is not a 1024-byte environment block (%d bytes):\n%q", len(out), out)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			vars[k] = v
		}
	}
	return vars
}

// openTap creates a tap device named name inside ns and returns its
// queue file descriptor, which QEMU takes over (-netdev tap,fd=N): the
// interface lives in the namespace, never in the host's.
func openTap(t *testing.T, ns *netns.NS, name string) *os.File {
	t.Helper()
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "tap:"+name)
		return nil
	})
	if err != nil {
		t.Fatalf("tap %s in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	ns.Up(name)
	return f
}

// vm is one QEMU run of the image: serial console to a file, the
// board's firmware (x86-generic: UEFI from OVMF; qemu-arm64: U-Boot),
// virtio disk, two virtio NICs on tap fds (north first: the guest's
// eth0), an i6300esb watchdog (the board's /dev/watchdog0).
type vm struct {
	t       *testing.T
	board   string // "" is x86-generic
	disk    string
	console string // serial console log
	north   *os.File
	south   *os.File
	mgmt    *os.File // optional third NIC (guest eth2), a tap fd
	shell   string   // optional unix socket for the guest's ttyS1 (qemu-arm64: hvc0)
	monitor string   // optional unix socket for QEMU's human monitor (qemu-arm64)
	// noReboot makes a guest reboot end QEMU (-no-reboot), so a test
	// that looks at one boot sees no second one change the grubenv.
	noReboot bool

	mu      sync.Mutex // guards cmd, started, exited
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
}

// start boots the VM. It returns at once; use waitConsole.
func (v *vm) start() {
	v.t.Helper()
	if v.board == "qemu-arm64" {
		v.startArm64()
		return
	}
	dir := filepath.Dir(v.disk)
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	if _, err := os.Stat(vars); err != nil {
		b, err := os.ReadFile(ovmfVars)
		if err != nil {
			v.t.Fatal(err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			v.t.Fatal(err)
		}
	}
	if v.console == "" {
		v.console = filepath.Join(dir, "console.log")
	}
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-monitor", "none",
		"-serial", "file:" + v.console,
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "if=virtio,format=raw,cache=unsafe,file=" + v.disk,
		"-netdev", "tap,id=north,fd=3", "-device", "virtio-net-pci,netdev=north,mac=52:54:00:0e:00:01,addr=0x4",
		"-netdev", "tap,id=south,fd=4", "-device", "virtio-net-pci,netdev=south,mac=52:54:00:0e:00:02,addr=0x5",
		"-device", "i6300esb", "-action", "watchdog=reset",
	}
	files := []*os.File{v.north, v.south}
	if v.mgmt != nil {
		files = append(files, v.mgmt)
		args = append(args, "-netdev", "tap,id=mgmt,fd=5", "-device", "virtio-net-pci,netdev=mgmt,mac=52:54:00:0e:00:03,addr=0x6")
	}
	if v.noReboot {
		args = append(args, "-no-reboot")
	}
	if v.shell != "" {
		_ = os.Remove(v.shell)
		args = append(args, "-serial", "unix:"+v.shell+",server=on,wait=off")
	}
	v.run("qemu-system-x86_64", args, files)
}

// run starts QEMU (qemu with args, tap fds files as fd 3, 4, ...) with a
// fresh console file and stops it when the test ends.
func (v *vm) run(qemu string, args []string, files []*os.File) {
	v.t.Helper()
	cmd := exec.Command(qemu, args...)
	cmd.ExtraFiles = files
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	// A fresh console file per boot, so waitConsole sees only this boot.
	_ = os.Remove(v.console)
	if err := cmd.Start(); err != nil {
		v.t.Fatalf("%s: %v", qemu, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	v.mu.Lock()
	v.cmd, v.started, v.exited = cmd, time.Now(), exited
	v.mu.Unlock()
	v.t.Cleanup(func() {
		v.kill()
		if s := stderr.String(); strings.TrimSpace(s) != "" && v.t.Failed() {
			v.t.Logf("qemu stderr:\n%s", s)
		}
	})
}

// kill stops QEMU at once (a power cut for the guest) and waits for it.
func (v *vm) kill() {
	v.mu.Lock()
	cmd, exited := v.cmd, v.exited
	v.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL) // the process group we created, by PID
	<-exited
}

// consoleText returns the serial console so far, without CRs and the
// firmware's terminal escapes.
func (v *vm) consoleText() string {
	b, _ := os.ReadFile(v.console)
	b = bytes.ReplaceAll(b, []byte("\r"), nil)
	return ansi.ReplaceAllString(string(b), "")
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;=?]*[A-Za-z]`)

// waitConsole waits until a console line matches re and returns the
// submatches and the time since QEMU started. It fails the test after
// timeout, or when QEMU exits first.
func (v *vm) waitConsole(re *regexp.Regexp, timeout time.Duration) ([]string, time.Duration) {
	v.t.Helper()
	return v.waitConsoleAfter(0, re, timeout)
}

// mark returns the console's current length, for waitConsoleAfter.
func (v *vm) mark() int { return len(v.consoleText()) }

// waitConsoleAfter is waitConsole on the console text after mark (what
// came after an earlier point, e.g. the next boot).
func (v *vm) waitConsoleAfter(mark int, re *regexp.Regexp, timeout time.Duration) ([]string, time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		text := v.consoleText()
		if mark <= len(text) {
			text = text[mark:]
		}
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				return m, time.Since(v.started)
			}
		}
		select {
		case <-v.exited:
			v.t.Fatalf("QEMU exited before the console showed %q; console:\n%s", re, tail(v.consoleText(), 60))
		default:
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("console did not show %q within %v; console:\n%s", re, timeout, tail(v.consoleText(), 60))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startPymodbus starts simulate/peers/modbus_server.py (Debian's
// python3-pymodbus) in ns on port 502 and waits until it listens.
func startPymodbus(t *testing.T, ns *netns.NS) {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import pymodbus.server").CombinedOutput(); err != nil {
		testenv.NeedCmd(t, "python3-pymodbus at /usr/bin/python3 ("+strings.TrimSpace(string(out))+")")
	}
	script := filepath.Join(testenv.ModuleRoot(t), "simulate", "peers", "modbus_server.py")
	var out syncBuffer
	ns.Start(&out, py, script, "--port", "502")
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:502", 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pymodbus not listening within 15s: %v\n%s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reader.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeGrubenv replaces /grub/grubenv (and, with bak, /grub/grubenv.bak)
// on the image's ESP by a 1024-byte environment block holding vars, as
// grub-editenv writes it.
func writeGrubenv(t *testing.T, img string, vars map[string]string, files ...string) {
	t.Helper()
	b := []byte("# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\n")
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = append(b, k+"="+vars[k]+"\n"...)
	}
	if len(b) > 1024 {
		t.Fatalf("grubenv of %d bytes", len(b))
	}
	b = append(b, bytes.Repeat([]byte("#"), 1024-len(b))...)
	writeESP(t, img, b, files...)
}

// writeESP writes content to each of files (paths on the ESP).
func writeESP(t *testing.T, img string, content []byte, files ...string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "esp-file")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	off := partStart(t, img, "otgw-esp")
	for _, f := range files {
		if out, err := exec.Command("mcopy", "-o", "-i", fmt.Sprintf("%s@@%d", img, off), src, "::"+f).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %s: %v: %s", f, err, out)
		}
	}
}

// copySlot copies partition otgw-a onto otgw-b (the same release in both
// slots), as an install of the running image into the other slot would.
func copySlot(t *testing.T, img string) {
	t.Helper()
	a, b := partStart(t, img, "otgw-a"), partStart(t, img, "otgw-b")
	size := b - a
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, a); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(buf, b); err != nil {
		t.Fatal(err)
	}
}
