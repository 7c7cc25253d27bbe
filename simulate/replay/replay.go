package replay

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sort"
	"time"
	"unsafe"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// Options configure Run. Policy is required.
type Options struct {
	// Policy gives the zone mapping (frame sides) and the rule names; it
	// is compiled unless Ruleset is set.
	Policy  *rules.Policy
	Ruleset *rules.Ruleset
	// Sink receives the engine's events (e.g. the syslog exporter); nil
	// discards.
	Sink   events.Sink
	Logger *slog.Logger
	// OnEvent is called for every deny, alert and normaliser drop, in
	// frame order. The Event is owned by the callee.
	OnEvent func(*Event)
	// OnDecision is called with every engine decision, allows included
	// (rules/learn observes PDUs through it). d is valid only during the call.
	OnDecision func(f FrameRef, p *packet.Packet, d *gateway.Decision)
	// Sides, when set, replaces Policy.Zones for the frame sides (learn
	// replays with a bootstrap policy but the user's zones).
	Sides []rules.Zone
	// Allowed and Denied, when set, receive pcap files (Ethernet link
	// type) of the frames that crossed and of those that did not (or were
	// truncated).
	Allowed, Denied io.Writer
	// Progress is called every 4096 frames and at the end with the frames
	// done and the total (0 when unknown).
	Progress func(done, total int)
	// StrictMidstream feeds mid-stream connections as they are instead of
	// picking them up with a synthesised handshake (see the package doc).
	StrictMidstream bool
	// MaxTimeline bounds Report.Timeline (default DefaultMaxTimeline);
	// Report.TimelineTotal counts them all and report.html says so.
	MaxTimeline int
	// MaxFlows bounds the engine's flow table (default: the gateway's,
	// gateway.Config.MaxFlows). Tests of small captures set it low: the
	// table is allocated whole.
	MaxFlows int
	// MemoryCap bounds each engine's inspection memory (default: the
	// gateway's, gateway.Config.MemoryCap, 64 MiB); a flow that would
	// exceed it is refused (memory_cap), as the gateway with that cap
	// refuses it.
	MemoryCap int64
	// Workers is the number of engines the flows are sharded over, each on
	// its own goroutine (shard.go); 0: GOMAXPROCS. The output is the same
	// whatever the number. One engine judges every frame when OnDecision
	// or Sink is set (they see the decisions as they are made), with
	// StrictMidstream, or when the captures hold too many flows for the
	// engines to judge each alone (see shardable).
	Workers int
	// WhatIf runs the what-if evaluation (whatif.go): a second engine
	// judges the same frames with every conduit in monitor mode, so that
	// PDUs an enforcing gateway never sees, because it reset or blocked
	// their connection at an earlier deny, are judged too. OnEvent then
	// also receives those refusals (Event.AfterReset), and Report.WhatIf
	// counts what the policy refuses apart from what the resets cut.
	// Without it, OnEvent receives exactly the events of the gateway on
	// the wire.
	WhatIf bool
}

// FrameRef names a frame of the input.
type FrameRef struct {
	File  string // base name of the capture
	Index int    // 1-based frame number in that file; 0 for synthesised frames
	Time  time.Time
}

// Event is one verdict worth reporting: a deny, an alert (monitor mode)
// or a frame the engine's TCP normaliser refused.
type Event struct {
	File    string         `json:"file,omitempty"`
	Frame   int            `json:"frame"`
	Time    time.Time      `json:"time"`
	Verdict string         `json:"verdict"` // deny | alert
	Action  string         `json:"action"`  // what happened to the frame: forward, drop, inject
	Mode    string         `json:"mode"`    // enforce | monitor
	Proto   string         `json:"proto"`
	Conduit string         `json:"conduit,omitempty"`
	Rule    string         `json:"rule,omitempty"`
	Reason  string         `json:"reason"`
	Src     netip.AddrPort `json:"src"`
	Dst     netip.AddrPort `json:"dst"`
	Fields  map[string]any `json:"fields,omitempty"`
	// AfterReset (Options.WhatIf): a PDU or flow the policy refuses that
	// the enforcing gateway never judged, because an earlier deny had
	// reset or blocked its connection (or the connection was never
	// admitted); the reason is the policy's. Action is what the enforcing
	// gateway did with the frame; DenyAction is empty (none was taken).
	AfterReset bool `json:"after_reset,omitempty"`
	// Refused (Options.WhatIf): the policy refuses this PDU or flow
	// (every AfterReset event, and the denies and alerts of the enforcing
	// gateway that the what-if evaluation makes too). A deny that is not
	// Refused follows from enforcement alone (a response to a request the
	// gateway dropped) or is a normaliser drop.
	Refused bool `json:"-"`
	// DenyAction is the policy's deny action for a deny verdict (drop,
	// reset, reply; reset for an evasion), "drop" for a normaliser drop:
	// the action of the event record, as the live gateway reports it.
	DenyAction string `json:"-"`
	// Net is the packet context of the frame (transport, MACs).
	Net events.Net `json:"-"`
	// Count and Last (report timeline only; 0 in the events given to
	// Options.OnEvent): the frames of one connection that the gateway
	// dropped because it had already closed it (reason "closed": after
	// its reset) are one timeline entry, the first of them, standing for
	// Count frames up to Last (Report.event).
	Count int      `json:"-"`
	Last  FrameRef `json:"-"`
}

// App is the industrial protocol recognised, not inspected, on the plain
// tcp/udp flow of the event (S7comm, EtherNet/IP, IEC 104: the record's
// app_proto, protocols.Recognise), "" otherwise.
func (e *Event) App() string {
	if e.Proto != "tcp" && e.Proto != "udp" {
		return ""
	}
	return e.Net.App
}

// ProtoLabel is the event's protocol for people: Proto, with the
// recognised protocol of a plain flow after it ("tcp (s7comm)").
func (e *Event) ProtoLabel() string { return protoLabel(e.Proto, e.App()) }

