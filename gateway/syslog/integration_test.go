package syslog

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
)

const testPEN = 32473 // RFC 5612 documentation PEN: tests and examples only

// parsedLine is one message as rsyslog parsed it.
type parsedLine struct {
	input, msgid, msg string
	sd                map[string]map[string]string
}

func parseLine(t *testing.T, l string) parsedLine {
	t.Helper()
	var p parsedLine
	i := strings.Index(l, " sdjson=")
	j := strings.Index(l, " msg=")
	if !strings.HasPrefix(l, "in=") || i < 0 || j < i {
		t.Fatalf("unparseable received line %q", l)
	}
	head := strings.Fields(l[:i])
	for _, f := range head {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "in":
			p.input = v
		case "msgid":
			p.msgid = v
		}
	}
	if err := json.Unmarshal([]byte(l[i+len(" sdjson="):j]), &p.sd); err != nil {
		t.Fatalf("structured data not parsed by rsyslog in %q: %v", l, err)
	}
	p.msg = l[j+len(" msg="):]
	return p
}

// seqs returns the sorted meta sequenceIds of lines and how many repeat.
func seqs(t *testing.T, lines []string) (uniq []uint64, dups int) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, l := range lines {
		p := parseLine(t, l)
		s, err := strconv.ParseUint(p.sd["meta"]["sequenceId"], 10, 64)
		if err != nil {
			continue
		}
		if seen[s] {
			dups++
			continue
		}
		seen[s] = true
		uniq = append(uniq, s)
	}
	sort.Slice(uniq, func(i, j int) bool { return uniq[i] < uniq[j] })
	return uniq, dups
}

func contiguous(s []uint64, n int) bool {
	if len(s) != n {
		return false
	}
	for i, v := range s {
		if v != uint64(i+1) {
			return false
		}
	}
	return true
}

func testEvent(seq int) *events.Event {
	return &events.Event{
		Seq: uint64(seq), BootID: "7a1c2b9e-0d4f-4e55-9b8a-3f0e6c2d1a00",
		Time:        time.Date(2025, 1, 15, 10, 21, 33, 123456000, time.UTC),
		TimeQuality: events.TimeQuality{TZKnown: true, IsSynced: true, SyncAccuracy: 1000},
		Severity:    events.SevWarning, Type: events.TypeDeny,
		Message: fmt.Sprintf("blocked write %d: quote \" bracket ] backslash \\ newline\nend", seq),
		Mode:    "enforce", Verdict: "deny", Action: "reply", Conduit: "hmi-polls-plc", Rule: "r-42",
		Reason: "function not allowed", FromZone: "supervisory", ToZone: "cell3",
		Src: netip.MustParseAddrPort("192.0.2.130:50123"), Dst: netip.MustParseAddrPort("192.0.2.10:502"),
		Proto: "modbus", Fields: map[string]any{"fc": 16, "unit": 1, "addr": 40, "note": `a"b]c\d`},
	}
}

func fastDest(network string, port int, pki *testPKI) Destination {
	d := Destination{
		Name: network + "-" + strconv.Itoa(port), Network: network, Addr: "127.0.0.1:" + strconv.Itoa(port),
		EnterpriseID: testPEN, Facility: DefaultFacility,
		ConfirmWait: 300 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
		WriteTimeout: 5 * time.Second,
	}
	if network == "tls" && pki != nil {
		d.CAFile, d.CertFile, d.KeyFile, d.ServerName = pki.ca, pki.clientCert, pki.clientKey, "soc-receiver.test"
	}
	return d
}

func newExporterB(t testing.TB, ds ...Destination) *Exporter {
	return newExporterDir(t, t.TempDir(), ds...)
}

func newExporter(t *testing.T, dir string, ds ...Destination) *Exporter {
	return newExporterDir(t, dir, ds...)
}

