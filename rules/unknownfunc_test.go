package rules

import (
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestEvaluateUnknownFunction: a Modbus PDU whose function code is neither
// public nor user-defined (FC 91, anomaly unknown_function) is refused for
// its function when no allowlist names it, tolerated or not; an
// allowlist entry without the anomaly tolerated keeps the malformed
// verdict; listed and tolerated, it is allowed.
func TestEvaluateUnknownFunction(t *testing.T) {
	src := func(tolerate string, listed bool) string {
		s := `version: 1
name: uf
mode: enforce
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
conduits:
  - name: c
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
TOLERATE          allow:
            - read: holding 0-99
`
		if listed {
			s += "            - function: 91\n"
		}
		if tolerate != "" {
			tolerate = "          tolerate: [" + tolerate + "]\n"
		}
		return strings.Replace(s, "TOLERATE", tolerate, 1)
	}
	for _, tc := range []struct {
		name     string
		tolerate string
		listed   bool
		want     string
		action   Action
	}{
		{"not listed", "", false, "function_not_allowed", Deny},
		{"not listed, tolerated", "unknown_function", false, "function_not_allowed", Deny},
		{"listed, not tolerated", "", true, "malformed:unknown_function", Deny},
		{"listed and tolerated", "unknown_function", true, "allowed", Allow},
		{"not listed, another anomaly stays malformed", "", false, "malformed:truncated", Deny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("uf.yaml", []byte(src(tc.tolerate, tc.listed)))
			if err != nil {
				t.Fatal(err)
			}
			rs, err := Compile(p)
			if err != nil {
				t.Fatal(err)
			}
			f := flow("192.0.2.130", "192.0.2.10", 502)
			pdu := mb(91, 0, 0)
			pdu.Anomaly = mustAnomaly(protocols.ProtoModbus, "unknown_function")
			if strings.HasPrefix(tc.want, "malformed:") && tc.want != "malformed:unknown_function" {
				pdu.Anomaly = mustAnomaly(protocols.ProtoModbus, strings.TrimPrefix(tc.want, "malformed:"))
			}
			an := pdu.Anomaly
			v := rs.Evaluate(&f, &pdu)
			if v.ReasonString() != tc.want || v.Action != tc.action {
				t.Fatalf("%v %q, want %v %q", v.Action, v.ReasonString(), tc.action, tc.want)
			}
			if pdu.Anomaly != an {
				t.Fatalf("Evaluate changed the PDU's anomaly to %q", pdu.Anomaly)
			}
			if allocs := testing.AllocsPerRun(100, func() { _ = rs.Evaluate(&f, &pdu) }); allocs != 0 {
				t.Errorf("Evaluate allocates %v times per run, want 0", allocs)
			}
		})
	}
}
