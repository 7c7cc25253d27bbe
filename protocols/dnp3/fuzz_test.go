package dnp3

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// seedFrames returns every link frame of the generated testdata captures'
// payloads: the seeds of the fuzz targets. The captures are read raw (the
// DNP3 bytes are found by the framer) so seeding does not depend on
// simulate/capture.
func seedFrames(f *testing.F) [][]byte {
	f.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	var out [][]byte
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for i := 0; i+1 < len(b); i++ {
			if b[i] != start0 || b[i+1] != start1 {
				continue
			}
			if n, _, err := (Framer{}).Next(b[i:]); err == nil && n > 0 {
				out = append(out, bytes.Clone(b[i:i+n]))
			}
		}
	}
	if len(out) == 0 {
		f.Fatal("no seed frames in testdata (run TestGenerated -update)")
	}
	return out
}

// FuzzLinkFrame: Decode never panics; a frame that decodes cleanly
// re-encodes to the same bytes; an error leaves no user data.
func FuzzLinkFrame(f *testing.F) {
	for _, s := range seedFrames(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var lf LinkFrame
		err := lf.Decode(b)
		if err != nil {
			if len(lf.UserData()) != 0 {
				t.Fatalf("error %v with %d octets of user data", err, len(lf.UserData()))
			}
			return
		}
		re := AppendLinkFrame(nil, lf.Control, lf.Dst, lf.Src, lf.UserData())
		if !bytes.Equal(re, b[:len(re)]) {
			t.Fatalf("round trip differs:\n in %x\nout %x", b[:len(re)], re)
		}
		if n, _, ferr := (Framer{}).Next(b); ferr != nil || n != len(re) {
			t.Fatalf("Framer.Next = %d, %v for a frame Decode accepts (%d octets)", n, ferr, len(re))
		}
	})
}

// FuzzDecode fuzzes Fragment.Decode with application fragments: the
// testdata frames' reassembled fragments as seeds.
func FuzzDecode(f *testing.F) {
	for _, s := range seedFrames(f) {
		var lf LinkFrame
		if lf.Decode(s) == nil && len(lf.UserData()) > 1 && lf.UserData()[0]&TransportFIR != 0 {
			f.Add(bytes.Clone(lf.UserData()[1:]), lf.FromMaster())
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, fromMaster bool) {
		var fr Fragment
		err := fr.Decode(b, fromMaster)
		if fr.NumObjects < 0 || fr.NumObjects > MaxObjects {
			t.Fatalf("NumObjects %d", fr.NumObjects)
		}
		if (err != nil) != (fr.Anomaly != AnomalyNone && fr.Anomaly != AnomalyWrongDirection) {
			t.Fatalf("err %v with anomaly %v", err, fr.Anomaly)
		}
		for _, h := range fr.Headers() {
			if h.IsRange() && h.Start > h.Stop && fr.Anomaly != AnomalyBadRange {
				t.Fatalf("header %+v with start > stop and anomaly %v", h, fr.Anomaly)
			}
		}
	})
}

// FuzzConn feeds arbitrary bytes, split at an arbitrary point, through a
// Session: no panic, every Record is a link frame or carries an anomaly, and
// splitting the input does not change the Records.
func FuzzConn(f *testing.F) {
	seeds := seedFrames(f)
	for i, s := range seeds {
		next := seeds[(i+1)%len(seeds)]
		f.Add(append(bytes.Clone(s), next...), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		run := func(parts ...[]byte) []string {
			c := newTCP()
			var out []string
			for _, p := range parts {
				feed(c, protocols.Request, p, false, func(r protocols.Record) {
					_, link := r.Get("link_src")
					if !link && r.Anomaly == "" {
						t.Fatalf("record without link fields and without anomaly")
					}
					out = append(out, r.Anomaly+string(rune(len(r.Fields))))
				})
			}
			return out
		}
		whole := run(b)
		k := min(int(split), len(b))
		parts := run(b[:k], b[k:])
		// Bad-start records may merge or split at the cut; compare frames.
		if countLinks(whole) != countLinks(parts) {
			t.Fatalf("split at %d changed frames: %q vs %q", k, whole, parts)
		}
	})
}

func countLinks(recs []string) int {
	n := 0
	for _, r := range recs {
		if len(r) > 0 && r[len(r)-1] != 0 {
			n++
		}
	}
	return n
}
