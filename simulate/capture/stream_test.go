package capture_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

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
