package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/syslog"
)

// defaultSyslogTimeout is replay's --syslog-timeout.
const defaultSyslogTimeout = 30 * time.Second

// replaySyslog is replay's syslog export: offline, so it never drops an
// event (DESIGN.md, Events). The pipeline blocks instead of dropping, the
// exporter waits for room in a full spool while the receivers make
// progress, and at the end replay waits for delivery up to --syslog-timeout,
// then fails loudly with the count of what was not delivered, or leaves it
// in the named spool (--spool DIR).
type replaySyslog struct {
	x       *syslog.Exporter
	pipe    *events.Pipeline
	dir     string
	temp    bool // dir is ours, removed at the end
	timeout time.Duration
	start   time.Time
	done    bool

	mu       sync.Mutex // guards downs, lastDown (written by the exporter's senders)
	downs    int
	lastDown string
}

func startReplaySyslog(urls []string, spoolDir string, timeout time.Duration) (*replaySyslog, error) {
	cfg, err := syslog.ParseURLs(urls...)
	if err != nil {
		return nil, err
	}
	s := &replaySyslog{dir: spoolDir, timeout: timeout, start: time.Now()}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "otgw-replay-spool-"); err != nil {
			return nil, err
		}
		s.temp = true
	}
	cfg.SpoolFullWait = timeout
	cfg.CloseTimeout = time.Second // Flush has already waited
	// The exporter's own events (destination down/up, spool drops) are
	// about this run, for the operator: they go to stderr at the end, not
	// into the spool among the capture's events.
	cfg.Notify = events.SinkFunc(s.note)
	if s.x, err = syslog.New(cfg, s.dir, nil); err != nil {
		if s.temp {
			os.RemoveAll(s.dir)
		}
		return nil, err
	}
	s.pipe = events.NewPipeline(events.PipelineConfig{Block: true}, s.x)
	return s, nil
}

func (s *replaySyslog) note(e *events.Event) {
	if e.Type != events.TypeExporter || (e.Step != "down" && e.Step != "tls_fail") {
		return
	}
	s.mu.Lock()
	s.downs++
	s.lastDown = e.Message
	s.mu.Unlock()
}

// abort stops the export without the delivery report (replay failed).
func (s *replaySyslog) abort() {
	if s == nil || s.done {
		return
	}
	s.done = true
	s.pipe.Close()
	_ = s.x.Close()
	if s.temp {
		os.RemoveAll(s.dir)
	}
}

// finish drains the pipeline into the spool, waits up to the timeout for
// every destination to confirm every record, writes the delivery report
// to stderr and returns the exit code: exitOK when every event was
// delivered, or (with --spool) is safely kept in the spool directory;
// exitRuntime otherwise, with the count of what was not delivered.
func (s *replaySyslog) finish(stderr io.Writer) int {
	s.done = true
	s.pipe.Close() // every event is in the spool (or counted as lost) from here
	ps := s.pipe.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	ferr := s.x.Flush(ctx)
	cancel()
	xs := s.x.Stats()
	cerr := s.x.Close()
	if s.temp {
		defer os.RemoveAll(s.dir)
	}
	took := time.Since(s.start).Round(time.Millisecond)

	fmt.Fprintf(stderr, "otgw replay: syslog: %d events from the engine", ps.Emitted)
	if ps.Suppressed > 0 {
		fmt.Fprintf(stderr, " (%d repeats folded into %d aggregated events with their count: not lost)", ps.Suppressed, ps.Aggregates)
	}
	fmt.Fprintf(stderr, ", %d records to send\n", ps.Delivered)
	lost := ps.Dropped + xs.Dropped + xs.EmitFailures // never in the spool
	if lost > 0 {
		fmt.Fprintf(stderr, "otgw replay: syslog: %d events lost before the spool (pipeline %d, spool full %d, spool write errors %d)\n",
			lost, ps.Dropped, xs.Dropped, xs.EmitFailures)
	}
	if ferr != nil && !errors.Is(ferr, syslog.ErrUndelivered) {
		fmt.Fprintf(stderr, "otgw replay: syslog: %v\n", ferr)
	}
	if cerr != nil && !errors.Is(cerr, syslog.ErrCloseTimeout) {
		fmt.Fprintf(stderr, "otgw replay: syslog: spool %s: %v\n", s.dir, cerr)
	}
	s.mu.Lock()
	downs, lastDown := s.downs, s.lastDown
	s.mu.Unlock()
	code := exitOK
	if lost > 0 || (cerr != nil && !errors.Is(cerr, syslog.ErrCloseTimeout)) {
		code = exitRuntime
	}
	for _, d := range xs.Dests {
		switch {
		case d.Pending == 0 && lost == 0:
			fmt.Fprintf(stderr, "otgw replay: syslog %s: all %d records delivered in %v\n", d.Name, d.Confirmed, took)
		case d.Pending == 0:
			fmt.Fprintf(stderr, "otgw replay: syslog %s: %d records delivered in %v; %d events were lost before the spool\n",
				d.Name, d.Confirmed, took, lost)
		default:
			why := d.LastError
			if why == "" {
				why = lastDown
			}
			fmt.Fprintf(stderr, "otgw replay: syslog %s: %d records not delivered after waiting %v (%d delivered; down %d time(s), last error: %s)\n",
				d.Name, int(lost)+d.Pending, s.timeout, d.Confirmed, max(downs, 1), why)
			if s.temp {
				code = exitRuntime
				fmt.Fprintf(stderr, "otgw replay: syslog %s: %d records discarded with the temporary spool (--spool DIR keeps them; --syslog-timeout waits longer)\n",
					d.Name, d.Pending)
			} else {
				fmt.Fprintf(stderr, "otgw replay: syslog %s: %d records kept in the spool %s (delivered by a later otgw replay or otgw run with --spool %s)\n",
					d.Name, d.Pending, s.dir, s.dir)
			}
		}
	}
	return code
}
