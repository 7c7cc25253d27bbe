package dnp3

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/protocols"
)

func TestCRC(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		// The CRC-16/DNP check value (catalogue of parametrised CRCs).
		{"check string", []byte("123456789"), 0xEA82},
		// Header of a real REQUEST_LINK_STATUS from dnp3_openics_RequestLinkStatus.pcap,
		// whose CRC octets on the wire are bd 71.
		{"link status header", []byte{0x05, 0x64, 0x05, 0xc9, 0x03, 0x00, 0x04, 0x00}, 0x71bd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CRC(tt.in); got != tt.want {
				t.Errorf("CRC = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}

func TestFramerNext(t *testing.T) {
	frame := AppendLinkFrames(nil, CtrlMasterData, 10, 1, AppendReadClass0123(nil, 0))
	badHdr := bytes.Clone(frame)
	badHdr[9] ^= 1
	short := AppendLinkFrame(nil, CtrlMasterData, 10, 1, nil)
	short[2] = 3
	c := CRC(short[:8])
	short[8], short[9] = byte(c), byte(c>>8)
	tests := []struct {
		name     string
		in       []byte
		wantN    int
		wantNeed int
		wantErr  error
	}{
		{"empty", nil, 0, HeaderLen, nil},
		{"one start octet", frame[:1], 0, HeaderLen - 1, nil},
		{"partial header", frame[:7], 0, 3, nil},
		{"header only", frame[:HeaderLen], 0, len(frame) - HeaderLen, nil},
		{"one short", frame[:len(frame)-1], 0, 1, nil},
		{"whole", frame, len(frame), 0, nil},
		{"whole and more", append(bytes.Clone(frame), 0x05), len(frame), 0, nil},
		{"garbage then start", append([]byte{1, 2, 3}, frame...), 3, 0, ErrBadStart},
		{"garbage with trailing 0x05", []byte{1, 2, 0x05}, 2, 0, ErrBadStart},
		{"garbage only", []byte{1, 2, 3, 0x64}, 4, 0, ErrBadStart},
		{"0x05 0x05 0x64", []byte{0x05, 0x05, 0x64}, 1, 0, ErrBadStart},
		{"header CRC error", badHdr, 2, 0, ErrLinkCRC},
		{"LENGTH below 5", short, 2, 0, ErrBadLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, need, err := Framer{}.Next(tt.in)
			if n != tt.wantN || need != tt.wantNeed || err != tt.wantErr {
				t.Errorf("Next = (%d, %d, %v), want (%d, %d, %v)", n, need, err, tt.wantN, tt.wantNeed, tt.wantErr)
			}
		})
	}
}

func TestFrameLen(t *testing.T) {
	tests := []struct {
		length uint8
		want   int
	}{{4, 0}, {5, 10}, {6, 13}, {21, 28}, {22, 31}, {255, MaxFrameLen}}
	for _, tt := range tests {
		if got := FrameLen(tt.length); got != tt.want {
			t.Errorf("FrameLen(%d) = %d, want %d", tt.length, got, tt.want)
		}
	}
	if MaxFrameLen != 292 {
		t.Errorf("MaxFrameLen = %d, want 292", MaxFrameLen)
	}
}

func TestLinkFrameDecode(t *testing.T) {
	user := make([]byte, MaxUserData)
	for i := range user {
		user[i] = byte(i)
	}
	full := AppendLinkFrame(nil, CtrlMasterData|CtrlFCB, 0x1234, 0xABCD, user)
	badData := bytes.Clone(full)
	badData[len(badData)-1] ^= 1
	bcast := AppendLinkFrame(nil, CtrlMasterData, BroadcastNoConfirm, 1, []byte{0xC0, 0xC0, 1})
	tests := []struct {
		name        string
		in          []byte
		wantErr     error
		wantAnomaly Anomaly
		wantDst     uint16
		wantSrc     uint16
		wantUser    int
	}{
		{"full frame", full, nil, AnomalyNone, 0x1234, 0xABCD, MaxUserData},
		{"last block CRC", badData, ErrDataCRC, AnomalyDataCRC, 0x1234, 0xABCD, 0},
		{"broadcast", bcast, nil, AnomalyBroadcast, BroadcastNoConfirm, 1, 3},
		{"truncated", full[:20], ErrTruncated, AnomalyBadLength, 0, 0, 0},
		{"short", full[:5], ErrTruncated, AnomalyBadLength, 0, 0, 0},
		{"bad start", append([]byte{0x05, 0x65}, full[2:]...), ErrBadStart, AnomalyBadStart, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f LinkFrame
			err := f.Decode(tt.in)
			if err != tt.wantErr || f.Anomaly != tt.wantAnomaly {
				t.Fatalf("Decode = %v, anomaly %v; want %v, %v", err, f.Anomaly, tt.wantErr, tt.wantAnomaly)
			}
			if f.Dst != tt.wantDst || f.Src != tt.wantSrc || len(f.UserData()) != tt.wantUser {
				t.Errorf("got dst %#x src %#x user %d, want %#x %#x %d", f.Dst, f.Src, len(f.UserData()), tt.wantDst, tt.wantSrc, tt.wantUser)
			}
			if tt.wantUser == MaxUserData && !bytes.Equal(f.UserData(), user) {
				t.Errorf("user data differs")
			}
		})
	}
	var f LinkFrame
	if err := f.Decode(full); err != nil {
		t.Fatal(err)
	}
	if !f.FromMaster() || !f.Primary() || !f.FCB() || f.FCV() || f.Func != LinkUnconfirmedUserData {
		t.Errorf("control bits: dir %v prm %v fcb %v fcv %v func %v", f.FromMaster(), f.Primary(), f.FCB(), f.FCV(), f.Func)
	}
}

func TestReassembler(t *testing.T) {
	type step struct {
		seg      []byte
		wantFrag string // "" when none expected
		wantA    Anomaly
	}
	seg := func(th byte, data string) []byte { return append([]byte{th}, data...) }
	tests := []struct {
		name  string
		limit int
		steps []step
	}{
		{"single", 0, []step{{seg(0xC0, "ab"), "ab", AnomalyNone}}},
		{"three segments wrap 63 to 0", 0, []step{
			{seg(0x40|62, "a"), "", AnomalyNone},
			{seg(63, "b"), "", AnomalyNone},
			{seg(0x80, "c"), "abc", AnomalyNone}}}, // FIN, seq 0
		{"FIR restarts", 0, []step{
			{seg(0x40|1, "old"), "", AnomalyNone},
			{seg(0xC0|7, "new"), "new", AnomalyNone}}},
		{"without FIR", 0, []step{{seg(0x80|3, "x"), "", AnomalyFragmentWithoutFIR}}},
		{"sequence gap", 0, []step{
			{seg(0x40|1, "a"), "", AnomalyNone},
			{seg(0x80|3, "c"), "", AnomalyTransportSeq},
			{seg(0x80|4, "d"), "", AnomalyFragmentWithoutFIR}}},
		{"repeated sequence", 0, []step{
			{seg(0x40|1, "a"), "", AnomalyNone},
			{seg(0x00|1, "a"), "", AnomalyTransportSeq}}},
		{"overflow then drop to FIN", 4, []step{
			{seg(0x40|1, "abc"), "", AnomalyNone},
			{seg(2, "de"), "", AnomalyReassemblyOverflow},
			{seg(3, "f"), "", AnomalyReassemblyOverflow},
			{seg(0x80|4, "g"), "", AnomalyReassemblyOverflow},
			{seg(0xC0|5, "ok"), "ok", AnomalyNone}}},
		{"empty segment", 0, []step{{nil, "", AnomalyTransportTruncated}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Reassembler{Limit: tt.limit}
			for i, s := range tt.steps {
				frag, a := r.Add(s.seg)
				if string(frag) != s.wantFrag || a != s.wantA || (s.wantFrag != "") != (frag != nil) {
					t.Errorf("step %d: Add = %q, %v; want %q, %v", i, frag, a, s.wantFrag, s.wantA)
				}
			}
		})
	}
}

func TestFragmentDecode(t *testing.T) {
	h := func(g, v, q uint8, start, stop, count uint32) ObjectHeader {
		return ObjectHeader{Group: g, Variation: v, Qualifier: q, Start: start, Stop: stop, Count: count}
	}
	resp := func(objs ...byte) []byte { return append([]byte{0xC0, 0x81, 0x90, 0x02}, objs...) }
	req := func(fc FunctionCode, objs ...byte) []byte { return append([]byte{0xC1, byte(fc)}, objs...) }
	tests := []struct {
		name       string
		in         []byte
		fromMaster bool
		wantErr    error
		wantA      Anomaly
		want       []ObjectHeader
	}{
		{"read class 0123", AppendReadClass0123(nil, 1), true, nil, AnomalyNone,
			[]ObjectHeader{h(60, 2, 6, 0, 0, 0), h(60, 3, 6, 0, 0, 0), h(60, 4, 6, 0, 0, 0), h(60, 1, 6, 0, 0, 0)}},
		{"q 0x00 g1v2", resp(1, 2, 0x00, 3, 5, 1, 1, 1), false, nil, AnomalyNone, []ObjectHeader{h(1, 2, 0, 3, 5, 3)}},
		{"q 0x01 g30v1", resp(append([]byte{30, 1, 0x01, 0, 1, 0, 1}, make([]byte, 5)...)...), false, nil, AnomalyNone,
			[]ObjectHeader{h(30, 1, 1, 256, 256, 1)}},
		{"q 0x02 packed g1v1", resp(1, 1, 0x02, 0, 0, 0, 0, 8, 0, 0, 0, 0xFF, 0x01), false, nil, AnomalyNone,
			[]ObjectHeader{h(1, 1, 2, 0, 8, 9)}},
		{"q 0x03 virtual g20v6", resp(20, 6, 0x03, 1, 1, 7, 0), false, nil, AnomalyNone, []ObjectHeader{h(20, 6, 3, 1, 1, 1)}},
		{"q 0x04 virtual g20v5", resp(20, 5, 0x04, 1, 0, 1, 0, 0, 0, 0, 0), false, nil, AnomalyNone, []ObjectHeader{h(20, 5, 4, 1, 1, 1)}},
		{"q 0x05 virtual g40v2", resp(40, 2, 0x05, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0), false, nil, AnomalyNone, []ObjectHeader{h(40, 2, 5, 2, 2, 1)}},
		{"q 0x07 g50v1", req(FuncWrite, 50, 1, 0x07, 1, 1, 2, 3, 4, 5, 6), true, nil, AnomalyNone, []ObjectHeader{h(50, 1, 7, 0, 0, 1)}},
		{"q 0x08 g52v2", resp(52, 2, 0x08, 1, 0, 9, 0), false, nil, AnomalyNone, []ObjectHeader{h(52, 2, 8, 0, 0, 1)}},
		{"q 0x09 g51v1", resp(51, 1, 0x09, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6), false, nil, AnomalyNone, []ObjectHeader{h(51, 1, 9, 0, 0, 1)}},
		{"q 0x17 g2v2 two events", resp(2, 2, 0x17, 2, 9, 1, 1, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1, 1, 1, 1), false, nil, AnomalyNone,
			[]ObjectHeader{h(2, 2, 0x17, 4, 9, 2)}},
		{"q 0x28 CROB", AppendCROB(nil, 1, FuncSelect, 300, CROB{Code: 3, Count: 1}), true, nil, AnomalyNone,
			[]ObjectHeader{h(12, 1, 0x28, 300, 300, 1)}},
		{"q 0x39 g32v1", resp(32, 1, 0x39, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1), false, nil, AnomalyNone,
			[]ObjectHeader{h(32, 1, 0x39, 65536, 65536, 1)}},
		{"q 0x17 read no data", req(FuncRead, 1, 2, 0x17, 2, 3, 7), true, nil, AnomalyNone, []ObjectHeader{h(1, 2, 0x17, 3, 7, 2)}},
		{"q 0x5B g70v3", req(FuncOpenFile, 70, 3, 0x5B, 1, 3, 0, 1, 2, 3), true, nil, AnomalyNone, []ObjectHeader{h(70, 3, 0x5B, 0, 0, 1)}},
		{"q 0x1B g120v1", resp(120, 1, 0x1B, 2, 1, 9, 2, 8, 8), false, nil, AnomalyNone, []ObjectHeader{h(120, 1, 0x1B, 0, 0, 2)}},
		{"g0 attributes", resp(0, 250, 0x00, 0, 0, 1, 2, 'a', 'b'), false, nil, AnomalyNone, []ObjectHeader{h(0, 250, 0, 0, 0, 1)}},
		{"g110v3 octet string", resp(110, 3, 0x00, 0, 1, 'a', 'b', 'c', 'd', 'e', 'f'), false, nil, AnomalyNone, []ObjectHeader{h(110, 3, 0, 0, 1, 2)}},
		{"g80v1 write", AppendClearRestart(nil, 0), true, nil, AnomalyNone, []ObjectHeader{h(80, 1, 0, 7, 7, 1)}},
		{"freeze at time", req(FuncFreezeAtTime, 50, 2, 0x07, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 0, 0x06), true, nil, AnomalyNone,
			[]ObjectHeader{h(50, 2, 7, 0, 0, 1), h(20, 0, 6, 0, 0, 0)}},
		{"confirm", AppendConfirm(nil, 1, false), true, nil, AnomalyNone, nil},
		{"unknown object", resp(99, 1, 0x00, 0, 0, 1), false, ErrObjects, AnomalyUnknownObject, []ObjectHeader{h(99, 1, 0, 0, 0, 1)}},
		{"unknown object, no data", req(FuncRead, 1, 9, 0x06, 60, 1, 0x06), true, ErrObjects, AnomalyUnknownObject,
			[]ObjectHeader{h(1, 9, 6, 0, 0, 0), h(60, 1, 6, 0, 0, 0)}},
		{"variation 0 with data", resp(30, 0, 0x00, 0, 0), false, ErrObjects, AnomalyUnknownObject, []ObjectHeader{h(30, 0, 0, 0, 0, 1)}},
		{"truncated data", resp(30, 1, 0x00, 0, 1, 1, 0, 0, 0, 0), false, ErrObjects, AnomalyTruncatedObject, []ObjectHeader{h(30, 1, 0, 0, 1, 2)}},
		{"truncated header", resp(30, 1), false, ErrObjects, AnomalyTruncatedObject, nil},
		{"truncated range", resp(30, 1, 0x01, 0), false, ErrObjects, AnomalyTruncatedObject, []ObjectHeader{h(30, 1, 1, 0, 0, 0)}},
		{"truncated free format", req(FuncOpenFile, 70, 3, 0x5B, 1, 9, 0, 1), true, ErrObjects, AnomalyTruncatedObject, []ObjectHeader{h(70, 3, 0x5B, 0, 0, 1)}},
		{"huge range", resp(30, 1, 0x02, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1), false, ErrObjects, AnomalyTruncatedObject,
			[]ObjectHeader{h(30, 1, 2, 0, 0xFFFFFFFF, 0xFFFFFFFF)}},
		{"huge count free format", req(FuncWrite, 70, 5, 0x5B, 255, 0, 0), true, ErrObjects, AnomalyTruncatedObject, []ObjectHeader{h(70, 5, 0x5B, 0, 0, 255)}},
		{"reserved bit", req(FuncRead, 60, 2, 0x86), true, ErrObjects, AnomalyBadQualifier, []ObjectHeader{h(60, 2, 0x86, 0, 0, 0)}},
		{"reserved range code", req(FuncRead, 60, 2, 0x0A), true, ErrObjects, AnomalyBadQualifier, []ObjectHeader{h(60, 2, 0x0A, 0, 0, 0)}},
		{"prefix with range", resp(1, 2, 0x10, 0, 0, 0), false, ErrObjects, AnomalyBadQualifier, []ObjectHeader{h(1, 2, 0x10, 0, 0, 1)}},
		{"packed with index", resp(1, 1, 0x17, 1, 0, 1), false, ErrObjects, AnomalyBadQualifier, []ObjectHeader{h(1, 1, 0x17, 0, 0, 1)}},
		{"free format only", resp(70, 4, 0x07, 1, 0), false, ErrObjects, AnomalyBadQualifier, []ObjectHeader{h(70, 4, 7, 0, 0, 1)}},
		{"start after stop", req(FuncRead, 1, 2, 0x00, 5, 4), true, ErrObjects, AnomalyBadRange, []ObjectHeader{h(1, 2, 0, 5, 4, 0)}},
		{"too many", req(FuncRead, bytes.Repeat([]byte{60, 1, 6}, MaxObjects+1)...), true, ErrObjects, AnomalyTooManyObjects, nil},
		{"unknown function", []byte{0xC0, 50}, true, ErrBadFunction, AnomalyUnknownFunction, nil},
		{"data after cold restart", req(FuncColdRestart, 60, 1, 6), true, ErrObjects, AnomalyUnexpectedData, []ObjectHeader{h(60, 1, 6, 0, 0, 0)}},
		{"response from master", resp(), true, nil, AnomalyWrongDirection, nil},
		{"request from outstation", req(FuncRead, 60, 1, 6), false, nil, AnomalyWrongDirection, []ObjectHeader{h(60, 1, 6, 0, 0, 0)}},
		{"one octet", []byte{0xC0}, true, ErrFragment, AnomalyTruncatedHeader, nil},
		{"response without IIN", []byte{0xC0, 0x81, 0}, false, ErrFragment, AnomalyTruncatedHeader, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Fragment
			err := f.Decode(tt.in, tt.fromMaster)
			if err != tt.wantErr || f.Anomaly != tt.wantA {
				t.Fatalf("Decode = %v, anomaly %v; want %v, %v", err, f.Anomaly, tt.wantErr, tt.wantA)
			}
			if tt.name == "too many" {
				if f.NumObjects != MaxObjects {
					t.Errorf("NumObjects = %d, want %d", f.NumObjects, MaxObjects)
				}
				return
			}
			got := f.Headers()
			if len(got) != len(tt.want) {
				t.Fatalf("headers = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("header %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
	var f Fragment
	if err := f.Decode([]byte{0xF5, 0x82, 0x90, 0x02}, false); err != nil {
		t.Fatal(err)
	}
	if !f.FIR() || !f.FIN() || !f.CON() || !f.UNS() || f.Seq() != 5 || f.Func != FuncUnsolicitedResp || f.IIN != 0x9002 || !f.HasIIN() {
		t.Errorf("header fields: %+v", f)
	}
}

func TestFunctionNames(t *testing.T) {
	seen := map[string]bool{}
	for c := 0; c < 256; c++ {
		fc := FunctionCode(c)
		name := fc.String()
		if seen[name] {
			t.Errorf("duplicate name %q", name)
		}
		seen[name] = true
		got, ok := FunctionByName(name)
		if ok != fc.Known() || (ok && got != fc) {
			t.Errorf("FunctionByName(%q) = %v, %v; want %v, %v", name, got, ok, fc, fc.Known())
		}
	}
	tests := []struct {
		name string
		want FunctionCode
		ok   bool
	}{
		{"direct_operate", FuncDirectOperate, true},
		{"authenticate_req", 32, true},
		{"auth_req_no_ack", 33, true},
		{"unsolicited_response", 130, true},
		{"authenticate_resp", 131, true},
		{"5", FuncDirectOperate, true},
		{"129", FuncResponse, true},
		{"77", 0, false},
		{"Read", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := FunctionByName(tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FunctionByName(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAnomalyNames(t *testing.T) {
	seen := map[string]bool{}
	for a := AnomalyNone; a < anomalyCount; a++ {
		name := a.String()
		if name == "" || seen[name] {
			t.Errorf("anomaly %d: empty or duplicate name %q", a, name)
		}
		seen[name] = true
		if got, ok := AnomalyByName(name); !ok || got != a {
			t.Errorf("AnomalyByName(%q) = %v, %v", name, got, ok)
		}
	}
	if got := anomalyCount.String(); got != "unknown_anomaly" {
		t.Errorf("out of range String = %q", got)
	}
}

func TestLinkFuncNames(t *testing.T) {
	tests := []struct {
		f    LinkFunc
		want string
	}{
		{LinkUnconfirmedUserData, "unconfirmed_user_data"}, {LinkAck, "ack"}, {LinkStatus, "link_status"},
		{LinkRequestLinkStatus, "request_link_status"}, {0x4E, "primary_14"}, {0x0C, "secondary_12"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%#x.String() = %q, want %q", uint8(tt.f), got, tt.want)
		}
	}
}

// TestEncoderRoundTrip checks that AppendLinkFramesSeq segments any APDU
// size so that Framer, LinkFrame and Reassembler give it back.
func TestEncoderRoundTrip(t *testing.T) {
	for _, size := range []int{1, 2, 248, 249, 250, 498, 1000, MaxFragment} {
		apdu := make([]byte, size)
		for i := range apdu {
			apdu[i] = byte(i * 7)
		}
		b, next := AppendLinkFramesSeq(nil, CtrlOutstationData, 1, 10, 60, apdu)
		if want := uint8(60+(size+248)/249) & 63; next != want {
			t.Errorf("size %d: next seq %d, want %d", size, next, want)
		}
		var r Reassembler
		var f LinkFrame
		var got []byte
		for len(b) > 0 {
			n, _, err := Framer{}.Next(b)
			if err != nil || n == 0 {
				t.Fatalf("size %d: Next = %d, %v", size, n, err)
			}
			if err := f.Decode(b[:n]); err != nil {
				t.Fatalf("size %d: Decode: %v", size, err)
			}
			frag, a := r.Add(f.UserData())
			if a != AnomalyNone {
				t.Fatalf("size %d: anomaly %v", size, a)
			}
			if frag != nil {
				got = bytes.Clone(frag)
			}
			b = b[n:]
		}
		if !bytes.Equal(got, apdu) {
			t.Errorf("size %d: round trip differs (got %d octets)", size, len(got))
		}
	}
}

// TestConnRecordFields checks the Record layout other packages rely on.
func TestConnRecordFields(t *testing.T) {
	c := newTCP()
	var recs []protocols.Record
	emit := func(r protocols.Record) { recs = append(recs, r) }
	feed(c, protocols.Request, AppendLinkFrames(nil, CtrlMasterData, 10, 1, AppendCROB(nil, 3, FuncSelect, 2, CROB{Code: 3, Count: 1})), false, emit)
	rsp := AppendCROBObject(AppendResponseHeader(nil, 3, FuncResponse, IINDeviceRestart|IINParameterError, false), 2, CROB{Code: 3, Count: 1})
	b := AppendLinkFrames(nil, CtrlOutstationData, 1, 10, rsp)
	feed(c, protocols.Response, b[:5], false, emit)
	feed(c, protocols.Response, b[5:], false, emit)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	wantKeys := [][]string{
		{"link_src", "link_dst", "link_fc", "fc", "objects", "seq"},
		{"link_src", "link_dst", "link_fc", "fc", "objects", "iin", "seq"},
	}
	for i, r := range recs {
		var keys []string
		for _, kv := range r.Fields {
			keys = append(keys, kv.Key)
		}
		if len(keys) != len(wantKeys[i]) {
			t.Fatalf("record %d keys %v, want %v", i, keys, wantKeys[i])
		}
		for j := range keys {
			if keys[j] != wantKeys[i][j] {
				t.Errorf("record %d keys %v, want %v", i, keys, wantKeys[i])
			}
		}
	}
	if recs[0].Dir != protocols.Request || recs[1].Dir != protocols.Response {
		t.Errorf("dirs %v %v", recs[0].Dir, recs[1].Dir)
	}
	if v, _ := recs[1].Get("iin"); v != 0x8004 {
		t.Errorf("iin = %v, want 0x8004", v)
	}
	if v, _ := recs[0].Get("fc"); v != int(FuncSelect) {
		t.Errorf("fc = %v", v)
	}
	if v, _ := recs[0].Get("objects"); len(v.([]Object)) != 1 || v.([]Object)[0] != (Object{Group: 12, Variation: 1}) {
		t.Errorf("objects = %v", v)
	}
	if v, _ := recs[0].Get("link_src"); v != 1 {
		t.Errorf("link_src = %v", v)
	}
}

// TestConnGap checks that a gap drops the partial frame and the fragment
// in progress, and that garbage right after a gap is not an anomaly.
func TestConnGap(t *testing.T) {
	c := newTCP()
	var recs []protocols.Record
	emit := func(r protocols.Record) { recs = append(recs, r) }
	big := make([]byte, 400)
	copy(big, AppendResponseHeader(nil, 1, FuncResponse, 0, false))
	b := AppendLinkFrames(nil, CtrlOutstationData, 1, 10, big)
	first, _, _ := Framer{}.Next(b)
	feed(c, protocols.Response, b[:first], false, emit)  // FIR segment
	feed(c, protocols.Response, b[first+3:], true, emit) // gap: tail of frame 2 is garbage
	if len(recs) != 1 || recs[0].Anomaly != "" {
		t.Fatalf("records %+v, want only the first segment without anomaly", recs)
	}
	// After the gap, a non-FIR segment is one without FIR.
	feed(c, protocols.Response, AppendLinkFrame(nil, CtrlOutstationData, 1, 10, []byte{0x80 | 2, 1}), false, emit)
	if got := recs[len(recs)-1].Anomaly; got != "fragment_without_fir" {
		t.Errorf("anomaly after gap = %q, want fragment_without_fir", got)
	}
}

// TestGeneratedBehaviour states, independently of the golden files, what
// each generated capture must give.
func TestGeneratedBehaviour(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"dnp3_anomalies", "4:unconfirmed_user_data/data_crc 5:/link_crc 5:read 6:/bad_start 6:read 7:/bad_length " +
			"8:write/broadcast 9:response/unknown_object 10:fc_77/unknown_function 11:read/too_many_objects " +
			"12:response/truncated_object 13:read/bad_qualifier 14:read/bad_range 15:response/wrong_direction " +
			"16:unconfirmed_user_data/fragment_without_fir 17:unconfirmed_user_data 18:unconfirmed_user_data/transport_seq " +
			"19:unconfirmed_user_data 20:unconfirmed_user_data 21:unconfirmed_user_data 22:unconfirmed_user_data " +
			"23:unconfirmed_user_data 24:unconfirmed_user_data 25:unconfirmed_user_data 26:unconfirmed_user_data " +
			"27:unconfirmed_user_data/reassembly_overflow 28:unconfirmed_user_data/reassembly_overflow " +
			"29:request_link_status/unexpected_data"},
		{"dnp3_multisegment", "4:read 5:unconfirmed_user_data 5:unconfirmed_user_data 5:response 6:confirm"},
		{"dnp3_bytewise", "30:read 31:response"},
		{"dnp3_pipelined", "4:request_link_status 4:read 4:enable_unsolicited 6:response 6:response"},
		{"dnp3_linkonly", "4:request_link_status 5:link_status 6:reset_link_states 7:ack 8:test_link_states 9:ack 10:read 11:ack"},
		{"dnp3_udp", "1:request_link_status 2:link_status 3:read 4:response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(dissectGolden(t, filepath.Join("testdata", tt.name+".pcap")))
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	// Every function code of Table 4-1 appears, none with an anomaly.
	recs := dissectGolden(t, filepath.Join("testdata", "dnp3_functions.pcap"))
	seen := map[FunctionCode]bool{}
	for _, r := range recs {
		if r.Anomaly != "" {
			t.Errorf("frame %d: anomaly %s", r.Frame, r.Anomaly)
		}
		if fc, ok := r.Fields["fc"].(int); ok {
			seen[FunctionCode(fc)] = true
		}
	}
	for c := 0; c < 256; c++ {
		if fc := FunctionCode(c); fc.Known() && !seen[fc] {
			t.Errorf("function %v not in dnp3_functions.pcap", fc)
		}
	}
}

func TestErrorsAreSentinels(t *testing.T) {
	var f Fragment
	if err := f.Decode([]byte{0xC0, 200}, true); !errors.Is(err, ErrBadFunction) {
		t.Errorf("err = %v", err)
	}
}
