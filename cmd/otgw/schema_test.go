package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/replay"
)

// Done-when of issue 17: every record that `otgw replay --json`,
// report.json's timeline and the engine's live event path produce, over
// every scenario capture, validates against the one schema; and the live
// events carry the flow_id and community_id of the replay records of the
// same traffic.
func TestRecordsOfEveryScenarioMatchSchema(t *testing.T) {
	s := testenv.CompileSchema(t, events.Schema)
	dirs, err := filepath.Glob(filepath.Join("..", "..", "simulate", "scenarios", "*", "input.pcap"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no scenario captures: %v", err)
	}
	var records, timeline, live, matched int
	for _, pc := range dirs {
		dir := filepath.Dir(pc)
		name := filepath.Base(dir)
		pol := filepath.Join(dir, "policy.yaml")
		out := t.TempDir()
		var stdout, stderr bytes.Buffer
		if code := run([]string{"replay", "--policy", pol, "--json", "--out", out, pc}, &stdout, &stderr); code != 0 {
			t.Errorf("%s: replay exit %d: %s", name, code, stderr.String())
			continue
		}
		sc := bufio.NewScanner(&stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			records++
			if err := testenv.ValidateJSON(s, sc.Bytes()); err != nil {
				t.Errorf("%s: replay --json record: %v\n%s", name, err, sc.Bytes())
			}
		}
		b, err := os.ReadFile(filepath.Join(out, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Timeline []json.RawMessage `json:"timeline"`
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s: report.json: %v", name, err)
		}
		for _, r := range rep.Timeline {
			timeline++
			if err := testenv.ValidateJSON(s, r); err != nil {
				t.Errorf("%s: report.json timeline record: %v\n%s", name, err, r)
			}
		}

		// The engine's live event path (what otgw run writes to its
		// events file and syslog) for the same frames.
		p, err := rules.Load(pol)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var liveEvs []*events.Event
		var recs []*events.Event
		_, err = replay.Run(replay.Options{Policy: p,
			Sink:    events.SinkFunc(func(e *events.Event) { mu.Lock(); liveEvs = append(liveEvs, e); mu.Unlock() }),
			OnEvent: func(e *replay.Event) { recs = append(recs, e.Record()) }}, pc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, le := range liveEvs {
			live++
			j := le.AppendJSON(nil)
			if err := testenv.ValidateJSON(s, j); err != nil {
				t.Errorf("%s: live event record: %v\n%s", name, err, j)
			}
			if !le.Src.IsValid() {
				continue
			}
			lt, _ := le.Tuple()
			for _, r := range recs {
				if r.Time.Equal(le.Time) && r.Reason == le.Reason && r.Src == le.Src && r.Dst == le.Dst {
					rt, _ := r.Tuple()
					if events.FlowID(rt) != events.FlowID(lt) || events.CommunityID(rt, 0) != events.CommunityID(lt, 0) || r.Action != le.Action {
						t.Errorf("%s: live %s and replay %s differ in flow_id/community_id/action", name, j, r.AppendJSON(nil))
					}
					matched++
					break
				}
			}
		}
	}
	t.Logf("%d scenarios: %d replay --json records, %d report.json timeline records, %d live events (%d matched to a replay record)",
		len(dirs), records, timeline, live, matched)
	if records == 0 || timeline == 0 || live == 0 || matched == 0 {
		t.Errorf("nothing compared: records %d timeline %d live %d matched %d", records, timeline, live, matched)
	}
}
