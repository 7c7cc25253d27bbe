package gateway

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

const dnp3Conduit = `  - name: scada-rtu
    from: hmi
    to: rtu
    rules:
      - dnp3:
          masters: [1]
          outstations: [10]
          allow:
            - function: read
              objects: [g60]
`

// dnp3Req builds the link frames of a master (1) request to outstation 10.
func dnp3Req(seq uint8, fc dnp3.FunctionCode, group, variation uint8) []byte {
	apdu := dnp3.AppendRequestHeader(nil, seq, fc)
	apdu = dnp3.AppendAllHeader(apdu, group, variation)
	return dnp3.AppendLinkFrames(nil, dnp3.CtrlDIR|dnp3.CtrlPRM|0x04, 10, 1, apdu)
}

func dnp3Resp(seq uint8) []byte {
	apdu := dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)
	return dnp3.AppendLinkFrames(nil, dnp3.CtrlPRM|0x04, 1, 10, apdu)
}

// checkDNP3Reply decodes a crafted DNP3 response: CRCs, link addresses,
// application sequence and IIN2.
func checkDNP3Reply(t *testing.T, b []byte, seq uint8, iin2 uint8) {
	t.Helper()
	n, _, err := dnp3.Framer{}.Next(b)
	if err != nil || n != len(b) {
		t.Fatalf("reply %x: frame n=%d err=%v", b, n, err)
	}
	var lf dnp3.LinkFrame
	if err := lf.Decode(b); err != nil {
		t.Fatalf("reply link frame: %v", err)
	}
	if lf.Src != 10 || lf.Dst != 1 || lf.FromMaster() {
		t.Fatalf("reply link %d->%d master=%v, want 10->1 from the outstation", lf.Src, lf.Dst, lf.FromMaster())
	}
	var r dnp3.Reassembler
	frag, an := r.Add(lf.UserData())
	if frag == nil || an != dnp3.AnomalyNone {
		t.Fatalf("reply transport: %v", an)
	}
	var fr dnp3.Fragment
	if err := fr.Decode(frag, false); err != nil {
		t.Fatalf("reply fragment: %v", err)
	}
	if fr.Func != dnp3.FuncResponse || fr.Seq() != seq || uint8(fr.IIN) != iin2 {
		t.Fatalf("reply fc=%v seq=%d iin=%#04x, want response seq=%d iin2=%#02x", fr.Func, fr.Seq(), fr.IIN, seq, iin2)
	}
}

func TestDNP3OverTCP(t *testing.T) {
	tests := []struct {
		name  string
		req   []byte
		allow bool
		iin2  uint8
	}{
		{"read class data allowed", dnp3Req(3, dnp3.FuncRead, 60, 2), true, 0},
		{"operate denied: function", dnp3Req(3, dnp3.FuncDirectOperate, 12, 1), false, dnp3.IINNoFuncCodeSupport},
		{"read g1 denied: object", dnp3Req(3, dnp3.FuncRead, 1, 0), false, dnp3.IINObjectUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reply", "", dnp3Conduit), nil)
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40100")}, rtuEP)
			r.handshake(f)
			req := f.Send(true, tc.req)
			got := r.client(req)
			if tc.allow {
				r.mustForward(got, South, req)
				resp := f.Send(false, dnp3Resp(3))
				r.mustForward(r.server(resp), North, resp)
				if c := r.counters(); c.PDUsAllowed != 2 {
					t.Fatalf("allowed %d, want request and paired response", c.PDUsAllowed)
				}
				return
			}
			if len(got) != 3 || got[0].out != North {
				t.Fatalf("got %s, want reply + 2 RSTs", describe(got))
			}
			checkDNP3Reply(t, decode(t, got[0].frame).payload, 3, tc.iin2)
		})
	}
}

