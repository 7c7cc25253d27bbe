package syslog

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// S05: a receiver whose certificate is outside its validity period
// (expired, or not yet valid) is refused by the exporter even though it
// chains to the configured CA and carries the right name: nothing counts
// as delivered, the events stay spooled and a tls_fail event says why.
func TestRsyslogCertOutsideValidityRefused(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		port                func(r *receiver) int
	}{
		{"expired-gtls", time.Now().Add(-48 * time.Hour), time.Now().Add(-24 * time.Hour), func(r *receiver) int { return r.gtls }},
		{"expired-ossl", time.Now().Add(-48 * time.Hour), time.Now().Add(-time.Minute), func(r *receiver) int { return r.ossl }},
		{"not-yet-valid-gtls", time.Now().Add(24 * time.Hour), time.Now().Add(48 * time.Hour), func(r *receiver) int { return r.gtls }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := newPKI(t)
			pki.serverCert, pki.serverKey = mkLeafValid(t, t.TempDir(), "soc-receiver.test", pki.caCert, pki.caKey, true, tc.notBefore, tc.notAfter)
			r := newReceiver(t, pki)
			r.start()
			d := fastDest("tls", tc.port(r), pki)
			var mu sync.Mutex
			var notes []events.Event
			x, err := New(Config{Destinations: []Destination{d}, Hostname: "gw-01.test", CloseTimeout: 500 * time.Millisecond,
				Notify: events.SinkFunc(func(e *events.Event) { mu.Lock(); notes = append(notes, *e); mu.Unlock() })}, t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= n; i++ {
				x.Emit(testEvent(i))
			}
			// Attempts with backoff, until one was refused and said so (bounded).
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				mu.Lock()
				n := len(notes)
				mu.Unlock()
				if n > 0 && x.Stats().Dests[0].Failures > 0 {
					break
				}
			}
			st := x.Stats()
			if err := x.Close(); err == nil {
				t.Errorf("Close = nil, want ErrCloseTimeout with records left spooled")
			}
			if ds := st.Dests[0]; ds.Confirmed != 0 || ds.Pending != n || ds.Failures == 0 || ds.Up {
				t.Errorf("stats %+v: want down, 0 confirmed, %d pending, failures > 0", ds, n)
			}
			mu.Lock()
			defer mu.Unlock()
			var why string
			for _, e := range notes {
				if e.Type == events.TypeExporter && e.Step == "tls_fail" {
					why = e.Message
				}
			}
			if !strings.Contains(why, "expired or is not yet valid") {
				t.Errorf("tls_fail event message %q, want the certificate validity named", why)
			}
			if got := len(r.lines()); got != 0 {
				t.Errorf("receiver logged %d messages over a refused session", got)
			}
		})
	}
}
