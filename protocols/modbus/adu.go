package modbus

import (
	"encoding/binary"

	"github.com/otgw/otgw/protocols"
)

// Caps of the fixed arrays in ADU and the per-function quantity limits of
// MAP §6.
const (
	// MaxReadBits is the quantity limit of FC 1 and FC 2 (MAP §6.1, §6.2).
	MaxReadBits = 2000
	// MaxReadRegisters is the quantity limit of FC 3, FC 4 and the read
	// part of FC 23 (MAP §6.3, §6.4, §6.17).
	MaxReadRegisters = 125
	// MaxWriteCoils is the quantity limit of FC 15 (MAP §6.11).
	MaxWriteCoils = 1968
	// MaxWriteRegisters is the quantity limit of FC 16 (MAP §6.12).
	MaxWriteRegisters = 123
	// MaxReadWriteRegisters is the write quantity limit of FC 23 (MAP §6.17).
	MaxReadWriteRegisters = 121
	// MaxFIFOCount is the FIFO count limit of FC 24 (MAP §6.18).
	MaxFIFOCount = 31
	// MaxEventLog is the largest event list of an FC 12 response (MAP §6.10).
	MaxEventLog = 64

	// MaxRegisters is the capacity of the register value array: the most
	// registers one PDU can carry (a 125-register read response).
	MaxRegisters = MaxReadRegisters
	// MaxCoils is the capacity of the coil value array in bits: the most
	// bits one PDU can carry (a 2000-bit read response; FC 15 writes at
	// most MaxWriteCoils).
	MaxCoils = MaxReadBits
	// MaxCoilBytes is MaxCoils packed eight to a byte.
	MaxCoilBytes = (MaxCoils + 7) / 8
	// MaxFileRecords is the most sub-requests one FC 20 request can carry
	// (byte count 0xF5 / 7 bytes each, MAP §6.14); FC 21 carries fewer.
	MaxFileRecords = 35
)

// FileRecord is one sub-request of FC 20 or FC 21 (MAP §6.14, §6.15), or
// one sub-response of FC 20 (then only RefType and Length, the record data
// length in registers, are set).
type FileRecord struct {
	RefType uint8  // must be 6
	File    uint16 // file number 1-0xFFFF
	Record  uint16 // record number 0-0x270F
	Length  uint16 // record length in registers
}

// ADU is one decoded Modbus/TCP application data unit. Decode fills it in
// place; the caller owns it and may reuse it for every PDU. Data aliases the
// decoded buffer and is valid only while that buffer is; everything else is
// copied. Has* flags tell which optional fields the PDU carries (an exception
// response carries none). The zero value is an empty ADU. An ADU is not safe
// for concurrent use.
type ADU struct {
	// MBAP header (TCP guide §3.1.3).
	TransactionID uint16
	ProtocolID    uint16
	Length        uint16
	Unit          uint8

	// Function is the function code as on the wire: an exception response
	// keeps ExceptionBit. Use Func for the code without it.
	Function    uint8
	Dir         protocols.Dir
	IsException bool
	Exception   ExceptionCode // when IsException
	UserDefined bool          // function code 65-72 or 100-110 (MAP §5.1)

	// Table is the data-model table the PDU addresses.
	Table Table

	// Address and Quantity: the start address and count (the read part for
	// FC 23, the FIFO pointer address for an FC 24 request, the FIFO count
	// for an FC 24 response).
	HasAddress  bool
	Address     uint16
	HasQuantity bool
	Quantity    uint16

	// Write part of FC 23.
	HasWrite      bool
	WriteAddress  uint16
	WriteQuantity uint16

	// ByteCount is the byte count field (two bytes for FC 24 responses).
	HasByteCount bool
	ByteCount    uint16

	// Value is the value field of FC 5 (0xFF00 on, 0x0000 off) and FC 6.
	HasValue bool
	Value    uint16

	// AndMask, OrMask of FC 22 (MAP §6.16).
	AndMask uint16
	OrMask  uint16

	// Sub is the FC 8 sub-function, the FC 43 MEI type or the UMAS
	// function code of an FC 90 request.
	HasSub bool
	Sub    uint16

	// UMASKey is the pairing key of an FC 90 (UMAS) PDU and UMASStatus the
	// status of a UMAS response (UMASResponseOK, UMASResponseError).
	UMASKey, UMASStatus uint8

	// FC 43/14 Read Device Identification (MAP §6.21): DeviceIDCode (1-4)
	// and ObjectID in requests and responses; Conformity, MoreFollows,
	// NextObjectID and NumObjects in responses.
	DeviceIDCode uint8
	ObjectID     uint8
	Conformity   uint8
	MoreFollows  uint8
	NextObjectID uint8
	NumObjects   uint8

	// NumFileRecords counts FC 20/21 sub-requests (or FC 20 sub-responses);
	// the first MaxFileRecords are in FileRecords.
	NumFileRecords int

	// Data is the PDU after the function code. It aliases the buffer given
	// to Decode.
	Data []byte

	// Anomaly is the first problem found; AnomalyNone when well formed.
	Anomaly Anomaly

	header      bool // the 7 MBAP bytes were present
	fileRecords [MaxFileRecords]FileRecord
	nRegs       int
	regs        [MaxRegisters]uint16
	nCoils      int
	coils       [MaxCoilBytes]byte
}

