package update

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

const rootType = "otgw-root"

// Root is a trust root: the keys allowed to sign manifests and the next
// root, and how many of them must sign (Threshold of len(Keys)). A Root is
// immutable once parsed and safe for concurrent use.
type Root struct {
	Version   uint32
	Threshold int
	Expires   time.Time // zero: never
	keys      map[KeyID]ed25519.PublicKey
	ids       []KeyID // sorted
	// ts holds the timestamp role (TUF section 2.1.4): the keys and
	// threshold that sign timestamp statements, and nothing else. nil
	// when the root delegates no timestamp role.
	ts *Root
}

type rootJSON struct {
	Type      string    `json:"type"`
	Version   uint32    `json:"version"`
	Threshold int       `json:"threshold"`
	Keys      []keyJSON `json:"keys"`
	Timestamp *roleJSON `json:"timestamp,omitempty"`
	Expires   string    `json:"expires,omitempty"`
}

// roleJSON is a delegated role in a root: its own keys and threshold.
type roleJSON struct {
	Threshold int       `json:"threshold"`
	Keys      []keyJSON `json:"keys"`
}

type keyJSON struct {
	KeyID  string `json:"keyid"`
	Alg    string `json:"alg"`
	Public string `json:"public"`
}

// NewRoot builds a root from public keys. Duplicate keys are ErrMalformed.
func NewRoot(version uint32, threshold int, expires time.Time, pubs ...ed25519.PublicKey) (*Root, error) {
	r := &Root{Version: version, Threshold: threshold, Expires: expires.UTC().Truncate(time.Second), keys: map[KeyID]ed25519.PublicKey{}}
	for _, p := range pubs {
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: public key of %d bytes", ErrMalformed, len(p))
		}
		id := KeyIDOf(p)
		if _, dup := r.keys[id]; dup {
			return nil, fmt.Errorf("%w: key %s listed twice", ErrMalformed, id.Short())
		}
		r.keys[id] = append(ed25519.PublicKey(nil), p...)
		r.ids = append(r.ids, id)
	}
	sort.Slice(r.ids, func(i, j int) bool { return r.ids[i] < r.ids[j] })
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Root) check() error {
	switch {
	case r.Version < 1:
		return fmt.Errorf("%w: root version must be >= 1", ErrMalformed)
	case len(r.ids) == 0 || len(r.ids) > MaxKeys:
		return fmt.Errorf("%w: root has %d keys, want 1..%d", ErrMalformed, len(r.ids), MaxKeys)
	case r.Threshold < 1 || r.Threshold > len(r.ids):
		return fmt.Errorf("%w: threshold %d of %d keys", ErrMalformed, r.Threshold, len(r.ids))
	}
	return nil
}

// KeyIDs returns the root's key ids in ascending order.
func (r *Root) KeyIDs() []KeyID { return append([]KeyID(nil), r.ids...) }

// HasKey reports whether id is one of the root's keys.
func (r *Root) HasKey(id KeyID) bool { _, ok := r.keys[id]; return ok }

// WithTimestampKeys returns a copy of r that delegates the timestamp role
// (signing timestamp statements, see Timestamp) to pubs with the given
// threshold. Timestamp keys sign nothing else: a manifest or root signed by
// them does not verify, so the online key that signs every day cannot sign
// firmware.
func (r *Root) WithTimestampKeys(threshold int, pubs ...ed25519.PublicKey) (*Root, error) {
	ts, err := NewRoot(r.Version, threshold, time.Time{}, pubs...)
	if err != nil {
		return nil, fmt.Errorf("timestamp role: %w", err)
	}
	c := *r
	c.ts = ts
	return &c, nil
}

// TimestampKeyIDs returns the timestamp role's key ids and threshold, or
// nil and 0 when the root delegates no timestamp role.
func (r *Root) TimestampKeyIDs() ([]KeyID, int) {
	if r.ts == nil {
		return nil, 0
	}
	return r.ts.KeyIDs(), r.ts.Threshold
}

func (r *Root) keysJSON() []keyJSON {
	var out []keyJSON
	for _, id := range r.ids {
		out = append(out, keyJSON{KeyID: string(id), Alg: "ed25519", Public: base64.StdEncoding.EncodeToString(r.keys[id])})
	}
	return out
}

