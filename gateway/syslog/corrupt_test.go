package syslog

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

// encodeRecord builds one spool record as spool.append writes it.
func encodeRecord(id uint64, sev uint8, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = append(b, sev, 0, 0, 0)
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

// segmentOf returns ten records with ids 1..10 and the offset of each.
func segmentOf() ([]byte, []int) {
	var seg []byte
	var offs []int
	for i := 1; i <= 10; i++ {
		offs = append(offs, len(seg))
		seg = append(seg, encodeRecord(uint64(i), 4, bytes.Repeat([]byte{byte('a' + i)}, 40))...)
	}
	return seg, offs
}

func writeSegment(t testing.TB, dir string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, segPrefix+"0000000000000001"+segSuffix)
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return p
}

func spoolIDs(s *spool) []uint64 {
	var ids []uint64
	for _, e := range s.idx {
		ids = append(ids, e.id)
	}
	return ids
}

// A corrupted spool file is recovered from: the good records before and
// after the damage survive (the reader resynchronises on the next valid
// record), the records lost are counted, and the repaired file reopens
// with nothing more lost.
func TestSpoolRecoversCorruption(t *testing.T) {
	const recLen = recHeader + 40
	tests := []struct {
		name     string
		damage   func(b []byte, offs []int) []byte
		wantIDs  []uint64
		wantLost uint64
	}{
		{"intact", func(b []byte, _ []int) []byte { return b }, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0},
		{"payload bit flip", func(b []byte, o []int) []byte { b[o[3]+recHeader+5] ^= 0x10; return b },
			[]uint64{1, 2, 3, 5, 6, 7, 8, 9, 10}, 1},
		{"length field huge", func(b []byte, o []int) []byte { binary.LittleEndian.PutUint32(b[o[0]:], 0xfffffff0); return b },
			[]uint64{2, 3, 4, 5, 6, 7, 8, 9, 10}, 1},
		{"three records zeroed", func(b []byte, o []int) []byte { clear(b[o[4] : o[4]+3*recLen]); return b },
			[]uint64{1, 2, 3, 4, 8, 9, 10}, 3},
		{"zeroed across a boundary", func(b []byte, o []int) []byte { clear(b[o[2]+30 : o[3]+10]); return b },
			[]uint64{1, 2, 5, 6, 7, 8, 9, 10}, 2},
		{"torn tail", func(b []byte, o []int) []byte { return b[:o[9]+7] }, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1},
		{"garbage appended", func(b []byte, _ []int) []byte { return append(b, "not a record at all"...) },
			[]uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 1},
		{"id going backwards", func(b []byte, o []int) []byte {
			copy(b[o[6]:], encodeRecord(2, 4, bytes.Repeat([]byte{'z'}, 40)))
			return b
		},
			[]uint64{1, 2, 3, 4, 5, 6, 8, 9, 10}, 1},
		{"all garbage", func(b []byte, _ []int) []byte { return bytes.Repeat([]byte{0xa5}, len(b)) }, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			seg, offs := segmentOf()
			writeSegment(t, dir, tc.damage(seg, offs))
			s, err := openSpool(dir, 1<<20, []string{"a"}, discard())
			if err != nil {
				t.Fatal(err)
			}
			if got := spoolIDs(s); !equalIDs(got, tc.wantIDs) {
				t.Errorf("recovered ids %v, want %v", got, tc.wantIDs)
			}
			if got := s.lostAtOpen(); got != tc.wantLost {
				t.Errorf("lost = %d, want %d", got, tc.wantLost)
			}
			recs, err := s.read(0, 100, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if want := bytes.Repeat([]byte{byte('a' + r.id)}, 40); !bytes.Equal(r.payload, want) {
					t.Errorf("record %d payload %q, want %q", r.id, r.payload, want)
				}
			}
			if _, err := s.append(4, []byte("new")); err != nil {
				t.Fatal(err)
			}
			_ = s.close(true)
			s2, err := openSpool(dir, 1<<20, []string{"a"}, discard())
			if err != nil {
				t.Fatal(err)
			}
			defer s2.close(true)
			if got := s2.lostAtOpen(); got != 0 {
				t.Errorf("reopened repaired spool lost %d more", got)
			}
			if got, want := len(s2.idx), len(tc.wantIDs)+1; got != want {
				t.Errorf("reopened with %d records, want %d", got, want)
			}
		})
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The exporter reports records lost to a corrupt spool as one dropped
// event with the count, and in Stats.
func TestExporterReportsSpoolCorruption(t *testing.T) {
	dir := t.TempDir()
	var seg []byte
	for i := 1; i <= 5; i++ {
		seg = append(seg, encodeRecord(uint64(i), 4, testEvent(i).AppendJSON(nil))...)
	}
	seg[len(seg)/2] ^= 0xff // inside the third record
	writeSegment(t, dir, seg)
	var mu sync.Mutex
	var got []events.Event
	x, err := New(Config{Destinations: []Destination{fastDest("tcp", testenv.FreeTCPPort(t), nil)}, CloseTimeout: 100 * time.Millisecond,
		Notify: events.SinkFunc(func(e *events.Event) { mu.Lock(); got = append(got, *e); mu.Unlock() })}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := x.Stats()
	_ = x.Close()
	if st.SpoolLost != 1 || st.SpoolRecords != 4 {
		t.Errorf("stats lost %d records %d, want 1 and 4", st.SpoolLost, st.SpoolRecords)
	}
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, e := range got {
		if e.Type == events.TypeDropped && e.Step == "spool_corrupt" {
			n++
			if e.Count != 1 || e.Severity != events.SevError {
				t.Errorf("corruption event count %d severity %v, want 1 error", e.Count, e.Severity)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d spool_corrupt events, want 1", n)
	}
}

// FuzzSpoolSegment fuzzes the spool record reader (scanSegment) on the
// content of a segment file. Seeds: ten intact records, the same with a
// torn tail, an empty file, and records carrying the JSON golden events
// of testdata/json-*.golden (one each, and all of them in one segment).
// Invariants: no panic; only records with a valid checksum, inside b, in
// order, not overlapping, with growing ids; an undamaged scan tiles b
// exactly; damage is always counted as loss; and the repaired segment
// (good records packed) scans to the same records with no loss.
// TestSpoolRecoversCorruption covers the file side (rewrite and reopen).
func FuzzSpoolSegment(f *testing.F) {
	seg, _ := segmentOf()
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add([]byte{})
	golden, _ := filepath.Glob(filepath.Join("testdata", "json-*.golden"))
	if len(golden) == 0 {
		f.Fatal("no testdata/json-*.golden seeds")
	}
	var fromTestdata []byte
	for i, p := range golden {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		r := encodeRecord(uint64(i+1), uint8(i%8), bytes.TrimSpace(b))
		fromTestdata = append(fromTestdata, r...)
		f.Add(r)
	}
	f.Add(fromTestdata)
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, lost, damaged := scanSegment(b, 0, discard())
		end, last := 0, uint64(0)
		var packed []byte
		for _, r := range recs {
			if r.off < end || r.off+recHeader+r.n > len(b) || r.id <= last {
				t.Fatalf("record %+v out of order or bounds (end %d, last id %d, len %d)", r, end, last, len(b))
			}
			raw := b[r.off : r.off+recHeader+r.n]
			if crc32.Checksum(raw[8:], crcTable) != binary.LittleEndian.Uint32(raw[4:]) {
				t.Fatalf("record %+v has a bad checksum", r)
			}
			end, last = r.off+len(raw), r.id
			packed = append(packed, raw...)
		}
		if damaged == 0 && (lost != 0 || len(packed) != len(b)) {
			t.Fatalf("undamaged scan: lost %d, records cover %d of %d bytes", lost, len(packed), len(b))
		}
		if damaged > 0 && lost < uint64(damaged) {
			t.Fatalf("%d damaged regions but lost %d", damaged, lost)
		}
		again, lost2, damaged2 := scanSegment(packed, 0, discard())
		if lost2 != 0 || damaged2 != 0 || len(again) != len(recs) {
			t.Fatalf("repaired segment: %d records (want %d), lost %d, damaged %d", len(again), len(recs), lost2, damaged2)
		}
		for i := range again {
			if again[i].id != recs[i].id || again[i].n != recs[i].n || again[i].sev != recs[i].sev {
				t.Fatalf("repaired record %d = %+v, want %+v", i, again[i], recs[i])
			}
		}
	})
}
