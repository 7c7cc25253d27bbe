package replay

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// The what-if evaluation (Options.WhatIf).
//
// An enforcing gateway resets (or, with action drop, blocks) a connection
// at its first denied PDU, so everything the client sends after it is
// dropped as "closed" or "blocked" and never judged: on a capture of a
// plant, a read-only policy's enforce-mode replay would list one deny per
// connection where the policy refuses every write. To answer "what would
// fail", Run feeds every frame, as captured, to a second engine (the
// shadow) whose ruleset is the same policy with every conduit in monitor
// mode (rules.Ruleset.WithMode): it forwards everything and judges every
// PDU, as a monitor-mode replay does. After each frame, settle pairs the
// shadow's refusals with the enforcing engine's events of the same frame
// (same reason, conduit, rule, endpoints and PDU fields):
//
//   - a pair is a refusal the gateway on the wire makes itself (the deny
//     that resets); its event is reported as the engine made it;
//   - a refusal with no pair is one the enforcing gateway never judged:
//     it is reported as a deny with the policy's reason and AfterReset
//     (after_reset in the record), in place of the normaliser drop
//     ("closed", "blocked", "no_flow") the enforcing engine reported for
//     that frame;
//   - the other events of the enforcing engine are reported as they are:
//     normaliser drops of frames that carry no refused PDU are the
//     traffic the resets cut, and denies with no pair (a response to a
//     request the gateway dropped) are consequences of enforcement, not
//     refusals of the policy.
//
// Report.WhatIf counts both sides. The set of refusals is, by
// construction, the set of alerts of a monitor-mode replay of the same
// frames (TestWhatIfEqualsMonitor checks it on random policies and
// captures).

// Kinds of events of the enforcing engine.
const (
	evPolicy     = iota // a ruleset verdict: deny or alert
	evNormaliser        // a frame the normaliser refused (closed, blocked...)
	evDetection         // a rate detection alert
)

// pendingEvent is an event of the current frame waiting for settle.
type pendingEvent struct {
	ev      *Event
	kind    int
	flow    uint64 // engine flow id (0: none)
	pdu     bool
	matched bool
}

// discardTx is the shadow's port pair: nothing it sends is kept.
type discardTx struct{}

func (discardTx) Send(gateway.PortID, []byte) {}

// onShadow is the shadow engine's hook (on runShadow's goroutine): it
// keeps the refusals of the frame it judges (alerts, the shadow being in
// monitor mode everywhere) and counts allowed PDUs.
func (r *runner) onShadow(d *gateway.Decision) {
	if r.lazy != nil && r.lazy.catching {
		return // a catch-up (lazy.go): its verdicts were settled as skipped
	}
	r.shadowVerdict(r.sp.cur, d)
}

// shadowVerdict keeps the refusal or allowed PDU of shadow decision d
// about the frame of j.
func (r *runner) shadowVerdict(j *shadowJob, d *gateway.Decision) {
	if d.Detection != "" || !d.HasVerdict {
		return // rate detections are reported by the enforcing engine; monitor mode drops nothing
	}
	v := &d.Verdict
	if v.Action == rules.Allow {
		if d.PDU != nil {
			j.allowedS++
		}
		return
	}
	ev := r.verdictEvent(d, &j.fc, nil)
	// The mode and verdict of the user's policy, not of the shadow.
	mode := r.rs.Mode()
	if v.Conduit >= 0 && v.Conduit < r.rs.NumConduits() {
		mode = r.rs.ConduitMode(v.Conduit)
	}
	ev.Mode = mode.String()
	ev.Verdict = "deny"
	if mode == rules.ModeMonitor {
		ev.Verdict = "alert"
	}
	ev.DenyAction = ""
	j.refusals = append(j.refusals, pendingEvent{ev: ev, kind: evPolicy, flow: d.FlowID, pdu: d.PDU != nil})
}

