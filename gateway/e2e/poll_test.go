package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// TestPollDatapath runs `otgw run --poll` (both ports busy-polled from one
// thread) with ring ports and with AF_XDP ports between a Modbus client
// and pymodbus: allowed reads pass in both directions, a denied write gets
// the gateway's exception and leaves the register unchanged, the idle
// gateway takes CPU (it polls) and /status says so, and a SIGTERM stops
// the polling thread cleanly.
func TestPollDatapath(t *testing.T) {
	testenv.NeedRoot(t)
	for _, io := range []string{"ring", "xdp"} {
		t.Run(io, func(t *testing.T) {
			l := netns.NewLine(t)
			startPymodbus(t, l)
			g := startGateway(t, l, policyYAML("enforce", "reply"), "--io", io, "--xdp", "off", "--poll")
			if out := waitOutput(g, "poll=true"); !strings.Contains(out, "io="+io) || !strings.Contains(out, "poll=true") {
				t.Fatalf("gateway not running with io=%s poll=true:\n%s", io, tail(out, 20))
			}
			for i := 0; i < 20; i++ {
				a := i % 10
				if got := readHolding(t, l, uint16(a), 2); len(got) != 2 || int(got[0]) != 1000+a || int(got[1]) != 1001+a {
					t.Fatalf("read holding %d-%d through the polling gateway: got %v", a, a+1, got)
				}
			}
			assertWriteDenied(t, l)
			// Polling, not just configured to: with no traffic, the
			// gateway still takes CPU, where a blocking one sleeps (it
			// takes 3-6 % of a core even at 500 polls/s). About a
			// core on a quiet machine; 16-18 % was measured while the
			// whole suite ran in parallel beside two busy loops, so 5 %
			// is asked for.
			before, start := procCPU(t, g.cmd.Process.Pid), time.Now()
			time.Sleep(2 * time.Second)
			share := float64(procCPU(t, g.cmd.Process.Pid)-before) / float64(time.Since(start))
			t.Logf("idle polling gateway: %.0f%% of a core", 100*share)
			if share < 0.05 {
				t.Errorf("idle polling gateway used %.0f%% of a core, want >= 5%% (does it poll?)", 100*share)
			}
			st := g.statusJSON()
			if st["polling"] != true || st["healthy"] != true {
				t.Errorf("/status polling %v healthy %v, want both true", st["polling"], st["healthy"])
			}
			g.stop()
			if code := g.cmd.ProcessState.ExitCode(); code != 0 || strings.Contains(g.out.String(), "panic") {
				t.Errorf("gateway exit code %d after SIGTERM, want 0:\n%s", code, tail(g.out.String(), 20))
			}
		})
	}
}
