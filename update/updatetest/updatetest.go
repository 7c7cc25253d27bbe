// Package updatetest builds real signed firmware bundles, trust roots and
// file-backed sim boards in a test's t.TempDir(), records update events, and
// serves bundles over HTTP on 127.0.0.1 in honest or hostile ways (truncate,
// trickle, stall, endless data). It is for tests only.
//
// Hook for the gateway's traffic-during-update test (U23): InstallDuring
// runs an install from a source while a caller's traffic function (for
// example Modbus polls through the inline bridge in a network namespace)
// runs concurrently, and returns both outcomes.
package updatetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/update"
)

// Defaults of an Env.
const (
	Board = "sim"
	Arch  = "amd64"
)

// Epoch is the fixed "now" of an Env's clock, so expiry tests are exact.
var Epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Options shape an Env. Zero values take defaults.
type Options struct {
	Keys           int // keys in root v1 (default 3)
	Threshold      int // default 2
	FactoryVersion string
	FactorySVN     uint32
	ImageBytes     int // size of generated images (default 64 KiB)
	// TimestampKeys, when > 0, delegates root v1's timestamp role to that
	// many fresh keys (threshold 1), kept in Env.TimestampKeys.
	TimestampKeys int
	Config        func(*update.Config)
}

// Env is a provisioned sim device with a trust root, signing keys and an
// Installer whose events are recorded.
type Env struct {
	T    testing.TB
	Dir  string // state directory of the sim board
	Keys []*update.Signer
	// TimestampKeys sign timestamp statements (Options.TimestampKeys).
	TimestampKeys []*update.Signer
	RootFile      []byte // root v1, signed by all Keys
	Trust         *update.Trust
	Board         *update.SimBoard
	Events        *Recorder
	Installer     *update.Installer
	Config        update.Config
	Factory       []byte // image in slot A
	Now           time.Time
	opts          Options
}

// New provisions a sim board with a factory image (version 1.0.0, SVN 1
// unless set) in slot A, a root v1 of opts.Keys keys with opts.Threshold,
// and an Installer.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.Keys == 0 {
		opts.Keys = 3
	}
	if opts.Threshold == 0 {
		opts.Threshold = 2
	}
	if opts.FactoryVersion == "" {
		opts.FactoryVersion = "1.0.0"
	}
	if opts.FactorySVN == 0 {
		opts.FactorySVN = 1
	}
	if opts.ImageBytes == 0 {
		opts.ImageBytes = 64 << 10
	}
	e := &Env{T: t, Dir: filepath.Join(t.TempDir(), "state"), Now: Epoch, opts: opts, Events: &Recorder{}}
	e.Keys = Keys(t, opts.Keys)
	e.TimestampKeys = Keys(t, opts.TimestampKeys)
	e.RootFile = RootFileWith(t, RootSpec{Version: 1, Threshold: opts.Threshold, Keys: e.Keys, TimestampKeys: e.TimestampKeys}, e.Keys...)
	var err error
	if e.Trust, err = update.NewTrust(e.RootFile); err != nil {
		t.Fatal(err)
	}
	if e.Board, err = update.NewSimBoard(e.Dir); err != nil {
		t.Fatal(err)
	}
	e.Board.SkipSync = true
	e.Factory = Image(opts.FactoryVersion, opts.ImageBytes)
	if err := e.Board.Provision(e.Factory, opts.FactoryVersion, opts.FactorySVN); err != nil {
		t.Fatal(err)
	}
	e.Config = update.Config{
		Trust: e.Trust, Board: Board, Arch: Arch, Slots: e.Board, Boot: e.Board, StateDir: e.Dir,
		Events: e.Events.Emit, Now: func() time.Time { return e.Now }, Logger: slog.New(slog.DiscardHandler),
		Timeout: 10 * time.Second, IdleTimeout: 2 * time.Second, HealthTimeout: 5 * time.Second,
	}
	if opts.Config != nil {
		opts.Config(&e.Config)
	}
	e.Reopen()
	return e
}

// Reopen builds a fresh Installer from e.Config (after a simulated reboot,
// or after changing e.Config).
func (e *Env) Reopen() {
	e.T.Helper()
	in, err := update.NewInstaller(e.Config)
	if err != nil {
		e.T.Fatal(err)
	}
	e.Installer = in
}