// sameRefusal reports whether a (enforcing engine) and s (shadow) are the
// same decision about the same PDU or flow.
func sameRefusal(a, s *Event) bool {
	return a.Reason == s.Reason && a.Conduit == s.Conduit && a.Rule == s.Rule && a.Proto == s.Proto &&
		a.Src == s.Src && a.Dst == s.Dst && reflect.DeepEqual(a.Fields, s.Fields)
}

// settle reports the events of a frame both engines have judged (j: what
// each made of it), in frame order.
func (r *runner) settle(j *shadowJob) {
	wi := r.wi
	synthetic := j.fc.cur.Index == 0
	var after []*Event
	for i := range j.refusals {
		s := &j.refusals[i]
		m := -1
		for k := range j.frameEvs {
			e := &j.frameEvs[k]
			if !e.matched && e.kind == evPolicy && sameRefusal(e.ev, s.ev) {
				m = k
				break
			}
		}
		if m >= 0 {
			j.frameEvs[m].matched = true
			j.frameEvs[m].ev.Refused = true
			wi.refuse(j.frameEvs[m].ev, false)
			continue
		}
		ev := s.ev
		ev.AfterReset, ev.Refused = true, true
		switch {
		case j.sent && j.sentLen == j.orig:
			ev.Action = "forward"
		case j.injected > 0:
			ev.Action = "inject"
		default:
			ev.Action = "drop"
		}
		wi.refuse(ev, true)
		after = append(after, ev)
	}
	cut := ""
	for i := range j.frameEvs {
		e := &j.frameEvs[i]
		switch {
		case e.kind == evNormaliser:
			if len(after) > 0 {
				continue // replaced by the refusals it hid
			}
			if cut == "" {
				cut = e.ev.Reason
			}
		case e.kind == evPolicy:
			if !e.matched {
				wi.consequence(e.ev)
			}
			if e.ev.Verdict == "deny" && (e.pdu || strings.HasPrefix(e.ev.Reason, "evasion")) {
				wi.cutConn(e.flow)
			}
		}
		r.emit(e.ev)
	}
	for _, ev := range after {
		r.emit(ev)
	}
	if !synthetic {
		if cut != "" {
			wi.cutFrame(cut)
		}
		if j.allowedS > j.allowedE {
			wi.CutAllowedPDUs += j.allowedS - j.allowedE
		}
	}
	clear(j.frameEvs)
	clear(j.refusals)
	j.frameEvs, j.refusals = j.frameEvs[:0], j.refusals[:0]
}

// WhatIf is the outcome of the what-if evaluation (Options.WhatIf): what
// the policy refuses, every PDU and flow of the captures judged, and,
// apart from it, the traffic that enforcing it would cut.
type WhatIf struct {
	// Refused counts every PDU and flow the policy refuses: Requests
	// (PDUs of the request direction: the requests that would fail),
	// Responses (responses and unsolicited messages) and Flows
	// (connections, datagrams and frames refused below the application
	// layer: no conduit, port, ethertype).
	Refused   int `json:"refused"`
	Requests  int `json:"requests"`
	Responses int `json:"responses"`
	Flows     int `json:"flows"`
	// DistinctRequests counts the distinct requests among Requests: same
	// client address, server, conduit, function and target (Modbus unit,
	// addresses, quantities and sub-function; DNP3 link addresses and
	// objects; OPC UA service and nodes), whatever the values written.
	DistinctRequests int `json:"distinct_requests"`
	// Of Refused: OnWire were refused by the enforcing gateway itself
	// (the denies that reset); AfterReset it never judged, because an
	// earlier deny had reset or blocked the connection (or it was never
	// admitted).
	OnWire     int `json:"on_wire"`
	AfterReset int `json:"after_reset"`
	// Conduits counts the conduits with a refusal ("" included).
	Conduits int `json:"conduits"`
	// ByFunction groups the refusals per conduit and function, most
	// refusals first.
	ByFunction []RefusedGroup `json:"by_function"`

	// ConnectionsCut counts the connections the enforcing gateway reset
	// (or, action drop, blocked) at a denied PDU or an evasion.
	ConnectionsCut int `json:"connections_cut"`
	// CutFrames counts the captured frames that the enforcing gateway
	// dropped without a verdict of the policy (closed, blocked,
	// no_flow...) and that carry no refused PDU, by reason in
	// CutByReason: the traffic the resets cut, together with any frames
	// the normaliser refuses on its own. They are the normaliser-drop
	// events OnEvent still receives.
	CutFrames   int     `json:"cut_frames"`
	CutByReason []Count `json:"cut_by_reason"`
	// CutAllowedPDUs counts PDUs the policy allows that the enforcing
	// gateway did not judge (and so never delivered): requests and
	// responses lost with the connections it cut.
	CutAllowedPDUs int `json:"cut_allowed_pdus"`
	// Consequences counts denies of the enforcing gateway that the policy
	// alone would not make (e.g. a response to a request it dropped), by
	// reason in ConsequencesByReason.
	Consequences         int     `json:"consequences"`
	ConsequencesByReason []Count `json:"consequences_by_reason,omitempty"`
}

