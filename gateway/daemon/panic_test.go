package daemon

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/hal"
)

// TestForwarderRecoversWorkerPanic: a panic in the Handler does not kill
// the process: Run returns a *PanicError naming the worker, both ports are
// closed (nothing forwards: fail-closed) and the panic is counted.
func TestForwarderRecoversWorkerPanic(t *testing.T) { forEachMode(t, testForwarderRecoversWorkerPanic) }

func testForwarderRecoversWorkerPanic(t *testing.T, poll bool) {
	h := HandlerFunc(func(in gateway.PortID, frame []byte, tx gateway.Tx) {
		if frame[0] == 0xbd {
			panic("engine bug")
		}
		tx.Send(in.Other(), frame)
	})
	fw, n, s, _, done := startForwarder(t, h, poll)
	n.inject(frameN(1, 60), hal.FrameMeta{})
	if got := s.waitSent(1, 5*time.Second); len(got) != 1 {
		t.Fatalf("forwarded %d frames before the panic, want 1", len(got))
	}
	bad := frameN(2, 60)
	bad[0] = 0xbd
	s.inject(bad, hal.FrameMeta{})
	var err error
	select {
	case err = <-done:
		done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of a worker panic")
	}
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Port != gateway.South || pe.Value != "engine bug" || len(pe.Stack) == 0 {
		t.Fatalf("Run returned %v, want a *PanicError of the south worker with its value and stack", err)
	}
	if !n.isClosed() || !s.isClosed() {
		t.Errorf("ports open after the panic (north closed %v, south closed %v): nothing may forward", n.isClosed(), s.isClosed())
	}
	if st := fw.Stats(); st.Panics[gateway.South] != 1 || st.Panics[gateway.North] != 0 {
		t.Errorf("Panics = %v, want [0 1]", st.Panics)
	}
	if fw.Healthy() {
		t.Errorf("Healthy() = true after a worker panicked")
	}
}

// TestForwarderPanicHoldingLock: the worker panics while holding a lock of
// the Handler that the other worker then waits for forever (a mutex
// without defer). Run still returns the panic within panicGrace instead of
// hanging, so the daemon can apply its fail mode and start a new datapath.
func TestForwarderPanicHoldingLock(t *testing.T) {
	var mu sync.Mutex
	locked, release := make(chan struct{}), make(chan struct{})
	h := HandlerFunc(func(in gateway.PortID, frame []byte, tx gateway.Tx) {
		mu.Lock()
		if frame[0] == 0xbd {
			close(locked)
			<-release
			panic("panic under the flow lock")
		}
		mu.Unlock()
	})
	n, s := newMemPort("north0"), newMemPort("south0")
	fw, err := NewForwarder(ForwarderConfig{North: n, South: s, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.Run(t.Context()) }()
	bad := frameN(1, 60)
	bad[0] = 0xbd
	n.inject(bad, hal.FrameMeta{})
	<-locked
	s.inject(frameN(2, 60), hal.FrameMeta{}) // the south worker waits for mu forever
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	close(release)
	select {
	case err = <-done:
	case <-time.After(panicGrace + 5*time.Second):
		t.Fatalf("Run hung for %v after a panic under a lock", panicGrace+5*time.Second)
	}
	took := time.Since(start)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Port != gateway.North {
		t.Fatalf("Run returned %v, want the north worker's *PanicError", err)
	}
	if took < panicGrace {
		t.Errorf("Run returned after %v: the south worker cannot have stopped (it waits for a lock never released)", took)
	}
	t.Logf("Run returned %v after the panic (grace %v)", took.Round(time.Millisecond), panicGrace)
}

// TestRunDatapathAbandonsStalledWorker: a worker stuck inside the Handler
// (an endless loop or a lock never released: a hang, not a crash) makes
// the datapath unhealthy; after StallAfter the daemon closes the ports and
// abandons it with ErrStalled, so the fail mode and a restart can follow
// (the hardware watchdog is not fed meanwhile: Healthy is false).
func TestRunDatapathAbandonsStalledWorker(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := HandlerFunc(func(in gateway.PortID, frame []byte, tx gateway.Tx) { <-block })
	n, s := newMemPort("north0"), newMemPort("south0")
	fw, err := NewForwarder(ForwarderConfig{North: n, South: s, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{}
	dp := &datapath{fwd: fw}
	d.dp.Store(dp)
	done := make(chan error, 1)
	go func() { done <- d.runDatapath(t.Context(), dp) }()
	// Healthy once both workers run (bounded, as TestForwarderStallIsUnhealthy).
	for deadline := time.Now().Add(5 * time.Second); !d.Healthy() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !d.Healthy() {
		t.Fatal("Healthy() = false before the stall")
	}
	start := time.Now()
	n.inject(frameN(1, 60), hal.FrameMeta{})
	select {
	case err = <-done:
	case <-time.After(4*StallAfter + 5*time.Second):
		t.Fatal("runDatapath did not give up on a stalled worker")
	}
	took := time.Since(start)
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("runDatapath = %v, want ErrStalled", err)
	}
	if took < StallAfter {
		t.Errorf("abandoned after %v, want not before StallAfter (%v)", took, StallAfter)
	}
	if !n.isClosed() || !s.isClosed() {
		t.Errorf("ports open after the stall: nothing may forward")
	}
	if d.Healthy() {
		t.Errorf("Healthy() = true after the stall")
	}
	t.Logf("stalled datapath abandoned after %v", took.Round(time.Millisecond))
}
