package replay

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// Replay on several cores (Options.Workers).
//
// The reading goroutine (Run's) reads the captures, repairs and picks up
// connections as before, and hands every frame to one of N lanes, chosen
// by its flow: a lane has its own enforcing engine (and what-if shadow),
// and a flow's frames, both directions, always go to the same lane, in
// capture order. A lane judges its frames and keeps what the report needs
// of each decision (a note, see noteOf) and of the frame (sent, truncated,
// injected); the reading goroutine then settles the frames in capture
// order (account, accountFrame, and the what-if settle), exactly as the
// single engine's hook and feed do frame by frame. Events, report.json,
// the summary and the pcaps are the same bytes whatever N
// (TestShardedSameOutput).
//
// Flows share state in one engine that N engines cannot share without
// ordering it:
//   - the rate detectors count per subject address across connections:
//     the lanes' engines defer them (gateway.Config.DeferDetections) and
//     the reading goroutine counts the matches in one gateway.DetectTable
//     in frame order, the order the single engine counts them in, so the
//     same responses raise the same alerts;
//   - the flow table's size, the half-open limit per client address and
//     the inspection memory cap bound all flows together. Run shards only
//     when the pre-scan shows that no engine can reach them (shardable):
//     then neither the single engine nor any lane does, and each flow is
//     judged alone.
//
// The memory bound (memBound) is the most one engine can charge to
// Config.MemoryCap for all the pre-scan's flows together, summed flow by
// flow; when it fits the cap neither one engine nor a lane (a subset of
// the flows, with the same cap) refuses anything for the cap (memory_cap,
// or an OPC UA body refused as message_too_large), and every lane's
// verdicts are the single engine's (TestShardedMemoryCapSameOutput). The
// engine charges the cap in three places (gateway/inspect.go), each
// bounded from the code; P is the TCP payload one end of a connection
// sent in the capture (retransmissions included), f the flows the engine
// may open for the connection (one, plus one per SYN after its first
// frame):
//   - an inspector at rest, inspectorBytes, for every TCP endpoint pair
//     and UDP / ICMP flow: an inspector is charged when it is made, and
//     one is made only when the free list is empty, so never more than
//     the flows the table holds at once, one per key;
//   - a direction's hold (growHold) grows only to hold n bytes of one
//     incomplete PDU, n <= P, to min(max(2*cap, n), MaxHold) with cap < n:
//     at most min(2P, MaxHold) per flow, and it never shrinks (a recycled
//     inspector keeps its hold and its flow charges nothing more for it):
//     min(2P, f*MaxHold) per direction;
//   - the sessions' buffers, through protocols.Config.Budget: only OPC UA
//     charges (Modbus and DNP3 sessions never call it). A Write or Call
//     body buffer, one per direction at a time (given back at the
//     message's end past 64 KiB, and with the session), is charged twice
//     its capacity (bufferCharge); the capacity grows to min(max(need,
//     2*cap, 4096), max(need, limit)) with cap < need, need <= P and need
//     <= the message limit (opcua.DefaultMaxMessageSize, 16 MiB): at most
//     min(max(2P, 4096), 16 MiB). So min(4P + f*8 KiB, f*32 MiB) per
//     direction that sent data. Twice the payload would not bound it: the
//     doubling may leave a buffer twice the body it holds. Only a
//     connection that may be inspected as OPC UA counts it: one of its
//     ports is one an OPC UA rule of the policy names (uaPorts;
//     Options.Ruleset is the policy's compiled). A protocol a rule section
//     registered is held to the same bound (none charges today).
// The 600k-frame Modbus/DNP3 benchmark capture (make bench-offline, 300
// connections, no direction sending 32 KiB) is bounded by 25.3 MiB and
// shards under the default 64 MiB cap; 100 connections of 15 MB OPC UA
// Writes (issue 15) are bounded by over 3 GiB and one engine judges them.
//
// Flow ids (what-if's connections cut) are made unique across lanes.

// Frames go to the lanes in rounds of shardRound frames, at most
// shardLag rounds ahead of the settling.
const (
	shardRound = 512
	shardLag   = 8
)

// inspectorBytes is an inspector at rest (gateway doc: 11 KB for
// Modbus, 15 KB for DNP3 and OPC UA, with the default 4 KiB history),
// rounded up: the memory bound of shardable. TestInspectorBytes holds it
// to what replay's engines charge for every registered protocol
// (Engine.InspectorSize).
const inspectorBytes = 16 << 10