func (r *Root) canonical() []byte {
	rj := rootJSON{Type: rootType, Version: r.Version, Threshold: r.Threshold, Expires: formatTime(r.Expires), Keys: r.keysJSON()}
	if r.ts != nil {
		rj.Timestamp = &roleJSON{Threshold: r.ts.Threshold, Keys: r.ts.keysJSON()}
	}
	b, err := json.Marshal(&rj)
	if err != nil {
		panic(err)
	}
	return b
}

// SignRoot returns the root file: the canonical root signed by every signer.
// A rotation (version > 1) must be signed by a threshold of the previous
// root's keys and a threshold of its own keys; pass both sets.
func SignRoot(r *Root, signers ...*Signer) []byte {
	signed := r.canonical()
	e := envelope{Signed: signed}
	for _, s := range signers {
		e.Signatures = append(e.Signatures, s.sign(domainRoot, signed))
	}
	return e.marshal()
}

// ParseRoot decodes a root file without checking any signature (see
// NewTrust and Trust.Rotate for verification). One trailing newline is
// allowed.
func ParseRoot(b []byte) (*Root, error) {
	r, _, err := parseRootFile(b)
	return r, err
}

func parseRootFile(b []byte) (*Root, envelope, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	e, err := parseEnvelope(b)
	if err != nil {
		return nil, e, err
	}
	var rj rootJSON
	if err := strictUnmarshal(e.Signed, &rj); err != nil {
		return nil, e, err
	}
	if rj.Type != rootType {
		return nil, e, fmt.Errorf("%w: root type %q, want %q", ErrMalformed, rj.Type, rootType)
	}
	if len(rj.Keys) > MaxKeys {
		return nil, e, fmt.Errorf("%w: root has %d keys, at most %d", ErrTooLarge, len(rj.Keys), MaxKeys)
	}
	exp, err := parseTime(rj.Expires)
	if err != nil {
		return nil, e, err
	}
	r, err := parseRoleKeys(rj.Version, rj.Threshold, rj.Keys)
	if err != nil {
		return nil, e, err
	}
	r.Expires = exp
	if rj.Timestamp != nil {
		if len(rj.Timestamp.Keys) > MaxKeys {
			return nil, e, fmt.Errorf("%w: timestamp role has %d keys, at most %d", ErrTooLarge, len(rj.Timestamp.Keys), MaxKeys)
		}
		if r.ts, err = parseRoleKeys(rj.Version, rj.Timestamp.Threshold, rj.Timestamp.Keys); err != nil {
			return nil, e, fmt.Errorf("timestamp role: %w", err)
		}
	}
	if !bytes.Equal(r.canonical(), e.Signed) {
		return nil, e, fmt.Errorf("%w: root is not in canonical form", ErrMalformed)
	}
	return r, e, nil
}

