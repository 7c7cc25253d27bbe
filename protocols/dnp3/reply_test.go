package dnp3

import (
	"encoding/hex"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestAppendDenyReply: the response to a denied request goes from its
// outstation to its master, echoes its application sequence number and
// sets IIN2 by the refusal's cause, byte for byte as the engine has always
// sent it (IEEE 1815-2012 clause 4.2.2.6.2); a broadcast and a CONFIRM get
// none; no allocation.
func TestAppendDenyReply(t *testing.T) {
	decode := func(b []byte) *Session {
		t.Helper()
		s := NewSession(protocols.Config{})
		if n, _, err := s.Next(protocols.Request, b); err != nil || n != len(b) {
			t.Fatalf("frame: %d %v", n, err)
		}
		if u := s.Decode(protocols.Request, b); u != protocols.UnitPDU {
			t.Fatalf("unit %v", u)
		}
		return s
	}
	req := func(dst uint16, fc FunctionCode) []byte {
		return AppendLinkFrames(nil, CtrlMasterData, dst, 3, AppendAllHeader(AppendRequestHeader(nil, 5, fc), 1, 0))
	}
	s := decode(req(10, FuncRead))
	for _, tc := range []struct {
		cause protocols.Cause
		want  string
	}{
		{protocols.CauseFunction, "05640a4403000a00c7edc0c581000101c0"},
		{protocols.CauseObject, "05640a4403000a00c7edc0c5810002e39a"},
	} {
		got, ok := s.AppendDenyReply(nil, protocols.Refusal{Cause: tc.cause})
		if !ok || hex.EncodeToString(got) != tc.want {
			t.Errorf("cause %d: reply %x %v, want %s", tc.cause, got, ok, tc.want)
		}
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { s.AppendDenyReply(buf, protocols.Refusal{}) }); n != 0 {
		t.Errorf("AppendDenyReply allocates %v times", n)
	}
	for name, b := range map[string][]byte{"broadcast": req(0xffff, FuncRead), "confirm": req(10, FuncConfirm)} {
		if got, ok := decode(b).AppendDenyReply(nil, protocols.Refusal{}); ok {
			t.Errorf("%s: reply %x", name, got)
		}
	}
}
