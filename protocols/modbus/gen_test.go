package modbus

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// update regenerates testdata/*.pcap and testdata/*.golden:
//
//	go test ./protocols/modbus -run TestGolden -update
var update = flag.Bool("update", false, "rewrite testdata captures and golden files")

// genFlow writes one Modbus/TCP connection (192.0.2.10:40000 →
// 192.0.2.20:502) with a proper handshake and sequence numbers.
type genFlow struct {
	w    *capture.Writer
	flow *capture.TCPFlow
	tid  uint16
	err  error
}

func newGenFlow(w *capture.Writer) *genFlow {
	client := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.10:40000")}
	server := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.20:502")}
	g := &genFlow{w: w, flow: capture.NewTCPFlow(client, server)}
	for _, f := range g.flow.Handshake() {
		g.write(f)
	}
	return g
}

func (g *genFlow) write(frame []byte) {
	if g.err == nil {
		g.err = g.w.WriteFrame(frame)
	}
}

// send writes payload in one segment.
func (g *genFlow) send(fromClient bool, payload []byte) { g.write(g.flow.Send(fromClient, payload)) }

// sendSplit writes payload in segments of at most chunk bytes.
func (g *genFlow) sendSplit(fromClient bool, payload []byte, chunk int) {
	for len(payload) > 0 {
		n := min(chunk, len(payload))
		g.send(fromClient, payload[:n])
		payload = payload[n:]
	}
}

// exchange sends a request and its response with the next transaction id
// and unit 1; a nil PDU is not sent.
func (g *genFlow) exchange(req, resp []byte) {
	g.tid++
	if req != nil {
		g.send(true, AppendRequest(nil, g.tid, 1, req))
	}
	if resp != nil {
		g.send(false, AppendResponse(nil, g.tid, 1, resp))
	}
}

func regs(n int) []uint16 {
	v := make([]uint16, n)
	for i := range v {
		v[i] = uint16(0x100 + i)
	}
	return v
}

func bits(n int) []bool {
	v := make([]bool, n)
	for i := range v {
		v[i] = i%3 == 0
	}
	return v
}

