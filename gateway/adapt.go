package gateway

// This file is the one place where parser output becomes the policy
// engine's protocol-neutral rules.PDU, so that changes to either side's
// structs touch only here.

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// adaptPDU fills p from the PDU the session just decoded (UnitPDU).
func adaptPDU(p *rules.PDU, ss protocols.Session) {
	switch ss := ss.(type) {
	case *modbus.Session:
		modbusPDU(p, ss.ADU(), ss.Dir())
		if an := ss.PairingAnomaly(); an != modbus.AnomalyNone && p.Anomaly == "" {
			p.Anomaly = an.String()
		}
		if ss.Dir() == protocols.Response {
			p.Modbus.PairedRequest = ss.Paired()
		}
	case *dnp3.Session:
		dnp3PDU(p, ss.LinkFrame(), ss.Fragment(), ss.Dir())
		p.DNP3.PairedRequest = ss.Paired()
		if ss.SeqMismatch() && p.Anomaly == "" {
			p.Anomaly = dnp3.AnomalySeqMismatch.String()
		}
	case *opcua.Session:
		opcuaPDU(p, ss.Message(), ss.Dir(), ss.Service(), ss.Mode())
		p.OPCUA.PairedRequest = ss.Paired()
	}
}

// adaptDecision points d at the session (whose Fields render the report's
// fields) and at the parser structs of its last unit (rate detectors and
// hooks read them).
func adaptDecision(d *Decision, ss protocols.Session) {
	d.Session = ss
	switch ss := ss.(type) {
	case *modbus.Session:
		d.Modbus = ss.ADU()
	case *dnp3.Session:
		d.DNP3Link, d.DNP3 = ss.LinkFrame(), ss.Fragment()
	case *opcua.Session:
		d.OPCUA = ss.Message()
	}
}

// resetPDU clears the parts of p that every adapter sets, without zeroing
// the large value arrays (they are bounded by their counts).
func resetPDU(p *rules.PDU, proto protocols.Proto, dir protocols.Dir) {
	p.Proto = proto
	p.Dir = dir
	p.Anomaly = ""
}

// modbusPDU fills p from a decoded Modbus ADU (Modbus Application Protocol
// v1.1b3 section 6): unit, function, the read range, the write range and
// the written register values.
func modbusPDU(p *rules.PDU, a *modbus.ADU, dir protocols.Dir) {
	resetPDU(p, protocols.ProtoModbus, dir)
	if a.Anomaly != modbus.AnomalyNone {
		p.Anomaly = a.Anomaly.String()
	}
	m := &p.Modbus
	m.Unit = a.Unit
	m.FC = a.Function
	m.Sub = a.Sub
	m.Addr, m.Qty = a.Address, a.Quantity
	m.WriteAddr, m.WriteQty = 0, 0
	m.PairedRequest = false
	m.NValues = 0
	m.Unread = false
	fc := a.Func()
	if a.HasWrite {
		m.WriteAddr, m.WriteQty = a.WriteAddress, a.WriteQuantity
	}
	if fc == modbus.FuncWriteSingleCoil || fc == modbus.FuncWriteSingleRegister {
		m.Qty = 1
	}
	if dir != protocols.Response {
		m.Unread = modbusUnread(a)
		switch fc {
		case modbus.FuncWriteMultipleCoils, modbus.FuncWriteMultipleRegisters:
			m.Qty = modbusWriteReach(a, a.Quantity, 5)
		case modbus.FuncReadWriteMultipleRegisters:
			m.WriteQty = modbusWriteReach(a, a.WriteQuantity, 9)
		}
		switch fc {
		case modbus.FuncWriteSingleRegister, modbus.FuncWriteMultipleRegisters, modbus.FuncReadWriteMultipleRegisters:
			regs := a.Registers()
			n := min(len(regs), rules.MaxValues)
			copy(m.Values[:n], regs[:n])
			m.NValues = uint8(n)
		}
	}
}

// modbusUnread reports whether a request ends before the fields after its
// function code that rules judge: the address (and quantity) of the table
// functions, the sub-function of FC 8 and FC 43. ADU.Decode reads them
// all or none; a tolerated anomaly (truncated) must not let the zero
// values stand for them.
func modbusUnread(a *modbus.ADU) bool {
	if !a.HasPDU() {
		return true
	}
	switch a.Function {
	case 1, 2, 3, 4, 5, 6, 15, 16, 22, 23:
		return !a.HasAddress
	case 8, 43:
		return !a.HasSub
	}
	return false
}

