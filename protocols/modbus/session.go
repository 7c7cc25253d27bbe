package modbus

import (
	"unsafe"

	"github.com/otgw/otgw/protocols"
)

// Spec registers Modbus/TCP (protocols/registry). Modbus over UDP is not
// inspected.
var Spec = protocols.Spec{
	Proto:      proto,
	Name:       "modbus",
	Ports:      []uint16{502},
	Transports: protocols.TCP,
	Sniff:      Sniff,
	New:        func(protocols.Config) protocols.Session { return new(Session) },
}

// maxListed bounds the written values a PDU's fields list.
const maxListed = 32

// Session follows one Modbus/TCP connection (protocols.Session): it frames
// ADUs (Framer), decodes them (ADU.Decode) and pairs responses with the
// requests that passed (Pairing).
//
// Fields, in order: tid, unit, fc (as on the wire, an exception keeps
// 0x80), exception (only when fc >= 0x80), addr and qty (when the PDU has
// them; FC 23 adds write_addr and write_qty), sub (FC 8 sub-function or FC
// 43 MEI type) and umas (FC 90 function name), value (FC 5/6 written
// value), values (FC 16/23 written registers, at most 32), coils (FC 15
// written coils, at most 32), and_mask and or_mask (FC 22 request). A
// header-only ADU has tid and unit; bytes that are not Modbus/TCP none.
//
// Offline (Feed), bytes that cannot be Modbus/TCP produce one unit with
// Anomaly "non_modbus" and no fields; the rest of that direction is
// ignored until the next gap.
type Session struct {
	adu     ADU
	pairing Pairing
	dir     protocols.Dir
	// pa is the pairing anomaly of the last ADU; paired whether it
	// answered a request.
	pa     Anomaly
	paired bool
	// role and key: the last ADU's part in an exchange (Exchange); the
	// key is the request's number in pairing.
	role protocols.Role
	key  uint64
	// framing: the last unit is bytes that cannot be framed.
	framing bool
	// pickedUp: the flow was joined late (PickUp); cleared by the first
	// response that pairs.
	pickedUp bool
	// Offline stream state, per direction (Feed; allocated by the first
	// Feed, so the engine's sessions do not carry it).
	dirs *[2]connDir
	vals [maxListed]int
	bits [maxListed]bool
}

// connDir is the per-direction stream state of Feed.
type connDir struct {
	buf     [MaxUMASADULen]byte // partial ADU carried between Feed calls
	n       int                 // bytes in buf
	discard bool                // non-Modbus bytes seen: ignore until a gap
}

var _ protocols.Session = (*Session)(nil)

// ADU returns the last decoded ADU (aliases the session).
func (s *Session) ADU() *ADU { return &s.adu }

// Next implements protocols.Session.
func (s *Session) Next(_ protocols.Dir, b []byte) (n, need int, err error) { return Framer{}.Next(b) }

// FramingAnomaly implements protocols.Session.
func (s *Session) FramingAnomaly(error) protocols.Anomaly { return AnomalyNonModbus.Tagged() }

// Proto implements protocols.Session.
func (s *Session) Proto() protocols.Proto { return proto }

// Plausible implements protocols.Session: an MBAP header is a weak check
// (any two zero bytes in the right place), so the ADU is decoded.
func (s *Session) Plausible(dir protocols.Dir, b []byte) bool {
	var a ADU
	return a.Decode(b, dir) == nil && a.Anomaly == AnomalyNone
}

