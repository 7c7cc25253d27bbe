package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/replay"
)

type expectFile struct {
	Events []struct {
		Frame   int    `yaml:"frame"`
		Verdict string `yaml:"verdict"`
		Reason  string `yaml:"reason"`
	} `yaml:"events"`
}

func match(want, got string) bool {
	if p, ok := strings.CutSuffix(want, "*"); ok {
		return strings.HasPrefix(got, p)
	}
	return want == got
}

// TestScenarios replays every scenario and diffs its verdict events
// against expect.yaml.
func TestScenarios(t *testing.T) {
	dirs, _ := filepath.Glob("*/expect.yaml")
	if len(dirs) == 0 {
		t.Fatal("no scenarios (run go test ./simulate/gen -run TestGenerate -update)")
	}
	counts := map[string]int{}
	for _, ef := range dirs {
		dir := filepath.Dir(ef)
		t.Run(dir, func(t *testing.T) {
			pol, err := rules.Load(filepath.Join(dir, "policy.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(ef)
			if err != nil {
				t.Fatal(err)
			}
			var want expectFile
			if err := yaml.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			var got []string
			var gotEv []*replay.Event
			_, err = replay.Run(replay.Options{Policy: pol, StrictMidstream: true, OnEvent: func(e *replay.Event) {
				gotEv = append(gotEv, e)
				got = append(got, fmt.Sprintf("frame %d %s %s", e.Frame, e.Verdict, e.Reason))
			}}, filepath.Join(dir, "input.pcap"))
			if err != nil {
				t.Fatal(err)
			}
			ok := len(gotEv) == len(want.Events)
			for i := 0; ok && i < len(gotEv); i++ {
				w, g := want.Events[i], gotEv[i]
				ok = w.Frame == g.Frame && w.Verdict == g.Verdict && match(w.Reason, g.Reason)
			}
			if !ok {
				var ws []string
				for _, w := range want.Events {
					ws = append(ws, fmt.Sprintf("frame %d %s %s", w.Frame, w.Verdict, w.Reason))
				}
				t.Errorf("verdict events differ\n got: %s\nwant: %s", strings.Join(got, "; "), strings.Join(ws, "; "))
			}
		})
		counts[strings.SplitN(dir, "-", 2)[0][:1]]++
	}
	t.Logf("scenarios by catalogue letter: %v", counts)
}
