package daemon

import (
	"encoding/binary"
	"math/bits"
)

// Ethertypes and IP protocol numbers CompleteChecksum understands.
const (
	etherIPv4   = 0x0800
	etherIPv6   = 0x86dd
	etherVLAN   = 0x8100
	etherQinQ   = 0x88a8
	protoTCP    = 6
	protoUDP    = 17
	maxVLANTags = 2
)

// CompleteChecksum fills in the TCP or UDP checksum of an Ethernet frame
// whose checksum the sending stack left to the hardware
// (hal.FrameMeta.ChecksumNotReady: CHECKSUM_PARTIAL, the field holds only
// the pseudo-header sum). Real NICs with partial checksum offload produce
// such frames too, so a bridge that forwards them must complete them, as
// the NIC of the sender would have: the one's-complement sum over the
// pseudo-header and the whole L4 segment (RFC 793 section 3.1, RFC 768,
// RFC 8200 section 8.1), with UDP's 0 sent as 0xffff.
//
// It works in place, allocates nothing and returns false (leaving the
// frame unchanged) for anything it cannot parse: non-IP, IPv4 fragments
// after the first, IPv6 extension headers, truncated headers. The engine
// then judges the frame as it is.
func CompleteChecksum(frame []byte) bool {
	if len(frame) < 14 {
		return false
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	for i := 0; i < maxVLANTags && (et == etherVLAN || et == etherQinQ); i++ {
		off += 4
		if len(frame) < off+2 {
			return false
		}
		et = binary.BigEndian.Uint16(frame[off:])
	}
	l3 := off + 2
	var proto uint8
	var l4 []byte
	var sum uint32
	switch et {
	case etherIPv4:
		if len(frame) < l3+20 || frame[l3]>>4 != 4 {
			return false
		}
		ihl := int(frame[l3]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(frame[l3+2:]))
		if ihl < 20 || total < ihl || len(frame) < l3+total {
			return false
		}
		if binary.BigEndian.Uint16(frame[l3+6:])&0x3fff != 0 {
			return false // a fragment: the checksum covers the reassembled datagram
		}
		proto = frame[l3+9]
		l4 = frame[l3+ihl : l3+total]
		sum = sumBytes(0, frame[l3+12:l3+20]) // source and destination
	case etherIPv6:
		if len(frame) < l3+40 || frame[l3]>>4 != 6 {
			return false
		}
		plen := int(binary.BigEndian.Uint16(frame[l3+4:]))
		if len(frame) < l3+40+plen {
			return false
		}
		proto = frame[l3+6]
		l4 = frame[l3+40 : l3+40+plen]
		sum = sumBytes(0, frame[l3+8:l3+40])
	default:
		return false
	}
	var csumOff int
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			return false
		}
		csumOff = 16
	case protoUDP:
		if len(l4) < 8 {
			return false
		}
		csumOff = 6
	default:
		return false
	}
	sum += uint32(proto) + uint32(len(l4))
	l4[csumOff], l4[csumOff+1] = 0, 0
	sum = sumBytes(sum, l4)
	c := fold(sum)
	if c == 0 && proto == protoUDP {
		c = 0xffff // RFC 768: 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(l4[csumOff:], c)
	return true
}

// sumBytes adds b as big-endian 16-bit words to sum (odd length padded
// with a zero byte) and returns the one's-complement sum folded to at
// most 17 bits.
//
// It adds 64-bit words with end-around carry, which gives the same
// one's-complement sum as 16-bit words because 2^16 = 1 modulo 2^16-1
// (RFC 1071 section 2(B)): about 8 times fewer steps than one word at a
// time, which the TCP phase of `make bench-datapath` showed at ~10% of the
// gateway's CPU (every segment of a stack with checksum offload arrives
// CHECKSUM_PARTIAL).
func sumBytes(sum uint32, b []byte) uint32 {
	acc, carry := uint64(sum), uint64(0)
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	var tail uint64 // the last 0-7 bytes, as the high bytes of a word
	for i, c := range b {
		tail |= uint64(c) << (56 - 8*i)
	}
	acc, carry = bits.Add64(acc, tail, carry)
	acc, carry = bits.Add64(acc, carry, 0)
	acc += carry
	// Fold 64 -> 32 -> 17 bits.
	acc = acc&0xffffffff + acc>>32
	acc = acc&0xffffffff + acc>>32
	return uint32(acc&0xffff + acc>>16)
}

// fold returns the one's complement of the folded one's-complement sum.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
