package learn

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/rules"
)

func TestPeakCountsAsTheEngineDoes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	at := func(secs ...int) []time.Time {
		var out []time.Time
		for _, s := range secs {
			out = append(out, t0.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	// b: four within 10 s (4..13 is 9 s); a: never more than two (a match
	// exactly one window later no longer counts the first).
	n, subj, when := peak(map[netip.Addr][]time.Time{a: at(0, 5, 10, 20), b: at(13, 4, 6, 8, 30)}, 10*time.Second)
	if n != 4 || subj != b || !when.Equal(t0.Add(13*time.Second)) {
		t.Fatalf("peak = %d at %s for %s, want 4 at +13s for %s", n, when, subj, b)
	}
}

func TestDetectionsRaiseOnlyThresholdsTheCaptureReaches(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := netip.MustParseAddr("192.0.2.20")
	var r rates
	many := func(n int, step time.Duration) []time.Time {
		var out []time.Time
		for i := range n {
			out = append(out, t0.Add(time.Duration(i)*step))
		}
		return out
	}
	r[rules.DetectDNP3UnsolicitedStorm] = map[netip.Addr][]time.Time{a: many(7, time.Second)}   // 7 in 10 s: default 5 reached
	r[rules.DetectModbusAddressScan] = map[netip.Addr][]time.Time{a: many(4, time.Second)}      // 4 in 60 s: below 5
	r[rules.DetectModbusServerBusy] = map[netip.Addr][]time.Time{a: many(40, time.Millisecond)} // beyond what is counted
	got := r.detections()
	if len(got) != 2 {
		t.Fatalf("detections %+v, want the storm raised and busy off", got)
	}
	if got[0].Name != "modbus_server_busy" || !got[0].Off || !strings.Contains(got[0].Comment, "observed 40") {
		t.Errorf("busy: %+v", got[0])
	}
	if got[1].Name != "dnp3_unsolicited_storm" || got[1].Count != "8" || !strings.Contains(got[1].Comment, "observed 7 DNP3 unsolicited responses from 192.0.2.20 within 10s") {
		t.Errorf("storm: %+v", got[1])
	}
	// The draft compiles with those settings.
	p := &rules.Policy{Version: 1, Detections: got}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if th := rs.Detection(rules.DetectDNP3UnsolicitedStorm); th.Count != 8 || th.Window != 10*time.Second {
		t.Errorf("compiled storm threshold %+v", th)
	}
	if th := rs.Detection(rules.DetectModbusServerBusy); th.Count != 0 {
		t.Errorf("compiled busy threshold %+v, want off", th)
	}
	if th := rs.Detection(rules.DetectModbusAddressScan); th != rules.DefaultThresholds[rules.DetectModbusAddressScan] {
		t.Errorf("untouched detector %+v, want the default", th)
	}
}
