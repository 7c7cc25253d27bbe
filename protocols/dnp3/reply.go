package dnp3

import "github.com/otgw/otgw/protocols"

// AppendDenyReply implements protocols.Replier: the response an
// outstation that does not support the request would send (IEEE
// 1815-2012 clause 4.2.2): one link frame from the outstation (the
// request's destination) to the master (clause 9.2.4), one transport
// segment (FIR|FIN, sequence 0, clause 8.2) and a RESPONSE echoing the
// request's application sequence number with IIN2 "object unknown" for
// an object refused and "no function code support" otherwise (clause
// 4.2.2.6.2). There is none to a broadcast, to a CONFIRM (which gets no
// response), or to a link frame without a fragment.
func (s *Session) AppendDenyReply(dst []byte, why protocols.Refusal) ([]byte, bool) {
	lf, fr := s.LinkFrame(), s.Fragment()
	if fr == nil || IsBroadcast(lf.Dst) || fr.Func == FuncConfirm {
		return dst, false
	}
	var iin uint16 = IINNoFuncCodeSupport
	if why.Cause == protocols.CauseObject {
		iin = IINObjectUnknown
	}
	var user [5]byte
	u := append(user[:0], TransportFIR|TransportFIN) // transport sequence 0
	u = AppendResponseHeader(u, fr.Seq(), FuncResponse, iin, false)
	return AppendLinkFrame(dst, CtrlOutstationData, lf.Src, lf.Dst, u), true
}

var _ protocols.Replier = (*Session)(nil)
