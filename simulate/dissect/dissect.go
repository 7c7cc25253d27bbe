// Package dissect turns a capture into the sequence of application PDUs the
// inspection core sees: the engine behind `otgw dissect`, and the input of
// `otgw learn` and of the truth tests. It joins simulate/capture (frames,
// TCP reassembly) with the protocol sessions of protocols/registry, the
// same sessions the inline engine holds per flow, and prints the fields
// they render.
package dissect

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/registry"
	"github.com/otgw/otgw/simulate/capture"
)

// Well-known server ports.
const (
	PortModbus = 502
	PortDNP3   = 20000
	PortOPCUA  = 4840
)

// Options select what is dissected.
type Options struct {
	// Ports maps a server port to the protocol spoken there. Nil means
	// DefaultPorts. The same map applies to TCP and UDP.
	Ports map[uint16]protocols.Proto
	// PortsOnly turns off recognition by content (Sniff) of connections
	// on other ports.
	PortsOnly bool
}

// DefaultPorts returns the well-known ports of the registered protocols:
// 502 Modbus/TCP, 20000 DNP3, 4840 OPC UA.
func DefaultPorts() map[uint16]protocols.Proto { return registry.DefaultPorts() }

// ParsePort reads a `--port proto=N` flag value.
func ParsePort(s string) (protocols.Proto, uint16, error) {
	name, num, ok := strings.Cut(s, "=")
	if !ok {
		return 0, 0, fmt.Errorf("--port %q: want proto=N, e.g. dnp3=20001", s)
	}
	spec := registry.ByName(strings.ToLower(name))
	if spec == nil {
		return 0, 0, fmt.Errorf("--port %q: unknown protocol %q (%s)", s, name, strings.Join(registry.Names(), ", "))
	}
	p := spec.Proto
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("--port %q: bad port number %q", s, num)
	}
	return p, uint16(n), nil
}

// PDU is one application PDU with where and when it completed.
//
// A PDU a Dissector hands to fn is valid during the call only, and its
// fields are rendered on demand from the session that decoded it (the
// renderer the engine's events use too): AppendJSON writes them straight
// from the session without allocating; Get, Summary and Load fill
// Record.Fields first. A PDU built by hand carries its Fields.
type PDU struct {
	Frame     int // 1-based frame where the PDU completes
	Time      time.Time
	Transport string
	Src, Dst  netip.AddrPort
	Conn      uint64
	Proto     protocols.Proto
	protocols.Record
	// sess rendered the PDU (nil: Fields holds them); loaded: Fields
	// was filled from it.
	sess   protocols.Session
	loaded bool
	sink   jsonSink
}

// Load fills Record.Fields from the session that decoded the PDU (once;
// allocates). Call it during fn to keep the fields.
func (p *PDU) Load() {
	if p.sess != nil && !p.loaded {
		p.loaded = true
		p.sess.Fields(&p.Record)
	}
}

// Get returns the value of the named field and whether it is present.
func (p *PDU) Get(key string) (any, bool) {
	p.Load()
	return p.Record.Get(key)
}

// newSession returns the session of a protocol for a transport ("tcp" or
// "udp"), nil when the protocol is not inspected on it (Modbus/UDP).
func newSession(p protocols.Proto, transport string) protocols.Session {
	t := protocols.TCP
	if transport == "udp" {
		t = protocols.UDP
	}
	return registry.New(p, t, protocols.Config{})
}

type connState struct {
	proto  protocols.Proto
	server uint16
	conn   protocols.Session
	emit   func() // renders the unit conn completed as d.pdu
	// client is the client's (DNP3 master's) end when the content told
	// it (Sniff); invalid until then, and the server port decides.
	client netip.AddrPort
	tries  int // payload segments sniffed (at most maxSniff)
}

// sniff sets cs.client from the content of s when it tells the
// direction (DNP3 DIR bit, OPC UA message type): who opened the
// connection or which port is known does not say who the master is.
func (cs *connState) sniff(s *capture.Segment) {
	if cs.client.IsValid() || cs.tries >= maxSniff || len(s.Payload) == 0 ||
		cs.proto != protocols.ProtoDNP3 && cs.proto != protocols.ProtoOPCUA {
		return
	}
	cs.tries++
	p, dir, ok := Sniff(s.Payload)
	if !ok || p != cs.proto {
		return
	}
	switch dir {
	case protocols.Request:
		cs.client = s.Src
	case protocols.Response:
		cs.client = s.Dst
	}
}

