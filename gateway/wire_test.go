package gateway

import (
	"bytes"
	"encoding/binary"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/rules"
	"net/netip"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/simulate/capture"
)

// withUrgent sets URG and the urgent pointer ptr on a TCP frame built by
// capture.TCPFlow and fixes the checksum.
func withUrgent(t testing.TB, frame []byte, ptr uint16) []byte {
	t.Helper()
	var p packet.Packet
	if err := p.Decode(frame, packet.LinkEthernet); err != nil {
		t.Fatal(err)
	}
	end := p.L3Off + int(binary.BigEndian.Uint16(frame[p.L3Off+2:]))
	l4 := frame[p.L4Off:end]
	l4[13] |= packet.TCPUrg
	binary.BigEndian.PutUint16(l4[18:], ptr)
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(p.Src, p.Dst, packet.ProtoTCP, l4))
	return frame
}

// urgentCases are the two attacks of issue 13, as the bytes the client
// sends with send(MSG_OOB) under TCP_CORK: one extra byte, the urgent one,
// that a Linux receiver removes from the stream. Kept in, the parser sees
// an MBAP length of 254 (inside the header) or FC 3 "read holding 1536"
// (after the unit id); the receiver reads FC 6 write holding 0 = 258.
func urgentCases() []struct {
	name   string
	stream []byte // what the parser would see with the urgent byte inline
	ptr    uint16 // urgent pointer: the urgent byte is stream[ptr-1] (Linux, RFC 6093)
} {
	return []struct {
		name   string
		stream []byte
		ptr    uint16
	}{
		{"in MBAP header", []byte{0, 7, 0, 0, 0, 0xfe, 6, 1, 6, 0, 0, 1, 2}, 6},
		{"after unit id", []byte{0, 7, 0, 0, 0, 6, 1, 3, 6, 0, 0, 1, 2}, 8},
	}
}

// TestUrgentDataDropped: on an inspected conduit a segment with URG set is
// never forwarded and raises evasion:tcp_urgent at alert severity; the
// connection is not reset, and the next clean request still passes. In
// monitor mode the segment crosses with an alert.
func TestUrgentDataDropped(t *testing.T) {
	for _, tc := range urgentCases() {
		t.Run(tc.name, func(t *testing.T) {
			r, f := modbusRig(t, "reset")
			seq := f.NextSeq(true)
			fr := withUrgent(t, f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, tc.stream), tc.ptr)
			if got := r.client(fr); len(got) != 0 {
				t.Fatalf("urgent segment: got %s, want nothing sent", describe(got))
			}
			ev := r.lastEvent()
			if ev.Reason != ReasonEvasionTCPUrgent || ev.Verdict != "deny" || ev.Action != "drop" || ev.Severity != events.SevAlert {
				t.Fatalf("event reason=%q verdict=%q action=%q severity=%v, want %q deny drop alert", ev.Reason, ev.Verdict, ev.Action, ev.Severity, ReasonEvasionTCPUrgent)
			}
			d := r.decs[len(r.decs)-1]
			if !d.Evasion || d.EvasionName != EvasionTCPUrgent || d.Action != FrameDrop || d.Drop != DropEvasion {
				t.Fatalf("decision %+v, want a dropped tcp_urgent evasion", d)
			}
			if c := r.counters(); c.Drops[DropEvasion] != 1 || c.PDUs != 0 {
				t.Fatalf("drops[evasion]=%d pdus=%d, want 1 and 0 (nothing judged)", c.Drops[DropEvasion], c.PDUs)
			}
			// The sender's stack would retransmit the same segment: still
			// dropped. A clean read from the same sequence number passes.
			if got := r.client(fr); len(got) != 0 {
				t.Fatalf("retransmitted urgent segment: got %s", describe(got))
			}
			clean := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, readReq(8, 0, 1))
			r.mustForward(r.client(clean), South, clean)
		})
	}
	t.Run("pure ACK pointing ahead", func(t *testing.T) {
		// URG on a segment without data marks a byte of a later segment
		// (the pointer is an offset from this sequence number).
		r, f := modbusRig(t, "drop")
		ack := withUrgent(t, f.Segment(true, f.NextSeq(true), f.NextSeq(false), capture.TCPFlags{ACK: true}, nil), 9)
		if got := r.client(ack); len(got) != 0 {
			t.Fatalf("got %s, want the URG ACK dropped", describe(got))
		}
		if ev := r.lastEvent(); ev.Reason != ReasonEvasionTCPUrgent {
			t.Fatalf("reason %q, want %q", ev.Reason, ReasonEvasionTCPUrgent)
		}
	})
	t.Run("monitor alerts", func(t *testing.T) {
		r := newRig(t, policy(t, "monitor", "drop", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(f)
		tc := urgentCases()[0]
		fr := withUrgent(t, f.Send(true, tc.stream), tc.ptr)
		r.mustForward(r.client(fr), South, fr)
		if ev := r.lastEvent(); ev.Reason != ReasonEvasionTCPUrgent || ev.Verdict != "alert" {
			t.Fatalf("event reason=%q verdict=%q, want %q alert", ev.Reason, ev.Verdict, ReasonEvasionTCPUrgent)
		}
	})
	t.Run("uninspected conduit forwards", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "drop", "", `  - name: hmi-ssh
    from: hmi
    to: plc
    rules:
      - tcp: { ports: [502] }
`), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(f)
		fr := withUrgent(t, f.Send(true, []byte("x")), 1)
		r.mustForward(r.client(fr), South, fr)
	})
}

