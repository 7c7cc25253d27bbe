package gateway

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

const icmpConduit = `  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - icmp: {}
      - udp: { ports: [161] }
`

// policy6 is policy with IPv6 zones (2001:db8::/32, RFC 3849).
func policy6(t testing.TB, conduits string) *rules.Ruleset {
	t.Helper()
	src := `version: 1
name: test6
mode: enforce
action: drop
zones:
  sup:  { port: north, networks: ["2001:db8:1::/64"] }
  cell: { port: south, networks: ["2001:db8:2::/64"] }
assets:
  hmi: { ip: "2001:db8:1::130", zone: sup }
  plc: { ip: "2001:db8:2::10", zone: cell }
conduits:
` + conduits
	p, err := rules.Parse("test6.yaml", []byte(src))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return rs
}

var (
	hmi6EP = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("[2001:db8:1::130]:40000")}
	plc6EP = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("[2001:db8:2::10]:161")}
	snmpEP = capture.Endpoint{MAC: plcEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.10:161")}
)

// icmpFrame builds an Ethernet frame carrying an ICMP (IPv4 endpoints) or
// ICMPv6 message. For echo types id and seq are the identifier and
// sequence number; for errors body is the quoted packet.
func icmpFrame(t testing.TB, src, dst capture.Endpoint, typ uint8, id, seq uint16, body []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src.MAC[:], DstMAC: dst.MAC[:]}
	var ls []gopacket.SerializableLayer
	if src.Addr.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4,
			SrcIP: src.Addr.Addr().AsSlice(), DstIP: dst.Addr.Addr().AsSlice()}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: seq}
		ls = []gopacket.SerializableLayer{eth, ip, ic, gopacket.Payload(body)}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 64,
			SrcIP: src.Addr.Addr().AsSlice(), DstIP: dst.Addr.Addr().AsSlice()}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
		_ = ic.SetNetworkLayerForChecksum(ip)
		rest := []byte{byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
		ls = []gopacket.SerializableLayer{eth, ip, ic, gopacket.Payload(append(rest, body...))}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func echoTypes(ep capture.Endpoint) (req, reply uint8) {
	if ep.Addr.Addr().Is4() {
		return icmp4Echo, icmp4EchoReply
	}
	return icmp6Echo, icmp6EchoReply
}

// TestICMPEchoReplyRidesRequestFlow: a ping through an allowed icmp
// conduit gets its replies through (they belong to the request's flow),
// while replies nobody asked for are still judged on their own and denied.
func TestICMPEchoReplyRidesRequestFlow(t *testing.T) {
	tests := []struct {
		name     string
		rs       func(t *testing.T) *rules.Ruleset
		cli, srv capture.Endpoint
	}{
		{"ipv4", func(t *testing.T) *rules.Ruleset { return policy(t, "enforce", "drop", "", icmpConduit) }, hmiEP, plcEP},
		{"ipv6", func(t *testing.T) *rules.Ruleset { return policy6(t, icmpConduit) }, hmi6EP, plc6EP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.rs(t), nil)
			reqT, repT := echoTypes(tc.cli)
			req := func(id, seq uint16) []byte { return icmpFrame(t, tc.cli, tc.srv, reqT, id, seq, []byte("ping")) }
			rep := func(id, seq uint16) []byte { return icmpFrame(t, tc.srv, tc.cli, repT, id, seq, []byte("ping")) }
			denied := func(step string, fr []byte) {
				t.Helper()
				if got := r.server(fr); len(got) != 0 {
					t.Fatalf("%s: got %s, want it denied", step, describe(got))
				}
				if d := r.decs[len(r.decs)-1]; d.Verdict.Action != rules.Deny || d.Verdict.Reason != rules.ReasonNoConduit {
					t.Fatalf("%s: decision %v/%v, want deny no_conduit", step, d.Verdict.Action, d.Verdict.Reason)
				}
			}

			denied("reply before any request", rep(7, 1))
			for seq := uint16(1); seq <= 3; seq++ {
				fr := req(7, seq)
				r.mustForward(r.client(fr), South, fr)
			}
			for _, seq := range []uint16{3, 1, 2} { // out of order is fine
				fr := rep(7, seq)
				r.mustForward(r.server(fr), North, fr)
			}
			denied("duplicate reply", rep(7, 2))
			denied("reply to a sequence number never sent", rep(7, 4))
			denied("reply with another identifier", rep(8, 1))
			// A request from the server side with the same identifier is
			// not the client's flow.
			denied("server's own request", icmpFrame(t, tc.srv, tc.cli, reqT, 7, 9, nil))

			fr := req(7, 10)
			r.mustForward(r.client(fr), South, fr)
			r.now = r.now.Add(3 * time.Minute) // beyond the 2 min idle timeout
			denied("reply after the flow expired", rep(7, 10))
			if c := r.counters(); c.Drops[DropFlowDenied] != 6 {
				t.Fatalf("flow_denied drops %d, want 6", c.Drops[DropFlowDenied])
			}
		})
	}
}

