package opcua

import "github.com/otgw/otgw/protocols"

// feed runs b through s.Feed and hands every unit to emit as a Record.
func feed(s protocols.Session, dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	s.Feed(dir, b, gap, func() { emit(protocols.NewRecord(s)) })
}

func newSession() *Session { return NewSession(protocols.Config{}) }
