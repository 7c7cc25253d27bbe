package dnp3

import (
	"encoding/binary"
	"unsafe"

	"github.com/otgw/otgw/protocols"
)

// Spec registers DNP3 (protocols/registry): over TCP and over UDP, where
// every datagram holds whole link frames.
var Spec = protocols.Spec{
	Proto:      proto,
	Name:       "dnp3",
	Ports:      []uint16{20000},
	Transports: protocols.TCP | protocols.UDP,
	Sniff:      Sniff,
	New:        func(c protocols.Config) protocols.Session { return NewSession(c) },
}

// Object names one object header's group and variation in output.
type Object = protocols.Object

// DefaultAssociations is how many link address pairs a session
// reassembles at once when its Config does not say.
const DefaultAssociations = 16

// MaxRepeat bounds the requests counted per application sequence
// number.
const MaxRepeat = 15

type association struct {
	src, dst uint16
	stream   int // index of the direction the frames arrived on
	used     bool
	r        Reassembler
}

type stream struct {
	buf      []byte // partial frame carried to the next Feed (< MaxFrameLen)
	resyncOK bool   // after a gap, garbage before the next frame is expected
	badHdr   bool   // the last frame header was corrupt: its tail is not new garbage
}

// Session follows one DNP3 connection or UDP flow (protocols.Session). Its
// unit is a link frame: Decode checks it (CRCs), feeds its transport
// segment to the reassembler of its link address pair and, when that
// completes an application fragment, decodes it (UnitPDU) and pairs a
// solicited response with the requests by application sequence number
// (IEEE 1815-2012 clause 4.2.2.4: a solicited response echoes the
// request's SEQ, later fragments count up, a repeated request reuses its
// SEQ). A link frame that completes no fragment, or carries no user data,
// is UnitPartial; a corrupt frame or transport segment UnitMalformed.
//
// Fields, in order: link_src, link_dst, link_fc (name), and when the
// frame completed a fragment: fc (number), objects (group/variation list),
// iin (responses) and seq. Bytes that are not a frame have none.
type Session struct {
	datagram bool
	lf       LinkFrame
	frag     Fragment
	assoc    []association
	next     int // next association slot to replace
	dir      protocols.Dir
	unit     protocols.Unit
	linkOK   bool // lf's header decoded: its fields render
	hasFrag  bool // frag holds the fragment lf completed
	anomaly  Anomaly
	// Pairing of the last fragment.
	rawPaired   bool // a counted request had its SEQ
	paired      bool // rawPaired, or allowed by a pickup
	seqMismatch bool
	pickedUp    bool
	// outstanding[seq]: how many requests with application sequence seq
	// await a response; saturates at MaxRepeat.
	outstanding [16]uint8
	// cont: bit seq is set while one of outstanding[seq] stands for the
	// next fragment of a multi-fragment response, not a request.
	cont uint16
	// role and key: the last fragment's part in an exchange (Exchange);
	// the key is the application sequence number of the request.
	role    protocols.Role
	key     uint64
	streams [3]stream // Feed's buffers per direction
	objs    [MaxObjects]Object
}

var _ protocols.Session = (*Session)(nil)

// NewSession returns a session; c.Associations bounds the link address
// pairs reassembled at once (DefaultAssociations when 0).
func NewSession(c protocols.Config) *Session {
	n := c.Associations
	if n <= 0 {
		n = DefaultAssociations
	}
	return &Session{datagram: c.Datagram, assoc: make([]association, n)}
}

// LinkFrame returns the last decoded link frame (aliases the session).
func (s *Session) LinkFrame() *LinkFrame { return &s.lf }

// Fragment returns the fragment the last link frame completed, nil when it
// completed none (aliases the session).
func (s *Session) Fragment() *Fragment {
	if !s.hasFrag {
		return nil
	}
	return &s.frag
}

// SeqMismatch reports whether the last response answered none of the
// outstanding requests' sequence numbers while some were outstanding.
func (s *Session) SeqMismatch() bool { return s.seqMismatch }

// Next implements protocols.Session.
func (s *Session) Next(_ protocols.Dir, b []byte) (n, need int, err error) { return Framer{}.Next(b) }