// Decode implements protocols.Session. A response consumes the request it
// answers; one with the wrong transaction id is checked against the
// oldest request (should a rule tolerate tid_mismatch, it answers that
// one).
func (s *Session) Decode(dir protocols.Dir, b []byte) protocols.Unit {
	a := &s.adu
	s.dir, s.framing, s.pa, s.paired = dir, false, AnomalyNone, false
	s.role, s.key = protocols.RoleNone, 0
	_ = a.Decode(b, dir) // the anomaly is in a.Anomaly
	if dir != protocols.Response {
		if dir == protocols.Request && a.HasPDU() {
			// Commit records it under this number (Pairing.Request).
			s.role, s.key = protocols.RoleRequest, s.pairing.Next()
		}
		return protocols.UnitPDU
	}
	req, ok, pa := s.pairing.Response(a)
	if ok {
		s.role, s.key = protocols.RoleResponse, req.Number()
	}
	if pa == AnomalyTIDMismatch {
		if an := s.pairing.CheckOldest(a); an != AnomalyNone {
			pa = an
		}
	}
	if ok {
		s.pickedUp = false
	} else if a.HasPDU() && s.pickedUp {
		// Answers a request sent before the pickup: the pairing anomaly
		// (response_without_request, tid_mismatch) is an artefact of
		// joining late.
		ok, pa = true, AnomalyNone
	}
	if pa == AnomalyTIDMismatch {
		// Should a rule tolerate it, Commit takes the oldest request.
		if n, found := s.pairing.OldestNumber(); found {
			s.role, s.key = protocols.RoleResponse, n
		}
	}
	s.pa, s.paired = pa, ok
	return protocols.UnitPDU
}

// Commit implements protocols.Session.
func (s *Session) Commit(passed, allowed bool) {
	if !passed && s.role == protocols.RoleRequest {
		s.pairing.seq++ // the refused request keeps its number: no two requests share a key
	}
	if !passed || s.framing {
		return
	}
	if s.dir == protocols.Request {
		if an := s.pairing.Request(&s.adu); an != AnomalyNone && s.pa == AnomalyNone {
			s.pa = an // too_many_outstanding: reported offline, after the fact
		}
	}
	if allowed && s.pa == AnomalyTIDMismatch {
		// Tolerated: the device numbers its answers wrongly; this response
		// answers the oldest request.
		s.pairing.TakeOldest()
	}
}

// Dir implements protocols.Session.
func (s *Session) Dir() protocols.Dir { return s.dir }

// Paired implements protocols.Session.
func (s *Session) Paired() bool { return s.paired }

// Exchange implements protocols.Session: the key is the request's number
// in the session's Pairing, so that two requests with one transaction id
// (pipelined, retried) are two exchanges, each closed by the response
// that Pairing matched to it.
func (s *Session) Exchange() (protocols.Role, uint64) { return s.role, s.key }

// Anomaly implements protocols.Session: the ADU's own anomaly, else the
// pairing anomaly.
func (s *Session) Anomaly() protocols.Anomaly {
	if s.framing {
		return AnomalyNonModbus.Tagged()
	}
	if s.adu.Anomaly != AnomalyNone {
		return s.adu.Anomaly.Tagged()
	}
	return s.pa.Tagged()
}

// PairingAnomaly returns the pairing anomaly of the last ADU.
func (s *Session) PairingAnomaly() Anomaly { return s.pa }

// Fields implements protocols.Session (see Session for the keys).
func (s *Session) Fields(w protocols.Sink) {
	a := &s.adu
	if s.framing || !a.HasHeader() {
		return
	}
	w.Int("tid", int(a.TransactionID))
	w.Int("unit", int(a.Unit))
	if !a.HasPDU() {
		return
	}
	w.Int("fc", int(a.Function))
	if a.IsException {
		w.Int("exception", int(a.Exception))
	}
	if a.HasAddress {
		w.Int("addr", int(a.Address))
	}
	if a.HasQuantity {
		w.Int("qty", int(a.Quantity))
	}
	if a.HasWrite {
		w.Int("write_addr", int(a.WriteAddress))
		w.Int("write_qty", int(a.WriteQuantity))
	}
	if a.HasSub {
		w.Int("sub", int(a.Sub))
		if a.Func() == FuncUMAS {
			w.Str("umas", UMASFunctionName(uint8(a.Sub)))
		}
	}
	// The values a write carries (the value refused, in a deny).
	if a.HasValue {
		w.Int("value", int(a.Value))
	}
	if a.Dir == protocols.Request && !a.IsException {
		switch a.Func() {
		case FuncWriteMultipleRegisters, FuncReadWriteMultipleRegisters:
			if r := a.Registers(); len(r) > 0 {
				v := s.vals[:min(len(r), maxListed)]
				for i := range v {
					v[i] = int(r[i])
				}
				w.IntList("values", v)
			}
		case FuncWriteMultipleCoils:
			if a.NumCoils() > 0 {
				v := s.bits[:min(a.NumCoils(), maxListed)]
				for i := range v {
					v[i] = a.Coil(i)
				}
				w.BoolList("coils", v)
			}
		}
	}
	if a.Func() == FuncMaskWriteRegister && !a.IsException {
		w.Int("and_mask", int(a.AndMask))
		w.Int("or_mask", int(a.OrMask))
	}
}

