package dnp3

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

var update = flag.Bool("update", false, "rewrite testdata/*.pcap and the golden files")

// Link addresses and hosts of the generated captures.
const (
	masterAddr     = 1
	outstationAddr = 10
)

var (
	masterEP     = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.10:49152")}
	outstationEP = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.20:20000")}
)

// genSession writes one TCP session: handshake, then each payload in its
// own segment (fromMaster picks the side).
type genSession struct {
	w    *capture.Writer
	flow *capture.TCPFlow
	err  error
	mseq uint8 // master transport sequence
	oseq uint8 // outstation transport sequence
}

func newSession(buf *bytes.Buffer) *genSession {
	w, err := capture.NewWriter(buf)
	s := &genSession{w: w, err: err, flow: capture.NewTCPFlow(masterEP, outstationEP)}
	if err == nil {
		for _, f := range s.flow.Handshake() {
			s.write(f)
		}
	}
	return s
}

func (s *genSession) write(frame []byte) {
	if s.err == nil {
		s.err = s.w.WriteFrame(frame)
	}
}

// send writes raw bytes as one TCP segment.
func (s *genSession) send(fromMaster bool, payload []byte) { s.write(s.flow.Send(fromMaster, payload)) }

// req sends an APDU from the master, resp one from the outstation, both as
// link frames with running transport sequence numbers.
func (s *genSession) req(apdu []byte) {
	var b []byte
	b, s.mseq = AppendLinkFramesSeq(nil, CtrlMasterData, outstationAddr, masterAddr, s.mseq, apdu)
	s.send(true, b)
}

func (s *genSession) resp(apdu []byte) {
	var b []byte
	b, s.oseq = AppendLinkFramesSeq(nil, CtrlOutstationData, masterAddr, outstationAddr, s.oseq, apdu)
	s.send(false, b)
}

func respOK(seq uint8, objs ...byte) []byte {
	return append(AppendResponseHeader(nil, seq, FuncResponse, 0, false), objs...)
}

func reqWith(seq uint8, fc FunctionCode, objs ...byte) []byte {
	return append(AppendRequestHeader(nil, seq, fc), objs...)
}

// freeFormat builds one object header with qualifier 0x5B and one object.
func freeFormat(g, v uint8, obj []byte) []byte {
	return append([]byte{g, v, 0x5B, 1, byte(len(obj)), byte(len(obj) >> 8)}, obj...)
}

// generators lists every generated capture and how to build it.
var generators = []struct {
	name string
	gen  func(buf *bytes.Buffer) error
}{
	{"dnp3_functions", genFunctions},
	{"dnp3_multisegment", genMultiSegment},
	{"dnp3_linkonly", genLinkOnly},
	{"dnp3_bytewise", genBytewise},
	{"dnp3_pipelined", genPipelined},
	{"dnp3_anomalies", genAnomalies},
	{"dnp3_udp", genUDP},
}

