package modbus

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

// benchADUs are one request and one response per function code family,
// used by the benchmarks, the allocation tests and as fuzz seeds.
var benchADUs = []struct {
	name string
	dir  protocols.Dir
	b    []byte
}{
	{"fc1_req", protocols.Request, AppendADU(nil, 1, 1, AppendAddrQty(nil, 1, 0, 2000))},
	{"fc1_resp", protocols.Response, AppendADU(nil, 1, 1, AppendReadBitsResponse(nil, 1, make([]bool, 2000)))},
	{"fc3_req", protocols.Request, AppendADU(nil, 1, 1, AppendAddrQty(nil, 3, 0, 125))},
	{"fc3_resp", protocols.Response, AppendADU(nil, 1, 1, AppendReadRegistersResponse(nil, 3, make([]uint16, 125)))},
	{"fc5_req", protocols.Request, AppendADU(nil, 1, 1, AppendWriteSingleCoil(nil, 3, true))},
	{"fc6_req", protocols.Request, AppendADU(nil, 1, 1, AppendWriteSingleRegister(nil, 3, 4))},
	{"fc8_req", protocols.Request, AppendADU(nil, 1, 1, AppendDiagnostics(nil, 1, []uint16{0xFF00}))},
	{"fc15_req", protocols.Request, AppendADU(nil, 1, 1, AppendWriteMultipleCoils(nil, 0, make([]bool, 1968)))},
	{"fc16_req", protocols.Request, AppendADU(nil, 1, 1, AppendWriteMultipleRegisters(nil, 0, make([]uint16, 123)))},
	{"fc20_req", protocols.Request, AppendADU(nil, 1, 1, AppendReadFileRecord(nil, []FileRecord{{File: 1}, {File: 2}}))},
	{"fc21_req", protocols.Request, AppendADU(nil, 1, 1, AppendWriteFileRecord(nil, []FileRecord{{File: 1}}, [][]uint16{{1, 2, 3}}))},
	{"fc22_req", protocols.Request, AppendADU(nil, 1, 1, AppendMaskWriteRegister(nil, 1, 2, 3))},
	{"fc23_req", protocols.Request, AppendADU(nil, 1, 1, AppendReadWriteMultipleRegisters(nil, 0, 125, 0, make([]uint16, 121)))},
	{"fc24_resp", protocols.Response, AppendADU(nil, 1, 1, AppendReadFIFOResponse(nil, make([]uint16, 31)))},
	{"fc43_14_resp", protocols.Response, AppendADU(nil, 1, 1, AppendReadDeviceIDResponse(nil, 1, 0x81, 0, []string{"vendor", "product", "1.0"}))},
	{"exception", protocols.Response, AppendADU(nil, 1, 1, AppendException(nil, 3, 2))},
}

func TestDecodeAllocs(t *testing.T) {
	var a ADU
	for _, tc := range benchADUs {
		if n := testing.AllocsPerRun(100, func() { _ = a.Decode(tc.b, tc.dir) }); n != 0 {
			t.Errorf("%s: Decode allocates %v times, want 0", tc.name, n)
		}
	}
}

func TestFramerAllocs(t *testing.T) {
	var f Framer
	b := benchADUs[3].b
	if n := testing.AllocsPerRun(100, func() {
		_, _, _ = f.Next(b[:5])
		_, _, _ = f.Next(b)
		_, _, _ = f.Next([]byte{0, 1, 0, 9, 0, 2})
	}); n != 0 {
		t.Errorf("Framer.Next allocates %v times, want 0", n)
	}
}

func TestPairingAllocs(t *testing.T) {
	var p Pairing
	var req, resp ADU
	_ = req.Decode(benchADUs[2].b, protocols.Request)
	_ = resp.Decode(benchADUs[3].b, protocols.Response)
	if n := testing.AllocsPerRun(100, func() {
		p.Request(&req)
		p.Response(&resp)
	}); n != 0 {
		t.Errorf("Pairing allocates %v times, want 0", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, tc := range benchADUs {
		b.Run(tc.name, func(b *testing.B) {
			var a ADU
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.b)))
			for b.Loop() {
				_ = a.Decode(tc.b, tc.dir)
			}
		})
	}
}

