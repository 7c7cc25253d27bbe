package image_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// Management network of the update scenarios: the guest's eth2 and a
// host namespace serving bundles over HTTP and receiving syslog.
const (
	mgmtHost  = "198.51.100.1"
	mgmtGuest = "198.51.100.2"
)

// serialShell is the guest's root shell on ttyS1 (SERIAL_SHELL in
// otgw.conf), reached through QEMU's unix socket. One command at a time.
type serialShell struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialShell connects to the VM's second serial port (QEMU listens once
// started; the connection outlives guest reboots).
func dialShell(t *testing.T, path string) *serialShell {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return &serialShell{t: t, conn: c, r: bufio.NewReader(c)}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial shell socket %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var rcMarker = regexp.MustCompile(`__RC=(\d+)__`)

// run runs cmd in the guest and returns its output and exit status.
func (s *serialShell) run(cmd string, timeout time.Duration) (string, int) {
	s.t.Helper()
	_ = s.conn.SetDeadline(time.Now().Add(timeout))
	defer s.conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(s.conn, "stty -echo 2>/dev/null; %s; echo __RC=$?__\n", cmd); err != nil {
		s.t.Fatalf("serial shell: write: %v", err)
	}
	var out strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		out.WriteString(line)
		if m := rcMarker.FindStringSubmatch(line); m != nil {
			rc, _ := strconv.Atoi(m[1])
			text := strings.ReplaceAll(out.String(), "\r", "")
			text = strings.TrimSpace(rcMarker.ReplaceAllString(text, ""))
			return text, rc
		}
		if err != nil {
			s.t.Fatalf("serial shell: %q: %v; output so far:\n%s", cmd, err, out.String())
		}
	}
}

// send writes cmd without waiting (reboot, or a command left running).
func (s *serialShell) send(cmd string) {
	s.t.Helper()
	if _, err := fmt.Fprintf(s.conn, "%s\n", cmd); err != nil {
		s.t.Fatalf("serial shell: write: %v", err)
	}
}

// drain discards what the shell printed so far (prompts, output of
// commands that were sent).
func (s *serialShell) drain() {
	_ = s.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = io.Copy(io.Discard, s.r)
	_ = s.conn.SetReadDeadline(time.Time{})
	s.r.Reset(s.conn)
}

// guestEnv reads the grubenv in the running guest.
func (s *serialShell) guestEnv() map[string]string {
	s.t.Helper()
	out, rc := s.run("cat /boot/grub/grubenv", 20*time.Second)
	if rc != 0 {
		s.t.Fatalf("cat /boot/grub/grubenv: status %d:\n%s", rc, out)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimLeft(line, "#"), "="); ok && !strings.HasPrefix(line, "#") {
			vars[k] = v
		}
	}
	return vars
}

// bundleServer serves firmware bundles over HTTP in the management
// namespace. A path in throttle is sent slowly after its first half, and
// half is closed when that half has been sent (the moment for a power
// cut).
type bundleServer struct {
	files    map[string]string // URL path → bundle file
	throttle string
	half     chan struct{}
	halfOnce sync.Once
	served   atomic.Int64
}

func (b *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := b.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.URL.Path != b.throttle {
		_, _ = w.Write(data)
		return
	}
	mid := len(data) / 2
	_, _ = w.Write(data[:mid])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	b.served.Store(int64(mid))
	b.halfOnce.Do(func() { close(b.half) })
	for off := mid; off < len(data); off += 4096 {
		_, err := w.Write(data[off:min(off+4096, len(data))])
		if err != nil {
			return
		}
		b.served.Add(4096)
		time.Sleep(100 * time.Millisecond) // 40 KiB/s: the power cut comes first
	}
}

// syslogReceiver collects the datagrams the gateway sends to
// udp://host:5514 (RFC 5424; PEN 32473 is RFC 5612's example number).
type syslogReceiver struct {
	mu   sync.Mutex // guards msgs
	msgs []string
}

func (s *syslogReceiver) all() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.msgs, "\n")
}

