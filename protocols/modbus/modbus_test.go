package modbus

import (
	"errors"
	"reflect"
	"testing"

	"github.com/otgw/otgw/protocols"
)

func adu(tid uint16, unit uint8, pdu []byte) []byte { return AppendADU(nil, tid, unit, pdu) }

func TestFramerNext(t *testing.T) {
	read := adu(1, 1, AppendAddrQty(nil, 3, 0, 1)) // 12 bytes
	badProto := append([]byte(nil), read...)
	badProto[2] = 1
	tests := []struct {
		name     string
		b        []byte
		wantN    int
		wantNeed int
		wantErr  error
	}{
		{name: "empty", b: nil, wantNeed: 8},
		{name: "3 bytes", b: read[:3], wantNeed: 5},
		{name: "header without unit", b: read[:6], wantNeed: 6},
		{name: "one byte short", b: read[:11], wantNeed: 1},
		{name: "complete", b: read, wantN: 12},
		{name: "two ADUs", b: append(append([]byte(nil), read...), read...), wantN: 12},
		{name: "protocol id after 4 bytes", b: badProto[:4], wantErr: ErrProtocolID},
		{name: "length 0", b: []byte{0, 1, 0, 0, 0, 0}, wantErr: ErrLength},
		{name: "length 1", b: []byte{0, 1, 0, 0, 0, 1, 1}, wantErr: ErrLength},
		{name: "length 255 waits for the function code", b: []byte{0, 1, 0, 0, 0, 255}, wantNeed: 2},
		{name: "length 255 not umas", b: []byte{0, 1, 0, 0, 0, 255, 1, 3}, wantErr: ErrLength},
		{name: "length 255 umas", b: []byte{0, 1, 0, 0, 0, 255, 1, 90}, wantNeed: 253},
		{name: "length 256 umas", b: []byte{0, 1, 0, 0, 1, 0, 1, 90}, wantErr: ErrLength},
		{name: "length 254 ok", b: []byte{0, 1, 0, 0, 0, 254}, wantNeed: 254},
		{name: "http", b: []byte("GET / HTTP/1.1\r\n"), wantErr: ErrProtocolID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, need, err := Framer{}.Next(tc.b)
			if n != tc.wantN || need != tc.wantNeed || !errors.Is(err, tc.wantErr) {
				t.Errorf("Next = (%d, %d, %v), want (%d, %d, %v)", n, need, err, tc.wantN, tc.wantNeed, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrNotModbus) {
				t.Errorf("err %v does not match ErrNotModbus", err)
			}
		})
	}
}

// TestFramerAnySegmentation feeds a stream of several ADUs in every chunk
// size and checks the same ADUs come out.
func TestFramerAnySegmentation(t *testing.T) {
	var stream []byte
	stream = AppendADU(stream, 1, 1, AppendAddrQty(nil, 3, 0, 10))
	stream = AppendADU(stream, 2, 1, AppendWriteMultipleRegisters(nil, 0, regs(123)))
	stream = AppendADU(stream, 3, 9, AppendPDU(nil, 7))
	want := []uint16{1, 2, 3}
	for chunk := 1; chunk <= len(stream); chunk++ {
		var buf, got []byte
		var tids []uint16
		for off := 0; off < len(stream); off += chunk {
			buf = append(buf, stream[off:min(off+chunk, len(stream))]...)
			for {
				n, _, err := Framer{}.Next(buf)
				if err != nil {
					t.Fatalf("chunk %d: %v", chunk, err)
				}
				if n == 0 {
					break
				}
				tids = append(tids, MBAP(buf).TransactionID())
				got = append(got, buf[:n]...)
				buf = buf[n:]
			}
		}
		if len(tids) != len(want) || string(got) != string(stream) {
			t.Fatalf("chunk %d: got tids %v, want %v", chunk, tids, want)
		}
	}
}