// RefusedGroup is one conduit and function with refusals.
type RefusedGroup struct {
	Conduit  string `json:"conduit"` // "" for traffic no conduit joins
	Mode     string `json:"mode"`    // the conduit's mode in the policy
	Proto    string `json:"proto"`
	Function string `json:"function"` // e.g. "write_single_coil (5)", "direct_operate (5)", "write", "connection"
	Dir      string `json:"dir,omitempty"`
	// N refusals, Distinct of them distinct requests; AfterReset of them
	// never judged by the enforcing gateway.
	N          int     `json:"n"`
	Distinct   int     `json:"distinct"`
	AfterReset int     `json:"after_reset"`
	Reasons    []Count `json:"reasons"`
	// First is the first refusal: capture file and frame.
	File  string `json:"file,omitempty"`
	Frame int    `json:"frame"`
}

type groupKey struct{ conduit, proto, function, dir string }

type groupAcc struct {
	g        RefusedGroup
	distinct map[string]bool
	reasons  map[string]int
}

// whatIf accumulates WhatIf during a run.
type whatIf struct {
	WhatIf
	groups   map[groupKey]*groupAcc
	order    []groupKey
	distinct map[string]bool
	conns    map[uint64]bool
	cut      map[string]int
	conseq   map[string]int
}

func newWhatIf() *whatIf {
	return &whatIf{groups: map[groupKey]*groupAcc{}, distinct: map[string]bool{}, conns: map[uint64]bool{},
		cut: map[string]int{}, conseq: map[string]int{}}
}

func (w *whatIf) refuse(ev *Event, afterReset bool) {
	w.Refused++
	if afterReset {
		w.AfterReset++
	} else {
		w.OnWire++
	}
	fn, dir, target := describe(ev)
	switch dir {
	case "request":
		w.Requests++
	case "response":
		w.Responses++
	default:
		w.Flows++
	}
	k := groupKey{ev.Conduit, ev.Proto, fn, dir}
	a := w.groups[k]
	if a == nil {
		a = &groupAcc{g: RefusedGroup{Conduit: ev.Conduit, Mode: ev.Mode, Proto: ev.Proto, Function: fn, Dir: dir, File: ev.File, Frame: ev.Frame},
			distinct: map[string]bool{}, reasons: map[string]int{}}
		w.groups[k] = a
		w.order = append(w.order, k)
	}
	a.g.N++
	if afterReset {
		a.g.AfterReset++
	}
	a.reasons[ev.Reason]++
	id := ev.Src.Addr().String() + ">" + ev.Dst.String() + "|" + target
	a.distinct[id] = true
	if dir == "request" {
		w.distinct[ev.Conduit+"|"+ev.Proto+"|"+fn+"|"+id] = true
	}
}

func (w *whatIf) consequence(ev *Event) {
	w.Consequences++
	w.conseq[ev.Reason]++
}

func (w *whatIf) cutConn(flow uint64) {
	if flow != 0 {
		w.conns[flow] = true
	}
}

func (w *whatIf) cutFrame(reason string) {
	w.CutFrames++
	w.cut[reason]++
}

