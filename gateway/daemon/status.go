package daemon

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/gateway/syslog"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/hal"
)

// Status is the JSON document of the status endpoint (GET /status). Every
// key is snake_case.
type Status struct {
	Version  string    `json:"version"`
	Board    string    `json:"board"`
	FailMode string    `json:"fail_mode"`
	Started  time.Time `json:"started"`
	Uptime   float64   `json:"uptime_seconds"`
	Healthy  bool      `json:"healthy"`
	// DatapathRestarts counts restarts after a worker panic or stall;
	// engine counters start afresh at each (a counter reset to Prometheus).
	DatapathRestarts uint64 `json:"datapath_restarts"`
	// Polling: the datapath busy-polls both ports from one thread
	// (--poll), so one core is busy all the time by design.
	Polling bool         `json:"polling"`
	Policy  PolicyStatus `json:"policy"`
	Ports   []PortStatus `json:"ports"`
	Flows   FlowStatus   `json:"flows"`
	// RecentFlows are the flows seen last (at most RecentFlowsShown); GET
	// /flows lists the table.
	RecentFlows []gateway.FlowInfo `json:"recent_flows"`
	Counters    CounterStat        `json:"counters"`
	Events      EventStatus        `json:"events"`
	// Verdicts counts the deny and alert events delivered, by conduit,
	// reason and protocol (at most MaxVerdictSeries combinations; the
	// rest are counted under conduit and reason "_other").
	Verdicts []VerdictCount `json:"verdicts"`
	// Syslog is the exporter's state; absent without --syslog.
	Syslog *SyslogStatus `json:"syslog,omitempty"`
	// CaptureDenied is the denied-frame capture's state; absent without
	// --capture-denied.
	CaptureDenied *forensic.Stats `json:"capture_denied,omitempty"`
	// Transactions is the transaction log's state (conduits with log:
	// transactions).
	Transactions txlog.Stats `json:"transactions"`
	// XDP is the XDP flow bypass (xdp.go).
	XDP *XDPStatus `json:"xdp,omitempty"`
}

// PolicyStatus identifies the policy in force and counts reloads.
type PolicyStatus struct {
	File       string `json:"file"`
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Hash       string `json:"hash"`
	Conduits   int    `json:"conduits"`
	// Reloads that compiled and took effect, and reloads refused (the
	// previous ruleset stayed); LastReloadOK is the outcome of the latest
	// attempt, LastReload its time (zero before the first).
	ReloadsOK     uint64    `json:"reloads_ok"`
	ReloadsFailed uint64    `json:"reloads_failed"`
	LastReloadOK  bool      `json:"last_reload_ok"`
	LastReload    time.Time `json:"last_reload"`
}

// PortStatus is one bridge port.
type PortStatus struct {
	Role  string       `json:"role"` // north | south
	Name  string       `json:"name"`
	Up    bool         `json:"link_up"`
	Stats PortIOStatus `json:"stats"`
}

// PortIOStatus is hal.PortStats under snake_case keys.
type PortIOStatus struct {
	RxFrames       uint64 `json:"rx_frames"`
	RxBytes        uint64 `json:"rx_bytes"`
	TxFrames       uint64 `json:"tx_frames"`
	TxBytes        uint64 `json:"tx_bytes"`
	RxTruncated    uint64 `json:"rx_truncated"`
	RxVLANRestored uint64 `json:"rx_vlan_restored"`
	TxErrors       uint64 `json:"tx_errors"`
	TxDropped      uint64 `json:"tx_dropped"`
	KernelDrops    uint64 `json:"kernel_drops"`
	ReadCalls      uint64 `json:"read_calls"`
	WriteCalls     uint64 `json:"write_calls"`
}

func portIO(s hal.PortStats) PortIOStatus {
	return PortIOStatus{RxFrames: s.RxFrames, RxBytes: s.RxBytes, TxFrames: s.TxFrames, TxBytes: s.TxBytes,
		RxTruncated: s.RxTruncated, RxVLANRestored: s.RxVLANRestored, TxErrors: s.TxErrors, TxDropped: s.TxDropped,
		KernelDrops: s.KernelDrops, ReadCalls: s.ReadCalls, WriteCalls: s.WriteCalls}
}