// TestUDPJudgedFromInitiator: with a conduit plc -> hmi udp/514 (a log
// server), hmi sending from port 514 to any UDP port of the PLC is a new
// flow of hmi's, refused: no reverse adoption for a plain udp rule (issue
// 13). The answer on the PLC's own flow still crosses.
func TestUDPJudgedFromInitiator(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "drop", "", `  - name: plc-logs
    from: plc
    to: hmi
    rules:
      - udp: { ports: [514] }
`), nil)
	logsrv := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:514")}
	for _, port := range []uint16{502, 47808, 161, 40001} {
		dst := capture.Endpoint{MAC: plcEP.MAC, Addr: netip.AddrPortFrom(plcEP.Addr.Addr(), port)}
		dg := capture.UDPDatagram(logsrv, dst, writeReq(1, 0, 258))
		if got := r.client(dg); len(got) != 0 {
			t.Fatalf("log server -> plc:%d: got %s, want it refused", port, describe(got))
		}
		if d := r.decs[len(r.decs)-1]; d.Verdict.Action != rules.Deny || d.Drop != DropFlowDenied {
			t.Fatalf("plc:%d: decision %+v, want a denied flow", port, d)
		}
	}
	plc := capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:40001")}
	msg := capture.UDPDatagram(plc, logsrv, []byte("<13>boot"))
	r.mustForward(r.server(msg), North, msg)
	back := capture.UDPDatagram(logsrv, plc, []byte("ack"))
	r.mustForward(r.client(back), South, back)
	// The PLC's flow does not open its other ports.
	other := capture.UDPDatagram(logsrv, capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:502")}, writeReq(2, 0, 258))
	if got := r.client(other); len(got) != 0 {
		t.Fatalf("log server -> plc:502 with a flow open: got %s", describe(got))
	}
}

