package gateway

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/registry"
	"github.com/otgw/otgw/rules"
)

// PortID names a bridge port. The engine has exactly two.
type PortID uint8

// Ports.
const (
	North PortID = 0
	South PortID = 1
)

// String returns "north" or "south".
func (p PortID) String() string {
	switch p {
	case North:
		return "north"
	case South:
		return "south"
	}
	return "invalid"
}

// Other returns the opposite port.
func (p PortID) Other() PortID { return p ^ 1 }

// Tx sends frames out of a port. Send must copy or consume frame before it
// returns: the engine reuses the buffer (the caller's frame, or a pooled
// buffer for crafted frames) right after. Send is called from the goroutine
// that called Handle and must be safe for use by two such goroutines.
type Tx interface {
	Send(out PortID, frame []byte)
}

// TxFunc adapts a function to Tx.
type TxFunc func(out PortID, frame []byte)

// Send calls f.
func (f TxFunc) Send(out PortID, frame []byte) { f(out, frame) }

// Config configures an Engine. Rules is required; the zero value of every
// other field selects the documented default.
type Config struct {
	// Rules returns the current ruleset; it is called once per frame and
	// must be cheap and safe for concurrent use (daemon.Watcher.Ruleset).
	Rules func() *rules.Ruleset
	// Sink receives deny and alert events; nil discards. Emit must not block.
	Sink events.Sink
	// Logger for operational messages (never per packet); nil discards.
	Logger *slog.Logger
	// Link is the link type of the frames (default packet.LinkEthernet).
	Link packet.LinkType
	// PortNames are the names policies use for the two ports (default
	// "north", "south"). IgnorePorts leaves them empty, which rules treat as
	// unknown (offline replay, where frames have no ingress port).
	PortNames   [2]string
	IgnorePorts bool

	// MaxFlows bounds the flow table (default 16384).
	MaxFlows int
	// MemoryCap bounds the bytes of inspection state: parser state, held
	// PDU bytes and retransmission history (default 64 MiB). A new inspected
	// flow that would exceed it is refused.
	MemoryCap int64
	// HistoryBytes is how many already inspected bytes per direction of an
	// inspected flow are kept to verify retransmissions (default 4096).
	HistoryBytes int
	// MaxHold bounds the one incomplete PDU held per direction; it matters
	// for OPC UA chunks (default 65536). Modbus and DNP3 PDUs are smaller.
	MaxHold int

	// Idle timeouts (defaults: established or half-closed TCP 1h,
	// handshake 30s, closed by a RST or both FINs 10s, UDP 2m).
	TCPIdle, TCPHandshake, TCPClosed, UDPIdle time.Duration
	// EvictMinIdle: an established allowed flow is evicted to make room only
	// when it has been idle this long (default 30s); otherwise the new flow
	// is refused (DropTableFull).
	EvictMinIdle time.Duration

	// Now returns the current time (default time.Now); offline replay passes
	// the capture time.
	Now func() time.Time
	// ClockBack is for offline replay of captures merged out of time
	// order (zero, the default, for the live gateway): a packet stamped
	// more than ClockBack before the last packet of its flow comes from
	// another capture, so the flow is over and the packet starts a new
	// one, as the capture reassembler (simulate/capture) does. One capture
	// point's clock does not run backwards; the live gateway's wall clock
	// may be stepped back (NTP), which must not end its flows.
	ClockBack time.Duration
	// OnVerdict, when set, is called for every verdict: each application
	// PDU, each flow-level and L2 decision, and each frame the normaliser
	// drops. The Decision and everything it points to are valid only during
	// the call; copy what you keep. It runs on the Handle goroutine with the
	// flow locked: it must not call back into the engine.
	OnVerdict func(*Decision)
	// CraftBuffers is the number of pooled buffers for crafted frames
	// (default 8).
	CraftBuffers int
	// Bypass, when set, is offered the flows a fast path may forward
	// without the engine (bypass.go); nil: every frame comes here.
	Bypass Bypass
	// DeferDetections is for offline replay sharded by flow over several
	// engines (simulate/replay): the engine does not count the rate
	// detectors' matches (rules.Detector) in its own table, whose subjects
	// span connections. It reports every match to OnVerdict as a Decision
	// with DetectionDeferred set (and the fields of the alert it would
	// make), emits no event and counts no detection; the caller counts
	// the matches of all its engines in one DetectTable, in frame order,
	// and reports those that reach the threshold.
	DeferDetections bool
}

