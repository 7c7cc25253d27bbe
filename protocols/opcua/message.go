package opcua

import "encoding/binary"

// MaxNodes is the most NodeIds a Message keeps for one Write or Call
// request; a request with more is reported as too_many_nodes (a policy
// cannot judge what it cannot see).
const MaxNodes = 64

// Message is one decoded UA-TCP message chunk. Decode fills it; the caller
// owns it and may reuse it for every chunk. Byte slices alias the decoded
// input (or a Channel's reassembly buffer) and are valid until that is
// reused. Fields that a message type or chunk does not carry are zero. The
// zero value is an empty, undecoded message.
type Message struct {
	Type  MessageType
	Chunk ChunkType
	Size  uint32 // MessageSize from the header

	// HEL and ACK (§7.1.2.3, §7.1.2.4).
	ProtocolVersion   uint32
	ReceiveBufferSize uint32
	SendBufferSize    uint32
	MaxMessageSize    uint32 // 0: no limit
	MaxChunkCount     uint32 // 0: no limit
	EndpointURL       []byte // HEL, RHE
	ServerURI         []byte // RHE

	// ERR, and MSG abort chunks ('A', §6.7.3).
	ErrorCode uint32
	Reason    []byte

	// OPN, MSG, CLO (§6.7.2).
	ChannelID uint32
	// PolicyURI is the OPN SecurityPolicyUri; Policy is its value. For
	// MSG/CLO decoded through a Channel, Policy is the channel's.
	PolicyURI             []byte
	Policy                SecurityPolicy
	SenderCertificateLen  int // OPN; -1 when null
	ReceiverThumbprintLen int // OPN; -1 when null
	// TokenID is the MSG/CLO symmetric header's TokenId, or, for a readable
	// OpenSecureChannelResponse, the TokenId the server issued.
	TokenID uint32
	// Encrypted: the rest of the chunk after the security header is
	// ciphertext (OPN under a policy other than None; MSG/CLO in
	// SignAndEncrypt, known only through a Channel). Sequence and body
	// fields are then zero.
	Encrypted      bool
	HasSequence    bool
	SequenceNumber uint32
	RequestID      uint32
	// Body is the chunk's body after the sequence header (for mode Sign it
	// still ends with the signature).
	Body []byte

	// Body fields (§6.7.2.5; OPC 10000-4), when the body is readable.
	HasTypeID bool
	TypeID    uint32 // numeric id of the body's DefaultBinary encoding (631 ReadRequest)
	Service   Service
	Response  bool // the body is a response (or ServiceFault)
	Partial   bool // non-final chunk: the body continues in the next chunk
	// Mode is the RequestedSecurityMode of a readable OpenSecureChannel
	// request. For MSG/CLO decoded through a Channel it is the channel's
	// mode (ModeInvalid when not known yet).
	Mode          SecurityMode
	RequestType   uint32 // OpenSecureChannel request: 0 Issue, 1 Renew
	HasResult     bool
	ServiceResult uint32 // responses: ResponseHeader.ServiceResult

	// NumNodes NodeIds of a Write request (NodesToWrite[i].NodeId) or Call
	// request (MethodsToCall[i].MethodId, with ObjectId in Objects[i]).
	NumNodes int
	Nodes    [MaxNodes]NodeID
	Objects  [MaxNodes]NodeID

	// Anomaly is the first problem found (AnomalyNone when well formed).
	Anomaly Anomaly
}

// NodeList returns the decoded Write/Call NodeIds (aliasing m.Nodes).
func (m *Message) NodeList() []NodeID { return m.Nodes[:m.NumNodes] }

// Decode decodes one complete chunk b (as found by Framer.Next) whose body
// is readable: SecurityPolicy None or mode Sign. A non-final chunk's body is
// decoded as far as it goes. Decode resets every field first, aliases b,
// allocates nothing and never panics. It returns nil or the sentinel error
// of m.Anomaly: err != nil exactly when m.Anomaly != AnomalyNone. Fields
// decoded before the problem keep their values.
func (m *Message) Decode(b []byte) error { return m.decode(b, true, true) }

// DecodeHeaders is Decode for a chunk of a SignAndEncrypt channel: it
// decodes the message and security headers and marks the rest Encrypted.
func (m *Message) DecodeHeaders(b []byte) error { return m.decode(b, false, false) }

