package update_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

// Attack tests, named after the attack they stop (U-numbers from
// ../shared/UPDATE-AND-SYSLOG.md part A.6). Each checks the error, the
// event, that the active slot is untouched, that no slot is left pending,
// and that the device still boots its factory image.

func install(t *testing.T, e *updatetest.Env, b []byte) (*update.Manifest, error) {
	t.Helper()
	return e.Installer.Install(context.Background(), bytes.NewReader(b), "test-bundle")
}

// assertRejected checks the common outcome of a stopped attack.
func assertRejected(t *testing.T, e *updatetest.Env, err, wantErr error, wantReason string) {
	t.Helper()
	if !errors.Is(err, wantErr) {
		t.Fatalf("error = %v, want errors.Is %v", err, wantErr)
	}
	if got := update.Reason(err); got != wantReason {
		t.Errorf("Reason(err) = %q, want %q", got, wantReason)
	}
	ev := e.Events.Last("rejected")
	if ev == nil {
		t.Fatalf("no rejected event; steps %v", e.Events.Steps())
	}
	if ev.Reason != wantReason {
		t.Errorf("rejected event reason %q, want %q", ev.Reason, wantReason)
	}
	if ev.Severity > update.SevWarning {
		t.Errorf("rejected event severity %v, want warning or worse", ev.Severity)
	}
	if e.Events.Last("installed") != nil {
		t.Errorf("an installed event was emitted: %v", e.Events.Steps())
	}
	if steps := e.Events.Steps(); len(steps) == 0 || steps[0] != "started" {
		t.Errorf("steps = %v, want started first", steps)
	}
	assertFactoryBoots(t, e)
}

// assertFactoryBoots checks that slot A still holds the factory image, no
// trial is pending, and a reboot starts slot A.
func assertFactoryBoots(t *testing.T, e *updatetest.Env) {
	t.Helper()
	if got := e.SlotImage(update.SlotA); !bytes.Equal(got, e.Factory) {
		t.Errorf("active slot A changed (%d bytes, want the %d-byte factory image)", len(got), len(e.Factory))
	}
	st := e.State()
	if st.Trial != update.NoSlot || st.Slots[update.SlotB].State == update.SlotPending || st.Slots[update.SlotB].State == update.SlotGood {
		t.Errorf("slot B left bootable: trial %v, state %v", st.Trial, st.Slots[update.SlotB].State)
	}
	if st.SVN != 1 {
		t.Errorf("SVN counter = %d, want 1", st.SVN)
	}
	s, err := e.Board.Reboot()
	if err != nil || s != update.SlotA {
		t.Errorf("reboot: slot %v, %v; want A", s, err)
	}
}

func TestAttackTamperedPayload(t *testing.T) { // U01
	e := updatetest.New(t, updatetest.Options{})
	b := e.Bundle(updatetest.Spec{Version: "1.1.0"})
	b[updatetest.HeaderLen(b)+1000] ^= 0x01
	_, err := install(t, e, b)
	assertRejected(t, e, err, update.ErrHashMismatch, "hash_mismatch")
	if st := e.State(); st.Slots[update.SlotB].State != update.SlotBad {
		t.Errorf("slot B state %v, want bad", st.Slots[update.SlotB].State)
	}
	if ev := e.Events.Last("rejected"); ev.Version != "1.1.0" || ev.Severity != update.SevCritical {
		t.Errorf("event version %q severity %v, want 1.1.0 critical", ev.Version, ev.Severity)
	}
}

func TestAttackTamperedManifest(t *testing.T) { // U02
	tests := []struct{ name, from, to string }{
		{"version", `"version":"1.1.0"`, `"version":"9.1.0"`},
		{"svn", `"svn":1,`, `"svn":7,`},
		{"board", `"board":"sim"`, `"board":"sin"`},
		{"hash", `"sha256":"`, ""}, // first hex digit changed
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{})
			b := e.Bundle(updatetest.Spec{Version: "1.1.0"})
			n := updatetest.HeaderLen(b)
			tampered := append([]byte(nil), b...)
			i := bytes.Index(tampered[:n], []byte(tt.from))
			if i < 0 {
				t.Fatalf("header lacks %s", tt.from)
			}
			if tt.to != "" {
				copy(tampered[i:], tt.to) // same length: the envelope still parses
			} else {
				d := &tampered[i+len(tt.from)]
				if *d == '0' {
					*d = '1'
				} else {
					*d = '0'
				}
			}
			if bytes.Equal(tampered, b) {
				t.Fatal("tampering changed nothing")
			}
			_, err := install(t, e, tampered)
			assertRejected(t, e, err, update.ErrSignature, "bad_signature")
			if st := e.State(); st.Slots[update.SlotB].State != update.SlotEmpty {
				t.Errorf("slot B state %v: something was written before the manifest verified", st.Slots[update.SlotB].State)
			}
		})
	}
}

