package xdp

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// xdpMD is struct xdp_md (include/uapi/linux/bpf.h) as BPF_PROG_RUN's
// context input: the kernel requires data_end = len(data) and takes the
// ingress interface from it.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// skbMD is the head of struct __sk_buff (include/uapi/linux/bpf.h) up
// to ifindex, as BPF_PROG_RUN's context input for the tc program: the
// kernel zeroes the rest and takes the receiving device from ifindex.
type skbMD struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

// run runs the loaded program once on frame as if it arrived on side s
// (BPF_PROG_RUN, Documentation/bpf/bpf_prog_run.rst: no frame is sent).
// The tc program's verdicts are returned as the XDP program's
// (TC_ACT_REDIRECT as xdpRedirect, TCX_NEXT as xdpPass), so that the
// same tables check both.
func run(t *testing.T, b *FastPath, s Side, frame []byte, do func(func() error) error) uint32 {
	t.Helper()
	var ret uint32
	err := do(func() (err error) {
		opts := &ebpf.RunOptions{Data: frame, Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: b.ifindex[s]}}
		if b.modes[0] == ModeTC {
			opts.Context = skbMD{Ifindex: b.ifindex[s]}
		}
		ret, err = b.prog.Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	if b.modes[0] == ModeTC {
		switch int32(ret) {
		case tcActRedirect:
			return xdpRedirect
		case tcxNext:
			return xdpPass
		}
		t.Fatalf("tc program: verdict %d, want TC_ACT_REDIRECT or TCX_NEXT", int32(ret))
	}
	return ret
}

// TC_ACT_REDIRECT (include/uapi/linux/pkt_cls.h), bpf_redirect's return
// in a tc program.
const tcActRedirect = 7

func TestProgramVerdicts(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeTC} {
		for _, atomic := range []bool{true, false} {
			name := "atomic"
			if !atomic {
				name = "plain"
			}
			if mode == ModeTC {
				name = "tc " + name
			}
			t.Run(name, func(t *testing.T) { testProgramVerdicts(t, mode, atomic) })
		}
	}
}

