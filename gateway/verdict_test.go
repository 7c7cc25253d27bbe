package gateway

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// TestOnVerdictCalledForAllowedFlows: the hook sees allowed flow-level
// and L2 decisions, not only denies, alerts and PDUs (replay and learn
// count allowed flows through it).
func TestOnVerdictCalledForAllowedFlows(t *testing.T) {
	sshEP := capture.Endpoint{MAC: plcEP.MAC, Addr: netip.MustParseAddrPort("192.0.2.10:22")}
	conduits := tcpConduit + `      - udp: { ports: [161] }
      - icmp: {}
`
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
		proto string
		flow  bool // a flow-table flow (FlowID set)
	}{
		{"tcp syn", func(t *testing.T) []byte { return capture.NewTCPFlow(hmiEP, sshEP).Handshake()[0] }, "tcp", true},
		{"udp datagram", func(t *testing.T) []byte { return capture.UDPDatagram(hmiEP, snmpEP, []byte("get")) }, "udp", true},
		{"icmp echo", func(t *testing.T) []byte { return icmpFrame(t, hmiEP, plcEP, icmp4Echo, 1, 1, nil) }, "icmp", false},
		{"arp", arpFrame, "l2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "drop", "l2: { allow: [arp] }", conduits), nil)
			fr := tc.frame(t)
			r.mustForward(r.client(fr), South, fr)
			if len(r.decs) != 1 {
				t.Fatalf("got %d decisions, want 1", len(r.decs))
			}
			d := r.decs[0]
			if !d.HasVerdict || d.Verdict.Action != rules.Allow || d.Action != FrameForward || d.Drop != DropNone || d.Proto != tc.proto {
				t.Fatalf("decision %+v, want an allowed %s verdict, forwarded", d, tc.proto)
			}
			if tc.proto != "l2" && d.Verdict.ConduitName != "hmi-ssh" {
				t.Fatalf("conduit %q, want hmi-ssh", d.Verdict.ConduitName)
			}
			if got := d.FlowID != 0; got != tc.flow {
				t.Fatalf("FlowID %d, want set=%v", d.FlowID, tc.flow)
			}
		})
	}
}

// TestOverlapEvasionNamed: an overlapping retransmission with different
// bytes is reported as an evasion with a stable name, in enforce (reset)
// and monitor (alert, forwarded) mode.
func TestOverlapEvasionNamed(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		verdict string
		action  FrameAction
		drop    DropReason
	}{
		{"enforce resets", "enforce", "deny", FrameInject, DropEvasion},
		{"monitor alerts", "monitor", "alert", FrameForward, DropNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, tc.mode, "drop", "", modbusConduit), nil)
			f := capture.NewTCPFlow(hmiEP, plcEP)
			r.handshake(f)
			seq := f.NextSeq(true)
			first := f.Send(true, readReq(1, 0, 1))
			r.mustForward(r.client(first), South, first)
			re := f.Segment(true, seq, f.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, writeReq(1, 41, 1))
			got := r.client(re)
			if tc.mode == "monitor" {
				r.mustForward(got, South, re)
			}
			d := r.decs[len(r.decs)-1]
			if !d.Evasion || d.EvasionName != EvasionTCPOverlap || d.Action != tc.action || d.Drop != tc.drop {
				t.Fatalf("decision evasion=%v name=%q action=%v drop=%v, want true %q %v %v",
					d.Evasion, d.EvasionName, d.Action, d.Drop, EvasionTCPOverlap, tc.action, tc.drop)
			}
			ev := r.lastEvent()
			if ev.Reason != ReasonEvasionTCPOverlap || ev.Verdict != tc.verdict || ev.Fields["evasion"] != EvasionTCPOverlap {
				t.Fatalf("event reason=%q verdict=%q fields=%v, want %q %q", ev.Reason, ev.Verdict, ev.Fields, ReasonEvasionTCPOverlap, tc.verdict)
			}
		})
	}
}

// TestModbusUnknownFunctionIsFunctionNotAllowed: FC 91, neither public,
// user-defined nor a vendor extension this gateway decodes (FC 90, UMAS, is
// one since issue 14), is refused because no allowlist names
// it, not as a malformed PDU; only an explicit allowlist entry without the
// anomaly tolerated keeps the malformed verdict.
func TestModbusUnknownFunctionIsFunctionNotAllowed(t *testing.T) {
	umas := modbus.AppendRequest(nil, 1, 1, []byte{91, 0x00, 0x02}) // FC 91
	listed := `  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          TOLERATE
          allow:
            - read: holding 0-99
            - function: 91
`
	withTol := func(s, tol string) string {
		if tol == "" {
			return strings.Replace(s, "          TOLERATE\n", "", 1)
		}
		return strings.Replace(s, "TOLERATE", "tolerate: ["+tol+"]", 1)
	}
	tests := []struct {
		name    string
		conduit string
		allow   bool
		reason  string
	}{
		{"not in the allowlist", modbusConduit, false, "function_not_allowed"},
		{"not in the allowlist, anomaly tolerated", withTol(listed[:len(listed)-len("            - function: 91\n")], "unknown_function"), false, "function_not_allowed"},
		{"listed but anomaly not tolerated", withTol(listed, ""), false, "malformed:unknown_function"},
		{"listed and tolerated", withTol(listed, "unknown_function"), true, "allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", tc.conduit), nil)
			f := capture.NewTCPFlow(hmiEP, plcEP)
			r.handshake(f)
			fr := f.Send(true, umas)
			got := r.client(fr)
			d := r.decs[len(r.decs)-1]
			if d.Verdict.ReasonString() != tc.reason {
				t.Fatalf("reason %q, want %q", d.Verdict.ReasonString(), tc.reason)
			}
			if tc.allow {
				r.mustForward(got, South, fr)
				return
			}
			if len(got) != 2 || got[0].frame[47]&packet.TCPRst == 0 {
				t.Fatalf("got %s, want RST both ways", describe(got))
			}
			if ev := r.lastEvent(); ev.Reason != tc.reason {
				t.Fatalf("event reason %q, want %q", ev.Reason, tc.reason)
			}
		})
	}
}
