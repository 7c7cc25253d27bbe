package xdp

import (
	"errors"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
)

// Under qemu-user (OTGW_QEMU=1, make test-arm64) there is no bpf(2): New
// must answer ErrUnavailable, which the gateway turns into a log line and
// user-space forwarding.
func TestUnavailableUnderEmulation(t *testing.T) {
	if !testenv.Emulated() {
		t.Skip("runs under qemu-user only (OTGW_QEMU=1); natively TestUnavailableLeavesNothingAttached covers ErrUnavailable")
	}
	b, err := New(Config{North: "north0", South: "south0"})
	if err == nil {
		b.Close()
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New under qemu-user: %v, want ErrUnavailable", err)
	}
	t.Logf("the error a caller logs: %v", err)
}
