package replay

import (
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/gen"
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// TestCaptureRepairs: frames a capture lost or reordered are capture
// artefacts, not traffic the gateway on the wire would have refused.
// Without StrictMidstream the harness repairs them (tells the engine of
// holes no later frame fills, feeds a pure ACK after the segment it
// acknowledges); with it the engine sees the capture as is and refuses
// what follows. A hole a later frame fills is out-of-order delivery and
// stays refused either way.
func TestCaptureRepairs(t *testing.T) {
	hmi, plc, req, resp := testHMI, testPLC, readReq, readResp
	ackOnly := func(f *capture.TCPFlow) []byte {
		return f.Segment(true, f.NextSeq(true), f.NextSeq(false), capture.TCPFlags{ACK: true}, nil)
	}
	tests := []struct {
		name  string
		build func(f *capture.TCPFlow) [][]byte // frames after the handshake
		// want: the one expected deny reason with StrictMidstream and
		// without ("" for none), and the repair counts.
		strict, repaired             string
		holes, reordered, skippedSeg int
	}{
		{"response lost, its ACK captured", func(f *capture.TCPFlow) [][]byte {
			r1 := f.Send(true, req(1))
			f.Send(false, resp(1)) // lost by the capture
			return [][]byte{r1, ackOnly(f), f.Send(true, req(2)), f.Send(false, resp(2))}
		}, "out_of_window", "", 1, 0, 0},
		{"first half of a response lost", func(f *capture.TCPFlow) [][]byte {
			r1 := f.Send(true, req(1))
			b := resp(1)
			f.Send(false, b[:5]) // lost by the capture
			return [][]byte{r1, f.Send(false, b[5:]), f.Send(true, req(2)), f.Send(false, resp(2))}
		}, "out_of_order", "", 1, 0, 1},
		{"ACK captured before the data it acknowledges", func(f *capture.TCPFlow) [][]byte {
			r1 := f.Send(true, req(1))
			s1 := f.Send(false, resp(1))
			return [][]byte{r1, ackOnly(f), s1, f.Send(true, req(2)), f.Send(false, resp(2))}
		}, "out_of_window", "", 0, 1, 0},
		{"out-of-order response filled later", func(f *capture.TCPFlow) [][]byte {
			r1 := f.Send(true, req(1))
			b := resp(1)
			first := f.Send(false, b[:5])
			second := f.Send(false, b[5:])
			return [][]byte{r1, second, first}
		}, "out_of_order", "out_of_order", 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := capture.NewTCPFlow(hmi, plc)
			frames := append(f.Handshake(), tc.build(f)...)
			path := writeCapture(t, frames)
			for _, strict := range []bool{true, false} {
				var evs []*Event
				rep, err := Run(Options{Policy: mustPolicy(t, readOnly), StrictMidstream: strict,
					OnEvent: func(e *Event) { evs = append(evs, e) }}, path)
				if err != nil {
					t.Fatal(err)
				}
				want := tc.repaired
				if strict {
					want = tc.strict
				}
				got := ""
				if len(evs) > 0 {
					got = evs[0].Reason
				}
				if got != want {
					for _, e := range evs {
						t.Logf("event: frame %d %s", e.Frame, e.Reason)
					}
					t.Fatalf("strict=%v: first deny %q, want %q", strict, got, want)
				}
				if strict {
					continue
				}
				if rep.CaptureHoles != tc.holes || rep.Reordered != tc.reordered || rep.CaptureSkipped != tc.skippedSeg {
					t.Fatalf("repairs: holes %d, reordered %d, skipped %d; want %d, %d, %d",
						rep.CaptureHoles, rep.Reordered, rep.CaptureSkipped, tc.holes, tc.reordered, tc.skippedSeg)
				}
				if rep.Frames != len(frames) || rep.Forwarded+rep.Dropped+rep.Truncated != len(frames) {
					t.Fatalf("frames %d (forwarded %d, dropped %d), want every one of %d accounted once", rep.Frames, rep.Forwarded, rep.Dropped, len(frames))
				}
			}
		})
	}
}

// TestFragmentThenEcho: a write hidden in IP fragments, which the engine
// drops, then the PLC's echo of the write, whose acknowledgement goes past
// the fragmented bytes. Those bytes are missing because the engine dropped
// them, not because the capture lost them: the hole is not repaired, and
// the echo is denied without StrictMidstream as with it.
func TestFragmentThenEcho(t *testing.T) {
	f := capture.NewTCPFlow(testHMI, testPLC)
	frames := f.Handshake()
	frames = append(frames, f.Send(true, readReq(1)), f.Send(false, readResp(1)))
	write := modbus.AppendRequest(nil, 2, 1, modbus.AppendWriteSingleRegister(nil, 0, 258))
	frames = append(frames, gen.Fragment(f.Send(true, write), 24)...)
	echo := f.Send(false, modbus.AppendResponse(nil, 2, 1, modbus.AppendWriteSingleRegister(nil, 0, 258)))
	frames = append(frames, echo)
	path := writeCapture(t, frames)
	for _, strict := range []bool{true, false} {
		var evs []*Event
		rep, err := Run(Options{Policy: mustPolicy(t, readOnly), StrictMidstream: strict,
			OnEvent: func(e *Event) { evs = append(evs, e) }}, path)
		if err != nil {
			t.Fatal(err)
		}
		echoDenied := false
		for _, e := range evs {
			t.Logf("strict=%v: frame %d %s %s", strict, e.Frame, e.Verdict, e.Reason)
			if e.Frame == len(frames) && e.Verdict == "deny" {
				echoDenied = true
			}
		}
		if !echoDenied {
			t.Errorf("strict=%v: the echo of the fragmented write (frame %d) was not denied", strict, len(frames))
		}
		if rep.Forwarded+rep.Truncated != 5 {
			t.Errorf("strict=%v: %d frames forwarded, want the 5 before the fragments", strict, rep.Forwarded+rep.Truncated)
		}
		if !strict && (rep.CaptureHoles != 0 || rep.EngineDropHoles == 0) {
			t.Errorf("holes repaired %d, engine-drop holes %d; want 0 and > 0", rep.CaptureHoles, rep.EngineDropHoles)
		}
	}
}
