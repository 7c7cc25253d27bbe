package learn

import (
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
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

// unlearnable says whether a deny is one no policy can prevent: a
// response whose request the engine could not pair, bytes that cannot be
// framed as the protocol (a parser anomaly with no function to allow), a
// segment the TCP normaliser refuses, or the consequence of one of those
// (the connection was closed or the direction blocked).
func unlearnable(e *replay.Event) bool {
	if strings.HasPrefix(e.Reason, "malformed:") && len(e.Fields) <= 2 {
		return true // bytes that could not be framed: only dir and anomaly are known
	}
	switch e.Reason {
	case "fragment", "malformed:tcp_overlap_mismatch", "response_without_request", "closed", "blocked", "out_of_window", "out_of_order", "bad_tcp", "no_flow", "retransmission":
		return true
	}
	if strings.HasPrefix(e.Reason, "malformed:") {
		return false // tolerate entries should have covered it
	}
	_, anomaly := e.Fields["anomaly"]
	return anomaly
}

// TestLearnThenReplayDeniesNothing is the guarantee of issue 4 on every
// capture: the learned policy passes `otgw check` and replaying the same
// capture denies nothing that a policy could allow. The remaining denies
// are counted and logged (the closing note reports them).
func TestLearnThenReplayDeniesNothing(t *testing.T) {
	total, rest, files := 0, 0, 0
	byReason := map[string]int{}
	for _, path := range captures(t) {
		files++
		evs := replayEvents(t, learnPolicy(t, path), path)
		total += len(evs)
		for _, e := range evs {
			byReason[e.Reason]++
			if !unlearnable(e) {
				rest++
				t.Errorf("%s: frame %d: false deny %s %s %v", filepath.Base(path), e.Frame, e.Proto, e.Reason, e.Fields)
			}
		}
	}
	t.Logf("%d captures: %d deny events after learn->replay, %d of them learnable (must be 0); by reason %v", files, total, rest, byReason)
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
