package daemon

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/rules"
)

// hugePolicy writes a policy whose units list (line 12) has entries
// entries "1, ": 100 MB for 33 M entries.
func hugePolicy(t *testing.T, dir string, entries int) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`version: 1
name: limits
zones:
  north: { port: north, networks: [192.0.2.128/25] }
  south: { port: south, networks: [192.0.2.0/25] }
conduits:
  - name: c
    from: north
    to: south
    rules:
      - modbus:
          units: [`)
	chunk := bytes.Repeat([]byte("1, "), 1<<16)
	for range entries >> 16 {
		b.Write(chunk)
	}
	b.Write(chunk[:3*(entries&(1<<16-1))])
	b.WriteString("1]\n")
	path := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// allocSlack covers what TotalAlloc also counts besides the load: other
// goroutines of the test binary and, under -race, the detector's shadow
// bookkeeping (CI's race pass measured 1.5 KiB over the bare bound).
const allocSlack = 256 << 10

func allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

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
		big := hugePolicy(t, t.TempDir(), entries)
		if err := os.Rename(big, path); err != nil {
			t.Fatal(err)
		}
		var err error
		start := time.Now()
		n := allocated(func() { err = w.Reload() })
		t.Logf("reload of a %d-entry policy refused in %v, %d KiB allocated", entries, time.Since(start).Round(time.Millisecond), n>>10)
		if n > 2*rules.MaxPolicyBytes+allocSlack {
			t.Errorf("reload allocated %d bytes, want at most %d", n, 2*rules.MaxPolicyBytes+allocSlack)
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
