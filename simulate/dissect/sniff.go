package dissect

import (
	"encoding/binary"
	"net/netip"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// Sniff recognises the protocol of the first bytes one side of a
// connection sent, by content rather than port, and tells whether their
// sender is the client (Request: Modbus client, DNP3 master, OPC UA
// client) or the server (Response), DirUnknown when the bytes do not say:
//
//   - OPC UA (OPC 10000-6 section 7.1.2): a message header HEL, ACK, ERR,
//     RHE, OPN, MSG or CLO, chunk type F/C/A and a message size between
//     the header and 16 MiB. HEL and CLO come from the client, ACK, ERR and
//     RHE from the server; an OPN is a request when its SecureChannelId is
//     0, and a MSG under policy None when its body type id is a service
//     request or response (OPC 10000-4).
//   - DNP3 (IEEE 1815-2012 clause 9.2.4): the start octets 0x05 0x64, a
//     length of at least 5 and a header whose CRC is valid; the DIR bit of
//     the control octet says whether the master sent it.
//   - Modbus/TCP (TCP guide section 3.1.3): protocol id 0 and a sane MBAP
//     length, every ADU of b framing one after another and the first
//     decoding without anomaly as a request, else as a response.
//
// Sniff does not allocate.
func Sniff(b []byte) (protocols.Proto, protocols.Dir, bool) {
	if d, ok := sniffOPCUA(b); ok {
		return protocols.ProtoOPCUA, d, true
	}
	if d, ok := sniffDNP3(b); ok {
		return protocols.ProtoDNP3, d, true
	}
	if d, ok := sniffModbus(b); ok {
		return protocols.ProtoModbus, d, true
	}
	return protocols.ProtoNone, protocols.DirUnknown, false
}

func sniffOPCUA(b []byte) (protocols.Dir, bool) {
	if len(b) < 8 {
		return 0, false
	}
	switch b[3] {
	case 'F', 'C', 'A':
	default:
		return 0, false
	}
	size := binary.LittleEndian.Uint32(b[4:8])
	if size < 8 || size > 1<<24 {
		return 0, false
	}
	switch string(b[:3]) {
	case "HEL", "CLO":
		return protocols.Request, true
	case "ACK", "ERR", "RHE":
		return protocols.Response, true
	case "OPN":
		if len(b) >= 12 && binary.LittleEndian.Uint32(b[8:12]) == 0 {
			return protocols.Request, true
		}
		return protocols.DirUnknown, true
	case "MSG":
		// Header, SecureChannelId, TokenId, SequenceNumber, RequestId,
		// then the body's type id as a NodeId (policy None only; an
		// encrypted body says nothing).
		const body = 24
		if len(b) < body+4 {
			return protocols.DirUnknown, true
		}
		var id uint32
		switch b[body] {
		case 0x01: // four-byte NodeId: namespace octet, uint16 id
			if b[body+1] != 0 {
				return protocols.DirUnknown, true
			}
			id = uint32(binary.LittleEndian.Uint16(b[body+2:]))
		case 0x00: // two-byte NodeId
			id = uint32(b[body+1])
		default:
			return protocols.DirUnknown, true
		}
		if _, resp, ok := opcua.ServiceByTypeID(id); ok {
			if resp {
				return protocols.Response, true
			}
			return protocols.Request, true
		}
		return protocols.DirUnknown, true
	}
	return 0, false
}

func sniffDNP3(b []byte) (protocols.Dir, bool) {
	if len(b) < 10 || b[0] != 0x05 || b[1] != 0x64 || b[2] < 5 {
		return 0, false
	}
	if dnp3.CRC(b[:8]) != binary.LittleEndian.Uint16(b[8:10]) {
		return 0, false
	}
	if b[3]&0x80 != 0 { // DIR: sent by the master
		return protocols.Request, true
	}
	return protocols.Response, true
}

func sniffModbus(b []byte) (protocols.Dir, bool) {
	var f modbus.Framer
	n, _, err := f.Next(b)
	if err != nil || n == 0 {
		return 0, false
	}
	for rest := b[n:]; len(rest) > 0; {
		m, _, err := f.Next(rest)
		if err != nil {
			return 0, false
		}
		if m == 0 {
			break // the last ADU continues in a later segment
		}
		rest = rest[m:]
	}
	var a modbus.ADU
	if a.Decode(b[:n], protocols.Request) == nil {
		return protocols.Request, true
	}
	if a.Decode(b[:n], protocols.Response) == nil {
		return protocols.Response, true
	}
	return 0, false
}

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
