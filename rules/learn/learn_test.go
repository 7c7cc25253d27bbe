package learn

import (
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/replay"
)

// learnPolicy learns from paths and returns the policy as `otgw check`
// sees it: Marshal, Parse, Compile.
func learnPolicy(t *testing.T, paths ...string) *rules.Policy {
	t.Helper()
	p, _, err := Learn(Options{}, paths...)
	if err != nil {
		t.Fatalf("learn: %v", err)
	}
	y, err := rules.Marshal(p)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	pp, err := rules.Parse("learned.yaml", y)
	if err != nil {
		t.Fatalf("parse learned policy: %v\n%s", err, y)
	}
	if _, err := rules.Compile(pp); err != nil {
		t.Fatalf("compile learned policy: %v\n%s", err, y)
	}
	return pp
}

func replayEvents(t *testing.T, p *rules.Policy, paths ...string) []*replay.Event {
	t.Helper()
	var evs []*replay.Event
	if _, err := replay.Run(replay.Options{Policy: p, OnEvent: func(e *replay.Event) { evs = append(evs, e) }}, paths...); err != nil {
		t.Fatalf("replay: %v", err)
	}
	return evs
}

// captures lists ../shared/pcaps and the generated scenario captures.
func captures(t *testing.T) []string {
	dir := testenv.Pcaps(t)
	var out []string
	for _, pat := range []string{filepath.Join(dir, "*.pcap"), filepath.Join(dir, "*.pcapng"), "testdata/*.pcap", "../../simulate/scenarios/*/input.pcap"} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

// residual is a deny that replaying a capture under the policy learned
// from that same capture still gives, with the reason no policy can
// prevent it. Anomalies are tolerated and every observed function,
// object, service, unit and port is allowed, so what remains is judged
// before any rule could allow it: a response the gateway cannot pair with
// a request it saw (rules allow responses only on a paired request, the
// defence against spoofed responses, scenario m18; on a connection the
// capture joins mid-stream, replay lets responses before the first paired
// one answer requests sent before the capture), bytes that cannot be
// framed as the protocol at all (no function or service to allow), and
// segments or fragments the TCP normaliser refuses (DESIGN.md). Each
// listed deny also closes its connection, so the rest of that connection
// is denied as "closed" (or "blocked"); the test checks that every such
// consequence follows a listed deny on the same connection.
type residual struct {
	frame  int
	reason string
	why    string
}

// Reasons shared by several entries.
const (
	whyNonProtocol = "bytes that are no PDU of the port's protocol: nothing to allow (evasion scenario)"
	whyMalformed   = "PDU too malformed to have a function or service a rule could allow"
)

// residuals lists, per capture (shared captures by file name, scenarios by
// folder name), every deny expected after learn->replay: exactly these and
// nothing else.
var residuals = map[string][]residual{
	// Real captures in ../shared/pcaps.
	"dnp3_digitalbond_test_data_part1.pcap": {
		{19, "malformed:bad_start", whyMalformed + ": request whose link frame has no 0x0564 start (bad_start)"},
	},
	"dnp3_openics_RequestLinkStatus.pcap": {
		{6, "malformed:link_crc", whyMalformed + ": link status answer (link layer only) with a link CRC error (link_crc)"},
	},
	"dnp3_suricata_too-long-reassembly-response.pcap": {
		{20, "malformed:reassembly_overflow", whyMalformed + ": response fragments overflowing transport reassembly (reassembly_overflow, Suricata test case)"},
	},
	"modbus_digitalbond_test_data_part1.pcap": {
		{76, "malformed:non_modbus", whyMalformed + ": request that is no Modbus/TCP ADU (non_modbus)"},
	},
	// Scenario captures (simulate/scenarios/<case>/input.pcap): the
	// evasions and malformed cases must still be denied.
	"d12-non-dnp3":           {{4, "malformed:bad_start", whyNonProtocol}},
	"d13-malformed-response": {{5, "malformed:data_crc", whyMalformed + ": response with a transport CRC error (data_crc)"}},
	"d14-parser-anomalies":   {{6, "malformed:link_crc", whyMalformed + ": request with a link CRC error (link_crc)"}},
	"e03-overlap-different":  {{5, "evasion:tcp_overlap_mismatch", "evasion: retransmission overlapping inspected bytes with different content"}},
	"e04-out-of-order":       {{4, "out_of_order", "evasion: out-of-order segment to an inspected port"}},
	"e05-ip-fragments": {
		{4, "fragment", "evasion: IP fragment to an inspected port"},
		{5, "fragment", "evasion: IP fragment to an inspected port"},
	},
	// Bytes that cannot be framed as the port's protocol are denied as
	// malformed:<anomaly>, whatever a rule tolerates.
	"e07-non-protocol-502":   {{4, "malformed:non_modbus", whyNonProtocol}},
	"e08-non-protocol-20000": {{4, "malformed:bad_start", whyNonProtocol}},
	"e09-non-protocol-4840":  {{4, "malformed:unknown_message_type", whyNonProtocol}},
	"m08-illegal-size":       {{6, "malformed:non_modbus", whyMalformed + ": MBAP length beyond the ADU maximum (non_modbus)"}},
	"m09-non-modbus-pid":     {{6, "malformed:non_modbus", whyMalformed + ": MBAP protocol id not 0 (non_modbus)"}},
	"m10-incorrect-length":   {{6, "address_out_of_range", "a read whose MBAP length ends the PDU before its address: what it reads is unknown, so no rule allows it, even tolerating truncated"}},
	"u01-malformed": {
		{4, "malformed:unknown_message_type", whyMalformed + ": unknown UA-TCP message type"},
		{8, "malformed:invalid_message_size", whyMalformed + ": UA-TCP message size out of bounds"},
	},
}

// captureKey names a capture as residuals does.
func captureKey(path string) string {
	if filepath.Base(path) == "input.pcap" {
		return filepath.Base(filepath.Dir(path))
	}
	if filepath.Base(filepath.Dir(path)) == "testdata" {
		return "testdata/" + filepath.Base(path)
	}
	return filepath.Base(path)
}

// connKey identifies a connection whichever way the event points.
func connKey(e *replay.Event) [2]netip.AddrPort {
	a, b := e.Src, e.Dst
	if b.Addr().Less(a.Addr()) || b.Addr() == a.Addr() && b.Port() < a.Port() {
		a, b = b, a
	}
	return [2]netip.AddrPort{a, b}
}

// TestLearnThenReplayDeniesNothing is the guarantee of issue 4 on every
// capture in ../shared/pcaps, testdata and the scenarios: the learned
// policy passes `otgw check` and replaying the same capture denies nothing
// but the residuals listed above, each exactly once at its frame, plus the
// frames of the connections those denies closed.
func TestLearnThenReplayDeniesNothing(t *testing.T) {
	files, total, roots, consequences := 0, 0, 0, 0
	var shared [3]int // captures in ../shared/pcaps: files, root denies, closed frames
	visited := map[string]bool{}
	for _, path := range captures(t) {
		files++
		key := captureKey(path)
		visited[key] = true
		want := map[[2]string]string{}
		for _, r := range residuals[key] {
			want[[2]string{strconv.Itoa(r.frame), r.reason}] = r.why
		}
		evs := replayEvents(t, learnPolicy(t, path), path)
		total += len(evs)
		nr, nc := roots, consequences
		closedBy := map[[2]netip.AddrPort]bool{}
		for _, e := range evs {
			if e.Verdict != "deny" {
				t.Errorf("%s: frame %d: verdict %q (%s), want only denies in enforce mode", key, e.Frame, e.Verdict, e.Reason)
				continue
			}
			if e.Reason == "closed" || e.Reason == "blocked" {
				consequences++
				if !closedBy[connKey(e)] {
					t.Errorf("%s: frame %d: %s %s->%s with no listed deny before it on that connection", key, e.Frame, e.Reason, e.Src, e.Dst)
				}
				continue
			}
			k := [2]string{strconv.Itoa(e.Frame), e.Reason}
			if _, ok := want[k]; !ok {
				t.Errorf("%s: frame %d: false deny %s %s %v", key, e.Frame, e.Proto, e.Reason, e.Fields)
				continue
			}
			delete(want, k)
			roots++
			closedBy[connKey(e)] = true
		}
		for k, why := range want {
			t.Errorf("%s: frame %s: want deny %s (%s), got none", key, k[0], k[1], why)
		}
		if filepath.Dir(path) == filepath.Clean(testenv.Pcaps(t)) {
			shared[0]++
			shared[1] += roots - nr
			shared[2] += consequences - nc
		}
	}
	for key := range residuals {
		if !visited[key] {
			t.Errorf("%s: listed in residuals but no such capture was replayed", key)
		}
	}
	t.Logf("%d captures: %d deny events after learn->replay: %d listed residual denies, %d frames of the connections they closed; of these, %d shared captures: %d residual denies, %d closed frames",
		files, total, roots, consequences, shared[0], shared[1], shared[2])
}

// TestLearnedPolicyDeniesOneExtraAction appends, as a second capture file
// after the end of each capture, one new connection from a learned client
// carrying one action that was never observed; replaying both files must
// deny exactly that action on top of what the capture alone gives.
func TestLearnedPolicyDeniesOneExtraAction(t *testing.T) {
	tmp := t.TempDir()
	n := 0
	for _, path := range captures(t) {
		pol := learnPolicy(t, path)
		extra, reason, ok := forbidden(t, pol, path, tmp)
		if !ok {
			continue
		}
		n++
		base := replayEvents(t, pol, path)
		both := replayEvents(t, pol, path, extra)
		var added []*replay.Event
		for _, e := range both {
			if e.File == filepath.Base(extra) {
				added = append(added, e)
			}
		}
		if len(both) != len(base)+1 || len(added) != 1 || !strings.HasPrefix(added[0].Reason, reason) {
			var got []string
			for _, e := range added {
				got = append(got, e.Reason)
			}
			t.Errorf("%s: base %d events, with extra action %d; extra-file events %v, want exactly one %s",
				filepath.Base(path), len(base), len(both), got, reason)
		}
	}
	t.Logf("extra forbidden action checked on %d captures", n)
}

// forbidden writes a one-connection capture starting one second after the
// capture at path ends, with an action the learned policy does not allow.
func forbidden(t *testing.T, pol *rules.Policy, path, dir string) (string, string, bool) {
	var end time.Time
	if err := capture.ReadFrames(path, func(f *capture.Frame) error {
		if f.Time.After(end) {
			end = f.Time
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ip := map[string]netip.Addr{}
	for _, a := range pol.Assets {
		ip[a.Name] = netip.MustParseAddr(a.IP)
	}
	for _, c := range pol.Conduits {
		from, to := ip[c.From[0]], ip[c.To[0]]
		if !from.IsValid() || !to.IsValid() || from == to || len(c.Rules) != 1 {
			continue
		}
		r := c.Rules[0]
		var payload []byte
		var port uint16
		reason := ""
		switch {
		case r.Modbus != nil:
			unit := uint8(1)
			if len(r.Modbus.Units) > 0 {
				unit = uint8(atoi(r.Modbus.Units[0]))
			}
			for _, a := range r.Modbus.Allow {
				for _, f := range a.Function {
					if f == "8/4" {
						return "", "", false
					}
				}
			}
			payload = modbus.AppendRequest(nil, 0x7777, unit, modbus.AppendDiagnostics(nil, 4, []uint16{0}))
			port, reason = 502, "function_not_allowed"
		case r.DNP3 != nil && len(r.DNP3.Masters) > 0 && len(r.DNP3.Outstations) > 0:
			for _, a := range r.DNP3.Allow {
				for _, f := range a.Function {
					if f == "activate_config" || f == "31" {
						return "", "", false
					}
				}
			}
			apdu := dnp3.AppendRequestHeader(nil, 1, dnp3.FunctionCode(31))
			payload = dnp3.AppendLinkFrames(nil, 0xC4, uint16(atoi(r.DNP3.Outstations[0])), uint16(atoi(r.DNP3.Masters[0])), apdu)
			port, reason = 20000, "function_not_allowed"
		case r.TCP != nil:
			port, reason = 1, "port_not_allowed"
		default:
			continue
		}
		if (r.Modbus != nil && len(r.Modbus.Ports) > 0) || (r.DNP3 != nil && len(r.DNP3.Ports) > 0) {
			continue
		}
		out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))+"-extra.pcap")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		w, err := capture.NewWriter(f)
		if err != nil {
			t.Fatal(err)
		}
		w.Time = end.Add(time.Second)
		fl := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.AddrPortFrom(from, 61000)},
			capture.Endpoint{MAC: capture.MAC(2), Addr: netip.AddrPortFrom(to, port)})
		if payload == nil {
			_ = w.WriteFrame(fl.Segment(true, fl.NextSeq(true), 0, capture.TCPFlags{SYN: true}, nil))
		} else {
			for _, fr := range fl.Handshake() {
				_ = w.WriteFrame(fr)
			}
			_ = w.WriteFrame(fl.Send(true, payload))
		}
		f.Close()
		return out, reason, true
	}
	return "", "", false
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestAddZone(t *testing.T) {
	var o Options
	for _, s := range []string{"cell=192.0.2.0/25", "cell=south", "sup=192.0.2.130"} {
		if err := o.AddZone(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.AddZone("bad"); err == nil {
		t.Error("AddZone(bad): want error")
	}
	got := len(o.Zones)
	if got != 2 || o.Zones[0].Port != "south" || o.Zones[1].Networks[0] != "192.0.2.130/32" {
		t.Errorf("zones = %+v", o.Zones)
	}
}

func TestFormatNodeID(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    rules.NodeID
		want string
	}{
		{"numeric ns0", rules.NodeID{Numeric: 85}, "i=85"},
		{"string", rules.NodeID{Namespace: 2, Kind: rules.NodeString, ID: []byte("Line1.Setpoint")}, "ns=2;s=Line1.Setpoint"},
	} {
		got := FormatNodeID(&tc.n)
		if got != tc.want {
			t.Errorf("%s: got %q want %q", tc.name, got, tc.want)
		}
		back, err := rules.ParseNodeID(got)
		if err != nil || back.Namespace != tc.n.Namespace || back.Numeric != tc.n.Numeric || string(back.ID) != string(tc.n.ID) {
			t.Errorf("%s: round trip %q -> %+v, %v", tc.name, got, back, err)
		}
	}
}

// TestToleratedAnomalyIsWarned checks that an anomaly observed on a
// conduit becomes a tolerate entry of its rule, with the reviewer's
// warning, count and first/last seen time on the rule's own line, and that
// the result passes `otgw check`.
func TestToleratedAnomalyIsWarned(t *testing.T) {
	first := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	last := first.Add(90 * time.Minute)
	client, server := netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10")
	for _, tc := range []struct {
		name, proto, anomaly string
		n                    int
		want                 string
	}{
		{"modbus", "modbus", "tid_mismatch", 3,
			"modbus: # observed anomaly: review before enforcing: tid_mismatch x3 (first 2024-01-02T03:04:05Z, last 2024-01-02T04:34:05Z)"},
		{"dnp3", "dnp3", "link_crc", 1,
			"dnp3: # observed anomaly: review before enforcing: link_crc x1 (first 2024-01-02T03:04:05Z, last 2024-01-02T03:04:05Z)"},
		{"opcua", "opcua", "msg_before_open", 2,
			"opcua: # observed anomaly: review before enforcing: msg_before_open x2 (first 2024-01-02T03:04:05Z, last 2024-01-02T04:34:05Z)"},
	} {
		l := New(Options{})
		c := l.obs(client, server, tc.proto, first)
		for i := 0; i < tc.n; i++ {
			at := first
			if i > 0 {
				at = last
			}
			c.tolerate.add(tc.anomaly, at)
		}
		y, err := rules.Marshal(l.Policy())
		if err != nil {
			t.Fatalf("%s: marshal: %v", tc.name, err)
		}
		got := ""
		for _, line := range strings.Split(string(y), "\n") {
			if l := strings.TrimPrefix(strings.TrimSpace(line), "- "); strings.HasPrefix(l, tc.proto+":") {
				got = l
			}
		}
		if got != tc.want {
			t.Errorf("%s: rule line\n got %q\nwant %q\n%s", tc.name, got, tc.want, y)
		}
		if !strings.Contains(string(y), "# observed anomaly: review before enforcing: tolerate "+tc.anomaly+": seen ") {
			t.Errorf("%s: no per-anomaly head comment in\n%s", tc.name, y)
		}
		p, err := rules.Parse("learned.yaml", y)
		if err != nil {
			t.Fatalf("%s: parse: %v\n%s", tc.name, err, y)
		}
		if _, err := rules.Compile(p); err != nil {
			t.Fatalf("%s: compile: %v\n%s", tc.name, err, y)
		}
		r := p.Conduits[0].Rules[0]
		var tol []string
		switch {
		case r.Modbus != nil:
			tol = r.Modbus.Tolerate
		case r.DNP3 != nil:
			tol = r.DNP3.Tolerate
		case r.OPCUA != nil:
			tol = r.OPCUA.Tolerate
		}
		if len(tol) != 1 || tol[0] != tc.anomaly {
			t.Errorf("%s: tolerate = %v, want [%s]", tc.name, tol, tc.anomaly)
		}
	}
}

// TestModbusNonRequestLearnsNoUnit checks that a request without a
// request function code (bytes that are no Modbus ADU) allows neither its
// function nor its "unit" byte, and is reported as unlearnable.
func TestModbusNonRequestLearnsNoUnit(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		dir       protocols.Dir
		fc, unit  uint8
		wantUnits int
		wantUnl   int
	}{
		{"function code 0", protocols.Request, 0, 0, 0, 1},
		{"function code 200", protocols.Request, 200, 7, 0, 1},
		{"read holding", protocols.Request, 3, 1, 1, 0},
		{"exception response", protocols.Response, 0x83, 1, 1, 0},
	} {
		l := New(Options{})
		c := l.obs(netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10"), "modbus", at)
		l.modbus(c, &rules.PDU{Dir: tc.dir, Proto: protocols.ProtoModbus, Modbus: rules.Modbus{FC: tc.fc, Unit: tc.unit, Qty: 1}}, at)
		if got := len(c.mbUnits); got != tc.wantUnits {
			t.Errorf("%s: got %d units, want %d", tc.name, got, tc.wantUnits)
		}
		if got := len(l.Stats().Unlearnable); got != tc.wantUnl {
			t.Errorf("%s: got %d unlearnable, want %d", tc.name, got, tc.wantUnl)
		}
	}
}