func testProgramVerdicts(t *testing.T, mode Mode, atomic bool) {
	l := line(t)
	b := newFastPath(t, l, Config{Mode: mode, NonAtomicCounters: !atomic})
	if b.AtomicCounters() != atomic {
		t.Fatalf("AtomicCounters = %v, want %v", b.AtomicCounters(), atomic)
	}
	do := l.Gateway.Do
	k4 := tcpKey("192.0.2.1:40000", "192.0.2.2:5001")
	k6 := tcpKey("[2001:db8::1]:40000", "[2001:db8::2]:5001")
	ku := udpKey("192.0.2.1:40001", "192.0.2.2:9")
	for _, k := range []Key{k4, k6, ku} {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		side Side
		f    frameSpec
		want uint32
	}{
		{"ipv4 tcp forward", North, frameSpec{key: k4, tcpFlags: "A", payload: 100}, xdpRedirect},
		{"ipv4 tcp reverse", South, frameSpec{key: k4.Reverse(), tcpFlags: "A"}, xdpRedirect},
		{"ipv4 tcp with options", North, frameSpec{key: k4, tcpFlags: "PA", ihl: 7, payload: 3}, xdpRedirect},
		{"ipv6 tcp forward", North, frameSpec{key: k6, tcpFlags: "A", payload: 10}, xdpRedirect},
		{"ipv6 tcp reverse", South, frameSpec{key: k6.Reverse(), tcpFlags: "A"}, xdpRedirect},
		{"udp", North, frameSpec{key: ku, payload: 18}, xdpRedirect},
		{"udp reverse", South, frameSpec{key: ku.Reverse(), payload: 18}, xdpRedirect},
		{"wrong port", South, frameSpec{key: k4, tcpFlags: "A"}, xdpPass},
		{"unknown flow", North, frameSpec{key: tcpKey("192.0.2.1:40000", "192.0.2.2:5002"), tcpFlags: "A"}, xdpPass},
		{"udp as tcp", North, frameSpec{key: Key{Proto: ProtoTCP, Src: ku.Src, Dst: ku.Dst}, tcpFlags: "A"}, xdpPass},
		{"ipv4 fragment", North, frameSpec{key: k4, tcpFlags: "A", fragment: true}, xdpPass},
		{"ipv6 fragment header", North, frameSpec{key: k6, tcpFlags: "A", fragment: true}, xdpPass},
		{"vlan tagged", North, frameSpec{key: k4, tcpFlags: "A", vlan: true}, xdpPass},
	}
	for _, tc := range tests {
		if got := run(t, b, tc.side, frame(t, tc.f), do); got != tc.want {
			t.Errorf("%s: action %d, want %d", tc.name, got, tc.want)
		}
	}
	// Truncated and non-IP frames.
	full := frame(t, frameSpec{key: k4, tcpFlags: "A"})
	lens := []int{14, 14 + 19, 14 + 20 + 19}
	if mode == ModeTC {
		// BPF_PROG_RUN refuses an IPv4 sk_buff shorter than its IP
		// header. These take the second copy ("short") and fail again.
		lens = []int{14 + 20, 14 + 20 + 6, 14 + 20 + 19}
	}
	for _, n := range lens {
		if got := run(t, b, North, full[:n], do); got != xdpPass {
			t.Errorf("truncated to %d bytes: action %d, want pass", n, got)
		}
	}
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if got := run(t, b, North, arp, do); got != xdpPass {
		t.Errorf("ARP: action %d, want pass", got)
	}

	// Counters: forward of k4 saw 2 frames, reverse 1.
	f, err := b.Lookup(k4)
	if err != nil {
		t.Fatal(err)
	}
	f1, f2 := frame(t, frameSpec{key: k4, tcpFlags: "A", payload: 100}), frame(t, frameSpec{key: k4, tcpFlags: "PA", ihl: 7, payload: 3})
	if f.Forward.Packets != 2 || f.Forward.Bytes != uint64(len(f1)+len(f2)) || f.Reverse.Packets != 1 {
		t.Errorf("k4 counters %+v / %+v, want 2 packets %d bytes / 1 packet", f.Forward, f.Reverse, len(f1)+len(f2))
	}
	if f.Key != k4 || f.Egress != South || f.Closed {
		t.Errorf("Lookup(k4) = %+v", f)
	}
	if g, err := b.Lookup(k4.Reverse()); err != nil || g != f {
		t.Errorf("Lookup(reverse) = %+v, %v; want %+v", g, err, f)
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Redirected != 7 || st.WrongPort != 1 || st.NoMatch != 2 || st.Unparsed != 7 {
		t.Errorf("stats %+v, want 7 redirected, 1 wrong port, 2 no match, 7 unparsed", st)
	}

	// FIN, RST and SYN hand a flow back: the frame passes, both
	// directions are closed, and later frames of the flow pass too.
	for i, flags := range []string{"FA", "R", "S"} {
		k := tcpKey("192.0.2.1:41000", "192.0.2.2:5001")
		k.Src = netip.AddrPortFrom(k.Src.Addr(), uint16(41000+i))
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
		before, _ := b.Stats()
		if got := run(t, b, North, frame(t, frameSpec{key: k, tcpFlags: "A"}), do); got != xdpRedirect {
			t.Fatalf("%s: ACK before close: action %d, want redirect", flags, got)
		}
		if got := run(t, b, North, frame(t, frameSpec{key: k, tcpFlags: flags}), do); got != xdpPass {
			t.Errorf("%s: action %d, want pass", flags, got)
		}
		f, err := b.Lookup(k)
		if err != nil || !f.Closed || f.Forward.Packets != 1 {
			t.Errorf("%s: Lookup = %+v, %v; want closed with 1 forward packet", flags, f, err)
		}
		for _, fr := range []struct {
			side Side
			key  Key
		}{{North, k}, {South, k.Reverse()}} {
			if got := run(t, b, fr.side, frame(t, frameSpec{key: fr.key, tcpFlags: "A"}), do); got != xdpPass {
				t.Errorf("%s: %s after close: action %d, want pass", flags, fr.key, got)
			}
		}
		after, _ := b.Stats()
		if after.Closing-before.Closing != 1 || after.Closed-before.Closed != 2 || after.Redirected-before.Redirected != 1 {
			t.Errorf("%s: stats moved %+v -> %+v", flags, before, after)
		}
	}
}

// The program redirects only while the owner renews its lease: a frozen
// owner (renewal stopped here) stops the fast path when the lease runs
// out, before any detach; renewing resumes it.
func TestLease(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeTC} {
		t.Run(mode.String(), func(t *testing.T) { testLease(t, mode) })
	}
}

func testLease(t *testing.T, mode Mode) {
	l := line(t)
	// Long enough that the renewal goroutine (every lease/8) is not
	// starved past it on a loaded machine under -race.
	const lease = 500 * time.Millisecond
	b := newFastPath(t, l, Config{Lease: lease, Mode: mode})
	k := udpKey("192.0.2.1:40000", "192.0.2.2:9")
	if err := b.Add(k, South); err != nil {
		t.Fatal(err)
	}
	fr := frame(t, frameSpec{key: k, payload: 10})
	if got := run(t, b, North, fr, l.Gateway.Do); got != xdpRedirect {
		t.Fatalf("with the lease held: action %d, want redirect", got)
	}
	time.Sleep(2 * lease) // the renewal goroutine keeps it
	if got := run(t, b, North, fr, l.Gateway.Do); got != xdpRedirect {
		t.Fatalf("after 2 leases with renewal: action %d, want redirect", got)
	}
	close(b.stopRenew) // freeze the owner
	<-b.renewDone
	b.stopRenew = nil
	time.Sleep(lease + 20*time.Millisecond)
	if got := run(t, b, North, fr, l.Gateway.Do); got != xdpPass {
		t.Errorf("lease run out: action %d, want pass", got)
	}
	if st, _ := b.Stats(); st.Lapsed != 1 {
		t.Errorf("Lapsed = %d, want 1", st.Lapsed)
	}
	if err := b.renew(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, b, North, fr, l.Gateway.Do); got != xdpRedirect {
		t.Errorf("renewed: action %d, want redirect", got)
	}
}
