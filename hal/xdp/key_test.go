package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func tcpKey(src, dst string) Key {
	return Key{Proto: ProtoTCP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
}

func udpKey(src, dst string) Key {
	return Key{Proto: ProtoUDP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
}

func TestKeyEncodeLayout(t *testing.T) {
	k := tcpKey("192.0.2.1:40000", "192.0.2.2:502")
	got := k.encode()
	want := []byte{
		4, 6, 0, 0, 0x9c, 0x40, 0x01, 0xf6,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 2,
	}
	if !bytes.Equal(got[:], want) {
		t.Errorf("encode(%s) =\n% x\nwant\n% x", k, got[:], want)
	}
	k6 := udpKey("[2001:db8::1]:9", "[2001:db8::2]:10")
	g6 := k6.encode()
	if g6[keyFamily] != 6 || g6[keyProto] != 17 || g6[keySrc] != 0x20 || g6[keyDst+15] != 2 {
		t.Errorf("encode(%s) = % x", k6, g6[:])
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []Key{
		tcpKey("192.0.2.1:1", "192.0.2.2:65535"),
		tcpKey("[2001:db8::1]:40000", "[2001:db8::2]:5001"),
		udpKey("198.51.100.7:20000", "203.0.113.9:20000"),
		udpKey("[::ffff:c000:201]:1", "[::ffff:c000:202]:2"), // IPv4-mapped: unmapped
	} {
		b := k.encode()
		got, ok := b.decode()
		if !ok || got != k.unmap() {
			t.Errorf("decode(encode(%s)) = %s, %v", k, got, ok)
		}
		if r := k.Reverse(); r.Reverse() != k || r.Src != k.Dst {
			t.Errorf("Reverse(%s) = %s", k, r)
		}
	}
	// Bytes encode cannot produce.
	var b mapKey
	if _, ok := b.decode(); ok {
		t.Error("decode of zero bytes succeeded")
	}
	b = tcpKey("192.0.2.1:1", "192.0.2.2:2").encode()
	b[keySrc+10] = 0 // IPv4 family but not IPv4-mapped
	if _, ok := b.decode(); ok {
		t.Error("decode of an IPv4 key without the ::ffff: prefix succeeded")
	}
}

func TestKeyCheck(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name string
		k    Key
		ok   bool
	}{
		{"tcp v4", tcpKey("192.0.2.1:1", "192.0.2.2:2"), true},
		{"udp v6", udpKey("[2001:db8::1]:1", "[2001:db8::2]:2"), true},
		{"mapped and plain v4", Key{Proto: ProtoTCP, Src: ap("[::ffff:192.0.2.1]:1"), Dst: ap("192.0.2.2:2")}, true},
		{"icmp", Key{Proto: 1, Src: ap("192.0.2.1:0"), Dst: ap("192.0.2.2:0")}, false},
		{"zero", Key{}, false},
		{"no dst", Key{Proto: ProtoTCP, Src: ap("192.0.2.1:1")}, false},
		{"mixed families", Key{Proto: ProtoTCP, Src: ap("192.0.2.1:1"), Dst: ap("[2001:db8::2]:2")}, false},
		{"zone", Key{Proto: ProtoTCP, Src: ap("[fe80::1%eth0]:1"), Dst: ap("[fe80::2]:2")}, false},
		{"src equals dst", tcpKey("192.0.2.1:1", "192.0.2.1:1"), false},
	} {
		err := tc.k.check()
		if (err == nil) != tc.ok {
			t.Errorf("%s: check(%s) = %v, want ok=%v", tc.name, tc.k, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: error %v is not ErrInvalidKey", tc.name, err)
		}
	}
}

func TestValueRoundTrip(t *testing.T) {
	e := entry{egress: 7, ingress: 9, closed: true, reverse: true, packets: 1 << 40, bytes: 1<<50 + 3, lastSeen: uint64(90 * time.Minute)}
	v := e.encode()
	if got := v.decode(); got != e {
		t.Errorf("decode(encode(%+v)) = %+v", e, got)
	}
	// The program reads these offsets: host byte order for numbers,
	// single bytes for the flags.
	if binary.NativeEndian.Uint32(v[valEgress:]) != 7 || binary.NativeEndian.Uint32(v[valIngress:]) != 9 ||
		v[valClosed] != 1 || v[valDir] != 1 || binary.NativeEndian.Uint64(v[valPackets:]) != 1<<40 {
		t.Errorf("value layout: % x", v[:])
	}
}

func TestSide(t *testing.T) {
	if North.Other() != South || South.Other() != North || North.String() != "north" || South.String() != "south" {
		t.Error("Side: Other or String wrong")
	}
}
