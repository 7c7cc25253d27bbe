package syslog

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// S09/S10: a flood of 10,000 identical denies per second for 1.5 s through
// the Pipeline into rsyslog: bounded output plus suppression counts that
// add up, a critical event inside the flood delivered unaggregated, and
// the producer never blocked.
func TestRsyslogFloodAggregated(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	r.start()
	x := newExporter(t, t.TempDir(), fastDest("tcp", r.plain, nil))
	const window = 250 * time.Millisecond
	p := events.NewPipeline(events.PipelineConfig{AggregateWindow: window}, x)

	deny := func() *events.Event {
		return &events.Event{Severity: events.SevWarning, Type: events.TypeDeny, Proto: "modbus",
			Conduit: "hmi-polls-plc", Rule: "default-deny", Reason: "fc not allowed", Message: "blocked write",
			Src: netip.MustParseAddrPort("192.0.2.130:40000"), Dst: netip.MustParseAddrPort("192.0.2.10:502")}
	}
	const rate, dur = 10000, 1500 * time.Millisecond
	start := time.Now()
	sent, slowEmits, maxEmit := 0, 0, time.Duration(0)
	for tick := 0; time.Since(start) < dur; tick++ {
		// pace: 100 events every 10 ms
		for time.Since(start) < time.Duration(tick)*10*time.Millisecond {
			time.Sleep(time.Millisecond)
		}
		for i := 0; i < rate/100; i++ {
			t0 := time.Now()
			p.Emit(deny())
			d := time.Since(t0)
			maxEmit = max(maxEmit, d)
			if d > 20*time.Millisecond {
				slowEmits++
			}
			sent++
		}
		if tick == 50 {
			p.Emit(&events.Event{Severity: events.SevCritical, Type: events.TypeDeny, Proto: "modbus",
				Conduit: "hmi-polls-plc", Rule: "default-deny", Reason: "fc not allowed", Message: "CRITICAL inside flood",
				Src: netip.MustParseAddrPort("192.0.2.130:40000"), Dst: netip.MustParseAddrPort("192.0.2.10:502")})
		}
	}
	elapsed := time.Since(start)
	p.Close()
	ps := p.Stats()
	if err := x.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := r.waitLines(5*time.Second, func(l []string) bool { return uint64(len(l)) >= ps.Delivered })
	denies, crit, suppressed, other := 0, 0, 0, 0
	seen := make(map[string]bool, len(lines))
	for _, l := range lines {
		pl := parseLine(t, l)
		if id := pl.sd["meta"]["sequenceId"]; id != "" {
			if seen[id] {
				continue // an at-least-once resend after a reconnect
			}
			seen[id] = true
		}
		switch {
		case strings.Contains(pl.msg, "CRITICAL inside flood"):
			crit++
		case pl.msgid == "MODBUS_DENY":
			denies++
		case pl.msgid == "EVENTS_SUPPRESSED":
			c, _ := strconv.Atoi(pl.sd["otgw@32473"]["count"])
			suppressed += c
		default:
			other++
		}
	}
	t.Logf("flood: %d denies in %v (%.0f/s), max Emit %v; out: %d denies + %d summaries-worth %d suppressed, pipeline %+v",
		sent, elapsed, float64(sent)/elapsed.Seconds(), maxEmit, denies, ps.Aggregates, suppressed, ps)
	if crit != 1 {
		t.Errorf("critical event delivered %d times, want 1 (never aggregated)", crit)
	}
	if denies+suppressed != sent {
		t.Errorf("denies out %d + suppressed %d = %d, want every one of %d accounted", denies, suppressed, denies+suppressed, sent)
	}
	bound := int(elapsed/window) + 3
	if denies > bound || int(ps.Aggregates) > bound {
		t.Errorf("%d denies / %d summaries out, want <= %d each (one per %v window)", denies, ps.Aggregates, bound, window)
	}
	if ps.Dropped != 0 {
		t.Errorf("pipeline dropped %d", ps.Dropped)
	}
	// A producer that blocked on the network would be slow on many
	// emits, and for as long as the receiver made it wait; one descheduled
	// now and then by a loaded machine is slow on a few, briefly.
	if slowEmits > sent/100 || maxEmit > time.Second {
		t.Errorf("%d of %d emits took over 20ms, the slowest %v: the producer must never block", slowEmits, sent, maxEmit)
	}
}
