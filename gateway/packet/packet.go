package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// LinkType is a pcap LINKTYPE_ value (https://www.tcpdump.org/linktypes.html).
type LinkType uint16

// Link types read by Decode.
const (
	LinkNull     LinkType = 0   // BSD loopback: 4-byte host-order address family
	LinkEthernet LinkType = 1   // Ethernet II / 802.3
	LinkRaw      LinkType = 101 // raw IPv4 or IPv6, version from the first nibble
	LinkLoop     LinkType = 108 // OpenBSD loopback: like Null but network order
	LinkSLL      LinkType = 113 // Linux cooked capture v1
	LinkIPv4     LinkType = 228
	LinkIPv6     LinkType = 229
	LinkSLL2     LinkType = 276 // Linux cooked capture v2
)

// Ethertypes.
const (
	EtherTypeIPv4  uint16 = 0x0800
	EtherTypeARP   uint16 = 0x0806
	EtherTypeVLAN  uint16 = 0x8100
	EtherTypeQinQ  uint16 = 0x88a8
	EtherTypeIPv6  uint16 = 0x86dd
	EtherTypeLLDP  uint16 = 0x88cc
	EtherTypeVLAN2 uint16 = 0x9100
)

// IP protocol numbers.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// TCP flags.
const (
	TCPFin uint8 = 0x01
	TCPSyn uint8 = 0x02
	TCPRst uint8 = 0x04
	TCPPsh uint8 = 0x08
	TCPAck uint8 = 0x10
	TCPUrg uint8 = 0x20
)

// MaxVLANs is the number of 802.1Q tags Decode reads.
const MaxVLANs = 2

// Errors returned by Decode. They are sentinels so the datapath can count
// them by reason without allocating.
var (
	ErrTruncated   = errors.New("packet: truncated header")
	ErrLinkType    = errors.New("packet: unsupported link type")
	ErrIPVersion   = errors.New("packet: bad IP version")
	ErrIPHeader    = errors.New("packet: bad IP header length")
	ErrIPLength    = errors.New("packet: IP total length exceeds frame")
	ErrTCPHeader   = errors.New("packet: bad TCP data offset")
	ErrUDPLength   = errors.New("packet: bad UDP length")
	ErrTooManyTags = errors.New("packet: too many VLAN tags")
	ErrExtHeaders  = errors.New("packet: IPv6 extension header chain too long")
)

// Packet is a decoded frame. Payload and the header slices alias the frame
// passed to Decode; they are valid as long as that buffer is. The zero
// value is an empty packet.
type Packet struct {
	Link      LinkType
	SrcMAC    [6]byte // Ethernet only
	DstMAC    [6]byte
	HasMAC    bool
	VLANs     [MaxVLANs]uint16 // VLAN ids, outermost first
	NVLANs    int
	EtherType uint16 // innermost ethertype (0 where the link has none)

	IPVersion uint8 // 0 when not IP
	Src, Dst  netip.Addr
	Proto     uint8 // IP protocol of the transport header (after IPv6 extensions)
	TTL       uint8
	IPHdr     []byte // the IP header (IPv4 with options; IPv6 fixed header)
	L3Off     int    // offset of the IP header in the frame
	L4Off     int    // offset of the transport header in the frame
	// Fragment is true for any IP fragment (MF set or non-zero offset, or an
	// IPv6 Fragment header). Only the first fragment carries ports.
	Fragment   bool
	FragOffset uint16 // in 8-byte units
	MoreFrags  bool
	FragID     uint32

	SrcPort, DstPort uint16
	Seq, Ack         uint32 // TCP
	Flags            uint8  // TCP
	Window           uint16 // TCP
	ICMPType         uint8
	ICMPCode         uint8
	HasL4            bool
	Payload          []byte // transport payload (clipped to the IP length)
}

// Reset clears every field.
func (p *Packet) Reset() { *p = Packet{} }

// SrcAddrPort returns the source as an AddrPort.
func (p *Packet) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Src, p.SrcPort) }

// DstAddrPort returns the destination as an AddrPort.
func (p *Packet) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Dst, p.DstPort) }

// Decode reads frame b of link type lt into p. It resets p first and
// allocates nothing. On error p holds what was read before the problem.
func (p *Packet) Decode(b []byte, lt LinkType) error {
	*p = Packet{Link: lt}
	switch lt {
	case LinkEthernet:
		return p.decodeEthernet(b)
	case LinkNull, LinkLoop:
		if len(b) < 4 {
			return ErrTruncated
		}
		// The family is in the capturing host's byte order (Null) or network
		// order (Loop); IPv4 is 2 everywhere, IPv6 is 10, 24, 28 or 30.
		fam := binary.LittleEndian.Uint32(b)
		if lt == LinkLoop || fam > 0xffff {
			fam = binary.BigEndian.Uint32(b)
		}
		switch fam {
		case 2:
			p.EtherType = EtherTypeIPv4
		case 10, 24, 28, 30:
			p.EtherType = EtherTypeIPv6
		default:
			return ErrLinkType
		}
		return p.decodeIP(b, 4)
	case LinkRaw, LinkIPv4, LinkIPv6:
		if len(b) < 1 {
			return ErrTruncated
		}
		switch b[0] >> 4 {
		case 4:
			p.EtherType = EtherTypeIPv4
		case 6:
			p.EtherType = EtherTypeIPv6
		default:
			return ErrIPVersion
		}
		return p.decodeIP(b, 0)
	case LinkSLL:
		if len(b) < 16 {
			return ErrTruncated
		}
		p.EtherType = binary.BigEndian.Uint16(b[14:])
		return p.decodeEtherPayload(b, 16)
	case LinkSLL2:
		if len(b) < 20 {
			return ErrTruncated
		}
		p.EtherType = binary.BigEndian.Uint16(b[0:])
		return p.decodeEtherPayload(b, 20)
	}
	return ErrLinkType
}