// genFunctions: every function code of Table 4-1 with a typical request
// and the outstation's answer.
func genFunctions(buf *bytes.Buffer) error {
	s := newSession(buf)
	var seq uint8
	next := func() uint8 { seq = (seq + 1) & 0x0F; return seq }
	crob := CROB{Code: CROBLatchOn, Count: 1, OnMs: 100}
	time6 := []byte{1, 2, 3, 4, 5, 6}
	type exch struct{ req, resp []byte }
	var list []exch
	add := func(req, resp []byte) { list = append(list, exch{req, resp}) }

	q := next()
	add(AppendReadClass0123(nil, q), respOK(q,
		append(AppendRangeHeader(nil, 1, 2, 0, 3), 1, 1, 0x81, 1)...))
	q = next()
	add(AppendClearRestart(nil, q), respOK(q))
	q = next()
	add(AppendCROB(nil, q, FuncSelect, 5, crob), AppendCROBObject(respOK(q), 5, crob))
	q = next()
	add(AppendCROB(nil, q, FuncOperate, 5, crob), AppendCROBObject(respOK(q), 5, crob))
	q = next()
	add(AppendCROB(nil, q, FuncDirectOperate, 6, crob), AppendCROBObject(respOK(q), 6, crob))
	q = next()
	add(AppendCROB(nil, q, FuncDirectOperateNR, 6, crob), nil)
	q = next()
	add(AppendAnalogOutput(nil, q, FuncDirectOperate, 2, -1234), append(respOK(q), 41, 1, 0x28, 1, 0, 2, 0, 0x2e, 0xfb, 0xff, 0xff, 0))
	for _, fc := range []FunctionCode{FuncImmedFreeze, FuncFreezeClear} {
		q = next()
		add(reqWith(q, fc, AppendAllHeader(nil, 20, 0)...), respOK(q))
	}
	for _, fc := range []FunctionCode{FuncImmedFreezeNR, FuncFreezeClearNR} {
		add(reqWith(next(), fc, AppendAllHeader(nil, 20, 0)...), nil)
	}
	q = next()
	fat := append(AppendCountHeader(nil, 50, 2, 1), append(time6, 0x10, 0x27, 0, 0)...)
	add(reqWith(q, FuncFreezeAtTime, append(fat, AppendAllHeader(nil, 20, 0)...)...), respOK(q))
	add(reqWith(next(), FuncFreezeAtTimeNR, append(fat, AppendAllHeader(nil, 20, 0)...)...), nil)
	q = next()
	add(reqWith(q, FuncColdRestart), respOK(q, append(AppendCountHeader(nil, 52, 2, 1), 0xe8, 0x03)...))
	q = next()
	add(reqWith(q, FuncWarmRestart), respOK(q, append(AppendCountHeader(nil, 52, 2, 1), 0x64, 0x00)...))
	appID := freeFormat(90, 1, []byte("app1"))
	for _, fc := range []FunctionCode{FuncInitializeData, FuncInitializeAppl, FuncStartAppl, FuncStopAppl} {
		q = next()
		add(reqWith(q, fc, appID...), respOK(q))
	}
	q = next()
	add(reqWith(q, FuncSaveConfig), respOK(q))
	q = next()
	add(AppendUnsolicited(nil, q, true), respOK(q))
	q = next()
	add(AppendUnsolicited(nil, q, false), respOK(q))
	q = next()
	add(reqWith(q, FuncAssignClass, append(AppendAllHeader(nil, 60, 2), AppendRangeHeader(nil, 1, 0, 0, 9)...)...), respOK(q))
	q = next()
	add(reqWith(q, FuncDelayMeasure), respOK(q, append(AppendCountHeader(nil, 52, 2, 1), 5, 0)...))
	q = next()
	add(reqWith(q, FuncRecordCurrentTime), respOK(q))
	q = next()
	add(AppendRequestHeader(nil, q, FuncWrite), nil) // replaced below: write g50v3
	list[len(list)-1] = exch{reqWith(q, FuncWrite, append(AppendCountHeader(nil, 50, 3, 1), time6...)...), respOK(q)}
	// File transfer (g70, free format 0x5B, A.27).
	q = next()
	add(reqWith(q, FuncOpenFile, freeFormat(70, 3, make([]byte, 26))...), respOK(q, freeFormat(70, 4, make([]byte, 11))...))
	q = next()
	add(reqWith(q, FuncCloseFile, freeFormat(70, 4, make([]byte, 11))...), respOK(q, freeFormat(70, 4, make([]byte, 11))...))
	q = next()
	add(reqWith(q, FuncDeleteFile, freeFormat(70, 3, make([]byte, 26))...), respOK(q, freeFormat(70, 4, make([]byte, 11))...))
	q = next()
	add(reqWith(q, FuncGetFileInfo, freeFormat(70, 7, make([]byte, 20))...), respOK(q, freeFormat(70, 7, make([]byte, 20))...))
	q = next()
	add(reqWith(q, FuncAuthenticateFile, freeFormat(70, 2, make([]byte, 12))...), respOK(q, freeFormat(70, 2, make([]byte, 12))...))
	q = next()
	add(reqWith(q, FuncAbortFile, freeFormat(70, 4, make([]byte, 11))...), respOK(q, freeFormat(70, 4, make([]byte, 11))...))
	q = next()
	add(reqWith(q, FuncActivateConfig, freeFormat(70, 8, []byte("cfg.xml"))...), respOK(q, freeFormat(91, 1, []byte{0, 0})...))
	// Secure Authentication (g120, A.45).
	q = next()
	add(AppendCROB(nil, q, FuncDirectOperate, 7, crob),
		append(AppendResponseHeader(nil, q, FuncAuthenticateResp, 0, false), freeFormat(120, 1, make([]byte, 12))...))
	add(reqWith(q, FuncAuthenticateReq, freeFormat(120, 2, make([]byte, 26))...), AppendCROBObject(respOK(q), 7, crob))
	add(reqWith(next(), FuncAuthReqNoAck, freeFormat(120, 6, make([]byte, 30))...), nil)
	// Device attributes (g0, A.1) and octet strings (g110, A.39).
	q = next()
	add(reqWith(q, FuncRead, AppendAllHeader(nil, 0, 254)...),
		respOK(q, append(AppendRangeHeader(nil, 0, 250, 0, 0), 1, 5, 'o', 't', 'g', 'w', '1')...))
	q = next()
	add(reqWith(q, FuncRead, AppendRangeHeader(nil, 110, 0, 0, 1)...),
		respOK(q, append(AppendRangeHeader(nil, 110, 4, 0, 1), "abcdwxyz"...)...))

	for _, e := range list {
		s.req(e.req)
		if e.resp != nil {
			s.resp(e.resp)
		}
	}
	// Unsolicited response with event data and the master's confirm.
	uns := AppendResponseHeader(nil, 3, FuncUnsolicitedResp, IINClass1, true)
	uns = append(uns, 2, 2, 0x17, 1, 4, 0x81, 1, 2, 3, 4, 5, 6) // g2v2, 0x17, index 4
	uns = append(uns, 32, 1, 0x28, 1, 0, 9, 0, 1, 100, 0, 0, 0) // g32v1, 0x28, index 9
	s.resp(uns)
	s.req(AppendConfirm(nil, 3, true))
	return s.err
}

