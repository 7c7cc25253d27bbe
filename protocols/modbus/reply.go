package modbus

import "github.com/otgw/otgw/protocols"

// AppendDenyReply implements protocols.Replier: the exception response a
// server would send to the last decoded request (Modbus Application
// Protocol v1.1b3 section 7), with the request's transaction and unit id
// (MBAP, Modbus Messaging on TCP/IP Implementation Guide V1.0b section
// 3.1.3): illegal data address for an address refused, illegal data
// value for a value refused, illegal function otherwise. There is none
// to a header without a function code.
func (s *Session) AppendDenyReply(dst []byte, why protocols.Refusal) ([]byte, bool) {
	a := &s.adu
	if !a.HasPDU() {
		return dst, false
	}
	code := ExceptionIllegalFunction
	switch why.Cause {
	case protocols.CauseAddress:
		code = ExceptionIllegalDataAddress
	case protocols.CauseValue:
		code = ExceptionIllegalDataValue
	}
	var pdu [2]byte
	return AppendADU(dst, a.TransactionID, a.Unit, AppendException(pdu[:0], a.Func(), code)), true
}

var _ protocols.Replier = (*Session)(nil)