// shardWorkers is the number of lanes Run would use: Options.Workers
// (default GOMAXPROCS), 1 when something needs the decisions one frame at
// a time (OnDecision, an events Sink) or the pre-scan is off.
func (r *runner) shardWorkers() int {
	n := r.opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if r.opts.OnDecision != nil || r.opts.Sink != nil || r.opts.StrictMidstream {
		return 1
	}
	return n
}

// shardable reports whether flows sharded over lanes are judged as by one
// engine: the pre-scan's flows fit the table, no client address can reach
// the half-open limit (all TCP connections together do not), and what
// the engine can charge for all of them (memBound) fits the memory cap.
func shardable(ms *midstream, maxFlows int, memCap int64, ua uaPorts) bool {
	if maxFlows <= 0 {
		maxFlows = gateway.DefaultMaxFlows
	}
	return ms != nil && ms.tcpKeys+ms.otherKeys <= maxFlows &&
		ms.tcpKeys <= gateway.HalfOpenLimit(maxFlows) &&
		memBound(ms, ua) <= memCap
}

// replayMaxHold is the engines' Config.MaxHold (the gateway's default);
// engineMaxHold is what NewEngine makes of it.
const (
	replayMaxHold = 65536
	engineMaxHold = max(replayMaxHold, modbus.MaxADULen, dnp3.MaxFrameLen)
)

// uaMinBuffer is the smallest OPC UA body buffer (opcua Channel.grow).
const uaMinBuffer = 4096

// memBound is the most the engine can charge to its memory cap for the
// pre-scan's flows (see the top of this file). It saturates rather than
// overflow.
func memBound(ms *midstream, ua uaPorts) int64 {
	const uaMax = 2 * opcua.DefaultMaxMessageSize // bufferCharge of the largest buffer
	sum := int64(ms.tcpKeys+ms.otherKeys) * inspectorBytes
	for id, ld := range ms.load {
		k := ms.ends[id]
		charges := ua.has(k.a.Port()) || ua.has(k.b.Port())
		for _, p := range ld.pay {
			sum = satAdd(sum, min(satMul(p, 2), satMul(ld.flows, engineMaxHold)))
			if charges && p > 0 {
				sum = satAdd(sum, min(satAdd(satMul(p, 4), satMul(ld.flows, 2*uaMinBuffer)), satMul(ld.flows, uaMax)))
			}
		}
	}
	return sum
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

// uaPorts are the ports on which a flow may be inspected as OPC UA (or a
// registered section's protocol), from the policy's rules: any port when
// a rule names none that the bound can tell.
type uaPorts struct {
	any    bool
	ranges [][2]uint16
}

func (u uaPorts) has(port uint16) bool {
	if u.any {
		return true
	}
	for _, r := range u.ranges {
		if port >= r[0] && port <= r[1] {
			return true
		}
	}
	return false
}

// uaPortsOf collects the ports of pol's OPC UA rules (default 4840) and
// registered section rules (no ports, or ports it cannot read: any).
func uaPortsOf(pol *rules.Policy) uaPorts {
	var u uaPorts
	add := func(list []string, def uint16) {
		if len(list) == 0 {
			if def == 0 {
				u.any = true
			} else {
				u.ranges = append(u.ranges, [2]uint16{def, def})
			}
			return
		}
		for _, s := range list {
			lo, hi, isRange := strings.Cut(s, "-")
			a, err1 := strconv.Atoi(strings.TrimSpace(lo))
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = strconv.Atoi(strings.TrimSpace(hi))
			}
			if err1 != nil || err2 != nil || a < 0 || b > 65535 || a > b {
				u.any = true
				continue
			}
			u.ranges = append(u.ranges, [2]uint16{uint16(a), uint16(b)})
		}
	}
	if pol == nil {
		return uaPorts{any: true}
	}
	for _, c := range pol.Conduits {
		for _, r := range c.Rules {
			switch {
			case r.OPCUA != nil:
				add(r.OPCUA.Ports, 4840)
			case r.Section != nil:
				add(r.Section.Ports, 0)
			}
		}
	}
	return u
}

