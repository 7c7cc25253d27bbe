package gateway

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// Test hosts (documentation ranges): an HMI in the supervisory zone on the
// north port, a PLC / RTU in the cell on the south port.
var (
	hmiEP = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	plcEP = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
	rtuEP = capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.20:20000")}
	uaEP  = capture.Endpoint{MAC: capture.MAC(4), Addr: netip.MustParseAddrPort("192.0.2.30:4840")}
)

// policy builds a policy with the zones and assets above and the given
// top-level mode/action, l2 list and conduits (YAML, indented by 2).
func policy(t testing.TB, mode, action, l2, conduits string) *rules.Ruleset {
	t.Helper()
	src := `version: 1
name: test
mode: ` + mode + `
action: ` + action + `
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
  rtu: { ip: 192.0.2.20, zone: cell }
  ua:  { ip: 192.0.2.30, zone: cell }
` + l2 + `
conduits:
` + conduits
	p, err := rules.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, src)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatalf("compile: %v\n%s", err, src)
	}
	return rs
}

const modbusConduit = `  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
            - write: holding 40-49
              values: 0-1000
`

// sent is one frame the engine passed to Tx.
type sent struct {
	out   PortID
	frame []byte
}

// rig is an engine with a recording Tx and event sink.
type rig struct {
	t      testing.TB
	e      *Engine
	rs     atomic.Pointer[rules.Ruleset]
	mu     sync.Mutex
	tx     []sent
	events []*events.Event
	decs   []Decision
	now    time.Time
}

func newRig(t testing.TB, rs *rules.Ruleset, tweak func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, now: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)}
	r.rs.Store(rs)
	cfg := Config{
		Rules: r.rs.Load,
		Sink: events.SinkFunc(func(ev *events.Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}),
		Now: func() time.Time { return r.now },
		OnVerdict: func(d *Decision) {
			r.mu.Lock()
			dd := *d
			dd.PDU, dd.Session = nil, nil
			r.decs = append(r.decs, dd)
			r.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	return r
}

func (r *rig) Send(out PortID, frame []byte) {
	r.mu.Lock()
	r.tx = append(r.tx, sent{out, bytes.Clone(frame)})
	r.mu.Unlock()
}

// handle passes one frame and returns what was sent for it.
func (r *rig) handle(in PortID, frame []byte) []sent {
	r.t.Helper()
	r.mu.Lock()
	n := len(r.tx)
	r.mu.Unlock()
	r.e.Handle(in, bytes.Clone(frame), r)
	r.now = r.now.Add(time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.tx[n:]...)
}

// client and server send through the ports the test topology uses.
func (r *rig) client(frame []byte) []sent { return r.handle(North, frame) }
func (r *rig) server(frame []byte) []sent { return r.handle(South, frame) }

// mustForward asserts that exactly frame came out of port out.
func (r *rig) mustForward(got []sent, out PortID, frame []byte) {
	r.t.Helper()
	if len(got) != 1 || got[0].out != out || !bytes.Equal(got[0].frame, frame) {
		r.t.Fatalf("got %s, want the frame forwarded unchanged to %v", describe(got), out)
	}
}

func (r *rig) handshake(f *capture.TCPFlow) {
	r.t.Helper()
	hs := f.Handshake()
	r.mustForward(r.client(hs[0]), South, hs[0])
	r.mustForward(r.server(hs[1]), North, hs[1])
	r.mustForward(r.client(hs[2]), South, hs[2])
}

func (r *rig) counters() Counters { return r.e.Counters() }

func (r *rig) lastEvent() *events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		r.t.Fatal("no event emitted")
	}
	return r.events[len(r.events)-1]
}

// seg is a decoded crafted or forwarded frame.
type seg struct {
	pkt     packet.Packet
	payload []byte
}

func decode(t testing.TB, frame []byte) seg {
	t.Helper()
	var s seg
	if err := s.pkt.Decode(frame, packet.LinkEthernet); err != nil {
		t.Fatalf("decode %x: %v", frame, err)
	}
	s.payload = s.pkt.Payload
	checkChecksums(t, frame)
	return s
}

