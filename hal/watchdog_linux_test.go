package hal_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/hal"
)

// A real /dev/watchdog would reset the shared test host, so the device
// is a plain file here: the ioctl fails with ENOTTY and Keepalive falls
// back to a write, exactly as on drivers without WDIOC_KEEPALIVE; Close
// writes the magic 'V'.
func TestDevWatchdogWritesKeepaliveAndMagicClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wd, err := hal.OpenWatchdog(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := wd.Keepalive(); err != nil {
			t.Fatal(err)
		}
	}
	if err := wd.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if want := "\x00\x00\x00V"; string(got) != want {
		t.Errorf("device saw %q, want %q", got, want)
	}
	if err := wd.Keepalive(); err == nil {
		t.Error("Keepalive after Close = nil, want error")
	}
}