// HasHeader reports whether Decode found the 7 MBAP header bytes, so the
// header fields are set (they may still be invalid: see Anomaly).
func (a *ADU) HasHeader() bool { return a.header }

// HasPDU reports whether Decode got as far as the PDU: the header was valid
// and complete, so Function and Data are set.
func (a *ADU) HasPDU() bool { return a.Data != nil }

// Func returns the function code without the exception bit.
func (a *ADU) Func() uint8 { return a.Function &^ ExceptionBit }

// Registers returns the register values the PDU carries: written values of
// FC 6, 16 and 23, read values of FC 3, 4 and 23 responses and the FIFO
// values of FC 24 (FC 20/21 record data stays in Data). The slice points into a and is valid until the
// next Decode.
func (a *ADU) Registers() []uint16 { return a.regs[:a.nRegs] }

// NumCoils returns the number of coil/discrete bits the PDU carries: 1 for
// FC 5, the quantity for FC 15 and 8 × byte count for FC 1/2 responses (the
// request's quantity, from Pairing, says how many of them are meaningful).
func (a *ADU) NumCoils() int { return a.nCoils }

// Coil returns bit i of the coil/discrete values (LSB of the first byte is
// the first bit, MAP §6.1); false when i is out of range.
func (a *ADU) Coil(i int) bool {
	if i < 0 || i >= a.nCoils {
		return false
	}
	return a.coils[i>>3]&(1<<(uint(i)&7)) != 0
}

// FileRecords returns the decoded FC 20/21 sub-requests; valid until the
// next Decode.
func (a *ADU) FileRecords() []FileRecord {
	n := a.NumFileRecords
	if n > MaxFileRecords {
		n = MaxFileRecords
	}
	return a.fileRecords[:n]
}

// Decode resets every field of a and decodes the single ADU in b (exactly
// one ADU, as Framer.Next delimits it). dir tells the layout: requests and
// responses differ (MAP §6); DirUnknown decodes as a request.
//
// It returns nil for a well-formed ADU, or a sentinel error with a.Anomaly
// set: ErrTruncated (b shorter than its header or length field announces),
// ErrProtocolID / ErrLength (not Modbus/TCP, header fields still filled),
// ErrMalformed (the PDU breaks the specification, which includes a
// well-formed UMAS ADU over the 260-byte limit: AnomalyLongADU, with every
// field decoded). err != nil exactly when
// a.Anomaly != AnomalyNone. a.Data aliases b. Decode allocates nothing.
func (a *ADU) Decode(b []byte, dir protocols.Dir) error {
	*a = ADU{}
	if dir != protocols.Response {
		dir = protocols.Request
	}
	a.Dir = dir
	if len(b) < MBAPLen {
		a.Anomaly = AnomalyTruncated
		return ErrTruncated
	}
	h := MBAP(b)
	a.TransactionID = h.TransactionID()
	a.ProtocolID = h.ProtocolID()
	a.Length = h.Length()
	a.Unit = h.Unit()
	a.header = true
	if a.ProtocolID != 0 {
		a.Anomaly = AnomalyProtocolID
		return ErrProtocolID
	}
	if a.Length < MinLengthField || a.Length > MaxUMASLengthField ||
		a.Length > MaxLengthField && (len(b) <= MBAPLen || int(a.Length) > maxLengthField(b[MBAPLen])) {
		a.Anomaly = AnomalyMBAPLength
		return ErrLength
	}
	end := 6 + int(a.Length)
	if len(b) < end {
		a.Anomaly = AnomalyTruncated
		return ErrTruncated
	}
	if len(b) > end {
		a.Anomaly = AnomalyMBAPLength
		return ErrMalformed
	}
	a.Function = b[MBAPLen]
	a.Data = b[MBAPLen+1 : end]
	if dir == protocols.Response {
		a.decodeResponse()
	} else {
		a.decodeRequest()
	}
	if a.Length > MaxLengthField {
		a.flag(AnomalyLongADU) // ranked last: only when nothing else is wrong
	}
	if a.Anomaly != AnomalyNone {
		return ErrMalformed
	}
	return nil
}