// FlowStatus summarises the flow table.
type FlowStatus struct {
	Active             int    `json:"active"`
	Established        int    `json:"established"`
	Created            uint64 `json:"created"`
	Expired            uint64 `json:"expired"`
	Evicted            uint64 `json:"evicted"`
	EstablishedEvicted uint64 `json:"established_evicted"`
	Revalidated        uint64 `json:"revalidated"`
	Revoked            uint64 `json:"revoked"`
	MemoryBytes        int64  `json:"memory_bytes"`
	MemoryCap          int64  `json:"memory_cap"`
}

// CounterStat holds the engine's and the datapath loop's counters.
type CounterStat struct {
	RxFrames     map[string]uint64 `json:"rx_frames"`
	TxFrames     map[string]uint64 `json:"tx_frames"`
	Injected     map[string]uint64 `json:"injected"`
	Truncated    uint64            `json:"truncated"`
	Dropped      uint64            `json:"dropped"`
	Drops        map[string]uint64 `json:"drops"`
	PDUs         uint64            `json:"pdus"`
	PDUsAllowed  uint64            `json:"pdus_allowed"`
	PDUsDenied   uint64            `json:"pdus_denied"`
	PDUsAlerted  uint64            `json:"pdus_alerted"`
	FlowsDenied  uint64            `json:"flows_denied"`
	FlowsAlerted uint64            `json:"flows_alerted"`
	Resets       uint64            `json:"resets"`
	Replies      uint64            `json:"replies"`
	Detections   uint64            `json:"detections"` // rate-detection alerts (scans, busy servers, storms)
	Events       uint64            `json:"events"`
	Loop         LoopStatus        `json:"loop"`
}

// LoopStatus is ForwarderStats under snake_case keys, each [north, south].
type LoopStatus struct {
	RxBatches     [2]uint64 `json:"rx_batches"`
	RxTruncated   [2]uint64 `json:"rx_truncated"`
	RxCsumFixed   [2]uint64 `json:"rx_csum_fixed"`
	RxErrors      [2]uint64 `json:"rx_errors"`
	TxErrors      [2]uint64 `json:"tx_errors"`
	TxOversize    [2]uint64 `json:"tx_oversize"`
	TxFlushesFull [2]uint64 `json:"tx_flushes_full"`
	Panics        [2]uint64 `json:"panics"`
}

func loopStatus(f ForwarderStats) LoopStatus {
	return LoopStatus(f)
}

// EventStatus is the event pipeline's events.PipelineStats.
type EventStatus struct {
	Emitted    uint64 `json:"emitted"`
	Delivered  uint64 `json:"delivered"`
	Suppressed uint64 `json:"suppressed"`
	Aggregates uint64 `json:"aggregates"`
	Dropped    uint64 `json:"dropped"`
	Queued     int    `json:"queued"`
}

func eventStatus(p events.PipelineStats) EventStatus {
	return EventStatus{Emitted: p.Emitted, Delivered: p.Delivered, Suppressed: p.Suppressed,
		Aggregates: p.Aggregates, Dropped: p.Dropped, Queued: p.Queued}
}

// VerdictCount is the number of deny or alert events with one conduit,
// reason and protocol (aggregated repeats included).
type VerdictCount struct {
	Verdict string `json:"verdict"` // deny | alert
	Conduit string `json:"conduit"` // "" when no conduit matched
	Reason  string `json:"reason"`
	Proto   string `json:"proto"`
	Count   uint64 `json:"count"`
}

// SyslogStatus is the syslog exporter's spool and destinations.
type SyslogStatus struct {
	Emitted      uint64             `json:"emitted"`
	SpoolRecords int                `json:"spool_records"`
	SpoolBytes   int64              `json:"spool_bytes"`
	Dropped      uint64             `json:"dropped"`
	SpoolLost    uint64             `json:"spool_lost"`
	Destinations []SyslogDestStatus `json:"destinations"`
}

// SyslogDestStatus is one destination of the exporter.
type SyslogDestStatus struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	Pending   int    `json:"pending"`
	Sent      uint64 `json:"sent"`
	Confirmed uint64 `json:"confirmed"`
	Resent    uint64 `json:"resent"`
	Failures  uint64 `json:"failures"`
}

func syslogStatus(s syslog.Stats) *SyslogStatus {
	out := &SyslogStatus{Emitted: s.Emitted, SpoolRecords: s.SpoolRecords, SpoolBytes: s.SpoolBytes,
		Dropped: s.Dropped, SpoolLost: s.SpoolLost, Destinations: []SyslogDestStatus{}}
	for _, d := range s.Dests {
		out.Destinations = append(out.Destinations, SyslogDestStatus{Name: d.Name, Up: d.Up, Pending: d.Pending,
			Sent: d.Sent, Confirmed: d.Confirmed, Resent: d.Resent, Failures: d.Failures})
	}
	return out
}

