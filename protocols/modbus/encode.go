package modbus

import "encoding/binary"

// Encoder helpers build Modbus/TCP ADUs for generators, tests and scenario
// captures. They follow the append convention: each appends to dst and
// returns the extended slice, and they do not validate (so generators can
// also build malformed PDUs on purpose). A PDU is the function code
// followed by its data (MAP §4.1).

// AppendADU appends an MBAP header (protocol id 0, length = 1 + len(pdu))
// and pdu. It is the same for requests and responses (TCP guide §3.1.3).
func AppendADU(dst []byte, tid uint16, unit uint8, pdu []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, tid)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(1+len(pdu)))
	dst = append(dst, unit)
	return append(dst, pdu...)
}

// AppendRequest is AppendADU for a request, named for readability.
func AppendRequest(dst []byte, tid uint16, unit uint8, pdu []byte) []byte {
	return AppendADU(dst, tid, unit, pdu)
}

// AppendResponse is AppendADU for a response, named for readability.
func AppendResponse(dst []byte, tid uint16, unit uint8, pdu []byte) []byte {
	return AppendADU(dst, tid, unit, pdu)
}

// AppendPDU appends a function code and raw data words/bytes: each
// argument is appended big-endian, uint8 as one byte, uint16 as two, []byte
// as is, []uint16 as words. Other types are ignored. It is the escape hatch
// for PDUs the typed builders below do not cover.
func AppendPDU(dst []byte, fc uint8, parts ...any) []byte {
	dst = append(dst, fc)
	for _, p := range parts {
		switch v := p.(type) {
		case uint8:
			dst = append(dst, v)
		case uint16:
			dst = binary.BigEndian.AppendUint16(dst, v)
		case []byte:
			dst = append(dst, v...)
		case []uint16:
			for _, w := range v {
				dst = binary.BigEndian.AppendUint16(dst, w)
			}
		}
	}
	return dst
}

// AppendAddrQty appends fc, address and quantity: the request of FC 1-4
// and the response of FC 15/16 (MAP §6.1-§6.4, §6.11, §6.12).
func AppendAddrQty(dst []byte, fc uint8, addr, qty uint16) []byte {
	return AppendPDU(dst, fc, addr, qty)
}

// PackBits packs booleans LSB first, eight to a byte (MAP §6.1).
func PackBits(dst []byte, bits []bool) []byte {
	for i := 0; i < len(bits); i += 8 {
		var v byte
		for j := 0; j < 8 && i+j < len(bits); j++ {
			if bits[i+j] {
				v |= 1 << uint(j)
			}
		}
		dst = append(dst, v)
	}
	return dst
}

// AppendReadBitsResponse appends an FC 1/2 response: byte count and packed
// bits.
func AppendReadBitsResponse(dst []byte, fc uint8, bits []bool) []byte {
	dst = append(dst, fc, byte((len(bits)+7)/8))
	return PackBits(dst, bits)
}

// AppendReadRegistersResponse appends an FC 3/4/23 response: byte count and
// register values.
func AppendReadRegistersResponse(dst []byte, fc uint8, regs []uint16) []byte {
	return AppendPDU(dst, fc, uint8(2*len(regs)), regs)
}

// AppendWriteSingleCoil appends an FC 5 request or response (value 0xFF00
// for on, 0x0000 for off).
func AppendWriteSingleCoil(dst []byte, addr uint16, on bool) []byte {
	v := uint16(0)
	if on {
		v = 0xFF00
	}
	return AppendPDU(dst, FuncWriteSingleCoil, addr, v)
}

// AppendWriteSingleRegister appends an FC 6 request or response.
func AppendWriteSingleRegister(dst []byte, addr, value uint16) []byte {
	return AppendPDU(dst, FuncWriteSingleRegister, addr, value)
}

// AppendWriteMultipleCoils appends an FC 15 request.
func AppendWriteMultipleCoils(dst []byte, addr uint16, bits []bool) []byte {
	dst = AppendPDU(dst, FuncWriteMultipleCoils, addr, uint16(len(bits)), uint8((len(bits)+7)/8))
	return PackBits(dst, bits)
}

// AppendWriteMultipleRegisters appends an FC 16 request.
func AppendWriteMultipleRegisters(dst []byte, addr uint16, values []uint16) []byte {
	return AppendPDU(dst, FuncWriteMultipleRegisters, addr, uint16(len(values)), uint8(2*len(values)), values)
}

