package replay

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// replayOutput is everything a replay writes: each event's JSON line in
// order, report.json, the summary and the allowed and denied pcaps.
type replayOutput struct {
	events, report, summary, allowed, denied []byte
}

func shardedOutput(t *testing.T, pol *rules.Policy, workers, maxFlows int, whatIf bool, paths ...string) replayOutput {
	t.Helper()
	return outputOf(t, Options{Policy: pol, WhatIf: whatIf, Workers: workers, MaxFlows: maxFlows}, paths...)
}

// outputOf replays paths with opts, its outputs (events, pcaps) set
// here, and returns what it wrote.
func outputOf(t *testing.T, opts Options, paths ...string) replayOutput {
	t.Helper()
	var o replayOutput
	var ev, al, de, sum bytes.Buffer
	opts.Allowed, opts.Denied = &al, &de
	opts.OnEvent = func(e *Event) {
		ev.Write(e.JSON())
		ev.WriteByte('\n')
	}
	rep, err := Run(opts, paths...)
	if err != nil {
		t.Fatal(err)
	}
	if o.report, err = json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	o.events, o.summary, o.allowed, o.denied = ev.Bytes(), sum.Bytes(), al.Bytes(), de.Bytes()
	return o
}

// replayInput is a capture (or several, merged) and the policy to
// replay it under; maxFlows 0 is the default table.
type replayInput struct {
	name     string
	pol      *rules.Policy
	paths    []string
	maxFlows int
}

// scenarioInputs is every scenario's input.pcap under its policy.yaml,
// in name order.
func scenarioInputs(t *testing.T) []replayInput {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join("..", "scenarios", "*", "input.pcap"))
	sort.Strings(dirs)
	if len(dirs) == 0 {
		t.Fatal("no scenarios in ../scenarios")
	}
	var inputs []replayInput
	for _, in := range dirs {
		dir := filepath.Dir(in)
		y, err := os.ReadFile(filepath.Join(dir, "policy.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, replayInput{name: filepath.Base(dir), pol: mustPolicy(t, string(y)), paths: []string{in}})
	}
	return inputs
}

// compareOutputs reports where got differs from want.
func compareOutputs(t *testing.T, name string, got, want replayOutput) {
	t.Helper()
	for _, c := range []struct {
		what      string
		got, want []byte
	}{
		{"events", got.events, want.events}, {"report.json", got.report, want.report}, {"summary", got.summary, want.summary},
		{"allowed.pcap", got.allowed, want.allowed}, {"denied.pcap", got.denied, want.denied},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: %s differ from one engine's (%d vs %d bytes)", name, c.what, len(c.got), len(c.want))
		}
	}
}

// TestShardedSameOutput: with the flows sharded over 2, 3 and 7 engines,
// events, report.json, the summary and both pcaps are byte for byte those
// of one engine, with and without the what-if evaluation (the lanes' and,
// with one engine, the single shadow lazy, the reference's eager), on every
// scenario, on the shared captures merged, and on a generated capture
// whose rate detections count responses of many connections (spread over
// the lanes) per subject.
func TestShardedSameOutput(t *testing.T) {
	inputs := scenarioInputs(t)
	det := filepath.Join(t.TempDir(), "detect.pcap")
	writeDetectCapture(t, det)
	inputs = append(inputs, replayInput{name: "rate detections over many connections", pol: mustPolicy(t, detectPolicy), paths: []string{det}})
	shared, _ := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	sort.Strings(shared)
	// The merged corpus has more TCP connections than the default
	// table's half-open limit (512): a larger table lets it shard.
	inputs = append(inputs, replayInput{name: "shared captures, merged", pol: mustPolicy(t, readEverything), paths: shared, maxFlows: 1 << 17})
	// In monitor mode everywhere the lanes have no what-if shadow: the
	// enforcing engines' alerts are the refusals.
	inputs = append(inputs, replayInput{name: "shared captures, merged, monitor mode", pol: mustPolicy(t, strings.Replace(readEverything, "mode: enforce", "mode: monitor", 1)),
		paths: shared, maxFlows: 1 << 17})

	sharded, detections := 0, 0
	for _, in := range inputs {
		ms, err := scanMidstream(in.paths, serverPorts(in.pol))
		if err != nil {
			t.Fatal(err)
		}
		if !shardable(ms, in.maxFlows, 64<<20, uaPortsOf(in.pol)) {
			t.Logf("%s: not shardable (%d TCP, %d other flows): one engine whatever Workers", in.name, ms.tcpKeys, ms.otherKeys)
		} else {
			sharded++
		}
		for _, whatIf := range []bool{true, false} {
			// The reference: one engine, the eager what-if shadow.
			shadowLazy = false
			want := shardedOutput(t, in.pol, 1, in.maxFlows, whatIf, in.paths...)
			shadowLazy = true
			if strings.HasSuffix(in.name, "monitor mode") && !bytes.Contains(want.events, []byte(`"verdict":"alert"`)) {
				t.Errorf("%s: no alert: the input does not exercise the lanes without shadow", in.name)
			}
			detections += bytes.Count(want.events, []byte(`"reason":"detect:`))
			workers := []int{2, 3, 7}
			if raceEnabled {
				// The race detector needs lanes running side by side, not
				// every lane count: 3 runs without it (make test runs both).
				workers = []int{2, 7}
			}
			if whatIf {
				workers = append(workers, 1) // the lazy shadow of one engine
			}
			for _, w := range workers {
				got := shardedOutput(t, in.pol, w, in.maxFlows, whatIf, in.paths...)
				compareOutputs(t, in.name+", workers "+strconv.Itoa(w)+map[bool]string{true: ", what-if", false: ""}[whatIf], got, want)
			}
		}
	}
	if sharded < len(inputs)-2 {
		t.Errorf("only %d of %d inputs sharded", sharded, len(inputs))
	}
	if detections < 20 {
		t.Errorf("%d detection events: the inputs do not exercise the deferred detectors", detections)
	}
	t.Logf("%d inputs (%d sharded), %d detection events", len(inputs), sharded, detections)
}