// BenchmarkFramerDecodePair is the gateway's per-PDU work for a read
// request and its response: frame, decode and pair both.
func BenchmarkFramerDecodePair(b *testing.B) {
	var f Framer
	var p Pairing
	var a ADU
	req := AppendADU(nil, 1, 1, AppendAddrQty(nil, 3, 0, 10))
	resp := AppendADU(nil, 1, 1, AppendReadRegistersResponse(nil, 3, make([]uint16, 10)))
	b.ReportAllocs()
	for b.Loop() {
		n, _, _ := f.Next(req)
		_ = a.Decode(req[:n], protocols.Request)
		p.Request(&a)
		n, _, _ = f.Next(resp)
		_ = a.Decode(resp[:n], protocols.Response)
		p.Response(&a)
	}
}

// addCaptureSeeds adds every TCP payload of the generated testdata
// captures as a fuzz seed (one seed per segment, with its direction).
func addCaptureSeeds(f *testing.F, add func(b []byte, resp bool)) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	for _, path := range files {
		_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
			if s.Transport == "tcp" {
				add(bytes.Clone(s.Payload), s.Src.Port() == 502)
			}
			return nil
		})
		if err != nil {
			f.Fatal(err)
		}
	}
}

// FuzzDecode checks Decode on arbitrary bytes. Seeds: the benchmark ADUs
// (every function family, request and response) and every segment of the
// generated testdata captures (well-formed exchanges and one capture per
// anomaly). Invariants: no panic; err != nil exactly when Anomaly is set;
// a decoded ADU's Data lies inside b and its arrays within their caps; a
// well-formed ADU re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, tc := range benchADUs {
		f.Add(tc.b, tc.dir == protocols.Response)
	}
	addCaptureSeeds(f, func(b []byte, resp bool) { f.Add(b, resp) })
	f.Fuzz(func(t *testing.T, b []byte, resp bool) {
		dir := protocols.Request
		if resp {
			dir = protocols.Response
		}
		var a ADU
		err := a.Decode(b, dir)
		if (err != nil) != (a.Anomaly != AnomalyNone) {
			t.Fatalf("err %v but Anomaly %v", err, a.Anomaly)
		}
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrNotModbus) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error %v", err)
		}
		if len(a.Data) > len(b) || len(a.Registers()) > MaxRegisters || a.NumCoils() > MaxCoils || len(a.FileRecords()) > MaxFileRecords {
			t.Fatalf("fields out of bounds: %+v", a)
		}
		if a.HasPDU() && len(b) >= MBAPLen+1 {
			if got := AppendADU(nil, a.TransactionID, a.Unit, b[MBAPLen:MBAPLen+1+len(a.Data)]); err == nil && !bytes.Equal(got, b) {
				t.Fatalf("round trip: %x != %x", got, b)
			}
		}
		_ = recordOf(b, dir)
	})
}

// FuzzConn feeds arbitrary bytes, split at arbitrary points, through the
// Framer and a Session. Seeds as FuzzDecode. Invariants: no panic; Next never
// claims more than it was given and a complete ADU is 8-260 bytes (261 for
// FC 90, UMAS); the Session
// emits at most one Record per 8 bytes plus one non_modbus Record.
func FuzzConn(f *testing.F) {
	for _, tc := range benchADUs {
		f.Add(tc.b, uint8(3), tc.dir == protocols.Response)
	}
	addCaptureSeeds(f, func(b []byte, resp bool) { f.Add(b, uint8(1), resp) })
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8, resp bool) {
		rest := b
		for len(rest) > 0 {
			n, need, err := Framer{}.Next(rest)
			if n > len(rest) || (n > 0 && (n < MBAPLen+1 || n > MaxUMASADULen || n > MaxADULen && rest[MBAPLen]&^ExceptionBit != FuncUMAS)) || (n == 0 && err == nil && need <= 0) {
				t.Fatalf("Next(%x) = %d, %d, %v", rest, n, need, err)
			}
			if n == 0 {
				break
			}
			rest = rest[n:]
		}
		dir := protocols.Request
		if resp {
			dir = protocols.Response
		}
		step := int(chunk) + 1
		c := new(Session)
		records := 0
		for off := 0; off < len(b); off += step {
			feed(c, dir, b[off:min(off+step, len(b))], false, func(protocols.Record) { records++ })
		}
		if records > len(b)/(MBAPLen+1)+1 {
			t.Fatalf("%d records from %d bytes", records, len(b))
		}
	})
}
