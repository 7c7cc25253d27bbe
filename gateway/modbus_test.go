package gateway

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

func readReq(tid uint16, addr, qty uint16) []byte {
	return modbus.AppendRequest(nil, tid, 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, addr, qty))
}

func readResp(tid uint16, regs []uint16) []byte {
	return modbus.AppendResponse(nil, tid, 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, regs))
}

func writeReq(tid uint16, addr, value uint16) []byte {
	return modbus.AppendRequest(nil, tid, 1, modbus.AppendWriteSingleRegister(nil, addr, value))
}

func modbusRig(t *testing.T, action string) (*rig, *capture.TCPFlow) {
	r := newRig(t, policy(t, "enforce", action, "", modbusConduit), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(f)
	return r, f
}

func TestModbusReadAllowedForwardedByteIdentical(t *testing.T) {
	r, f := modbusRig(t, "reply")
	for tid := uint16(1); tid <= 3; tid++ {
		req := f.Send(true, readReq(tid, 0, 10))
		r.mustForward(r.client(req), South, req)
		resp := f.Send(false, readResp(tid, make([]uint16, 10)))
		r.mustForward(r.server(resp), North, resp)
	}
	c := r.counters()
	if c.PDUs != 6 || c.PDUsAllowed != 6 || c.Dropped() != 0 {
		t.Fatalf("counters: pdus=%d allowed=%d dropped=%d, want 6, 6, 0 (%v)", c.PDUs, c.PDUsAllowed, c.Dropped(), c.DropsByName())
	}
	if len(r.events) != 0 {
		t.Fatalf("events for allowed traffic: %+v", r.events[0])
	}
}

// checkRST asserts that s is an RST|ACK from src to dst at seq.
func checkRST(t *testing.T, s sent, out PortID, src, dst capture.Endpoint, seq uint32) {
	t.Helper()
	d := decode(t, s.frame)
	p := &d.pkt
	if s.out != out || p.Flags&packet.TCPRst == 0 || p.SrcAddrPort() != src.Addr || p.DstAddrPort() != dst.Addr ||
		p.Seq != seq || p.SrcMAC != src.MAC || p.DstMAC != dst.MAC {
		t.Fatalf("got %v %s>%s seq=%d flags=%s macs %x>%x, want RST on %v %s>%s seq=%d",
			s.out, p.SrcAddrPort(), p.DstAddrPort(), p.Seq, flagString(p.Flags), p.SrcMAC, p.DstMAC, out, src.Addr, dst.Addr, seq)
	}
}

func TestModbusDeniedWriteGetsExceptionAndResetBothWays(t *testing.T) {
	tests := []struct {
		name     string
		req      []byte
		wantCode modbus.ExceptionCode
		reason   string
	}{
		{"function not allowed", modbus.AppendRequest(nil, 7, 1, modbus.AppendWriteSingleCoil(nil, 1, true)), modbus.ExceptionIllegalFunction, "function_not_allowed"},
		{"address out of range", writeReq(8, 60, 5), modbus.ExceptionIllegalDataAddress, "address_out_of_range"},
		{"value out of range", writeReq(9, 41, 5000), modbus.ExceptionIllegalDataValue, "value_out_of_range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, f := modbusRig(t, "reply")
			cseq, sseq := f.NextSeq(true), f.NextSeq(false)
			got := r.client(f.Send(true, tc.req))
			if len(got) != 3 {
				t.Fatalf("got %s, want reply + 2 RSTs", describe(got))
			}
			// 1: the exception, from the PLC to the HMI.
			d := decode(t, got[0].frame)
			if got[0].out != North || d.pkt.SrcAddrPort() != plcEP.Addr || d.pkt.Seq != sseq || d.pkt.Ack != cseq+uint32(len(tc.req)) {
				t.Fatalf("reply: out=%v %s seq=%d ack=%d, want north from PLC seq=%d ack=%d", got[0].out, d.pkt.SrcAddrPort(), d.pkt.Seq, d.pkt.Ack, sseq, cseq+uint32(len(tc.req)))
			}
			var a modbus.ADU
			if err := a.Decode(d.payload, protocols.Response); err != nil {
				t.Fatalf("reply does not decode: %v (%x)", err, d.payload)
			}
			reqTID := binary.BigEndian.Uint16(tc.req)
			if a.TransactionID != reqTID || a.Unit != 1 || a.Function != tc.req[7]|0x80 || a.Exception != tc.wantCode {
				t.Fatalf("reply tid=%d unit=%d fc=%#x code=%v, want tid=%d unit=1 fc=%#x code=%v",
					a.TransactionID, a.Unit, a.Function, a.Exception, reqTID, tc.req[7]|0x80, tc.wantCode)
			}
			// 2, 3: resets, each at the sequence number its receiver expects.
			rsts := got[1:]
			if rsts[0].out != South {
				rsts[0], rsts[1] = rsts[1], rsts[0]
			}
			checkRST(t, rsts[0], South, hmiEP, plcEP, cseq)
			checkRST(t, rsts[1], North, plcEP, hmiEP, sseq+uint32(len(d.payload)))
			ev := r.lastEvent()
			if ev.Type != events.TypeDeny || ev.Reason != tc.reason || ev.Action != "reply" || ev.Conduit != "hmi-plc" || ev.Fields["fc"] != int(tc.req[7]) {
				t.Fatalf("event %+v, want deny %s reply on hmi-plc", ev, tc.reason)
			}
			// The connection is gone: later client data does not cross.
			if got := r.client(f.Send(true, readReq(10, 0, 1))); len(got) != 0 {
				t.Fatalf("after reset got %s", describe(got))
			}
			if c := r.counters(); c.Replies != 1 || c.Resets != 1 || c.Drops[DropPDUDenied] != 1 {
				t.Fatalf("counters replies=%d resets=%d denied=%d", c.Replies, c.Resets, c.Drops[DropPDUDenied])
			}
		})
	}
}