func newExporterDir(t testing.TB, dir string, ds ...Destination) *Exporter {
	t.Helper()
	x, err := New(Config{Destinations: ds, Hostname: "gw-01.plant.example", SWVersion: "0.1.0",
		SyncInterval: 50 * time.Millisecond, CloseTimeout: 3 * time.Second}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// S02/S03: every event arrives and is parsed by rsyslog (msgid, SD with
// escapes, LF kept in one record) over plain TCP and mutual TLS with both
// of rsyslog's TLS drivers.
func TestRsyslogEveryEventParsed(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	r.start()
	const n = 50
	for _, tc := range []struct {
		name  string
		dest  Destination
		input string
	}{
		{"tcp", fastDest("tcp", r.plain, nil), "tcp-plain"},
		{"tls-gtls", fastDest("tls", r.gtls, pki), "tls-gtls"},
		{"tls-ossl", fastDest("tls", r.ossl, pki), "tls-ossl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newExporter(t, t.TempDir(), tc.dest)
			for i := 1; i <= n; i++ {
				x.Emit(testEvent(i))
			}
			if err := x.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			var got []parsedLine
			r.waitLines(5*time.Second, func(l []string) bool {
				got = got[:0]
				for _, s := range l {
					if p := parseLine(t, s); p.input == tc.input {
						got = append(got, p)
					}
				}
				return len(got) >= n
			})
			if len(got) != n {
				t.Fatalf("received %d events on %s, want %d; rsyslog said:\n%s", len(got), tc.input, n, r.diag())
			}
			for i, p := range got {
				sd := p.sd["otgw@32473"]
				if p.msgid != "MODBUS_DENY" || sd["conduit"] != "hmi-polls-plc" || sd["note"] != `a"b]c\d` ||
					sd["fc"] != "16" || sd["src"] != "192.0.2.130" || p.sd["meta"]["sequenceId"] != strconv.Itoa(i+1) {
					t.Errorf("event %d parsed as msgid=%q sd=%v", i+1, p.msgid, p.sd)
				}
				// MSG is the event as JSON: the LF inside the text is
				// escaped, so the record stays one line.
				var back events.Event
				if err := events.UnmarshalJSONEvent([]byte(p.msg), &back); err != nil {
					t.Errorf("event %d: MSG is not the JSON event: %v: %q", i+1, err, p.msg)
				} else if want := testEvent(i + 1).Message; back.Message != want {
					t.Errorf("event %d: message %q, want %q", i+1, back.Message, want)
				}
			}
		})
	}
}

// S04/S14: a receiver we cannot verify, or one that rejects our
// certificate (no certificate, or one from a rogue CA), never counts as
// delivered: the events stay spooled and nothing reaches the log.
func TestRsyslogTLSRejectedStaysSpooled(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	r.start()
	const n = 20
	for _, tc := range []struct {
		name string
		port func() int
		mod  func(d *Destination)
	}{
		{"server-from-wrong-CA", func() int { return r.gtls }, func(d *Destination) { d.CAFile = pki.rogueCA }},
		{"wrong-server-name", func() int { return r.ossl }, func(d *Destination) { d.ServerName = "other.test" }},
		{"no-client-cert-gtls", func() int { return r.gtls }, func(d *Destination) { d.CertFile, d.KeyFile = "", "" }},
		{"no-client-cert-ossl", func() int { return r.ossl }, func(d *Destination) { d.CertFile, d.KeyFile = "", "" }},
		{"rogue-client-cert-gtls", func() int { return r.gtls }, func(d *Destination) { d.CertFile, d.KeyFile = pki.rogueCert, pki.rogueKey }},
		{"rogue-client-cert-ossl", func() int { return r.ossl }, func(d *Destination) { d.CertFile, d.KeyFile = pki.rogueCert, pki.rogueKey }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(r.lines())
			d := fastDest("tls", tc.port(), pki)
			// Long enough for a loaded rsyslog to object to our
			// certificate before a batch is sent and held as delivered.
			d.ConfirmWait = 2 * time.Second
			tc.mod(&d)
			var notes []*events.Event
			var mu = make(chan struct{}, 1)
			mu <- struct{}{}
			x, err := New(Config{Destinations: []Destination{d}, Hostname: "gw-01.test", CloseTimeout: 500 * time.Millisecond,
				Notify: events.SinkFunc(func(e *events.Event) { <-mu; notes = append(notes, e); mu <- struct{}{} })}, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= n; i++ {
				x.Emit(testEvent(i))
			}
			// Several attempts with backoff, until one failed on TLS and
			// said so (bounded). A receiver that rejects our certificate
			// after a TLS 1.3 handshake may do it after ConfirmWait on a
			// loaded machine; the first failure is then a dropped
			// connection ("down"), and a later one is reported as TLS.
			sawTLSFail := func() bool {
				<-mu
				defer func() { mu <- struct{}{} }()
				for _, e := range notes {
					if e.Type == events.TypeExporter && e.Step == "tls_fail" {
						return true
					}
				}
				return false
			}
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) && !sawTLSFail() {
				time.Sleep(50 * time.Millisecond)
			}
			st := x.Stats()
			if err := x.Close(); err == nil {
				t.Errorf("Close = nil, want ErrCloseTimeout with records left spooled")
			}
			ds := st.Dests[0]
			if ds.Confirmed != 0 || ds.Pending != n || ds.Failures == 0 {
				t.Errorf("stats %+v: want 0 confirmed, %d pending, failures > 0", ds, n)
			}
			if !sawTLSFail() {
				t.Errorf("no tls_fail exporter event among %d notifications", len(notes))
			}
			if got := len(r.lines()) - before; got != 0 {
				t.Errorf("receiver logged %d messages from a rejected session", got)
			}
		})
	}
}