// modbusWriteReach returns how many coils or registers a write of FC 15,
// 16 or 23 may reach (the write part for FC 23), its data starting at
// offset data of the PDU after the function code: the quantity when the
// byte count and the data agree with it (MAP section 6.11, 6.12, 6.17),
// else the most that the quantity, the byte count or the data bytes
// present could make a server write. A tolerated byte_count_mismatch or
// quantity_out_of_range then cannot hide written registers from the rule.
func modbusWriteReach(a *modbus.ADU, qty uint16, data int) uint16 {
	if !a.HasByteCount {
		return qty
	}
	bc, n := int(a.ByteCount), max(len(a.Data)-data, 0)
	reach := int(qty)
	if a.Function == modbus.FuncWriteMultipleCoils {
		if bc == (reach+7)/8 && n == bc {
			return qty
		}
		reach = max(reach, 8*bc, 8*n)
	} else {
		reach = max(reach, (bc+1)/2, (n+1)/2)
	}
	return uint16(min(reach, 0xFFFF))
}

// dnp3PDU fills p from a link frame and, when the frame completed one, an
// application fragment (IEEE 1815-2012 clauses 9.2.4 and 4.2.2).
func dnp3PDU(p *rules.PDU, lf *dnp3.LinkFrame, fr *dnp3.Fragment, dir protocols.Dir) {
	resetPDU(p, protocols.ProtoDNP3, dir)
	d := &p.DNP3
	d.LinkSrc, d.LinkDst = lf.Src, lf.Dst
	d.FC = uint8(fr.Func)
	// Only a response function code makes an unsolicited response: a
	// request code with the UNS bit in a frame whose DIR bit claims the
	// outstation sent it (wrong_direction, or an anomaly found first) is
	// no answer a rule's unsolicited: true allows.
	d.Unsolicited = fr.Func == dnp3.FuncUnsolicitedResp || fr.UNS() && fr.Func.IsResponse()
	d.PairedRequest = false
	if fr.Anomaly != dnp3.AnomalyNone {
		p.Anomaly = fr.Anomaly.String()
	} else if lf.Anomaly != dnp3.AnomalyNone && lf.Anomaly != dnp3.AnomalyBroadcast {
		p.Anomaly = lf.Anomaly.String()
	}
	n := min(fr.NumObjects, rules.MaxObjects)
	for i := range n {
		h := &fr.Objects[i]
		d.Objects[i] = rules.DNP3Object{Group: h.Group, Variation: h.Variation, Qualifier: h.Qualifier, Start: h.Start, Stop: h.Stop}
	}
	d.NObjects = uint8(n)
	// A tolerated anomaly that stopped the object walk (or kept it from
	// starting: an unknown function code) leaves the headers after it
	// unread, and a fragment shorter than its header its function code:
	// a rule that restricts them refuses the fragment.
	d.WalkIncomplete = !fr.Complete
	d.ObjectsTruncated = fr.NumObjects > rules.MaxObjects || d.WalkIncomplete
	d.FuncUnread = fr.Anomaly == dnp3.AnomalyTruncatedHeader && !fr.Func.IsResponse()
}

// opcuaPDU fills p from a decoded UA-TCP chunk (OPC 10000-6 section 7.1.2
// and 6.7.2). service is the request/response type id of the message the
// chunk belongs to (0 when not visible).
func opcuaPDU(p *rules.PDU, m *opcua.Message, dir protocols.Dir, service uint32, mode opcua.SecurityMode) {
	resetPDU(p, protocols.ProtoOPCUA, dir)
	if m.Anomaly != opcua.AnomalyNone {
		p.Anomaly = m.Anomaly.String()
	}
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
	n := min(m.NumNodes, rules.MaxNodes)
	copy(u.Nodes[:n], m.Nodes[:n])
	u.NNodes = uint8(n)
	// Any anomaly may have cut the decoding of the node list short (a
	// message over the negotiated size is not buffered at all, a
	// truncated body ends early): its NodeIds are then not all known, and
	// a rule that restricts the nodes of write and call refuses it even
	// when the policy tolerates the anomaly.
	u.NodesTruncated = m.NumNodes > rules.MaxNodes || m.Anomaly != opcua.AnomalyNone
}
