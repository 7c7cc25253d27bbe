package gateway

import (
	"testing"
	"time"

	"github.com/otgw/otgw/simulate/capture"
)

// TestExpiredFlowNeverReused: a flow idle past its timeout is over even
// when no sweep reclaimed its slot. The next packet on its addresses
// starts a new flow, as if the flow had been swept: a mid-stream segment
// finds no flow in enforce mode, and a new connection gets a fresh flow
// (new id, new verdict, new sequence state).
func TestExpiredFlowNeverReused(t *testing.T) {
	r, f := modbusRig(t, "drop")
	q := f.Send(true, readReq(1, 0, 1))
	r.mustForward(r.client(q), South, q)
	a := f.Send(false, readResp(1, []uint16{7}))
	r.mustForward(r.server(a), North, a)
	old := r.e.Flows(0)
	if len(old) != 1 {
		t.Fatalf("%d flows, want 1", len(old))
	}

	r.now = r.now.Add(time.Hour + time.Second) // past TCPIdle, nothing swept
	q = f.Send(true, readReq(2, 0, 1))
	if got := r.client(q); len(got) != 0 {
		t.Fatalf("segment of the expired flow: got %s, want it dropped as no_flow", describe(got))
	}
	c := r.counters()
	if c.Drops[DropNoFlow] != 1 || c.FlowsExpired != 1 || c.FlowsActive != 0 {
		t.Fatalf("no_flow %d, expired %d, active %d; want 1, 1, 0", c.Drops[DropNoFlow], c.FlowsExpired, c.FlowsActive)
	}

	// A new connection on the same ports (any ISN) is a new flow.
	g := capture.NewTCPFlow(hmiEP, plcEP)
	g.Advance(true, 12345)
	r.handshake(g)
	q = g.Send(true, readReq(3, 0, 1))
	r.mustForward(r.client(q), South, q)
	now := r.e.Flows(0)
	if len(now) != 1 || now[0].ID == old[0].ID || now[0].PDUs != 1 {
		t.Fatalf("flows after expiry %+v; want one new flow (not id %d) with 1 PDU", now, old[0].ID)
	}
}

// TestExpiredHalfOpenNotReused: a SYN whose handshake timed out is over;
// the client's SYN with a new ISN opens a new flow instead of being
// refused as a second ISN of the old one.
func TestExpiredHalfOpenNotReused(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	syn := f.Handshake()[0]
	r.mustForward(r.client(syn), South, syn)
	r.now = r.now.Add(31 * time.Second) // past TCPHandshake
	g := capture.NewTCPFlow(hmiEP, plcEP)
	g.Advance(true, 1<<20)
	r.handshake(g)
	if c := r.counters(); c.FlowsExpired != 1 || c.Drops[DropBadTCP] != 0 {
		t.Fatalf("expired %d, bad_tcp %d; want 1, 0", c.FlowsExpired, c.Drops[DropBadTCP])
	}
}

// TestClockBackStartsNewFlowOnlyInReplay: a packet stamped long before the
// last packet of its flow comes from another capture (merged files out of
// time order) when Config.ClockBack is set (offline replay): the flow is
// over. The live gateway (ClockBack zero) keeps its flows when the wall
// clock is stepped back.
func TestClockBackStartsNewFlowOnlyInReplay(t *testing.T) {
	for _, replay := range []bool{false, true} {
		r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), func(c *Config) {
			if replay {
				c.ClockBack = 2 * time.Second
			}
		})
		f := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(f)
		r.now = r.now.Add(-time.Hour)
		q := f.Send(true, readReq(1, 0, 1))
		got := r.client(q)
		switch {
		case replay && len(got) != 0:
			t.Fatalf("replay: segment an hour before its flow's last: got %s, want no_flow", describe(got))
		case !replay:
			r.mustForward(got, South, q)
		}
		if c := r.counters(); replay && (c.Drops[DropNoFlow] != 1 || c.FlowsExpired != 1) || !replay && c.FlowsExpired != 0 {
			t.Fatalf("replay %v: no_flow %d expired %d", replay, c.Drops[DropNoFlow], c.FlowsExpired)
		}
		// Within the slack (two interfaces of one capture) the flow stays.
		if replay {
			r2 := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), func(c *Config) { c.ClockBack = 2 * time.Second })
			f2 := capture.NewTCPFlow(hmiEP, plcEP)
			r2.handshake(f2)
			r2.now = r2.now.Add(-time.Second)
			q := f2.Send(true, readReq(1, 0, 1))
			r2.mustForward(r2.client(q), South, q)
		}
	}
}

