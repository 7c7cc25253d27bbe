package modbus

import "encoding/binary"

// Framer splits a Modbus/TCP byte stream into ADUs (TCP guide §3.1.3: the
// MBAP length field delimits each ADU; there is no other framing). It keeps
// no state, so the zero value is ready and one Framer may serve any number
// of streams; it is safe for concurrent use. The caller owns the buffering:
// it keeps the unconsumed bytes and calls Next again when more arrive.
type Framer struct{}

// Next examines the bytes at the start of b:
//
//   - n > 0: b[:n] is one complete ADU (n = 6 + MBAP length); need is 0.
//   - n == 0, need > 0: b is the beginning of an ADU; at least need more
//     bytes are required (when the header is still incomplete, need is the
//     minimum to reach the smallest possible ADU, so call again).
//   - err != nil (ErrProtocolID or ErrLength, both matching ErrNotModbus):
//     the bytes cannot be Modbus/TCP. The verdict is given as soon as the
//     offending header field has arrived, so a gateway can deny non-Modbus
//     bytes on the Modbus port without waiting for more.
//
// An MBAP length of 255 (a 261-byte ADU) is accepted only for function
// code 90, Schneider UMAS, whose devices send it (see FuncUMAS).
//
// Next never reads beyond b, never allocates and always returns n <= len(b).
func (Framer) Next(b []byte) (n int, need int, err error) {
	if len(b) >= 4 && binary.BigEndian.Uint16(b[2:4]) != 0 {
		return 0, 0, ErrProtocolID
	}
	if len(b) < 6 {
		return 0, MBAPLen + 1 - len(b), nil
	}
	l := int(binary.BigEndian.Uint16(b[4:6]))
	if l < MinLengthField || l > MaxUMASLengthField {
		return 0, 0, ErrLength
	}
	if l > MaxLengthField {
		// Only UMAS (FC 90) ADUs may exceed the specification's 260
		// bytes, by one: wait for the function code to decide.
		if len(b) <= MBAPLen {
			return 0, MBAPLen + 1 - len(b), nil
		}
		if l > maxLengthField(b[MBAPLen]) {
			return 0, 0, ErrLength
		}
	}
	total := 6 + l
	if len(b) < total {
		return 0, total - len(b), nil
	}
	return total, 0, nil
}
