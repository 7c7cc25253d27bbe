package modbus

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

// truthRow is one Modbus PDU as tshark 4.0 dissected it (see
// ../shared/pcaps/README.md for the columns).
type truthRow struct {
	frame, pdu int
	dir        string
	fields     map[string]string
}

// knownDifference is a PDU where this parser and tshark disagree on
// purpose. Every entry must occur, so the list cannot go stale.
type knownDifference struct {
	file   string
	frame  int
	ours   string // what we emit (anomaly name), "" when we emit nothing
	reason string
}

var knownDifferences = []knownDifference{
	{
		file: "modbus_digitalbond_test_data_part1.pcap", frame: 76, ours: "non_modbus",
		reason: "451 bytes to port 502 whose MBAP length field is 0x8804 (> 254): not Modbus/TCP " +
			"(TCP guide §3.1.3, MAP §4.1). tshark shows nothing for the frame; we report non_modbus once " +
			"and ignore the rest of that direction (frames 78, 80, 82, whose protocol id 0x0010 tshark " +
			"also rejects)",
	},
	{
		file: "modbus_digitalbond_test_data_part1.pcap", frame: 113, ours: "non_modbus",
		reason: "frame 111 carries 14 bytes from port 502 but its MBAP length (5) delimits an 11-byte ADU " +
			"(FC 42); the 3 trailing bytes 01 01 23 start the next ADU in stream order, so frame 113's " +
			"bytes read as protocol id 0x2300 (TCP guide §3.1.3: the length field is the only framing). " +
			"tshark drops the trailing bytes and the frame; we report non_modbus",
	},
}

// truthColumns maps our Record keys to the truth CSV columns.
var truthColumns = []struct{ key, col string }{
	{"tid", "mb_trans_id"},
	{"unit", "mb_unit_id"},
	{"addr", "mb_ref_num"},
	{"qty", "mb_quantity"},
	{"write_addr", "mb_write_ref_num"},
	{"write_qty", "mb_write_quantity"},
}

func readTruth(t *testing.T, path string) map[[2]int]truthRow {
	t.Helper()
	out := map[[2]int]truthRow{}
	for _, r := range testenv.ReadTruth(t, path, "modbus") {
		fr, pn := r.Int("frame"), r.Int("pdu_in_frame")
		row := truthRow{frame: fr, pdu: pn, dir: r["direction"], fields: map[string]string{}}
		for name, v := range r {
			if strings.HasPrefix(name, "mb_") {
				row.fields[name] = v
			}
		}
		out[[2]int{fr, pn}] = row
	}
	return out
}

// ourRecord is one Record we emitted, with where it completed.
type ourRecord struct {
	frame, pdu int
	rec        protocols.Record
}

