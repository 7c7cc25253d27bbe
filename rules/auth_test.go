package rules

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
)

// authPolicy is a master (hmi, link 1) controlling an outstation (plc, link
// 10) under require_auth.
const authPolicy = head + `conduits:
  - name: scada
    from: hmi
    to: plc
    rules:
      - dnp3:
          masters: [1]
          outstations: [10]
          require_auth: true
          allow:
            - function: read
              objects: [g60]
            - function: [select, operate, direct_operate, direct_operate_nr]
              objects: [g12v1]
            - function: confirm
`

func g(group, variation uint8) DNP3Object { return DNP3Object{Group: group, Variation: variation} }

// dnpReq and dnpResp build DNP3 PDUs between link 1 and link 10.
func dnpReq(fc uint8, objs ...DNP3Object) PDU {
	p := PDU{Proto: protocols.ProtoDNP3, Dir: protocols.Request, DNP3: DNP3{LinkSrc: 1, LinkDst: 10, FC: fc}}
	p.DNP3.NObjects = uint8(copy(p.DNP3.Objects[:], objs))
	return p
}

func dnpResp(fc uint8, paired bool, objs ...DNP3Object) PDU {
	p := PDU{Proto: protocols.ProtoDNP3, Dir: protocols.Response, DNP3: DNP3{LinkSrc: 10, LinkDst: 1, FC: fc, PairedRequest: paired}}
	p.DNP3.NObjects = uint8(copy(p.DNP3.Objects[:], objs))
	return p
}

// TestRequireAuthExchanges plays Secure Authentication exchanges (IEEE
// 1815-2012 clause 7) on one flow and checks every verdict.
func TestRequireAuthExchanges(t *testing.T) {
	p, err := Parse("auth.yaml", []byte(authPolicy))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		pdu    PDU
		reason Reason
	}
	var (
		operate    = dnpReq(4, g(12, 1))
		challenge  = dnpResp(131, false, g(120, 1))
		reply      = dnpReq(32, g(120, 2))
		response   = dnpResp(129, true, g(12, 1))
		aggressive = dnpReq(4, g(120, 3), g(12, 1), g(120, 9))
		keyStatReq = dnpReq(32, g(120, 4))
		keyStatus  = dnpResp(131, false, g(120, 5))
		keyChange  = dnpReq(32, g(120, 6))
		authError  = dnpResp(131, false, g(120, 7))
	)
	tests := []struct {
		name  string
		steps []step
		authd bool // DNP3Authenticated at the end
	}{
		{"challenge answered: control completes", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {reply, ReasonAllowed}, {response, ReasonAllowed}}, true},
		{"outstation executes without challenging: response denied", []step{
			{operate, ReasonAllowed}, {response, ReasonAuthRequired}}, false},
		{"challenge not answered: response denied", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {response, ReasonAuthRequired}}, false},
		{"reply without a challenge", []step{
			{reply, ReasonAuthRequired}}, false},
		{"challenge to nothing outstanding", []step{
			{challenge, ReasonResponseWithoutRequest}}, false},
		{"aggressive mode before any challenge", []step{
			{aggressive, ReasonAuthRequired}}, false},
		{"aggressive mode after an answered challenge", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {reply, ReasonAllowed}, {response, ReasonAllowed},
			{aggressive, ReasonAllowed}, {response, ReasonAllowed}}, true},
		{"aggressive mode after a session key change", []step{
			{keyStatReq, ReasonAllowed}, {keyStatus, ReasonAllowed}, {keyChange, ReasonAllowed}, {keyStatus, ReasonAllowed},
			{aggressive, ReasonAllowed}, {response, ReasonAllowed}}, true},
		{"key change without key status", []step{
			{keyChange, ReasonAuthRequired}}, false},
		{"authentication error: no response may follow", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {authError, ReasonAllowed}, {response, ReasonAuthRequired}}, false},
		{"authentication error closes the challenge", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {authError, ReasonAllowed}, {reply, ReasonAuthRequired}}, false},
		{"a new control needs its own challenge", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {reply, ReasonAllowed}, {response, ReasonAllowed},
			{operate, ReasonAllowed}, {response, ReasonAuthRequired}}, true},
		{"reads need no authentication", []step{
			{dnpReq(1, g(60, 1)), ReasonAllowed}, {dnpResp(129, true, g(1, 2)), ReasonAllowed}}, false},
		{"aggressive mode objects still judged", []step{
			{operate, ReasonAllowed}, {challenge, ReasonAllowed}, {reply, ReasonAllowed}, {response, ReasonAllowed},
			{dnpReq(4, g(120, 3), g(41, 1), g(120, 9)), ReasonObjectNotAllowed}}, true},
		{"authentication request with control objects", []step{
			{dnpReq(32, g(120, 4), g(12, 1)), ReasonObjectNotAllowed}}, false},
		{"authentication response with data objects", []step{
			{operate, ReasonAllowed}, {dnpResp(131, false, g(120, 1), g(1, 2)), ReasonObjectNotAllowed}}, false},
		{"function outside the allow list", []step{
			{dnpReq(13), ReasonFunctionNotAllowed}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := flow("192.0.2.130", "192.0.2.10", 20000)
			for i, s := range tt.steps {
				v := rs.Evaluate(&f, &s.pdu)
				if v.Reason != s.reason {
					t.Fatalf("step %d (%s fc %d): got %v, want %v", i+1, s.pdu.Dir, s.pdu.DNP3.FC, v.Reason, s.reason)
				}
			}
			if got := f.DNP3Authenticated(); got != tt.authd {
				t.Errorf("DNP3Authenticated: got %v, want %v", got, tt.authd)
			}
		})
	}
}

