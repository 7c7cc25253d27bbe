package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/update"
)

func init() {
	register("fw", "signed firmware: keygen, root, sign, verify, install, status, commit, rollback", runFW)
}

// fwCommands are the `otgw fw` subcommands.
var fwCommands = map[string]struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}{
	"keygen":    {"create an Ed25519 signing key (PREFIX.key, PREFIX.pub)", fwKeygen},
	"root":      {"create a trust root (keys, threshold) signed by keys", fwRoot},
	"sign":      {"build a signed bundle from a payload image", fwSign},
	"verify":    {"verify a bundle file (signatures, threshold, hash) without installing", fwVerify},
	"install":   {"install from a bundle file, a directory (USB stick) or an http(s) URL", fwInstall},
	"status":    {"show slots, boot state and the security version counter", fwStatus},
	"commit":    {"mark the running trial slot good (after your own checks)", fwCommit},
	"rollback":  {"abandon the trial slot, or switch back to the other committed slot", fwRollback},
	"rotate":    {"install a new trust root signed by the current root's threshold", fwRotate},
	"timestamp": {"sign a freshness statement (latest release, short expiry) with the timestamp key", fwTimestamp},
	"refresh":   {"fetch and accept a timestamp statement from a file or http(s) URL", fwRefresh},
	"provision": {"write a factory image to slot A and a fresh boot state (factory/test use)", fwProvision},
	"reboot":    {"sim board: run the bootloader's slot selection, as a power cycle would", fwReboot},
}

func runFW(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: otgw fw COMMAND [FLAGS] [ARGS]\n\ncommands:")
		names := make([]string, 0, len(fwCommands))
		for n := range fwCommands {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stderr, "  %-9s %s\n", n, fwCommands[n].summary)
		}
		fmt.Fprintln(stderr, "\nBundle format: update/FORMAT.md; boot state: update/BOOT.md.")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := fwCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "otgw fw: unknown command %q\n", args[0])
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

// fwMulti is a repeatable string flag.
type fwMulti []string

func (m *fwMulti) String() string     { return strings.Join(*m, ",") }
func (m *fwMulti) Set(v string) error { *m = append(*m, v); return nil }

func fwFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("otgw fw "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// fwParse parses flags and allows them after positional arguments too.
func fwParse(fs *flag.FlagSet, args []string) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func fwFail(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "otgw fw: "+format+"\n", a...)
	return 1
}

func fwUsage(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "otgw fw: "+format+"\n", a...)
	return 2
}

// device flags shared by the commands that touch slots.
type fwDevice struct {
	board, state, slots, arch, root string
	slotA, slotB, env               string
}

func (d *fwDevice) register(fs *flag.FlagSet, withTrust bool) {
	fs.StringVar(&d.board, "board", "", "board profile (required): its slots (kind, a, b, env, state) choose the slot driver")
	fs.StringVar(&d.state, "state", "", "state directory (default: the profile's slots.state): trust/, anchor, timestamp.json, lock; sim: also slots and boot state")
	fs.StringVar(&d.slots, "slots", "", "same as --state")
	fs.StringVar(&d.slotA, "slot-a", "", "override the profile's slot A partition (block device or file)")
	fs.StringVar(&d.slotB, "slot-b", "", "override the profile's slot B partition")
	fs.StringVar(&d.env, "env", "", "override the profile's bootloader environment (grub: grubenv; uboot: fw_env.config)")
	fs.StringVar(&d.arch, "arch", runtime.GOARCH, "this device's architecture")
	if withTrust {
		fs.StringVar(&d.root, "root", "", "factory trust root file (root.json); rotations are read from STATE/trust")
	}
}

// fwBoard is an opened device: its slots and bootloader, chosen by the
// board profile's slots.kind, and its state directory.
type fwBoard struct {
	Dir   string
	Slots update.Slots
	Boot  update.Bootloader
	sim   *update.SimBoard // the sim board, which can also play the bootloader
}

// Load returns the boot state.
func (b *fwBoard) Load() (update.BootState, error) { return b.Boot.Load() }

