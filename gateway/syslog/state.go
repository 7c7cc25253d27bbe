package syslog

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// stateFile in the spool directory records the boot id and the last
// sequence number of the events this process has spooled, and whether it
// stopped cleanly. It is rewritten (atomically, fsynced) with each spool
// sync batch, marked unclean at start and clean by Close, so that the next
// start can tell a crash from a stop and report the gap.
const stateFile = "exporter-state"

// runState is the content of stateFile.
type runState struct {
	boot  string // "" when the run spooled no event with a boot id
	seq   uint64 // last sequence number spooled by that boot
	clean bool   // Close completed
	from  uint64 // first spool record id of the run: older records are not its own
}

func (s runState) encode() []byte {
	return fmt.Appendf(nil, "boot=%s\nseq=%d\nclean=%t\nfrom=%d\n", s.boot, s.seq, s.clean, s.from)
}

// parseRunState reads stateFile content; unknown keys are ignored and a
// malformed file is reported as not ok (treated as absent).
func parseRunState(b []byte) (st runState, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	have := 0
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), "=")
		if !found {
			return runState{}, false
		}
		switch k {
		case "boot":
			st.boot = v
			have |= 1
		case "seq":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return runState{}, false
			}
			st.seq = n
			have |= 2
		case "clean":
			c, err := strconv.ParseBool(v)
			if err != nil {
				return runState{}, false
			}
			st.clean = c
			have |= 4
		case "from":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return runState{}, false
			}
			st.from = n
		}
	}
	return st, have == 7 && sc.Err() == nil
}

// validBootID keeps the state file line-oriented.
func validBootID(s string) bool {
	return len(s) <= 128 && !strings.ContainsAny(s, "\r\n\x00")
}

// writeState persists the current run state; with clean false it only
// writes when an event was spooled since the last write (or force).
func (x *Exporter) writeState(clean, force bool) error {
	x.emitMu.Lock()
	st := runState{boot: x.lastBoot, seq: x.lastSeq, clean: clean, from: x.runFrom}
	dirty := x.stateDirty
	x.stateDirty = false
	x.emitMu.Unlock()
	if !dirty && !clean && !force {
		return nil
	}
	if err := writeFileSync(filepath.Join(x.spoolDir, stateFile), st.encode()); err != nil {
		x.emitMu.Lock()
		x.stateDirty = true
		x.emitMu.Unlock()
		return err
	}
	if d, err := os.Open(x.spoolDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// previousRun works out, at start, how the previous run ended. It returns
// a TypeGap event when that run did not stop cleanly, nil otherwise.
// prevState is the state file of the previous run (ok false: absent or
// unreadable); the spool's last records refine the last sequence number
// (records written after the last state write survive a process kill).
func (x *Exporter) previousRun(prev runState, ok bool) *events.Event {
	if ok && prev.clean {
		return nil
	}
	// The newest spooled event that carries a boot id and a sequence
	// number (the exporter's own notifications without Notify carry none).
	var last events.Event
	found := false
	for _, r := range x.sp.tail(64) {
		var e events.Event
		if ok && r.id < prev.from {
			continue // spooled by an earlier run
		}
		if events.UnmarshalJSONEvent(r.payload, &e) == nil && e.BootID != "" && e.Seq > 0 {
			last, found = e, true
		}
	}
	if !ok {
		if !found {
			return nil // a first start, or nothing to go by
		}
		prev = runState{boot: last.BootID, seq: last.Seq}
	} else if found && (prev.boot == "" || last.BootID == prev.boot && last.Seq > prev.seq) {
		prev.boot, prev.seq = last.BootID, last.Seq
	}
	e := &events.Event{Time: time.Now(), Severity: events.SevWarning, Type: events.TypeGap}
	if prev.boot == "" {
		e.Message = "previous run ended without a clean stop before any event was spooled; its events are lost"
		e.Fields = map[string]any{"prevBootId": "unknown"}
		return e
	}
	e.Message = fmt.Sprintf("previous run %s ended without a clean stop after event %d; events from %d on may be lost",
		prev.boot, prev.seq, prev.seq+1)
	e.Fields = map[string]any{"prevBootId": prev.boot, "lastSeq": prev.seq, "missingFrom": prev.seq + 1}
	return e
}
