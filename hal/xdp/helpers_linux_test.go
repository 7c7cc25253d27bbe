package xdp

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

var (
	cliMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	srvMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// frameSpec describes a test frame; zero fields take defaults.
type frameSpec struct {
	key      Key
	tcpFlags string // any of "SFRAP"; TCP only
	payload  int
	vlan     bool
	fragment bool // IPv4: MF set; IPv6: a fragment extension header
	ihl      int  // IPv4 header length in 32-bit words (options), 0 = 5
}

// frame serialises f with valid lengths and checksums (gopacket).
func frame(t testing.TB, f frameSpec) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: cliMAC, DstMAC: srvMAC}
	ls = append(ls, eth)
	etype := layers.EthernetTypeIPv4
	src, dst := f.key.Src.Addr().Unmap(), f.key.Dst.Addr().Unmap()
	if src.Is6() {
		etype = layers.EthernetTypeIPv6
	}
	if f.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 7, Type: etype})
	} else {
		eth.EthernetType = etype
	}
	var netLayer gopacket.NetworkLayer
	proto := layers.IPProtocol(f.key.Proto)
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		if f.fragment {
			ip.Flags = layers.IPv4MoreFragments
		}
		if f.ihl > 5 {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}
			for i := 6; i < f.ihl; i++ {
				ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1}, layers.IPv4Option{OptionType: 1},
					layers.IPv4Option{OptionType: 1}, layers.IPv4Option{OptionType: 1})
			}
		}
		ls, netLayer = append(ls, ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ls, netLayer = append(ls, ip), ip
		if f.fragment {
			ip.NextHeader = layers.IPProtocolIPv6Fragment
			ls = append(ls, &layers.IPv6Fragment{NextHeader: proto, MoreFragments: true, Identification: 1})
		}
	}
	switch f.key.Proto {
	case ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.key.Src.Port()), DstPort: layers.TCPPort(f.key.Dst.Port()),
			Seq: 1000, Ack: 1, Window: 1000}
		for _, c := range f.tcpFlags {
			switch c {
			case 'S':
				tcp.SYN = true
			case 'F':
				tcp.FIN = true
			case 'R':
				tcp.RST = true
			case 'A':
				tcp.ACK = true
			case 'P':
				tcp.PSH = true
			}
		}
		_ = tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tcp)
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.key.Src.Port()), DstPort: layers.UDPPort(f.key.Dst.Port())}
		_ = udp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(make([]byte, f.payload)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// line builds netns.NewLine with what a transparent forwarder between
// the gateway's ports needs from the endpoints when nothing in the
// gateway answers ARP or completes checksums: static neighbours (fixed
// MACs), transmit checksumming off (an XDP redirect carries no
// CHECKSUM_PARTIAL state: the frame must be complete, as on a wire),
// IPv6 off (no stray neighbour discovery), and GRO on, which gives a veth
// the NAPI context that a native-mode redirect to its peer needs
// (drivers/net/veth.c, veth_xdp_xmit).
func line(t *testing.T) *netns.Line {
	t.Helper()
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	for _, p := range []struct {
		ns       *netns.NS
		mac      net.HardwareAddr
		peer     string
		peerMAC  net.HardwareAddr
		gwPort   string
		peerAddr string
	}{
		{l.Client, cliMAC, l.ServerAddr, srvMAC, l.North, ""},
		{l.Server, srvMAC, l.ClientAddr, cliMAC, l.South, ""},
	} {
		p.ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
		p.ns.IP("link", "set", "eth0", "address", p.mac.String())
		p.ns.IP("neigh", "replace", p.peer, "lladdr", p.peerMAC.String(), "dev", "eth0", "nud", "permanent")
		peerFeatures(t, p.ns, "eth0")
	}
	l.Gateway.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	return l
}

func peerFeatures(t *testing.T, ns *netns.NS, dev string) {
	t.Helper()
	err := ns.Do(func() error {
		have, err := hal.Features(dev)
		if err != nil {
			return err
		}
		want := map[string]bool{"rx-gro": true}
		for _, f := range []string{"tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
			"tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation", "tx-tcp-ecn-segmentation",
			"tx-tcp-mangleid-segmentation"} {
			if _, ok := have[f]; ok {
				want[f] = false
			}
		}
		return hal.SetFeatures(dev, want)
	})
	if err != nil {
		t.Fatalf("features of %s in %s: %v", dev, ns.Name, err)
	}
}

// newBypass opens a Bypass on the line's gateway ports.
func newBypass(t *testing.T, l *netns.Line, cfg Config) *Bypass {
	t.Helper()
	cfg.North, cfg.South = l.North, l.South
	var b *Bypass
	if err := l.Gateway.Do(func() (err error) { b, err = New(cfg); return err }); err != nil {
		t.Fatalf("xdp.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
