package gateway

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/simulate/capture"
)

// offers records what the engine offered (a sink as the daemon's, but
// kept in a slice).
type offers struct {
	mu sync.Mutex
	l  []BypassFlow
}

func (o *offers) Offer(f BypassFlow) { o.mu.Lock(); o.l = append(o.l, f); o.mu.Unlock() }

func (o *offers) get() []BypassFlow {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]BypassFlow(nil), o.l...)
}

const udpConduit = `  - name: hmi-syslog
    from: hmi
    to: plc
    rules:
      - udp: { ports: [514] }
`

var sshEP = capture.Endpoint{MAC: plcEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.10:22")}

func bypassRig(t *testing.T, conduits string) (*rig, *offers) {
	t.Helper()
	o := &offers{}
	r := newRig(t, policy(t, "enforce", "reset", "", conduits), func(c *Config) { c.Bypass = o })
	return r, o
}

// A flow is offered only once its handshake was allowed, on a plain
// conduit, and only once; an inspected conduit's flow never is.
func TestBypassOfferedAfterHandshakeOnPlainConduit(t *testing.T) {
	r, o := bypassRig(t, tcpConduit+modbusConduit)
	f := capture.NewTCPFlow(hmiEP, sshEP)
	hs := f.Handshake()
	r.mustForward(r.client(hs[0]), South, hs[0])
	r.mustForward(r.server(hs[1]), North, hs[1])
	if n := len(o.get()); n != 0 {
		t.Fatalf("%d offers before the handshake's ACK, want 0", n)
	}
	r.mustForward(r.client(hs[2]), South, hs[2])
	got := o.get()
	if len(got) != 1 {
		t.Fatalf("%d offers after the handshake, want 1", len(got))
	}
	want := BypassFlow{ID: got[0].ID, Proto: packet.ProtoTCP, Client: hmiEP.Addr, Server: sshEP.Addr,
		ClientPort: North, Conduit: "hmi-ssh", Rule: 0}
	if got[0] != want || got[0].ID == 0 {
		t.Errorf("offer %+v, want %+v", got[0], want)
	}
	data := f.Send(true, []byte("ls\n"))
	r.mustForward(r.client(data), South, data)
	if n := len(o.get()); n != 1 {
		t.Errorf("%d offers after more data, want still 1", n)
	}

	// An inspected conduit: never offered.
	m := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(m)
	req := m.Send(true, readReq(1, 0, 10))
	r.mustForward(r.client(req), South, req)
	if n := len(o.get()); n != 1 {
		t.Errorf("%d offers after a Modbus handshake and request, want still 1 (inspected conduits are never offered)", n)
	}
}

// A refused handshake is never offered; a monitor-mode alert flow neither.
func TestBypassNotOfferedWhenNotAllowed(t *testing.T) {
	o := &offers{}
	r := newRig(t, policy(t, "monitor", "reset", "", modbusConduit), func(c *Config) { c.Bypass = o })
	f := capture.NewTCPFlow(hmiEP, sshEP) // no conduit allows port 22: an alert in monitor mode
	r.handshake(f)
	if n := len(o.get()); n != 0 {
		t.Errorf("%d offers for an alerted flow, want 0", n)
	}
}

// UDP: offered when the responder's first datagram crosses.
func TestBypassUDPOfferedOnAnswer(t *testing.T) {
	r, o := bypassRig(t, udpConduit)
	cli := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.130:40514")}
	srv := capture.Endpoint{MAC: plcEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.10:514")}
	q := capture.UDPDatagram(cli, srv, []byte("query"))
	r.mustForward(r.client(q), South, q)
	r.mustForward(r.client(q), South, q)
	if n := len(o.get()); n != 0 {
		t.Fatalf("%d offers before an answer, want 0", n)
	}
	a := capture.UDPDatagram(srv, cli, []byte("answer"))
	r.mustForward(r.server(a), North, a)
	got := o.get()
	if len(got) != 1 || got[0].Proto != packet.ProtoUDP || got[0].Client != cli.Addr || got[0].Server != srv.Addr || got[0].Conduit != "hmi-syslog" {
		t.Fatalf("offers %+v, want one UDP offer of %v > %v on hmi-syslog", got, cli.Addr, srv.Addr)
	}
}

// The fast path forwarded bytes the normaliser never saw; the FIN, the
// RST or any frame that comes back to user space must still cross, with
// sequence and acknowledgement numbers far past what the engine tracked.
func TestBypassResyncAcceptsFramesAfterTheFastPath(t *testing.T) {
	r, _ := bypassRig(t, tcpConduit)
	f := capture.NewTCPFlow(hmiEP, sshEP)
	r.handshake(f)
	// 3 MB from the client and 200 kB from the server crossed in XDP.
	f.Advance(true, 3<<20)
	f.Advance(false, 200<<10)
	d := f.Send(false, []byte("late server data in flight"))
	r.mustForward(r.server(d), North, d)
	fin := f.Segment(true, f.NextSeq(true), f.NextSeq(false), capture.TCPFlags{FIN: true, ACK: true}, nil)
	r.mustForward(r.client(fin), South, fin)
	finAck := f.Segment(false, f.NextSeq(false), f.NextSeq(true)+1, capture.TCPFlags{FIN: true, ACK: true}, nil)
	r.mustForward(r.server(finAck), North, finAck)
	ack := f.Segment(true, f.NextSeq(true)+1, f.NextSeq(false)+1, capture.TCPFlags{ACK: true}, nil)
	r.mustForward(r.client(ack), South, ack)

	// A reset after a bypassed stretch crosses and closes the flow.
	g := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.130:40001")}, sshEP)
	r.handshake(g)
	g.Advance(true, 5<<20)
	rst := g.Segment(true, g.NextSeq(true), g.NextSeq(false), capture.TCPFlags{RST: true, ACK: true}, nil)
	r.mustForward(r.client(rst), South, rst)
	late := g.Send(true, []byte("after the reset"))
	if got := r.client(late); len(got) != 0 {
		t.Errorf("data after the reset: %s, want dropped (flow closed)", describe(got))
	}
}

// BypassCheck keeps an offered flow while it is in the table and the
// ruleset in force allows it uninspected through the same conduit; it
// refuses after a reload that removes or inspects the conduit, and once
// the flow expired. A recent lastSeen from the fast path keeps the flow
// from expiring.
func TestBypassCheck(t *testing.T) {
	r, o := bypassRig(t, tcpConduit)
	f := capture.NewTCPFlow(hmiEP, sshEP)
	r.handshake(f)
	bf := o.get()[0]
	if !r.e.BypassCheck(&bf, time.Time{}) {
		t.Fatal("BypassCheck of a fresh offered flow: false")
	}
	other := bf
	other.ID++
	if r.e.BypassCheck(&other, time.Time{}) {
		t.Error("BypassCheck with another flow id (a new connection on the same addresses): true")
	}

	// Same conduit name and rule after a reload: kept.
	r.rs.Store(policy(t, "enforce", "reset", "", tcpConduit+modbusConduit))
	if !r.e.BypassCheck(&bf, time.Time{}) {
		t.Error("BypassCheck after a reload that keeps the conduit: false")
	}
	// The conduit now inspects the port... as Modbus: refused.
	r.rs.Store(policy(t, "enforce", "reset", "", `  - name: hmi-ssh
    from: hmi
    to: plc
    rules:
      - modbus: { ports: [22], units: [1], allow: [{read: holding 0-9}] }
`))
	if r.e.BypassCheck(&bf, time.Time{}) {
		t.Error("BypassCheck after a reload that inspects the flow's port: true")
	}
	// The conduit is gone: refused.
	r.rs.Store(policy(t, "enforce", "reset", "", modbusConduit))
	if r.e.BypassCheck(&bf, time.Time{}) {
		t.Error("BypassCheck after a reload that removes the conduit: true")
	}
	// And the flow's next frame in user space is cut by the new policy.
	d := f.Send(true, []byte("x"))
	for _, s := range r.client(d) {
		if dd := decode(t, s.frame); dd.pkt.Flags&packet.TCPRst == 0 {
			t.Errorf("after the reload, the flow's data crossed: %s", describe(r.client(d)))
		}
	}

	// Idle expiry, and the fast path's lastSeen keeping the flow.
	r.rs.Store(policy(t, "enforce", "reset", "", tcpConduit))
	var kept, idle BypassFlow
	for i, port := range []uint16{41000, 41001} {
		g := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), port)}, sshEP)
		r.handshake(g)
		l := o.get()
		if i == 0 {
			kept = l[len(l)-1]
		} else {
			idle = l[len(l)-1]
		}
	}
	for range 3 {
		r.now = r.now.Add(30 * time.Minute)
		if !r.e.BypassCheck(&kept, r.now) {
			t.Fatal("BypassCheck of a flow the fast path keeps busy: false")
		}
	}
	r.e.Expire(r.now)
	if r.e.BypassCheck(&idle, time.Time{}) {
		t.Error("BypassCheck of a flow idle for 90 minutes (TCP idle timeout 1h): true")
	}
	if !r.e.BypassCheck(&kept, r.now) {
		t.Error("BypassCheck of the busy flow after Expire: false")
	}
}