// lane is one engine (and its shadow) and the flows hashed to it.
type lane struct {
	id, n       int
	r           *runner
	eng, shadow *gateway.Engine
	// mkShadow builds the what-if shadow engine (nil: none), shadow or
	// lazy's.
	mkShadow    func() *gateway.Engine
	work        chan *round
	flowConduit conduitMap

	// The job being judged.
	cur *shardJob
	now time.Time
	buf []byte
	pkt packet.Packet
	fc  frameCtx
	// pktOK: pkt (fc.pkt) holds the current frame, decoded for an event.
	pktOK bool
	base  *byte
	// Outcome of the current frame (the hooks fill them).
	conduit  conduitRef
	sentPkt  packet.Packet
	keepSent bool // Options.Allowed: the frame as sent is kept
	// mirror: the policy is in monitor mode everywhere, so the what-if
	// shadow (the same policy in monitor mode) would make the enforcing
	// engine's decisions: they are its refusals, and there is no shadow.
	mirror bool
	// lazy: the shadow skips the frames of flows that have not diverged
	// (lazy.go); nil: it judges every frame.
	lazy *lazyShadow

	// What the lane accounts for itself (tally): the conduits' names by
	// index (the ruleset's), whether the report keeps denied frames, and
	// whether what-if settles the frames.
	names  []string
	denied bool
	whatIf bool
	tally  tally

	// flowConduit's entry for lastPK (lastOK: it has one): conduitOf.
	lastPK            packedKey
	lastC             conduitRef
	lastOK, lastValid bool
}

// tally is what a lane counts for the report itself: the counters that
// the frames it judged add to, in any order, when nothing of them is
// reported in frame order (plain frames, see judge). Run adds them to
// the report at the end (addTally).
type tally struct {
	conduits                   []conduitTally // by ruleset index
	hits                       [][]int        // as Report.hits
	pdusAllowed                int
	forwarded, dropped         int
	truncated, injected        int
	synthesised, synthDropped  int
	captureHoles, cutAllowedPD int
}

type conduitTally struct {
	pdusAllowed, flowsAllowed int
	forwarded, dropped        int
}

// addTally adds a lane's tally to the report.
func (r *runner) addTally(t *tally) {
	rep := r.rep
	for i, c := range t.conduits {
		cs := rep.byIndex[i]
		cs.PDUsAllowed += c.pdusAllowed
		cs.FlowsAllowed += c.flowsAllowed
		cs.PacketsForwarded += c.forwarded
		cs.PacketsDropped += c.dropped
	}
	for c, hs := range t.hits {
		for ru, n := range hs {
			rep.hits[c][ru] += n
		}
	}
	rep.PDUsAllowed += t.pdusAllowed
	rep.Forwarded += t.forwarded
	rep.Dropped += t.dropped
	rep.Truncated += t.truncated
	rep.Injected += t.injected
	rep.Synthesised += t.synthesised
	rep.SynthesisedDropped += t.synthDropped
	rep.CaptureHoles += t.captureHoles
	if r.wi != nil {
		r.wi.CutAllowedPDUs += t.cutAllowedPD
	}
	*t = tally{}
}

// conduitOf is packedConduitOf on the lane's flowConduit, the entry of
// the last key asked for kept (a request's answer comes next).
func (l *lane) conduitOf(pk packedKey, c conduitRef) conduitRef {
	if !l.lastValid || l.lastPK != pk {
		l.lastC, l.lastOK = l.flowConduit[pk]
		l.lastPK, l.lastValid = pk, true
	}
	switch {
	case c.name == "":
		return l.lastC
	case !l.lastOK || l.lastC.name != c.name:
		l.flowConduit[pk] = c
		l.lastC, l.lastOK = c, true
	}
	return c
}

// tallied reports whether c names conduit c.idx of the ruleset, whose
// counters the tally keeps.
func (l *lane) tallied(c conduitRef) bool {
	return c.idx >= 0 && c.idx < len(l.names) && l.names[c.idx] == c.name
}

// allMonitor reports whether every conduit of rs, and its default, is in
// monitor mode: rs.WithMode(rules.ModeMonitor) judges as rs does.
func allMonitor(rs *rules.Ruleset) bool {
	if rs.Mode() != rules.ModeMonitor {
		return false
	}
	for i := range rs.NumConduits() {
		if rs.ConduitMode(i) != rules.ModeMonitor {
			return false
		}
	}
	return true
}

// shardJob is one frame (or, frame nil, engine calls alone) on its way
// through a lane and back.
type shardJob struct {
	plain       bool // the lane accounted for it (settleHere): nothing to settle
	opOnly      bool // only ops, no frame
	lane        int  // whose jobs it is of (jobQueue)
	synthetic   bool
	hasKey      bool
	key         packedKey // the frame's endpoints, when hasKey
	origPayload int
	hasL4       bool
	sentPayload int
	conduit     string
	notes       []note
	sentFrames  [][]byte // the frame as forwarded (Options.Allowed)
	shadowJob            // in, frame (as captured), fc, now, ops; what-if results; sent, sentLen, injected, orig
}

// round is a batch of frames in capture order, split by lane.
type round struct {
	jobs []*shardJob
	per  [][]*shardJob
	left atomic.Int32
	done chan struct{}
}

