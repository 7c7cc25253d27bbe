// Package halsim holds simulated twins of the hal parts that have no real
// counterpart on a build host or in CI: the bypass relay, the LEDs and the
// watchdog device. Everything else in hal (ports, links, the kernel-bridge
// fail-open) runs for real in network namespaces and needs no twin.
//
// The twins record what the gateway asked of them so tests can assert on
// it, and the watchdog twin models expiry against an injectable clock.
// All types are safe for concurrent use.
package halsim

import (
	"errors"
	"sync"
	"time"

	"github.com/otgw/otgw/hal"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("halsim: closed")

// Bypass is a simulated relay. The zero value is released and open.
type Bypass struct {
	mu      sync.Mutex // guards all fields
	engaged bool
	closed  bool
	changes int
	// FailNext, when set, is returned (once) by the next Engage or Release,
	// to test the caller's handling of a stuck relay.
	FailNext error
}

var _ hal.Bypass = (*Bypass)(nil)

func (b *Bypass) set(on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if err := b.FailNext; err != nil {
		b.FailNext = nil
		return err
	}
	if b.engaged != on {
		b.changes++
	}
	b.engaged = on
	return nil
}

// Engage implements hal.Bypass.
func (b *Bypass) Engage() error { return b.set(true) }

// Release implements hal.Bypass.
func (b *Bypass) Release() error { return b.set(false) }

// Engaged implements hal.Bypass.
func (b *Bypass) Engaged() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.engaged }

// Changes counts state changes of the relay.
func (b *Bypass) Changes() int { b.mu.Lock(); defer b.mu.Unlock(); return b.changes }

// Close implements hal.Bypass; the relay keeps its state (latching).
func (b *Bypass) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.closed = true
	return nil
}

// LED is a simulated LED.
type LED struct {
	name    string
	mu      sync.Mutex // guards on, trigger
	on      bool
	trigger string
}

var _ hal.LED = (*LED)(nil)

// NewLED returns an LED that is off with trigger "none".
func NewLED(name string) *LED { return &LED{name: name, trigger: "none"} }

// Name implements hal.LED.
func (l *LED) Name() string { return l.name }

// Set implements hal.LED.
func (l *LED) Set(on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on, l.trigger = on, "none"
	return nil
}

// SetTrigger implements hal.LED.
func (l *LED) SetTrigger(t string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trigger = t
	return nil
}

// State returns whether the LED is lit and its trigger.
func (l *LED) State() (on bool, trigger string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.on, l.trigger
}

// Watchdog is a simulated watchdog device: armed at creation, it expires
// when Now() passes the last keepalive plus Timeout, unless disarmed by
// Close (magic close). Now defaults to time.Now.
type Watchdog struct {
	Timeout time.Duration
	Now     func() time.Time

	mu         sync.Mutex // guards the fields below
	last       time.Time
	keepalives int
	disarmed   bool
}

var _ hal.Watchdog = (*Watchdog)(nil)

// NewWatchdog returns an armed watchdog with the given timeout and clock
// (nil: time.Now).
func NewWatchdog(timeout time.Duration, now func() time.Time) *Watchdog {
	if now == nil {
		now = time.Now
	}
	return &Watchdog{Timeout: timeout, Now: now, last: now()}
}

// Keepalive implements hal.Watchdog.
func (w *Watchdog) Keepalive() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.disarmed {
		return ErrClosed
	}
	w.last = w.Now()
	w.keepalives++
	return nil
}

// Close implements hal.Watchdog (magic close: disarm).
func (w *Watchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.disarmed {
		return ErrClosed
	}
	w.disarmed = true
	return nil
}

// Expired reports whether the board would have been reset by now.
func (w *Watchdog) Expired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.disarmed && w.Now().Sub(w.last) > w.Timeout
}

// Keepalives counts keepalives received.
func (w *Watchdog) Keepalives() int { w.mu.Lock(); defer w.mu.Unlock(); return w.keepalives }