// MaxVerdictSeries bounds the conduit/reason combinations counted
// separately in Status.Verdicts (and so the series of
// otgw_verdict_events_total): a scan cannot grow the scrape without bound.
const MaxVerdictSeries = 1000

// eventMetrics is a sink of the event pipeline that counts what the
// status endpoint reports from events rather than from the engine: denies
// and alerts by conduit and reason, and policy reloads. Safe for
// concurrent use.
type eventMetrics struct {
	mu            sync.Mutex // guards the fields below
	verdicts      map[verdictKey]uint64
	reloadsOK     uint64
	reloadsFailed uint64
	lastReloadOK  bool
	lastReload    time.Time
}

type verdictKey struct{ verdict, conduit, reason, proto string }

func newEventMetrics() *eventMetrics {
	return &eventMetrics{verdicts: make(map[verdictKey]uint64)}
}

// Emit implements events.Sink.
func (m *eventMetrics) Emit(e *events.Event) {
	n := uint64(1)
	switch e.Type {
	case events.TypeDeny, events.TypeAlert:
	case events.TypeAggregated:
		n = uint64(max(e.Count, 1))
	case events.TypePolicyReload, events.TypePolicyError:
		m.mu.Lock()
		ok := e.Type == events.TypePolicyReload
		if ok {
			m.reloadsOK++
		} else {
			m.reloadsFailed++
		}
		m.lastReloadOK, m.lastReload = ok, e.Time
		m.mu.Unlock()
		return
	default:
		return
	}
	if e.Verdict == "" {
		return
	}
	k := verdictKey{e.Verdict, e.Conduit, e.Reason, e.Proto}
	m.mu.Lock()
	if _, seen := m.verdicts[k]; !seen && len(m.verdicts) >= MaxVerdictSeries {
		k.conduit, k.reason = "_other", "_other"
	}
	m.verdicts[k] += n
	m.mu.Unlock()
}

// fill copies the counts into s.
func (m *eventMetrics) fill(s *Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.Policy.ReloadsOK, s.Policy.ReloadsFailed = m.reloadsOK, m.reloadsFailed
	s.Policy.LastReloadOK, s.Policy.LastReload = m.lastReloadOK, m.lastReload
	s.Verdicts = make([]VerdictCount, 0, len(m.verdicts))
	for k, n := range m.verdicts {
		s.Verdicts = append(s.Verdicts, VerdictCount{Verdict: k.verdict, Conduit: k.conduit, Reason: k.reason, Proto: k.proto, Count: n})
	}
	sort.Slice(s.Verdicts, func(i, j int) bool {
		a, b := s.Verdicts[i], s.Verdicts[j]
		if a.Conduit != b.Conduit {
			return a.Conduit < b.Conduit
		}
		if a.Reason != b.Reason {
			return a.Reason < b.Reason
		}
		if a.Verdict != b.Verdict {
			return a.Verdict < b.Verdict
		}
		return a.Proto < b.Proto
	})
}

