package update

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Timestamp is a signed freshness statement (TUF specification section
// 2.1.4, "timestamp role", reduced to one board's latest release): the
// newest release for Board is Latest at security version SVN, and this
// statement is valid until Expires. The publisher re-signs it often (with
// a short expiry, e.g. a day) with the timestamp key, an online key the
// root delegates to and that signs nothing else. A device that cannot get
// a statement younger than its expiry is being frozen (an attacker, or a
// broken mirror, withholds updates) and says so: `otgw fw status` reports
// "stale" and an event is raised.
//
// Version increases with every statement; the device refuses a lower one,
// so an old (unexpired) statement cannot be replayed to hide a newer
// release.
type Timestamp struct {
	Version uint64    // sequence number, >= 1
	Board   string    // board profile
	Latest  string    // newest release version for Board
	SVN     uint32    // its security version
	Expires time.Time // required
}

const timestampType = "otgw-timestamp"

// domainTimestamp separates timestamp signatures from all others.
const domainTimestamp = "otgw-timestamp-v1"

type timestampJSON struct {
	Type    string `json:"type"`
	Version uint64 `json:"version"`
	Board   string `json:"board"`
	Latest  string `json:"latest"`
	SVN     uint32 `json:"svn"`
	Expires string `json:"expires"`
}

func (ts *Timestamp) toJSON() timestampJSON {
	return timestampJSON{Type: timestampType, Version: ts.Version, Board: ts.Board, Latest: ts.Latest, SVN: ts.SVN, Expires: formatTime(ts.Expires)}
}

func (tj *timestampJSON) validate() error {
	switch {
	case tj.Type != timestampType:
		return fmt.Errorf("%w: timestamp type %q, want %q", ErrMalformed, tj.Type, timestampType)
	case tj.Version < 1:
		return fmt.Errorf("%w: timestamp version must be >= 1", ErrMalformed)
	case !isName(tj.Board):
		return fmt.Errorf("%w: timestamp board %q", ErrMalformed, tj.Board)
	case !validVersion(tj.Latest):
		return fmt.Errorf("%w: timestamp latest %q is not MAJOR.MINOR.PATCH[-PRE]", ErrMalformed, tj.Latest)
	case tj.Expires == "":
		return fmt.Errorf("%w: a timestamp statement must expire", ErrMalformed)
	}
	_, err := parseTime(tj.Expires)
	return err
}

// SignTimestamp returns a timestamp file: the canonical statement signed by
// every signer (the root's timestamp keys).
func SignTimestamp(ts *Timestamp, signers ...*Signer) ([]byte, error) {
	tj := ts.toJSON()
	if err := tj.validate(); err != nil {
		return nil, err
	}
	signed, err := json.Marshal(&tj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	e := envelope{Signed: signed}
	for _, s := range signers {
		e.Signatures = append(e.Signatures, s.sign(domainTimestamp, signed))
	}
	return e.marshal(), nil
}

// ParseTimestamp decodes a timestamp file without checking signatures.
// Only the canonical encoding is accepted (FORMAT.md); one trailing
// newline is allowed.
func ParseTimestamp(b []byte) (*Timestamp, error) {
	ts, _, err := parseTimestampFile(b)
	return ts, err
}

func parseTimestampFile(b []byte) (*Timestamp, envelope, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	e, err := parseEnvelope(b)
	if err != nil {
		return nil, e, err
	}
	var tj timestampJSON
	if err := strictUnmarshal(e.Signed, &tj); err != nil {
		return nil, e, err
	}
	if err := tj.validate(); err != nil {
		return nil, e, err
	}
	if canon, err := json.Marshal(&tj); err != nil || !bytes.Equal(canon, e.Signed) {
		return nil, e, fmt.Errorf("%w: timestamp is not in canonical form", ErrMalformed)
	}
	exp, _ := parseTime(tj.Expires)
	return &Timestamp{Version: tj.Version, Board: tj.Board, Latest: tj.Latest, SVN: tj.SVN, Expires: exp}, e, nil
}

// VerifyTimestamp checks a timestamp file's signatures against the current
// root's timestamp role and its board. It does not check expiry (an
// expired statement is still evidence of what was published; Freshness
// judges it) nor its version against an earlier one (the Installer does).
func (t *Trust) VerifyTimestamp(b []byte, board string) (*Timestamp, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	ts, e, err := parseTimestampFile(b)
	if err != nil {
		return nil, fmt.Errorf("update: timestamp: %w", err)
	}
	if t.root.ts == nil {
		return nil, fmt.Errorf("update: timestamp: %w: trust root v%d delegates no timestamp role", ErrUnknownKey, t.root.Version)
	}
	if err := t.root.ts.verify(domainTimestamp, e.Signed, e.Signatures, nil); err != nil {
		return nil, fmt.Errorf("update: timestamp v%d: %w", ts.Version, err)
	}
	if ts.Board != board {
		return ts, fmt.Errorf("update: timestamp v%d: %w: it is for board %q, this board %q", ts.Version, ErrWrongBoard, ts.Board, board)
	}
	return ts, nil
}