// ProtoLabel is the flow's protocol for people, as Event.ProtoLabel.
func (f *FlowCount) ProtoLabel() string { return protoLabel(f.Proto, f.App) }

func protoLabel(proto, app string) string {
	if app == "" {
		return proto
	}
	return proto + " (" + app + ")"
}

// DefaultMaxTimeline is the default Options.MaxTimeline: report.json
// keeps every event up to it (about 1 KiB of memory each).
const DefaultMaxTimeline = 100000

// ErrNoPolicy is returned by Run without Options.Policy.
var ErrNoPolicy = errors.New("replay: Options.Policy is required")

// Run replays the captures at paths, merged in time order, through a new
// gateway.Engine built from the policy, and returns the report.
func Run(opts Options, paths ...string) (*Report, error) {
	if opts.Policy == nil {
		return nil, ErrNoPolicy
	}
	if len(paths) == 0 {
		return nil, errors.New("replay: no capture given")
	}
	rs := opts.Ruleset
	if rs == nil {
		var err error
		if rs, err = rules.Compile(opts.Policy); err != nil {
			return nil, err
		}
	}
	if opts.MaxTimeline <= 0 {
		opts.MaxTimeline = DefaultMaxTimeline
	}
	sp := opts.Policy
	if opts.Sides != nil {
		sp = &rules.Policy{Zones: opts.Sides}
	}
	r := &runner{opts: opts, rs: rs, sides: newSides(sp), flowConduit: conduitMap{}}
	r.rep = newReport(opts.Policy, rs, paths)
	for _, p := range paths {
		r.names = append(r.names, filepath.Base(p))
	}
	if opts.WhatIf {
		r.wi = newWhatIf()
		r.sp = newShadowPipe(opts.OnDecision == nil && shadowPipelined)
	}
	// The engines' flow tables take a while to build (two of 16k flows:
	// ~7% of a replay): they are built on another goroutine while this one
	// pre-scans the captures.
	type built struct {
		eng, shadow *gateway.Engine
		lanes       []*lane
		err         error
	}
	workers := r.shardWorkers()
	engines := make(chan built, 1)
	go func() {
		var b built
		if workers > 1 {
			b.lanes, b.err = r.newLanes(rs, workers)
		} else {
			b.eng, b.shadow, b.err = r.newEngines(rs)
		}
		engines <- b
	}()
	var err error
	if !opts.StrictMidstream {
		if r.mid, err = scanMidstream(paths, serverPorts(opts.Policy)); err != nil {
			return nil, err
		}
		r.rp = scanRepairs(r.mid)
		r.rep.EngineDropHoles = r.rp.engineHoles
		r.marks = newFrameMarks(r.mid, r.rp)
		r.pending = map[frameRef]*srcFrame{}
	}
	if opts.Progress != nil {
		for _, p := range paths {
			n, _ := countFrames(p)
			r.total += n
		}
	}
	if opts.Allowed != nil {
		if r.allowed, err = newPcap(opts.Allowed); err != nil {
			return nil, err
		}
	}
	if opts.Denied != nil {
		if r.denied, err = newPcap(opts.Denied); err != nil {
			return nil, err
		}
	}
	b := <-engines
	if b.err != nil {
		return nil, b.err
	}
	var memCap int64
	if b.lanes != nil {
		memCap = b.lanes[0].eng.Counters().MemoryCap
	} else {
		memCap = b.eng.Counters().MemoryCap
	}
	alone := shardable(r.mid, opts.MaxFlows, memCap, uaPortsOf(opts.Policy))
	if b.lanes != nil && !alone {
		// Flows might meet in the table, the half-open limit or the
		// memory cap: one engine judges them.
		b.lanes = nil
		if b.eng, b.shadow, err = r.newEngines(rs); err != nil {
			return nil, err
		}
	}
	// The lazy shadow (lazy.go): where flows are judged each alone, in
	// time order, and nothing needs every decision.
	lazy := shadowLazy && alone && lazyClock(r.mid) && opts.OnDecision == nil && opts.Sink == nil && !opts.StrictMidstream
	for _, l := range b.lanes {
		switch {
		case l.mkShadow == nil:
		case lazy:
			l.lazy = newLazyShadow(l.mkShadow, func(t time.Time) { l.now = t }, lazyBudget/len(b.lanes), paths)
		default:
			l.shadow = l.mkShadow()
		}
	}
	// (Deferred before the lanes and the shadow pipe stop: run after.)
	defer func() { _ = r.closeLazy() }()
	if b.lanes != nil {
		r.sp = nil
		r.detects = gateway.NewDetectTable()
		r.sh = newShards(b.lanes)
		defer r.sh.stop()
	}
	r.eng, r.shadow = b.eng, b.shadow
	if r.shadow != nil {
		if lazy {
			shadow := r.shadow
			r.lazy = newLazyShadow(func() *gateway.Engine { return shadow }, func(t time.Time) { r.sp.now = t }, lazyBudget, paths)
		}
		go r.runShadow()
		defer r.sp.stop()
	}
	if err := readCaptures(paths, r.rep.addDamage, r.frame); err != nil {
		return nil, err
	}
	// scanRepairs never leaves a frame pending; should one be, it is fed
	// (in capture order) rather than lost.
	left := make([]frameRef, 0, len(r.pending))
	for ref := range r.pending {
		left = append(left, ref)
	}
	sort.Slice(left, func(i, j int) bool {
		return left[i].file < left[j].file || left[i].file == left[j].file && left[i].index < left[j].index
	})
	for _, ref := range left {
		r.process(r.pending[ref], ref)
	}
	if r.sp != nil {
		r.settleReady(true)
	}
	if r.sh != nil {
		r.settleRounds(true)
	}
	// The lazy shadows are done: what they could not read again fails
	// the what-if evaluation.
	if err := r.closeLazy(); err != nil {
		return nil, err
	}
	if opts.Progress != nil {
		opts.Progress(r.done, r.total)
	}
	if r.sh != nil {
		for _, l := range r.sh.lanes {
			r.addTally(&l.tally)
		}
		r.rep.finish(laneCounters(r.sh.lanes, opts.Logger))
	} else {
		r.rep.finish(r.eng.Counters())
	}
	if r.wi != nil {
		r.rep.WhatIf = r.wi.finish()
	}
	if lazyObserve != nil && lazy {
		var st lazyStats
		if r.lazy != nil {
			st = r.lazy.stats
		}
		if r.sh != nil {
			for _, l := range r.sh.lanes {
				if l.lazy != nil {
					st.add(l.lazy.stats)
				}
			}
		}
		lazyObserve(st)
	}
	return r.rep, nil
}

