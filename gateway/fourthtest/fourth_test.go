// Package fourthtest_test drives the made-up fourth protocol echo7
// (internal/echo7: a parser package, its rule section and one registry
// line, nothing else) through the real gateway.Engine and through `otgw
// dissect`'s dissector, proving that the engine and the dissector take a
// protocol they were never told about. It is a package of its own so that
// echo7 stays out of the gateway package's tests.
package fourthtest_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/echo7"
	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/dissect"
)

const policySrc = `version: 1
name: fourth
mode: enforce
action: reply
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
conduits:
  - name: hmi-echo
    from: sup
    to: cell
    rules:
      - echo7: {}
`

var (
	hmi    = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	device = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:7007")}
)

type sent struct {
	out   gateway.PortID
	frame []byte
}

// rig is an engine over the policy above, recording what it sends and,
// when asked, its events and its decisions (with the fields the session
// rendered).
type rig struct {
	t      *testing.T
	e      *gateway.Engine
	mu     sync.Mutex // guards the fields below
	tx     []sent
	events []*events.Event
	fields []map[string]any // Decision.Fields of each PDU verdict
	reason []string         // Verdict.ReasonString of each PDU verdict
}

// newRig returns a rig whose engine records events and decisions (none
// when record is false: the engine then runs without hooks).
func newRig(t *testing.T, record bool) *rig {
	t.Helper()
	p, err := rules.Parse("fourth.yaml", []byte(policySrc))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t}
	cfg := gateway.Config{Rules: func() *rules.Ruleset { return rs }}
	if record {
		now := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
		cfg.Now = func() time.Time { now = now.Add(time.Millisecond); return now }
		cfg.Sink = events.SinkFunc(func(ev *events.Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		})
		cfg.OnVerdict = func(d *gateway.Decision) {
			if d.PDU == nil || d.Session == nil {
				return
			}
			if d.Proto != "echo7" || d.PDU.Proto != echo7.Proto || d.Session.Proto() != echo7.Proto {
				t.Errorf("decision proto %q, PDU %v, session %v; want echo7", d.Proto, d.PDU.Proto, d.Session.Proto())
			}
			r.mu.Lock()
			r.fields = append(r.fields, d.Fields())
			r.reason = append(r.reason, d.Verdict.ReasonString())
			r.mu.Unlock()
		}
	}
	r.e, err = gateway.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) Send(out gateway.PortID, frame []byte) {
	r.mu.Lock()
	r.tx = append(r.tx, sent{out, bytes.Clone(frame)})
	r.mu.Unlock()
}

// handle passes one frame in at port in and returns what the engine sent.
func (r *rig) handle(in gateway.PortID, frame []byte) []sent {
	r.mu.Lock()
	n := len(r.tx)
	r.mu.Unlock()
	r.e.Handle(in, bytes.Clone(frame), r)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.tx[n:]...)
}

func (r *rig) mustForward(in gateway.PortID, frame []byte) {
	r.t.Helper()
	out := gateway.South
	if in == gateway.South {
		out = gateway.North
	}
	got := r.handle(in, frame)
	if len(got) != 1 || got[0].out != out || !bytes.Equal(got[0].frame, frame) {
		r.t.Fatalf("got %d frames, want the frame forwarded unchanged to %v", len(got), out)
	}
}

func payload(t *testing.T, frame []byte) []byte {
	t.Helper()
	var p packet.Packet
	if err := p.Decode(frame, packet.LinkEthernet); err != nil {
		t.Fatalf("decode %x: %v", frame, err)
	}
	return p.Payload
}

