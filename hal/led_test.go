package hal_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/hal"
)

// fakeLEDs lays out a temp directory like /sys/class/leds/NAME.
func fakeLEDs(t *testing.T, name string, max string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{
		"max_brightness": max + "\n",
		"brightness":     "0\n",
		"trigger":        "[none] kbd-scrolllock timer heartbeat default-on netdev mmc0\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestSysfsLED(t *testing.T) {
	tests := []struct {
		name           string
		max            string
		do             func(*hal.SysfsLED) error
		wantBrightness string
		wantTrigger    string
		wantErr        error
	}{
		{"on uses max_brightness", "255", func(l *hal.SysfsLED) error { return l.Set(true) }, "255", "none", nil},
		{"on with max 1", "1", func(l *hal.SysfsLED) error { return l.Set(true) }, "1", "none", nil},
		{"off", "255", func(l *hal.SysfsLED) error { return l.Set(false) }, "0", "none", nil},
		{"heartbeat trigger", "1", func(l *hal.SysfsLED) error { return l.SetTrigger("heartbeat") }, "0", "heartbeat", nil},
		{"unknown trigger refused", "1", func(l *hal.SysfsLED) error { return l.SetTrigger("disco") }, "0", "[none] kbd-scrolllock timer heartbeat default-on netdev mmc0", hal.ErrNotSupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeLEDs(t, "red:status", tc.max)
			l, err := hal.OpenLED(root, "red:status")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.do(l); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			dir := filepath.Join(root, "red:status")
			if got := readTrim(t, filepath.Join(dir, "brightness")); got != tc.wantBrightness {
				t.Errorf("brightness = %q, want %q", got, tc.wantBrightness)
			}
			if got := readTrim(t, filepath.Join(dir, "trigger")); got != tc.wantTrigger {
				t.Errorf("trigger = %q, want %q", got, tc.wantTrigger)
			}
		})
	}
}

func TestOpenLEDErrors(t *testing.T) {
	root := fakeLEDs(t, "ok", "1")
	for _, name := range []string{"", "..", "a/b", "missing"} {
		if _, err := hal.OpenLED(root, name); err == nil {
			t.Errorf("OpenLED(%q) = nil error, want one", name)
		}
	}
}
