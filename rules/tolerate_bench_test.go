package rules

import (
	"net/netip"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// BenchmarkEvaluateTolerated judges Modbus PDUs that carry a parser
// anomaly against tolerate lists (a rule's and its conduit's): tolerated
// by the rule, by the conduit, a tolerated pairing anomaly, and one not
// tolerated (malformed, then the unknown-function re-judgement).
func BenchmarkEvaluateTolerated(b *testing.B) {
	p := &Policy{Version: 1, Name: "tol",
		Zones:  []Zone{{Name: "north", Networks: []string{"192.0.2.128/25"}}, {Name: "south", Networks: []string{"192.0.2.0/25"}}},
		Assets: []Asset{{Name: "hmi", IP: "192.0.2.130", Zone: "north"}, {Name: "plc", IP: "192.0.2.10", Zone: "south"}},
		Conduits: []Conduit{{Name: "c", From: []string{"hmi"}, To: []string{"plc"},
			Tolerate: []string{"truncated", "echo_mismatch"},
			Rules: []Rule{{Modbus: &ModbusRule{
				Tolerate: []string{"long_adu", "byte_count_mismatch", "pdu_length", "quantity_out_of_range", "tid_mismatch"},
				Allow:    []ModbusAllow{{Read: "holding 0-99"}, {Function: []string{"90"}}}}}}}}}
	rs, err := Compile(p)
	if err != nil {
		b.Fatal(err)
	}
	f := Flow{Transport: TransportTCP, SrcPort: 40000, DstPort: 502, Src: netip.MustParseAddr("192.0.2.130"), Dst: netip.MustParseAddr("192.0.2.10")}
	req := func(anomaly string) PDU {
		return PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Anomaly: benchAnomaly(anomaly), Modbus: Modbus{FC: 3, Addr: 10, Qty: 5}}
	}
	resp := req("tid_mismatch")
	resp.Dir = protocols.Response
	for _, tc := range []struct {
		name string
		pdu  PDU
		want Action
	}{
		{"rule_tolerates", req("quantity_out_of_range"), Allow},
		{"conduit_tolerates", req("echo_mismatch"), Allow},
		{"pairing_tolerated", resp, Allow},
		{"not_tolerated", req("unknown_function"), Deny},
	} {
		pdu := tc.pdu
		if v := rs.Evaluate(&f, &pdu); v.Action != tc.want {
			b.Fatalf("%s: %v %v, want %v", tc.name, v.Action, v.ReasonString(), tc.want)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = rs.Evaluate(&f, &pdu)
			}
		})
	}
}

// benchAnomaly is the Modbus anomaly named name.
func benchAnomaly(name string) protocols.Anomaly { return mustAnomaly(protocols.ProtoModbus, name) }
