package update_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

var healthy = update.Health{
	Datapath: func(context.Context) error { return nil },
	Policy:   func(context.Context) error { return nil },
	Exporter: func(context.Context) error { return nil },
}

func mustInstall(t *testing.T, e *updatetest.Env, s updatetest.Spec) *update.Manifest {
	t.Helper()
	m, err := install(t, e, e.Bundle(s))
	if err != nil {
		t.Fatalf("install %s: %v", s.Version, err)
	}
	return m
}

func reboot(t *testing.T, e *updatetest.Env) update.Slot {
	t.Helper()
	s, err := e.Board.Reboot()
	if err != nil {
		t.Fatalf("reboot: %v", err)
	}
	e.Reopen()
	if _, err := e.Installer.Startup(); err != nil {
		t.Fatalf("startup: %v", err)
	}
	return s
}

func TestInstallRebootCommit(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	payload := updatetest.Image("1.2.0", 100_000)
	mustInstall(t, e, updatetest.Spec{Version: "1.2.0", SVN: 3, Payload: payload})
	if got := e.Events.Steps(); !equal(got, []string{"started", "installed"}) {
		t.Errorf("steps = %v, want [started installed]", got)
	}
	st := e.State()
	if st.Trial != update.SlotB || st.Slots[update.SlotB].State != update.SlotPending || st.SVN != 1 {
		t.Fatalf("after install: trial %v state %v SVN %d", st.Trial, st.Slots[update.SlotB].State, st.SVN)
	}
	if !bytes.Equal(e.SlotImage(update.SlotB), payload) || !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
		t.Fatal("slot contents wrong after install")
	}
	if s := reboot(t, e); s != update.SlotB {
		t.Fatalf("booted %v, want trial slot B", s)
	}
	// U21: before commit the counter has not moved, so the old slot stays
	// a valid fallback.
	if st := e.State(); st.SVN != 1 || !st.Bootable(update.SlotA) {
		t.Fatalf("before commit: SVN %d, A bootable %v", st.SVN, st.Bootable(update.SlotA))
	}
	// A second install while the trial runs uncommitted is refused.
	if _, err := install(t, e, e.Bundle(updatetest.Spec{Version: "1.3.0", SVN: 3})); !errors.Is(err, update.ErrPendingCommit) {
		t.Fatalf("install during trial: %v, want ErrPendingCommit", err)
	}
	e.Events.Reset()
	if err := e.Installer.Commit(context.Background(), healthy); err != nil {
		t.Fatalf("commit: %v", err)
	}
	ev := e.Events.Last("committed")
	if ev == nil || ev.Version != "1.2.0" {
		t.Fatalf("committed event %+v", ev)
	}
	st = e.State()
	if st.SVN != 3 || st.Primary != update.SlotB || st.Trial != update.NoSlot {
		t.Fatalf("after commit: SVN %d primary %v trial %v", st.SVN, st.Primary, st.Trial)
	}
	// The old slot (SVN 1) is below the counter now: not bootable, and an
	// operator rollback to it is refused.
	if st.Bootable(update.SlotA) {
		t.Error("slot A with SVN 1 still bootable at counter 3")
	}
	if err := e.Installer.Rollback(); !errors.Is(err, update.ErrRollback) {
		t.Errorf("operator rollback below the counter: %v, want ErrRollback", err)
	}
	for i := 0; i < 5; i++ {
		if s := reboot(t, e); s != update.SlotB {
			t.Fatalf("reboot %d after commit: %v, want B", i, s)
		}
	}
	if err := e.Installer.Commit(context.Background(), healthy); !errors.Is(err, update.ErrNothingToCommit) {
		t.Errorf("second commit: %v, want ErrNothingToCommit", err)
	}
	// Next update goes to slot A, the inactive one now.
	mustInstall(t, e, updatetest.Spec{Version: "1.3.0", SVN: 3})
	if st := e.State(); st.Trial != update.SlotA || !bytes.Equal(e.SlotImage(update.SlotB), payload) {
		t.Fatalf("second update: trial %v; active slot B changed=%v", st.Trial, !bytes.Equal(e.SlotImage(update.SlotB), payload))
	}
}