func TestEchoSequenceWindow(t *testing.T) {
	tests := []struct {
		name  string
		sent  []uint16
		reply uint16
		want  bool
	}{
		{"answered", []uint16{5}, 5, true},
		{"not sent", []uint16{5}, 6, false},
		{"older in window", []uint16{1, 2, 3, 60}, 2, true},
		{"older than the window", []uint16{1, 100}, 1, false},
		{"late request in window", []uint16{10, 8}, 8, true},
		{"wraps around", []uint16{65534, 65535, 0, 1}, 65535, true},
		{"wrapped not sent", []uint16{65535, 1}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f flow
			for _, s := range tc.sent {
				f.echoSent(s)
			}
			if got := f.echoAnswered(tc.reply); got != tc.want {
				t.Fatalf("echoAnswered(%d) after %v = %v, want %v", tc.reply, tc.sent, got, tc.want)
			}
			if tc.want && f.echoAnswered(tc.reply) {
				t.Fatalf("second reply %d answered again", tc.reply)
			}
		})
	}
}

// TestICMPErrorRelatedToAllowedFlow: a port unreachable or time exceeded
// about a packet of an allowed flow goes back to that packet's sender;
// errors about unknown flows, or sent to someone else, are judged alone.
func TestICMPErrorRelatedToAllowedFlow(t *testing.T) {
	other := capture.Endpoint{MAC: capture.MAC(9), Addr: netip.MustParseAddrPort("192.0.2.140:40000")}
	udp := capture.UDPDatagram(hmiEP, snmpEP, []byte("get"))
	quote := func(fr []byte) []byte { return fr[14 : 14+20+8] } // IPv4 header and 8 bytes of L4
	echoReq := icmpFrame(t, hmiEP, plcEP, icmp4Echo, 3, 1, []byte("abcdefgh"))
	unknown := capture.UDPDatagram(hmiEP, capture.Endpoint{MAC: plcEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.10:162")}, []byte("x"))
	tests := []struct {
		name    string
		to      capture.Endpoint
		typ     uint8
		quoted  []byte
		forward bool
	}{
		{"port unreachable about allowed udp", hmiEP, icmp4Unreachable, quote(udp), true},
		{"time exceeded about allowed echo", hmiEP, icmp4TimeExceeded, quote(echoReq), true},
		{"unreachable about a flow never seen", hmiEP, icmp4Unreachable, quote(unknown), false},
		{"unreachable sent to a third host", other, icmp4Unreachable, quote(udp), false},
		{"redirect is never related", hmiEP, 5, quote(udp), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "drop", "", icmpConduit), nil)
			r.mustForward(r.client(udp), South, udp)
			r.mustForward(r.client(echoReq), South, echoReq)
			fr := icmpFrame(t, plcEP, tc.to, tc.typ, 0, 0, tc.quoted)
			got := r.server(fr)
			if tc.forward {
				r.mustForward(got, North, fr)
				return
			}
			if len(got) != 0 {
				t.Fatalf("got %s, want it denied", describe(got))
			}
		})
	}
}

// TestICMPEchoAllocatesNothing: an allowed ping and its reply, with the
// OnVerdict hook set, allocate nothing in steady state.
func TestICMPEchoAllocatesNothing(t *testing.T) {
	n := 0
	r := newRig(t, policy(t, "enforce", "drop", "", icmpConduit), func(c *Config) {
		c.Sink = nil
		c.OnVerdict = func(d *Decision) { n += int(d.Verdict.Action) }
	})
	req := icmpFrame(t, hmiEP, plcEP, icmp4Echo, 5, 0, []byte("ping"))
	rep := icmpFrame(t, plcEP, hmiEP, icmp4EchoReply, 5, 0, []byte("ping"))
	const seqOff = 14 + 20 + 6 // the engine does not verify checksums
	cnt := 0
	tx := TxFunc(func(PortID, []byte) { cnt++ })
	seq := uint16(0)
	allocs := testing.AllocsPerRun(200, func() {
		seq++
		req[seqOff], req[seqOff+1] = byte(seq>>8), byte(seq)
		rep[seqOff], rep[seqOff+1] = byte(seq>>8), byte(seq)
		r.e.Handle(North, req, tx)
		r.e.Handle(South, rep, tx)
	})
	if allocs != 0 {
		t.Fatalf("allocs per ping = %v, want 0", allocs)
	}
	if want := 2 * 201; cnt != want {
		t.Fatalf("forwarded %d frames, want %d (every request and reply)", cnt, want)
	}
}
