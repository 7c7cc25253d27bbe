package update

import (
	"context"
	"errors"
	"fmt"
)

// HealthCheck decides whether a freshly booted trial slot is healthy
// enough to commit. The gateway implements it (datapath forwarding, policy
// loaded, exporter up); Check must honour ctx and return nil only when the
// device does its job.
type HealthCheck interface {
	Check(ctx context.Context) error
}

// HealthFunc adapts a function to HealthCheck.
type HealthFunc func(ctx context.Context) error

// Check calls f(ctx).
func (f HealthFunc) Check(ctx context.Context) error { return f(ctx) }

// Health is the gateway's commit check as three parts, all required: a
// nil part fails, so a check that was never wired cannot commit an image.
type Health struct {
	Datapath HealthFunc // frames are forwarded between the bridge ports
	Policy   HealthFunc // a policy is loaded and compiled
	Exporter HealthFunc // the event exporter is up (sending or spooling)
}

// Check runs every part and reports all failures.
func (h Health) Check(ctx context.Context) error {
	var errs []error
	for _, p := range []struct {
		name string
		f    HealthFunc
	}{{"datapath", h.Datapath}, {"policy", h.Policy}, {"exporter", h.Exporter}} {
		switch {
		case p.f == nil:
			errs = append(errs, fmt.Errorf("%s: no check configured", p.name))
		default:
			if err := p.f(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrHealthCheck, errors.Join(errs...))
	}
	return nil
}
