package update_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

func trustDir(e *updatetest.Env) string { return filepath.Join(e.Dir, update.TrustDirName) }

// TestAttackFreeze: an attacker withholds updates (TUF 1.5.2 "freeze
// attack") by serving nothing new. The device accepted a timestamp
// statement valid for a day; once it expires the device reports stale and
// raises an event, and an expired or replayed older statement does not
// make it fresh again.
func TestAttackFreeze(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{TimestampKeys: 1})
	f, err := e.Installer.Freshness()
	if err != nil || !f.Configured || !f.Stale || f.Reason != "missing" {
		t.Fatalf("before any statement: %+v, %v; want stale/missing", f, err)
	}
	v1 := e.Timestamp(update.Timestamp{Version: 1, Latest: "1.0.0", SVN: 1, Expires: updatetest.Epoch.Add(time.Hour)})
	v2 := e.Timestamp(update.Timestamp{Version: 2, Latest: "1.2.0", SVN: 3, Expires: updatetest.Epoch.Add(time.Hour)})
	if _, err := e.Installer.UpdateTimestamp(v2, "test"); err != nil {
		t.Fatal(err)
	}
	e.Events.Reset()
	f, err = e.Installer.Freshness()
	if err != nil || f.Stale || !f.Behind || f.Timestamp.Latest != "1.2.0" {
		t.Fatalf("fresh statement: %+v, %v; want fresh and behind 1.2.0", f, err)
	}
	if ev := e.Events.Last("stale"); ev != nil {
		t.Errorf("stale event while fresh: %+v", ev)
	}

	// Replay of an older, still unexpired statement (hides 1.2.0).
	if _, err := e.Installer.UpdateTimestamp(v1, "replay"); !errors.Is(err, update.ErrRollback) {
		t.Errorf("older statement: %v, want ErrRollback", err)
	}

	e.Now = updatetest.Epoch.Add(2 * time.Hour) // nothing new arrives
	e.Reopen()
	e.Events.Reset()
	f, err = e.Installer.Freshness()
	if err != nil || !f.Stale || f.Reason != "expired" {
		t.Fatalf("after expiry: %+v, %v; want stale/expired", f, err)
	}
	ev := e.Events.Last("stale")
	if ev == nil || ev.Reason != "expired" {
		t.Fatalf("no stale event: %v", e.Events.Steps())
	}
	// An expired statement is refused, and the stored one stays.
	old := e.Timestamp(update.Timestamp{Version: 3, Latest: "1.2.0", SVN: 3, Expires: updatetest.Epoch.Add(90 * time.Minute)})
	if _, err := e.Installer.UpdateTimestamp(old, "expired"); !errors.Is(err, update.ErrExpired) {
		t.Errorf("expired statement: %v, want ErrExpired", err)
	}
	if f, _ := e.Installer.Freshness(); f.Timestamp == nil || f.Timestamp.Version != 2 {
		t.Errorf("stored statement changed: %+v", f.Timestamp)
	}
	// A fresh one ends the alarm.
	if _, err := e.Installer.UpdateTimestamp(e.Timestamp(update.Timestamp{Version: 4, Latest: "1.2.0", SVN: 3, Expires: e.Now.Add(time.Hour)}), "fresh"); err != nil {
		t.Fatal(err)
	}
	if f, _ := e.Installer.Freshness(); f.Stale {
		t.Errorf("still stale after a fresh statement: %+v", f)
	}
}

// TestAttackTimestampKeyMisuse: the online timestamp key signs timestamps
// only, and firmware keys do not sign timestamps.
func TestAttackTimestampKeyMisuse(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{TimestampKeys: 1})
	_, err := install(t, e, e.Bundle(updatetest.Spec{Signers: e.TimestampKeys}))
	assertRejected(t, e, err, update.ErrUnknownKey, "untrusted_key")

	ts := &update.Timestamp{Version: 1, Board: "sim", Latest: "9.9.9", SVN: 9, Expires: updatetest.Epoch.Add(time.Hour)}
	b, err := update.SignTimestamp(ts, e.Keys...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Installer.UpdateTimestamp(b, "forged"); !errors.Is(err, update.ErrThreshold) {
		t.Errorf("timestamp signed by firmware keys: %v, want ErrThreshold", err)
	}
	other := e.Timestamp(update.Timestamp{Version: 1, Board: "x86-generic", Latest: "1.0.0", SVN: 1})
	if _, err := e.Installer.UpdateTimestamp(other, "other board"); !errors.Is(err, update.ErrWrongBoard) {
		t.Errorf("statement for another board: %v, want ErrWrongBoard", err)
	}
}

