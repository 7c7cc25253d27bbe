package update

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Size caps on every part of a bundle or root file (FORMAT.md "Limits").
const (
	// MaxHeaderBytes caps the signed manifest envelope of a bundle and a
	// root file, so endless metadata is cut off before it is parsed.
	MaxHeaderBytes = 64 << 10
	// MaxSignatures caps the signatures on one envelope.
	MaxSignatures = 32
	// MaxKeys caps the keys in one root.
	MaxKeys = 32
	// DefaultMaxPayloadBytes is the payload cap when the caller sets none.
	DefaultMaxPayloadBytes = 1 << 30
)

// Signing domains: a signature made for one kind of document never verifies
// as another (FORMAT.md "Signatures").
const (
	domainManifest = "otgw-manifest-v1"
	domainRoot     = "otgw-root-v1"
)

// timeLayout is the only accepted time form: RFC 3339, UTC, whole seconds.
const timeLayout = "2006-01-02T15:04:05Z"

// Signature is one Ed25519 signature over a document's canonical bytes.
type Signature struct {
	KeyID KeyID
	Sig   []byte // ed25519.SignatureSize bytes
}

// signingInput is the message Ed25519 signs: a fixed prefix, the domain and
// the exact canonical bytes of the signed document.
func signingInput(domain string, signed []byte) []byte {
	b := make([]byte, 0, len("otgw-sig-v1\x00")+len(domain)+1+len(signed))
	b = append(b, "otgw-sig-v1\x00"...)
	b = append(b, domain...)
	b = append(b, 0)
	return append(b, signed...)
}

// envelope is a signed document: canonical JSON bytes plus signatures.
type envelope struct {
	Signed     []byte
	Signatures []Signature
}

type envelopeJSON struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []sigJSON       `json:"signatures"`
}

type sigJSON struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// marshal encodes the envelope in its canonical form.
func (e *envelope) marshal() []byte {
	ej := envelopeJSON{Signed: e.Signed, Signatures: make([]sigJSON, len(e.Signatures))}
	for i, s := range e.Signatures {
		ej.Signatures[i] = sigJSON{KeyID: string(s.KeyID), Sig: base64.StdEncoding.EncodeToString(s.Sig)}
	}
	b, err := json.Marshal(&ej)
	if err != nil { // only []byte, strings and RawMessage from our encoder
		panic(err)
	}
	return b
}

// parseEnvelope decodes a signed envelope and insists that it is in
// canonical form (the bytes our encoder would produce), so one document has
// exactly one encoding.
func parseEnvelope(b []byte) (envelope, error) {
	if len(b) > MaxHeaderBytes {
		return envelope{}, fmt.Errorf("%w: envelope of %d bytes exceeds %d", ErrTooLarge, len(b), MaxHeaderBytes)
	}
	var ej envelopeJSON
	if err := strictUnmarshal(b, &ej); err != nil {
		return envelope{}, err
	}
	if len(ej.Signed) == 0 || ej.Signed[0] != '{' {
		return envelope{}, fmt.Errorf("%w: \"signed\" is not an object", ErrMalformed)
	}
	if len(ej.Signatures) > MaxSignatures {
		return envelope{}, fmt.Errorf("%w: %d signatures, at most %d", ErrTooLarge, len(ej.Signatures), MaxSignatures)
	}
	e := envelope{Signed: []byte(ej.Signed), Signatures: make([]Signature, 0, len(ej.Signatures))}
	for i, s := range ej.Signatures {
		if !isHex(s.KeyID, 64) {
			return envelope{}, fmt.Errorf("%w: signature %d: key id is not 64 lower-case hex digits", ErrMalformed, i)
		}
		sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
		if err != nil {
			return envelope{}, fmt.Errorf("%w: signature %d: %v", ErrMalformed, i, err)
		}
		e.Signatures = append(e.Signatures, Signature{KeyID: KeyID(s.KeyID), Sig: sig})
	}
	if !bytes.Equal(e.marshal(), b) {
		return envelope{}, fmt.Errorf("%w: envelope is not in canonical form", ErrMalformed)
	}
	return e, nil
}

// strictUnmarshal decodes exactly one JSON value into v, refusing unknown
// fields and trailing data. Callers still compare a re-encoding with the
// input, which also catches duplicate keys, case-folded keys, whitespace and
// alternative escapes that encoding/json accepts silently.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after JSON value", ErrMalformed)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func decodeHex32(s string) ([32]byte, bool) {
	var out [32]byte
	if !isHex(s, 64) {
		return out, false
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return out, false
	}
	return out, true
}

// parseTime accepts only timeLayout; "" is the zero time.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil || t.Format(timeLayout) != s {
		return time.Time{}, fmt.Errorf("%w: time %q is not YYYY-MM-DDTHH:MM:SSZ", ErrMalformed, s)
	}
	return t, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Second).Format(timeLayout)
}

// isName reports whether s is a board or architecture name: 1-32 of
// [a-z0-9._-], starting with a letter or digit.
func isName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}
