package opcua

import "encoding/binary"

// Limits from OPC 10000-6 and sanity caps for hostile input.
const (
	// MaxURLLength is the longest EndpointUrl / ServerUri / Reason allowed
	// in HEL, RHE and ERR (§7.1.2.3-§7.1.2.6).
	MaxURLLength = 4096
	// MaxPolicyURILength caps SecurityPolicyUri (§6.7.2.3: at most 255 bytes).
	MaxPolicyURILength = 255
	// MaxStringLength caps any other String/ByteString in a body; longer is
	// abnormal_string_length (no chunk is that large).
	MaxStringLength = 1 << 24
	// MaxDepth bounds nesting of Variant/DataValue/DiagnosticInfo/
	// ExtensionObject while skipping values.
	MaxDepth = 16
)

// reader is a bounds-checked little-endian cursor over one buffer. The
// first problem sticks in err; later reads return zero values. It lives on
// the caller's stack and allocates nothing.
type reader struct {
	b   []byte
	off int
	err Anomaly
	// partial: b is the first part of a body that continues in later
	// chunks, so an array may be longer than the bytes at hand.
	partial bool
	// lax: a NodeId (not expanded) with ExpandedNodeId flag bits is read
	// as if they were clear, as some decoders do (Channel.plaintext).
	lax bool
}

func (r *reader) fail(a Anomaly) {
	if r.err == AnomalyNone {
		r.err = a
	}
}

func (r *reader) left() int { return len(r.b) - r.off }

// need reports whether n more bytes are present, recording truncated if not.
func (r *reader) need(n int) bool {
	if r.err != AnomalyNone {
		return false
	}
	if n < 0 || r.left() < n {
		r.fail(AnomalyTruncated)
		return false
	}
	return true
}

