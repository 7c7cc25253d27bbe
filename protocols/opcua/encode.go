package opcua

import (
	"encoding/binary"
	"math"
)

// The encoder writes well-formed UA-TCP chunks for tests, the generators of
// the scenario suite and the gateway's native replies. It covers
// SecurityPolicy None only (no signing or encryption). Every function
// appends to dst and returns the extended slice.

// Hello holds the fields of HEL and ACK (§7.1.2.3, §7.1.2.4); EndpointURL
// is used by HEL only.
type Hello struct {
	ProtocolVersion   uint32
	ReceiveBufferSize uint32
	SendBufferSize    uint32
	MaxMessageSize    uint32
	MaxChunkCount     uint32
	EndpointURL       string
}

// SecureHeader holds the header fields of an OPN/MSG/CLO chunk (§6.7.2):
// TokenID is not used for OPN.
type SecureHeader struct {
	ChannelID      uint32
	TokenID        uint32
	SequenceNumber uint32
	RequestID      uint32
}

func appendU16(b []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

// appendString appends a String/ByteString (§5.2.2.4).
func appendString(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}

// appendNull appends a null String/ByteString/array (length -1).
func appendNull(b []byte) []byte { return appendU32(b, 0xFFFFFFFF) }

// startChunk appends a header with a placeholder size; endChunk fills it.
func startChunk(b []byte, typ string, chunk ChunkType) ([]byte, int) {
	start := len(b)
	b = append(b, typ...)
	b = append(b, byte(chunk))
	return appendU32(b, 0), start
}

func endChunk(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(b)-start))
	return b
}

// AppendHello appends a HEL message.
func AppendHello(dst []byte, h Hello) []byte {
	b, s := startChunk(dst, "HEL", ChunkFinal)
	b = appendU32(b, h.ProtocolVersion)
	b = appendU32(b, h.ReceiveBufferSize)
	b = appendU32(b, h.SendBufferSize)
	b = appendU32(b, h.MaxMessageSize)
	b = appendU32(b, h.MaxChunkCount)
	b = appendString(b, h.EndpointURL)
	return endChunk(b, s)
}

// AppendAcknowledge appends an ACK message (h.EndpointURL is ignored).
func AppendAcknowledge(dst []byte, h Hello) []byte {
	b, s := startChunk(dst, "ACK", ChunkFinal)
	b = appendU32(b, h.ProtocolVersion)
	b = appendU32(b, h.ReceiveBufferSize)
	b = appendU32(b, h.SendBufferSize)
	b = appendU32(b, h.MaxMessageSize)
	b = appendU32(b, h.MaxChunkCount)
	return endChunk(b, s)
}

// AppendError appends an ERR message (§7.1.2.5).
func AppendError(dst []byte, code uint32, reason string) []byte {
	b, s := startChunk(dst, "ERR", ChunkFinal)
	b = appendU32(b, code)
	b = appendString(b, reason)
	return endChunk(b, s)
}

// appendOPN appends an OPN chunk under SecurityPolicy None with body.
func appendOPN(dst []byte, h SecureHeader, body []byte) []byte {
	b, s := startChunk(dst, "OPN", ChunkFinal)
	b = appendU32(b, h.ChannelID)
	b = appendString(b, PolicyNone.URI())
	b = appendNull(b) // SenderCertificate
	b = appendNull(b) // ReceiverCertificateThumbprint
	b = appendU32(b, h.SequenceNumber)
	b = appendU32(b, h.RequestID)
	b = append(b, body...)
	return endChunk(b, s)
}

// AppendOpenRequest appends an OPN carrying an OpenSecureChannelRequest
// (Issue) under SecurityPolicy None asking for mode.
func AppendOpenRequest(dst []byte, h SecureHeader, mode SecurityMode) []byte {
	var body []byte
	body = AppendNodeID(body, Numeric(0, ServiceOpenSecureChannel.RequestTypeID()))
	body = appendRequestHeader(body, h.RequestID)
	body = appendU32(body, 0)            // ClientProtocolVersion
	body = appendU32(body, 0)            // RequestType Issue
	body = appendU32(body, uint32(mode)) // SecurityMode
	body = appendNull(body)              // ClientNonce
	body = appendU32(body, 3600000)      // RequestedLifetime
	return appendOPN(dst, h, body)
}

