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

func TestChecksumPartialGuess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		v6    bool
		proto uint8
		n     int
	}{{"ipv4 tcp", false, 6, 100}, {"ipv4 udp", false, 17, 18}, {"ipv6 tcp", true, 6, 1000}, {"ipv6 udp odd", true, 17, 33}} {
		t.Run(tc.name, func(t *testing.T) {
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
			if !checksumPartial(f) {
				t.Errorf("partial checksum %#04x not recognised", pseudo)
			}
			// The complete checksum.
			binary.BigEndian.PutUint16(f[at:], 0)
			full := ^uint16(sum16(pseudo, f[l4:]))
			binary.BigEndian.PutUint16(f[at:], full)
			if full != uint16(pseudo) && checksumPartial(f) {
				t.Errorf("complete checksum %#04x taken for partial", full)
			}
			// Truncated and non-IP frames are never guessed partial.
			if checksumPartial(f[:l4+4]) {
				t.Error("truncated frame taken for partial")
			}
			g := append([]byte(nil), f...)
			binary.BigEndian.PutUint16(g[12:], 0x88b5)
			if checksumPartial(g) {
				t.Error("non-IP frame taken for partial")
			}
		})
	}
}