// shards is the reading goroutine's side of the lanes.
type shards struct {
	lanes    []*lane
	fill     *round
	inflight []*round // FIFO
	free     []*round
	jobs     []jobQueue // free jobs, by lane
	ops      []shadowOp // engine calls for the next frames of their flows
	stopped  bool
}

// newLanes builds n lanes with their engines.
func (r *runner) newLanes(rs *rules.Ruleset, n int) ([]*lane, error) {
	var mon *rules.Ruleset
	mirror := false
	if r.opts.WhatIf {
		if mirror = allMonitor(rs); !mirror {
			mon = rs.WithMode(rules.ModeMonitor)
		}
	}
	lanes := make([]*lane, n)
	for i := range lanes {
		l := &lane{id: i, n: n, r: r, work: make(chan *round, shardLag), flowConduit: conduitMap{}, keepSent: r.opts.Allowed != nil, mirror: mirror,
			denied: r.opts.Denied != nil, whatIf: r.opts.WhatIf}
		for c := range rs.NumConduits() {
			l.names = append(l.names, rs.ConduitName(c))
			l.tally.hits = append(l.tally.hits, make([]int, len(rs.RuleNames(c))))
		}
		l.tally.conduits = make([]conduitTally, rs.NumConduits())
		var err error
		l.eng, err = gateway.NewEngine(gateway.Config{
			Rules:           func() *rules.Ruleset { return rs },
			MaxFlows:        r.opts.MaxFlows,
			MemoryCap:       r.opts.MemoryCap,
			MaxHold:         replayMaxHold,
			Logger:          r.opts.Logger,
			Now:             func() time.Time { return l.now },
			ClockBack:       clockBack,
			OnVerdict:       l.onVerdict,
			DeferDetections: true,
		})
		if err != nil {
			return nil, err
		}
		if mon != nil {
			// Built by Run: at once, or by a lazy shadow at its first
			// catch-up (none when no flow diverges).
			l.mkShadow = func() *gateway.Engine {
				// NewEngine fails only without Rules (ErrNoRules).
				e, _ := gateway.NewEngine(gateway.Config{
					Rules:           func() *rules.Ruleset { return mon },
					MaxFlows:        r.opts.MaxFlows,
					MemoryCap:       r.opts.MemoryCap,
					MaxHold:         replayMaxHold,
					Now:             func() time.Time { return l.now },
					ClockBack:       clockBack,
					OnVerdict:       l.onShadow,
					DeferDetections: true,
				})
				return e
			}
		}
		lanes[i] = l
	}
	return lanes, nil
}

func newShards(lanes []*lane) *shards {
	sh := &shards{lanes: lanes, jobs: make([]jobQueue, len(lanes))}
	for _, l := range lanes {
		go l.run()
	}
	return sh
}

// stop ends the lanes (idempotent); rounds in flight are dropped.
func (sh *shards) stop() {
	if sh.stopped {
		return
	}
	sh.stopped = true
	for _, rd := range sh.inflight {
		<-rd.done
	}
	for _, l := range sh.lanes {
		close(l.work)
	}
}

// op queues an engine call (MarkPickedUp, CaptureGap) for the lane of
// its flow, before that lane's next frame.
func (sh *shards) op(o shadowOp) { sh.ops = append(sh.ops, o) }

// uniqueFlow makes a lane engine's flow id unique across lanes (0 stays
// "none").
func (l *lane) uniqueFlow(id uint64) uint64 {
	if id == 0 {
		return 0
	}
	return (id-1)*uint64(l.n) + uint64(l.id) + 1
}

// onVerdict is the lane engine's hook: the note of the decision.
func (l *lane) onVerdict(d *gateway.Decision) {
	j := l.cur
	if !l.pktOK && (d.Detection != "" || !d.HasVerdict || d.Verdict.Action != rules.Allow) {
		// An event's packet context (noteOf): the frame as captured.
		_ = l.pkt.Decode(j.frame, packet.LinkEthernet)
		l.pktOK = true
	}
	if v := &d.Verdict; d.Detection == "" && d.HasVerdict && v.Action == rules.Allow {
		// An allow adds to counters only (account): the tally's, when
		// they are the policy conduit's.
		if c := (conduitRef{name: v.ConduitName, idx: v.Conduit}); l.tallied(c) {
			l.conduit = c
			t := &l.tally
			if v.Rule >= 0 && v.Rule < len(t.hits[c.idx]) {
				t.hits[c.idx][v.Rule]++
			}
			if d.PDU != nil {
				t.conduits[c.idx].pdusAllowed++
				t.pdusAllowed++
				j.allowedE++
			} else {
				t.conduits[c.idx].flowsAllowed++
			}
			if l.mirror {
				l.onShadow(d)
			}
			return
		}
	}
	j.notes = append(j.notes, note{})
	n := &j.notes[len(j.notes)-1]
	l.r.noteOf(n, d, &l.fc, l.flowConduit)
	n.ev.flow = l.uniqueFlow(n.ev.flow)
	if n.setConduit {
		l.conduit = conduitRef{name: n.name, idx: n.conduit}
	}
	if n.allowedPDU {
		j.allowedE++
	}
	if l.mirror {
		l.onShadow(d)
	}
}

