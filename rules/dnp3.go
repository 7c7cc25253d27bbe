package rules

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
)

func init() { registerAdapter(protocols.ProtoDNP3, setDNP3) }

// setDNP3 is the DNP3 section's adapter (PDU.Set): the link frame and
// the fragment it completed, and the session's pairing.
func setDNP3(p *PDU, s protocols.Session) bool {
	ss, ok := s.(*dnp3.Session)
	if !ok {
		p.Malformed(protocols.ProtoDNP3, s.Dir(), protocols.AnomalyNone)
		return false
	}
	fr := ss.Fragment()
	if fr == nil {
		// A unit without fragment is not a PDU (UnitPartial).
		p.Malformed(protocols.ProtoDNP3, ss.Dir(), protocols.AnomalyNone)
		return false
	}
	p.SetDNP3(ss.LinkFrame(), fr, ss.Dir())
	p.DNP3.PairedRequest = ss.Paired()
	if ss.SeqMismatch() && p.Anomaly == protocols.AnomalyNone {
		p.Anomaly = dnp3.AnomalySeqMismatch.Tagged()
	}
	return true
}

// SetDNP3 fills p from a link frame and the application fragment it
// completed (IEEE 1815-2012 clauses 9.2.4 and 4.2.2). Pairing
// (PairedRequest, seq_mismatch) is the session's: see Set.
func (p *PDU) SetDNP3(lf *dnp3.LinkFrame, fr *dnp3.Fragment, dir protocols.Dir) {
	p.reset(protocols.ProtoDNP3, dir)
	d := &p.DNP3
	d.LinkSrc, d.LinkDst = lf.Src, lf.Dst
	d.FC = uint8(fr.Func)
	// Only a response function code makes an unsolicited response: a
	// request code with the UNS bit in a frame whose DIR bit claims the
	// outstation sent it (wrong_direction, or an anomaly found first) is
	// no answer a rule's unsolicited: true allows.
	d.Unsolicited = fr.Func == dnp3.FuncUnsolicitedResp || fr.UNS() && fr.Func.IsResponse()
	d.PairedRequest = false
	d.IIN = 0
	if fr.HasIIN() {
		d.IIN = fr.IIN
	}
	if fr.Anomaly != dnp3.AnomalyNone {
		p.Anomaly = fr.Anomaly.Tagged()
	} else if lf.Anomaly != dnp3.AnomalyBroadcast {
		p.Anomaly = lf.Anomaly.Tagged()
	}
	n := min(fr.NumObjects, MaxObjects)
	for i := range n {
		h := &fr.Objects[i]
		d.Objects[i] = DNP3Object{Group: h.Group, Variation: h.Variation, Qualifier: h.Qualifier, Start: h.Start, Stop: h.Stop}
	}
	d.NObjects = uint8(n)
	// A tolerated anomaly that stopped the object walk (or kept it from
	// starting: an unknown function code) leaves the headers after it
	// unread, and a fragment shorter than its header its function code:
	// a rule that restricts them refuses the fragment.
	d.WalkIncomplete = !fr.Complete
	d.ObjectsTruncated = fr.NumObjects > MaxObjects || d.WalkIncomplete
	d.FuncUnread = fr.Anomaly == dnp3.AnomalyTruncatedHeader && !fr.Func.IsResponse()
}
