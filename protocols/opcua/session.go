package opcua

import (
	"encoding/binary"
	"unsafe"

	"github.com/otgw/otgw/protocols"
)

// Spec registers OPC UA TCP (protocols/registry).
var Spec = protocols.Spec{
	Proto:      proto,
	Name:       "opcua",
	Ports:      []uint16{4840},
	Transports: protocols.TCP,
	Sniff:      Sniff,
	New:        func(c protocols.Config) protocols.Session { return NewSession(c) },
}

// Session follows one OPC UA TCP connection (protocols.Session). Its unit
// is a UA-TCP message chunk: Decode runs it through the secure Channel
// (limits, sequence numbers, the body of unencrypted messages) and pairs a
// final response chunk with the outstanding requests by RequestId (OPC
// 10000-6 section 6.7.2.4; requests whose sequence header was encrypted
// pair with any response).
//
// Fields, in order:
//
//	msg_type        "HEL", "ACK", "ERR", "RHE", "OPN", "MSG", "CLO"
//	chunk           "F", "C" or "A"
//	security_policy OPN: short policy name ("None", "Basic256Sha256"), or
//	                the URI when it is not a standard one
//	security_mode   OPN with a readable mode: "None", "Sign",
//	                "SignAndEncrypt"
//	service         numeric binary-encoding id of the body, when readable
//	                (631 ReadRequest, 673 WriteRequest...)
//	request_id      RequestId from the sequence header, when readable
//	nodes           Write: NodeIds written; Call: MethodIds called
//	                (final chunk, whole message)
//	error, reason   ERR message and abort chunk: code and text
//
// Offline (Feed), bytes that cannot be framed give one unit with only the
// anomaly (and msg_type when readable), after which the direction is
// resynchronised at the next plausible header.
type Session struct {
	// Channel holds the connection's secure channel state.
	Channel Channel
	framer  Framer
	m       Message
	dir     protocols.Dir
	// svc[d]: type id of the message whose chunks direction d is sending;
	// service: the one of the last chunk (0 when not visible).
	svc     [2]uint32
	service uint32
	mode    SecurityMode
	paired  bool
	// framing: the last unit is bytes that cannot be framed; framingType
	// their message type when readable.
	framing     bool
	framingType MessageType
	pickedUp    bool
	// outstanding request ids, oldest first; wild entries stand for
	// requests whose sequence header was encrypted.
	out  [32]uaReq
	nout int
	// reqs numbers the requests (the last one's number); role and key:
	// the last chunk's part in an exchange (Exchange).
	reqs uint64
	role protocols.Role
	key  uint64
	// Feed's per-direction state.
	pend    [2][]byte
	resync  [2]bool
	skipped [2]bool
	seen    [2]bool
}

type uaReq struct {
	id   uint32
	wild bool
	n    uint64 // the request's number (Session.reqs)
}

var _ protocols.Session = (*Session)(nil)

// NewSession returns a session with default limits; c.Budget bounds the
// bytes buffered for message bodies that span chunks.
func NewSession(c protocols.Config) *Session {
	return &Session{Channel: Channel{Budget: c.Budget}}
}

// Message returns the last decoded chunk (aliases the session).
func (s *Session) Message() *Message { return &s.m }

// Service returns the request/response type id of the message the last
// chunk belongs to (0 when not visible).
func (s *Session) Service() uint32 { return s.service }

// Mode returns the security mode the last chunk claims: an OPN's requested
// mode, or for an encrypted OPN at least Sign under any real policy.
func (s *Session) Mode() SecurityMode { return s.mode }

// Next implements protocols.Session: chunks are bounded by the sizes the
// channel negotiated.
func (s *Session) Next(dir protocols.Dir, b []byte) (n, need int, err error) {
	s.framer.MaxChunkSize = s.Channel.MaxChunkSize(dir)
	return s.framer.Next(b)
}

