package dnp3

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

// truthRow is what the truth test compares for one DNP3 link frame: the
// columns of the shared corpus' *.truth.csv (see ../shared/pcaps/README.md).
type truthRow struct {
	Frame   int
	LinkSrc string
	LinkDst string
	LinkFn  string // P<n> / S<n>
	Func    string // application function code, empty without a complete fragment
	Objects string // g<g>v<v> q=0x.. [a-b] / n=N, joined with ';'
	IIN     string // 0xHHHH for responses
	CRCErr  string // "1" when a CRC is bad
}

func (r truthRow) String() string {
	return fmt.Sprintf("frame %d %s->%s %s fc=%q iin=%q crc=%s objs=%q",
		r.Frame, r.LinkSrc, r.LinkDst, r.LinkFn, r.Func, r.IIN, r.CRCErr, r.Objects)
}

// truthException documents one frame where this parser and tshark 4.0
// disagree for a reason that is tshark's or the capture's, with the field
// that differs and the reason. The test fails if the listed frame agrees
// (a stale entry) or disagrees in another field.
type truthException struct {
	file, field string
	frame       int
	reason      string
}

var truthExceptions = []truthException{
	// tshark 4.0 lists object headers only for some function codes; STOP_APPL
	// (18) and ASSIGN_CLASS (22) carry object headers too (IEEE 1815-2012
	// clause 4.4.18 g90 application identifiers, clause 4.4.22 class
	// assignment headers), which this parser itemises.
	{"dnp3_digitalbond_test_data_part1", "objects", 163, "tshark does not itemise STOP_APPL objects"},
	{"dnp3_digitalbond_test_data_part1", "objects", 166, "tshark does not itemise STOP_APPL objects"},
	{"dnp3_digitalbond_test_data_part1", "objects", 174, "tshark does not itemise STOP_APPL objects"},
	{"dnp3_digitalbond_test_data_part1", "objects", 176, "tshark does not itemise STOP_APPL objects"},
	{"dnp3_iti_assign_class", "objects", 1, "tshark does not itemise ASSIGN_CLASS objects"},
	// Secure Authentication (IEEE 1815-2012 clause 7, g120 in A.45): tshark
	// does not itemise g120 objects, and does not show the IIN of
	// AUTHENTICATE_RESP (131), which is a response with IIN (clause 4.2.2.6).
	{"dnp3_iti_auth_control_challenge_response", "iin,objects", 2, "tshark shows neither IIN nor g120v1 of FC 131"},
	{"dnp3_iti_auth_control_challenge_response", "objects", 3, "tshark does not itemise g120v2 of FC 32"},
	// Transport sequence numbers count modulo 64 (IEEE 1815-2012 clause
	// 8.2.1.2): 63 is followed by 0. tshark 4.0 does not complete a
	// fragment whose segments wrap from 63 to 0, so it reports no
	// application layer where the outstation's fragment completes.
	{"dnp3_icsnpp_dnp3_example", "app", 18, "tshark does not reassemble across transport seq 63->0"},
	{"dnp3_icsnpp_dnp3_example", "app", 114, "tshark does not reassemble across transport seq 63->0"},
	{"dnp3_icsnpp_dnp3_example", "app", 210, "tshark does not reassemble across transport seq 63->0"},
	{"dnp3_icsnpp_dnp3_example", "app", 810, "tshark does not reassemble across transport seq 62,63->0"},
	// A single FIR+FIN segment with seq 0 right after one with seq 63: the
	// bytes are AC 0xc8, FC 0x81, IIN 0x0000, g12v1 q=0x17 n=1 (a RESPONSE
	// to the OPERATE in frame 310); tshark 4.0 reports a CONFIRM, from
	// stale reassembly state.
	{"dnp3_icsnpp_dnp3_example", "app", 311, "tshark reports CONFIRM for a RESPONSE after seq 63->0"},
}

