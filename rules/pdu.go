package rules

// This file and the rule sections (modbus.go, dnp3.go, opcua.go) are the
// one place where a protocol session's decoded unit becomes the PDU the
// policy judges: the engine hands the session over and reads nothing of
// the parser's fields for the policy. Each section registers its adapter
// from its own file (registerAdapter), keyed by the Proto its parser
// registered (protocols.Register), so that adding a protocol adds a
// section file and changes nothing here.

import "github.com/otgw/otgw/protocols"

// adapter fills p from the unit ss just decoded; ss is a session of the
// adapter's protocol. It reports false, leaving p as for Malformed with
// no anomaly, for a unit that is no PDU of the protocol.
type adapter func(p *PDU, ss protocols.Session) bool

// adapters holds each rule section's adapter, by Proto. It is written
// only while the package initialises (registerAdapter), read-only after.
var adapters [protocols.MaxProtos]adapter

// registerAdapter records the adapter of proto's rule section. It panics
// (a programmer error) on a second adapter for one protocol.
func registerAdapter(proto protocols.Proto, a adapter) {
	if proto == protocols.ProtoNone || proto >= protocols.MaxProtos || adapters[proto] != nil {
		panic("rules: adapter of " + proto.String() + " registered twice or out of range")
	}
	adapters[proto] = a
}

// Set fills p from the unit the session just decoded (Decode returned
// protocols.UnitPDU): the parser's fields, its anomaly (a pairing anomaly
// when the PDU has none of its own) and whether a response pairs with a
// request, through the adapter of the session's protocol. It reports
// false, leaving p as for Malformed with no anomaly, for a session of a
// protocol no rule section reads. It allocates nothing.
func (p *PDU) Set(ss protocols.Session) bool {
	proto := ss.Proto()
	if proto < protocols.MaxProtos {
		if a := adapters[proto]; a != nil {
			return a(p, ss)
		}
	}
	p.Malformed(protocols.ProtoNone, ss.Dir(), protocols.AnomalyNone)
	return false
}

// Malformed makes p the PDU of bytes of proto that cannot be framed (or
// decoded) as a unit: anomaly names why, and nothing of a previous PDU
// is left in it, since such bytes have no unit, function or address of
// their own.
func (p *PDU) Malformed(proto protocols.Proto, dir protocols.Dir, anomaly protocols.Anomaly) {
	p.reset(proto, dir)
	p.Anomaly = anomaly
	p.Modbus = Modbus{}
	p.DNP3 = DNP3{}
	p.OPCUA = OPCUA{}
	p.Other = Other{}
}

// reset clears the parts of p that every adapter sets, without zeroing the
// large value arrays (they are bounded by their counts).
func (p *PDU) reset(proto protocols.Proto, dir protocols.Dir) {
	p.Proto = proto
	p.Dir = dir
	p.Anomaly = protocols.AnomalyNone
}
