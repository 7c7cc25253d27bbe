package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// Record returns the event in otgw's one record schema (the
// events.Event that the live gateway writes to its events file and to
// syslog for the same traffic): EVE names, flow_id and community_id, the
// policy's deny action, severity as the live gateway gives it (deny
// notice, alert warning, evasion alert), the capture file and frame as
// pcap_filename and pcap_cnt, and after_reset for a refusal only the
// what-if evaluation judged (Options.WhatIf). Seq and boot id are not set (a replay is no
// boot).
func (e *Event) Record() *events.Event {
	r := &events.Event{
		Time: e.Time, Mode: e.Mode, Verdict: e.Verdict, Action: e.DenyAction, Conduit: e.Conduit, Rule: e.Rule,
		Reason: e.Reason, Proto: e.Proto, Src: e.Src, Dst: e.Dst, Net: e.Net, PcapFile: e.File, Frame: e.Frame,
		Fields: e.Fields, AfterReset: e.AfterReset,
	}
	switch {
	case e.Verdict == "alert":
		r.Type, r.Severity, r.Action = events.TypeAlert, events.SevWarning, ""
	default:
		r.Type, r.Severity = events.TypeDeny, events.SevNotice
		if strings.HasPrefix(e.Reason, "evasion") {
			r.Severity = events.SevAlert
		}
	}
	return r
}

// JSON renders the event as one JSON line: Record in the record schema
// (gateway/events/schema.json).
func (e *Event) JSON() []byte { return e.Record().AppendJSON(nil) }

// MarshalJSON writes the record schema (report.json's timeline).
func (e Event) MarshalJSON() ([]byte, error) { return e.JSON(), nil }