// parseRoleKeys builds the key set of a root or of a delegated role.
func parseRoleKeys(version uint32, threshold int, keys []keyJSON) (*Root, error) {
	r := &Root{Version: version, Threshold: threshold, keys: map[KeyID]ed25519.PublicKey{}}
	for i, k := range keys {
		if k.Alg != "ed25519" {
			return nil, fmt.Errorf("%w: key %d algorithm %q (only ed25519)", ErrWeakAlgorithm, i, k.Alg)
		}
		pub, err := base64.StdEncoding.Strict().DecodeString(k.Public)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key %d: not a base64 ed25519 public key", ErrMalformed, i)
		}
		id := KeyIDOf(pub)
		if string(id) != k.KeyID {
			return nil, fmt.Errorf("%w: key %d: key id does not match the key", ErrMalformed, i)
		}
		if i > 0 && k.KeyID <= keys[i-1].KeyID {
			return nil, fmt.Errorf("%w: keys not sorted by key id or listed twice", ErrMalformed)
		}
		r.keys[id] = pub
		r.ids = append(r.ids, id)
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// verify checks sigs over signed against the root's keys and threshold.
// Each key counts once however often it signs. revoked names keys that an
// earlier root trusted, to tell a revoked key from an unknown one.
func (r *Root) verify(domain string, signed []byte, sigs []Signature, revoked map[KeyID]bool) error {
	msg := signingInput(domain, signed)
	seen := make(map[KeyID]bool, len(sigs))
	var valid, bad, unknown, revokedN, dup int
	for _, s := range sigs {
		pub, ok := r.keys[s.KeyID]
		switch {
		case !ok && revoked[s.KeyID]:
			revokedN++
		case !ok:
			unknown++
		case seen[s.KeyID]:
			dup++
		case len(s.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, s.Sig):
			bad++
		default:
			seen[s.KeyID] = true
			valid++
		}
	}
	if valid >= r.Threshold {
		return nil
	}
	detail := fmt.Sprintf("%d of %d required valid signatures (root v%d; %d bad, %d untrusted, %d revoked, %d repeated)",
		valid, r.Threshold, r.Version, bad, unknown, revokedN, dup)
	switch {
	case bad > 0:
		return fmt.Errorf("%w: %w: %s", ErrThreshold, ErrSignature, detail)
	case revokedN > 0:
		return fmt.Errorf("%w: %w: %s", ErrThreshold, ErrRevokedKey, detail)
	case unknown > 0:
		return fmt.Errorf("%w: %w: %s", ErrThreshold, ErrUnknownKey, detail)
	}
	return fmt.Errorf("%w: %s", ErrThreshold, detail)
}

// Trust is the device's current trust root plus what it learnt from the
// rotation chain (which keys were revoked). Methods are not safe for
// concurrent use with Rotate; the Installer serialises them.
type Trust struct {
	root    *Root
	revoked map[KeyID]bool
	// anchor is the highest root version this device is known to have
	// trusted (Installer sets it from its two anchors, see BOOT.md
	// "Anchors"). While root.Version < anchor, nothing verifies: a
	// rotated root file was removed, and the device must not fall back
	// to an older root and its revoked keys.
	anchor uint32
	now    func() time.Time // time.Now when nil
}

// SetClock sets the clock used for root expiry in Rotate (time.Now by
// default). The Installer sets it to Config.Now.
func (t *Trust) SetClock(now func() time.Time) { t.now = now }

func (t *Trust) clock() time.Time {
	if t.now == nil {
		return time.Now()
	}
	return t.now()
}

// Anchor returns the anchored root version (0 when none was set).
func (t *Trust) Anchor() uint32 { return t.anchor }

// SetAnchor records the highest root version the device has trusted.
// A lower anchor than the current one is ignored: anchors only grow.
func (t *Trust) SetAnchor(v uint32) {
	if v > t.anchor {
		t.anchor = v
	}
}

// usable reports ErrRollback when the loaded chain stops below the anchor.
func (t *Trust) usable() error {
	if t.root.Version < t.anchor {
		return fmt.Errorf("%w: trust root v%d is below the anchored v%d: %s is missing or was removed; "+
			"restore it with `otgw fw rotate` (nothing verifies until then)", ErrRollback, t.root.Version, t.anchor, rootFileName(t.root.Version+1))
	}
	return nil
}

// NewTrust starts from the factory-provisioned root file. The root must be
// signed by its own threshold, which catches a corrupted or hand-edited
// file.
func NewTrust(rootFile []byte) (*Trust, error) {
	r, e, err := parseRootFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("update: trust root: %w", err)
	}
	if err := r.verify(domainRoot, e.Signed, e.Signatures, nil); err != nil {
		return nil, fmt.Errorf("update: trust root v%d not signed by its own keys: %w", r.Version, err)
	}
	return &Trust{root: r, revoked: map[KeyID]bool{}}, nil
}

// Root returns the current root.
func (t *Trust) Root() *Root { return t.root }

// Revoked reports whether id was trusted by an earlier root and dropped by
// a rotation.
func (t *Trust) Revoked(id KeyID) bool { return t.revoked[id] }

// Rotate verifies a new root file and makes it current. As in TUF
// (specification section 5.3), the new version must be exactly current+1
// (no fast-forward), and the file must carry a threshold of signatures from
// the current root and a threshold from the new root's own keys. A root
// that has already expired is refused (ErrExpired): rotating to it would
// leave a device that verifies nothing, or, if its clock is wrong, trust
// keys the publisher has retired. Keys of the old root that the new one
// drops are remembered as revoked.
func (t *Trust) Rotate(rootFile []byte) (*Root, error) {
	return t.rotate(rootFile, true)
}

