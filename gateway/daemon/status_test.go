package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/testenv"
)

// hostileName is a policy name with everything the exposition format must
// escape or carry: tab, non-breaking space, quotes, backslash, newline,
// a closing brace and non-Latin text.
const hostileName = "cell\t3\u00a0\"north\" \\ line\nbreak } {x=\"y\"} Zelle-Ü 線"

// sampleStatus is a Status with every part filled, as the daemon builds it.
func sampleStatus() Status {
	m := newEventMetrics()
	m.Emit(&events.Event{Type: events.TypeDeny, Verdict: "deny", Conduit: hostileName, Reason: "function_not_allowed", Proto: "modbus"})
	m.Emit(&events.Event{Type: events.TypeAggregated, Verdict: "deny", Conduit: hostileName, Reason: "function_not_allowed", Proto: "modbus", Count: 4})
	m.Emit(&events.Event{Type: events.TypeAlert, Verdict: "alert", Conduit: "opc\"clients", Reason: "service_not_allowed", Proto: "opcua"})
	m.Emit(&events.Event{Type: events.TypePolicyReload, Time: time.Unix(1700000000, 0)})
	m.Emit(&events.Event{Type: events.TypePolicyError, Time: time.Unix(1700000100, 0)})
	s := Status{
		Version: "1.2.3", Board: "sim", FailMode: "closed", Started: time.Unix(1699999000, 0), Uptime: 12.5, Healthy: true,
		Policy: PolicyStatus{File: "/etc/otgw/policy.yaml", Name: hostileName, Generation: 3, Hash: "abc", Conduits: 2},
		Ports: []PortStatus{{Role: "north", Name: "eth\"0", Up: true, Stats: PortIOStatus{KernelDrops: 1}},
			{Role: "south", Name: "eth1", Stats: PortIOStatus{TxErrors: 2}}},
		Flows:       FlowStatus{Active: 5, MemoryBytes: 100, MemoryCap: 1000},
		RecentFlows: []gateway.FlowInfo{{ID: 1, Transport: "tcp", Proto: "modbus", Verdict: "allow", Mode: "enforce"}},
		Counters: CounterStat{RxFrames: byPort([2]uint64{10, 20}), TxFrames: byPort([2]uint64{9, 19}), Injected: byPort([2]uint64{}),
			Drops: map[string]uint64{"flow_denied": 7}, PDUs: 40, PDUsDenied: 5},
		Events: EventStatus{Emitted: 9, Delivered: 9, Queued: 1},
		Syslog: &SyslogStatus{SpoolRecords: 3, SpoolBytes: 300,
			Destinations: []SyslogDestStatus{{Name: "tcp-127.0.0.1-514", Up: true, Pending: 3}}},
		CaptureDenied: &forensic.Stats{Frames: 4, Bytes: 400, Dropped: 1, Files: 1},
	}
	m.fill(&s)
	return s
}

func scrape(t *testing.T, s Status) []byte {
	t.Helper()
	srv := httptest.NewServer(MetricsHandler(func() Status { return s }))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %v %s: %s", err, resp.Status, body)
	}
	return body
}

// Done-when of issue 17: promtool accepts /metrics for a policy named with
// tabs, non-breaking spaces, quotes, backslashes and newlines.
func TestMetricsPassPromtool(t *testing.T) {
	promtool := testenv.NeedCmd(t, "promtool")
	body := scrape(t, sampleStatus())
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\nscrape:\n%s", err, out, body)
	}
	for _, want := range []string{
		`otgw_info{board="sim",fail_mode="closed",policy="cell` + "\t" + `3` + "\u00a0" + `\"north\" \\ line\nbreak } {x=\"y\"} Zelle-Ü 線",policy_hash="abc",version="1.2.3"} 1`,
		`otgw_verdict_events_total{conduit="opc\"clients",proto="opcua",reason="service_not_allowed",verdict="alert"} 1`,
		`reason="function_not_allowed",verdict="deny"} 5`,
		`otgw_policy_reloads_total{result="success"} 1`,
		`otgw_policy_reloads_total{result="failure"} 1`,
		`otgw_policy_last_reload_success 0`,
		`otgw_policy_generation 3`,
		`otgw_drops_total{reason="flow_denied"} 7`,
		`otgw_inspection_memory_use_ratio 0.1`,
		`otgw_events_queued 1`,
		`otgw_syslog_spool_records 3`,
		`otgw_syslog_destination_up{destination="tcp-127.0.0.1-514"} 1`,
		"go_goroutines ", "process_resident_memory_bytes ",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Every key of /status is snake_case (no Go field names leak out).
func TestStatusKeysSnakeCase(t *testing.T) {
	b, err := json.Marshal(sampleStatus())
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var bad []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if !snake.MatchString(k) {
					bad = append(bad, path+"."+k)
				}
				walk(path+"."+k, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		}
	}
	walk("", v)
	if len(bad) > 0 {
		t.Errorf("keys not in snake_case: %s", strings.Join(bad, ", "))
	}
	for _, want := range []string{`"rx_csum_fixed"`, `"kernel_drops"`, `"tx_dropped"`, `"queued"`, `"spool_records"`, `"reloads_failed"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/status lacks key %s", want)
		}
	}
}

// A flood of distinct conduit/reason pairs is counted, but in at most
// MaxVerdictSeries+1 series.
func TestVerdictSeriesBounded(t *testing.T) {
	m := newEventMetrics()
	for i := range MaxVerdictSeries + 500 {
		m.Emit(&events.Event{Type: events.TypeDeny, Verdict: "deny", Conduit: "c", Reason: fmt.Sprint("r", i)})
	}
	var s Status
	m.fill(&s)
	var total uint64
	for _, v := range s.Verdicts {
		total += v.Count
	}
	if len(s.Verdicts) != MaxVerdictSeries+1 || total != MaxVerdictSeries+500 {
		t.Errorf("%d series counting %d events, want %d series counting %d", len(s.Verdicts), total, MaxVerdictSeries+1, MaxVerdictSeries+500)
	}
}

// TestPortIOCopiesEveryCounter: /status carries every hal.PortStats
// counter under the same field name (a counter added to hal and not here
// would be invisible to the operator).
func TestPortIOCopiesEveryCounter(t *testing.T) {
	var in hal.PortStats
	iv := reflect.ValueOf(&in).Elem()
	for i := range iv.NumField() {
		iv.Field(i).SetUint(uint64(i + 1))
	}
	out := reflect.ValueOf(portIO(in))
	for i := range iv.NumField() {
		name := iv.Type().Field(i).Name
		f := out.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("PortIOStatus has no field %s (hal.PortStats has)", name)
		} else if f.Uint() != uint64(i+1) {
			t.Errorf("portIO: %s = %d, want %d", name, f.Uint(), i+1)
		}
	}
}
