package image_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// ubootBin is Debian's U-Boot for QEMU's arm64 virt board (u-boot-qemu).
const ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// needArm64Test skips unless OTGW_TEST_IMAGE_ARM64=1 (make
// test-image-arm64 sets it after make image BOARD=qemu-arm64): TCG
// emulation of an arm64 machine is too slow for CI.
func needArm64Test(t *testing.T) {
	t.Helper()
	if os.Getenv("OTGW_TEST_IMAGE_ARM64") != "1" {
		t.Skip("boots the qemu-arm64 image in qemu-system-aarch64: run `make test-image-arm64` (sets OTGW_TEST_IMAGE_ARM64=1)")
	}
	testenv.NeedRoot(t)
	for _, c := range []string{"qemu-system-aarch64", "sfdisk", "mke2fs", "debugfs", "fw_printenv", "mkimage", "mksquashfs"} {
		testenv.NeedCmd(t, c)
	}
	for _, f := range []string{ubootBin, "/dev/net/tun"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v (apt-get install u-boot-qemu; /dev/net/tun needs the tun module)", f, err)
		}
	}
}

// arm64ImagePath is the qemu-arm64 disk image under test:
// OTGW_IMAGE_ARM64, or what make image BOARD=qemu-arm64 wrote.
func arm64ImagePath(t *testing.T) string { return boardImage(t, "OTGW_IMAGE_ARM64", "qemu-arm64") }

// startArm64 boots the qemu-arm64 image: qemu-system-aarch64 -M virt
// (TCG, Cortex-A57) with Debian's U-Boot as firmware, the disk and the
// NICs on virtio PCI, an i6300esb watchdog on PCI, and the shell socket
// as a virtio console (the guest's hvc0: the virt board has one UART).
func (v *vm) startArm64() {
	v.t.Helper()
	if v.console == "" {
		v.console = filepath.Join(filepath.Dir(v.disk), "console.log")
	}
	monitor := "none"
	if v.monitor != "" {
		_ = os.Remove(v.monitor)
		monitor = "unix:" + v.monitor + ",server=on,wait=off"
	}
	args := []string{
		"-machine", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-display", "none", "-monitor", monitor,
		"-serial", "file:" + v.console,
		"-bios", ubootBin,
		"-drive", "if=none,id=disk,format=raw,cache=unsafe,file=" + v.disk,
		"-device", "virtio-blk-pci,drive=disk,addr=0x3",
		"-netdev", "tap,id=north,fd=3", "-device", "virtio-net-pci,netdev=north,mac=52:54:00:0e:00:01,addr=0x4",
		"-netdev", "tap,id=south,fd=4", "-device", "virtio-net-pci,netdev=south,mac=52:54:00:0e:00:02,addr=0x5",
		"-device", "i6300esb,addr=0x7", "-action", "watchdog=reset",
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
		args = append(args, "-device", "virtio-serial-pci,addr=0x8",
			"-chardev", "socket,id=shell,path="+v.shell+",server=on,wait=off",
			"-device", "virtconsole,chardev=shell")
	}
	v.run("qemu-system-aarch64", args, files)
}