// genCases are the generated captures. Each anomaly_* capture makes its
// named anomaly appear (wantAnomaly), checked by TestGolden besides the
// golden file.
var genCases = []struct {
	name        string
	wantAnomaly Anomaly
	build       func(g *genFlow)
}{
	{name: "functions", build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 1, 0, 10), AppendReadBitsResponse(nil, 1, bits(10)))
		g.exchange(AppendAddrQty(nil, 2, 100, 2000), AppendReadBitsResponse(nil, 2, bits(2000)))
		g.exchange(AppendAddrQty(nil, 3, 40, 125), AppendReadRegistersResponse(nil, 3, regs(125)))
		g.exchange(AppendAddrQty(nil, 4, 7, 3), AppendReadRegistersResponse(nil, 4, regs(3)))
		g.exchange(AppendWriteSingleCoil(nil, 12, true), AppendWriteSingleCoil(nil, 12, true))
		g.exchange(AppendWriteSingleRegister(nil, 41, 999), AppendWriteSingleRegister(nil, 41, 999))
		g.exchange(AppendPDU(nil, 7), AppendPDU(nil, 7, uint8(0x6D)))
		g.exchange(AppendDiagnostics(nil, DiagReturnQueryData, []uint16{0xA537}), AppendDiagnostics(nil, DiagReturnQueryData, []uint16{0xA537}))
		g.exchange(AppendDiagnostics(nil, DiagRestartComm, []uint16{0xFF00}), AppendDiagnostics(nil, DiagRestartComm, []uint16{0xFF00}))
		g.exchange(AppendDiagnostics(nil, DiagReturnRegister, []uint16{0}), AppendDiagnostics(nil, DiagReturnRegister, []uint16{0x0004}))
		g.exchange(AppendDiagnostics(nil, DiagClearCounters, []uint16{0}), AppendDiagnostics(nil, DiagClearCounters, []uint16{0}))
		g.exchange(AppendDiagnostics(nil, 0x0B, []uint16{0}), AppendDiagnostics(nil, 0x0B, []uint16{0x0108}))
		g.exchange(AppendDiagnostics(nil, DiagForceListenOnly, []uint16{0}), nil)
		g.exchange(AppendPDU(nil, 11), AppendPDU(nil, 11, uint16(0xFFFF), uint16(0x0108)))
		g.exchange(AppendPDU(nil, 12), AppendPDU(nil, 12, uint8(8), uint16(0), uint16(0x0108), uint16(0x0121), []byte{0x20, 0x00}))
		g.exchange(AppendWriteMultipleCoils(nil, 19, bits(10)), AppendAddrQty(nil, 15, 19, 10))
		g.exchange(AppendWriteMultipleRegisters(nil, 1, regs(123)), AppendAddrQty(nil, 16, 1, 123))
		g.exchange(AppendPDU(nil, 17), AppendPDU(nil, 17, uint8(3), []byte{0x42, 0xFF, 0x01}))
		g.exchange(AppendReadFileRecord(nil, []FileRecord{{File: 4, Record: 1, Length: 2}, {File: 3, Record: 9, Length: 2}}),
			AppendReadFileRecordResponse(nil, [][]uint16{regs(2), regs(2)}))
		g.exchange(AppendWriteFileRecord(nil, []FileRecord{{File: 4, Record: 7}}, [][]uint16{regs(3)}),
			AppendWriteFileRecord(nil, []FileRecord{{File: 4, Record: 7}}, [][]uint16{regs(3)}))
		g.exchange(AppendMaskWriteRegister(nil, 4, 0x00F2, 0x0025), AppendMaskWriteRegister(nil, 4, 0x00F2, 0x0025))
		g.exchange(AppendReadWriteMultipleRegisters(nil, 3, 6, 14, regs(3)), AppendReadRegistersResponse(nil, 23, regs(6)))
		g.exchange(AppendPDU(nil, 24, uint16(0x04DE)), AppendReadFIFOResponse(nil, regs(2)))
		g.exchange(AppendPDU(nil, 43, MEICANopen, []byte{0x01, 0x02}), AppendPDU(nil, 43, MEICANopen, []byte{0x01, 0x02, 0x03}))
		g.exchange(AppendReadDeviceID(nil, 1, 0), AppendReadDeviceIDResponse(nil, 1, 0x81, 0, []string{"otgw", "modbus-gen", "1.0"}))
		g.exchange(AppendPDU(nil, 65, []byte{1, 2, 3}), AppendPDU(nil, 65, []byte{4}))
		g.exchange(AppendPDU(nil, 100), AppendPDU(nil, 100, []byte{0}))
	}},
	{name: "exceptions", build: func(g *genFlow) {
		for _, c := range []struct {
			fc   uint8
			code ExceptionCode
		}{{1, 2}, {3, 3}, {5, 4}, {16, 6}, {8, 1}, {43, 0x0B}, {23, 0x0A}, {66, 1}} {
			req := AppendPDU(nil, c.fc)
			switch c.fc {
			case 1, 3:
				req = AppendAddrQty(nil, c.fc, 0, 1)
			case 5:
				req = AppendWriteSingleCoil(nil, 0, false)
			case 16:
				req = AppendWriteMultipleRegisters(nil, 0, regs(1))
			case 8:
				req = AppendDiagnostics(nil, 1, []uint16{0})
			case 43:
				req = AppendReadDeviceID(nil, 2, 0)
			case 23:
				req = AppendReadWriteMultipleRegisters(nil, 0, 1, 0, regs(1))
			}
			g.exchange(req, AppendException(nil, c.fc, c.code))
		}
	}},
	{name: "split", build: func(g *genFlow) {
		g.tid = 7
		g.sendSplit(true, AppendRequest(nil, 7, 1, AppendWriteMultipleRegisters(nil, 10, regs(4))), 1)
		g.sendSplit(false, AppendResponse(nil, 7, 1, AppendAddrQty(nil, 16, 10, 4)), 1)
		// Two ADUs split across segment boundaries at odd offsets.
		var two []byte
		two = AppendRequest(two, 8, 1, AppendAddrQty(nil, 3, 0, 2))
		two = AppendRequest(two, 9, 1, AppendAddrQty(nil, 4, 0, 1))
		g.sendSplit(true, two, 5)
		var resp []byte
		resp = AppendResponse(resp, 8, 1, AppendReadRegistersResponse(nil, 3, regs(2)))
		resp = AppendResponse(resp, 9, 1, AppendReadRegistersResponse(nil, 4, regs(1)))
		g.sendSplit(false, resp, 9)
	}},
	{name: "pipelined", build: func(g *genFlow) {
		var req, resp []byte
		for i := uint16(1); i <= 4; i++ {
			req = AppendRequest(req, i, uint8(i), AppendAddrQty(nil, 3, 10*i, i))
		}
		for i := uint16(4); i >= 1; i-- { // answered out of order (TCP guide §4.2)
			resp = AppendResponse(resp, i, uint8(i), AppendReadRegistersResponse(nil, 3, regs(int(i))))
		}
		g.send(true, req)
		g.send(false, resp)
	}},
	{name: "anomaly_protocol_id", wantAnomaly: AnomalyNonModbus, build: func(g *genFlow) {
		adu := AppendRequest(nil, 1, 1, AppendAddrQty(nil, 3, 0, 1))
		adu[3] = 1 // protocol id 1
		g.send(true, adu)
		g.send(true, AppendRequest(nil, 2, 1, AppendAddrQty(nil, 3, 0, 1))) // ignored: same direction
	}},
	{name: "anomaly_mbap_length", wantAnomaly: AnomalyNonModbus, build: func(g *genFlow) {
		adu := AppendRequest(nil, 1, 1, AppendAddrQty(nil, 3, 0, 1))
		adu[4], adu[5] = 0x01, 0x00 // length 256 > 254
		g.send(true, adu)
	}},
	{name: "anomaly_non_modbus", wantAnomaly: AnomalyNonModbus, build: func(g *genFlow) {
		g.send(true, []byte("GET / HTTP/1.1\r\nHost: plc\r\n\r\n"))
	}},
	{name: "anomaly_truncated", wantAnomaly: AnomalyTruncated, build: func(g *genFlow) {
		g.exchange(AppendPDU(nil, 3, uint16(0)), nil) // FC 3 needs address and quantity
	}},
	{name: "anomaly_pdu_length", wantAnomaly: AnomalyPDULength, build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 3, 0, 1), AppendException(AppendException(nil, 3, 2), 0, 0)[:3])
	}},
	{name: "anomaly_quantity_out_of_range", wantAnomaly: AnomalyQuantityOutOfRange, build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 1, 0, 2001), nil)
		g.exchange(AppendAddrQty(nil, 3, 0, 126), nil)
		g.exchange(AppendAddrQty(nil, 3, 0, 0), nil)
		g.exchange(AppendPDU(nil, 16, uint16(0), uint16(124), uint8(2), uint16(1)), nil) // 124 > 123
		g.exchange(AppendPDU(nil, 23, uint16(0), uint16(1), uint16(0), uint16(122), uint8(2), uint16(1)), nil)
	}},
	{name: "anomaly_address_out_of_range", wantAnomaly: AnomalyAddressOutOfRange, build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 3, 0xFFFF, 2), nil)
	}},
	{name: "anomaly_byte_count_mismatch", wantAnomaly: AnomalyByteCountMismatch, build: func(g *genFlow) {
		pdu := AppendWriteMultipleRegisters(nil, 0, regs(2))
		pdu[5] = 2 // byte count says one register, quantity two
		g.exchange(pdu, AppendAddrQty(nil, 16, 0, 2))
		g.exchange(AppendAddrQty(nil, 3, 0, 4), AppendReadRegistersResponse(nil, 3, regs(3))) // response too short for the request
	}},
	{name: "anomaly_bad_coil_value", wantAnomaly: AnomalyBadCoilValue, build: func(g *genFlow) {
		g.exchange(AppendPDU(nil, 5, uint16(3), uint16(0x0001)), AppendPDU(nil, 5, uint16(3), uint16(0x0001)))
	}},
	{name: "anomaly_exception_code_invalid", wantAnomaly: AnomalyExceptionCodeInvalid, build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 3, 0, 1), AppendException(nil, 3, 0x07))
	}},
	{name: "anomaly_unknown_function", wantAnomaly: AnomalyUnknownFunction, build: func(g *genFlow) {
		g.exchange(AppendPDU(nil, 42, []byte{1}), AppendException(nil, 42, ExceptionIllegalFunction))
		g.exchange(AppendPDU(nil, 0x83, []byte{2}), nil) // exception code in a request
	}},
	{name: "anomaly_unknown_sub_function", wantAnomaly: AnomalyUnknownSubFunction, build: func(g *genFlow) {
		g.exchange(AppendDiagnostics(nil, 0x0005, []uint16{0}), nil)
		g.exchange(AppendPDU(nil, 43, uint8(0x0F)), nil)
	}},
	{name: "anomaly_diag_data_invalid", wantAnomaly: AnomalyDiagDataInvalid, build: func(g *genFlow) {
		g.exchange(AppendDiagnostics(nil, DiagRestartComm, []uint16{0x1234}), nil)
	}},
	{name: "anomaly_device_id_invalid", wantAnomaly: AnomalyDeviceIDInvalid, build: func(g *genFlow) {
		g.exchange(AppendReadDeviceID(nil, 5, 0), nil)
		g.exchange(AppendReadDeviceID(nil, 1, 0), AppendReadDeviceID(nil, 1, 0)) // echo instead of an object list
	}},
	{name: "anomaly_file_reference", wantAnomaly: AnomalyFileReference, build: func(g *genFlow) {
		g.exchange(AppendReadFileRecord(nil, []FileRecord{{RefType: 7, File: 1, Record: 0, Length: 1}}), nil)
		g.exchange(AppendReadFileRecord(nil, []FileRecord{{File: 1, Record: 0x2710, Length: 1}}), nil)
	}},
	{name: "anomaly_response_without_request", wantAnomaly: AnomalyResponseWithoutRequest, build: func(g *genFlow) {
		g.exchange(nil, AppendWriteSingleCoil(nil, 1, true))
	}},
	{name: "anomaly_tid_mismatch", wantAnomaly: AnomalyTIDMismatch, build: func(g *genFlow) {
		g.send(true, AppendRequest(nil, 1, 1, AppendAddrQty(nil, 3, 0, 1)))
		g.send(false, AppendResponse(nil, 2, 1, AppendReadRegistersResponse(nil, 3, regs(1))))
	}},
	{name: "anomaly_unit_mismatch", wantAnomaly: AnomalyUnitMismatch, build: func(g *genFlow) {
		g.send(true, AppendRequest(nil, 1, 1, AppendAddrQty(nil, 3, 0, 1)))
		g.send(false, AppendResponse(nil, 1, 2, AppendReadRegistersResponse(nil, 3, regs(1))))
	}},
	{name: "anomaly_function_mismatch", wantAnomaly: AnomalyFunctionMismatch, build: func(g *genFlow) {
		g.exchange(AppendAddrQty(nil, 3, 0, 1), AppendReadRegistersResponse(nil, 4, regs(1)))
	}},
	{name: "anomaly_echo_mismatch", wantAnomaly: AnomalyEchoMismatch, build: func(g *genFlow) {
		g.exchange(AppendWriteSingleRegister(nil, 1, 5), AppendWriteSingleRegister(nil, 1, 6))
	}},
	{name: "anomaly_too_many_outstanding", wantAnomaly: AnomalyTooManyOutstanding, build: func(g *genFlow) {
		for range MaxOutstanding + 1 {
			g.exchange(AppendAddrQty(nil, 3, 0, 1), nil)
		}
	}},
	// A Unity-style upload: the PLC answers with a 261-byte UMAS ADU
	// (MBAP length 255), then the session goes on.
	{name: "anomaly_long_adu", wantAnomaly: AnomalyLongADU, build: func(g *genFlow) {
		block := make([]byte, 251)
		for i := range block {
			block[i] = byte(i * 7)
		}
		g.exchange(AppendUMAS(nil, 0, UMASTakePLCReservation, []byte("UNITY-PC")), AppendUMAS(nil, 0x4c, UMASResponseOK, []byte{0x4c}))
		g.exchange(AppendUMAS(nil, 0x4c, UMASUploadBlock, []byte{0, 1, 0, 0}), AppendUMAS(nil, 0x4c, UMASResponseOK, block))
		g.exchange(AppendUMAS(nil, 0x4c, UMASReleasePLCReservation, nil), AppendUMAS(nil, 0x4c, UMASResponseOK, nil))
	}},
}

