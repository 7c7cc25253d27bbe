package xdp

import (
	"testing"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// BenchmarkProgram is the program's own cost per frame, measured by the
// kernel (BPF_PROG_RUN with repeat, JITed program, no I/O): the redirect
// path of a bypassed flow and the pass paths. BPF_PROG_RUN without a
// context runs the program as if the frame arrived on the namespace's
// loopback device, so the flow's ingress port is "lo" here (generic mode,
// the only one lo has).
func BenchmarkProgram(b *testing.B) {
	testenv.NeedRoot(b)
	ns := netns.New(b, "xbench")
	netns.Veth(b, ns, "p0", ns, "p1")
	var bp *FastPath
	if err := ns.Do(func() (err error) {
		bp, err = New(Config{North: "lo", South: "p0", Mode: ModeGeneric})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer bp.Close()
	k4 := tcpKey("192.0.2.1:40000", "192.0.2.2:5001")
	k6 := tcpKey("[2001:db8::1]:40000", "[2001:db8::2]:5001")
	for _, k := range []Key{k4, k6} {
		if err := bp.Add(k, South); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		f    frameSpec
		want uint32
	}{
		{"redirect/tcp4", frameSpec{key: k4, tcpFlags: "A", payload: 1400}, xdpRedirect},
		{"redirect/tcp6", frameSpec{key: k6, tcpFlags: "A", payload: 1400}, xdpRedirect},
		{"pass/nomatch", frameSpec{key: tcpKey("192.0.2.1:40001", "192.0.2.2:5001"), tcpFlags: "A"}, xdpPass},
		{"pass/fragment", frameSpec{key: k4, tcpFlags: "A", fragment: true}, xdpPass},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fr := frame(b, bc.f)
			var ret uint32
			var per float64
			err := ns.Do(func() error {
				r, d, err := bp.prog.Benchmark(fr, b.N, b.ResetTimer)
				ret, per = r, float64(d.Nanoseconds())
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			if ret != bc.want {
				b.Fatalf("action %d, want %d", ret, bc.want)
			}
			b.ReportMetric(per, "ns/frame")
		})
	}
}