// TestRequireAuthMonitorAdvances: in monitor mode a PDU that would be
// denied still crosses, so the exchange it belongs to is followed.
func TestRequireAuthMonitorAdvances(t *testing.T) {
	p, err := Parse("auth.yaml", []byte(authPolicy+"mode: monitor\n"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := flow("192.0.2.130", "192.0.2.10", 20000)
	steps := []struct {
		pdu    PDU
		action Action
		reason Reason
	}{
		{dnpReq(4, g(12, 1)), Allow, ReasonAllowed},
		{dnpResp(131, false, g(120, 1)), Allow, ReasonAllowed},
		{dnpReq(32, g(120, 2)), Allow, ReasonAllowed},
		{dnpReq(32, g(120, 2)), Alert, ReasonAuthRequired}, // second reply: no challenge open
		{dnpResp(129, true), Allow, ReasonAllowed},
	}
	for i, s := range steps {
		if v := rs.Evaluate(&f, &s.pdu); v.Action != s.action || v.Reason != s.reason {
			t.Fatalf("step %d: got %v/%v, want %v/%v", i+1, v.Action, v.Reason, s.action, s.reason)
		}
	}
}

// TestRequireAuthOff: without require_auth an FC 32 request is judged by
// the allow list like any function, responses need no authentication, and
// an FC 131 rides the flow while a request awaits its answer.
func TestRequireAuthOff(t *testing.T) {
	p, err := Parse("auth.yaml", []byte(authPolicy))
	if err != nil {
		t.Fatal(err)
	}
	p.Conduits[0].Rules[0].DNP3.RequireAuth = false
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := flow("192.0.2.130", "192.0.2.10", 20000)
	for _, tt := range []struct {
		name string
		pdu  PDU
		want Reason
	}{
		{"authentication request not listed", dnpReq(32, g(120, 4)), ReasonFunctionNotAllowed},
		{"operate allowed", dnpReq(4, g(12, 1)), ReasonAllowed},
		{"challenge answers the outstanding request", dnpResp(131, false, g(120, 1)), ReasonAllowed},
		{"unchallenged response allowed", dnpResp(129, true), ReasonAllowed},
		{"challenge with nothing outstanding", dnpResp(131, false, g(120, 1)), ReasonResponseWithoutRequest},
	} {
		if v := rs.Evaluate(&f, &tt.pdu); v.Reason != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, v.Reason, tt.want)
		}
	}
}

// genAuthPDU draws a DNP3 PDU from a vocabulary weighted towards Secure
// Authentication exchanges between master 1 and outstation 10.
func genAuthPDU(r *rand.Rand, p *PDU) {
	ctl := []DNP3Object{g(12, 1)}
	switch r.IntN(16) {
	case 0, 1:
		*p = dnpReq(uint8(pick(r, []int{2, 3, 4, 5, 6, 13})), ctl...)
	case 2:
		*p = dnpReq(uint8(pick(r, []int{4, 5})))
		p.DNP3.NObjects = uint8(copy(p.DNP3.Objects[:], ctl))
		genAggressive(&p.DNP3)
	case 3:
		*p = dnpReq(1, g(60, uint8(1+r.IntN(4))))
	case 4, 5:
		*p = dnpReq(32, g(120, 2))
	case 6:
		*p = dnpReq(32, g(120, uint8(pick(r, []int{4, 6}))))
	case 7:
		*p = dnpReq(33, g(120, 7))
	case 8, 9:
		*p = dnpResp(131, r.IntN(4) == 0, g(120, 1))
	case 10:
		*p = dnpResp(131, false, g(120, uint8(pick(r, []int{5, 7}))))
	case 11, 12, 13:
		*p = dnpResp(129, r.IntN(5) != 0)
	case 14:
		*p = dnpResp(130, false, g(2, 1))
		p.DNP3.Unsolicited = true
	default:
		*p = dnpReq(uint8(pick(r, []int{0, 23, 32})), g(uint8(pick(r, []int{120, 12})), uint8(1+r.IntN(9))))
	}
	if r.IntN(30) == 0 {
		p.DNP3.LinkSrc, p.DNP3.LinkDst = p.DNP3.LinkDst, p.DNP3.LinkSrc // wrong way round
	}
}