// AppendMaskWriteRegister appends an FC 22 request or response.
func AppendMaskWriteRegister(dst []byte, addr, andMask, orMask uint16) []byte {
	return AppendPDU(dst, FuncMaskWriteRegister, addr, andMask, orMask)
}

// AppendReadWriteMultipleRegisters appends an FC 23 request.
func AppendReadWriteMultipleRegisters(dst []byte, readAddr, readQty, writeAddr uint16, values []uint16) []byte {
	return AppendPDU(dst, FuncReadWriteMultipleRegisters, readAddr, readQty, writeAddr,
		uint16(len(values)), uint8(2*len(values)), values)
}

// AppendDiagnostics appends an FC 8 request or response.
func AppendDiagnostics(dst []byte, sub uint16, data []uint16) []byte {
	return AppendPDU(dst, FuncDiagnostics, sub, data)
}

// AppendReadFIFOResponse appends an FC 24 response: byte count, FIFO count
// and values.
func AppendReadFIFOResponse(dst []byte, values []uint16) []byte {
	return AppendPDU(dst, FuncReadFIFOQueue, uint16(2+2*len(values)), uint16(len(values)), values)
}

// AppendReadFileRecord appends an FC 20 request with one sub-request per
// record (reference type 6 unless set).
func AppendReadFileRecord(dst []byte, recs []FileRecord) []byte {
	dst = append(dst, FuncReadFileRecord, uint8(7*len(recs)))
	for _, r := range recs {
		if r.RefType == 0 {
			r.RefType = 6
		}
		dst = AppendPDU(dst, r.RefType, r.File, r.Record, r.Length)
	}
	return dst
}

// AppendReadFileRecordResponse appends an FC 20 response with one
// sub-response (reference type 6) per register slice.
func AppendReadFileRecordResponse(dst []byte, records [][]uint16) []byte {
	n := 0
	for _, r := range records {
		n += 2 + 2*len(r)
	}
	dst = append(dst, FuncReadFileRecord, uint8(n))
	for _, r := range records {
		dst = AppendPDU(dst, uint8(1+2*len(r)), uint8(6), r)
	}
	return dst
}

// AppendWriteFileRecord appends an FC 21 request (and its echo response):
// one sub-request per record, data[i] being the registers of recs[i]
// (recs[i].Length is taken from it).
func AppendWriteFileRecord(dst []byte, recs []FileRecord, data [][]uint16) []byte {
	n := 0
	for i := range recs {
		n += 7 + 2*len(data[i])
	}
	dst = append(dst, FuncWriteFileRecord, uint8(n))
	for i, r := range recs {
		if r.RefType == 0 {
			r.RefType = 6
		}
		dst = AppendPDU(dst, r.RefType, r.File, r.Record, uint16(len(data[i])), data[i])
	}
	return dst
}

// AppendReadDeviceID appends an FC 43/14 request (MAP §6.21).
func AppendReadDeviceID(dst []byte, code, objectID uint8) []byte {
	return append(dst, FuncEncapsulatedInterface, MEIReadDeviceID, code, objectID)
}

// AppendReadDeviceIDResponse appends an FC 43/14 response listing objects
// with ids firstID, firstID+1, ... and no more to follow.
func AppendReadDeviceIDResponse(dst []byte, code, conformity, firstID uint8, objects []string) []byte {
	dst = append(dst, FuncEncapsulatedInterface, MEIReadDeviceID, code, conformity, 0, 0, uint8(len(objects)))
	for i, o := range objects {
		dst = append(dst, firstID+uint8(i), uint8(len(o)))
		dst = append(dst, o...)
	}
	return dst
}

// AppendException appends an exception response to function fc (MAP §7).
func AppendException(dst []byte, fc uint8, code ExceptionCode) []byte {
	return append(dst, fc|ExceptionBit, uint8(code))
}

// AppendUMAS appends an FC 90 (Schneider UMAS) PDU: the pairing key, the
// UMAS function code of a request (or the status of a response) and data.
// 251 data bytes make the 261-byte ADU UMAS devices send.
func AppendUMAS(dst []byte, key, code uint8, data []byte) []byte {
	return AppendPDU(dst, FuncUMAS, key, code, data)
}
