package rules

import "testing"

// WithMode(ModeMonitor) turns every deny of the design policy into an
// alert with the same reason, conduit and rule, leaves allows alone, and
// does not change the ruleset it was made from.
func TestWithModeMonitor(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	mon := rs.WithMode(ModeMonitor)
	if mon.Generation() == rs.Generation() || mon.Hash() != rs.Hash() || mon.Mode() != ModeMonitor || rs.Mode() != ModeEnforce {
		t.Fatalf("copy: gen %d (orig %d), hash equal %v, modes %v/%v", mon.Generation(), rs.Generation(), mon.Hash() == rs.Hash(), mon.Mode(), rs.Mode())
	}
	for i := range rs.NumConduits() {
		if mon.ConduitMode(i) != ModeMonitor {
			t.Errorf("conduit %s: mode %v in the copy", rs.ConduitName(i), mon.ConduitMode(i))
		}
	}
	if rs.ConduitMode(0) != ModeEnforce {
		t.Errorf("original conduit 0 mode changed to %v", rs.ConduitMode(0))
	}
	hmiPLC := flow("192.0.2.130", "192.0.2.10", 502)
	stranger := flow("198.51.100.1", "192.0.2.10", 502)
	for _, tc := range []struct {
		name string
		f    Flow
		p    PDU
		want Action // of rs; the copy must alert where rs denies
	}{
		{"allowed read", hmiPLC, mb(3, 0, 100), Allow},
		{"write out of range", hmiPLC, mb(16, 48, 3, 1, 2, 3), Deny},
		{"function not allowed", hmiPLC, mb(4, 0, 1), Deny},
		{"no conduit", stranger, mb(3, 0, 1), Deny},
	} {
		f1, f2 := tc.f, tc.f
		a, b := rs.Evaluate(&f1, &tc.p), mon.Evaluate(&f2, &tc.p)
		wantB := tc.want
		if wantB == Deny {
			wantB = Alert
		}
		if a.Action != tc.want || b.Action != wantB {
			t.Errorf("%s: actions %v / %v, want %v / %v", tc.name, a.Action, b.Action, tc.want, wantB)
		}
		if a.Reason != b.Reason || a.Conduit != b.Conduit || a.Rule != b.Rule || a.RuleName != b.RuleName || a.DenyAction != b.DenyAction {
			t.Errorf("%s: enforce %+v and monitor %+v differ beyond action and mode", tc.name, a, b)
		}
		if b.Mode != ModeMonitor {
			t.Errorf("%s: copy's verdict mode %v", tc.name, b.Mode)
		}
		// A flow whose cache the original filled is re-matched by the copy.
		if v := mon.Evaluate(&f1, &tc.p); v.Action != wantB || v.Generation != mon.Generation() {
			t.Errorf("%s: copy on a flow cached by the original: %v gen %d", tc.name, v.Action, v.Generation)
		}
	}
	f := hmiPLC
	p := mb(16, 48, 3, 1, 2, 3)
	if n := testing.AllocsPerRun(100, func() { mon.Evaluate(&f, &p) }); n != 0 {
		t.Errorf("Evaluate on the copy allocates %v per call", n)
	}
}
