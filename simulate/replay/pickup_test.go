package replay

import (
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// TestPickupToleratesAnswersToEarlierRequests: a capture that joins a
// Modbus/TCP connection mid-stream holds, after the client's first request
// (tid 5), the server's answer to a request sent before the capture began
// (tid 4). Replay picks the connection up, so that answer is no response
// without request; an answer to nothing after the first paired response
// still is.
func TestPickupToleratesAnswersToEarlierRequests(t *testing.T) {
	hmi, plc, req, resp := testHMI, testPLC, readReq, readResp
	tests := []struct {
		name      string
		payloads  []bool // true: client request, false: server response (tids in order below)
		tids      []uint16
		wantDeny  int // frame number of the one expected deny, 0 for none
		wantPicks int
	}{
		{"stale answer before the paired one", []bool{true, false, false}, []uint16{5, 4, 5}, 0, 1},
		{"unpaired answer after a paired one", []bool{true, false, false}, []uint16{5, 5, 6}, 3, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := capture.NewTCPFlow(hmi, plc)
			f.Advance(true, 101) // the connection opened before the capture
			f.Advance(false, 57)
			var frames [][]byte
			for i, fromClient := range tc.payloads {
				b := resp(tc.tids[i])
				if fromClient {
					b = req(tc.tids[i])
				}
				frames = append(frames, f.Send(fromClient, b))
			}
			path := writeCapture(t, frames)
			var evs []*Event
			rep, err := Run(Options{Policy: mustPolicy(t, readOnly), OnEvent: func(e *Event) { evs = append(evs, e) }}, path)
			if err != nil {
				t.Fatal(err)
			}
			if rep.PickedUp != tc.wantPicks {
				t.Fatalf("picked up %d connections, want %d", rep.PickedUp, tc.wantPicks)
			}
			switch {
			case tc.wantDeny == 0 && len(evs) != 0:
				t.Fatalf("events %+v, want none", *evs[0])
			case tc.wantDeny != 0 && (len(evs) != 1 || evs[0].Frame != tc.wantDeny || evs[0].Reason != "malformed:response_without_request"):
				for _, e := range evs {
					t.Logf("event: frame %d %s", e.Frame, e.Reason)
				}
				t.Fatalf("%d events, want one malformed:response_without_request at frame %d", len(evs), tc.wantDeny)
			}
		})
	}
}