func TestAttackFailedHealthCheckRollsBack(t *testing.T) { // U17
	tests := []struct {
		name string
		hc   update.HealthCheck
	}{
		{"datapath does not forward", update.Health{
			Datapath: func(context.Context) error { return errors.New("no frames forwarded north->south") },
			Policy:   func(context.Context) error { return nil },
			Exporter: func(context.Context) error { return nil },
		}},
		{"exporter check missing", update.Health{
			Datapath: func(context.Context) error { return nil },
			Policy:   func(context.Context) error { return nil },
		}},
		{"check hangs past its timeout", update.HealthFunc(func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{})
			e.Config.HealthTimeout = 100e6
			e.Reopen()
			mustInstall(t, e, updatetest.Spec{Version: "2.0.0", SVN: 4})
			if s := reboot(t, e); s != update.SlotB {
				t.Fatalf("booted %v, want B", s)
			}
			err := e.Installer.Commit(context.Background(), tt.hc)
			if !errors.Is(err, update.ErrHealthCheck) {
				t.Fatalf("commit: %v, want ErrHealthCheck", err)
			}
			ev := e.Events.Last("rolled_back")
			if ev == nil || ev.Reason != "healthcheck" || ev.Version != "2.0.0" || ev.Severity != update.SevError {
				t.Fatalf("rolled_back event %+v", ev)
			}
			if e.Events.Last("committed") != nil {
				t.Fatal("committed emitted")
			}
			if s := reboot(t, e); s != update.SlotA {
				t.Fatalf("after failed check booted %v, want A", s)
			}
			st := e.State()
			if st.SVN != 1 || st.Slots[update.SlotB].State != update.SlotBad {
				t.Errorf("SVN %d (want 1, not advanced), slot B %v (want bad)", st.SVN, st.Slots[update.SlotB].State)
			}
			if !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
				t.Error("slot A changed")
			}
		})
	}
}

func TestAttackBootHangExhaustsTries(t *testing.T) { // U18
	e := updatetest.New(t, updatetest.Options{})
	mustInstall(t, e, updatetest.Spec{Version: "2.0.0", SVN: 2})
	// The new image never reaches Commit (kernel panic, watchdog reset).
	for i := 0; i < 3; i++ {
		if s := reboot(t, e); s != update.SlotB {
			t.Fatalf("try %d booted %v, want B", i+1, s)
		}
	}
	e.Events.Reset()
	if s := reboot(t, e); s != update.SlotA {
		t.Fatalf("after 3 tries booted %v, want A", s)
	}
	ev := e.Events.Last("rolled_back")
	if ev == nil || ev.Reason != "boot_attempts_exhausted" || ev.Version != "2.0.0" {
		t.Fatalf("rolled_back event %+v (steps %v)", ev, e.Events.Steps())
	}
	// Reported once, not at every start.
	e.Events.Reset()
	reboot(t, e)
	if len(e.Events.All()) != 0 {
		t.Errorf("events at next start: %v", e.Events.Steps())
	}
	assertFactoryBoots(t, e)
}

func TestOperatorRollbackOfTrial(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	mustInstall(t, e, updatetest.Spec{Version: "2.0.0", SVN: 1})
	reboot(t, e)
	if err := e.Installer.Rollback(); err != nil {
		t.Fatal(err)
	}
	if ev := e.Events.Last("rolled_back"); ev == nil || ev.Reason != "operator" {
		t.Fatalf("rolled_back event %+v", ev)
	}
	assertFactoryBoots(t, e)
}

func TestKeyRotationSuccessful(t *testing.T) { // U25
	e := updatetest.New(t, updatetest.Options{Keys: 3, Threshold: 2})
	old := e.Keys
	fresh := updatetest.Keys(t, 3)
	trustDir := filepath.Join(e.Dir, "trust")

	// Refused: signed only by the new keys (no old threshold), and a
	// version that skips ahead.
	if _, err := e.Installer.RotateRoot(updatetest.RootFile(t, 2, 2, fresh, fresh...), trustDir); !errors.Is(err, update.ErrThreshold) {
		t.Fatalf("rotation without the old threshold: %v, want ErrThreshold", err)
	}
	if ev := e.Events.Last("rejected"); ev == nil || ev.Reason != "untrusted_key" {
		t.Fatalf("rejected event %+v", ev)
	}
	if _, err := e.Installer.RotateRoot(updatetest.RootFile(t, 2, 2, fresh, old[0], fresh[0], fresh[1]), trustDir); !errors.Is(err, update.ErrThreshold) {
		t.Fatalf("rotation with one old signature: %v, want ErrThreshold", err)
	}
	if _, err := e.Installer.RotateRoot(updatetest.RootFile(t, 3, 2, fresh, old[0], old[1], fresh[0], fresh[1]), trustDir); !errors.Is(err, update.ErrMalformed) {
		t.Fatalf("rotation to v3 from v1: %v, want ErrMalformed", err)
	}
	if e.Trust.Root().Version != 1 {
		t.Fatal("a refused rotation changed the root")
	}

	v2 := updatetest.RootFile(t, 2, 2, fresh, old[0], old[1], fresh[0], fresh[1])
	if _, err := e.Installer.RotateRoot(v2, trustDir); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if ev := e.Events.Last("root_rotated"); ev == nil {
		t.Fatal("no root_rotated event")
	}
	// Replaying the same root is a rollback of the root version.
	if _, err := e.Installer.RotateRoot(v2, trustDir); !errors.Is(err, update.ErrRollback) {
		t.Fatalf("replayed rotation: %v, want ErrRollback", err)
	}
	// Old keys are out.
	e.Events.Reset()
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: old[:2]}))
	assertRejected(t, e, err, update.ErrRevokedKey, "revoked_key")
	// New keys install.
	mustInstall(t, e, updatetest.Spec{Version: "1.5.0", Signers: fresh[1:]})
	// The chain is persisted and re-verified from the factory root.
	tr, err := update.LoadTrust(e.RootFile, trustDir)
	if err != nil || tr.Root().Version != 2 || !tr.Revoked(old[0].ID()) {
		t.Fatalf("LoadTrust: %v, version %d", err, tr.Root().Version)
	}
	// A forged root.3.json in the directory is refused on load.
	forged := updatetest.RootFile(t, 3, 1, updatetest.Keys(t, 1), updatetest.Keys(t, 2)...)
	if err := os.WriteFile(filepath.Join(trustDir, "root.3.json"), forged, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := update.LoadTrust(e.RootFile, trustDir); !errors.Is(err, update.ErrThreshold) {
		t.Fatalf("LoadTrust with a forged root.3.json: %v, want ErrThreshold", err)
	}
}

