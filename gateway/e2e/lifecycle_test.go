package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// tryRead opens a fresh connection (short timeouts: a SYN the gateway did
// not forward is not retransmitted by the kernel for a second) and reads
// holding register 0.
func tryRead(l *netns.Line, timeout time.Duration) error {
	return l.Client.Do(func() error {
		h := modbus.NewTCPClientHandler(l.ServerAddr + ":502")
		h.SlaveId = 1
		h.Timeout = timeout
		if err := h.Connect(); err != nil {
			return err
		}
		defer h.Close()
		b, err := modbus.NewClient(h).ReadHoldingRegisters(0, 1)
		if err == nil && (len(b) != 2 || int(b[0])<<8|int(b[1]) != 1000) {
			return fmt.Errorf("read % x, want 1000", b)
		}
		return err
	})
}

// TestKillFailClosed: SIGKILL of the gateway process stops all
// forwarding (no kernel bridge, nothing crosses), and a restart forwards
// again (within 5 s; the time is logged).
func TestKillFailClosed(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	if err := tryRead(l, 2*time.Second); err != nil {
		t.Fatalf("read before the kill: %v", err)
	}
	// An established session, to show it stops too.
	var sess net.Conn
	if err := l.Client.Do(func() (err error) { sess, err = net.DialTimeout("tcp", l.ServerAddr+":502", 2*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	g.kill()

	if err := tryRead(l, 300*time.Millisecond); err == nil {
		t.Errorf("a new Modbus connection succeeded with the gateway killed")
	}
	req := []byte{0, 9, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1}
	_ = sess.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := sess.Write(req); err == nil {
		if n, err := sess.Read(make([]byte, 64)); err == nil {
			t.Errorf("the established session got a %d-byte answer with the gateway killed", n)
		}
	}
	if err := l.Client.Do(func() error { return ping(l.ServerAddr, 0x4b49, 1, 300*time.Millisecond) }); err == nil {
		t.Errorf("ICMP echo crossed with the gateway killed")
	}
	if out := l.Gateway.IP("-o", "link", "show", "type", "bridge"); strings.TrimSpace(out) != "" {
		t.Errorf("a kernel bridge exists in the gateway namespace after the kill: %s", out)
	}
	for _, port := range []string{l.North, l.South} {
		if out := l.Gateway.IP("-o", "link", "show", port); strings.Contains(out, "master") {
			t.Errorf("%s is enslaved after the kill: %s", port, out)
		}
	}

	// Restart and measure until a fresh connection reads through.
	start := time.Now()
	g.start()
	var err error
	for time.Since(start) < 5*time.Second {
		if err = tryRead(l, 150*time.Millisecond); err == nil {
			break
		}
	}
	took := time.Since(start)
	// Logged, not asserted: a timed bound fails on a loaded machine (speed
	// belongs in benchmarks); 66-157 ms measured under the full suite.
	t.Logf("restart to first forwarded Modbus read: %v (process start to start event included)", took.Round(time.Millisecond))
	if err != nil {
		t.Fatalf("no read through the restarted gateway within 5s: %v", err)
	}
}

// TestReloadDuringPolls: a policy reload while a client polls 1,000 times
// on one connection loses no poll, and the reload takes effect.
func TestReloadDuringPolls(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	const polls = 1000
	var done atomic.Int32
	reloaded := make(chan time.Time, 1)
	go func() {
		for done.Load() < 300 {
			time.Sleep(time.Millisecond)
		}
		// Editors rename a temp file over the policy: the watcher sees it.
		p := strings.Replace(policyYAML("enforce", "reply"), "name: e2e", "name: e2e-v2", 1)
		p = strings.Replace(p, "read: holding 0-99", "read: holding 0-149", 1)
		tmp := filepath.Join(filepath.Dir(g.policy), ".policy.tmp")
		if err := os.WriteFile(tmp, []byte(p), 0o644); err == nil && os.Rename(tmp, g.policy) == nil {
			_ = g.cmd.Process.Signal(syscall.SIGHUP) // and the operator's SIGHUP
			reloaded <- time.Now()
		}
		close(reloaded)
	}()
	start := time.Now()
	var failures []string
	err := mbClient(t, l, 2*time.Second, func(c modbus.Client) error {
		// Paced at 1 ms so that the reload lands in the middle of the run.
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; i < polls && time.Since(start) < 90*time.Second; i++ {
			<-tick.C
			b, err := c.ReadHoldingRegisters(uint16(i%90), 10)
			if err != nil || len(b) != 20 || int(b[0])<<8|int(b[1]) != 1000+i%90 {
				failures = append(failures, fmt.Sprintf("poll %d: %v % x", i, err, b))
			}
			done.Add(1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	elapsed := end.Sub(start)
	if n := done.Load(); n != polls {
		t.Fatalf("%d polls in %v, want %d (bounded at 90s)", n, elapsed, polls)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d polls failed across the reload, first: %s", len(failures), polls, failures[0])
	}
	at, ok := <-reloaded
	if !ok {
		t.Fatal("policy not rewritten")
	}
	ev := g.waitEvent("policy_reload", 5*time.Second, func(e event) bool { return e.Type == "policy_reload" })
	if ev.Time.Before(start) || ev.Time.After(end) {
		t.Errorf("policy reloaded at %v, not during the polls (%v .. %v)", ev.Time, start, end)
	}
	st := g.statusJSON()
	if name, _ := st["policy"].(map[string]any)["name"].(string); name != "e2e-v2" {
		t.Errorf("policy in force: %q, want e2e-v2", name)
	}
	t.Logf("%d polls in %v, policy rewritten %v after the first poll", polls, elapsed.Round(time.Millisecond), at.Sub(start).Round(time.Millisecond))
	// The new rule is in force on the same session: holding 120 readable now.
	err = mbClient(t, l, 2*time.Second, func(c modbus.Client) error {
		_, err := c.ReadHoldingRegisters(120, 5)
		return err
	})
	if err != nil {
		t.Errorf("read of holding 120 under the reloaded policy: %v", err)
	}
}
