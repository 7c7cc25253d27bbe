package rules

import "github.com/otgw/otgw/protocols"

// Section is the rule section of an inspected protocol beyond the three
// built in (modbus.go, dnp3.go, opcua.go, which the policy model names
// field by field): what its file in this package registers, once, with
// RegisterSection, so that the policy, Compile, PDU.Set and Evaluate take
// the protocol without a line changed elsewhere. In a policy its rule is
// keyed by the protocol's name and takes ports and tolerate, as
//
//   - foo: { ports: [7000], tolerate: [bad_crc] }
//
// Such a rule allows the protocol's PDUs that carry no anomaly it does not
// tolerate and that Judge allows.
type Section struct {
	// Proto is the protocol (its name is the policy key), as its parser
	// registered it (protocols.Register).
	Proto protocols.Proto
	// Port is the default server port of a rule that names no ports.
	Port uint16
	// TCP and UDP are the transports a rule of the section applies to.
	TCP, UDP bool
	// Set fills p from the unit a session of Proto just decoded (see
	// PDU.Set): p.Anomaly and p.Other. It must not allocate.
	Set func(p *PDU, ss protocols.Session) bool
	// Judge decides a PDU whose anomaly, if any, the rule or conduit
	// tolerates. Nil allows requests, and responses that pair with a
	// request. It must not allocate.
	Judge func(dir protocols.Dir, p Other) Reason
}

// Other is the part of a PDU that the rule section of a registered
// protocol (Section) judges; its adapter sets it.
type Other struct {
	// Func is the PDU's function, service or message type, as the
	// section's Judge reads it.
	Func uint32
	// PairedRequest (responses): the session paired it with a request.
	PairedRequest bool
}

// sections holds the registered sections by Proto, and sectionKeys their
// policy keys; written only while packages initialise.
var (
	sections    [protocols.MaxProtos]*Section
	sectionKeys []string
)

// RegisterSection records the rule section s of a protocol that is not
// built in. Call it from the init function of the section's file. It
// panics (a programmer error) on a built-in protocol, a second
// registration or a section without Set.
func RegisterSection(s Section) {
	if s.Proto <= protocols.ProtoOPCUA || s.Proto >= protocols.MaxProtos || sections[s.Proto] != nil || s.Set == nil {
		panic("rules: bad rule section for " + s.Proto.String())
	}
	sections[s.Proto] = &s
	registerAdapter(s.Proto, s.Set)
	sectionKeys = append(sectionKeys, s.Proto.String())
}

// sectionByKey returns the section whose policy key is key, nil if none.
func sectionByKey(key string) *Section {
	for _, s := range sections {
		if s != nil && s.Proto.String() == key {
			return s
		}
	}
	return nil
}

// judge decides p by the section's rule.
func (s *Section) judge(p *PDU) Reason {
	if s.Judge != nil {
		return s.Judge(p.Dir, p.Other)
	}
	if p.Dir == protocols.Response && !p.Other.PairedRequest {
		return ReasonResponseWithoutRequest
	}
	return ReasonAllowed
}