// onShadow is the lane shadow's hook.
func (l *lane) onShadow(d *gateway.Decision) {
	if l.lazy != nil && l.lazy.catching {
		return
	}
	j := &l.cur.shadowJob
	k := len(j.refusals)
	l.r.shadowVerdict(j, d)
	for i := k; i < len(j.refusals); i++ {
		j.refusals[i].flow = l.uniqueFlow(j.refusals[i].flow)
	}
}

// Send implements gateway.Tx for the lane's port pair.
func (l *lane) Send(out gateway.PortID, frame []byte) {
	j := l.cur
	if len(frame) > 0 && l.base != nil && unsafe.SliceData(frame) == l.base {
		j.sent, j.sentLen = true, len(frame)
		j.sentPayload = -1
		// A frame sent as fed is not truncated whatever its payload
		// (accountFrame): only a rewritten one is decoded.
		if !bytes.Equal(frame, j.frame) && l.sentPkt.Decode(frame, packet.LinkEthernet) == nil && l.sentPkt.HasL4 {
			j.sentPayload = len(l.sentPkt.Payload)
		}
		if l.keepSent && j.fc.cur.Index > 0 {
			k := len(j.sentFrames)
			if k < cap(j.sentFrames) {
				j.sentFrames = j.sentFrames[:k+1]
				j.sentFrames[k] = append(j.sentFrames[k][:0], frame...)
			} else {
				j.sentFrames = append(j.sentFrames, append([]byte(nil), frame...))
			}
		}
		return
	}
	j.injected++
}

// run judges the lane's frames of each round, in order.
func (l *lane) run() {
	for rd := range l.work {
		for _, j := range rd.per[l.id] {
			l.judge(j)
		}
		if rd.left.Add(-1) == 0 {
			rd.done <- struct{}{}
		}
	}
}

// judge runs one job through the lane's engines, as runner.feed and
// runShadow do.
func (l *lane) judge(j *shardJob) {
	for _, op := range j.ops {
		if op.pickedUp {
			l.eng.MarkPickedUp(op.a, op.b)
		} else if l.eng.CaptureGap(op.a, op.b, op.to) {
			l.tally.captureHoles++
		}
		switch {
		case l.lazy != nil:
			l.lazy.op(op)
		case l.shadow == nil:
		case op.pickedUp:
			l.shadow.MarkPickedUp(op.a, op.b)
		default:
			l.shadow.CaptureGap(op.a, op.b, op.to)
		}
	}
	j.ops = j.ops[:0]
	if j.opOnly {
		j.plain = true
		return
	}
	l.cur, l.now = j, j.now
	if l.mirror {
		// The refusals' packet context, as the shadow's.
		_ = j.pkt.Decode(j.frame, packet.LinkEthernet)
		j.fc.pkt = &j.pkt
	}
	// The engine may rewrite its copy; the shadow and Options.Denied get
	// the frame as captured.
	l.buf = append(l.buf[:0], j.frame...)
	// The frame's packet context is decoded (from the frame as captured)
	// only for an event (onVerdict); the reading goroutine decoded the
	// same bytes for the rest (j.lk).
	l.pktOK = false
	l.fc = frameCtx{cur: j.fc.cur, pkt: &l.pkt, picked: j.fc.picked, pickApp: j.fc.pickApp}
	l.conduit = conduitRef{idx: -1}
	j.sent, j.sentLen, j.sentPayload, j.injected = false, 0, -1, 0
	pk := j.key
	lk := j.lk // the lazy shadow's key and whether the frame is a reset
	l.base = unsafe.SliceData(l.buf)
	l.eng.Handle(j.in, l.buf, l)
	l.base = nil
	if !j.synthetic && j.hasKey {
		l.conduit = l.conduitOf(pk, l.conduit)
	}
	j.conduit = l.conduit.name
	if l.lazy != nil && lk.keyed && !lk.diverge {
		reported := false
		for i := range j.notes {
			if n := &j.notes[i]; n.ev.ev != nil && n.ev.kind != evDetection {
				reported = true
				break
			}
		}
		exact := j.sent && j.sentLen == len(j.frame) && bytes.Equal(l.buf[:j.sentLen], j.frame)
		lk.diverge = reported || !exact || j.injected > 0 // diverges; a reset diverged already
	}
	switch {
	case l.lazy != nil && l.lazy.skip(lk, j.in, j.frame, j.now):
		// As the shadow would have judged it: no refusal, the same allows.
		j.allowedS = j.allowedE
	case l.lazy != nil:
		l.now = j.now // a catch-up moved the clock
		_ = j.pkt.Decode(j.frame, packet.LinkEthernet)
		j.fc.pkt = &j.pkt
		l.lazy.engine().Handle(j.in, j.frame, discardTx{})
	case l.shadow != nil:
		_ = j.pkt.Decode(j.frame, packet.LinkEthernet)
		j.fc.pkt = &j.pkt
		l.shadow.Handle(j.in, j.frame, discardTx{})
	}
	l.cur = nil
	j.plain = l.settleHere(j)
}

