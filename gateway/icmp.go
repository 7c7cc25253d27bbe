package gateway

import (
	"encoding/binary"
	"net/netip"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/rules"
)

// ICMP message types (RFC 792, RFC 4443 section 2.1).
const (
	icmp4EchoReply    = 0
	icmp4Unreachable  = 3
	icmp4SourceQuench = 4
	icmp4Echo         = 8
	icmp4TimeExceeded = 11
	icmp4ParamProblem = 12

	icmp6Unreachable  = 1
	icmp6PacketTooBig = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
	icmp6Echo         = 128
	icmp6EchoReply    = 129
)

// echoOf returns the identifier and sequence number of an ICMP or ICMPv6
// echo request or reply (RFC 792 "Echo or Echo Reply Message", RFC 4443
// section 4.1): p.Payload starts after the type, code and checksum.
func echoOf(p *packet.Packet) (id, seq uint16, req, reply bool) {
	if len(p.Payload) < 4 {
		return 0, 0, false, false
	}
	switch {
	case p.Proto == packet.ProtoICMP && p.ICMPType == icmp4Echo,
		p.Proto == packet.ProtoICMPv6 && p.ICMPType == icmp6Echo:
		req = true
	case p.Proto == packet.ProtoICMP && p.ICMPType == icmp4EchoReply,
		p.Proto == packet.ProtoICMPv6 && p.ICMPType == icmp6EchoReply:
		reply = true
	default:
		return 0, 0, false, false
	}
	return binary.BigEndian.Uint16(p.Payload), binary.BigEndian.Uint16(p.Payload[2:]), req, reply
}

// echoKey is the flow key of the echo requests with identifier id from
// src to dst. Unlike TCP and UDP keys it is directional (a is the
// requester), so that two hosts pinging each other with the same
// identifier keep two flows; its proto (ICMP or ICMPv6) never collides
// with a TCP or UDP key.
func echoKey(src, dst netip.Addr, id uint16, proto uint8) flowKey {
	return flowKey{a: src, b: dst, pa: id, proto: proto}
}

// echoSent records an echo request with sequence number seq as awaiting
// its reply. Caller holds f.mu.
func (f *flow) echoSent(seq uint16) {
	if f.echoMask == 0 {
		f.echoHi, f.echoMask = seq, 1
		return
	}
	if d := seq - f.echoHi; d < 0x8000 { // seq is newer (serial arithmetic, RFC 1982)
		if d >= 64 {
			f.echoMask = 0
		} else {
			f.echoMask <<= d
		}
		f.echoHi = seq
		f.echoMask |= 1
		return
	}
	if back := f.echoHi - seq; back < 64 {
		f.echoMask |= 1 << back
	}
}

// echoAnswered reports whether seq answers an outstanding request and, if
// so, clears it: each request lets exactly one reply through. Caller holds
// f.mu.
func (f *flow) echoAnswered(seq uint16) bool {
	back := f.echoHi - seq
	if back >= 64 || f.echoMask&(1<<back) == 0 {
		return false
	}
	f.echoMask &^= 1 << back
	return true
}

// handleICMP forwards echo replies to allowed echo requests and ICMP
// errors about allowed flows as part of those flows; every other ICMP
// message (echo requests included) is judged packet by packet.
func (e *Engine) handleICMP(c *hctx) {
	if e.icmpRelated(c) {
		e.forward(c, c.frame)
		return
	}
	e.handleStateless(c, "icmp")
}

// trackEcho records an echo request the ruleset let through (v is not a
// deny) in the flow table, so that its reply rides the request's flow the
// way a TCP or UDP response does. A full table only means the reply will
// be judged on its own.
func (e *Engine) trackEcho(c *hctx, v rules.Verdict) {
	p := &c.pkt
	id, seq, req, _ := echoOf(p)
	if !req {
		return
	}
	k := echoKey(p.Src, p.Dst, id, p.Proto)
	t := e.tab
	t.mu.Lock()
	i, ok := t.m[k]
	if ok && t.releaseOver(i, c.now, int64(e.cfg.ClockBack), e.putInspector) {
		ok = false // expired: a new echo flow, as if swept
		e.ctr.flowsExpired.Add(1)
	}
	var f *flow
	if ok {
		t.touch(i, c.now)
		gen := t.slot(i).gen
		t.mu.Unlock()
		f = t.slot(i)
		f.mu.Lock()
		if f.gen != gen {
			f.mu.Unlock()
			return
		}
	} else {
		var evicted, expired int
		i, evicted, expired = t.alloc(k, c.now, int64(e.cfg.EvictMinIdle), e.putInspector)
		if i == noSlot {
			t.mu.Unlock()
			return
		}
		f = t.slot(i)
		f.mu.Lock() // a free slot: nobody holds it for long (see flow)
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
		f.id = e.flowID.Add(1)
		f.aIsClient = true
		f.clientPort = c.in
		f.rf = c.rf // filled by statelessFlow: requester to responder
		f.inspect = 0
		f.midstream = false
		f.state = tcpNone
		f.answered = false
		f.echoHi, f.echoMask = 0, 0
		f.dir = [2]half{}
		f.l2 = [2]l2tmpl{}
		f.insp = nil
		f.reported = false
		f.wscaleBoth = false
		f.appliedClass, f.appliedTimeout = classTransient, 0
		f.start = c.now
		f.pkts, f.bytes = [2]uint64{}, [2]uint64{}
		f.pdus, f.pdusDenied = 0, 0
	}
	f.pkts[sideClient]++
	f.bytes[sideClient] += uint64(len(c.frame))
	f.rsGen, f.verdict = c.rs.Generation(), v
	f.monitor = v.Mode == rules.ModeMonitor
	f.echoSent(seq)
	e.settle(i, f)
	f.mu.Unlock()
}

