package dnp3

// This file builds valid DNP3 traffic: link frames with correct CRCs,
// transport segmentation and application requests and responses. It is for
// tests, scenario generators and the master/outstation simulator; the
// gateway's native replies use it too. Every function appends to dst and
// returns the extended slice, like strconv.Append*.

// Common CONTROL octets.
const (
	// CtrlMasterData is a master's UNCONFIRMED_USER_DATA (DIR, PRM, 4).
	CtrlMasterData = CtrlDIR | CtrlPRM | uint8(LinkUnconfirmedUserData&0x0F)
	// CtrlOutstationData is an outstation's UNCONFIRMED_USER_DATA (PRM, 4).
	CtrlOutstationData = CtrlPRM | uint8(LinkUnconfirmedUserData&0x0F)
	// CtrlMasterLinkStatus is a master's REQUEST_LINK_STATUS (DIR, PRM, 9).
	CtrlMasterLinkStatus = CtrlDIR | CtrlPRM | uint8(LinkRequestLinkStatus&0x0F)
	// CtrlOutstationLinkStatus is an outstation's LINK_STATUS answer (11).
	CtrlOutstationLinkStatus = uint8(LinkStatus)
)

// maxSegmentData is the application data of one transport segment: the
// largest user data less the transport header.
const maxSegmentData = MaxUserData - 1

// AppendLinkFrame appends one link frame carrying userData (at most
// MaxUserData octets; more is truncated), with the header CRC and a CRC
// after every 16-octet block (IEEE 1815-2012 clause 9.2.4).
func AppendLinkFrame(dst []byte, ctrl uint8, dstAddr, srcAddr uint16, userData []byte) []byte {
	if len(userData) > MaxUserData {
		userData = userData[:MaxUserData]
	}
	h := len(dst)
	dst = append(dst, start0, start1, byte(MinLength+len(userData)), ctrl,
		byte(dstAddr), byte(dstAddr>>8), byte(srcAddr), byte(srcAddr>>8))
	dst = appendCRC(dst, dst[h:])
	for len(userData) > 0 {
		k := min(len(userData), blockLen)
		b := len(dst)
		dst = append(dst, userData[:k]...)
		dst = appendCRC(dst, dst[b:])
		userData = userData[k:]
	}
	return dst
}

func appendCRC(dst, over []byte) []byte {
	c := CRC(over)
	return append(dst, byte(c), byte(c>>8))
}

// AppendLinkFrames splits apdu into transport segments (clause 8.2) and
// appends one link frame per segment, the first transport sequence number
// being 0. An empty apdu gives one frame without user data (link-only
// functions such as REQUEST_LINK_STATUS).
func AppendLinkFrames(dst []byte, ctrl uint8, dstAddr, srcAddr uint16, apdu []byte) []byte {
	dst, _ = AppendLinkFramesSeq(dst, ctrl, dstAddr, srcAddr, 0, apdu)
	return dst
}

// AppendLinkFramesSeq is AppendLinkFrames starting at transport sequence
// seq; it returns the sequence number for the next fragment, as a sending
// transport function keeps it (clause 8.2.1.2).
func AppendLinkFramesSeq(dst []byte, ctrl uint8, dstAddr, srcAddr uint16, seq uint8, apdu []byte) ([]byte, uint8) {
	if len(apdu) == 0 {
		return AppendLinkFrame(dst, ctrl, dstAddr, srcAddr, nil), seq
	}
	var seg [MaxUserData]byte
	first := true
	for len(apdu) > 0 {
		k := min(len(apdu), maxSegmentData)
		th := seq & transportSeq
		if first {
			th |= TransportFIR
		}
		if k == len(apdu) {
			th |= TransportFIN
		}
		seg[0] = th
		copy(seg[1:], apdu[:k])
		dst = AppendLinkFrame(dst, ctrl, dstAddr, srcAddr, seg[:1+k])
		apdu = apdu[k:]
		seq = (seq + 1) & transportSeq
		first = false
	}
	return dst, seq
}

// AppendRequestHeader appends a single-fragment request header: FIR, FIN,
// the 4-bit sequence number and the function code (clause 4.2.2).
func AppendRequestHeader(dst []byte, seq uint8, fc FunctionCode) []byte {
	return append(dst, AppFIR|AppFIN|seq&appSeq, byte(fc))
}

// AppendResponseHeader appends a single-fragment response header with its
// IIN (IIN1 in the high octet). UNS is set for UNSOLICITED_RESPONSE, and
// CON when con is true.
func AppendResponseHeader(dst []byte, seq uint8, fc FunctionCode, iin uint16, con bool) []byte {
	ac := AppFIR | AppFIN | seq&appSeq
	if fc == FuncUnsolicitedResp {
		ac |= AppUNS
	}
	if con {
		ac |= AppCON
	}
	return append(dst, ac, byte(fc), byte(iin>>8), byte(iin))
}

// AppendConfirm appends an application CONFIRM; uns confirms an
// unsolicited response.
func AppendConfirm(dst []byte, seq uint8, uns bool) []byte {
	ac := AppFIR | AppFIN | seq&appSeq
	if uns {
		ac |= AppUNS
	}
	return append(dst, ac, byte(FuncConfirm))
}

// AppendAllHeader appends an object header with qualifier 0x06 (all points).
func AppendAllHeader(dst []byte, group, variation uint8) []byte {
	return append(dst, group, variation, RangeAll)
}

