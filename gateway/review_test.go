package gateway

import (
	"bytes"
	"testing"

	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

const modbusTolerantConduit = `  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          tolerate: [tid_mismatch]
          allow:
            - read: holding 0-99
            - write: holding 40-49
`

// TestToleratedTIDMismatchStillChecksTheAnswer: a rule that tolerates
// wrong transaction ids takes such a response as the answer to the oldest
// request, but only if it answers that request (unit, function, byte
// count, echo): a spoofed answer with another tid is still refused (M18).
func TestToleratedTIDMismatchStillChecksTheAnswer(t *testing.T) {
	tests := []struct {
		name   string
		req    []byte
		resp   []byte
		reason string // "" forwarded
	}{
		{"right answer, wrong tid", readReq(1, 0, 10), readResp(7, make([]uint16, 10)), ""},
		{"wrong byte count, wrong tid", readReq(1, 0, 10), readResp(7, make([]uint16, 1)), "malformed:byte_count_mismatch"},
		{"wrong function, wrong tid", writeReq(1, 41, 5),
			modbus.AppendResponse(nil, 7, 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{1})), "malformed:function_mismatch"},
		{"right byte count, right tid", readReq(1, 0, 10), readResp(1, make([]uint16, 10)), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "drop", "", modbusTolerantConduit), nil)
			f := capture.NewTCPFlow(hmiEP, plcEP)
			r.handshake(f)
			q := f.Send(true, tc.req)
			r.mustForward(r.client(q), South, q)
			a := f.Send(false, tc.resp)
			got := r.server(a)
			if tc.reason == "" {
				r.mustForward(got, North, a)
				if c := r.counters(); c.PDUsDenied != 0 {
					t.Fatalf("denied %d PDUs", c.PDUsDenied)
				}
				// The request is answered: the next exchange pairs normally.
				q2 := f.Send(true, readReq(2, 0, 1))
				r.mustForward(r.client(q2), South, q2)
				a2 := f.Send(false, readResp(2, []uint16{1}))
				r.mustForward(r.server(a2), North, a2)
				return
			}
			if len(got) != 0 {
				t.Fatalf("forwarded %s, want %s", describe(got), tc.reason)
			}
			if ev := r.lastEvent(); ev.Reason != tc.reason {
				t.Fatalf("reason %q, want %q", ev.Reason, tc.reason)
			}
		})
	}
}

// TestCaptureGapResynchronises: after a hole a replayed capture lost
// (CaptureGap), the rest of the lost PDU is skipped up to where whole PDUs
// frame again, and those are judged: a forbidden write behind the tail is
// denied; the allowance ends once a PDU frames (through the hold path too).
func TestCaptureGapResynchronises(t *testing.T) {
	lostThenWrite := func(f *capture.TCPFlow) []byte {
		lost := readReq(1, 0, 10)
		f.Advance(true, 6) // the capture lost the first 6 bytes of this request
		return f.Send(true, append(lost[6:], writeReq(2, 7, 1)...))
	}
	t.Run("forbidden write behind the tail", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(f)
		gapAt := f.NextSeq(true) + 6
		seg := lostThenWrite(f)
		if !r.e.CaptureGap(hmiEP.Addr, plcEP.Addr, gapAt) {
			t.Fatal("CaptureGap found no flow")
		}
		if got := r.client(seg); len(got) != 0 && len(got[0].frame) == len(seg) {
			t.Fatalf("segment forwarded whole")
		}
		if ev := r.lastEvent(); ev.Reason != "address_out_of_range" && ev.Reason != "function_not_allowed" {
			t.Fatalf("reason %q, want the write to holding 7 denied", ev.Reason)
		}
		if c := r.counters(); c.CaptureSkips != 1 || c.PDUsDenied != 1 {
			t.Fatalf("skips %d, denied %d", c.CaptureSkips, c.PDUsDenied)
		}
	})
	t.Run("allowance ends after a held PDU", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(f)
		f.Advance(true, 20)
		if !r.e.CaptureGap(hmiEP.Addr, plcEP.Addr, f.NextSeq(true)) {
			t.Fatal("CaptureGap found no flow")
		}
		q := readReq(3, 0, 1)
		seq := f.NextSeq(true)
		s1, s2 := f.Send(true, q[:5]), f.Send(true, q[5:])
		r.mustHold(r.client(s1), South, seq)
		if data := r.delivered(r.client(s2), South, seq); !bytes.Equal(data, q) {
			t.Fatalf("server got %x, want %x", data, q)
		}
		junk := f.Send(true, []byte("not modbus at all"))
		if got := r.client(junk); len(got) != 0 {
			t.Fatalf("unframeable bytes after a judged PDU forwarded: %s", describe(got))
		}
		if ev := r.lastEvent(); ev.Reason != "malformed:non_modbus" {
			t.Fatalf("reason %q, want malformed:non_modbus", ev.Reason)
		}
	})
}

// TestFlowCountersOnReuseAndEcho: the SYN that reopens a closed
// connection's ports counts in the new flow; echo replies count on the
// server side.
func TestFlowCountersOnReuseAndEcho(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit+icmpConduit[len("  - name: hmi-plc\n    from: hmi\n    to: plc\n    rules:\n"):]), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(f)
	rst := f.Segment(true, f.NextSeq(true), f.NextSeq(false), capture.TCPFlags{RST: true, ACK: true}, nil)
	r.mustForward(r.client(rst), South, rst)
	f2 := capture.NewTCPFlow(hmiEP, plcEP)
	f2.Advance(true, 5000)
	r.handshake(f2)
	echo := icmpFrame(t, hmiEP, plcEP, icmp4Echo, 9, 1, []byte("abcdefgh"))
	r.mustForward(r.client(echo), South, echo)
	reply := icmpFrame(t, plcEP, hmiEP, icmp4EchoReply, 9, 1, []byte("abcdefgh"))
	r.mustForward(r.server(reply), North, reply)
	var tcp, icmp *FlowInfo
	fl := r.e.Flows(0)
	for i := range fl {
		switch fl[i].Transport {
		case "tcp":
			tcp = &fl[i]
		case "icmp":
			icmp = &fl[i]
		}
	}
	if tcp == nil || tcp.Packets != [2]uint64{2, 1} {
		t.Fatalf("reopened tcp flow: %+v, want packets [2 1] (SYN+ACK, SYN-ACK)", tcp)
	}
	if icmp == nil || icmp.Packets != [2]uint64{1, 1} || icmp.Bytes[1] != uint64(len(reply)) {
		t.Fatalf("echo flow: %+v, want packets [1 1]", icmp)
	}
}
