package modbus

import (
	"errors"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestUMAS decodes FC 90 (Schneider UMAS) ADUs as a Modicon engineering
// session carries them, including the 261-byte ADU (MBAP length 255) the
// specification's 260-byte limit would refuse: framed, decoded field for
// field, and named long_adu, the lowest-ranked anomaly (a long ADU that
// is wrong in another way reports that instead).
func TestUMAS(t *testing.T) {
	big := make([]byte, 253)
	for i := range big {
		big[i] = byte(i)
	}
	for _, tc := range []struct {
		name        string
		adu         []byte
		dir         protocols.Dir
		wantErr     error
		wantAnomaly Anomaly
		wantSub     uint16
		wantStatus  uint8
	}{
		{"read id request", AppendRequest(nil, 1, 0, AppendUMAS(nil, 0, UMASReadID, nil)), protocols.Request, nil, AnomalyNone, uint16(UMASReadID), 0},
		{"stop plc request", AppendRequest(nil, 2, 0, AppendUMAS(nil, 0x4c, UMASStopPLC, []byte{0xff, 0, 1})), protocols.Request, nil, AnomalyNone, uint16(UMASStopPLC), 0},
		{"261-byte upload response", AppendResponse(nil, 3, 0, AppendUMAS(nil, 0x4c, UMASResponseOK, big[:251])), protocols.Response, ErrMalformed, AnomalyLongADU, 0, UMASResponseOK},
		{"261-byte download request", AppendRequest(nil, 4, 0, AppendUMAS(nil, 0x4c, UMASDownloadBlock, big[:251])), protocols.Request, ErrMalformed, AnomalyLongADU, uint16(UMASDownloadBlock), 0},
		{"260-byte download request", AppendRequest(nil, 4, 0, AppendUMAS(nil, 0x4c, UMASDownloadBlock, big[:250])), protocols.Request, nil, AnomalyNone, uint16(UMASDownloadBlock), 0},
		{"261-byte exception response", AppendResponse(nil, 5, 0, append([]byte{FuncUMAS | ExceptionBit, byte(ExceptionIllegalFunction)}, big[:252]...)), protocols.Response, ErrMalformed, AnomalyPDULength, 0, 0},
		{"error response", AppendResponse(nil, 5, 0, AppendUMAS(nil, 0, UMASResponseError, []byte{0x81})), protocols.Response, nil, AnomalyNone, 0, UMASResponseError},
		{"exception response", AppendResponse(nil, 6, 0, AppendException(nil, FuncUMAS, ExceptionIllegalFunction)), protocols.Response, nil, AnomalyNone, 0, 0},
		{"truncated", AppendRequest(nil, 7, 0, []byte{FuncUMAS, 0}), protocols.Request, ErrMalformed, AnomalyTruncated, 0, 0},
		{"262 bytes", AppendRequest(nil, 8, 0, AppendUMAS(nil, 0, UMASDownloadBlock, big)), protocols.Request, ErrLength, AnomalyMBAPLength, 0, 0},
		{"261 bytes but not umas", AppendRequest(nil, 9, 0, AppendPDU(nil, 16, big[:253])), protocols.Request, ErrLength, AnomalyMBAPLength, 0, 0},
	} {
		var a ADU
		err := a.Decode(tc.adu, tc.dir)
		if !errors.Is(err, tc.wantErr) || a.Anomaly != tc.wantAnomaly {
			t.Errorf("%s: Decode = %v, anomaly %v; want %v, %v", tc.name, err, a.Anomaly, tc.wantErr, tc.wantAnomaly)
			continue
		}
		if a.Sub != tc.wantSub || a.UMASStatus != tc.wantStatus {
			t.Errorf("%s: sub %#x status %#x, want %#x %#x", tc.name, a.Sub, a.UMASStatus, tc.wantSub, tc.wantStatus)
		}
		n, _, ferr := Framer{}.Next(tc.adu)
		if (ferr == nil) != (tc.wantErr != ErrLength) || ferr == nil && n != len(tc.adu) {
			t.Errorf("%s: Framer.Next = %d, %v for %d bytes", tc.name, n, ferr, len(tc.adu))
		}
	}
	if n := len(AppendRequest(nil, 1, 0, AppendUMAS(nil, 0, UMASDownloadBlock, big[:251]))); n != MaxUMASADULen {
		t.Errorf("largest UMAS ADU is %d bytes, want %d", n, MaxUMASADULen)
	}
	for _, code := range []uint8{UMASReadID, UMASStartPLC, UMASStopPLC, UMASInitializeDownload} {
		if back, ok := UMASFunctionByName(UMASFunctionName(code)); !ok || back != code {
			t.Errorf("UMAS name of %#x does not round-trip: %q", code, UMASFunctionName(code))
		}
	}
	if got := UMASFunctionName(0xee); got != "umas_0xee" {
		t.Errorf("UMASFunctionName(0xee) = %q", got)
	}
}

// TestConnUMASSession: the Session (Feed) follows a session with 261-byte
// ADUs split across segments without calling anything non_modbus: the
// long one is named long_adu, the session goes on.
func TestConnUMASSession(t *testing.T) {
	big := make([]byte, 251)
	req := AppendRequest(nil, 1, 0, AppendUMAS(nil, 0x10, UMASUploadBlock, []byte{0, 1, 1, 0}))
	resp := AppendResponse(nil, 1, 0, AppendUMAS(nil, 0x10, UMASResponseOK, big))
	req2 := AppendRequest(nil, 2, 0, AppendUMAS(nil, 0x10, UMASStartPLC, []byte{0xff, 0}))
	resp2 := AppendResponse(nil, 2, 0, AppendUMAS(nil, 0x10, UMASResponseOK, nil))
	c := new(Session)
	var got []protocols.Record
	emit := func(r protocols.Record) { got = append(got, r) }
	feed(c, protocols.Request, req, false, emit)
	feed(c, protocols.Response, resp[:100], false, emit)
	feed(c, protocols.Response, resp[100:], false, emit)
	feed(c, protocols.Request, req2, false, emit)
	feed(c, protocols.Response, resp2, false, emit)
	if len(got) != 4 {
		t.Fatalf("%d records, want 4: %+v", len(got), got)
	}
	for i, r := range got {
		want := ""
		if i == 1 {
			want = "long_adu"
		}
		if r.Anomaly != want {
			t.Errorf("record %d: anomaly %q, want %q", i, r.Anomaly, want)
		}
	}
}
