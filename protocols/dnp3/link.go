package dnp3

// Sizes of the data link layer (IEEE 1815-2012 clause 9.2.4).
const (
	// Port is the IANA port of DNP3 over TCP and UDP (IEEE 1815-2012 Annex E).
	Port = 20000
	// HeaderLen is the fixed header: start (2), LENGTH, CONTROL,
	// DESTINATION (2), SOURCE (2), CRC (2).
	HeaderLen = 10
	// MinLength and MaxLength bound the LENGTH octet, which counts CONTROL,
	// DESTINATION, SOURCE and user data but no CRC (clause 9.2.4.1.2).
	MinLength = 5
	MaxLength = 255
	// MaxUserData is the largest user data of one frame (LENGTH 255 - 5).
	MaxUserData = MaxLength - MinLength
	// MaxFrameLen is the largest frame on the wire: header plus 250 user
	// octets in 16 blocks, each with its own CRC.
	MaxFrameLen = HeaderLen + MaxUserData + 2*((MaxUserData+15)/16)
	// blockLen is the size of a data block before its CRC.
	blockLen = 16
)

// Start octets of every link frame.
const (
	start0 = 0x05
	start1 = 0x64
)

// CONTROL octet bits (clause 9.2.4.1.3).
const (
	CtrlDIR = 0x80 // set on frames from the master
	CtrlPRM = 0x40 // set on frames from the primary (initiating) station
	CtrlFCB = 0x20 // frame count bit (primary)
	CtrlFCV = 0x10 // frame count valid (primary); DFC on secondary frames
)

// Broadcast destinations (clause 9.2.5.3.2).
const (
	BroadcastNoConfirm       = 0xFFFD // outstations shall not request confirmation
	BroadcastConfirm         = 0xFFFE // outstations shall request confirmation
	BroadcastConfirmOptional = 0xFFFF // confirmation optional
)

// IsBroadcast reports whether addr is one of the three broadcast addresses.
func IsBroadcast(addr uint16) bool { return addr >= BroadcastNoConfirm }

// LinkFunc is a data link function: the PRM bit (0x40) together with the
// 4-bit function code of the CONTROL octet, so that primary and secondary
// codes stay distinct (clause 9.2.4.1.3.5, Tables 9-1 and 9-2).
type LinkFunc uint8

// Link functions.
const (
	LinkAck          LinkFunc = 0x00 // secondary: ACK
	LinkNack         LinkFunc = 0x01 // secondary: NACK
	LinkStatus       LinkFunc = 0x0B // secondary: LINK_STATUS
	LinkNotSupported LinkFunc = 0x0F // secondary: NOT_SUPPORTED

	LinkResetLinkStates     LinkFunc = 0x40 // primary: RESET_LINK_STATES
	LinkResetUserProcess    LinkFunc = 0x41 // primary: obsolete
	LinkTestLinkStates      LinkFunc = 0x42 // primary: TEST_LINK_STATES
	LinkConfirmedUserData   LinkFunc = 0x43 // primary: CONFIRMED_USER_DATA
	LinkUnconfirmedUserData LinkFunc = 0x44 // primary: UNCONFIRMED_USER_DATA
	LinkRequestLinkStatus   LinkFunc = 0x49 // primary: REQUEST_LINK_STATUS
)

// Code returns the 4-bit function code.
func (f LinkFunc) Code() uint8 { return uint8(f) & 0x0F }

// Primary reports whether the function is sent by a primary station.
func (f LinkFunc) Primary() bool { return f&CtrlPRM != 0 }

// String returns the snake_case name of the function, or "primary_N" /
// "secondary_N" for codes the standard reserves.
func (f LinkFunc) String() string {
	switch f {
	case LinkAck:
		return "ack"
	case LinkNack:
		return "nack"
	case LinkStatus:
		return "link_status"
	case LinkNotSupported:
		return "not_supported"
	case LinkResetLinkStates:
		return "reset_link_states"
	case LinkResetUserProcess:
		return "reset_user_process"
	case LinkTestLinkStates:
		return "test_link_states"
	case LinkConfirmedUserData:
		return "confirmed_user_data"
	case LinkUnconfirmedUserData:
		return "unconfirmed_user_data"
	case LinkRequestLinkStatus:
		return "request_link_status"
	}
	if f.Primary() {
		return "primary_" + itoa(int(f.Code()))
	}
	return "secondary_" + itoa(int(f.Code()))
}

// MarshalText encodes the function by name, so that offline JSON output
// shows "unconfirmed_user_data" rather than a number that hides PRM.
func (f LinkFunc) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// carriesUserData reports whether a frame with this function has user data.
func (f LinkFunc) carriesUserData() bool {
	return f == LinkConfirmedUserData || f == LinkUnconfirmedUserData
}

// FrameLen returns the on-the-wire length of a frame with the given LENGTH
// octet, or 0 when length is below MinLength.
func FrameLen(length uint8) int {
	if length < MinLength {
		return 0
	}
	n := int(length) - MinLength
	return HeaderLen + n + 2*((n+blockLen-1)/blockLen)
}

// Framer finds link frames in a byte stream. It keeps no state: the stream
// position is the caller's, which makes it safe to share between goroutines.
type Framer struct{}

