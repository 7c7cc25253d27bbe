package gateway

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/rules"
)

// TestMonitorModeNeverDropsMalformed: in monitor mode the gateway alerts
// and forwards; it never drops a PDU of an allowed flow, whatever its
// anomaly and whether a rule tolerates it. The cases are the tolerate
// test's DNP3 requests, mutated so that the parser reports every kind of
// anomaly (framing ones included), sent under a monitor-mode policy that
// tolerates every tolerable anomaly, at rule and at conduit level. Every
// byte must reach the outstation, and every anomalous PDU must be judged
// alert, not deny (a tolerated anomaly on bytes that cannot be read as a
// PDU used to be forced to deny in monitor mode too).
func TestMonitorModeNeverDropsMalformed(t *testing.T) {
	tol := anomalyList(protocols.ProtoDNP3, dnp3AnomalyName)
	cases := dnCases(rand.New(rand.NewPCG(tolerateSeed, 3)), 1500)
	// User data in link frames whose function carries none (reset link
	// states, test link, request link status): unexpected_data, bytes
	// the gateway cannot read as a PDU, whose empty PDU a rule allowing
	// confirm (function code 0) would allow.
	read := dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncRead), 60, 1)
	for _, fn := range []uint8{0x00, 0x02, 0x09} {
		cases = append(cases, tolMut{"link function " + strconv.Itoa(int(fn)) + " with user data",
			dnp3.AppendLinkFrames(nil, dnp3.CtrlDIR|dnp3.CtrlPRM|fn, 10, 1, read)})
	}
	for _, level := range []string{"rule", "conduit"} {
		t.Run(level, func(t *testing.T) {
			mk := func() *rules.Ruleset {
				c := "  - name: tol\n    from: hmi\n    to: rtu\n    mode: monitor\n"
				if level == "conduit" {
					c += "    tolerate: [" + tol + "]\n"
				}
				c += "    rules:\n      - dnp3:\n"
				if level == "rule" {
					c += "          tolerate: [" + tol + "]\n"
				}
				return policy(t, "enforce", "reset", "", c+tolDNP3Rule)
			}
			tr := newTolRig(t, mk, rtuEP, nil)
			anomalous, alerted, unexpected := 0, 0, 0
			for _, c := range cases {
				crossed, judged := tr.run(c.payload)
				if crossed != len(c.payload) {
					t.Fatalf("%s: %d of %d bytes crossed in monitor mode; judged %+v", c.desc, crossed, len(c.payload), judged)
				}
				for _, j := range judged {
					if j.action == rules.Deny {
						t.Fatalf("%s: a PDU judged deny in monitor mode: %+v", c.desc, j)
					}
					if j.anomaly == "unexpected_data" {
						unexpected++
					}
					if j.anomaly != "" {
						anomalous++
						if j.action == rules.Alert {
							alerted++
						}
					}
				}
			}
			if anomalous == 0 || unexpected == 0 {
				t.Fatalf("%d PDUs carried an anomaly, %d unexpected_data: the cases miss what they test", anomalous, unexpected)
			}
			t.Logf("%d cases, %d anomalous PDUs, %d of them alerted, none dropped", len(cases), anomalous, alerted)
		})
	}
}