// settleHere accounts for a judged frame in the lane's tally, as
// settleJob would in the report, when nothing of it is reported in frame
// order: no event or note (allows went to the tally), no refusal of the
// shadow, no frame for Options.Allowed or Options.Denied, and, for a
// captured frame, a conduit of the policy. It reports whether it did.
func (l *lane) settleHere(j *shardJob) bool {
	if len(j.notes) > 0 || len(j.refusals) > 0 || len(j.sentFrames) > 0 {
		return false
	}
	t := &l.tally
	if j.synthetic {
		// accountFrame; settle cuts nothing of a synthesised frame.
		t.synthesised++
		if !j.sent {
			t.synthDropped++
		}
		return true
	}
	truncated := frameTruncated(j.sent, j.sentLen, j.orig, j.sentPayload, j.origPayload, j.hasL4)
	if l.denied && (!j.sent || truncated) || !l.tallied(l.conduit) {
		return false
	}
	// accountFrame
	t.injected += j.injected
	c := &t.conduits[l.conduit.idx]
	switch {
	case truncated:
		t.truncated++
	case j.sent:
		t.forwarded++
	default:
		t.dropped++
	}
	if j.sent {
		c.forwarded++
	} else {
		c.dropped++
	}
	// settle, with neither events nor refusals.
	if l.whatIf && j.fc.cur.Index != 0 && j.allowedS > j.allowedE {
		t.cutAllowedPD += j.allowedS - j.allowedE
	}
	return true
}

// dispatch queues one frame for its lane (runner.feed with lanes).
func (r *runner) dispatch(frame []byte, in gateway.PortID, ref FrameRef, p *packet.Packet, synthetic bool, src frameSrc) {
	sh := r.sh
	var key packedKey
	hasKey := p.IPVersion != 0 && p.HasL4
	if hasKey {
		key, _ = packedKeyOf(p)
	}
	// The frame's lane, and its lazy shadow key (lazy.go: a TCP or UDP
	// frame's is its endpoints, key).
	li := 0
	var lk lazyKey
	if hasKey && !p.Fragment && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) {
		li = laneOfPacked(key, len(sh.lanes))
		lk = lazyKey{keyed: true, key: key}
	} else if fk, ok := flowOf(p); ok {
		li = laneOfKey(fk, len(sh.lanes))
		lk = lazyKey{keyed: true, key: packKey(fk)}
	}
	lk.diverge = diverges(p, false, true, 0) // a reset, read before the engine may rewrite the frame
	lk.src = src
	// Engine calls queued for this frame's flow, or another's.
	var ops []shadowOp
	for _, o := range sh.ops {
		ol := laneOfKey(flowKeyOf(o.a, o.b), len(sh.lanes))
		if ol == li {
			ops = append(ops, o)
			continue
		}
		oj := sh.job(ol)
		oj.opOnly = true
		oj.ops = append(oj.ops, o)
		sh.add(r, oj, ol)
	}
	sh.ops = sh.ops[:0]
	j := sh.job(li)
	j.ops = append(j.ops, ops...)
	j.in, j.now = in, ref.Time
	// Copied into the job's own buffer (jobOf: the lane reads its jobs'
	// buffers in the order it reads the jobs).
	j.frame = append(j.frame[:0], frame...)
	j.fc = frameCtx{cur: ref}
	if synthetic {
		j.fc.picked, j.fc.pickApp = true, gateway.EventNet(&r.pkt).App
	}
	j.synthetic = synthetic
	j.orig, j.origPayload, j.hasL4 = len(frame), len(p.Payload), p.HasL4
	j.hasKey, j.key, j.lk = hasKey, key, lk
	sh.add(r, j, li)
}

