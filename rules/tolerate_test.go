package rules

import (
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

// TestTolerateUnreadFieldsDenied: a tolerated anomaly may let a PDU through
// unread only where the rule does not restrict what was unread. The
// adapters mark what the parser could not read (Modbus.Unread,
// DNP3.FuncUnread, DNP3.ObjectsTruncated, OPCUA.NodesTruncated, OPCUA
// ServiceID 0); with every anomaly tolerated, a rule that restricts such a
// field refuses the PDU with its usual reason, and a rule that does not
// restrict it still allows it.
func TestTolerateUnreadFieldsDenied(t *testing.T) {
	src := func(level string) string {
		mbTol := "          tolerate: [truncated, byte_count_mismatch]\n"
		dnTol := "          tolerate: [truncated_header, truncated_object, bad_qualifier, unknown_function]\n"
		uaTol := "          tolerate: [truncated, message_too_large, interleaved_chunks]\n"
		c := "  - name: c\n    from: hmi\n    to: [plc, rtu, ua]\n"
		if level == "conduit" {
			c += "    tolerate: [truncated, byte_count_mismatch, truncated_header, truncated_object, bad_qualifier, unknown_function, message_too_large, interleaved_chunks]\n"
			mbTol, dnTol, uaTol = "", "", ""
		}
		return `version: 1
name: tolerate
mode: enforce
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
  rtu: { ip: 192.0.2.20, zone: cell }
  ua:  { ip: 192.0.2.30, zone: cell }
conduits:
` + c + `    rules:
      - modbus:
` + mbTol + `          allow:
            - read: holding 0-99
            - write: holding 0-9
            - function: 8/0
            - function: 17
      - dnp3:
` + dnTol + `          allow:
            - function: read
              objects: [g1, g60]
            - function: confirm
            - function: write
      - opcua:
` + uaTol + `          min_security_mode: none
          allow:
            - service: write
              nodes: ["ns=2;s=Line1.Setpoint"]
            - service: read
`
	}
	unread := func(p PDU) PDU { p.Modbus.Unread = true; return p }
	anomaly := func(p PDU, a string) PDU { p.Anomaly = mustAnomaly(p.Proto, a); return p }
	dn := func(fc uint8, objs ...DNP3Object) PDU {
		p := PDU{Proto: protocols.ProtoDNP3, Dir: protocols.Request, DNP3: DNP3{LinkSrc: 1, LinkDst: 10, FC: fc}}
		p.DNP3.NObjects = uint8(copy(p.DNP3.Objects[:], objs))
		return p
	}
	truncObjs := func(p PDU) PDU { p.DNP3.ObjectsTruncated = true; return p }
	funcUnread := func(p PDU) PDU { p.DNP3.FuncUnread = true; return p }
	setpoint := opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Setpoint")}
	ua := func(svc uint32, truncated bool, nodes ...opcua.NodeID) PDU {
		p := PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Request, OPCUA: OPCUA{MsgType: opcua.TypeMSG, SecurityMode: opcua.ModeNone, ServiceID: svc, NodesTruncated: truncated}}
		p.OPCUA.NNodes = uint8(copy(p.OPCUA.Nodes[:], nodes))
		return p
	}
	diag := mb(8, 0, 0)
	tests := []struct {
		name   string
		port   uint16
		dst    string
		pdu    PDU
		reason Reason
	}{
		{"modbus read, address unread", 502, "192.0.2.10", anomaly(unread(mb(3, 0, 0)), "truncated"), ReasonAddressOutOfRange},
		{"modbus write, address unread", 502, "192.0.2.10", anomaly(unread(mb(6, 0, 1)), "truncated"), ReasonAddressOutOfRange},
		{"modbus read/write, addresses unread", 502, "192.0.2.10", anomaly(unread(mb(23, 0, 0)), "truncated"), ReasonAddressOutOfRange},
		{"modbus diagnostics, sub-function unread", 502, "192.0.2.10", anomaly(unread(diag), "truncated"), ReasonFunctionNotAllowed},
		{"modbus read, address read", 502, "192.0.2.10", anomaly(mb(3, 10, 0), "truncated"), ReasonAllowed},
		{"modbus report server id: nothing restricted unread", 502, "192.0.2.10", anomaly(unread(mb(17, 0, 0)), "truncated"), ReasonAllowed},
		{"dnp3 function unread", 20000, "192.0.2.20", anomaly(funcUnread(dn(0)), "truncated_header"), ReasonFunctionNotAllowed},
		{"dnp3 read, walk stopped", 20000, "192.0.2.20", anomaly(truncObjs(dn(1, DNP3Object{Group: 1, Variation: 2})), "bad_qualifier"), ReasonObjectNotAllowed},
		{"dnp3 write (any object), walk stopped", 20000, "192.0.2.20", anomaly(truncObjs(dn(2)), "truncated_object"), ReasonAllowed},
		{"dnp3 read, walk complete", 20000, "192.0.2.20", anomaly(dn(1, DNP3Object{Group: 60, Variation: 1}), "truncated_object"), ReasonAllowed},
		{"opcua write, nodes unread", 4840, "192.0.2.30", anomaly(ua(673, true, setpoint), "message_too_large"), ReasonNodeNotAllowed},
		{"opcua service unread", 4840, "192.0.2.30", anomaly(ua(0, false), "interleaved_chunks"), ReasonServiceNotAllowed},
		{"opcua read (no node restriction), cut short", 4840, "192.0.2.30", anomaly(ua(631, true), "truncated"), ReasonAllowed},
	}
	for _, level := range []string{"rule", "conduit"} {
		p, err := Parse("tolerate.yaml", []byte(src(level)))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range tests {
			t.Run(level+"/"+tc.name, func(t *testing.T) {
				f := flow("192.0.2.130", tc.dst, tc.port)
				v := rs.Evaluate(&f, &tc.pdu)
				if v.Reason != tc.reason || (v.Action == Allow) != (tc.reason == ReasonAllowed) {
					t.Fatalf("got %v %v, want %v", v.Action, v.Reason, tc.reason)
				}
			})
		}
	}
}