// FramingAnomaly implements protocols.Session.
func (s *Session) FramingAnomaly(err error) protocols.Anomaly {
	if a := AnomalyOf(err); a != AnomalyNone {
		return a.Tagged()
	}
	return protocols.NewAnomaly(proto, protocols.CodeMalformed)
}

// Proto implements protocols.Session.
func (s *Session) Proto() protocols.Proto { return proto }

// Plausible implements protocols.Session: the framer checks the message
// type already.
func (s *Session) Plausible(protocols.Dir, []byte) bool { return true }

// Decode implements protocols.Session.
func (s *Session) Decode(dir protocols.Dir, b []byte) protocols.Unit {
	m := &s.m
	d := dirIndex(dir)
	s.dir, s.framing, s.paired = dir, false, false
	s.role, s.key = protocols.RoleNone, 0
	_ = s.Channel.Decode(dir, b, m)
	s.service = 0
	if m.Type == TypeMSG || m.Type == TypeOPN || m.Type == TypeCLO {
		if m.HasTypeID {
			s.svc[d] = m.TypeID
		}
		s.service = s.svc[d]
	}
	s.mode = m.Mode
	if m.Type == TypeOPN && s.mode == ModeInvalid {
		switch m.Policy {
		case PolicyNone:
			s.mode = ModeNone
		case PolicyUnknown:
		default:
			s.mode = ModeSign // encrypted OPN: at least Sign under any real policy
		}
	}
	final := m.Chunk != ChunkIntermediate
	if final {
		s.svc[d] = 0
	}
	switch {
	case s.awaits():
		// Commit pushes it under this number; a refused request keeps
		// it too, so that no two requests share a key.
		s.reqs++
		s.role, s.key = protocols.RoleRequest, s.reqs
	case dir == protocols.Response && final && (m.Type == TypeMSG || m.Type == TypeOPN):
		var n uint64
		n, s.paired = s.match(m)
		if s.paired {
			s.pickedUp = false
			s.role, s.key = protocols.RoleResponse, n
		} else {
			s.paired = s.pickedUp
		}
	}
	return protocols.UnitPDU
}

// awaits reports whether the last chunk is a request that awaits a
// response once it passes: the final chunk of an OPN or MSG request.
func (s *Session) awaits() bool {
	m := &s.m
	return !s.framing && s.dir == protocols.Request && m.Chunk != ChunkIntermediate &&
		(m.Type == TypeMSG || m.Type == TypeOPN)
}

// Commit implements protocols.Session.
func (s *Session) Commit(passed, _ bool) {
	if passed && s.awaits() {
		s.push(&s.m)
	}
}

func (s *Session) push(m *Message) {
	if s.nout == len(s.out) {
		copy(s.out[:], s.out[1:])
		s.nout--
	}
	s.out[s.nout] = uaReq{id: m.RequestID, wild: !m.HasSequence, n: s.key}
	s.nout++
}

// match removes the oldest outstanding request a response answers and
// returns its number.
func (s *Session) match(m *Message) (uint64, bool) {
	for i := 0; i < s.nout; i++ {
		r := s.out[i]
		if !m.HasSequence || r.wild || r.id == m.RequestID {
			copy(s.out[i:], s.out[i+1:s.nout])
			s.nout--
			return r.n, true
		}
	}
	return 0, false
}

// Dir implements protocols.Session.
func (s *Session) Dir() protocols.Dir { return s.dir }

// Paired implements protocols.Session.
func (s *Session) Paired() bool { return s.paired }

// Exchange implements protocols.Session: the key is the request's number
// in the session (requests are numbered as they are decoded), so that a
// response whose RequestId was encrypted still names the request it was
// paired with.
func (s *Session) Exchange() (protocols.Role, uint64) { return s.role, s.key }

// Anomaly implements protocols.Session.
func (s *Session) Anomaly() protocols.Anomaly { return s.m.Anomaly.Tagged() }

