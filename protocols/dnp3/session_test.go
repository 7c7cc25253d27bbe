package dnp3

import "github.com/otgw/otgw/protocols"

// feed runs b through s.Feed and hands every unit to emit as a Record.
func feed(s protocols.Session, dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	s.Feed(dir, b, gap, func() { emit(protocols.NewRecord(s)) })
}

// newTCP and newUDP return sessions for a TCP stream and for
// datagrams, as dissect makes them.
func newTCP() *Session { return NewSession(protocols.Config{}) }
func newUDP() *Session { return NewSession(protocols.Config{Datagram: true}) }
