package update

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// bundleMagic starts every bundle (FORMAT.md "Bundle layout").
const bundleMagic = "OTGWFW\x00\x01"

// bundlePrefixLen is the magic plus the 4-byte header length.
const bundlePrefixLen = len(bundleMagic) + 4

// HashPayload reads r to the end and returns its length and SHA-256, for
// filling Manifest.Size and Manifest.SHA256 before signing.
func HashPayload(r io.Reader) (size int64, sum [32]byte, err error) {
	h := sha256.New()
	size, err = io.Copy(h, r)
	if err != nil {
		return 0, sum, fmt.Errorf("update: hash payload: %w", err)
	}
	copy(sum[:], h.Sum(nil))
	return size, sum, nil
}

// SignManifest returns the bundle header: the canonical manifest in an
// envelope with one signature per signer.
func SignManifest(m *Manifest, signers ...*Signer) ([]byte, error) {
	signed, err := m.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	e := envelope{Signed: signed}
	for _, s := range signers {
		e.Signatures = append(e.Signatures, s.sign(domainManifest, signed))
	}
	b := e.marshal()
	if len(b) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrTooLarge, len(b))
	}
	return b, nil
}

// WriteBundle writes a bundle: magic, header length, the header from
// SignManifest, and exactly size bytes copied from payload.
func WriteBundle(w io.Writer, header []byte, size int64, payload io.Reader) error {
	if len(header) == 0 || len(header) > MaxHeaderBytes {
		return fmt.Errorf("%w: header of %d bytes", ErrTooLarge, len(header))
	}
	var pre [bundlePrefixLen]byte
	copy(pre[:], bundleMagic)
	binary.BigEndian.PutUint32(pre[len(bundleMagic):], uint32(len(header)))
	if _, err := w.Write(pre[:]); err != nil {
		return fmt.Errorf("update: write bundle: %w", err)
	}
	if _, err := w.Write(header); err != nil {
		return fmt.Errorf("update: write bundle: %w", err)
	}
	n, err := io.Copy(w, io.LimitReader(payload, size))
	if err != nil {
		return fmt.Errorf("update: write bundle: %w", err)
	}
	if n != size {
		return fmt.Errorf("update: write bundle: %w: payload has %d of %d bytes", ErrTruncated, n, size)
	}
	return nil
}

// Policy is what the device requires of a bundle besides valid signatures.
type Policy struct {
	Board string // this board's profile name; must equal Manifest.Board
	Arch  string // this CPU architecture; must equal Manifest.Arch
	// MinSVN is the device's security version counter: a manifest with a
	// lower SVN is a rollback.
	MinSVN uint32
	// RunningVersion is the release version of the running slot ("" when
	// unknown). A lower Manifest.Version is refused unless AllowDowngrade.
	RunningVersion string
	// AllowDowngrade permits a lower release version with SVN >= MinSVN
	// (a functional downgrade that is not a security rollback).
	AllowDowngrade bool
	// MaxPayloadBytes caps Manifest.Size (DefaultMaxPayloadBytes when 0),
	// typically the slot size.
	MaxPayloadBytes int64
	// Now returns the time used for expiry (time.Now when nil).
	Now func() time.Time
}

type verifierState uint8

const (
	stateNew verifierState = iota
	stateHeader
	stateDone
	stateFailed
)

// String names the state.
func (s verifierState) String() string {
	switch s {
	case stateNew:
		return "new"
	case stateHeader:
		return "header verified"
	case stateDone:
		return "payload verified"
	case stateFailed:
		return "failed"
	}
	return "unknown"
}

// Verifier checks one bundle as a state machine: ReadHeader, then Payload.
// A step called out of order, or any step after a failure, returns
// ErrOrder. A Verifier is for one bundle and one goroutine.
type Verifier struct {
	trust *Trust
	p     Policy
	state verifierState
	m     *Manifest
	err   error
	buf   []byte
}

