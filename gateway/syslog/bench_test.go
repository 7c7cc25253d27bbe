package syslog

import (
	"testing"
	"time"
)

func BenchmarkFormat(b *testing.B) {
	e := testEvent(1)
	for _, f := range []Format{FormatRFC5424, FormatCEF, FormatLEEF, FormatJSON} {
		b.Run(f.String(), func(b *testing.B) {
			fm := Formatter{Format: f, Hostname: "gw-01", AppName: "otgw", ProcID: "1", EnterpriseID: testPEN, Software: "otgw", SWVersion: "0.1.0", MaxBytes: 8192}
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				buf = fm.Append(buf[:0], e)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkSpool reports the spool's disk cost per event (bytes/event).
func BenchmarkSpool(b *testing.B) {
	s, err := openSpool(b.TempDir(), 1<<30, []string{"a"}, discard())
	if err != nil {
		b.Fatal(err)
	}
	defer s.close(false)
	payload := testEvent(1).AppendJSON(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.append(4, payload); err != nil {
			b.Fatal(err)
		}
	}
	_, used, _ := s.stats()
	b.ReportMetric(float64(used)/float64(b.N), "bytes/event")
}

// BenchmarkRsyslogTLS measures events/s sustained to a real rsyslog over
// mutual TLS (OpenSSL and GnuTLS drivers), spool to confirmed delivery.
func BenchmarkRsyslogTLS(b *testing.B) {
	for _, drv := range []string{"ossl", "gtls"} {
		b.Run(drv, func(b *testing.B) {
			pki := newPKIB(b)
			r := newReceiverB(b, pki)
			r.start()
			port := r.ossl
			if drv == "gtls" {
				port = r.gtls
			}
			x := newExporterB(b, fastDest("tls", port, pki))
			b.ReportAllocs()
			start := time.Now()
			i := 0
			for b.Loop() {
				i++
				x.Emit(testEvent(i))
			}
			for x.Stats().Dests[0].Pending > 0 && time.Since(start) < 60*time.Second {
				time.Sleep(5 * time.Millisecond)
			}
			el := time.Since(start)
			_ = x.Close()
			b.ReportMetric(float64(i)/el.Seconds(), "events/s")
		})
	}
}
