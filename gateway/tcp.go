package gateway

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// maxUnsent bounds the PDUs whose bytes are held until they are judged.
// A sender whose PDU is held gets no acknowledgement for it; holding more
// than its congestion window (RFC 6928: an initial window of 10 segments,
// 5360 bytes at the minimum IPv4 MSS of 536) would stall it, so the first
// bytes of a larger PDU (only OPC UA chunks are larger) cross before it is
// judged, as before (see the package documentation).
const maxUnsent = 4096

// outBufSize is the per-call buffer for segments crafted from held bytes:
// headers plus at most one jumbo frame's payload.
const outBufSize = 10240

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// handleFlow runs a TCP or UDP packet through the flow table.
func (e *Engine) handleFlow(c *hctx) {
	p := &c.pkt
	k, fromA := keyOf(p)
	t := e.tab
	for range 2 {
		t.mu.Lock()
		i, ok := t.m[k]
		if ok && t.releaseOver(i, c.now, int64(e.cfg.ClockBack), e.putInspector) {
			// An expired flow is never reused: this packet starts a new
			// one (fresh verdict, inspector and sequence state), as if
			// the flow had been swept before it arrived.
			ok = false
			e.ctr.flowsExpired.Add(1)
		}
		var gen uint32
		if ok {
			t.touch(i, c.now)
			gen = t.slot(i).gen
		}
		t.mu.Unlock()
		if !ok {
			if e.newFlow(c, k, fromA) {
				return
			}
			// Another goroutine created it meanwhile: look again, with
			// nothing of this packet's new-flow judgement left behind.
			c.reversed, c.dec.Named = false, ""
			continue
		}
		f := t.slot(i)
		f.mu.Lock()
		if f.gen != gen {
			f.mu.Unlock()
			continue // recycled between the lookup and the lock
		}
		e.flowPacket(c, f, f.sideOf(fromA))
		e.settle(i, f)
		f.mu.Unlock()
		return
	}
	e.reportDrop(c, nil, DropTableFull)
}

// settle applies the class and timeout the flow asked for. Caller holds
// f.mu; taking the table lock here is safe because the table side never
// blocks on a flow lock of a slot in use (see flow).
func (e *Engine) settle(i int32, f *flow) {
	if f.halfOpen && f.state >= tcpEstablished {
		e.tab.half.leave(f.key.a, f.key.b, f.aIsClient)
		f.halfOpen = false
	}
	want, timeout := e.classOf(f)
	if want == f.appliedClass && timeout == f.appliedTimeout {
		return
	}
	f.appliedClass, f.appliedTimeout = want, timeout
	e.tab.mu.Lock()
	e.tab.setClass(i, want, int64(timeout))
	e.tab.mu.Unlock()
}

// classOf returns the eviction class and idle timeout of f's state.
func (e *Engine) classOf(f *flow) (uint8, time.Duration) {
	if f.rf.Transport != rules.TransportTCP {
		if f.answered && f.verdict.Action == rules.Allow {
			return classEstablished, e.cfg.UDPIdle
		}
		return classTransient, e.cfg.UDPIdle
	}
	switch f.state {
	case tcpEstablished:
		if f.verdict.Action == rules.Allow {
			return classEstablished, e.cfg.TCPIdle
		}
		return classTransient, e.cfg.TCPIdle
	case tcpClosing:
		if f.dir[sideClient].fin && f.dir[sideServer].fin {
			return classTransient, e.cfg.TCPClosed // both FINs: TIME_WAIT-like
		}
		// Half-closed: the other end may still send (RFC 9293 section
		// 3.6), and a receiver keeps the connection at least as long as
		// an open one (Linux: FIN_WAIT_2 after shutdown(SHUT_WR), and
		// CLOSE_WAIT, until the application closes). Transient class: a
		// full table evicts it first.
		return classTransient, e.cfg.TCPIdle
	case tcpClosed:
		return classTransient, e.cfg.TCPClosed
	}
	return classTransient, e.cfg.TCPHandshake
}

// orient fills rf for the flow of packet p from its client to its server,
// p's sender being side from (sideServer: rf runs from p's destination to
// its source).
func (e *Engine) orient(c *hctx, rf *rules.Flow, from side) {
	p := &c.pkt
	*rf = rules.Flow{EtherType: p.EtherType, Transport: p.Proto}
	if p.NVLANs > 0 {
		rf.VLAN = p.VLANs[p.NVLANs-1]
	}
	if from == sideClient {
		rf.InPort, rf.OutPort = e.ports[c.in], e.ports[c.in.Other()]
		rf.SrcMAC, rf.DstMAC = p.SrcMAC, p.DstMAC
		rf.Src, rf.Dst, rf.SrcPort, rf.DstPort = p.Src, p.Dst, p.SrcPort, p.DstPort
	} else {
		rf.InPort, rf.OutPort = e.ports[c.in.Other()], e.ports[c.in]
		rf.SrcMAC, rf.DstMAC = p.DstMAC, p.SrcMAC
		rf.Src, rf.Dst, rf.SrcPort, rf.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
	}
}