// NewVerifier returns a Verifier in its initial state.
func NewVerifier(t *Trust, p Policy) *Verifier {
	if p.MaxPayloadBytes <= 0 {
		p.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	return &Verifier{trust: t, p: p}
}

// Manifest returns the verified manifest, or nil before ReadHeader
// succeeded.
func (v *Verifier) Manifest() *Manifest {
	if v.state == stateHeader || v.state == stateDone {
		return v.m
	}
	return nil
}

// Done reports whether the whole bundle verified.
func (v *Verifier) Done() bool { return v.state == stateDone }

func (v *Verifier) step(want verifierState) error {
	if v.state == stateFailed {
		return fmt.Errorf("%w: an earlier step failed: %w", ErrOrder, v.err)
	}
	if v.state != want {
		return fmt.Errorf("%w: verifier is in state %q, want %q", ErrOrder, v.state, want)
	}
	return nil
}

func (v *Verifier) fail(err error) error {
	v.state, v.err = stateFailed, err
	return err
}

// ReadHeader reads the bundle prefix and the signed manifest from r and
// verifies it: size caps, canonical form, signatures and threshold against
// the trust root, root and manifest expiry, board, architecture, SVN and
// version rollback, and the payload cap. It reads no payload byte, so the
// caller writes nothing before it returns nil. When the signatures verified
// but a later check failed, the (authentic) manifest is returned with the
// error, for reporting.
func (v *Verifier) ReadHeader(r io.Reader) (*Manifest, error) {
	if err := v.step(stateNew); err != nil {
		return nil, err
	}
	var pre [bundlePrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, v.fail(readErr("bundle prefix", err))
	}
	if string(pre[:len(bundleMagic)]) != bundleMagic {
		return nil, v.fail(fmt.Errorf("%w: not an otgw bundle (bad magic)", ErrMalformed))
	}
	n := binary.BigEndian.Uint32(pre[len(bundleMagic):])
	if n == 0 {
		return nil, v.fail(fmt.Errorf("%w: empty header", ErrMalformed))
	}
	if n > MaxHeaderBytes {
		return nil, v.fail(fmt.Errorf("%w: header of %d bytes exceeds %d", ErrTooLarge, n, MaxHeaderBytes))
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, v.fail(readErr("bundle header", err))
	}
	m, err := v.verifyHeader(hdr)
	if err != nil {
		return m, v.fail(err)
	}
	v.m, v.state = m, stateHeader
	return m, nil
}

func (v *Verifier) verifyHeader(hdr []byte) (*Manifest, error) {
	e, err := parseEnvelope(hdr)
	if err != nil {
		return nil, err
	}
	if err := v.trust.usable(); err != nil {
		return nil, err
	}
	root := v.trust.root
	// Signatures are checked on the exact signed bytes before the manifest
	// is interpreted (TUF specification section 5.4).
	if err := root.verify(domainManifest, e.Signed, e.Signatures, v.trust.revoked); err != nil {
		return nil, err
	}
	m, err := ParseManifest(e.Signed)
	if err != nil {
		return nil, err
	}
	now := v.p.Now()
	if !root.Expires.IsZero() && !now.Before(root.Expires) {
		return m, fmt.Errorf("%w: trust root v%d expired at %s", ErrExpired, root.Version, formatTime(root.Expires))
	}
	if !m.Expires.IsZero() && !now.Before(m.Expires) {
		return m, fmt.Errorf("%w: manifest %s expired at %s", ErrExpired, m.Version, formatTime(m.Expires))
	}
	if m.Board != v.p.Board {
		return m, fmt.Errorf("%w: bundle board %q, this board %q", ErrWrongBoard, m.Board, v.p.Board)
	}
	if m.Arch != v.p.Arch {
		return m, fmt.Errorf("%w: bundle arch %q, this device %q", ErrWrongArch, m.Arch, v.p.Arch)
	}
	if m.SVN < v.p.MinSVN {
		return m, fmt.Errorf("%w: security version %d is below the device counter %d", ErrRollback, m.SVN, v.p.MinSVN)
	}
	if v.p.RunningVersion != "" && !v.p.AllowDowngrade && CompareVersions(m.Version, v.p.RunningVersion) < 0 {
		return m, fmt.Errorf("%w: version %s is older than the running %s", ErrRollback, m.Version, v.p.RunningVersion)
	}
	if m.Size > v.p.MaxPayloadBytes {
		return m, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, m.Size, v.p.MaxPayloadBytes)
	}
	return m, nil
}

// Payload copies exactly Manifest.Size bytes from r to w, hashing the same
// bytes it writes, then requires end of input (more data is ErrTooLarge,
// less is ErrTruncated) and a matching SHA-256 (else ErrHashMismatch). On
// error, w has received unverified bytes: the caller must not mark them
// bootable. It must follow a successful ReadHeader on the same stream.
func (v *Verifier) Payload(r io.Reader, w io.Writer) error {
	if err := v.step(stateHeader); err != nil {
		return err
	}
	if v.buf == nil {
		v.buf = make([]byte, 64<<10)
	}
	h := sha256.New()
	size := v.m.Size
	var n int64
	for n < size {
		want := int64(len(v.buf))
		if size-n < want {
			want = size - n
		}
		k, err := r.Read(v.buf[:want])
		if k > 0 {
			h.Write(v.buf[:k])
			if _, werr := w.Write(v.buf[:k]); werr != nil {
				return v.fail(fmt.Errorf("update: write payload at byte %d: %w", n, werr))
			}
			n += int64(k)
		}
		if err == io.EOF && n < size {
			return v.fail(fmt.Errorf("%w: payload ended after %d of %d bytes", ErrTruncated, n, size))
		}
		if err != nil && err != io.EOF {
			return v.fail(readErr(fmt.Sprintf("payload at byte %d", n), err))
		}
	}
	var one [1]byte
	for i := 0; i < 100; i++ { // a reader may return (0, nil) a few times
		k, err := r.Read(one[:])
		if k > 0 {
			return v.fail(fmt.Errorf("%w: data beyond the signed payload size %d", ErrTooLarge, size))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return v.fail(readErr("end of bundle", err))
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if sum != v.m.SHA256 {
		return v.fail(fmt.Errorf("%w: payload sha256 %x, manifest %x", ErrHashMismatch, sum[:8], v.m.SHA256[:8]))
	}
	v.state = stateDone
	return nil
}

// readErr classifies a read error: early EOF is truncation, our timeouts
// stay ErrTimeout, anything else is a failed download.
func readErr(what string, err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s", ErrTruncated, what)
	case errors.Is(err, ErrTimeout), errors.Is(err, ErrTooLarge), errors.Is(err, ErrDownload):
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrDownload, what, err)
}

// ReadUnverifiedManifest reads a bundle's header from r and decodes its
// manifest WITHOUT checking any signature, so a tool can show what a bundle
// claims (and pick board and arch to verify against). Never act on it.
func ReadUnverifiedManifest(r io.Reader) (*Manifest, error) {
	var pre [bundlePrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, readErr("bundle prefix", err)
	}
	if string(pre[:len(bundleMagic)]) != bundleMagic {
		return nil, fmt.Errorf("%w: not an otgw bundle (bad magic)", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(pre[len(bundleMagic):])
	if n == 0 || n > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrTooLarge, n)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, readErr("bundle header", err)
	}
	e, err := parseEnvelope(hdr)
	if err != nil {
		return nil, err
	}
	return ParseManifest(e.Signed)
}
