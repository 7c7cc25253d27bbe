package update_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

func readSeeds(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "manifest", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no seeds in testdata/manifest: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// TestParseManifestCorpus checks each seed: only the valid-*.json files
// parse; every other file is one non-canonical or invalid variant (its
// name says which) and must be ErrMalformed (U27).
func TestParseManifestCorpus(t *testing.T) {
	for name, b := range readSeeds(t) {
		m, err := update.ParseManifest(b)
		wantOK := strings.HasPrefix(name, "valid")
		if got := err == nil; got != wantOK {
			t.Errorf("%s: err = %v, want ok=%v", name, err, wantOK)
			continue
		}
		if !wantOK {
			if !errors.Is(err, update.ErrMalformed) || m != nil {
				t.Errorf("%s: got (%v, %v), want (nil, ErrMalformed)", name, m, err)
			}
			continue
		}
		canon, err := m.MarshalCanonical()
		if err != nil || !bytes.Equal(canon, b) {
			t.Errorf("%s: round trip differs:\n got %s\nwant %s", name, canon, b)
		}
	}
}

func TestParseManifestFields(t *testing.T) {
	m, err := update.ParseManifest(readSeeds(t)["valid-expires.json"])
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		got, want any
	}{
		{"version", m.Version, "2.0.0-rc.1"},
		{"svn", m.SVN, uint32(4294967295)},
		{"board", m.Board, "x86-generic"},
		{"arch", m.Arch, "arm"},
		{"size", m.Size, int64(1)},
		{"expires", m.Expires, want},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.0", "1.0.1", -1},
		{"1.10.0", "1.9.0", 1},
		{"2.0.0-rc.1", "2.0.0", -1},
		{"2.0.0-rc.2", "2.0.0-rc.1", 1},
		{"bogus", "0.0.1", -1},
		{"1.1.0-rc.10", "1.1.0-rc.9", 1}, // numeric identifiers compare as numbers
		{"1.1.0-rc.9", "1.1.0-rc.10", -1},
		{"1.0.0-2", "1.0.0-10", -1},
		{"1.0.0-1", "1.0.0-a", -1},  // numeric before alphanumeric
		{"1.0.0-a.b", "1.0.0-a", 1}, // more identifiers win when equal so far
		{"1.0.0-x-y-z.1", "1.0.0-x-y-z.0", 1},
	}
	for _, tt := range tests {
		if got := update.CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestSemVerPrecedence checks the two precedence chains given as examples
// in SemVer 2.0.0 item 11, every pair in both directions.
func TestSemVerPrecedence(t *testing.T) {
	chains := []struct {
		name  string
		chain []string
	}{
		{"release", []string{"1.0.0", "2.0.0", "2.1.0", "2.1.1"}},
		{"pre-release", []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
			"1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"}},
	}
	for _, c := range chains {
		t.Run(c.name, func(t *testing.T) {
			for i, a := range c.chain {
				for j, b := range c.chain {
					want := 0
					switch {
					case i < j:
						want = -1
					case i > j:
						want = 1
					}
					if got := update.CompareVersions(a, b); got != want {
						t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
					}
				}
			}
		})
	}
}

// TestSemVerValidity: the spec's examples of valid and invalid versions
// (items 2 and 9), and our own limits (no build metadata, no "v").
func TestSemVerValidity(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"1.0.0-alpha", true}, {"1.0.0-alpha.1", true}, {"1.0.0-0.3.7", true},
		{"1.0.0-x.7.z.92", true}, {"1.0.0-x-y-z.--", true}, {"1.1.0-rc.10", true},
		{"01.0.0", false}, {"1.0", false}, {"1.0.0-", false}, {"1.0.0-alpha..1", false},
		{"1.0.0-01", false}, {"1.0.0-rc.01", false}, {"1.0.0+build.1", false}, {"v1.0.0", false},
		{"1.0.0-alpha_1", false},
	}
	for _, tt := range tests {
		m := &update.Manifest{Version: tt.v, Board: "sim", Arch: "amd64", Size: 1, Created: time.Unix(1, 0)}
		_, err := m.MarshalCanonical()
		if (err == nil) != tt.ok {
			t.Errorf("version %q: err %v, want valid=%v", tt.v, err, tt.ok)
		}
	}
}