// newFlow judges the first packet of an unknown flow and, when the
// ruleset lets it through, creates the flow and processes the packet. It
// returns false when another goroutine created the same flow meanwhile.
func (e *Engine) newFlow(c *hctx, k flowKey, fromA bool) bool {
	p := &c.pkt
	tcp := p.Proto == packet.ProtoTCP
	c.dec.Proto = "udp"
	if tcp {
		c.dec.Proto = "tcp"
	}
	rf := &c.rf
	sender := sideClient // the side of the packet's sender in the new flow
	var v rules.Verdict
	open := rules.OpenDatagram
	if tcp {
		open = rules.OpenMidstream
		if p.Flags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst|packet.TCPFin) == packet.TCPSyn {
			open = rules.OpenSYN
		}
	}
	e.orient(c, rf, sideClient)
	v, reversed, named := c.rs.EvaluateOpen(rf, open, p.Payload)
	if reversed {
		sender = sideServer
		c.reversed = true
	}
	c.dec.Named = named
	if open == rules.OpenMidstream && (!v.AdoptsMidstream() || p.Flags&packet.TCPRst != 0) {
		// Mid-stream: only a monitor-mode conduit (or policy) may adopt it.
		e.reportDrop(c, nil, DropNoFlow)
		return true
	}
	if v.Action == rules.Deny {
		act := FrameDrop
		if tcp && v.DenyAction != rules.ActionDrop {
			act = FrameInject
		}
		e.denyFlow(c, nil, v, act)
		if act == FrameInject {
			// Refuse the SYN the way a closed port does (RFC 9293 section 3.10.7.1).
			e.sendRaw(c, c.in, p.Dst, p.Src, p.DstPort, p.SrcPort, 0, p.Seq+1, packet.TCPRst|packet.TCPAck, nil, false)
		}
		return true
	}
	// A connection opening with a SYN is half-open: it takes a slot of the
	// table but no inspector (attachInspector takes one when the handshake
	// completes), and counts against its client's half-open limit. A UDP
	// flow or a monitor-mode pickup carries data from its first packet.
	syn := tcp && p.Flags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst|packet.TCPFin) == packet.TCPSyn
	var insp *inspector
	if !syn && v.Action == rules.Allow && v.Inspect != protocols.ProtoNone {
		insp = e.getInspector(v.Inspect)
		if insp == nil && e.reclaimInspector(c.now, v.Inspect) {
			insp = e.getInspector(v.Inspect)
		}
		if insp == nil {
			e.reportDrop(c, nil, DropMemoryCap)
			return true
		}
	}
	t := e.tab
	t.mu.Lock()
	if _, ok := t.m[k]; ok {
		t.mu.Unlock()
		e.putInspector(insp)
		return false
	}
	if syn && t.half.full(p.Src) {
		t.mu.Unlock()
		e.refuseHalfOpen(c, nil, &v)
		return true
	}
	i, evicted, expired := t.alloc(k, c.now, int64(e.cfg.EvictMinIdle), e.putInspector)
	if i == noSlot {
		t.mu.Unlock()
		e.putInspector(insp)
		e.reportDrop(c, nil, DropTableFull)
		return true
	}
	f := t.slot(i)
	f.mu.Lock() // a free slot: nobody holds it for long (see flow)
	gen := f.gen
	if syn {
		t.half.enter(p.Src)
		f.halfOpen = true
	}
	t.mu.Unlock()
	if evicted >= 0 {
		e.ctr.flowsEvicted.Add(1)
		if evicted == classEstablished {
			e.ctr.estEvicted.Add(1)
		}
	}
	if expired > 0 {
		e.ctr.flowsExpired.Add(uint64(expired))
	}
	e.ctr.flowsCreated.Add(1)
	e.initFlow(c, f, v, insp, fromA == (sender == sideClient), sender)
	if f.gen == gen {
		e.flowPacket(c, f, sender)
		e.settle(i, f)
	}
	f.mu.Unlock()
	return true
}

// attachInspector gives an inspected flow without parser state its
// inspector, reclaiming one from expired or transient flows when the
// memory cap is reached, and reports whether f has one. Caller holds f.mu
// (reclaimInspector takes the table lock, as settle does, and only
// TryLocks other flows).
func (e *Engine) attachInspector(c *hctx, f *flow) bool {
	if f.insp != nil || f.inspect == protocols.ProtoNone {
		return f.insp != nil
	}
	in := e.getInspector(f.inspect)
	if in == nil && e.reclaimInspector(c.now, f.inspect) {
		in = e.getInspector(f.inspect)
	}
	f.insp = in
	return in != nil
}

// refuseHalfOpen drops a SYN whose client has reached its half-open limit
// (DropHalfOpen) and counts it for the syn_flood detection. f is the
// closed flow the SYN would reopen, or nil; v its flow verdict.
func (e *Engine) refuseHalfOpen(c *hctx, f *flow, v *rules.Verdict) {
	e.detect(c, f, rules.DetectSYNFlood, c.pkt.Src, v)
	e.reportDrop(c, f, DropHalfOpen)
}