// TestRebootedClientRecovers: an HMI that rebooted reconnects from the
// same source port while the gateway (and the PLC) still hold its old
// connection. As a Linux receiver does (RFC 5961 section 4), the PLC
// answers the new SYN with a challenge ACK of the old connection; the
// client, which knows no such connection, answers with a RST at the
// acknowledged sequence number; the PLC drops the old connection and the
// client's retransmitted SYN opens the new one. The gateway lets every
// step through and judges the new connection's requests afresh, instead
// of refusing the SYN until the old flow's idle timeout (1 h).
func TestRebootedClientRecovers(t *testing.T) {
	for _, isn := range []uint32{1 << 30, 100} { // outside and inside the old window
		t.Run("", func(t *testing.T) {
			r, old := modbusRig(t, "drop")
			q := old.Send(true, readReq(1, 0, 1))
			r.mustForward(r.client(q), South, q)
			nf := capture.NewTCPFlow(hmiEP, plcEP)
			nf.Advance(true, int(isn))
			syn := nf.Handshake()[0]
			r.mustForward(r.client(syn), South, syn)
			// The PLC's challenge ACK: its own next sequence number, the
			// old connection's next expected byte.
			cack := old.Segment(false, old.NextSeq(false), old.NextSeq(true), capture.TCPFlags{ACK: true}, nil)
			r.mustForward(r.server(cack), North, cack)
			// The rebooted client's reset (RFC 9293 section 3.10.7.3: an
			// ACK in SYN-SENT that acknowledges nothing it sent).
			rst := old.Segment(true, old.NextSeq(true), 0, capture.TCPFlags{RST: true}, nil)
			r.mustForward(r.client(rst), South, rst)
			// The client retransmits its SYN: a new connection.
			r.handshake(nf)
			q = nf.Send(true, readReq(2, 0, 1))
			r.mustForward(r.client(q), South, q)
			w := nf.Send(true, writeReq(3, 0, 258)) // holding 0 is not writable
			if got := r.client(w); len(got) != 0 {
				t.Fatalf("forbidden write on the new connection: got %s", describe(got))
			}
			if c := r.counters(); c.Drops[DropBadTCP] != 0 || c.Drops[DropPDUDenied] != 1 {
				t.Fatalf("drops %v", c.DropsByName())
			}
			if fl := r.e.Flows(0); len(fl) != 1 || fl[0].PDUs != 2 || fl[0].State != "established" {
				t.Fatalf("flows %+v, want the new connection with its 2 PDUs", fl)
			}
		})
	}
}

// TestRebootedServerAcceptsNewSYN: the client reconnects from the same
// port while the gateway still holds the old connection, and the server
// has none left (it rebooted, or dropped the connection without a RST
// that crossed): it answers the SYN with a SYN-ACK. The gateway starts the
// flow again from that SYN (new flow id, fresh verdict and inspector)
// instead of refusing the SYN-ACK until the idle timeout. A forged
// SYN-ACK does not: not after the old connection showed itself alive
// (the server's challenge ACK), nor from the client's side of the bridge.
func TestRebootedServerAcceptsNewSYN(t *testing.T) {
	t.Run("server without the connection", func(t *testing.T) {
		r, old := modbusRig(t, "drop")
		q := old.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(q), South, q)
		id := r.e.Flows(0)[0].ID
		nf := capture.NewTCPFlow(hmiEP, plcEP)
		nf.Advance(true, 1<<30)
		nf.Advance(false, 777)
		r.handshake(nf)
		q = nf.Send(true, readReq(2, 0, 1))
		r.mustForward(r.client(q), South, q)
		w := nf.Send(true, writeReq(3, 0, 258))
		if got := r.client(w); len(got) != 0 {
			t.Fatalf("forbidden write on the new connection: got %s", describe(got))
		}
		fl := r.e.Flows(0)
		if len(fl) != 1 || fl[0].ID == id || fl[0].PDUs != 2 || fl[0].State != "established" {
			t.Fatalf("flows %+v, want one new flow (not id %d) with 2 PDUs", fl, id)
		}
		if c := r.counters(); c.Drops[DropBadTCP] != 0 {
			t.Fatalf("drops %v", c.DropsByName())
		}
	})
	t.Run("forged SYN-ACK after the challenge ACK", func(t *testing.T) {
		r, old := modbusRig(t, "drop")
		nf := capture.NewTCPFlow(hmiEP, plcEP)
		nf.Advance(true, 1<<30)
		hs := nf.Handshake()
		r.mustForward(r.client(hs[0]), South, hs[0])
		cack := old.Segment(false, old.NextSeq(false), old.NextSeq(true), capture.TCPFlags{ACK: true}, nil)
		r.mustForward(r.server(cack), North, cack)
		if got := r.server(hs[1]); len(got) != 0 {
			t.Fatalf("forged SYN-ACK: got %s", describe(got))
		}
		q := old.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(q), South, q)
	})
	t.Run("SYN-ACK from the client's side", func(t *testing.T) {
		r, old := modbusRig(t, "drop")
		nf := capture.NewTCPFlow(hmiEP, plcEP)
		nf.Advance(true, 1<<30)
		hs := nf.Handshake()
		r.mustForward(r.client(hs[0]), South, hs[0])
		if got := r.client(hs[1]); len(got) != 0 {
			t.Fatalf("SYN-ACK from the north port: got %s", describe(got))
		}
		q := old.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(q), South, q)
	})
}