// The offer and the frames of an offered flow allocate nothing.
func TestBypassAllocatesNothing(t *testing.T) {
	ch := make(chanBypass, 1)
	r := newRig(t, policy(t, "enforce", "reset", "", tcpConduit), func(c *Config) {
		c.Bypass = ch
		c.Sink = events.Discard
		c.OnVerdict = nil
	})
	// The handshake's ACK with its offer, on fresh flows whose slots exist.
	flows := make([][][]byte, 0, 60)
	for i := range 60 {
		g := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(42000+i))}, sshEP)
		hs := g.Handshake()
		r.e.Handle(North, hs[0], nopTx{})
		r.e.Handle(South, hs[1], nopTx{})
		flows = append(flows, hs)
	}
	i := 0
	if n := testing.AllocsPerRun(50, func() {
		r.e.Handle(North, flows[i][2], nopTx{})
		i++
		select {
		case <-ch:
		default:
		}
	}); n != 0 {
		t.Errorf("handshake ACK with an offer: %v allocations, want 0", n)
	}
	// A bypassed flow's frames in user space (resync on each).
	s := newStream(r, capture.NewTCPFlow(hmiEP, sshEP), []byte("ssh bytes"), []byte("more ssh"))
	if n := testing.AllocsPerRun(100, func() { s.cseq += 1 << 16; s.step(r.e, nopTx{}) }); n != 0 {
		t.Errorf("frames of a bypassed flow: %v allocations, want 0", n)
	}
}

// chanBypass is the daemon's shape of sink: a non-blocking channel send.
type chanBypass chan BypassFlow

func (c chanBypass) Offer(f BypassFlow) {
	select {
	case c <- f:
	default:
	}
}
