package update

import (
	"fmt"
	"time"
)

// Severity of an update event, numbered as RFC 5424 section 6.2.1 (2
// critical .. 6 informational), so an exporter maps it one to one.
type Severity uint8

// Severities used by update events.
const (
	SevCritical Severity = 2 // an attack indicator: signature, key, rollback, hash
	SevError    Severity = 3
	SevWarning  Severity = 4
	SevNotice   Severity = 5
	SevInfo     Severity = 6
)

// String returns the lower-case RFC 5424 name.
func (s Severity) String() string {
	switch s {
	case SevCritical:
		return "critical"
	case SevError:
		return "error"
	case SevWarning:
		return "warning"
	case SevNotice:
		return "notice"
	case SevInfo:
		return "info"
	}
	return fmt.Sprintf("Severity(%d)", uint8(s))
}

// Event is one update step: Step is "started", "rejected", "installed",
// "committed", "rolled_back", "root_rotated", "refreshed", "stale" or
// "anchor_repaired"; Reason is a token from Reason (or a FallbackReason).
// The gateway turns it into its own event record (gateway/daemon), so this
// package depends on no exporter.
type Event struct {
	Time     time.Time
	Severity Severity
	Step     string
	Version  string // firmware version concerned, if any
	Reason   string
	Message  string         // one line a person reads
	Fields   map[string]any // slot, svn, source, sha256, ...
}

// EventFunc receives update events (Config.Events). It is called with the
// Installer's lock held, so it must not call back into the Installer, and
// it must not keep e.
type EventFunc func(e *Event)