// Keys generates n signing keys.
func Keys(t testing.TB, n int) []*update.Signer {
	t.Helper()
	out := make([]*update.Signer, n)
	for i := range out {
		s, err := update.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

// RootFile returns a root file of the given version listing keys, signed by
// signers.
func RootFile(t testing.TB, version uint32, threshold int, keys []*update.Signer, signers ...*update.Signer) []byte {
	t.Helper()
	r, err := update.NewRoot(version, threshold, time.Time{}, Pubs(keys)...)
	if err != nil {
		t.Fatal(err)
	}
	return update.SignRoot(r, signers...)
}

// RootSpec describes a root for RootFileWith.
type RootSpec struct {
	Version       uint32
	Threshold     int
	Keys          []*update.Signer
	TimestampKeys []*update.Signer // timestamp role, threshold 1; none when empty
	Expires       time.Time
}

// RootFileWith returns a root file built from spec, signed by signers.
func RootFileWith(t testing.TB, spec RootSpec, signers ...*update.Signer) []byte {
	t.Helper()
	r, err := update.NewRoot(spec.Version, spec.Threshold, spec.Expires, Pubs(spec.Keys)...)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.TimestampKeys) > 0 {
		if r, err = r.WithTimestampKeys(1, Pubs(spec.TimestampKeys)...); err != nil {
			t.Fatal(err)
		}
	}
	return update.SignRoot(r, signers...)
}

// Timestamp signs ts with the Env's timestamp keys; Board defaults to the
// Env's board and Expires to Epoch+24h.
func (e *Env) Timestamp(ts update.Timestamp) []byte {
	e.T.Helper()
	if ts.Board == "" {
		ts.Board = Board
	}
	if ts.Expires.IsZero() {
		ts.Expires = Epoch.Add(24 * time.Hour)
	}
	b, err := update.SignTimestamp(&ts, e.TimestampKeys...)
	if err != nil {
		e.T.Fatal(err)
	}
	return b
}

// Pubs returns the public keys of keys.
func Pubs(keys []*update.Signer) []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, len(keys))
	for i, k := range keys {
		out[i] = k.Public()
	}
	return out
}

// Image returns a deterministic pseudo firmware image of n bytes whose
// content depends on version.
func Image(version string, n int) []byte {
	b := make([]byte, 0, n+32)
	b = append(b, "OTGW-IMAGE "+version+"\n"...)
	seed := sha256.Sum256([]byte(version))
	var ctr [8]byte
	for i := uint64(0); len(b) < n; i++ {
		binary.BigEndian.PutUint64(ctr[:], i)
		h := sha256.Sum256(append(seed[:], ctr[:]...))
		b = append(b, h[:]...)
	}
	return b[:n]
}

// Spec describes a bundle to build. Zero fields take the Env's defaults:
// board "sim", arch "amd64", a generated payload, signed by the first
// Threshold keys, created at Epoch-1h.
type Spec struct {
	Version string
	SVN     uint32
	Board   string
	Arch    string
	Payload []byte
	Created time.Time
	Expires time.Time
	Signers []*update.Signer
}

// Manifest returns the manifest spec describes (after defaults).
func (e *Env) Manifest(s *Spec) *update.Manifest {
	e.fill(s)
	size, sum, err := update.HashPayload(bytes.NewReader(s.Payload))
	if err != nil {
		e.T.Fatal(err)
	}
	return &update.Manifest{Version: s.Version, SVN: s.SVN, Board: s.Board, Arch: s.Arch, Size: size, SHA256: sum, Created: s.Created, Expires: s.Expires}
}

func (e *Env) fill(s *Spec) {
	if s.Version == "" {
		s.Version = "1.1.0"
	}
	if s.SVN == 0 {
		s.SVN = e.opts.FactorySVN
	}
	if s.Board == "" {
		s.Board = Board
	}
	if s.Arch == "" {
		s.Arch = Arch
	}
	if s.Payload == nil {
		s.Payload = Image(s.Version, e.opts.ImageBytes)
	}
	if s.Created.IsZero() {
		s.Created = Epoch.Add(-time.Hour)
	}
	if s.Signers == nil {
		s.Signers = e.Keys[:e.opts.Threshold]
	}
}