func waitSeqs(t *testing.T, r *receiver, input string, n int, timeout time.Duration) ([]uint64, int) {
	t.Helper()
	var u []uint64
	var d int
	r.waitLines(timeout, func(l []string) bool {
		var mine []string
		for _, s := range l {
			if strings.HasPrefix(s, "in="+input+" ") {
				mine = append(mine, s)
			}
		}
		u, d = seqs(t, mine)
		return len(u) >= n
	})
	return u, d
}

// S06: receiver down at start, then up, then restarted mid-stream: every
// event arrives, sequence contiguous; duplicates are allowed and counted.
func TestRsyslogDownThenUp(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	x := newExporter(t, t.TempDir(), fastDest("tls", r.ossl, pki))
	seq := 0
	emit := func(k int) {
		for i := 0; i < k; i++ {
			seq++
			x.Emit(testEvent(seq))
		}
	}
	emit(200) // receiver down
	downBy := time.Now().Add(10 * time.Second)
	for st := x.Stats().Dests[0]; (st.Up || st.Pending < 200) && time.Now().Before(downBy); st = x.Stats().Dests[0] {
		time.Sleep(20 * time.Millisecond)
	}
	if st := x.Stats().Dests[0]; st.Up || st.Pending < 200 { // + its own "down" event
		t.Fatalf("while down: %+v, want down with >= 200 pending", st)
	}
	r.start()
	emit(200)
	if u, _ := waitSeqs(t, r, "tls-ossl", 400, 15*time.Second); len(u) != 400 {
		t.Fatalf("after receiver came up: %d of 400 delivered", len(u))
	}
	r.stop() // SOC restarts mid-stream
	emit(200)
	time.Sleep(500 * time.Millisecond)
	r.start()
	emit(200)
	u, dups := waitSeqs(t, r, "tls-ossl", 800, 15*time.Second)
	if err := x.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !contiguous(u, 800) {
		t.Fatalf("delivered %d unique sequence ids, want 1..800 contiguous", len(u))
	}
	t.Logf("loss 0 of 800; %d duplicates (at-least-once resends); stats %+v", dups, x.Stats().Dests[0])
}

// S15: one destination down never stalls another.
func TestRsyslogOneDownOtherFlows(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	r.start()
	down := fastDest("tcp", testenv.FreeTCPPort(t), nil) // nothing listens there
	down.Name = "down"
	up := fastDest("tcp", r.plain, nil)
	up.Name = "up"
	x := newExporter(t, t.TempDir(), down, up)
	for i := 1; i <= 100; i++ {
		x.Emit(testEvent(i))
	}
	u, _ := waitSeqs(t, r, "tcp-plain", 100, 5*time.Second)
	st := x.Stats()
	_ = x.Close()
	if !contiguous(u, 100) {
		t.Fatalf("live destination got %d of 100 while the other was down", len(u))
	}
	if st.Dests[0].Pending < 100 || st.Dests[0].Up { // + the "down" event
		t.Errorf("down destination %+v, want 100 pending", st.Dests[0])
	}
}
