package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Freshness is what the device knows about the newest published release
// (from the last accepted timestamp statement) and whether that knowledge
// is current.
type Freshness struct {
	// Configured is false when the trust root delegates no timestamp
	// role: freshness cannot be judged, and is not reported as stale.
	Configured bool
	Timestamp  *Timestamp // last accepted statement; nil if none
	// Stale is true when there is no valid statement younger than its
	// expiry: updates may be withheld (freeze attack, TUF 1.5.2).
	Stale  bool
	Reason string // why stale: "missing", "expired", or a verification reason
	// Behind is true when the statement names a newer release (or a
	// higher security version) than the running slot.
	Behind bool
}

func (in *Installer) timestampPath() string {
	if in.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(in.cfg.StateDir, TimestampFileName)
}

// storedTimestamp returns the accepted statement in the state directory,
// verified against the current trust; nil, nil when there is none.
func (in *Installer) storedTimestamp() (*Timestamp, error) {
	path := in.timestampPath()
	if path == "" || in.cfg.Trust == nil {
		return nil, nil
	}
	b, err := ReadRootFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return in.cfg.Trust.VerifyTimestamp(b, in.cfg.Board)
}

// UpdateTimestamp verifies a timestamp statement (signed by the root's
// timestamp role, for this board, not expired, version not below the
// anchored one) and stores it in the state directory. source names it in
// events. An older version is ErrRollback (a replayed statement), an
// expired one ErrExpired; the stored statement is unchanged then.
func (in *Installer) UpdateTimestamp(b []byte, source string) (*Timestamp, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ts, err := in.updateTimestamp(b)
	fields := map[string]any{"role": "timestamp", "source": source}
	if err != nil {
		in.emit(severityFor(Reason(err)), "rejected", "", Reason(err), "timestamp statement rejected: "+err.Error(), fields)
		return nil, err
	}
	fields["timestamp_version"], fields["svn"] = ts.Version, ts.SVN
	in.emit(SevInfo, "refreshed", ts.Latest, "",
		fmt.Sprintf("timestamp v%d: latest release %s (svn %d), valid until %s", ts.Version, ts.Latest, ts.SVN, formatTime(ts.Expires)), fields)
	return ts, nil
}

func (in *Installer) updateTimestamp(b []byte) (*Timestamp, error) {
	switch {
	case in.cfg.Trust == nil:
		return nil, errNoTrust
	case in.cfg.StateDir == "":
		return nil, errors.New("update: timestamp: no state directory configured")
	}
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return nil, err
	}
	a, err := in.syncAnchors(&st)
	if err != nil {
		return nil, err
	}
	ts, err := in.cfg.Trust.VerifyTimestamp(b, in.cfg.Board)
	if err != nil {
		return nil, err
	}
	if now := in.cfg.Now(); !now.Before(ts.Expires) {
		return nil, fmt.Errorf("update: timestamp v%d: %w at %s", ts.Version, ErrExpired, formatTime(ts.Expires))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	if ts.Version < a.Timestamp {
		return nil, fmt.Errorf("update: timestamp: %w: version %d is below the anchored %d (a replayed statement)", ErrRollback, ts.Version, a.Timestamp)
	}
	if ts.Version == a.Timestamp {
		if cur, err := ReadRootFile(in.timestampPath()); err == nil && bytes.Equal(bytes.TrimSuffix(cur, []byte("\n")), b) {
			return ts, nil // the same statement again
		}
		return nil, fmt.Errorf("update: timestamp: %w: version %d was already accepted with other content", ErrRollback, ts.Version)
	}
	if err := writeFileAtomic(in.timestampPath(), b); err != nil {
		return nil, err
	}
	if err := in.raiseAnchors(&st, anchors{Timestamp: ts.Version}); err != nil {
		return ts, err
	}
	return ts, nil
}

// RefreshFrom fetches a timestamp statement from an http(s) URL or a file
// (at most MaxRootFileBytes, within Config.Timeout) and passes it to
// UpdateTimestamp.
func (in *Installer) RefreshFrom(ctx context.Context, src string) (*Timestamp, error) {
	b, err := in.fetchSmall(ctx, src)
	if err != nil {
		in.emit(severityFor(Reason(err)), "rejected", "", Reason(err), "timestamp fetch failed: "+err.Error(), map[string]any{"role": "timestamp", "source": src})
		return nil, err
	}
	return in.UpdateTimestamp(b, src)
}

func (in *Installer) fetchSmall(ctx context.Context, src string) ([]byte, error) {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		return ReadRootFile(src)
	}
	ctx, cancel := context.WithTimeout(ctx, min(in.cfg.Timeout, time.Minute))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	req.Header.Set("User-Agent", "otgw-update/1")
	resp, err := in.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: HTTP status %s", ErrDownload, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxRootFileBytes+1))
	if err != nil {
		return nil, readErr("timestamp", err)
	}
	if len(b) > MaxRootFileBytes {
		return nil, fmt.Errorf("%w: timestamp over %d bytes", ErrTooLarge, MaxRootFileBytes)
	}
	return b, nil
}

// Freshness judges the stored timestamp statement at Config.Now. When it
// is stale, a "stale" event (warning) is emitted, so a frozen device is
// noticed by the SOC and not only by whoever runs `otgw fw status`.
func (in *Installer) Freshness() (Freshness, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var f Freshness
	if in.cfg.Trust == nil {
		return f, errNoTrust
	}
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return f, err
	}
	if _, err := in.syncAnchors(&st); err != nil {
		return f, err
	}
	if in.cfg.Trust.root.ts == nil {
		return f, nil
	}
	f.Configured = true
	ts, err := in.storedTimestamp()
	switch {
	case err != nil:
		f.Stale, f.Reason = true, Reason(err)
	case ts == nil:
		f.Stale, f.Reason = true, "missing"
	default:
		f.Timestamp = ts
		if !in.cfg.Now().Before(ts.Expires) {
			f.Stale, f.Reason = true, "expired"
		}
		run := st.Running()
		f.Behind = CompareVersions(ts.Latest, run.Version) > 0 || ts.SVN > run.SVN
	}
	if f.Stale {
		msg := "no timestamp statement accepted yet: cannot tell whether updates are withheld"
		if f.Timestamp != nil {
			msg = fmt.Sprintf("timestamp v%d expired at %s: updates may be withheld (freeze)", f.Timestamp.Version, formatTime(f.Timestamp.Expires))
		} else if err != nil {
			msg = "stored timestamp statement does not verify: " + err.Error()
		}
		in.emit(SevWarning, "stale", "", f.Reason, msg, map[string]any{"role": "timestamp"})
	}
	return f, nil
}