// wait waits until a received message contains every one of parts.
func (s *syslogReceiver) wait(t *testing.T, timeout time.Duration, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		for _, m := range s.msgs {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(m, p)
			}
			if ok {
				s.mu.Unlock()
				return m
			}
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no syslog message with %q within %v; received:\n%s", parts, timeout, tail(s.all(), 30))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// startMgmt starts the HTTP bundle server (port 8080) and the syslog
// receiver (UDP 5514) inside ns, on mgmtHost.
func startMgmt(t *testing.T, ns *netns.NS, bs *bundleServer) *syslogReceiver {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", mgmtHost+":8080"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", mgmtHost+":5514")
		return err
	})
	if err != nil {
		t.Fatalf("management services: %v", err)
	}
	srv := &http.Server{Handler: bs, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	rx := &syslogReceiver{}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			rx.mu.Lock()
			rx.msgs = append(rx.msgs, string(buf[:n]))
			rx.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return rx
}

// buildOTGW builds cmd/otgw as release version (static, as the image's):
// the otgw of a bundle, and the host's signing tool.
func buildOTGW(t *testing.T, version string) string {
	t.Helper()
	return buildOTGWArch(t, version, "")
}

// buildOTGWArch is buildOTGW for GOARCH goarch ("" for the host's).
func buildOTGWArch(t *testing.T, version, goarch string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "otgw")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./cmd/otgw")
	cmd.Dir = testenv.ModuleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if goarch != "" {
		cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+goarch)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build otgw: %v\n%s", err, out)
	}
	return bin
}

// buildBundle makes a root slot with mkimage.sh --slot-only (release
// version, otgw binary bin) and signs it with the image's release key.
func buildBundle(t *testing.T, signer, keys, version string, svn int, bin string) string {
	t.Helper()
	return buildBoardBundle(t, "x86-generic", "amd64", signer, keys, version, svn, bin)
}

// buildBoardBundle is buildBundle for a board's slot (arch: its GOARCH);
// signer is a host otgw, which also stands in for bin where mkimage.sh
// needs an otgw to run (OTGW_TOOL).
func buildBoardBundle(t *testing.T, board, arch, signer, keys, version string, svn int, bin string) string {
	t.Helper()
	dir := t.TempDir()
	slot := filepath.Join(dir, "slot-"+version+".sqfs")
	root := testenv.ModuleRoot(t)
	cmd := exec.Command(filepath.Join(root, "board", "image", "mkimage.sh"), "--slot-only", board, slot)
	cmd.Env = append(os.Environ(), "IMAGE_VERSION="+version, "IMAGE_KEYS="+keys, "IMAGE_WORK="+filepath.Join(dir, "work"), "OTGW_BIN="+bin, "OTGW_TOOL="+signer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkimage.sh --slot-only %s %s: %v\n%s", board, version, err, out)
	}
	bundle := filepath.Join(dir, "otgw-"+version+".otgw")
	out, err := exec.Command(signer, "fw", "sign", "--key", filepath.Join(keys, "release.key"),
		"--version", version, "--svn", strconv.Itoa(svn), "--board", board, "--arch", arch,
		"--out", bundle, slot).CombinedOutput()
	if err != nil {
		t.Fatalf("otgw fw sign %s: %v\n%s", version, err, out)
	}
	return bundle
}

var bootedRE = regexp.MustCompile(`^otgw-image: booted slot=(\S*) trial=(\S*) tries_left=(\S*) failed_trial=(\S*) version=(\S+)`)