// Next examines the start of b, the unconsumed bytes of one direction of a
// stream, and reports what to do with them:
//
//   - n > 0, err == nil: b[:n] is one whole frame whose start octets,
//     LENGTH and header CRC are valid; pass it to LinkFrame.Decode, which
//     checks the data block CRCs.
//   - n == 0, need > 0: more bytes are needed; at least need more.
//   - n > 0, err != nil: skip b[:n]. ErrBadStart means b[:n] is garbage
//     before the next possible start (resynchronisation, clause 9.2.4.1.1).
//     ErrLinkCRC and ErrBadLength mean the header at b[0] is corrupt: n is
//     2 (the start octets) so that the next call resynchronises, because
//     a corrupt LENGTH cannot be trusted to skip the frame.
//
// Next never allocates and never reads beyond b.
func (Framer) Next(b []byte) (n int, need int, err error) {
	if len(b) == 0 {
		return 0, HeaderLen, nil
	}
	if b[0] != start0 || (len(b) > 1 && b[1] != start1) {
		// Resynchronise: skip to the next 0x05 0x64, or keep a trailing
		// 0x05 that may start a frame in the next bytes.
		for i := 1; i < len(b); i++ {
			if b[i] != start0 {
				continue
			}
			if i+1 == len(b) || b[i+1] == start1 {
				return i, 0, ErrBadStart
			}
		}
		return len(b), 0, ErrBadStart
	}
	if len(b) < HeaderLen {
		return 0, HeaderLen - len(b), nil
	}
	if !crcOK(b[:8], b[8:10]) {
		return 2, 0, ErrLinkCRC
	}
	fl := FrameLen(b[2])
	if fl == 0 {
		return 2, 0, ErrBadLength
	}
	if len(b) < fl {
		return 0, fl - len(b), nil
	}
	return fl, 0, nil
}

// LinkFrame is one decoded data link frame (IEEE 1815-2012 clause 9.2.4).
// Decode fills it in place; the user data is copied into the frame, so the
// frame does not alias the decoded bytes. The zero value is an empty frame.
type LinkFrame struct {
	Length  uint8    // LENGTH octet
	Control uint8    // CONTROL octet
	Func    LinkFunc // PRM and function code from Control
	Dst     uint16   // DESTINATION address
	Src     uint16   // SOURCE address
	// Anomaly is the first anomaly found; Decode returns an error for every
	// anomaly except AnomalyBroadcast, which is legal DNP3.
	Anomaly Anomaly

	n    uint8 // user data length
	data [MaxUserData]byte
}

// FromMaster reports the DIR bit: the frame travels from the master.
func (f *LinkFrame) FromMaster() bool { return f.Control&CtrlDIR != 0 }

// Primary reports the PRM bit.
func (f *LinkFrame) Primary() bool { return f.Control&CtrlPRM != 0 }

// FCB reports the frame count bit (primary frames).
func (f *LinkFrame) FCB() bool { return f.Control&CtrlFCB != 0 }

// FCV reports frame count valid on primary frames, DFC on secondary ones.
func (f *LinkFrame) FCV() bool { return f.Control&CtrlFCV != 0 }

// UserData returns the frame's user data (the transport segment). It
// aliases f and is valid until the next Decode.
func (f *LinkFrame) UserData() []byte { return f.data[:f.n] }

// Decode decodes the link frame at the start of b (the bytes Framer.Next
// delimited; extra bytes after the frame are ignored). It resets every
// field first. On ErrDataCRC the header fields stay valid and UserData is
// empty: a corrupt block cannot be passed on to the transport function. On
// other errors f is left zero apart from Anomaly. Decode allocates nothing.
func (f *LinkFrame) Decode(b []byte) error {
	f.Length, f.Control, f.Func, f.Dst, f.Src, f.Anomaly, f.n = 0, 0, 0, 0, 0, AnomalyNone, 0
	if len(b) < HeaderLen {
		f.Anomaly = AnomalyBadLength
		return ErrTruncated
	}
	if b[0] != start0 || b[1] != start1 {
		f.Anomaly = AnomalyBadStart
		return ErrBadStart
	}
	if !crcOK(b[:8], b[8:10]) {
		f.Anomaly = AnomalyLinkCRC
		return ErrLinkCRC
	}
	fl := FrameLen(b[2])
	if fl == 0 {
		f.Anomaly = AnomalyBadLength
		return ErrBadLength
	}
	if len(b) < fl {
		f.Anomaly = AnomalyBadLength
		return ErrTruncated
	}
	f.Length = b[2]
	f.Control = b[3]
	f.Func = LinkFunc(b[3] & (CtrlPRM | 0x0F))
	f.Dst = uint16(b[4]) | uint16(b[5])<<8
	f.Src = uint16(b[6]) | uint16(b[7])<<8
	// Copy the data blocks, checking each CRC (clause 9.2.4.2).
	rest := int(f.Length) - MinLength
	p := HeaderLen
	n := 0
	for rest > 0 {
		k := min(rest, blockLen)
		if !crcOK(b[p:p+k], b[p+k:p+k+2]) {
			f.n = 0
			f.Anomaly = AnomalyDataCRC
			return ErrDataCRC
		}
		copy(f.data[n:], b[p:p+k])
		n += k
		p += k + 2
		rest -= k
	}
	f.n = uint8(n)
	if IsBroadcast(f.Dst) {
		f.Anomaly = AnomalyBroadcast
	}
	return nil
}

// itoa formats a small non-negative int without strconv's allocation path
// mattering (it is only used for names of reserved codes).
func itoa(v int) string {
	if v < 10 {
		return string(rune('0' + v))
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