// TestAuthSequencesMatchReference compares the compiled engine with the
// reference evaluator on random sequences of PDUs on one flow, so that the
// Secure Authentication state carried from PDU to PDU agrees too.
func TestAuthSequencesMatchReference(t *testing.T) {
	sequences := 4000
	if testenv.Emulated() {
		sequences = 800
	}
	r := rand.New(rand.NewPCG(3, 4))
	reasons := map[Reason]int{}
	for n := 0; n < sequences; n++ {
		pol := &Policy{Version: 1, Name: "auth", Mode: pick(r, []string{"", "", "monitor"})}
		pol.Zones = []Zone{
			{Name: "south", Port: "south", Networks: []string{"192.0.2.0/25"}},
			{Name: "north", Port: "north", Networks: []string{"192.0.2.128/25"}},
		}
		pol.Assets = []Asset{{Name: "hmi", IP: "192.0.2.130", Zone: "north"}, {Name: "plc", IP: "192.0.2.10", Zone: "south"}}
		for i := range 1 + r.IntN(2) {
			c := Conduit{Name: fmt.Sprintf("c%d", i), From: []string{"hmi"}, To: []string{"plc"}}
			for range 1 + r.IntN(2) {
				d := genDNP3Rule(r)
				d.RequireAuth = r.IntN(5) != 0
				if d.RequireAuth {
					d.Tolerate = slices.DeleteFunc(d.Tolerate, func(a string) bool { return a == "seq_mismatch" })
				}
				if r.IntN(2) == 0 {
					d.Allow = append(d.Allow, DNP3Allow{Function: []string{"operate", "direct_operate", "select", "direct_operate_nr"}, Objects: []string{"g12v1"}})
				}
				c.Rules = append(c.Rules, Rule{DNP3: d})
			}
			pol.Conduits = append(pol.Conduits, c)
		}
		rs, err := Compile(pol)
		if err != nil {
			t.Fatalf("random policy does not compile: %v", err)
		}
		f := flow("192.0.2.130", "192.0.2.10", 20000)
		var st refAuth
		var pdu PDU
		for step := range 40 {
			genAuthPDU(r, &pdu)
			got := rs.Evaluate(&f, &pdu)
			exp := refEvaluateAuth(pol, &st, &f, &pdu)
			reasons[exp.reason]++
			if got.Action != exp.action || got.Reason != exp.reason || got.Conduit != exp.conduit || got.Rule != exp.rule ||
				f.DNP3Authenticated() != st.everAnswered {
				y, _ := Marshal(pol)
				t.Fatalf("sequence %d step %d: compiled %v/%v conduit %d rule %d (authenticated %v), reference %v/%v conduit %d rule %d (authenticated %v)\npdu %+v\npolicy:\n%s",
					n, step+1, got.Action, got.Reason, got.Conduit, got.Rule, f.DNP3Authenticated(),
					exp.action, exp.reason, exp.conduit, exp.rule, st.everAnswered, pdu.DNP3, y)
			}
		}
	}
	t.Logf("reasons %v", reasons)
	for _, must := range []Reason{ReasonAllowed, ReasonAuthRequired, ReasonResponseWithoutRequest, ReasonObjectNotAllowed, ReasonFunctionNotAllowed} {
		if reasons[must] < 50 {
			t.Errorf("reason %v seen %d times; the generator should reach it more often", must, reasons[must])
		}
	}
}

func TestRequireAuthAllocs(t *testing.T) {
	p, err := Parse("auth.yaml", []byte(authPolicy))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	seq := []PDU{
		dnpReq(4, g(12, 1)), dnpResp(131, false, g(120, 1)), dnpReq(32, g(120, 2)), dnpResp(129, true),
		dnpReq(4, g(120, 3), g(12, 1), g(120, 9)), dnpResp(129, true),
	}
	f := flow("192.0.2.130", "192.0.2.10", 20000)
	allocs := testing.AllocsPerRun(200, func() {
		for i := range seq {
			_ = rs.Evaluate(&f, &seq[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Evaluate with require_auth allocates %v times per run, want 0", allocs)
	}
}
