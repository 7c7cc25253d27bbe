package modbus

import "encoding/binary"

// Sizes from the Modbus TCP Implementation Guide V1.0b §3.1.2-§3.1.3 and the
// Modbus Application Protocol V1.1b3 §4.1.
const (
	// MBAPLen is the size of the MBAP header including the unit id.
	MBAPLen = 7
	// MaxPDULen is the largest PDU: function code plus 252 data bytes (MAP §4.1).
	MaxPDULen = 253
	// MinLengthField and MaxLengthField bound the MBAP length field, which
	// counts the unit id plus the PDU (at least the function code).
	MinLengthField = 2
	MaxLengthField = 1 + MaxPDULen
	// MaxADULen is the largest Modbus/TCP ADU on the wire (260 bytes).
	MaxADULen = 6 + MaxLengthField
)

// MBAP is a view of a Modbus Application Protocol header (TCP guide §3.1.3):
//
//	0-1 transaction id, 2-3 protocol id (0 = Modbus), 4-5 length (bytes that
//	follow: unit id + PDU), 6 unit id.
//
// The accessors read the underlying bytes without copying; call IsValid (or
// check len >= MBAPLen) first, they panic on a short slice like any slice
// index.
type MBAP []byte

// IsValid reports whether the view is long enough to hold a header. It does
// not judge the values: see Framer.Next and ADU.Decode for that.
func (h MBAP) IsValid() bool { return len(h) >= MBAPLen }

// TransactionID returns the transaction identifier the server echoes.
func (h MBAP) TransactionID() uint16 { return binary.BigEndian.Uint16(h[0:2]) }

// ProtocolID returns the protocol identifier; 0 means Modbus.
func (h MBAP) ProtocolID() uint16 { return binary.BigEndian.Uint16(h[2:4]) }

// Length returns the length field: the number of bytes after it (unit id
// plus PDU).
func (h MBAP) Length() uint16 { return binary.BigEndian.Uint16(h[4:6]) }

// Unit returns the unit identifier (the addressed slave behind a gateway;
// 0xFF or 0 when the server is addressed directly, TCP guide §4.4.1.1).
func (h MBAP) Unit() uint8 { return h[6] }

// ADULen returns the full ADU size the header announces (6 + Length).
func (h MBAP) ADULen() int { return 6 + int(h.Length()) }

// PDU returns the PDU bytes after the header, clipped to the announced
// length and to the slice.
func (h MBAP) PDU() []byte {
	end := h.ADULen()
	if end > len(h) {
		end = len(h)
	}
	if end < MBAPLen {
		return nil
	}
	return h[MBAPLen:end]
}
