package opcua

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// NodeIDType is the identifier type of a NodeId (OPC 10000-3 §8.2.3).
type NodeIDType uint8

// NodeId identifier types. The zero value is numeric.
const (
	NodeIDNumeric NodeIDType = iota
	NodeIDString
	NodeIDGUID
	NodeIDOpaque // ByteString identifier
)

// NodeID is a NodeId as a small value: namespace index plus either a numeric
// identifier or the identifier bytes (String: UTF-8; Guid: the 16 bytes as
// encoded on the wire; ByteString: raw). Bytes of a decoded NodeID alias
// the decoder's input. The zero value is i=0 (the null NodeId).
type NodeID struct {
	Type      NodeIDType
	Namespace uint16
	Numeric   uint32
	Bytes     []byte
}

// Numeric returns the numeric NodeId ns=ns;i=id.
func Numeric(ns uint16, id uint32) NodeID { return NodeID{Namespace: ns, Numeric: id} }

// StringID returns the string NodeId ns=ns;s=s (Bytes aliases a copy of s).
func StringID(ns uint16, s string) NodeID {
	return NodeID{Type: NodeIDString, Namespace: ns, Bytes: []byte(s)}
}

// Equal reports whether two NodeIds are the same.
func (n NodeID) Equal(o NodeID) bool {
	if n.Type != o.Type || n.Namespace != o.Namespace {
		return false
	}
	if n.Type == NodeIDNumeric {
		return n.Numeric == o.Numeric
	}
	return string(n.Bytes) == string(o.Bytes)
}

// String formats the NodeId as in OPC 10000-6 §5.3.1.10: "i=85",
// "ns=2;s=Line1.Setpoint", "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
// "ns=1;b=M/RbKBsRVkePCePcx24oRA==". Policies match on this form.
func (n NodeID) String() string { return string(n.AppendString(nil)) }

// AppendString appends String's form to dst (no allocation when dst has
// room).
func (n NodeID) AppendString(dst []byte) []byte {
	if n.Namespace != 0 {
		dst = append(dst, "ns="...)
		dst = strconv.AppendUint(dst, uint64(n.Namespace), 10)
		dst = append(dst, ';')
	}
	switch n.Type {
	case NodeIDNumeric:
		dst = append(dst, "i="...)
		dst = strconv.AppendUint(dst, uint64(n.Numeric), 10)
	case NodeIDString:
		dst = append(dst, "s="...)
		dst = append(dst, n.Bytes...)
	case NodeIDGUID:
		dst = append(dst, "g="...)
		dst = appendGUID(dst, n.Bytes)
	case NodeIDOpaque:
		dst = append(dst, "b="...)
		dst = base64.StdEncoding.AppendEncode(dst, n.Bytes)
	}
	return dst
}

// appendGUID formats 16 wire bytes (Data1..3 little endian) as text.
func appendGUID(dst, g []byte) []byte {
	if len(g) != 16 {
		return append(dst, "invalid"...)
	}
	var t [16]byte
	binary.BigEndian.PutUint32(t[0:], binary.LittleEndian.Uint32(g[0:]))
	binary.BigEndian.PutUint16(t[4:], binary.LittleEndian.Uint16(g[4:]))
	binary.BigEndian.PutUint16(t[6:], binary.LittleEndian.Uint16(g[6:]))
	copy(t[8:], g[8:])
	dst = hex.AppendEncode(dst, t[0:4])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, t[4:6])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, t[6:8])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, t[8:10])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, t[10:16])
}

// ErrBadNodeIDString is returned by ParseNodeID for text that is not a
// NodeId (errors.Is matches every *NodeIDTextError).
var ErrBadNodeIDString = errors.New("opcua: malformed NodeId text")

// NodeIDTextError is ParseNodeID's error: the text and what is wrong with
// it. Its message ("bad NodeId \"ns=2,s=X\": missing ';' after namespace")
// is written for people editing a policy file; callers add the file and
// line.
type NodeIDTextError struct {
	Text   string // the text given to ParseNodeID
	Detail string // ": what is wrong" or " (want ...)"
}

func (e *NodeIDTextError) Error() string { return "bad NodeId " + strconv.Quote(e.Text) + e.Detail }

// Is makes errors.Is(err, ErrBadNodeIDString) true.
func (e *NodeIDTextError) Is(target error) bool { return target == ErrBadNodeIDString }

const nodeIDSyntax = " (want [ns=N;]i=|s=|g=|b=)"

// ParseNodeID parses the text form produced by String (OPC 10000-6
// §5.3.1.10: [ns=N;]i=|s=|g=|b=, e.g. "ns=2;s=Line1.Setpoint", "i=2253").
// A GUID is held in wire order, as decoded NodeIds hold it, so the result
// is Equal to the NodeId the decoder reads. Errors are *NodeIDTextError.
// It is for the control plane (it allocates).
func ParseNodeID(s string) (NodeID, error) {
	bad := func(detail string) (NodeID, error) {
		return NodeID{}, &NodeIDTextError{Text: s, Detail: detail}
	}
	var n NodeID
	rest := s
	if strings.HasPrefix(rest, "ns=") {
		nsStr, after, ok := strings.Cut(rest[3:], ";")
		if !ok {
			return bad(": missing ';' after namespace")
		}
		ns, err := strconv.ParseUint(nsStr, 10, 16)
		if err != nil {
			return bad(": namespace " + strconv.Quote(nsStr))
		}
		n.Namespace = uint16(ns)
		rest = after
	}
	if len(rest) < 2 || rest[1] != '=' {
		return bad(nodeIDSyntax)
	}
	val := rest[2:]
	switch rest[0] {
	case 'i':
		v, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return bad(": numeric id " + strconv.Quote(val))
		}
		n.Numeric = uint32(v)
	case 's':
		if val == "" {
			return bad(": empty string id")
		}
		n.Type, n.Bytes = NodeIDString, []byte(val)
	case 'g':
		h := strings.ReplaceAll(val, "-", "")
		t, err := hex.DecodeString(h)
		if err != nil || len(t) != 16 || len(val) != 36 {
			return bad(": GUID " + strconv.Quote(val))
		}
		// Wire order: Data1-3 little endian, Data4 as is (OPC 10000-6 §5.1.3).
		g := make([]byte, 16)
		binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(t[0:]))
		binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(t[4:]))
		binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(t[6:]))
		copy(g[8:], t[8:])
		n.Type, n.Bytes = NodeIDGUID, g
	case 'b':
		b, err := base64.StdEncoding.DecodeString(val)
		if err != nil {
			return bad(": opaque id is not base64")
		}
		n.Type, n.Bytes = NodeIDOpaque, b
	default:
		return bad(nodeIDSyntax)
	}
	return n, nil
}