// hmp sends one command to QEMU's human monitor (v.monitor) and returns
// what the monitor answered within a second.
func (v *vm) hmp(cmd string) string {
	v.t.Helper()
	c, err := net.Dial("unix", v.monitor)
	if err != nil {
		v.t.Fatalf("QEMU monitor %s: %v", v.monitor, err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		v.t.Fatalf("QEMU monitor: %q: %v", cmd, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

// ubootEnv reads the image's U-Boot environment with Debian's fw_printenv
// (libubootenv), through an fw_env.config naming the image file at the
// otgw-env partition's offsets (the two copies of the image's
// /etc/fw_env.config): what U-Boot's boot.scr and the slot driver wrote
// must read back with the reference tool.
func ubootEnv(t *testing.T, img string) map[string]string {
	t.Helper()
	off := partStart(t, img, "otgw-env")
	cfg := filepath.Join(t.TempDir(), "fw_env.config")
	text := fmt.Sprintf("%s 0x%x 0x8000\n%s 0x%x 0x8000\n", img, off, img, off+0x8000)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("fw_printenv", "-c", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("fw_printenv -c %s: %v\n%s", cfg, err, out)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// wantEnv fails the test for each variable of want that env does not
// hold with that value ("" = absent or empty).
func wantEnv(t *testing.T, when string, env, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if env[k] != w {
			t.Errorf("U-Boot environment %s: %s=%q, want %q", when, k, env[k], w)
		}
	}
}

var ubootBootingRE = regexp.MustCompile(`^otgw: booting slot-([AB]) \(trial=(\d) tries_left=(\S*) failed_trial=(\S*)\)`)

// TestImageArm64 boots the qemu-arm64 image in qemu-system-aarch64 (TCG)
// with U-Boot, between the Modbus client and server namespaces, and runs
// the A/B update through U-Boot's boot counting:
//
//  0. factory boot: U-Boot picks slot A (no trial), the arm64 kernel boots,
//     otgw runs from slot A and forwards Modbus reads, denies a write.
//  1. `otgw fw install` of a signed v0.2.0 bundle over HTTP inside the VM
//     (the U-Boot environment now holds a trial of B: upgrade_available=1,
//     bootlimit=3, bootcount=0), reboot: boot.scr counts the boot
//     (bootcount=1) and boots B on trial; otgw's health check commits it
//     ("committed" at the syslog receiver; upgrade_available=0,
//     otgw_primary=B, otgw_svn=2).
//  2. v0.3.0 whose otgw cannot start: three trial boots of A (bootcount
//     1, 2, 3), then bootcount 4 > bootlimit 3 runs altbootcmd, B (v0.2.0)
//     boots with failed_trial=slot-A; "rolled_back" reaches syslog, the
//     counter stays 2 and slot A is bad.
//  3. v0.3.1 runs but fails its health check (its south link goes down
//     during the trial period: QEMU's set_link): otgw rolls back
//     ("rolled_back", reason healthcheck) and the init reboots; U-Boot
//     boots B without running altbootcmd, the counter stays 2.
func TestImageArm64(t *testing.T) {
	needArm64Test(t)
	t0 := time.Now()
	src := arm64ImagePath(t)
	keys := os.Getenv("OTGW_IMAGE_KEYS")
	if keys == "" {
		keys = filepath.Join(filepath.Dir(src), "keys")
	}
	signer := buildOTGW(t, "0.2.0")
	v2bin := buildOTGWArch(t, "0.2.0", "arm64")
	broken := filepath.Join(t.TempDir(), "otgw-broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho \"otgw 0.3.0: this release cannot start\" >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v2 := buildBoardBundle(t, "qemu-arm64", "arm64", signer, keys, "0.2.0", 2, v2bin)
	v3 := buildBoardBundle(t, "qemu-arm64", "arm64", signer, keys, "0.3.0", 3, broken)
	v31 := buildBoardBundle(t, "qemu-arm64", "arm64", signer, keys, "0.3.1", 3, buildOTGWArch(t, "0.3.1", "arm64"))
	t.Logf("bundles built after %.0fs", time.Since(t0).Seconds())

	disk := copyImage(t, src, t.TempDir())
	setData(t, disk, map[string]string{
		"policy.yaml": testPolicy,
		"otgw.conf": fmt.Sprintf("OTGW_ARGS=\"--syslog udp://%s:5514?pen=32473 --trial-period 20s\"\nMGMT_IF=eth2\nMGMT_ADDR=%s/24\nSERIAL_SHELL=hvc0\n",
			mgmtHost, mgmtGuest),
	})
	wantEnv(t, "of the factory image", ubootEnv(t, disk), map[string]string{
		"boot_slot": "A", "upgrade_available": "0", "bootcount": "0", "otgw_primary": "A", "otgw_svn": "1", "slot_a_ok": "1", "slot_b_ok": "0",
	})
	l := newLine(t)
	mgmtNS := netns.New(t, "img-mgmt")
	mgmtTap := openTap(t, mgmtNS, "tapmgmt")
	mgmtNS.MustRun("sysctl", "-qw", "net.ipv6.conf.tapmgmt.disable_ipv6=1")
	mgmtNS.Addr("tapmgmt", mgmtHost+"/24")
	bs := &bundleServer{files: map[string]string{"/v2.otgw": v2, "/v3.otgw": v3, "/v31.otgw": v31}, half: make(chan struct{})}
	rx := startMgmt(t, mgmtNS, bs)

	sock := filepath.Join(t.TempDir(), "hvc0.sock")
	v := &vm{t: t, board: "qemu-arm64", disk: disk, north: l.north, south: l.south, mgmt: mgmtTap, shell: sock,
		monitor: filepath.Join(filepath.Dir(sock), "monitor.sock")}
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", tail(v.consoleText(), 80))
		}
	}()

	// 0. Factory boot.
	v.start()
	sh := dialShell(t, sock)
	m, ubootAt := v.waitConsole(ubootBootingRE, 120*time.Second)
	if m[1] != "A" || m[2] != "0" {
		t.Fatalf("U-Boot: booting slot-%s trial=%s, want slot-A without trial", m[1], m[2])
	}
	m, initAt := v.waitConsole(bootedRE, 180*time.Second)
	if m[1] != "A" || m[2] != "0" || m[5] != "0.1.0" {
		t.Fatalf("factory boot: slot=%s trial=%s version=%s, want A, no trial, 0.1.0", m[1], m[2], m[5])
	}
	_, logAt := v.waitConsole(regexp.MustCompile(`level=INFO msg="otgw run: starting"`), 120*time.Second)
	_, runAt := v.waitConsole(regexp.MustCompile(`msg="gateway running" .*board=qemu-arm64 north=eth0 south=eth1`), 120*time.Second)
	readAt := l.readsPass(t, 60*time.Second).Sub(v.started)
	out, err := l.mbpollWrite(t, 1, 4242)
	if err == nil || (!strings.Contains(out, "Illegal function") && !strings.Contains(out, "Illegal data address")) {
		t.Errorf("write of holding register 1 through the arm64 firmware: want a Modbus exception, got %v:\n%s", err, out)
	}
	t.Logf("factory boot (TCG aarch64, 1 vCPU): U-Boot picks the slot %.1fs, init %.1fs, first otgw log line %.1fs, gateway running %.1fs, first Modbus read %.1fs after QEMU start",
		ubootAt.Seconds(), initAt.Seconds(), logAt.Seconds(), runAt.Seconds(), readAt.Seconds())
	sh.drain()

	install, reboot := fwSteps(v, sh, "qemu-arm64")

	// 1. v0.2.0: install, reboot, trial (bootcount 1), health check commits.
	t1 := time.Now()
	out, rc := install("/v2.otgw")
	if rc != 0 {
		t.Fatalf("install v0.2.0: status %d:\n%s", rc, out)
	}
	wantEnv(t, "after installing v0.2.0", ubootEnv(t, disk), map[string]string{
		"boot_slot": "B", "upgrade_available": "1", "bootlimit": "3", "bootcount": "0", "otgw_trial": "B", "otgw_primary": "A",
	})
	mark := reboot()
	m, _ = v.waitConsoleAfter(mark, ubootBootingRE, 180*time.Second)
	if m[1] != "B" || m[2] != "1" || m[3] != "2" {
		t.Fatalf("U-Boot after installing v0.2.0: booting slot-%s trial=%s tries_left=%s, want slot-B, trial, 2 left", m[1], m[2], m[3])
	}
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "1" || m[3] != "2" || m[5] != "0.2.0" {
		t.Fatalf("after installing v0.2.0: slot=%s trial=%s tries_left=%s version=%s, want B, trial, 2 left, 0.2.0", m[1], m[2], m[3], m[5])
	}
	// The boot was counted before the kernel ran: bootcount=1 on the disk.
	wantEnv(t, "on the trial boot of v0.2.0", ubootEnv(t, disk), map[string]string{
		"boot_slot": "B", "upgrade_available": "1", "bootlimit": "3", "bootcount": "1",
	})
	rx.wait(t, 180*time.Second, "committed", "0.2.0")
	sh.drain()
	time.Sleep(time.Second) // margin between the event and reading the disk from outside
	wantEnv(t, "after the commit", ubootEnv(t, disk), map[string]string{
		"boot_slot": "B", "upgrade_available": "0", "bootcount": "0", "otgw_primary": "B", "otgw_trial": "none", "otgw_svn": "2", "otgw_b_state": "good", "slot_b_ok": "1",
	})
	l.readsPass(t, 60*time.Second)
	t.Logf("scenario 1 (install v0.2.0, trial, commit): %.0fs", time.Since(t1).Seconds())
	if os.Getenv("OTGW_TEST_IMAGE_ARM64_SHORT") == "1" {
		t.Logf("TestImageArm64 wall time %.0fs (OTGW_TEST_IMAGE_ARM64_SHORT: rollback scenario not run)", time.Since(t0).Seconds())
		return
	}

	// 2. v0.3.0 cannot run: three trial boots, altbootcmd, back to v0.2.0.
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
	m, _ = v.waitConsoleAfter(mark, regexp.MustCompile(`^otgw: bootcount (\d+) > bootlimit (\d+): running altbootcmd`), 180*time.Second)
	if m[1] != "4" || m[2] != "3" {
		t.Errorf("altbootcmd ran at bootcount %s > bootlimit %s, want 4 > 3", m[1], m[2])
	}
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "0" || m[4] != "slot-A" || m[5] != "0.2.0" {
		t.Fatalf("after v0.3.0's tries: slot=%s trial=%s failed_trial=%s version=%s, want B, no trial, slot-A failed, 0.2.0", m[1], m[2], m[4], m[5])
	}
	rx.wait(t, 180*time.Second, "rolled_back", "0.3.0")
	sh.drain()
	time.Sleep(time.Second)
	wantEnv(t, "after the rollback", ubootEnv(t, disk), map[string]string{
		"boot_slot": "B", "upgrade_available": "0", "otgw_primary": "B", "otgw_svn": "2", "otgw_a_state": "bad", "slot_a_ok": "0",
	})
	l.readsPass(t, 60*time.Second)
	t.Logf("scenario 2 (v0.3.0 fails, 3 tries, altbootcmd, back to v0.2.0): %.0fs", time.Since(t2).Seconds())

	// 3. v0.3.1 fails its health check: rolled back by otgw, not by U-Boot.
	t3 := time.Now()
	out, rc = install("/v31.otgw")
	if rc != 0 {
		t.Fatalf("install v0.3.1: status %d:\n%s", rc, out)
	}
	mark = reboot()
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "A" || m[2] != "1" || m[3] != "2" || m[5] != "0.3.1" {
		t.Fatalf("after installing v0.3.1: slot=%s trial=%s tries_left=%s version=%s, want A, trial, 2 left, 0.3.1", m[1], m[2], m[3], m[5])
	}
	mark = v.mark()
	v.waitConsoleAfter(mark, regexp.MustCompile(`msg="gateway running" .*board=qemu-arm64`), 120*time.Second)
	if reply := v.hmp("set_link south off"); strings.Contains(reply, "not found") || strings.Contains(reply, "rror") {
		t.Fatalf("QEMU set_link south off: %s", reply)
	}
	msg := rx.wait(t, 120*time.Second, "rolled_back", "0.3.1")
	if !strings.Contains(msg, "healthcheck") {
		t.Errorf("rolled_back of v0.3.1: want reason healthcheck, got:\n%s", msg)
	}
	v.hmp("set_link south on")
	m, _ = v.waitConsoleAfter(mark, ubootBootingRE, 180*time.Second)
	if m[1] != "B" || m[2] != "0" || m[4] != "" {
		t.Errorf("U-Boot after the health check failed: booting slot-%s trial=%s failed_trial=%s, want slot-B, no trial, no altbootcmd", m[1], m[2], m[4])
	}
	m, _ = v.waitConsoleAfter(mark, bootedRE, 180*time.Second)
	if m[1] != "B" || m[2] != "0" || m[5] != "0.2.0" {
		t.Fatalf("after v0.3.1's health check failed: slot=%s trial=%s version=%s, want B, no trial, 0.2.0", m[1], m[2], m[5])
	}
	v.waitConsoleAfter(mark, regexp.MustCompile(`msg="gateway running" .*board=qemu-arm64`), 120*time.Second)
	wantEnv(t, "after the health check failed", ubootEnv(t, disk), map[string]string{
		"boot_slot": "B", "upgrade_available": "0", "bootcount": "0", "otgw_primary": "B", "otgw_svn": "2", "otgw_a_state": "bad", "otgw_a_version": "0.3.1",
	})
	l.readsPass(t, 60*time.Second)
	t.Logf("scenario 3 (v0.3.1 fails its health check, otgw rolls back, back to v0.2.0): %.0fs", time.Since(t3).Seconds())
	t.Logf("TestImageArm64 wall time %.0fs", time.Since(t0).Seconds())
}