// TestLongADU: a Modbus ADU over the specification's 260 bytes (FC 90,
// Schneider UMAS, MBAP length 255: the parser's long_adu) is denied by
// that name unless a modbus rule or its conduit tolerates long_adu; the
// tolerated ADU is still judged by its function (tolerating the length
// allows no UMAS function the rule does not list). Only modbus reports
// it, so only a conduit with a modbus rule may tolerate it.
func TestLongADU(t *testing.T) {
	policy := func(ruleTol, conduitTol string) string {
		return `version: 1
name: long
mode: enforce
zones:
  eng:  { networks: [192.0.2.128/25] }
  cell: { networks: [192.0.2.0/25] }
conduits:
  - name: unity
    from: eng
    to: cell
` + conduitTol + `    rules:
      - modbus:
` + ruleTol + `          allow:
            - function: [90/upload_block, 90/read_id]
`
	}
	f := flow("192.0.2.130", "192.0.2.10", 502)
	long := func(dir protocols.Dir, sub uint16) PDU {
		return PDU{Proto: protocols.ProtoModbus, Dir: dir, Anomaly: mustAnomaly(protocols.ProtoModbus, "long_adu"), Modbus: Modbus{FC: 90, Sub: sub, PairedRequest: dir == protocols.Response}}
	}
	for _, tc := range []struct {
		name, ruleTol, conduitTol string
		pdu                       PDU
		action                    Action
		reason                    string
	}{
		{"not tolerated", "", "", long(protocols.Request, 0x31), Deny, "malformed:long_adu"},
		{"not tolerated response", "", "", long(protocols.Response, 0), Deny, "malformed:long_adu"},
		{"rule tolerates", "          tolerate: [long_adu]\n", "", long(protocols.Request, 0x31), Allow, "allowed"},
		{"rule tolerates response", "          tolerate: [long_adu]\n", "", long(protocols.Response, 0), Allow, "allowed"},
		{"conduit tolerates", "", "    tolerate: [long_adu]\n", long(protocols.Request, 0x31), Allow, "allowed"},
		{"tolerated, function not allowed", "          tolerate: [long_adu]\n", "", long(protocols.Request, 0x41), Deny, "function_not_allowed"},
	} {
		p, err := Parse("long.yaml", []byte(policy(tc.ruleTol, tc.conduitTol)))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Compile(p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		pdu := tc.pdu
		if v := rs.Evaluate(&f, &pdu); v.Action != tc.action || v.ReasonString() != tc.reason {
			t.Errorf("%s: %v %s, want %v %s", tc.name, v.Action, v.ReasonString(), tc.action, tc.reason)
		}
	}
	if msg := Tolerable(protocols.ProtoModbus, "long_adu"); msg != "" {
		t.Errorf("Tolerable(modbus, long_adu) = %q, want honoured", msg)
	}
	for _, proto := range []protocols.Proto{protocols.ProtoDNP3, protocols.ProtoOPCUA} {
		if msg := Tolerable(proto, "long_adu"); msg == "" {
			t.Errorf("Tolerable(%v, long_adu) accepted: no %v parser reports it", proto, proto)
		}
	}
	bad := strings.Replace(policy("", ""), "      - modbus:\n          allow:\n            - function: [90/upload_block, 90/read_id]\n",
		"      - dnp3:\n          tolerate: [long_adu]\n          allow:\n            - function: read\n", 1)
	p, err := Parse("long.yaml", []byte(bad))
	if err == nil {
		_, err = Compile(p)
	}
	if err == nil || !strings.Contains(err.Error(), `unknown dnp3 anomaly "long_adu"`) {
		t.Errorf("dnp3 rule tolerating long_adu: %v, want unknown dnp3 anomaly", err)
	}
}
