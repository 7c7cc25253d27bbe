package capture

import (
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Writer writes Ethernet frames to a classic pcap file. It is what the
// project's generators use to make testdata and scenario captures.
type Writer struct {
	w    *pcapgo.Writer
	Time time.Time     // timestamp of the next frame
	Step time.Duration // added after each frame (default 1ms)
}

// NewWriter writes the pcap file header to w.
func NewWriter(w io.Writer) (*Writer, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return &Writer{w: pw, Time: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC), Step: time.Millisecond}, nil
}

// WriteFrame writes one frame at w.Time and advances the clock.
func (w *Writer) WriteFrame(frame []byte) error {
	ci := gopacket.CaptureInfo{Timestamp: w.Time, CaptureLength: len(frame), Length: len(frame)}
	w.Time = w.Time.Add(w.Step)
	return w.w.WritePacket(ci, frame)
}

// Endpoint is one host of a generated conversation.
type Endpoint struct {
	MAC  [6]byte
	Addr netip.AddrPort
}

// TCPFlow builds the frames of one TCP connection with correct sequence
// and acknowledgement numbers, for generators. The zero value is not
// usable; set Client and Server.
type TCPFlow struct {
	Client, Server Endpoint
	cseq, sseq     uint32
	VLAN           uint16 // 0 = untagged
}

// NewTCPFlow returns a flow with fixed initial sequence numbers so that
// generated captures are reproducible.
func NewTCPFlow(client, server Endpoint) *TCPFlow {
	return &TCPFlow{Client: client, Server: server, cseq: 1000, sseq: 50000}
}

// Handshake returns SYN, SYN-ACK, ACK.
func (f *TCPFlow) Handshake() [][]byte {
	syn := f.Segment(true, f.cseq, 0, TCPFlags{SYN: true}, nil)
	f.cseq++
	synack := f.Segment(false, f.sseq, f.cseq, TCPFlags{SYN: true, ACK: true}, nil)
	f.sseq++
	ack := f.Segment(true, f.cseq, f.sseq, TCPFlags{ACK: true}, nil)
	return [][]byte{syn, synack, ack}
}

// Send returns one data segment (PSH|ACK) and advances the sender's
// sequence number.
func (f *TCPFlow) Send(fromClient bool, payload []byte) []byte {
	if fromClient {
		b := f.Segment(true, f.cseq, f.sseq, TCPFlags{PSH: true, ACK: true}, payload)
		f.cseq += uint32(len(payload))
		return b
	}
	b := f.Segment(false, f.sseq, f.cseq, TCPFlags{PSH: true, ACK: true}, payload)
	f.sseq += uint32(len(payload))
	return b
}

// NextSeq returns the next sequence number of one side (for crafting
// retransmissions and out-of-order segments).
func (f *TCPFlow) NextSeq(fromClient bool) uint32 {
	if fromClient {
		return f.cseq
	}
	return f.sseq
}

// Advance moves one side's sequence number as if n bytes had been sent.
func (f *TCPFlow) Advance(fromClient bool, n int) {
	if fromClient {
		f.cseq += uint32(n)
	} else {
		f.sseq += uint32(n)
	}
}

// TCPFlags selects the flags of a crafted segment.
type TCPFlags struct{ SYN, ACK, PSH, FIN, RST bool }

// Segment crafts any segment of the flow with explicit numbers.
func (f *TCPFlow) Segment(fromClient bool, seq, ack uint32, fl TCPFlags, payload []byte) []byte {
	src, dst := f.Client, f.Server
	if !fromClient {
		src, dst = dst, src
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Addr.Port()), DstPort: layers.TCPPort(dst.Addr.Port()),
		Seq: seq, Ack: ack, SYN: fl.SYN, ACK: fl.ACK, PSH: fl.PSH, FIN: fl.FIN, RST: fl.RST,
		Window: 64240,
	}
	return buildFrame(src, dst, f.VLAN, tcp, payload)
}

// UDPDatagram builds one UDP datagram frame.
func UDPDatagram(src, dst Endpoint, payload []byte) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Addr.Port()), DstPort: layers.UDPPort(dst.Addr.Port())}
	return buildFrame(src, dst, 0, udp, payload)
}

type transport interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}

func buildFrame(src, dst Endpoint, vlan uint16, l4 transport, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: src.MAC[:], DstMAC: dst.MAC[:], EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	proto := layers.IPProtocolTCP
	if _, ok := l4.(*layers.UDP); ok {
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
	if err := l4.SetNetworkLayerForChecksum(nl); err != nil {
		panic(err) // only IPv4/IPv6 layers are passed: a programmer error
	}
	if vlan != 0 {
		et := eth.EthernetType
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, eth, &layers.Dot1Q{VLANIdentifier: vlan, Type: et})
	} else {
		ls = append(ls, eth)
	}
	ls = append(ls, ipl, l4, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err) // layers built above always serialise
	}
	out := buf.Bytes()
	if len(out) < 60 {
		// Pad to the Ethernet minimum as a NIC would.
		out = append(out, make([]byte, 60-len(out))...)
	}
	return out
}

// MAC returns a locally administered MAC address whose last byte is n.
func MAC(n byte) [6]byte { return [6]byte{0x02, 0x00, 0x5e, 0x00, 0x00, n} }