func (w *whatIf) finish() *WhatIf {
	out := w.WhatIf
	out.DistinctRequests = len(w.distinct)
	out.ConnectionsCut = len(w.conns)
	out.CutByReason = sortCounts(w.cut)
	if len(w.conseq) > 0 {
		out.ConsequencesByReason = sortCounts(w.conseq)
	}
	conduits := map[string]bool{}
	out.ByFunction = []RefusedGroup{}
	for _, k := range w.order {
		a := w.groups[k]
		a.g.Distinct = len(a.distinct)
		a.g.Reasons = sortCounts(a.reasons)
		out.ByFunction = append(out.ByFunction, a.g)
		conduits[k.conduit] = true
	}
	out.Conduits = len(conduits)
	sort.SliceStable(out.ByFunction, func(i, j int) bool {
		a, b := out.ByFunction[i], out.ByFunction[j]
		if a.N != b.N {
			return a.N > b.N
		}
		if a.Conduit != b.Conduit {
			return a.Conduit < b.Conduit
		}
		return a.Function < b.Function
	})
	return &out
}

// describe names the function of a refused PDU or flow for people, its
// direction ("request", "response"; "" for a flow) and its target (what
// tells two requests of the same function apart, values excluded).
func describe(ev *Event) (function, dir, target string) {
	f := ev.Fields
	dir, _ = f["dir"].(string)
	if dir == "" {
		switch ev.Proto {
		case "tcp", "udp", "modbus", "dnp3", "opcua":
			return "connection", "", ""
		case "l2":
			return "ethertype 0x" + strconv.FormatUint(uint64(ev.Net.EtherType), 16), "", ""
		case "icmp":
			return "icmp type " + strconv.Itoa(int(ev.Net.ICMPType)), "", ""
		}
		return ev.Proto, "", ""
	}
	num := func(k string) (int, bool) {
		v, ok := f[k].(int)
		return v, ok
	}
	var tb strings.Builder
	for _, k := range []string{"unit", "addr", "qty", "write_addr", "write_qty", "sub", "link_src", "link_dst", "msg_type"} {
		if v, ok := f[k]; ok {
			fmt.Fprintf(&tb, "%s=%v ", k, v)
		}
	}
	switch ev.Proto {
	case "modbus":
		fc, _ := num("fc")
		function = modbus.FunctionName(uint8(fc)) + " (" + strconv.Itoa(fc) + ")"
		if sub, ok := num("sub"); ok {
			function = modbus.FunctionName(uint8(fc)) + " (" + strconv.Itoa(fc) + "/" + strconv.Itoa(sub) + ")"
		}
	case "dnp3":
		if fc, ok := num("fc"); ok {
			function = dnp3.FunctionCode(fc).String() + " (" + strconv.Itoa(fc) + ")"
		} else {
			function = "link frame"
		}
		if objs, ok := f["objects"].([]dnp3.Object); ok {
			for _, o := range objs {
				fmt.Fprintf(&tb, "g%dv%d ", o.Group, o.Variation)
			}
		}
	case "opcua":
		mt, _ := f["msg_type"].(string)
		function = mt
		if id, ok := num("service"); ok && id >= 0 {
			function = "service " + strconv.Itoa(id)
			if s, resp, ok := opcua.ServiceByTypeID(uint32(id)); ok && s.String() != "" {
				function = s.String()
				if resp {
					function += "_response"
				}
			}
		}
		if nodes, ok := f["nodes"].([]string); ok {
			tb.WriteString(strings.Join(nodes, ","))
		}
	default:
		function = ev.Proto
	}
	if a, ok := f["anomaly"].(string); ok {
		fmt.Fprintf(&tb, "anomaly=%s", a)
	}
	return function, dir, tb.String()
}