// TestModbusUDPNotInspected: a plain udp rule does not let Modbus/UDP
// (port 502) through uninspected: refused with the named reason
// modbus_udp_not_inspected (monitor mode: alerted and forwarded).
func TestModbusUDPNotInspected(t *testing.T) {
	const conduit = `  - name: hmi-plc-udp
    from: hmi
    to: plc
    rules:
      - udp: {}
`
	dst := capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:502")}
	dg := capture.UDPDatagram(hmiEP, dst, writeReq(1, 0, 258))
	r := newRig(t, policy(t, "enforce", "drop", "", conduit), nil)
	if got := r.client(dg); len(got) != 0 {
		t.Fatalf("Modbus/UDP: got %s, want it refused", describe(got))
	}
	ev := r.lastEvent()
	if ev.Reason != NamedModbusUDP || ev.Verdict != "deny" {
		t.Fatalf("event reason %q verdict %q, want %q deny", ev.Reason, ev.Verdict, NamedModbusUDP)
	}
	if d := r.decs[len(r.decs)-1]; d.Verdict.Reason != rules.ReasonProtocolNotAllowed || d.Named != NamedModbusUDP {
		t.Fatalf("decision reason %v named %q", d.Verdict.Reason, d.Named)
	}
	other := capture.UDPDatagram(hmiEP, capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:503")}, []byte("x"))
	r.mustForward(r.client(other), South, other)

	m := newRig(t, policy(t, "monitor", "drop", "", conduit), nil)
	m.mustForward(m.client(dg), South, dg)
	if ev := m.lastEvent(); ev.Reason != NamedModbusUDP || ev.Verdict != "alert" {
		t.Fatalf("monitor: event reason %q verdict %q, want %q alert", ev.Reason, ev.Verdict, NamedModbusUDP)
	}
}

// TestDNP3UDPOutstationFirst: over UDP the outstation may speak first (an
// unsolicited response to its master). The flow is adopted on the
// conduit's DNP3 rule and inspected with the direction of each frame
// taken from its DNP3 DIR bit: the master's later direct operate is
// denied under a read-only policy, and a non-DNP3 datagram from the
// outstation's port is malformed, not adopted uninspected.
func TestDNP3UDPOutstationFirst(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "drop", "", `  - name: scada-rtu
    from: hmi
    to: rtu
    rules:
      - dnp3:
          masters: [1]
          outstations: [10]
          allow:
            - function: read
              objects: [g60, g12]
            - unsolicited: true
`), nil)
	master := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:20000")}
	uns := dnp3.AppendLinkFrames(nil, dnp3.CtrlPRM|0x04, 1, 10, dnp3.AppendResponseHeader(nil, 3, dnp3.FuncUnsolicitedResp, 0, false))
	first := capture.UDPDatagram(rtuEP, master, uns)
	r.mustForward(r.server(first), North, first)
	if d := r.decs[len(r.decs)-1]; d.Verdict.Action != rules.Allow {
		t.Fatalf("unsolicited response: %+v", d)
	}
	read := capture.UDPDatagram(master, rtuEP, dnp3Req(1, dnp3.FuncRead, 60, 1))
	r.mustForward(r.client(read), South, read)
	op := capture.UDPDatagram(master, rtuEP, dnp3Req(2, dnp3.FuncDirectOperate, 12, 1))
	if got := r.client(op); len(got) != 0 {
		t.Fatalf("direct operate from the master's port: got %s, want it denied", describe(got))
	}
	if ev := r.lastEvent(); ev.Reason != "function_not_allowed" {
		t.Fatalf("direct operate: reason %q, want function_not_allowed", ev.Reason)
	}
	odd := capture.UDPDatagram(rtuEP, capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:502")}, writeReq(1, 0, 258))
	if got := r.server(odd); len(got) != 0 {
		t.Fatalf("Modbus bytes from the outstation's port: got %s, want them refused", describe(got))
	}
}