// initFlow resets slot f for a new flow judged by v. Caller holds f.mu.
// sender is the side of the current packet's sender.
func (e *Engine) initFlow(c *hctx, f *flow, v rules.Verdict, insp *inspector, aIsClient bool, sender side) {
	p := &c.pkt
	f.id = e.flowID.Add(1)
	f.aIsClient = aIsClient
	f.clientPort = c.in
	if sender == sideServer {
		f.clientPort = c.in.Other()
	}
	f.rf = c.rf // oriented initiator to responder, with an empty match cache
	f.rsGen = c.rs.Generation()
	f.verdict = v
	f.inspect = protocols.ProtoNone
	if v.Action == rules.Allow {
		f.inspect = v.Inspect
	}
	f.monitor = v.Mode == rules.ModeMonitor
	f.midstream = false
	f.state = tcpNone
	f.answered = false
	f.echoHi, f.echoMask = 0, 0
	f.dir = [2]half{}
	f.l2 = [2]l2tmpl{}
	f.insp = insp
	f.reported = false
	f.bypassed = false
	f.wscaleBoth = false
	f.appliedClass, f.appliedTimeout = classTransient, 0
	f.start = c.now
	f.pkts, f.bytes = [2]uint64{}, [2]uint64{}
	f.pdus, f.pdusDenied = 0, 0
	if p.Proto == packet.ProtoTCP && p.Flags&packet.TCPSyn == 0 {
		f.midstream = true
		f.state = tcpEstablished
	}
	if v.Action == rules.Alert {
		e.ctr.flowAlerted.Add(1)
		f.reported = true
		e.report(c, f, v, FrameForward)
	} else if e.cfg.OnVerdict != nil {
		e.report(c, f, v, FrameForward) // replay and learn count allowed flows
	}
}

// flowPacket processes a packet of an existing flow. Caller holds f.mu.
// s is the side of the packet's sender.
func (e *Engine) flowPacket(c *hctx, f *flow, s side) {
	p := &c.pkt
	if f.bypassed {
		e.bypassResync(c, f, s)
	}
	f.pkts[s]++
	f.bytes[s] += uint64(len(c.frame))
	c.dec.Proto = "udp"
	if f.rf.Transport == rules.TransportTCP {
		c.dec.Proto = "tcp"
	}
	if f.inspect != protocols.ProtoNone {
		c.dec.Proto = f.inspect.String()
	}
	if f.rsGen != c.rs.Generation() && !e.revalidate(c, f) {
		return
	}
	if f.rf.Transport == rules.TransportUDP {
		e.udp(c, f, s)
		return
	}
	if (f.state == tcpClosed || (f.state == tcpClosing && f.dir[sideClient].fin && f.dir[sideServer].fin)) && s == sideClient && p.Flags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst|packet.TCPFin) == packet.TCPSyn {
		// A new connection on the same ports: judge it afresh.
		e.orient(c, &c.rf, sideClient)
		v := c.rs.EvaluateFlow(&c.rf)
		if v.Action == rules.Deny {
			e.denyFlow(c, f, v, FrameDrop)
			return
		}
		if !f.halfOpen {
			if e.tab.half.full(p.Src) {
				e.refuseHalfOpen(c, f, &v)
				return
			}
			e.tab.half.enter(p.Src)
			f.halfOpen = true
		}
		// The new connection is half-open: its inspector, if any, is
		// taken again when the handshake completes (attachInspector).
		e.putInspector(f.insp)
		f.insp = nil
		_, fromA := keyOf(p)
		e.initFlow(c, f, v, nil, fromA, sideClient)
		f.pkts[sideClient], f.bytes[sideClient] = 1, uint64(len(c.frame)) // this SYN, counted before the reset
	}
	e.tcp(c, f, s)
}

// reopen starts f again as a new connection from the SYN its client sent
// on the open connection, which the server has just accepted with the
// current SYN-ACK (acknowledging that SYN): the server had no connection
// left on these ports, so the old one is over for both ends, as after a
// RST. The new connection is judged afresh and gets new sequence state;
// its inspector is taken when the handshake completes. It reports
// whether the SYN-ACK may proceed (as that of a connection in SYN-SENT).
// Caller holds f.mu.
func (e *Engine) reopen(c *hctx, f *flow) bool {
	syn := f.dir[sideClient]
	e.orient(c, &c.rf, sideServer)
	c.reversed = true // flow-level decisions name the client as Src
	v := c.rs.EvaluateFlow(&c.rf)
	if v.Action == rules.Deny {
		e.denyFlow(c, f, v, FrameDrop)
		return false
	}
	e.putInspector(f.insp)
	f.insp = nil
	e.initFlow(c, f, v, nil, f.aIsClient, sideServer)
	c.reversed = false
	h := &f.dir[sideClient]
	h.hasISN, h.isn, h.nxt = true, syn.synSeq, syn.synSeq+1
	h.wscale, h.sentWS = syn.synWS, syn.synSentWS
	h.win, h.lastWin = uint32(syn.synWin), syn.synWin
	f.state = tcpSynSent
	f.pkts[sideServer], f.bytes[sideServer] = 1, uint64(len(c.frame)) // this SYN-ACK, counted before the reset
	return true
}