func TestModbusDeniedWriteReset(t *testing.T) {
	r, f := modbusRig(t, "reset")
	cseq, sseq := f.NextSeq(true), f.NextSeq(false)
	got := r.client(f.Send(true, writeReq(1, 70, 1)))
	if len(got) != 2 {
		t.Fatalf("got %s, want 2 RSTs", describe(got))
	}
	if got[0].out != South {
		got[0], got[1] = got[1], got[0]
	}
	checkRST(t, got[0], South, hmiEP, plcEP, cseq)
	checkRST(t, got[1], North, plcEP, hmiEP, sseq)
}

func TestModbusDropKeepsDroppingRetransmissions(t *testing.T) {
	r, f := modbusRig(t, "drop")
	seq := f.NextSeq(true)
	w := writeReq(1, 70, 1)
	if got := r.client(f.Send(true, w)); len(got) != 0 {
		t.Fatalf("denied write: got %s, want nothing", describe(got))
	}
	for range 3 {
		re := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, w)
		if got := r.client(re); len(got) != 0 {
			t.Fatalf("retransmission: got %s, want nothing", describe(got))
		}
	}
	// The same bytes with a read instead: still nothing of that direction crosses.
	re := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, readReq(1, 0, 1))
	if got := r.client(re); len(got) != 0 {
		t.Fatalf("different retransmission: got %s", describe(got))
	}
	// A pure ACK still passes (it carries no data).
	ack := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true}, nil)
	r.mustForward(r.client(ack), South, ack)
	c := r.counters()
	if c.Drops[DropPDUDenied] != 1 || c.Drops[DropBlocked]+c.Drops[DropEvasion] != 4 {
		t.Fatalf("drops %v", c.DropsByName())
	}
}

func TestModbusSplitOneBytePerSegment(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		// Every byte is held until the PDU is complete and allowed; then
		// the whole PDU crosses from the first byte's sequence number.
		r, f := modbusRig(t, "reply")
		req := readReq(1, 0, 10)
		seq := f.NextSeq(true)
		for i := range req {
			got := r.client(f.Send(true, req[i:i+1]))
			if i < len(req)-1 {
				r.mustHold(got, South, seq)
				continue
			}
			if data := r.delivered(got, South, seq); !bytes.Equal(data, req) {
				t.Fatalf("completing byte: server got %x, want the whole PDU %x", data, req)
			}
		}
		if c := r.counters(); c.PDUsAllowed != 1 || c.HeldReleased != 1 {
			t.Fatalf("allowed PDUs %d, released %d, want 1, 1", c.PDUsAllowed, c.HeldReleased)
		}
	})
	t.Run("denied", func(t *testing.T) {
		r, f := modbusRig(t, "reply")
		req := writeReq(1, 70, 1)
		var toServer []byte
		for i := range req {
			got := r.client(f.Send(true, req[i:i+1]))
			for _, s := range got {
				if s.out == South {
					d := decode(t, s.frame)
					toServer = append(toServer, d.payload...)
				}
			}
			if i < len(req)-1 && len(got) != 1 {
				t.Fatalf("byte %d: got %s, want a pure ACK", i, describe(got))
			}
			if i == len(req)-1 && len(got) != 4 {
				t.Fatalf("completing byte: got %s, want a pure ACK, the reply and 2 RSTs", describe(got))
			}
		}
		if len(toServer) != 0 {
			t.Fatalf("server got %x, want no byte of the denied write", toServer)
		}
	})
}

