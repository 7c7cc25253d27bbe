package replay

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// Limits of report.html. The page stays readable for learned policies
// with hundreds of conduits: the diagram draws one line per zone pair (not
// per conduit), and the tables say how much they show.
const (
	// MaxHTMLRows bounds the rows of the timeline table; a notice above it
	// says how many are shown and where the rest are (report.json).
	MaxHTMLRows = 2000
	// MaxDiagramPairs bounds the zone pairs drawn as lines in the
	// diagram; above it (a learned policy joins most zones to most
	// others) a from/to matrix shows them, which stays legible where a
	// complete graph of lines would not.
	MaxDiagramPairs = 12
	// conduitsOpen: the per-conduit table starts expanded up to this many.
	conduitsOpen = 100
	// refusedShown: what-if groups shown before the rest are collapsed.
	refusedShown = 10
)

type svgBox struct {
	X, Y, W, H int
	Name, Sub  string
	Fill       string
}

// svgLine is one zone pair's line; its label is placed where it collides
// with no other label and no zone box (LabelW 0: no room, the pair is in
// the table).
type svgLine struct {
	X1, Y1, X2, Y2 int
	Path           string // a loop for a pair within one column
	Label, Title   string
	LX, LY, LW, LH int
	Color          string
	Width          int
}

type svgTick struct {
	X, Y   int
	Color  string
	Title  string
	Height int
}

// zonePair groups the conduits between two zones.
type zonePair struct {
	From, To                           string
	Conduits                           []string
	Enforce, Monitor                   int
	PDUsAllowed, PDUsDenied, PDUsAlert int
	FlowsDenied, PacketsDropped        int
}

// Denied is every refusal of the pair (PDUs, flows, dropped packets).
func (p *zonePair) Denied() int { return p.PDUsDenied + p.FlowsDenied }

// timelineRow is one timeline event with its PDU details and view classes.
type timelineRow struct {
	Event
	Details string
	Class   string // view classes: w (on the wire), r (refused by the policy), ar (after reset), m (monitor alert)
}

// modeSummary is the enforce/monitor view: conduits per mode and what
// each mode did.
type modeSummary struct {
	Mode                          string
	Conduits                      int
	PDUsAllowed, Denied, Alerted  int
	PacketsForwarded, PacketsDrop int
}

type htmlData struct {
	R          *Report
	Files      string
	Boxes      []svgBox
	Lines      []svgLine
	DiagW      int
	DiagH      int
	Pairs      []*zonePair
	PairsDrawn bool
	Unlabeled  int
	Modes      []modeSummary
	Ticks      []svgTick
	TLW        int
	TLStart    string
	TLEnd      string
	Rows       []timelineRow
	Views      [5]int // rows in each view: all, wire, refused, after reset, alerts
	Notice     string
	Generated  string
	Sorted     []*ConduitStats
	OpenTable  bool
	MaxPairs   int
	// Matrix and MatrixCols: the zone pairs as a from/to matrix, when
	// there are too many to draw.
	Matrix     []matrixRow
	MatrixCols []string
	// RefusedHead are the first refusedShown groups of the what-if
	// table, RefusedRest the others (collapsed).
	RefusedHead, RefusedRest []RefusedGroup
}

// WriteHTML writes a self-contained page (no external assets): what
// would fail, the totals, a zone diagram grouped by zone pair with a
// zone-pair table, enforce/monitor and per-conduit tables, and a
// timeline of denies and alerts with their PDU details and views (on the
// wire, refused by the policy, after reset, monitor alerts).
func (rep *Report) WriteHTML(w io.Writer) error {
	d := htmlData{R: rep, Files: strings.Join(baseNames(rep.Files), ", "), Generated: time.Now().UTC().Format(time.RFC3339), MaxPairs: MaxDiagramPairs}
	rep.zonePairs(&d)
	rep.diagram(&d)
	rep.modes(&d)
	rep.timeline(&d)
	d.Sorted = append([]*ConduitStats(nil), rep.Conduits...)
	sort.SliceStable(d.Sorted, func(i, j int) bool {
		a, b := d.Sorted[i], d.Sorted[j]
		return a.PDUsDenied+a.FlowsDenied+a.PDUsAlerted > b.PDUsDenied+b.FlowsDenied+b.PDUsAlerted
	})
	d.OpenTable = len(d.Sorted) <= conduitsOpen
	if w := rep.WhatIf; w != nil {
		n := min(len(w.ByFunction), refusedShown)
		d.RefusedHead, d.RefusedRest = w.ByFunction[:n], w.ByFunction[n:]
	}
	return htmlTmpl.Execute(w, &d)
}