func TestAttackUnknownKey(t *testing.T) { // U03
	e := updatetest.New(t, updatetest.Options{})
	dev := updatetest.Keys(t, 2) // well-formed keys the device does not trust
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: dev}))
	assertRejected(t, e, err, update.ErrUnknownKey, "untrusted_key")
	if !errors.Is(err, update.ErrThreshold) {
		t.Errorf("error %v does not match ErrThreshold", err)
	}
}

func TestAttackRevokedKeyAfterRotation(t *testing.T) { // U04
	e := updatetest.New(t, updatetest.Options{})
	k := e.Keys
	newKeys := append([]*update.Signer{k[1], k[2]}, updatetest.Keys(t, 1)...) // drops k[0]
	v2 := updatetest.RootFile(t, 2, 2, newKeys, k[0], k[1], newKeys[2])
	if _, err := e.Installer.RotateRoot(v2, filepath.Join(e.Dir, "trust")); err != nil {
		t.Fatal(err)
	}
	if !e.Trust.Revoked(k[0].ID()) {
		t.Fatal("k0 not recorded as revoked")
	}
	e.Events.Reset()
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: []*update.Signer{k[0], k[1]}}))
	assertRejected(t, e, err, update.ErrRevokedKey, "revoked_key")
}

func TestAttackThresholdNotMet(t *testing.T) { // U05
	e := updatetest.New(t, updatetest.Options{Keys: 3, Threshold: 2})
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: e.Keys[:1]}))
	assertRejected(t, e, err, update.ErrThreshold, "threshold")
}

func TestAttackSameKeyCountedTwice(t *testing.T) { // U06
	e := updatetest.New(t, updatetest.Options{Keys: 3, Threshold: 2})
	k := e.Keys[0]
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: []*update.Signer{k, k, k}}))
	assertRejected(t, e, err, update.ErrThreshold, "threshold")

	// A root cannot list one key twice either: key ids are derived from
	// the key, so the duplicate is visible.
	if _, err := update.NewRoot(1, 2, time.Time{}, k.Public(), k.Public()); !errors.Is(err, update.ErrMalformed) {
		t.Errorf("NewRoot with a repeated key: %v, want ErrMalformed", err)
	}
}

func TestAttackVersionRollback(t *testing.T) { // U07
	tests := []struct {
		name    string
		factory uint32
		spec    updatetest.Spec
	}{
		{"lower SVN", 5, updatetest.Spec{Version: "2.0.0", SVN: 4}},
		{"older release at same SVN", 1, updatetest.Spec{Version: "0.9.0", SVN: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{FactorySVN: tt.factory})
			before := e.State().SVN
			_, err := install(t, e, e.Bundle(tt.spec))
			if !errors.Is(err, update.ErrRollback) || update.Reason(err) != "rollback" {
				t.Fatalf("error %v, want ErrRollback", err)
			}
			if ev := e.Events.Last("rejected"); ev == nil || ev.Reason != "rollback" {
				t.Fatalf("rejected event: %+v", ev)
			}
			st := e.State()
			if st.SVN != before || st.Slots[update.SlotB].State != update.SlotEmpty {
				t.Errorf("SVN %d (want %d), slot B %v (want empty)", st.SVN, before, st.Slots[update.SlotB].State)
			}
			if !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
				t.Error("active slot changed")
			}
		})
	}
}