func TestModbusPipelinedSecondDenied(t *testing.T) {
	r, f := modbusRig(t, "reply")
	read, write, read2 := readReq(1, 0, 2), writeReq(2, 70, 1), readReq(3, 0, 2)
	cseq := f.NextSeq(true)
	got := r.client(f.Send(true, append(append(append([]byte{}, read...), write...), read2...)))
	if len(got) != 4 {
		t.Fatalf("got %s, want truncated segment + reply + 2 RSTs", describe(got))
	}
	d := decode(t, got[0].frame) // checks IP length and checksums
	if got[0].out != South || !bytes.Equal(d.payload, read) || d.pkt.Seq != cseq {
		t.Fatalf("forwarded %v payload %x, want south with only the read %x", got[0].out, d.payload, read)
	}
	rep := decode(t, got[1].frame)
	var a modbus.ADU
	if err := a.Decode(rep.payload, protocols.Response); err != nil || a.TransactionID != 2 || !a.IsException {
		t.Fatalf("reply %x: tid=%d exc=%v err=%v, want exception to tid 2", rep.payload, a.TransactionID, a.IsException, err)
	}
	if rep.pkt.Ack != cseq+uint32(len(read)+len(write)) {
		t.Fatalf("reply ack %d, want end of the denied PDU %d", rep.pkt.Ack, cseq+uint32(len(read)+len(write)))
	}
	for _, s := range got[2:] {
		if s.out == South {
			checkRST(t, s, South, hmiEP, plcEP, cseq+uint32(len(read)))
		}
	}
	if c := r.counters(); c.Truncated != 1 {
		t.Fatalf("truncated %d, want 1", c.Truncated)
	}
}