// otherRecord is an expected Record that is not a link frame: bytes the
// framer rejected. tshark has no row for them.
type otherRecord struct {
	file    string
	frame   int
	anomaly string
	reason  string
}

var expectedOther = []otherRecord{
	{"dnp3_digitalbond_test_data_part1", 19, "bad_start", "start octets 0x05 0x05 (clause 9.2.4.1.1); tshark does not dissect it"},
	{"dnp3_digitalbond_test_data_part1", 21, "bad_start", "retransmission of frame 19"},
	{"dnp3_openics_RequestLinkStatus", 6, "link_crc", "LINK_STATUS with header CRC 0x0000 (clause 9.2.4.1.6); tshark does not dissect it"},
}

// tsharkObjects formats object headers as the truth CSV does.
func tsharkObjects(hs []ObjectHeader) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(';')
		}
		// tshark prints the qualifier's prefix and range fields without the
		// reserved bit 7 (IEEE 1815-2012 clause 4.2.2.7.3.1).
		fmt.Fprintf(&b, "g%dv%d q=0x%02x", h.Group, h.Variation, h.Qualifier&0x7F)
		switch rc := h.RangeCode(); {
		case h.Qualifier&0x80 != 0 || h.PrefixCode() == 7:
		case rc <= RangeVirtual32:
			fmt.Fprintf(&b, " [%d-%d]", h.Start, h.Stop)
		case rc == RangeCount8 || rc == RangeCount16 || rc == RangeCount32 || rc == RangeFreeFormat:
			fmt.Fprintf(&b, " n=%d", h.Count)
		}
	}
	return b.String()
}

func readTruth(t *testing.T, path string) []truthRow {
	t.Helper()
	var rows []truthRow
	for _, r := range testenv.ReadTruth(t, path, "dnp3") {
		fn, _, _ := strings.Cut(r["dnp3_link_func"], " ")
		rows = append(rows, truthRow{
			Frame: r.Int("frame"), LinkSrc: r["dnp3_link_src"], LinkDst: r["dnp3_link_dst"],
			LinkFn: fn, Func: r["dnp3_al_func"], Objects: r["dnp3_objects"],
			IIN: r["dnp3_iin"], CRCErr: r["dnp3_crc_error"],
		})
	}
	return rows
}

// dissectDNP3 runs a capture through simulate/capture and Session (Feed) and returns
// one truthRow per link frame, plus the number of records that were not
// link frames (garbage, corrupt headers).
func dissectDNP3(t testing.TB, path string, ports map[uint16]bool) (rows []truthRow, other []otherRecord) {
	t.Helper()
	conns := map[uint64]*Session{}
	var frame int
	var cur *truthRow
	var c *Session
	inspect := func(f *LinkFrame, frag *Fragment) {
		r := truthRow{Frame: frame, LinkSrc: strconv.Itoa(int(f.Src)), LinkDst: strconv.Itoa(int(f.Dst)), CRCErr: "0"}
		if f.Primary() {
			r.LinkFn = "P" + strconv.Itoa(int(f.Func.Code()))
		} else {
			r.LinkFn = "S" + strconv.Itoa(int(f.Func.Code()))
		}
		if f.Anomaly == AnomalyDataCRC {
			r.CRCErr = "1"
		}
		if frag != nil {
			r.Func = strconv.Itoa(int(frag.Func))
			r.Objects = tsharkObjects(frag.Headers())
			if frag.HasIIN() {
				r.IIN = fmt.Sprintf("0x%04x", frag.IIN)
			}
		}
		cur = &r
	}
	emit := func(rec protocols.Record) {
		if _, ok := rec.Get("link_src"); ok {
			inspect(c.LinkFrame(), c.Fragment())
		}
		if _, ok := rec.Get("link_src"); !ok {
			other = append(other, otherRecord{frame: frame, anomaly: rec.Anomaly})
			return
		}
		rows = append(rows, *cur)
	}
	_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		var dir protocols.Dir
		switch {
		case ports[s.Dst.Port()]:
			dir = protocols.Request
		case ports[s.Src.Port()]:
			dir = protocols.Response
		default:
			return nil
		}
		c = conns[s.Conn]
		if c == nil {
			if s.Transport == "udp" {
				c = newUDP()
			} else {
				c = newTCP()
			}
			conns[s.Conn] = c
		}
		frame = s.Frame
		feed(c, dir, s.Payload, s.Gap, emit)
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows, other
}

