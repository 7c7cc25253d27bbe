package opcua

import (
	"encoding/hex"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestAppendDenyReply: the ERR to a denied request carries the status the
// refusal's cause picks and "otgw: " with the reason, byte for byte as
// the engine has always sent it (OPC 10000-6 section 7.1.2.5), on an OPN
// for mode None; a MSG on a channel not known to be unsigned gets none; no allocation.
func TestAppendDenyReply(t *testing.T) {
	decode := func(b []byte) *Session {
		t.Helper()
		s := NewSession(protocols.Config{})
		if n, _, err := s.Next(protocols.Request, b); err != nil || n != len(b) {
			t.Fatalf("frame: %d %v", n, err)
		}
		s.Decode(protocols.Request, b)
		return s
	}
	s := decode(AppendOpenRequest(nil, SecureHeader{}, ModeNone))
	for _, tc := range []struct {
		why  protocols.Refusal
		want string
	}{
		{protocols.Refusal{Cause: protocols.CauseService, Reason: "service_not_allowed"}, "455252462900000000000b80190000006f7467773a20736572766963655f6e6f745f616c6c6f776564"},
		{protocols.Refusal{Cause: protocols.CauseNode, Reason: "node_not_allowed"}, "455252462600000000001f80160000006f7467773a206e6f64655f6e6f745f616c6c6f776564"},
		{protocols.Refusal{Cause: protocols.CauseSecurityPolicy, Reason: "security_policy_not_allowed"}, "455252463100000000005580210000006f7467773a2073656375726974795f706f6c6963795f6e6f745f616c6c6f776564"},
		{protocols.Refusal{Cause: protocols.CauseSecurityMode, Reason: "security_mode_too_low"}, "455252462b0000000000e6801b0000006f7467773a2073656375726974795f6d6f64655f746f6f5f6c6f77"},
		{protocols.Refusal{Cause: protocols.CauseMalformed, Reason: "malformed"}, "455252461f00000000007e800f0000006f7467773a206d616c666f726d6564"},
		{protocols.Refusal{Cause: protocols.CauseFunction, Reason: "function_not_allowed"}, "455252462a0000000000e4801a0000006f7467773a2066756e6374696f6e5f6e6f745f616c6c6f776564"},
	} {
		got, ok := s.AppendDenyReply(nil, tc.why)
		if !ok || hex.EncodeToString(got) != tc.want {
			t.Errorf("%s: reply %x %v, want %s", tc.why.Reason, got, ok, tc.want)
		}
	}
	buf := make([]byte, 0, 128)
	why := protocols.Refusal{Cause: protocols.CauseService, Reason: "service_not_allowed"}
	if n := testing.AllocsPerRun(100, func() { s.AppendDenyReply(buf, why) }); n != 0 {
		t.Errorf("AppendDenyReply allocates %v times", n)
	}
	msg := AppendMessage(nil, ChunkFinal, SecureHeader{ChannelID: 1, TokenID: 1, SequenceNumber: 2, RequestID: 2}, AppendReadRequest(nil, 1, NodeID{Namespace: 2, Numeric: 5}))
	if got, ok := decode(msg).AppendDenyReply(nil, why); ok {
		t.Errorf("reply %x to a MSG on a channel whose mode is not known to be None", got)
	}
}