// revalidate re-judges f after a ruleset swap: the flow keeps its state;
// a flow the new policy refuses is cut (RST both ways for reset/reply).
// It returns whether the packet may proceed. Caller holds f.mu.
func (e *Engine) revalidate(c *hctx, f *flow) bool {
	e.ctr.flowsRevalid.Add(1)
	v := c.rs.EvaluateFlow(&f.rf)
	f.rsGen = c.rs.Generation()
	inspect := protocols.ProtoNone
	if v.Action == rules.Allow {
		inspect = v.Inspect
	}
	changed := inspect != f.inspect
	if v.Action != rules.Deny && (!changed || v.Mode == rules.ModeMonitor) {
		if changed && f.insp != nil {
			// No longer inspected (monitor): drop the parser state.
			e.putInspector(f.insp)
			f.insp = nil
			f.inspect = protocols.ProtoNone
		}
		f.verdict = v
		f.monitor = v.Mode == rules.ModeMonitor
		if v.Action == rules.Alert && !f.reported {
			f.reported = true
			e.ctr.flowAlerted.Add(1)
			e.report(c, f, v, FrameForward)
		} else if v.Action == rules.Allow {
			f.reported = false
			if e.cfg.OnVerdict != nil {
				e.report(c, f, v, FrameForward)
			}
		}
		return true
	}
	// Denied now, or inspection would have to start mid-stream in enforce
	// mode, which the normaliser refuses.
	e.ctr.flowsRevoked.Add(1)
	if v.Action != rules.Deny {
		v.Action, v.Reason = rules.Deny, rules.ReasonProtocolNotAllowed
	}
	f.verdict = v
	c.drop = DropFlowDenied
	act := FrameDrop
	if f.rf.Transport == rules.TransportTCP {
		if f.state != tcpClosed && v.DenyAction != rules.ActionDrop {
			act = FrameInject
			e.reset(c, f, f.sent(sideClient), f.sent(sideServer), 0)
		}
		f.state = tcpClosed // a `drop` deny closes it without resets
	}
	e.denyFlow(c, f, v, act)
	return false
}

// denyFlow counts and reports a flow-level refusal (DropFlowDenied) of the
// frame; act says what became of it.
func (e *Engine) denyFlow(c *hctx, f *flow, v rules.Verdict, act FrameAction) {
	e.ctr.flowDenied.Add(1)
	c.drop = DropFlowDenied
	e.report(c, f, v, act)
	e.ctr.drop(DropFlowDenied)
}

// udp forwards a datagram of an allowed flow, inspecting DNP3 datagrams.
func (e *Engine) udp(c *hctx, f *flow, s side) {
	p := &c.pkt
	if s == sideServer {
		f.answered = true
	}
	if f.l2[s].n == 0 {
		f.l2[s].set(c.frame, p.L3Off)
	}
	if f.verdict.Action == rules.Deny {
		e.reportDrop(c, f, DropFlowDenied)
		return
	}
	if s == sideServer {
		e.offerBypass(c, f)
	}
	if f.insp == nil || len(p.Payload) == 0 {
		e.forward(c, c.frame)
		return
	}
	e.feed(c, f, s, p.Payload, true)
	if !c.denied {
		e.forward(c, c.frame)
		return
	}
	e.ctr.drop(DropPDUDenied)
	if c.deny.DenyAction == rules.ActionReply && c.replyLen > 0 && s == sideClient {
		cli, srv := f.endpoints()
		if e.sendRaw(c, f.clientPort, srv.addr, cli.addr, srv.port, cli.port, 0, 0, 0, c.reply[:c.replyLen], true) {
			e.ctr.replies.Add(1)
		}
	}
}

// sent returns the sequence number after the last byte of direction s
// that crossed, the receiver's next expected one: the bytes of an
// incomplete PDU held by the engine, and those after a `drop` verdict's
// block point, have not crossed.
func (f *flow) sent(s side) uint32 {
	h := &f.dir[s]
	n := h.nxt
	if f.insp != nil {
		n -= uint32(f.insp.dir[s].unsent)
	}
	if h.blocked && seqLT(h.blockAt, n) {
		n = h.blockAt // a `drop` verdict: nothing from blockAt on crossed
	}
	return n
}

// addrPort is an address and port without netip.AddrPort's accessors.
type addrPort struct {
	addr netip.Addr
	port uint16
}

// endpoints returns the flow's initiator and responder.
func (f *flow) endpoints() (cli, srv addrPort) {
	a := addrPort{addr: f.key.a, port: f.key.pa}
	b := addrPort{addr: f.key.b, port: f.key.pb}
	if f.aIsClient {
		return a, b
	}
	return b, a
}