// Bundle builds and signs a bundle.
func (e *Env) Bundle(s Spec) []byte {
	e.T.Helper()
	m := e.Manifest(&s)
	hdr, err := update.SignManifest(m, s.Signers...)
	if err != nil {
		e.T.Fatal(err)
	}
	var buf bytes.Buffer
	if err := update.WriteBundle(&buf, hdr, m.Size, bytes.NewReader(s.Payload)); err != nil {
		e.T.Fatal(err)
	}
	return buf.Bytes()
}

// HeaderLen returns the offset of the first payload byte in bundle b.
func HeaderLen(b []byte) int { return 12 + int(binary.BigEndian.Uint32(b[8:12])) }

// WriteFile writes b to name inside a fresh temporary directory and
// returns its path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// SlotImage reads the image in slot s.
func (e *Env) SlotImage(s update.Slot) []byte {
	e.T.Helper()
	rc, err := e.Board.Open(s)
	if err != nil {
		return nil
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.T.Fatal(err)
	}
	return b
}

// State loads the boot state.
func (e *Env) State() update.BootState {
	e.T.Helper()
	st, err := e.Board.Load()
	if err != nil {
		e.T.Fatal(err)
	}
	return st
}

// InstallDuring runs Installer.InstallFrom(src) while traffic runs in
// another goroutine with a context that ends when the install returns; it
// returns the install error and traffic's error. This is the hook for the
// gateway's test that Modbus polls keep flowing through the bridge during
// download and install (U23).
func (e *Env) InstallDuring(ctx context.Context, src string, traffic func(ctx context.Context) error) (installErr, trafficErr error) {
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		trafficErr = traffic(tctx)
	}()
	_, installErr = e.Installer.InstallFrom(ctx, src)
	cancel()
	wg.Wait()
	return installErr, trafficErr
}

// Recorder keeps every update event (its Emit is an update.EventFunc).
// Safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex // guards events
	events []update.Event
}

// Emit records e; pass it as update.Config.Events.
func (r *Recorder) Emit(e *update.Event) {
	r.mu.Lock()
	r.events = append(r.events, *e)
	r.mu.Unlock()
}

// All returns a copy of the recorded events.
func (r *Recorder) All() []update.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]update.Event(nil), r.events...)
}

// Steps returns the Step of every recorded event, in order.
func (r *Recorder) Steps() []string {
	var s []string
	for _, e := range r.All() {
		s = append(s, e.Step)
	}
	return s
}

// Last returns the last event with the given step, or nil.
func (r *Recorder) Last(step string) *update.Event {
	all := r.All()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Step == step {
			return &all[i]
		}
	}
	return nil
}

// Reset forgets recorded events.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

// Mode is how Serve misbehaves.
type Mode int

// Serve modes.
const (
	Honest   Mode = iota // the whole body, with Content-Length
	Truncate             // half the body, then close
	Trickle              // one byte every 20 ms after the header
	Stall                // the header bytes, then nothing until the client leaves
	Endless              // the body, then junk forever (no Content-Length)
)

// Serve serves body at the returned URL on 127.0.0.1 in the given mode.
// The server is closed at test cleanup.
func Serve(t testing.TB, body []byte, mode Mode) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		fl, _ := w.(http.Flusher)
		switch mode {
		case Honest:
			w.Header().Set("Content-Length", itoa(len(body)))
			w.Write(body)
		case Truncate:
			w.Header().Set("Content-Length", itoa(len(body)))
			w.Write(body[:len(body)/2])
			// Returning early with a short body makes net/http close the
			// connection: the client sees an unexpected EOF.
		case Trickle, Stall:
			n := HeaderLen(body)
			w.Write(body[:n])
			fl.Flush()
			for i := n; i < len(body); i++ {
				if mode == Stall {
					<-ctx.Done()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
				w.Write(body[i : i+1])
				fl.Flush()
			}
		case Endless:
			w.Write(body)
			junk := bytes.Repeat([]byte{0xAA}, 32<<10)
			for ctx.Err() == nil {
				if _, err := w.Write(junk); err != nil {
					return
				}
			}
		}
	})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL + "/fw.otgw"
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(b[i:])
}