// flag records an anomaly unless an earlier one was found.
func (a *ADU) flag(x Anomaly) {
	if a.Anomaly == AnomalyNone {
		a.Anomaly = x
	}
}

func u16(b []byte, i int) uint16 { return binary.BigEndian.Uint16(b[i:]) }

// tableOf returns the table a public function code addresses.
func tableOf(fc uint8) Table {
	switch fc {
	case 1, 5, 15:
		return TableCoils
	case 2:
		return TableDiscreteInputs
	case 3, 6, 16, 22, 23:
		return TableHoldingRegisters
	case 4:
		return TableInputRegisters
	case 20, 21:
		return TableFile
	case 24:
		return TableFIFO
	}
	return TableNone
}

// setRange sets Address/Quantity and checks 1 <= qty <= max and that the
// range stays inside the 16-bit address space (MAP §4.4).
func (a *ADU) setRange(addr, qty uint16, max int) {
	a.HasAddress, a.Address = true, addr
	a.HasQuantity, a.Quantity = true, qty
	a.checkRange(addr, qty, max)
}

func (a *ADU) checkRange(addr, qty uint16, max int) {
	if qty < 1 || int(qty) > max {
		a.flag(AnomalyQuantityOutOfRange)
		return
	}
	if int(addr)+int(qty) > 0x10000 {
		a.flag(AnomalyAddressOutOfRange)
	}
}

// wantLen flags a PDU whose data is not exactly n bytes; it reports
// whether the data has at least n bytes to read.
func (a *ADU) wantLen(n int) bool {
	switch {
	case len(a.Data) < n:
		a.flag(AnomalyTruncated)
		return false
	case len(a.Data) > n:
		a.flag(AnomalyPDULength)
	}
	return true
}

// copyRegs copies up to MaxRegisters big-endian values from b.
func (a *ADU) copyRegs(b []byte) {
	n := len(b) / 2
	if n > MaxRegisters {
		n = MaxRegisters
	}
	for i := 0; i < n; i++ {
		a.regs[i] = u16(b, 2*i)
	}
	a.nRegs = n
}

// copyCoils copies packed bits; nbits is clipped to the bytes present.
func (a *ADU) copyCoils(b []byte, nbits int) {
	n := copy(a.coils[:], b)
	if nbits > 8*n {
		nbits = 8 * n
	}
	a.nCoils = nbits
}

func (a *ADU) decodeRequest() {
	fc := a.Function
	d := a.Data
	a.Table = tableOf(fc)
	switch fc {
	case 1, 2:
		if a.wantLen(4) {
			a.setRange(u16(d, 0), u16(d, 2), MaxReadBits)
		}
	case 3, 4:
		if a.wantLen(4) {
			a.setRange(u16(d, 0), u16(d, 2), MaxReadRegisters)
		}
	case 5:
		a.decodeWriteSingleCoil()
	case 6:
		a.decodeWriteSingleRegister()
	case 7, 11, 12, 17:
		a.wantLen(0)
	case 8:
		a.decodeDiagnostics()
	case 15:
		if len(d) < 5 {
			a.flag(AnomalyTruncated)
			return
		}
		a.setRange(u16(d, 0), u16(d, 2), MaxWriteCoils)
		a.HasByteCount, a.ByteCount = true, uint16(d[4])
		if int(a.ByteCount) != (int(a.Quantity)+7)/8 || int(a.ByteCount) != len(d)-5 {
			a.flag(AnomalyByteCountMismatch)
		}
		a.copyCoils(d[5:], int(a.Quantity))
	case 16:
		if len(d) < 5 {
			a.flag(AnomalyTruncated)
			return
		}
		a.setRange(u16(d, 0), u16(d, 2), MaxWriteRegisters)
		a.HasByteCount, a.ByteCount = true, uint16(d[4])
		if int(a.ByteCount) != 2*int(a.Quantity) || int(a.ByteCount) != len(d)-5 {
			a.flag(AnomalyByteCountMismatch)
		}
		a.copyRegs(d[5:])
	case 20:
		a.decodeReadFileRequest()
	case 21:
		a.decodeWriteFile()
	case 22:
		a.decodeMaskWrite()
	case 23:
		if len(d) < 9 {
			a.flag(AnomalyTruncated)
			return
		}
		a.setRange(u16(d, 0), u16(d, 2), MaxReadRegisters)
		a.HasWrite = true
		a.WriteAddress, a.WriteQuantity = u16(d, 4), u16(d, 6)
		a.checkRange(a.WriteAddress, a.WriteQuantity, MaxReadWriteRegisters)
		a.HasByteCount, a.ByteCount = true, uint16(d[8])
		if int(a.ByteCount) != 2*int(a.WriteQuantity) || int(a.ByteCount) != len(d)-9 {
			a.flag(AnomalyByteCountMismatch)
		}
		a.copyRegs(d[9:])
	case 24:
		if a.wantLen(2) {
			a.HasAddress, a.Address = true, u16(d, 0)
		}
	case 43:
		a.decodeMEI()
	case FuncUMAS:
		a.decodeUMAS()
	default:
		if IsUserDefined(fc) {
			a.UserDefined = true
			return
		}
		// Includes fc >= 0x80: an exception code in a request.
		a.flag(AnomalyUnknownFunction)
	}
}

