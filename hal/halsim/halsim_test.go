package halsim_test

import (
	"errors"
	"testing"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/halsim"
)

var (
	_ hal.Bypass   = (*halsim.Bypass)(nil)
	_ hal.LED      = (*halsim.LED)(nil)
	_ hal.Watchdog = (*halsim.Watchdog)(nil)
)

func TestBypass(t *testing.T) {
	stuck := errors.New("relay stuck")
	tests := []struct {
		name        string
		steps       func(*halsim.Bypass) error
		wantEngaged bool
		wantChanges int
		wantErr     error
	}{
		{"zero value is released", func(*halsim.Bypass) error { return nil }, false, 0, nil},
		{"engage", func(b *halsim.Bypass) error { return b.Engage() }, true, 1, nil},
		{"engage twice counts once", func(b *halsim.Bypass) error { b.Engage(); return b.Engage() }, true, 1, nil},
		{"engage then release", func(b *halsim.Bypass) error { b.Engage(); return b.Release() }, false, 2, nil},
		{"stuck relay", func(b *halsim.Bypass) error { b.FailNext = stuck; return b.Engage() }, false, 0, stuck},
		{"closed", func(b *halsim.Bypass) error { b.Close(); return b.Engage() }, false, 0, halsim.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b halsim.Bypass
			if err := tc.steps(&b); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := b.Engaged(); got != tc.wantEngaged {
				t.Errorf("Engaged() = %v, want %v", got, tc.wantEngaged)
			}
			if got := b.Changes(); got != tc.wantChanges {
				t.Errorf("Changes() = %d, want %d", got, tc.wantChanges)
			}
		})
	}
}

func TestLED(t *testing.T) {
	l := halsim.NewLED("green:status")
	l.SetTrigger("heartbeat")
	if on, tr := l.State(); on || tr != "heartbeat" {
		t.Errorf("State() = %v, %q; want false, heartbeat", on, tr)
	}
	l.Set(true)
	if on, tr := l.State(); !on || tr != "none" {
		t.Errorf("State() = %v, %q; want true, none", on, tr)
	}
}