func (d *fwDevice) open() (*fwBoard, error) {
	if d.board == "" {
		return nil, errors.New("--board is required")
	}
	p, err := board.Lookup(d.board)
	if err != nil {
		return nil, err
	}
	dir := cmp.Or(d.state, d.slots, p.Slots.State, "/var/lib/otgw")
	pick := func(flag, profile string) string { return cmp.Or(flag, profile) }
	switch p.Slots.Kind {
	case board.SlotFile:
		sb, err := update.NewSimBoard(dir)
		if err != nil {
			return nil, err
		}
		return &fwBoard{Dir: dir, Slots: sb, Boot: sb, sim: sb}, nil
	case board.SlotGRUB, board.SlotUBoot:
		slots := update.PartitionSlots{A: pick(d.slotA, p.Slots.A), B: pick(d.slotB, p.Slots.B)}
		env := pick(d.env, p.Slots.Env)
		for _, f := range []string{slots.A, slots.B, env} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("board %s (%s slots): %w", p.Name, p.Slots.Kind, err)
			}
		}
		var bl update.Bootloader
		if p.Slots.Kind == board.SlotGRUB {
			bl, err = update.NewGRUBBoot(env)
		} else {
			bl, err = update.NewUBootBoot(env)
		}
		if err != nil {
			return nil, err
		}
		return &fwBoard{Dir: dir, Slots: slots, Boot: bl}, nil
	}
	return nil, fmt.Errorf("board %s: slots kind %q has no driver", p.Name, p.Slots.Kind)
}

// fwLock takes the state directory's lock for a command that changes the
// device (install, commit, rollback, rotate, provision, reboot), so two of
// them never interleave their boot state writes. A second command is
// refused at once rather than queued: an operator should see that an
// install is running. Only the running gateway's short critical sections
// (boot report, trial commit, freshness) are waited for, up to 15 s.
func fwLock(name, dir string, stderr io.Writer) (*update.StateLock, int) {
	l, err := update.LockStateWait(dir)
	if err != nil {
		return nil, fwFail(stderr, "%s: REFUSED reason=%s: %v", name, update.Reason(err), err)
	}
	return l, 0
}

func (d *fwDevice) trustDir(b *fwBoard) string {
	return filepath.Join(b.Dir, update.TrustDirName)
}

func (d *fwDevice) trust(b *fwBoard) (*update.Trust, error) {
	if d.root == "" {
		return nil, errors.New("--root FILE is required")
	}
	rb, err := update.ReadRootFile(d.root)
	if err != nil {
		return nil, err
	}
	return update.LoadTrust(rb, d.trustDir(b))
}

// fwEventPrinter prints update events, one line each, as an operator sees
// them; the gateway sends the same events to the SOC.
func fwEventPrinter(w io.Writer) update.EventFunc {
	return func(e *update.Event) {
		fmt.Fprintf(w, "event: update step=%s severity=%s", e.Step, e.Severity)
		if e.Version != "" {
			fmt.Fprintf(w, " version=%s", e.Version)
		}
		if e.Reason != "" {
			fmt.Fprintf(w, " reason=%s", e.Reason)
		}
		fmt.Fprintf(w, " msg=%q\n", e.Message)
	}
}

func (d *fwDevice) installer(b *fwBoard, tr *update.Trust, stderr io.Writer, mod func(*update.Config)) (*update.Installer, error) {
	cfg := update.Config{
		Trust: tr, Board: d.board, Arch: d.arch, Slots: b.Slots, Boot: b.Boot, StateDir: b.Dir,
		Events: fwEventPrinter(stderr),
		Logger: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	return update.NewInstaller(cfg)
}

func fwKeygen(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("keygen", stderr)
	out := fs.String("out", "", "file prefix: writes PREFIX.key (mode 0600) and PREFIX.pub")
	if _, ok := fwParse(fs, args); !ok {
		return 2
	}
	if *out == "" {
		return fwUsage(stderr, "keygen: --out PREFIX is required")
	}
	s, err := update.GenerateKey(nil)
	if err != nil {
		return fwFail(stderr, "keygen: %v", err)
	}
	for _, f := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{{*out + ".key", s.MarshalPrivateKeyPEM(), 0o600}, {*out + ".pub", update.MarshalPublicKeyPEM(s.Public()), 0o644}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return fwFail(stderr, "keygen: %v (refusing to overwrite a key)", err)
		}
		_, werr := fh.Write(f.b)
		if cerr := fh.Close(); werr != nil || cerr != nil {
			return fwFail(stderr, "keygen: write %s: %v", f.path, errors.Join(werr, cerr))
		}
	}
	fmt.Fprintf(stdout, "key id %s\nprivate %s.key\npublic  %s.pub\n", s.ID(), *out, *out)
	return 0
}