func TestOverlappingRetransmission(t *testing.T) {
	tests := []struct {
		name      string
		resend    func(req []byte) []byte
		wantReset bool
	}{
		{"identical bytes pass", func(req []byte) []byte { return req }, false},
		{"different bytes are evasion", func(req []byte) []byte {
			w := writeReq(1, 41, 1) // same length, same tid, allowed on its own
			return w
		}, true},
		{"partial overlap with different bytes", func(req []byte) []byte {
			b := bytes.Clone(req)
			b[len(b)-1] ^= 0xff
			return append(b, readReq(2, 0, 1)...)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, f := modbusRig(t, "drop")
			seq := f.NextSeq(true)
			req := readReq(1, 0, 1)
			first := f.Send(true, req)
			r.mustForward(r.client(first), South, first)
			re := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, tc.resend(req))
			got := r.client(re)
			if !tc.wantReset {
				r.mustForward(got, South, re)
				return
			}
			if len(got) != 2 || got[0].frame[47]&packet.TCPRst == 0 {
				t.Fatalf("got %s, want RST both ways", describe(got))
			}
			if got[0].out != South {
				got[0], got[1] = got[1], got[0]
			}
			checkRST(t, got[0], South, hmiEP, plcEP, seq+uint32(len(req)))
			if c := r.counters(); c.Drops[DropEvasion] != 1 {
				t.Fatalf("evasion drops %d", c.Drops[DropEvasion])
			}
			if ev := r.lastEvent(); ev.Reason != ReasonEvasionTCPOverlap || ev.Action != "reset" {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}

func TestOutOfOrderSegments(t *testing.T) {
	r, f := modbusRig(t, "reply")
	req := readReq(1, 0, 4)
	seq, ack := f.NextSeq(true), f.NextSeq(false)
	part1 := f.Segment(true, seq, ack, capture.TCPFlags{ACK: true, PSH: true}, req[:5])
	part2 := f.Segment(true, seq+5, ack, capture.TCPFlags{ACK: true, PSH: true}, req[5:])
	if got := r.client(part2); len(got) != 0 {
		t.Fatalf("segment after a hole: got %s, want it dropped", describe(got))
	}
	r.mustHold(r.client(part1), South, seq)
	// The retransmission completes the PDU: it crosses whole.
	if data := r.delivered(r.client(part2), South, seq); !bytes.Equal(data, req) {
		t.Fatalf("server got %x, want %x", data, req)
	}
	c := r.counters()
	if c.Drops[DropOutOfOrder] != 1 || c.PDUsAllowed != 1 {
		t.Fatalf("out_of_order=%d allowed=%d, want 1, 1", c.Drops[DropOutOfOrder], c.PDUsAllowed)
	}
}

func TestOutOfWindowDataDropped(t *testing.T) {
	r, f := modbusRig(t, "reply")
	far := f.Segment(true, f.NextSeq(true)+1<<20, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, readReq(1, 0, 1))
	if got := r.client(far); len(got) != 0 {
		t.Fatalf("got %s", describe(got))
	}
	badAck := f.Segment(true, f.NextSeq(true), f.NextSeq(false)+5000, capture.TCPFlags{ACK: true, PSH: true}, readReq(1, 0, 1))
	if got := r.client(badAck); len(got) != 0 {
		t.Fatalf("ack of unsent data: got %s", describe(got))
	}
	rst := f.Segment(false, f.NextSeq(false)+1<<24, 0, capture.TCPFlags{RST: true}, nil)
	if got := r.server(rst); len(got) != 0 {
		t.Fatalf("blind reset: got %s", describe(got))
	}
	if c := r.counters(); c.Drops[DropOutOfWindow] != 3 {
		t.Fatalf("out_of_window %d, want 3", c.Drops[DropOutOfWindow])
	}
}

func TestIPFragmentToModbusDenied(t *testing.T) {
	r, f := modbusRig(t, "reply")
	fr := bytes.Clone(f.Send(true, readReq(1, 0, 1)))
	// Set More Fragments and fix the IPv4 header checksum.
	fr[14+6] |= 0x20
	fr[14+6] &^= 0x40
	fr[14+10], fr[14+11] = 0, 0
	binary.BigEndian.PutUint16(fr[14+10:], csumFold(csumAdd(0, fr[14:34])))
	if got := r.client(fr); len(got) != 0 {
		t.Fatalf("fragment: got %s", describe(got))
	}
	if c := r.counters(); c.Drops[DropFragment] != 1 {
		t.Fatalf("fragment drops %d", c.Drops[DropFragment])
	}
	if ev := r.lastEvent(); ev.Reason != "fragment" || ev.Type != events.TypeDeny {
		t.Fatalf("event %+v", ev)
	}
}

func TestNonModbusBytesOnModbusPortDenied(t *testing.T) {
	r, f := modbusRig(t, "reply")
	got := r.client(f.Send(true, []byte("GET / HTTP/1.1\r\nHost: plc\r\n\r\n")))
	if len(got) != 2 {
		t.Fatalf("got %s, want 2 RSTs (no Modbus reply to non-Modbus bytes)", describe(got))
	}
	for _, s := range got {
		if s.out == South && s.frame[47]&packet.TCPRst == 0 {
			t.Fatalf("non-RST frame reached the PLC: %s", describe(got))
		}
	}
	if ev := r.lastEvent(); ev.Reason != "malformed:non_modbus" {
		t.Fatalf("event reason %q, want malformed:non_modbus", ev.Reason)
	}
}

func TestMidStreamPickupOnlyInMonitorMode(t *testing.T) {
	t.Run("enforce refuses", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "reply", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		f.Advance(true, 1)
		f.Advance(false, 1)
		if got := r.client(f.Send(true, readReq(1, 0, 1))); len(got) != 0 {
			t.Fatalf("got %s", describe(got))
		}
		if c := r.counters(); c.Drops[DropNoFlow] != 1 || c.FlowsActive != 0 {
			t.Fatalf("no_flow=%d flows=%d", c.Drops[DropNoFlow], c.FlowsActive)
		}
	})
	t.Run("monitor adopts and reports", func(t *testing.T) {
		r := newRig(t, policy(t, "monitor", "reply", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		f.Advance(true, 1)
		f.Advance(false, 1)
		req := f.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(req), South, req)
		w := f.Send(true, writeReq(2, 70, 1))
		r.mustForward(r.client(w), South, w)
		ev := r.lastEvent()
		if ev.Type != events.TypeAlert || ev.Mode != "monitor" || ev.Reason != "address_out_of_range" {
			t.Fatalf("event %+v, want monitor alert", ev)
		}
	})
}

func TestMonitorModeForwardsAllAndReports(t *testing.T) {
	conduit := "  - name: hmi-plc\n    from: hmi\n    to: plc\n    mode: monitor\n    rules:\n      - modbus:\n          allow:\n            - read: holding 0-9\n"
	r := newRig(t, policy(t, "enforce", "reply", "", conduit), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(f)
	for _, pdu := range [][]byte{writeReq(1, 5, 1), readReq(2, 50, 1), []byte("not modbus at all")} {
		fr := f.Send(true, pdu)
		r.mustForward(r.client(fr), South, fr)
	}
	c := r.counters()
	if c.PDUsAlerted != 3 || c.Dropped() != 0 || len(r.events) != 3 {
		t.Fatalf("alerted=%d dropped=%d events=%d, want 3, 0, 3", c.PDUsAlerted, c.Dropped(), len(r.events))
	}
	for _, ev := range r.events {
		if ev.Type != events.TypeAlert || ev.Verdict != "alert" || ev.Mode != "monitor" {
			t.Fatalf("event %+v", ev)
		}
	}
}

func TestRulesetSwapMidConnectionKeepsSession(t *testing.T) {
	r, f := modbusRig(t, "reset")
	req := f.Send(true, readReq(1, 0, 1))
	r.mustForward(r.client(req), South, req)
	resp := f.Send(false, readResp(1, []uint16{7}))
	r.mustForward(r.server(resp), North, resp)

	// Same policy, new compile: the session and the pairing state survive.
	r.rs.Store(policy(t, "enforce", "reset", "", modbusConduit))
	req = f.Send(true, readReq(2, 0, 1))
	r.mustForward(r.client(req), South, req)
	resp = f.Send(false, readResp(2, []uint16{7}))
	r.mustForward(r.server(resp), North, resp)

	// A stricter policy applies to the next PDU of the same connection.
	strict := "  - name: hmi-plc\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - read: holding 50-60\n"
	r.rs.Store(policy(t, "enforce", "reset", "", strict))
	if got := r.client(f.Send(true, readReq(3, 0, 1))); len(got) != 2 {
		t.Fatalf("after the strict swap got %s, want 2 RSTs", describe(got))
	}
	c := r.counters()
	if c.FlowsCreated != 1 || c.FlowsRevalidated != 2 || c.PDUsAllowed != 4 {
		t.Fatalf("created=%d revalidated=%d allowed=%d, want 1, 2, 4", c.FlowsCreated, c.FlowsRevalidated, c.PDUsAllowed)
	}
}

func TestFlowDeniedSYNGetsReset(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	other := capture.Endpoint{MAC: plcEP.MAC, Addr: plcEP.Addr}
	other.Addr = netipAP("192.0.2.10:23")
	f := capture.NewTCPFlow(hmiEP, other)
	syn := f.Handshake()[0]
	got := r.client(syn)
	if len(got) != 1 || got[0].out != North {
		t.Fatalf("got %s, want one RST back to the client", describe(got))
	}
	d := decode(t, got[0].frame)
	if d.pkt.Flags != packet.TCPRst|packet.TCPAck || d.pkt.Ack != 1001 {
		t.Fatalf("flags %s ack %d", flagString(d.pkt.Flags), d.pkt.Ack)
	}
	if c := r.counters(); c.FlowsActive != 0 || c.Drops[DropFlowDenied] != 1 {
		t.Fatalf("flows=%d flow_denied=%d", c.FlowsActive, c.Drops[DropFlowDenied])
	}
	if ev := r.lastEvent(); ev.Reason != "port_not_allowed" {
		t.Fatalf("reason %q", ev.Reason)
	}
}

func TestCraftedFramesKeepVLANAndMACs(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reply", "", modbusConduit), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	f.VLAN = 42
	r.handshake(f)
	got := r.client(f.Send(true, writeReq(1, 70, 1)))
	if len(got) != 3 {
		t.Fatalf("got %s", describe(got))
	}
	for _, s := range got {
		d := decode(t, s.frame)
		if d.pkt.NVLANs != 1 || d.pkt.VLANs[0] != 42 {
			t.Fatalf("crafted frame on %v has VLANs %v (n=%d), want 42", s.out, d.pkt.VLANs, d.pkt.NVLANs)
		}
		wantDst := hmiEP.MAC
		if s.out == South {
			wantDst = plcEP.MAC
		}
		if d.pkt.DstMAC != wantDst {
			t.Fatalf("crafted frame on %v to %x, want %x", s.out, d.pkt.DstMAC, wantDst)
		}
	}
}