// tcp is the normaliser: it tracks both directions from the handshake,
// forwards in order, checks windows and retransmissions and hands new
// in-order bytes of inspected flows to the parsers. Caller holds f.mu.
func (e *Engine) tcp(c *hctx, f *flow, s side) {
	p := &c.pkt
	h, o := &f.dir[s], &f.dir[s.other()]
	fl := p.Flags
	if f.l2[s].n == 0 {
		f.l2[s].set(c.frame, p.L3Off)
	}
	lenient := f.monitor
	bad := func(r DropReason) {
		if lenient {
			e.forward(c, c.frame)
			return
		}
		e.reportDrop(c, f, r)
	}
	if fl&packet.TCPSyn != 0 && fl&(packet.TCPRst|packet.TCPFin) != 0 || fl&(packet.TCPSyn|packet.TCPRst|packet.TCPAck) == 0 {
		bad(DropBadTCP)
		return
	}
	if fl&packet.TCPUrg != 0 && f.inspect != protocols.ProtoNone && fl&packet.TCPRst == 0 {
		// Urgent data: a receiver without SO_OOBINLINE (Linux's default)
		// takes the urgent byte out of the stream, so the application would
		// read other bytes than the parser; the pointer may even mark a
		// byte of a later segment (RFC 6093 section 3). Never forwarded on
		// an inspected conduit (monitor mode: an alert).
		e.evasion(c, f, EvasionTCPUrgent, false)
		return
	}
	if f.state == tcpClosed && fl&packet.TCPRst == 0 {
		if lenient {
			e.forward(c, c.frame)
			return
		}
		e.reportDrop(c, f, DropClosed)
		return
	}
	switch {
	case fl&packet.TCPRst != 0:
		// RFC 5961 section 3: a reset crosses only in the receiver's
		// window, and ends the connection only at the receiver's next
		// expected sequence number (held bytes have not crossed): one
		// elsewhere in the window makes the receiver send a challenge
		// ACK and keep the connection, and so does the gateway.
		ok, exact := lenient || !h.hasISN, !h.hasISN
		if h.hasISN {
			rcv, win := f.sent(s), max(o.win, 1)
			exact = p.Seq == rcv
			ok = ok || exact || (!seqLT(p.Seq, rcv) && seqLT(p.Seq, rcv+win))
		}
		if !h.hasISN && fl&packet.TCPAck != 0 && o.hasISN {
			ok = p.Ack == o.nxt // reset answering a SYN
			exact = ok
		}
		if !ok {
			e.reportDrop(c, f, DropOutOfWindow)
			return
		}
		if exact || lenient {
			f.state = tcpClosed
		}
		e.forward(c, c.frame)
		return
	case fl&packet.TCPSyn != 0 && fl&packet.TCPAck == 0:
		if s != sideClient {
			bad(DropBadTCP)
			return
		}
		if f.state == tcpNone || (f.state == tcpSynSent && p.Seq == h.isn) {
			h.open(c.frame, p)
			f.state = tcpSynSent
			if len(p.Payload) != 0 {
				bad(DropBadTCP) // data on SYN (TCP Fast Open) is never inspected: refuse it
				return
			}
			e.forward(c, c.frame)
			return
		}
		if (f.state == tcpEstablished || f.state == tcpClosing) && len(p.Payload) == 0 {
			// A SYN on a synchronised connection, in the window or not:
			// typically a client that rebooted and reconnects from the
			// same port. A Linux receiver answers it with a challenge ACK
			// and keeps the connection (RFC 5961 section 4); the client
			// answers that ACK with a RST at the receiver's next sequence
			// number, which closes the connection here as there, and its
			// next SYN opens a new flow (SYN after close). The SYN crosses
			// and changes nothing, so that this recovery happens instead
			// of a lock-out until the idle timeout; a blind SYN earns the
			// sender a challenge ACK, never a reset of the connection.
			// Should the server have no connection left (it rebooted
			// too, or dropped it without a RST that crossed here), it
			// answers with a SYN-ACK instead: see reopen.
			h.synPending, h.synSeq, h.synWin = true, p.Seq, p.Window
			h.synWS, h.synSentWS = p.TCPWindowScale(c.frame)
			e.forward(c, c.frame)
			return
		}
		bad(DropBadTCP)
		return
	case fl&packet.TCPSyn != 0:
		if s == sideClient || len(p.Payload) != 0 {
			bad(DropBadTCP)
			return
		}
		if (f.state == tcpEstablished || f.state == tcpClosing) && o.synPending && p.Ack == o.synSeq+1 && c.in != f.clientPort && !e.reopen(c, f) {
			return
		}
		if (f.state == tcpSynSent || f.state == tcpSynReceived) && p.Ack == o.nxt && (!h.hasISN || p.Seq == h.isn) {
			h.open(c.frame, p)
			h.hasAck, h.ack = true, p.Ack
			f.wscaleBoth = h.sentWS && o.sentWS
			f.state = tcpSynReceived
			e.forward(c, c.frame)
			return
		}
		bad(DropBadTCP)
		return
	}
	// ACK is set from here on.
	// A segment of the open connection from either end after the
	// client's SYN on it (the server's challenge ACK, the client still
	// using it) shows the connection alive: a SYN-ACK for that SYN, from
	// whoever forged it, no longer reopens the flow.
	f.dir[sideClient].synPending = false
	if f.state == tcpSynSent && !lenient {
		e.reportDrop(c, f, DropBadTCP)
		return
	}
	gap := false
	if !h.hasISN {
		// Mid-stream pickup (monitor only): start from this segment.
		h.hasISN, h.isn, h.nxt = true, p.Seq, p.Seq
		gap = true
	}
	if o.hasISN && seqGT(p.Ack, o.nxt) && !lenient {
		e.reportDrop(c, f, DropOutOfWindow) // acknowledges bytes never sent
		return
	}
	if f.state == tcpSynReceived && s == sideClient && p.Ack == o.nxt {
		f.state = tcpEstablished
		e.attachInspector(c, f) // on failure, retried at the first payload
		e.offerBypass(c, f)
	}
	h.advertise(p, f.wscaleBoth)
	payload := p.Payload
	end := p.Seq + uint32(len(payload))
	if len(payload) > 0 && f.insp == nil && f.inspect != protocols.ProtoNone && !e.attachInspector(c, f) {
		// No inspection memory for the connection's first bytes: they do
		// not cross uninspected; the sender retransmits them.
		e.reportDrop(c, f, DropMemoryCap)
		return
	}
	if len(payload) > 0 && !lenient {
		if !o.accepts(end) {
			e.reportDrop(c, f, DropOutOfWindow)
			return
		}
		if seqLT(p.Seq, h.nxt-1<<30) {
			e.reportDrop(c, f, DropOutOfWindow)
			return
		}
		if h.blocked && seqGT(end, h.blockAt) {
			e.reportDrop(c, f, DropBlocked)
			return
		}
		if h.fin && seqGT(end, h.finSeq) {
			// Data after the sender's FIN: a receiver in CLOSE-WAIT
			// ignores it (RFC 9293 section 3.10.7.4), so the parser
			// must not take it either.
			e.reportDrop(c, f, DropBadTCP)
			return
		}
	}
	if f.insp == nil || len(payload) == 0 {
		if len(payload) > 0 && seqGT(end, h.nxt) {
			h.nxt = end
		}
		if fl&packet.TCPFin != 0 {
			e.fin(f, h, end)
		}
		e.forward(c, c.frame)
		return
	}
	st := &f.insp.dir[s]
	if seqGT(p.Seq, h.nxt) {
		if !lenient {
			e.reportDrop(c, f, DropOutOfOrder)
			return
		}
		gap = true // monitor: bytes were lost (or come later); resynchronise
		h.nxt = p.Seq
	}
	overlap := 0
	if seqLT(p.Seq, h.nxt) {
		overlap = int(min(h.nxt-p.Seq, uint32(len(payload))))
		covered, equal := st.compare(p.Seq, payload[:overlap])
		switch {
		case covered && !equal:
			e.evasion(c, f, EvasionTCPOverlap, true)
			return
		case !covered && !lenient:
			e.reportDrop(c, f, DropRetransmission)
			return
		}
	}
	if gap {
		e.gap(f, s)
	}
	newData := payload[overlap:]
	newSeq := p.Seq + uint32(overlap)
	pre := st.unsent // held bytes, before newSeq, that the receiver has not got
	if pre > 0 {
		copy(c.held[:pre], st.hold[:pre])
	}
	if len(newData) > 0 {
		e.feed(c, f, s, newData, false)
		n := len(newData)
		if c.denied {
			n = c.denyStart
		}
		st.record(h.nxt, newData[:n])
		h.nxt += uint32(len(newData))
	}
	if pre == 0 && !c.tailHeld && !c.heldDone {
		// Nothing held: the segment crosses whole, or up to a denied PDU.
		if !c.denied {
			if fl&packet.TCPFin != 0 {
				e.fin(f, h, end)
			}
			e.forward(c, c.frame)
			return
		}
		e.forwardPrefix(c, overlap+c.denyStart)
		e.act(c, f, s, newSeq+uint32(c.denyStart), newSeq)
		return
	}
	e.holdSegment(c, f, h, s, newSeq, pre, overlap, len(newData))
}

