package image_test

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// testPolicy lets the client (hmi, north) read holding registers 0-99 of
// unit 1 on the server (plc, south) and nothing else; a denied request
// gets a Modbus exception.
const testPolicy = `version: 1
name: image-test
mode: enforce
action: reply
zones:
  clients: { port: north, networks: [192.0.2.1/32] }
  servers: { port: south, networks: [192.0.2.2/32] }
assets:
  hmi: { ip: 192.0.2.1, zone: clients }
  plc: { ip: 192.0.2.2, zone: servers }
l2: { allow: [arp] }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
`

// line is the test topology: client ns — tap north — VM — tap south —
// server ns, with the pymodbus server running.
type line struct {
	client, server *netns.NS
	north, south   *os.File
}

func newLine(t *testing.T) *line {
	t.Helper()
	l := &line{client: netns.New(t, "img-cli"), server: netns.New(t, "img-srv")}
	l.north = openTap(t, l.client, "tapnorth")
	l.south = openTap(t, l.server, "tapsouth")
	// No IPv6 on the hosts' side: its router solicitations would only be
	// denied noise in the gateway's events.
	l.client.MustRun("sysctl", "-qw", "net.ipv6.conf.tapnorth.disable_ipv6=1")
	l.server.MustRun("sysctl", "-qw", "net.ipv6.conf.tapsouth.disable_ipv6=1")
	l.client.Addr("tapnorth", "192.0.2.1/24")
	l.server.Addr("tapsouth", "192.0.2.2/24")
	startPymodbus(t, l.server)
	return l
}

// mbpoll runs Debian's mbpoll (libmodbus) in the client namespace against
// the server, one request; args are mbpoll's (1-based references).
func (l *line) mbpoll(t *testing.T, args ...string) (string, error) {
	t.Helper()
	mb := testenv.NeedCmd(t, "mbpoll")
	full := append([]string{"-m", "tcp", "-a", "1", "-1", "-o", "2"}, args...)
	full = append(full, "192.0.2.2")
	return l.client.Run(mb, full...)
}

// mbpollWrite is mbpoll writing value to holding register ref (1-based).
func (l *line) mbpollWrite(t *testing.T, ref, value int) (string, error) {
	t.Helper()
	mb := testenv.NeedCmd(t, "mbpoll")
	return l.client.Run(mb, "-m", "tcp", "-a", "1", "-1", "-o", "2", "-t", "4", "-r", fmt.Sprint(ref), "192.0.2.2", fmt.Sprint(value))
}

// readsPass polls holding registers 1-10 until they read 1000..1009 (the
// gateway is forwarding) or the deadline passes; it returns when the
// first read passed.
func (l *line) readsPass(t *testing.T, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := l.mbpoll(t, "-t", "4", "-r", "1", "-c", "10")
		if err == nil {
			for i := 0; i < 10; i++ {
				want := fmt.Sprintf("[%d]: \t%d", i+1, 1000+i)
				if !strings.Contains(out, want) {
					t.Fatalf("mbpoll read through the firmware: output lacks %q:\n%s", want, out)
				}
			}
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Modbus read passed through the firmware within %v: %v\n%s", within, err, out)
		}
		time.Sleep(time.Second)
	}
}

// TestImageBootModbus boots the factory image (slot A committed, no
// trial) and checks, through the firmware: allowed reads pass, a write is
// denied with a Modbus exception and the PLC's register is unchanged; the
// console and the grubenv on the disk afterwards say slot A booted and no
// try was spent.
func TestImageBootModbus(t *testing.T) {
	needImageTest(t)
	t0 := time.Now()
	dir := t.TempDir()
	disk := copyImage(t, imagePath(t), dir)
	setData(t, disk, map[string]string{"policy.yaml": testPolicy})
	l := newLine(t)

	v := &vm{t: t, disk: disk, north: l.north, south: l.south}
	v.start()
	_, grubAt := v.waitConsole(regexp.MustCompile(`^otgw: booting (slot-[AB])`), 120*time.Second)
	m, initAt := v.waitConsole(regexp.MustCompile(`^otgw-image: booted slot=(\S*) trial=(\S*) tries_left=(\S*) failed_trial=(\S*) version=(\S+)`), 180*time.Second)
	if m[1] != "A" || m[2] != "0" {
		t.Errorf("booted slot=%s trial=%s, want slot A without trial", m[1], m[2])
	}
	_, runAt := v.waitConsole(regexp.MustCompile(`msg="gateway running" .*board=x86-generic north=eth0 south=eth1`), 120*time.Second)
	firstRead := l.readsPass(t, 60*time.Second)
	readAt := firstRead.Sub(v.started)

	// A write the policy does not allow: the gateway answers with a
	// Modbus exception (illegal function or address), the PLC never sees it.
	out, err := l.mbpollWrite(t, 1, 4242)
	if err == nil {
		t.Fatalf("write of holding register 1 passed through the firmware:\n%s", out)
	}
	if !strings.Contains(out, "Illegal function") && !strings.Contains(out, "Illegal data address") {
		t.Errorf("denied write: want a Modbus exception (illegal function/address), got:\n%s", out)
	}
	out, err = l.mbpoll(t, "-t", "4", "-r", "1", "-c", "1")
	if err != nil || !strings.Contains(out, "[1]: \t1000") {
		t.Errorf("after the denied write, holding register 1: want 1000 (unchanged), got %v:\n%s", err, out)
	}
	if c := v.consoleText(); strings.Contains(c, "otgw exited") {
		t.Errorf("otgw exited during the test:\n%s", tail(c, 40))
	}

	v.kill()
	env := grubenv(t, disk)
	if env["saved_entry"] != "slot-A" || env["boot_once"] != "" || env["boot_failed"] != "" {
		t.Errorf("grubenv after the run: saved_entry=%q boot_once=%q boot_failed=%q, want slot-A and no trial", env["saved_entry"], env["boot_once"], env["boot_failed"])
	}
	t.Logf("times (TCG, 1 vCPU): GRUB %.1fs, init %.1fs, gateway running %.1fs, first read through the firmware %.1fs after QEMU start; test wall time %.1fs",
		grubAt.Seconds(), initAt.Seconds(), runAt.Seconds(), readAt.Seconds(), time.Since(t0).Seconds())
	if t.Failed() {
		t.Logf("console:\n%s", tail(v.consoleText(), 80))
	}
}