// TestAttackPrereleaseRollback: at the same SVN, an older pre-release is
// a rollback. Compared as strings "rc.9" > "rc.10" and the older build
// installed; SemVer 2.0.0 item 11 compares numeric identifiers as numbers.
func TestAttackPrereleaseRollback(t *testing.T) { // U07
	tests := []struct{ running, offered string }{
		{"1.1.0-rc.10", "1.1.0-rc.9"},
		{"1.1.0", "1.1.0-rc.99"},
		{"1.1.0-beta.11", "1.1.0-beta.2"},
		{"1.1.0-rc.1", "1.1.0-beta.11"},
	}
	for _, tt := range tests {
		t.Run(tt.offered+" over "+tt.running, func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{FactoryVersion: tt.running})
			_, err := install(t, e, e.Bundle(updatetest.Spec{Version: tt.offered, SVN: 1}))
			if !errors.Is(err, update.ErrRollback) || update.Reason(err) != "rollback" {
				t.Fatalf("error %v, want ErrRollback", err)
			}
			if st := e.State(); st.Slots[update.SlotB].State != update.SlotEmpty || !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
				t.Errorf("slots changed: B %v", st.Slots[update.SlotB].State)
			}
		})
	}
	// And the newer pre-release installs.
	e := updatetest.New(t, updatetest.Options{FactoryVersion: "1.1.0-rc.9"})
	if _, err := install(t, e, e.Bundle(updatetest.Spec{Version: "1.1.0-rc.10", SVN: 1})); err != nil {
		t.Errorf("rc.10 over rc.9: %v", err)
	}
}

func TestAttackWrongBoard(t *testing.T) { // U11
	e := updatetest.New(t, updatetest.Options{})
	_, err := install(t, e, e.Bundle(updatetest.Spec{Board: "x86-generic"}))
	assertRejected(t, e, err, update.ErrWrongBoard, "incompatible_board")
	if st := e.State(); st.Slots[update.SlotB].State != update.SlotEmpty {
		t.Errorf("slot B %v: written before the compatibility check", st.Slots[update.SlotB].State)
	}
}

func TestAttackWrongArchitecture(t *testing.T) { // U11
	e := updatetest.New(t, updatetest.Options{})
	_, err := install(t, e, e.Bundle(updatetest.Spec{Arch: "arm64"}))
	assertRejected(t, e, err, update.ErrWrongArch, "incompatible_arch")
	if st := e.State(); st.Slots[update.SlotB].State != update.SlotEmpty {
		t.Errorf("slot B %v: written before the compatibility check", st.Slots[update.SlotB].State)
	}
}

func TestAttackTruncatedBundle(t *testing.T) { // U12
	e0 := updatetest.New(t, updatetest.Options{})
	full := e0.Bundle(updatetest.Spec{})
	for _, cut := range []int{0, 5, 12, updatetest.HeaderLen(full) - 1, updatetest.HeaderLen(full) + 1, len(full) / 2, len(full) - 1} {
		t.Run("at "+itoa(cut), func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{})
			b := e.Bundle(updatetest.Spec{})
			_, err := install(t, e, b[:cut])
			assertRejected(t, e, err, update.ErrTruncated, "truncated")
		})
	}
	t.Run("http", func(t *testing.T) {
		e := updatetest.New(t, updatetest.Options{})
		url := updatetest.Serve(t, e.Bundle(updatetest.Spec{}), updatetest.Truncate)
		_, err := e.Installer.InstallFrom(context.Background(), url)
		assertRejected(t, e, err, update.ErrTruncated, "truncated")
	})
}

func TestAttackOversizeBundle(t *testing.T) { // U13 endless data
	t.Run("trailing data after signed size", func(t *testing.T) {
		e := updatetest.New(t, updatetest.Options{})
		b := append(e.Bundle(updatetest.Spec{}), "extra"...)
		_, err := install(t, e, b)
		assertRejected(t, e, err, update.ErrTooLarge, "oversize")
	})
	t.Run("endless http body", func(t *testing.T) {
		e := updatetest.New(t, updatetest.Options{})
		url := updatetest.Serve(t, e.Bundle(updatetest.Spec{}), updatetest.Endless)
		start := time.Now()
		_, err := e.Installer.InstallFrom(context.Background(), url)
		assertRejected(t, e, err, update.ErrTooLarge, "oversize")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v to stop an endless body", d)
		}
		if fi, err := os.Stat(filepath.Join(e.Dir, "slot-b.img")); err == nil && fi.Size() > 64<<10 {
			t.Errorf("slot B grew to %d bytes, beyond the signed size", fi.Size())
		}
	})
	t.Run("endless header", func(t *testing.T) {
		e := updatetest.New(t, updatetest.Options{})
		hdr := []byte("OTGWFW\x00\x01\xff\xff\xff\xff")
		r := io.MultiReader(bytes.NewReader(hdr), endless{})
		_, err := e.Installer.Install(context.Background(), r, "endless")
		assertRejected(t, e, err, update.ErrTooLarge, "oversize")
	})
	t.Run("signed size beyond slot", func(t *testing.T) {
		e := updatetest.New(t, updatetest.Options{})
		e.Board.SlotBytes = 32 << 10
		e.Reopen()
		_, err := install(t, e, e.Bundle(updatetest.Spec{}))
		assertRejected(t, e, err, update.ErrTooLarge, "oversize")
		if st := e.State(); st.Slots[update.SlotB].State != update.SlotEmpty {
			t.Errorf("slot B %v, want untouched", st.Slots[update.SlotB].State)
		}
	})
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'A'
	}
	return len(p), nil
}