// writeGenCapture builds one generated capture in memory.
func writeGenCapture(t *testing.T, build func(*genFlow)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := capture.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	g := newGenFlow(w)
	build(g)
	if g.err != nil {
		t.Fatal(g.err)
	}
	return buf.Bytes()
}

// goldenLines renders the Records of a capture, one line each.
func goldenLines(t *testing.T, path string) (string, map[string]int) {
	t.Helper()
	var sb strings.Builder
	seen := map[string]int{}
	for _, o := range dissectModbus(t, path) {
		fmt.Fprintf(&sb, "frame=%d %s", o.frame, o.rec.Dir)
		for _, kv := range o.rec.Fields {
			fmt.Fprintf(&sb, " %s=%v", kv.Key, kv.Value)
		}
		if o.rec.Anomaly != "" {
			fmt.Fprintf(&sb, " anomaly=%s", o.rec.Anomaly)
			seen[o.rec.Anomaly]++
		}
		sb.WriteByte('\n')
	}
	return sb.String(), seen
}

// TestGolden parses the generated captures in testdata through
// simulate/capture and Session (Feed) and compares the Records with the golden files;
// each anomaly_* capture must report its anomaly. With -update it first
// regenerates the captures and the golden files.
func TestGolden(t *testing.T) {
	for _, tc := range genCases {
		t.Run(tc.name, func(t *testing.T) {
			pcap := filepath.Join("testdata", tc.name+".pcap")
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(pcap, writeGenCapture(t, tc.build), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if want, err := os.ReadFile(pcap); err != nil {
				t.Fatalf("%v (run with -update)", err)
			} else if got := writeGenCapture(t, tc.build); !bytes.Equal(got, want) {
				t.Errorf("%s differs from what the generator writes now: run with -update", pcap)
			}
			got, seen := goldenLines(t, pcap)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("records differ from %s:\ngot:\n%swant:\n%s", golden, got, want)
			}
			if got == "" {
				t.Errorf("%s: no records", pcap)
			}
			if tc.wantAnomaly != AnomalyNone && seen[tc.wantAnomaly.String()] == 0 {
				t.Errorf("%s: anomaly %s not reported (saw %v)", pcap, tc.wantAnomaly, seen)
			}
			if strings.HasPrefix(tc.name, "anomaly_") == (tc.wantAnomaly == AnomalyNone) {
				t.Errorf("case %s: wantAnomaly %v inconsistent with its name", tc.name, tc.wantAnomaly)
			}
			if tc.wantAnomaly == AnomalyNone && len(seen) > 0 {
				t.Errorf("%s: well-formed capture reported anomalies %v", pcap, seen)
			}
		})
	}
}
