package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Writer writes Ethernet frames to a classic pcap file. It is what the
// project's generators use to make testdata and scenario captures.
type Writer struct {
	w    *PcapWriter
	Time time.Time     // timestamp of the next frame
	Step time.Duration // added after each frame (default 1ms)
}

// NewWriter writes the pcap file header to w.
func NewWriter(w io.Writer) (*Writer, error) {
	pw, err := NewPcapWriter(w)
	if err != nil {
		return nil, err
	}
	return &Writer{w: pw, Time: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC), Step: time.Millisecond}, nil
}

// WriteFrame writes one frame at w.Time and advances the clock.
func (w *Writer) WriteFrame(frame []byte) error {
	t := w.Time
	w.Time = w.Time.Add(w.Step)
	return w.w.WritePacket(t, frame)
}

// PcapWriter writes frames to a classic pcap file: little-endian,
// microsecond timestamps, snap length 65535, link type Ethernet (the
// bytes gopacket's pcapgo writes). The otgw binary writes its pcaps with
// it rather than with gopacket, whose layers package costs the process
// about 8 MiB of resident memory from its init and the collector's scan
// of its tables (issue 18: RSS).
type PcapWriter struct {
	w   io.Writer
	hdr [16]byte
}

// NewPcapWriter writes the pcap file header to w.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4) // microsecond timestamps
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 65535)
	binary.LittleEndian.PutUint32(h[20:], 1) // LINKTYPE_ETHERNET
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return &PcapWriter{w: w}, nil
}

// WritePacket writes one frame captured at t (now when t is zero) in
// full.
func (w *PcapWriter) WritePacket(t time.Time, frame []byte) error {
	if t.IsZero() {
		t = time.Now()
	}
	binary.LittleEndian.PutUint32(w.hdr[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(w.hdr[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(w.hdr[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(w.hdr[12:], uint32(len(frame)))
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("error writing packet header: %v", err)
	}
	_, err := w.w.Write(frame)
	return err
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
	return buildFrame(src, dst, f.VLAN, func(ip []byte) []byte {
		return appendTCP(ip, src.Addr, dst.Addr, seq, ack, fl, 64240, nil, payload)
	})
}

// UDPDatagram builds one UDP datagram frame.
func UDPDatagram(src, dst Endpoint, payload []byte) []byte {
	return buildFrame(src, dst, 0, func(ip []byte) []byte {
		return appendUDP(ip, src.Addr, dst.Addr, payload)
	})
}

// TCPPacket returns an IP packet (IPv4 when both addresses are IPv4,
// IPv6 when both are IPv6; nil otherwise) carrying one TCP segment with
// the given numbers, flags, window, options (a multiple of 4 bytes, or
// padded with zeros to one) and payload, with correct lengths and
// checksums: the IPv4 header has DF set, identification 0 and TTL 64;
// the IPv6 header hop limit 64.
func TCPPacket(src, dst netip.AddrPort, seq, ack uint32, fl TCPFlags, window uint16, options, payload []byte) []byte {
	if src.Addr().Is4() != dst.Addr().Is4() {
		return nil
	}
	return appendTCP(nil, src, dst, seq, ack, fl, window, options, payload)
}

// IP protocol numbers of the transports the builders write.
const (
	protoTCP = 6
	protoUDP = 17
)

// buildFrame returns an Ethernet frame (802.1Q tagged when vlan is not
// 0) from src to dst whose IP packet l3 appends, padded to the Ethernet
// minimum of 60 bytes as a NIC would.
func buildFrame(src, dst Endpoint, vlan uint16, l3 func([]byte) []byte) []byte {
	out := make([]byte, 0, 64)
	out = append(out, dst.MAC[:]...)
	out = append(out, src.MAC[:]...)
	et := uint16(0x0800)
	if !src.Addr.Addr().Is4() {
		et = 0x86dd
	}
	if vlan != 0 {
		out = binary.BigEndian.AppendUint16(out, 0x8100)
		out = binary.BigEndian.AppendUint16(out, vlan&0x0fff)
	}
	out = binary.BigEndian.AppendUint16(out, et)
	out = l3(out)
	if len(out) < 60 {
		out = append(out, make([]byte, 60-len(out))...)
	}
	return out
}

// appendIP appends the IP header of a packet from src to dst carrying n
// bytes of protocol proto and returns the result and the pseudo-header
// sum of the transport checksum.
func appendIP(b []byte, src, dst netip.Addr, proto uint8, n int) ([]byte, uint32) {
	if src.Is4() {
		h := len(b)
		b = append(b, 0x45, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(20+n))
		b = append(b, 0, 0, 0x40, 0, 64, proto, 0, 0) // id 0, DF, TTL 64, checksum below
		s4, d4 := src.As4(), dst.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
		binary.BigEndian.PutUint16(b[h+10:], ^fold(sum(0, b[h:h+20])))
		pseudo := sum(sum(0, s4[:]), d4[:]) + uint32(proto) + uint32(n)
		return b, pseudo
	}
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, proto, 64)
	s16, d16 := src.As16(), dst.As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	return b, sum(sum(0, s16[:]), d16[:]) + uint32(proto) + uint32(n)
}

// appendTCP appends an IP packet carrying one TCP segment (see TCPPacket).
func appendTCP(b []byte, src, dst netip.AddrPort, seq, ack uint32, fl TCPFlags, window uint16, options, payload []byte) []byte {
	optLen := (len(options) + 3) &^ 3
	n := 20 + optLen + len(payload)
	b, pseudo := appendIP(b, src.Addr(), dst.Addr(), protoTCP, n)
	t := len(b)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint32(b, seq)
	b = binary.BigEndian.AppendUint32(b, ack)
	var flags byte
	for _, f := range [...]struct {
		on  bool
		bit byte
	}{{fl.FIN, 0x01}, {fl.SYN, 0x02}, {fl.RST, 0x04}, {fl.PSH, 0x08}, {fl.ACK, 0x10}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, byte((20+optLen)/4)<<4, flags)
	b = binary.BigEndian.AppendUint16(b, window)
	b = append(b, 0, 0, 0, 0) // checksum below, urgent pointer 0
	b = append(b, options...)
	b = append(b, make([]byte, optLen-len(options))...)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[t+16:], ^fold(sum(pseudo, b[t:])))
	return b
}

// appendUDP appends an IP packet carrying one UDP datagram.
func appendUDP(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	n := 8 + len(payload)
	b, pseudo := appendIP(b, src.Addr(), dst.Addr(), protoUDP, n)
	u := len(b)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, 0, 0)
	b = append(b, payload...)
	c := ^fold(sum(pseudo, b[u:]))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(b[u+6:], c)
	return b
}

// sum adds b as big-endian 16-bit words (an odd last byte padded with
// zero) to the one's complement sum s, unfolded.
func sum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// fold folds a one's complement sum to 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// MAC returns a locally administered MAC address whose last byte is n.
func MAC(n byte) [6]byte { return [6]byte{0x02, 0x00, 0x5e, 0x00, 0x00, n} }
