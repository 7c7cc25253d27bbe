package syslog

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

// After a crash the next start reports one gap event naming the previous
// boot and the first sequence number that may be missing; after a clean
// stop, or on a first start, it reports none.
func TestExporterGapAfterCrash(t *testing.T) {
	const boot = "7a1c2b9e-0d4f-4e55-9b8a-3f0e6c2d1a00" // testEvent's
	tests := []struct {
		name     string
		sync     time.Duration // SyncInterval of the first run
		emit     int           // events 1..emit of boot
		wait     time.Duration // before the first run ends
		clean    bool          // Close instead of a crash
		fresh    bool          // no first run at all
		wantGap  bool
		wantBoot string
		wantFrom string // missingFrom, "" when not given
	}{
		{name: "first start", fresh: true},
		{name: "clean stop", sync: 50 * time.Millisecond, emit: 20, clean: true},
		{name: "crash after state sync", sync: 50 * time.Millisecond, emit: 20, wait: 300 * time.Millisecond,
			wantGap: true, wantBoot: boot, wantFrom: "21"},
		{name: "crash before state sync, records in spool", sync: time.Hour, emit: 7,
			wantGap: true, wantBoot: boot, wantFrom: "8"},
		{name: "crash before any event", sync: time.Hour,
			wantGap: true, wantBoot: "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := fastDest("tcp", testenv.FreeTCPPort(t), nil) // down: everything stays spooled
			if !tc.fresh {
				x, err := New(Config{Destinations: []Destination{d}, SyncInterval: tc.sync, CloseTimeout: 100 * time.Millisecond,
					Notify: events.Discard}, dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= tc.emit; i++ {
					x.Emit(testEvent(i))
				}
				time.Sleep(tc.wait)
				if tc.clean {
					_ = x.Close() // ErrCloseTimeout: records stay spooled
				} else {
					x.abandon()
				}
			}
			var mu sync.Mutex
			var gaps []events.Event
			x, err := New(Config{Destinations: []Destination{d}, CloseTimeout: 100 * time.Millisecond,
				Notify: events.SinkFunc(func(e *events.Event) {
					mu.Lock()
					defer mu.Unlock()
					if e.Type == events.TypeGap {
						gaps = append(gaps, *e)
					}
				})}, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = x.Close()
			mu.Lock()
			defer mu.Unlock()
			if got, want := len(gaps), map[bool]int{false: 0, true: 1}[tc.wantGap]; got != want {
				t.Fatalf("gap events = %d, want %d (%+v)", got, want, gaps)
			}
			if !tc.wantGap {
				return
			}
			g := gaps[0]
			if got := fmt.Sprint(g.Fields["prevBootId"]); got != tc.wantBoot {
				t.Errorf("prevBootId = %q, want %q", got, tc.wantBoot)
			}
			got := ""
			if v, ok := g.Fields["missingFrom"]; ok {
				got = fmt.Sprint(v)
			}
			if got != tc.wantFrom {
				t.Errorf("missingFrom = %q, want %q", got, tc.wantFrom)
			}
			if g.Severity != events.SevWarning || MsgID(&g) != "LOG_GAP" {
				t.Errorf("gap event severity %v msgid %s, want warning LOG_GAP", g.Severity, MsgID(&g))
			}
		})
	}
}

// A state file that is not ours (garbage) counts as absent: the spooled
// events still tell which boot was cut short.
func TestExporterGapStateUnreadable(t *testing.T) {
	dir := t.TempDir()
	d := fastDest("tcp", testenv.FreeTCPPort(t), nil)
	x, err := New(Config{Destinations: []Destination{d}, SyncInterval: time.Hour, Notify: events.Discard}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		x.Emit(testEvent(i))
	}
	x.abandon()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var gap *events.Event
	x, err = New(Config{Destinations: []Destination{d}, CloseTimeout: 100 * time.Millisecond,
		Notify: events.SinkFunc(func(e *events.Event) {
			if e.Type == events.TypeGap {
				gap = e
			}
		})}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = x.Close()
	if gap == nil || fmt.Sprint(gap.Fields["missingFrom"]) != "4" {
		t.Errorf("gap event %+v, want missingFrom 4", gap)
	}
}

func TestParseRunState(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   runState
		wantOK bool
	}{
		{"round trip", string(runState{boot: "b-1", seq: 42, clean: true, from: 7}.encode()), runState{boot: "b-1", seq: 42, clean: true, from: 7}, true},
		{"empty boot", "boot=\nseq=0\nclean=false\n", runState{}, true},
		{"missing clean", "boot=a\nseq=1\n", runState{}, false},
		{"bad seq", "boot=a\nseq=-1\nclean=true\n", runState{}, false},
		{"not key value", "hello\n", runState{}, false},
		{"empty", "", runState{}, false},
	}
	for _, tc := range tests {
		got, ok := parseRunState([]byte(tc.in))
		if ok != tc.wantOK || (ok && got != tc.want) {
			t.Errorf("%s: got %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}
