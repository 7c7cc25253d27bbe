package syslog

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

// offlineExporter is an exporter as otgw replay configures it: the
// smallest spool (64 KiB, about a hundred events) so that it fills, and
// SpoolFullWait.
func offlineExporter(t *testing.T, dir string, fullWait time.Duration, d Destination) *Exporter {
	t.Helper()
	x, err := New(Config{Destinations: []Destination{d}, Hostname: "gw-01.plant.example", SWVersion: "0.1.0",
		SpoolBytes: 64 << 10, SyncInterval: 50 * time.Millisecond, CloseTimeout: 500 * time.Millisecond,
		SpoolFullWait: fullWait, Notify: events.Discard}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func seqDeny(boot string, seq int) *events.Event {
	return &events.Event{Seq: uint64(seq), BootID: boot, Time: time.Now(), Severity: events.SevNotice, Type: events.TypeDeny,
		Proto: "TCP", Reason: "port_not_allowed", Message: fmt.Sprintf("deny %d", seq),
		Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("192.0.2.10:1000")}
}

// uniqueSeqs counts the distinct sequenceIds among the received lines.
func uniqueSeqs(t *testing.T, lines []string) int {
	t.Helper()
	u, _ := seqs(t, lines)
	return len(u)
}

// SpoolFullWait: with the receiver down, a producer of 2,000 events into a
// spool that holds about 100 waits instead of dropping; once the receiver
// is up (the same rsyslogd restarted) every event arrives.
func TestSpoolFullWaitRidesOutReceiverOutage(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	r.start()
	d := fastDest("tcp", r.plain, nil)
	x := offlineExporter(t, t.TempDir(), 20*time.Second, d)
	const n = 2000
	for i := 1; i <= 50; i++ {
		x.Emit(seqDeny("b1", i))
	}
	if err := x.Flush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Flush with the receiver up: %v", err)
	}
	r.stop() // SIGTERM to the rsyslogd this test started
	done := make(chan time.Duration)
	go func() {
		t0 := time.Now()
		for i := 51; i <= n; i++ {
			x.Emit(seqDeny("b1", i))
		}
		done <- time.Since(t0)
	}()
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("the producer finished with the receiver down: it did not wait for room")
	default:
	}
	r.start()
	var took time.Duration
	select {
	case took = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the producer still waits 30 s after the receiver came back")
	}
	if err := x.Flush(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	st := x.Stats()
	if err := x.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := r.waitLines(10*time.Second, func(l []string) bool { return uniqueSeqs(t, l) >= n })
	t.Logf("%d events, %d received lines (%d distinct), producer waited %v; stats %+v", n, len(lines), uniqueSeqs(t, lines), took, st)
	if got := uniqueSeqs(t, lines); got != n {
		t.Errorf("received %d distinct events, want %d", got, n)
	}
	if st.Dropped != 0 || st.GaveUp != 0 || st.Waited == 0 {
		t.Errorf("stats %+v: want Dropped 0, GaveUp 0, Waited > 0", st)
	}
}

// SpoolFullWait is a bound: with no receiver at all, Emit gives up after
// the spool has been full for SpoolFullWait without progress, the spool
// drops (counted), and later Emits do not wait again for each event.
func TestSpoolFullWaitGivesUpWithoutProgress(t *testing.T) {
	d := fastDest("tcp", testenv.FreeTCPPort(t), nil) // nothing listens there
	x := offlineExporter(t, t.TempDir(), 300*time.Millisecond, d)
	const n = 2000
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		x.Emit(seqDeny("b1", i))
	}
	took := time.Since(t0)
	st := x.Stats()
	err := x.Flush(ctxTimeout(t, 100*time.Millisecond))
	_ = x.Close()
	t.Logf("%d events in %v; stats %+v; Flush: %v", n, took, st, err)
	if st.Dropped == 0 || st.GaveUp == 0 {
		t.Errorf("stats %+v: want drops counted after giving up", st)
	}
	if took > 5*time.Second {
		t.Errorf("%d Emits took %v: after giving up, Emit must not wait again per event", n, took)
	}
	if !errors.Is(err, ErrUndelivered) || !strings.Contains(err.Error(), d.Name+": ") || !strings.Contains(err.Error(), "records") {
		t.Errorf("Flush = %v, want ErrUndelivered naming %s and its records", err, d.Name)
	}
}

// Live default (SpoolFullWait 0): a full spool never makes Emit wait.
func TestSpoolFullNoWaitByDefault(t *testing.T) {
	d := fastDest("tcp", testenv.FreeTCPPort(t), nil)
	x := offlineExporter(t, t.TempDir(), 0, d)
	t0 := time.Now()
	for i := 1; i <= 2000; i++ {
		x.Emit(seqDeny("b1", i))
	}
	took := time.Since(t0)
	st := x.Stats()
	_ = x.Close()
	if st.Waited != 0 || st.Dropped == 0 {
		t.Errorf("stats %+v: want no waits, drops counted", st)
	}
	if took > 2*time.Second {
		t.Errorf("2000 Emits into a full spool took %v", took)
	}
}

// Flush returns once the receiver has confirmed everything, riding out a
// receiver restart; with the receiver down it names what is left.
func TestFlushWaitsForDelivery(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	d := fastDest("tcp", r.plain, nil)
	x := offlineExporter(t, t.TempDir(), 0, d)
	for i := 1; i <= 80; i++ {
		x.Emit(seqDeny("b2", i))
	}
	err := x.Flush(ctxTimeout(t, 300*time.Millisecond))
	if !errors.Is(err, ErrUndelivered) || !strings.Contains(err.Error(), ": 80 records") {
		t.Fatalf("Flush with the receiver down = %v, want ErrUndelivered with 80 records", err)
	}
	r.start()
	if err := x.Flush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Flush after the receiver started: %v", err)
	}
	if st := x.Stats(); st.Dests[0].Pending != 0 || st.Dests[0].Confirmed < 80 {
		t.Errorf("after Flush: %+v", st.Dests[0])
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	lines := r.waitLines(5*time.Second, func(l []string) bool { return uniqueSeqs(t, l) >= 80 })
	if got := uniqueSeqs(t, lines); got != 80 {
		t.Errorf("received %d distinct events, want 80", got)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