// job returns a clean job.
func (sh *shards) job(li int) *shardJob {
	q := &sh.jobs[li]
	if q.head == len(q.jobs) {
		q.refill(li)
	}
	j := q.jobs[q.head]
	q.jobs[q.head] = nil
	q.head++
	j.opOnly = false
	j.frame = j.frame[:0]
	j.allowedE, j.allowedS = 0, 0
	return j
}

// jobQueue is a lane's free jobs, first in first out. A lane's jobs are
// taken in capture order and settled, then freed, in capture order: so
// they are reused in the order they were made, and each lane's jobs (and
// their frame buffers) are made in slabs. The reading goroutine writes
// and the lane reads them in address order, which the processors'
// prefetchers follow, rather than at scattered addresses, each a cache
// miss on the other core.
type jobQueue struct {
	jobs []*shardJob
	head int
}

// Jobs are made jobSlab at a time, each with a jobFrame-byte frame
// buffer (a larger frame gets its own).
const (
	jobSlab  = 128
	jobFrame = 256
)

// refill makes a slab of jobs for lane li; the queue is empty.
func (q *jobQueue) refill(li int) {
	q.jobs, q.head = q.jobs[:0], 0
	slab := make([]shardJob, jobSlab)
	bufs := make([]byte, jobSlab*jobFrame)
	for i := range slab {
		j := &slab[i]
		j.lane = li
		j.frame = bufs[i*jobFrame : i*jobFrame : (i+1)*jobFrame]
		q.jobs = append(q.jobs, j)
	}
}

// put frees a settled job.
func (q *jobQueue) put(j *shardJob) {
	if q.head > 1024 && 2*q.head > len(q.jobs) {
		n := copy(q.jobs, q.jobs[q.head:])
		clear(q.jobs[n:])
		q.jobs, q.head = q.jobs[:n], 0
	}
	q.jobs = append(q.jobs, j)
}

// add appends j to the round being filled; a full round goes to the
// lanes, and the rounds they have finished are settled.
func (sh *shards) add(r *runner, j *shardJob, li int) {
	if sh.fill == nil {
		if n := len(sh.free); n > 0 {
			sh.fill, sh.free = sh.free[n-1], sh.free[:n-1]
		} else {
			sh.fill = &round{per: make([][]*shardJob, len(sh.lanes)), done: make(chan struct{}, 1)}
		}
	}
	rd := sh.fill
	rd.jobs = append(rd.jobs, j)
	rd.per[li] = append(rd.per[li], j)
	if len(rd.jobs) >= shardRound {
		sh.flush()
		r.settleRounds(false)
	}
}

// flush hands the round being filled to the lanes.
func (sh *shards) flush() {
	rd := sh.fill
	if rd == nil || len(rd.jobs) == 0 {
		return
	}
	sh.fill = nil
	n := int32(0)
	for _, p := range rd.per {
		if len(p) > 0 {
			n++
		}
	}
	rd.left.Store(n)
	for i, p := range rd.per {
		if len(p) > 0 {
			sh.lanes[i].work <- rd
		}
	}
	sh.inflight = append(sh.inflight, rd)
}

// settleRounds settles the rounds the lanes have finished, in order: all
// of them with wait (the round being filled too), and at least the oldest
// when shardLag rounds are out.
func (r *runner) settleRounds(wait bool) {
	sh := r.sh
	if wait {
		sh.flush()
	}
	for len(sh.inflight) > 0 {
		rd := sh.inflight[0]
		if wait || len(sh.inflight) >= shardLag {
			<-rd.done
		} else {
			select {
			case <-rd.done:
			default:
				return
			}
		}
		copy(sh.inflight, sh.inflight[1:])
		sh.inflight = sh.inflight[:len(sh.inflight)-1]
		for _, j := range rd.jobs {
			r.settleJob(j)
			sh.jobs[j.lane].put(j)
		}
		clear(rd.jobs)
		rd.jobs = rd.jobs[:0]
		for i := range rd.per {
			clear(rd.per[i])
			rd.per[i] = rd.per[i][:0]
		}
		sh.free = append(sh.free, rd)
	}
}

