package capture_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/dissect"
)

// corpusFiles returns the captures of ../shared/pcaps in name order.
func corpusFiles(t *testing.T) []string {
	t.Helper()
	dir := testenv.Pcaps(t)
	var files []string
	for _, pat := range []string{"*.pcap", "*.pcapng"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) < 80 {
		t.Fatalf("found %d captures in %s, want the whole corpus", len(files), dir)
	}
	return files
}

type frameRec struct {
	link int
	orig int
	data string
}

func framesOf(t *testing.T, path string) ([]frameRec, capture.Summary) {
	t.Helper()
	var out []frameRec
	s, err := capture.Read(path, func(f *capture.Frame) error {
		out = append(out, frameRec{int(f.Link), f.OrigLen, string(f.Data)})
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	return out, s
}

var packetsRE = regexp.MustCompile(`Number of packets:\s+(\d+)`)

// capinfosCount returns the packet count capinfos reads from path.
func capinfosCount(t *testing.T, path string) int {
	t.Helper()
	out, _ := exec.Command(testenv.NeedCmd(t, "capinfos"), "-c", "-M", path).CombinedOutput()
	m := packetsRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("capinfos %s: %s", path, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// mergeCorpus concatenates the corpus files into one pcapng with
// Wireshark's mergecap (one interface per input file, so several link
// types in one section, and the files' times out of order).
func mergeCorpus(t *testing.T, files []string) string {
	t.Helper()
	merged := filepath.Join(t.TempDir(), "merged.pcapng")
	args := append([]string{"-a", "-F", "pcapng", "-w", merged}, files...)
	if out, err := exec.Command(testenv.NeedCmd(t, "mergecap"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mergecap: %v: %s", err, out)
	}
	return merged
}

// pdusOf returns the dissect JSON line of every PDU of the capture at path,
// with frame numbers counted from frameBase, and how many frames it has.
func pdusOf(t *testing.T, path string, frameBase int) ([]string, capture.Stats) {
	t.Helper()
	var out []string
	st, err := dissect.Run(path, dissect.Options{}, func(p *dissect.PDU) error {
		p.Frame += frameBase
		b, err := p.AppendJSON(nil)
		out = append(out, string(b))
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	return out, st
}

// TestMergedCorpusSamePDUs: dissecting the merged corpus gives exactly the
// PDUs, in order and field for field (frame numbers shifted by the frames
// of the files before), that dissecting the files one by one gives. The
// corpus reuses 4-tuples across files (one DNP3 connection captured in
// six pieces, the same loopback ports on different days, a derived file
// with the same ISNs): each piece must start a connection of its own, as
// in its own file, not continue (or be discarded as a retransmission of)
// the piece before.
func TestMergedCorpusSamePDUs(t *testing.T) {
	files := corpusFiles(t)
	merged := mergeCorpus(t, files)
	var want []string
	base := 0
	for _, f := range files {
		p, st := pdusOf(t, f, base)
		want = append(want, p...)
		base += st.Frames
	}
	got, st := pdusOf(t, merged, 0)
	if st.Frames != base {
		t.Fatalf("merged: %d frames, files one by one: %d", st.Frames, base)
	}
	if st.Reused == 0 {
		t.Errorf("merged: no 4-tuple reused (%s); the test no longer covers the class", st)
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("PDU %d differs:\n got %s\nwant %s", i+1, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("merged: %d PDUs, files one by one: %d", len(got), len(want))
	}
	t.Logf("%d PDUs in %d frames; %s", len(got), st.Frames, st)
}

// TestMergedCorpusSameFrames: the whole corpus concatenated into one
// pcapng by Wireshark's mergecap (one interface per input file, so several
// link types in one section) gives exactly the frames, in order and byte
// for byte with their link types, that reading the files one by one gives,
// and as many as capinfos counts.
func TestMergedCorpusSameFrames(t *testing.T) {
	files := corpusFiles(t)
	merged := mergeCorpus(t, files)
	var want []frameRec
	links := map[int]bool{}
	for _, f := range files {
		fr, s := framesOf(t, f)
		if s.Damaged != 0 {
			t.Errorf("%s: %s", filepath.Base(f), s.Warning())
		}
		for _, r := range fr {
			links[r.link] = true
		}
		want = append(want, fr...)
	}
	if len(links) < 2 {
		t.Fatalf("the corpus has link types %v; the test needs at least two", links)
	}
	got, s := framesOf(t, merged)
	if s.Damaged != 0 {
		t.Errorf("merged: %s", s.Warning())
	}
	if len(got) != len(want) {
		t.Fatalf("merged: %d frames, files one by one: %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d differs: link %d orig %d len %d, want link %d orig %d len %d",
				i+1, got[i].link, got[i].orig, len(got[i].data), want[i].link, want[i].orig, len(want[i].data))
		}
	}
	if n := capinfosCount(t, merged); n != len(got) {
		t.Errorf("capinfos counts %d packets, we read %d", n, len(got))
	}
	t.Logf("%d files, %d frames, link types %v", len(files), len(got), links)
}

// TestTruncatedLikeTshark cuts real captures (pcap and pcapng) inside a
// record: we read the frames tshark reads, byte for byte the first frames
// of the whole file, and report the damage.
func TestTruncatedLikeTshark(t *testing.T) {
	files := corpusFiles(t)
	var pick []string
	for _, ext := range []string{".pcap", ".pcapng"} {
		best, size := "", int64(0)
		for _, f := range files {
			if st, err := os.Stat(f); err == nil && filepath.Ext(f) == ext && st.Size() > size && st.Size() < 4<<20 {
				best, size = f, st.Size()
			}
		}
		pick = append(pick, best)
	}
	for _, f := range pick {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			whole, _ := framesOf(t, f)
			for _, frac := range []int{3, 2} {
				cut := filepath.Join(t.TempDir(), "cut"+filepath.Ext(f))
				n := len(b) * (frac - 1) / frac
				if err := os.WriteFile(cut, b[:n], 0o644); err != nil {
					t.Fatal(err)
				}
				got, s := framesOf(t, cut)
				out, _ := exec.Command(testenv.NeedCmd(t, "tshark"), "-r", cut, "-T", "fields", "-e", "frame.number").Output()
				tshark := len(strings.Fields(string(out)))
				if len(got) != tshark || tshark == 0 {
					t.Errorf("cut at %d of %d bytes: read %d frames, tshark %d", n, len(b), len(got), tshark)
				}
				for i := range got {
					if got[i] != whole[i] {
						t.Fatalf("cut at %d: frame %d differs from the whole file's", n, i+1)
					}
				}
				if s.Damaged != 1 || s.Lost == 0 || s.Bytes != int64(n) {
					t.Errorf("cut at %d: summary %+v, want one damage", n, s)
				}
				if !bytes.Contains([]byte(s.Warning()), []byte("truncated")) {
					t.Errorf("warning %q does not say truncated", s.Warning())
				}
			}
		})
	}
}

// TestSameAsPcapgoOnCorpus: on every sample capture (each with one link
// type, where gopacket's pcapgo reads them right) our reader gives the
// same frames: bytes, lengths, link types and timestamps.
func TestSameAsPcapgoOnCorpus(t *testing.T) {
	for _, f := range corpusFiles(t) {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		var next func() ([]byte, gopacket.CaptureInfo, layers.LinkType, error)
		if strings.HasSuffix(f, ".pcapng") {
			r, err := pcapgo.NewNgReader(fh, pcapgo.DefaultNgReaderOptions)
			if err != nil {
				t.Fatal(err)
			}
			next = func() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
				b, ci, err := r.ReadPacketData()
				return b, ci, r.LinkType(), err
			}
		} else {
			r, err := pcapgo.NewReader(fh)
			if err != nil {
				t.Fatal(err)
			}
			next = func() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
				b, ci, err := r.ReadPacketData()
				return b, ci, r.LinkType(), err
			}
		}
		n := 0
		_, err = capture.Read(f, func(fr *capture.Frame) error {
			n++
			b, ci, lt, err := next()
			if err != nil {
				return fmt.Errorf("frame %d: pcapgo: %v", n, err)
			}
			if string(b) != string(fr.Data) || ci.Length != fr.OrigLen || int(lt) != int(fr.Link) || !ci.Timestamp.Equal(fr.Time) {
				return fmt.Errorf("frame %d: got link %d len %d orig %d at %v; pcapgo link %d len %d orig %d at %v",
					n, fr.Link, len(fr.Data), fr.OrigLen, fr.Time, lt, len(b), ci.Length, ci.Timestamp)
			}
			return nil
		})
		if err == nil {
			if _, _, _, perr := next(); perr != io.EOF {
				err = fmt.Errorf("pcapgo has more frames after %d (%v)", n, perr)
			}
		}
		fh.Close()
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}
