package hal_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/halsim"
)

// The watchdog is petted only while the datapath says it is healthy; once
// it is not, the (simulated) board resets after the timeout.
func TestRunWatchdogPetsOnlyWhileHealthy(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(0, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	wd := halsim.NewWatchdog(time.Second, clock)
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hal.RunWatchdog(ctx, wd, 5*time.Millisecond, healthy.Load, nil) }()

	waitFor := func(cond func() bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	waitFor(func() bool { return wd.Keepalives() >= 3 }, "keepalives while healthy")
	advance(500 * time.Millisecond)
	k := wd.Keepalives()
	waitFor(func() bool { return wd.Keepalives() > k }, "keepalive after clock advance")
	if wd.Expired() {
		t.Fatal("expired while healthy")
	}

	healthy.Store(false)
	// A tick that read healthy=true before the store may still count its
	// keepalive: wait until the count holds still for 50 ms (bounded; a
	// watchdog that keeps feeding while unhealthy never holds still).
	k = wd.Keepalives()
	for deadline := time.Now().Add(2 * time.Second); ; {
		time.Sleep(50 * time.Millisecond)
		got := wd.Keepalives()
		if got == k {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("keepalives while unhealthy: %d -> %d, want none", k, got)
			break
		}
		k = got
	}
	advance(2 * time.Second)
	if !wd.Expired() {
		t.Error("not expired after timeout without keepalive")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("RunWatchdog = %v, want context.Canceled", err)
	}
	if err := wd.Close(); err != nil {
		t.Fatal(err)
	}
	if wd.Expired() {
		t.Error("expired after magic close")
	}
}
