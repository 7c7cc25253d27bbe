package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// crashAfterFrames is the frame on which the fault-injected datapath
// panics: past the handshake and a few polls of the first reads.
const crashAfterFrames = 30

// pollUntilEvent reads through the gateway until an event of type typ
// appears (bounded), so that the fault-injected panic is reached.
func pollUntilEvent(t *testing.T, g *gw, l *netns.Line, typ string, timeout time.Duration) event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, e := range g.readEvents() {
			if e.Type == typ {
				return e
			}
		}
		_ = tryRead(l, 200*time.Millisecond)
	}
	return g.waitEvent(typ, time.Second, func(e event) bool { return e.Type == typ })
}

// TestPanicFailClosedRestarts: a panic in a datapath worker on a
// fail-closed board (sim) is recovered: a critical crash event names it,
// nothing forwards until the datapath is restarted (a new engine and flow
// table in the same process), and after the restart reads pass and the
// policy is enforced again.
func TestPanicFailClosedRestarts(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	t.Setenv("OTGW_FAULT_PANIC_AFTER_FRAMES", itoa(crashAfterFrames))
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	pid := g.cmd.Process.Pid

	crash := pollUntilEvent(t, g, l, "crash", 15*time.Second)
	if !strings.Contains(crash.Message, "fault injection") || !strings.Contains(crash.Message, "fail mode closed") {
		t.Errorf("crash event %q: want the panic value and the fail mode", crash.Message)
	}
	// Until the restart nothing crosses: a read that succeeds must have
	// started after the restart event.
	before := time.Now()
	if err := tryRead(l, 300*time.Millisecond); err == nil {
		restart := g.waitEvent("restart", 2*time.Second, func(e event) bool { return e.Type == "start" && strings.Contains(e.Message, "restarted") })
		if restart.Time.After(before) {
			t.Errorf("a read crossed at %v, before the datapath restarted at %v (fail-closed broken)", before, restart.Time)
		}
	}
	g.waitEvent("datapath restart", 10*time.Second, func(e event) bool {
		return e.Type == "start" && strings.Contains(e.Message, "datapath restarted")
	})
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err = tryRead(l, 300*time.Millisecond); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no read through the restarted datapath within 5s: %v", err)
	}
	if g.cmd.ProcessState != nil || g.cmd.Process.Pid != pid {
		t.Fatalf("the gateway process exited; want the same process to restart its datapath")
	}
	if n := g.countEvents("bypass"); n != 0 {
		t.Errorf("%d bypass events on a fail-closed board", n)
	}
	assertWriteDenied(t, l)
}

// TestPanicFailOpenEngagesBypass: on a fail-open board (sim-open: a kernel
// bridge is the bypass) the same panic engages the bypass, so reads keep
// working while the datapath is down, the SOC gets the crash and bypass
// events, and after the restart the bypass is released and the policy is
// enforced again (a write is refused).
func TestPanicFailOpenEngagesBypass(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	t.Setenv("OTGW_FAULT_PANIC_AFTER_FRAMES", itoa(crashAfterFrames))
	g := startGateway(t, l, policyYAML("enforce", "reply"), "--board", "sim-open")

	pollUntilEvent(t, g, l, "crash", 15*time.Second)
	byp := g.waitEvent("bypass engaged", 5*time.Second, func(e event) bool {
		return e.Type == "bypass" && strings.Contains(e.Message, "bypass engaged")
	})
	if !strings.Contains(byp.Message, "restarting") {
		t.Errorf("bypass event %q: want the reason", byp.Message)
	}
	g.waitEvent("datapath restart", 10*time.Second, func(e event) bool {
		return e.Type == "start" && strings.Contains(e.Message, "datapath restarted")
	})
	if out := l.Gateway.IP("-o", "link", "show", "type", "bridge"); strings.TrimSpace(out) != "" {
		t.Errorf("the bypass bridge is still there after the restart: %s", out)
	}
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err = tryRead(l, 300*time.Millisecond); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no read through the restarted datapath within 5s: %v", err)
	}
	assertWriteDenied(t, l)
}

func itoa(n int) string { return strconv.Itoa(n) }

// assertWriteDenied: a write of holding 5 through the gateway is refused
// with a Modbus exception (policy action reply) and the register keeps its
// value: the policy is enforced.
func assertWriteDenied(t *testing.T, l *netns.Line) {
	t.Helper()
	err := mbClient(t, l, time.Second, func(c modbus.Client) error {
		_, err := c.WriteSingleRegister(5, 4242)
		return err
	})
	var me *modbus.ModbusError
	if !errors.As(err, &me) || me.FunctionCode != 0x86 {
		t.Errorf("write of holding 5: got %v, want the gateway's Modbus exception, fc 0x86 (the policy enforced)", err)
	}
	if got := readHolding(t, l, 5, 1); got[0] != 1005 {
		t.Errorf("holding 5 after the denied write: got %d, want 1005 (unchanged)", got[0])
	}
}

// TestSIGHUPDuringStartup: SIGHUPs sent while otgw run is still starting
// (before the policy watcher runs) do not terminate it: the gateway starts
// and forwards, and the signal is kept as a reload request.
func TestSIGHUPDuringStartup(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	dir := t.TempDir()
	g := &gw{t: t, line: l, out: &syncBuffer{}, policy: filepath.Join(dir, "policy.yaml"),
		events: filepath.Join(dir, "events.jsonl"), status: statusAddr}
	if err := os.WriteFile(g.policy, []byte(policyYAML("enforce", "reply")), 0o644); err != nil {
		t.Fatal(err)
	}
	g.cmd = l.Gateway.Start(g.out, otgwBinary(t), "run", "--policy", g.policy, "--board", "sim",
		"--ports", l.North+","+l.South, "--events", g.events, "--spool", filepath.Join(dir, "spool"))
	// ip netns exec execs otgw in place. Signal from otgw's first log line
	// on: before it, the signal would reach ip or the Go runtime's start,
	// which no program can guard.
	for start := time.Now(); !strings.Contains(g.out.String(), "otgw run: starting"); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("otgw run printed no start-up line within 10s:\n%s", g.out.String())
		}
	}
	sent := 0
	for start := time.Now(); time.Since(start) < 2*time.Second && g.countEvents("start") == 0; time.Sleep(2 * time.Millisecond) {
		if g.cmd.Process.Signal(syscall.SIGHUP) == nil {
			sent++
		}
	}
	if g.countEvents("start") == 0 {
		g.waitEvent("start", 10*time.Second, func(e event) bool { return e.Type == "start" })
	}
	if sent == 0 {
		t.Fatal("no SIGHUP could be sent before the start event")
	}
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err = tryRead(l, 300*time.Millisecond); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no read through the gateway after %d SIGHUPs during start-up: %v\n%s", sent, err, tail(g.out.String(), 20))
	}
	t.Logf("%d SIGHUPs during start-up; the gateway started and forwards", sent)
}