// AppendRangeHeader appends an object header with a start-stop range,
// using qualifier 0x00 when both fit one octet and 0x01 otherwise.
func AppendRangeHeader(dst []byte, group, variation uint8, start, stop uint16) []byte {
	if start <= 0xFF && stop <= 0xFF {
		return append(dst, group, variation, RangeStartStop8, byte(start), byte(stop))
	}
	return append(dst, group, variation, RangeStartStop16, byte(start), byte(start>>8), byte(stop), byte(stop>>8))
}

// AppendCountHeader appends an object header with qualifier 0x07 (one
// octet count, no prefix), as used for g50 time objects.
func AppendCountHeader(dst []byte, group, variation, count uint8) []byte {
	return append(dst, group, variation, RangeCount8, count)
}

// AppendReadClass0123 appends a READ of class 1, 2, 3 and 0 data (g60v2,
// v3, v4, v1, qualifier 0x06): the integrity poll (clause 4.4.1).
func AppendReadClass0123(dst []byte, seq uint8) []byte {
	dst = AppendRequestHeader(dst, seq, FuncRead)
	for _, v := range [...]uint8{2, 3, 4, 1} {
		dst = AppendAllHeader(dst, 60, v)
	}
	return dst
}

// CROB is a control relay output block, g12v1 (IEEE 1815-2012 A.8.1).
type CROB struct {
	Code        uint8  // operation type, queue, clear and trip/close bits
	Count       uint8  // number of times to execute
	OnMs, OffMs uint32 // on and off time in milliseconds
	Status      uint8  // status code (0 in requests)
}

// CROB operation codes (A.8.1, control code field).
const (
	CROBPulseOn  = 0x01
	CROBPulseOff = 0x02
	CROBLatchOn  = 0x03
	CROBLatchOff = 0x04
	CROBClose    = 0x40 // trip-close code 1
	CROBTrip     = 0x80 // trip-close code 2
)

// AppendCROB appends a request (SELECT, OPERATE, DIRECT_OPERATE or
// DIRECT_OPERATE_NR) or its response echo, of one g12v1 with qualifier
// 0x28 (2-octet count and index). For a response, use
// AppendResponseHeader and then AppendCROBObject.
func AppendCROB(dst []byte, seq uint8, fc FunctionCode, index uint16, c CROB) []byte {
	return AppendCROBObject(AppendRequestHeader(dst, seq, fc), index, c)
}

// AppendCROBObject appends one g12v1 object header (0x28) and its object.
func AppendCROBObject(dst []byte, index uint16, c CROB) []byte {
	return append(dst, 12, 1, 0x28, 1, 0, byte(index), byte(index>>8),
		c.Code, c.Count,
		byte(c.OnMs), byte(c.OnMs>>8), byte(c.OnMs>>16), byte(c.OnMs>>24),
		byte(c.OffMs), byte(c.OffMs>>8), byte(c.OffMs>>16), byte(c.OffMs>>24),
		c.Status)
}

// AppendAnalogOutput appends a command (usually DIRECT_OPERATE, or
// SELECT/OPERATE) of one 32-bit analog output block g41v1 with qualifier
// 0x28 (A.20.1): value, then status 0.
func AppendAnalogOutput(dst []byte, seq uint8, fc FunctionCode, index uint16, value int32) []byte {
	dst = AppendRequestHeader(dst, seq, fc)
	v := uint32(value)
	return append(dst, 41, 1, 0x28, 1, 0, byte(index), byte(index>>8),
		byte(v), byte(v>>8), byte(v>>16), byte(v>>24), 0)
}

// AppendClearRestart appends a WRITE of g80v1 index 7 to 0: the master
// clearing the outstation's DEVICE_RESTART indication (clause 5.1.2).
func AppendClearRestart(dst []byte, seq uint8) []byte {
	dst = AppendRequestHeader(dst, seq, FuncWrite)
	return append(dst, 80, 1, RangeStartStop8, 7, 7, 0)
}

// AppendUnsolicited appends ENABLE_UNSOLICITED (enable) or
// DISABLE_UNSOLICITED for classes 1, 2 and 3 (g60v2-v4, clause 4.4.20).
func AppendUnsolicited(dst []byte, seq uint8, enable bool) []byte {
	fc := FuncDisableUnsolicited
	if enable {
		fc = FuncEnableUnsolicited
	}
	dst = AppendRequestHeader(dst, seq, fc)
	for _, v := range [...]uint8{2, 3, 4} {
		dst = AppendAllHeader(dst, 60, v)
	}
	return dst
}

// IIN bits as carried in Fragment.IIN (IIN1 in the high octet, clause
// 4.2.2.6).
const (
	IINBroadcast         = 0x0100
	IINClass1            = 0x0200
	IINClass2            = 0x0400
	IINClass3            = 0x0800
	IINNeedTime          = 0x1000
	IINLocalControl      = 0x2000
	IINDeviceTrouble     = 0x4000
	IINDeviceRestart     = 0x8000
	IINNoFuncCodeSupport = 0x0001
	IINObjectUnknown     = 0x0002
	IINParameterError    = 0x0004
	IINEventOverflow     = 0x0008
	IINAlreadyExecuting  = 0x0010
	IINConfigCorrupt     = 0x0020
)
