// Package registry lists the inspected protocols: the one place where a
// protocol is registered, with one line. The engine (gateway) and the
// offline tools (simulate/dissect, otgw learn) get their sessions, ports
// and content detectors from here.
package registry

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// specs holds one line per protocol, in the order content detection
// tries them: the protocol whose header says the most first (a Modbus MBAP
// header is the weakest check, so it comes last).
var specs = [...]*protocols.Spec{
	&opcua.Spec,
	&dnp3.Spec,
	&modbus.Spec,
}

// All returns the registered protocols in detection order.
func All() []*protocols.Spec { return specs[:] }

// Lookup returns the Spec of p, nil when p is not registered.
func Lookup(p protocols.Proto) *protocols.Spec {
	for _, s := range specs {
		if s.Proto == p {
			return s
		}
	}
	return nil
}

// ByName returns the Spec named name ("modbus"), nil when none is.
func ByName(name string) *protocols.Spec {
	for _, s := range specs {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Names returns the registered protocol names in detection order.
func Names() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// New returns a session for p on a flow of transport t, nil when p is not
// inspected on t.
func New(p protocols.Proto, t protocols.Transport, c protocols.Config) protocols.Session {
	s := Lookup(p)
	if s == nil || s.Transports&t == 0 {
		return nil
	}
	c.Datagram = t == protocols.UDP
	return s.New(c)
}

// Sniff recognises the protocol of the first bytes one side of a
// connection sent (see Spec.Sniff), trying the protocols in detection
// order. It does not allocate.
func Sniff(b []byte) (protocols.Proto, protocols.Dir, bool) {
	for _, s := range specs {
		if s.Sniff == nil {
			continue
		}
		if d, ok := s.Sniff(b); ok {
			return s.Proto, d, true
		}
	}
	return protocols.ProtoNone, protocols.DirUnknown, false
}

// DefaultPorts returns the well-known server port of every protocol.
func DefaultPorts() map[uint16]protocols.Proto {
	m := map[uint16]protocols.Proto{}
	for _, s := range specs {
		for _, p := range s.Ports {
			m[p] = s.Proto
		}
	}
	return m
}