// genMultiSegment: a response of 600 octets in three transport segments
// (the outstation's sequence wrapping 63 -> 0), then a request in one.
func genMultiSegment(buf *bytes.Buffer) error {
	s := newSession(buf)
	s.oseq = 62
	s.req(AppendReadClass0123(nil, 1))
	r := AppendRangeHeader(respOK(1), 30, 1, 0, 119) // 120 x 5 octets
	for i := range 120 {
		r = append(r, 1, byte(i), 0, 0, 0)
	}
	s.resp(r)
	s.req(AppendConfirm(nil, 1, false))
	return s.err
}

// genLinkOnly: link layer services without user data (clause 9.2.6).
func genLinkOnly(buf *bytes.Buffer) error {
	s := newSession(buf)
	s.send(true, AppendLinkFrame(nil, CtrlMasterLinkStatus, outstationAddr, masterAddr, nil))
	s.send(false, AppendLinkFrame(nil, CtrlOutstationLinkStatus, masterAddr, outstationAddr, nil))
	s.send(true, AppendLinkFrame(nil, CtrlDIR|uint8(LinkResetLinkStates), outstationAddr, masterAddr, nil))
	s.send(false, AppendLinkFrame(nil, uint8(LinkAck), masterAddr, outstationAddr, nil))
	s.send(true, AppendLinkFrame(nil, CtrlDIR|CtrlFCV|uint8(LinkTestLinkStates), outstationAddr, masterAddr, nil))
	s.send(false, AppendLinkFrame(nil, uint8(LinkAck), masterAddr, outstationAddr, nil))
	// Confirmed user data (PRM 3) carrying a read, and the link ACK.
	s.send(true, AppendLinkFrames(nil, CtrlDIR|CtrlFCV|uint8(LinkConfirmedUserData), outstationAddr, masterAddr, AppendReadClass0123(nil, 2)))
	s.send(false, AppendLinkFrame(nil, uint8(LinkAck), masterAddr, outstationAddr, nil))
	return s.err
}

// genBytewise: one read request delivered one octet per TCP segment.
func genBytewise(buf *bytes.Buffer) error {
	s := newSession(buf)
	b := AppendLinkFrames(nil, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 4))
	for i := range b {
		s.send(true, b[i:i+1])
	}
	s.resp(respOK(4))
	return s.err
}

