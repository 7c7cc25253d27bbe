// Package txlog is the transaction log of the live gateway: for a conduit
// with `log: transactions` (rules.Ruleset.LogTransactions), one event of
// type "transaction" (severity info) per allowed request and the response
// that answered it, in the one record schema (gateway/events), to the
// events file and syslog like every other event. Analysts compare it with
// Zeek's modbus.log and dnp3.log.
//
// It needs no change to the engine: Tap wraps the datapath handler and
// takes the engine's OnVerdict hook, which reports every allowed PDU with
// its flow and the flow's protocol session. Pairing is the session's
// (protocols.Session.Exchange): txlog only keeps the records. An allowed
// request that the session says awaits a response is remembered (its
// fields and the packet context of its frame) under its flow and the
// session's exchange key; the allowed response the session paired with
// it completes the record: the request's protocol object with the
// response's fields in its "response" member. What the session pairs with
// nothing (DNP3 unsolicited responses and CONFIRMs, later fragments of a
// response) is not logged.
// Offline, `otgw replay --json` feeds Log.OnDecision from the replay's
// decisions and prints the same records (capture time, file and frame;
// no rate limit: offline tools drop nothing).
//
// Bounds: a token bucket (Config.Rate, Config.Burst) is taken when a
// request is remembered, so a busy conduit cannot flood the SOC; requests
// refused by it are counted (Stats.RateLimited) and their responses
// ignored. At most Config.MaxPending requests wait for their response; the
// oldest is forgotten to make room (Stats.Unanswered). The traffic of a
// conduit without the key costs one ruleset lookup per allowed PDU and
// allocates nothing.
package txlog

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// Defaults of Config.
const (
	DefaultRate       = 100 // records per second
	DefaultBurst      = 200
	DefaultMaxPending = 4096
)

// Config configures a Log. Rules and Sink are required.
type Config struct {
	// Rules returns the ruleset in force (daemon.Watcher.Ruleset).
	Rules func() *rules.Ruleset
	// Sink receives the records (the daemon's event pipeline).
	Sink events.Sink
	// Rate and Burst bound the records: Rate per second on average, Burst
	// at once (defaults DefaultRate, DefaultBurst).
	Rate  float64
	Burst int
	// MaxPending bounds the requests waiting for their response (default
	// DefaultMaxPending).
	MaxPending int
	// Now returns the time (default time.Now).
	Now func() time.Time
}

// Stats are cumulative counters of a Log.
type Stats struct {
	Records     uint64 `json:"records"`      // transaction records emitted
	RateLimited uint64 `json:"rate_limited"` // requests not logged: over the rate
	Unanswered  uint64 `json:"unanswered"`   // remembered requests forgotten to make room
	Pending     int    `json:"pending"`      // requests waiting for their response now
}

// ErrConfig is returned by New without Rules or Sink.
var ErrConfig = errors.New("txlog: Config.Rules and Config.Sink are required")

// Log pairs allowed requests with their responses. Safe for concurrent use.
type Log struct {
	cfg Config

	mu      sync.Mutex // guards the fields below
	tokens  float64
	last    time.Time
	pending map[key]*request
	order   []key // insertion order of pending, oldest first (may hold keys already answered)

	records, limited, unanswered atomic.Uint64
}

// key identifies a transaction: the engine's flow and the exchange key
// of its session (protocols.Session.Exchange).
type key struct {
	flow  uint64
	proto protocols.Proto
	id    uint64
}

// request is a remembered request of a logged conduit.
type request struct {
	src, dst netip.AddrPort
	proto    string
	conduit  string
	rule     string
	mode     string
	net      events.Net
	fields   map[string]any
}

