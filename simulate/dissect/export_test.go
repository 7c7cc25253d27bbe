package dissect

import "github.com/otgw/otgw/protocols"

// WithSession returns p rendered by s, as a Dissector hands it to fn.
func WithSession(p PDU, s protocols.Session) PDU {
	p.sess, p.loaded, p.Fields = s, false, nil
	return p
}
