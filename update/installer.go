package update

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Config configures an Installer. Board, Arch, Slots and Boot are
// required; Trust is required to install or rotate; the rest have defaults.
type Config struct {
	Trust *Trust
	Board string // this board's profile name
	Arch  string // this device's architecture (GOARCH style)
	Slots Slots
	Boot  Bootloader
	// StateDir is the persistent data directory: the anchor file, the
	// accepted timestamp statement and trust/ (BOOT.md "Anchors"). When
	// "", anchors live in the boot state only and freshness is unknown.
	StateDir string

	Events EventFunc    // update events; discarded when nil
	Logger *slog.Logger // slog.Default() when nil
	Now    func() time.Time

	// BootTries is how often a new slot is tried before the bootloader
	// falls back (default 3).
	BootTries uint8
	// AllowDowngrade permits a lower release version at an SVN not below
	// the counter.
	AllowDowngrade bool
	// MaxPayloadBytes caps the payload (default: the slot capacity).
	MaxPayloadBytes int64

	// Timeout bounds one whole transfer (default 30 minutes); IdleTimeout
	// aborts a transfer that makes no progress (default 60 s).
	Timeout     time.Duration
	IdleTimeout time.Duration
	// HealthTimeout bounds Commit's health check (default 2 minutes).
	HealthTimeout time.Duration
	// HTTPClient fetches http(s) sources; a client with dial, TLS and
	// header timeouts when nil.
	HTTPClient *http.Client
}

var errNoTrust = errors.New("update: no trust root configured")

// Installer installs verified bundles into the inactive slot, commits or
// rolls back trial slots, and reports every step as an event. Its methods
// are safe for concurrent use; they run one at a time.
type Installer struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // serialises operations on the slots, boot state and trust
}