// FramingAnomaly implements protocols.Session.
func (s *Session) FramingAnomaly(err error) protocols.Anomaly {
	switch err {
	case ErrLinkCRC:
		return AnomalyLinkCRC.Tagged()
	case ErrBadLength:
		return AnomalyBadLength.Tagged()
	}
	return AnomalyBadStart.Tagged()
}

// Proto implements protocols.Session.
func (s *Session) Proto() protocols.Proto { return proto }

// Plausible implements protocols.Session: the framer checks the header
// CRC already.
func (s *Session) Plausible(protocols.Dir, []byte) bool { return true }

// Decode implements protocols.Session. dir is the direction the frame
// arrived in; Dir reports the one its DIR bit claims.
func (s *Session) Decode(dir protocols.Dir, b []byte) protocols.Unit {
	s.dir, s.linkOK, s.hasFrag, s.anomaly = dir, false, false, AnomalyNone
	s.rawPaired, s.paired, s.seqMismatch = false, false, false
	s.role, s.key = protocols.RoleNone, 0
	lf := &s.lf
	err := lf.Decode(b)
	if err == nil || err == ErrDataCRC {
		s.linkOK = true
		s.dir = protocols.Response
		if lf.FromMaster() {
			s.dir = protocols.Request
		}
	}
	if err != nil {
		s.anomaly = lf.Anomaly
		s.unit = protocols.UnitMalformed
		return s.unit
	}
	ud := lf.UserData()
	switch {
	case len(ud) == 0:
		// Link-layer service frames (RESET_LINK_STATES, LINK_STATUS,
		// ACK...) carry no application function.
		s.unit = protocols.UnitPartial
		s.note(lf.Anomaly)
		return s.unit
	case !lf.Func.carriesUserData():
		s.anomaly = AnomalyUnexpectedData
		s.unit = protocols.UnitMalformed
		return s.unit
	}
	frag, an := s.reassembler(dirIndex(dir), lf.Src, lf.Dst).Add(ud)
	if an != AnomalyNone {
		s.anomaly = an
		s.unit = protocols.UnitMalformed
		return s.unit
	}
	if frag == nil {
		s.unit = protocols.UnitPartial // the fragment continues in later frames
		s.note(lf.Anomaly)
		return s.unit
	}
	fr := &s.frag
	_ = fr.Decode(frag, lf.FromMaster())
	s.hasFrag = true
	s.note(fr.Anomaly)
	seq := fr.Seq() & 15
	switch {
	case s.dir == protocols.Request && fr.Func.ExpectsResponse():
		s.role, s.key = protocols.RoleRequest, uint64(seq) // Commit counts it
	case s.dir == protocols.Response && fr.Func == FuncResponse:
		s.rawPaired = s.outstanding[seq] > 0
		s.paired = s.rawPaired || s.pickedUp
		if s.rawPaired {
			s.pickedUp = false
			if s.cont&(1<<seq) == 0 {
				s.role, s.key = protocols.RoleResponse, uint64(seq)
			}
		}
		if !s.paired && s.outstanding != ([16]uint8{}) && fr.Anomaly == AnomalyNone {
			s.seqMismatch = true
			// Should a rule tolerate it, Commit takes this request.
			if q, ok := s.before(seq); ok && s.cont&(1<<q) == 0 {
				s.role, s.key = protocols.RoleResponse, uint64(q)
			}
		}
	}
	s.note(lf.Anomaly)
	s.unit = protocols.UnitPDU
	return s.unit
}

// note keeps the first anomaly found; broadcast (an address, not a defect)
// only when nothing else is.
func (s *Session) note(a Anomaly) {
	if a != AnomalyNone && (s.anomaly == AnomalyNone || s.anomaly == AnomalyBroadcast) {
		s.anomaly = a
	}
}

// Commit implements protocols.Session.
func (s *Session) Commit(passed, allowed bool) {
	if !passed || s.unit != protocols.UnitPDU {
		return
	}
	fr := &s.frag
	seq := fr.Seq() & 15
	switch {
	case s.dir == protocols.Request && fr.Func.ExpectsResponse():
		// A new request ends any multi-fragment response still awaited
		// under its SEQ: the next response with it answers a request.
		s.cont &^= 1 << seq
		s.count(seq)
	case s.dir == protocols.Response && fr.Func == FuncResponse && (s.paired || s.seqMismatch && allowed):
		switch {
		case s.rawPaired:
			s.take(seq)
		case s.seqMismatch:
			// Tolerated: the outstation numbers its answers wrongly; this
			// response answers the latest request before its SEQ.
			if q, ok := s.before(seq); ok {
				s.take(q)
			}
		}
		if !fr.FIN() {
			next := (seq + 1) & 15 // the next fragment of a multi-fragment response
			s.count(next)
			s.cont |= 1 << next
		}
	}
}

