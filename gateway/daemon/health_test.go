package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

var healthyProbe = healthProbe{
	policy:   func() error { return nil },
	ports:    func() error { return nil },
	watchdog: func() error { return nil },
}

// onTrial returns a sim device (update/updatetest) that installed 1.1.0
// (SVN 2) and rebooted into it: slot B runs on trial.
func onTrial(t *testing.T) *updatetest.Env {
	t.Helper()
	e := updatetest.New(t, updatetest.Options{})
	b := e.Bundle(updatetest.Spec{Version: "1.1.0", SVN: 2})
	if _, err := e.Installer.Install(context.Background(), bytes.NewReader(b), "test"); err != nil {
		t.Fatal(err)
	}
	if s, err := e.Board.Reboot(); err != nil || s != update.SlotB {
		t.Fatalf("reboot: %v %v", s, err)
	}
	e.Reopen()
	e.Events.Reset()
	return e
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestTrialHealthyIsCommitted(t *testing.T) {
	e := onTrial(t)
	var reboots atomic.Int32
	var samples atomic.Int32
	p := healthyProbe
	p.ports = func() error { samples.Add(1); return nil }
	start := time.Now()
	err := superviseTrial(context.Background(), e.Installer, p,
		UpdateConfig{Period: 300 * time.Millisecond, Interval: 20 * time.Millisecond, Reboot: func() error { reboots.Add(1); return nil }}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("committed after %v, before the 300ms trial period", d)
	}
	// 15 ticks of 20 ms fit the period; a loaded 2-core machine drops
	// ticks (time.Ticker does not queue them), so ask for sampling during
	// the period, not for every tick (a CI run under load saw 3).
	if n := samples.Load(); n < 3 {
		t.Errorf("health sampled %d times in the period, want >= 3 (sampled throughout, not once at the end)", n)
	}
	st := e.State()
	if st.Primary != update.SlotB || st.SVN != 2 || st.Slots[update.SlotB].State != update.SlotGood {
		t.Errorf("after commit: %+v", st)
	}
	if e.Events.Last("committed") == nil || reboots.Load() != 0 {
		t.Errorf("events %v, reboots %d", e.Events.Steps(), reboots.Load())
	}
}

// A port that goes down during the trial period (not at its end) still
// fails the trial: every sample counts.
func TestTrialUnhealthyRollsBack(t *testing.T) {
	tests := []struct {
		name  string
		probe func(samples *atomic.Int32) healthProbe
		want  string
	}{
		{"port down mid-period", func(samples *atomic.Int32) healthProbe {
			p := healthyProbe
			p.ports = func() error {
				if samples.Add(1) == 3 { // down for one sample only
					return errors.New("port south0 is down")
				}
				return nil
			}
			return p
		}, "south0 is down"},
		{"watchdog not fed", func(*atomic.Int32) healthProbe {
			p := healthyProbe
			p.watchdog = func() error { return errors.New("datapath workers stalled") }
			return p
		}, "stalled"},
		{"no policy check wired", func(*atomic.Int32) healthProbe {
			p := healthyProbe
			p.policy = nil
			return p
		}, "policy: no check configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := onTrial(t)
			var samples, reboots atomic.Int32
			err := superviseTrial(context.Background(), e.Installer, tt.probe(&samples),
				UpdateConfig{Period: 300 * time.Millisecond, Interval: 20 * time.Millisecond, Reboot: func() error { reboots.Add(1); return nil }}, quiet())
			if err != nil {
				t.Fatalf("superviseTrial: %v", err)
			}
			if reboots.Load() != 1 {
				t.Errorf("reboots %d, want 1", reboots.Load())
			}
			ev := e.Events.Last("rolled_back")
			if ev == nil || ev.Reason != "healthcheck" || !strings.Contains(ev.Message, tt.want) {
				t.Fatalf("rolled_back event %+v (steps %v), want reason healthcheck naming %q", ev, e.Events.Steps(), tt.want)
			}
			st := e.State()
			if st.SVN != 1 || st.Slots[update.SlotB].State != update.SlotBad {
				t.Errorf("after failed trial: SVN %d, slot B %v; want 1, bad", st.SVN, st.Slots[update.SlotB].State)
			}
			if s, _ := e.Board.Reboot(); s != update.SlotA {
				t.Errorf("next boot starts %v, want A", s)
			}
		})
	}
}

func TestTrialFailureWithoutRebootStopsTheGateway(t *testing.T) {
	e := onTrial(t)
	p := healthyProbe
	p.ports = func() error { return errors.New("down") }
	err := superviseTrial(context.Background(), e.Installer, p, UpdateConfig{Period: 100 * time.Millisecond, Interval: 10 * time.Millisecond}, quiet())
	if !errors.Is(err, ErrTrialFailed) || !errors.Is(err, update.ErrHealthCheck) {
		t.Fatalf("err %v, want ErrTrialFailed and ErrHealthCheck", err)
	}
}

