package update

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLockStateWaitsForTheGatewayOnly: an fw command waits (briefly) for
// the running gateway's short hold of the state lock, but is refused at
// once while another fw command holds it.
func TestLockStateWaitsForTheGatewayOnly(t *testing.T) {
	dir := t.TempDir()
	gw, err := LockStateAs(dir, "run")
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(300 * time.Millisecond); gw.Unlock() }()
	start := time.Now()
	l, err := LockStateWait(dir)
	if err != nil {
		t.Fatalf("fw command behind the gateway's short hold: %v, want the lock after the wait", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("got the lock after %v while the gateway held it for 300ms", d)
	}
	start = time.Now()
	if _, err := LockStateWait(dir); !errors.Is(err, ErrBusy) || strings.Contains(err.Error(), "running gateway") {
		t.Fatalf("second fw command: %v, want ErrBusy naming a plain process", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a command held by another fw command waited %v, want an immediate refusal", d)
	}
	l.Unlock()
}

// TestLockStateWaitThroughGatewayTurnover: while the gateway takes and
// releases the lock over and over (its short holds), an fw command always
// gets the lock in the end: a look between a holder's flock and its line,
// or between a release and its unlock, is no reason to refuse.
func TestLockStateWaitThroughGatewayTurnover(t *testing.T) {
	dir := t.TempDir()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if gw, err := LockStateAs(dir, "run"); err == nil {
				time.Sleep(100 * time.Microsecond)
				gw.Unlock()
			}
			time.Sleep(300 * time.Microsecond)
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 300 {
		l, err := LockStateWait(dir)
		if err != nil {
			t.Fatalf("fw command %d while the gateway takes short holds: %v", i, err)
		}
		l.Unlock()
	}
}
