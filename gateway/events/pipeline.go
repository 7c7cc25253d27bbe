package events

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Pipeline defaults.
const (
	DefaultQueueLen         = 4096
	DefaultAggregateWindow  = 10 * time.Second
	DefaultMaxAggregateKeys = 1024
)

// PipelineConfig configures a Pipeline. The zero value is usable.
type PipelineConfig struct {
	// QueueLen bounds the events waiting for the exporters (default
	// DefaultQueueLen). An eighth of it is reserved for events of severity
	// critical or worse, so a flood of lesser events cannot crowd them out.
	QueueLen int
	// AggregateWindow is the interval over which identical denies/alerts
	// (same type, conduit, rule, reason, source address and destination)
	// are folded into one TypeAggregated event with a Count. Default
	// DefaultAggregateWindow; negative disables aggregation.
	AggregateWindow time.Duration
	// MaxAggregateKeys bounds the aggregation table (default
	// DefaultMaxAggregateKeys). When full, new keys pass unaggregated.
	MaxAggregateKeys int
	// Now returns the current time (default time.Now); tests inject a clock.
	Now func() time.Time
	// Logger receives the dispatcher's start/stop lines (default: discard).
	Logger *slog.Logger
	// Block makes Emit wait for room in a full queue instead of dropping:
	// backpressure for offline tools (otgw replay), which have no real-time
	// excuse to lose an event (DESIGN.md, Events). Never set it on the live
	// gateway: its producers must never wait on an exporter. Aggregation
	// still folds repeats as configured (a TypeAggregated event carries
	// their count: that is not loss). With Block, a sink must not call
	// Emit on the same pipeline from the dispatcher (it would wait for
	// itself when the queue is full).
	Block bool
}

// PipelineStats are cumulative counters of a Pipeline.
type PipelineStats struct {
	Emitted    uint64 // Emit calls
	Delivered  uint64 // events handed to the sinks, including generated ones
	Suppressed uint64 // repeats folded into TypeAggregated events
	Aggregates uint64 // TypeAggregated events generated
	Dropped    uint64 // events lost to a full queue or emitted after Close
	Waited     uint64 // Emit calls that waited for room (PipelineConfig.Block)
	Queued     int    // events waiting now
}

// Pipeline assigns each event its sequence number and boot id and fans it out
// to the sinks (exporters) from one dispatcher goroutine.
//
// Emit is safe for concurrent use and never blocks: the queue is bounded, a
// full queue drops and counts, and the count later becomes a TypeDropped
// event ("dropped N") with its own sequence number. With
// PipelineConfig.Block (offline tools only) Emit waits for room instead,
// and nothing is dropped until Close. Seq is contiguous over
// the events that enter the queue, in queue order, so an exporter sees
// 1, 2, 3... and the SOC can tell transport loss (a gap) from local loss (a
// dropped event). Identical denies are aggregated (see PipelineConfig);
// events of severity critical or worse are never aggregated or delayed.
//
// Sinks run on the dispatcher goroutine, one event at a time, and must treat
// the *Event as read-only (it is shared by all sinks); they should return
// quickly (append to a file or spool), never wait on the network.
type Pipeline struct {
	cfg     PipelineConfig
	bootID  string
	now     func() time.Time
	log     *slog.Logger
	reserve int // queue slots only critical events may use

	q     chan *Event
	stop  chan struct{}
	done  chan struct{}
	sinks atomic.Pointer[[]Sink]

	mu          sync.Mutex // guards the fields below and the order of sends into q
	room        sync.Cond  // on mu; Block: broadcast when the dispatcher takes an event
	seq         uint64
	pendingDrop uint64 // drops not yet reported by a TypeDropped event
	agg         map[aggKey]*aggEntry
	closed      bool

	waiting atomic.Int32 // Emits waiting on room (Block)

	emitted, delivered, suppressed, aggregates, dropped, waited atomic.Uint64
}

type aggKey struct {
	typ      Type
	conduit  string
	rule     string
	reason   string
	src      netip.Addr // the source port changes per connection: not part of the key
	dst      netip.AddrPort
	proto    string
	severity Severity
}

type aggEntry struct {
	first     Event // copy of the event that opened the window
	windowEnd time.Time
	count     int // repeats suppressed in this window
	firstRep  time.Time
	lastRep   time.Time
}

