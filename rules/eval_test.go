package rules

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

func mustCompile(t testing.TB, path string) *Ruleset {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func flow(src, dst string, dport uint16) Flow {
	return Flow{InPort: "north", OutPort: "south", Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		SrcPort: 40000, DstPort: dport, Transport: TransportTCP}
}

func mb(fc uint8, addr, qty uint16, vals ...uint16) PDU {
	p := PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: Modbus{Unit: 1, FC: fc, Addr: addr, Qty: qty}}
	p.Modbus.NValues = uint8(copy(p.Modbus.Values[:], vals))
	return p
}

func TestEvaluateDesignPolicy(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	hmiPLC := flow("192.0.2.130", "192.0.2.10", 502)
	scadaRTU := flow("192.0.2.140", "192.0.2.20", 20000)
	opc := flow("192.0.2.131", "192.0.2.50", 4840)
	dnp := func(dir protocols.Dir, src, dst uint16, fc uint8, objs ...DNP3Object) PDU {
		p := PDU{Proto: protocols.ProtoDNP3, Dir: dir, DNP3: DNP3{LinkSrc: src, LinkDst: dst, FC: fc}}
		p.DNP3.NObjects = uint8(copy(p.DNP3.Objects[:], objs))
		return p
	}
	ua := func(mt opcua.MessageType, mode opcua.SecurityMode, pol string, svc uint32, nodes ...opcua.NodeID) PDU {
		p := PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Request, OPCUA: OPCUA{MsgType: mt, SecurityMode: mode, SecurityPolicy: pol, ServiceID: svc}}
		p.OPCUA.NNodes = uint8(copy(p.OPCUA.Nodes[:], nodes))
		return p
	}
	setpoint := opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Setpoint")}
	other := opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Speed")}
	withUnit := func(p PDU, u uint8) PDU { p.Modbus.Unit = u; return p }
	withAnomaly := func(p PDU, a string) PDU { p.Anomaly = mustAnomaly(p.Proto, a); return p }
	resp := func(p PDU, paired bool) PDU { p.Dir = protocols.Response; p.Modbus.PairedRequest = paired; return p }
	fc23 := mb(23, 0, 10, 5)
	fc23.Modbus.WriteAddr, fc23.Modbus.WriteQty = 40, 1
	fc23bad := fc23
	fc23bad.Modbus.WriteAddr = 60
	tests := []struct {
		name    string
		flow    Flow
		pdu     PDU
		action  Action
		reason  Reason
		conduit string
	}{
		{"read holding in range", hmiPLC, mb(3, 0, 100), Allow, ReasonAllowed, "hmi-polls-plc"},
		{"read holding past the end", hmiPLC, mb(3, 90, 20), Deny, ReasonAddressOutOfRange, "hmi-polls-plc"},
		{"read coils", hmiPLC, mb(1, 0, 16), Allow, ReasonAllowed, "hmi-polls-plc"},
		{"read input registers not allowed", hmiPLC, mb(4, 0, 1), Deny, ReasonFunctionNotAllowed, "hmi-polls-plc"},
		{"write single register in range", hmiPLC, mb(6, 45, 1, 1000), Allow, ReasonAllowed, "hmi-polls-plc"},
		{"write single register value too big", hmiPLC, mb(6, 45, 1, 1001), Deny, ReasonValueOutOfRange, "hmi-polls-plc"},
		{"write multiple registers outside", hmiPLC, mb(16, 48, 3, 1, 2, 3), Deny, ReasonAddressOutOfRange, "hmi-polls-plc"},
		{"write coils not allowed", hmiPLC, mb(15, 0, 8), Deny, ReasonFunctionNotAllowed, "hmi-polls-plc"},
		{"mask write has unknown value", hmiPLC, mb(22, 45, 1), Deny, ReasonValueOutOfRange, "hmi-polls-plc"},
		{"read/write multiple both halves allowed", hmiPLC, fc23, Allow, ReasonAllowed, "hmi-polls-plc"},
		{"read/write multiple write half outside", hmiPLC, fc23bad, Deny, ReasonAddressOutOfRange, "hmi-polls-plc"},
		{"device identification", hmiPLC, func() PDU { p := mb(43, 0, 0); p.Modbus.Sub = 14; return p }(), Allow, ReasonAllowed, "hmi-polls-plc"},
		{"CANopen MEI not allowed", hmiPLC, func() PDU { p := mb(43, 0, 0); p.Modbus.Sub = 13; return p }(), Deny, ReasonFunctionNotAllowed, "hmi-polls-plc"},
		{"diagnostics not allowed", hmiPLC, mb(8, 0, 0), Deny, ReasonFunctionNotAllowed, "hmi-polls-plc"},
		{"wrong unit", hmiPLC, withUnit(mb(3, 0, 1), 2), Deny, ReasonUnitNotAllowed, "hmi-polls-plc"},
		{"malformed", hmiPLC, withAnomaly(mb(3, 0, 1), "mbap_length"), Deny, ReasonMalformed, "hmi-polls-plc"},
		{"paired response", hmiPLC, resp(mb(3, 0, 1), true), Allow, ReasonAllowed, "hmi-polls-plc"},
		{"response without request", hmiPLC, resp(mb(3, 0, 1), false), Deny, ReasonResponseWithoutRequest, "hmi-polls-plc"},
		{"modbus to the rtu: no modbus rule", flow("192.0.2.130", "192.0.2.20", 502), mb(3, 0, 1), Deny, ReasonProtocolNotAllowed, "scada-rtu"},
		{"modbus from unknown host", flow("198.51.100.1", "192.0.2.10", 502), mb(3, 0, 1), Deny, ReasonNoConduit, ""},
		{"dnp3 read class data", scadaRTU, dnp(protocols.Request, 1, 10, 1, DNP3Object{Group: 60, Variation: 2}), Allow, ReasonAllowed, "scada-rtu"},
		{"dnp3 read analog output not allowed", scadaRTU, dnp(protocols.Request, 1, 10, 1, DNP3Object{Group: 40, Variation: 1}), Deny, ReasonObjectNotAllowed, "scada-rtu"},
		{"dnp3 operate crob", scadaRTU, dnp(protocols.Request, 1, 10, 4, DNP3Object{Group: 12, Variation: 1}), Allow, ReasonAllowed, "scada-rtu"},
		{"dnp3 operate pattern mask", scadaRTU, dnp(protocols.Request, 1, 10, 4, DNP3Object{Group: 12, Variation: 2}), Deny, ReasonObjectNotAllowed, "scada-rtu"},
		{"dnp3 direct operate", scadaRTU, dnp(protocols.Request, 1, 10, 5, DNP3Object{Group: 12, Variation: 1}), Deny, ReasonFunctionNotAllowed, "scada-rtu"},
		{"dnp3 cold restart", scadaRTU, dnp(protocols.Request, 1, 10, 13), Deny, ReasonFunctionNotAllowed, "scada-rtu"},
		{"dnp3 wrong master", scadaRTU, dnp(protocols.Request, 2, 10, 1), Deny, ReasonLinkAddressNotAllowed, "scada-rtu"},
		{"dnp3 unsolicited allowed", scadaRTU, dnp(protocols.Response, 10, 1, 130), Allow, ReasonAllowed, "scada-rtu"},
		{"dnp3 response without request", scadaRTU, dnp(protocols.Response, 10, 1, 129), Deny, ReasonResponseWithoutRequest, "scada-rtu"},
		{"opcua open sign basic256sha256 (monitor)", opc, ua(opcua.TypeOPN, opcua.ModeSign, "Basic256Sha256", 0), Allow, ReasonAllowed, "opc-clients"},
		{"opcua open none is an alert", opc, ua(opcua.TypeOPN, opcua.ModeNone, "None", 0), Alert, ReasonSecurityModeTooLow, "opc-clients"},
		{"opcua open basic128 is an alert", opc, ua(opcua.TypeOPN, opcua.ModeSign, "Basic128Rsa15", 0), Alert, ReasonSecurityPolicyNotAllowed, "opc-clients"},
		{"opcua read", opc, ua(opcua.TypeMSG, opcua.ModeSign, "", 631), Allow, ReasonAllowed, "opc-clients"},
		{"opcua create session implied", opc, ua(opcua.TypeMSG, opcua.ModeSign, "", 461), Allow, ReasonAllowed, "opc-clients"},
		{"opcua write setpoint", opc, ua(opcua.TypeMSG, opcua.ModeSign, "", 673, setpoint), Allow, ReasonAllowed, "opc-clients"},
		{"opcua write other node", opc, ua(opcua.TypeMSG, opcua.ModeSign, "", 673, setpoint, other), Alert, ReasonNodeNotAllowed, "opc-clients"},
		{"opcua call", opc, ua(opcua.TypeMSG, opcua.ModeSign, "", 712), Alert, ReasonServiceNotAllowed, "opc-clients"},
		{"opcua encrypted body", opc, ua(opcua.TypeMSG, opcua.ModeSignAndEncrypt, "", 0), Allow, ReasonAllowed, "opc-clients"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.flow
			v := rs.Evaluate(&f, &tt.pdu)
			if v.Action != tt.action || v.Reason != tt.reason || v.ConduitName != tt.conduit {
				t.Errorf("got %v %v conduit %q, want %v %v conduit %q", v.Action, v.Reason, v.ConduitName, tt.action, tt.reason, tt.conduit)
			}
			if tt.reason == ReasonMalformed && v.ReasonString() != "malformed:"+tt.pdu.Anomaly.String() {
				t.Errorf("ReasonString = %q, want malformed:%s", v.ReasonString(), tt.pdu.Anomaly)
			}
		})
	}
}