// FuzzManifest feeds arbitrary bytes to the manifest parser. Seeds are
// testdata/manifest/*.json (valid manifests and one variant per
// non-canonical form). Invariants: no panic; an error comes with a nil
// manifest and matches ErrMalformed or ErrTooLarge; a success re-encodes to
// exactly the input (one manifest, one encoding).
func FuzzManifest(f *testing.F) {
	for _, b := range readSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := update.ParseManifest(b)
		if err != nil {
			if m != nil {
				t.Fatal("error with a non-nil manifest")
			}
			if !errors.Is(err, update.ErrMalformed) && !errors.Is(err, update.ErrTooLarge) {
				t.Fatalf("error %v is neither ErrMalformed nor ErrTooLarge", err)
			}
			return
		}
		canon, err := m.MarshalCanonical()
		if err != nil || !bytes.Equal(canon, b) {
			t.Fatalf("accepted non-canonical input %q (re-encodes to %q, %v)", b, canon, err)
		}
	})
}

// FuzzBundleHeader feeds arbitrary bundle prefixes to the verifier: it
// must never panic, never accept a header it was not given signatures
// for, and never read past the header.
func FuzzBundleHeader(f *testing.F) {
	e := updatetest.New(f, updatetest.Options{ImageBytes: 64})
	good := e.Bundle(updatetest.Spec{})
	f.Add(good[:updatetest.HeaderLen(good)])
	f.Add([]byte("OTGWFW\x00\x01\x00\x00\x00\x02{}"))
	f.Add([]byte("OTGWFW\x00\x01\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v := update.NewVerifier(e.Trust, update.Policy{Board: "sim", Arch: "amd64", Now: func() time.Time { return updatetest.Epoch }})
		r := bytes.NewReader(b)
		m, err := v.ReadHeader(io.MultiReader(r, strings.NewReader("payload")))
		read := append(append([]byte(nil), b...), "payload"...)
		if err == nil && (updatetest.HeaderLen(read) > len(read) || !bytes.HasPrefix(good, read[:updatetest.HeaderLen(read)])) {
			t.Fatalf("accepted a header that was never signed: %q", b)
		}
		if err == nil && m == nil {
			t.Fatal("nil manifest without error")
		}
	})
}

func TestVerifierRefusesStepsOutOfOrder(t *testing.T) {
	e := updatetest.New(t, updatetest.Options{ImageBytes: 1024})
	b := e.Bundle(updatetest.Spec{})
	p := update.Policy{Board: "sim", Arch: "amd64", Now: func() time.Time { return updatetest.Epoch }}

	v := update.NewVerifier(e.Trust, p)
	if err := v.Payload(bytes.NewReader(b), io.Discard); !errors.Is(err, update.ErrOrder) {
		t.Errorf("Payload before ReadHeader: %v, want ErrOrder", err)
	}
	r := bytes.NewReader(b)
	if _, err := v.ReadHeader(r); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadHeader(r); !errors.Is(err, update.ErrOrder) {
		t.Errorf("second ReadHeader: %v, want ErrOrder", err)
	}
	if err := v.Payload(r, io.Discard); err != nil || !v.Done() {
		t.Fatalf("Payload: %v done=%v", err, v.Done())
	}
	if err := v.Payload(r, io.Discard); !errors.Is(err, update.ErrOrder) {
		t.Errorf("Payload twice: %v, want ErrOrder", err)
	}

	// After a failure every step is refused.
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 1
	v = update.NewVerifier(e.Trust, p)
	r = bytes.NewReader(bad)
	v.ReadHeader(r)
	if err := v.Payload(r, io.Discard); !errors.Is(err, update.ErrHashMismatch) {
		t.Fatalf("tampered payload: %v", err)
	}
	if err := v.Payload(r, io.Discard); !errors.Is(err, update.ErrOrder) || v.Manifest() != nil {
		t.Errorf("step after failure: %v (manifest %v), want ErrOrder and nil", err, v.Manifest())
	}
}

