package packet_test

import (
	"net/netip"
	"testing"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/simulate/capture"
)

var (
	cli = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	srv = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
)

func TestDecodeTCPWithVLAN(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	f.VLAN = 7
	f.Handshake()
	b := f.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1})
	var p packet.Packet
	if err := p.Decode(b, packet.LinkEthernet); err != nil {
		t.Fatal(err)
	}
	if p.NVLANs != 1 || p.VLANs[0] != 7 {
		t.Errorf("vlan: got %d %v, want 7", p.NVLANs, p.VLANs)
	}
	if p.SrcAddrPort() != cli.Addr || p.DstAddrPort() != srv.Addr {
		t.Errorf("addrs: got %v -> %v", p.SrcAddrPort(), p.DstAddrPort())
	}
	if p.Proto != packet.ProtoTCP || len(p.Payload) != 12 || p.Flags&packet.TCPPsh == 0 {
		t.Errorf("tcp: proto %d payload %d flags %#x", p.Proto, len(p.Payload), p.Flags)
	}
}

func TestDecodePaddingIsNotPayload(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	b := f.Handshake()[2] // pure ACK, padded to 60 bytes
	var p packet.Packet
	if err := p.Decode(b, packet.LinkEthernet); err != nil {
		t.Fatal(err)
	}
	if len(p.Payload) != 0 {
		t.Errorf("payload: got %d bytes of padding, want 0", len(p.Payload))
	}
}

func TestDecodeTruncatedNeverPanics(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	b := f.Send(true, []byte("payload"))
	var p packet.Packet
	for n := range len(b) {
		_ = p.Decode(b[:n], packet.LinkEthernet)
	}
	for _, lt := range []packet.LinkType{packet.LinkNull, packet.LinkRaw, packet.LinkSLL, packet.LinkSLL2, 999} {
		for n := range min(64, len(b)) {
			_ = p.Decode(b[:n], lt)
		}
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	b := f.Send(true, []byte("payload"))
	var p packet.Packet
	if n := testing.AllocsPerRun(100, func() { _ = p.Decode(b, packet.LinkEthernet) }); n != 0 {
		t.Errorf("Decode allocates %v times per frame, want 0", n)
	}
}

func FuzzDecode(f *testing.F) {
	fl := capture.NewTCPFlow(cli, srv)
	for _, b := range fl.Handshake() {
		f.Add(b, uint16(packet.LinkEthernet))
	}
	f.Add(fl.Send(true, []byte("seed")), uint16(packet.LinkEthernet))
	f.Add([]byte{2, 0, 0, 0, 0x45, 0, 0, 20}, uint16(packet.LinkNull))
	f.Fuzz(func(t *testing.T, b []byte, lt uint16) {
		var p packet.Packet
		err := p.Decode(b, packet.LinkType(lt))
		if err == nil && len(p.Payload) > len(b) {
			t.Fatalf("payload %d longer than frame %d", len(p.Payload), len(b))
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	f := capture.NewTCPFlow(cli, srv)
	frame := f.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1})
	var p packet.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		_ = p.Decode(frame, packet.LinkEthernet)
	}
}
