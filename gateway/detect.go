package gateway

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// detectSlots bounds the subjects the rate detectors track at once. A slot
// is about 300 bytes; when all are in use the one idle longest is reused,
// so a flood of spoofed subjects costs a detection at worst, never memory.
const detectSlots = 256

// detectTable holds the rate detectors' state (rules.Detector): per
// detector and subject address, the times of the last matching responses.
// It is fixed at NewEngine and touched only by responses that match a
// detector (exceptions, unsolicited or IIN2-flagged responses), so one
// mutex for both directions costs nothing on the common path.
type detectTable struct {
	mu    sync.Mutex
	slots [detectSlots]detectSlot
}

type detectSlot struct {
	used  bool
	det   rules.Detector
	subj  netip.Addr
	ts    [rules.MaxDetectCount]int64 // ring of match times (ns), oldest at head
	head  int
	n     int
	quiet int64 // after an alert: no counting before this time
	last  int64
}

// observe records one match of det for subj at now and reports whether the
// threshold is reached (then the count starts again after one window, so a
// scan that goes on alerts once per window, not once per response).
func (t *detectTable) observe(det rules.Detector, subj netip.Addr, now int64, th rules.Threshold) bool {
	if th.Count <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var s *detectSlot
	oldest := -1
	for i := range t.slots {
		x := &t.slots[i]
		if !x.used {
			if oldest < 0 || t.slots[oldest].used {
				oldest = i
			}
			continue
		}
		if x.det == det && x.subj == subj {
			s = x
			break
		}
		if oldest < 0 || t.slots[oldest].used && x.last < t.slots[oldest].last {
			oldest = i
		}
	}
	if s == nil {
		s = &t.slots[oldest]
		*s = detectSlot{used: true, det: det, subj: subj}
	}
	s.last = now
	if now < s.quiet {
		return false
	}
	win := int64(th.Window)
	for s.n > 0 && now-s.ts[s.head] >= win {
		s.head = (s.head + 1) % len(s.ts)
		s.n--
	}
	if s.n == len(s.ts) { // threshold lowered by a reload: drop the oldest
		s.head = (s.head + 1) % len(s.ts)
		s.n--
	}
	s.ts[(s.head+s.n)%len(s.ts)] = now
	s.n++
	if s.n < th.Count {
		return false
	}
	s.n, s.head = 0, 0
	s.quiet = now + win
	return true
}

// Detectors calls fn for each rate detector (rules.Detector) that the
// response PDU of d counts for, with the subject address it is counted
// against, exactly as the engine counts (rules/learn uses it to measure
// the rates a capture shows). Nothing for requests and non-PDU decisions.
func (d *Decision) Detectors(fn func(det rules.Detector, subj netip.Addr)) {
	if d.PDU == nil || d.PDU.Dir != protocols.Response || d.Detection != "" {
		return
	}
	m, n := d.PDU.Detections()
	for _, x := range m[:n] {
		if x.Server {
			fn(x.Det, d.Src.Addr())
		} else {
			fn(x.Det, d.Dst.Addr())
		}
	}
}

// detectPDU feeds one response PDU that crossed to the detectors it
// counts for (rules.PDU.Detections).
func (e *Engine) detectPDU(c *hctx, f *flow, p *rules.PDU, v *rules.Verdict) {
	m, n := p.Detections()
	for _, x := range m[:n] {
		e.detect(c, f, x.Det, c.subject(x.Server), v)
	}
}

// subject is the response's source (server) or destination address.
func (c *hctx) subject(server bool) netip.Addr {
	if server {
		return c.pkt.SrcAddrPort().Addr()
	}
	return c.pkt.DstAddrPort().Addr()
}

// detect counts one match and, at the threshold, reports an alert: to the
// OnVerdict hook as a Decision with Detection set, and as an event.
func (e *Engine) detect(c *hctx, f *flow, det rules.Detector, subj netip.Addr, pv *rules.Verdict) {
	th := c.rs.Detection(det)
	deferred := e.cfg.DeferDetections
	if deferred {
		if th.Count <= 0 || e.cfg.OnVerdict == nil {
			return
		}
	} else if !e.detects.observe(det, subj, c.now, th) {
		return
	}
	d := &c.dec
	saved := *d
	d.Detection, d.DetectionCount, d.DetectionWindow, d.DetectionSubject = det.String(), th.Count, th.Window, subj
	d.Detector, d.DetectionDeferred = det, deferred
	d.Action, d.HasVerdict = FrameForward, true
	d.Verdict = *pv
	d.Verdict.Action = rules.Alert
	d.Src, d.Dst = c.pkt.SrcAddrPort(), c.pkt.DstAddrPort()
	if f != nil {
		d.FlowID = f.id
	}
	if deferred {
		e.cfg.OnVerdict(d)
		*d = saved
		return
	}
	e.ctr.detections.Add(1)
	if e.cfg.OnVerdict != nil {
		e.cfg.OnVerdict(d)
	}
	v := &d.Verdict
	ev := &events.Event{
		Time:     time.Unix(0, c.now).UTC(),
		Type:     events.TypeAlert,
		Verdict:  "alert",
		Severity: events.SevWarning,
		Mode:     v.Mode.String(),
		Conduit:  v.ConduitName,
		Rule:     v.RuleName,
		Reason:   ReasonDetectPrefix + det.String(),
		Src:      d.Src,
		Dst:      d.Dst,
		Proto:    d.Proto,
		Net:      EventNet(&c.pkt),
		Fields:   d.Fields(),
	}
	ev.Fields["detection"] = det.String()
	ev.Fields["count"] = th.Count
	ev.Fields["window_s"] = th.Window.Seconds()
	ev.Fields["subject"] = subj.String()
	ev.Message = "detect: " + strconv.Itoa(th.Count) + " " + det.What() + " " + subj.String() + " within " + th.Window.String()
	e.ctr.eventsEmitted.Add(1)
	e.sink.Emit(ev)
	*d = saved
}

// DetectTable counts rate-detector matches as an engine counts them in
// its own table (the same slots, windows and quiet time), for the
// matches engines with Config.DeferDetections report. Observe is safe
// for concurrent use; the outcome depends on the order of the calls, so
// a caller that wants the alerts of one engine calls it in frame order.
type DetectTable struct{ t detectTable }

// NewDetectTable returns an empty table (about 80 KiB).
func NewDetectTable() *DetectTable { return new(DetectTable) }

// Observe counts one match of det for subj at now (the frame's time)
// against th and reports whether it reaches the threshold: then it is an
// alert, and the count starts again after one window.
func (t *DetectTable) Observe(det rules.Detector, subj netip.Addr, now time.Time, th rules.Threshold) bool {
	return t.t.observe(det, subj, now.UnixNano(), th)
}

// HalfOpenLimit is the number of half-open TCP connections one client
// address may have in an engine whose table holds maxFlows flows
// (Config.MaxFlows; see "Admission under a SYN flood" in the package
// documentation).
func HalfOpenLimit(maxFlows int) int {
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	return int(halfOpenLimit(maxFlows))
}

// ReasonDetectPrefix starts the reason of a rate detection's alert
// ("detect:modbus_address_scan").
const ReasonDetectPrefix = "detect:"