// TestImageGRUBTrial checks grub.cfg's boot counting on the real
// bootloader (update/BOOT.md, "Mapping to GRUB"), with the grubenv an
// updater would leave: a trial slot boots while tries are left and each
// boot spends one; with none left the committed slot boots, the trial is
// cleared and boot_failed is set; an unreadable grubenv falls back to
// its backup copy.
func TestImageGRUBTrial(t *testing.T) {
	needImageTest(t)
	src := imagePath(t)
	for _, tc := range []struct {
		name        string
		env         map[string]string
		files       []string // grubenv copies written with env
		corrupt     bool     // grubenv itself is garbage (the backup holds env)
		wantSlot    string
		wantTrial   string
		wantEnv     map[string]string // after the boot ("" = absent)
		wantEnvFile string
	}{
		{
			name:     "trial with tries left boots the trial slot and spends a try",
			env:      map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "3"},
			files:    []string{"/grub/grubenv", "/grub/grubenv.bak"},
			wantSlot: "B", wantTrial: "1",
			wantEnv:     map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "2", "boot_failed": ""},
			wantEnvFile: "/grub/grubenv",
		},
		{
			name:     "trial without tries left boots the committed slot and ends the trial",
			env:      map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "0"},
			files:    []string{"/grub/grubenv", "/grub/grubenv.bak"},
			wantSlot: "A", wantTrial: "0",
			wantEnv:     map[string]string{"saved_entry": "slot-A", "boot_once": "", "boot_tries": "0", "boot_failed": "1"},
			wantEnvFile: "/grub/grubenv",
		},
		{
			name:     "committed slot B boots without trial",
			env:      map[string]string{"saved_entry": "slot-B"},
			files:    []string{"/grub/grubenv", "/grub/grubenv.bak"},
			wantSlot: "B", wantTrial: "0",
			wantEnv:     map[string]string{"saved_entry": "slot-B", "boot_once": "", "boot_tries": "", "boot_failed": ""},
			wantEnvFile: "/grub/grubenv",
		},
		{
			name:     "unreadable grubenv: the backup copy decides and counts",
			env:      map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "1"},
			files:    []string{"/grub/grubenv.bak"},
			corrupt:  true,
			wantSlot: "B", wantTrial: "1",
			wantEnv:     map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "0"},
			wantEnvFile: "/grub/grubenv.bak",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // one QEMU per core (go test -parallel defaults to GOMAXPROCS)
			t0 := time.Now()
			disk := copyImage(t, src, t.TempDir())
			copySlot(t, disk)
			writeGrubenv(t, disk, tc.env, tc.files...)
			if tc.corrupt {
				writeESP(t, disk, bytes.Repeat([]byte{0xff}, 1024), "/grub/grubenv")
			}
			l := &line{client: netns.New(t, "img-cli"), server: netns.New(t, "img-srv")}
			v := &vm{t: t, disk: disk, north: openTap(t, l.client, "tapnorth"), south: openTap(t, l.server, "tapsouth"), noReboot: true}
			v.start()
			m, at := v.waitConsole(regexp.MustCompile(`^otgw-image: booted slot=(\S*) trial=(\S*) tries_left=(\S*) failed_trial=(\S*)`), 180*time.Second)
			if m[1] != tc.wantSlot || m[2] != tc.wantTrial {
				t.Errorf("booted slot=%s trial=%s, want slot=%s trial=%s", m[1], m[2], tc.wantSlot, tc.wantTrial)
			}
			v.kill()
			got := grubenvFile(t, disk, tc.wantEnvFile)
			for k, want := range tc.wantEnv {
				if got[k] != want {
					t.Errorf("%s after the boot: %s=%q, want %q (all: %v)", tc.wantEnvFile, k, got[k], want, got)
				}
			}
			t.Logf("init after %.1fs; wall %.1fs", at.Seconds(), time.Since(t0).Seconds())
		})
	}
}