func TestDNP3OverUDP(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reply", "", dnp3Conduit), nil)
	master := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:20000")}
	ok := capture.UDPDatagram(master, rtuEP, dnp3Req(1, dnp3.FuncRead, 60, 1))
	r.mustForward(r.client(ok), South, ok)
	resp := capture.UDPDatagram(rtuEP, master, dnp3Resp(1))
	r.mustForward(r.server(resp), North, resp)

	bad := capture.UDPDatagram(master, rtuEP, dnp3Req(2, dnp3.FuncColdRestart, 60, 1))
	got := r.client(bad)
	if len(got) != 1 || got[0].out != North {
		t.Fatalf("got %s, want one UDP reply to the master", describe(got))
	}
	d := decode(t, got[0].frame)
	if d.pkt.Proto != packet.ProtoUDP || d.pkt.SrcAddrPort() != rtuEP.Addr || d.pkt.DstAddrPort() != master.Addr {
		t.Fatalf("reply %s>%s proto %d", d.pkt.SrcAddrPort(), d.pkt.DstAddrPort(), d.pkt.Proto)
	}
	checkDNP3Reply(t, d.payload, 2, dnp3.IINNoFuncCodeSupport)
	// The flow stays: the next allowed poll passes.
	ok2 := capture.UDPDatagram(master, rtuEP, dnp3Req(3, dnp3.FuncRead, 60, 1))
	r.mustForward(r.client(ok2), South, ok2)
}

const opcuaConduit = `  - name: hmi-ua
    from: hmi
    to: ua
    rules:
      - opcua:
          min_security_mode: none
          allow:
            - service: read
`

func TestOPCUAServiceDenied(t *testing.T) {
	for _, action := range []string{"reset", "reply"} {
		t.Run(action, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", action, "", opcuaConduit), nil)
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40200")}, uaEP)
			r.handshake(f)
			hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
			h := opcua.SecureHeader{ChannelID: 0, SequenceNumber: 1, RequestID: 1}
			steps := []struct {
				client bool
				b      []byte
			}{
				{true, opcua.AppendHello(nil, hello)},
				{false, opcua.AppendAcknowledge(nil, hello)},
				{true, opcua.AppendOpenRequest(nil, h, opcua.ModeNone)},
				{false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)},
				{true, opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2},
					opcua.AppendReadRequest(nil, 2, opcua.StringID(2, "Line1.Speed")))},
			}
			for i, s := range steps {
				fr := f.Send(s.client, s.b)
				out, got := South, r.handle(North, fr)
				if !s.client {
					out, got = North, r.handle(South, fr)
				}
				if len(got) != 1 {
					t.Fatalf("step %d: got %s (%v)", i, describe(got), r.counters().DropsByName())
				}
				r.mustForward(got, out, fr)
			}
			write := opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3},
				opcua.AppendWriteRequest(nil, 3, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Setpoint"), Value: 1}))
			got := r.client(f.Send(true, write))
			want := 2
			if action == "reply" {
				want = 3 // ERR in mode None, then the resets
			}
			if len(got) != want {
				t.Fatalf("got %s, want %d frames", describe(got), want)
			}
			if action == "reply" {
				d := decode(t, got[0].frame)
				var m opcua.Message
				if err := m.Decode(d.payload); err != nil || m.Type != opcua.TypeERR || m.ErrorCode != opcua.StatusBadServiceUnsupported {
					t.Fatalf("reply %x: type %v code %#x err %v, want ERR Bad_ServiceUnsupported", d.payload, m.Type, m.ErrorCode, err)
				}
			}
			for _, s := range got[want-2:] {
				if decode(t, s.frame).pkt.Flags&packet.TCPRst == 0 {
					t.Fatalf("got %s, want RSTs last", describe(got))
				}
			}
			if ev := r.lastEvent(); ev.Reason != "service_not_allowed" || ev.Proto != "opcua" {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}

func arpFrame(t *testing.T) []byte {
	eth := &layers.Ethernet{SrcMAC: hmiEP.MAC[:], DstMAC: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: hmiEP.MAC[:], SourceProtAddress: netip.MustParseAddr("192.0.2.130").AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: netip.MustParseAddr("192.0.2.10").AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestARPByL2Policy(t *testing.T) {
	tests := []struct {
		name    string
		l2      string
		forward bool
	}{
		{"allowed", "l2: { allow: [arp] }", true},
		{"not listed", "", false},
		{"only lldp", "l2: { allow: [lldp] }", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "drop", tc.l2, modbusConduit), nil)
			fr := arpFrame(t)
			got := r.client(fr)
			if tc.forward {
				r.mustForward(got, South, fr)
				return
			}
			if len(got) != 0 {
				t.Fatalf("got %s", describe(got))
			}
			if c := r.counters(); c.Drops[DropL2Policy] != 1 {
				t.Fatalf("l2 drops %d", c.Drops[DropL2Policy])
			}
			if ev := r.lastEvent(); ev.Reason != "l2_not_allowed" {
				t.Fatalf("reason %q", ev.Reason)
			}
		})
	}
}