// TestShardedDetectionsAcrossLanes: the generated capture's detections
// count responses of connections on different lanes for one subject; the
// alerts (frame, subject, count) are those of one engine.
func TestShardedDetectionsAcrossLanes(t *testing.T) {
	det := filepath.Join(t.TempDir(), "detect.pcap")
	writeDetectCapture(t, det)
	pol := mustPolicy(t, detectPolicy)
	alerts := func(workers int) []string {
		var out []string
		_, err := Run(Options{Policy: pol, Workers: workers, OnEvent: func(e *Event) {
			if e.Fields["detection"] != nil {
				out = append(out, e.Reason+" "+e.Fields["subject"].(string)+" frame "+strconv.Itoa(e.Frame))
			}
		}}, det)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := alerts(1)
	if len(want) < 10 {
		t.Fatalf("%d detection alerts, want at least 10: %v", len(want), want)
	}
	// The subjects' connections are spread over the lanes.
	ms, err := scanMidstream([]string{det}, serverPorts(pol))
	if err != nil {
		t.Fatal(err)
	}
	perClient := map[netip.Addr]map[int]bool{}
	for _, k := range ms.ends {
		c := k.a.Addr()
		if perClient[c] == nil {
			perClient[c] = map[int]bool{}
		}
		perClient[c][laneOfKey(k, 3)] = true
	}
	for c, l := range perClient {
		if len(l) < 2 {
			t.Errorf("client %v: connections on %d lane of 3", c, len(l))
		}
	}
	for _, w := range []int{2, 3, 7} {
		if got := alerts(w); !slices.Equal(got, want) {
			t.Errorf("workers %d: alerts %v, want %v", w, got, want)
		}
	}
}

// detectPolicy allows every Modbus read and counts exceptions with short
// windows, so that the generated capture raises many alerts.
const detectPolicy = `version: 1
name: detect
mode: enforce
action: drop
zones:
  all: { networks: [0.0.0.0/0] }
detections:
  modbus_address_scan: { count: 4, window: 5s }
  modbus_function_scan: { count: 3, window: 6s }
  modbus_server_busy: { count: 3, window: 4s }
conduits:
  - name: reads
    from: all
    to: all
    rules:
      - modbus:
          allow:
            - read: holding 0-65535
`

// writeDetectCapture writes 3 clients polling 2 servers over 4
// connections each (24), interleaved pseudo-randomly, 20 ms apart; the
// servers answer with data or exceptions 01, 02 and 06.
func writeDetectCapture(t *testing.T, path string) { writePollCapture(t, path, 800, true) }

// writePollCapture writes the 24 connections of writeDetectCapture with
// n request/response exchanges, answered with exceptions too or not.
func writePollCapture(t *testing.T, path string, n int, exceptions bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	w.Step = 20 * time.Millisecond
	var flows []*capture.TCPFlow
	for c := range 3 {
		for s := range 2 {
			for k := range 4 {
				cl := capture.Endpoint{MAC: capture.MAC(byte(10 + c)), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + c)}), uint16(40000+100*s+k))}
				sv := capture.Endpoint{MAC: capture.MAC(byte(100 + s)), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(100 + s)}), 502)}
				fl := capture.NewTCPFlow(cl, sv)
				for _, fr := range fl.Handshake() {
					if err := w.WriteFrame(fr); err != nil {
						t.Fatal(err)
					}
				}
				flows = append(flows, fl)
			}
		}
	}
	x := uint32(12345)
	next := func() uint32 { x = x*1103515245 + 12345; return x >> 8 }
	for i := range n {
		fl := flows[next()%uint32(len(flows))]
		tx := uint16(i + 1)
		req := []byte{byte(tx >> 8), byte(tx), 0, 0, 0, 6, 1, 3, 0, byte(i), 0, 2}
		var resp []byte
		answer := next() % 6
		if !exceptions {
			answer = 5
		}
		switch answer {
		case 0:
			resp = []byte{byte(tx >> 8), byte(tx), 0, 0, 0, 3, 1, 0x83, 2}
		case 1:
			resp = []byte{byte(tx >> 8), byte(tx), 0, 0, 0, 3, 1, 0x83, 6}
		case 2:
			resp = []byte{byte(tx >> 8), byte(tx), 0, 0, 0, 3, 1, 0x83, 1}
		default:
			resp = []byte{byte(tx >> 8), byte(tx), 0, 0, 0, 7, 1, 3, 4, 0, 1, 0, 2}
		}
		for _, fr := range [][]byte{fl.Send(true, req), fl.Send(false, resp)} {
			if err := w.WriteFrame(fr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestShardable: the pre-scan's flows decide whether to shard.
func TestShardable(t *testing.T) {
	for _, c := range []struct {
		tcp, other, maxFlows int
		memCap               int64
		want                 bool
	}{
		{300, 0, 0, 64 << 20, true},
		{512, 0, 0, 64 << 20, true},      // the default half-open limit
		{513, 0, 0, 64 << 20, false},     // one address might reach it
		{100, 100, 128, 64 << 20, false}, // more flows than the table
		{100, 28, 4096, 64 << 20, true},
		{300, 0, 0, 300 * inspectorBytes, true},
		{300, 0, 0, 300*inspectorBytes - 1, false}, // the memory cap
	} {
		ms := &midstream{tcpKeys: c.tcp, otherKeys: c.other}
		if got := shardable(ms, c.maxFlows, c.memCap, uaPorts{}); got != c.want {
			t.Errorf("shardable(%d tcp, %d other, max %d, cap %d) = %v, want %v", c.tcp, c.other, c.maxFlows, c.memCap, got, c.want)
		}
	}
	if shardable(nil, 0, 64<<20, uaPorts{}) {
		t.Error("shardable without a pre-scan")
	}
}

// TestShardedAllocsPerFileNotPerFrame: a sharded replay (what-if on)
// allocates per run and per flow, not per frame: twice the frames of the
// same connections cost no more allocations than a small fraction per
// added frame.
func TestShardedAllocsPerFileNotPerFrame(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts mean nothing under the race detector")
	}
	pol := mustPolicy(t, detectPolicy)
	dir := t.TempDir()
	mallocs := func(n int) uint64 {
		path := filepath.Join(dir, "poll"+strconv.Itoa(n)+".pcap")
		writePollCapture(t, path, n, false)
		// The median of 5 runs: a run's count moves by a few thousand
		// either way with the goroutines' interleaving (one run in ten or
		// so was 3,100 lower), which a minimum of 3 took for the figure.
		var runs []uint64
		for range 5 {
			var a, b runtime.MemStats
			runtime.ReadMemStats(&a)
			if _, err := Run(Options{Policy: pol, Workers: 2, WhatIf: true, MaxFlows: 1024}, path); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&b)
			runs = append(runs, b.Mallocs-a.Mallocs)
		}
		slices.Sort(runs)
		return runs[len(runs)/2]
	}
	small, large := mallocs(5000), mallocs(15000)
	perFrame := (float64(large) - float64(small)) / 20000 // 2 frames per exchange
	t.Logf("%d allocations for 10,072 frames, %d for 30,072: %.4f per added frame", small, large, perFrame)
	if perFrame > 0.02 {
		t.Errorf("%.4f allocations per added frame, want none in steady state", perFrame)
	}
}