func TestInstallFromDirectoryPicksNewestValid(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{FactorySVN: 2})
	usb := t.TempDir()
	updatetest.WriteFile(t, usb, "a-old.otgw", e.Bundle(updatetest.Spec{Version: "0.5.0", SVN: 1}))
	updatetest.WriteFile(t, usb, "b-good.otgw", e.Bundle(updatetest.Spec{Version: "1.4.0", SVN: 2}))
	updatetest.WriteFile(t, usb, "c-good-newest.otgw", e.Bundle(updatetest.Spec{Version: "1.5.0", SVN: 3}))
	updatetest.WriteFile(t, usb, "d-other-board.otgw", e.Bundle(updatetest.Spec{Version: "9.0.0", SVN: 9, Board: "x86-generic"}))
	updatetest.WriteFile(t, usb, "e-untrusted.otgw", e.Bundle(updatetest.Spec{Version: "9.9.0", SVN: 9, Signers: updatetest.Keys(t, 2)}))
	updatetest.WriteFile(t, usb, "notes.txt", []byte("not a bundle"))
	m, err := e.Installer.InstallFrom(context.Background(), usb)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.5.0" {
		t.Fatalf("installed %s, want 1.5.0", m.Version)
	}
	empty := t.TempDir()
	updatetest.WriteFile(t, empty, "x.otgw", e.Bundle(updatetest.Spec{Signers: updatetest.Keys(t, 2)}))
	e2 := updatetest.New(t, updatetest.Options{})
	_, err = e2.Installer.InstallFrom(context.Background(), empty)
	assertRejected(t, e2, err, update.ErrNoBundle, "no_bundle")
}

func TestInstallFromHTTP(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	url := updatetest.Serve(t, e.Bundle(updatetest.Spec{Version: "1.2.0"}), updatetest.Honest)
	m, err := e.Installer.InstallFrom(context.Background(), url)
	if err != nil || m.Version != "1.2.0" {
		t.Fatalf("install from %s: %v", url, err)
	}
	if st := e.State(); st.Trial != update.SlotB {
		t.Fatalf("trial %v, want B", st.Trial)
	}
}

