package gateway

import (
	"encoding/binary"
	"net/netip"

	"github.com/otgw/otgw/gateway/packet"
)

// craftBufSize is the size of the pooled buffers for crafted frames: link
// header (at most maxL2Hdr) + IPv6 (40) + TCP (20) + the largest reply
// payload (an OPC UA ERR with a short reason), with room to spare.
const craftBufSize = 512

// maxL2Hdr bounds a stored link-layer header template: Ethernet with two
// 802.1Q tags is 22 bytes, Linux cooked v2 20.
const maxL2Hdr = 32

// craftPool is a bounded pool of buffers for crafted frames (RST, native
// replies). Tx.Send copies or consumes the frame before returning, so a
// buffer goes back to the pool as soon as Send returns; the pool only needs
// as many buffers as goroutines call Handle at once. When it is empty the
// crafted frame is not sent and DropNoBuffer is counted: never allocate or
// block on the datapath.
type craftPool struct{ ch chan *[craftBufSize]byte }

func newCraftPool(n int) *craftPool {
	p := &craftPool{ch: make(chan *[craftBufSize]byte, n)}
	for range n {
		p.ch <- new([craftBufSize]byte)
	}
	return p
}

func (p *craftPool) get() *[craftBufSize]byte {
	select {
	case b := <-p.ch:
		return b
	default:
		return nil
	}
}

func (p *craftPool) put(b *[craftBufSize]byte) {
	select {
	case p.ch <- b:
	default:
	}
}

// csumAdd adds b to a ones' complement running sum (RFC 1071).
func csumAdd(sum uint32, b []byte) uint32 {
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)&1 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// pseudoSum returns the pseudo-header sum of RFC 793 section 3.1 (IPv4) or
// RFC 8200 section 8.1 (IPv6).
func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = csumAdd(sum, s[:])
		sum = csumAdd(sum, d[:])
	} else {
		s, d := src.As16(), dst.As16()
		sum = csumAdd(sum, s[:])
		sum = csumAdd(sum, d[:])
	}
	sum += uint32(proto)
	sum += uint32(l4len) & 0xffff
	sum += uint32(l4len) >> 16
	return sum
}

// l4Checksum computes the TCP/UDP checksum of l4 (header with a zeroed
// checksum field plus payload).
func l4Checksum(src, dst netip.Addr, proto uint8, l4 []byte) uint16 {
	c := csumFold(csumAdd(pseudoSum(src, dst, proto, len(l4)), l4))
	if proto == packet.ProtoUDP && c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	return c
}

// writeIP writes an IPv4 (20 bytes) or IPv6 (40 bytes) header for an L4
// packet of l4len bytes and returns its length.
func writeIP(b []byte, src, dst netip.Addr, proto uint8, l4len int) int {
	if src.Is4() {
		h := b[:20]
		h[0] = 0x45
		h[1] = 0
		binary.BigEndian.PutUint16(h[2:], uint16(20+l4len))
		binary.BigEndian.PutUint16(h[4:], 0)      // id: DF set, never fragmented
		binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
		h[8] = 64
		h[9] = proto
		h[10], h[11] = 0, 0
		s, d := src.As4(), dst.As4()
		copy(h[12:16], s[:])
		copy(h[16:20], d[:])
		binary.BigEndian.PutUint16(h[10:], csumFold(csumAdd(0, h)))
		return 20
	}
	h := b[:40]
	binary.BigEndian.PutUint32(h[0:], 6<<28)
	binary.BigEndian.PutUint16(h[4:], uint16(l4len))
	h[6] = proto
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return 40
}

// segSpec describes a crafted TCP segment.
type segSpec struct {
	l2         []byte // link-layer header template (may be empty for raw IP)
	src, dst   netip.Addr
	sport      uint16
	dport      uint16
	seq, ack   uint32
	flags      uint8
	window     uint16
	payload    []byte
	udp        bool // craft a UDP datagram instead (seq, ack, flags ignored)
	padToMin60 bool // pad to the Ethernet minimum frame size
}

// craft writes the frame of s into buf and returns it, or nil when it does
// not fit.
func craft(buf []byte, s *segSpec) []byte {
	l4hdr := 20
	proto := packet.ProtoTCP
	if s.udp {
		l4hdr = 8
		proto = packet.ProtoUDP
	}
	iphdr := 40
	if s.src.Is4() {
		iphdr = 20
	}
	total := len(s.l2) + iphdr + l4hdr + len(s.payload)
	if total > len(buf) || len(s.l2) > maxL2Hdr {
		return nil
	}
	n := copy(buf, s.l2)
	l4len := l4hdr + len(s.payload)
	n += writeIP(buf[n:], s.src, s.dst, proto, l4len)
	l4 := buf[n : n+l4len]
	binary.BigEndian.PutUint16(l4[0:], s.sport)
	binary.BigEndian.PutUint16(l4[2:], s.dport)
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
		l4[6], l4[7] = 0, 0
	} else {
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = 5 << 4
		l4[13] = s.flags
		binary.BigEndian.PutUint16(l4[14:], s.window)
		l4[16], l4[17], l4[18], l4[19] = 0, 0, 0, 0
	}
	copy(l4[l4hdr:], s.payload)
	c := l4Checksum(s.src, s.dst, proto, l4)
	if s.udp {
		binary.BigEndian.PutUint16(l4[6:], c)
	} else {
		binary.BigEndian.PutUint16(l4[16:], c)
	}
	n += l4len
	if s.padToMin60 && n < 60 && len(buf) >= 60 {
		clear(buf[n:60])
		n = 60
	}
	return buf[:n]
}

// truncatePayload rewrites the decoded TCP segment in frame so that it
// carries only the first keep bytes of its payload: IP total/payload
// length, the IPv4 header checksum and the TCP checksum are fixed. It
// returns the shortened frame (aliasing frame). keep must be less than
// len(p.Payload); FIN is cleared because the segment no longer reaches it.
func truncatePayload(frame []byte, p *packet.Packet, keep int) []byte {
	// Payload is clipped to the IP length: find where it starts from the
	// TCP data offset rather than from the frame end (Ethernet padding).
	doff := int(frame[p.L4Off+12]>>4) * 4
	payOff := p.L4Off + doff
	end := payOff + keep
	ip := frame[p.L3Off:end]
	l4 := frame[p.L4Off:end]
	if p.IPVersion == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		ip[10], ip[11] = 0, 0
		ihl := int(ip[0]&0x0f) * 4
		binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip[:ihl])))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(end-p.L3Off-40))
	}
	l4[13] &^= packet.TCPFin
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(p.Src, p.Dst, packet.ProtoTCP, l4))
	if p.HasMAC && end < 60 && len(frame) >= 60 {
		// Pad to the Ethernet minimum with zeros: the denied bytes that
		// followed must not cross, not even as padding.
		clear(frame[end:60])
		return frame[:60]
	}
	return frame[:end]
}

// fixSegment sets the IP length fields, the IPv4 header checksum and the
// TCP checksum of the segment b (a frame ending where its payload ends,
// laid out like p) and returns b.
func fixSegment(b []byte, p *packet.Packet) []byte {
	ip := b[p.L3Off:]
	if p.IPVersion == 4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		ip[10], ip[11] = 0, 0
		ihl := int(ip[0]&0x0f) * 4
		binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip[:ihl])))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	}
	l4 := b[p.L4Off:]
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(p.Src, p.Dst, packet.ProtoTCP, l4))
	return b
}