func (a *ADU) decodeResponse() {
	fc := a.Function
	d := a.Data
	if fc&ExceptionBit != 0 {
		a.IsException = true
		a.UserDefined = IsUserDefined(fc &^ ExceptionBit)
		a.Table = tableOf(fc &^ ExceptionBit)
		if !a.wantLen(1) {
			return
		}
		a.Exception = ExceptionCode(d[0])
		if !a.Exception.Valid() {
			a.flag(AnomalyExceptionCodeInvalid)
		}
		if fc == ExceptionBit || (!IsPublic(fc&^ExceptionBit) && !a.UserDefined && fc&^ExceptionBit != FuncUMAS) {
			a.flag(AnomalyUnknownFunction)
		}
		return
	}
	a.Table = tableOf(fc)
	switch fc {
	case 1, 2:
		if a.byteCount8(1, MaxCoilBytes) {
			a.copyCoils(d[1:], 8*int(a.ByteCount))
		}
	case 3, 4, 23:
		if a.byteCount8(2, 2*MaxReadRegisters) {
			if a.ByteCount%2 != 0 {
				a.flag(AnomalyByteCountMismatch)
			}
			a.copyRegs(d[1:])
		}
	case 5:
		a.decodeWriteSingleCoil()
	case 6:
		a.decodeWriteSingleRegister()
	case 7:
		a.wantLen(1)
	case 8:
		a.decodeDiagnostics()
	case 11:
		a.wantLen(4)
	case 12:
		// byte count, status, event count, message count, 0-64 events.
		a.byteCount8(6, 6+MaxEventLog)
	case 15:
		if a.wantLen(4) {
			a.setRange(u16(d, 0), u16(d, 2), MaxWriteCoils)
		}
	case 16:
		if a.wantLen(4) {
			a.setRange(u16(d, 0), u16(d, 2), MaxWriteRegisters)
		}
	case 17:
		// Server ID and run indicator are device specific (MAP §6.13).
		a.byteCount8(1, MaxPDULen-2)
	case 20:
		a.decodeReadFileResponse()
	case 21:
		a.decodeWriteFile()
	case 22:
		a.decodeMaskWrite()
	case 24:
		if len(d) < 4 {
			a.flag(AnomalyTruncated)
			return
		}
		a.HasByteCount, a.ByteCount = true, u16(d, 0)
		a.HasQuantity, a.Quantity = true, u16(d, 2)
		if int(a.ByteCount) != len(d)-2 || int(a.ByteCount) != 2+2*int(a.Quantity) {
			a.flag(AnomalyByteCountMismatch)
		}
		if a.Quantity > MaxFIFOCount {
			a.flag(AnomalyQuantityOutOfRange)
		}
		a.copyRegs(d[4:])
	case 43:
		a.decodeMEI()
	case FuncUMAS:
		a.decodeUMAS()
	default:
		if IsUserDefined(fc) {
			a.UserDefined = true
			return
		}
		a.flag(AnomalyUnknownFunction)
	}
}