// NewPipeline starts a pipeline delivering to sinks (more can be added with
// AddSink). Call Close to drain it.
func NewPipeline(cfg PipelineConfig, sinks ...Sink) *Pipeline {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueLen < 8 {
		cfg.QueueLen = 8
	}
	if cfg.AggregateWindow == 0 {
		cfg.AggregateWindow = DefaultAggregateWindow
	}
	if cfg.MaxAggregateKeys <= 0 {
		cfg.MaxAggregateKeys = DefaultMaxAggregateKeys
	}
	p := &Pipeline{
		cfg:     cfg,
		bootID:  NewBootID(),
		now:     cfg.Now,
		log:     cfg.Logger,
		reserve: cfg.QueueLen / 8,
		q:       make(chan *Event, cfg.QueueLen),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		agg:     make(map[aggKey]*aggEntry),
	}
	p.room.L = &p.mu
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("component", "events")
	s := append([]Sink(nil), sinks...)
	p.sinks.Store(&s)
	go p.runDispatch()
	return p
}

// NewBootID returns a random RFC 4122 version 4 UUID string.
func NewBootID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux (Go >= 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// BootID returns the boot id stamped on every event of this pipeline.
func (p *Pipeline) BootID() string { return p.bootID }

// AddSink adds a sink; it receives the events dispatched from now on.
func (p *Pipeline) AddSink(s Sink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.sinks.Load()
	n := append(append(make([]Sink, 0, len(old)+1), old...), s)
	p.sinks.Store(&n)
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() PipelineStats {
	return PipelineStats{
		Emitted: p.emitted.Load(), Delivered: p.delivered.Load(),
		Suppressed: p.suppressed.Load(), Aggregates: p.aggregates.Load(),
		Dropped: p.dropped.Load(), Waited: p.waited.Load(), Queued: len(p.q),
	}
}

func aggregatable(e *Event) bool {
	return (e.Type == TypeDeny || e.Type == TypeAlert) && e.Severity > SevCritical
}

// limit is the queue length up to which an event of severity sev may be
// queued: the last eighth is reserved for critical events and worse.
func (p *Pipeline) limit(sev Severity) int {
	if sev <= SevCritical {
		return cap(p.q)
	}
	return cap(p.q) - p.reserve
}

// Emit implements Sink. It takes ownership of e, sets Time if it is zero,
// and returns without waiting for any exporter (with PipelineConfig.Block:
// it waits until the dispatcher has made room in the queue). Safe for
// concurrent use.
func (p *Pipeline) Emit(e *Event) {
	p.emitted.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Block {
		p.waitRoomLocked(e.Severity)
	}
	now := p.now()
	if e.Time.IsZero() {
		e.Time = now
	}
	if p.closed {
		p.dropped.Add(1)
		return
	}
	if p.cfg.AggregateWindow > 0 && aggregatable(e) {
		k := aggKey{e.Type, e.Conduit, e.Rule, e.Reason, e.Src.Addr(), e.Dst, e.Proto, e.Severity}
		if ent, ok := p.agg[k]; ok {
			if now.Before(ent.windowEnd) {
				if ent.count == 0 {
					ent.firstRep = e.Time
				}
				ent.count++
				ent.lastRep = e.Time
				p.suppressed.Add(1)
				return
			}
			p.flushEntryLocked(k, ent) // window over: report it, then e opens a new one
		}
		if len(p.agg) < p.cfg.MaxAggregateKeys {
			p.agg[k] = &aggEntry{first: *e, windowEnd: now.Add(p.cfg.AggregateWindow)}
		}
	}
	p.enqueueLocked(e)
}

// waitRoomLocked (Block) waits until the queue has room for two events
// of severity sev (an aggregation summary and the event itself) or the
// pipeline is closed. Only holders of p.mu send on p.q, and Emit keeps
// p.mu from here until it has queued, so the room found stays. The
// waiting happens before Emit touches any state, so a wait never splits
// an aggregation update.
func (p *Pipeline) waitRoomLocked(sev Severity) {
	if p.closed || len(p.q)+2 <= p.limit(sev) {
		return
	}
	p.waited.Add(1)
	p.waiting.Add(1)
	for !p.closed && len(p.q)+2 > p.limit(sev) {
		p.room.Wait()
	}
	p.waiting.Add(-1)
}

// enqueueLocked assigns Seq and queues e, or counts a drop. Never blocks:
// only holders of p.mu send on p.q and they check the room first.
func (p *Pipeline) enqueueLocked(e *Event) {
	limit := p.limit(e.Severity)
	if p.pendingDrop > 0 && len(p.q)+2 <= limit {
		p.reportDropsLocked()
	}
	if len(p.q) >= limit {
		p.pendingDrop++
		p.dropped.Add(1)
		return
	}
	p.seq++
	e.Seq = p.seq
	e.BootID = p.bootID
	p.q <- e
}

func (p *Pipeline) reportDropsLocked() {
	n := p.pendingDrop
	p.pendingDrop = 0
	d := &Event{
		Time: p.now(), Severity: SevWarning, Type: TypeDropped, Count: int(min(n, 1<<31-1)),
		Message: fmt.Sprintf("dropped %d events: event queue full", n),
	}
	p.seq++
	d.Seq = p.seq
	d.BootID = p.bootID
	p.q <- d
}

// flushEntryLocked emits the summary of one aggregation window (if any
// repeat was suppressed) and forgets the key.
func (p *Pipeline) flushEntryLocked(k aggKey, ent *aggEntry) {
	delete(p.agg, k)
	if ent.count == 0 {
		return
	}
	s := ent.first
	s.Seq, s.BootID = 0, ""
	s.Type = TypeAggregated
	s.Time = ent.lastRep
	s.Count = ent.count
	s.Message = fmt.Sprintf("%d repeats suppressed: %s", ent.count, ent.first.Message)
	f := make(map[string]any, len(ent.first.Fields)+3)
	for k, v := range ent.first.Fields {
		f[k] = v
	}
	f["aggregated_type"] = string(ent.first.Type)
	f["first_seen"] = ent.firstRep.UTC().Format(JSONTimeLayout)
	f["last_seen"] = ent.lastRep.UTC().Format(JSONTimeLayout)
	s.Fields = f
	p.aggregates.Add(1)
	p.enqueueLocked(&s)
}

// tick reports pending drops and closes aggregation windows that ended
// (all of them when final). It runs on the dispatcher, which cannot wait
// for room it alone makes: with Block it closes only the windows whose
// summaries fit in the queue now and reports whether any ended window is
// left for the next tick (an Emit of the same key closes it too).
func (p *Pipeline) tick(final bool) (more bool) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, ent := range p.agg {
		if final || !now.Before(ent.windowEnd) {
			if p.cfg.Block && ent.count > 0 && len(p.q) >= p.limit(ent.first.Severity) {
				more = true
				continue
			}
			p.flushEntryLocked(k, ent)
		}
	}
	if p.pendingDrop > 0 && len(p.q) < cap(p.q) {
		p.reportDropsLocked()
	}
	return more
}

// took is called by the dispatcher after it took an event from the queue:
// with Block it wakes the Emits waiting for room.
func (p *Pipeline) took() {
	if p.waiting.Load() > 0 {
		p.mu.Lock()
		p.room.Broadcast()
		p.mu.Unlock()
	}
}

func (p *Pipeline) deliver(e *Event) {
	for _, s := range *p.sinks.Load() {
		s.Emit(e)
	}
	p.delivered.Add(1)
}

func (p *Pipeline) tickInterval() time.Duration {
	if p.cfg.AggregateWindow <= 0 {
		return 100 * time.Millisecond
	}
	return min(max(p.cfg.AggregateWindow/10, 10*time.Millisecond), time.Second)
}

func (p *Pipeline) runDispatch() {
	defer close(p.done)
	p.log.Info("dispatcher started", "boot_id", p.bootID, "queue", cap(p.q))
	t := time.NewTicker(p.tickInterval())
	defer t.Stop()
	for {
		select {
		case e := <-p.q:
			p.took()
			p.deliver(e)
		case <-t.C:
			p.tick(false)
		case <-p.stop:
			p.drain()
			for p.tick(true) {
				p.drain()
			}
			p.drain()
			p.log.Info("dispatcher stopped", "delivered", p.delivered.Load(), "dropped", p.dropped.Load())
			return
		}
	}
}

func (p *Pipeline) drain() {
	for {
		select {
		case e := <-p.q:
			p.took()
			p.deliver(e)
		default:
			return
		}
	}
}

// Close stops accepting events (later Emits are counted as dropped),
// delivers everything queued, flushes open aggregation windows and pending
// drop reports, and returns when the dispatcher has stopped. It does not
// close the sinks. Safe to call more than once.
func (p *Pipeline) Close() {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.room.Broadcast() // Block: waiting Emits give up (counted as dropped)
	p.mu.Unlock()
	if !already {
		close(p.stop)
	}
	<-p.done
}