// AppendOpenResponse appends an OPN carrying an OpenSecureChannelResponse
// that issues token tokenID for channel h.ChannelID.
func AppendOpenResponse(dst []byte, h SecureHeader, tokenID uint32) []byte {
	var body []byte
	body = AppendNodeID(body, Numeric(0, ServiceOpenSecureChannel.ResponseTypeID()))
	body = appendResponseHeader(body, h.RequestID, 0)
	body = appendU32(body, 0) // ServerProtocolVersion
	body = appendU32(body, h.ChannelID)
	body = appendU32(body, tokenID)
	body = binary.LittleEndian.AppendUint64(body, 0) // CreatedAt
	body = appendU32(body, 3600000)                  // RevisedLifetime
	body = appendNull(body)                          // ServerNonce
	return appendOPN(dst, h, body)
}

// AppendMessage appends one MSG chunk with the given body bytes.
func AppendMessage(dst []byte, chunk ChunkType, h SecureHeader, body []byte) []byte {
	return appendSym(dst, "MSG", chunk, h, body)
}

func appendSym(dst []byte, typ string, chunk ChunkType, h SecureHeader, body []byte) []byte {
	b, s := startChunk(dst, typ, chunk)
	b = appendU32(b, h.ChannelID)
	b = appendU32(b, h.TokenID)
	b = appendU32(b, h.SequenceNumber)
	b = appendU32(b, h.RequestID)
	b = append(b, body...)
	return endChunk(b, s)
}

// AppendChunks splits body into MSG chunks of at most maxBody body bytes
// each (C...C F), numbering them from h.SequenceNumber.
func AppendChunks(dst []byte, h SecureHeader, body []byte, maxBody int) []byte {
	if maxBody < 1 {
		maxBody = 1
	}
	for {
		n := min(len(body), maxBody)
		chunk := ChunkIntermediate
		if n == len(body) {
			chunk = ChunkFinal
		}
		dst = AppendMessage(dst, chunk, h, body[:n])
		body = body[n:]
		h.SequenceNumber++
		if chunk == ChunkFinal {
			return dst
		}
	}
}

// AppendAbort appends an abort chunk ('A') with an error and reason
// (§6.7.3).
func AppendAbort(dst []byte, h SecureHeader, code uint32, reason string) []byte {
	var body []byte
	body = appendU32(body, code)
	body = appendString(body, reason)
	return AppendMessage(dst, ChunkAbort, h, body)
}

// AppendClose appends a CLO chunk carrying a CloseSecureChannelRequest.
func AppendClose(dst []byte, h SecureHeader) []byte {
	var body []byte
	body = AppendNodeID(body, Numeric(0, ServiceCloseSecureChannel.RequestTypeID()))
	body = appendRequestHeader(body, h.RequestID)
	return appendSym(dst, "CLO", ChunkFinal, h, body)
}

// AppendNodeID appends n in its most compact encoding (§5.2.2.9).
func AppendNodeID(dst []byte, n NodeID) []byte {
	switch n.Type {
	case NodeIDNumeric:
		switch {
		case n.Namespace == 0 && n.Numeric <= 0xFF:
			return append(dst, 0x00, byte(n.Numeric))
		case n.Namespace <= 0xFF && n.Numeric <= 0xFFFF:
			dst = append(dst, 0x01, byte(n.Namespace))
			return appendU16(dst, uint16(n.Numeric))
		}
		dst = append(dst, 0x02)
		dst = appendU16(dst, n.Namespace)
		return appendU32(dst, n.Numeric)
	case NodeIDString:
		dst = append(dst, 0x03)
		dst = appendU16(dst, n.Namespace)
		return appendString(dst, string(n.Bytes))
	case NodeIDGUID:
		dst = append(dst, 0x04)
		dst = appendU16(dst, n.Namespace)
		var g [16]byte
		copy(g[:], n.Bytes)
		return append(dst, g[:]...)
	default:
		dst = append(dst, 0x05)
		dst = appendU16(dst, n.Namespace)
		return appendString(dst, string(n.Bytes))
	}
}

// appendRequestHeader appends a RequestHeader (OPC 10000-4 §7.28) with a
// null authentication token.
func appendRequestHeader(b []byte, handle uint32) []byte {
	b = append(b, 0x00, 0x00)                  // AuthenticationToken i=0
	b = binary.LittleEndian.AppendUint64(b, 0) // Timestamp
	b = appendU32(b, handle)                   // RequestHandle
	b = appendU32(b, 0)                        // ReturnDiagnostics
	b = appendNull(b)                          // AuditEntryId
	b = appendU32(b, 10000)                    // TimeoutHint
	return append(b, 0x00, 0x00, 0x00)         // AdditionalHeader: i=0, no body
}