// zoneOf maps policy names (zones and assets) to their zone.
func (rep *Report) zoneOf() map[string]string {
	m := map[string]string{}
	for _, z := range rep.Zones {
		m[z.Name] = z.Name
		for _, a := range z.Assets {
			m[a] = z.Name
		}
	}
	return m
}

// zonePairs groups the conduits by (from zone, to zone); a conduit whose
// ends name several zones counts in each pair.
func (rep *Report) zonePairs(d *htmlData) {
	zone := rep.zoneOf()
	idx := map[[2]string]*zonePair{}
	for _, c := range rep.Conduits {
		if c.Name == "" || len(c.From) == 0 || len(c.To) == 0 {
			continue
		}
		seen := map[[2]string]bool{}
		for _, f := range c.From {
			for _, t := range c.To {
				k := [2]string{orOther(zone[f], f), orOther(zone[t], t)}
				if seen[k] {
					continue
				}
				seen[k] = true
				p := idx[k]
				if p == nil {
					p = &zonePair{From: k[0], To: k[1]}
					idx[k] = p
					d.Pairs = append(d.Pairs, p)
				}
				p.Conduits = append(p.Conduits, c.Name)
				if c.Mode == "monitor" {
					p.Monitor++
				} else {
					p.Enforce++
				}
				p.PDUsAllowed += c.PDUsAllowed
				p.PDUsDenied += c.PDUsDenied
				p.PDUsAlert += c.PDUsAlerted
				p.FlowsDenied += c.FlowsDenied
				p.PacketsDropped += c.PacketsDropped
			}
		}
	}
	sort.SliceStable(d.Pairs, func(i, j int) bool {
		a, b := d.Pairs[i], d.Pairs[j]
		if a.Denied() != b.Denied() {
			return a.Denied() > b.Denied()
		}
		return len(a.Conduits) > len(b.Conduits)
	})
}

// orOther names an end that is neither a zone nor an asset of one (a
// network written in the conduit).
func orOther(zone, name string) string {
	if zone != "" {
		return zone
	}
	return name
}

type rect struct{ x, y, w, h int }

func (a rect) overlaps(b rect) bool {
	return a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h
}

// Label metrics: labels are set in a monospace font, so their width is
// known before a browser renders them (DejaVu Sans Mono advances 0.602 em:
// 6.6 px at 11 px; 7 is a safe bound).
const (
	labelFont  = 11
	labelCharW = 7
	labelH     = 15
)