// NewInstaller checks cfg and fills defaults.
func NewInstaller(cfg Config) (*Installer, error) {
	switch {
	case cfg.Slots == nil || cfg.Boot == nil:
		return nil, errors.New("update: Config.Slots and Config.Boot are required")
	case !isName(cfg.Board) || !isName(cfg.Arch):
		return nil, fmt.Errorf("update: invalid board %q or arch %q", cfg.Board, cfg.Arch)
	}
	if cfg.Events == nil {
		cfg.Events = func(*Event) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BootTries == 0 {
		cfg.BootTries = 3
	}
	if cfg.MaxPayloadBytes <= 0 || cfg.MaxPayloadBytes > cfg.Slots.Capacity() {
		cfg.MaxPayloadBytes = cfg.Slots.Capacity()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 2 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.Trust != nil {
		cfg.Trust.SetClock(cfg.Now)
	}
	return &Installer{cfg: cfg, log: cfg.Logger.With("component", "update")}, nil
}

// Trust returns the installer's trust.
func (in *Installer) Trust() *Trust { return in.cfg.Trust }

// Status returns the current boot state.
func (in *Installer) Status() (BootState, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cfg.Boot.Load()
}

func (in *Installer) policy(st *BootState) Policy {
	return Policy{
		Board:           in.cfg.Board,
		Arch:            in.cfg.Arch,
		MinSVN:          st.SVN, // raised to the anchors by syncAnchors
		RunningVersion:  st.Running().Version,
		AllowDowngrade:  in.cfg.AllowDowngrade,
		MaxPayloadBytes: in.cfg.MaxPayloadBytes,
		Now:             in.cfg.Now,
	}
}

// Install verifies the bundle read from r and writes it to the inactive
// slot, which becomes the trial slot for the next boot. source names r in
// events. Nothing is written before the manifest verifies; the slot is
// marked pending only after the payload hash matched and the slot read back
// equal. r should return when ctx is done (InstallFrom arranges that for
// its sources); reads are also checked against ctx, Config.Timeout and
// Config.IdleTimeout between calls.
func (in *Installer) Install(ctx context.Context, r io.Reader, source string) (*Manifest, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ctx, g := in.guard(ctx)
	defer g.stop()
	return in.installLocked(ctx, g.reader(ctx, r), source)
}

func (in *Installer) installLocked(ctx context.Context, r io.Reader, source string) (*Manifest, error) {
	in.emit(SevNotice, "started", "", "", "firmware update started from "+source, map[string]any{"source": source})
	m, slot, err := in.install(ctx, r)
	if err != nil {
		in.reject(m, source, err)
		return m, err
	}
	in.emit(SevNotice, "installed", m.Version, "",
		fmt.Sprintf("firmware %s installed to slot %v; boots on trial at next reboot", m.Version, slot),
		manifestFields(m, slot, source))
	return m, nil
}

func (in *Installer) reject(m *Manifest, source string, err error) {
	reason := Reason(err)
	var version string
	fields := map[string]any{"source": source}
	if m != nil {
		version = m.Version
		fields = manifestFields(m, NoSlot, source)
	}
	in.log.LogAttrs(context.Background(), slog.LevelWarn, "update rejected", slog.String("reason", reason), slog.String("source", source), slog.String("err", err.Error()))
	in.emit(severityFor(reason), "rejected", version, reason, "firmware update rejected: "+err.Error(), fields)
}

func (in *Installer) install(ctx context.Context, r io.Reader) (*Manifest, Slot, error) {
	if in.cfg.Trust == nil {
		return nil, NoSlot, errNoTrust
	}
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return nil, NoSlot, err
	}
	if st.Trial.valid() && st.Booted == st.Trial {
		return nil, NoSlot, fmt.Errorf("%w: commit or roll back slot %v first", ErrPendingCommit, st.Trial)
	}
	if _, err := in.syncAnchors(&st); err != nil {
		return nil, NoSlot, err
	}
	target := st.Booted.Other()
	v := NewVerifier(in.cfg.Trust, in.policy(&st))
	m, err := v.ReadHeader(r)
	if err != nil {
		return m, NoSlot, err
	}
	// From here on the inactive slot is written: record it as dirty first,
	// so a power cut mid-write can never leave it bootable.
	st.Slots[target] = SlotInfo{State: SlotDirty, Version: m.Version, SVN: m.SVN, Size: m.Size, SHA256: m.SHA256}
	if st.Trial == target {
		st.Trial, st.TriesLeft = NoSlot, 0
	}
	if err := in.cfg.Boot.Store(&st); err != nil {
		return m, NoSlot, err
	}
	w, err := in.cfg.Slots.Create(target)
	if err != nil {
		return m, NoSlot, err
	}
	if err := v.Payload(r, w); err != nil {
		w.Abort()
		in.markBad(&st, target)
		return m, NoSlot, err
	}
	if err := w.Close(); err != nil {
		in.markBad(&st, target)
		return m, NoSlot, err
	}
	if err := ctx.Err(); err != nil {
		in.markBad(&st, target)
		return m, NoSlot, context.Cause(ctx)
	}
	// Read back what the slot holds: the bytes that will boot are the
	// bytes that were verified.
	if err := in.readBack(target, m); err != nil {
		in.markBad(&st, target)
		return m, NoSlot, err
	}
	st.Slots[target].State = SlotPending
	st.Trial, st.TriesLeft = target, in.cfg.BootTries
	if err := in.cfg.Boot.Store(&st); err != nil {
		return m, NoSlot, err
	}
	return m, target, nil
}

func (in *Installer) readBack(s Slot, m *Manifest) error {
	rc, err := in.cfg.Slots.Open(s)
	if err != nil {
		return err
	}
	defer rc.Close()
	// A partition is larger than the image: read back the signed size.
	n, sum, err := HashPayload(io.LimitReader(rc, m.Size))
	if err != nil {
		return err
	}
	if n != m.Size || sum != m.SHA256 {
		return fmt.Errorf("%w: slot %v reads back %d bytes, sha256 %x", ErrHashMismatch, s, n, sum[:8])
	}
	return nil
}

// markBad records a failed write; best effort (the slot is already dirty,
// hence not bootable, if this fails).
func (in *Installer) markBad(st *BootState, s Slot) {
	st.Slots[s].State = SlotBad
	if err := in.cfg.Boot.Store(st); err != nil {
		in.log.Warn("could not mark slot bad", "slot", s.String(), "err", err)
	}
}

// Startup reports, once, what the bootloader did at the last boot: a
// fallback because the trial slot's tries ran out (rolled_back) and an
// install that was interrupted (rejected, reason "interrupted"). The
// gateway calls it at start. It returns the running slot.
func (in *Installer) Startup() (Slot, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return NoSlot, err
	}
	if _, err := in.syncAnchors(&st); err != nil {
		return st.Booted, err
	}
	changed := false
	if st.Fallback == FallbackTries {
		in.emit(SevError, "rolled_back", st.FallbackVersion, st.Fallback.String(),
			fmt.Sprintf("firmware %s did not commit within its boot tries; slot %v (%s) booted instead", st.FallbackVersion, st.Booted, st.Running().Version),
			map[string]any{"slot": st.Booted.String()})
		st.Fallback, st.FallbackVersion, changed = FallbackNone, "", true
	}
	other := st.Booted.Other()
	if st.Slots[other].State == SlotDirty {
		in.emit(SevWarning, "rejected", st.Slots[other].Version, "interrupted",
			fmt.Sprintf("firmware install to slot %v was interrupted; the slot is not bootable and will be rewritten", other),
			map[string]any{"slot": other.String()})
		st.Slots[other].State, changed = SlotBad, true
	}
	if changed {
		if err := in.cfg.Boot.Store(&st); err != nil {
			return st.Booted, err
		}
	}
	return st.Booted, nil
}

