package update

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
)

// KeyID names a public key: the lower-case hex SHA-256 of a domain tag, the
// algorithm and the raw public key (FORMAT.md "Key ids"). Because it is
// derived from the key, one key cannot appear under two ids, so a key cannot
// be counted twice towards a threshold.
type KeyID string

// keyIDDomain separates key-id hashes from every other hash in the system.
const keyIDDomain = "otgw-keyid-v1\x00ed25519\x00"

// KeyIDOf returns the KeyID of an Ed25519 public key. It panics if pub is
// not ed25519.PublicKeySize bytes long (a programmer error, as in
// crypto/ed25519).
func KeyIDOf(pub ed25519.PublicKey) KeyID {
	if len(pub) != ed25519.PublicKeySize {
		panic("update: bad ed25519 public key length")
	}
	h := sha256.New()
	h.Write([]byte(keyIDDomain))
	h.Write(pub)
	return KeyID(hex.EncodeToString(h.Sum(nil)))
}

// Short returns the first 16 hex digits, for people.
func (id KeyID) Short() string {
	if len(id) > 16 {
		return string(id[:16])
	}
	return string(id)
}

// Signer is a private key that signs metadata. The zero value is unusable.
type Signer struct {
	priv ed25519.PrivateKey
	id   KeyID
}

// NewSigner wraps an Ed25519 private key.
func NewSigner(priv ed25519.PrivateKey) *Signer {
	pub := priv.Public().(ed25519.PublicKey)
	return &Signer{priv: priv, id: KeyIDOf(pub)}
}

// GenerateKey creates a new signing key from rand (crypto/rand.Reader when
// nil).
func GenerateKey(rnd io.Reader) (*Signer, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("update: generate key: %w", err)
	}
	return NewSigner(priv), nil
}

// ID returns the key id of the signer's public key.
func (s *Signer) ID() KeyID { return s.id }

// Public returns the public key.
func (s *Signer) Public() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

func (s *Signer) sign(domain string, signed []byte) Signature {
	return Signature{KeyID: s.id, Sig: ed25519.Sign(s.priv, signingInput(domain, signed))}
}

// MarshalPrivateKeyPEM encodes the key as PKCS #8 PEM ("PRIVATE KEY"), the
// form `openssl genpkey -algorithm ed25519` writes.
func (s *Signer) MarshalPrivateKeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.priv)
	if err != nil { // cannot happen for ed25519
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// MarshalPublicKeyPEM encodes an Ed25519 public key as PKIX PEM ("PUBLIC
// KEY").
func MarshalPublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePrivateKeyPEM decodes a PKCS #8 PEM Ed25519 private key. Any other
// algorithm (RSA, ECDSA) is ErrWeakAlgorithm: the update path accepts
// Ed25519 only.
func ParsePrivateKeyPEM(b []byte) (*Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: no PKCS #8 \"PRIVATE KEY\" PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrMalformed, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: private key is %T, want ed25519", ErrWeakAlgorithm, k)
	}
	return NewSigner(priv), nil
}

// ParsePublicKeyPEM decodes a PKIX PEM Ed25519 public key.
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: no \"PUBLIC KEY\" PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %T, want ed25519", ErrWeakAlgorithm, k)
	}
	return pub, nil
}