func TestEvaluateFlow(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	icmp := flow("192.0.2.131", "192.0.2.50", 0)
	icmp.Transport, icmp.ICMPType = TransportICMP, 8
	arp := Flow{EtherType: 0x0806}
	lldp := Flow{EtherType: 0x88cc}
	frag := flow("192.0.2.130", "192.0.2.10", 502)
	frag.Fragment = true
	wrongPort := flow("192.0.2.130", "192.0.2.10", 502)
	wrongPort.InPort, wrongPort.OutPort = "south", "north"
	gre := flow("192.0.2.131", "192.0.2.50", 0)
	gre.Transport = 47
	tests := []struct {
		name    string
		flow    Flow
		action  Action
		reason  Reason
		inspect protocols.Proto
	}{
		{"modbus flow is inspected", flow("192.0.2.130", "192.0.2.10", 502), Allow, ReasonAllowed, protocols.ProtoModbus},
		{"dnp3 flow is inspected", flow("192.0.2.140", "192.0.2.20", 20000), Allow, ReasonAllowed, protocols.ProtoDNP3},
		{"ssh to cell (monitor conduit)", flow("192.0.2.131", "192.0.2.50", 22), Allow, ReasonAllowed, protocols.ProtoNone},
		{"telnet to cell is an alert", flow("192.0.2.131", "192.0.2.50", 23), Alert, ReasonPortNotAllowed, protocols.ProtoNone},
		{"telnet to plc denied", flow("192.0.2.130", "192.0.2.10", 23), Deny, ReasonPortNotAllowed, protocols.ProtoNone},
		{"reverse direction has no conduit", flow("192.0.2.10", "192.0.2.130", 502), Deny, ReasonNoConduit, protocols.ProtoNone},
		{"initiator on the wrong port", wrongPort, Deny, ReasonNoConduit, protocols.ProtoNone},
		{"icmp echo", icmp, Allow, ReasonAllowed, protocols.ProtoNone},
		{"arp allowed", arp, Allow, ReasonAllowed, protocols.ProtoNone},
		{"lldp denied", lldp, Deny, ReasonL2NotAllowed, protocols.ProtoNone},
		{"fragment denied", frag, Deny, ReasonFragment, protocols.ProtoNone},
		{"gre is an alert in the monitor conduit", gre, Alert, ReasonProtocolNotAllowed, protocols.ProtoNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.flow
			v := rs.EvaluateFlow(&f)
			if v.Action != tt.action || v.Reason != tt.reason || v.Inspect != tt.inspect {
				t.Errorf("got %v %v inspect %v, want %v %v inspect %v", v.Action, v.Reason, v.Inspect, tt.action, tt.reason, tt.inspect)
			}
		})
	}
}

