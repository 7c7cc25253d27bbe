package syslog

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// S08: when the spool is full the lowest severity goes first, never a more
// severe record, and the drops are counted for a "dropped N" event.
func TestSpoolFullDropsLowestSeverityFirst(t *testing.T) {
	dir := t.TempDir()
	const capB = 64 << 10
	s, err := openSpool(dir, capB, []string{"a"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 200)
	// Fill with debug (7), then add warnings (4) until well past the cap.
	for i := 0; i < 200; i++ {
		if _, err := s.append(7, payload); err != nil {
			t.Fatal(err)
		}
	}
	warn := 0
	for i := 0; i < 200; i++ { // 200 warnings fit in 7/8 of the cap
		ok, err := s.append(4, payload)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			warn++
		}
	}
	n, used, dropped := s.stats()
	if used > capB {
		t.Errorf("spool uses %d bytes, cap %d", used, capB)
	}
	var sev [8]int
	for _, e := range s.idx {
		sev[e.sev]++
	}
	if sev[4] != 200 || warn != 200 {
		t.Errorf("warnings kept %d (accepted %d), want all 200 while debug records remained droppable", sev[4], warn)
	}
	if dropped == 0 || int(dropped)+n != 400 || s.takeDrops() != dropped {
		t.Errorf("records %d, dropped %d: want records+dropped = 400 and drops reported", n, dropped)
	}
	// A debug record never displaces a warning.
	for i := 0; i < 200; i++ {
		_, _ = s.append(7, payload)
	}
	sev = [8]int{}
	for _, e := range s.idx {
		sev[e.sev]++
	}
	if sev[4] != 200 {
		t.Errorf("debug records displaced warnings: %d left", sev[4])
	}
	if err := s.close(true); err != nil {
		t.Fatal(err)
	}
	// The compacted spool reopens with the same records.
	s2, err := openSpool(dir, capB, []string{"a"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close(true)
	if n2, _, _ := s2.stats(); n2 != len(s.idx) {
		t.Errorf("reopened with %d records, want %d", n2, len(s.idx))
	}
}

func TestExporterSpoolFullEmitsDropped(t *testing.T) {
	var mu sync.Mutex // Notify runs on Emit's and the sender's goroutines
	var got []*events.Event
	d := fastDest("tcp", testenv.FreeTCPPort(t), nil) // down
	x, err := New(Config{Destinations: []Destination{d}, SpoolBytes: 64 << 10, CloseTimeout: 100 * time.Millisecond,
		Notify: events.SinkFunc(func(e *events.Event) { mu.Lock(); got = append(got, e); mu.Unlock() })}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 400; i++ {
		e := testEvent(i)
		e.Severity = events.SevInfo
		x.Emit(e)
	}
	x.abandon()
	var dropped int
	for _, e := range got {
		if e.Type == events.TypeDropped {
			dropped += e.Count
		}
	}
	if st := x.Stats(); dropped == 0 || uint64(dropped) != st.Dropped {
		t.Errorf("dropped events report %d, spool counted %d", dropped, st.Dropped)
	}
}

// A torn last record (power cut mid-write) is cut off; the records before it
// survive and new ids never reuse a confirmed cursor position.
func TestSpoolRecoversTornTail(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20, []string{"a"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := s.append(4, []byte("record")); err != nil {
			t.Fatal(err)
		}
	}
	s.ack("a", 12) // a cursor persisted ahead of the records
	_ = s.close(true)
	segs, _ := filepath.Glob(filepath.Join(dir, segPrefix+"*"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.Write([]byte{50, 0, 0, 0, 1, 2, 3}) // half a header
	f.Close()
	s2, err := openSpool(dir, 1<<20, []string{"a"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close(true)
	if n, _, _ := s2.stats(); n != 10 {
		t.Errorf("recovered %d records, want 10", n)
	}
	if _, err := s2.append(4, []byte("new")); err != nil {
		t.Fatal(err)
	}
	recs, _ := s2.read(s2.cursor("a"), 10, 1<<20)
	if len(recs) != 1 || string(recs[0].payload) != "new" {
		t.Errorf("after recovery the destination sees %d records, want the 1 new one", len(recs))
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		name, url string
		wantErr   error
		check     func(d Destination) bool
	}{
		{"tls full", "tls://soc.example?ca=/c.pem&cert=/g.pem&key=/g.key&format=rfc5424&pen=32473", nil,
			func(d Destination) bool {
				return d.Network == "tls" && d.Addr == "soc.example:6514" && d.CAFile == "/c.pem" && d.EnterpriseID == 32473
			}},
		{"tcp cef default port", "tcp://192.0.2.1?format=cef", nil, func(d Destination) bool { return d.Addr == "192.0.2.1:514" && d.Format == FormatCEF }},
		{"udp ipv6", "udp://[2001:db8::1]:5514?format=leef&name=soc2", nil, func(d Destination) bool { return d.Addr == "[2001:db8::1]:5514" && d.Name == "soc2" }},
		{"rfc5424 without pen", "tls://soc.example", nil, func(d Destination) bool { return d.Format == FormatRFC5424 && d.EnterpriseID == 0 }},
		{"unknown param", "tcp://h?format=cef&cafile=x", ErrBadURL, nil},
		{"ca on tcp", "tcp://h?format=cef&ca=x", ErrBadURL, nil},
		{"cert without key", "tls://h?pen=1&cert=x", ErrBadURL, nil},
		{"bad scheme", "http://h", ErrBadURL, nil},
		{"bad format", "tcp://h?format=xml", ErrBadURL, nil},
		{"bad port", "tcp://h:99999?format=cef", ErrBadURL, nil},
	}
	for _, tc := range tests {
		c, err := ParseURL(tc.url)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil && !tc.check(c.Destinations[0]) {
			t.Errorf("%s: got %+v", tc.name, c.Destinations[0])
		}
	}
	if _, err := ParseURLs("tcp://h?format=cef", "tcp://h?format=json"); !errors.Is(err, ErrBadURL) {
		t.Errorf("duplicate names: err = %v", err)
	}
}
