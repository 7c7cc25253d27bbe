package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

func goodPolicy(i int) string {
	return fmt.Sprintf(`version: 1
name: v%d
zones:
  north: { port: north, networks: [192.0.2.128/25] }
  south: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: north }
  plc: { ip: 192.0.2.10, zone: south }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          allow:
            - read: holding 0-%d
`, i, 100+i)
}

const badPolicy = "version: 1\nname: bad\nmode: enforcing\n"

type eventLog struct {
	ch chan *events.Event
}

func (l *eventLog) Emit(e *events.Event) { l.ch <- e }

func (l *eventLog) wait(t *testing.T, what string) *events.Event {
	t.Helper()
	select {
	case e := <-l.ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no event after %s", what)
		return nil
	}
}

// writeRename replaces the file the way editors do: write a temp file in the
// same directory, then rename it over the policy.
func writeRename(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".policy.yaml.swp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startWatcher(t *testing.T, path string, debounce time.Duration, hup bool) (*Watcher, *eventLog) {
	t.Helper()
	log := &eventLog{ch: make(chan *events.Event, 16)}
	w, err := NewWatcher(WatcherConfig{Path: path, Sink: log, Debounce: debounce, SIGHUP: hup})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select { // Run watches the directory and SIGHUP from here on
	case <-w.watching:
	case <-done:
		t.Fatal("Run returned before it watched the policy")
	}
	return w, log
}

func TestWatcherReloads100TimesUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(goodPolicy(0)), 0o644); err != nil {
		t.Fatal(err)
	}
	w, log := startWatcher(t, path, 50*time.Millisecond, false)

	// Evaluators: each goroutine owns its Flow (as the gateway's flow table
	// does) and keeps it across reloads.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var evals, denied atomic.Int64
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := rules.Flow{InPort: "north", OutPort: "south", Src: netip.MustParseAddr("192.0.2.130"), Dst: netip.MustParseAddr("192.0.2.10"),
				SrcPort: 40000, DstPort: 502, Transport: rules.TransportTCP}
			p := rules.PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: rules.Modbus{Unit: 1, FC: 3, Addr: 0, Qty: 50}}
			for !stop.Load() {
				v := w.Ruleset().Evaluate(&f, &p)
				if v.Action != rules.Allow {
					denied.Add(1)
				}
				if evals.Add(1)%256 == 0 {
					time.Sleep(50 * time.Microsecond) // share the CPU with the reloads
				}
			}
		}()
	}
	reloads, errs := 0, 0
	for i := 1; i <= 100; i++ {
		before := w.Ruleset()
		bad := i%5 == 0
		data := goodPolicy(i)
		if bad {
			data = badPolicy
		}
		if i%2 == 0 {
			writeRename(t, path, data)
		} else if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		e := log.wait(t, fmt.Sprintf("write %d", i))
		switch {
		case bad:
			if e.Type != events.TypePolicyError || e.File != path || e.Line != 3 || !strings.Contains(e.Message, `unknown mode "enforcing"`) {
				t.Fatalf("write %d (bad): got event %+v, want policy_error at %s line 3", i, e, path)
			}
			if w.Ruleset() != before {
				t.Fatalf("write %d (bad): the ruleset changed", i)
			}
			errs++
		default:
			if e.Type != events.TypePolicyReload || !strings.HasPrefix(e.Version, fmt.Sprintf("v%d@", i)) {
				t.Fatalf("write %d: got event %+v, want policy_reload of v%d", i, e, i)
			}
			if w.Ruleset().Name() != fmt.Sprintf("v%d", i) {
				t.Fatalf("write %d: live ruleset is %q", i, w.Ruleset().Name())
			}
			reloads++
		}
	}
	stop.Store(true)
	wg.Wait()
	if denied.Load() != 0 {
		t.Errorf("%d of %d evaluations were denied during reloads; every version allows the PDU", denied.Load(), evals.Load())
	}
	t.Logf("%d reloads, %d rejected files, %d evaluations meanwhile", reloads, errs, evals.Load())
}

func TestWatcherRemoveAndRecreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(goodPolicy(0)), 0o644); err != nil {
		t.Fatal(err)
	}
	w, log := startWatcher(t, path, 20*time.Millisecond, false)
	old := w.Ruleset()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if e := log.wait(t, "remove"); e.Type != events.TypePolicyError || e.File != path {
		t.Fatalf("after remove: got %+v, want policy_error naming the file", e)
	}
	if w.Ruleset() != old {
		t.Fatal("removing the file changed the ruleset")
	}
	if err := os.WriteFile(path, []byte(goodPolicy(7)), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := log.wait(t, "recreate"); e.Type != events.TypePolicyReload {
		t.Fatalf("after recreate: got %+v, want policy_reload", e)
	}
	if got := w.Ruleset().Name(); got != "v7" {
		t.Errorf("after recreate: ruleset %q, want v7", got)
	}
}

func TestWatcherSIGHUP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(goodPolicy(0)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A debounce longer than the test: only SIGHUP can trigger the reload.
	w, log := startWatcher(t, path, time.Hour, true)
	if err := os.WriteFile(path, []byte(goodPolicy(3)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if e := log.wait(t, "SIGHUP"); e.Type != events.TypePolicyReload {
		t.Fatalf("got %+v, want policy_reload", e)
	}
	if got := w.Ruleset().Name(); got != "v3" {
		t.Errorf("ruleset %q, want v3", got)
	}
}

func TestNewWatcherRejectsBadPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(badPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWatcher(WatcherConfig{Path: path}); err == nil || !strings.Contains(err.Error(), path+":3:") {
		t.Fatalf("got %v, want an error naming %s:3", err, path)
	}
}