func TestVerdictDenyAction(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	f := flow("192.0.2.130", "192.0.2.10", 502)
	p := mb(4, 0, 1)
	v := rs.Evaluate(&f, &p)
	if got, want := v.DenyAction, ActionReply; got != want {
		t.Errorf("DenyAction = %v, want %v (policy default)", got, want)
	}
	if got, want := v.RuleName, "modbus#1"; got != want {
		t.Errorf("RuleName = %q, want %q", got, want)
	}
}

func TestEvaluateAllocatesNothing(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	f := flow("192.0.2.130", "192.0.2.10", 502)
	pdus := []PDU{mb(3, 0, 10), mb(16, 40, 3, 1, 2, 3), mb(6, 99, 1, 1)}
	setp := PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Request, OPCUA: OPCUA{MsgType: opcua.TypeMSG, SecurityMode: 2, ServiceID: 673, NNodes: 1}}
	setp.OPCUA.Nodes[0] = opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Setpoint")}
	of := flow("192.0.2.131", "192.0.2.50", 4840)
	for _, cached := range []bool{true, false} {
		allocs := testing.AllocsPerRun(200, func() {
			for i := range pdus {
				if !cached {
					f.Invalidate()
					of.Invalidate()
				}
				_ = rs.Evaluate(&f, &pdus[i])
				_ = rs.Evaluate(&of, &setp)
				_ = rs.EvaluateFlow(&f)
			}
		})
		if allocs != 0 {
			t.Errorf("cached=%v: Evaluate/EvaluateFlow allocate %v times per run, want 0", cached, allocs)
		}
	}
}

