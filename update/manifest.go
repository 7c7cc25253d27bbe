package update

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// manifestType is the "type" field of every manifest.
const manifestType = "otgw-manifest"

// manifestFormat is the manifest format version this package reads.
const manifestFormat = 1

// Manifest describes one firmware payload. It is the signed part of a
// bundle. The zero value is not valid.
type Manifest struct {
	Version string    // release version, MAJOR.MINOR.PATCH[-PRE] (see CompareVersions)
	SVN     uint32    // security version number; the device refuses SVN below its counter
	Board   string    // board profile name the image is built for ("sim", "x86-generic", ...)
	Arch    string    // GOARCH-style architecture ("amd64", "arm64", "arm")
	Size    int64     // payload length in bytes, > 0
	SHA256  [32]byte  // SHA-256 of the payload
	Created time.Time // build time, UTC, whole seconds
	Expires time.Time // zero: never expires
}

// manifestJSON is the canonical wire form; field order is the encoding
// order and must not change within format 1.
type manifestJSON struct {
	Type    string `json:"type"`
	Format  int    `json:"format"`
	Version string `json:"version"`
	SVN     uint32 `json:"svn"`
	Board   string `json:"board"`
	Arch    string `json:"arch"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	Created string `json:"created"`
	Expires string `json:"expires,omitempty"`
}

// MarshalCanonical returns the canonical bytes of m, the exact bytes that are
// signed. It fails if m would not pass ParseManifest.
func (m *Manifest) MarshalCanonical() ([]byte, error) {
	mj := manifestJSON{
		Type:    manifestType,
		Format:  manifestFormat,
		Version: m.Version,
		SVN:     m.SVN,
		Board:   m.Board,
		Arch:    m.Arch,
		Size:    m.Size,
		SHA256:  hex.EncodeToString(m.SHA256[:]),
		Created: formatTime(m.Created),
		Expires: formatTime(m.Expires),
	}
	if err := mj.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&mj)
}

// ParseManifest decodes canonical manifest bytes. Anything that is not
// exactly the canonical encoding of a valid manifest is ErrMalformed (or
// ErrTooLarge beyond MaxHeaderBytes): unknown or duplicate fields, other key
// order or case, whitespace, numbers in other notations, non-UTC or
// fractional times. It never panics.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: manifest of %d bytes exceeds %d", ErrTooLarge, len(b), MaxHeaderBytes)
	}
	var mj manifestJSON
	if err := strictUnmarshal(b, &mj); err != nil {
		return nil, err
	}
	if err := mj.validate(); err != nil {
		return nil, err
	}
	canon, err := json.Marshal(&mj)
	if err != nil || !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: manifest is not in canonical form", ErrMalformed)
	}
	m := &Manifest{Version: mj.Version, SVN: mj.SVN, Board: mj.Board, Arch: mj.Arch, Size: mj.Size}
	m.SHA256, _ = decodeHex32(mj.SHA256)
	m.Created, _ = parseTime(mj.Created)
	m.Expires, _ = parseTime(mj.Expires)
	return m, nil
}

func (mj *manifestJSON) validate() error {
	switch {
	case mj.Type != manifestType:
		return fmt.Errorf("%w: manifest type %q, want %q", ErrMalformed, mj.Type, manifestType)
	case mj.Format != manifestFormat:
		return fmt.Errorf("%w: manifest format %d, want %d", ErrMalformed, mj.Format, manifestFormat)
	case !validVersion(mj.Version):
		return fmt.Errorf("%w: version %q is not MAJOR.MINOR.PATCH[-PRE]", ErrMalformed, mj.Version)
	case !isName(mj.Board):
		return fmt.Errorf("%w: board %q", ErrMalformed, mj.Board)
	case !isName(mj.Arch):
		return fmt.Errorf("%w: arch %q", ErrMalformed, mj.Arch)
	case mj.Size <= 0:
		return fmt.Errorf("%w: size %d", ErrMalformed, mj.Size)
	case !isHex(mj.SHA256, 64):
		return fmt.Errorf("%w: sha256 is not 64 lower-case hex digits", ErrMalformed)
	case mj.Created == "":
		return fmt.Errorf("%w: created time missing", ErrMalformed)
	}
	if _, err := parseTime(mj.Created); err != nil {
		return err
	}
	if _, err := parseTime(mj.Expires); err != nil {
		return err
	}
	return nil
}

// validVersion accepts MAJOR.MINOR.PATCH with 1-9 digit decimal parts
// (no leading zeros), optionally followed by "-" and 1-32 of [0-9A-Za-z.].
func validVersion(s string) bool {
	_, ok := parseVersion(s)
	return ok
}

type version struct {
	n   [3]uint64
	pre string
}

func parseVersion(s string) (version, bool) {
	var v version
	core, pre, hasPre := strings.Cut(s, "-")
	if hasPre {
		if len(pre) == 0 || len(pre) > 32 {
			return v, false
		}
		for i := 0; i < len(pre); i++ {
			c := pre[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.') {
				return v, false
			}
		}
		v.pre = pre
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		if len(p) == 0 || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
			return v, false
		}
		for j := 0; j < len(p); j++ {
			if p[j] < '0' || p[j] > '9' {
				return v, false
			}
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return v, false
		}
		v.n[i] = n
	}
	return v, true
}

// CompareVersions orders release versions: numerically by MAJOR, MINOR,
// PATCH; a pre-release sorts before its release; pre-release tags compare
// as strings. It returns -1, 0 or +1; an invalid version sorts first.
func CompareVersions(a, b string) int {
	va, oka := parseVersion(a)
	vb, okb := parseVersion(b)
	switch {
	case !oka && !okb:
		return 0
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := range va.n {
		if va.n[i] != vb.n[i] {
			if va.n[i] < vb.n[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case va.pre == vb.pre:
		return 0
	case va.pre == "":
		return 1
	case vb.pre == "":
		return -1
	}
	return strings.Compare(va.pre, vb.pre)
}