// diagram lays zones out in three columns (north, unbound, south) and
// draws one line per zone pair, labelled with its conduit and deny
// counts; labels are placed along their line, or nudged away from it,
// where they overlap no other label and no zone box.
func (rep *Report) diagram(d *htmlData) {
	if len(d.Pairs) > MaxDiagramPairs {
		d.matrix()
		return
	}
	d.PairsDrawn = true
	type pos struct{ x, y int }
	at := map[string]pos{}
	var cols [3][]ZoneInfo
	for _, z := range rep.Zones {
		switch strings.ToLower(z.Port) {
		case "north":
			cols[0] = append(cols[0], z)
		case "south":
			cols[2] = append(cols[2], z)
		default:
			cols[1] = append(cols[1], z)
		}
	}
	// Ends that are no zone (networks) sit in the middle column.
	for _, p := range d.Pairs {
		for _, n := range []string{p.From, p.To} {
			if !rep.isZone(n) {
				if _, ok := at[n]; !ok {
					at[n] = pos{-1, -1}
					cols[1] = append(cols[1], ZoneInfo{Name: n})
				}
			}
		}
	}
	const bw, bh, colW = 220, 60, 360
	rowH := bh + 50 // room between boxes for labels
	maxRows := 1
	var obstacles []rect
	// The unbound column starts below the rows of the port columns, so
	// that lines between north and south do not cross its boxes.
	midTop := 40
	if len(cols[1]) > 0 && len(cols[0])+len(cols[2]) > 0 {
		midTop = 40 + max(len(cols[0]), len(cols[2]))*rowH
	}
	for ci, col := range cols {
		for i, z := range col {
			x, y := 20+ci*colW, 40+i*rowH
			if ci == 1 {
				y = midTop + i*rowH
			}
			sub := strings.Join(z.Networks, " ")
			if len(sub) > 34 {
				sub = sub[:31] + "..."
			}
			fill := "#e8f0fe"
			if ci == 2 {
				fill = "#e6f4ea"
			} else if ci == 1 {
				fill = "#f1f3f4"
			}
			port := orDash(z.Port)
			if !rep.isZone(z.Name) {
				port = "not a zone"
			}
			d.Boxes = append(d.Boxes, svgBox{X: x, Y: y, W: bw, H: bh, Name: clip(z.Name, 22) + " (" + port + ")", Sub: sub, Fill: fill})
			at[z.Name] = pos{x, y}
			obstacles = append(obstacles, rect{x, y, bw, bh})
			maxRows = max(maxRows, (y-40)/rowH+1)
		}
	}
	d.DiagW, d.DiagH = 40+3*colW, 60+maxRows*rowH
	var placed []rect
	for i, p := range d.Pairs {
		a, ok1 := at[p.From]
		b, ok2 := at[p.To]
		if !ok1 || !ok2 {
			continue
		}
		color, width := "#5f6368", 1
		if p.Denied() > 0 {
			color, width = "#d93025", 2
		} else if p.PDUsAlert > 0 {
			color, width = "#f29900", 2
		}
		off := (i%7)*6 - 18 // spread the ends of lines sharing a box
		l := svgLine{Color: color, Width: width, Title: p.From + " → " + p.To + ": " + strings.Join(firstN(p.Conduits, 20), ", ")}
		switch {
		case a.x == b.x:
			// Within one column: a loop on the box's right side.
			x1, y1 := a.x+bw, a.y+bh/2+off/3
			x2, y2 := b.x+bw, b.y+bh/2-off/3
			bend := 40 + (i%5)*14
			l.X1, l.Y1, l.X2, l.Y2 = x1, y1, x2, y2
			l.Path = fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x1, y1, x1+bend, y1, x2+bend, y2, x2, y2)
			l.X1, l.X2 = x1+bend*3/4, x2+bend*3/4
		case b.x < a.x:
			l.X1, l.Y1, l.X2, l.Y2 = a.x, a.y+bh/2+off, b.x+bw, b.y+bh/2+off
		default:
			l.X1, l.Y1, l.X2, l.Y2 = a.x+bw, a.y+bh/2+off, b.x, b.y+bh/2+off
		}
		l.Label = pairLabel(p)
		l.LW, l.LH = len([]rune(l.Label))*labelCharW+6, labelH
		if r, ok := placeLabel(l, placed, obstacles, d.DiagW, d.DiagH); ok {
			l.LX, l.LY = r.x, r.y
			placed = append(placed, r)
		} else {
			l.LW = 0
			d.Unlabeled++
		}
		d.Lines = append(d.Lines, l)
	}
}

// matrixCell is one (from, to) zone pair of the matrix view.
type matrixCell struct {
	Pair *zonePair // nil: no conduit
}

type matrixRow struct {
	Zone  string
	Cells []matrixCell
}

// matrix builds the from/to view of the zone pairs: one row per zone that
// initiates, one column per zone that serves.
func (d *htmlData) matrix() {
	var froms, tos []string
	seenF, seenT := map[string]bool{}, map[string]bool{}
	idx := map[[2]string]*zonePair{}
	for _, p := range d.Pairs {
		idx[[2]string{p.From, p.To}] = p
		if !seenF[p.From] {
			seenF[p.From] = true
			froms = append(froms, p.From)
		}
		if !seenT[p.To] {
			seenT[p.To] = true
			tos = append(tos, p.To)
		}
	}
	sort.Strings(froms)
	sort.Strings(tos)
	d.MatrixCols = tos
	for _, f := range froms {
		r := matrixRow{Zone: f}
		for _, t := range tos {
			r.Cells = append(r.Cells, matrixCell{Pair: idx[[2]string{f, t}]})
		}
		d.Matrix = append(d.Matrix, r)
	}
}

func (rep *Report) isZone(name string) bool {
	for _, z := range rep.Zones {
		if z.Name == name {
			return true
		}
	}
	return false
}