func TestMBAP(t *testing.T) {
	h := MBAP(adu(0x1234, 0xFF, []byte{3, 0, 0, 0, 1}))
	if !h.IsValid() {
		t.Fatal("IsValid = false")
	}
	if got, want := h.TransactionID(), uint16(0x1234); got != want {
		t.Errorf("TransactionID = %#x, want %#x", got, want)
	}
	if got, want := h.Length(), uint16(6); got != want {
		t.Errorf("Length = %d, want %d", got, want)
	}
	if got, want := h.Unit(), uint8(0xFF); got != want {
		t.Errorf("Unit = %d, want %d", got, want)
	}
	if got, want := len(h.PDU()), 5; got != want {
		t.Errorf("len(PDU) = %d, want %d", got, want)
	}
	if MBAP([]byte{1, 2, 3}).IsValid() {
		t.Error("short view IsValid = true")
	}
}

func TestDecode(t *testing.T) {
	req, resp := protocols.Request, protocols.Response
	tests := []struct {
		name  string
		b     []byte
		dir   protocols.Dir
		check func(a *ADU) bool
		want  Anomaly
	}{
		{"fc1 request", adu(1, 1, AppendAddrQty(nil, 1, 5, 2000)), req, func(a *ADU) bool {
			return a.Table == TableCoils && a.Address == 5 && a.Quantity == 2000 && a.HasAddress && a.HasQuantity
		}, AnomalyNone},
		{"fc1 qty 2001", adu(1, 1, AppendAddrQty(nil, 1, 0, 2001)), req, nil, AnomalyQuantityOutOfRange},
		{"fc2 response bits", adu(1, 1, AppendReadBitsResponse(nil, 2, []bool{true, false, true})), resp, func(a *ADU) bool {
			return a.Table == TableDiscreteInputs && a.ByteCount == 1 && a.Coil(0) && !a.Coil(1) && a.Coil(2) && !a.HasAddress
		}, AnomalyNone},
		{"fc3 qty 125", adu(1, 1, AppendAddrQty(nil, 3, 0, 125)), req, nil, AnomalyNone},
		{"fc3 qty 126", adu(1, 1, AppendAddrQty(nil, 3, 0, 126)), req, nil, AnomalyQuantityOutOfRange},
		{"fc3 qty 0", adu(1, 1, AppendAddrQty(nil, 3, 0, 0)), req, nil, AnomalyQuantityOutOfRange},
		{"fc3 wraps address space", adu(1, 1, AppendAddrQty(nil, 3, 0xFFF0, 17)), req, nil, AnomalyAddressOutOfRange},
		{"fc3 response values", adu(1, 1, AppendReadRegistersResponse(nil, 3, []uint16{7, 8})), resp, func(a *ADU) bool {
			r := a.Registers()
			return len(r) == 2 && r[0] == 7 && r[1] == 8 && a.Table == TableHoldingRegisters
		}, AnomalyNone},
		{"fc3 response odd byte count", adu(1, 1, []byte{3, 3, 0, 1, 2}), resp, nil, AnomalyByteCountMismatch},
		{"fc3 request short", adu(1, 1, []byte{3, 0, 0}), req, nil, AnomalyTruncated},
		{"fc3 request long", adu(1, 1, []byte{3, 0, 0, 0, 1, 9}), req, nil, AnomalyPDULength},
		{"fc4 table", adu(1, 1, AppendAddrQty(nil, 4, 0, 1)), req, func(a *ADU) bool { return a.Table == TableInputRegisters }, AnomalyNone},
		{"fc5 on", adu(1, 1, AppendWriteSingleCoil(nil, 9, true)), req, func(a *ADU) bool {
			return a.Address == 9 && a.Value == 0xFF00 && a.Coil(0) && a.NumCoils() == 1 && !a.HasQuantity
		}, AnomalyNone},
		{"fc5 bad value", adu(1, 1, AppendPDU(nil, 5, uint16(9), uint16(0x00FF))), req, nil, AnomalyBadCoilValue},
		{"fc6", adu(1, 1, AppendWriteSingleRegister(nil, 3, 77)), req, func(a *ADU) bool {
			return a.Address == 3 && a.Value == 77 && a.Registers()[0] == 77
		}, AnomalyNone},
		{"fc7 response", adu(1, 1, []byte{7, 0x55}), resp, nil, AnomalyNone},
		{"fc8 sub 1", adu(1, 1, AppendDiagnostics(nil, 1, []uint16{0xFF00})), req, func(a *ADU) bool { return a.HasSub && a.Sub == 1 }, AnomalyNone},
		{"fc8 sub 1 bad data", adu(1, 1, AppendDiagnostics(nil, 1, []uint16{1})), req, nil, AnomalyDiagDataInvalid},
		{"fc8 reserved sub", adu(1, 1, AppendDiagnostics(nil, 19, []uint16{0})), req, nil, AnomalyUnknownSubFunction},
		{"fc8 counter response", adu(1, 1, AppendDiagnostics(nil, 12, []uint16{42})), resp, nil, AnomalyNone},
		{"fc11 response", adu(1, 1, AppendPDU(nil, 11, uint16(0), uint16(3))), resp, nil, AnomalyNone},
		{"fc12 response", adu(1, 1, AppendPDU(nil, 12, uint8(7), uint16(0), uint16(1), uint16(2), uint8(0x20))), resp, nil, AnomalyNone},
		{"fc15", adu(1, 1, AppendWriteMultipleCoils(nil, 20, bits(10))), req, func(a *ADU) bool {
			return a.Quantity == 10 && a.ByteCount == 2 && a.NumCoils() == 10 && a.Coil(0) && !a.Coil(1) && a.Coil(9)
		}, AnomalyNone},
		{"fc15 qty 1968", adu(1, 1, AppendWriteMultipleCoils(nil, 0, bits(1968))), req, nil, AnomalyNone},
		{"fc15 byte count", adu(1, 1, AppendPDU(nil, 15, uint16(0), uint16(9), uint8(1), uint8(0xFF))), req, nil, AnomalyByteCountMismatch},
		{"fc16 values", adu(1, 1, AppendWriteMultipleRegisters(nil, 40, []uint16{1, 2, 3})), req, func(a *ADU) bool {
			r := a.Registers()
			return a.Address == 40 && a.Quantity == 3 && len(r) == 3 && r[2] == 3
		}, AnomalyNone},
		{"fc16 response", adu(1, 1, AppendAddrQty(nil, 16, 40, 3)), resp, func(a *ADU) bool { return a.Address == 40 && a.Quantity == 3 }, AnomalyNone},
		{"fc17 response", adu(1, 1, AppendPDU(nil, 17, uint8(2), uint8(1), uint8(0xFF))), resp, nil, AnomalyNone},
		{"fc20 request", adu(1, 1, AppendReadFileRecord(nil, []FileRecord{{File: 4, Record: 1, Length: 2}})), req, func(a *ADU) bool {
			f := a.FileRecords()
			return a.Table == TableFile && len(f) == 1 && f[0] == FileRecord{RefType: 6, File: 4, Record: 1, Length: 2}
		}, AnomalyNone},
		{"fc20 ref type 7", adu(1, 1, AppendReadFileRecord(nil, []FileRecord{{RefType: 7, File: 4}})), req, nil, AnomalyFileReference},
		{"fc20 response", adu(1, 1, AppendReadFileRecordResponse(nil, [][]uint16{{1, 2}})), resp, func(a *ADU) bool { return a.NumFileRecords == 1 }, AnomalyNone},
		{"fc21", adu(1, 1, AppendWriteFileRecord(nil, []FileRecord{{File: 4, Record: 7}}, [][]uint16{{1, 2, 3}})), req, func(a *ADU) bool {
			f := a.FileRecords()
			return len(f) == 1 && f[0].Length == 3
		}, AnomalyNone},
		{"fc22", adu(1, 1, AppendMaskWriteRegister(nil, 4, 0xF2, 0x25)), req, func(a *ADU) bool {
			return a.Address == 4 && a.AndMask == 0xF2 && a.OrMask == 0x25 && a.Table == TableHoldingRegisters
		}, AnomalyNone},
		{"fc23", adu(1, 1, AppendReadWriteMultipleRegisters(nil, 3, 6, 14, []uint16{9, 8, 7})), req, func(a *ADU) bool {
			return a.Address == 3 && a.Quantity == 6 && a.HasWrite && a.WriteAddress == 14 && a.WriteQuantity == 3 && a.Registers()[0] == 9
		}, AnomalyNone},
		{"fc23 write 122", adu(1, 1, AppendPDU(nil, 23, uint16(0), uint16(1), uint16(0), uint16(122), uint8(2), uint16(1))), req, nil, AnomalyQuantityOutOfRange},
		{"fc24 request", adu(1, 1, AppendPDU(nil, 24, uint16(0x4DE))), req, func(a *ADU) bool { return a.Address == 0x4DE && a.Table == TableFIFO }, AnomalyNone},
		{"fc24 response", adu(1, 1, AppendReadFIFOResponse(nil, []uint16{5, 6})), resp, func(a *ADU) bool { return a.Quantity == 2 && a.ByteCount == 6 }, AnomalyNone},
		{"fc24 count 32", adu(1, 1, AppendReadFIFOResponse(nil, regs(32))), resp, nil, AnomalyQuantityOutOfRange},
		{"fc43/14 request", adu(1, 1, AppendReadDeviceID(nil, 4, 2)), req, func(a *ADU) bool {
			return a.Sub == 14 && a.DeviceIDCode == 4 && a.ObjectID == 2
		}, AnomalyNone},
		{"fc43/14 response", adu(1, 1, AppendReadDeviceIDResponse(nil, 1, 0x81, 0, []string{"a", "bc"})), resp, func(a *ADU) bool {
			return a.NumObjects == 2 && a.Conformity == 0x81
		}, AnomalyNone},
		{"fc43/14 code 0", adu(1, 1, AppendReadDeviceID(nil, 0, 0)), req, nil, AnomalyDeviceIDInvalid},
		{"fc43/13", adu(1, 1, AppendPDU(nil, 43, uint8(13), []byte{1, 2, 3})), req, func(a *ADU) bool { return a.Sub == 13 }, AnomalyNone},
		{"user defined", adu(1, 1, AppendPDU(nil, 70, []byte{1})), req, func(a *ADU) bool { return a.UserDefined && len(a.Data) == 1 }, AnomalyNone},
		{"reserved fc 9", adu(1, 1, AppendPDU(nil, 9)), req, nil, AnomalyUnknownFunction},
		{"exception", adu(1, 1, AppendException(nil, 3, ExceptionIllegalDataAddress)), resp, func(a *ADU) bool {
			return a.IsException && a.Function == 0x83 && a.Func() == 3 && a.Exception == 2 && !a.HasAddress
		}, AnomalyNone},
		{"exception code 9", adu(1, 1, AppendException(nil, 3, 9)), resp, nil, AnomalyExceptionCodeInvalid},
		{"exception in request", adu(1, 1, AppendException(nil, 3, 2)), req, nil, AnomalyUnknownFunction},
		{"protocol id", func() []byte { b := adu(1, 1, AppendPDU(nil, 7)); b[3] = 1; return b }(), req, nil, AnomalyProtocolID},
		{"length field 1", []byte{0, 1, 0, 0, 0, 1, 1}, req, nil, AnomalyMBAPLength},
		{"bytes beyond length", append(adu(1, 1, AppendPDU(nil, 7)), 0), req, nil, AnomalyMBAPLength},
		{"short header", []byte{0, 1, 0}, req, nil, AnomalyTruncated},
		{"shorter than length", adu(1, 1, AppendAddrQty(nil, 3, 0, 1))[:10], req, nil, AnomalyTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a ADU
			err := a.Decode(tc.b, tc.dir)
			if a.Anomaly != tc.want {
				t.Errorf("Anomaly = %v, want %v", a.Anomaly, tc.want)
			}
			if (err != nil) != (a.Anomaly != AnomalyNone) {
				t.Errorf("err = %v with Anomaly %v: err must be set exactly when an anomaly is", err, a.Anomaly)
			}
			if tc.check != nil && !tc.check(&a) {
				t.Errorf("fields wrong: %+v", a)
			}
		})
	}
}