// TestE01NoUnjudgedPrefix replays scenario e01 (a read and a forbidden
// write, each one byte per segment) through the engine and collects the
// payload bytes that reach the server: the read crosses whole once
// judged, and no byte of the write does (issue 13: the first 8 bytes of
// the denied write used to reach the server before it was judged).
func TestE01NoUnjudgedPrefix(t *testing.T) {
	const dir = "../simulate/scenarios/e01-one-byte-segments/"
	pol, err := rules.Load(dir + "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rs, func(c *Config) { c.IgnorePorts = true })
	var toServer []byte
	hmi := netip.MustParseAddr("192.0.2.130")
	err = capture.ReadFrames(dir+"input.pcap", func(fr *capture.Frame) error {
		var p packet.Packet
		if err := p.Decode(fr.Data, packet.LinkEthernet); err != nil {
			return err
		}
		in := South
		if p.Src == hmi {
			in = North
		}
		for _, s := range r.handle(in, fr.Data) {
			if s.out == South {
				toServer = append(toServer, decode(t, s.frame).payload...)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	read := []byte{0, 0x4b, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10} // tid 75 in the generated capture
	if !bytes.Equal(toServer, read) {
		t.Fatalf("server received %x, want only the read %x", toServer, read)
	}
}

// TestHeldPDUAllocatesNothing: a request split in two segments (the
// first held, the second releasing it in a crafted segment) and its
// response allocate nothing per exchange.
func TestHeldPDUAllocatesNothing(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) {
		c.Sink = events.Discard
		c.OnVerdict = nil
	})
	f := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(f)
	req, resp := readReq(1, 0, 10), readResp(1, make([]uint16, 10))
	cseq, sseq := f.NextSeq(true), f.NextSeq(false)
	// The engine rewrites a held segment in place (a pure ACK): each
	// step starts from pristine copies, copied without allocating.
	p1, p2 := f.Send(true, req[:5]), f.Send(true, req[5:])
	part1, part2 := make([]byte, len(p1)), make([]byte, len(p2))
	s := f.Send(false, resp)
	step := func() {
		copy(part1, p1)
		copy(part2, p2)
		binary.BigEndian.PutUint32(part1[tcpOff+4:], cseq)
		binary.BigEndian.PutUint32(part1[tcpOff+8:], sseq)
		r.e.Handle(North, part1, nopTx{})
		binary.BigEndian.PutUint32(part2[tcpOff+4:], cseq+5)
		binary.BigEndian.PutUint32(part2[tcpOff+8:], sseq)
		r.e.Handle(North, part2, nopTx{})
		cseq += uint32(len(req))
		binary.BigEndian.PutUint32(s[tcpOff+4:], sseq)
		binary.BigEndian.PutUint32(s[tcpOff+8:], cseq)
		r.e.Handle(South, s, nopTx{})
		sseq += uint32(len(resp))
	}
	for range 10 {
		step()
	}
	before := r.counters()
	if allocs := testing.AllocsPerRun(200, step); allocs != 0 {
		t.Fatalf("allocs per held exchange = %v, want 0", allocs)
	}
	c := r.counters()
	if c.Dropped() != 0 || c.HeldReleased-before.HeldReleased != 201 || c.PDUsAllowed-before.PDUsAllowed != 402 {
		t.Fatalf("exchanges did not pass: drops %v, released %d, allowed %d", c.DropsByName(), c.HeldReleased-before.HeldReleased, c.PDUsAllowed-before.PDUsAllowed)
	}
}

// TestTinyFragmentDenied: a first IP fragment too short to hold the TCP
// header (RFC 1858) is denied and reported as a fragment, not dropped
// silently as undecodable.
func TestTinyFragmentDenied(t *testing.T) {
	r, f := modbusRig(t, "drop")
	fr := f.Send(true, writeReq(1, 0, 258))
	const l3 = 14
	first := append([]byte(nil), fr[:l3+20+8]...) // IP header and 8 bytes of TCP
	ip := first[l3:]
	binary.BigEndian.PutUint16(ip[2:], 28)
	binary.BigEndian.PutUint16(ip[6:], 0x2000) // MF, offset 0
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip[:20])))
	first = append(first, make([]byte, 60-len(first))...)
	if got := r.client(first); len(got) != 0 {
		t.Fatalf("got %s, want the tiny fragment dropped", describe(got))
	}
	if ev := r.lastEvent(); ev.Reason != "fragment" || ev.Verdict != "deny" {
		t.Fatalf("event reason %q verdict %q, want fragment deny", ev.Reason, ev.Verdict)
	}
	if c := r.counters(); c.Drops[DropFragment] != 1 || c.Drops[DropDecode] != 0 {
		t.Fatalf("drops %v, want one fragment drop", c.DropsByName())
	}
}