// Commit runs hc on a trial slot that is running. If it passes, the slot
// becomes primary and the SVN counter advances to the slot's SVN (never
// before this point); the event is "committed". If it fails, the slot is
// marked bad, the counter is unchanged, the event is "rolled_back" with
// reason "healthcheck", and the next boot starts the previous slot; the
// error matches ErrHealthCheck. Without a running trial slot, Commit
// returns ErrNothingToCommit.
func (in *Installer) Commit(ctx context.Context, hc HealthCheck) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return err
	}
	t := st.Trial
	if !t.valid() || st.Booted != t || st.Slots[t].State != SlotPending {
		return fmt.Errorf("%w: running slot %v is not on trial", ErrNothingToCommit, st.Booted)
	}
	info := st.Slots[t]
	var herr error
	if hc == nil {
		herr = fmt.Errorf("%w: no health check", ErrHealthCheck)
	} else {
		hctx, cancel := context.WithTimeout(ctx, in.cfg.HealthTimeout)
		herr = hc.Check(hctx)
		cancel()
		if herr != nil && !errors.Is(herr, ErrHealthCheck) {
			herr = fmt.Errorf("%w: %w", ErrHealthCheck, herr)
		}
	}
	fields := map[string]any{"slot": t.String(), "svn": info.SVN}
	if herr != nil {
		st.Slots[t].State = SlotBad
		st.Trial, st.TriesLeft = NoSlot, 0
		if err := in.cfg.Boot.Store(&st); err != nil {
			return errors.Join(herr, err)
		}
		in.emit(SevError, "rolled_back", info.Version, "healthcheck",
			fmt.Sprintf("firmware %s failed its health check; slot %v (%s) boots next: %v", info.Version, st.Primary, st.Slots[st.Primary].Version, herr),
			fields)
		return herr
	}
	st.Primary = t
	st.Slots[t].State = SlotGood
	st.Trial, st.TriesLeft = NoSlot, 0
	if info.SVN > st.SVN {
		st.SVN = info.SVN
	}
	if err := in.cfg.Boot.Store(&st); err != nil {
		return err
	}
	if err := in.raiseAnchors(&st, anchors{SVN: st.SVN}); err != nil {
		return err
	}
	in.emit(SevNotice, "committed", info.Version, "",
		fmt.Sprintf("firmware %s committed in slot %v; security version counter %d", info.Version, t, st.SVN), fields)
	return nil
}