// Fields implements protocols.Session (see Session for the keys).
func (s *Session) Fields(w protocols.Sink) {
	if s.framing {
		if s.framingType != TypeUnknown {
			w.Str("msg_type", s.framingType.String())
		}
		return
	}
	m := &s.m
	w.Str("msg_type", m.Type.String())
	w.Str("chunk", m.Chunk.String())
	if m.Type == TypeOPN && m.PolicyURI != nil {
		if p := PolicyByURI(m.PolicyURI); p != PolicyUnknown {
			w.Str("security_policy", p.String())
		} else {
			w.Bytes("security_policy", m.PolicyURI)
		}
		if m.Mode != ModeInvalid && s.dir == protocols.Request {
			w.Str("security_mode", m.Mode.String())
		}
	}
	if m.HasTypeID {
		w.Int("service", int(m.TypeID))
	}
	if m.HasSequence {
		w.Int("request_id", int(m.RequestID))
	}
	if m.NumNodes > 0 && !m.Partial {
		w.StrList("nodes", (*nodeList)(m))
	}
	if m.Type == TypeERR || m.Chunk == ChunkAbort {
		w.Int("error", int(m.ErrorCode))
		w.Bytes("reason", m.Reason)
	}
}

// nodeList renders a Message's NodeIds (protocols.List).
type nodeList Message

func (l *nodeList) Len() int { return l.NumNodes }

func (l *nodeList) AppendItem(dst []byte, i int) []byte { return l.Nodes[i].AppendString(dst) }

// Gap implements protocols.Session.
func (s *Session) Gap(dir protocols.Dir) {
	d := dirIndex(dir)
	s.pend[d] = s.pend[d][:0]
	s.resync[d] = true
	// Bytes lost after this direction started: the next chunk is
	// reported with AnomalyGap (offline). A gap before anything was seen
	// is a capture that began mid-stream; it is reported only if bytes
	// have to be skipped to find a chunk header.
	s.skipped[d] = s.seen[d]
	s.svc[d] = 0
	s.Channel.Gap(dir)
}

// PickUp implements protocols.Session.
func (s *Session) PickUp() { s.pickedUp = true }

// Reset implements protocols.Session.
func (s *Session) Reset() {
	s.Channel.Release()
	s.Channel = Channel{Budget: s.Channel.Budget}
	s.nout, s.reqs, s.role, s.key = 0, 0, protocols.RoleNone, 0
	s.svc = [2]uint32{}
	s.service, s.paired, s.framing, s.pickedUp = 0, false, false, false
	for d := range s.pend {
		s.pend[d] = s.pend[d][:0]
		s.resync[d], s.skipped[d], s.seen[d] = false, false, false
	}
}

// Size implements protocols.Session.
func (s *Session) Size() int { return int(unsafe.Sizeof(*s)) }

// Feed implements protocols.Session. dir is Request for client→server
// bytes. Chunks are bounded by HardMaxChunkSize only: a chunk above the
// negotiated buffer size is still decoded, and the Channel flags it.
func (s *Session) Feed(dir protocols.Dir, b []byte, gap bool, emit func()) {
	d := dirIndex(dir)
	if gap {
		s.Gap(dir)
		s.PickUp()
	}
	s.seen[d] = true
	data := b
	if len(s.pend[d]) > 0 {
		s.pend[d] = append(s.pend[d], b...)
		data = s.pend[d]
	}
	var f Framer
	for len(data) > 0 {
		if s.resync[d] {
			i := s.findHeader(data)
			if i < 0 {
				s.skipped[d] = true
				data = data[len(data):]
				break
			}
			if i > 0 {
				s.skipped[d] = true
			}
			data = data[i:]
			s.resync[d] = false
		}
		n, need, err := f.Next(data)
		if err != nil {
			s.dir, s.framing, s.paired = dir, true, false
			s.role, s.key = protocols.RoleNone, 0
			s.m.Anomaly = AnomalyOf(err)
			s.framingType = TypeUnknown
			if len(data) >= 3 {
				s.framingType = messageType(data[0], data[1], data[2])
			}
			emit()
			s.resync[d] = true
			s.skipped[d] = false // already reported
			data = data[1:]
			continue
		}
		if need > 0 {
			break
		}
		s.Decode(dir, data[:n])
		if s.skipped[d] && s.m.Anomaly == AnomalyNone {
			s.m.Anomaly = AnomalyGap
		}
		s.skipped[d] = false
		s.Commit(true, true)
		emit()
		data = data[n:]
	}
	// Keep the incomplete rest (at most one chunk, bounded by the Framer).
	if len(data) == 0 {
		s.pend[d] = s.pend[d][:0]
	} else if len(s.pend[d]) > 0 && &data[0] == &s.pend[d][len(s.pend[d])-len(data)] {
		s.pend[d] = s.pend[d][:copy(s.pend[d], data)]
	} else {
		s.pend[d] = append(s.pend[d][:0], data...)
	}
}