// pairLabel is "N conduits · D denied" (or alerted), short enough to place.
func pairLabel(p *zonePair) string {
	s := strconv.Itoa(len(p.Conduits)) + " conduit"
	if len(p.Conduits) != 1 {
		s += "s"
	}
	if len(p.Conduits) == 1 {
		s = clip(p.Conduits[0], 24)
	}
	switch {
	case p.Denied() > 0:
		s += " · " + strconv.Itoa(p.Denied()) + " denied"
	case p.PDUsAlert > 0:
		s += " · " + strconv.Itoa(p.PDUsAlert) + " alerts"
	}
	return s
}

// placeLabel tries positions along the line (its middle first), then the
// same positions nudged up and down, and returns the first label box
// that overlaps no placed label, no obstacle and stays on the canvas.
func placeLabel(l svgLine, placed, obstacles []rect, w, h int) (rect, bool) {
	ts := []float64{0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8}
	nudges := []int{0, -labelH - 2, labelH + 2, -2 * (labelH + 2), 2 * (labelH + 2), -3 * (labelH + 2), 3 * (labelH + 2)}
	for _, dy := range nudges {
		for _, t := range ts {
			cx := float64(l.X1) + t*float64(l.X2-l.X1)
			cy := float64(l.Y1) + t*float64(l.Y2-l.Y1)
			r := rect{int(cx) - l.LW/2, int(cy) - l.LH/2 + dy, l.LW, l.LH}
			if r.x < 0 || r.y < 30 || r.x+r.w > w || r.y+r.h > h {
				continue
			}
			ok := true
			for _, o := range obstacles {
				if r.overlaps(o) {
					ok = false
					break
				}
			}
			for _, o := range placed {
				// One pixel of air between labels.
				if ok && r.overlaps(rect{o.x - 1, o.y - 1, o.w + 2, o.h + 2}) {
					ok = false
				}
			}
			if ok {
				return r, true
			}
		}
	}
	return rect{}, false
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(append([]string(nil), s[:n]...), fmt.Sprintf("and %d more", len(s)-n))
}

func orDash(s string) string {
	if s == "" {
		return "any port"
	}
	return s
}

// modes is the enforce/monitor view: per mode, its conduits and what they
// allowed, denied and alerted.
func (rep *Report) modes(d *htmlData) {
	by := map[string]*modeSummary{}
	for _, c := range rep.Conduits {
		m := c.Mode
		if c.Name == "" {
			m = "(no conduit)"
		}
		if m == "" {
			m = "enforce"
		}
		s := by[m]
		if s == nil {
			s = &modeSummary{Mode: m}
			by[m] = s
		}
		if c.Name != "" {
			s.Conduits++
		}
		s.PDUsAllowed += c.PDUsAllowed
		s.Denied += c.PDUsDenied + c.FlowsDenied
		s.Alerted += c.PDUsAlerted + c.FlowsAlerted
		s.PacketsForwarded += c.PacketsForwarded
		s.PacketsDrop += c.PacketsDropped
	}
	for _, m := range []string{"enforce", "monitor", "(no conduit)"} {
		if s := by[m]; s != nil {
			d.Modes = append(d.Modes, *s)
		}
	}
}

// timeline places each deny/alert event on a time axis and builds the
// table rows (at most MaxHTMLRows) with their PDU details.
func (rep *Report) timeline(d *htmlData) {
	d.TLW = 900
	held := rep.timelineEvents() // entries of closed connections stand for Count frames
	total := max(rep.TimelineTotal, held)
	shown := min(len(rep.Timeline), MaxHTMLRows)
	if len(rep.Timeline) > shown || held < total {
		where := fmt.Sprintf("report.json holds all %d", total)
		if held < total {
			where = fmt.Sprintf("report.json holds the first %d; otgw replay --json prints every one", held)
		}
		d.Notice = fmt.Sprintf("Showing the first %d of %d denies and alerts: %s.", shown, total, where)
	}
	if held > len(rep.Timeline) {
		d.Notice = strings.TrimSpace(d.Notice + fmt.Sprintf(" The frames of a connection after the gateway closed it (reason %s) are one row per connection, with their count.", closedReason))
	}
	for _, e := range rep.Timeline[:shown] {
		row := timelineRow{Event: e, Details: details(&e)}
		var cls []string
		if !e.AfterReset {
			cls = append(cls, "w")
			d.Views[1]++
		}
		if e.Refused {
			cls = append(cls, "r")
			d.Views[2]++
		}
		if e.AfterReset {
			cls = append(cls, "ar")
			d.Views[3]++
		}
		if e.Verdict == "alert" {
			cls = append(cls, "m")
			d.Views[4]++
		}
		d.Views[0]++
		row.Class = strings.Join(cls, " ")
		d.Rows = append(d.Rows, row)
	}
	if len(rep.Timeline) == 0 || rep.End.Before(rep.Start) {
		return
	}
	span := rep.End.Sub(rep.Start)
	if span <= 0 {
		span = time.Second
	}
	d.TLStart, d.TLEnd = rep.Start.UTC().Format(time.RFC3339Nano), rep.End.UTC().Format(time.RFC3339Nano)
	for _, e := range rep.Timeline[:shown] {
		x := 10 + int(float64(d.TLW-20)*float64(e.Time.Sub(rep.Start))/float64(span))
		color := "#d93025"
		if e.Verdict == "alert" {
			color = "#f29900"
		}
		d.Ticks = append(d.Ticks, svgTick{X: x, Y: 10, Height: 40, Color: color,
			Title: fmt.Sprintf("%s:%d %s %s %s -> %s: %s", e.File, e.Frame, e.Verdict, e.ProtoLabel(), e.Src, e.Dst, e.Reason)})
	}
}

