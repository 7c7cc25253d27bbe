package update

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
)

// Files in an Installer's state directory (Config.StateDir).
const (
	AnchorFileName    = "anchor"
	TimestampFileName = "timestamp.json"
	TrustDirName      = "trust"
)

// anchors are the counters that must never go down: the highest trust
// root version accepted, the security version counter, and the highest
// timestamp statement version seen. They are kept in two places (BOOT.md
// "Anchors"): the boot state (bootloader environment or sim records, where
// RootVersion and SVN live) and the anchor file in the state directory
// (all three). On every operation the Installer takes the maximum of both
// places and of what the verified trust chain proves, writes it back to a
// place that is behind, and reports that as an "anchor_repaired" event:
// deleting or restoring one place is undone from the other, and deleting
// trust/root.N.json leaves the device refusing everything (rather than
// trusting root N-1 and the keys N revoked) until root N is restored.
type anchors struct {
	Root      uint32
	SVN       uint32
	Timestamp uint64
}

func (a anchors) line() string {
	body := fmt.Sprintf("otgw-anchor-v1 root=%d svn=%d timestamp=%d", a.Root, a.SVN, a.Timestamp)
	return fmt.Sprintf("%s crc=%08x\n", body, crc32.ChecksumIEEE([]byte(body)))
}

// readAnchorFile returns the anchors in path; a missing file is the zero
// value with ok false; a corrupt one is an error.
func readAnchorFile(path string) (a anchors, ok bool, err error) {
	b, err := readCapped(path, 256)
	if errors.Is(err, os.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, err
	}
	line := strings.TrimSuffix(string(b), "\n")
	body, crc, found := strings.Cut(line, " crc=")
	var want uint32
	if !found || len(crc) != 8 {
		return a, false, fmt.Errorf("%w: %s: no crc", ErrMalformed, path)
	}
	if _, err := fmt.Sscanf(crc, "%08x", &want); err != nil || want != crc32.ChecksumIEEE([]byte(body)) {
		return a, false, fmt.Errorf("%w: %s: crc mismatch", ErrMalformed, path)
	}
	if _, err := fmt.Sscanf(body, "otgw-anchor-v1 root=%d svn=%d timestamp=%d", &a.Root, &a.SVN, &a.Timestamp); err != nil {
		return anchors{}, false, fmt.Errorf("%w: %s: %v", ErrMalformed, path, err)
	}
	if a.line() != line+"\n" {
		return anchors{}, false, fmt.Errorf("%w: %s: not canonical", ErrMalformed, path)
	}
	return a, true, nil
}

func (in *Installer) anchorPath() string {
	if in.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(in.cfg.StateDir, AnchorFileName)
}

// syncAnchors reconciles the two anchor places with each other and with
// the trust chain, repairs whichever is behind, and sets the trust's
// anchor. st is updated (and stored) when the boot state was behind.
// Callers hold in.mu.
func (in *Installer) syncAnchors(st *BootState) (anchors, error) {
	var file anchors
	var fileOK bool
	path := in.anchorPath()
	if path != "" {
		var err error
		file, fileOK, err = readAnchorFile(path)
		if err != nil {
			// A corrupt file is rebuilt from the boot state: report it.
			in.emit(SevWarning, "anchor_repaired", "", "malformed", "anchor file unreadable, rebuilt from the boot state: "+err.Error(), map[string]any{"place": "file"})
		}
	}
	want := anchors{Root: max(st.RootVersion, file.Root), SVN: max(st.SVN, file.SVN), Timestamp: file.Timestamp}
	if in.cfg.Trust != nil {
		want.Root = max(want.Root, in.cfg.Trust.root.Version)
	}
	if ts, err := in.storedTimestamp(); err == nil && ts != nil {
		want.Timestamp = max(want.Timestamp, ts.Version)
	}
	// A place that was set before and is now behind was rolled back or
	// deleted: that is worth an event. First use (nothing set) is not.
	if st.RootVersion != 0 && (st.RootVersion < want.Root || st.SVN < want.SVN) {
		in.emit(SevWarning, "anchor_repaired", "", "rollback",
			fmt.Sprintf("boot state anchors (root v%d, svn %d) were behind (root v%d, svn %d); restored", st.RootVersion, st.SVN, want.Root, want.SVN),
			map[string]any{"place": "boot_state"})
	}
	if path != "" && !fileOK && st.RootVersion != 0 {
		in.emit(SevWarning, "anchor_repaired", "", "rollback", "anchor file "+path+" was missing; rebuilt from the boot state", map[string]any{"place": "file"})
	} else if fileOK && file != want && (file.Root < want.Root || file.SVN < want.SVN) && file.Root != 0 && st.RootVersion != 0 {
		in.emit(SevWarning, "anchor_repaired", "", "rollback",
			fmt.Sprintf("anchor file (root v%d, svn %d) was behind (root v%d, svn %d); restored", file.Root, file.SVN, want.Root, want.SVN),
			map[string]any{"place": "file"})
	}
	if err := in.writeAnchors(st, want); err != nil {
		return want, err
	}
	if in.cfg.Trust != nil {
		in.cfg.Trust.SetAnchor(want.Root)
	}
	return want, nil
}

// writeAnchors stores a in both places where either is behind.
func (in *Installer) writeAnchors(st *BootState, a anchors) error {
	if st.RootVersion != a.Root || st.SVN != a.SVN {
		st.RootVersion, st.SVN = a.Root, a.SVN
		if err := in.cfg.Boot.Store(st); err != nil {
			return err
		}
	}
	path := in.anchorPath()
	if path == "" {
		return nil
	}
	if cur, ok, err := readAnchorFile(path); err == nil && ok && cur == a {
		return nil
	}
	if err := os.MkdirAll(in.cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return writeFileAtomic(path, []byte(a.line()))
}

// raiseAnchors raises the anchors to at least a (after a rotation, commit
// or accepted timestamp). Callers hold in.mu.
func (in *Installer) raiseAnchors(st *BootState, a anchors) error {
	cur, err := in.syncAnchors(st)
	if err != nil {
		return err
	}
	return in.writeAnchors(st, anchors{Root: max(cur.Root, a.Root), SVN: max(cur.SVN, a.SVN), Timestamp: max(cur.Timestamp, a.Timestamp)})
}

// Anchors returns the anchored root version, security version counter and
// timestamp version after reconciling both places (and repairing one that
// is behind).
func (in *Installer) Anchors() (root, svn uint32, timestamp uint64, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return 0, 0, 0, err
	}
	a, err := in.syncAnchors(&st)
	return a.Root, a.SVN, a.Timestamp, err
}