// settleJob reports a judged frame, as onVerdict and feed do for the
// single engine.
func (r *runner) settleJob(j *shardJob) {
	if j.plain {
		return // the lane's tally has it
	}
	if r.allowed != nil {
		for _, f := range j.sentFrames {
			_ = r.allowed.WritePacket(j.now, f)
		}
		j.sentFrames = j.sentFrames[:0]
	}
	for i := range j.notes {
		r.account(&j.notes[i])
	}
	clear(j.notes)
	j.notes = j.notes[:0]
	var origCopy []byte
	if r.denied != nil && !j.synthetic {
		origCopy = j.frame
	}
	r.accountFrame(&frameOut{synthetic: j.synthetic, sent: j.sent, sentLen: j.sentLen, sentPayload: j.sentPayload,
		injected: j.injected, orig: j.orig, origPayload: j.origPayload, hasL4: j.hasL4, conduit: j.conduit, time: j.now, origCopy: origCopy})
	if r.wi != nil {
		j.frameEvs, r.frameEvs = r.frameEvs, j.frameEvs[:0]
		r.settle(&j.shadowJob)
	}
}

// echoOf returns the identifier of an ICMP echo request or reply (as the
// engine's echoOf).
func echoOf(p *packet.Packet) (id, seq uint16, req, reply bool) {
	if len(p.Payload) < 4 {
		return 0, 0, false, false
	}
	switch {
	case p.Proto == packet.ProtoICMP && p.ICMPType == 8, p.Proto == packet.ProtoICMPv6 && p.ICMPType == 128:
		req = true
	case p.Proto == packet.ProtoICMP && p.ICMPType == 0, p.Proto == packet.ProtoICMPv6 && p.ICMPType == 129:
		reply = true
	default:
		return 0, 0, false, false
	}
	return binary.BigEndian.Uint16(p.Payload), binary.BigEndian.Uint16(p.Payload[2:]), req, reply
}

// quotedFlow is the flow key of the packet an ICMP error quotes (after
// the 4 unused bytes of p.Payload): TCP and UDP by endpoints, an echo
// request by addresses and identifier.
func quotedFlow(p *packet.Packet) (flowKey, bool) {
	b := p.Payload
	if len(b) < 4 {
		return flowKey{}, false
	}
	b = b[4:]
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return flowKey{}, false
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		proto, l4 = b[9], b[ihl:]
	case len(b) >= 40 && b[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = b[6], b[40:]
	default:
		return flowKey{}, false
	}
	if len(l4) < 4 {
		return flowKey{}, false
	}
	switch proto {
	case 6, 17:
		sp, dp := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		return flowKeyOf(netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)), true
	case 1, 58:
		if len(l4) < 8 {
			return flowKey{}, false
		}
		id := binary.BigEndian.Uint16(l4[4:])
		return flowKeyOf(netip.AddrPortFrom(src, id), netip.AddrPortFrom(dst, id)), true
	}
	return flowKey{}, false
}

// laneOfKey hashes a flow key to one of n lanes (a multiply-xorshift
// mix of the addresses and ports: fixed, so runs are reproducible).
func laneOfKey(k flowKey, n int) int {
	if n == 1 {
		return 0
	}
	return laneOfPacked(packKey(k), n)
}

// laneOfPacked is laneOfKey with the key packed.
func laneOfPacked(k packedKey, n int) int {
	if n == 1 {
		return 0
	}
	a, b := &k.a, &k.b
	h := binary.LittleEndian.Uint64(a[:8]) ^ binary.LittleEndian.Uint64(a[8:])*0x9e3779b97f4a7c15
	h = (h^uint64(k.pa)<<48)*0xbf58476d1ce4e5b9 ^ binary.LittleEndian.Uint64(b[:8])
	h = (h^binary.LittleEndian.Uint64(b[8:]))*0x94d049bb133111eb ^ uint64(k.pb)
	h ^= h >> 31
	h *= 0x9e3779b97f4a7c15
	h ^= h >> 29
	return int(h % uint64(n))
}

// laneCounters sums the lanes' engine counters the report reads. Should
// a lane have met a limit of all flows together, which shardable's
// pre-scan bound says it cannot, one engine might have met it at another
// frame: the log says so.
func laneCounters(lanes []*lane, log *slog.Logger) gateway.Counters {
	var c gateway.Counters
	for _, l := range lanes {
		lc := l.eng.Counters()
		c.CaptureSkips += lc.CaptureSkips
		for i, v := range lc.Drops {
			c.Drops[i] += v
		}
	}
	if n := c.Drops[gateway.DropMemoryCap] + c.Drops[gateway.DropTableFull] + c.Drops[gateway.DropHalfOpen]; n > 0 && log != nil {
		log.Warn("replay: an engine of the sharded replay reached a limit of all flows together (memory cap, table, half-open); one engine (Options.Workers 1) may judge those frames differently",
			"frames", n)
	}
	return c
}