// decode decodes chunk b. visible: the part after the security header is
// plaintext. bodyStart: the chunk's body starts a message (false for the
// second and later chunks of a multi-chunk message, whose body continues
// the previous chunk's; only a Channel knows).
func (m *Message) decode(b []byte, visible, bodyStart bool) error {
	m.reset()
	a := m.decodeChunk(b, visible, bodyStart)
	m.Anomaly = a
	return a.Err()
}

// reset zeroes m, touching only the node entries in use (clearing both
// arrays whole would dominate the cost of decoding a small chunk).
// TestDecodeResetsEveryField guards that every field is listed.
func (m *Message) reset() {
	n := m.NumNodes
	clear(m.Nodes[:n])
	clear(m.Objects[:n])
	m.Type, m.Chunk, m.Size = 0, 0, 0
	m.ProtocolVersion, m.ReceiveBufferSize, m.SendBufferSize = 0, 0, 0
	m.MaxMessageSize, m.MaxChunkCount = 0, 0
	m.EndpointURL, m.ServerURI = nil, nil
	m.ErrorCode, m.Reason = 0, nil
	m.ChannelID, m.PolicyURI, m.Policy = 0, nil, 0
	m.SenderCertificateLen, m.ReceiverThumbprintLen = 0, 0
	m.TokenID, m.Encrypted, m.HasSequence = 0, false, false
	m.SequenceNumber, m.RequestID, m.Body = 0, 0, nil
	m.HasTypeID, m.TypeID, m.Service, m.Response, m.Partial = false, 0, 0, false, false
	m.Mode, m.RequestType, m.HasResult, m.ServiceResult = 0, 0, false, 0
	m.NumNodes, m.Anomaly = 0, AnomalyNone
}

func (m *Message) decodeChunk(b []byte, visible, bodyStart bool) Anomaly {
	if a := checkPrefix(b); a != AnomalyNone {
		return a
	}
	if len(b) < HeaderLen {
		return AnomalyTruncated
	}
	m.Type = messageType(b[0], b[1], b[2])
	m.Chunk = ChunkType(b[3])
	m.Size = binary.LittleEndian.Uint32(b[4:8])
	if a := checkSize(m.Type, m.Size, HardMaxChunkSize); a != AnomalyNone {
		return a
	}
	if uint64(m.Size) != uint64(len(b)) {
		return AnomalyInvalidMessageSize
	}
	r := reader{b: b, off: HeaderLen}
	switch m.Type {
	case TypeHEL:
		m.ProtocolVersion = r.u32()
		m.ReceiveBufferSize = r.u32()
		m.SendBufferSize = r.u32()
		m.MaxMessageSize = r.u32()
		m.MaxChunkCount = r.u32()
		m.EndpointURL = r.str(MaxURLLength)
		return m.endFixed(&r)
	case TypeACK:
		m.ProtocolVersion = r.u32()
		m.ReceiveBufferSize = r.u32()
		m.SendBufferSize = r.u32()
		m.MaxMessageSize = r.u32()
		m.MaxChunkCount = r.u32()
		return m.endFixed(&r)
	case TypeERR:
		m.ErrorCode = r.u32()
		m.Reason = r.str(MaxURLLength)
		return m.endFixed(&r)
	case TypeRHE:
		m.ServerURI = r.str(MaxURLLength)
		m.EndpointURL = r.str(MaxURLLength)
		return m.endFixed(&r)
	case TypeOPN:
		m.ChannelID = r.u32()
		m.PolicyURI = r.str(MaxPolicyURILength)
		cert := r.str(MaxStringLength)
		thumb := r.str(MaxStringLength)
		if r.err != AnomalyNone {
			return r.err
		}
		m.SenderCertificateLen, m.ReceiverThumbprintLen = strLen(cert), strLen(thumb)
		m.Policy = PolicyByURI(m.PolicyURI)
		if m.Policy == PolicyUnknown {
			m.Encrypted = true
			return AnomalyUnknownSecurityPolicy
		}
		if m.Policy != PolicyNone {
			// §6.7.2.3/§6.7.4: OPN chunks are asymmetrically encrypted
			// from the sequence header on unless the policy is None.
			m.Encrypted = true
			return AnomalyNone
		}
	case TypeMSG, TypeCLO:
		m.ChannelID = r.u32()
		m.TokenID = r.u32()
		if r.err != AnomalyNone {
			return r.err
		}
		if !visible {
			m.Encrypted = true
			return AnomalyNone
		}
	}
	m.SequenceNumber = r.u32()
	m.RequestID = r.u32()
	if r.err != AnomalyNone {
		return r.err
	}
	m.HasSequence = true
	m.Body = b[r.off:]
	if m.Chunk == ChunkAbort {
		// §6.7.3: an abort chunk's body is an Error code and a Reason.
		br := reader{b: m.Body}
		m.ErrorCode = br.u32()
		m.Reason = br.str(MaxURLLength)
		return br.err
	}
	if !bodyStart {
		m.Partial = m.Chunk == ChunkIntermediate
		return AnomalyNone
	}
	return m.decodeBody(m.Body, m.Chunk == ChunkFinal)
}

