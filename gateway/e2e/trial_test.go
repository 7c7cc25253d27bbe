package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// updateEvent is an update event as the events file records it.
type updateEvent struct {
	Type    string `json:"event_type"`
	Step    string `json:"step"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (g *gw) updateEvents() []updateEvent {
	f, err := os.Open(g.events)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []updateEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e updateEvent
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "update" {
			out = append(out, e)
		}
	}
	return out
}

func (g *gw) waitUpdate(step string, timeout time.Duration) updateEvent {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, e := range g.updateEvents() {
			if e.Step == step {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("no update event %q within %v; update events: %+v\n%s", step, timeout, g.updateEvents(), tail(g.out.String(), 30))
	return updateEvent{}
}

// fwCLI runs `otgw fw ...` (host namespace) and returns its output.
func fwCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(otgwBinary(t), append([]string{"fw"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("otgw fw %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTrialFirmwareHealthCheck: `otgw run --fw-root` on the sim board.
// A trial slot whose gateway stays healthy (policy, both ports up,
// watchdog fed) for --trial-period is committed; one whose south port goes
// down during the period is rolled back, otgw run exits 1, and the next
// boot starts the committed slot with the security counter unchanged.
// Update events reach the gateway's event pipeline (the events file).
func TestTrialFirmwareHealthCheck(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	state := p("state")
	dev := []string{"--board", "sim", "--state", state}
	fwCLI(t, "keygen", "--out", p("k"))
	fwCLI(t, "root", "--pub", p("k.pub"), "--key", p("k.key"), "--out", p("root.json"))
	for _, img := range []string{"factory", "v1.1.0", "v1.2.0"} {
		if err := os.WriteFile(p(img+".img"), []byte(strings.Repeat(img+" rootfs\n", 2000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goarch := runtime.GOARCH // the otgw binary is built for this machine
	fwCLI(t, append([]string{"provision", "--version", "1.0.0", "--arch", goarch, p("factory.img")}, dev...)...)
	for _, v := range []struct{ version, svn string }{{"1.1.0", "2"}, {"1.2.0", "3"}} {
		fwCLI(t, "sign", "--key", p("k.key"), "--version", v.version, "--svn", v.svn, "--board", "sim", "--arch", goarch,
			"--out", p(v.version+".otgw"), p("v"+v.version+".img"))
	}
	run := []string{"--fw-root", p("root.json"), "--fw-state", state}

	// 1.1.0 on trial, healthy: committed.
	fwCLI(t, append([]string{"install", "--root", p("root.json"), "--arch", goarch, p("1.1.0.otgw")}, dev...)...)
	if out := fwCLI(t, append([]string{"reboot"}, dev...)...); !strings.Contains(out, "booted slot B (1.1.0) on trial") {
		t.Fatalf("reboot: %s", out)
	}
	l := netns.NewLine(t)
	g := startGateway(t, l, policyYAML("enforce", "reply"), append(run, "--trial-period", "1s")...)
	ev := g.waitUpdate("committed", 15*time.Second)
	if ev.Version != "1.1.0" {
		t.Errorf("committed event: %+v", ev)
	}
	g.kill()
	if out := fwCLI(t, append([]string{"status"}, dev...)...); !strings.Contains(out, "running slot B, primary B") || !strings.Contains(out, "counter 2") {
		t.Fatalf("status after commit: %s", out)
	}

	// 1.2.0 on trial, the south port goes down during the period.
	fwCLI(t, append([]string{"install", "--root", p("root.json"), "--arch", goarch, p("1.2.0.otgw")}, dev...)...)
	fwCLI(t, append([]string{"reboot"}, dev...)...)
	g2 := startGateway(t, l, policyYAML("enforce", "reply"), append(run, "--trial-period", "4s")...)
	l.Gateway.IP("link", "set", l.South, "down")
	ev = g2.waitUpdate("rolled_back", 15*time.Second)
	if ev.Reason != "healthcheck" || ev.Version != "1.2.0" || !strings.Contains(ev.Message, l.South) {
		t.Errorf("rolled_back event: %+v", ev)
	}
	done := make(chan error, 1)
	go func() { done <- g2.cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("otgw run after a failed trial: %v, want exit status 1", err)
		}
	case <-time.After(10 * time.Second):
		g2.kill()
		t.Fatal("otgw run kept running after its trial failed")
	}
	if out := fwCLI(t, append([]string{"reboot"}, dev...)...); !strings.Contains(out, "booted slot B (1.1.0)") {
		t.Errorf("reboot after the failed trial: %s", out)
	}
	if out := fwCLI(t, append([]string{"status"}, dev...)...); !strings.Contains(out, "counter 2") || !strings.Contains(out, "slot A: bad") {
		t.Errorf("status after the failed trial: %s", out)
	}
}