// TestDecodeResets checks that decoding a small ADU after a large one
// leaves nothing of the first behind.
func TestDecodeResets(t *testing.T) {
	var a ADU
	_ = a.Decode(adu(9, 9, AppendReadWriteMultipleRegisters(nil, 1, 2, 3, regs(5))), protocols.Request)
	_ = a.Decode(adu(1, 1, AppendPDU(nil, 7)), protocols.Request)
	var want ADU
	_ = want.Decode(adu(1, 1, AppendPDU(nil, 7)), protocols.Request)
	if a.HasWrite || a.HasAddress || len(a.Registers()) != 0 || a.ByteCount != 0 || a.TransactionID != 1 {
		t.Errorf("stale fields after reuse: %+v", a)
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("reused ADU differs from a fresh one")
	}
}

func TestAnomalyString(t *testing.T) {
	seen := map[string]bool{}
	for a := AnomalyNone; a < numAnomalies; a++ {
		s := a.String()
		if s == "" || seen[s] {
			t.Errorf("Anomaly(%d).String() = %q: empty or duplicate", a, s)
		}
		seen[s] = true
		if got, ok := ParseAnomaly(s); !ok || got != a {
			t.Errorf("ParseAnomaly(%q) = %v, %v; want %v", s, got, ok, a)
		}
	}
	if got, want := Anomaly(200).String(), "anomaly_200"; got != want {
		t.Errorf("String of unknown = %q, want %q", got, want)
	}
	if got, want := TableHoldingRegisters.String(), "holding"; got != want {
		t.Errorf("Table String = %q, want %q", got, want)
	}
	if got, want := ExceptionGatewayTargetNoResponse.String(), "gateway_target_no_response"; got != want {
		t.Errorf("ExceptionCode String = %q, want %q", got, want)
	}
	if got, want := FunctionName(0x83), "read_holding_registers"; got != want {
		t.Errorf("FunctionName(0x83) = %q, want %q", got, want)
	}
}

