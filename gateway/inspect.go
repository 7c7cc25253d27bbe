package gateway

import (
	"unsafe"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/registry"
	"github.com/otgw/otgw/rules"
)

// inspector is the inspection state of one inspected flow: the
// protocol's session (protocols.Session: framing, decoding, pairing) and
// the engine's per-direction stream state around it. Inspectors are
// recycled through per-protocol free lists, so steady-state traffic
// allocates nothing; the bytes they hold count against Config.MemoryCap.
type inspector struct {
	proto protocols.Proto
	size  int64      // bytes accounted in Engine.mem
	dir   [2]istream // indexed by side
	sess  protocols.Session
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
}

// dnp3Associations bounds the DNP3 link address pairs one flow
// reassembles at once (a master, its outstation and a broadcast).
const dnp3Associations = 2

const initialHold = 512

func (e *Engine) newInspector(proto protocols.Proto) *inspector {
	spec := registry.Lookup(proto)
	if spec == nil {
		return nil
	}
	// Bodies that span chunks (OPC UA Write/Call) are buffered for their
	// NodeIds: the buffers count against the memory cap like held bytes
	// (a flow that would exceed it fails the message as
	// message_too_large, it does not grow the process).
	in := &inspector{proto: proto, sess: spec.New(protocols.Config{Budget: e.charge, Associations: dnp3Associations})}
	size := int64(unsafe.Sizeof(*in)) + int64(in.sess.Size())
	for i := range in.dir {
		in.dir[i].hold = make([]byte, 0, initialHold)
		in.dir[i].hist = make([]byte, e.cfg.HistoryBytes)
		size += int64(initialHold + e.cfg.HistoryBytes)
	}
	in.size = size
	return in
}

// InspectorSize is what the engine charges its memory cap for an
// inspector of proto at rest, as it makes one (with its history and
// initial holds); 0 for a protocol it does not inspect. Offline replay's
// memory bound reads it (simulate/replay).
func (e *Engine) InspectorSize(proto protocols.Proto) int64 {
	in := e.newInspector(proto)
	if in == nil {
		return 0
	}
	return in.size
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
	if in == nil {
		return nil
	}
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
		f := t.slot(j)
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
	for i := range in.dir {
		d := &in.dir[i]
		d.hold = d.hold[:0]
		d.unsent = 0
		d.histLen, d.histEnd, d.resync = 0, 0, false
		d.afterHole = false
	}
	in.sess.Reset()
}

// gap tells the parsers of direction s that bytes were lost (mid-stream
// pickup or a hole in monitor mode).
func (e *Engine) gap(f *flow, s side) {
	in := f.insp
	st := &in.dir[s]
	st.hold = st.hold[:0]
	st.unsent = 0
	st.histLen = 0
	in.sess.Gap(s.dir())
}

