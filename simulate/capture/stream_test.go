package capture_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/simulate/capture"
)

// outOfOrder returns the frames of one connection whose client sends n
// segments of segLen bytes, the first one last and the others shuffled, so
// that all but one are held out of order until the end; and the stream
// the server's application reads.
func outOfOrder(n, segLen int) (frames [][]byte, want []byte) {
	f := capture.NewTCPFlow(cli, srv)
	frames = f.Handshake()
	base, ack := f.NextSeq(true), f.NextSeq(false)
	segs := make([][]byte, n)
	for i := range segs {
		p := make([]byte, segLen)
		binary.BigEndian.PutUint32(p, uint32(i))
		want = append(want, p...)
		segs[i] = f.Segment(true, base+uint32(i*segLen), ack, capture.TCPFlags{ACK: true, PSH: true}, p)
	}
	rest := segs[1:]
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	frames = append(frames, rest...)
	return append(frames, segs[0]), want
}

// reassemble feeds frames to a Reassembler and returns the stream of the
// client's direction and how many segments had Gap set.
func reassemble(tb testing.TB, frames [][]byte, opts capture.Options) (got []byte, gaps int) {
	tb.Helper()
	r := capture.NewReassembler(opts, func(s *capture.Segment) error {
		if s.Src == cli.Addr {
			got = append(got, s.Payload...)
		}
		if s.Gap {
			gaps++
		}
		return nil
	})
	var fr capture.Frame
	for i, b := range frames {
		fr = capture.Frame{Index: i + 1, Link: packet.LinkEthernet, Data: b}
		if err := r.Frame(&fr); err != nil {
			tb.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		tb.Fatal(err)
	}
	return got, gaps
}

// TestManyOutOfOrderSegments: 160,000 segments held out of order come out
// as the exact stream, without gaps. (Re-sorting the held list on every
// insert made this quadratic: 80k segments took 12.9 s; the heap makes it
// n log n, see BenchmarkOutOfOrder.)
func TestManyOutOfOrderSegments(t *testing.T) {
	n := 160_000
	if testing.Short() {
		n = 20_000
	}
	frames, want := outOfOrder(n, 8)
	got, gaps := reassemble(t, frames, capture.Options{MaxBuffered: 8 * n})
	if !bytes.Equal(got, want) || gaps != 0 {
		t.Fatalf("got %d bytes (%d gaps), want the %d-byte stream without gaps", len(got), gaps, len(want))
	}
}

// TestHeldSegmentsFirstArrivalWins: of two held segments at the same
// sequence number, the one captured first is delivered (as before the
// heap: the sort was stable).
func TestHeldSegmentsFirstArrivalWins(t *testing.T) {
	f := capture.NewTCPFlow(cli, srv)
	frames := f.Handshake()
	s, a := f.NextSeq(true), f.NextSeq(false)
	fl := capture.TCPFlags{ACK: true, PSH: true}
	frames = append(frames,
		f.Segment(true, s+6, a, fl, []byte("333")),
		f.Segment(true, s+3, a, fl, []byte("XYZ")),
		f.Segment(true, s+3, a, fl, []byte("ghi")),
		f.Segment(true, s, a, fl, []byte("def")))
	got, gaps := reassemble(t, frames, capture.Options{})
	if string(got) != "defXYZ333" || gaps != 0 {
		t.Fatalf("got %q (%d gaps), want defXYZ333", got, gaps)
	}
}

// BenchmarkOutOfOrder reassembles one connection of 160,000 out-of-order
// segments per iteration.
func BenchmarkOutOfOrder(b *testing.B) {
	n := 160_000
	frames, want := outOfOrder(n, 8)
	b.ReportAllocs()
	for b.Loop() {
		got, _ := reassemble(b, frames, capture.Options{MaxBuffered: 8 * n})
		if len(got) != len(want) {
			b.Fatalf("got %d bytes, want %d", len(got), len(want))
		}
	}
}

// timed is a frame and when it was captured (seconds from the start).
type timed struct {
	at   float64
	data []byte
}

// segsOf feeds frames to a Reassembler and returns what it delivers, one
// "conn:src>dst:payload" string per segment ("c" the client, "s" the
// server), and its statistics.
func segsOf(t *testing.T, frames []timed) ([]string, capture.Stats) {
	t.Helper()
	var out []string
	r := capture.NewReassembler(capture.Options{}, func(s *capture.Segment) error {
		from, to := "s", "c"
		if s.Src == cli.Addr {
			from, to = "c", "s"
		}
		gap := ""
		if s.Gap {
			gap = " gap"
		}
		out = append(out, fmt.Sprintf("%d:%s>%s:%s%s", s.Conn, from, to, s.Payload, gap))
		return nil
	})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, f := range frames {
		fr := capture.Frame{Index: i + 1, Link: packet.LinkEthernet, Data: f.data,
			Time: t0.Add(time.Duration(f.at * float64(time.Second)))}
		if err := r.Frame(&fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	return out, r.Stats()
}

// at stamps frames with one time.
func at(sec float64, frames ...[]byte) []timed {
	out := make([]timed, len(frames))
	for i, f := range frames {
		out[i] = timed{sec, f}
	}
	return out
}

// TestReusedFourTuple: a 4-tuple that carries a second connection (or UDP
// flow) starts a new stream exactly when a receiving stack would take it
// for a new connection, and not otherwise.
func TestReusedFourTuple(t *testing.T) {
	fin := capture.TCPFlags{ACK: true, FIN: true}
	tests := []struct {
		name   string
		frames func() []timed
		want   []string
		reused int
	}{{
		name: "syn after both fins, same isn",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			fr = append(fr, at(1, f.Send(true, []byte("a")), f.Send(false, []byte("b")),
				f.Segment(true, f.NextSeq(true), f.NextSeq(false), fin, nil),
				f.Segment(false, f.NextSeq(false), f.NextSeq(true)+1, fin, nil))...)
			g := capture.NewTCPFlow(cli, srv) // the same ISNs again
			fr = append(fr, at(2, g.Handshake()...)...)
			return append(fr, at(3, g.Send(true, []byte("c")), g.Send(false, []byte("d")))...)
		},
		want:   []string{"1:c>s:a", "1:s>c:b", "2:c>s:c", "2:s>c:d"},
		reused: 1,
	}, {
		name: "syn after rst",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			fr = append(fr, at(1, f.Send(true, []byte("a")),
				f.Segment(false, f.NextSeq(false), 0, capture.TCPFlags{RST: true}, nil))...)
			g := capture.NewTCPFlow(cli, srv)
			g.Advance(true, 7)
			fr = append(fr, at(1.5, g.Handshake()...)...)
			return append(fr, at(2, g.Send(true, []byte("c")))...)
		},
		want:   []string{"1:c>s:a", "2:c>s:c"},
		reused: 1,
	}, {
		name: "retransmitted syn keeps the connection",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			hs := f.Handshake()
			fr := at(0, hs...)
			fr = append(fr, at(1, f.Send(true, []byte("a")), hs[0], f.Send(true, []byte("b")))...)
			return fr
		},
		want: []string{"1:c>s:a", "1:c>s:b"},
	}, {
		name: "syn in the window of an open connection is not a new one",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			fr = append(fr, at(1, f.Send(true, []byte("a")),
				f.Segment(true, f.NextSeq(true)+100, 0, capture.TCPFlags{SYN: true}, nil),
				f.Send(true, []byte("b")))...)
			return fr
		},
		want: []string{"1:c>s:a", "1:c>s:b"},
	}, {
		name: "syn outside the window of an open connection is a new one",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			fr = append(fr, at(1, f.Send(true, []byte("a")))...)
			g := capture.NewTCPFlow(cli, srv)
			g.Advance(true, 1<<20)
			fr = append(fr, at(2, g.Handshake()...)...)
			return append(fr, at(3, g.Send(true, []byte("c")), f.Send(true, []byte("stale")))...)
		},
		want:   []string{"1:c>s:a", "2:c>s:c"},
		reused: 1,
	}, {
		name: "idle beyond the open-connection timeout",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			fr = append(fr, at(1, f.Send(true, []byte("a")))...)
			f.Advance(true, 10) // the capture missed bytes, then the connection is picked up again
			return append(fr, at(3602, f.Send(true, []byte("b")))...)
		},
		want:   []string{"1:c>s:a", "2:c>s:b gap"},
		reused: 1,
	}, {
		name: "an hour's idleness short of the timeout keeps the stream",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			return append(fr, at(1, f.Send(true, []byte("a")))[0], at(3500, f.Send(true, []byte("b")))[0])
		},
		want: []string{"1:c>s:a", "1:c>s:b"},
	}, {
		name: "time running backwards is another capture",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			f.Advance(true, 500)
			fr := at(100, f.Send(true, []byte("later")))
			g := capture.NewTCPFlow(cli, srv) // earlier bytes of the same connection
			return append(fr, at(10, g.Send(true, []byte("earlier")))...)
		},
		want:   []string{"1:c>s:later gap", "2:c>s:earlier gap"},
		reused: 1,
	}, {
		name: "udp flow idle beyond its timeout",
		frames: func() []timed {
			return []timed{
				{0, capture.UDPDatagram(cli, srv, []byte("a"))},
				{100, capture.UDPDatagram(srv, cli, []byte("b"))},
				{221, capture.UDPDatagram(cli, srv, []byte("c"))},
			}
		},
		want:   []string{"1:c>s:a", "1:s>c:b", "2:c>s:c"},
		reused: 1,
	}, {
		name: "a hole the peer acknowledges: the peer's bytes first, with their own direction",
		frames: func() []timed {
			f := capture.NewTCPFlow(cli, srv)
			fr := at(0, f.Handshake()...)
			f.Advance(true, 5)  // lost: client bytes
			f.Advance(false, 5) // lost: server bytes
			q := f.Send(true, []byte("req"))
			r := f.Send(false, []byte("resp")) // acknowledges the lost and the held client bytes
			n := f.Send(true, []byte("next"))  // acknowledges the server's
			return append(fr, at(1, q, r, n)...)
		},
		want: []string{"1:c>s:req gap", "1:s>c:resp gap", "1:c>s:next"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st := segsOf(t, tt.frames())
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			if st.Reused != tt.reused {
				t.Errorf("reused %d, want %d", st.Reused, tt.reused)
			}
		})
	}
}
