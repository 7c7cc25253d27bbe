package hal

import (
	"context"
	"log/slog"
	"time"
)

// RunWatchdog pets wd every interval while healthy() reports true, and
// stops petting (so the board resets after the watchdog timeout) as soon
// as it reports false: a hung or dead datapath must not be kept alive by a
// still-running timer goroutine. It returns when ctx is done, leaving the
// watchdog armed; the owner calls wd.Close on a clean stop to disarm it.
// A Keepalive error is logged and retried on the next tick.
func RunWatchdog(ctx context.Context, wd Watchdog, interval time.Duration, healthy func() bool, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "watchdog")
	log.Info("runWatchdog started", "interval", interval)
	defer log.Info("runWatchdog stopped")
	tick := time.NewTicker(interval)
	defer tick.Stop()
	wasHealthy := true
	for {
		h := healthy()
		if h {
			if err := wd.Keepalive(); err != nil {
				log.Warn("keepalive failed", "err", err)
			}
		}
		if h != wasHealthy {
			if h {
				log.Info("datapath healthy again: keepalive resumed")
			} else {
				log.Error("datapath unhealthy: keepalive withheld, board resets at watchdog timeout")
			}
			wasHealthy = h
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