// before returns the sequence number of the request awaiting a response
// nearest counting back from seq (mod 16); ok is false when none awaits.
func (s *Session) before(seq uint8) (q uint8, ok bool) {
	for i := uint8(1); i <= 16; i++ {
		if q := (seq - i) & 15; s.outstanding[q] > 0 {
			return q, true
		}
	}
	return 0, false
}

// take consumes one response awaited under seq (a continuation first).
func (s *Session) take(seq uint8) {
	s.outstanding[seq]--
	s.cont &^= 1 << seq
}

// count records one more request awaiting a response with sequence seq.
func (s *Session) count(seq uint8) {
	if s.outstanding[seq] < MaxRepeat {
		s.outstanding[seq]++
	}
}

// ExpectsResponse reports whether an outstation answers a request with
// function fc (IEEE 1815-2012 Table 4-1: CONFIRM and the *_NR functions
// get no response; responses get none either). It is the one statement of
// which requests await an answer: the Session pairs by it, and rules'
// Secure Authentication state follows it.
func (fc FunctionCode) ExpectsResponse() bool {
	switch fc {
	case FuncConfirm, FuncDirectOperateNR, FuncImmedFreezeNR, FuncFreezeClearNR,
		FuncFreezeAtTimeNR, FuncAuthReqNoAck:
		return false
	}
	return !fc.IsResponse()
}

// Dir implements protocols.Session.
func (s *Session) Dir() protocols.Dir { return s.dir }

// Paired implements protocols.Session.
func (s *Session) Paired() bool { return s.paired }

// Exchange implements protocols.Session: the key is the application
// sequence number (0-15) of the request, which its solicited response
// echoes; the later fragments of a multi-fragment response, unsolicited
// responses and requests without answer (CONFIRM, the *_NR functions) are
// RoleNone.
func (s *Session) Exchange() (protocols.Role, uint64) { return s.role, s.key }

// Anomaly implements protocols.Session: the frame's, the transport's or
// the fragment's anomaly, then seq_mismatch, then broadcast.
func (s *Session) Anomaly() protocols.Anomaly {
	a := s.anomaly
	if s.seqMismatch && (a == AnomalyNone || a == AnomalyBroadcast) {
		a = AnomalySeqMismatch
	}
	return a.Tagged()
}

// Fields implements protocols.Session (see Session for the keys).
func (s *Session) Fields(w protocols.Sink) {
	if !s.linkOK {
		return
	}
	w.Int("link_src", int(s.lf.Src))
	w.Int("link_dst", int(s.lf.Dst))
	w.Str("link_fc", s.lf.Func.String())
	if !s.hasFrag {
		return
	}
	fr := &s.frag
	w.Int("fc", int(fr.Func))
	objs := s.objs[:fr.NumObjects]
	for i, h := range fr.Headers() {
		objs[i] = Object{Group: int(h.Group), Variation: int(h.Variation)}
	}
	w.Objects("objects", objs)
	if fr.HasIIN() {
		w.Int("iin", int(fr.IIN))
	}
	w.Int("seq", int(fr.Seq()))
}

// Gap implements protocols.Session: the partial frame and the fragments in
// progress of that direction are dropped.
func (s *Session) Gap(dir protocols.Dir) {
	si := dirIndex(dir)
	st := &s.streams[si]
	st.buf = st.buf[:0]
	st.resyncOK = true
	st.badHdr = false
	for i := range s.assoc {
		if s.assoc[i].used && s.assoc[i].stream == si {
			s.assoc[i].r.Reset()
		}
	}
}

// PickUp implements protocols.Session.
func (s *Session) PickUp() { s.pickedUp = true }