// holdSegment forwards what of the current segment may cross when bytes
// of an incomplete PDU are held (DESIGN.md: no byte of a PDU crosses
// before the whole PDU is judged and allowed). pre bytes before newSeq
// (copied in c.held) were held from earlier segments; newLen bytes of new
// data follow the overlap. The receiver gets exactly the judged and
// allowed bytes from its next expected sequence number on: the held bytes
// and those of the segment, in crafted segments that copy the current
// segment's headers (its options and timestamps), when the held PDU is
// complete and allowed; else the segment's bytes up to the PDU held at
// its end; else a pure acknowledgement, so that the receiver still
// learns of the sender's ACK and window. Caller holds f.mu.
func (e *Engine) holdSegment(c *hctx, f *flow, h *half, s side, newSeq uint32, pre, overlap, newLen int) {
	p := &c.pkt
	fwdEnd := newLen
	switch {
	case c.denied:
		fwdEnd = c.denyStart
	case c.tailHeld:
		fwdEnd = c.doneEnd
	}
	first := newSeq - uint32(pre) // the receiver's next expected byte
	whole := !c.denied && !c.tailHeld
	switch {
	case c.heldDone:
		// The held bytes first, in crafted segments, then the segment
		// itself up to what was judged (its overlap, identical to the
		// history, may repeat held bytes: the receiver keeps one copy).
		e.ctr.heldReleased.Add(1)
		if pre > 0 {
			e.sendHeld(c, first, c.held[:pre])
		}
		if whole {
			if p.Flags&packet.TCPFin != 0 {
				e.fin(f, h, newSeq+uint32(newLen))
			}
			e.forward(c, c.frame)
		} else {
			e.forwardPrefix(c, overlap+fwdEnd)
		}
	case pre > 0:
		// The held PDU is still incomplete, or it was denied: nothing
		// crosses but the acknowledgement.
		e.pureAck(c, first)
	case overlap+fwdEnd == 0:
		e.pureAck(c, first)
	default:
		e.forwardPrefix(c, overlap+fwdEnd)
	}
	if c.tailHeld {
		e.ctr.heldSegments.Add(1)
	}
	if !c.denied {
		return
	}
	stop := newSeq + uint32(c.denyStart)
	if c.denyStart == 0 && !c.heldDone {
		stop = first // the denied PDU began with held bytes
	}
	e.act(c, f, s, stop, newSeq)
}