// TestAttackPowerLossDuringInstall cuts the power at 50 random offsets of
// the bytes an install writes (slot image and boot state copies) and checks
// that the device always boots a good image: the factory image in slot A,
// or the complete new image in slot B when the cut came after it was
// marked pending. U15.
func TestAttackPowerLossDuringInstall(t *testing.T) {
	// Small images, so that the boot state writes are a fair share of the
	// bytes written and cuts land in them too.
	opts := updatetest.Options{ImageBytes: 2048}
	probe := updatetest.New(t, opts)
	bundle := probe.Bundle(updatetest.Spec{Version: "1.1.0"})
	newImage := updatetest.Image("1.1.0", 2048)
	probe.Board.Power = update.NewPowerBudget(1 << 40)
	if _, err := install(t, probe, bundle); err != nil {
		t.Fatal(err)
	}
	total := (1 << 40) - probe.Board.Power.Remaining()
	if total < int64(len(newImage)) {
		t.Fatalf("install wrote %d bytes, less than the image", total)
	}

	seed := uint64(7)
	rng := rand.New(rand.NewPCG(seed, seed))
	var bootedNew, bootedOld int
	for i := 0; i < 50; i++ {
		cut := rng.Int64N(total + 1)
		switch i {
		case 0:
			cut = total // power fails right after the install completed
		case 1:
			cut = total - 1 // during the last byte of the final state write
		}
		e := updatetest.New(t, opts)
		bundle := e.Bundle(updatetest.Spec{Version: "1.1.0"}) // same layout, this env's keys
		e.Board.Power = update.NewPowerBudget(cut)
		_, err := install(t, e, bundle)
		if err == nil && cut < total {
			t.Fatalf("cut at %d of %d: install succeeded", cut, total)
		}
		if err != nil && !errors.Is(err, update.ErrPowerLoss) {
			t.Fatalf("cut at %d: %v, want ErrPowerLoss", cut, err)
		}
		// Power on: a fresh board on the same files, no budget.
		board, err := update.NewSimBoard(e.Dir)
		if err != nil {
			t.Fatal(err)
		}
		board.SkipSync = true
		s, err := board.Reboot()
		if err != nil {
			t.Fatalf("cut at %d of %d: unbootable: %v", cut, total, err)
		}
		rc, err := board.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		got.ReadFrom(rc)
		rc.Close()
		switch {
		case s == update.SlotA && bytes.Equal(got.Bytes(), e.Factory):
			bootedOld++
		case s == update.SlotB && bytes.Equal(got.Bytes(), newImage):
			bootedNew++
		default:
			t.Fatalf("cut at %d of %d: booted slot %v with a %d-byte image that is neither good image", cut, total, s, got.Len())
		}
		if !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
			t.Fatalf("cut at %d: slot A changed", cut)
		}
		// The interrupted slot is reported at the next start and a new
		// install rewrites it completely.
		if i%10 == 0 && s == update.SlotA {
			e.Board = board
			e.Config.Slots, e.Config.Boot = board, board
			e.Reopen()
			e.Events.Reset()
			if _, err := e.Installer.Startup(); err != nil {
				t.Fatal(err)
			}
			if st := e.State(); st.Slots[update.SlotB].State == update.SlotDirty {
				t.Errorf("cut at %d: slot B still dirty after startup", cut)
			}
			if _, err := install(t, e, bundle); err != nil {
				t.Fatalf("cut at %d: install after power loss: %v", cut, err)
			}
			if !bytes.Equal(e.SlotImage(update.SlotB), newImage) {
				t.Fatalf("cut at %d: slot B not fully rewritten", cut)
			}
		}
	}
	t.Logf("seed %d: %d bytes per install; 50 cuts: %d booted the old image, %d the new", seed, total, bootedOld, bootedNew)
	if bootedNew == 0 {
		t.Error("no run booted the new image (the completed-install case should)")
	}
}

// TestAttackPowerLossDuringBootStateWrite cuts the power at every byte of
// a boot state write: the state read afterwards is the old or the new one,
// never none. U16.
func TestAttackPowerLossDuringBootStateWrite(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	old := e.State()
	next := old
	next.Trial, next.TriesLeft = update.SlotB, 3
	next.Slots[update.SlotB] = update.SlotInfo{State: update.SlotPending, Version: "1.1.0", SVN: 1, Size: 1}
	rec := len(update.EncodeBootState(&next, 1))
	for cut := 0; cut <= rec; cut++ {
		for round := 0; round < 2; round++ { // both copies take a turn
			b, err := update.NewSimBoard(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b.SkipSync = true
			for i := 0; i <= round; i++ {
				if err := b.Store(&old); err != nil {
					t.Fatal(err)
				}
			}
			b.Power = update.NewPowerBudget(int64(cut))
			err = b.Store(&next)
			b.Power = nil
			got, lerr := b.Load()
			if lerr != nil {
				t.Fatalf("cut at %d round %d: no state: %v", cut, round, lerr)
			}
			switch {
			case got == next && (err == nil || cut == rec):
			case got == old && err != nil:
			default:
				t.Fatalf("cut at %d round %d (err %v): state is neither old nor new: %+v", cut, round, err, got)
			}
		}
	}
}

func TestHealthAllPartsRequired(t *testing.T) {
	ok := func(context.Context) error { return nil }
	bad := func(context.Context) error { return errors.New("down") }
	tests := []struct {
		name string
		h    update.Health
		ok   bool
	}{
		{"all pass", update.Health{Datapath: ok, Policy: ok, Exporter: ok}, true},
		{"policy not loaded", update.Health{Datapath: ok, Policy: bad, Exporter: ok}, false},
		{"exporter down", update.Health{Datapath: ok, Policy: ok, Exporter: bad}, false},
		{"zero value", update.Health{}, false},
	}
	for _, tt := range tests {
		err := tt.h.Check(context.Background())
		if got := err == nil; got != tt.ok {
			t.Errorf("%s: got err %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, update.ErrHealthCheck) {
			t.Errorf("%s: %v does not match ErrHealthCheck", tt.name, err)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