// closeLazy closes the lazy shadows (their captures) and returns the
// first error any had. Their goroutines must be done.
func (r *runner) closeLazy() error {
	var err error
	if r.lazy != nil {
		err = r.lazy.close()
	}
	if r.sh != nil {
		for _, l := range r.sh.lanes {
			if l.lazy != nil {
				err = cmp.Or(err, l.lazy.close())
			}
		}
	}
	return err
}

// clockBack is how far back in time a frame may be stamped, against the
// last frame of its connection, and still belong to it (frames of two
// interfaces of one capture may be written slightly out of order); past
// it the frame is another capture's (files merged out of time order) and
// starts a new flow (gateway.Config.ClockBack), as the capture
// reassembler starts a new stream (simulate/capture).
const clockBack = 2 * time.Second

// newEngines builds the enforcing engine and, with Options.WhatIf, the
// shadow (the same rules, every conduit in monitor mode). Their hooks run
// only once frames are fed.
func (r *runner) newEngines(rs *rules.Ruleset) (eng, shadow *gateway.Engine, err error) {
	eng, err = gateway.NewEngine(gateway.Config{
		Rules:     func() *rules.Ruleset { return rs },
		MaxFlows:  r.opts.MaxFlows,
		MemoryCap: r.opts.MemoryCap,
		MaxHold:   replayMaxHold,
		Sink:      r.opts.Sink,
		Logger:    r.opts.Logger,
		Now:       func() time.Time { return r.now },
		ClockBack: clockBack,
		OnVerdict: r.onVerdict,
	})
	if err != nil || !r.opts.WhatIf {
		return eng, nil, err
	}
	mon := rs.WithMode(rules.ModeMonitor)
	shadow, err = gateway.NewEngine(gateway.Config{
		Rules:     func() *rules.Ruleset { return mon },
		MaxFlows:  r.opts.MaxFlows,
		MemoryCap: r.opts.MemoryCap,
		MaxHold:   replayMaxHold,
		Now:       func() time.Time { return r.sp.now },
		ClockBack: clockBack,
		OnVerdict: r.onShadow,
	})
	return eng, shadow, err
}

func countFrames(path string) (int, error) {
	n := 0
	err := readMerged([]string{path}, func(*srcFrame) error { n++; return nil })
	return n, err
}

func newPcap(w io.Writer) (*capture.PcapWriter, error) {
	return capture.NewPcapWriter(w)
}

// runner is the state of one Run.
type runner struct {
	opts    Options
	rs      *rules.Ruleset
	eng     *gateway.Engine
	sides   *sides
	mid     *midstream
	rp      *repairs
	pending map[frameRef]*srcFrame // deferred frames (gaps.go)
	marks   frameMarks             // the frames mid and rp name
	names   []string
	rep     *Report
	allowed *capture.PcapWriter
	denied  *capture.PcapWriter
	now     time.Time
	done    int
	total   int

	buf    []byte
	pkt    packet.Packet
	cur    FrameRef
	curPkt *packet.Packet
	base   *byte // first byte of the frame handed to the engine
	// Outcome of the current frame, filled by Send and the hook.
	sent      bool
	sentLen   int
	injected  int
	conduit   string
	denyPDU   bool
	decisions int

	flowConduit conduitMap

	sentPkt     packet.Packet // scratch for Send
	sentPayload int           // payload length of the frame itself as sent; -1 unknown

	fc frameCtx // the enforcing engine's current frame

	// What-if (Options.WhatIf; nil shadow without it). The shadow engine
	// runs on its own goroutine (runShadow), a few frames behind the
	// enforcing one; each frame's events are settled in frame order.
	shadow   *gateway.Engine
	frameEvs []pendingEvent // the enforcing engine's events of the current frame
	allowedE int            // PDUs of the current frame the enforcing engine allowed
	wi       *whatIf
	sp       *shadowPipe
	lazy     *lazyShadow // the shadow's laziness (lazy.go), nil when it judges every frame

	// Options.Workers: the lanes (shard.go), nil with one engine; the
	// rate detectors' table of their engines.
	sh      *shards
	detects *gateway.DetectTable
}

// Send implements gateway.Tx for the in-memory port pair.
func (r *runner) Send(out gateway.PortID, frame []byte) {
	if len(frame) > 0 && r.base != nil && unsafe.SliceData(frame) == r.base {
		r.sent, r.sentLen = true, len(frame)
		r.sentPayload = -1
		if r.sentPkt.Decode(frame, packet.LinkEthernet) == nil && r.sentPkt.HasL4 {
			r.sentPayload = len(r.sentPkt.Payload)
		}
		if r.allowed != nil && r.cur.Index > 0 {
			_ = r.allowed.WritePacket(r.cur.Time, frame)
		}
		return
	}
	r.injected++
}