// Headline is the count a plant engineer needs first: how many requests
// (and how many distinct ones) the policy refuses, on how many conduits.
func (w *WhatIf) Headline() string {
	if w.Refused == 0 {
		return "the policy refuses nothing in these captures"
	}
	s := fmt.Sprintf("the policy refuses %s (%d distinct)", plural(w.Requests, "request"), w.DistinctRequests)
	if w.Responses > 0 {
		s += ", " + plural(w.Responses, "response")
	}
	if w.Flows > 0 {
		s += ", " + plural(w.Flows, "connection or packet", "connections or packets")
	}
	return s + fmt.Sprintf(" on %s: %d reported by the gateway on the wire, %d only after the deny that reset or blocked their connection",
		plural(w.Conduits, "conduit"), w.OnWire, w.AfterReset)
}

// Cuts reports whether enforcing the policy cuts anything beyond its
// refusals (false for a policy in monitor mode).
func (w *WhatIf) Cuts() bool {
	return w.ConnectionsCut > 0 || w.CutFrames > 0 || w.CutAllowedPDUs > 0 || w.Consequences > 0
}

// CutLine says what enforcing the policy cuts beyond what it refuses.
func (w *WhatIf) CutLine() string {
	s := fmt.Sprintf("enforcing it resets or blocks %s and with them cuts %s the policy allows",
		plural(w.ConnectionsCut, "connection"), plural(w.CutAllowedPDUs, "PDU"))
	if w.CutFrames > 0 {
		parts := make([]string, len(w.CutByReason))
		for i, c := range w.CutByReason {
			parts[i] = fmt.Sprintf("%s %d", c.Name, c.N)
		}
		s += fmt.Sprintf("; %s without a refused PDU dropped (%s)", plural(w.CutFrames, "frame"), strings.Join(parts, ", "))
	}
	if w.Consequences > 0 {
		s += fmt.Sprintf("; %s follow from enforcement alone (%s)", plural(w.Consequences, "further deny", "further denies"), countList(w.ConsequencesByReason))
	}
	return s
}

// plural renders n with the singular or plural noun (default: noun+"s").
func plural(n int, noun string, pl ...string) string {
	if n == 1 {
		return "1 " + noun
	}
	if len(pl) > 0 {
		return strconv.Itoa(n) + " " + pl[0]
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// maxGroupLines bounds the per-function table of the text summary
// (report.json has every group).
const maxGroupLines = 40

func (w *WhatIf) write(bw io.Writer) {
	fmt.Fprintf(bw, "what-if: %s\n", w.Headline())
	if w.Cuts() {
		fmt.Fprintf(bw, "what-if: %s\n", w.CutLine())
	}
	if len(w.ByFunction) == 0 {
		fmt.Fprintln(bw)
		return
	}
	fmt.Fprintln(bw, "\nrefused, per conduit and function:")
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  REFUSED\tDISTINCT\tAFTER RESET\tCONDUIT\tFUNCTION\tREASONS\tFIRST")
	for i, g := range w.ByFunction {
		if i == maxGroupLines {
			fmt.Fprintf(tw, "  ... %d more groups in report.json\n", len(w.ByFunction)-i)
			break
		}
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%s\t%s\t%s:%d\n", g.N, g.Distinct, g.AfterReset, orNone(g.Conduit), g.FunctionLabel(), g.ReasonList(), g.File, g.Frame)
	}
	tw.Flush()
	fmt.Fprintln(bw)
}

// FunctionLabel is the function with its protocol and, for responses,
// the direction ("modbus write_single_coil (5)").
func (g RefusedGroup) FunctionLabel() string {
	s := g.Function
	if g.Function != g.Proto && g.Function != "connection" {
		s = g.Proto + " " + s
	} else if g.Function == "connection" {
		s = g.Proto + " connection"
	}
	if g.Dir == "response" {
		s += " response"
	}
	return s
}

// ReasonList lists the reasons, with counts when there are several.
func (g RefusedGroup) ReasonList() string { return countList(g.Reasons) }

func orNone(conduit string) string {
	if conduit == "" {
		return "(no conduit)"
	}
	return conduit
}

func countList(cs []Count) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Name
		if len(cs) > 1 {
			parts[i] += " " + strconv.Itoa(c.N)
		}
	}
	return strings.Join(parts, ", ")
}