func fwReadSigners(paths []string) ([]*update.Signer, error) {
	var out []*update.Signer
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		s, err := update.ParsePrivateKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Default expiries, as TUF suggests for its roles: metadata that never
// expires lets an attacker replay it forever (freeze), so release metadata
// expires unless the signer says "never".
const (
	fwRootExpiry      = "8760h" // a year
	fwManifestExpiry  = "4380h" // half a year: a bundle on a shelf must be re-signed
	fwTimestampExpiry = "24h"
)

// fwParseExpiry accepts "never", a duration from now ("8760h"), or an
// RFC 3339 time.
func fwParseExpiry(s string, now time.Time) (time.Time, error) {
	if s == "never" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires %q: want a duration (8760h) or RFC 3339 time", s)
	}
	return t.UTC().Truncate(time.Second), nil
}

func fwReadPubs(paths []string) ([]ed25519.PublicKey, error) {
	var pks []ed25519.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		pk, err := update.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		pks = append(pks, pk)
	}
	return pks, nil
}

func fwRoot(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("root", stderr)
	var pubs, keys fwMulti
	version := fs.Uint("version", 1, "root version (a rotation is current+1)")
	threshold := fs.Int("threshold", 1, "signatures required (m of n)")
	expires := fs.String("expires", fwRootExpiry, "expiry: duration from now, RFC 3339, or never")
	out := fs.String("out", "", "output root file")
	var tsPubs fwMulti
	fs.Var(&tsPubs, "timestamp-pub", "public key file of a timestamp key (repeat): delegates the timestamp role (threshold 1)")
	fs.Var(&pubs, "pub", "public key file of a root key (repeat)")
	fs.Var(&keys, "key", "private key that signs this root (repeat; for a rotation: the old root's threshold and the new one's)")
	if _, ok := fwParse(fs, args); !ok {
		return 2
	}
	if *out == "" || len(pubs) == 0 || len(keys) == 0 {
		return fwUsage(stderr, "root: --out, at least one --pub and one --key are required")
	}
	exp, err := fwParseExpiry(*expires, time.Now())
	if err != nil {
		return fwUsage(stderr, "root: %v", err)
	}
	pks, err := fwReadPubs(pubs)
	if err != nil {
		return fwFail(stderr, "root: %v", err)
	}
	signers, err := fwReadSigners(keys)
	if err != nil {
		return fwFail(stderr, "root: %v", err)
	}
	if *version > 1<<32-1 {
		return fwUsage(stderr, "root: --version out of range")
	}
	r, err := update.NewRoot(uint32(*version), *threshold, exp, pks...)
	if err != nil {
		return fwFail(stderr, "root: %v", err)
	}
	if len(tsPubs) > 0 {
		tks, err := fwReadPubs(tsPubs)
		if err != nil {
			return fwFail(stderr, "root: %v", err)
		}
		if r, err = r.WithTimestampKeys(1, tks...); err != nil {
			return fwFail(stderr, "root: %v", err)
		}
	}
	if err := os.WriteFile(*out, append(update.SignRoot(r, signers...), '\n'), 0o644); err != nil {
		return fwFail(stderr, "root: %v", err)
	}
	fmt.Fprintf(stdout, "root v%d: %d keys, threshold %d, %d signatures -> %s\n", r.Version, len(pks), r.Threshold, len(signers), *out)
	return 0
}