func TestFlowTableFloodKeepsEstablishedFlows(t *testing.T) {
	const maxFlows = 64
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.MaxFlows = maxFlows })
	r.e.tab.half.limit = 1 << 30 // the table's eviction order alone (TestSYNFloodPerSourceLimit: the limit)
	var live []*capture.TCPFlow
	for i := range 16 {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(41000+i))}
		f := capture.NewTCPFlow(cl, plcEP)
		r.handshake(f)
		req := f.Send(true, readReq(1, 0, 1))
		r.mustForward(r.client(req), South, req)
		resp := f.Send(false, readResp(1, []uint16{1}))
		r.mustForward(r.server(resp), North, resp)
		live = append(live, f)
	}
	// A SYN flood from the allowed client on 5,000 source ports.
	for i := range 5000 {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(50000+i%15000))}
		f := capture.NewTCPFlow(cl, plcEP)
		r.e.Handle(North, f.Handshake()[0], TxFunc(func(PortID, []byte) {}))
	}
	for i, f := range live {
		req := f.Send(true, readReq(2, 0, 1))
		got := r.client(req)
		if len(got) != 1 {
			t.Fatalf("established flow %d after the flood: got %s (%v)", i, describe(got), r.counters().DropsByName())
		}
	}
	c := r.counters()
	if c.EstablishedEvicted != 0 || c.FlowsEvicted == 0 || c.FlowsActive > maxFlows {
		t.Fatalf("evicted=%d established evicted=%d active=%d", c.FlowsEvicted, c.EstablishedEvicted, c.FlowsActive)
	}
	if c.FlowsEstablished != len(live) {
		t.Fatalf("established %d, want %d", c.FlowsEstablished, len(live))
	}
}

func TestFlowTableFullOfEstablishedRefusesNewFlows(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.MaxFlows = 4 })
	for i := range 4 {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(41000+i))}
		r.handshake(capture.NewTCPFlow(cl, plcEP))
	}
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:42000")}, plcEP)
	if got := r.client(f.Handshake()[0]); len(got) != 0 {
		t.Fatalf("got %s", describe(got))
	}
	if c := r.counters(); c.Drops[DropTableFull] != 1 || c.EstablishedEvicted != 0 {
		t.Fatalf("table_full=%d established evicted=%d", c.Drops[DropTableFull], c.EstablishedEvicted)
	}
	// Once the established flows are idle long enough, the oldest makes room.
	r.now = r.now.Add(time.Minute)
	if got := r.client(f.Handshake()[0]); len(got) != 1 {
		t.Fatalf("after idle: got %s", describe(got))
	}
}

func TestExpireRemovesIdleFlows(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	f := capture.NewTCPFlow(hmiEP, plcEP)
	syn := f.Handshake()[0]
	r.mustForward(r.client(syn), South, syn)
	if n := r.e.Expire(r.now.Add(time.Second)); n != 0 {
		t.Fatalf("expired %d fresh flows", n)
	}
	if n := r.e.Expire(r.now.Add(time.Minute)); n != 1 {
		t.Fatalf("expired %d half-open flows after a minute, want 1", n)
	}
	if c := r.counters(); c.FlowsActive != 0 || c.FlowsExpired != 1 {
		t.Fatalf("active=%d expired=%d", c.FlowsActive, c.FlowsExpired)
	}
}

func TestNoRulesetFailsClosed(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "l2: { allow: [arp] }", modbusConduit), nil)
	r.rs.Store(nil)
	if got := r.client(arpFrame(t)); len(got) != 0 {
		t.Fatalf("got %s", describe(got))
	}
	if c := r.counters(); c.Drops[DropNoPolicy] != 1 {
		t.Fatalf("no_policy drops %d", c.Drops[DropNoPolicy])
	}
}