func (r *runner) frame(sf *srcFrame) error {
	r.done++
	if r.opts.Progress != nil && r.done%4096 == 0 {
		r.opts.Progress(r.done, r.total)
	}
	ref := frameRef{int32(sf.file), int32(sf.index)}
	r.rep.Frames++
	if r.rep.Start.IsZero() || sf.time.Before(r.rep.Start) {
		r.rep.Start = sf.time
	}
	if sf.time.After(r.rep.End) {
		r.rep.End = sf.time
	}
	m := r.marks.of(ref)
	if m&markSkip != 0 {
		r.rep.SkippedMidstream++
		return nil
	}
	if m&markDeferred != 0 {
		// Fed after the frame it was captured before (gaps.go).
		c := *sf
		c.data = append([]byte(nil), sf.data...)
		r.pending[ref] = &c
		return nil
	}
	r.process(sf, ref)
	if m&markAfter != 0 {
		for _, a := range r.rp.after[ref] {
			if c := r.pending[a]; c != nil {
				delete(r.pending, a)
				r.rep.Reordered++
				r.process(c, a)
			}
		}
	}
	return nil
}

// process feeds one capture frame (with the synthesised handshake of a
// pickup, and after telling the engine of capture holes before it).
func (r *runner) process(sf *srcFrame, ref frameRef) {
	r.buf = toEthernet(r.buf[:0], sf.link, sf.data, &r.pkt)
	if r.buf == nil {
		r.rep.Undecodable++
		r.buf = make([]byte, 0, 2048)
		return
	}
	if r.pkt.Decode(r.buf, packet.LinkEthernet) != nil {
		r.rep.Undecodable++
	}
	in := r.sides.ingress(&r.pkt)
	m := r.marks.of(ref)
	if m&markPickup != 0 {
		if pk := r.mid.at[ref]; pk != nil {
			r.rep.PickedUp++
			fromClient := r.pkt.SrcAddrPort() == pk.client
			l3 := r.pkt.L3Off
			hs := handshake(pk, r.buf[:l3], fromClient)
			var hp packet.Packet
			for i, f := range hs {
				if f == nil || hp.Decode(f, packet.LinkEthernet) != nil {
					continue
				}
				r.feed(f, r.sides.ingress(&hp), FrameRef{File: r.names[sf.file], Time: sf.time.Add(time.Duration(i-3) * time.Microsecond)}, &hp, true, frameSrc{})
			}
			// Requests sent before the capture began may be answered in
			// it: the engine must not take those answers as unsolicited.
			if r.sh != nil {
				r.sh.op(shadowOp{pickedUp: true, a: pk.client, b: pk.server})
			} else {
				r.eng.MarkPickedUp(pk.client, pk.server)
				if r.sp != nil {
					r.sp.ops = append(r.sp.ops, shadowOp{pickedUp: true, a: pk.client, b: pk.server})
				}
			}
		}
	}
	if m&markHoles != 0 {
		for _, h := range r.rp.holes[ref] {
			if r.sh != nil {
				r.sh.op(shadowOp{a: h.src, b: h.dst, to: h.to}) // counted when settled
				continue
			}
			if r.eng.CaptureGap(h.src, h.dst, h.to) {
				r.rep.CaptureHoles++
			}
			if r.sp != nil {
				r.sp.ops = append(r.sp.ops, shadowOp{a: h.src, b: h.dst, to: h.to})
			}
		}
	}
	src := frameSrc{ok: true, link: sf.link, file: int32(sf.file), n: int32(len(sf.data)), off: sf.off}
	r.feed(r.buf, in, FrameRef{File: r.names[sf.file], Index: sf.index, Time: sf.time}, &r.pkt, false, src)
}

// feed runs one Ethernet frame through the engine and accounts for it.
func (r *runner) feed(frame []byte, in gateway.PortID, ref FrameRef, p *packet.Packet, synthetic bool, src frameSrc) {
	if r.sh != nil {
		r.dispatch(frame, in, ref, p, synthetic, src)
		return
	}
	r.cur = ref
	r.curPkt = p
	r.fc = frameCtx{cur: ref, pkt: p}
	if synthetic {
		r.fc.picked, r.fc.pickApp = true, gateway.EventNet(&r.pkt).App
	}
	r.now = ref.Time
	r.sent, r.sentLen, r.sentPayload, r.injected, r.conduit, r.denyPDU, r.decisions = false, 0, -1, 0, "", false, 0
	orig, origPayload := len(frame), len(p.Payload)
	var origCopy []byte
	if r.denied != nil && !synthetic {
		origCopy = append([]byte(nil), frame...)
	}
	var sj *shadowJob
	if r.sp != nil {
		// Handle may rewrite the frame in place (truncation): the
		// shadow gets the frame as captured.
		sj = r.sp.job(in, frame, &r.fc, ref.Time)
		sj.lk = lazyKey{}
		if r.lazy != nil {
			sj.lk = lazyKeyOf(p)
			sj.lk.diverge = diverges(p, false, true, 0) // a reset, read before the engine may rewrite the frame
			sj.lk.src = src
		}
	}
	r.base = unsafe.SliceData(frame)
	r.eng.Handle(in, frame, r)
	r.base = nil
	if sj != nil {
		if sj.lk.keyed && !sj.lk.diverge {
			exact := r.sent && r.sentLen == orig && bytes.Equal(frame[:orig], sj.frame)
			sj.lk.diverge = diverges(p, reportedAny(r.frameEvs), exact, r.injected)
		}
		sj.frameEvs, r.frameEvs = r.frameEvs, sj.frameEvs[:0]
		sj.allowedE, r.allowedE = r.allowedE, 0
		sj.sent, sj.sentLen, sj.injected, sj.orig = r.sent, r.sentLen, r.injected, orig
		r.sp.send(sj)
		r.settleReady(false)
	}
	if !synthetic && p.IPVersion != 0 && p.HasL4 {
		key, _ := packedKeyOf(p)
		r.conduit = packedConduitOf(r.flowConduit, key, conduitRef{name: r.conduit, idx: -1}).name
	}
	r.accountFrame(&frameOut{synthetic: synthetic, sent: r.sent, sentLen: r.sentLen, sentPayload: r.sentPayload,
		injected: r.injected, orig: orig, origPayload: origPayload, hasL4: p.HasL4, conduit: r.conduit, time: ref.Time, origCopy: origCopy})
}