// dissectModbus runs a capture through simulate/capture and one Session per
// TCP connection; payload to port 502 is a request, from 502 a response.
func dissectModbus(t *testing.T, path string) []ourRecord {
	t.Helper()
	conns := map[uint64]*Session{}
	perFrame := map[int]int{}
	var out []ourRecord
	_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		if s.Transport != "tcp" {
			return nil
		}
		var dir protocols.Dir
		switch {
		case s.Dst.Port() == 502:
			dir = protocols.Request
		case s.Src.Port() == 502:
			dir = protocols.Response
		default:
			return nil
		}
		c := conns[s.Conn]
		if c == nil {
			c = new(Session)
			conns[s.Conn] = c
		}
		feed(c, dir, s.Payload, s.Gap, func(r protocols.Record) {
			perFrame[s.Frame]++
			out = append(out, ourRecord{frame: s.Frame, pdu: perFrame[s.Frame], rec: r})
		})
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

func fieldString(r *protocols.Record, key string) (string, bool) {
	v, ok := r.Get(key)
	if !ok {
		return "", false
	}
	return fmt.Sprint(v), true
}

// compareTruth returns the differences between one of our Records and
// tshark's row, empty when they agree.
func compareTruth(r *protocols.Record, row truthRow) []string {
	var diffs []string
	if r.Dir.String() != row.dir {
		diffs = append(diffs, fmt.Sprintf("dir %s, tshark %s", r.Dir, row.dir))
	}
	fcv, ok := r.Get("fc")
	if !ok {
		return append(diffs, "no fc (anomaly "+r.Anomaly+")")
	}
	fc := fcv.(int)
	if got, want := strconv.Itoa(fc&^int(ExceptionBit)), row.fields["mb_func_code"]; got != want {
		diffs = append(diffs, fmt.Sprintf("fc %s, tshark %s", got, want))
	}
	exc, _ := fieldString(r, "exception")
	if want := row.fields["mb_exception_code"]; exc != want {
		diffs = append(diffs, fmt.Sprintf("exception %q, tshark %q", exc, want))
	}
	if (fc&int(ExceptionBit) != 0) != (row.fields["mb_exception_code"] != "") {
		diffs = append(diffs, fmt.Sprintf("fc 0x%02x exception bit vs tshark exception %q", fc, row.fields["mb_exception_code"]))
	}
	for _, c := range truthColumns {
		got, _ := fieldString(r, c.key)
		if want := row.fields[c.col]; got != want {
			diffs = append(diffs, fmt.Sprintf("%s %q, tshark %s %q", c.key, got, c.col, want))
		}
	}
	sub := ""
	if v, ok := r.Get("sub"); ok {
		switch fc &^ int(ExceptionBit) {
		case int(FuncDiagnostics):
			sub = fmt.Sprintf("diag=%d", v)
		case int(FuncEncapsulatedInterface):
			sub = fmt.Sprintf("mei=%d", v)
		default:
			sub = fmt.Sprint(v)
		}
	}
	if want := row.fields["mb_sub_code"]; sub != want {
		diffs = append(diffs, fmt.Sprintf("sub %q, tshark %q", sub, want))
	}
	return diffs
}

// TestTruth runs every modbus_*.pcap of the shared corpus through
// simulate/capture and Session (Feed) and compares each PDU with tshark's dissection:
// frame, PDU index in the frame, direction, transaction id, unit id,
// function code, exception code, address/quantity (read and write part) and
// sub-code. Every field must agree, both ways (a field tshark leaves empty
// must be absent here too), except for the cases in knownDifferences.
func TestTruth(t *testing.T) {
	dir := testenv.Pcaps(t)
	files, _ := filepath.Glob(filepath.Join(dir, "modbus_*.pcap*"))
	if len(files) == 0 {
		t.Fatalf("no modbus_*.pcap in %s", dir)
	}
	sort.Strings(files)
	usedKnown := map[int]bool{}
	var total, agree, truthTotal int
	for _, path := range files {
		name := filepath.Base(path)
		truthPath := strings.TrimSuffix(strings.TrimSuffix(path, ".pcapng"), ".pcap") + ".truth.csv"
		truth := readTruth(t, truthPath)
		ours := dissectModbus(t, path)
		seen := map[[2]int]bool{}
		fileAgree := 0
		anomalies := map[string]int{}
		for _, o := range ours {
			if o.rec.Anomaly != "" {
				anomalies[o.rec.Anomaly]++
			}
			k := [2]int{o.frame, o.pdu}
			row, ok := truth[k]
			known := -1
			for i, kd := range knownDifferences {
				if kd.file == name && kd.frame == o.frame && kd.ours == o.rec.Anomaly && !ok {
					known = i
				}
			}
			if known >= 0 {
				usedKnown[known] = true
				t.Logf("%s frame %d: known difference: %s", name, o.frame, knownDifferences[known].reason)
				continue
			}
			if !ok {
				t.Errorf("%s frame %d pdu %d: we emit %v (anomaly %q), tshark has no Modbus PDU", name, o.frame, o.pdu, o.rec.Fields, o.rec.Anomaly)
				continue
			}
			seen[k] = true
			if d := compareTruth(&o.rec, row); len(d) > 0 {
				t.Errorf("%s frame %d pdu %d: %s", name, o.frame, o.pdu, strings.Join(d, "; "))
				continue
			}
			fileAgree++
		}
		for k, row := range truth {
			if !seen[k] {
				t.Errorf("%s frame %d pdu %d: tshark has fc %s tid %s, we emit nothing", name, k[0], k[1], row.fields["mb_func_code"], row.fields["mb_trans_id"])
			}
		}
		t.Logf("%s: %d/%d tshark PDUs agree (%d records emitted, anomalies %v)", name, fileAgree, len(truth), len(ours), anomalies)
		total += len(ours)
		agree += fileAgree
		truthTotal += len(truth)
	}
	for i, kd := range knownDifferences {
		if !usedKnown[i] {
			t.Errorf("known difference %s frame %d did not occur: remove it from the list", kd.file, kd.frame)
		}
	}
	t.Logf("modbus truth: %d files, %d/%d tshark PDUs agree, %d records emitted, %d known differences",
		len(files), agree, truthTotal, total, len(knownDifferences))
}
