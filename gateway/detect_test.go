package gateway

import (
	"net/netip"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

func TestDetectTableCountsWithinTheWindowOnly(t *testing.T) {
	th := rules.Threshold{Count: 3, Window: 60 * time.Second}
	a := netip.MustParseAddr("192.0.2.10")
	sec := func(s int) int64 { return int64(s) * int64(time.Second) }
	tests := []struct {
		name  string
		at    []int // seconds
		fires []int // indexes into at that raise the alert
	}{
		{"three within the window", []int{0, 10, 20}, []int{2}},
		{"spread wider than the window", []int{0, 70, 140, 210}, nil},
		{"two old ones expire", []int{0, 1, 61, 62}, nil},
		{"the last two of three in a window", []int{0, 59, 61, 70}, []int{3}},
		// After an alert the count starts again one window later: a scan
		// that goes on alerts once per window.
		{"once per window", []int{0, 1, 2, 3, 4, 30, 61, 62, 63, 64}, []int{2, 9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tab detectTable
			var got []int
			for i, s := range tc.at {
				if tab.observe(rules.DetectModbusServerBusy, a, sec(s), th) {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.fires) {
				t.Fatalf("alerts at %v, want %v", got, tc.fires)
			}
			for i := range got {
				if got[i] != tc.fires[i] {
					t.Fatalf("alerts at %v, want %v", got, tc.fires)
				}
			}
		})
	}
}

func TestDetectTableKeysAndBounds(t *testing.T) {
	var tab detectTable
	th := rules.Threshold{Count: 2, Window: time.Minute}
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	// Subjects and detectors count apart.
	if tab.observe(rules.DetectModbusAddressScan, a, 1, th) || tab.observe(rules.DetectModbusAddressScan, b, 2, th) ||
		tab.observe(rules.DetectModbusFunctionScan, a, 3, th) {
		t.Fatal("alert after one match per (detector, subject)")
	}
	if !tab.observe(rules.DetectModbusAddressScan, a, 4, th) {
		t.Fatal("no alert at the second match of the same (detector, subject)")
	}
	// Off never fires.
	for i := range 10 {
		if tab.observe(rules.DetectModbusAddressScan, b, int64(10+i), rules.Threshold{}) {
			t.Fatal("a detector with count 0 fired")
		}
	}
	// More subjects than slots: the table reuses the slot idle longest and
	// keeps counting the busy subject.
	for i := range detectSlots * 2 {
		s := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if i >= 256 {
			s = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		}
		tab.observe(rules.DetectDNP3ObjectScan, s, int64(100+i), rules.Threshold{Count: 5, Window: time.Minute})
		if i%32 == 0 {
			tab.observe(rules.DetectModbusServerBusy, a, int64(100+i), rules.Threshold{Count: 32, Window: time.Hour})
		}
	}
	used := 0
	for i := range tab.slots {
		if tab.slots[i].used {
			used++
		}
	}
	if used != detectSlots {
		t.Fatalf("%d slots used, want %d", used, detectSlots)
	}
	var busy *detectSlot
	for i := range tab.slots {
		if s := &tab.slots[i]; s.det == rules.DetectModbusServerBusy && s.subj == a {
			busy = s
		}
	}
	if busy == nil || busy.n != detectSlots*2/32 {
		t.Fatalf("the busy subject lost its count under churn: %+v", busy)
	}
	// A threshold lowered by a reload below the stored count still fires.
	if !tab.observe(rules.DetectModbusServerBusy, a, 1000, rules.Threshold{Count: 3, Window: time.Hour}) {
		t.Fatal("no alert after the threshold was lowered under the stored count")
	}
}

// exceptionResp is a Modbus exception response to fc with code.
func exceptionResp(tid uint16, fc, code uint8) []byte {
	return modbus.AppendResponse(nil, tid, 1, modbus.AppendException(nil, fc, modbus.ExceptionCode(code)))
}

func TestEngineRaisesOneDetectionAlert(t *testing.T) {
	det := `detections:
  modbus_server_busy: { count: 3, window: 60s }
`
	r := newRig(t, policy(t, "enforce", "drop", det, modbusConduit), nil)
	s := newStream(r, capture.NewTCPFlow(hmiEP, plcEP), readReq(1, 0, 10), exceptionResp(1, 3, 6))
	for i := range 5 {
		s.step(r.e, nopTx{})
		r.now = r.now.Add(time.Second)
		n := 0
		for _, ev := range r.events {
			if ev.Reason == "detect:modbus_server_busy" {
				n++
			}
		}
		want := 0
		if i >= 2 {
			want = 1
		}
		if n != want {
			t.Fatalf("after %d busy exceptions: %d detection events, want %d", i+1, n, want)
		}
	}
	ev := r.lastEvent()
	for _, e := range r.events {
		if e.Reason == "detect:modbus_server_busy" {
			ev = e
		}
	}
	if ev.Type != events.TypeAlert || ev.Verdict != "alert" || ev.Conduit != "hmi-plc" || ev.Mode != "enforce" ||
		ev.Src != plcEP.Addr || ev.Proto != "modbus" || ev.Fields["count"] != 3 || ev.Fields["subject"] != "192.0.2.10" ||
		ev.Fields["exception"] == nil {
		t.Fatalf("detection event: %+v fields %v", ev, ev.Fields)
	}
	c := r.counters()
	if c.Detections != 1 || c.PDUsDenied != 0 || c.Dropped() != 0 {
		t.Fatalf("counters: detections %d, denied %d, drops %v", c.Detections, c.PDUsDenied, c.DropsByName())
	}
	var nd int
	for _, d := range r.decs {
		if d.Detection == "modbus_server_busy" {
			nd++
			if d.DetectionCount != 3 || d.DetectionWindow != time.Minute || d.Verdict.Action != rules.Alert {
				t.Fatalf("detection decision: %+v", d)
			}
		}
	}
	if nd != 1 {
		t.Fatalf("%d detection decisions, want 1", nd)
	}
}

func TestDetectionOffAndCountingAllocateNothing(t *testing.T) {
	off := "detections:\n  modbus_server_busy: off\n"
	r := newRig(t, policy(t, "enforce", "drop", off, modbusConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
	s := newStream(r, capture.NewTCPFlow(hmiEP, plcEP), readReq(1, 0, 10), exceptionResp(1, 3, 6))
	for range 50 {
		s.step(r.e, nopTx{})
	}
	if c := r.counters(); c.Detections != 0 {
		t.Fatalf("detection turned off raised %d alerts", c.Detections)
	}
	// Default thresholds: the first three alert once; the matches that
	// follow within the window are counted without allocating.
	r = newRig(t, policy(t, "enforce", "drop", "", modbusConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
	s = newStream(r, capture.NewTCPFlow(hmiEP, plcEP), readReq(1, 0, 10), exceptionResp(1, 3, 6))
	for range 10 {
		s.step(r.e, nopTx{})
	}
	before := r.counters()
	if allocs := testing.AllocsPerRun(200, func() { s.step(r.e, nopTx{}) }); allocs != 0 {
		t.Fatalf("allocs per counted exception = %v, want 0", allocs)
	}
	if c := r.counters(); c.Detections != 1 || c.TxFrames[North]-before.TxFrames[North] != 201 {
		t.Fatalf("detections %d (want 1 within the window), responses forwarded %d of 201", c.Detections, c.TxFrames[North]-before.TxFrames[North])
	}
}

// BenchmarkDetectObserve is the cost of counting one matching response
// (an exception, an unsolicited or IIN2-flagged response) with the table
// full of other subjects: the worst case of the linear slot scan.
func BenchmarkDetectObserve(b *testing.B) {
	var tab detectTable
	th := rules.Threshold{Count: 32, Window: time.Hour}
	for i := range detectSlots - 1 {
		tab.observe(rules.DetectModbusAddressScan, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), int64(i), th)
	}
	subj := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tab.observe(rules.DetectModbusServerBusy, subj, int64(1000+i), rules.Threshold{Count: 32, Window: time.Nanosecond})
	}
}
