// Package sectiontest_test proves that a fourth inspected protocol needs
// no change to protocols (protocols.go, session.go) nor to rules' shared
// files (pdu.go, eval.go, compile.go, policy.go): its parser registers its
// number and anomaly names with one protocols.Register line, and its rule
// section registers itself with rules.RegisterSection; the policy then
// names it, Compile checks its tolerate list, PDU.Set reads its session
// and Evaluate judges its PDUs. The protocol (parser, section and
// registry line) is internal/echo7, which gateway/fourthtest drives
// through the engine and the dissector. This test lives in a package of
// its own so that echo7 stays out of the rules package's tests (the
// policy schema test).
package sectiontest_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/echo7"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

func policy(tolerate string) string {
	return `version: 1
name: fourth
zones:
  north: { networks: [192.0.2.128/25] }
  south: { networks: [192.0.2.0/25] }
conduits:
  - name: hmi-echo
    from: north
    to: south
    rules:
      - echo7: { ` + tolerate + ` }
`
}

func compile(t *testing.T, src string) *rules.Ruleset {
	t.Helper()
	p, err := rules.Parse("fourth.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func pdu(fn, flags byte) []byte { return echo7.AppendPDU(nil, fn, flags) }

// TestFourthProtocol: the registered protocol is named, its policy rule
// compiles and its PDUs are judged by its section: allowed functions,
// paired responses, anomalies denied unless tolerated, all without
// allocating.
func TestFourthProtocol(t *testing.T) {
	if echo7.Proto <= protocols.ProtoOPCUA || echo7.Proto.String() != "echo7" {
		t.Fatalf("registered as %d %q", echo7.Proto, echo7.Proto)
	}
	if a := echo7.AnomalyBadCheck.Tagged(); a.String() != "bad_check" || a.Proto() != echo7.Proto {
		t.Fatalf("anomaly %v of %v", a, a.Proto())
	}
	f := rules.Flow{Transport: rules.TransportTCP, SrcPort: 40000, DstPort: 7007}
	f.Src, f.Dst = mustAddr("192.0.2.130"), mustAddr("192.0.2.10")
	for _, tc := range []struct {
		name, tolerate string
		units          [][]byte
		want           string // ReasonString of the last unit's verdict
		action         rules.Action
	}{
		{"request allowed", "", [][]byte{pdu(1, 0)}, "allowed", rules.Allow},
		{"function not allowed", "", [][]byte{pdu(3, 0)}, "function_not_allowed", rules.Deny},
		{"paired response", "", [][]byte{pdu(1, 0), pdu(1, 1)}, "allowed", rules.Allow},
		{"response without request", "", [][]byte{pdu(1, 1)}, "response_without_request", rules.Deny},
		{"anomaly denied", "", [][]byte{{1, 0, 0}}, "malformed:bad_check", rules.Deny},
		{"anomaly tolerated", "tolerate: [bad_check]", [][]byte{{1, 0, 0}}, "allowed", rules.Allow},
		{"other anomaly not tolerated", "tolerate: [bad_check]", [][]byte{pdu(12, 0)}, "malformed:unknown_func", rules.Deny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := compile(t, policy(tc.tolerate))
			if v := rs.EvaluateFlow(&f); v.Action != rules.Allow || v.Inspect != echo7.Proto {
				t.Fatalf("EvaluateFlow: %v, inspect %v; want allow, inspect echo7", v.ReasonString(), v.Inspect)
			}
			ss := &echo7.Session{}
			var p rules.PDU
			var v rules.Verdict
			for _, u := range tc.units {
				ss.Decode(protocols.Request, u)
				if !p.Set(ss) {
					t.Fatal("PDU.Set refused the echo7 session")
				}
				v = rs.Evaluate(&f, &p)
				ss.Commit(v.Action == rules.Allow, v.Action == rules.Allow)
			}
			if v.ReasonString() != tc.want || v.Action != tc.action || v.RuleName != "echo7#1" {
				t.Fatalf("%v %q rule %q, want %v %q by echo7#1", v.Action, v.ReasonString(), v.RuleName, tc.action, tc.want)
			}
			if allocs := testing.AllocsPerRun(100, func() { p.Set(ss); _ = rs.Evaluate(&f, &p) }); allocs != 0 {
				t.Errorf("Set and Evaluate allocate %v times per PDU, want 0", allocs)
			}
		})
	}
}

// TestFourthProtocolPolicyErrors: its tolerate list is checked against
// its own vocabulary, with the file position and a suggestion, and the
// rule round-trips through Marshal.
func TestFourthProtocolPolicyErrors(t *testing.T) {
	p, err := rules.Parse("fourth.yaml", []byte(policy("tolerate: [bad_chek]")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = rules.Compile(p)
	want := `fourth.yaml:11:29: unknown echo7 anomaly "bad_chek" (did you mean "bad_check"?)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Compile: %v, want %s", err, want)
	}
	p, err = rules.Parse("fourth.yaml", []byte(policy("ports: [7008], tolerate: [unknown_func]")))
	if err != nil {
		t.Fatal(err)
	}
	y, err := rules.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "echo7: {ports: [7008], tolerate: [unknown_func]}") {
		t.Fatalf("Marshal lost the echo7 rule:\n%s", y)
	}
	if _, err := rules.Parse("again.yaml", y); err != nil {
		t.Fatalf("marshalled policy does not parse: %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
