package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// TestAFXDPModbus runs `otgw run --io xdp` (AF_XDP ports) between a
// Modbus client and server with checksum offload on (so the ports' guess
// of partial checksums is exercised): an allowed read passes, a denied
// write gets the gateway's exception and does not reach the server. Once
// with the ports' own XDP programs (--xdp off) and once sharing the flow
// bypass's program (--xdp on, generic mode on veth). A SIGKILL of the
// gateway leaves no XDP program on the ports (fail-closed).
func TestAFXDPModbus(t *testing.T) {
	testenv.NeedRoot(t)
	for _, xdpMode := range []string{"off", "on"} {
		t.Run("xdp "+xdpMode, func(t *testing.T) {
			l := netns.NewLine(t)
			startPymodbus(t, l)
			g := startGateway(t, l, policyYAML("enforce", "reply"), "--io", "xdp", "--xdp", xdpMode)
			if out := waitOutput(g, "io=xdp"); !strings.Contains(out, "io=xdp") {
				t.Fatalf("gateway not running with io=xdp:\n%s", tail(out, 20))
			}
			for _, p := range []string{l.North, l.South} {
				if out := l.Gateway.IP("-d", "link", "show", p); !strings.Contains(out, "prog/xdp") {
					t.Fatalf("no XDP program on %s:\n%s", p, out)
				}
			}
			if got := readHolding(t, l, 5, 3); len(got) != 3 || got[0] != 1005 || got[2] != 1007 {
				t.Fatalf("read holding 5-7 through AF_XDP: got %v, want [1005 1006 1007]", got)
			}
			assertWriteDenied(t, l)
			g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "modbus" })
			g.kill()
			// The kernel detaches when the process's descriptors close,
			// under the rtnl lock that other packages' namespace teardowns
			// hold for hundreds of milliseconds: a generous bound.
			deadline := time.Now().Add(10 * time.Second)
			for _, p := range []string{l.North, l.South} {
				for strings.Contains(l.Gateway.IP("-d", "link", "show", p), "prog/xdp") {
					if time.Now().After(deadline) {
						t.Fatalf("XDP program left on %s 10 s after SIGKILL", p)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
}

// TestAFXDPAutoFallsBack: `--io auto` on ports where AF_XDP cannot be set
// up (an MTU of 9000: a frame does not fit a UMEM frame) logs why and
// runs on the default I/O; Modbus reads still pass.
func TestAFXDPAutoFallsBack(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	for _, p := range []string{l.North, l.South} {
		l.Gateway.IP("link", "set", p, "mtu", "9000")
	}
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"), "--io", "auto", "--xdp", "off")
	out := waitOutput(g, "io=")
	if !strings.Contains(out, "AF_XDP unavailable") || !strings.Contains(out, "io=ring") {
		t.Fatalf("want the fall-back log line and io=ring:\n%s", tail(out, 20))
	}
	if got := readHolding(t, l, 5, 1); got[0] != 1005 {
		t.Errorf("read holding 5 after the fall-back: got %d, want 1005", got[0])
	}
}

// waitOutput returns the gateway's output once it contains s, or after
// 10 s (the "gateway running" line, which names the I/O method, follows
// the start event startGateway waits for).
func waitOutput(g *gw, s string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := g.out.String()
		if strings.Contains(out, s) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}