// Gap implements protocols.Session. A gap in the responses drops the
// outstanding requests: the responses that answered them were lost.
func (s *Session) Gap(dir protocols.Dir) {
	if s.dirs != nil {
		st := &s.dirs[dirIndex(dir)]
		st.n, st.discard = 0, false
	}
	if dir == protocols.Response {
		s.pairing.Reset()
	}
}

// PickUp implements protocols.Session.
func (s *Session) PickUp() { s.pickedUp = true }

// Reset implements protocols.Session.
func (s *Session) Reset() {
	s.pairing.Reset()
	if s.dirs != nil {
		*s.dirs = [2]connDir{}
	}
	s.pickedUp, s.framing, s.pa, s.paired = false, false, AnomalyNone, false
	s.role, s.key = protocols.RoleNone, 0
	s.adu = ADU{}
}

// Size implements protocols.Session.
func (s *Session) Size() int {
	n := int(unsafe.Sizeof(*s))
	if s.dirs != nil {
		n += int(unsafe.Sizeof(*s.dirs))
	}
	return n
}

func dirIndex(d protocols.Dir) int {
	if d == protocols.Response {
		return 1
	}
	return 0
}

// Feed implements protocols.Session. DirUnknown is taken as a request.
func (s *Session) Feed(dir protocols.Dir, b []byte, gap bool, emit func()) {
	if dir != protocols.Response {
		dir = protocols.Request
	}
	if s.dirs == nil {
		s.dirs = new([2]connDir)
	}
	st := &s.dirs[dirIndex(dir)]
	if gap {
		s.Gap(dir)
		s.PickUp()
	}
	if st.discard {
		return
	}
	// Complete the ADU carried over from earlier segments first.
	for st.n > 0 {
		n, need, err := Framer{}.Next(st.buf[:st.n])
		if err != nil {
			s.nonModbus(st, dir, emit)
			return
		}
		if n > 0 {
			s.unit(st.buf[:n], dir, emit)
			st.n = 0
			break
		}
		if len(b) == 0 {
			return
		}
		take := min(need, len(b))
		st.n += copy(st.buf[st.n:], b[:take])
		b = b[take:]
	}
	// Then the ADUs that lie wholly in b, without copying.
	for len(b) > 0 {
		n, _, err := Framer{}.Next(b)
		if err != nil {
			s.nonModbus(st, dir, emit)
			return
		}
		if n == 0 {
			st.n = copy(st.buf[:], b) // len(b) < MaxUMASADULen: Next would have framed it
			return
		}
		s.unit(b[:n], dir, emit)
		b = b[n:]
	}
}

func (s *Session) nonModbus(st *connDir, dir protocols.Dir, emit func()) {
	st.n = 0
	st.discard = true
	s.dir, s.framing, s.pa, s.paired = dir, true, AnomalyNone, false
	s.role, s.key = protocols.RoleNone, 0
	emit()
}

func (s *Session) unit(b []byte, dir protocols.Dir, emit func()) {
	s.Decode(dir, b)
	s.Commit(true, true)
	emit()
}

// Sniff recognises Modbus/TCP by content (protocols.Spec.Sniff): protocol
// id 0 and a sane MBAP length (TCP guide section 3.1.3), every ADU of b
// framing one after another, and the first decoding without anomaly as a
// request (Request: the client sent b), else as a response.
func Sniff(b []byte) (protocols.Dir, bool) {
	var f Framer
	n, _, err := f.Next(b)
	if err != nil || n == 0 {
		return 0, false
	}
	for rest := b[n:]; len(rest) > 0; {
		m, _, err := f.Next(rest)
		if err != nil {
			return 0, false
		}
		if m == 0 {
			break // the last ADU continues in a later segment
		}
		rest = rest[m:]
	}
	var a ADU
	if a.Decode(b[:n], protocols.Request) == nil {
		return protocols.Request, true
	}
	if a.Decode(b[:n], protocols.Response) == nil {
		return protocols.Response, true
	}
	return 0, false
}