func TestBootStateRoundTrip(t *testing.T) {
	st := update.InitialBootState(update.SlotInfo{Version: "1.0.0", SVN: 3, Size: 99, SHA256: [32]byte{1, 2, 3}})
	st.Trial, st.TriesLeft, st.Booted = update.SlotB, 2, update.SlotB
	st.Slots[1] = update.SlotInfo{State: update.SlotPending, Version: "1.1.0-rc.1", SVN: 4, Size: 1 << 40, SHA256: [32]byte{9}}
	st.Fallback, st.FallbackVersion = update.FallbackTries, "0.9.0"
	rec := update.EncodeBootState(&st, 42)
	got, seq, err := update.DecodeBootState(rec)
	if err != nil || seq != 42 || got != st {
		t.Fatalf("round trip: %+v seq %d err %v\nwant %+v", got, seq, err, st)
	}
	for i := range rec { // any single flipped bit is detected
		c := append([]byte(nil), rec...)
		c[i] ^= 0x10
		if _, _, err := update.DecodeBootState(c); !errors.Is(err, update.ErrNoBootState) {
			t.Fatalf("flip at byte %d accepted", i)
		}
	}
}

func TestKeyPEMRoundTripAndWeakAlgorithm(t *testing.T) { // U26
	s, err := update.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := update.ParsePrivateKeyPEM(s.MarshalPrivateKeyPEM())
	if err != nil || s2.ID() != s.ID() {
		t.Fatalf("private key round trip: %v", err)
	}
	pub, err := update.ParsePublicKeyPEM(update.MarshalPublicKeyPEM(s.Public()))
	if err != nil || update.KeyIDOf(pub) != s.ID() {
		t.Fatalf("public key round trip: %v", err)
	}
	// An RSA-1024 key (PKCS #8) is refused as a weak/unsupported algorithm.
	if _, err := update.ParsePrivateKeyPEM([]byte(rsa1024PEM)); !errors.Is(err, update.ErrWeakAlgorithm) {
		t.Errorf("RSA key: %v, want ErrWeakAlgorithm", err)
	}
	// A root that lists a non-Ed25519 key is refused.
	root := updatetest.RootFile(t, 1, 1, []*update.Signer{s}, s)
	weak := bytes.Replace(root, []byte(`"alg":"ed25519"`), []byte(`"alg":"rsa-1024"`), 1)
	if _, err := update.NewTrust(weak); !errors.Is(err, update.ErrWeakAlgorithm) {
		t.Errorf("root with an rsa key: %v, want ErrWeakAlgorithm", err)
	}
}

// rsa1024PEM is a throw-away 1024-bit RSA key made for this test with
// `openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024`.
const rsa1024PEM = `-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBALfIKDKLpmWmOK0J
NUbyeqb8KcTSQc6NLIYAFucMMdc7eMo5jwdLu071TVFPx9C7+LfDTsrNmbaqx54q
c11s/sQRJavCVxM2op2c9aenbTZNjGm6Qw7GtaJXu6Uui75/AoN9xi3IY/3252Bs
EwXRxT6G84wL4WCNUULWDQzDh2QtAgMBAAECgYAZnp177lvT78gW1yHGMidHAAAS
n/zsfmGmjHyk2N5Z0sCT8FIwAi6qYyfUHfsM7idN9rwVKXQ0MrqBIgnTDE63aeRf
WIxnwaqwzO3g5cLvbrPg07Gg80JsPIzD1LDGfu+Sa/AI66l997ziqhDX3DirjKB+
XwHixkONyDg2btViAQJBAOJ/a5X67526YVMeku/LTdXInyv9njry9u5WZHtjj+N3
fS/wJbJrYOQ93UlMvI59qJaQNnt0PUVzFHxQVtknNjkCQQDPuF+kohIqjEHnPkJY
ek8XR52Ci7LDQnWj4BYRLbJtMcSGQfHKInzCGxkiOlnu+kEOFs8TyBmjJrK6aOjU
E32VAkAl5FNHYBe+N3QYx8ClRUncPhgC8AcMraEJ9oIQ8nMcBt12q6Ji2vv2szLW
FHRnEjamGbJDrQqjF8GRmo8s/RZhAkAstYiQjPnQAqRku3fYR2sinZ1/bcYqVPGx
NhhJ1kYjTqT4KNV8JnQn62E7hse4slCyUaJ8pYMvJLMvgEks7I0JAkEAuWW8ONXk
joWfS/TZgjRZvgoN7aM0wpHw8P59Fj/5K3ubSqYwK8SJAqJLhvi0dg7mQj5xhbrb
KWOfLNebEkPzNA==
-----END PRIVATE KEY-----
`