// findHeader returns the offset of the first plausible chunk header in b
// (a header cut by the end of b counts), or -1.
func (s *Session) findHeader(b []byte) int {
	id, haveID := s.Channel.ChannelID()
	for i := range b {
		h := b[i:min(len(b), i+12)]
		if checkPrefix(h) != AnomalyNone {
			continue
		}
		if len(h) < HeaderLen {
			return i
		}
		t := messageType(h[0], h[1], h[2])
		if checkSize(t, binary.LittleEndian.Uint32(h[4:8]), HardMaxChunkSize) != AnomalyNone {
			continue
		}
		if haveID && len(h) >= 12 && (t == TypeMSG || t == TypeCLO) &&
			binary.LittleEndian.Uint32(h[8:12]) != id {
			continue
		}
		return i
	}
	return -1
}

// Sniff recognises OPC UA TCP by content (protocols.Spec.Sniff, OPC
// 10000-6 section 7.1.2): a message header HEL, ACK, ERR, RHE, OPN, MSG or
// CLO, chunk type F/C/A and a message size between the header and 16 MiB.
// HEL and CLO come from the client, ACK, ERR and RHE from the server; an
// OPN is a request when its SecureChannelId is 0, and a MSG under policy
// None when its body type id is a service request or response (OPC
// 10000-4).
func Sniff(b []byte) (protocols.Dir, bool) {
	if len(b) < 8 {
		return 0, false
	}
	switch b[3] {
	case 'F', 'C', 'A':
	default:
		return 0, false
	}
	size := binary.LittleEndian.Uint32(b[4:8])
	if size < 8 || size > 1<<24 {
		return 0, false
	}
	switch string(b[:3]) {
	case "HEL", "CLO":
		return protocols.Request, true
	case "ACK", "ERR", "RHE":
		return protocols.Response, true
	case "OPN":
		if len(b) >= 12 && binary.LittleEndian.Uint32(b[8:12]) == 0 {
			return protocols.Request, true
		}
		return protocols.DirUnknown, true
	case "MSG":
		// Header, SecureChannelId, TokenId, SequenceNumber, RequestId,
		// then the body's type id as a NodeId (policy None only; an
		// encrypted body says nothing).
		const body = 24
		if len(b) < body+4 {
			return protocols.DirUnknown, true
		}
		var id uint32
		switch b[body] {
		case 0x01: // four-byte NodeId: namespace octet, uint16 id
			if b[body+1] != 0 {
				return protocols.DirUnknown, true
			}
			id = uint32(binary.LittleEndian.Uint16(b[body+2:]))
		case 0x00: // two-byte NodeId
			id = uint32(b[body+1])
		default:
			return protocols.DirUnknown, true
		}
		if _, resp, ok := ServiceByTypeID(id); ok {
			if resp {
				return protocols.Response, true
			}
			return protocols.Request, true
		}
		return protocols.DirUnknown, true
	}
	return 0, false
}