// A stop (or crash) before the period ends commits nothing: the slot stays
// on trial and the bootloader's tries decide.
func TestTrialStoppedEarlyIsNotCommitted(t *testing.T) {
	e := onTrial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	if err := superviseTrial(ctx, e.Installer, healthyProbe, UpdateConfig{Period: 5 * time.Second, Interval: 10 * time.Millisecond}, quiet()); err != nil {
		t.Fatal(err)
	}
	st := e.State()
	if st.Trial != update.SlotB || st.Slots[update.SlotB].State != update.SlotPending || st.SVN != 1 {
		t.Errorf("after early stop: %+v", st)
	}
	if e.Events.Last("committed") != nil {
		t.Error("committed although the trial period did not end")
	}
}

func TestCommittedSlotNeedsNoHealthCheck(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	called := false
	p := healthyProbe
	p.ports = func() error { called = true; return nil }
	if err := superviseTrial(context.Background(), e.Installer, p, UpdateConfig{Period: time.Hour}, quiet()); err != nil {
		t.Fatal(err)
	}
	if called || len(e.Events.Steps()) != 0 {
		t.Errorf("probe called %v, events %v on a committed slot", called, e.Events.Steps())
	}
}

// Startup's report of a fallback (the trial's tries ran out) is emitted
// when the gateway starts.
func TestStartupReportsExhaustedTrial(t *testing.T) {
	e := onTrial(t)
	for i := 0; i < 3; i++ {
		e.Board.Reboot()
	}
	e.Reopen()
	if err := superviseTrial(context.Background(), e.Installer, healthyProbe, UpdateConfig{Period: time.Hour}, quiet()); err != nil {
		t.Fatal(err)
	}
	if ev := e.Events.Last("rolled_back"); ev == nil || ev.Reason != "boot_attempts_exhausted" {
		t.Errorf("events %v", e.Events.Steps())
	}
}

func TestUpdateEventsAdapter(t *testing.T) {
	var got []events.Event
	f := UpdateEvents(events.SinkFunc(func(e *events.Event) { got = append(got, *e) }))
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, sev := range []struct {
		u update.Severity
		e events.Severity
	}{{update.SevCritical, events.SevCritical}, {update.SevError, events.SevError}, {update.SevWarning, events.SevWarning},
		{update.SevNotice, events.SevNotice}, {update.SevInfo, events.SevInfo}} {
		got = nil
		f(&update.Event{Time: now, Severity: sev.u, Step: "rejected", Version: "1.2.0", Reason: "rollback", Message: "m", Fields: map[string]any{"slot": "B"}})
		if len(got) != 1 {
			t.Fatalf("%d events", len(got))
		}
		e := got[0]
		if e.Severity != sev.e || e.Severity.String() != sev.u.String() || e.Type != events.TypeUpdate || e.Step != "rejected" ||
			e.Version != "1.2.0" || e.Reason != "rollback" || e.Message != "m" || e.Fields["slot"] != "B" || !e.Time.Equal(now) {
			t.Errorf("adapted %v: %+v", sev.u, e)
		}
	}
}

// TestFreshnessWatchRaisesStale: the running gateway fetches the timestamp
// statement and, once it has expired and nothing newer comes (a freeze),
// raises a "stale" update event at every check.
func TestFreshnessWatchRaisesStale(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{TimestampKeys: 1})
	stmt := e.Timestamp(update.Timestamp{Version: 1, Latest: "1.0.0", SVN: 1, Expires: updatetest.Epoch.Add(time.Hour)})
	src := updatetest.WriteFile(t, "", "timestamp.json", stmt)
	cfg := UpdateConfig{TimestampSource: src, FreshnessInterval: 30 * time.Millisecond}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	watchFreshness(ctx, e.Installer, cfg, quiet())
	cancel()
	if e.Events.Last("refreshed") == nil || e.Events.Last("stale") != nil {
		t.Fatalf("fresh statement: events %v", e.Events.Steps())
	}

	e.Now = updatetest.Epoch.Add(2 * time.Hour) // the same statement keeps being served
	e.Reopen()
	e.Events.Reset()
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	watchFreshness(ctx, e.Installer, cfg, quiet())
	cancel()
	n := 0
	for _, ev := range e.Events.All() {
		if ev.Step == "stale" && ev.Reason == "expired" && ev.Severity == update.SevWarning {
			n++
		}
	}
	if n < 2 {
		t.Errorf("%d stale events in 100ms at a 30ms interval, want >= 2 (steps %v)", n, e.Events.Steps())
	}
}