// genPipelined: three link frames in one TCP segment, and a frame split
// over two segments with another frame behind it.
func genPipelined(buf *bytes.Buffer) error {
	s := newSession(buf)
	var b []byte
	b = AppendLinkFrame(b, CtrlMasterLinkStatus, outstationAddr, masterAddr, nil)
	b = AppendLinkFrames(b, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 5))
	b = AppendLinkFrames(b, CtrlMasterData, outstationAddr, masterAddr, AppendUnsolicited(nil, 6, true))
	s.send(true, b)
	r := AppendLinkFrames(nil, CtrlOutstationData, masterAddr, outstationAddr, respOK(5))
	r = AppendLinkFrames(r, CtrlOutstationData, masterAddr, outstationAddr, respOK(6))
	s.send(false, r[:7])
	s.send(false, r[7:])
	return s.err
}

// genAnomalies: one frame per anomaly the parser reports.
func genAnomalies(buf *bytes.Buffer) error {
	s := newSession(buf)
	// Data block CRC error: flip a CRC octet of the first block.
	b := AppendLinkFrames(nil, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 1))
	b[HeaderLen+16] ^= 0xFF
	s.send(true, b)
	// Header CRC error, then a good frame in the same segment.
	b = AppendLinkFrames(nil, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 2))
	b[8] ^= 0xFF
	b = AppendLinkFrames(b, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 3))
	s.send(true, b)
	// Garbage before a frame (bad start octets, resynchronised).
	b = append([]byte{0xde, 0xad, 0x05, 0x05}, AppendLinkFrames(nil, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 4))...)
	s.send(true, b)
	// LENGTH below 5 with a valid header CRC.
	b = AppendLinkFrame(nil, CtrlMasterData, outstationAddr, masterAddr, nil)
	b[2] = 4
	c := CRC(b[:8])
	b[8], b[9] = byte(c), byte(c>>8)
	s.send(true, b)
	// Broadcast destination.
	s.send(true, AppendLinkFrames(nil, CtrlMasterData, BroadcastConfirmOptional, masterAddr, AppendClearRestart(nil, 5)))
	// Unknown object in a response (g99v1 with data).
	s.resp(respOK(5, 99, 1, 0x00, 0, 0, 0xAA))
	// Unknown function code 77.
	s.req(reqWith(6, FunctionCode(77)))
	// Too many object headers.
	var many []byte
	for range MaxObjects + 1 {
		many = AppendAllHeader(many, 60, 1)
	}
	s.req(reqWith(7, FuncRead, many...))
	// Truncated object: g30v1 range 0-9 with data for 2 points.
	s.resp(respOK(7, append(AppendRangeHeader(nil, 30, 1, 0, 9), 1, 0, 0, 0, 0, 1, 0, 0, 0, 0)...))
	// Bad qualifier (reserved range code 0xA) and bad range (start > stop).
	s.req(reqWith(8, FuncRead, 1, 2, 0x0A))
	s.req(reqWith(9, FuncRead, 1, 2, 0x00, 9, 3))
	// Response function from the master.
	s.req(AppendResponseHeader(nil, 10, FuncResponse, 0, false))
	// Transport: a segment without FIR, then a sequence gap.
	s.send(false, AppendLinkFrame(nil, CtrlOutstationData, masterAddr, outstationAddr, append([]byte{TransportFIN | 9}, respOK(8)...)))
	seg1 := append([]byte{TransportFIR | 20}, respOK(9)...)
	seg2 := []byte{TransportFIN | 22, 1, 2, 0x06}
	s.send(false, AppendLinkFrame(nil, CtrlOutstationData, masterAddr, outstationAddr, seg1))
	s.send(false, AppendLinkFrame(nil, CtrlOutstationData, masterAddr, outstationAddr, seg2))
	// Too long a fragment: 10 segments of 249 octets never finishing
	// within MaxFragment, then the FIN.
	for i := range 10 {
		th := uint8(30+i) & transportSeq
		if i == 0 {
			th |= TransportFIR
		}
		if i == 9 {
			th |= TransportFIN
		}
		seg := append([]byte{th}, make([]byte, maxSegmentData)...)
		s.send(false, AppendLinkFrame(nil, CtrlOutstationData, masterAddr, outstationAddr, seg))
	}
	// Link frame with user data but no transport octet is impossible to
	// build (LENGTH 5 means none); user data on a link-only function:
	s.send(true, AppendLinkFrame(nil, CtrlMasterLinkStatus, outstationAddr, masterAddr, []byte{0xC0, 0xC1, 1}))
	return s.err
}