func fwSign(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("sign", stderr)
	var keys fwMulti
	fs.Var(&keys, "key", "private key file (repeat for m-of-n)")
	version := fs.String("version", "", "release version MAJOR.MINOR.PATCH[-PRE]")
	svn := fs.Uint("svn", 0, "security version number (raise it to retire vulnerable releases)")
	board := fs.String("board", "", "board profile the image is for")
	arch := fs.String("arch", "", "architecture the image is for (amd64, arm64, arm)")
	expires := fs.String("expires", fwManifestExpiry, "manifest expiry: duration from now, RFC 3339, or never")
	out := fs.String("out", "", "output bundle file (.otgw)")
	pos, ok := fwParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 || *out == "" || len(keys) == 0 || *version == "" || *board == "" || *arch == "" || *svn > 1<<32-1 {
		return fwUsage(stderr, "sign: usage: otgw fw sign --key K [--key K2] --version V --svn N --board B --arch A [--expires D] --out F PAYLOAD")
	}
	signers, err := fwReadSigners(keys)
	if err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	exp, err := fwParseExpiry(*expires, now)
	if err != nil {
		return fwUsage(stderr, "sign: %v", err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	defer f.Close()
	size, sum, err := update.HashPayload(f)
	if err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	m := &update.Manifest{Version: *version, SVN: uint32(*svn), Board: *board, Arch: *arch, Size: size, SHA256: sum, Created: now, Expires: exp}
	hdr, err := update.SignManifest(m, signers...)
	if err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	tmp := *out + ".tmp"
	o, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	werr := update.WriteBundle(o, hdr, size, f)
	if cerr := o.Close(); werr != nil || cerr != nil {
		os.Remove(tmp)
		return fwFail(stderr, "sign: %v", errors.Join(werr, cerr))
	}
	if err := os.Rename(tmp, *out); err != nil {
		return fwFail(stderr, "sign: %v", err)
	}
	fmt.Fprintf(stdout, "bundle %s: version %s svn %d board %s arch %s, %d bytes, sha256 %s, %d signatures\n",
		*out, m.Version, m.SVN, m.Board, m.Arch, m.Size, hex.EncodeToString(sum[:]), len(signers))
	return 0
}

func fwVerify(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("verify", stderr)
	root := fs.String("root", "", "trust root file")
	trustDir := fs.String("trust-dir", "", "directory of rotated roots (root.N.json), e.g. STATE/trust")
	board := fs.String("board", "", "board to check against (default: the bundle's claim)")
	arch := fs.String("arch", "", "architecture to check against (default: the bundle's claim)")
	minSVN := fs.Uint("min-svn", 0, "refuse a security version below this")
	pos, ok := fwParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 || *root == "" {
		return fwUsage(stderr, "verify: usage: otgw fw verify --root ROOT [--board B --arch A] BUNDLE")
	}
	rb, err := update.ReadRootFile(*root)
	if err != nil {
		return fwFail(stderr, "verify: %v", err)
	}
	tr, err := update.LoadTrust(rb, *trustDir)
	if err != nil {
		return fwFail(stderr, "verify: %v", err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fwFail(stderr, "verify: %v", err)
	}
	defer f.Close()
	claim, err := update.ReadUnverifiedManifest(f)
	if err != nil {
		return fwFail(stderr, "verify: %s: REJECTED reason=%s: %v", pos[0], update.Reason(err), err)
	}
	p := update.Policy{Board: *board, Arch: *arch, MinSVN: uint32(min(*minSVN, 1<<32-1))}
	if p.Board == "" {
		p.Board = claim.Board
	}
	if p.Arch == "" {
		p.Arch = claim.Arch
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fwFail(stderr, "verify: %v", err)
	}
	m, err := update.VerifyBundle(f, tr, p)
	if err != nil {
		return fwFail(stderr, "verify: %s: REJECTED reason=%s: %v", pos[0], update.Reason(err), err)
	}
	fmt.Fprintf(stdout, "%s: OK version %s svn %d board %s arch %s size %d sha256 %s (trust root v%d)\n",
		pos[0], m.Version, m.SVN, m.Board, m.Arch, m.Size, hex.EncodeToString(m.SHA256[:]), tr.Root().Version)
	return 0
}

func fwInstall(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("install", stderr)
	var d fwDevice
	d.register(fs, true)
	timeout := fs.Duration("timeout", 30*time.Minute, "bound on the whole transfer")
	idle := fs.Duration("idle-timeout", 60*time.Second, "abort when no data arrives for this long")
	maxSize := fs.Int64("max-size", 0, "payload cap in bytes (default: the slot size)")
	downgrade := fs.Bool("allow-downgrade", false, "allow an older release version (never a lower security version)")
	tries := fs.Uint("tries", 3, "boot attempts before the bootloader falls back")
	pos, ok := fwParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 || *tries == 0 || *tries > 255 {
		return fwUsage(stderr, "install: usage: otgw fw install --root ROOT --board B [--state DIR] SOURCE (file, directory or http(s) URL)")
	}
	b, err := d.open()
	if err != nil {
		return fwUsage(stderr, "install: %v", err)
	}
	lock, rc := fwLock("install", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	tr, err := d.trust(b)
	if err != nil {
		return fwFail(stderr, "install: %v", err)
	}
	in, err := d.installer(b, tr, stderr, func(c *update.Config) {
		c.Timeout, c.IdleTimeout, c.MaxPayloadBytes = *timeout, *idle, *maxSize
		c.AllowDowngrade, c.BootTries = *downgrade, uint8(*tries)
	})
	if err != nil {
		return fwFail(stderr, "install: %v", err)
	}
	m, err := in.InstallFrom(context.Background(), pos[0])
	if err != nil {
		return fwFail(stderr, "install: REJECTED reason=%s: %v", update.Reason(err), err)
	}
	st, _ := in.Status()
	fmt.Fprintf(stdout, "installed %s (svn %d) to slot %v; it boots on trial (%d tries) at the next reboot; commit after checks\n",
		m.Version, m.SVN, st.Trial, st.TriesLeft)
	return 0
}

type fwStatusJSON struct {
	Board     string       `json:"board"`
	Running   string       `json:"running"`
	Primary   string       `json:"primary"`
	Trial     string       `json:"trial"`
	TriesLeft uint8        `json:"tries_left"`
	SVN       uint32       `json:"svn_counter"`
	Fallback  string       `json:"last_fallback"`
	Slots     []fwSlotJSON `json:"slots"`
	// Freshness is present when --root is given.
	Freshness *fwFreshJSON `json:"freshness,omitempty"`
}

type fwFreshJSON struct {
	Configured bool   `json:"configured"`
	Stale      bool   `json:"stale"`
	Reason     string `json:"reason,omitempty"`
	Behind     bool   `json:"update_available"`
	Latest     string `json:"latest,omitempty"`
	LatestSVN  uint32 `json:"latest_svn,omitempty"`
	Version    uint64 `json:"timestamp_version,omitempty"`
	Expires    string `json:"expires,omitempty"`
}

type fwSlotJSON struct {
	Slot     string `json:"slot"`
	State    string `json:"state"`
	Version  string `json:"version,omitempty"`
	SVN      uint32 `json:"svn"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256,omitempty"`
	Bootable bool   `json:"bootable"`
}

func fwStatus(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("status", stderr)
	var d fwDevice
	d.register(fs, true)
	asJSON := fs.Bool("json", false, "JSON output")
	if _, ok := fwParse(fs, args); !ok {
		return 2
	}
	b, err := d.open()
	if err != nil {
		return fwUsage(stderr, "status: %v", err)
	}
	st, err := b.Load()
	if err != nil {
		return fwFail(stderr, "status: %v", err)
	}
	s := fwStatusJSON{Board: d.board, Running: st.Booted.String(), Primary: st.Primary.String(), Trial: st.Trial.String(),
		TriesLeft: st.TriesLeft, SVN: st.SVN, Fallback: st.Fallback.String()}
	for _, sl := range []update.Slot{update.SlotA, update.SlotB} {
		i := st.Slots[sl]
		j := fwSlotJSON{Slot: sl.String(), State: i.State.String(), Version: i.Version, SVN: i.SVN, Size: i.Size,
			Bootable: st.Bootable(sl) || (sl == st.Trial && i.State == update.SlotPending)}
		if i.State != update.SlotEmpty {
			j.SHA256 = hex.EncodeToString(i.SHA256[:])
		}
		s.Slots = append(s.Slots, j)
	}
	if d.root != "" {
		f, err := fwFreshness(&d, b, stderr)
		if err != nil {
			return fwFail(stderr, "status: %v", err)
		}
		s.Freshness = f
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(&s); err != nil {
			return fwFail(stderr, "status: %v", err)
		}
		return 0
	}
	fmt.Fprintf(stdout, "board %s: running slot %s, primary %s, trial %s (%d tries left), security version counter %d\n",
		s.Board, s.Running, s.Primary, s.Trial, s.TriesLeft, s.SVN)
	for _, j := range s.Slots {
		fmt.Fprintf(stdout, "  slot %s: %-7s version %-12s svn %-4d size %-10d bootable %v\n", j.Slot, j.State, j.Version, j.SVN, j.Size, j.Bootable)
	}
	switch f := s.Freshness; {
	case f == nil:
	case !f.Configured:
		fmt.Fprintln(stdout, "freshness: not configured (the trust root delegates no timestamp role)")
	case f.Stale:
		fmt.Fprintf(stdout, "freshness: STALE (%s): updates may be withheld; run otgw fw refresh\n", f.Reason)
	default:
		fmt.Fprintf(stdout, "freshness: fresh until %s; latest release %s (svn %d)%s\n", f.Expires, f.Latest, f.LatestSVN,
			map[bool]string{true: ", update available", false: ""}[f.Behind])
	}
	return 0
}

// fwFreshness judges the stored timestamp statement. It needs the state
// lock (it may repair anchors); while another command holds it, freshness
// is reported as unknown rather than waiting.
func fwFreshness(d *fwDevice, b *fwBoard, stderr io.Writer) (*fwFreshJSON, error) {
	lock, err := update.LockState(b.Dir)
	if errors.Is(err, update.ErrBusy) {
		return &fwFreshJSON{Configured: true, Reason: "busy"}, nil
	}
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	tr, err := d.trust(b)
	if err != nil {
		return nil, err
	}
	in, err := d.installer(b, tr, stderr, nil)
	if err != nil {
		return nil, err
	}
	f, err := in.Freshness()
	if err != nil {
		return nil, err
	}
	j := &fwFreshJSON{Configured: f.Configured, Stale: f.Stale, Reason: f.Reason, Behind: f.Behind}
	if ts := f.Timestamp; ts != nil {
		j.Latest, j.LatestSVN, j.Version, j.Expires = ts.Latest, ts.SVN, ts.Version, ts.Expires.UTC().Format(time.RFC3339)
	}
	return j, nil
}

func fwTimestamp(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("timestamp", stderr)
	var keys fwMulti
	fs.Var(&keys, "key", "timestamp private key (repeat)")
	board := fs.String("board", "", "board profile the statement is for")
	latest := fs.String("latest", "", "newest release version for the board")
	svn := fs.Uint("svn", 0, "security version of that release")
	seq := fs.Uint64("version", 0, "statement sequence number, must grow (default: now as Unix seconds)")
	expires := fs.String("expires", fwTimestampExpiry, "expiry: duration from now or RFC 3339 (a statement always expires)")
	out := fs.String("out", "", "output file (serve it from any HTTP server)")
	if _, ok := fwParse(fs, args); !ok {
		return 2
	}
	if *out == "" || len(keys) == 0 || *board == "" || *latest == "" || *svn > 1<<32-1 || *expires == "never" {
		return fwUsage(stderr, "timestamp: usage: otgw fw timestamp --key K --board B --latest V --svn N [--version SEQ] [--expires 24h] --out F")
	}
	now := time.Now()
	exp, err := fwParseExpiry(*expires, now)
	if err != nil {
		return fwUsage(stderr, "timestamp: %v", err)
	}
	if *seq == 0 {
		*seq = uint64(now.Unix())
	}
	signers, err := fwReadSigners(keys)
	if err != nil {
		return fwFail(stderr, "timestamp: %v", err)
	}
	ts := &update.Timestamp{Version: *seq, Board: *board, Latest: *latest, SVN: uint32(*svn), Expires: exp}
	b, err := update.SignTimestamp(ts, signers...)
	if err != nil {
		return fwFail(stderr, "timestamp: %v", err)
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return fwFail(stderr, "timestamp: %v", err)
	}
	fmt.Fprintf(stdout, "timestamp v%d: board %s latest %s svn %d, expires %s -> %s\n", ts.Version, ts.Board, ts.Latest, ts.SVN, exp.Format(time.RFC3339), *out)
	return 0
}

func fwRefresh(args []string, stdout, stderr io.Writer) int {
	d, b, pos, rc := fwDeviceOnly("refresh", args, stderr, true)
	if rc != 0 {
		return rc
	}
	if len(pos) != 1 {
		return fwUsage(stderr, "refresh: usage: otgw fw refresh --root ROOT --board B --state DIR SOURCE (file or http(s) URL)")
	}
	lock, rc := fwLock("refresh", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	tr, err := d.trust(b)
	if err != nil {
		return fwFail(stderr, "refresh: %v", err)
	}
	in, err := d.installer(b, tr, stderr, nil)
	if err != nil {
		return fwFail(stderr, "refresh: %v", err)
	}
	ts, err := in.RefreshFrom(context.Background(), pos[0])
	if err != nil {
		return fwFail(stderr, "refresh: REJECTED reason=%s: %v", update.Reason(err), err)
	}
	fmt.Fprintf(stdout, "timestamp v%d accepted: latest %s (svn %d), fresh until %s\n", ts.Version, ts.Latest, ts.SVN, ts.Expires.Format(time.RFC3339))
	return 0
}

func fwDeviceOnly(name string, args []string, stderr io.Writer, withTrust bool) (*fwDevice, *fwBoard, []string, int) {
	fs := fwFlags(name, stderr)
	var d fwDevice
	d.register(fs, withTrust)
	pos, ok := fwParse(fs, args)
	if !ok {
		return nil, nil, nil, 2
	}
	b, err := d.open()
	if err != nil {
		return nil, nil, nil, fwUsage(stderr, "%s: %v", name, err)
	}
	return &d, b, pos, 0
}

func fwCommit(args []string, stdout, stderr io.Writer) int {
	d, b, _, rc := fwDeviceOnly("commit", args, stderr, false)
	if rc != 0 {
		return rc
	}
	lock, rc := fwLock("commit", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	in, err := d.installer(b, nil, stderr, nil)
	if err != nil {
		return fwFail(stderr, "commit: %v", err)
	}
	// The operator vouches for the slot (as RAUC's mark-good); the running
	// gateway commits with its own HealthCheck instead.
	operatorConfirmed := update.HealthFunc(func(context.Context) error { return nil })
	if err := in.Commit(context.Background(), operatorConfirmed); err != nil {
		return fwFail(stderr, "commit: %v", err)
	}
	st, _ := in.Status()
	fmt.Fprintf(stdout, "committed slot %v (%s); security version counter %d\n", st.Primary, st.Running().Version, st.SVN)
	return 0
}

func fwRollback(args []string, stdout, stderr io.Writer) int {
	d, b, _, rc := fwDeviceOnly("rollback", args, stderr, false)
	if rc != 0 {
		return rc
	}
	lock, rc := fwLock("rollback", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	in, err := d.installer(b, nil, stderr, nil)
	if err != nil {
		return fwFail(stderr, "rollback: %v", err)
	}
	if err := in.Rollback(); err != nil {
		return fwFail(stderr, "rollback: %v", err)
	}
	st, _ := in.Status()
	fmt.Fprintf(stdout, "slot %v (%s) boots next\n", st.Primary, st.Slots[st.Primary].Version)
	return 0
}

func fwRotate(args []string, stdout, stderr io.Writer) int {
	d, b, pos, rc := fwDeviceOnly("rotate", args, stderr, true)
	if rc != 0 {
		return rc
	}
	lock, rc := fwLock("rotate", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	if len(pos) != 1 {
		return fwUsage(stderr, "rotate: usage: otgw fw rotate --root ROOT --board B [--state DIR] NEW-ROOT")
	}
	tr, err := d.trust(b)
	if err != nil {
		return fwFail(stderr, "rotate: %v", err)
	}
	// At most update.MaxRootFileBytes+1 bytes are read, whatever the
	// offered file's size (FORMAT.md "Limits").
	nb, err := update.ReadRootFile(pos[0])
	if err != nil {
		return fwFail(stderr, "rotate: REJECTED reason=%s: %v", update.Reason(err), err)
	}
	in, err := d.installer(b, tr, stderr, nil)
	if err != nil {
		return fwFail(stderr, "rotate: %v", err)
	}
	r, err := in.RotateRoot(nb, d.trustDir(b))
	if err != nil {
		return fwFail(stderr, "rotate: REJECTED reason=%s: %v", update.Reason(err), err)
	}
	fmt.Fprintf(stdout, "trust root is now v%d (threshold %d of %d)\n", r.Version, r.Threshold, len(r.KeyIDs()))
	return 0
}

func fwProvision(args []string, stdout, stderr io.Writer) int {
	fs := fwFlags("provision", stderr)
	var d fwDevice
	d.register(fs, false)
	version := fs.String("version", "", "release version of the factory image")
	svn := fs.Uint("svn", 1, "security version of the factory image")
	pos, ok := fwParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 || *version == "" || *svn > 1<<32-1 {
		return fwUsage(stderr, "provision: usage: otgw fw provision --board B [--state DIR] --version V [--svn N] IMAGE")
	}
	b, err := d.open()
	if err != nil {
		return fwUsage(stderr, "provision: %v", err)
	}
	lock, rc := fwLock("provision", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	if _, err := b.Load(); err == nil {
		return fwFail(stderr, "provision: %s already holds a boot state; refusing to overwrite it", b.Dir)
	}
	img, err := os.ReadFile(pos[0])
	if err != nil {
		return fwFail(stderr, "provision: %v", err)
	}
	if err := update.Provision(b.Slots, b.Boot, img, *version, uint32(*svn)); err != nil {
		return fwFail(stderr, "provision: %v", err)
	}
	fmt.Fprintf(stdout, "provisioned %s: slot A = %s (svn %d, %d bytes)\n", b.Dir, *version, *svn, len(img))
	return 0
}

func fwReboot(args []string, stdout, stderr io.Writer) int {
	d, b, _, rc := fwDeviceOnly("reboot", args, stderr, false)
	if rc != 0 {
		return rc
	}
	lock, rc := fwLock("reboot", b.Dir, stderr)
	if rc != 0 {
		return rc
	}
	defer lock.Unlock()
	if b.sim == nil {
		return fwUsage(stderr, "reboot: board %s has a real bootloader: reboot the machine (fw reboot only plays the sim board's bootloader)", d.board)
	}
	s, err := b.sim.Reboot()
	if err != nil {
		return fwFail(stderr, "reboot: %v", err)
	}
	in, err := d.installer(b, nil, stderr, nil)
	if err != nil {
		return fwFail(stderr, "reboot: %v", err)
	}
	if _, err := in.Startup(); err != nil {
		return fwFail(stderr, "reboot: %v", err)
	}
	st, _ := in.Status()
	trial := ""
	if st.Trial == s {
		trial = fmt.Sprintf(" on trial, %d tries left", st.TriesLeft)
	}
	fmt.Fprintf(stdout, "booted slot %v (%s)%s\n", s, st.Slots[s].Version, trial)
	return 0
}

// fwRunUpdate is `otgw run`'s firmware supervision (daemon.UpdateConfig)
// for the board named boardName ("" detects it), its state directory
// (default: the profile's) and factory trust root: update events go to the
// gateway's event pipeline, the state lock is taken around start-up
// reporting and commit, and a trial slot is committed after period. On a
// failed trial Run returns daemon.ErrTrialFailed and `otgw run` exits 1:
// the image's init reboots, and the bootloader starts the previous slot.
func fwRunUpdate(boardName, state, root, arch string, period time.Duration, timestamp string, logger *slog.Logger) *daemon.UpdateConfig {
	d := &fwDevice{board: boardName, state: state, root: root, arch: arch}
	var dir string
	return &daemon.UpdateConfig{
		Period:          period,
		TimestampSource: timestamp,
		NewInstaller: func(onEvent update.EventFunc) (*update.Installer, error) {
			if d.board == "" {
				p, err := board.Detect("/")
				if err != nil {
					return nil, err
				}
				d.board = p.Name
			}
			b, err := d.open()
			if err != nil {
				return nil, err
			}
			dir = b.Dir
			tr, err := d.trust(b)
			if err != nil {
				return nil, err
			}
			return update.NewInstaller(update.Config{Trust: tr, Board: d.board, Arch: d.arch, Slots: b.Slots, Boot: b.Boot,
				StateDir: b.Dir, Events: onEvent, Logger: logger})
		},
		Lock: func() (func(), error) {
			l, err := update.LockStateAs(dir, "run")
			if err != nil {
				return nil, err
			}
			return l.Unlock, nil
		},
	}
}