// TestEngine: over one TCP connection, allowed requests and their paired
// responses cross; a request the section refuses is answered by the
// session's own reply (protocols.Replier) and the connection reset; the
// deny event and the decisions carry echo7's fields and reasons; a
// response to nothing on a second connection is denied as such. Then the
// same frames, written to a capture, dissect to the same fields.
func TestEngine(t *testing.T) {
	r := newRig(t, true)
	var frames [][]byte // everything the client and server sent, in order
	send := func(f *capture.TCPFlow, fromClient bool, b []byte) []byte {
		fr := f.Send(fromClient, b)
		frames = append(frames, fr)
		return fr
	}
	f := capture.NewTCPFlow(hmi, device)
	for i, hs := range f.Handshake() {
		frames = append(frames, hs)
		r.mustForward(gateway.PortID(i%2), hs)
	}
	r.mustForward(gateway.North, send(f, true, echo7.AppendPDU(nil, 1, 0)))
	r.mustForward(gateway.South, send(f, false, echo7.AppendPDU(nil, 1, echo7.FlagResponse)))
	r.mustForward(gateway.North, send(f, true, echo7.AppendPDU(nil, 2, 0)))
	r.mustForward(gateway.South, send(f, false, echo7.AppendPDU(nil, 2, echo7.FlagResponse)))

	got := r.handle(gateway.North, send(f, true, echo7.AppendPDU(nil, 5, 0)))
	if len(got) != 3 || got[0].out != gateway.North {
		t.Fatalf("denied request: %d frames sent, want the reply to the client and two resets", len(got))
	}
	if p, want := payload(t, got[0].frame), echo7.AppendPDU(nil, 5, echo7.FlagResponse|echo7.FlagRefused); !bytes.Equal(p, want) {
		t.Fatalf("reply payload %x, want echo7's refusal %x", p, want)
	}
	r.mu.Lock()
	if len(r.events) != 1 {
		t.Fatalf("%d events, want one deny", len(r.events))
	}
	ev := r.events[0]
	r.mu.Unlock()
	if ev.Type != events.TypeDeny || ev.Proto != "echo7" || ev.Reason != "function_not_allowed" || ev.Rule != "echo7#1" ||
		ev.Fields["func"] != 5 || ev.Fields["flags"] != 0 {
		t.Fatalf("event %s %s reason %q rule %q fields %v; want deny echo7 function_not_allowed by echo7#1, func 5 flags 0",
			ev.Type, ev.Proto, ev.Reason, ev.Rule, ev.Fields)
	}
	// The SOC record: the protocol's fields, under "fields" (no
	// per-protocol object as modbus, dnp3 and opcua have).
	if js := string(ev.AppendJSON(nil)); !strings.Contains(js, `"app_proto":"echo7"`) || !strings.Contains(js, `"fields":{"dir":"request","flags":0,"func":5}`) {
		t.Errorf("event JSON lacks echo7 or its fields: %s", js)
	}

	g := capture.NewTCPFlow(capture.Endpoint{MAC: hmi.MAC, Addr: netip.MustParseAddrPort("192.0.2.130:40001")}, device)
	for i, hs := range g.Handshake() {
		frames = append(frames, hs)
		r.mustForward(gateway.PortID(i%2), hs)
	}
	if got := r.handle(gateway.South, send(g, false, echo7.AppendPDU(nil, 1, echo7.FlagResponse))); len(got) == 0 || got[0].out == gateway.North && bytes.Equal(got[0].frame, frames[len(frames)-1]) {
		t.Fatal("a response to no request crossed")
	}

	wantReasons := []string{"allowed", "allowed", "allowed", "allowed", "function_not_allowed", "response_without_request"}
	wantFuncs := []int{1, 1, 2, 2, 5, 1}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reason) != len(wantReasons) {
		t.Fatalf("verdicts %q, want %q", r.reason, wantReasons)
	}
	for i := range wantReasons {
		if r.reason[i] != wantReasons[i] || r.fields[i]["func"] != wantFuncs[i] {
			t.Errorf("PDU %d: %q func %v, want %q func %d", i, r.reason[i], r.fields[i]["func"], wantReasons[i], wantFuncs[i])
		}
	}
	if c := r.e.Counters(); c.PDUsAllowed != 4 || c.PDUsDenied != 2 {
		t.Errorf("counters: %d allowed, %d denied; want 4, 2", c.PDUsAllowed, c.PDUsDenied)
	}

	// The dissector: the same sessions, the same renderer.
	path := pcaptest.Write(t, "echo7.pcap", frames)
	var dissected []map[string]any
	if _, err := dissect.Run(path, dissect.Options{}, func(p *dissect.PDU) error {
		if p.Proto != echo7.Proto || p.Dst.Port() != echo7.Port && p.Src.Port() != echo7.Port {
			t.Errorf("dissected %v %s > %s, want echo7 on port %d", p.Proto, p.Src, p.Dst, echo7.Port)
		}
		p.Load()
		m := map[string]any{}
		for _, kv := range p.Fields {
			m[kv.Key] = kv.Value
		}
		dissected = append(dissected, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(dissected) != len(r.fields) {
		t.Fatalf("dissect found %d PDUs, the engine judged %d", len(dissected), len(r.fields))
	}
	for i := range dissected {
		for _, k := range []string{"func", "flags"} {
			if dissected[i][k] != r.fields[i][k] {
				t.Errorf("PDU %d %s: dissect %v, engine %v", i, k, dissected[i][k], r.fields[i][k])
			}
		}
	}
}

// TestRegistered: the one registration line put echo7 where the engine
// and the tools look protocols up.
func TestRegistered(t *testing.T) {
	if dissect.DefaultPorts()[echo7.Port] != echo7.Proto || echo7.Proto.String() != "echo7" {
		t.Fatalf("port %d is %v, want echo7", echo7.Port, dissect.DefaultPorts()[echo7.Port])
	}
	var _ protocols.Replier = (*echo7.Session)(nil)
}

// nopTx discards frames.
type nopTx struct{}

func (nopTx) Send(gateway.PortID, []byte) {}

// TestAllowPathAllocatesNothing: an allowed echo7 request and its
// response cost the engine no allocation, as for the built-in protocols
// (gateway/alloc_test.go). The frames are replayed by patching their
// sequence and acknowledgement numbers in place (the engine does not
// verify checksums: the NIC did).
func TestAllowPathAllocatesNothing(t *testing.T) {
	r := newRig(t, false)
	f := capture.NewTCPFlow(hmi, device)
	for i, hs := range f.Handshake() {
		r.mustForward(gateway.PortID(i%2), hs)
	}
	cseq, sseq := f.NextSeq(true), f.NextSeq(false)
	req := f.Send(true, echo7.AppendPDU(nil, 1, 0))
	resp := f.Send(false, echo7.AppendPDU(nil, 1, echo7.FlagResponse))
	const tcpOff = 14 + 20 // Ethernet + IPv4 without options
	step := func() {
		binary.BigEndian.PutUint32(req[tcpOff+4:], cseq)
		binary.BigEndian.PutUint32(req[tcpOff+8:], sseq)
		r.e.Handle(gateway.North, req, nopTx{})
		cseq += echo7.PDULen
		binary.BigEndian.PutUint32(resp[tcpOff+4:], sseq)
		binary.BigEndian.PutUint32(resp[tcpOff+8:], cseq)
		r.e.Handle(gateway.South, resp, nopTx{})
		sseq += echo7.PDULen
	}
	step() // the inspector is in place
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Errorf("an allowed request and response allocate %v times, want 0", n)
	}
	if c := r.e.Counters(); c.PDUsAllowed != 2*202 || c.PDUsDenied != 0 {
		t.Errorf("counters: %d allowed, %d denied; want %d, 0", c.PDUsAllowed, c.PDUsDenied, 2*202)
	}
}