// DefaultMaxFlows is the default of Config.MaxFlows.
const DefaultMaxFlows = 16384

// Errors of NewEngine.
var (
	ErrNoRules = errors.New("gateway: Config.Rules is required")
)

// Engine is the per-frame inspection pipeline. It is I/O free: frames come
// in through Handle and leave through the Tx passed with them. Handle is
// safe for concurrent use (typically one goroutine per ingress port); see
// the package documentation for how flow state is protected.
type Engine struct {
	// Set by NewEngine and never written again: read without a lock.
	cfg   Config
	log   *slog.Logger
	sink  events.Sink
	now   func() time.Time
	ports [2]string
	// charge is chargeMemory as a func value, made once: the sessions'
	// buffer budget (protocols.Config.Budget).
	charge func(delta int64) bool

	// Set by NewEngine; what they point to guards itself: the flow table
	// (table.mu, then each flow's mu: see flow), the crafted-frame buffers
	// (a channel), the detection windows (detectTable.mu) and the pool of
	// per-Handle contexts (sync.Pool; an hctx belongs to one Handle call
	// at a time).
	tab     *table
	craft   *craftPool
	detects *detectTable
	ctxs    sync.Pool // *hctx

	// Atomics, updated by every Handle goroutine without a lock.
	flowID atomic.Uint64
	ctr    counters
	mem    atomic.Int64 // bytes of inspection state allocated

	// The lists of free are guarded by freeMu; its length (one list per
	// protocols.Proto of the registered protocols) is fixed by NewEngine.
	freeMu sync.Mutex
	free   [][]*inspector // recycled inspectors
}