// strLen returns the length of a String as decoded by reader.str: -1 for
// null (nil), else its length (an empty string is a non-nil empty slice).
func strLen(s []byte) int {
	if s == nil {
		return -1
	}
	return len(s)
}

// endFixed finishes a UACP handshake message: the type's fields must fill
// MessageSize exactly, and the protocol version is 0 (§7.1.2.3).
func (m *Message) endFixed(r *reader) Anomaly {
	if r.err != AnomalyNone {
		return r.err
	}
	if r.left() != 0 {
		return AnomalyInvalidMessageSize
	}
	if (m.Type == TypeHEL || m.Type == TypeACK) && m.ProtocolVersion != 0 {
		return AnomalyBadProtocolVersion
	}
	return AnomalyNone
}

// decodeBody decodes a service body: its type id and, for the services the
// gateway judges in detail, their parameters. final is false for the body
// of a non-final chunk: running out of bytes there is not an anomaly.
func (m *Message) decodeBody(body []byte, final bool) Anomaly {
	r := reader{b: body, partial: !final}
	tid := r.nodeID(false)
	if r.err == AnomalyNone {
		if tid.Type != NodeIDNumeric || tid.Namespace != 0 {
			return AnomalyUnknownService
		}
		m.HasTypeID, m.TypeID = true, tid.Numeric
		s, resp, ok := ServiceByTypeID(tid.Numeric)
		if !ok {
			return AnomalyUnknownService
		}
		m.Service, m.Response = s, resp
		m.decodeParams(&r)
	}
	if r.err == AnomalyTruncated && !final {
		m.Partial = true
		return AnomalyNone
	}
	return r.err
}

// decodeParams decodes what follows the type id.
func (m *Message) decodeParams(r *reader) {
	if m.Response {
		m.ServiceResult = r.responseHeader()
		if r.err == AnomalyNone {
			m.HasResult = true
		}
		if m.Service == ServiceOpenSecureChannel {
			r.skip(4) // ServerProtocolVersion
			r.skip(4) // SecurityToken.ChannelId
			m.TokenID = r.u32()
		}
		return
	}
	r.requestHeader()
	switch m.Service {
	case ServiceOpenSecureChannel:
		r.skip(4) // ClientProtocolVersion
		m.RequestType = r.u32()
		mode := r.u32()
		if r.err != AnomalyNone {
			return
		}
		if mode < 1 || mode > 3 {
			r.fail(AnomalyBadSecurityMode)
			return
		}
		m.Mode = SecurityMode(mode)
		if m.Policy == PolicyNone && m.Mode != ModeNone {
			r.fail(AnomalyBadSecurityMode)
		}
	case ServiceWrite:
		// WriteValue: NodeId, AttributeId, IndexRange, DataValue (≥ 10 bytes).
		n := r.arrayLen(10)
		for i := 0; i < n && r.err == AnomalyNone; i++ {
			id := r.nodeID(false)
			r.skip(4)
			r.str(MaxStringLength)
			r.dataValue(0)
			if !m.addNode(r, NodeID{}, id) {
				return
			}
		}
	case ServiceCall:
		// CallMethodRequest: ObjectId, MethodId, InputArguments (≥ 6 bytes).
		n := r.arrayLen(6)
		for i := 0; i < n && r.err == AnomalyNone; i++ {
			obj := r.nodeID(false)
			meth := r.nodeID(false)
			k := r.arrayLen(1)
			for j := 0; j < k && r.err == AnomalyNone; j++ {
				r.variant(0)
			}
			if !m.addNode(r, obj, meth) {
				return
			}
		}
	}
}

// addNode records one Write/Call NodeId once its element decoded whole (a
// NodeId cut by the end of a non-final chunk is left for the reassembled
// message).
func (m *Message) addNode(r *reader, obj, id NodeID) bool {
	if r.err != AnomalyNone {
		return false
	}
	if m.NumNodes == MaxNodes {
		r.fail(AnomalyTooManyNodes)
		return false
	}
	m.Objects[m.NumNodes] = obj
	m.Nodes[m.NumNodes] = id
	m.NumNodes++
	return true
}
