// Package sectiontest_test proves that a fourth inspected protocol needs
// no change to protocols (protocols.go, session.go) nor to rules' shared
// files (pdu.go, eval.go, compile.go, policy.go): its parser registers its
// number and anomaly names with one protocols.Register line, and its rule
// section registers itself with rules.RegisterSection; the policy then
// names it, Compile checks its tolerate list, PDU.Set reads its session
// and Evaluate judges its PDUs. (In the product its Spec also takes one
// line in protocols/registry, for the engine and dissect to find it.)
// It lives in a package of its own so that the echo7 protocol stays out
// of the rules package's tests (the policy schema test).
package sectiontest_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// echo7 is a made-up protocol: 3-byte PDUs [function, flags, check] where
// flags bit 0 marks a response and check is function XOR flags XOR 0x5A.

// Its anomalies, as its parser would define them.
type echoAnomaly uint8

const (
	echoNone echoAnomaly = iota
	echoBadCheck
	echoUnknownFunc
)

var echoNames = [...]string{echoNone: "none", echoBadCheck: "bad_check", echoUnknownFunc: "unknown_func"}

// The one registration line of the parser.
var echoProto = protocols.Register(protocols.ProtoNone, "echo7", protocols.Vocabulary{Anomalies: echoNames[:]})

func (a echoAnomaly) Tagged() protocols.Anomaly { return protocols.NewAnomaly(echoProto, uint8(a)) }

// echoSession is the protocol's protocols.Session.
type echoSession struct {
	dir         protocols.Dir
	fn          byte
	anomaly     echoAnomaly
	outstanding int
	paired      bool
}

var _ protocols.Session = (*echoSession)(nil)

func (s *echoSession) Proto() protocols.Proto { return echoProto }
func (s *echoSession) Next(_ protocols.Dir, b []byte) (int, int, error) {
	if len(b) < 3 {
		return 0, 3 - len(b), nil
	}
	return 3, 0, nil
}
func (s *echoSession) FramingAnomaly(error) protocols.Anomaly { return echoBadCheck.Tagged() }
func (s *echoSession) Plausible(protocols.Dir, []byte) bool   { return true }
func (s *echoSession) Decode(dir protocols.Dir, b []byte) protocols.Unit {
	s.fn, s.anomaly, s.paired = b[0], echoNone, false
	s.dir = protocols.Request
	if b[1]&1 != 0 {
		s.dir = protocols.Response
	}
	switch {
	case b[0]^b[1]^0x5A != b[2]:
		s.anomaly = echoBadCheck
	case b[0] == 0 || b[0] > 9:
		s.anomaly = echoUnknownFunc
	}
	if s.dir == protocols.Response && s.outstanding > 0 {
		s.paired = true
	}
	return protocols.UnitPDU
}
func (s *echoSession) Commit(passed, _ bool) {
	switch {
	case !passed:
	case s.dir == protocols.Request:
		s.outstanding++
	case s.paired:
		s.outstanding--
	}
}
func (s *echoSession) Dir() protocols.Dir                 { return s.dir }
func (s *echoSession) Anomaly() protocols.Anomaly         { return s.anomaly.Tagged() }
func (s *echoSession) Paired() bool                       { return s.paired }
func (s *echoSession) Exchange() (protocols.Role, uint64) { return protocols.RoleNone, 0 }
func (s *echoSession) Fields(w protocols.Sink)            { w.Int("func", int(s.fn)) }
func (s *echoSession) Gap(protocols.Dir)                  {}
func (s *echoSession) PickUp()                            {}
func (s *echoSession) Reset()                             { *s = echoSession{} }
func (s *echoSession) Size() int                          { return 0 }
func (s *echoSession) Feed(dir protocols.Dir, b []byte, _ bool, emit func()) {
	for len(b) >= 3 {
		s.Decode(dir, b[:3])
		emit()
		s.Commit(true, true)
		b = b[3:]
	}
}

// The rule section, as its file in rules would register it.
func init() {
	rules.RegisterSection(rules.Section{
		Proto: echoProto, Port: 7007, TCP: true,
		Set: func(p *rules.PDU, ss protocols.Session) bool {
			s, ok := ss.(*echoSession)
			if !ok {
				return false
			}
			p.Malformed(echoProto, s.Dir(), s.Anomaly())
			p.Other = rules.Other{Func: uint32(s.fn), PairedRequest: s.paired}
			return true
		},
		Judge: func(dir protocols.Dir, o rules.Other) rules.Reason {
			switch {
			case dir == protocols.Response && !o.PairedRequest:
				return rules.ReasonResponseWithoutRequest
			case dir == protocols.Request && o.Func > 2:
				return rules.ReasonFunctionNotAllowed
			}
			return rules.ReasonAllowed
		},
	})
}

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

func pdu(fn, flags byte) []byte { return []byte{fn, flags, fn ^ flags ^ 0x5A} }

// TestFourthProtocol: the registered protocol is named, its policy rule
// compiles and its PDUs are judged by its section: allowed functions,
// paired responses, anomalies denied unless tolerated, all without
// allocating.
func TestFourthProtocol(t *testing.T) {
	if echoProto <= protocols.ProtoOPCUA || echoProto.String() != "echo7" {
		t.Fatalf("registered as %d %q", echoProto, echoProto)
	}
	if a := echoBadCheck.Tagged(); a.String() != "bad_check" || a.Proto() != echoProto {
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
			if v := rs.EvaluateFlow(&f); v.Action != rules.Allow || v.Inspect != echoProto {
				t.Fatalf("EvaluateFlow: %v, inspect %v; want allow, inspect echo7", v.ReasonString(), v.Inspect)
			}
			ss := &echoSession{}
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
