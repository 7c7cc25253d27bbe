package rules

// This file and modbus.go, dnp3.go, opcua.go are the one place where a
// protocol session's decoded unit becomes the PDU the policy judges: the
// engine hands the session over and reads nothing of the parser's fields
// for the policy. Adding a protocol means one Set case and one adapter
// file here.

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// Set fills p from the unit the session just decoded (Decode returned
// protocols.UnitPDU): the parser's fields, its anomaly (a pairing anomaly
// when the PDU has none of its own) and whether a response pairs with a
// request. It reports false, leaving p as for Malformed with no anomaly,
// for a session of a protocol rules do not know. It allocates nothing.
func (p *PDU) Set(ss protocols.Session) bool {
	switch ss := ss.(type) {
	case *modbus.Session:
		p.SetModbus(ss.ADU(), ss.Dir())
		if an := ss.PairingAnomaly(); an != modbus.AnomalyNone && p.Anomaly == "" {
			p.Anomaly = an.String()
		}
		if ss.Dir() == protocols.Response {
			p.Modbus.PairedRequest = ss.Paired()
		}
	case *dnp3.Session:
		fr := ss.Fragment()
		if fr == nil {
			// A unit without fragment is not a PDU (UnitPartial).
			p.Malformed(protocols.ProtoDNP3, ss.Dir(), "")
			return false
		}
		p.SetDNP3(ss.LinkFrame(), fr, ss.Dir())
		p.DNP3.PairedRequest = ss.Paired()
		if ss.SeqMismatch() && p.Anomaly == "" {
			p.Anomaly = dnp3.AnomalySeqMismatch.String()
		}
	case *opcua.Session:
		p.SetOPCUA(ss.Message(), ss.Dir(), ss.Service(), ss.Mode())
		p.OPCUA.PairedRequest = ss.Paired()
	default:
		p.Malformed(protocols.ProtoNone, ss.Dir(), "")
		return false
	}
	return true
}

// Malformed makes p the PDU of bytes of proto that cannot be framed (or
// decoded) as a unit: anomaly names why, and nothing of a previous PDU
// is left in it, since such bytes have no unit, function or address of
// their own.
func (p *PDU) Malformed(proto protocols.Proto, dir protocols.Dir, anomaly string) {
	p.reset(proto, dir)
	p.Anomaly = anomaly
	p.Modbus = Modbus{}
	p.DNP3 = DNP3{}
	p.OPCUA = OPCUA{}
}

// reset clears the parts of p that every adapter sets, without zeroing the
// large value arrays (they are bounded by their counts).
func (p *PDU) reset(proto protocols.Proto, dir protocols.Dir) {
	p.Proto = proto
	p.Dir = dir
	p.Anomaly = ""
}