// forwardPrefix forwards the current segment with only its first keep
// payload bytes (the whole frame when keep is its payload length; nothing
// when keep is 0).
func (e *Engine) forwardPrefix(c *hctx, keep int) {
	switch {
	case keep <= 0:
	case keep < len(c.pkt.Payload):
		fr := truncatePayload(c.frame, &c.pkt, keep)
		e.ctr.truncated.Add(1)
		e.forward(c, fr)
	default:
		e.forward(c, c.frame)
	}
}

// pureAck forwards the current segment without payload (and without FIN),
// at sequence number seq: its acknowledgement and window still reach the
// receiver, none of its held bytes do.
func (e *Engine) pureAck(c *hctx, seq uint32) {
	p := &c.pkt
	binary.BigEndian.PutUint32(c.frame[p.L4Off+4:], seq)
	c.frame[p.L4Off+13] &^= packet.TCPPsh
	if len(p.Payload) == 0 {
		fixSegment(c.frame[:p.L4Off+int(c.frame[p.L4Off+12]>>4)*4], p)
		e.forward(c, c.frame)
		return
	}
	fr := truncatePayload(c.frame, p, 0)
	e.ctr.truncated.Add(1)
	e.forward(c, fr)
}

// sendHeld sends the held bytes b, starting at sequence number seq, in
// segments that copy the current segment's link, IP and TCP headers
// (options included), each at most as large as the current segment's
// payload or the minimum MSS (RFC 9293 section 3.7.1; RFC 8200 section
// 5), without FIN. They are crafted frames (Counters.Injected).
func (e *Engine) sendHeld(c *hctx, seq uint32, b []byte) {
	p := &c.pkt
	fr := c.frame
	hdr := p.L4Off + int(fr[p.L4Off+12]>>4)*4
	mss := 536
	if p.IPVersion == 6 {
		mss = 1220
	}
	mss = min(max(mss, len(p.Payload)), len(c.out)-hdr-60)
	out := c.in.Other()
	for off := 0; off < len(b); {
		n := min(mss, len(b)-off)
		seg := c.out[:hdr+n]
		copy(seg, fr[:hdr])
		copy(seg[hdr:], b[off:off+n])
		l4 := seg[p.L4Off:]
		binary.BigEndian.PutUint32(l4[4:], seq+uint32(off))
		l4[13] = l4[13]&^packet.TCPFin | packet.TCPPsh
		seg = fixSegment(seg, p)
		if p.HasMAC && len(seg) < 60 {
			clear(c.out[len(seg):60])
			seg = c.out[:60]
		}
		c.tx.Send(out, seg)
		e.ctr.injected[out].Add(1)
		off += n
	}
}

// fin records the FIN of side h after the byte before end.
func (e *Engine) fin(f *flow, h *half, end uint32) {
	h.finish(end)
	if f.state != tcpClosed {
		f.state = tcpClosing
	}
}

// act carries out a PDU deny verdict on the current segment, after what
// may cross of it was forwarded. stop is the first sequence number of s
// the receiver will not get, newSeq that of the segment's first new byte.
// Caller holds f.mu.
func (e *Engine) act(c *hctx, f *flow, s side, stop, newSeq uint32) {
	e.ctr.drop(DropPDUDenied)
	h := &f.dir[s]
	switch c.deny.DenyAction {
	case rules.ActionDrop:
		h.blocked, h.blockAt = true, stop
		// Bytes up to the end of the segment were inspected; the held PDU,
		// if any, must not complete from a retransmission.
		if f.insp != nil {
			f.insp.dir[s].hold, f.insp.dir[s].unsent = f.insp.dir[s].hold[:0], 0
		}
		return
	case rules.ActionReply:
		if s == sideClient && c.replyLen > 0 {
			ack := newSeq + uint32(c.denyEnd)
			if e.sendSeg(c, f, sideServer, f.sent(sideServer), ack, packet.TCPPsh|packet.TCPAck, c.reply[:c.replyLen]) {
				e.ctr.replies.Add(1)
				e.reset(c, f, stop, f.sent(sideServer)+uint32(c.replyLen), ack)
				f.dir[sideServer].nxt += uint32(c.replyLen)
				return
			}
		}
	}
	seq := [2]uint32{f.sent(sideClient), f.sent(sideServer)}
	seq[s] = stop
	e.reset(c, f, seq[sideClient], seq[sideServer], 0)
}

