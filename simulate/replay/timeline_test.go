package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

// TestTimelineCollapsesClosedFrames: the frames of a connection the
// gateway reset are one timeline entry (the first, with their count and
// last frame), in report.json and report.html, while the events given to
// OnEvent (--json), the totals, the reasons and the what-if evaluation's
// after-reset refusals stay one per frame.
func TestTimelineCollapsesClosedFrames(t *testing.T) {
	const writes = 25
	frames, _, _ := manyWrites(writes)
	path := writeCapture(t, frames)
	schema := testenv.CompileSchema(t, events.Schema)
	y := strings.Replace(readOnly, "action: drop", "action: reset", 1)
	for _, whatIf := range []bool{false, true} {
		t.Run(fmt.Sprintf("what-if=%v", whatIf), func(t *testing.T) {
			rep, evs := replayEvents(t, y, path, whatIf)
			var closed []*Event
			afterReset := 0
			for _, e := range evs {
				if e.Count != 0 {
					t.Errorf("OnEvent event at frame %d has Count %d", e.Frame, e.Count)
				}
				if e.Reason == closedReason {
					closed = append(closed, e)
				}
				if e.AfterReset {
					afterReset++
				}
			}
			if len(closed) < 2 {
				t.Fatalf("%d closed frames in the stream, want several", len(closed))
			}
			var entries []Event
			tlAfterReset := 0
			for _, e := range rep.Timeline {
				if e.Reason == closedReason {
					entries = append(entries, e)
				}
				if e.AfterReset {
					tlAfterReset++
				}
			}
			if len(entries) != 1 {
				t.Fatalf("%d timeline entries for the closed frames of one connection, want 1", len(entries))
			}
			e := entries[0]
			first, last := closed[0], closed[len(closed)-1]
			if e.Count != len(closed) || e.Frame != first.Frame || e.Last.Index != last.Frame || !e.Last.Time.Equal(last.Time) {
				t.Errorf("entry: frame %d, count %d, last %d; want frame %d, count %d, last %d", e.Frame, e.Count, e.Last.Index, first.Frame, len(closed), last.Frame)
			}
			if rep.TimelineTotal != len(evs) || rep.timelineEvents() != len(evs) || len(rep.Timeline) != len(evs)-len(closed)+1 {
				t.Errorf("timeline: %d entries standing for %d events, total %d; want %d entries for %d events",
					len(rep.Timeline), rep.timelineEvents(), rep.TimelineTotal, len(evs)-len(closed)+1, len(evs))
			}
			if n := countOf(rep.Reasons, closedReason); n != len(closed) {
				t.Errorf("reasons: %s %d, want %d (one per frame)", closedReason, n, len(closed))
			}
			if whatIf {
				if afterReset != writes-1 || tlAfterReset != afterReset || rep.WhatIf.AfterReset != afterReset {
					t.Errorf("after_reset: %d streamed, %d in the timeline, %d in what_if; want %d each", afterReset, tlAfterReset, rep.WhatIf.AfterReset, writes-1)
				}
			} else if afterReset != 0 || tlAfterReset != 0 {
				t.Errorf("after_reset events without what-if: %d / %d", afterReset, tlAfterReset)
			}

			// report.json: the entry is a record with its count and a
			// message naming the frames; every entry fits the schema.
			dir := t.TempDir()
			if err := rep.WriteFiles(dir); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			var rj struct {
				Timeline []json.RawMessage `json:"timeline"`
				Total    int               `json:"timeline_total"`
			}
			if err := json.Unmarshal(b, &rj); err != nil {
				t.Fatal(err)
			}
			found := 0
			for _, raw := range rj.Timeline {
				if err := testenv.ValidateJSON(schema, raw); err != nil {
					t.Errorf("report.json timeline entry %s: %v", raw, err)
				}
				var r struct {
					Reason  string `json:"reason"`
					Count   int    `json:"count"`
					Message string `json:"message"`
				}
				_ = json.Unmarshal(raw, &r)
				if r.Reason == closedReason {
					found++
					want := fmt.Sprintf("%d frames of this connection after the gateway closed it, frames %d to %d", len(closed), first.Frame, last.Frame)
					if r.Count != len(closed) || r.Message != want {
						t.Errorf("report.json closed entry: count %d message %q; want %d, %q", r.Count, r.Message, len(closed), want)
					}
				} else if r.Count != 0 {
					t.Errorf("report.json entry %s has a count", raw)
				}
			}
			if found != 1 || len(rj.Timeline) != len(rep.Timeline) || rj.Total != len(evs) {
				t.Errorf("report.json: %d closed entries, %d entries, total %d", found, len(rj.Timeline), rj.Total)
			}
			// The streamed records are unchanged: no count.
			for _, e := range closed {
				if bytes.Contains(e.JSON(), []byte(`"count"`)) {
					t.Fatalf("--json record %s has a count", e.JSON())
				}
			}
			page, err := os.ReadFile(filepath.Join(dir, "report.html"))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("(%d frames, to %s:%d)", len(closed), last.File, last.Frame); !bytes.Contains(page, []byte(want)) {
				t.Errorf("report.html lacks %q", want)
			}
			if !bytes.Contains(page, []byte("one row per connection, with their count")) {
				t.Error("report.html does not say that the closed frames are collapsed")
			}
			if bytes.Contains(page, []byte("Showing the first")) {
				t.Error("report.html says it shows only some events: every one is in a row")
			}
		})
	}
}

// TestTimelineBoundCountsEntries: MaxTimeline bounds the entries; a closed
// connection's frames after the bound still add to its entry.
func TestTimelineBoundCountsEntries(t *testing.T) {
	frames, _, _ := manyWrites(25)
	path := writeCapture(t, frames)
	y := strings.Replace(readOnly, "action: drop", "action: reset", 1)
	full, evs := replayEvents(t, y, path, true)
	rep, err := Run(Options{Policy: mustPolicy(t, y), WhatIf: true, MaxFlows: 64, MaxTimeline: 2}, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Timeline) != 2 || len(full.Timeline) <= 2 {
		t.Fatalf("MaxTimeline 2: %d entries (%d unbounded)", len(rep.Timeline), len(full.Timeline))
	}
	if rep.TimelineTotal != len(evs) || rep.timelineEvents() > rep.TimelineTotal {
		t.Errorf("total %d (want %d), entries stand for %d", rep.TimelineTotal, len(evs), rep.timelineEvents())
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("report.json holds the first %d; otgw replay --json prints every one", rep.timelineEvents()); !strings.Contains(b.String(), want) {
		t.Errorf("report.html lacks %q", want)
	}
}

func countOf(cs []Count, name string) int {
	for _, c := range cs {
		if c.Name == name {
			return c.N
		}
	}
	return 0
}