// Rollback is the operator's rollback. With a trial slot running or
// pending, the trial is marked bad and the primary boots next. Otherwise
// the other slot becomes primary if it is committed and its SVN is not
// below the counter (else ErrRollback). It takes effect at the next boot.
func (in *Installer) Rollback() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return err
	}
	var abandoned SlotInfo
	var to Slot
	switch {
	case st.Trial.valid():
		abandoned = st.Slots[st.Trial]
		st.Slots[st.Trial].State = SlotBad
		st.Trial, st.TriesLeft = NoSlot, 0
		to = st.Primary
	default:
		other := st.Booted.Other()
		if !st.Bootable(other) {
			err := fmt.Errorf("%w: slot %v (%s, %s, SVN %d) cannot boot at counter %d",
				ErrRollback, other, st.Slots[other].Version, st.Slots[other].State, st.Slots[other].SVN, st.SVN)
			in.reject(nil, "rollback", err)
			return err
		}
		abandoned = st.Running()
		st.Primary, to = other, other
	}
	if err := in.cfg.Boot.Store(&st); err != nil {
		return err
	}
	in.emit(SevWarning, "rolled_back", abandoned.Version, FallbackOperator.String(),
		fmt.Sprintf("operator rolled back firmware %s; slot %v (%s) boots next", abandoned.Version, to, st.Slots[to].Version),
		map[string]any{"slot": to.String()})
	return nil
}

// RotateRoot verifies a new trust root against the current one (see
// Trust.Rotate), stores it in dir for LoadTrust, and reports
// "root_rotated" or "rejected".
func (in *Installer) RotateRoot(rootFile []byte, dir string) (*Root, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cfg.Trust == nil {
		return nil, errNoTrust
	}
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return nil, err
	}
	if _, err := in.syncAnchors(&st); err != nil {
		return nil, err
	}
	r, err := in.cfg.Trust.RotateAndSave(rootFile, dir)
	if err != nil {
		in.emit(severityFor(Reason(err)), "rejected", "", Reason(err), "trust root rotation rejected: "+err.Error(), map[string]any{"role": "root"})
		return nil, err
	}
	if err := in.raiseAnchors(&st, anchors{Root: r.Version}); err != nil {
		return r, err
	}
	in.emit(SevNotice, "root_rotated", "", "",
		fmt.Sprintf("trust root rotated to version %d (%d keys, threshold %d)", r.Version, len(r.ids), r.Threshold),
		map[string]any{"role": "root", "root_version": r.Version})
	return r, nil
}

func (in *Installer) emit(sev Severity, step, version, reason, msg string, fields map[string]any) {
	in.cfg.Events(&Event{
		Time:     in.cfg.Now(),
		Severity: sev,
		Step:     step,
		Version:  version,
		Reason:   reason,
		Message:  msg,
		Fields:   fields,
	})
}

func manifestFields(m *Manifest, s Slot, source string) map[string]any {
	f := map[string]any{"svn": m.SVN, "board": m.Board, "arch": m.Arch, "size": m.Size, "sha256": hex.EncodeToString(m.SHA256[:])}
	if s != NoSlot {
		f["slot"] = s.String()
	}
	if source != "" {
		f["source"] = source
	}
	return f
}

// severityFor ranks rejections: signature-class failures are attack
// indicators (critical); transport failures are warnings.
func severityFor(reason string) Severity {
	switch reason {
	case "bad_signature", "untrusted_key", "revoked_key", "threshold", "weak_algorithm", "rollback", "hash_mismatch":
		return SevCritical
	case "timeout", "truncated", "download_failed", "canceled", "interrupted", "no_bundle":
		return SevWarning
	}
	return SevError
}
