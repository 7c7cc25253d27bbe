package echo7

import "github.com/otgw/otgw/protocols"

// Anomaly is the parser's anomaly enum.
type Anomaly uint8

// Anomalies.
const (
	AnomalyNone Anomaly = iota
	// AnomalyBadCheck: the check byte does not match.
	AnomalyBadCheck
	// AnomalyUnknownFunc: a function outside 1-9.
	AnomalyUnknownFunc
)

var anomalyNames = [...]string{AnomalyNone: "none", AnomalyBadCheck: "bad_check", AnomalyUnknownFunc: "unknown_func"}

// Proto is the protocol's number: the parser's one protocols.Register line.
var Proto = protocols.Register(protocols.ProtoNone, "echo7", protocols.Vocabulary{Anomalies: anomalyNames[:]})

// Tagged returns a as a protocols.Anomaly.
func (a Anomaly) Tagged() protocols.Anomaly { return protocols.NewAnomaly(Proto, uint8(a)) }

// Flags bits.
const (
	FlagResponse = 0x01
	FlagRefused  = 0x02
)

// PDULen is the length of every PDU.
const PDULen = 3

// AppendPDU appends the PDU of function fn with flags.
func AppendPDU(dst []byte, fn, flags byte) []byte { return append(dst, fn, flags, fn^flags^0x5A) }

// Port is the protocol's well-known server port.
const Port = 7007

// Spec describes the protocol for the registry.
var Spec = protocols.Spec{
	Proto:      Proto,
	Name:       "echo7",
	Ports:      []uint16{Port},
	Transports: protocols.TCP,
	New:        func(protocols.Config) protocols.Session { return new(Session) },
}

// Session is the protocol's protocols.Session: it counts the requests
// that passed, and a response pairs with one of them. Its fields are
// "func" and "flags".
type Session struct {
	dir         protocols.Dir
	fn, flags   byte
	anomaly     Anomaly
	outstanding int
	paired      bool
	// Feed's partial PDU, per direction.
	part  [2][PDULen]byte
	npart [2]int
}

var (
	_ protocols.Session = (*Session)(nil)
	_ protocols.Replier = (*Session)(nil)
)

// Func returns the last decoded PDU's function.
func (s *Session) Func() byte { return s.fn }

// Proto implements protocols.Session.
func (s *Session) Proto() protocols.Proto { return Proto }

// Next implements protocols.Session: every PDU is 3 bytes.
func (s *Session) Next(_ protocols.Dir, b []byte) (int, int, error) {
	if len(b) < PDULen {
		return 0, PDULen - len(b), nil
	}
	return PDULen, 0, nil
}

// FramingAnomaly implements protocols.Session (Next never fails).
func (s *Session) FramingAnomaly(error) protocols.Anomaly { return AnomalyBadCheck.Tagged() }

// Plausible implements protocols.Session.
func (s *Session) Plausible(_ protocols.Dir, b []byte) bool { return b[0]^b[1]^0x5A == b[2] }

// Decode implements protocols.Session.
func (s *Session) Decode(_ protocols.Dir, b []byte) protocols.Unit {
	s.fn, s.flags, s.anomaly, s.paired = b[0], b[1], AnomalyNone, false
	s.dir = protocols.Request
	if b[1]&FlagResponse != 0 {
		s.dir = protocols.Response
	}
	switch {
	case b[0]^b[1]^0x5A != b[2]:
		s.anomaly = AnomalyBadCheck
	case b[0] == 0 || b[0] > 9:
		s.anomaly = AnomalyUnknownFunc
	}
	if s.dir == protocols.Response && s.outstanding > 0 {
		s.paired = true
	}
	return protocols.UnitPDU
}

// Commit implements protocols.Session.
func (s *Session) Commit(passed, _ bool) {
	switch {
	case !passed:
	case s.dir == protocols.Request:
		s.outstanding++
	case s.paired:
		s.outstanding--
	}
}

// Dir implements protocols.Session.
func (s *Session) Dir() protocols.Dir { return s.dir }

// Anomaly implements protocols.Session.
func (s *Session) Anomaly() protocols.Anomaly { return s.anomaly.Tagged() }

// Paired implements protocols.Session.
func (s *Session) Paired() bool { return s.paired }

// Exchange implements protocols.Session (no keys: RoleNone).
func (s *Session) Exchange() (protocols.Role, uint64) { return protocols.RoleNone, 0 }

// Fields implements protocols.Session.
func (s *Session) Fields(w protocols.Sink) {
	w.Int("func", int(s.fn))
	w.Int("flags", int(s.flags))
}

// Gap implements protocols.Session.
func (s *Session) Gap(dir protocols.Dir) { s.npart[dirIndex(dir)] = 0 }

// PickUp implements protocols.Session.
func (s *Session) PickUp() {}

// Reset implements protocols.Session.
func (s *Session) Reset() { *s = Session{} }

// Size implements protocols.Session.
func (s *Session) Size() int { return PDULen * 2 }

// Feed implements protocols.Session.
func (s *Session) Feed(dir protocols.Dir, b []byte, gap bool, emit func()) {
	i := dirIndex(dir)
	if gap {
		s.npart[i] = 0
	}
	for len(b) > 0 {
		k := copy(s.part[i][s.npart[i]:], b)
		s.npart[i] += k
		b = b[k:]
		if s.npart[i] < PDULen {
			return
		}
		s.npart[i] = 0
		s.Decode(dir, s.part[i][:])
		emit()
		s.Commit(true, true)
	}
}

func dirIndex(d protocols.Dir) int {
	if d == protocols.Response {
		return 1
	}
	return 0
}

// AppendDenyReply implements protocols.Replier: the response to the
// request refused, with FlagRefused set.
func (s *Session) AppendDenyReply(dst []byte, _ protocols.Refusal) ([]byte, bool) {
	if s.dir != protocols.Request {
		return dst, false
	}
	return AppendPDU(dst, s.fn, FlagResponse|FlagRefused), true
}
