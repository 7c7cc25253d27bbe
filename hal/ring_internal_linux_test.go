package hal

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ring offsets are computed from the kernel's layout; these hold on
// every architecture (armv7 included), because struct tpacket2_hdr has no
// pointer- or long-sized field.
func TestRingLayout(t *testing.T) {
	if got := unsafe.Sizeof(unix.Tpacket2Hdr{}); got != 32 || unix.SizeofTpacket2Hdr != 32 {
		t.Errorf("sizeof(tpacket2_hdr) = %d (unix says %d), want 32", got, unix.SizeofTpacket2Hdr)
	}
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"tp_status", unsafe.Offsetof(unix.Tpacket2Hdr{}.Status), 0},
		{"tp_len", unsafe.Offsetof(unix.Tpacket2Hdr{}.Len), 4},
		{"tp_snaplen", unsafe.Offsetof(unix.Tpacket2Hdr{}.Snaplen), 8},
		{"tp_mac", unsafe.Offsetof(unix.Tpacket2Hdr{}.Mac), 12},
		{"tp_vlan_tci", unsafe.Offsetof(unix.Tpacket2Hdr{}.Vlan_tci), 24},
		{"tp_vlan_tpid", unsafe.Offsetof(unix.Tpacket2Hdr{}.Vlan_tpid), 26},
	} {
		if tc.got != tc.want {
			t.Errorf("offsetof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	// TPACKET2_HDRLEN = TPACKET_ALIGN(32) + sizeof(sockaddr_ll) = 52;
	// an Ethernet frame starts at TPACKET_ALIGN(52 + 16) - 14.
	if tpHdrLen != 32 || tpTxDataOff != 32 || tpPkttypeOff != 42 || tpRxMacOffMin != 66 {
		t.Errorf("offsets hdr %d tx %d pkttype %d mac %d", tpHdrLen, tpTxDataOff, tpPkttypeOff, tpRxMacOffMin)
	}
	if unix.SizeofSockaddrLinklayer != 20 {
		t.Errorf("sizeof(sockaddr_ll) = %d, want 20", unix.SizeofSockaddrLinklayer)
	}
}

func TestRingGeometry(t *testing.T) {
	for _, tc := range []struct {
		frame, n, page int
	}{
		{2048, 1024, 4096}, {2048, 256, 4096}, {2048, 1, 4096}, {2048, 1000, 16384},
		{9216, 100, 4096}, {2128, 1024, 4096}, {256, 32, 65536},
	} {
		r := ringGeometry(tc.frame, tc.n, tc.page)
		per := int(r.Block_size) / tc.frame
		switch {
		case int(r.Block_size)%tc.page != 0:
			t.Errorf("%+v: block %d not a multiple of the page", tc, r.Block_size)
		case int(r.Frame_size) != tc.frame || per == 0:
			t.Errorf("%+v: frame %d, %d per block", tc, r.Frame_size, per)
		case int(r.Frame_nr) != per*int(r.Block_nr):
			t.Errorf("%+v: frame_nr %d != %d blocks x %d", tc, r.Frame_nr, r.Block_nr, per)
		case int(r.Frame_nr) < tc.n:
			t.Errorf("%+v: %d frames, want at least %d", tc, r.Frame_nr, tc.n)
		}
	}
}