func (r *reader) u8() byte {
	if !r.need(1) {
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.LittleEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) skip(n int) {
	if r.need(n) {
		r.off += n
	}
}

// bytes returns the next n bytes, aliased.
func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// str reads a String/ByteString (Int32 length, -1 = null) of at most max
// bytes and returns it aliased.
func (r *reader) str(max int) []byte {
	l := int32(r.u32())
	if r.err != AnomalyNone {
		return nil
	}
	if l == -1 {
		return nil
	}
	if l < -1 || int64(l) > int64(max) {
		r.fail(AnomalyAbnormalStringLength)
		return nil
	}
	return r.bytes(int(l))
}

// arrayLen reads an array length (-1 = null → 0). minElem is the smallest
// encoded size of one element: a count that cannot fit in the remaining
// bytes is abnormal, which also bounds every loop over elements.
func (r *reader) arrayLen(minElem int) int {
	l := int32(r.u32())
	if r.err != AnomalyNone {
		return 0
	}
	if l == -1 {
		return 0
	}
	need := int64(l) * int64(minElem)
	switch {
	case l < -1:
		r.fail(AnomalyAbnormalArrayLength)
		return 0
	case need > int64(r.left()) && r.partial && need <= DefaultMaxMessageSize:
		// The rest of the array is in the next chunk.
		r.fail(AnomalyTruncated)
		return 0
	case need > int64(r.left()):
		r.fail(AnomalyAbnormalArrayLength)
		return 0
	}
	return int(l)
}

// nodeID decodes a NodeId (§5.2.2.9). expanded allows the ExpandedNodeId
// flags (NamespaceUri, ServerIndex), which are skipped.
func (r *reader) nodeID(expanded bool) NodeID {
	enc := r.u8()
	if r.err != AnomalyNone {
		return NodeID{}
	}
	flags := enc & 0xC0
	if flags != 0 && !expanded {
		if !r.lax {
			r.fail(AnomalyBadNodeID)
			return NodeID{}
		}
		flags = 0
	}
	var n NodeID
	switch enc & 0x3F {
	case 0: // TwoByte
		n.Numeric = uint32(r.u8())
	case 1: // FourByte
		n.Namespace = uint16(r.u8())
		n.Numeric = uint32(r.u16())
	case 2: // Numeric
		n.Namespace = r.u16()
		n.Numeric = r.u32()
	case 3: // String
		n.Type = NodeIDString
		n.Namespace = r.u16()
		n.Bytes = r.str(MaxStringLength)
	case 4: // Guid
		n.Type = NodeIDGUID
		n.Namespace = r.u16()
		n.Bytes = r.bytes(16)
	case 5: // ByteString
		n.Type = NodeIDOpaque
		n.Namespace = r.u16()
		n.Bytes = r.str(MaxStringLength)
	default:
		r.fail(AnomalyBadNodeID)
		return NodeID{}
	}
	if flags&0x80 != 0 {
		r.str(MaxStringLength) // NamespaceUri
	}
	if flags&0x40 != 0 {
		r.skip(4) // ServerIndex
	}
	if r.err != AnomalyNone {
		return NodeID{}
	}
	return n
}

// extensionObject skips an ExtensionObject (§5.2.2.15).
func (r *reader) extensionObject() {
	r.nodeID(false)
	switch r.u8() {
	case 0:
	case 1, 2:
		r.str(MaxStringLength)
	default:
		r.fail(AnomalyBadEncoding)
	}
}

// diagnosticInfo skips a DiagnosticInfo (§5.2.2.12).
func (r *reader) diagnosticInfo(depth int) {
	if depth > MaxDepth {
		r.fail(AnomalyBadEncoding)
		return
	}
	m := r.u8()
	if m&0x01 != 0 {
		r.skip(4) // SymbolicId
	}
	if m&0x02 != 0 {
		r.skip(4) // NamespaceUri
	}
	if m&0x08 != 0 {
		r.skip(4) // Locale
	}
	if m&0x04 != 0 {
		r.skip(4) // LocalizedText
	}
	if m&0x10 != 0 {
		r.str(MaxStringLength) // AdditionalInfo
	}
	if m&0x20 != 0 {
		r.skip(4) // InnerStatusCode
	}
	if m&0x40 != 0 {
		r.diagnosticInfo(depth + 1)
	}
}

// builtinMinSize is the smallest encoding of each built-in type id 1-25
// (§5.1.2), used to bound array counts.
var builtinMinSize = [26]int{0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 4, 8, 16, 4, 4, 2, 2, 4, 6, 1, 3, 1, 1, 1}

// builtin skips one value of built-in type t (1-25).
func (r *reader) builtin(t byte, depth int) {
	switch t {
	case 1, 2, 3:
		r.skip(1)
	case 4, 5:
		r.skip(2)
	case 6, 7, 10, 19:
		r.skip(4)
	case 8, 9, 11, 13:
		r.skip(8)
	case 14:
		r.skip(16)
	case 12, 15, 16:
		r.str(MaxStringLength)
	case 17:
		r.nodeID(false)
	case 18:
		r.nodeID(true)
	case 20: // QualifiedName
		r.skip(2)
		r.str(MaxStringLength)
	case 21: // LocalizedText
		m := r.u8()
		if m&0x01 != 0 {
			r.str(MaxStringLength)
		}
		if m&0x02 != 0 {
			r.str(MaxStringLength)
		}
	case 22:
		r.extensionObject()
	case 23:
		r.dataValue(depth + 1)
	case 24:
		r.variant(depth + 1)
	case 25:
		r.diagnosticInfo(depth + 1)
	default:
		r.fail(AnomalyBadEncoding)
	}
}

// variant skips a Variant (§5.2.2.16).
func (r *reader) variant(depth int) {
	if depth > MaxDepth {
		r.fail(AnomalyBadEncoding)
		return
	}
	m := r.u8()
	if r.err != AnomalyNone {
		return
	}
	t := m & 0x3F
	if t > 25 {
		r.fail(AnomalyBadEncoding)
		return
	}
	if m&0x80 == 0 {
		if m&0x40 != 0 {
			r.fail(AnomalyBadEncoding)
			return
		}
		if t != 0 {
			r.builtin(t, depth)
		}
		return
	}
	if t == 0 {
		r.fail(AnomalyBadEncoding)
		return
	}
	n := r.arrayLen(builtinMinSize[t])
	for i := 0; i < n && r.err == AnomalyNone; i++ {
		r.builtin(t, depth)
	}
	if m&0x40 != 0 {
		d := r.arrayLen(4)
		r.skip(4 * d)
	}
}

// dataValue skips a DataValue (§5.2.2.17).
func (r *reader) dataValue(depth int) {
	if depth > MaxDepth {
		r.fail(AnomalyBadEncoding)
		return
	}
	m := r.u8()
	if m&0x01 != 0 {
		r.variant(depth + 1)
	}
	if m&0x02 != 0 {
		r.skip(4)
	}
	if m&0x04 != 0 {
		r.skip(8)
	}
	if m&0x10 != 0 {
		r.skip(2)
	}
	if m&0x08 != 0 {
		r.skip(8)
	}
	if m&0x20 != 0 {
		r.skip(2)
	}
}

// requestHeader skips a RequestHeader (OPC 10000-4 §7.28).
func (r *reader) requestHeader() {
	r.nodeID(false)   // AuthenticationToken
	r.skip(8 + 4 + 4) // Timestamp, RequestHandle, ReturnDiagnostics
	r.str(MaxStringLength)
	r.skip(4) // TimeoutHint
	r.extensionObject()
}

// responseHeader reads a ResponseHeader (OPC 10000-4 §7.29) up to and
// including ServiceResult, skipping the rest.
func (r *reader) responseHeader() (result uint32) {
	r.skip(8 + 4) // Timestamp, RequestHandle
	result = r.u32()
	r.diagnosticInfo(0)
	n := r.arrayLen(4) // StringTable
	for i := 0; i < n && r.err == AnomalyNone; i++ {
		r.str(MaxStringLength)
	}
	r.extensionObject()
	return result
}
