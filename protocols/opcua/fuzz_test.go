package opcua

import (
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

// seeds returns the encoder samples and every chunk of the generated
// testdata captures (one seed per segment payload).
func seeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, b := range samples() {
		out = append(out, b)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	for _, file := range files {
		_, err := capture.ReadStreams(file, capture.Options{}, func(s *capture.Segment) error {
			if len(s.Payload) > 0 {
				out = append(out, append([]byte(nil), s.Payload...))
			}
			return nil
		})
		if err != nil {
			f.Fatal(err)
		}
	}
	return out
}

func FuzzFramer(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s, uint32(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, maxChunk uint32) {
		fr := Framer{MaxChunkSize: maxChunk}
		n, need, err := fr.Next(b)
		switch {
		case err != nil:
			if n != 0 || need != 0 || AnomalyOf(err) == AnomalyNone {
				t.Fatalf("error %v with n=%d need=%d", err, n, need)
			}
		case n > 0:
			if n > len(b) || need != 0 || n < HeaderLen {
				t.Fatalf("n=%d need=%d len=%d", n, need, len(b))
			}
		case need <= 0:
			t.Fatalf("no progress: n=0 need=%d", need)
		}
	})
}

// FuzzDecode checks that Decode never panics, that err is set exactly when
// Anomaly is, and that a well-formed chunk decodes the same after a
// re-encode of its header fields (size, type) round trip.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m, m2 Message
		err := m.Decode(b)
		if (err != nil) != (m.Anomaly != AnomalyNone) || AnomalyOf(err) != m.Anomaly {
			t.Fatalf("err %v but anomaly %v", err, m.Anomaly)
		}
		if m.NumNodes < 0 || m.NumNodes > MaxNodes {
			t.Fatalf("NumNodes %d", m.NumNodes)
		}
		_ = m2.DecodeHeaders(b)
		if err == nil {
			var fr Framer
			fr.MaxChunkSize = HardMaxChunkSize
			if n, _, ferr := fr.Next(b); m.Type != TypeHEL && m.Type != TypeACK && m.Type != TypeERR && m.Type != TypeRHE && (ferr != nil || n != len(b)) {
				t.Fatalf("Decode accepted a chunk the Framer rejects: n=%d err=%v", n, ferr)
			}
			if m2.Type != m.Type || m2.Size != m.Size || m2.ChannelID != m.ChannelID {
				t.Fatalf("DecodeHeaders disagrees on the header")
			}
		}
		for i := 0; i < m.NumNodes; i++ {
			_ = m.Nodes[i].String()
		}
	})
}

// FuzzConn feeds arbitrary bytes, split at an arbitrary point and in both
// directions, through a Session: it must not panic, and records are bounded
// by the bytes fed (every record consumes at least one byte).
func FuzzConn(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s, uint16(len(s)/2), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, split uint16, gap bool) {
		c := newSession()
		records := 0
		emit := func(protocols.Record) { records++ }
		cut := min(int(split), len(b))
		feed(c, protocols.Request, b[:cut], false, emit)
		feed(c, protocols.Response, b, gap, emit)
		feed(c, protocols.Request, b[cut:], gap, emit)
		if records > 2*len(b)+1 {
			t.Fatalf("%d records from %d bytes", records, 2*len(b))
		}
	})
}