// Status returns a snapshot for the status endpoint.
func (d *Daemon) Status() Status {
	rs := d.watcher.Ruleset()
	dp := d.dp.Load() // set before the status endpoint starts; a restart replaces it
	c := dp.engine.Counters()
	s := Status{
		Version: d.cfg.Version, Board: d.profile.Name, FailMode: string(failMode(d.profile)),
		Started: d.started, Uptime: time.Since(d.started).Seconds(), Healthy: dp.fwd.Healthy(), DatapathRestarts: d.restarts.Load(), Polling: d.cfg.Poll,
		Policy: PolicyStatus{File: d.cfg.PolicyPath, Name: rs.Name(), Generation: rs.Generation(),
			Hash: rs.Hash(), Conduits: rs.NumConduits()},
		Flows: FlowStatus{Active: c.FlowsActive, Established: c.FlowsEstablished, Created: c.FlowsCreated,
			Expired: c.FlowsExpired, Evicted: c.FlowsEvicted, EstablishedEvicted: c.EstablishedEvicted,
			Revalidated: c.FlowsRevalidated, Revoked: c.FlowsRevoked, MemoryBytes: c.MemoryBytes, MemoryCap: c.MemoryCap},
		Counters: CounterStat{
			RxFrames: byPort(c.RxFrames), TxFrames: byPort(c.TxFrames), Injected: byPort(c.Injected),
			Truncated: c.Truncated, Dropped: c.Dropped(), Drops: c.DropsByName(),
			PDUs: c.PDUs, PDUsAllowed: c.PDUsAllowed, PDUsDenied: c.PDUsDenied, PDUsAlerted: c.PDUsAlerted,
			FlowsDenied: c.FlowsDenied, FlowsAlerted: c.FlowsAlerted, Resets: c.Resets, Replies: c.Replies,
			Detections: c.Detections, Events: c.EventsEmitted, Loop: loopStatus(dp.fwd.Stats()),
		},
		Events: eventStatus(d.pipe.Stats()),
		XDP:    d.xdpStatus(),
	}
	for i, p := range dp.hports {
		s.Ports = append(s.Ports, PortStatus{Role: gateway.PortID(i).String(), Name: d.ports[i],
			Up: d.linkUp[i].Load(), Stats: portIO(p.Stats())})
	}
	if d.evm != nil {
		d.evm.fill(&s)
	} else {
		s.Verdicts = []VerdictCount{}
	}
	if d.exporter != nil {
		s.Syslog = syslogStatus(d.exporter.Stats())
	}
	if d.capture != nil {
		cs := d.capture.Stats()
		s.CaptureDenied = &cs
	}
	if d.txlog != nil {
		s.Transactions = d.txlog.Stats()
	}
	return s
}

func byPort(v [2]uint64) map[string]uint64 {
	return map[string]uint64{"north": v[0], "south": v[1]}
}

// RecentFlowsShown bounds Status.RecentFlows.
const RecentFlowsShown = 20

// MaxFlowsListed bounds one GET /flows answer.
const MaxFlowsListed = 10000

// FlowList is the JSON document of GET /flows.
type FlowList struct {
	Active int                `json:"active"` // flows in the table
	Shown  int                `json:"shown"`
	Flows  []gateway.FlowInfo `json:"flows"` // most recently seen first
}

// StatusHandler serves GET /status (and /) as JSON, GET /flows (the flow
// table, most recently seen first; ?limit=N, default 100, at most
// MaxFlowsListed; ?proto=modbus|dnp3|opcua|tcp|udp|icmp and
// ?conduit=NAME filter) and GET /metrics (MetricsHandler).
func (d *Daemon) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		st := d.Status()
		st.RecentFlows = d.Engine().Flows(RecentFlowsShown) // not for /metrics: it takes every flow's lock
		_ = enc.Encode(st)
	}
	mux.HandleFunc("GET /status", js)
	mux.HandleFunc("GET /{$}", js)
	mux.HandleFunc("GET /flows", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 100
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				http.Error(w, "limit: want a positive number, not "+strconv.Quote(v), http.StatusBadRequest)
				return
			}
			limit = min(n, MaxFlowsListed)
		}
		proto, conduit := q.Get("proto"), q.Get("conduit")
		want := 0 // all flows, to filter
		if proto == "" && conduit == "" {
			want = limit
		}
		all := d.Engine().Flows(want)
		out := FlowList{Active: d.Engine().Counters().FlowsActive, Flows: make([]gateway.FlowInfo, 0, min(limit, len(all)))}
		for _, f := range all {
			if len(out.Flows) == limit {
				break
			}
			if proto != "" && f.Proto != proto && f.Transport != proto || conduit != "" && f.Conduit != conduit {
				continue
			}
			out.Flows = append(out.Flows, f)
		}
		out.Shown = len(out.Flows)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
	mux.Handle("GET /metrics", MetricsHandler(d.Status))
	return mux
}

// MetricsHandler serves the Prometheus exposition of the Status that
// snapshot returns (one call per scrape), with the Go runtime and process
// collectors, through prometheus/client_golang: label values (a policy
// name with tabs, quotes, backslashes, newlines or any other Unicode) are
// escaped as the exposition format requires. Counters end in _total.
func MetricsHandler(snapshot func() Status) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		statusCollector{snapshot})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// statusCollector turns one Status snapshot into const metrics. It is an
// unchecked collector (Describe sends nothing): the label sets (conduits,
// reasons, destinations) change with the policy and the traffic.
type statusCollector struct{ snapshot func() Status }