// icmpRelated reports whether the ICMP message in c belongs to a flow the
// ruleset allows: an echo reply to an outstanding echo request of an echo
// flow (matched by identifier and sequence number), or an error message
// (destination unreachable, packet too big, time exceeded, parameter
// problem, source quench) that quotes a packet of an allowed TCP, UDP or
// echo flow and is addressed to that packet's sender (RFC 792, RFC 4443
// section 2.4 c; the same relation Linux conntrack calls RELATED).
// Redirects are never related. Caller holds nothing.
func (e *Engine) icmpRelated(c *hctx) bool {
	p := &c.pkt
	var k flowKey
	id, seq, _, reply := echoOf(p)
	switch {
	case reply:
		k = echoKey(p.Dst, p.Src, id, p.Proto)
	case isICMPError(p):
		var ok bool
		if k, ok = quotedKey(p); !ok {
			return false
		}
	default:
		return false
	}
	t := e.tab
	now := c.now
	f, i := t.lockFlow(k, func(f *flow) bool { return f.timeout == 0 || f.lastSeen+f.timeout > now })
	if f == nil {
		return false
	}
	defer f.mu.Unlock()
	if f.rsGen != c.rs.Generation() {
		// Judge the flow by the current policy without touching its state:
		// its own packets revalidate it (see revalidate).
		c.rf = f.rf
		if c.rs.EvaluateFlow(&c.rf).Action == rules.Deny {
			return false
		}
	} else if f.verdict.Action == rules.Deny {
		return false
	}
	if !reply {
		return true // an error refreshes nothing: the flow's own packets do
	}
	if !f.echoAnswered(seq) {
		return false
	}
	f.answered = true
	f.pkts[sideServer]++
	f.bytes[sideServer] += uint64(len(c.frame))
	t.mu.Lock()
	t.touch(i, c.now)
	t.mu.Unlock()
	e.settle(i, f)
	return true
}

// isICMPError reports whether p is an ICMP error message that quotes the
// packet it is about.
func isICMPError(p *packet.Packet) bool {
	if p.Proto == packet.ProtoICMP {
		switch p.ICMPType {
		case icmp4Unreachable, icmp4SourceQuench, icmp4TimeExceeded, icmp4ParamProblem:
			return true
		}
		return false
	}
	switch p.ICMPType {
	case icmp6Unreachable, icmp6PacketTooBig, icmp6TimeExceeded, icmp6ParamProblem:
		return true
	}
	return false
}

// quotedKey returns the flow key of the packet an ICMP error quotes (after
// the 4 bytes that follow the checksum: unused, MTU or pointer), provided
// the error is addressed to that packet's sender. Only the first fragment
// of an IPv4 packet, and IPv6 packets without extension headers, are
// understood.
func quotedKey(p *packet.Packet) (flowKey, bool) {
	if len(p.Payload) < 4 {
		return flowKey{}, false
	}
	q := p.Payload[4:]
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	switch p.Proto {
	case packet.ProtoICMP:
		if len(q) < 20 || q[0]>>4 != 4 {
			return flowKey{}, false
		}
		ihl := int(q[0]&15) * 4
		if ihl < 20 || len(q) < ihl+8 || binary.BigEndian.Uint16(q[6:])&0x1fff != 0 {
			return flowKey{}, false
		}
		proto = q[9]
		src = netip.AddrFrom4([4]byte(q[12:16]))
		dst = netip.AddrFrom4([4]byte(q[16:20]))
		l4 = q[ihl:]
		if proto == packet.ProtoICMPv6 {
			return flowKey{}, false
		}
	default:
		if len(q) < 48 || q[0]>>4 != 6 {
			return flowKey{}, false
		}
		proto = q[6]
		src = netip.AddrFrom16([16]byte(q[8:24]))
		dst = netip.AddrFrom16([16]byte(q[24:40]))
		l4 = q[40:]
		if proto == packet.ProtoICMP {
			return flowKey{}, false
		}
	}
	if src != p.Dst {
		return flowKey{}, false // an error must go back to the quoted packet's sender
	}
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP:
		k, _ := keyOfAddrs(src, dst, binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:]), proto)
		return k, true
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if (proto == packet.ProtoICMP && l4[0] != icmp4Echo) || (proto == packet.ProtoICMPv6 && l4[0] != icmp6Echo) {
			return flowKey{}, false
		}
		return echoKey(src, dst, binary.BigEndian.Uint16(l4[4:]), proto), true
	}
	return flowKey{}, false
}