// NewEngine checks cfg, fills defaults and preallocates the flow table.
func NewEngine(cfg Config) (*Engine, error) {
	if cfg.Rules == nil {
		return nil, ErrNoRules
	}
	if cfg.Sink == nil {
		cfg.Sink = events.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Link == 0 {
		cfg.Link = packet.LinkEthernet // LinkNull (0) is a capture format, never a bridge port
	}
	if cfg.PortNames == [2]string{} {
		cfg.PortNames = [2]string{"north", "south"}
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.MemoryCap <= 0 {
		cfg.MemoryCap = 64 << 20
	}
	if cfg.HistoryBytes <= 0 {
		cfg.HistoryBytes = 4096
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = 65536
	}
	cfg.MaxHold = max(cfg.MaxHold, modbus.MaxADULen, dnp3.MaxFrameLen)
	if cfg.TCPIdle <= 0 {
		cfg.TCPIdle = time.Hour
	}
	if cfg.TCPHandshake <= 0 {
		cfg.TCPHandshake = 30 * time.Second
	}
	if cfg.TCPClosed <= 0 {
		cfg.TCPClosed = 10 * time.Second
	}
	if cfg.UDPIdle <= 0 {
		cfg.UDPIdle = 2 * time.Minute
	}
	if cfg.EvictMinIdle <= 0 {
		cfg.EvictMinIdle = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CraftBuffers <= 0 {
		cfg.CraftBuffers = 8
	}
	e := &Engine{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "gateway"),
		sink:  cfg.Sink,
		now:   cfg.Now,
		tab:   newTable(cfg.MaxFlows),
		craft: newCraftPool(cfg.CraftBuffers),

		detects: new(detectTable),
	}
	if !cfg.IgnorePorts {
		e.ports = cfg.PortNames
	}
	e.ctxs.New = func() any { return new(hctx) }
	e.charge = e.chargeMemory
	for _, spec := range registry.All() {
		e.free = append(e.free, make([][]*inspector, max(0, int(spec.Proto)+1-len(e.free)))...)
	}
	e.log.Info("engine ready", "max_flows", cfg.MaxFlows, "memory_cap", cfg.MemoryCap, "link", int(cfg.Link))
	return e, nil
}

// Counters returns a snapshot of the engine's statistics.
func (e *Engine) Counters() Counters {
	var c Counters
	e.ctr.snapshot(&c)
	e.tab.mu.Lock()
	c.FlowsActive = e.tab.used
	c.FlowsEstablished = e.tab.count[classEstablished]
	e.tab.mu.Unlock()
	c.MemoryBytes = e.mem.Load()
	c.MemoryCap = e.cfg.MemoryCap
	return c
}

// Expire removes flows idle longer than their state's timeout and returns
// how many it removed. New flows reclaim expired ones on their own; a
// harness calls Expire about once a second so that counters and memory
// reflect live flows. It skips flows busy on another goroutine.
func (e *Engine) Expire(now time.Time) int {
	t := e.tab
	ns := now.UnixNano()
	n := 0
	t.mu.Lock()
	defer t.mu.Unlock()
	// Only the flows in the class lists: a sweep over every slot would
	// read the whole array once a second and keep it resident.
	for c := range numClasses {
		for i := t.head[c]; i != noSlot; {
			f := t.slot(i)
			next := f.next
			if f.lastSeen+f.timeout <= ns && f.mu.TryLock() {
				e.putInspector(t.release(i))
				f.mu.Unlock()
				n++
			}
			i = next
		}
	}
	e.ctr.flowsExpired.Add(uint64(n))
	return n
}

// FrameAction is what happened to the frame a Decision is about.
type FrameAction uint8

// Frame actions.
const (
	FrameForward FrameAction = iota // forwarded unchanged (or, Truncated, rewritten to its allowed prefix)
	FrameDrop                       // not forwarded
	FrameInject                     // not forwarded; crafted frames (reply, RST) were sent instead
)

// String returns "forward", "drop" or "inject".
func (a FrameAction) String() string {
	switch a {
	case FrameDrop:
		return "drop"
	case FrameInject:
		return "inject"
	}
	return "forward"
}

// Decision describes one verdict for the OnVerdict hook. It is owned by
// the engine and valid only during the hook call.
type Decision struct {
	In     PortID
	Action FrameAction // what the engine did with the frame (so far: later PDUs of the same segment may still change it)
	// Truncated: the segment was forwarded without the denied PDU and what
	// followed it.
	Truncated bool
	Drop      DropReason // why the frame was dropped, DropNone when forwarded
	// HasVerdict: Verdict holds a ruleset decision (a PDU, a flow or an L2
	// frame). False for normaliser drops.
	HasVerdict bool
	Verdict    rules.Verdict
	// Proto is "modbus", "dnp3", "opcua", "tcp", "udp", "icmp", "ip" or "l2".
	Proto    string
	Src, Dst netip.AddrPort
	FlowID   uint64
	// PDU is the judged PDU (nil for flow and L2 decisions); Session is
	// the flow's session that decoded it (nil when the bytes could not be
	// framed) and renders its fields (for the parser's own structs,
	// assert its type: *modbus.Session, *dnp3.Session, ...).
	PDU     *rules.PDU
	Session protocols.Session
	// Evasion: the frame was an evasion attempt (in enforce mode it was
	// dropped, and for EvasionTCPOverlap the connection reset); EvasionName
	// says which one.
	Evasion     bool
	EvasionName string
	// Named is the event reason of a verdict that the ruleset's Reason
	// does not name on its own (NamedModbusUDP); "" otherwise.
	Named string
	// Detection names the rate detector (rules.Detector) whose threshold
	// this response reached: the Decision is then an extra alert about the
	// PDU already reported, with DetectionCount matches in DetectionWindow;
	// the PDU's own verdict was reported before it.
	Detection        string
	DetectionCount   int
	DetectionWindow  time.Duration
	DetectionSubject netip.Addr // the address counted against
	// Detector is the detector Detection names.
	Detector rules.Detector
	// DetectionDeferred (Config.DeferDetections): a match not counted
	// yet, reported with the alert's fields; the caller decides with
	// DetectTable.Observe whether it is an alert.
	DetectionDeferred bool
}

// Evasion names (Decision.EvasionName). The event of an evasion has the
// reason "evasion:" + name (ReasonEvasionTCPOverlap); its Verdict has
// the reason malformed and no parser anomaly.
const (
	// EvasionTCPOverlap: a TCP retransmission overlapping already inspected
	// bytes with different content, so that the gateway and the receiver
	// could see two different streams (Ptacek and Newsham, 1998).
	EvasionTCPOverlap = "tcp_overlap_mismatch"
	// ReasonEvasionTCPOverlap is the event reason of EvasionTCPOverlap.
	ReasonEvasionTCPOverlap = "evasion:" + EvasionTCPOverlap
	// NamedModbusUDP and NamedDNP3UDP are the event reasons of UDP flows
	// a plain udp rule would allow on an inspected protocol's port
	// (rules.EvaluateOpen).
	NamedModbusUDP = rules.NamedModbusUDP
	NamedDNP3UDP   = rules.NamedDNP3UDP
	// EvasionTCPUrgent: a segment with URG set on an inspected conduit.
	// A receiver without SO_OOBINLINE (Linux's default) removes the byte
	// before the urgent pointer from the stream, so the bytes its
	// application reads are not the bytes the parser judged (RFC 6093
	// section 4 advises new applications not to use urgent data). The
	// segment is dropped; the connection is not reset.
	EvasionTCPUrgent = "tcp_urgent"
	// ReasonEvasionTCPUrgent is the event reason of EvasionTCPUrgent.
	ReasonEvasionTCPUrgent = "evasion:" + EvasionTCPUrgent
)

// Fields returns the fields of d's PDU as `otgw dissect` prints them (the
// session's one renderer, protocols.Session.Fields) with dir, anomaly (the
// anomaly judged) and evasion (allocates; for reports and events).
func (d *Decision) Fields() map[string]any {
	m := map[string]any{}
	if d.EvasionName != "" {
		m["evasion"] = d.EvasionName
	}
	if d.PDU == nil {
		return m
	}
	m["dir"] = d.PDU.Dir.String()
	if d.Session != nil {
		d.Session.Fields(fieldMap(m))
	}
	if d.PDU.Anomaly != protocols.AnomalyNone {
		m["anomaly"] = d.PDU.Anomaly.String()
	}
	return m
}

// fieldMap is the protocols.Sink of event fields.
type fieldMap map[string]any

func (m fieldMap) Int(k string, v int)         { m[k] = v }
func (m fieldMap) Str(k, v string)             { m[k] = v }
func (m fieldMap) Bytes(k string, v []byte)    { m[k] = string(v) }
func (m fieldMap) IntList(k string, v []int)   { m[k] = append([]int(nil), v...) }
func (m fieldMap) BoolList(k string, v []bool) { m[k] = append([]bool(nil), v...) }
func (m fieldMap) StrList(k string, v protocols.List) {
	m[k] = protocols.Strings(v)
}
func (m fieldMap) Objects(k string, v []protocols.Object) {
	m[k] = append(make([]dnp3.Object, 0, len(v)), v...)
}

// hctx is the per-call scratch of Handle, pooled so that the allow path
// allocates nothing and two Handle goroutines never share it.
type hctx struct {
	e     *Engine
	in    PortID
	frame []byte
	tx    Tx
	now   int64
	rs    *rules.Ruleset
	pkt   packet.Packet
	pdu   rules.PDU
	dec   Decision
	rf    rules.Flow // for stateless evaluations (L2, ICMP, refused flows)

	// Results of the current segment.
	drop      DropReason
	keep      int  // payload bytes to forward when truncating; -1: whole frame
	denied    bool // a PDU or the flow was denied in enforce mode
	deny      rules.Verdict
	denyStart int  // offset in the segment's new data of the first byte not to forward
	denyEnd   int  // offset just after the denied PDU (for the reply's ack)
	evasion   bool // overlapping retransmission with different bytes
	reversed  bool // the new flow's initiator is the packet's destination
	// Held PDU bytes (see tcp.go, holdSegment): doneEnd is the offset in
	// the segment's new data just after the last PDU judged and allowed;
	// heldDone: the PDU whose first bytes were held from earlier segments
	// completed and was allowed; tailHeld: the segment ends inside a PDU
	// whose bytes are held.
	doneEnd  int
	heldDone bool
	tailHeld bool
	held     [maxUnsent]byte // copy of the held bytes before the segment was fed
	out      [outBufSize]byte
	reply    [128]byte
	replyLen int
	replyUDP bool
}

func (c *hctx) reset() {
	c.drop = DropNone
	c.keep = -1
	c.denied = false
	c.evasion = false
	c.replyLen = 0
	c.replyUDP = false
	c.denyStart, c.denyEnd = 0, 0
	c.doneEnd, c.heldDone, c.tailHeld = 0, false, false
	c.reversed = false
	c.dec = Decision{}
}

// Handle inspects one frame that arrived on port in and sends what may
// cross through tx: the frame itself (unchanged, or rewritten in place to
// its allowed prefix), crafted RST and reply frames, or nothing. frame is
// owned by the caller again when Handle returns; Handle may modify it.
func (e *Engine) Handle(in PortID, frame []byte, tx Tx) {
	if in > South {
		e.ctr.drop(DropLoop)
		return
	}
	e.ctr.rxFrames[in].Add(1)
	e.ctr.rxBytes[in].Add(uint64(len(frame)))
	c := e.ctxs.Get().(*hctx)
	c.e, c.in, c.frame, c.tx = e, in, frame, tx
	c.now = e.now().UnixNano()
	c.rs = e.cfg.Rules()
	c.reset()
	if c.rs == nil {
		e.ctr.drop(DropNoPolicy)
	} else {
		e.handle(c)
	}
	c.frame, c.tx, c.rs = nil, nil, nil
	c.dec = Decision{}
	e.ctxs.Put(c)
}

func (e *Engine) forward(c *hctx, frame []byte) {
	out := c.in.Other()
	c.tx.Send(out, frame)
	e.ctr.txFrames[out].Add(1)
	e.ctr.txBytes[out].Add(uint64(len(frame)))
}

func (e *Engine) dropFrame(c *hctx, r DropReason) {
	e.ctr.drop(r)
}

func (e *Engine) handle(c *hctx) {
	p := &c.pkt
	if err := p.Decode(c.frame, e.cfg.Link); err != nil {
		if p.Fragment && p.IPVersion != 0 {
			// A first fragment too short for its transport header (the
			// tiny fragment attack, RFC 1858 section 3): denied and
			// reported as a fragment, like every other.
			e.handleStateless(c, "ip")
			return
		}
		e.dropFrame(c, DropDecode)
		return
	}
	if p.IPVersion == 0 {
		e.handleL2(c)
		return
	}
	if p.Fragment {
		e.handleStateless(c, "ip")
		return
	}
	switch p.Proto {
	case packet.ProtoTCP, packet.ProtoUDP:
		if !p.HasL4 {
			e.dropFrame(c, DropDecode)
			return
		}
		e.handleFlow(c)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		e.handleICMP(c)
	default:
		e.handleStateless(c, "ip")
	}
}

// statelessFlow fills c.rf from the packet for a one-off evaluation.
func (e *Engine) statelessFlow(c *hctx) *rules.Flow {
	p := &c.pkt
	rf := &c.rf
	*rf = rules.Flow{
		InPort: e.ports[c.in], OutPort: e.ports[c.in.Other()],
		SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, EtherType: p.EtherType,
		Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort,
		Transport: p.Proto, ICMPType: p.ICMPType, Fragment: p.Fragment,
	}
	if p.NVLANs > 0 {
		rf.VLAN = p.VLANs[p.NVLANs-1]
	}
	return rf
}

// handleL2 judges a non-IP frame by the policy's l2 list (ARP, LLDP...).
func (e *Engine) handleL2(c *hctx) {
	rf := e.statelessFlow(c)
	v := c.rs.EvaluateFlow(rf)
	c.dec.Proto = "l2"
	if v.Action == rules.Deny {
		e.ctr.flowDenied.Add(1)
		c.drop = DropL2Policy
		e.report(c, nil, v, FrameDrop)
		e.dropFrame(c, DropL2Policy)
		return
	}
	if v.Action == rules.Alert {
		e.ctr.flowAlerted.Add(1)
		e.report(c, nil, v, FrameForward)
	} else if e.cfg.OnVerdict != nil {
		e.report(c, nil, v, FrameForward)
	}
	e.forward(c, c.frame)
}

// handleStateless judges ICMP, other IP protocols and IP fragments packet
// by packet with the ruleset's L3/L4 rules (fragments are always denied:
// IP fragments to inspected ports could hide a PDU from the framer, and
// the policy allows none).
func (e *Engine) handleStateless(c *hctx, proto string) {
	rf := e.statelessFlow(c)
	v := c.rs.EvaluateFlow(rf)
	if c.pkt.Fragment && v.Action == rules.Allow {
		v.Action, v.Reason = rules.Deny, rules.ReasonFragment
	}
	c.dec.Proto = proto
	if v.Action == rules.Deny {
		r := DropFlowDenied
		if c.pkt.Fragment {
			r = DropFragment
		}
		e.ctr.flowDenied.Add(1)
		c.drop = r
		e.report(c, nil, v, FrameDrop)
		e.dropFrame(c, r)
		return
	}
	if v.Action == rules.Alert {
		e.ctr.flowAlerted.Add(1)
		e.report(c, nil, v, FrameForward)
	} else if e.cfg.OnVerdict != nil {
		e.report(c, nil, v, FrameForward)
	}
	if proto == "icmp" {
		// Before forwarding: the reply may come back on the other port's
		// goroutine as soon as the request is sent.
		e.trackEcho(c, v)
	}
	e.forward(c, c.frame)
}

// report calls the OnVerdict hook and, for deny and alert verdicts, emits
// an event. f may be nil (stateless decisions).
func (e *Engine) report(c *hctx, f *flow, v rules.Verdict, act FrameAction) {
	d := &c.dec
	d.In = c.in
	d.Action = act
	d.Drop = c.drop
	d.HasVerdict = true
	d.Verdict = v
	d.Src, d.Dst = c.pkt.SrcAddrPort(), c.pkt.DstAddrPort()
	if c.reversed && d.PDU == nil {
		// A flow-level decision names the flow's initiator as Src, also
		// when the packet that opened it came from the responder.
		d.Src, d.Dst = d.Dst, d.Src
	}
	if f != nil {
		d.FlowID = f.id
	}
	if e.cfg.OnVerdict != nil {
		e.cfg.OnVerdict(d)
	}
	if v.Action != rules.Allow {
		e.emit(c, d, d.Named)
	}
}

// reportDrop tells the hook about a normaliser drop (no ruleset verdict).
func (e *Engine) reportDrop(c *hctx, f *flow, r DropReason) {
	e.ctr.drop(r)
	if e.cfg.OnVerdict == nil {
		return
	}
	d := &c.dec
	*d = Decision{In: c.in, Action: FrameDrop, Drop: r, Proto: d.Proto,
		Src: c.pkt.SrcAddrPort(), Dst: c.pkt.DstAddrPort()}
	if f != nil {
		d.FlowID = f.id
	}
	e.cfg.OnVerdict(d)
}

// emit builds and sends the event of a deny or alert decision. It runs
// only when there is something to report, so it may allocate.
func (e *Engine) emit(c *hctx, d *Decision, reason string) {
	v := &d.Verdict
	ev := &events.Event{
		Time:    time.Unix(0, c.now).UTC(),
		Mode:    v.Mode.String(),
		Conduit: v.ConduitName,
		Rule:    v.RuleName,
		Reason:  v.ReasonString(),
		Src:     d.Src,
		Dst:     d.Dst,
		Proto:   d.Proto,
		Net:     EventNet(&c.pkt),
		Fields:  d.Fields(),
	}
	if reason != "" {
		ev.Reason = reason
	}
	if v.Action == rules.Alert {
		ev.Type, ev.Verdict, ev.Severity = events.TypeAlert, "alert", events.SevWarning
		ev.Message = "monitor: would deny " + d.Proto + " " + endpoints(ev) + ": " + ev.Reason
	} else {
		ev.Type, ev.Verdict, ev.Severity = events.TypeDeny, "deny", events.SevNotice
		ev.Action = v.DenyAction.String()
		if d.Evasion {
			ev.Severity = events.SevAlert
		}
		ev.Message = "deny " + d.Proto + " " + endpoints(ev) + ": " + ev.Reason
	}
	e.ctr.eventsEmitted.Add(1)
	e.sink.Emit(ev)
}
