package modbus

import (
	"encoding/hex"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestAppendDenyReply: the exception response to a denied request echoes
// its transaction id, unit and function, with the exception code the
// refusal's cause picks, byte for byte as the engine has always sent it
// (MAP section 7); a header without a function code gets none; no
// allocation.
func TestAppendDenyReply(t *testing.T) {
	req := AppendADU(nil, 0x1234, 7, AppendAddrQty(nil, 3, 100, 2))
	var s Session
	s.Decode(protocols.Request, req)
	for _, tc := range []struct {
		cause protocols.Cause
		want  string
	}{
		{protocols.CauseFunction, "123400000003078301"},
		{protocols.CauseAddress, "123400000003078302"},
		{protocols.CauseValue, "123400000003078303"},
		{protocols.CauseOther, "123400000003078301"},
	} {
		got, ok := s.AppendDenyReply(nil, protocols.Refusal{Cause: tc.cause, Reason: "x"})
		if !ok || hex.EncodeToString(got) != tc.want {
			t.Errorf("cause %d: reply %x %v, want %s", tc.cause, got, ok, tc.want)
		}
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { s.AppendDenyReply(buf, protocols.Refusal{}) }); n != 0 {
		t.Errorf("AppendDenyReply allocates %v times", n)
	}
	s.Decode(protocols.Request, []byte{0x12, 0x34, 0, 0, 0, 1, 7})
	if got, ok := s.AppendDenyReply(nil, protocols.Refusal{}); ok {
		t.Errorf("reply %x to a header without a function code", got)
	}
}