// TestImageUpdate runs the firmware update scenarios of issue 16 on the
// x86-generic image, through the CLI inside the VM and the real GRUB:
//
//  1. v0.2.0 installed over HTTP, reboot, the trial runs and otgw's
//     health check commits it (slot B, counter 2, "committed" at the
//     syslog receiver).
//  2. v0.3.0 whose otgw cannot run: every trial boot fails, GRUB spends
//     the tries and boots v0.2.0 again; the counter stays 2 and
//     "rolled_back" reaches syslog.
//  3. the power is cut in the middle of installing v0.3.0 again: v0.2.0
//     boots, and the interrupted install is reported.
//
// It needs an otgw with the GRUB slot driver and the trial health check
// (issue 16 items 2 and 3): the image must carry a boot state written by
// `otgw fw provision`.
func TestImageUpdate(t *testing.T) {
	needImageTest(t)
	t0 := time.Now()
	src := imagePath(t)
	env := grubenv(t, src)
	if env["otgw_seq"] == "" {
		t.Skip("the image's otgw has no GRUB slot driver (its grubenv holds no otgw_* boot state): the update scenarios need issue 16 item 2")
	}
	keys := os.Getenv("OTGW_IMAGE_KEYS")
	if keys == "" {
		keys = filepath.Join(filepath.Dir(src), "keys")
	}
	signer := buildOTGW(t, "0.2.0") // also v0.2.0's otgw
	broken := filepath.Join(t.TempDir(), "otgw-broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho \"otgw 0.3.0: this release cannot start\" >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v2 := buildBundle(t, signer, keys, "0.2.0", 2, signer)
	v3 := buildBundle(t, signer, keys, "0.3.0", 3, broken)
	t.Logf("bundles built after %.0fs", time.Since(t0).Seconds())

	disk := copyImage(t, src, t.TempDir())
	setData(t, disk, map[string]string{
		"policy.yaml": testPolicy,
		"otgw.conf": fmt.Sprintf("OTGW_ARGS=\"--syslog udp://%s:5514?pen=32473 --trial-period 20s\"\nMGMT_IF=eth2\nMGMT_ADDR=%s/24\nSERIAL_SHELL=ttyS1\n",
			mgmtHost, mgmtGuest),
	})
	l := newLine(t)
	mgmtNS := netns.New(t, "img-mgmt")
	mgmtTap := openTap(t, mgmtNS, "tapmgmt")
	mgmtNS.MustRun("sysctl", "-qw", "net.ipv6.conf.tapmgmt.disable_ipv6=1")
	mgmtNS.Addr("tapmgmt", mgmtHost+"/24")
	bs := &bundleServer{
		files:    map[string]string{"/v2.otgw": v2, "/v3.otgw": v3, "/v3-slow.otgw": v3},
		throttle: "/v3-slow.otgw",
		half:     make(chan struct{}),
	}
	rx := startMgmt(t, mgmtNS, bs)

	sock := filepath.Join(t.TempDir(), "ttyS1.sock")
	v := &vm{t: t, disk: disk, north: l.north, south: l.south, mgmt: mgmtTap, shell: sock}
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", tail(v.consoleText(), 80))
		}
	}()
	v.start()
	sh := dialShell(t, sock)
	m, _ := v.waitConsole(bootedRE, 180*time.Second)
	if m[1] != "A" || m[5] != "0.1.0" {
		t.Fatalf("factory boot: slot=%s version=%s, want A 0.1.0", m[1], m[5])
	}
	v.waitConsole(regexp.MustCompile(`msg="gateway running"`), 120*time.Second)
	sh.drain()

	install, reboot := fwSteps(v, sh, "x86-generic")

	// 1. v0.2.0: install, reboot, trial, commit.
	t1 := time.Now()
	out, rc := install("/v2.otgw")
	if rc != 0 {
		t.Fatalf("install v0.2.0: status %d:\n%s", rc, out)
	}
	if e := sh.guestEnv(); e["boot_once"] != "slot-B" || e["boot_tries"] != "3" || e["saved_entry"] != "slot-A" {
		t.Fatalf("grubenv after install: boot_once=%q boot_tries=%q saved_entry=%q, want a trial of slot-B with 3 tries over slot-A", e["boot_once"], e["boot_tries"], e["saved_entry"])
	}
	mark := reboot()
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "1" || m[3] != "2" || m[5] != "0.2.0" {
		t.Fatalf("after installing v0.2.0: slot=%s trial=%s tries_left=%s version=%s, want B, trial, 2 left, 0.2.0", m[1], m[2], m[3], m[5])
	}
	rx.wait(t, 120*time.Second, "committed", "0.2.0")
	sh.drain()
	e := sh.guestEnv()
	if e["saved_entry"] != "slot-B" || e["boot_once"] != "" || e["otgw_svn"] != "2" {
		t.Errorf("grubenv after commit: saved_entry=%q boot_once=%q otgw_svn=%q, want slot-B, none, 2", e["saved_entry"], e["boot_once"], e["otgw_svn"])
	}
	l.readsPass(t, 30*time.Second)
	t.Logf("scenario 1 (install v0.2.0, trial, commit): %.0fs", time.Since(t1).Seconds())

	// 2. v0.3.0 cannot run: tries spent, GRUB falls back to v0.2.0.
	t2 := time.Now()
	out, rc = install("/v3.otgw")
	if rc != 0 {
		t.Fatalf("install v0.3.0: status %d:\n%s", rc, out)
	}
	mark = reboot()
	for try := 1; try <= 3; try++ {
		m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
		if m[1] != "A" || m[2] != "1" || m[3] != strconv.Itoa(3-try) || m[5] != "0.3.0" {
			t.Fatalf("trial boot %d of v0.3.0: slot=%s trial=%s tries_left=%s version=%s, want A, trial, %d left, 0.3.0", try, m[1], m[2], m[3], m[5], 3-try)
		}
		mark = v.mark()
	}
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "0" || m[4] != "slot-A" || m[5] != "0.2.0" {
		t.Fatalf("after v0.3.0's tries: slot=%s trial=%s failed_trial=%s version=%s, want B, no trial, slot-A failed, 0.2.0", m[1], m[2], m[4], m[5])
	}
	rx.wait(t, 120*time.Second, "rolled_back", "0.3.0")
	sh.drain()
	e = sh.guestEnv()
	if e["saved_entry"] != "slot-B" || e["boot_once"] != "" || e["otgw_svn"] != "2" || e["otgw_a_state"] != "bad" {
		t.Errorf("grubenv after the rollback: saved_entry=%q boot_once=%q otgw_svn=%q otgw_a_state=%q, want slot-B, none, 2 (unchanged), bad", e["saved_entry"], e["boot_once"], e["otgw_svn"], e["otgw_a_state"])
	}
	l.readsPass(t, 30*time.Second)
	t.Logf("scenario 2 (v0.3.0 fails, 3 tries, back to v0.2.0): %.0fs", time.Since(t2).Seconds())

	// 3. Power cut in the middle of an install.
	t3 := time.Now()
	sh.send(fmt.Sprintf("otgw fw install --board x86-generic --root /etc/otgw/root.json http://%s:8080/v3-slow.otgw >/tmp/install.log 2>&1 &", mgmtHost))
	select {
	case <-bs.half:
	case <-time.After(120 * time.Second):
		t.Fatal("the guest did not fetch half of the bundle within 120s")
	}
	time.Sleep(2 * time.Second) // the installer is writing slot A now
	v.kill()
	cutAt := bs.served.Load()
	v.start()
	sh = dialShell(t, sock)
	m, _ = v.waitConsole(bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "0" || m[5] != "0.2.0" {
		t.Fatalf("after the power cut: slot=%s trial=%s version=%s, want B, no trial, 0.2.0", m[1], m[2], m[5])
	}
	rx.wait(t, 120*time.Second, "interrupted")
	sh.drain()
	e = sh.guestEnv()
	if e["saved_entry"] != "slot-B" || e["boot_once"] != "" || e["otgw_svn"] != "2" {
		t.Errorf("grubenv after the power cut: saved_entry=%q boot_once=%q otgw_svn=%q, want slot-B, none, 2", e["saved_entry"], e["boot_once"], e["otgw_svn"])
	}
	l.readsPass(t, 30*time.Second)
	t.Logf("scenario 3 (power cut after %d bytes of the bundle): %.0fs", cutAt, time.Since(t3).Seconds())
	t.Logf("TestImageUpdate wall time %.0fs", time.Since(t0).Seconds())
}

// fwSteps returns the two steps of an update test on the guest: install
// the bundle at path (served by the test's HTTP server on the management
// network) for board, with its output and status, and reboot, with the
// console mark the next boot's output follows.
func fwSteps(v *vm, sh *serialShell, board string) (install func(path string) (string, int), reboot func() int) {
	install = func(path string) (string, int) {
		return sh.run(fmt.Sprintf("otgw fw install --board %s --root /etc/otgw/root.json http://%s:8080%s 2>&1", board, mgmtHost, path), 300*time.Second)
	}
	reboot = func() int {
		mark := v.mark()
		sh.send("sync; reboot -f")
		return mark
	}
	return install, reboot
}