// packedConduitOf records conduit (the frame's, name "" if none was
// named) as that of the flow key, or returns the flow's when the frame
// named none.
func packedConduitOf(m conduitMap, pk packedKey, conduit conduitRef) conduitRef {
	c, ok := m[pk]
	switch {
	case conduit.name == "":
		return c
	case !ok || c.name != conduit.name:
		m[pk] = conduit
	}
	return conduit
}

// conduitMap holds the conduit of each flow the engine named one for.
type conduitMap map[packedKey]conduitRef

// conduitRef is a conduit by name and, where the caller knows it, by
// index in the ruleset (-1 unknown).
type conduitRef struct {
	name string
	idx  int
}

// packedKey is a flowKey without pointers (netip.Addr holds its zone's):
// cheaper to hash, and nothing for the collector to scan.
type packedKey struct {
	a, b   [16]byte
	pa, pb uint16
	v4     bool // k.a is IPv4 (a mapped IPv6 address is another flow)
}

func packKey(k flowKey) packedKey {
	return packedKey{a: k.a.Addr().As16(), b: k.b.Addr().As16(), pa: k.a.Port(), pb: k.b.Port(), v4: k.a.Addr().Is4()}
}

// packedKeyOf is packKey(keyOf(p)) without building and comparing
// netip.AddrPorts (a tenth of the pre-scan): a decoded packet's addresses
// are of one family and without zone, so netip's order is that of their
// 16 bytes, then of the ports. Addresses of two families (not from
// Decode) take keyOf.
func packedKeyOf(p *packet.Packet) (k packedKey, fromA bool) {
	if p.Src.Is4() != p.Dst.Is4() {
		fk, fromA := keyOf(p)
		return packKey(fk), fromA
	}
	s, d := p.Src.As16(), p.Dst.As16()
	if c := bytes.Compare(s[:], d[:]); c < 0 || c == 0 && p.SrcPort <= p.DstPort {
		return packedKey{a: s, b: d, pa: p.SrcPort, pb: p.DstPort, v4: p.Src.Is4()}, true
	}
	return packedKey{a: d, b: s, pa: p.DstPort, pb: p.SrcPort, v4: p.Src.Is4()}, false
}

// frameOut is what an engine did with one fed frame.
type frameOut struct {
	synthetic   bool
	sent        bool
	sentLen     int
	sentPayload int // payload length of the frame as sent; -1 unknown
	injected    int
	orig        int // length of the frame fed
	origPayload int
	hasL4       bool
	conduit     string // the frame's or its flow's conduit
	time        time.Time
	origCopy    []byte // the frame as captured, for Options.Denied
}

// frameTruncated reports whether the engine forwarded a fed frame (orig
// bytes, origPayload of payload) with less payload: sentLen bytes and
// sentPayload of payload (-1 unknown), cut to an allowed prefix or sent
// as a pure ACK while a PDU is held; Ethernet padding may keep its
// length. accountFrame and a lane's settleHere (shard.go) both judge by it.
func frameTruncated(sent bool, sentLen, orig, sentPayload, origPayload int, hasL4 bool) bool {
	return sent && (sentLen < orig || sentPayload >= 0 && hasL4 && sentPayload < origPayload)
}

// accountFrame adds a fed frame's outcome to the report.
func (r *runner) accountFrame(o *frameOut) {
	if o.synthetic {
		r.rep.Synthesised++
		if !o.sent {
			r.rep.SynthesisedDropped++
		}
		return
	}
	r.rep.Injected += o.injected
	truncated := frameTruncated(o.sent, o.sentLen, o.orig, o.sentPayload, o.origPayload, o.hasL4)
	switch {
	case truncated:
		r.rep.Truncated++
	case o.sent:
		r.rep.Forwarded++
	default:
		r.rep.Dropped++
	}
	cs := r.rep.conduit(o.conduit)
	if o.sent {
		cs.PacketsForwarded++
	} else {
		cs.PacketsDropped++
	}
	if r.denied != nil && (!o.sent || truncated) {
		_ = r.denied.WritePacket(o.time, o.origCopy)
	}
}

// onVerdict is the engine hook: it copies what the report needs.
func (r *runner) onVerdict(d *gateway.Decision) {
	r.decisions++
	if r.opts.OnDecision != nil {
		r.opts.OnDecision(r.cur, r.curPkt, d)
	}
	var n note
	r.noteOf(&n, d, &r.fc, r.flowConduit)
	if n.setConduit {
		r.conduit = n.name
	}
	if n.allowedPDU {
		r.allowedE++
	}
	if n.deny {
		r.denyPDU = true
	}
	r.account(&n)
}

// note is what the report needs of one engine decision: noteOf takes it
// on the engine's goroutine (while the Decision is valid), account adds
// it to the report on the reading one, in frame order.
type note struct {
	detect     bool // a rate detection (an alert about a response)
	hasVerdict bool
	isPDU      bool
	setConduit bool // the decision names the frame's conduit
	allowedPDU bool
	deny       bool
	action     rules.Action
	conduit    int
	rule       int
	name       string       // conduit name ("" for none)
	ev         pendingEvent // ev.ev nil: no event
	// A deferred rate-detector match (gateway.Config.DeferDetections):
	// an alert only if the runner's DetectTable says so.
	deferred bool
	det      rules.Detector
	subj     netip.Addr
	th       rules.Threshold
	at       time.Time
}