func (statusCollector) Describe(chan<- *prometheus.Desc) {}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	descs := map[string]*prometheus.Desc{}
	emit := func(name, help string, typ prometheus.ValueType, v float64, labels ...string) {
		names := make([]string, 0, len(labels)/2)
		vals := make([]string, 0, len(labels)/2)
		for i := 0; i+1 < len(labels); i += 2 {
			names = append(names, labels[i])
			vals = append(vals, strings.ToValidUTF8(labels[i+1], "\uFFFD"))
		}
		d, ok := descs[name]
		if !ok {
			d = prometheus.NewDesc("otgw_"+name, help, names, nil)
			descs[name] = d
		}
		ch <- prometheus.MustNewConstMetric(d, typ, v, vals...)
	}
	gauge := func(name, help string, v float64, labels ...string) {
		emit(name, help, prometheus.GaugeValue, v, labels...)
	}
	counter := func(name, help string, v uint64, labels ...string) {
		emit(name, help, prometheus.CounterValue, float64(v), labels...)
	}
	b01 := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge("up", "1 while the datapath is healthy.", b01(s.Healthy))
	counter("datapath_restarts_total", "Datapath restarts after a worker panic or stall (a new engine and flow table each).", s.DatapathRestarts)
	gauge("info", "Build, board and policy in force (value 1).", 1, "version", s.Version, "board", s.Board,
		"fail_mode", s.FailMode, "policy", s.Policy.Name, "policy_hash", s.Policy.Hash)
	gauge("policy_generation", "Generation of the ruleset in force.", float64(s.Policy.Generation))
	gauge("policy_conduits", "Conduits in the ruleset in force.", float64(s.Policy.Conduits))
	counter("policy_reloads_total", "Policy reload attempts, by result (failure: the previous ruleset stayed).", s.Policy.ReloadsOK, "result", "success")
	counter("policy_reloads_total", "", s.Policy.ReloadsFailed, "result", "failure")
	gauge("policy_last_reload_success", "1 if the latest policy reload attempt succeeded.", b01(s.Policy.LastReloadOK))
	if !s.Policy.LastReload.IsZero() {
		gauge("policy_last_reload_timestamp_seconds", "Time of the latest policy reload attempt.", float64(s.Policy.LastReload.UnixNano())/1e9)
	}
	gauge("start_time_seconds", "Start of the gateway, Unix time.", float64(s.Started.UnixNano())/1e9)
	for _, p := range s.Ports {
		gauge("link_up", "Link state of a bridge port.", b01(p.Up), "port", p.Role, "interface", p.Name)
	}
	for _, k := range []string{"north", "south"} {
		counter("rx_frames_total", "Frames received, by ingress port.", s.Counters.RxFrames[k], "port", k)
		counter("tx_frames_total", "Frames forwarded, by egress port.", s.Counters.TxFrames[k], "port", k)
		counter("injected_frames_total", "Crafted frames (resets, replies) sent, by egress port.", s.Counters.Injected[k], "port", k)
	}
	reasons := make([]string, 0, len(gateway.DropReasons()))
	for _, r := range gateway.DropReasons() {
		reasons = append(reasons, r.String())
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		counter("drops_total", "Frames not forwarded, by reason.", s.Counters.Drops[r], "reason", r)
	}
	counter("truncated_segments_total", "Segments forwarded without their denied tail.", s.Counters.Truncated)
	counter("pdus_total", "Application PDUs judged.", s.Counters.PDUs)
	counter("pdus_allowed_total", "Application PDUs allowed.", s.Counters.PDUsAllowed)
	counter("pdus_denied_total", "Application PDUs denied.", s.Counters.PDUsDenied)
	counter("pdus_alerted_total", "Application PDUs alerted (monitor mode).", s.Counters.PDUsAlerted)
	counter("flows_denied_total", "Flows denied by L3/L4 rules.", s.Counters.FlowsDenied)
	counter("flows_alerted_total", "Flows alerted by L3/L4 rules (monitor mode).", s.Counters.FlowsAlerted)
	counter("resets_total", "Connections reset by a verdict.", s.Counters.Resets)
	counter("replies_total", "Protocol-native error replies sent.", s.Counters.Replies)
	counter("detections_total", "Rate-detection alerts (scans, busy servers, unsolicited storms).", s.Counters.Detections)
	for _, v := range s.Verdicts {
		counter("verdict_events_total", "Deny and alert events delivered, by conduit, reason and protocol (aggregated repeats included).",
			v.Count, "verdict", v.Verdict, "conduit", v.Conduit, "reason", v.Reason, "proto", v.Proto)
	}
	gauge("flows_active", "Flows in the flow table.", float64(s.Flows.Active))
	gauge("flows_established", "Established allowed flows in the flow table.", float64(s.Flows.Established))
	counter("flows_created_total", "Flows created.", s.Flows.Created)
	counter("flows_evicted_total", "Flows evicted to make room.", s.Flows.Evicted)
	counter("flows_established_evicted_total", "Established allowed flows evicted to make room.", s.Flows.EstablishedEvicted)
	counter("flows_expired_total", "Flows expired by idle timeout.", s.Flows.Expired)
	gauge("inspection_memory_bytes", "Bytes of inspection state (held PDUs, reassembly).", float64(s.Flows.MemoryBytes))
	gauge("inspection_memory_cap_bytes", "Cap on inspection state.", float64(s.Flows.MemoryCap))
	if s.Flows.MemoryCap > 0 {
		gauge("inspection_memory_use_ratio", "Inspection state as a fraction of its cap.", float64(s.Flows.MemoryBytes)/float64(s.Flows.MemoryCap))
	}
	counter("events_emitted_total", "Events emitted into the pipeline.", s.Events.Emitted)
	counter("events_delivered_total", "Events handed to the exporters.", s.Events.Delivered)
	counter("events_suppressed_total", "Repeated events folded into aggregates.", s.Events.Suppressed)
	counter("events_dropped_total", "Events lost to a full pipeline queue.", s.Events.Dropped)
	gauge("events_queued", "Events waiting in the pipeline queue.", float64(s.Events.Queued))
	if x := s.Syslog; x != nil {
		gauge("syslog_spool_records", "Records in the syslog spool.", float64(x.SpoolRecords))
		gauge("syslog_spool_bytes", "Bytes of the syslog spool on disk.", float64(x.SpoolBytes))
		counter("syslog_spool_dropped_total", "Records dropped because the spool was full.", x.Dropped)
		for _, d := range x.Destinations {
			gauge("syslog_destination_up", "1 while a syslog destination is connected.", b01(d.Up), "destination", d.Name)
			gauge("syslog_destination_pending", "Spooled records not yet confirmed by a destination.", float64(d.Pending), "destination", d.Name)
			counter("syslog_destination_confirmed_total", "Records confirmed delivered to a destination.", d.Confirmed, "destination", d.Name)
			counter("syslog_destination_failures_total", "Failed dials and unconfirmed batches of a destination.", d.Failures, "destination", d.Name)
		}
	}
	counter("transactions_total", "Transaction records of conduits with log: transactions.", s.Transactions.Records)
	counter("transactions_rate_limited_total", "Allowed requests of logged conduits not logged: over the transaction rate.", s.Transactions.RateLimited)
	counter("transactions_unanswered_total", "Logged requests forgotten before their response came (too many outstanding).", s.Transactions.Unanswered)
	gauge("transactions_pending", "Logged requests waiting for their response.", float64(s.Transactions.Pending))
	if x := s.CaptureDenied; x != nil {
		counter("capture_denied_frames_total", "Denied frames written to the --capture-denied files.", x.Frames)
		counter("capture_denied_bytes_total", "Bytes written to the --capture-denied files.", x.Bytes)
		counter("capture_denied_dropped_total", "Denied frames not captured, by reason (queue_full: the writer was behind; write_error).", x.Dropped, "reason", "queue_full")
		counter("capture_denied_dropped_total", "", x.WriteErrors, "reason", "write_error")
		counter("capture_denied_files_total", "Capture files opened.", x.Files)
		counter("capture_denied_files_removed_total", "Old capture files removed to stay within the size and count bounds.", x.Removed)
		gauge("capture_denied_queued", "Denied frames waiting for the capture writer.", float64(x.Queued))
	}
	collectXDP(s.XDP, gauge, counter)
	for _, p := range s.Ports {
		counter("port_kernel_drops_total", "Frames the kernel dropped (socket buffer full), by port.", p.Stats.KernelDrops, "port", p.Role)
		counter("port_tx_errors_total", "Frames a port refused to send, by port.", p.Stats.TxErrors, "port", p.Role)
		counter("port_tx_dropped_total", "Frames of a write the device did not take, down or not in time (AF_XDP), by port.", p.Stats.TxDropped, "port", p.Role)
	}
}
