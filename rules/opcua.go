package rules

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

func init() { registerAdapter(protocols.ProtoOPCUA, setOPCUA) }

// setOPCUA is the OPC UA section's adapter (PDU.Set): the chunk, the
// service and mode the session knows, and its pairing.
func setOPCUA(p *PDU, s protocols.Session) bool {
	ss, ok := s.(*opcua.Session)
	if !ok {
		p.Malformed(protocols.ProtoOPCUA, s.Dir(), protocols.AnomalyNone)
		return false
	}
	p.SetOPCUA(ss.Message(), ss.Dir(), ss.Service(), ss.Mode())
	p.OPCUA.PairedRequest = ss.Paired()
	return true
}

// SetOPCUA fills p from a decoded UA-TCP chunk (OPC 10000-6 section 7.1.2
// and 6.7.2). service is the request/response type id of the message the
// chunk belongs to (0 when not visible), mode the secure channel's
// security mode. Pairing (PairedRequest) is the session's: see Set.
func (p *PDU) SetOPCUA(m *opcua.Message, dir protocols.Dir, service uint32, mode opcua.SecurityMode) {
	p.reset(protocols.ProtoOPCUA, dir)
	p.Anomaly = m.Anomaly.Tagged()
	u := &p.OPCUA
	u.MsgType = m.Type
	u.SecurityPolicy = m.Policy.String()
	u.SecurityMode = mode
	u.ServiceID = service
	if m.Anomaly != opcua.AnomalyNone && !m.HasTypeID {
		// The chunk's own type id was not read (an interleaved chunk cut
		// inside it, a body that does not decode): service is then the
		// one of an earlier chunk, not necessarily of the message this
		// chunk belongs to, and must not vouch for it.
		u.ServiceID = 0
	}
	u.PairedRequest = false
	n := min(m.NumNodes, MaxNodes)
	copy(u.Nodes[:n], m.Nodes[:n])
	u.NNodes = uint8(n)
	// Any anomaly may have cut the decoding of the node list short (a
	// message over the negotiated size is not buffered at all, a
	// truncated body ends early): its NodeIds are then not all known, and
	// a rule that restricts the nodes of write and call refuses it even
	// when the policy tolerates the anomaly.
	u.NodesTruncated = m.NumNodes > MaxNodes || m.Anomaly != opcua.AnomalyNone
}
