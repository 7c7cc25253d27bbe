package replay

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
)

func mustPolicy(t testing.TB, y string) *rules.Policy {
	t.Helper()
	p, err := rules.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const readOnly = `version: 1
name: ro
action: drop
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus: { units: [1], allow: [ { read: holding 0-99 } ] }
      - tcp: { ports: [22] }
`

// scenario returns the path of a generated scenario capture.
func scenario(t testing.TB, name string) string {
	p := filepath.Join("..", "scenarios", name, "input.pcap")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("scenario %s not generated: %v", name, err)
	}
	return p
}

func TestSidesFromZones(t *testing.T) {
	s := newSides(mustPolicy(t, readOnly))
	for _, tc := range []struct {
		name string
		ip   string
		want string
		ok   bool
	}{
		{"north zone", "192.0.2.200", "north", true},
		{"south zone", "192.0.2.5", "south", true},
		{"asset", "192.0.2.10", "south", true},
		{"outside", "198.51.100.1", "", false},
	} {
		got, ok := s.of(mustAddr(tc.ip))
		if ok != tc.ok || (ok && got.String() != tc.want) {
			t.Errorf("%s: got %v,%v want %s,%v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReplayDeniesWriteAndWritesOutputs(t *testing.T) {
	pol := mustPolicy(t, readOnly)
	var evs []*Event
	var allowed, denied bytes.Buffer
	rep, err := Run(Options{Policy: pol, StrictMidstream: true, Allowed: &allowed, Denied: &denied,
		OnEvent: func(e *Event) { evs = append(evs, e) }}, scenario(t, "m21-pipelined"))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Reason != "function_not_allowed" || evs[0].Frame != 4 {
		t.Fatalf("got events %+v, want one function_not_allowed at frame 4", evs)
	}
	if rep.Truncated != 1 || rep.PDUsDenied != 1 || rep.PDUsAllowed != 1 {
		t.Errorf("got truncated %d denied %d allowed %d, want 1 1 1", rep.Truncated, rep.PDUsDenied, rep.PDUsAllowed)
	}
	if len(rep.NeverHit) != 1 || rep.NeverHit[0] != "hmi-plc/tcp#1" {
		t.Errorf("never hit = %v, want [hmi-plc/tcp#1]", rep.NeverHit)
	}
	if allowed.Len() <= 24 || denied.Len() <= 24 {
		t.Errorf("pcaps: allowed %d bytes, denied %d bytes; want frames in both", allowed.Len(), denied.Len())
	}
	j := string(evs[0].JSON())
	for _, k := range []string{`"pcap_cnt":4`, `"verdict":"deny"`, `"proto":"TCP"`, `"app_proto":"modbus"`, `"conduit":"hmi-plc"`, `"rule":"modbus#1"`, `"fc":6`, `"function":"write_single_register"`, `"flow_id":`, `"community_id":"1:`} {
		if !strings.Contains(j, k) {
			t.Errorf("JSON %s lacks %s", j, k)
		}
	}
	dir := t.TempDir()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	h, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	for _, k := range []string{"<svg", "hmi-plc", "function_not_allowed", "Timeline of denies"} {
		if !bytes.Contains(h, []byte(k)) {
			t.Errorf("report.html lacks %q", k)
		}
	}
	if bytes.Contains(h, []byte("http://")) && !bytes.Contains(h, []byte("http://www.w3.org/2000/svg")) {
		t.Error("report.html refers to external assets")
	}
}

// TestMultipleFilesInTimeOrder replays two captures together: the merge
// must keep each file's frame numbers and interleave by time.
func TestMultipleFilesInTimeOrder(t *testing.T) {
	pol := mustPolicy(t, readOnly)
	a, b := scenario(t, "m21-pipelined"), scenario(t, "e02-pipelined-forbidden-second")
	var evs []*Event
	rep, err := Run(Options{Policy: pol, StrictMidstream: true, OnEvent: func(e *Event) { evs = append(evs, e) }}, a, b)
	if err != nil {
		t.Fatal(err)
	}
	// Both captures use the same start time and 1 ms steps, and the same
	// connection: the second file's SYN arrives on an open connection.
	if rep.Frames != 8 {
		t.Errorf("frames = %d, want 8", rep.Frames)
	}
	if len(evs) == 0 || evs[0].File != "input.pcap" {
		t.Errorf("events %+v: want file names on events", evs)
	}
}

func TestMidstreamPickup(t *testing.T) {
	pol := mustPolicy(t, readOnly)
	path := scenario(t, "e06-midstream")
	strict, err := Run(Options{Policy: pol, StrictMidstream: true}, path)
	if err != nil {
		t.Fatal(err)
	}
	picked, err := Run(Options{Policy: pol}, path)
	if err != nil {
		t.Fatal(err)
	}
	if strict.Denies != 1 || picked.Denies != 0 || picked.PickedUp != 1 || picked.PDUsAllowed != 1 {
		t.Errorf("strict denies %d; picked-up denies %d pickups %d allowed %d; want 1; 0 1 1", strict.Denies, picked.Denies, picked.PickedUp, picked.PDUsAllowed)
	}
}

func TestNonEthernetCapture(t *testing.T) {
	dir := testenv.Pcaps(t)
	// BSD loopback (DLT_NULL) capture: frames get a synthetic Ethernet header.
	path := filepath.Join(dir, "opcua_cisagov_open62541_minimal.pcap")
	pol := mustPolicy(t, `version: 1
mode: monitor
zones:
  any: { networks: [0.0.0.0/0, "::/0"] }
conduits:
  - name: all
    from: any
    to: any
    rules:
      - opcua: { allow: [ { service: [read, browse] } ] }
`)
	rep, err := Run(Options{Policy: pol}, path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Undecodable != 0 || rep.PDUsAllowed == 0 {
		t.Errorf("undecodable %d, allowed PDUs %d: want 0 and some", rep.Undecodable, rep.PDUsAllowed)
	}
}

// BenchmarkReplay measures replay throughput on the largest capture.
func BenchmarkReplay(b *testing.B) {
	dir := testenv.Pcaps(b)
	path := filepath.Join(dir, "modbus_iti_plant1_ModbusTCP.pcap")
	pol := mustPolicy(b, `version: 1
mode: monitor
zones:
  any: { networks: [0.0.0.0/0, "::/0"] }
conduits:
  - name: all
    from: any
    to: any
    rules:
      - modbus: { allow: [ { read: holding 0-65535 } ] }
`)
	rs, err := rules.Compile(pol)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	frames := 0
	for b.Loop() {
		rep, err := Run(Options{Policy: pol, Ruleset: rs}, path)
		if err != nil {
			b.Fatal(err)
		}
		frames = rep.Frames
	}
	b.ReportMetric(float64(frames)*float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

func mustAddr(s string) netipAddr { return mustParseAddr(s) }