func TestAttackSlowSourceTimeout(t *testing.T) { // U14
	tests := []struct {
		name        string
		mode        updatetest.Mode
		total, idle time.Duration
	}{
		{"trickle beats idle timeout but not the total", updatetest.Trickle, 400 * time.Millisecond, 2 * time.Second},
		{"stalled after header", updatetest.Stall, 5 * time.Second, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := updatetest.New(t, updatetest.Options{})
			e.Config.Timeout, e.Config.IdleTimeout = tt.total, tt.idle
			e.Reopen()
			url := updatetest.Serve(t, e.Bundle(updatetest.Spec{}), tt.mode)
			start := time.Now()
			_, err := e.Installer.InstallFrom(context.Background(), url)
			assertRejected(t, e, err, update.ErrTimeout, "timeout")
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v; the timeout did not bound the transfer", d)
			}
		})
	}
}

func TestAttackBundleSwappedAfterVerification(t *testing.T) { // U20
	e := updatetest.New(t, updatetest.Options{})
	good := e.Bundle(updatetest.Spec{Version: "1.1.0"})
	evil := updatetest.Image("6.6.6", len(updatetest.Image("1.1.0", 64<<10)))
	path := updatetest.WriteFile(t, "", "fw.otgw", good)

	// The bundle file is rewritten in place (same inode) the moment the
	// header has been verified and the payload starts to stream.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := updatetest.HeaderLen(good)
	r := &swapReader{f: f, at: int64(n), swap: func() {
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		w.WriteAt(evil, int64(n))
		w.Close()
	}}
	_, err = e.Installer.Install(context.Background(), r, path)
	if !r.swapped {
		t.Fatal("the swap never happened")
	}
	assertRejected(t, e, err, update.ErrHashMismatch, "hash_mismatch")

	// verify-then-install: install verifies again instead of trusting an
	// earlier verification of the same path.
	e.Events.Reset()
	if _, _, err := e.Installer.Inspect(context.Background(), updatetest.WriteFile(t, filepath.Dir(path), "fw.otgw", good)); err != nil {
		t.Fatalf("inspect good bundle: %v", err)
	}
	tampered := append([]byte(nil), good...)
	copy(tampered[n:], evil)
	updatetest.WriteFile(t, filepath.Dir(path), "fw.otgw", tampered)
	_, err = e.Installer.InstallFrom(context.Background(), path)
	assertRejected(t, e, err, update.ErrHashMismatch, "hash_mismatch")
}

type swapReader struct {
	f       *os.File
	off, at int64
	swap    func()
	swapped bool
}

func (r *swapReader) Read(p []byte) (int, error) {
	if r.off >= r.at && !r.swapped {
		r.swap()
		r.swapped = true
	}
	if r.off < r.at && int64(len(p)) > r.at-r.off {
		p = p[:r.at-r.off]
	}
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func TestAttackExpiredManifest(t *testing.T) { // U09 freeze
	e := updatetest.New(t, updatetest.Options{})
	_, err := install(t, e, e.Bundle(updatetest.Spec{Expires: updatetest.Epoch.Add(-time.Minute)}))
	assertRejected(t, e, err, update.ErrExpired, "expired")
}

func TestAttackTransportMITM(t *testing.T) { // U22: TLS is not relied upon
	e := updatetest.New(t, updatetest.Options{})
	b := e.Bundle(updatetest.Spec{})
	b[len(b)-1] ^= 0xff // a proxy altered the file in transit
	_, err := e.Installer.InstallFrom(context.Background(), updatetest.Serve(t, b, updatetest.Honest))
	assertRejected(t, e, err, update.ErrHashMismatch, "hash_mismatch")
}

func itoa(n int) string {
	return string(append([]byte(nil), []byte(func() string {
		if n == 0 {
			return "0"
		}
		var b []byte
		for ; n > 0; n /= 10 {
			b = append([]byte{byte('0' + n%10)}, b...)
		}
		return string(b)
	}())...))
}