// detailOrder is the order of the protocol fields in the details column;
// fields not named here follow, sorted.
var detailOrder = []string{"function", "service", "unit", "addr", "qty", "write_addr", "write_qty", "value", "values", "coils",
	"sub", "exception", "objects", "nodes", "link_src", "link_dst", "msg_type", "security_policy", "security_mode", "evasion"}

// details renders an event's protocol object (as the record schema names
// it: function names beside numbers, DNP3 objects as g12v1, OPC UA
// service names) as "write_single_register (fc 6) · unit 1 · addr 5 ·
// value 4242".
func details(e *Event) string {
	if len(e.Fields) == 0 {
		return ""
	}
	rec := events.Event{Proto: e.Proto, Fields: e.Fields, Type: events.TypeDeny}
	var j map[string]json.RawMessage
	if json.Unmarshal(rec.AppendJSON(nil), &j) != nil {
		return ""
	}
	raw, ok := j[e.Proto]
	if !ok {
		raw, ok = j["fields"]
	}
	var obj map[string]any
	if !ok || json.Unmarshal(raw, &obj) != nil {
		return ""
	}
	delete(obj, "tid")
	delete(obj, "dir")
	var parts []string
	if fc, ok := obj["fc"]; ok {
		if fn, ok := obj["function"].(string); ok {
			parts = append(parts, fn+" (fc "+fmtValue(fc)+")")
			delete(obj, "function")
		} else {
			parts = append(parts, "fc "+fmtValue(fc))
		}
		delete(obj, "fc")
	}
	if id, ok := obj["service_id"]; ok {
		if s, ok := obj["service"].(string); ok {
			parts = append(parts, s+" ("+fmtValue(id)+")")
			delete(obj, "service")
		}
		delete(obj, "service_id")
	}
	for _, k := range detailOrder {
		if v, ok := obj[k]; ok {
			parts = append(parts, k+" "+fmtValue(v))
			delete(obj, k)
		}
	}
	rest := make([]string, 0, len(obj))
	for k := range obj {
		rest = append(rest, k)
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, k+" "+fmtValue(obj[k]))
	}
	return strings.Join(parts, " · ")
}