func (p *Packet) decodeEthernet(b []byte) error {
	if len(b) < 14 {
		return ErrTruncated
	}
	copy(p.DstMAC[:], b[0:6])
	copy(p.SrcMAC[:], b[6:12])
	p.HasMAC = true
	off := 12
	et := binary.BigEndian.Uint16(b[off:])
	for et == EtherTypeVLAN || et == EtherTypeQinQ || et == EtherTypeVLAN2 {
		if p.NVLANs == MaxVLANs {
			return ErrTooManyTags
		}
		if len(b) < off+6 {
			return ErrTruncated
		}
		p.VLANs[p.NVLANs] = binary.BigEndian.Uint16(b[off+2:]) & 0x0fff
		p.NVLANs++
		off += 4
		et = binary.BigEndian.Uint16(b[off:])
	}
	p.EtherType = et
	return p.decodeEtherPayload(b, off+2)
}

func (p *Packet) decodeEtherPayload(b []byte, off int) error {
	switch p.EtherType {
	case EtherTypeIPv4, EtherTypeIPv6:
		return p.decodeIP(b, off)
	}
	return nil // non-IP ethertype: L2 only
}

func (p *Packet) decodeIP(b []byte, off int) error {
	if len(b) <= off {
		return ErrTruncated
	}
	p.L3Off = off
	ip := b[off:]
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return ErrTruncated
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl {
			return ErrIPHeader
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total < ihl {
			return ErrIPHeader
		}
		if total > len(ip) {
			return ErrIPLength
		}
		// Ethernet padding after the datagram is not payload.
		ip = ip[:total]
		p.IPVersion = 4
		p.IPHdr = ip[:ihl]
		p.TTL = ip[8]
		p.Proto = ip[9]
		p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
		frag := binary.BigEndian.Uint16(ip[6:])
		p.FragID = uint32(binary.BigEndian.Uint16(ip[4:]))
		p.MoreFrags = frag&0x2000 != 0
		p.FragOffset = frag & 0x1fff
		p.Fragment = p.MoreFrags || p.FragOffset != 0
		p.L4Off = off + ihl
		if p.FragOffset != 0 {
			p.Payload = ip[ihl:]
			return nil // later fragments have no transport header
		}
		return p.decodeL4(b[:off+total], p.L4Off)
	case 6:
		if len(ip) < 40 {
			return ErrTruncated
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+plen > len(ip) {
			return ErrIPLength
		}
		ip = ip[:40+plen]
		p.IPVersion = 6
		p.IPHdr = ip[:40]
		p.TTL = ip[7]
		p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
		next := ip[6]
		pos := 40
		for range 8 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(ip) < pos+8 {
					return ErrTruncated
				}
				hl := (int(ip[pos+1]) + 1) * 8
				if len(ip) < pos+hl {
					return ErrTruncated
				}
				next = ip[pos]
				pos += hl
				continue
			case 44: // fragment
				if len(ip) < pos+8 {
					return ErrTruncated
				}
				fo := binary.BigEndian.Uint16(ip[pos+2:])
				p.Fragment = true
				p.FragOffset = fo >> 3
				p.MoreFrags = fo&1 != 0
				p.FragID = binary.BigEndian.Uint32(ip[pos+4:])
				next = ip[pos]
				pos += 8
				continue
			}
			p.Proto = next
			p.L4Off = off + pos
			if p.Fragment && p.FragOffset != 0 {
				p.Payload = ip[pos:]
				return nil
			}
			return p.decodeL4(b[:off+len(ip)], p.L4Off)
		}
		return ErrExtHeaders
	}
	return ErrIPVersion
}

func (p *Packet) decodeL4(b []byte, off int) error {
	l4 := b[off:]
	switch p.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return ErrTruncated
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > len(l4) {
			return ErrTCPHeader
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.Seq = binary.BigEndian.Uint32(l4[4:])
		p.Ack = binary.BigEndian.Uint32(l4[8:])
		p.Flags = l4[13]
		p.Window = binary.BigEndian.Uint16(l4[14:])
		p.Payload = l4[doff:]
		p.HasL4 = true
	case ProtoUDP:
		if len(l4) < 8 {
			return ErrTruncated
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:]))
		if ulen < 8 || ulen > len(l4) {
			return ErrUDPLength
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.Payload = l4[8:ulen]
		p.HasL4 = true
	case ProtoICMP, ProtoICMPv6:
		if len(l4) < 4 {
			return ErrTruncated
		}
		p.ICMPType = l4[0]
		p.ICMPCode = l4[1]
		p.Payload = l4[4:]
		p.HasL4 = true
	default:
		p.Payload = l4
	}
	return nil
}

// TCPWindowScale returns the window scale option (RFC 7323 section 2.3)
// of the TCP segment p decoded from frame; ok is false when the segment
// has none, is not TCP, or its options are malformed. Only a SYN's
// option counts (the caller asks on SYNs).
func (p *Packet) TCPWindowScale(frame []byte) (shift uint8, ok bool) {
	if p.Proto != ProtoTCP || !p.HasL4 || p.L4Off+20 > len(frame) {
		return 0, false
	}
	doff := int(frame[p.L4Off+12]>>4) * 4
	if doff < 20 || p.L4Off+doff > len(frame) {
		return 0, false
	}
	opts := frame[p.L4Off+20 : p.L4Off+doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0, false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return 0, false
		}
		if opts[i] == 3 && opts[i+1] == 3 {
			return opts[i+2], true
		}
		i += int(opts[i+1])
	}
	return 0, false
}
