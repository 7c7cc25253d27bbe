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
// (no leading zeros), optionally followed by "-" and a SemVer 2.0.0
// pre-release of 1-32 bytes: dot-separated non-empty identifiers of
// [0-9A-Za-z-], numeric ones without leading zeros. Build metadata ("+...")
// is not accepted: it has no precedence, so two different bundles could not
// be ordered.
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
		for _, id := range strings.Split(pre, ".") {
			if !validPreID(id) {
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

// validPreID checks one pre-release identifier (SemVer 2.0.0 item 9).
func validPreID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return !isNumeric(id) || len(id) == 1 || id[0] != '0'
}

func isNumeric(id string) bool {
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return id != ""
}

// CompareVersions orders release versions by SemVer 2.0.0 precedence (item
// 11): numerically by MAJOR, MINOR, PATCH; a pre-release sorts before its
// release; pre-release identifiers compare left to right, numeric ones
// numerically (rc.9 < rc.10), alphanumeric ones in ASCII order, numeric
// before alphanumeric, and a shorter list first when all else is equal.
// It returns -1, 0 or +1; an invalid version sorts first.
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
	return comparePre(va.pre, vb.pre)
}

func comparePre(a, b string) int {
	ia, ib := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ia) && i < len(ib); i++ {
		x, y := ia[i], ib[i]
		nx, ny := isNumeric(x), isNumeric(y)
		switch {
		case nx && ny:
			// No leading zeros and at most 32 bytes: compare by length,
			// then lexically, without overflow.
			if len(x) != len(y) {
				if len(x) < len(y) {
					return -1
				}
				return 1
			}
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		case nx:
			return -1
		case ny:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(ia) < len(ib):
		return -1
	case len(ia) > len(ib):
		return 1
	}
	return 0
}