// TestReceiverAmbiguities: segments a receiver may read differently from
// the parser are decided one way each (issue 13).
func TestReceiverAmbiguities(t *testing.T) {
	ackFl := capture.TCPFlags{ACK: true, PSH: true}
	t.Run("data on SYN is dropped", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		syn := f.Segment(true, 1000, 0, capture.TCPFlags{SYN: true}, writeReq(1, 0, 258))
		if got := r.client(syn); len(got) != 0 {
			t.Fatalf("got %s", describe(got))
		}
		if c := r.counters(); c.Drops[DropBadTCP] != 1 {
			t.Fatalf("drops %v", c.DropsByName())
		}
	})
	t.Run("simultaneous open is dropped", func(t *testing.T) {
		r := newRig(t, policy(t, "enforce", "drop", "", modbusConduit), nil)
		f := capture.NewTCPFlow(hmiEP, plcEP)
		hs := f.Handshake()
		r.mustForward(r.client(hs[0]), South, hs[0])
		ssyn := f.Segment(false, 5000, 0, capture.TCPFlags{SYN: true}, nil)
		if got := r.server(ssyn); len(got) != 0 {
			t.Fatalf("server SYN without ACK: got %s", describe(got))
		}
	})
	t.Run("data after FIN is dropped", func(t *testing.T) {
		r, f := modbusRig(t, "drop")
		seq, ack := f.NextSeq(true), f.NextSeq(false)
		q := readReq(1, 0, 1)
		fin := f.Segment(true, seq, ack, capture.TCPFlags{ACK: true, FIN: true}, q)
		r.mustForward(r.client(fin), South, fin)
		after := f.Segment(true, seq+uint32(len(q))+1, ack, ackFl, readReq(2, 0, 1))
		if got := r.client(after); len(got) != 0 {
			t.Fatalf("data after FIN: got %s", describe(got))
		}
	})
	t.Run("RST in window but not exact keeps the connection", func(t *testing.T) {
		r, f := modbusRig(t, "drop")
		seq, ack := f.NextSeq(true), f.NextSeq(false)
		rst := f.Segment(true, seq+5, ack, capture.TCPFlags{RST: true, ACK: true}, nil)
		r.mustForward(r.client(rst), South, rst) // the receiver answers with a challenge ACK
		q := f.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(q), South, q)
	})
	t.Run("RST at the receiver's next sequence number ends it", func(t *testing.T) {
		r, f := modbusRig(t, "drop")
		seq, ack := f.NextSeq(true), f.NextSeq(false)
		q := readReq(1, 0, 1)
		r.mustHold(r.client(f.Send(true, q[:5])), South, seq)
		// Held bytes did not cross: the receiver still expects seq.
		rst := f.Segment(true, seq, ack, capture.TCPFlags{RST: true, ACK: true}, nil)
		r.mustForward(r.client(rst), South, rst)
		if got := r.client(f.Send(true, q[5:])); len(got) != 0 {
			t.Fatalf("data after the reset: got %s", describe(got))
		}
	})
	t.Run("RST outside the window is dropped", func(t *testing.T) {
		r, f := modbusRig(t, "drop")
		rst := f.Segment(true, f.NextSeq(true)+1<<24, f.NextSeq(false), capture.TCPFlags{RST: true, ACK: true}, nil)
		if got := r.client(rst); len(got) != 0 {
			t.Fatalf("got %s", describe(got))
		}
	})
}

// TestDNP3UDPPlainRuleRefused: DNP3 over UDP crosses only through a dnp3
// rule. A plain udp rule that would let a flow to or from port 20000 (or
// Modbus 502) through refuses it with the named reason, whichever end
// holds the port.
func TestDNP3UDPPlainRuleRefused(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "drop", "", `  - name: rtu-to-hmi
    from: rtu
    to: hmi
    rules:
      - udp: {}
`), nil)
	hmi := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:20000")}
	for _, tc := range []struct {
		src  capture.Endpoint
		want string
	}{
		{rtuEP, NamedDNP3UDP}, // outstation port 20000 to the master's 20000
		{capture.Endpoint{MAC: rtuEP.MAC, Addr: netipAP("192.0.2.20:40000")}, NamedDNP3UDP},
		{capture.Endpoint{MAC: rtuEP.MAC, Addr: netipAP("192.0.2.20:502")}, NamedModbusUDP},
	} {
		dst := hmi
		if tc.src.Addr.Port() == 502 {
			dst = capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40001")}
		}
		if got := r.server(capture.UDPDatagram(tc.src, dst, []byte{0x05, 0x64})); len(got) != 0 {
			t.Fatalf("%v -> %v: got %s", tc.src.Addr, dst.Addr, describe(got))
		}
		if ev := r.lastEvent(); ev.Reason != tc.want {
			t.Fatalf("%v -> %v: reason %q, want %q", tc.src.Addr, dst.Addr, ev.Reason, tc.want)
		}
	}
	other := capture.UDPDatagram(capture.Endpoint{MAC: rtuEP.MAC, Addr: netipAP("192.0.2.20:514")}, capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:514")}, []byte("x"))
	r.mustForward(r.server(other), North, other)
}

// TestResetAfterDropVerdict: after a `drop` verdict the receiver's next
// expected sequence number is where the denied PDU starts; a reset there
// crosses and ends the connection.
func TestResetAfterDropVerdict(t *testing.T) {
	r, f := modbusRig(t, "drop")
	seq, ack := f.NextSeq(true), f.NextSeq(false)
	w := f.Send(true, writeReq(1, 0, 258))
	if got := r.client(w); len(got) != 0 {
		t.Fatalf("denied write: got %s", describe(got))
	}
	rst := f.Segment(true, seq, ack, capture.TCPFlags{RST: true, ACK: true}, nil)
	r.mustForward(r.client(rst), South, rst)
	if got := r.client(f.Send(true, readReq(2, 0, 1))); len(got) != 0 {
		t.Fatalf("data after the reset: got %s", describe(got))
	}
}
