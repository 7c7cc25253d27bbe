package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// IP protocol numbers (IANA) the program bypasses.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// Side names one of the two ports the FastPath is attached to.
type Side uint8

// The two ports, in the gateway's naming.
const (
	North Side = iota
	South
)

// Other returns the opposite port.
func (s Side) Other() Side { return s ^ 1 }

func (s Side) String() string {
	switch s {
	case North:
		return "north"
	case South:
		return "south"
	}
	return fmt.Sprintf("Side(%d)", uint8(s))
}

// Key is one direction of a flow: the IP protocol and both endpoints as
// they appear in that direction's packets. The zero value is invalid.
// IPv4 addresses may be given plain or IPv4-mapped (they are unmapped).
type Key struct {
	Proto    uint8 // ProtoTCP or ProtoUDP
	Src, Dst netip.AddrPort
}

// Reverse returns the key of the other direction.
func (k Key) Reverse() Key { return Key{Proto: k.Proto, Src: k.Dst, Dst: k.Src} }

func (k Key) String() string {
	p := fmt.Sprint(k.Proto)
	switch k.Proto {
	case ProtoTCP:
		p = "tcp"
	case ProtoUDP:
		p = "udp"
	}
	return p + " " + k.Src.String() + " > " + k.Dst.String()
}

func (k Key) unmap() Key {
	k.Src = netip.AddrPortFrom(k.Src.Addr().Unmap(), k.Src.Port())
	k.Dst = netip.AddrPortFrom(k.Dst.Addr().Unmap(), k.Dst.Port())
	return k
}

// ErrInvalidKey: a Key the program could never match (protocol not TCP
// or UDP, invalid or mixed-family addresses, a zone-scoped address, or
// both ends equal so that the two directions could not be told apart).
var ErrInvalidKey = errors.New("xdp: invalid flow key")

func (k Key) check() error {
	k = k.unmap()
	sa, da := k.Src.Addr(), k.Dst.Addr()
	switch {
	case k.Proto != ProtoTCP && k.Proto != ProtoUDP:
		return fmt.Errorf("%w: %s: protocol %d is not tcp (6) or udp (17)", ErrInvalidKey, k, k.Proto)
	case !sa.IsValid() || !da.IsValid():
		return fmt.Errorf("%w: %s: missing address", ErrInvalidKey, k)
	case sa.Is4() != da.Is4():
		return fmt.Errorf("%w: %s: mixed IPv4 and IPv6", ErrInvalidKey, k)
	case sa.Zone() != "" || da.Zone() != "":
		return fmt.Errorf("%w: %s: zone-scoped address", ErrInvalidKey, k)
	case k.Src == k.Dst:
		return fmt.Errorf("%w: %s: source equals destination", ErrInvalidKey, k)
	}
	return nil
}

// The map's key and value layouts. The XDP program (prog.go) builds keys
// and reads values at these offsets; Go encodes them here. Fields in
// network byte order are copied as bytes by the program, so only the
// ifindex and counter fields are in host byte order (binary.NativeEndian),
// as the kernel stores them.
//
// key (40 bytes):
//
//	0  u8   family: 4 or 6 (from the EtherType, so an IPv6 packet with
//	        IPv4-mapped addresses never matches an IPv4 flow)
//	1  u8   IP protocol (6, 17)
//	2  u16  zero
//	4  be16 source port
//	6  be16 destination port
//	8  [16] source address (IPv4 as ::ffff:a.b.c.d, RFC 4291 2.5.5.2)
//	24 [16] destination address
//
// value (40 bytes):
//
//	0  u32  egress ifindex (bpf_redirect target)
//	4  u32  ingress ifindex: frames of the key arriving on another port
//	        are passed to user space
//	8  u8   closed: set by the program on FIN, RST or SYN; from then on
//	        both directions pass to user space
//	9  u8   direction: 0 for the key given to Add, 1 for its reverse
//	10 [6]  zero
//	16 u64  packets redirected
//	24 u64  bytes redirected (Ethernet header + IP datagram, from the IP
//	        length fields: no padding, no FCS)
//	32 u64  last seen, CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns);
//	        Add sets it to the time of the Add
const (
	keySize   = 40
	valueSize = 40

	keyFamily = 0
	keyProto  = 1
	keySport  = 4
	keyDport  = 6
	keySrc    = 8
	keyDst    = 24

	valEgress   = 0
	valIngress  = 4
	valClosed   = 8
	valDir      = 9
	valPackets  = 16
	valBytes    = 24
	valLastSeen = 32
)

type mapKey [keySize]byte
type mapValue [valueSize]byte

