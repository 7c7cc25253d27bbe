package gateway

import (
	"net/netip"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// Bypass receives the flows the engine hands to a fast path (the XDP flow
// bypass, hal/xdp; DESIGN.md "Fast path"): a flow whose conduit needs no
// payload inspection (a plain tcp: or udp: rule), once the engine has seen
// and allowed its opening: for TCP the client's ACK that completes the
// handshake (SYN, SYN-ACK and ACK all crossed), for UDP the responder's
// first datagram (one allowed datagram each way).
//
// Offer runs on a Handle goroutine with the flow locked: it must not
// block, allocate or call back into the engine (a buffered channel send
// that gives up when full is the intended shape). The engine offers a
// flow once; a flow the sink cannot take simply stays in user space.
//
// The engine never takes a flow back itself. The sink's owner keeps the
// fast path in step with the flow table through Engine.BypassCheck: the
// flow expired or was evicted, a policy reload changed or removed its
// conduit, or the flow became something else. Frames of an offered flow
// that still reach the engine (a FIN, RST or SYN that the fast path
// passes, frames in flight, everything after the fast path let go) are
// judged as any frame of the flow, with the TCP sequence tracking
// resynchronised from each segment (the fast path forwarded bytes the
// normaliser never saw).
type Bypass interface {
	Offer(BypassFlow)
}

// BypassFlow is a flow offered to a Bypass. Its strings alias the ruleset
// and are immutable.
type BypassFlow struct {
	ID     uint64
	Proto  uint8          // packet.ProtoTCP or packet.ProtoUDP
	Client netip.AddrPort // the initiator
	Server netip.AddrPort
	// ClientPort is the bridge port the client's frames arrive on; the
	// server's arrive on ClientPort.Other().
	ClientPort PortID
	// Conduit is the name of the conduit whose plain rule allowed the flow
	// (for counters), Rule the rule's index in it.
	Conduit string
	Rule    int
}

// offerBypass offers f to the configured Bypass when it qualifies: allowed
// by a plain rule (no inspector, not an alert, not picked up mid-stream)
// under the ruleset in force, not offered before. The caller calls it
// where the opening completes (tcp.go: the handshake's ACK; udp: the
// first answer). Caller holds f.mu.
func (e *Engine) offerBypass(c *hctx, f *flow) {
	if e.cfg.Bypass == nil || f.bypassed || f.insp != nil || f.midstream || f.rsGen != c.rs.Generation() ||
		f.verdict.Action != rules.Allow || f.verdict.Inspect != protocols.ProtoNone {
		return
	}
	cli, srv := f.endpoints()
	proto := packet.ProtoUDP
	if f.rf.Transport == rules.TransportTCP {
		proto = packet.ProtoTCP
	}
	f.bypassed = true
	e.cfg.Bypass.Offer(BypassFlow{
		ID: f.id, Proto: proto,
		Client:     netip.AddrPortFrom(cli.addr, cli.port),
		Server:     netip.AddrPortFrom(srv.addr, srv.port),
		ClientPort: f.clientPort, Conduit: f.verdict.ConduitName, Rule: f.verdict.Rule,
	})
}

// bypassResync runs for every frame of an offered flow that reaches the
// engine: the fast path may have forwarded bytes and acknowledgements the
// normaliser never saw, so the sender's next sequence number and the
// other side's acknowledged one move forward to what this segment shows,
// and the window check against the other side's (stale) acknowledgement
// is skipped until that side sends again. Only uninspected flows are
// offered, so no parser state depends on the sequence numbers. UDP needs
// nothing. s is the side of the packet's sender. Caller holds f.mu.
func (e *Engine) bypassResync(c *hctx, f *flow, s side) {
	p := &c.pkt
	if f.rf.Transport != rules.TransportTCP || p.Flags&packet.TCPSyn != 0 {
		return
	}
	h, o := &f.dir[s], &f.dir[s.other()]
	if h.hasISN && seqGT(p.Seq, h.nxt) {
		h.nxt = p.Seq
	}
	if p.Flags&packet.TCPAck != 0 && o.hasISN && seqGT(p.Ack, o.nxt) {
		o.nxt = p.Ack
	}
	o.hasAck = false
}

// BypassCheck reports whether the offered flow bf may stay in the fast
// path: it is still in the flow table (not expired, evicted or replaced
// by a new connection on the same addresses) and the ruleset in force
// still allows it without inspection through the same conduit. When
// lastSeen (the fast path's last forwarded frame of the flow) is later
// than the flow's own last frame, the flow is marked used then, so that
// a busy bypassed flow does not expire from the table while no frame of
// it reaches the engine. It is for the control plane (about once a second
// per bypassed flow, and after each policy reload): it takes the table
// lock and the flow's lock as a frame would. A flow it refuses is left as
// it is: its next frame in user space is re-judged against the new policy
// (and cut, if refused) as any frame of the flow would be.
func (e *Engine) BypassCheck(bf *BypassFlow, lastSeen time.Time) bool {
	k, _ := keyOfAddrs(bf.Client.Addr(), bf.Server.Addr(), bf.Client.Port(), bf.Server.Port(), bf.Proto)
	now := e.now().UnixNano()
	t := e.tab
	f, i := t.lockFlow(k, func(f *flow) bool { return f.lastSeen+f.timeout > now })
	if f == nil {
		return false // gone, or expired: the next Expire or new flow takes the slot
	}
	defer f.mu.Unlock()
	if !f.bypassed || f.id != bf.ID {
		return false
	}
	if ls := lastSeen.UnixNano(); ls > 0 {
		t.mu.Lock() // table after flow is safe: see flow
		if ls > t.slot(i).lastSeen {
			t.touch(i, min(ls, now))
		}
		t.mu.Unlock()
	}
	rs := e.cfg.Rules()
	if rs == nil {
		return false
	}
	if rs.Generation() == f.rsGen {
		return true
	}
	rf := f.rf // the flow's match cache belongs to the Handle goroutines
	open := rules.OpenSYN
	if rf.Transport != rules.TransportTCP {
		open = rules.OpenDatagram
	}
	v, reversed, _ := rs.EvaluateOpen(&rf, open, nil)
	return !reversed && v.Action == rules.Allow && v.Inspect == protocols.ProtoNone && v.ConduitName == bf.Conduit
}