// TestAttackRotateToExpiredRoot: a correctly signed but already expired
// root (an old rotation an attacker kept) is refused; trust is unchanged.
func TestAttackRotateToExpiredRoot(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	k := e.Keys
	v2 := updatetest.RootFileWith(t, updatetest.RootSpec{Version: 2, Threshold: 2, Keys: k, Expires: updatetest.Epoch.Add(-time.Minute)}, k...)
	_, err := e.Installer.RotateRoot(v2, trustDir(e))
	if !errors.Is(err, update.ErrExpired) || update.Reason(err) != "expired" {
		t.Fatalf("rotate to expired root: %v, want ErrExpired", err)
	}
	if e.Trust.Root().Version != 1 {
		t.Errorf("trust root is v%d, want 1", e.Trust.Root().Version)
	}
	if _, err := os.Stat(filepath.Join(trustDir(e), "root.2.json")); !os.IsNotExist(err) {
		t.Errorf("expired root stored: %v", err)
	}
	if ev := e.Events.Last("rejected"); ev == nil || ev.Reason != "expired" {
		t.Errorf("rejected event: %+v", ev)
	}
	// Replaying stored rotations at load does not check intermediate
	// expiry (TUF 5.3.11): a root that was valid when applied keeps the
	// chain intact after it expires.
	v2ok := updatetest.RootFileWith(t, updatetest.RootSpec{Version: 2, Threshold: 2, Keys: k, Expires: updatetest.Epoch.Add(time.Hour)}, k...)
	if _, err := e.Installer.RotateRoot(v2ok, trustDir(e)); err != nil {
		t.Fatal(err)
	}
	v3 := updatetest.RootFileWith(t, updatetest.RootSpec{Version: 3, Threshold: 2, Keys: k}, k...)
	e.Now = updatetest.Epoch.Add(2 * time.Hour)
	e.Reopen()
	if _, err := e.Installer.RotateRoot(v3, trustDir(e)); err != nil {
		t.Fatal(err)
	}
	tr, err := update.LoadTrust(e.RootFile, trustDir(e))
	if err != nil || tr.Root().Version != 3 {
		t.Fatalf("reload chain with an expired intermediate root: %v", err)
	}
}

// TestAttackDeletedNewestRoot: root v2 revoked key k0. An attacker with
// file access deletes trust/root.2.json, hoping the device falls back to
// root v1 and accepts k0 again. The anchors (boot state and anchor file)
// remember v2: the device refuses every bundle until root v2 is restored,
// even when one of the two anchors is deleted too.
func TestAttackDeletedNewestRoot(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	k := e.Keys
	newKeys := append([]*update.Signer{k[1], k[2]}, updatetest.Keys(t, 1)...)
	v2 := updatetest.RootFile(t, 2, 2, newKeys, k[0], k[1], newKeys[2])
	if _, err := e.Installer.RotateRoot(v2, trustDir(e)); err != nil {
		t.Fatal(err)
	}
	if st := e.State(); st.RootVersion != 2 {
		t.Fatalf("boot state anchor root v%d, want 2", st.RootVersion)
	}
	for _, also := range []string{"", update.AnchorFileName} {
		name := "root file deleted"
		if also != "" {
			name += ", and " + also
		}
		t.Run(name, func(t *testing.T) {
			if err := os.Remove(filepath.Join(trustDir(e), "root.2.json")); err != nil {
				t.Fatal(err)
			}
			if also != "" {
				os.Remove(filepath.Join(e.Dir, also))
			}
			tr, err := update.LoadTrust(e.RootFile, trustDir(e))
			if err != nil || tr.Root().Version != 1 {
				t.Fatalf("LoadTrust: v%d, %v", tr.Root().Version, err)
			}
			e.Trust, e.Config.Trust = tr, tr
			e.Reopen()
			e.Events.Reset()
			_, err = install(t, e, e.Bundle(updatetest.Spec{Signers: []*update.Signer{k[0], k[1]}}))
			assertRejected(t, e, err, update.ErrRollback, "rollback")
			if also != "" {
				if ev := e.Events.Last("anchor_repaired"); ev == nil {
					t.Errorf("deleted anchor file not reported: %v", e.Events.Steps())
				}
				if _, err := os.Stat(filepath.Join(e.Dir, also)); err != nil {
					t.Errorf("anchor file not rebuilt: %v", err)
				}
			}
			// Restoring root v2 (the operator re-offers it) recovers.
			if _, err := e.Installer.RotateRoot(v2, trustDir(e)); err != nil {
				t.Fatalf("restore root v2: %v", err)
			}
		})
	}
	if _, err := install(t, e, e.Bundle(updatetest.Spec{Signers: newKeys[:2]})); err != nil {
		t.Fatalf("install after restoring root v2: %v", err)
	}
}

// TestAttackSecurityCounterRolledBack: the boot state is replaced by an
// older copy whose SVN counter is lower (an old bootloader environment
// restored); the anchor file still holds the committed counter, so an old
// vulnerable release stays refused and the boot state is repaired.
func TestAttackSecurityCounterRolledBack(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{})
	mustInstall(t, e, updatetest.Spec{Version: "1.1.0", SVN: 3})
	reboot(t, e)
	if err := e.Installer.Commit(context.Background(), healthy); err != nil {
		t.Fatal(err)
	}
	st := e.State()
	st.SVN = 1
	if err := e.Board.Store(&st); err != nil {
		t.Fatal(err)
	}
	e.Reopen()
	e.Events.Reset()
	_, err := install(t, e, e.Bundle(updatetest.Spec{Version: "1.2.0", SVN: 2}))
	if !errors.Is(err, update.ErrRollback) {
		t.Fatalf("install svn 2 after counter 3 was rolled back to 1: %v, want ErrRollback", err)
	}
	if ev := e.Events.Last("anchor_repaired"); ev == nil {
		t.Errorf("no anchor_repaired event: %v", e.Events.Steps())
	}
	if got := e.State().SVN; got != 3 {
		t.Errorf("boot state SVN %d after repair, want 3", got)
	}
}