// Run dissects the capture at path, calling fn for every PDU in order.
func Run(path string, opts Options, fn func(*PDU) error) (capture.Stats, error) {
	d := New(opts, fn)
	st, err := capture.ReadStreams(path, capture.Options{}, d.Segment)
	if err == nil {
		err = d.err
	}
	return st, err
}

// Dissector follows the connections of one or more captures.
type Dissector struct {
	ports map[uint16]protocols.Proto
	conns map[uint64]*connState
	fn    func(*PDU) error
	err   error
	pdu   PDU
	seg   *capture.Segment // the segment being fed
	// noSniff: Options.PortsOnly.
	noSniff bool
}

// New returns a Dissector that calls fn for each PDU.
func New(opts Options, fn func(*PDU) error) *Dissector {
	ports := opts.Ports
	if ports == nil {
		ports = DefaultPorts()
	}
	return &Dissector{ports: ports, conns: make(map[uint64]*connState), fn: fn, noSniff: opts.PortsOnly}
}

// Segment feeds one reassembled segment (capture.ReadStreams callback).
func (d *Dissector) Segment(s *capture.Segment) error {
	if d.err != nil {
		return d.err
	}
	cs, ok := d.conns[s.Conn]
	if !ok || cs.conn == nil && cs.tries < maxSniff {
		cs = d.classify(s, cs)
		d.conns[s.Conn] = cs
	}
	if cs.conn == nil {
		return nil
	}
	cs.sniff(s)
	dir := protocols.Response
	if s.Dst.Port() == cs.server {
		dir = protocols.Request
	}
	switch {
	case cs.client.IsValid():
		dir = protocols.Response
		if s.Src == cs.client {
			dir = protocols.Request
		}
	case s.Src.Port() == s.Dst.Port() && s.Initiator.IsValid():
		// Same port both sides: the initiator is the client.
		if s.Src == s.Initiator {
			dir = protocols.Request
		} else {
			dir = protocols.Response
		}
	}
	if cs.emit == nil {
		cs.emit = func() {
			if d.err != nil {
				return
			}
			s := d.seg
			d.pdu = PDU{Frame: s.Frame, Time: s.Time, Transport: s.Transport, Src: s.Src, Dst: s.Dst,
				Conn: s.Conn, Proto: cs.proto, Record: protocols.Record{Dir: cs.conn.Dir(), Anomaly: cs.conn.Anomaly().String()},
				sess: cs.conn}
			d.err = d.fn(&d.pdu)
		}
	}
	d.seg = s
	cs.conn.Feed(dir, s.Payload, s.Gap, cs.emit)
	d.seg = nil
	return d.err
}

// classify picks the protocol of a new connection from its server port.
// The initiator's destination port wins when the handshake was seen. On
// other ports the content decides (Sniff), tried on the first maxSniff
// segments with payload; prev is the state of the earlier tries.
func (d *Dissector) classify(s *capture.Segment, prev *connState) *connState {
	try := []uint16{s.Dst.Port(), s.Src.Port()}
	if s.Initiator.IsValid() && s.Initiator != s.Src {
		try = []uint16{s.Src.Port(), s.Dst.Port()}
	}
	for _, port := range try {
		if p, ok := d.ports[port]; ok {
			return &connState{proto: p, server: port, conn: newSession(p, s.Transport)}
		}
	}
	cs := prev
	if cs == nil {
		cs = &connState{}
	}
	if len(s.Payload) == 0 || d.noSniff {
		return cs
	}
	cs.tries++
	p, dir, ok := Sniff(s.Payload)
	if !ok {
		return cs
	}
	server := serverOf(s, dir)
	return &connState{proto: p, server: server.Port(), conn: newSession(p, s.Transport)}
}

// JSON renders the PDU as one JSON object with the fields of DESIGN.md in
// order: frame, time, src, dst, proto, dir, the protocol's fields, anomaly.
func (p *PDU) JSON() ([]byte, error) { return p.AppendJSON(nil) }

// Summary renders the protocol fields as "k=v k=v" for the human table.
func (p *PDU) Summary() string {
	p.Load()
	var sb strings.Builder
	for i, kv := range p.Fields {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(kv.Key)
		sb.WriteByte('=')
		switch v := kv.Value.(type) {
		case string:
			sb.WriteString(v)
		default:
			j, err := json.Marshal(v)
			if err != nil {
				fmt.Fprint(&sb, v)
			} else {
				sb.Write(j)
			}
		}
	}
	if p.Anomaly != "" {
		sb.WriteString(" ANOMALY=")
		sb.WriteString(p.Anomaly)
	}
	return sb.String()
}
