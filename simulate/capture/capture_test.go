package capture_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

var (
	cli = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	srv = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
)

// write builds a pcap from frames in a temp dir and returns its path.
func write(t *testing.T, frames [][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := capture.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type got struct {
	frame   int
	client  bool
	payload string
	gap     bool
}

func streams(t *testing.T, path string) ([]got, capture.Stats) {
	t.Helper()
	var out []got
	st, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		out = append(out, got{s.Frame, s.Src == cli.Addr, string(s.Payload), s.Gap})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, st
}

func TestReassemblyInOrderOutOfOrderAndRetransmission(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	frames := f.Handshake()                              // frames 1-3
	frames = append(frames, f.Send(true, []byte("abc"))) // 4
	s1 := f.NextSeq(true)                                //
	seg2 := f.Segment(true, s1+3, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, []byte("ghi"))
	seg1 := f.Segment(true, s1, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, []byte("def"))
	f.Advance(true, 6)
	frames = append(frames, seg2, seg1) // 5 (held), 6 (fills the hole)
	frames = append(frames, seg1)       // 7: pure retransmission
	// 8: overlap: old "ghi" plus new "jk"
	frames = append(frames, f.Segment(true, s1+3, f.NextSeq(false), capture.TCPFlags{ACK: true}, []byte("ghijk")))
	f.Advance(true, 2)
	frames = append(frames, f.Send(false, []byte("RESP"))) // 9
	g, st := streams(t, write(t, frames))
	want := []got{
		{4, true, "abc", false},
		{6, true, "def", false},
		{6, true, "ghi", false},
		{8, true, "jk", false},
		{9, false, "RESP", false},
	}
	if len(g) != len(want) {
		t.Fatalf("got %d segments %+v, want %+v", len(g), g, want)
	}
	for i := range want {
		if g[i] != want[i] {
			t.Errorf("segment %d: got %+v, want %+v", i, g[i], want[i])
		}
	}
	if st.Retransmit != 1 {
		t.Errorf("retransmissions: got %d, want 1", st.Retransmit)
	}
}

func TestMidStreamPickupIsAGap(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	f.Handshake() // not captured
	g, _ := streams(t, write(t, [][]byte{f.Send(true, []byte("xyz"))}))
	if len(g) != 1 || !g[0].gap || g[0].payload != "xyz" {
		t.Fatalf("got %+v, want one segment xyz with gap", g)
	}
}

func TestHoleAckedByPeerBecomesGap(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	frames := f.Handshake()
	f.Send(true, []byte("lost")) // never captured
	frames = append(frames, f.Send(true, []byte("after")))
	// The server acknowledges everything: the hole will never fill.
	frames = append(frames, f.Segment(false, f.NextSeq(false), f.NextSeq(true), capture.TCPFlags{ACK: true}, nil))
	g, st := streams(t, write(t, frames))
	if len(g) != 1 || g[0].payload != "after" || !g[0].gap || g[0].frame != 4 {
		t.Fatalf("got %+v, want 'after' from frame 4 with gap", g)
	}
	if st.Gaps != 1 {
		t.Errorf("gaps: got %d, want 1", st.Gaps)
	}
}

func TestUDPAndIPv6AndVLAN(t *testing.T) {
	c6 := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("[2001:db8::1]:40001")}
	s6 := capture.Endpoint{MAC: capture.MAC(4), Addr: netip.MustParseAddrPort("[2001:db8::2]:4840")}
	f6 := capture.NewTCPFlow(c6, s6)
	fv := capture.NewTCPFlow(cli, srv)
	fv.VLAN = 42
	frames := append(f6.Handshake(), f6.Send(true, []byte("HEL")))
	frames = append(frames, fv.Handshake()...)
	frames = append(frames, fv.Send(true, []byte("vlan")))
	du := capture.Endpoint{MAC: capture.MAC(5), Addr: netip.MustParseAddrPort("198.51.100.1:20000")}
	frames = append(frames, capture.UDPDatagram(cli, du, []byte("dnp")))
	var seen []string
	_, err := capture.ReadStreams(write(t, frames), capture.Options{}, func(s *capture.Segment) error {
		seen = append(seen, s.Transport+":"+s.Dst.String()+":"+string(s.Payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "tcp:[2001:db8::2]:4840:HEL|tcp:192.0.2.10:502:vlan|udp:198.51.100.1:20000:dnp"
	if g := strings.Join(seen, "|"); g != want {
		t.Fatalf("got %s, want %s", g, want)
	}
}

func TestBadFilesNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	notpcap := filepath.Join(dir, "notes.pcap")
	os.WriteFile(notpcap, []byte("hello world, not a capture"), 0o644)
	_, err := capture.ReadStreams(notpcap, capture.Options{}, func(*capture.Segment) error { return nil })
	if !errors.Is(err, capture.ErrFormat) || !strings.Contains(err.Error(), "notes.pcap") {
		t.Errorf("not a pcap: got %v, want ErrFormat naming the file", err)
	}
	// A truncated record is read up to the damage, which the statistics
	// name (offset, the frame before it, bytes lost).
	f := capture.NewTCPFlow(cli, srv)
	good := write(t, f.Handshake())
	b, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.pcap")
	os.WriteFile(trunc, b[:len(b)-10], 0o644)
	st, err := capture.ReadStreams(trunc, capture.Options{}, func(*capture.Segment) error { return nil })
	if err != nil || st.Frames != 2 || !strings.Contains(st.String(), "offset 176 after frame 2: truncated record: 50 of 60 bytes") {
		t.Errorf("truncated: got %v, %v, want 2 frames and the damage after frame 2", st, err)
	}
	if err := capture.ReadFrames(trunc, func(*capture.Frame) error { return nil }); !errors.Is(err, capture.ErrDamaged) {
		t.Errorf("ReadFrames of a truncated capture: got %v, want ErrDamaged", err)
	}
}

// TestSharedCorpusReads reads every capture in ../shared/pcaps (pcap and
// pcapng, Ethernet and BSD loopback, IPv4 and IPv6) without error and
// without undecodable frames.
func TestSharedCorpusReads(t *testing.T) {
	dir := testenv.Pcaps(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap*"))
	if len(files) < 80 {
		t.Fatalf("found %d captures in %s, want the whole corpus", len(files), dir)
	}
	for _, f := range files {
		n := 0
		st, err := capture.ReadStreams(f, capture.Options{}, func(*capture.Segment) error { n++; return nil })
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		if st.Undecodable != 0 || n == 0 {
			t.Errorf("%s: %v, %d segments", filepath.Base(f), st, n)
		}
	}
}