// genUDP: DNP3 over UDP 20000 (IEEE 1815-2012 Annex E): link status, a read
// and its response, each datagram holding whole frames.
func genUDP(buf *bytes.Buffer) error {
	w, err := capture.NewWriter(buf)
	if err != nil {
		return err
	}
	m := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.10:20000")}
	o := outstationEP
	frames := [][]byte{
		capture.UDPDatagram(m, o, AppendLinkFrame(nil, CtrlMasterLinkStatus, outstationAddr, masterAddr, nil)),
		capture.UDPDatagram(o, m, AppendLinkFrame(nil, CtrlOutstationLinkStatus, masterAddr, outstationAddr, nil)),
		capture.UDPDatagram(m, o, AppendLinkFrames(nil, CtrlMasterData, outstationAddr, masterAddr, AppendReadClass0123(nil, 0))),
		capture.UDPDatagram(o, m, AppendLinkFrames(nil, CtrlOutstationData, masterAddr, outstationAddr,
			respOK(0, append(AppendRangeHeader(nil, 30, 2, 0, 1), 1, 5, 0, 1, 6, 0)...))),
	}
	for _, f := range frames {
		if err := w.WriteFrame(f); err != nil {
			return err
		}
	}
	return nil
}

// goldenRecord is one line of a golden file.
type goldenRecord struct {
	Frame   int            `json:"frame"`
	Dir     string         `json:"dir"`
	Fields  map[string]any `json:"fields,omitempty"`
	Anomaly string         `json:"anomaly,omitempty"`
}

// dissectGolden runs a generated capture through capture and Session (Feed).
func dissectGolden(t testing.TB, path string) []goldenRecord {
	t.Helper()
	conns := map[uint64]*Session{}
	var out []goldenRecord
	_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		dir := protocols.Response
		if s.Dst.Port() == Port {
			dir = protocols.Request
		}
		c := conns[s.Conn]
		if c == nil {
			c = newTCP()
			if s.Transport == "udp" {
				c = newUDP()
			}
			conns[s.Conn] = c
		}
		feed(c, dir, s.Payload, s.Gap, func(r protocols.Record) {
			g := goldenRecord{Frame: s.Frame, Dir: r.Dir.String(), Anomaly: r.Anomaly}
			if len(r.Fields) > 0 {
				g.Fields = map[string]any{}
				for _, kv := range r.Fields {
					g.Fields[kv.Key] = kv.Value
				}
			}
			out = append(out, g)
		})
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

func goldenText(t testing.TB, recs []goldenRecord) []byte {
	var b bytes.Buffer
	for _, r := range recs {
		j, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestGenerated regenerates the captures (with -update) and checks that
// the committed captures are what the generators make, and that dissecting
// them gives the golden records.
func TestGenerated(t *testing.T) {
	for _, g := range generators {
		t.Run(g.name, func(t *testing.T) {
			pcap := filepath.Join("testdata", g.name+".pcap")
			golden := filepath.Join("testdata", g.name+".golden")
			var buf bytes.Buffer
			if err := g.gen(&buf); err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(pcap, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			onDisk, err := os.ReadFile(pcap)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGenerated -update)", err)
			}
			if !bytes.Equal(onDisk, buf.Bytes()) {
				t.Errorf("%s differs from its generator (run with -update)", pcap)
			}
			got := goldenText(t, dissectGolden(t, pcap))
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("dissection differs from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// summary renders records as "frame:fc/anomaly" words for the behaviour
// tests below, which state expectations independently of the golden files.
func summary(recs []goldenRecord) string {
	var parts []string
	for _, r := range recs {
		p := fmt.Sprint(r.Frame, ":")
		if fc, ok := r.Fields["fc"].(int); ok {
			p += FunctionCode(fc).String()
		} else if lf, ok := r.Fields["link_fc"]; ok {
			p += fmt.Sprint(lf)
		}
		if r.Anomaly != "" {
			p += "/" + r.Anomaly
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}
