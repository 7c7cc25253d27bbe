package daemon

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// partial turns a frame with a correct L4 checksum into what a stack with
// checksum offload hands the NIC: the field holds the folded pseudo-header
// sum only (CHECKSUM_PARTIAL).
func partial(t *testing.T, frame []byte, l3, l4 int, csumOff int, v6 bool) []byte {
	t.Helper()
	f := append([]byte(nil), frame...)
	var sum uint32
	var l4len int
	var proto uint8
	if v6 {
		sum = sumBytes(0, f[l3+8:l3+40])
		l4len = int(binary.BigEndian.Uint16(f[l3+4:]))
		proto = f[l3+6]
	} else {
		sum = sumBytes(0, f[l3+12:l3+20])
		l4len = int(binary.BigEndian.Uint16(f[l3+2:])) - int(f[l3]&0x0f)*4
		proto = f[l3+9]
	}
	sum += uint32(proto) + uint32(l4len)
	binary.BigEndian.PutUint16(f[l4+csumOff:], ^fold(sum))
	return f
}

func TestCompleteChecksum(t *testing.T) {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	fl := capture.NewTCPFlow(cli, srv)
	hs := fl.Handshake()
	data := fl.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10})
	odd := fl.Send(false, []byte{1, 2, 3})
	udp := capture.UDPDatagram(cli, capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:20000")}, []byte("hello"))
	cli6 := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("[2001:db8::1]:40000")}
	srv6 := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("[2001:db8::2]:502")}
	fl6 := capture.NewTCPFlow(cli6, srv6)
	data6 := fl6.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10})

	for _, tc := range []struct {
		name    string
		frame   []byte
		csumOff int
		l4      int
		v6      bool
	}{
		{"tcp syn", hs[0], 16, 34, false},
		{"tcp data", data, 16, 34, false},
		{"tcp odd length", odd, 16, 34, false},
		{"udp", udp, 6, 34, false},
		{"tcp ipv6", data6, 16, 54, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := partial(t, tc.frame, 14, tc.l4, tc.csumOff, tc.v6)
			if bytes.Equal(p, tc.frame) {
				t.Fatal("test setup: partial frame equals the original")
			}
			if !CompleteChecksum(p) {
				t.Fatal("CompleteChecksum returned false")
			}
			if got, want := p, tc.frame; !bytes.Equal(got, want) {
				t.Errorf("got checksum %x, want %x", got[tc.l4+tc.csumOff:tc.l4+tc.csumOff+2], want[tc.l4+tc.csumOff:tc.l4+tc.csumOff+2])
			}
		})
	}
}

func TestCompleteChecksumRefuses(t *testing.T) {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	data := capture.NewTCPFlow(cli, srv).Send(true, []byte("abcdef"))
	frag := append([]byte(nil), data...)
	binary.BigEndian.PutUint16(frag[14+6:], 0x2000) // more fragments
	arp := append(make([]byte, 12), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"short ethernet", data[:10]},
		{"arp", arp},
		{"ipv4 fragment", frag},
		{"truncated ip", data[:30]},
		{"truncated tcp", data[:40]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]byte(nil), tc.frame...)
			if got := CompleteChecksum(tc.frame); got {
				t.Errorf("got true, want false")
			}
			if !bytes.Equal(before, tc.frame) {
				t.Errorf("frame modified")
			}
		})
	}
}

// TestSumBytesMatchesWordSum checks the 64-bit-word sum against the
// definition (16-bit big-endian words, odd byte padded) for every length
// up to 300 bytes and every start alignment, on bytes that make the sum
// carry often.
func TestSumBytesMatchesWordSum(t *testing.T) {
	ref := func(sum uint32, b []byte) uint16 {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
			sum = sum&0xffff + sum>>16
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
		return ^fold(sum)
	}
	buf := make([]byte, 310)
	x := uint32(2463534242)
	for i := range buf {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		buf[i] = byte(x) | 0xc0 // mostly high bits: many carries
	}
	for _, start := range []uint32{0, 0xffff, 0x1fffe} {
		for off := 0; off < 8; off++ {
			for n := 0; off+n <= 300; n++ {
				b := buf[off : off+n]
				if got, want := ^fold(sumBytes(start, b)), ref(start, b); got != want {
					t.Fatalf("start %#x off %d len %d: sum %#04x, want %#04x", start, off, n, got, want)
				}
			}
		}
	}
	ff := bytes.Repeat([]byte{0xff}, 1500)
	if got, want := ^fold(sumBytes(0, ff)), ref(0, ff); got != want {
		t.Errorf("1500 x 0xff: %#04x, want %#04x", got, want)
	}
}

func TestCompleteChecksumAllocs(t *testing.T) {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	data := capture.NewTCPFlow(cli, srv).Send(true, make([]byte, 100))
	if n := testing.AllocsPerRun(100, func() { CompleteChecksum(data) }); n != 0 {
		t.Errorf("got %v allocs per call, want 0", n)
	}
}

func BenchmarkCompleteChecksum(b *testing.B) {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	for _, size := range []int{12, 1460} {
		data := capture.NewTCPFlow(cli, srv).Send(true, make([]byte, size))
		b.Run("tcp"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				CompleteChecksum(data)
			}
		})
	}
}