// noteOf fills n from decision d about the frame fc; flowConduit is the
// conduits of the flows of the engine that made d.
func (r *runner) noteOf(n *note, d *gateway.Decision, fc *frameCtx, flowConduit conduitMap) {
	*n = note{}
	v := &d.Verdict
	if d.Detection != "" {
		// A rate detection (rules.Detector) about a response whose own
		// verdict was reported before: an alert event, not a PDU count.
		n.detect = true
		n.ev = pendingEvent{ev: r.detectionEvent(d, fc), kind: evDetection}
		if d.DetectionDeferred {
			n.deferred, n.det, n.subj, n.at = true, d.Detector, d.DetectionSubject, fc.cur.Time
			n.th = rules.Threshold{Count: d.DetectionCount, Window: d.DetectionWindow}
		}
		return
	}
	if d.HasVerdict && v.Conduit >= 0 {
		n.name, n.setConduit = v.ConduitName, true
	}
	n.hasVerdict, n.isPDU = d.HasVerdict, d.PDU != nil
	n.action, n.conduit, n.rule = v.Action, v.Conduit, v.Rule
	if d.HasVerdict && v.Action == rules.Allow {
		n.allowedPDU = n.isPDU
		return
	}
	if fc.cur.Index == 0 && !d.HasVerdict {
		// A synthesised handshake frame refused by the normaliser: counted
		// in SynthesisedDropped, not an event of the capture.
		return
	}
	ev := r.verdictEvent(d, fc, flowConduit)
	kind := evPolicy
	if !d.HasVerdict {
		kind = evNormaliser
	}
	n.deny = ev.Verdict == "deny"
	n.ev = pendingEvent{ev: ev, kind: kind, flow: d.FlowID, pdu: d.PDU != nil}
}

// account adds a decision's note to the report and queues its event.
func (r *runner) account(n *note) {
	if n.detect {
		if n.deferred && !r.detects.Observe(n.det, n.subj, n.at, n.th) {
			return
		}
		r.rep.Detections++
		r.queue(n.ev)
		return
	}
	cs := r.rep.conduit(n.name)
	if n.hasVerdict {
		if n.action == rules.Allow && n.conduit >= 0 && n.rule >= 0 {
			r.rep.hit(n.conduit, n.rule)
		}
		switch n.action {
		case rules.Allow:
			if n.isPDU {
				cs.PDUsAllowed++
				r.rep.PDUsAllowed++
			} else {
				cs.FlowsAllowed++
			}
		case rules.Deny:
			if n.isPDU {
				cs.PDUsDenied++
				r.rep.PDUsDenied++
			} else {
				cs.FlowsDenied++
			}
		case rules.Alert:
			if n.isPDU {
				cs.PDUsAlerted++
				r.rep.PDUsAlerted++
			} else {
				cs.FlowsAlerted++
			}
		}
		if n.action == rules.Allow {
			return
		}
	}
	if n.ev.ev == nil {
		return
	}
	if n.ev.kind == evNormaliser {
		r.rep.conduit(n.ev.ev.Conduit).NormaliserDrops++
	}
	r.queue(n.ev)
}

// detectionEvent is the alert event of a rate detection.
func (r *runner) detectionEvent(d *gateway.Decision, fc *frameCtx) *Event {
	v := &d.Verdict
	ev := &Event{File: fc.cur.File, Frame: fc.cur.Index, Time: fc.cur.Time, Proto: d.Proto, Net: fc.eventNet(),
		Src: d.Src, Dst: d.Dst, Action: d.Action.String(), Mode: v.Mode.String(), Verdict: "alert",
		Conduit: v.ConduitName, Rule: v.RuleName, Reason: gateway.ReasonDetectPrefix + d.Detection,
		Fields: d.Fields()}
	ev.Fields["detection"] = d.Detection
	ev.Fields["count"] = d.DetectionCount
	ev.Fields["window_s"] = d.DetectionWindow.Seconds()
	ev.Fields["subject"] = d.DetectionSubject.String()
	return ev
}

// eventNet is the packet context of the frame's events. A frame
// of the handshake synthesised for a picked-up connection has no payload:
// the protocol its flow carries (Net.App) is recognised from the captured
// frame that made the pickup, as the live gateway, picking the flow up at
// that frame, would.
func (fc *frameCtx) eventNet() events.Net {
	n := gateway.EventNet(fc.pkt)
	if fc.picked {
		n.App = fc.pickApp
	}
	return n
}

// frameCtx is the frame an engine is judging, as its events need it.
type frameCtx struct {
	cur FrameRef
	pkt *packet.Packet
	// picked: a synthesised handshake frame, whose Net.App is pickApp,
	// that of the captured frame that made the pickup.
	picked  bool
	pickApp string
}

// verdictEvent is the event of a deny or alert decision, or of a frame
// the normaliser refused (no verdict).
func (r *runner) verdictEvent(d *gateway.Decision, fc *frameCtx, flowConduit conduitMap) *Event {
	v := &d.Verdict
	ev := &Event{File: fc.cur.File, Frame: fc.cur.Index, Time: fc.cur.Time, Proto: d.Proto, Net: fc.eventNet(),
		Src: d.Src, Dst: d.Dst, Action: d.Action.String(), Mode: "enforce", DenyAction: "drop"}
	if d.HasVerdict {
		ev.Verdict = v.Action.String()
		ev.DenyAction = ""
		if v.Action == rules.Deny {
			// The action the engine took: an evasion's verdict carries it
			// (reset for an overlap, drop for urgent data), as the live
			// event does.
			ev.DenyAction = v.DenyAction.String()
		}
		ev.Mode = v.Mode.String()
		ev.Conduit, ev.Rule, ev.Reason = v.ConduitName, v.RuleName, v.ReasonString()
		if d.EvasionName != "" {
			// The same name the live gateway puts in its events.
			ev.Reason = "evasion:" + d.EvasionName
		} else if d.Named != "" {
			ev.Reason = d.Named
		}
		if d.PDU != nil {
			ev.Fields = d.Fields()
		}
	} else {
		ev.Verdict = "deny"
		ev.Reason = d.Drop.String()
		if d.Evasion {
			ev.Reason = "evasion"
		}
		if ev.Conduit == "" {
			// Only the enforcing engines' decisions get here (the shadow
			// reports no verdict-less decision), with their flowConduit.
			if c, ok := flowConduit[packKey(flowKeyOf(d.Src, d.Dst))]; ok {
				ev.Conduit = c.name
			}
		}
	}
	return ev
}

