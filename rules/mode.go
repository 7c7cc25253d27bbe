package rules

import "slices"

// Mode returns the policy's default mode: the mode of verdicts no conduit
// decides (no_conduit, l2_not_allowed) and of conduits without their own.
func (rs *Ruleset) Mode() Mode { return rs.mode }

// ConduitMode returns conduit i's mode (its own, or the policy's).
func (rs *Ruleset) ConduitMode(i int) Mode { return rs.conduits[i].mode }

// WithMode returns a copy of rs in which the policy and every conduit run
// in mode m; rs is unchanged. Everything else (zones, assets, rules, deny
// actions, names, Hash) is shared with rs, which is immutable. The copy
// gets a new Generation, so that a flow's match cache filled by one is
// never taken for the other's.
//
// Offline replay uses WithMode(ModeMonitor) for its what-if evaluation:
// a second engine that judges every PDU of a capture, including those an
// enforcing gateway never sees because it reset the connection at an
// earlier deny (simulate/replay). It allocates once, off the hot path.
func (rs *Ruleset) WithMode(m Mode) *Ruleset {
	c := *rs
	c.gen = generations.Add(1)
	c.mode = m
	c.conduits = slices.Clone(rs.conduits)
	for i := range c.conduits {
		c.conduits[i].mode = m
	}
	return &c
}
