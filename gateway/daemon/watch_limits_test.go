package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
)

// TestReloadRefusesHugePolicy: the reload path reads through the limits
// of rules.Load: the current ruleset stays and the error event names the line.
func TestReloadRefusesHugePolicy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(goodPolicy(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &eventLog{ch: make(chan *events.Event, 16)}
	w, err := NewWatcher(WatcherConfig{Path: path, Sink: log})
	if err != nil {
		t.Fatal(err)
	}
	before := w.Ruleset()
	for _, entries := range []int{100 << 20 / 3, (rules.MaxPolicyBytes - 4096) / 3} {
		big := testenv.HugePolicy(t, t.TempDir(), entries)
		if err := os.Rename(big, path); err != nil {
			t.Fatal(err)
		}
		var err error
		start := time.Now()
		n := testenv.Allocated(func() { err = w.Reload() })
		t.Logf("reload of a %d-entry policy refused in %v, %d KiB allocated", entries, time.Since(start).Round(time.Millisecond), n>>10)
		if n > 2*rules.MaxPolicyBytes+testenv.AllocSlack {
			t.Errorf("reload allocated %d bytes, want at most %d", n, 2*rules.MaxPolicyBytes+testenv.AllocSlack)
		}
		var ps rules.Problems
		if !errors.As(err, &ps) || ps[0].Line != 12 {
			t.Fatalf("reload of %d entries: %v, want a problem at line 12", entries, err)
		}
		if w.Ruleset() != before {
			t.Fatalf("the ruleset changed")
		}
		if e := log.wait(t, "reload"); e.Type != events.TypePolicyError || e.Line != 12 || !strings.Contains(e.Message, "limit") {
			t.Fatalf("event %+v, want a policy error at line 12 about the limit", e)
		}
	}
}