// queue reports an event of the enforcing engine: at once, or with
// Options.WhatIf after the shadow has judged the same frame (settle).
func (r *runner) queue(p pendingEvent) {
	if r.wi != nil {
		r.frameEvs = append(r.frameEvs, p)
		return
	}
	r.emit(p.ev)
}

// emit hands one event to the report and to Options.OnEvent.
func (r *runner) emit(ev *Event) {
	r.rep.event(ev, r.opts.MaxTimeline)
	if r.opts.OnEvent != nil {
		r.opts.OnEvent(ev)
	}
}

func flowKeyOf(s, d netip.AddrPort) flowKey {
	if c := s.Addr().Compare(d.Addr()); c < 0 || (c == 0 && s.Port() <= d.Port()) {
		return flowKey{s, d}
	}
	return flowKey{d, s}
}

// ---- report ----

// Report is the outcome of a replay. Its JSON form is report.json.
type Report struct {
	Policy string   `json:"policy"`
	Files  []string `json:"files"`
	// WhatIf (Options.WhatIf) leads: what the policy refuses, per conduit
	// and function, apart from the traffic its resets would cut.
	WhatIf *WhatIf   `json:"what_if,omitempty"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Frames int       `json:"frames"` // frames read from the captures
	// CaptureDamage has one line per damaged capture (truncated, damaged
	// pcapng blocks): it was read up to or around the damage, and the
	// line says where and how many bytes were skipped.
	CaptureDamage []string `json:"capture_damage,omitempty"`
	// Frame outcomes (every frame read is exactly one of these).
	Forwarded        int `json:"forwarded"`
	Truncated        int `json:"truncated"` // forwarded without a denied PDU (pipelining)
	Dropped          int `json:"dropped"`
	Undecodable      int `json:"undecodable"`
	SkippedMidstream int `json:"skipped_midstream"` // before the pickup of a connection the capture joined mid-stream
	// Crafted frames.
	Injected           int `json:"injected"` // RST and native replies sent by the engine
	PickedUp           int `json:"picked_up"`
	Synthesised        int `json:"synthesised"`         // handshake frames made for picked-up connections
	SynthesisedDropped int `json:"synthesised_dropped"` // ... that the engine refused
	// Capture repairs (unless StrictMidstream): holes the capture lost
	// that the engine was told of, and handshake ACKs fed after the
	// SYN-ACK they were captured before.
	CaptureHoles int `json:"capture_holes"`
	// EngineDropHoles counts holes left unrepaired because the engine
	// itself dropped the frames that carried the bytes (IP fragments).
	EngineDropHoles int `json:"engine_drop_holes"`
	Reordered       int `json:"reordered"`
	// CaptureSkipped counts segments after a capture hole that carried
	// the rest of a PDU whose start was lost: forwarded uninspected (the
	// gateway on the wire would have judged the whole PDU).
	CaptureSkipped int `json:"capture_skipped"`

	PDUsAllowed int `json:"pdus_allowed"`
	PDUsDenied  int `json:"pdus_denied"`
	PDUsAlerted int `json:"pdus_alerted"`
	Denies      int `json:"denies"` // deny events (PDU, flow, L2 and normaliser)
	Alerts      int `json:"alerts"`
	// Detections counts the alerts of rate detectors (scans, busy servers,
	// unsolicited storms: rules.Detector), included in Alerts.
	Detections int `json:"detections"`

	Conduits  []*ConduitStats `json:"conduits"`
	Reasons   []Count         `json:"reasons"`   // deny and alert events by reason
	ByRule    []Count         `json:"by_rule"`   // deny and alert events by conduit/rule
	NeverHit  []string        `json:"never_hit"` // "conduit/rule" of rules that allowed nothing
	TopDenied []FlowCount     `json:"top_denied"`
	// Timeline holds the deny and alert events, at most
	// Options.MaxTimeline entries; the frames of a connection the gateway
	// had closed (reason "closed", after its reset) are one entry per
	// connection, with their count (Event.Count: "count" in the record).
	Timeline []Event `json:"timeline"`
	// TimelineTotal counts every deny and alert event; more than the
	// events the timeline's entries stand for only past
	// Options.MaxTimeline.
	TimelineTotal int               `json:"timeline_total"`
	Drops         map[string]uint64 `json:"engine_drops"`
	Zones         []ZoneInfo        `json:"zones"`

	conduitIdx map[string]*ConduitStats
	byIndex    []*ConduitStats
	hits       [][]int
	ruleNames  [][]string
	reasons    map[string]int
	byRule     map[string]int
	flows      map[string]*FlowCount
	timelineN  int
	closedIdx  map[flowKey]int // the timeline entry of a closed connection's frames
}

// ConduitStats counts one conduit's traffic ("" is traffic no conduit joins).
type ConduitStats struct {
	Name             string   `json:"name"`
	From             []string `json:"from,omitempty"`
	To               []string `json:"to,omitempty"`
	Mode             string   `json:"mode,omitempty"`
	PDUsAllowed      int      `json:"pdus_allowed"`
	PDUsDenied       int      `json:"pdus_denied"`
	PDUsAlerted      int      `json:"pdus_alerted"`
	FlowsAllowed     int      `json:"flows_allowed"`
	FlowsDenied      int      `json:"flows_denied"`
	FlowsAlerted     int      `json:"flows_alerted"`
	PacketsForwarded int      `json:"packets_forwarded"`
	PacketsDropped   int      `json:"packets_dropped"`
	NormaliserDrops  int      `json:"normaliser_drops"`
	Rules            []Count  `json:"rules"` // allow hits per rule
}

// Count is a named counter.
type Count struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

// FlowCount is one denied flow: initiator address to server endpoint.
type FlowCount struct {
	Src        string `json:"src"`
	Dst        string `json:"dst"`
	Proto      string `json:"proto"`
	App        string `json:"app_proto,omitempty"` // the uninspected protocol recognised on a plain tcp/udp flow (Event.App)
	N          int    `json:"n"`
	FirstFrame int    `json:"first_frame"`
	File       string `json:"file,omitempty"`
	Reason     string `json:"reason"`
}

// ZoneInfo is a zone of the policy, for the diagram.
type ZoneInfo struct {
	Name     string   `json:"name"`
	Port     string   `json:"port,omitempty"`
	Networks []string `json:"networks,omitempty"`
	Assets   []string `json:"assets,omitempty"`
}

func newReport(pol *rules.Policy, rs *rules.Ruleset, paths []string) *Report {
	rep := &Report{Policy: pol.Name, Files: paths, conduitIdx: map[string]*ConduitStats{},
		reasons: map[string]int{}, byRule: map[string]int{}, flows: map[string]*FlowCount{}}
	for i := 0; i < rs.NumConduits(); i++ {
		names := rs.RuleNames(i)
		rep.ruleNames = append(rep.ruleNames, names)
		rep.hits = append(rep.hits, make([]int, len(names)))
		cs := rep.conduit(rs.ConduitName(i))
		rep.byIndex = append(rep.byIndex, cs)
		if i < len(pol.Conduits) {
			c := pol.Conduits[i]
			cs.From, cs.To, cs.Mode = c.From, c.To, c.Mode
			if cs.Mode == "" {
				cs.Mode = pol.Mode
			}
		}
	}
	azone := map[string][]string{}
	for _, a := range pol.Assets {
		azone[a.Zone] = append(azone[a.Zone], a.Name)
	}
	for _, z := range pol.Zones {
		rep.Zones = append(rep.Zones, ZoneInfo{Name: z.Name, Port: z.Port, Networks: z.Networks, Assets: azone[z.Name]})
	}
	if len(azone[""]) > 0 {
		rep.Zones = append(rep.Zones, ZoneInfo{Name: "(assets without zone)", Assets: azone[""]})
	}
	return rep
}

func (rep *Report) conduit(name string) *ConduitStats {
	cs := rep.conduitIdx[name]
	if cs == nil {
		cs = &ConduitStats{Name: name}
		rep.conduitIdx[name] = cs
		rep.Conduits = append(rep.Conduits, cs)
	}
	return cs
}

func (rep *Report) hit(c, r int) {
	if c < len(rep.hits) && r < len(rep.hits[c]) {
		rep.hits[c][r]++
	}
}

func (rep *Report) event(ev *Event, maxTimeline int) {
	if ev.Verdict == "alert" {
		rep.Alerts++
	} else {
		rep.Denies++
	}
	rep.reasons[ev.Reason]++
	if ev.Conduit != "" || ev.Rule != "" {
		rep.byRule[ev.Conduit+"/"+ev.Rule]++
	}
	k := ev.Src.Addr().String() + ">" + ev.Dst.String() + "/" + ev.Proto
	fc := rep.flows[k]
	if fc == nil {
		fc = &FlowCount{Src: ev.Src.Addr().String(), Dst: ev.Dst.String(), Proto: ev.Proto, App: ev.App(), FirstFrame: ev.Frame, File: ev.File, Reason: ev.Reason}
		rep.flows[k] = fc
	}
	fc.N++
	rep.TimelineTotal++
	rep.addTimeline(ev, maxTimeline)
}

func (rep *Report) finish(c gateway.Counters) {
	rep.CaptureSkipped = int(c.CaptureSkips)
	rep.Drops = map[string]uint64{}
	for k, v := range c.DropsByName() {
		if v != 0 {
			rep.Drops[k] = v
		}
	}
	for ci, hs := range rep.hits {
		cs := rep.byIndex[ci]
		for ri, n := range hs {
			cs.Rules = append(cs.Rules, Count{rep.ruleNames[ci][ri], n})
			if n == 0 {
				rep.NeverHit = append(rep.NeverHit, cs.Name+"/"+rep.ruleNames[ci][ri])
			}
		}
	}
	rep.Reasons = sortCounts(rep.reasons)
	rep.ByRule = sortCounts(rep.byRule)
	for _, fc := range rep.flows {
		rep.TopDenied = append(rep.TopDenied, *fc)
	}
	sort.Slice(rep.TopDenied, func(i, j int) bool {
		a, b := rep.TopDenied[i], rep.TopDenied[j]
		if a.N != b.N {
			return a.N > b.N
		}
		// The same endpoints may be denied as several protocols (modbus,
		// then tcp once closed): the protocol breaks the tie, so that the
		// order does not depend on the map's.
		if ab, bb := a.Src+a.Dst, b.Src+b.Dst; ab != bb {
			return ab < bb
		}
		return a.Proto < b.Proto
	})
	if len(rep.TopDenied) > 20 {
		rep.TopDenied = rep.TopDenied[:20]
	}
	// Drop the "no conduit" row when nothing fell there.
	if cs, ok := rep.conduitIdx[""]; ok && cs.PacketsForwarded+cs.PacketsDropped+cs.FlowsDenied+cs.FlowsAlerted+cs.NormaliserDrops == 0 {
		for i, c := range rep.Conduits {
			if c == cs {
				rep.Conduits = append(rep.Conduits[:i], rep.Conduits[i+1:]...)
				break
			}
		}
	}
}

func sortCounts(m map[string]int) []Count {
	out := make([]Count, 0, len(m))
	for k, v := range m {
		out = append(out, Count{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// String renders a one-line summary.
func (rep *Report) String() string {
	return fmt.Sprintf("%d frames: %d forwarded, %d truncated, %d dropped; PDUs %d allowed, %d denied, %d alerted",
		rep.Frames, rep.Forwarded, rep.Truncated, rep.Dropped, rep.PDUsAllowed, rep.PDUsDenied, rep.PDUsAlerted)
}