// dir is the protocol direction of the PDUs side s sends: the client
// (initiator) sends requests, the server responses. It is the one mapping
// from side to protocols.Dir.
func (s side) dir() protocols.Dir {
	if s == sideClient {
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

// frame returns the next PDU boundary of direction s in b
// (protocols.Session.Next).
func (in *inspector) frame(s side, b []byte) (n, need int, err error) {
	return in.sess.Next(s.dir(), b)
}

// plausible reports whether a framed PDU of direction s decodes without
// an anomaly, so that resynchronising after a capture hole does not take
// the tail of a lost PDU for a PDU (protocols.Session.Plausible).
func (in *inspector) plausible(s side, b []byte) bool {
	return in.sess.Plausible(s.dir(), b)
}

// feed runs new in-order bytes data of direction s through the flow's
// parser, judging every PDU it completes. When a PDU is denied (enforce) it
// sets c.denied, c.deny, c.denyStart (the offset in data of the first byte
// not to forward: where the denied PDU starts, or 0 when it began in an
// earlier segment) and c.denyEnd (the offset just after it) and stops.
// datagram: data is one UDP payload, so a PDU cannot continue in the next.
func (e *Engine) feed(c *hctx, f *flow, s side, data []byte, datagram bool) {
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
				if !e.malformed(c, f, s, nil, in.sess.FramingAnomaly(err), 0, pos) {
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
					if !e.malformed(c, f, s, nil, protocols.CommonAnomaly(f.inspect, protocols.CodeTooLarge), 0, pos) {
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
			if !e.malformed(c, f, s, nil, in.sess.FramingAnomaly(err), pos, pos+max(n, 1)) {
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
				e.malformed(c, f, s, nil, protocols.CommonAnomaly(f.inspect, protocols.CodeTruncated), pos, len(data))
				return
			}
			// An incomplete PDU: its bytes may cross, the completing ones
			// will wait for the verdict.
			total := len(b) + max(need, 0)
			if total > e.cfg.MaxHold {
				// Its header says it will not fit (an OPC UA chunk up to
				// the negotiated size; Modbus and DNP3 PDUs always fit).
				c.drop = DropPDUTooLarge
				if !e.malformed(c, f, s, nil, protocols.CommonAnomaly(f.inspect, protocols.CodeTooLarge), pos, len(data)) {
					return
				}
				st.resync = true
				return
			}
			if !e.growHold(st, len(b)) {
				c.drop = DropPDUTooLarge
				if !e.malformed(c, f, s, nil, protocols.CommonAnomaly(f.inspect, protocols.CodeTooLarge), pos, len(data)) {
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

// malformed judges bytes that cannot be framed as the flow's protocol. The
// ruleset decides deny or alert (monitor); a rule that tolerates the
// anomaly cannot make unframeable bytes pass in enforce mode. ss is the
// session when it decoded something of the bytes (a corrupt DNP3 link
// frame's header), whose fields the report then carries; nil otherwise.
func (e *Engine) malformed(c *hctx, f *flow, s side, ss protocols.Session, anomaly protocols.Anomaly, start, end int) bool {
	c.dec.Session = ss
	pdu := &c.pdu
	pdu.Malformed(f.inspect, s.dir(), anomaly)
	// The ruleset decides monitor (alert) or enforce (deny) and names the
	// conduit; the reason is always the framing anomaly, whatever field
	// check the empty PDU happened to fail first.
	v := c.rs.Evaluate(&f.rf, pdu)
	if v.Action == rules.Allow {
		// Tolerated by a rule: not in enforce mode; a monitor-mode
		// conduit alerts, as for any refusal.
		v.Action = rules.Deny
		if v.Mode == rules.ModeMonitor {
			v.Action = rules.Alert
		}
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
func (e *Engine) verdict(c *hctx, f *flow, s side, v rules.Verdict, start, end int, canReply bool) bool {
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
// bounds in the segment's new data, see feed) through the flow's session,
// evaluates it and tells the session the verdict, so that only requests
// that passed await responses. The session decodes and pairs; the ruleset
// decides.
func (e *Engine) judge(c *hctx, f *flow, s side, b []byte, start, end int) bool {
	ss := f.insp.sess
	switch ss.Decode(s.dir(), b) {
	case protocols.UnitPartial:
		// A DNP3 link frame whose fragment continues, or a link-layer
		// service frame: nothing to judge; it rides the allowed flow.
		return true
	case protocols.UnitMalformed:
		c.dec.Session = ss
		return e.malformed(c, f, s, ss, ss.Anomaly(), start, end)
	}
	pdu := &c.pdu
	c.dec.Session = ss
	if !pdu.Set(ss) {
		// A unit rules cannot read (no protocol of theirs): refused.
		return e.malformed(c, f, s, ss, ss.Anomaly(), start, end)
	}
	c.dec.PDU = pdu
	v := c.rs.Evaluate(&f.rf, pdu)
	canReply := v.Action == rules.Deny && v.DenyAction == rules.ActionReply && pdu.Dir == protocols.Request && e.nativeReply(c, ss, v)
	ok := e.verdict(c, f, s, v, start, end, canReply)
	ss.Commit(ok, ok && v.Action == rules.Allow)
	if ok && pdu.Dir == protocols.Response {
		e.detectPDU(c, f, pdu, &v)
	}
	return ok
}

// nativeReply writes into c.reply the protocol's own answer to a request
// denied with action reply, and reports whether there is one: the
// session's protocols.Replier (a Modbus exception, a DNP3 response with
// IIN2 set, an OPC UA ERR on a channel that neither signs nor encrypts).
// A protocol without one gets no reply (a reset on TCP).
func (e *Engine) nativeReply(c *hctx, ss protocols.Session, v rules.Verdict) bool {
	r, ok := ss.(protocols.Replier)
	if !ok {
		return false
	}
	b, ok := r.AppendDenyReply(c.reply[:0], v.Reason.Refusal())
	if !ok || len(b) == 0 || &b[0] != &c.reply[0] {
		return false // none, or larger than the reply buffer
	}
	c.replyLen = len(b)
	return true
}
