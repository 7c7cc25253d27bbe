package hal

import (
	"encoding/binary"
	"testing"
)

// csumFrame builds an Ethernet frame with an IPv4 or IPv6 header and a
// TCP or UDP segment of n payload bytes, its checksum field left zero.
func csumFrame(v6 bool, proto uint8, n int) (f []byte, l4 int) {
	hl, l4len := 20, 20
	if proto == 17 {
		l4len = 8
	}
	if v6 {
		hl = 40
	}
	f = make([]byte, 14+hl+l4len+n)
	for i := 14 + hl + l4len; i < len(f); i++ {
		f[i] = byte(i * 7)
	}
	if v6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		f[14] = 0x60
		binary.BigEndian.PutUint16(f[18:], uint16(l4len+n))
		f[20] = proto
		for i := 22; i < 54; i++ {
			f[i] = byte(i)
		}
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		f[14] = 0x45
		binary.BigEndian.PutUint16(f[16:], uint16(hl+l4len+n))
		f[23] = proto
		copy(f[26:34], []byte{192, 0, 2, 1, 192, 0, 2, 130})
	}
	return f, 14 + hl
}

// sum16 is the folded one's-complement sum of b (RFC 1071), the 16-bit
// definition.
func sum16(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s
}

// tagged inserts in-band VLAN tags (TPID, TCI) after the MAC addresses of
// f, outermost first.
func tagged(f []byte, tpids ...uint16) []byte {
	g := append([]byte(nil), f[:12]...)
	for i, tpid := range tpids {
		g = binary.BigEndian.AppendUint16(g, tpid)
		g = binary.BigEndian.AppendUint16(g, uint16(100+i))
	}
	return append(g, f[12:]...)
}

// TestChecksumPartialGuess crafts frames with a partial checksum (the
// pseudo-header sum) and with the complete one, untagged, with an
// 802.1Q tag and with QinQ (802.1ad outer, 802.1Q inner).
func TestChecksumPartialGuess(t *testing.T) {
	// More tags than the gateway's CompleteChecksum looks through: not
	// guessed partial (it could not be completed).
	tags := []struct {
		name  string
		tpids []uint16
		seen  bool
	}{
		{"untagged", nil, true}, {"802.1q", []uint16{0x8100}, true}, {"qinq", []uint16{0x88a8, 0x8100}, true},
		{"double 802.1q", []uint16{0x8100, 0x8100}, true}, {"three tags", []uint16{0x88a8, 0x8100, 0x8100}, false},
	}
	for _, tc := range []struct {
		name  string
		v6    bool
		proto uint8
		n     int
	}{{"ipv4 tcp", false, 6, 100}, {"ipv4 udp", false, 17, 18}, {"ipv6 tcp", true, 6, 1000}, {"ipv6 udp odd", true, 17, 33}} {
		for _, tg := range tags {
			t.Run(tc.name+" "+tg.name, func(t *testing.T) {
				f, l4 := csumFrame(tc.v6, tc.proto, tc.n)
				at := l4 + 16
				if tc.proto == 17 {
					at = l4 + 6
				}
				var pseudo uint32
				if tc.v6 {
					pseudo = sum16(0, f[22:54])
				} else {
					pseudo = sum16(0, f[26:34])
				}
				pseudo = sum16(pseudo+uint32(tc.proto)+uint32(len(f)-l4), nil)
				// What a CHECKSUM_PARTIAL sender leaves: the pseudo-header sum.
				binary.BigEndian.PutUint16(f[at:], uint16(pseudo))
				if got := checksumPartial(tagged(f, tg.tpids...)); got != tg.seen {
					t.Errorf("partial checksum %#04x: guessed partial %v, want %v", pseudo, got, tg.seen)
				}
				// The complete checksum.
				binary.BigEndian.PutUint16(f[at:], 0)
				full := ^uint16(sum16(pseudo, f[l4:]))
				binary.BigEndian.PutUint16(f[at:], full)
				if full != uint16(pseudo) && checksumPartial(tagged(f, tg.tpids...)) {
					t.Errorf("complete checksum %#04x taken for partial", full)
				}
				binary.BigEndian.PutUint16(f[at:], uint16(pseudo))
				// Truncated and non-IP frames are never guessed partial.
				hdr := 4 * len(tg.tpids)
				for _, cut := range []int{l4 + 4, 14, 13} {
					if checksumPartial(tagged(f, tg.tpids...)[:cut+hdr]) {
						t.Errorf("frame truncated to %d bytes taken for partial", cut+hdr)
					}
				}
				g := append([]byte(nil), f...)
				binary.BigEndian.PutUint16(g[12:], 0x88b5)
				if checksumPartial(tagged(g, tg.tpids...)) {
					t.Error("non-IP frame taken for partial")
				}
			})
		}
	}
}
