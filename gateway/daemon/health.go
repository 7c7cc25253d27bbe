package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/update"
)

// UpdateConfig connects `otgw run` to the firmware updater (update/BOOT.md
// "What the gateway must do"): at start the installer reports what the
// bootloader did, and when the running slot is on trial the gateway
// commits it after it has been healthy for Period, or rolls it back and
// reboots into the previous slot.
type UpdateConfig struct {
	// NewInstaller builds the installer for this board with onEvent as
	// its Config.Events: UpdateEvents of the gateway's event pipeline, so
	// update steps reach syslog like every other event.
	NewInstaller func(onEvent update.EventFunc) (*update.Installer, error)
	// Period is how long a trial slot must stay healthy before it is
	// committed (default 60 s).
	Period time.Duration
	// Interval is how often the health is sampled during Period (default
	// Period/20, at least 50 ms).
	Interval time.Duration
	// Reboot restarts the machine after a failed health check, so the
	// bootloader starts the previous slot. nil: Run returns
	// ErrTrialFailed instead and the supervisor (init) restarts the box.
	Reboot func() error
	// TimestampSource, when set, is a file or http(s) URL of the
	// publisher's timestamp statement, fetched every FreshnessInterval.
	TimestampSource string
	// FreshnessInterval is how often freshness is judged (and the
	// statement fetched): a "stale" update event is raised each time the
	// newest accepted statement has expired, so a frozen device alarms
	// the SOC (default 1 h).
	FreshnessInterval time.Duration
	// Lock, when set, takes the state directory's lock (update.LockState)
	// around Startup and Commit, so an operator's `otgw fw` command never
	// interleaves with them; it returns the unlock function.
	Lock func() (unlock func(), err error)
}

// ErrTrialFailed is returned by Run when the trial slot failed its health
// check and no Reboot function was configured.
var ErrTrialFailed = errors.New("daemon: trial firmware failed its health check; the previous slot boots next")

// UpdateEvents adapts update events to the gateway's event record (type
// "update"; the severities share RFC 5424 numbering), so that package
// update needs no exporter of its own.
func UpdateEvents(sink events.Sink) update.EventFunc {
	return func(e *update.Event) {
		sink.Emit(&events.Event{
			Time:     e.Time,
			Severity: events.Severity(e.Severity),
			Type:     events.TypeUpdate,
			Step:     e.Step,
			Version:  e.Version,
			Reason:   e.Reason,
			Message:  e.Message,
			Fields:   e.Fields,
		})
	}
}

// healthProbe is what "healthy" means for the running gateway. Every part
// must hold at every sample of the trial period.
type healthProbe struct {
	policy   func() error // a policy is loaded and compiled
	ports    func() error // both ports are up
	watchdog func() error // the watchdog is being fed (both workers progress)
}

