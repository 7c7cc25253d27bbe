package registry

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// FuzzSessions drives every registered session the way the engine does
// (Next, Decode, Commit, Fields, Gap, PickUp) over arbitrary bytes in
// both directions, and the way dissect does (Feed): no panic, Next never
// claims more bytes than it was given, and every unit renders.
func FuzzSessions(f *testing.F) {
	f.Add(modbus.AppendADU(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 10)), uint8(0))
	f.Add(dnp3.AppendLinkFrames(nil, dnp3.CtrlDIR|dnp3.CtrlPRM|0x04, 10, 1,
		dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncRead), 60, 1)), uint8(1))
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	f.Add(append(opcua.AppendHello(nil, hello), opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone)...), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, flags uint8) {
		for _, spec := range All() {
			s := spec.New(protocols.Config{})
			var r protocols.Record
			dir := protocols.Request
			if flags&1 != 0 {
				dir = protocols.Response
			}
			if flags&2 != 0 {
				s.PickUp()
			}
			for rest := b; len(rest) > 0; {
				n, _, err := s.Next(dir, rest)
				if n > len(rest) {
					t.Fatalf("%s: Next claimed %d of %d bytes", spec.Name, n, len(rest))
				}
				if err != nil {
					_ = s.FramingAnomaly(err)
					s.Gap(dir)
					rest = rest[max(n, 1):]
					continue
				}
				if n == 0 {
					break
				}
				_ = s.Plausible(dir, rest[:n])
				s.Decode(dir, rest[:n])
				s.Commit(flags&4 != 0, flags&8 != 0)
				r.Fields = r.Fields[:0]
				s.Fields(&r)
				_, _ = s.Anomaly(), s.Paired()
				rest = rest[n:]
				dir = dir.Reverse()
			}
			s.Reset()
			for i, d := range []protocols.Dir{protocols.Request, protocols.Response} {
				s.Feed(d, b, i == 1 && flags&16 != 0, func() {
					r.Fields = r.Fields[:0]
					s.Fields(&r)
				})
			}
		}
	})
}