// checkChecksums re-serialises frame with gopacket, computing lengths and
// checksums independently of the engine, and requires the same bytes.
func checkChecksums(t testing.TB, frame []byte) {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	for _, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.Ethernet:
			ls = append(ls, l)
		case *layers.Dot1Q:
			ls = append(ls, l)
		case *layers.IPv4:
			nl = l
			ls = append(ls, l)
		case *layers.IPv6:
			nl = l
			ls = append(ls, l)
		case *layers.TCP:
			_ = l.SetNetworkLayerForChecksum(nl)
			ls = append(ls, l, gopacket.Payload(l.Payload))
		case *layers.UDP:
			_ = l.SetNetworkLayerForChecksum(nl)
			ls = append(ls, l, gopacket.Payload(l.Payload))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("re-serialise: %v", err)
	}
	want := buf.Bytes()
	got := frame
	if len(got) > len(want) && len(want) < 60 {
		got = got[:len(want)] // Ethernet padding
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("frame lengths/checksums wrong:\n got %x\nwant %x", got, want)
	}
}

func describe(got []sent) string {
	var b strings.Builder
	b.WriteString("[")
	for i, s := range got {
		if i > 0 {
			b.WriteString(", ")
		}
		var p packet.Packet
		_ = p.Decode(s.frame, packet.LinkEthernet)
		b.WriteString(s.out.String() + ":")
		if p.Proto == packet.ProtoTCP {
			b.WriteString(p.SrcAddrPort().String() + ">" + p.DstAddrPort().String() + " flags=")
			b.WriteString(flagString(p.Flags))
			b.WriteString(" len=" + itoa(len(p.Payload)))
		} else {
			b.WriteString(itoa(len(s.frame)) + "B")
		}
	}
	b.WriteString("]")
	return b.String()
}

func flagString(f uint8) string {
	s := ""
	for i, n := range []string{"F", "S", "R", "P", "A"} {
		if f&(1<<i) != 0 {
			s += n
		}
	}
	return s
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	if neg {
		b = append([]byte{'-'}, b...)
	}
	return string(b)
}

func netipAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// delivered checks the frames sent to out: valid checksums, TCP, payloads
// contiguous from sequence number seq; it returns the bytes they carry.
func (r *rig) delivered(got []sent, out PortID, seq uint32) []byte {
	r.t.Helper()
	var data []byte
	for _, s := range got {
		if s.out != out {
			continue
		}
		d := decode(r.t, s.frame)
		if d.pkt.Proto != packet.ProtoTCP || d.pkt.Flags&packet.TCPRst != 0 {
			continue
		}
		if d.pkt.Seq != seq+uint32(len(data)) {
			r.t.Fatalf("segment at seq %d, want %d: %s", d.pkt.Seq, seq+uint32(len(data)), describe(got))
		}
		data = append(data, d.payload...)
	}
	return data
}

// mustHold asserts that the segment was held: only a pure ACK at seq
// crossed to out.
func (r *rig) mustHold(got []sent, out PortID, seq uint32) {
	r.t.Helper()
	if len(got) != 1 || got[0].out != out {
		r.t.Fatalf("got %s, want one pure ACK to %v", describe(got), out)
	}
	d := decode(r.t, got[0].frame)
	if len(d.payload) != 0 || d.pkt.Seq != seq || d.pkt.Flags != packet.TCPAck {
		r.t.Fatalf("got seq %d flags %s len %d, want a pure ACK at %d", d.pkt.Seq, flagString(d.pkt.Flags), len(d.payload), seq)
	}
}

// openUA opens an OPC UA secure channel (HEL, ACK, OPN request and
// response, channel 7, security mode None) on the connection f, whose
// handshake the rig has seen; every message must cross. what names the
// connection in a failure.
func (r *rig) openUA(t testing.TB, f *capture.TCPFlow, hello opcua.Hello, what string) {
	t.Helper()
	for j, s := range []struct {
		client bool
		b      []byte
	}{
		{true, opcua.AppendHello(nil, hello)},
		{false, opcua.AppendAcknowledge(nil, hello)},
		{true, opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone)},
		{false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)},
	} {
		fr := f.Send(s.client, s.b)
		in := North
		if !s.client {
			in = South
		}
		if got := r.handle(in, fr); len(got) != 1 {
			t.Fatalf("%s step %d: got %s (%v)", what, j, describe(got), r.counters().DropsByName())
		}
	}
}