// Reset implements protocols.Session.
func (s *Session) Reset() {
	for i := range s.assoc {
		s.assoc[i].used = false
		s.assoc[i].r.Reset()
	}
	s.next = 0
	for i := range s.streams {
		s.streams[i] = stream{buf: s.streams[i].buf[:0]}
	}
	s.outstanding = [16]uint8{}
	s.cont, s.role, s.key = 0, protocols.RoleNone, 0
	s.pickedUp, s.linkOK, s.hasFrag, s.anomaly = false, false, false, AnomalyNone
	s.rawPaired, s.paired, s.seqMismatch = false, false, false
}

// Size implements protocols.Session.
func (s *Session) Size() int {
	return int(unsafe.Sizeof(*s)) + len(s.assoc)*int(unsafe.Sizeof(association{}))
}

// dirIndex is the index of d's stream state (DirUnknown has its own).
func dirIndex(d protocols.Dir) int {
	if int(d) >= 3 {
		return 0
	}
	return int(d)
}

// reassembler returns the reassembler of the association src→dst.
func (s *Session) reassembler(si int, src, dst uint16) *Reassembler {
	for i := range s.assoc {
		a := &s.assoc[i]
		if a.used && a.src == src && a.dst == dst {
			a.stream = si
			return &a.r
		}
	}
	// A new pair takes a free slot, else one without a fragment in
	// progress, else the next in turn.
	var a *association
	for i := range s.assoc {
		if c := &s.assoc[i]; !c.used || !c.r.active && (a == nil || a.used) {
			a = c
		}
	}
	if a == nil {
		a = &s.assoc[s.next]
		s.next = (s.next + 1) % len(s.assoc)
	}
	a.src, a.dst, a.stream, a.used = src, dst, si, true
	a.r.Reset()
	return &a.r
}

// framing makes the last unit bytes that are not a frame.
func (s *Session) framing(dir protocols.Dir, a Anomaly) {
	s.dir, s.unit, s.linkOK, s.hasFrag, s.anomaly = dir, protocols.UnitMalformed, false, false, a
	s.rawPaired, s.paired, s.seqMismatch = false, false, false
	s.role, s.key = protocols.RoleNone, 0
}

// Feed implements protocols.Session. It reports every link frame (as
// tshark does), whether or not it completes a fragment.
func (s *Session) Feed(dir protocols.Dir, b []byte, gap bool, emit func()) {
	st := &s.streams[dirIndex(dir)]
	if gap {
		s.Gap(dir)
		s.PickUp()
	}
	data := b
	if len(st.buf) > 0 {
		st.buf = append(st.buf, b...)
		data = st.buf
	}
	for len(data) > 0 {
		n, _, err := Framer{}.Next(data)
		if n == 0 {
			break
		}
		switch err {
		case nil:
			st.resyncOK, st.badHdr = false, false
			s.Decode(dir, data[:n])
			s.Commit(true, true)
			emit()
		case ErrBadStart:
			if !st.resyncOK && !st.badHdr {
				s.framing(dir, AnomalyBadStart)
				emit()
			}
		case ErrLinkCRC:
			st.badHdr = true
			s.framing(dir, AnomalyLinkCRC)
			emit()
		default:
			st.badHdr = true
			s.framing(dir, AnomalyBadLength)
			emit()
		}
		data = data[n:]
	}
	if s.datagram {
		if len(data) > 0 {
			s.framing(dir, AnomalyBadLength)
			emit()
		}
		st.buf = st.buf[:0]
		return
	}
	// Keep the partial frame; copy first because data may alias st.buf.
	if len(st.buf) > 0 {
		st.buf = st.buf[:copy(st.buf, data)]
	} else {
		st.buf = append(st.buf, data...)
	}
}

// Sniff recognises DNP3 by content (protocols.Spec.Sniff): the start
// octets 0x05 0x64, a length of at least 5 and a header whose CRC is
// valid (IEEE 1815-2012 clause 9.2.4); the DIR bit of the control octet
// says whether the master sent it.
func Sniff(b []byte) (protocols.Dir, bool) {
	if len(b) < 10 || b[0] != 0x05 || b[1] != 0x64 || b[2] < 5 {
		return 0, false
	}
	if CRC(b[:8]) != binary.LittleEndian.Uint16(b[8:10]) {
		return 0, false
	}
	if b[3]&0x80 != 0 { // DIR: sent by the master
		return protocols.Request, true
	}
	return protocols.Response, true
}
