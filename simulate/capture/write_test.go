package capture_test

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/otgw/otgw/simulate/capture"
)

// The frame builders and the pcap writer write gopacket's bytes (they
// replaced it in the otgw binary, issue 18): gopacket is kept as the
// reference, in tests only.

// gopacketFrame is the gopacket rendering the builders replaced.
func gopacketFrame(t *testing.T, src, dst capture.Endpoint, vlan uint16, tcp *layers.TCP, udp *layers.UDP, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src.MAC[:], DstMAC: dst.MAC[:], EthernetType: layers.EthernetTypeIPv4}
	var nl gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	proto := layers.IPProtocolTCP
	if udp != nil {
		proto = layers.IPProtocolUDP
	}
	if src.Addr.Addr().Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, Flags: layers.IPv4DontFragment,
			SrcIP: src.Addr.Addr().AsSlice(), DstIP: dst.Addr.Addr().AsSlice()}
		nl, ipl = ip, ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto,
			SrcIP: src.Addr.Addr().AsSlice(), DstIP: dst.Addr.Addr().AsSlice()}
		nl, ipl = ip, ip
	}
	ls := []gopacket.SerializableLayer{eth}
	if vlan != 0 {
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: vlan, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeDot1Q
	}
	ls = append(ls, ipl)
	if udp != nil {
		_ = udp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, udp)
	} else {
		_ = tcp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	if len(out) < 60 {
		out = append(out, make([]byte, 60-len(out))...)
	}
	return out
}

func randEndpoint(r *rand.Rand, v6 bool, n byte) capture.Endpoint {
	var a netip.Addr
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		b[0] = 0x20
		a = netip.AddrFrom16(b)
	} else {
		a = netip.AddrFrom4([4]byte{byte(r.UintN(256)), byte(r.UintN(256)), byte(r.UintN(256)), byte(r.UintN(256))})
	}
	return capture.Endpoint{MAC: capture.MAC(n), Addr: netip.AddrPortFrom(a, uint16(r.UintN(65536)))}
}

func TestFramesMatchGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 18))
	for i := range 3000 {
		v6 := i%2 == 1
		src, dst := randEndpoint(r, v6, 1), randEndpoint(r, v6, 2)
		payload := make([]byte, r.IntN(120))
		for j := range payload {
			payload[j] = byte(r.UintN(256))
		}
		if i%3 == 0 {
			want := gopacketFrame(t, src, dst, 0, nil, &layers.UDP{SrcPort: layers.UDPPort(src.Addr.Port()), DstPort: layers.UDPPort(dst.Addr.Port())}, payload)
			if got := capture.UDPDatagram(src, dst, payload); !bytes.Equal(got, want) {
				t.Fatalf("UDP %v -> %v, %d bytes:\n got %x\nwant %x", src.Addr, dst.Addr, len(payload), got, want)
			}
			continue
		}
		f := capture.NewTCPFlow(src, dst)
		if i%5 == 0 {
			f.VLAN = uint16(r.UintN(4095) + 1)
		}
		fl := capture.TCPFlags{SYN: r.IntN(2) == 0, ACK: r.IntN(2) == 0, PSH: r.IntN(2) == 0, FIN: r.IntN(2) == 0, RST: r.IntN(2) == 0}
		seq, ack := r.Uint32(), r.Uint32()
		fromClient := r.IntN(2) == 0
		s, d := src, dst
		if !fromClient {
			s, d = dst, src
		}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.Addr.Port()), DstPort: layers.TCPPort(d.Addr.Port()),
			Seq: seq, Ack: ack, SYN: fl.SYN, ACK: fl.ACK, PSH: fl.PSH, FIN: fl.FIN, RST: fl.RST, Window: 64240}
		want := gopacketFrame(t, s, d, f.VLAN, tcp, nil, payload)
		if got := f.Segment(fromClient, seq, ack, fl, payload); !bytes.Equal(got, want) {
			t.Fatalf("TCP %v -> %v vlan %d, %d bytes:\n got %x\nwant %x", s.Addr, d.Addr, f.VLAN, len(payload), got, want)
		}
	}
}

func TestTCPPacketMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 18))
	opts := []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 14}
	for i := range 1000 {
		v6 := i%2 == 1
		src, dst := randEndpoint(r, v6, 1).Addr, randEndpoint(r, v6, 2).Addr
		tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
			Seq: r.Uint32(), Ack: r.Uint32(), SYN: i%4 == 0, ACK: i%3 != 0, Window: 65535}
		var o []byte
		if tcp.SYN {
			o = opts
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{14}},
			}
		}
		var nl gopacket.NetworkLayer
		var ipl gopacket.SerializableLayer
		if !v6 {
			ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
				SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
			nl, ipl = ip, ip
		} else {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
				SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
			nl, ipl = ip, ip
		}
		_ = tcp.SetNetworkLayerForChecksum(nl)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ipl, tcp); err != nil {
			t.Fatal(err)
		}
		fl := capture.TCPFlags{SYN: tcp.SYN, ACK: tcp.ACK}
		if got := capture.TCPPacket(src, dst, tcp.Seq, tcp.Ack, fl, 65535, o, nil); !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("%v -> %v:\n got %x\nwant %x", src, dst, got, buf.Bytes())
		}
	}
	if p := capture.TCPPacket(netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:2"), 1, 0, capture.TCPFlags{SYN: true}, 1, nil, nil); p != nil {
		t.Errorf("TCPPacket across address families = %x, want nil", p)
	}
}

func TestPcapWriterMatchesPcapgo(t *testing.T) {
	var got, want bytes.Buffer
	pw, err := capture.NewPcapWriter(&got)
	if err != nil {
		t.Fatal(err)
	}
	gw := pcapgo.NewWriter(&want)
	if err := gw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.UTC)
	for i, n := range []int{60, 1514, 0, 9000} {
		frame := bytes.Repeat([]byte{byte(i + 1)}, n)
		at := ts.Add(time.Duration(i) * 1234567 * time.Nanosecond)
		if err := pw.WritePacket(at, frame); err != nil {
			t.Fatal(err)
		}
		if err := gw.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: n, Length: n}, frame); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("pcap bytes differ from pcapgo's:\n got %x\nwant %x", got.Bytes(), want.Bytes())
	}
}