func decoded(t *testing.T, b []byte, dir protocols.Dir) *ADU {
	t.Helper()
	a := new(ADU)
	_ = a.Decode(b, dir)
	return a
}

func TestPairing(t *testing.T) {
	req, resp := protocols.Request, protocols.Response
	t.Run("match attributes addresses", func(t *testing.T) {
		var p Pairing
		if an := p.Request(decoded(t, adu(5, 1, AppendAddrQty(nil, 3, 100, 2)), req)); an != AnomalyNone {
			t.Fatalf("Request = %v", an)
		}
		r := decoded(t, adu(5, 1, AppendReadRegistersResponse(nil, 3, []uint16{11, 22})), resp)
		o, ok, an := p.Response(r)
		if !ok || an != AnomalyNone {
			t.Fatalf("Response = %v, %v", ok, an)
		}
		if addr, in := o.AddressOf(1); !in || addr != 101 {
			t.Errorf("AddressOf(1) = %d, %v; want 101, true", addr, in)
		}
		if _, in := o.AddressOf(2); in {
			t.Error("AddressOf(2) inside a quantity of 2")
		}
		if got, want := p.Len(), 0; got != want {
			t.Errorf("Len = %d, want %d", got, want)
		}
	})
	tests := []struct {
		name string
		reqs [][]byte
		resp []byte
		want Anomaly
	}{
		{"without request", nil, adu(1, 1, AppendWriteSingleCoil(nil, 0, true)), AnomalyResponseWithoutRequest},
		{"tid mismatch", [][]byte{adu(1, 1, AppendAddrQty(nil, 3, 0, 1))}, adu(2, 1, AppendReadRegistersResponse(nil, 3, regs(1))), AnomalyTIDMismatch},
		{"unit mismatch", [][]byte{adu(1, 1, AppendAddrQty(nil, 3, 0, 1))}, adu(1, 2, AppendReadRegistersResponse(nil, 3, regs(1))), AnomalyUnitMismatch},
		{"function mismatch", [][]byte{adu(1, 1, AppendAddrQty(nil, 3, 0, 1))}, adu(1, 1, AppendReadRegistersResponse(nil, 4, regs(1))), AnomalyFunctionMismatch},
		{"exception matches", [][]byte{adu(1, 1, AppendAddrQty(nil, 3, 0, 1))}, adu(1, 1, AppendException(nil, 3, 2)), AnomalyNone},
		{"read size", [][]byte{adu(1, 1, AppendAddrQty(nil, 1, 0, 9))}, adu(1, 1, AppendReadBitsResponse(nil, 1, bits(8))), AnomalyByteCountMismatch},
		{"read size ok", [][]byte{adu(1, 1, AppendAddrQty(nil, 1, 0, 9))}, adu(1, 1, AppendReadBitsResponse(nil, 1, bits(9))), AnomalyNone},
		{"echo fc6", [][]byte{adu(1, 1, AppendWriteSingleRegister(nil, 1, 2))}, adu(1, 1, AppendWriteSingleRegister(nil, 1, 3)), AnomalyEchoMismatch},
		{"echo fc16", [][]byte{adu(1, 1, AppendWriteMultipleRegisters(nil, 1, regs(2)))}, adu(1, 1, AppendAddrQty(nil, 16, 1, 3)), AnomalyEchoMismatch},
		{"echo fc22", [][]byte{adu(1, 1, AppendMaskWriteRegister(nil, 1, 2, 3))}, adu(1, 1, AppendMaskWriteRegister(nil, 1, 2, 4)), AnomalyEchoMismatch},
		{"echo fc8", [][]byte{adu(1, 1, AppendDiagnostics(nil, 1, []uint16{0}))}, adu(1, 1, AppendDiagnostics(nil, 10, []uint16{0})), AnomalyEchoMismatch},
		{"same tid pipelined, second answered", [][]byte{
			adu(7, 1, AppendAddrQty(nil, 3, 0, 1)), adu(7, 1, AppendWriteSingleRegister(nil, 4, 5)),
		}, adu(7, 1, AppendWriteSingleRegister(nil, 4, 5)), AnomalyNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p Pairing
			for _, r := range tc.reqs {
				p.Request(decoded(t, r, req))
			}
			_, _, got := p.Response(decoded(t, tc.resp, resp))
			if got != tc.want {
				t.Errorf("Response anomaly = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		var p Pairing
		r := decoded(t, adu(1, 1, AppendAddrQty(nil, 3, 0, 1)), req)
		for i := 0; i < MaxOutstanding; i++ {
			r.TransactionID = uint16(i)
			if an := p.Request(r); an != AnomalyNone {
				t.Fatalf("request %d: %v", i, an)
			}
		}
		r.TransactionID = 999
		if an := p.Request(r); an != AnomalyTooManyOutstanding {
			t.Errorf("request beyond MaxOutstanding = %v, want %v", an, AnomalyTooManyOutstanding)
		}
		if got := p.Len(); got != MaxOutstanding {
			t.Errorf("Len = %d, want %d", got, MaxOutstanding)
		}
		// The oldest (tid 0) was forgotten.
		_, ok, _ := p.Response(decoded(t, adu(0, 1, AppendReadRegistersResponse(nil, 3, regs(1))), resp))
		if ok {
			t.Error("oldest request still matched after eviction")
		}
		p.MarkStale()
		r.TransactionID = 1000
		if an := p.Request(r); an != AnomalyNone {
			t.Errorf("evicting a stale request = %v, want none", an)
		}
	})
}

// feedRecords runs chunks through a Session and collects the records.
func feedRecords(c *Session, dir protocols.Dir, chunks [][]byte, gapAt int) []protocols.Record {
	var out []protocols.Record
	for i, ch := range chunks {
		feed(c, dir, ch, i == gapAt, func(r protocols.Record) { out = append(out, r) })
	}
	return out
}

func TestConnSegmentation(t *testing.T) {
	var stream []byte
	for i := uint16(1); i <= 5; i++ {
		stream = AppendADU(stream, i, 1, AppendWriteMultipleRegisters(nil, i, regs(int(i))))
	}
	for chunk := 1; chunk <= len(stream); chunk += 3 {
		var chunks [][]byte
		for off := 0; off < len(stream); off += chunk {
			chunks = append(chunks, stream[off:min(off+chunk, len(stream))])
		}
		recs := feedRecords(new(Session), protocols.Request, chunks, -1)
		if len(recs) != 5 {
			t.Fatalf("chunk %d: %d records, want 5", chunk, len(recs))
		}
		for i, r := range recs {
			tid, _ := r.Get("tid")
			if tid != i+1 || r.Anomaly != "" {
				t.Errorf("chunk %d record %d: tid %v anomaly %q", chunk, i, tid, r.Anomaly)
			}
		}
	}
}

func TestConnNonModbusAndGap(t *testing.T) {
	good := adu(1, 1, AppendAddrQty(nil, 3, 0, 1))
	junk := []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
	c := new(Session)
	recs := feedRecords(c, protocols.Request, [][]byte{junk, good, good}, -1)
	if len(recs) != 1 || recs[0].Anomaly != "non_modbus" || len(recs[0].Fields) != 0 {
		t.Fatalf("records = %+v, want one non_modbus record", recs)
	}
	// A gap resynchronises the direction.
	recs = feedRecords(c, protocols.Request, [][]byte{good}, 0)
	if len(recs) != 1 || recs[0].Anomaly != "" {
		t.Fatalf("after gap: %+v, want one clean record", recs)
	}
	// A partial ADU before a gap is dropped, not glued to the next bytes.
	c = new(Session)
	recs = feedRecords(c, protocols.Request, [][]byte{good[:5], good}, 1)
	if len(recs) != 1 || recs[0].Anomaly != "" {
		t.Fatalf("partial then gap: %+v, want one clean record", recs)
	}
}

func TestConnFieldOrder(t *testing.T) {
	c := new(Session)
	var recs []protocols.Record
	emit := func(r protocols.Record) { recs = append(recs, r) }
	feed(c, protocols.Request, adu(3, 1, AppendReadWriteMultipleRegisters(nil, 1, 2, 3, regs(1))), false, emit)
	feed(c, protocols.Response, adu(3, 1, AppendException(nil, 23, 4)), false, emit)
	feed(c, protocols.Request, adu(4, 1, AppendDiagnostics(nil, 2, []uint16{0})), false, emit)
	want := [][]string{
		{"tid", "unit", "fc", "addr", "qty", "write_addr", "write_qty", "values"},
		{"tid", "unit", "fc", "exception"},
		{"tid", "unit", "fc", "sub"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		var keys []string
		for _, kv := range r.Fields {
			keys = append(keys, kv.Key)
		}
		if len(keys) != len(want[i]) {
			t.Errorf("record %d keys %v, want %v", i, keys, want[i])
			continue
		}
		for j := range keys {
			if keys[j] != want[i][j] {
				t.Errorf("record %d keys %v, want %v", i, keys, want[i])
				break
			}
		}
	}
	if fc, _ := recs[1].Get("fc"); fc != 0x97 {
		t.Errorf("exception fc = %v, want 0x97 as on the wire", fc)
	}
}

func TestFieldsHeaderOnly(t *testing.T) {
	tests := []struct {
		name     string
		b        []byte
		wantKeys int
		want     string
	}{
		{"protocol id keeps tid and unit", func() []byte { b := adu(9, 3, AppendPDU(nil, 7)); b[2] = 0xFF; return b }(), 2, "protocol_id"},
		{"no header, no fields", []byte{1, 2}, 0, "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := recordOf(tc.b, protocols.Request)
			if len(r.Fields) != tc.wantKeys || r.Anomaly != tc.want {
				t.Errorf("record = %+v, want %d fields and anomaly %q", r, tc.wantKeys, tc.want)
			}
		})
	}
}
