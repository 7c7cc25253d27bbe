package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/hal"
)

// Status is the JSON document of the status endpoint (GET /status).
type Status struct {
	Version  string       `json:"version"`
	Board    string       `json:"board"`
	FailMode string       `json:"fail_mode"`
	Started  time.Time    `json:"started"`
	Uptime   float64      `json:"uptime_seconds"`
	Healthy  bool         `json:"healthy"`
	Policy   PolicyStatus `json:"policy"`
	Ports    []PortStatus `json:"ports"`
	Flows    FlowStatus   `json:"flows"`
	// RecentFlows are the flows seen last (at most RecentFlowsShown); GET
	// /flows lists the table.
	RecentFlows []gateway.FlowInfo   `json:"recent_flows"`
	Counters    CounterStat          `json:"counters"`
	Events      events.PipelineStats `json:"events"`
}

// PolicyStatus identifies the policy in force.
type PolicyStatus struct {
	File       string `json:"file"`
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Hash       string `json:"hash"`
	Conduits   int    `json:"conduits"`
}

// PortStatus is one bridge port.
type PortStatus struct {
	Role  string        `json:"role"` // north | south
	Name  string        `json:"name"`
	Up    bool          `json:"link_up"`
	Stats hal.PortStats `json:"stats"`
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
	Loop         ForwarderStats    `json:"loop"`
}

// Status returns a snapshot for the status endpoint.
func (d *Daemon) Status() Status {
	rs := d.watcher.Ruleset()
	dp := d.dp.Load() // set before the status endpoint starts; a restart replaces it
	c := dp.engine.Counters()
	s := Status{
		Version: d.cfg.Version, Board: d.profile.Name, FailMode: string(failMode(d.profile)),
		Started: d.started, Uptime: time.Since(d.started).Seconds(), Healthy: dp.fwd.Healthy(),
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
			Detections: c.Detections, Events: c.EventsEmitted, Loop: dp.fwd.Stats(),
		},
		Events: d.pipe.Stats(),
	}
	for i, p := range dp.hports {
		s.Ports = append(s.Ports, PortStatus{Role: gateway.PortID(i).String(), Name: d.ports[i],
			Up: d.linkUp[i].Load(), Stats: p.Stats()})
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
// ?conduit=NAME filter) and GET /metrics in the Prometheus text exposition
// format (version 0.0.4).
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		WriteMetrics(w, d.Status())
	})
	return mux
}

// WriteMetrics writes s in the Prometheus text format: counters end in
// _total, gauges do not; labels port, reason.
func WriteMetrics(w io.Writer, s Status) {
	var b strings.Builder
	metric := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP otgw_%s %s\n# TYPE otgw_%s %s\n", name, help, name, typ)
	}
	boolv := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	metric("up", "gauge", "1 while the datapath is healthy.")
	fmt.Fprintf(&b, "otgw_up %d\n", boolv(s.Healthy))
	metric("info", "gauge", "Build, board and policy in force.")
	fmt.Fprintf(&b, "otgw_info{version=%q,board=%q,fail_mode=%q,policy=%q,policy_hash=%q} 1\n",
		s.Version, s.Board, s.FailMode, s.Policy.Name, s.Policy.Hash)
	metric("policy_generation", "gauge", "Generation of the ruleset in force.")
	fmt.Fprintf(&b, "otgw_policy_generation %d\n", s.Policy.Generation)
	metric("uptime_seconds", "gauge", "Seconds since start.")
	fmt.Fprintf(&b, "otgw_uptime_seconds %.3f\n", s.Uptime)
	metric("link_up", "gauge", "Link state of a bridge port.")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "otgw_link_up{port=%q,interface=%q} %d\n", p.Role, p.Name, boolv(p.Up))
	}
	perPort := func(name, help string, v map[string]uint64) {
		metric(name, "counter", help)
		for _, k := range []string{"north", "south"} {
			fmt.Fprintf(&b, "otgw_%s{port=%q} %d\n", name, k, v[k])
		}
	}
	perPort("rx_frames_total", "Frames received, by ingress port.", s.Counters.RxFrames)
	perPort("tx_frames_total", "Frames forwarded, by egress port.", s.Counters.TxFrames)
	perPort("injected_frames_total", "Crafted frames (resets, replies) sent, by egress port.", s.Counters.Injected)
	metric("drops_total", "counter", "Frames not forwarded, by reason.")
	reasons := make([]string, 0, len(gateway.DropReasons()))
	for _, r := range gateway.DropReasons() {
		reasons = append(reasons, r.String())
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(&b, "otgw_drops_total{reason=%q} %d\n", r, s.Counters.Drops[r])
	}
	simple := func(name, typ, help string, v any) {
		metric(name, typ, help)
		fmt.Fprintf(&b, "otgw_%s %v\n", name, v)
	}
	simple("truncated_segments_total", "counter", "Segments forwarded without their denied tail.", s.Counters.Truncated)
	simple("pdus_total", "counter", "Application PDUs judged.", s.Counters.PDUs)
	simple("pdus_allowed_total", "counter", "Application PDUs allowed.", s.Counters.PDUsAllowed)
	simple("pdus_denied_total", "counter", "Application PDUs denied.", s.Counters.PDUsDenied)
	simple("pdus_alerted_total", "counter", "Application PDUs alerted (monitor mode).", s.Counters.PDUsAlerted)
	simple("flows_denied_total", "counter", "Flows denied by L3/L4 rules.", s.Counters.FlowsDenied)
	simple("resets_total", "counter", "Connections reset by a verdict.", s.Counters.Resets)
	simple("replies_total", "counter", "Protocol-native error replies sent.", s.Counters.Replies)
	simple("detections_total", "counter", "Rate-detection alerts (scans, busy servers, unsolicited storms).", s.Counters.Detections)
	simple("flows_active", "gauge", "Flows in the flow table.", s.Flows.Active)
	simple("flows_established", "gauge", "Established allowed flows in the flow table.", s.Flows.Established)
	simple("flows_created_total", "counter", "Flows created.", s.Flows.Created)
	simple("flows_evicted_total", "counter", "Flows evicted to make room.", s.Flows.Evicted)
	simple("flows_expired_total", "counter", "Flows expired by idle timeout.", s.Flows.Expired)
	simple("inspection_memory_bytes", "gauge", "Bytes of inspection state.", s.Flows.MemoryBytes)
	simple("inspection_memory_cap_bytes", "gauge", "Cap on inspection state.", s.Flows.MemoryCap)
	simple("events_emitted_total", "counter", "Events emitted into the pipeline.", s.Events.Emitted)
	simple("events_dropped_total", "counter", "Events lost to a full queue.", s.Events.Dropped)
	metric("port_kernel_drops_total", "counter", "Frames the kernel dropped (socket buffer full), by port.")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "otgw_port_kernel_drops_total{port=%q} %d\n", p.Role, p.Stats.KernelDrops)
	}
	metric("port_tx_errors_total", "counter", "Frames a port refused to send, by port.")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "otgw_port_tx_errors_total{port=%q} %d\n", p.Role, p.Stats.TxErrors)
	}
	_, _ = io.WriteString(w, b.String())
}