// byteCount8 reads a one-byte byte count that must describe the rest of the
// PDU and lie in [min, max]; it reports whether the count is present.
func (a *ADU) byteCount8(min, max int) bool {
	d := a.Data
	if len(d) < 1 {
		a.flag(AnomalyTruncated)
		return false
	}
	a.HasByteCount, a.ByteCount = true, uint16(d[0])
	if int(a.ByteCount) != len(d)-1 || int(a.ByteCount) < min || int(a.ByteCount) > max {
		a.flag(AnomalyByteCountMismatch)
	}
	return true
}

// decodeWriteSingleCoil: address, value 0xFF00 or 0x0000 (MAP §6.5); the
// response echoes the request.
func (a *ADU) decodeWriteSingleCoil() {
	if !a.wantLen(4) {
		return
	}
	a.HasAddress, a.Address = true, u16(a.Data, 0)
	a.HasValue, a.Value = true, u16(a.Data, 2)
	switch a.Value {
	case 0xFF00:
		a.coils[0] = 1
	case 0x0000:
	default:
		a.flag(AnomalyBadCoilValue)
	}
	a.nCoils = 1
}

// decodeWriteSingleRegister: address, value (MAP §6.6).
func (a *ADU) decodeWriteSingleRegister() {
	if !a.wantLen(4) {
		return
	}
	a.HasAddress, a.Address = true, u16(a.Data, 0)
	a.HasValue, a.Value = true, u16(a.Data, 2)
	a.regs[0], a.nRegs = a.Value, 1
}

// decodeMaskWrite: address, AND mask, OR mask (MAP §6.16).
func (a *ADU) decodeMaskWrite() {
	if !a.wantLen(6) {
		return
	}
	a.HasAddress, a.Address = true, u16(a.Data, 0)
	a.AndMask, a.OrMask = u16(a.Data, 2), u16(a.Data, 4)
}

// decodeDiagnostics: sub-function and data (MAP §6.8, §6.8.1). Requests
// and responses share the layout; sub-function 0 echoes any even number of
// bytes, all others carry exactly one 16-bit data field.
func (a *ADU) decodeDiagnostics() {
	d := a.Data
	if len(d) < 2 {
		a.flag(AnomalyTruncated)
		return
	}
	a.HasSub, a.Sub = true, u16(d, 0)
	data := d[2:]
	switch a.Sub {
	case DiagReturnQueryData:
		if len(data)%2 != 0 {
			a.flag(AnomalyPDULength)
		}
		return
	case 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20:
	default:
		a.flag(AnomalyUnknownSubFunction)
		return
	}
	if len(data) != 2 {
		a.flag(AnomalyPDULength)
		return
	}
	v := u16(data, 0)
	switch a.Sub {
	case DiagRestartComm:
		if v != 0 && v != 0xFF00 {
			a.flag(AnomalyDiagDataInvalid)
		}
	case DiagChangeASCIIDelimiter:
		if v&0xFF != 0 {
			a.flag(AnomalyDiagDataInvalid)
		}
	case DiagForceListenOnly, DiagClearCounters, DiagClearOverrun:
		if v != 0 {
			a.flag(AnomalyDiagDataInvalid)
		}
	default:
		// 2 and 11-18: the request data is 0, the response returns a
		// register or counter value.
		if a.Dir == protocols.Request && v != 0 {
			a.flag(AnomalyDiagDataInvalid)
		}
	}
}

// decodeMEI: FC 43 MEI type 13 (CANopen, opaque) or 14 (Read Device
// Identification, MAP §6.21).
func (a *ADU) decodeMEI() {
	d := a.Data
	if len(d) < 1 {
		a.flag(AnomalyTruncated)
		return
	}
	a.HasSub, a.Sub = true, uint16(d[0])
	switch d[0] {
	case MEICANopen:
		return
	case MEIReadDeviceID:
	default:
		a.flag(AnomalyUnknownSubFunction)
		return
	}
	if a.Dir == protocols.Request {
		if !a.wantLen(3) {
			return
		}
		a.DeviceIDCode, a.ObjectID = d[1], d[2]
		if a.DeviceIDCode < 1 || a.DeviceIDCode > MaxReadDeviceIDCode {
			a.flag(AnomalyDeviceIDInvalid)
		}
		return
	}
	// MEI, code, conformity, more follows, next object id, number of
	// objects, then {id, length, value} per object.
	if len(d) < 6 {
		a.flag(AnomalyDeviceIDInvalid)
		return
	}
	a.DeviceIDCode, a.Conformity, a.MoreFollows = d[1], d[2], d[3]
	a.NextObjectID, a.NumObjects = d[4], d[5]
	if a.DeviceIDCode < 1 || a.DeviceIDCode > MaxReadDeviceIDCode {
		a.flag(AnomalyDeviceIDInvalid)
	}
	switch a.Conformity {
	case 0x01, 0x02, 0x03, 0x81, 0x82, 0x83:
	default:
		a.flag(AnomalyDeviceIDInvalid)
	}
	if a.MoreFollows != 0x00 && a.MoreFollows != 0xFF {
		a.flag(AnomalyDeviceIDInvalid)
	}
	p := 6
	for i := 0; i < int(a.NumObjects); i++ {
		if p+2 > len(d) {
			a.flag(AnomalyDeviceIDInvalid)
			return
		}
		if i == 0 {
			a.ObjectID = d[p]
		}
		p += 2 + int(d[p+1])
	}
	if p != len(d) {
		a.flag(AnomalyDeviceIDInvalid)
	}
}