// evasion handles an evasion attempt named name: EvasionTCPOverlap (a
// retransmission that overlaps inspected bytes with different content)
// or EvasionTCPUrgent (a segment with URG set). In enforce mode the frame
// is dropped; with reset the two ends may already disagree on the stream,
// so the connection is reset whatever the configured action (DESIGN.md).
// Monitor mode forwards the frame and alerts. The event's reason is
// "evasion:" + name, never a malformed:* anomaly of the parser, and its
// severity is alert.
func (e *Engine) evasion(c *hctx, f *flow, name string, reset bool) {
	v := f.verdict
	v.Action, v.Reason, v.Anomaly, v.DenyAction = rules.Deny, rules.ReasonMalformed, protocols.AnomalyNone, rules.ActionDrop
	d := &c.dec
	d.Evasion, d.EvasionName = true, name
	act := FrameDrop
	switch {
	case f.monitor:
		v.Action, act = rules.Alert, FrameForward
	case reset:
		v.DenyAction, act = rules.ActionReset, FrameInject
		fallthrough
	default:
		c.drop = DropEvasion
		e.ctr.drop(DropEvasion)
	}
	if act == FrameInject {
		e.reset(c, f, f.sent(sideClient), f.sent(sideServer), 0)
	}
	d.In, d.Action, d.Drop, d.HasVerdict, d.Verdict = c.in, act, c.drop, true, v
	d.Src, d.Dst, d.FlowID = c.pkt.SrcAddrPort(), c.pkt.DstAddrPort(), f.id
	if e.cfg.OnVerdict != nil {
		e.cfg.OnVerdict(d)
	}
	e.emit(c, d, "evasion:"+name)
	if act == FrameForward {
		e.forward(c, c.frame)
	}
}

// reset ends TCP flow f: RST|ACK to both ends (sendResets), and the flow
// is closed. It is the one way the engine cuts a connection (a deny, an
// evasion, a revoked flow). Caller holds f.mu.
func (e *Engine) reset(c *hctx, f *flow, cliSeq, srvSeq, cliAck uint32) {
	e.sendResets(c, f, cliSeq, srvSeq, cliAck)
	f.state = tcpClosed
}

// sendResets sends RST|ACK to both ends: to the responder with the
// initiator's next sequence number it expects (cliSeq) and to the
// initiator with the responder's (srvSeq), so that each receiver finds the
// reset exactly at rcv.nxt (RFC 5961 section 3.2). cliAck, when non-zero,
// is the acknowledgement sent to the initiator.
func (e *Engine) sendResets(c *hctx, f *flow, cliSeq, srvSeq, cliAck uint32) {
	if cliAck == 0 {
		cliAck = cliSeq
	}
	e.sendSeg(c, f, sideClient, cliSeq, srvSeq, packet.TCPRst|packet.TCPAck, nil)
	e.sendSeg(c, f, sideServer, srvSeq, cliAck, packet.TCPRst|packet.TCPAck, nil)
	e.ctr.resets.Add(1)
}

// sendSeg crafts a segment as if sent by side s, towards the other end,
// with the sender's link header.
func (e *Engine) sendSeg(c *hctx, f *flow, s side, seq, ack uint32, flags uint8, payload []byte) bool {
	cli, srv := f.endpoints()
	out := f.clientPort.Other()
	src, dst := cli, srv
	if s == sideServer {
		out = f.clientPort
		src, dst = srv, cli
	}
	tmpl := &f.l2[s]
	var l2 [maxL2Hdr]byte
	n := int(tmpl.n)
	copy(l2[:], tmpl.b[:n])
	if n == 0 && f.l2[s.other()].n != 0 {
		o := &f.l2[s.other()]
		n = int(o.n)
		copy(l2[:], o.b[:n])
		if e.cfg.Link == packet.LinkEthernet && n >= 12 {
			var tmp [6]byte
			copy(tmp[:], l2[0:6])
			copy(l2[0:6], l2[6:12])
			copy(l2[6:12], tmp[:])
		}
	}
	buf := e.craft.get()
	if buf == nil {
		e.ctr.drop(DropNoBuffer)
		return false
	}
	spec := segSpec{l2: l2[:n], src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port,
		seq: seq, ack: ack, flags: flags, window: f.dir[s].lastWin, payload: payload,
		padToMin60: e.cfg.Link == packet.LinkEthernet}
	fr := craft(buf[:], &spec)
	ok := fr != nil
	if ok {
		c.tx.Send(out, fr)
		e.ctr.injected[out].Add(1)
	}
	e.craft.put(buf)
	return ok
}

// sendRaw crafts a TCP segment or UDP datagram with the link header of the
// current frame, MACs swapped, out of port out (a reply to the frame's
// sender).
func (e *Engine) sendRaw(c *hctx, out PortID, src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8, payload []byte, udp bool) bool {
	p := &c.pkt
	var l2 [maxL2Hdr]byte
	n := p.L3Off
	if n > maxL2Hdr {
		return false
	}
	copy(l2[:], c.frame[:n])
	if p.HasMAC {
		copy(l2[0:6], p.SrcMAC[:])
		copy(l2[6:12], p.DstMAC[:])
	}
	buf := e.craft.get()
	if buf == nil {
		e.ctr.drop(DropNoBuffer)
		return false
	}
	spec := segSpec{l2: l2[:n], src: src, dst: dst, sport: sport, dport: dport, seq: seq, ack: ack,
		flags: flags, payload: payload, udp: udp, padToMin60: p.HasMAC}
	fr := craft(buf[:], &spec)
	ok := fr != nil
	if ok {
		c.tx.Send(out, fr)
		e.ctr.injected[out].Add(1)
	}
	e.craft.put(buf)
	return ok
}
