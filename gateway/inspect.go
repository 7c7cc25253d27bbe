package gateway

import (
	"net/netip"
	"unsafe"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// inspector is the parser state of one inspected flow. Inspectors are
// recycled through per-protocol free lists, so steady-state traffic
// allocates nothing; the bytes they hold count against Config.MemoryCap.
type inspector struct {
	proto protocols.Proto
	size  int64 // bytes accounted in Engine.mem
	dir   [2]istream
	mb    *mbState
	dn    *dnpState
	ua    *uaState
	// pickedUp: the harness joined this connection after it opened
	// (Engine.MarkPickedUp), so requests sent before the pickup may still
	// be unanswered. Until a response pairs with a request the engine saw,
	// a response that pairs with nothing is taken as the answer to one of
	// them instead of response_without_request.
	pickedUp bool
}

// istream is the per-direction stream state of an inspected flow.
type istream struct {
	// hold is the one incomplete PDU of this direction: its bytes were
	// forwarded, but the bytes that complete it will not be until the
	// whole PDU is judged. cap(hold) grows up to Config.MaxHold.
	hold []byte
	// hist is a ring of the last len(hist) inspected bytes, ending at
	// sequence number histEnd, used to verify retransmissions.
	hist    []byte
	histLen int
	histEnd uint32
	resync  bool // monitor: framing lost; try again at the next segment
	// unsent is how many bytes at the start of hold were not forwarded:
	// the incomplete PDU is held until it is judged (0 when its prefix
	// crossed: monitor mode, or a PDU larger than maxUnsent).
	unsent int
	// afterHole: a replayed capture lost bytes of this direction
	// (CaptureGap); until a PDU frames again, bytes that do not frame are
	// the rest of a PDU whose start was lost, not malformed: skipped.
	afterHole bool
	svc       uint32 // OPC UA: type id of the message whose chunks are arriving
}

type mbState struct {
	adu     modbus.ADU
	pairing modbus.Pairing
}

type dnpState struct {
	lf    dnp3.LinkFrame
	reasm [2]dnp3.Reassembler
	frag  dnp3.Fragment
	// outstanding[seq]: how many requests with application sequence seq
	// await a response (IEEE 1815-2012 clause 4.2.2.4, SEQ of the application control octet: a solicited
	// response echoes the request's SEQ, later fragments count up, and a
	// master that repeats a request uses the same SEQ again, which the
	// outstation answers again). Each response consumes one; the count
	// saturates at maxDNP3Repeat so it stays bounded.
	outstanding [16]uint8
}

// maxDNP3Repeat bounds the requests counted per DNP3 sequence number.
const maxDNP3Repeat = 15

type uaState struct {
	ch     opcua.Channel
	msg    opcua.Message
	framer opcua.Framer
	// outstanding request ids (OPC 10000-6 section 6.7.2.4), oldest first;
	// wild entries stand for requests whose sequence header was encrypted.
	out  [32]uaReq
	nout int
}

type uaReq struct {
	id   uint32
	wild bool
}

const initialHold = 512

func (e *Engine) newInspector(proto protocols.Proto) *inspector {
	in := &inspector{proto: proto}
	size := int64(unsafe.Sizeof(*in))
	switch proto {
	case protocols.ProtoModbus:
		in.mb = new(mbState)
		size += int64(unsafe.Sizeof(*in.mb))
	case protocols.ProtoDNP3:
		in.dn = new(dnpState)
		size += int64(unsafe.Sizeof(*in.dn))
	case protocols.ProtoOPCUA:
		in.ua = new(uaState)
		size += int64(unsafe.Sizeof(*in.ua))
		// Write/Call bodies that span chunks are buffered for their
		// NodeIds: the buffers count against the memory cap like held
		// bytes (a flow that would exceed it fails the message as
		// message_too_large, it does not grow the process).
		in.ua.ch.Budget = e.chargeMemory
	}
	for i := range in.dir {
		in.dir[i].hold = make([]byte, 0, initialHold)
		in.dir[i].hist = make([]byte, e.cfg.HistoryBytes)
		size += int64(initialHold + e.cfg.HistoryBytes)
	}
	in.size = size
	return in
}

// getInspector returns a clean inspector for proto from the free list, or
// a new one while the memory cap allows; nil when it does not.
func (e *Engine) getInspector(proto protocols.Proto) *inspector {
	if proto == protocols.ProtoNone || int(proto) >= len(e.free) {
		return nil
	}
	e.freeMu.Lock()
	l := e.free[proto]
	if n := len(l); n > 0 {
		in := l[n-1]
		l[n-1] = nil
		e.free[proto] = l[:n-1]
		e.freeMu.Unlock()
		return in
	}
	e.freeMu.Unlock()
	in := e.newInspector(proto)
	if e.mem.Add(in.size) > e.cfg.MemoryCap {
		e.mem.Add(-in.size)
		return nil
	}
	return in
}

// chargeMemory charges delta bytes of parser buffers to the memory cap
// (delta < 0 gives them back); false, and nothing charged, when they do
// not fit.
func (e *Engine) chargeMemory(delta int64) bool {
	if delta <= 0 {
		e.mem.Add(delta)
		return true
	}
	if e.mem.Add(delta) > e.cfg.MemoryCap {
		e.mem.Add(-delta)
		return false
	}
	return true
}

// reclaimScan bounds how many least recently used transient flows one new
// flow may look at when the memory cap is full.
const reclaimScan = 64

// reclaimInspector makes an inspector of proto available when the memory
// cap refused a new one: it releases expired flows from the least recently
// used end of both classes, then the least recently used transient flows
// (handshake in progress, closing, unanswered) that hold an inspector of
// proto. Established flows are never taken for a newcomer, so a SYN flood
// from an allowed address can fill the cap with half-open flows but not
// lock out new connections (issue 15) nor cut a session. It reports
// whether an inspector of proto was freed. Bounded work: at most
// reclaimScan flows are looked at.
func (e *Engine) reclaimInspector(now int64, proto protocols.Proto) bool {
	t := e.tab
	freed := false
	t.mu.Lock()
	expired := t.reclaimExpired(now, reclaimScan, func(in *inspector) {
		freed = freed || in != nil && in.proto == proto
		e.putInspector(in)
	})
	evicted := 0
	for j, scanned := t.tail[classTransient], 0; !freed && j != noSlot && scanned < reclaimScan; scanned++ {
		f := &t.slots[j]
		prev := f.prev
		if f.insp != nil && f.insp.proto == proto && f.mu.TryLock() {
			in := t.release(j)
			f.mu.Unlock()
			e.putInspector(in)
			freed = true
			evicted++
		}
		j = prev
	}
	t.mu.Unlock()
	e.ctr.flowsExpired.Add(uint64(expired))
	e.ctr.flowsEvicted.Add(uint64(evicted))
	return freed
}

// putInspector resets in and returns it to its free list.
func (e *Engine) putInspector(in *inspector) {
	if in == nil {
		return
	}
	in.reset()
	e.freeMu.Lock()
	e.free[in.proto] = append(e.free[in.proto], in)
	e.freeMu.Unlock()
}

func (in *inspector) reset() {
	in.pickedUp = false
	for i := range in.dir {
		d := &in.dir[i]
		d.hold = d.hold[:0]
		d.unsent = 0
		d.histLen, d.histEnd, d.resync, d.svc = 0, 0, false, 0
		d.afterHole = false
	}
	switch {
	case in.mb != nil:
		in.mb.pairing.Reset()
	case in.dn != nil:
		in.dn.reasm[0].Reset()
		in.dn.reasm[1].Reset()
		in.dn.outstanding = [16]uint8{}
	case in.ua != nil:
		in.ua.ch.Release()
		in.ua.ch = opcua.Channel{Budget: in.ua.ch.Budget}
		in.ua.nout = 0
	}
}

// MarkPickedUp tells the engine that its harness joined the TCP connection
// from client to server after the connection had opened, so that requests
// sent before may still await their responses. Offline replay calls it
// right after the handshake it synthesises for a connection the capture
// joins mid-stream (simulate/replay); the live gateway never does, so in
// enforce mode every response must pair with a request the engine saw.
//
// On such a flow, until the first response that pairs with a request seen
// by the engine, a response that pairs with nothing is judged as paired
// (the answer to a request before the pickup) rather than as
// response_without_request; for Modbus the pairing anomaly is dropped too.
// An OPC UA channel is taken as opened before the pickup (no
// msg_before_open), as when a monitor-mode conduit picks a flow up.
// It reports whether an inspected flow between the two endpoints exists.
func (e *Engine) MarkPickedUp(client, server netip.AddrPort) bool {
	k, _ := keyOfAddrs(client.Addr(), server.Addr(), client.Port(), server.Port(), packet.ProtoTCP)
	f, _ := e.tab.lockFlow(k, nil)
	if f == nil {
		return false
	}
	defer f.mu.Unlock()
	if f.insp == nil {
		return false
	}
	f.insp.pickedUp = true
	if ua := f.insp.ua; ua != nil {
		// The channel's HEL/ACK/OPN went before the pickup, as in a
		// monitor-mode pickup (gap): MSG is not msg_before_open.
		ua.ch.Gap(protocols.Request)
		ua.ch.Gap(protocols.Response)
	}
	return true
}

// CaptureGap tells the engine that the capture it replays lost bytes that
// src sent to dst on their TCP connection, up to sequence number to: the
// gateway on the wire would have seen them, the capture did not. The
// normaliser continues from to (so that the segments and acknowledgements
// after the hole are not refused as out of order or out of window), the
// parser of that direction resynchronises as after a mid-stream pickup,
// and responses to requests that may have been lost are not denied as
// responses without request (as MarkPickedUp). Offline replay calls it
// where its pre-pass finds a hole no later frame fills; the live gateway
// never does. It reports whether the connection exists and the sender's
// stream was behind to.
func (e *Engine) CaptureGap(src, dst netip.AddrPort, to uint32) bool {
	k, fromA := keyOfAddrs(src.Addr(), dst.Addr(), src.Port(), dst.Port(), packet.ProtoTCP)
	f, _ := e.tab.lockFlow(k, nil)
	if f == nil {
		return false
	}
	defer f.mu.Unlock()
	s := 1
	if fromA == f.aIsClient {
		s = 0
	}
	h := &f.dir[s]
	if !h.hasISN || !seqGT(to, h.nxt) {
		return false
	}
	h.nxt = to
	if f.insp != nil {
		e.gap(f, s)
		f.insp.pickedUp = true
		f.insp.dir[s].afterHole = true
	}
	return true
}

// gap tells the parsers of direction s that bytes were lost (mid-stream
// pickup or a hole in monitor mode).
func (e *Engine) gap(f *flow, s int) {
	in := f.insp
	st := &in.dir[s]
	st.hold = st.hold[:0]
	st.unsent = 0
	st.histLen = 0
	st.svc = 0
	dir := dirOf(s)
	switch {
	case in.mb != nil:
		if s == 1 {
			in.mb.pairing.Reset()
		}
	case in.dn != nil:
		in.dn.reasm[s].Reset()
	case in.ua != nil:
		in.ua.ch.Gap(dir)
	}
}

func dirOf(s int) protocols.Dir {
	if s == 0 {
		return protocols.Request
	}
	return protocols.Response
}

// record appends b, which starts at sequence number seq, to the history.
func (st *istream) record(seq uint32, b []byte) {
	size := len(st.hist)
	if size == 0 || len(b) == 0 {
		return
	}
	if st.histLen > 0 && seq != st.histEnd {
		st.histLen = 0
	}
	if len(b) > size {
		seq += uint32(len(b) - size)
		b = b[len(b)-size:]
	}
	pos := int(seq % uint32(size))
	n := copy(st.hist[pos:], b)
	copy(st.hist, b[n:])
	st.histLen = min(st.histLen+len(b), size)
	st.histEnd = seq + uint32(len(b))
}

// compare reports whether the history covers b at sequence number seq and
// whether the bytes are equal.
func (st *istream) compare(seq uint32, b []byte) (covered, equal bool) {
	if len(b) == 0 {
		return true, true
	}
	start := st.histEnd - uint32(st.histLen)
	if st.histLen == 0 || seqLT(seq, start) || seqGT(seq+uint32(len(b)), st.histEnd) {
		return false, false
	}
	size := uint32(len(st.hist))
	pos := int(seq % size)
	n := min(len(b), len(st.hist)-pos)
	if string(st.hist[pos:pos+n]) != string(b[:n]) {
		return true, false
	}
	return true, string(st.hist[:len(b)-n]) == string(b[n:])
}

// framer returns the next PDU boundary of direction s in b (see the
// parsers' Framer.Next).
func (in *inspector) frame(s int, b []byte) (n, need int, err error) {
	switch {
	case in.mb != nil:
		return modbus.Framer{}.Next(b)
	case in.dn != nil:
		return dnp3.Framer{}.Next(b)
	case in.ua != nil:
		in.ua.framer.MaxChunkSize = in.ua.ch.MaxChunkSize(dirOf(s))
		return in.ua.framer.Next(b)
	}
	return 0, 0, errNoParser
}

var errNoParser = modbus.ErrNotModbus

// plausible reports whether a framed PDU of direction s decodes without
// an anomaly, so that resynchronising after a capture hole does not take
// the tail of a lost PDU for a PDU. DNP3 frames carry CRCs and OPC UA
// headers a message type, which the framer checks already; a Modbus MBAP
// header is weak (any two zero bytes in the right place), so the ADU is
// decoded.
func (in *inspector) plausible(s int, b []byte) bool {
	if in.mb == nil {
		return true
	}
	var a modbus.ADU
	return a.Decode(b, dirOf(s)) == nil && a.Anomaly == modbus.AnomalyNone
}

// maxResyncScan bounds the offsets resyncAt tries.
const maxResyncScan = 2048

// resyncAt returns the first offset after 0 in b from which PDUs frame one
// after another to the end of b (at least one complete, the last possibly
// incomplete), or 0 when there is none within maxResyncScan bytes. Only
// replay reaches it, after a hole the capture lost (CaptureGap).
func (in *inspector) resyncAt(s int, b []byte) int {
	for o := 1; o < len(b) && o <= maxResyncScan; o++ {
		q, whole := o, 0
		for q < len(b) {
			n, need, err := in.frame(s, b[q:])
			if err != nil || (n == 0 && need <= 0) {
				break
			}
			if n == 0 {
				q = len(b) // an incomplete last PDU
				break
			}
			if !in.plausible(s, b[q:q+n]) {
				break
			}
			q += n
			whole++
		}
		if q == len(b) && whole > 0 {
			return o
		}
	}
	return 0
}

// feed runs new in-order bytes data of direction s through the flow's
// parser, judging every PDU it completes. When a PDU is denied (enforce) it
// sets c.denied, c.deny, c.denyStart (the offset in data of the first byte
// not to forward: where the denied PDU starts, or 0 when it began in an
// earlier segment) and c.denyEnd (the offset just after it) and stops.
// datagram: data is one UDP payload, so a PDU cannot continue in the next.
func (e *Engine) feed(c *hctx, f *flow, s int, data []byte, datagram bool) {
	in := f.insp
	st := &in.dir[s]
	if st.resync {
		st.resync = false
		e.gap(f, s)
	}
	pos := 0
	for pos < len(data) || len(st.hold) > 0 {
		if len(st.hold) > 0 {
			n, need, err := in.frame(s, st.hold)
			if (err != nil || (n == 0 && need <= 0)) && st.afterHole {
				st.hold, st.unsent = st.hold[:0], 0
				e.ctr.captureSkips.Add(1)
				st.resync = true
				return
			}
			if err != nil || (n == 0 && need <= 0) {
				st.hold, st.unsent = st.hold[:0], 0
				if !e.malformed(c, f, s, framingAnomaly(in, err), 0, pos) {
					return
				}
				continue
			}
			if n == 0 {
				if pos == len(data) {
					c.tailHeld = st.unsent > 0
					return // still incomplete: wait for more
				}
				take := min(need, len(data)-pos)
				if st.unsent > 0 && len(st.hold)+take > maxUnsent {
					// Held while its header was incomplete, the PDU turns
					// out larger than maxUnsent (an OPC UA chunk whose
					// first segment was shorter than its header): its
					// prefix crosses now, as for any PDU that large.
					st.unsent = 0
					c.heldDone = true
				}
				if !e.growHold(st, len(st.hold)+take) {
					st.hold, st.unsent = st.hold[:0], 0
					c.drop = DropPDUTooLarge
					if !e.malformed(c, f, s, "message_too_large", 0, pos) {
						return
					}
					st.resync = true
					return
				}
				st.hold = append(st.hold, data[pos:pos+take]...)
				if st.unsent > 0 {
					st.unsent = len(st.hold)
				}
				pos += take
				continue
			}
			st.afterHole = false
			ok := e.judge(c, f, s, st.hold[:n], 0, pos)
			wasHeld := st.unsent > 0
			st.hold, st.unsent = st.hold[:0], 0
			if !ok {
				return
			}
			c.heldDone = c.heldDone || wasHeld
			c.doneEnd = pos
			continue
		}
		b := data[pos:]
		n, need, err := in.frame(s, b)
		switch {
		case st.afterHole && (err != nil || n > 0 && !in.plausible(s, b[:n])):
			// The rest of a PDU whose start the capture lost (unframeable,
			// or framed by chance): skip to where complete PDUs frame
			// again, up to the segment's end.
			e.ctr.captureSkips.Add(1)
			if o := in.resyncAt(s, b); o > 0 {
				pos += o
				continue
			}
			st.resync = true
			return
		case err != nil:
			if !e.malformed(c, f, s, framingAnomaly(in, err), pos, pos+max(n, 1)) {
				return
			}
			// Tolerated or monitor: the rest of this segment cannot be
			// framed; start again at the next one.
			st.resync = true
			return
		case n > 0:
			st.afterHole = false
			if !e.judge(c, f, s, b[:n], pos, pos+n) {
				return
			}
			pos += n
			c.doneEnd = pos
		default:
			if datagram {
				e.malformed(c, f, s, "truncated", pos, len(data))
				return
			}
			// An incomplete PDU: its bytes may cross, the completing ones
			// will wait for the verdict.
			total := len(b) + max(need, 0)
			if total > e.cfg.MaxHold && in.ua != nil {
				c.drop = DropPDUTooLarge
				if !e.malformed(c, f, s, "message_too_large", pos, len(data)) {
					return
				}
				st.resync = true
				return
			}
			if !e.growHold(st, len(b)) {
				c.drop = DropPDUTooLarge
				if !e.malformed(c, f, s, "message_too_large", pos, len(data)) {
					return
				}
				st.resync = true
				return
			}
			st.hold = append(st.hold, b...)
			if !f.monitor && total <= maxUnsent {
				// Enforce: none of its bytes cross before it is judged.
				st.unsent = len(st.hold)
				c.tailHeld = true
			}
			pos = len(data)
		}
	}
}

// growHold makes room for n held bytes, within MaxHold and the memory cap.
func (e *Engine) growHold(st *istream, n int) bool {
	if n <= cap(st.hold) {
		return true
	}
	if n > e.cfg.MaxHold {
		return false
	}
	nc := max(2*cap(st.hold), n)
	nc = min(nc, e.cfg.MaxHold)
	delta := int64(nc - cap(st.hold))
	if e.mem.Add(delta) > e.cfg.MemoryCap {
		e.mem.Add(-delta)
		return false
	}
	nb := make([]byte, len(st.hold), nc)
	copy(nb, st.hold)
	st.hold = nb
	return true
}

// framingAnomaly names a framing error in the parser's vocabulary.
func framingAnomaly(in *inspector, err error) string {
	switch {
	case in.mb != nil:
		return modbus.AnomalyNonModbus.String()
	case in.dn != nil:
		switch err {
		case dnp3.ErrLinkCRC:
			return dnp3.AnomalyLinkCRC.String()
		case dnp3.ErrBadLength:
			return dnp3.AnomalyBadLength.String()
		}
		return dnp3.AnomalyBadStart.String()
	case in.ua != nil:
		if a := opcua.AnomalyOf(err); a != opcua.AnomalyNone {
			return a.String()
		}
	}
	return "malformed"
}

// malformed judges bytes that cannot be framed as the flow's protocol. The
// ruleset decides deny or alert (monitor); a rule that tolerates the
// anomaly cannot make unframeable bytes pass in enforce mode.
func (e *Engine) malformed(c *hctx, f *flow, s int, anomaly string, start, end int) bool {
	pdu := &c.pdu
	resetPDU(pdu, f.inspect, dirOf(s))
	pdu.Anomaly = anomaly
	// Nothing of a previous PDU may leak into this judgement: unframeable
	// bytes have no unit, function or address of their own.
	pdu.Modbus = rules.Modbus{}
	pdu.DNP3 = rules.DNP3{}
	pdu.OPCUA = rules.OPCUA{}
	// The ruleset decides monitor (alert) or enforce (deny) and names the
	// conduit; the reason is always the framing anomaly, whatever field
	// check the empty PDU happened to fail first.
	v := c.rs.Evaluate(&f.rf, pdu)
	if v.Action == rules.Allow {
		v.Action = rules.Deny
	}
	v.Reason, v.Anomaly = rules.ReasonMalformed, anomaly
	c.dec.PDU = pdu
	if c.drop == DropNone {
		c.drop = DropMalformed
	}
	return e.verdict(c, f, s, v, start, end, false)
}

// verdict counts and reports a PDU verdict; it returns whether the bytes
// may be forwarded (allow, or alert in monitor mode). canReply: c.reply
// holds a native reply for a deny with action reply.
func (e *Engine) verdict(c *hctx, f *flow, s int, v rules.Verdict, start, end int, canReply bool) bool {
	e.ctr.pdus.Add(1)
	f.pdus++
	if v.Action != rules.Allow {
		f.pdusDenied++
	}
	switch v.Action {
	case rules.Allow:
		e.ctr.pduAllowed.Add(1)
		if e.cfg.OnVerdict != nil {
			e.report(c, f, v, FrameForward)
		}
		return true
	case rules.Alert:
		e.ctr.pduAlerted.Add(1)
		e.report(c, f, v, FrameForward)
		return true
	}
	e.ctr.pduDenied.Add(1)
	c.denied = true
	c.deny = v
	c.denyStart, c.denyEnd = start, end
	if !canReply {
		c.replyLen = 0
	}
	act := FrameDrop
	if v.DenyAction != rules.ActionDrop && f.rf.Transport == rules.TransportTCP {
		act = FrameInject
	} else if v.DenyAction == rules.ActionReply && c.replyLen > 0 {
		act = FrameInject
	}
	if c.drop == DropNone {
		c.drop = DropPDUDenied
	}
	e.report(c, f, v, act)
	return false
}

// judge decodes one complete PDU of direction s (start and end are its
// bounds in the segment's new data, see feed), evaluates it and records
// request state for allowed requests.
func (e *Engine) judge(c *hctx, f *flow, s int, b []byte, start, end int) bool {
	in := f.insp
	pdu := &c.pdu
	dir := dirOf(s)
	switch {
	case in.mb != nil:
		mb := in.mb
		a := &mb.adu
		_ = a.Decode(b, dir)
		modbusPDU(pdu, a, dir)
		c.dec.Modbus = a
		var pa modbus.Anomaly
		if dir == protocols.Response {
			var ok bool
			_, ok, pa = mb.pairing.Response(a)
			if pa == modbus.AnomalyTIDMismatch {
				// Should a rule tolerate the wrong transaction id, the
				// response answers the oldest request: it must still
				// match that request in unit, function, byte count and
				// echo, else it is judged by that anomaly instead.
				if an := mb.pairing.CheckOldest(a); an != modbus.AnomalyNone {
					pa = an
				}
			}
			if a.HasPDU() && in.pickup(ok) && !ok {
				// Answers a request sent before the pickup: the pairing
				// anomaly (response_without_request, tid_mismatch) is
				// an artefact of joining late.
				ok, pa = true, modbus.AnomalyNone
			}
			pdu.Modbus.PairedRequest = ok
		}
		if pa != modbus.AnomalyNone && pdu.Anomaly == "" {
			pdu.Anomaly = pa.String()
		}
		c.dec.PDU = pdu
		v := c.rs.Evaluate(&f.rf, pdu)
		if v.Action != rules.Allow && v.Reason == rules.ReasonMalformed && a.Anomaly == modbus.AnomalyUnknownFunction {
			v = e.unknownFunction(c, f, v)
		}
		canReply := false
		if v.Action == rules.Deny && v.DenyAction == rules.ActionReply && dir == protocols.Request && a.HasPDU() {
			c.replyLen = len(modbusException(c.reply[:0], a.TransactionID, a.Unit, a.Func(), modbusExceptionFor(v.Reason)))
			canReply = true
		}
		ok := e.verdict(c, f, s, v, start, end, canReply)
		if ok && dir == protocols.Request {
			mb.pairing.Request(a)
		}
		if ok && v.Action == rules.Allow && pa == modbus.AnomalyTIDMismatch {
			// Tolerated: the device numbers its answers wrongly; this
			// response answers the oldest request.
			mb.pairing.TakeOldest()
		}
		if ok && dir == protocols.Response {
			e.detectModbus(c, f, a, &v)
		}
		return ok
	case in.dn != nil:
		return e.judgeDNP3(c, f, s, b, start, end)
	case in.ua != nil:
		return e.judgeOPCUA(c, f, s, b, start, end)
	}
	return false
}

// unknownFunction re-judges a Modbus PDU refused only because its
// function code is neither public nor user-defined (Modbus Application
// Protocol v1.1b3 section 5, e.g. FC 91; FC 90, Schneider UMAS, is decoded). Such a PDU is
// well framed; what the policy refuses is the function, so the verdict
// becomes function_not_allowed when the PDU without the anomaly would be
// refused for its function. A policy that tolerates unknown_function never
// gets here (Evaluate judged the function already); one that lists the
// code in an allowlist without tolerating the anomaly keeps the malformed
// verdict.
func (e *Engine) unknownFunction(c *hctx, f *flow, v rules.Verdict) rules.Verdict {
	pdu := &c.pdu
	an := pdu.Anomaly
	pdu.Anomaly = ""
	v2 := c.rs.Evaluate(&f.rf, pdu)
	pdu.Anomaly = an
	if v2.Action != rules.Allow && v2.Reason == rules.ReasonFunctionNotAllowed {
		return v2
	}
	return v
}

// modbusExceptionFor picks the exception code that fits a deny reason
// (Modbus Application Protocol v1.1b3 section 7).
func modbusExceptionFor(r rules.Reason) uint8 {
	switch r {
	case rules.ReasonAddressOutOfRange:
		return uint8(modbus.ExceptionIllegalDataAddress)
	case rules.ReasonValueOutOfRange:
		return uint8(modbus.ExceptionIllegalDataValue)
	}
	return uint8(modbus.ExceptionIllegalFunction)
}

func (e *Engine) judgeDNP3(c *hctx, f *flow, s int, b []byte, start, end int) bool {
	dn := f.insp.dn
	lf := &dn.lf
	pdu := &c.pdu
	if err := lf.Decode(b); err != nil && lf.Anomaly != dnp3.AnomalyBroadcast {
		c.dec.DNP3Link = lf
		return e.malformed(c, f, s, lf.Anomaly.String(), start, end)
	}
	data := lf.UserData()
	if len(data) == 0 {
		// Link-layer service frames (RESET_LINK_STATES, LINK_STATUS, ACK...)
		// carry no application function; they ride the allowed flow.
		return true
	}
	frag, an := dn.reasm[s].Add(data)
	if an != dnp3.AnomalyNone {
		c.dec.DNP3Link = lf
		return e.malformed(c, f, s, an.String(), start, end)
	}
	if frag == nil {
		return true // the fragment continues in later frames
	}
	fr := &dn.frag
	_ = fr.Decode(frag, lf.FromMaster())
	dir := protocols.Response
	if lf.FromMaster() {
		dir = protocols.Request
	}
	dnp3PDU(pdu, lf, fr, dir)
	seq := fr.Seq() & 15
	paired := false      // a counted request was consumed
	seqMismatch := false // a response with requests outstanding, none of its SEQ
	if dir == protocols.Response && fr.Func == dnp3.FuncResponse {
		paired = dn.outstanding[seq] > 0
		pdu.DNP3.PairedRequest = f.insp.pickup(paired)
		if !pdu.DNP3.PairedRequest && dn.outstanding != ([16]uint8{}) && pdu.Anomaly == "" {
			pdu.Anomaly = dnp3.AnomalySeqMismatch.String()
			seqMismatch = true
		}
	}
	c.dec.PDU, c.dec.DNP3Link, c.dec.DNP3 = pdu, lf, fr
	v := c.rs.Evaluate(&f.rf, pdu)
	canReply := false
	if v.Action == rules.Deny && v.DenyAction == rules.ActionReply && dir == protocols.Request &&
		!dnp3.IsBroadcast(lf.Dst) && fr.Func != dnp3.FuncConfirm {
		iin2 := iin2NoFuncCodeSupport
		if v.Reason == rules.ReasonObjectNotAllowed {
			iin2 = iin2ObjectUnknown
		}
		c.replyLen = len(dnp3Response(c.reply[:0], lf.Src, lf.Dst, seq, iin2, 0))
		canReply = true
	}
	ok := e.verdict(c, f, s, v, start, end, canReply)
	if ok && dir == protocols.Response {
		e.detectDNP3(c, f, fr, &v)
	}
	if ok {
		switch {
		case dir == protocols.Request && expectsResponse(fr.Func):
			dn.count(seq)
		case dir == protocols.Response && fr.Func == dnp3.FuncResponse && (pdu.DNP3.PairedRequest || seqMismatch && v.Action == rules.Allow):
			switch {
			case paired:
				dn.outstanding[seq]--
			case seqMismatch:
				// Tolerated: the outstation numbers its answers wrongly;
				// this response answers the latest request before its SEQ.
				dn.takeBefore(seq)
			}
			if !fr.FIN() {
				dn.count((seq + 1) & 15) // the next fragment of a multi-fragment response
			}
		}
	}
	return ok
}

// takeBefore consumes one request awaiting a response, the nearest one
// counting back from sequence seq (mod 16).
func (dn *dnpState) takeBefore(seq uint8) {
	for i := uint8(1); i <= 16; i++ {
		if s := (seq - i) & 15; dn.outstanding[s] > 0 {
			dn.outstanding[s]--
			return
		}
	}
}

// count records one more request awaiting a response with sequence seq.
func (dn *dnpState) count(seq uint8) {
	if dn.outstanding[seq] < maxDNP3Repeat {
		dn.outstanding[seq]++
	}
}

// pickup applies the allowance of a picked-up connection to one response
// and returns whether to judge it as paired: paired tells whether it
// matched a request the engine saw. Once a response pairs, the requests
// sent before the pickup are taken as answered (responses come in request
// order on the connection) and the allowance ends.
func (in *inspector) pickup(paired bool) bool {
	if paired {
		in.pickedUp = false
		return true
	}
	return in.pickedUp
}

// expectsResponse reports whether an outstation answers fc (IEEE 1815-2012
// Table 4-1: CONFIRM and the *_NR functions get no response).
func expectsResponse(fc dnp3.FunctionCode) bool {
	switch fc {
	case dnp3.FuncConfirm, dnp3.FuncDirectOperateNR, dnp3.FuncImmedFreezeNR, dnp3.FuncFreezeClearNR,
		dnp3.FuncFreezeAtTimeNR, dnp3.FuncAuthReqNoAck:
		return false
	}
	return !fc.IsResponse()
}

func (e *Engine) judgeOPCUA(c *hctx, f *flow, s int, b []byte, start, end int) bool {
	ua := f.insp.ua
	st := &f.insp.dir[s]
	m := &ua.msg
	dir := dirOf(s)
	_ = ua.ch.Decode(dir, b, m)
	svc := uint32(0)
	if m.Type == opcua.TypeMSG || m.Type == opcua.TypeOPN || m.Type == opcua.TypeCLO {
		if m.HasTypeID {
			st.svc = m.TypeID
		}
		svc = st.svc
	}
	mode := m.Mode
	if m.Type == opcua.TypeOPN && mode == opcua.ModeInvalid {
		switch m.Policy {
		case opcua.PolicyNone:
			mode = opcua.ModeNone
		case opcua.PolicyUnknown:
		default:
			mode = opcua.ModeSign // encrypted OPN: at least Sign under any real policy
		}
	}
	pdu := &c.pdu
	opcuaPDU(pdu, m, dir, svc, mode)
	final := m.Chunk != opcua.ChunkIntermediate
	if dir == protocols.Response && final && (m.Type == opcua.TypeMSG || m.Type == opcua.TypeOPN) {
		pdu.OPCUA.PairedRequest = f.insp.pickup(ua.match(m))
	}
	c.dec.PDU, c.dec.OPCUA = pdu, m
	v := c.rs.Evaluate(&f.rf, pdu)
	canReply := false
	if v.Action == rules.Deny && v.DenyAction == rules.ActionReply && dir == protocols.Request {
		// A native answer only where the channel is unencrypted and
		// unsigned (policy None): anything else would need the keys.
		if mm, _ := ua.ch.Mode(); mm == opcua.ModeNone || (m.Type == opcua.TypeOPN && mode == opcua.ModeNone) {
			c.replyLen = len(opcuaErr(c.reply[:0], uaStatusFor(v.Reason), "otgw: "+v.Reason.String()))
			canReply = true
		}
	}
	ok := e.verdict(c, f, s, v, start, end, canReply)
	if ok && dir == protocols.Request && final && (m.Type == opcua.TypeMSG || m.Type == opcua.TypeOPN) {
		ua.push(m)
	}
	if final {
		st.svc = 0
	}
	return ok
}

// uaStatusFor picks the ERR status code for a deny reason (OPC 10000-4
// section 7.34).
func uaStatusFor(r rules.Reason) uint32 {
	switch r {
	case rules.ReasonServiceNotAllowed:
		return uaBadServiceUnsupported
	case rules.ReasonNodeNotAllowed:
		return uaBadUserAccessDenied
	case rules.ReasonSecurityPolicyNotAllowed:
		return uaBadSecurityPolicyRejected
	case rules.ReasonSecurityModeTooLow:
		return uaBadSecurityModeRejected
	case rules.ReasonMalformed:
		return uaBadTCPMessageTypeInvalid
	}
	return uaBadRequestNotAllowed
}

func (u *uaState) push(m *opcua.Message) {
	if u.nout == len(u.out) {
		copy(u.out[:], u.out[1:])
		u.nout--
	}
	u.out[u.nout] = uaReq{id: m.RequestID, wild: !m.HasSequence}
	u.nout++
}

func (u *uaState) match(m *opcua.Message) bool {
	for i := 0; i < u.nout; i++ {
		r := u.out[i]
		if !m.HasSequence || r.wild || r.id == m.RequestID {
			copy(u.out[i:], u.out[i+1:u.nout])
			u.nout--
			return true
		}
	}
	return false
}
