package opcua

import "github.com/otgw/otgw/protocols"

// Status codes of the ERR messages the gateway answers with (OPC 10000-4
// section 7.34, OPC 10000-6 section 7.1.5).
const (
	StatusBadServiceUnsupported     uint32 = 0x800B0000
	StatusBadUserAccessDenied       uint32 = 0x801F0000
	StatusBadSecurityPolicyRejected uint32 = 0x80550000
	StatusBadSecurityModeRejected   uint32 = 0x80E60000
	StatusBadRequestNotAllowed      uint32 = 0x80E40000
	StatusBadTCPMessageTypeInvalid  uint32 = 0x807E0000
)

// denyReasonPrefix starts the reason text of the gateway's ERR messages.
const denyReasonPrefix = "otgw: "

// AppendDenyReply implements protocols.Replier: a UA-TCP ERR message
// (OPC 10000-6 section 7.1.2.5) whose status fits the refusal and whose
// reason is "otgw: " and the policy's reason. An ERR is only sent where
// the channel neither signs nor encrypts (or on the OPN that asks for
// mode None): anything else would need the channel's keys.
func (s *Session) AppendDenyReply(dst []byte, why protocols.Refusal) ([]byte, bool) {
	if mm, _ := s.Channel.Mode(); mm != ModeNone && (s.m.Type != TypeOPN || s.Mode() != ModeNone) {
		return dst, false
	}
	code := StatusBadRequestNotAllowed
	switch why.Cause {
	case protocols.CauseService:
		code = StatusBadServiceUnsupported
	case protocols.CauseNode:
		code = StatusBadUserAccessDenied
	case protocols.CauseSecurityPolicy:
		code = StatusBadSecurityPolicyRejected
	case protocols.CauseSecurityMode:
		code = StatusBadSecurityModeRejected
	case protocols.CauseMalformed:
		code = StatusBadTCPMessageTypeInvalid
	}
	b, start := startChunk(dst, "ERR", ChunkFinal)
	b = appendU32(b, code)
	b = appendU32(b, uint32(len(denyReasonPrefix)+len(why.Reason)))
	b = append(b, denyReasonPrefix...)
	b = append(b, why.Reason...)
	return endChunk(b, start), true
}

var _ protocols.Replier = (*Session)(nil)
