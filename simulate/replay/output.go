package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/otgw/otgw/gateway/events"
)

// Record returns the event in otgw's one record schema (the
// events.Event that the live gateway writes to its events file and to
// syslog for the same traffic): EVE names, flow_id and community_id, the
// policy's deny action, severity as the live gateway gives it (deny
// notice, alert warning, evasion alert), the capture file and frame as
// pcap_filename and pcap_cnt, and after_reset for a refusal only the
// what-if evaluation judged (Options.WhatIf); count and a message for a
// timeline entry that stands for the frames of a closed connection
// (Event.Count). Seq and boot id are not set (a replay is no boot).
func (e *Event) Record() *events.Event {
	r := &events.Event{
		Time: e.Time, Mode: e.Mode, Verdict: e.Verdict, Action: e.DenyAction, Conduit: e.Conduit, Rule: e.Rule,
		Reason: e.Reason, Proto: e.Proto, Src: e.Src, Dst: e.Dst, Net: e.Net, PcapFile: e.File, Frame: e.Frame,
		Fields: e.Fields, AfterReset: e.AfterReset,
	}
	if e.Count > 1 {
		// A timeline entry for the frames of a closed connection.
		r.Count, r.Message = e.Count, e.collapsedMessage()
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