// rotate is Rotate; LoadTrust replays stored rotations without the expiry
// check, since only the newest root's expiry matters (TUF 5.3.11), and an
// intermediate root may well have expired since it was applied.
func (t *Trust) rotate(rootFile []byte, checkExpiry bool) (*Root, error) {
	r, e, err := parseRootFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("update: rotate root: %w", err)
	}
	if r.Version <= t.root.Version {
		return nil, fmt.Errorf("update: rotate root: %w: version %d is not after %d", ErrRollback, r.Version, t.root.Version)
	}
	if r.Version != t.root.Version+1 {
		return nil, fmt.Errorf("update: rotate root: %w: version %d skips %d (apply roots in order)", ErrMalformed, r.Version, t.root.Version+1)
	}
	if err := t.root.verify(domainRoot, e.Signed, e.Signatures, t.revoked); err != nil {
		return nil, fmt.Errorf("update: rotate root v%d: old root's threshold: %w", r.Version, err)
	}
	if err := r.verify(domainRoot, e.Signed, e.Signatures, nil); err != nil {
		return nil, fmt.Errorf("update: rotate root v%d: new root's threshold: %w", r.Version, err)
	}
	if now := t.clock(); checkExpiry && !r.Expires.IsZero() && !now.Before(r.Expires) {
		return nil, fmt.Errorf("update: rotate root v%d: %w: it expired at %s (now %s)", r.Version, ErrExpired, formatTime(r.Expires), formatTime(now))
	}
	for _, id := range t.root.ids {
		if !r.HasKey(id) {
			t.revoked[id] = true
		}
	}
	for _, id := range r.ids {
		delete(t.revoked, id) // a key may be re-admitted by a later root
	}
	t.root = r
	return r, nil
}

// rootFileName names a rotated root in a trust directory.
func rootFileName(version uint32) string { return fmt.Sprintf("root.%d.json", version) }

// LoadTrust builds the trust from the factory root file and then applies,
// in order, every rotation stored in dir as root.N.json (N = current+1, ...).
// Each rotation is verified again on every load, so the directory holds no
// trusted state of its own. A missing dir means no rotations.
func LoadTrust(factoryRoot []byte, dir string) (*Trust, error) {
	t, err := NewTrust(factoryRoot)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return t, nil
	}
	for i := 0; i < 1000; i++ {
		b, err := ReadRootFile(filepath.Join(dir, rootFileName(t.root.Version+1)))
		if errors.Is(err, os.ErrNotExist) {
			return t, nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := t.rotate(b, false); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// RotateAndSave verifies a new root (Rotate) and stores it in dir, where
// LoadTrust finds it. The file is written with a temporary name, synced
// and renamed.
func (t *Trust) RotateAndSave(rootFile []byte, dir string) (*Root, error) {
	probe := &Trust{root: t.root, revoked: map[KeyID]bool{}, anchor: t.anchor, now: t.now}
	for k, v := range t.revoked {
		probe.revoked[k] = v
	}
	r, err := probe.Rotate(rootFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, rootFileName(r.Version)), bytes.TrimSuffix(rootFile, []byte("\n"))); err != nil {
		return nil, err
	}
	*t = *probe
	return r, nil
}

// MaxRootFileBytes caps a root file: the envelope (MaxHeaderBytes) and one
// trailing newline. ReadRootFile reads at most one byte more than this.
const MaxRootFileBytes = MaxHeaderBytes + 1

// ReadRootFile reads a root file (or any signed metadata file) of at most
// MaxRootFileBytes from path. It reads at most MaxRootFileBytes+1 bytes
// whatever the file's size, so a huge or endless file (a FIFO, /dev/zero)
// costs no more than that; a longer file is ErrTooLarge.
func ReadRootFile(path string) ([]byte, error) {
	return readCapped(path, MaxRootFileBytes+1)
}

// readCapped reads a whole file of at most max-1 bytes, reading at most max
// bytes.
func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("update: %s: %w", path, err)
	}
	if n >= max {
		return nil, fmt.Errorf("update: %s: %w: over %d bytes", path, ErrTooLarge, max-1)
	}
	return buf.Bytes(), nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
