package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/rules"
)

// WatcherConfig configures a Watcher. Path is required; the zero value of
// every other field is usable.
type WatcherConfig struct {
	Path     string        // policy file
	Sink     events.Sink   // policy_reload and policy_error events; nil discards
	Logger   *slog.Logger  // nil discards
	Debounce time.Duration // quiet time after the last file event; 0 means 200ms
	SIGHUP   bool          // Run also reloads on SIGHUP
	// HUP, when set with SIGHUP, is the channel SIGHUPs arrive on: the
	// daemon subscribes before it starts, so a SIGHUP during start-up is
	// kept for the watcher instead of terminating the process.
	HUP chan os.Signal
}

// Watcher holds the live Ruleset and replaces it when the policy file
// changes. Readers call Ruleset (one atomic load) on the hot path; parsing
// and compiling run on the Watcher's goroutine or the Reload caller's.
//
// Flow and request/response state are owned by the gateway, not by the
// Ruleset, so a swap loses no session: each Flow caches its conduit match
// with the Ruleset's Generation and recomputes it on the next Evaluate under
// a new generation; the gateway re-runs EvaluateFlow for established
// non-inspected flows whose recorded Verdict.Generation is older, so a flow
// that the new policy no longer allows is cut at its next packet.
type Watcher struct {
	cfg WatcherConfig
	log *slog.Logger
	cur atomic.Pointer[rules.Ruleset]

	mu       sync.Mutex // serialises reloads; guards lastHash
	lastHash string

	watching     chan struct{} // closed once Run watches the file and SIGHUP
	watchingOnce sync.Once
}

// NewWatcher loads and compiles the policy once; it fails if that fails
// (a gateway must not start without a valid policy).
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Path == "" {
		return nil, errors.New("rules: watcher needs a policy path")
	}
	if cfg.Sink == nil {
		cfg.Sink = events.Discard
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{cfg: cfg, log: log.With("component", "rules"), watching: make(chan struct{})}
	rs, hash, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur.Store(rs)
	w.lastHash = hash
	return w, nil
}

// Ruleset returns the current ruleset. Safe for concurrent use.
func (w *Watcher) Ruleset() *rules.Ruleset { return w.cur.Load() }

// ErrCompilerPanic is returned by a reload whose parse or compile
// panicked (a bug in rules, never an expected reaction to a file): the
// policy in force stays, as for any bad file.
var ErrCompilerPanic = errors.New("internal error while compiling the policy")

func (w *Watcher) load() (rs *rules.Ruleset, hash string, err error) {
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("policy parse/compile panicked", "file", w.cfg.Path, "panic", fmt.Sprint(v))
			rs, err = nil, fmt.Errorf("rules: %s: %w (%v)", w.cfg.Path, ErrCompilerPanic, v)
		}
	}()
	data, err := rules.ReadPolicy(w.cfg.Path) // with the limits of rules.Load
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	hash = hex.EncodeToString(sum[:])
	p, err := rules.Parse(w.cfg.Path, data)
	var cerr error
	if p != nil {
		rs, cerr = rules.Compile(p)
	}
	if err := rules.Merge(err, cerr); err != nil {
		return nil, hash, err
	}
	return rs, hash, nil
}

// Reload reads, parses and compiles the policy file and swaps it in on
// success. On failure the current ruleset stays and a policy_error event
// names the file and first line. An unchanged file is a no-op. Safe for
// concurrent use (SIGHUP handler, file events).
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	rs, hash, err := w.load()
	if err != nil {
		ev := &events.Event{Time: time.Now(), Severity: events.SevError, Type: events.TypePolicyError, File: w.cfg.Path}
		var ps rules.Problems
		if errors.As(err, &ps) && len(ps) > 0 {
			ev.Line = ps[0].Line
			ev.Message = "policy not reloaded: " + ps[0].String()
			if len(ps) > 1 {
				ev.Message += fmt.Sprintf(" (and %d more)", len(ps)-1)
			}
		} else {
			ev.Message = "policy not reloaded: " + strings.TrimPrefix(err.Error(), "rules: ")
		}
		w.cfg.Sink.Emit(ev)
		defer debug.FreeOSMemory() // what reading and parsing the refused file took
		w.log.LogAttrs(context.Background(), slog.LevelWarn, "policy reload failed", slog.String("file", w.cfg.Path), slog.String("error", err.Error()))
		return err
	}
	if hash == w.lastHash {
		return nil
	}
	old := w.cur.Swap(rs)
	w.lastHash = hash
	// The parse's transient memory and the replaced ruleset are garbage
	// now (flows keep only a ruleset's generation, gateway.flow): give
	// them back to the system rather than keep a large policy's peak for
	// the life of the process (issue 15; BENCHMARKS.md "memory after a
	// reload"). One forced collection per reload.
	defer debug.FreeOSMemory()
	version := fmt.Sprintf("%s@%s gen %d", rs.Name(), hash[:12], rs.Generation())
	w.cfg.Sink.Emit(&events.Event{
		Time: time.Now(), Severity: events.SevNotice, Type: events.TypePolicyReload, File: w.cfg.Path,
		Version: version, Message: fmt.Sprintf("policy reloaded: %s (%d conduits, was gen %d, %s)", version, rs.NumConduits(), old.Generation(), time.Since(start).Round(time.Microsecond)),
	})
	w.log.LogAttrs(context.Background(), slog.LevelInfo, "policy reloaded", slog.String("version", version))
	return nil
}

// Run watches the policy file's directory (so editors that write a temp
// file and rename it over the policy, or delete and recreate it, are seen),
// debounces bursts of events, and reloads. With SIGHUP set it also reloads
// on SIGHUP. It returns when ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("rules: watch: %w", err)
	}
	defer fw.Close()
	abs, err := filepath.Abs(w.cfg.Path)
	if err != nil {
		return fmt.Errorf("rules: watch: %w", err)
	}
	if err := fw.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("rules: watch %s: %w", filepath.Dir(abs), err)
	}
	var hup chan os.Signal
	switch {
	case w.cfg.SIGHUP && w.cfg.HUP != nil:
		hup = w.cfg.HUP
	case w.cfg.SIGHUP:
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	w.watchingOnce.Do(func() { close(w.watching) })
	w.log.Info("runWatch started", "file", abs)
	defer w.log.Info("runWatch stopped", "file", abs)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) == abs {
				timer.Reset(w.cfg.Debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			w.log.Warn("watch error", "error", err)
		case <-hup:
			_ = w.Reload()
		case <-timer.C:
			_ = w.Reload()
		}
	}
}