// fileRef records one sub-request and checks reference type 6 and the
// record number limit 0x270F (MAP §6.14, §6.15).
func (a *ADU) fileRef(r FileRecord) {
	if a.NumFileRecords < MaxFileRecords {
		a.fileRecords[a.NumFileRecords] = r
	}
	a.NumFileRecords++
	if r.RefType != 6 || r.Record > 0x270F {
		a.flag(AnomalyFileReference)
	}
}

// decodeReadFileRequest: byte count 0x07-0xF5, then 7-byte sub-requests.
func (a *ADU) decodeReadFileRequest() {
	d := a.Data
	if len(d) < 1 {
		a.flag(AnomalyTruncated)
		return
	}
	a.HasByteCount, a.ByteCount = true, uint16(d[0])
	bc := int(a.ByteCount)
	if bc != len(d)-1 || bc < 7 || bc > 0xF5 || bc%7 != 0 {
		a.flag(AnomalyByteCountMismatch)
	}
	for p := 1; p+7 <= len(d); p += 7 {
		a.fileRef(FileRecord{RefType: d[p], File: u16(d, p+1), Record: u16(d, p+3), Length: u16(d, p+5)})
	}
}

// decodeReadFileResponse: data length, then sub-responses of {file
// response length, reference type, record data}. MAP §6.14 gives the data
// length as 0x07-0xF5, but one sub-response of one or two registers (4 or
// 6 bytes) is well formed and answered by real servers, so the lower bound
// checked is the smallest sub-response, 4.
func (a *ADU) decodeReadFileResponse() {
	d := a.Data
	if len(d) < 1 {
		a.flag(AnomalyTruncated)
		return
	}
	a.HasByteCount, a.ByteCount = true, uint16(d[0])
	bc := int(a.ByteCount)
	if bc != len(d)-1 || bc < 4 || bc > 0xF5 {
		a.flag(AnomalyByteCountMismatch)
	}
	p := 1
	for p < len(d) {
		if p+2 > len(d) {
			a.flag(AnomalyByteCountMismatch)
			return
		}
		l := int(d[p]) // reference type + data bytes
		if l < 1 || l%2 != 1 || p+1+l > len(d) {
			a.flag(AnomalyByteCountMismatch)
			return
		}
		a.fileRef(FileRecord{RefType: d[p+1], Length: uint16((l - 1) / 2)})
		p += 1 + l
	}
}

// decodeWriteFile: request and response (an echo) share the layout: data
// length 0x09-0xFB, then sub-requests of reference type, file, record,
// record length and 2×length data bytes (MAP §6.15).
func (a *ADU) decodeWriteFile() {
	d := a.Data
	if len(d) < 1 {
		a.flag(AnomalyTruncated)
		return
	}
	a.HasByteCount, a.ByteCount = true, uint16(d[0])
	bc := int(a.ByteCount)
	if bc != len(d)-1 || bc < 9 || bc > 0xFB {
		a.flag(AnomalyByteCountMismatch)
	}
	p := 1
	for p < len(d) {
		if p+7 > len(d) {
			a.flag(AnomalyByteCountMismatch)
			return
		}
		r := FileRecord{RefType: d[p], File: u16(d, p+1), Record: u16(d, p+3), Length: u16(d, p+5)}
		a.fileRef(r)
		p += 7 + 2*int(r.Length)
		if p > len(d) {
			a.flag(AnomalyByteCountMismatch)
			return
		}
	}
}