func (p healthProbe) check() error {
	var errs []error
	for _, c := range []struct {
		name string
		f    func() error
	}{{"policy", p.policy}, {"ports", p.ports}, {"watchdog", p.watchdog}} {
		if c.f == nil {
			errs = append(errs, fmt.Errorf("%s: no check configured", c.name))
		} else if err := c.f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// probe returns the daemon's health probe.
func (d *Daemon) probe() healthProbe {
	return healthProbe{
		policy: func() error {
			if d.watcher == nil || d.watcher.Ruleset() == nil {
				return errors.New("no policy loaded")
			}
			return nil
		},
		ports: func() error {
			for i := range d.linkUp {
				if !d.linkUp[i].Load() {
					return fmt.Errorf("port %s is down", d.ports[i])
				}
			}
			return nil
		},
		watchdog: func() error {
			// The same predicate hal.RunWatchdog pets on.
			if !d.Healthy() {
				return errors.New("datapath workers stalled: the watchdog is not fed")
			}
			return nil
		},
	}
}

// runUpdateHealth is started by Run when Config.Update is set.
func (d *Daemon) runUpdateHealth(ctx context.Context) error {
	log := d.cfg.Logger.With("component", "update")
	log.Info("runUpdateHealth started")
	defer log.Info("runUpdateHealth stopped")
	in, err := d.cfg.Update.NewInstaller(UpdateEvents(d.pipe))
	if err != nil {
		return fmt.Errorf("daemon: update: %w", err)
	}
	if err := superviseTrial(ctx, in, d.probe(), *d.cfg.Update, log); err != nil {
		return err
	}
	watchFreshness(ctx, in, *d.cfg.Update, log)
	return nil
}

// watchFreshness fetches the timestamp statement (when a source is
// configured) and judges freshness now and every FreshnessInterval until
// ctx ends; Installer.Freshness emits the "stale" event. Failures are
// logged (and, for a rejected statement, reported as events by the
// Installer); they never stop the gateway.
func watchFreshness(ctx context.Context, in *update.Installer, cfg UpdateConfig, log *slog.Logger) {
	if cfg.FreshnessInterval <= 0 {
		cfg.FreshnessInterval = time.Hour
	}
	check := func() {
		unlock := func() {}
		if cfg.Lock != nil {
			u, err := cfg.Lock()
			if err != nil {
				log.Warn("freshness check skipped", "err", err)
				return
			}
			unlock = u
		}
		defer unlock()
		if cfg.TimestampSource != "" {
			if _, err := in.RefreshFrom(ctx, cfg.TimestampSource); err != nil {
				log.Warn("timestamp statement not refreshed", "source", cfg.TimestampSource, "err", err)
			}
		}
		f, err := in.Freshness()
		switch {
		case err != nil:
			log.Warn("freshness unknown", "err", err)
		case f.Stale:
			log.Warn("firmware update metadata is stale", "reason", f.Reason)
		}
	}
	check()
	t := time.NewTicker(cfg.FreshnessInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

// superviseTrial reports the last boot (Installer.Startup); when the
// running slot is on trial, it samples probe every Interval for Period and
// then commits through Installer.Commit, whose health check fails with the
// first failure seen (a crash or stop before Period ends commits nothing:
// the bootloader's tries run down). On failure the slot is marked bad
// (event "rolled_back", reason "healthcheck") and cfg.Reboot runs.
func superviseTrial(ctx context.Context, in *update.Installer, probe healthProbe, cfg UpdateConfig, log *slog.Logger) error {
	if cfg.Period <= 0 {
		cfg.Period = time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = max(cfg.Period/20, 50*time.Millisecond)
	}
	locked := func(f func() error) error {
		if cfg.Lock == nil {
			return f()
		}
		unlock, err := cfg.Lock()
		if err != nil {
			return err
		}
		defer unlock()
		return f()
	}
	var running update.Slot
	var st update.BootState
	err := locked(func() (err error) {
		if running, err = in.Startup(); err != nil {
			return fmt.Errorf("daemon: update startup: %w", err)
		}
		st, err = in.Status()
		return err
	})
	if err != nil {
		return err
	}
	if st.Trial != running {
		log.Info("running committed firmware", "slot", running.String(), "version", st.Running().Version)
		return nil
	}
	log.Info("running trial firmware: health check", "slot", running.String(), "version", st.Running().Version,
		"period", cfg.Period, "tries_left", st.TriesLeft)
	var first error
	deadline := time.Now().Add(cfg.Period)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for first == nil && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			log.Warn("stopped before the trial period ended: not committed", "slot", running.String())
			return nil
		case <-tick.C:
			if err := probe.check(); err != nil {
				first = fmt.Errorf("after %v on trial: %w", cfg.Period-time.Until(deadline).Round(time.Millisecond), err)
			}
		}
	}
	err = locked(func() error {
		return in.Commit(ctx, update.HealthFunc(func(context.Context) error {
			if first != nil {
				return first
			}
			return probe.check()
		}))
	})
	if err == nil {
		log.Info("trial firmware committed", "slot", running.String())
		return nil
	}
	if !errors.Is(err, update.ErrHealthCheck) {
		return fmt.Errorf("daemon: commit: %w", err)
	}
	log.Error("trial firmware failed its health check; rebooting into the previous slot", "err", err)
	if cfg.Reboot == nil {
		return fmt.Errorf("%w: %w", ErrTrialFailed, err)
	}
	if rerr := cfg.Reboot(); rerr != nil {
		return fmt.Errorf("%w: reboot: %w", ErrTrialFailed, rerr)
	}
	return nil
}
