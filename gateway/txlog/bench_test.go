package txlog_test

import (
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/rules"
)

// BenchmarkAllowedTransaction: one allowed Modbus read and its response
// through the engine alone (no OnVerdict hook), through the Tap on a conduit without log
// (the cost every gateway pays), and on a logged conduit (pairing and a
// record per transaction, rate limit high enough never to refuse).
func BenchmarkAllowedTransaction(b *testing.B) {
	for _, bc := range []struct {
		name   string
		client string
		tap    bool
	}{{"engine", "192.0.2.2:40001", false}, {"tap-quiet", "192.0.2.2:40001", true}, {"tap-logged", "192.0.2.1:40000", true}} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRig(b, txlog.Config{Rate: 1e12, Burst: 1 << 30})
			frames := session(r, bc.client, b.N)
			var h txlog.Handler = r.tap
			if !bc.tap {
				eng, err := gateway.NewEngine(gateway.Config{Rules: func() *rules.Ruleset { return r.rs }})
				if err != nil {
					b.Fatal(err)
				}
				r.tap.Next = eng // the handshake went through the rig's engine: replay it
				frames = session(r, "192.0.2.2:40002", b.N)
				h = eng
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Handle(gateway.North, frames[2*i], nopTx)
				h.Handle(gateway.South, frames[2*i+1], nopTx)
			}
		})
	}
}
