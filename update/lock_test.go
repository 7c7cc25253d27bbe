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