// appendResponseHeader appends a ResponseHeader (OPC 10000-4 §7.29).
func appendResponseHeader(b []byte, handle, result uint32) []byte {
	b = binary.LittleEndian.AppendUint64(b, 0) // Timestamp
	b = appendU32(b, handle)
	b = appendU32(b, result)
	b = append(b, 0x00)                // ServiceDiagnostics: empty
	b = appendNull(b)                  // StringTable
	return append(b, 0x00, 0x00, 0x00) // AdditionalHeader
}

// AppendRequest appends a request body that has only a RequestHeader
// after its type id (e.g. a bare service for tests of type id handling).
func AppendRequest(dst []byte, s Service, handle uint32) []byte {
	dst = AppendNodeID(dst, Numeric(0, s.RequestTypeID()))
	return appendRequestHeader(dst, handle)
}

// AppendResponse appends the response body of service s: ResponseHeader
// with the given ServiceResult, then empty Results and DiagnosticInfos
// arrays (the shape of Read, Write, Browse and Call responses).
func AppendResponse(dst []byte, s Service, handle, result uint32) []byte {
	dst = AppendNodeID(dst, Numeric(0, s.ResponseTypeID()))
	dst = appendResponseHeader(dst, handle, result)
	dst = appendU32(dst, 0)
	return appendU32(dst, 0)
}

// AppendReadRequest appends a ReadRequest body reading the Value attribute
// (13) of nodes.
func AppendReadRequest(dst []byte, handle uint32, nodes ...NodeID) []byte {
	dst = AppendRequest(dst, ServiceRead, handle)
	dst = binary.LittleEndian.AppendUint64(dst, 0) // MaxAge
	dst = appendU32(dst, 3)                        // TimestampsToReturn Neither
	dst = appendU32(dst, uint32(len(nodes)))
	for _, n := range nodes {
		dst = AppendNodeID(dst, n)
		dst = appendU32(dst, 13) // AttributeId Value
		dst = appendNull(dst)    // IndexRange
		dst = appendU16(dst, 0)  // DataEncoding.NamespaceIndex
		dst = appendNull(dst)    // DataEncoding.Name
	}
	return dst
}

// AppendBrowseRequest appends a BrowseRequest body browsing the forward
// hierarchical references of nodes.
func AppendBrowseRequest(dst []byte, handle uint32, nodes ...NodeID) []byte {
	dst = AppendRequest(dst, ServiceBrowse, handle)
	dst = append(dst, 0x00, 0x00)                  // View.ViewId i=0
	dst = binary.LittleEndian.AppendUint64(dst, 0) // View.Timestamp
	dst = appendU32(dst, 0)                        // View.ViewVersion
	dst = appendU32(dst, 0)                        // RequestedMaxReferencesPerNode
	dst = appendU32(dst, uint32(len(nodes)))
	for _, n := range nodes {
		dst = AppendNodeID(dst, n)
		dst = appendU32(dst, 0)                 // BrowseDirection Forward
		dst = AppendNodeID(dst, Numeric(0, 33)) // HierarchicalReferences
		dst = append(dst, 1)                    // IncludeSubtypes
		dst = appendU32(dst, 0)                 // NodeClassMask
		dst = appendU32(dst, 0x3F)              // ResultMask
	}
	return dst
}

// WriteValue is one value of a WriteRequest: a Double written to the
// Value attribute of Node.
type WriteValue struct {
	Node  NodeID
	Value float64
}

// AppendWriteRequest appends a WriteRequest body.
func AppendWriteRequest(dst []byte, handle uint32, values ...WriteValue) []byte {
	dst = AppendRequest(dst, ServiceWrite, handle)
	dst = appendU32(dst, uint32(len(values)))
	for _, v := range values {
		dst = AppendNodeID(dst, v.Node)
		dst = appendU32(dst, 13)    // AttributeId Value
		dst = appendNull(dst)       // IndexRange
		dst = append(dst, 0x01, 11) // DataValue{Value}, Variant Double
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v.Value))
	}
	return dst
}

// CallMethod is one method call of a CallRequest with Double arguments.
type CallMethod struct {
	Object, Method NodeID
	Args           []float64
}

// AppendCallRequest appends a CallRequest body.
func AppendCallRequest(dst []byte, handle uint32, calls ...CallMethod) []byte {
	dst = AppendRequest(dst, ServiceCall, handle)
	dst = appendU32(dst, uint32(len(calls)))
	for _, c := range calls {
		dst = AppendNodeID(dst, c.Object)
		dst = AppendNodeID(dst, c.Method)
		dst = appendU32(dst, uint32(len(c.Args)))
		for _, a := range c.Args {
			dst = append(dst, 11)
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(a))
		}
	}
	return dst
}