func TestReloadedRulesetRevalidatesFlowCache(t *testing.T) {
	p, err := Load("testdata/design.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs1, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := flow("192.0.2.130", "192.0.2.10", 502)
	pdu := mb(3, 0, 1)
	if v := rs1.Evaluate(&f, &pdu); v.Action != Allow {
		t.Fatalf("before reload: got %v, want allow", v.Action)
	}
	p.Conduits = p.Conduits[1:] // drop hmi-polls-plc
	rs2, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	// hmi1 is in zone supervisory and plc1 in cell3: only the monitor-mode
	// opc-clients conduit joins them now, and it has no modbus rule.
	if v := rs2.Evaluate(&f, &pdu); v.Action != Alert || v.Reason != ReasonProtocolNotAllowed || v.ConduitName != "opc-clients" {
		t.Errorf("after reload with the same Flow: got %v %v %q, want alert protocol_not_allowed \"opc-clients\"", v.Action, v.Reason, v.ConduitName)
	}
	if rs2.Generation() <= rs1.Generation() {
		t.Errorf("generation did not grow: %d then %d", rs1.Generation(), rs2.Generation())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, path := range []string{"testdata/design.yaml", "../examples/water-dnp3.yaml", "../examples/packaging-modbus.yaml", "../examples/historian-opcua.yaml"} {
		t.Run(path, func(t *testing.T) {
			p, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			q, err := Parse("roundtrip.yaml", out)
			if err != nil {
				t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
			}
			p.File, q.File, p.pos, q.pos = "", "", nil, nil
			if !reflect.DeepEqual(p, q) {
				t.Errorf("round trip changed the policy:\n%s", out)
			}
			r1, err1 := Compile(p)
			r2, err2 := Compile(q)
			if err1 != nil || err2 != nil || r1.Hash() != r2.Hash() {
				t.Errorf("compiled hashes differ or fail: %v %v", err1, err2)
			}
		})
	}
}

func TestExamplesCompile(t *testing.T) {
	for _, path := range []string{"../examples/water-dnp3.yaml", "../examples/packaging-modbus.yaml", "../examples/historian-opcua.yaml"} {
		t.Run(path, func(t *testing.T) {
			if got := checkLines(path, mustRead(t, path)); got != nil {
				t.Errorf("problems: %q, want none", got)
			}
		})
	}
}

func TestProblemsMatchErrInvalid(t *testing.T) {
	_, err := Parse("x.yaml", []byte("version: 1\nbogus: 1\n"))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want an error matching ErrInvalid", err)
	}
}

// TestL2LLC: IEEE 802.3 frames with a length field (spanning tree BPDUs)
// have no ethertype to list; `llc` allows them all, and only them
// (issue 14: learn drafts what it saw on layer 2).
func TestL2LLC(t *testing.T) {
	pol := func(allow ...string) *Ruleset {
		rs, err := Compile(&Policy{Version: 1, Name: "l2", L2: L2{Allow: allow}})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	stp := Flow{EtherType: 0x0026}
	exp := Flow{EtherType: 0x88b5}
	for _, tc := range []struct {
		name  string
		rs    *Ruleset
		f     Flow
		allow bool
	}{
		{"stp without llc", pol("arp"), stp, false},
		{"stp with llc", pol("llc"), stp, true},
		{"llc allows no ethertype", pol("llc"), exp, false},
		{"unnamed ethertype by number", pol(EtherTypeName(0x88b5)), exp, true},
	} {
		v := tc.rs.EvaluateFlow(&tc.f)
		if (v.Action == Allow) != tc.allow || !tc.allow && v.Reason != ReasonL2NotAllowed {
			t.Errorf("%s: got %v %v, want allow=%v", tc.name, v.Action, v.Reason, tc.allow)
		}
	}
	for et, want := range map[uint16]string{0x0806: "arp", 0x88cc: "lldp", 0x0026: "llc", 0x88b5: "0x88b5"} {
		if got := EtherTypeName(et); got != want {
			t.Errorf("EtherTypeName(%#04x) = %q, want %q", et, got, want)
		}
	}
}

// TestUMASSubFunction: a policy allows or denies Schneider UMAS (Modbus
// FC 90) by its UMAS function code, by number or name (issue 14).
func TestUMASSubFunction(t *testing.T) {
	y := `version: 1
name: umas
zones:
  eng: {networks: [192.0.2.128/25]}
  cell: {networks: [192.0.2.0/25]}
conduits:
  - name: unity
    from: eng
    to: cell
    rules:
      - modbus:
          allow:
            - function: [90/read_id, "umas/0x03", 90/4, 90/take_plc_reservation]
`
	p, err := Parse("umas.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := flow("192.0.2.130", "192.0.2.10", 502)
	for _, tc := range []struct {
		sub    uint16
		reason Reason
	}{
		{0x02, ReasonAllowed}, {0x03, ReasonAllowed}, {0x04, ReasonAllowed}, {0x10, ReasonAllowed},
		{0x41, ReasonFunctionNotAllowed}, {0x34, ReasonFunctionNotAllowed},
	} {
		pdu := PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: Modbus{Unit: 0, FC: 90, Sub: tc.sub}}
		if v := rs.Evaluate(&f, &pdu); v.Reason != tc.reason {
			t.Errorf("90/%#x: %v, want %v", tc.sub, v.Reason, tc.reason)
		}
	}
	for _, bad := range []string{"90/stop_plcc", "90/256", "umas/x"} {
		if msg := CheckModbusFunction(bad); msg == "" {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestOPCUAUnknownModeMeetsOnlyNone: a MSG of a channel whose OPN was not
// seen (mode unknown) passes a rule without min_security_mode and is too
// low for any higher minimum (issue 14: captures that start mid-session).
func TestOPCUAUnknownModeMeetsOnlyNone(t *testing.T) {
	for _, tc := range []struct {
		min  string
		want Reason
	}{{"", ReasonAllowed}, {"none", ReasonAllowed}, {"sign", ReasonSecurityModeTooLow}, {"sign_and_encrypt", ReasonSecurityModeTooLow}} {
		rs, err := Compile(&Policy{Version: 1, Name: "ua",
			Zones: []Zone{{Name: "a", Networks: []string{"192.0.2.0/24"}}},
			Conduits: []Conduit{{Name: "c", From: []string{"a"}, To: []string{"a"}, Rules: []Rule{{OPCUA: &OPCUARule{MinSecurityMode: tc.min,
				Allow: []OPCUAAllow{{Service: []string{"read"}}}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		f := flow("192.0.2.130", "192.0.2.10", 4840)
		pdu := PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Request, OPCUA: OPCUA{MsgType: opcua.TypeMSG, SecurityMode: opcua.ModeInvalid, ServiceID: 631}}
		if v := rs.Evaluate(&f, &pdu); v.Reason != tc.want {
			t.Errorf("min %q: %v, want %v", tc.min, v.Reason, tc.want)
		}
	}
}