// TestTruth compares every DNP3 capture of the shared corpus with tshark's
// ground truth: frame, link addresses and function, application function,
// object headers (group, variation, qualifier, range or count), IIN and
// CRC error, link frame by link frame.
func TestTruth(t *testing.T) {
	dir := testenv.Pcaps(t)
	files, _ := filepath.Glob(filepath.Join(dir, "dnp3_*.pcap*"))
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatalf("no dnp3_*.pcap in %s", dir)
	}
	exc := map[string]map[int]truthException{}
	for _, e := range truthExceptions {
		if exc[e.file] == nil {
			exc[e.file] = map[int]truthException{}
		}
		exc[e.file][e.frame] = e
	}
	used := map[truthException]bool{}
	var nFiles, nRows, nAgree, nExcused, nOther int
	for _, path := range files {
		base := filepath.Base(path)
		if strings.HasSuffix(base, ".truth.csv") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimSuffix(base, ".pcapng"), ".pcap")
		nFiles++
		t.Run(name, func(t *testing.T) {
			ports := map[uint16]bool{Port: true}
			if name == "dnp3_zeek_dnp3_read_p20001" {
				ports = map[uint16]bool{20001: true}
			}
			want := readTruth(t, filepath.Join(dir, name+".truth.csv"))
			got, other := dissectDNP3(t, path, ports)
			var wantOther []otherRecord
			for _, o := range expectedOther {
				if o.file == name {
					wantOther = append(wantOther, otherRecord{frame: o.frame, anomaly: o.anomaly})
				}
			}
			if fmt.Sprint(other) != fmt.Sprint(wantOther) {
				t.Errorf("records that are not link frames: got %v, want %v", other, wantOther)
			}
			nOther += len(other)
			nRows += len(want)
			n := max(len(got), len(want))
			for i := range n {
				switch {
				case i >= len(got):
					t.Errorf("missing row: want %v", want[i])
					continue
				case i >= len(want):
					t.Errorf("extra row: got %v", got[i])
					continue
				}
				g, w := got[i], want[i]
				if g == w {
					nAgree++
					if e, ok := exc[name][w.Frame]; ok {
						t.Errorf("stale exception for frame %d (%s): it agrees now", w.Frame, e.reason)
					}
					continue
				}
				if e, ok := exc[name][w.Frame]; ok && onlyDiffers(g, w, e.field) {
					nExcused++
					used[e] = true
					continue
				}
				t.Errorf("row %d:\n got  %v\n want %v", i, g, w)
			}
		})
	}
	for _, e := range truthExceptions {
		if !used[e] {
			t.Errorf("exception %s frame %d never used", e.file, e.frame)
		}
	}
	t.Logf("DNP3 truth: %d captures, %d tshark rows, %d agree, %d documented exceptions; %d rejected non-frames (expected %d)",
		nFiles, nRows, nAgree, nExcused, nOther, len(expectedOther))
}

// onlyDiffers reports whether g and w differ only in the listed fields
// ("objects", "iin", "func"; "app" is all three).
func onlyDiffers(g, w truthRow, fields string) bool {
	for _, f := range strings.Split(fields, ",") {
		switch f {
		case "objects":
			g.Objects = w.Objects
		case "iin":
			g.IIN = w.IIN
		case "func":
			g.Func = w.Func
		case "app":
			g.Objects, g.IIN, g.Func = w.Objects, w.IIN, w.Func
		}
	}
	return g == w
}