// encode writes k (which must have passed check) in the map's layout.
func (k Key) encode() mapKey {
	k = k.unmap()
	var b mapKey
	b[keyFamily] = 6
	if k.Src.Addr().Is4() {
		b[keyFamily] = 4
	}
	b[keyProto] = k.Proto
	binary.BigEndian.PutUint16(b[keySport:], k.Src.Port())
	binary.BigEndian.PutUint16(b[keyDport:], k.Dst.Port())
	s, d := k.Src.Addr().As16(), k.Dst.Addr().As16() // IPv4 comes out IPv4-mapped
	copy(b[keySrc:], s[:])
	copy(b[keyDst:], d[:])
	return b
}

// decode is encode's inverse; ok is false for bytes encode cannot produce.
func (b *mapKey) decode() (k Key, ok bool) {
	var s, d [16]byte
	copy(s[:], b[keySrc:keySrc+16])
	copy(d[:], b[keyDst:keyDst+16])
	sa, da := netip.AddrFrom16(s), netip.AddrFrom16(d)
	switch b[keyFamily] {
	case 4:
		if !sa.Is4In6() || !da.Is4In6() {
			return Key{}, false
		}
		sa, da = sa.Unmap(), da.Unmap()
	case 6:
	default:
		return Key{}, false
	}
	if b[2] != 0 || b[3] != 0 {
		return Key{}, false
	}
	k = Key{
		Proto: b[keyProto],
		Src:   netip.AddrPortFrom(sa, binary.BigEndian.Uint16(b[keySport:])),
		Dst:   netip.AddrPortFrom(da, binary.BigEndian.Uint16(b[keyDport:])),
	}
	return k, k.check() == nil
}

// entry is a decoded map value.
type entry struct {
	egress, ingress uint32
	closed          bool
	reverse         bool
	packets, bytes  uint64
	lastSeen        uint64 // CLOCK_MONOTONIC ns
}

func (e entry) encode() mapValue {
	var b mapValue
	ne := binary.NativeEndian
	ne.PutUint32(b[valEgress:], e.egress)
	ne.PutUint32(b[valIngress:], e.ingress)
	if e.closed {
		b[valClosed] = 1
	}
	if e.reverse {
		b[valDir] = 1
	}
	ne.PutUint64(b[valPackets:], e.packets)
	ne.PutUint64(b[valBytes:], e.bytes)
	ne.PutUint64(b[valLastSeen:], e.lastSeen)
	return b
}

func (b *mapValue) decode() entry {
	ne := binary.NativeEndian
	return entry{
		egress:   ne.Uint32(b[valEgress:]),
		ingress:  ne.Uint32(b[valIngress:]),
		closed:   b[valClosed] != 0,
		reverse:  b[valDir] != 0,
		packets:  ne.Uint64(b[valPackets:]),
		bytes:    ne.Uint64(b[valBytes:]),
		lastSeen: ne.Uint64(b[valLastSeen:]),
	}
}

// Counters are one direction's figures.
type Counters struct {
	Packets, Bytes uint64 // redirected by the program (Bytes: see the value layout)
	// LastSeen is the CLOCK_MONOTONIC time (as from
	// unix.ClockGettime(CLOCK_MONOTONIC)) of the last redirected frame, or
	// of the Add when none was. In ModeTC the program reads the coarse
	// clock (CLOCK_MONOTONIC_COARSE): up to a tick earlier.
	LastSeen time.Duration
}

// Flow is a bypassed flow as the map holds it.
type Flow struct {
	Key     Key  // the direction given to Add
	Egress  Side // where Key's frames are sent
	Forward Counters
	Reverse Counters // the direction Key.Reverse(), sent to Egress.Other()
	// Closed reports that the program saw FIN, RST or SYN on the flow:
	// every frame since then went to user space.
	Closed bool
}

// Stats are the program's own counters, summed over CPUs.
type Stats struct {
	Redirected uint64 // frames of bypassed flows sent to the other port
	NoMatch    uint64 // parsable TCP/UDP frames of flows not in the map
	Closing    uint64 // FIN, RST or SYN on a bypassed flow (passed, flow closed)
	Closed     uint64 // frames of a closed flow (passed)
	WrongPort  uint64 // a bypassed key arriving on the port it is sent to (passed)
	Unparsed   uint64 // not untagged IPv4/IPv6 TCP/UDP, truncated, fragments, IPv6 extension headers (passed)
	Lapsed     uint64 // frames of bypassed flows passed because the owner's lease had run out
}

// stat indexes of the per-CPU array the program counts into.
const (
	statRedirected = iota
	statNoMatch
	statClosing
	statClosed
	statWrongPort
	statUnparsed
	statLapsed
	numStats
)