// fmtValue formats a decoded JSON value; long lists are cut with a count.
func fmtValue(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	case []any:
		var s []string
		for i, e := range x {
			if i == 16 {
				s = append(s, fmt.Sprintf("… %d in all", len(x)))
				break
			}
			s = append(s, fmtValue(e))
		}
		return "[" + strings.Join(s, " ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var s []string
		for _, k := range keys {
			s = append(s, k+"="+fmtValue(x[k]))
		}
		return "{" + strings.Join(s, " ") + "}"
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// hot returns "n " + class when v is non-zero, "n" otherwise: counts are
// coloured only when there is something to see.
func hot(class string, v int) string {
	if v != 0 {
		return "n " + class
	}
	return "n"
}

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"hot": hot}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>otgw replay: {{.R.Policy}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#202124}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #dadce0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f4}td.n{text-align:right}.deny{color:#d93025;font-weight:bold}.alert{color:#f29900}
h2{margin-top:1.6em}p.lead{font-size:1.25em}p.lead::first-letter,p.cut::first-letter{text-transform:uppercase}svg{border:1px solid #dadce0;background:#fff}
.notice{background:#fef7e0;border:1px solid #f9ab00;padding:6px 10px;display:inline-block}
.lbl{font-family:"DejaVu Sans Mono",monospace;font-size:11px}
td.details{font-family:"DejaVu Sans Mono",monospace;font-size:12px}
.views label{margin-right:1em;cursor:pointer}
#matrix td.cell{text-align:center;min-width:7em}#matrix td.hotcell{background:#fce8e6}#matrix td.warmcell{background:#fef7e0}#matrix td.empty{color:#bdc1c6}
#v-wire:checked~table tr.row:not(.w),#v-refused:checked~table tr.row:not(.r),#v-ar:checked~table tr.row:not(.ar),#v-alert:checked~table tr.row:not(.m){display:none}
</style></head><body>
<h1>otgw replay report</h1>
<p>Policy <b>{{.R.Policy}}</b>; captures {{.Files}}; generated {{.Generated}}.</p>
{{with .R.WhatIf}}<h2 id="refused">What would fail: refused requests</h2>
<p class="lead">{{.Headline}}.</p>
{{if .Cuts}}<p class="cut">{{.CutLine}}.</p>{{end}}
<table><tr><th>refused</th><th>distinct</th><th>after reset</th><th>conduit</th><th>mode</th><th>function</th><th>reasons</th><th>first</th></tr>
{{range $.RefusedHead}}{{template "refused" .}}{{else}}<tr><td colspan="8">nothing: the policy refuses none of this traffic</td></tr>{{end}}</table>
{{if $.RefusedRest}}<details><summary>{{len $.RefusedRest}} more conduit/function groups</summary><table>
{{range $.RefusedRest}}{{template "refused" .}}{{end}}</table></details>{{end}}
<p>"After reset": requests an enforcing gateway never sees, because it reset (or blocked) the connection at an earlier deny; the replay judged them with the policy in monitor mode.</p>
{{end}}<table>
<tr><th>frames</th><th>forwarded</th><th>truncated</th><th>dropped</th><th>PDUs allowed</th><th>PDUs denied</th><th>PDUs alerted</th><th>deny events</th><th>alert events</th><th>mid-stream pickups (skipped frames)</th></tr>
<tr><td class="n">{{.R.Frames}}</td><td class="n">{{.R.Forwarded}}</td><td class="n">{{.R.Truncated}}</td><td class="{{hot "deny" .R.Dropped}}">{{.R.Dropped}}</td><td class="n">{{.R.PDUsAllowed}}</td><td class="{{hot "deny" .R.PDUsDenied}}">{{.R.PDUsDenied}}</td><td class="{{hot "alert" .R.PDUsAlerted}}">{{.R.PDUsAlerted}}</td><td class="{{hot "deny" .R.Denies}}">{{.R.Denies}}</td><td class="{{hot "alert" .R.Alerts}}">{{.R.Alerts}}</td><td class="n">{{.R.PickedUp}} ({{.R.SkippedMidstream}})</td></tr>
</table>
<h2 id="modes">Enforce and monitor</h2>
<table><tr><th>mode</th><th>conduits</th><th>PDUs allowed</th><th>denied (PDUs and flows)</th><th>alerted: would deny (monitor)</th><th>packets forwarded</th><th>packets dropped</th></tr>
{{range .Modes}}<tr><td>{{.Mode}}</td><td class="n">{{.Conduits}}</td><td class="n">{{.PDUsAllowed}}</td><td class="{{hot "deny" .Denied}}">{{.Denied}}</td><td class="{{hot "alert" .Alerted}}">{{.Alerted}}</td><td class="n">{{.PacketsForwarded}}</td><td class="{{hot "deny" .PacketsDrop}}">{{.PacketsDrop}}</td></tr>
{{end}}</table>
<h2 id="zones">Zones and conduits</h2>
<p>{{len .R.Conduits}} conduits in {{len .Pairs}} zone pairs{{if .PairsDrawn}}; one line per zone pair, red where something was denied, amber where monitor mode alerted (hover a line for its conduits){{else}}, shown as a matrix (more than {{.MaxPairs}} pairs make a drawing of lines unreadable); the table below lists each pair's conduits{{end}}.{{if .Unlabeled}} {{.Unlabeled}} lines had no room for a label: the table names them.{{end}}</p>
{{if .PairsDrawn}}<svg id="diagram" xmlns="http://www.w3.org/2000/svg" width="{{.DiagW}}" height="{{.DiagH}}" role="img" aria-label="zones and conduits">
<text x="20" y="24" font-size="13" fill="#5f6368">north port</text><text x="380" y="24" font-size="13" fill="#5f6368">unbound</text><text x="740" y="24" font-size="13" fill="#5f6368">south port</text>
{{range .Boxes}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" rx="8" fill="{{.Fill}}" stroke="#5f6368"/><text x="{{.X}}" y="{{.Y}}" dx="10" dy="22" font-size="14" font-weight="bold">{{.Name}}</text><text x="{{.X}}" y="{{.Y}}" dx="10" dy="44" font-size="11" fill="#5f6368">{{.Sub}}</text>
{{end}}{{range .Lines}}{{if .Path}}<path d="{{.Path}}" fill="none" stroke="{{.Color}}" stroke-width="{{.Width}}"><title>{{.Title}}</title></path>{{else}}<line x1="{{.X1}}" y1="{{.Y1}}" x2="{{.X2}}" y2="{{.Y2}}" stroke="{{.Color}}" stroke-width="{{.Width}}"><title>{{.Title}}</title></line>{{end}}
{{end}}{{range .Lines}}{{if .LW}}<g class="pairlabel"><rect x="{{.LX}}" y="{{.LY}}" width="{{.LW}}" height="{{.LH}}" fill="#fff" fill-opacity="0.9"/><text class="lbl" x="{{.LX}}" y="{{.LY}}" dx="3" dy="11" fill="{{.Color}}">{{.Label}}<title>{{.Title}}</title></text></g>
{{end}}{{end}}</svg>{{end}}
{{if .Matrix}}<table id="matrix"><tr><th>from zone \ to zone</th>{{range .MatrixCols}}<th>{{.}}</th>{{end}}</tr>
{{range .Matrix}}<tr><th>{{.Zone}}</th>{{range .Cells}}{{with .Pair}}<td class="cell{{if .Denied}} hotcell{{else if .PDUsAlert}} warmcell{{end}}" title="{{.From}} → {{.To}}: {{len .Conduits}} conduits"><span class="lbl">{{len .Conduits}} conduit{{if ne (len .Conduits) 1}}s{{end}}</span>{{if .Denied}}<br><span class="lbl deny">{{.Denied}} denied</span>{{end}}{{if .PDUsAlert}}<br><span class="lbl alert">{{.PDUsAlert}} alerts</span>{{end}}</td>{{else}}<td class="cell empty">·</td>{{end}}{{end}}</tr>
{{end}}</table>{{end}}
<table id="pairs"><tr><th>from zone</th><th>to zone</th><th>conduits</th><th>enforce / monitor</th><th>PDUs allowed</th><th>PDUs denied</th><th>flows denied</th><th>PDUs alerted</th><th>packets dropped</th></tr>
{{range .Pairs}}<tr><td>{{.From}}</td><td>{{.To}}</td><td>{{if gt (len .Conduits) 3}}<details><summary>{{len .Conduits}} conduits</summary>{{range .Conduits}}{{.}}<br>{{end}}</details>{{else}}{{range .Conduits}}{{.}}<br>{{end}}{{end}}</td><td>{{.Enforce}} / {{.Monitor}}</td><td class="n">{{.PDUsAllowed}}</td><td class="{{hot "deny" .PDUsDenied}}">{{.PDUsDenied}}</td><td class="{{hot "deny" .FlowsDenied}}">{{.FlowsDenied}}</td><td class="{{hot "alert" .PDUsAlert}}">{{.PDUsAlert}}</td><td class="{{hot "deny" .PacketsDropped}}">{{.PacketsDropped}}</td></tr>
{{else}}<tr><td colspan="9">no conduits</td></tr>{{end}}</table>
<h2 id="conduits">Per conduit</h2>
<details{{if .OpenTable}} open{{end}}><summary>{{len .Sorted}} conduits, those with denies and alerts first</summary>
<table><tr><th>conduit</th><th>from</th><th>to</th><th>mode</th><th>PDUs allowed</th><th>PDUs denied</th><th>PDUs alerted</th><th>flows denied</th><th>packets forwarded</th><th>packets dropped</th></tr>
{{range .Sorted}}<tr><td>{{if .Name}}{{.Name}}{{else}}(no conduit){{end}}</td><td>{{range .From}}{{.}} {{end}}</td><td>{{range .To}}{{.}} {{end}}</td><td>{{.Mode}}</td><td class="n">{{.PDUsAllowed}}</td><td class="{{hot "deny" .PDUsDenied}}">{{.PDUsDenied}}</td><td class="{{hot "alert" .PDUsAlerted}}">{{.PDUsAlerted}}</td><td class="{{hot "deny" .FlowsDenied}}">{{.FlowsDenied}}</td><td class="n">{{.PacketsForwarded}}</td><td class="{{hot "deny" .PacketsDropped}}">{{.PacketsDropped}}</td></tr>
{{end}}</table></details>
<h2>Denies and alerts by reason</h2>
<table><tr><th>reason</th><th>count</th></tr>{{range .R.Reasons}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{else}}<tr><td colspan="2">none</td></tr>{{end}}</table>
<h2>Denies and alerts by rule</h2>
<table><tr><th>conduit/rule</th><th>count</th></tr>{{range .R.ByRule}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{else}}<tr><td colspan="2">none</td></tr>{{end}}</table>
<h2>Rules never hit (candidates for removal)</h2>
<ul>{{range .R.NeverHit}}<li>{{.}}</li>{{else}}<li>none</li>{{end}}</ul>
<h2>Top denied flows</h2>
<table><tr><th>count</th><th>source</th><th>destination</th><th>proto</th><th>first frame</th><th>reason</th></tr>
{{range .R.TopDenied}}<tr><td class="n">{{.N}}</td><td>{{.Src}}</td><td>{{.Dst}}</td><td>{{.ProtoLabel}}</td><td>{{.File}}:{{.FirstFrame}}</td><td>{{.Reason}}</td></tr>{{else}}<tr><td colspan="6">none</td></tr>{{end}}</table>
<h2 id="timeline">Timeline of denies and alerts</h2>
{{if .Notice}}<p class="notice" id="notice">{{.Notice}}</p>{{end}}
{{if .Rows}}{{if .Ticks}}<p>{{.TLStart}} &rarr; {{.TLEnd}} (hover a mark for the frame)</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.TLW}}" height="60" role="img" aria-label="timeline of denies"><line x1="10" y1="50" x2="{{.TLW}}" y2="50" stroke="#5f6368"/>
{{range .Ticks}}<rect x="{{.X}}" y="{{.Y}}" width="2" height="{{.Height}}" fill="{{.Color}}"><title>{{.Title}}</title></rect>{{end}}
</svg>{{end}}
<div class="views">
<input type="radio" name="view" id="v-all" checked><label for="v-all">all ({{index .Views 0}})</label>
<input type="radio" name="view" id="v-wire"><label for="v-wire">enforced on the wire ({{index .Views 1}})</label>
<input type="radio" name="view" id="v-refused"><label for="v-refused">refused by the policy ({{index .Views 2}})</label>
<input type="radio" name="view" id="v-ar"><label for="v-ar">after reset ({{index .Views 3}})</label>
<input type="radio" name="view" id="v-alert"><label for="v-alert">monitor alerts ({{index .Views 4}})</label>
<table id="events"><tr><th>file:frame</th><th>time</th><th>verdict</th><th>mode</th><th>proto</th><th>src</th><th>dst</th><th>conduit/rule</th><th>reason</th><th>PDU</th></tr>
{{range .Rows}}<tr class="row {{.Class}}"><td>{{.File}}:{{.Frame}}</td><td>{{.Time.UTC.Format "15:04:05.000000"}}</td><td class="{{.Verdict}}">{{.Verdict}}{{if .AfterReset}} (after reset){{end}}{{if gt .Count 1}} ({{.Count}} frames, to {{.Last.File}}:{{.Last.Index}}){{end}}</td><td>{{.Mode}}</td><td>{{.ProtoLabel}}</td><td>{{.Src}}</td><td>{{.Dst}}</td><td>{{.Conduit}}/{{.Rule}}</td><td>{{.Reason}}</td><td class="details">{{.Details}}</td></tr>
{{end}}</table></div>{{else}}<p>No denies.</p>{{end}}
</body></html>
{{define "refused"}}<tr><td class="{{hot "deny" .N}}">{{.N}}</td><td class="n">{{.Distinct}}</td><td class="n">{{.AfterReset}}</td><td>{{if .Conduit}}{{.Conduit}}{{else}}(no conduit){{end}}</td><td>{{.Mode}}</td><td>{{.FunctionLabel}}</td><td>{{.ReasonList}}</td><td>{{.File}}:{{.Frame}}</td></tr>
{{end}}`))