// WriteSummary prints the human summary: what the policy refuses and
// what enforcing it would cut (with Options.WhatIf), totals, per conduit, denies by
// reason and rule, rules never hit, top denied flows.
func (rep *Report) WriteSummary(w io.Writer) error {
	bw := &errWriter{w: w}
	fmt.Fprintf(bw, "replay of %s with policy %q\n", strings.Join(baseNames(rep.Files), ", "), rep.Policy)
	if rep.WhatIf != nil {
		rep.WhatIf.write(bw)
	}
	fmt.Fprintf(bw, "frames %d: forwarded %d, truncated %d, dropped %d, undecodable %d", rep.Frames, rep.Forwarded, rep.Truncated, rep.Dropped, rep.Undecodable)
	if rep.PickedUp > 0 || rep.SkippedMidstream > 0 {
		fmt.Fprintf(bw, "; %d connections joined mid-stream picked up (%d earlier frames skipped)", rep.PickedUp, rep.SkippedMidstream)
	}
	for _, d := range rep.CaptureDamage {
		fmt.Fprintf(bw, "\nwarning: %s", d)
	}
	if rep.CaptureHoles > 0 || rep.Reordered > 0 {
		fmt.Fprintf(bw, "\ncapture repairs: %d holes the capture lost (the engine continued after them; %d segments completing a lost PDU passed uninspected), %d ACKs fed after the segment they were captured before",
			rep.CaptureHoles, rep.CaptureSkipped, rep.Reordered)
	}
	if rep.EngineDropHoles > 0 {
		fmt.Fprintf(bw, "\nnot repaired: %d holes left by frames the engine dropped (IP fragments)", rep.EngineDropHoles)
	}
	fmt.Fprintf(bw, "\nPDUs: %d allowed, %d denied, %d alerted; deny events %d, alert events %d", rep.PDUsAllowed, rep.PDUsDenied, rep.PDUsAlerted, rep.Denies, rep.Alerts)
	if rep.Detections > 0 {
		fmt.Fprintf(bw, " (%d of them rate detections: scans, busy servers, unsolicited storms)", rep.Detections)
	}
	fmt.Fprintf(bw, "; crafted replies/resets %d\n\n", rep.Injected)
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONDUIT\tMODE\tPDU ALLOW\tPDU DENY\tPDU ALERT\tFLOW DENY\tPKT FWD\tPKT DROP")
	for _, c := range rep.Conduits {
		name := c.Name
		if name == "" {
			name = "(no conduit)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", name, c.Mode, c.PDUsAllowed, c.PDUsDenied, c.PDUsAlerted, c.FlowsDenied+c.FlowsAlerted, c.PacketsForwarded, c.PacketsDropped)
	}
	tw.Flush()
	if len(rep.Reasons) > 0 {
		fmt.Fprintln(bw, "\ndenies and alerts by reason:")
		for _, c := range rep.Reasons {
			fmt.Fprintf(bw, "  %7d  %s\n", c.N, c.Name)
		}
	}
	if len(rep.ByRule) > 0 {
		fmt.Fprintln(bw, "\ndenies and alerts by conduit/rule:")
		for _, c := range rep.ByRule {
			fmt.Fprintf(bw, "  %7d  %s\n", c.N, c.Name)
		}
	}
	if len(rep.NeverHit) > 0 {
		fmt.Fprintln(bw, "\nrules never hit (candidates for removal):")
		for _, n := range rep.NeverHit {
			fmt.Fprintf(bw, "  %s\n", n)
		}
	}
	if len(rep.TopDenied) > 0 {
		fmt.Fprintln(bw, "\ntop denied flows:")
		tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  COUNT\tSRC\tDST\tPROTO\tFIRST\tREASON")
		for i, f := range rep.TopDenied {
			if i == 10 {
				break
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s:%d\t%s\n", f.N, f.Src, f.Dst, f.ProtoLabel(), f.File, f.FirstFrame, f.Reason)
		}
		tw.Flush()
	}
	return bw.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}

// WriteFiles writes report.json and report.html into dir (allowed.pcap and
// denied.pcap are written during Run through Options.Allowed/Denied).
func (rep *Report) WriteFiles(dir string) error {
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.html"), b.Bytes(), 0o644)
}

// ---- HTML ----

type svgBox struct {
	X, Y, W, H int
	Name, Sub  string
	Fill       string
}

type svgLine struct {
	X1, Y1, X2, Y2 int
	Label          string
	LX, LY         int
	Color          string
	Width          int
}

type svgTick struct {
	X, Y   int
	Color  string
	Title  string
	Height int
}

type htmlData struct {
	R         *Report
	Files     string
	Boxes     []svgBox
	Lines     []svgLine
	DiagW     int
	DiagH     int
	Ticks     []svgTick
	TLW       int
	TLStart   string
	TLEnd     string
	Generated string
}

// WriteHTML writes a self-contained page: tables, a zone/conduit diagram
// and a timeline of denies as inline SVG, no external assets.
func (rep *Report) WriteHTML(w io.Writer) error {
	d := htmlData{R: rep, Files: strings.Join(baseNames(rep.Files), ", "), Generated: time.Now().UTC().Format(time.RFC3339)}
	rep.diagram(&d)
	rep.timeline(&d)
	return htmlTmpl.Execute(w, &d)
}

// diagram lays zones out in two columns (north left, south right, others
// in the middle) and draws each conduit as a line between the zones of
// its ends, red when it saw denies.
func (rep *Report) diagram(d *htmlData) {
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
	const bw, bh, gap = 220, 60, 30
	maxRows := 1
	for ci, col := range cols {
		for i, z := range col {
			x, y := 20+ci*320, 40+i*(bh+gap)
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
			d.Boxes = append(d.Boxes, svgBox{X: x, Y: y, W: bw, H: bh, Name: z.Name + " (" + orDash(z.Port) + ")", Sub: sub, Fill: fill})
			at[z.Name] = pos{x, y}
			for _, a := range z.Assets {
				at[a] = pos{x, y}
			}
			maxRows = max(maxRows, i+1)
		}
	}
	d.DiagW, d.DiagH = 20+3*320, 60+maxRows*(bh+gap)
	for i, c := range rep.Conduits {
		if len(c.From) == 0 || len(c.To) == 0 {
			continue
		}
		a, ok1 := at[c.From[0]]
		b, ok2 := at[c.To[0]]
		if !ok1 || !ok2 {
			continue
		}
		color, width := "#5f6368", 1
		if c.PDUsDenied+c.FlowsDenied+c.PacketsDropped > 0 {
			color, width = "#d93025", 2
		} else if c.PDUsAlerted+c.FlowsAlerted > 0 {
			color, width = "#f29900", 2
		}
		x1, y1 := a.x+bw, a.y+bh/2+(i%5)*6-12
		x2, y2 := b.x, b.y+bh/2+(i%5)*6-12
		if a == b {
			x2, y2 = a.x+bw, a.y+bh/2+12
			x1 = a.x + bw
		} else if b.x < a.x {
			x1, x2 = a.x, b.x+bw
		}
		d.Lines = append(d.Lines, svgLine{X1: x1, Y1: y1, X2: x2, Y2: y2, Color: color, Width: width,
			Label: c.Name, LX: (x1 + x2) / 2, LY: (y1+y2)/2 - 4})
	}
}

func orDash(s string) string {
	if s == "" {
		return "any port"
	}
	return s
}

// timeline places each deny/alert event of the timeline on a time axis.
func (rep *Report) timeline(d *htmlData) {
	d.TLW = 900
	if len(rep.Timeline) == 0 || rep.End.Before(rep.Start) {
		return
	}
	span := rep.End.Sub(rep.Start)
	if span <= 0 {
		span = time.Second
	}
	d.TLStart, d.TLEnd = rep.Start.UTC().Format(time.RFC3339Nano), rep.End.UTC().Format(time.RFC3339Nano)
	for _, e := range rep.Timeline {
		x := 10 + int(float64(d.TLW-20)*float64(e.Time.Sub(rep.Start))/float64(span))
		color := "#d93025"
		if e.Verdict == "alert" {
			color = "#f29900"
		}
		d.Ticks = append(d.Ticks, svgTick{X: x, Y: 10, Height: 40, Color: color,
			Title: fmt.Sprintf("%s:%d %s %s %s -> %s: %s", e.File, e.Frame, e.Verdict, e.ProtoLabel(), e.Src, e.Dst, e.Reason)})
	}
}

var htmlTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>otgw replay: {{.R.Policy}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#202124}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #dadce0;padding:4px 8px;text-align:left}
th{background:#f1f3f4}td.n{text-align:right}.deny{color:#d93025;font-weight:bold}.alert{color:#f29900}
h2{margin-top:1.6em}p.lead{font-size:1.25em}p.lead::first-letter,p.cut::first-letter{text-transform:uppercase}svg{border:1px solid #dadce0;background:#fff}
</style></head><body>
<h1>otgw replay report</h1>
<p>Policy <b>{{.R.Policy}}</b>; captures {{.Files}}; generated {{.Generated}}.</p>
{{with .R.WhatIf}}<h2>What would fail</h2>
<p class="lead">{{.Headline}}.</p>
{{if .Cuts}}<p class="cut">{{.CutLine}}.</p>{{end}}
<table><tr><th>refused</th><th>distinct</th><th>after reset</th><th>conduit</th><th>function</th><th>reasons</th><th>first</th></tr>
{{range .ByFunction}}<tr><td class="n deny">{{.N}}</td><td class="n">{{.Distinct}}</td><td class="n">{{.AfterReset}}</td><td>{{if .Conduit}}{{.Conduit}}{{else}}(no conduit){{end}}</td><td>{{.FunctionLabel}}</td><td>{{.ReasonList}}</td><td>{{.File}}:{{.Frame}}</td></tr>
{{else}}<tr><td colspan="7">nothing: the policy refuses none of this traffic</td></tr>{{end}}</table>
<p>"After reset": requests an enforcing gateway never sees, because it reset (or blocked) the connection at an earlier deny; the replay judged them with the policy in monitor mode.</p>
{{end}}<table>
<tr><th>frames</th><th>forwarded</th><th>truncated</th><th>dropped</th><th>PDUs allowed</th><th>PDUs denied</th><th>PDUs alerted</th><th>deny events</th><th>alert events</th><th>mid-stream pickups (skipped frames)</th></tr>
<tr><td class="n">{{.R.Frames}}</td><td class="n">{{.R.Forwarded}}</td><td class="n">{{.R.Truncated}}</td><td class="n">{{.R.Dropped}}</td><td class="n">{{.R.PDUsAllowed}}</td><td class="n deny">{{.R.PDUsDenied}}</td><td class="n alert">{{.R.PDUsAlerted}}</td><td class="n deny">{{.R.Denies}}</td><td class="n alert">{{.R.Alerts}}</td><td class="n">{{.R.PickedUp}} ({{.R.SkippedMidstream}})</td></tr>
</table>
<h2>Zones and conduits</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.DiagW}}" height="{{.DiagH}}" role="img" aria-label="zones and conduits">
<text x="20" y="24" font-size="13" fill="#5f6368">north port</text><text x="340" y="24" font-size="13" fill="#5f6368">unbound</text><text x="660" y="24" font-size="13" fill="#5f6368">south port</text>
{{range .Boxes}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" rx="8" fill="{{.Fill}}" stroke="#5f6368"/><text x="{{.X}}" y="{{.Y}}" dx="10" dy="22" font-size="14" font-weight="bold">{{.Name}}</text><text x="{{.X}}" y="{{.Y}}" dx="10" dy="44" font-size="11" fill="#5f6368">{{.Sub}}</text>
{{end}}{{range .Lines}}<line x1="{{.X1}}" y1="{{.Y1}}" x2="{{.X2}}" y2="{{.Y2}}" stroke="{{.Color}}" stroke-width="{{.Width}}"><title>{{.Label}}</title></line><text x="{{.LX}}" y="{{.LY}}" font-size="10" fill="{{.Color}}" text-anchor="middle">{{.Label}}</text>
{{end}}</svg>
<h2>Per conduit</h2>
<table><tr><th>conduit</th><th>from</th><th>to</th><th>mode</th><th>PDUs allowed</th><th>PDUs denied</th><th>PDUs alerted</th><th>flows denied</th><th>packets forwarded</th><th>packets dropped</th></tr>
{{range .R.Conduits}}<tr><td>{{if .Name}}{{.Name}}{{else}}(no conduit){{end}}</td><td>{{range .From}}{{.}} {{end}}</td><td>{{range .To}}{{.}} {{end}}</td><td>{{.Mode}}</td><td class="n">{{.PDUsAllowed}}</td><td class="n deny">{{.PDUsDenied}}</td><td class="n alert">{{.PDUsAlerted}}</td><td class="n">{{.FlowsDenied}}</td><td class="n">{{.PacketsForwarded}}</td><td class="n">{{.PacketsDropped}}</td></tr>
{{end}}</table>
<h2>Denies and alerts by reason</h2>
<table><tr><th>reason</th><th>count</th></tr>{{range .R.Reasons}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{else}}<tr><td colspan="2">none</td></tr>{{end}}</table>
<h2>Denies and alerts by rule</h2>
<table><tr><th>conduit/rule</th><th>count</th></tr>{{range .R.ByRule}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{else}}<tr><td colspan="2">none</td></tr>{{end}}</table>
<h2>Rules never hit (candidates for removal)</h2>
<ul>{{range .R.NeverHit}}<li>{{.}}</li>{{else}}<li>none</li>{{end}}</ul>
<h2>Top denied flows</h2>
<table><tr><th>count</th><th>source</th><th>destination</th><th>proto</th><th>first frame</th><th>reason</th></tr>
{{range .R.TopDenied}}<tr><td class="n">{{.N}}</td><td>{{.Src}}</td><td>{{.Dst}}</td><td>{{.ProtoLabel}}</td><td>{{.File}}:{{.FirstFrame}}</td><td>{{.Reason}}</td></tr>{{else}}<tr><td colspan="6">none</td></tr>{{end}}</table>
<h2>Timeline of denies</h2>
{{if .Ticks}}<p>{{.TLStart}} &rarr; {{.TLEnd}} (hover a mark for the frame)</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.TLW}}" height="60" role="img" aria-label="timeline of denies"><line x1="10" y1="50" x2="{{.TLW}}" y2="50" stroke="#5f6368"/>
{{range .Ticks}}<rect x="{{.X}}" y="{{.Y}}" width="2" height="{{.Height}}" fill="{{.Color}}"><title>{{.Title}}</title></rect>{{end}}
</svg>
<table><tr><th>file:frame</th><th>time</th><th>verdict</th><th>proto</th><th>src</th><th>dst</th><th>conduit/rule</th><th>reason</th></tr>
{{range .R.Timeline}}<tr><td>{{.File}}:{{.Frame}}</td><td>{{.Time.UTC.Format "15:04:05.000000"}}</td><td class="{{.Verdict}}">{{.Verdict}}</td><td>{{.ProtoLabel}}</td><td>{{.Src}}</td><td>{{.Dst}}</td><td>{{.Conduit}}/{{.Rule}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>{{else}}<p>No denies.</p>{{end}}
</body></html>
`))
