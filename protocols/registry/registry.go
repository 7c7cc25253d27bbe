// Package registry lists the inspected protocols: the one place where a
// protocol is registered, with one line. The engine (gateway) and the
// offline tools (simulate/dissect, otgw learn) get their sessions, ports
// and content detectors from here.
//
// A protocol of this tree takes its line in specs below; a protocol
// defined outside it (a test's made-up protocol, an out-of-tree build)
// takes its line in its own package, calling Register from a
// package-level variable or init. Either way, every registration happens
// while packages initialise, before any lookup, and the lists are
// read-only after.
package registry

import (
	"slices"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// specs holds one line per protocol of this tree, in the order content
// detection tries them: the protocol whose header says the most first (a
// Modbus MBAP header is the weakest check, so it comes last, after the
// protocols added with Register too).
var specs = []*protocols.Spec{
	&opcua.Spec,
	&dnp3.Spec,
	&modbus.Spec,
}

// weakest is how many protocols at the end of specs are tried after the
// registered ones: Modbus, whose MBAP check would claim many protocols'
// first bytes.
const weakest = 1

// Register adds s, a protocol outside this tree, to the registered
// protocols: its one registration line, called from its package's
// initialisation (a package-level variable or init) so that it is in place
// before the engine or a tool looks protocols up:
//
//	var _ = registry.Register(&Spec)
//
// Content detection tries registered protocols in the order they
// registered (Go initialises packages in a deterministic order), after
// OPC UA and DNP3 and before Modbus. It returns s. It panics (a
// programmer error) when s is incomplete (no Proto, name or New), when its
// Name is not its Proto's registered name (protocols.Register), or when
// its Proto or name is registered already.
func Register(s *protocols.Spec) *protocols.Spec {
	switch {
	case s == nil || s.Proto == protocols.ProtoNone || s.Name == "" || s.New == nil:
		panic("registry: incomplete Spec")
	case s.Name != s.Proto.String():
		panic("registry: Spec " + s.Name + " is not protocol " + s.Proto.String() + " (protocols.Register)")
	case Lookup(s.Proto) != nil || ByName(s.Name) != nil:
		panic("registry: " + s.Name + " registered twice")
	}
	specs = slices.Insert(specs, len(specs)-weakest, s)
	return s
}

// All returns the registered protocols in detection order.
// The slice is shared: callers must not modify it.
func All() []*protocols.Spec { return specs }

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
