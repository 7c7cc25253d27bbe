package dissect

import (
	"net/netip"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/registry"
	"github.com/otgw/otgw/simulate/capture"
)

// Sniff recognises the protocol of the first bytes one side of a
// connection sent, by content rather than port, and tells whether their
// sender is the client (Request: Modbus client, DNP3 master, OPC UA
// client) or the server (Response), DirUnknown when the bytes do not say.
// It tries the content detector of every registered protocol
// (protocols/registry; each protocol package documents its checks). It
// does not allocate.
func Sniff(b []byte) (protocols.Proto, protocols.Dir, bool) { return registry.Sniff(b) }

// maxSniff bounds the payload segments of one connection Sniff is tried
// on (a capture may start in the middle of a PDU).
const maxSniff = 4

// Found is one connection whose protocol Detect recognised by content on a
// port not in its port map.
type Found struct {
	Proto     protocols.Proto
	Transport string // tcp or udp
	Server    netip.AddrPort
}

// Detect reads the captures and returns, per server port not in ports
// (nil: DefaultPorts), the protocol the first bytes of its connections
// show (Sniff), with the connections found. A port where connections
// disagree keeps the first protocol seen.
func Detect(ports map[uint16]protocols.Proto, paths ...string) (map[uint16]protocols.Proto, []Found, error) {
	if ports == nil {
		ports = DefaultPorts()
	}
	out := map[uint16]protocols.Proto{}
	var found []Found
	tries := map[uint64]int{} // payload segments tried per connection; done at maxSniff
	for _, path := range paths {
		clear(tries) // connection ids are per capture
		_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
			if tries[s.Conn] >= maxSniff || len(s.Payload) == 0 {
				return nil
			}
			tries[s.Conn]++
			_, known := ports[s.Dst.Port()]
			if _, ok := ports[s.Src.Port()]; ok || known {
				tries[s.Conn] = maxSniff
				return nil
			}
			p, dir, ok := Sniff(s.Payload)
			if !ok {
				return nil
			}
			tries[s.Conn] = maxSniff
			server := serverOf(s, dir)
			if _, dup := out[server.Port()]; !dup {
				out[server.Port()] = p
			}
			found = append(found, Found{Proto: p, Transport: s.Transport, Server: server})
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return out, found, nil
}

// serverOf returns the server end of the connection of s, given the
// direction of its bytes (DirUnknown: the initiator's peer when the
// handshake was seen, else the lower port).
func serverOf(s *capture.Segment, dir protocols.Dir) netip.AddrPort {
	switch dir {
	case protocols.Request:
		return s.Dst
	case protocols.Response:
		return s.Src
	}
	if s.Initiator.IsValid() {
		if s.Initiator == s.Src {
			return s.Dst
		}
		return s.Src
	}
	if s.Src.Port() < s.Dst.Port() {
		return s.Src
	}
	return s.Dst
}