// New returns a Log.
func New(cfg Config) (*Log, error) {
	if cfg.Rules == nil || cfg.Sink == nil {
		return nil, ErrConfig
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{cfg: cfg, tokens: float64(cfg.Burst), pending: map[key]*request{}}, nil
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	n := len(l.pending)
	l.mu.Unlock()
	return Stats{Records: l.records.Load(), RateLimited: l.limited.Load(), Unanswered: l.unanswered.Load(), Pending: n}
}

// Handler is what a Tap wraps: the datapath handler (gateway.Engine).
type Handler interface {
	Handle(in gateway.PortID, frame []byte, tx gateway.Tx)
}

// Tap joins the engine's verdicts to the frames they are about (for the
// request's packet context). One goroutine per ingress port calls Handle,
// as the daemon's Forwarder does; build one per datapath.
type Tap struct {
	// Next handles the frames (set before the first Handle).
	Next Handler
	l    *Log
	cur  [2]struct {
		frame []byte
		_     [64 - 24]byte // own cache line per port
	}
}

// NewTap returns a Tap that logs into l.
func (l *Log) NewTap() *Tap { return &Tap{l: l} }

// Handle passes the frame to Next, remembering it for OnVerdict.
func (t *Tap) Handle(in gateway.PortID, frame []byte, tx gateway.Tx) {
	if in > gateway.South {
		t.Next.Handle(in, frame, tx)
		return
	}
	t.cur[in].frame = frame
	t.Next.Handle(in, frame, tx)
	t.cur[in].frame = nil
}

// OnVerdict is the engine's Config.OnVerdict hook (or part of it): it
// logs allowed PDUs of conduits with log: transactions.
func (t *Tap) OnVerdict(d *gateway.Decision) {
	if !t.l.logged(d) {
		return
	}
	var frame []byte
	if d.In <= gateway.South {
		frame = t.cur[d.In].frame
	}
	t.l.observe(d, nil, frame)
}

// OnDecision logs d when it is an allowed PDU of a conduit with log:
// transactions; p is the decoded frame it is about (its packet context
// goes into the record), or nil. It is the entry point of offline tools
// (otgw replay, from replay.Options.OnDecision), which see the packet;
// the live gateway goes through a Tap.
func (l *Log) OnDecision(d *gateway.Decision, p *packet.Packet) {
	if l.logged(d) {
		l.observe(d, p, nil)
	}
}

// logged reports whether d is an allowed PDU of a conduit with log:
// transactions in the ruleset that decided it. It allocates nothing.
func (l *Log) logged(d *gateway.Decision) bool {
	if d.PDU == nil || !d.HasVerdict || d.Verdict.Action != rules.Allow || d.Detection != "" {
		return false
	}
	rs := l.cfg.Rules()
	return rs != nil && rs.Generation() == d.Verdict.Generation && rs.LogTransactions(d.Verdict.Conduit)
}

// observe remembers a request or completes its transaction, as the
// flow's session paired them. The request's packet context comes from p,
// or else from decoding frame (after the rate limit: only for requests
// that are logged).
func (l *Log) observe(d *gateway.Decision, p *packet.Packet, frame []byte) {
	if d.Session == nil {
		return
	}
	role, id := d.Session.Exchange()
	if role == protocols.RoleNone {
		return
	}
	k := key{flow: d.FlowID, proto: d.PDU.Proto, id: id}
	now := l.cfg.Now()
	if role == protocols.RoleRequest {
		l.mu.Lock()
		allowed := l.take(now)
		l.mu.Unlock()
		if !allowed {
			l.limited.Add(1)
			return
		}
		// Allocations from here on are bounded by the rate.
		v := &d.Verdict
		r := &request{src: d.Src, dst: d.Dst, proto: d.Proto, conduit: v.ConduitName, rule: v.RuleName,
			mode: v.Mode.String(), fields: d.Fields()}
		if p == nil && frame != nil {
			p = new(packet.Packet)
			if p.Decode(frame, packet.LinkEthernet) != nil {
				p = nil
			}
		}
		if p != nil {
			r.net = gateway.EventNet(p)
		}
		l.mu.Lock()
		l.remember(k, r)
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	r := l.pending[k]
	delete(l.pending, k)
	l.mu.Unlock()
	if r == nil {
		return
	}
	resp := named(d.Proto, d.Fields())
	fields := r.fields
	fields["response"] = resp
	ev := &events.Event{Time: now, Type: events.TypeTransaction, Severity: events.SevInfo, Verdict: "allow",
		Mode: r.mode, Conduit: r.conduit, Rule: r.rule, Src: r.src, Dst: r.dst, Proto: r.proto, Net: r.net, Fields: fields}
	ev.Message = "transaction " + r.proto + " " + r.src.String() + " -> " + r.dst.String() + ": " + summary(fields, resp)
	l.records.Add(1)
	l.cfg.Sink.Emit(ev)
}

// take takes a token of the bucket (l.mu held).
func (l *Log) take(now time.Time) bool {
	if !l.last.IsZero() && now.After(l.last) {
		l.tokens = min(float64(l.cfg.Burst), l.tokens+now.Sub(l.last).Seconds()*l.cfg.Rate)
	}
	if now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// remember stores r under k, forgetting the oldest requests beyond
// MaxPending (l.mu held).
func (l *Log) remember(k key, r *request) {
	if _, dup := l.pending[k]; !dup {
		l.order = append(l.order, k)
	}
	l.pending[k] = r
	for len(l.pending) > l.cfg.MaxPending && len(l.order) > 0 {
		old := l.order[0]
		l.order = l.order[1:]
		if _, ok := l.pending[old]; ok {
			delete(l.pending, old)
			l.unanswered.Add(1)
		}
	}
	if len(l.order) > 2*l.cfg.MaxPending {
		// Drop the keys of answered requests from the order.
		live := l.order[:0]
		for _, k := range l.order {
			if _, ok := l.pending[k]; ok {
				live = append(live, k)
			}
		}
		l.order = live
	}
}

// named returns a response's fields as the record schema names them
// (function beside fc, service beside service_id, DNP3 objects as gGvV).
func named(proto string, f map[string]any) map[string]any {
	return events.ProtocolObject(proto, f)
}

// summary is the message's short form: the request's function (or
// service) and the response's outcome.
func summary(req, resp map[string]any) string {
	var fn string
	if v, ok := req["fc"]; ok {
		fn = "fc " + jsonString(v)
	}
	if v, ok := resp["function"].(string); ok {
		fn = strings.TrimSuffix(v, "_response")
	}
	if v, ok := resp["service"].(string); ok {
		fn = strings.TrimSuffix(v, "_response")
	}
	if _, exc := resp["exception"]; exc {
		return fn + ": exception " + jsonString(resp["exception"])
	}
	return fn + ": ok"
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}
