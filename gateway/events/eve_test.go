package events

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols/dnp3"
)

// sampleEvents has one event per record shape: a Modbus deny, a Modbus
// deny after a reset (replay's what-if), a DNP3 alert over UDP with
// objects, an OPC UA deny, an L2 deny, an ICMP alert, a TCP flow deny, an
// aggregate, a policy reload, a start and a gap.
func sampleEvents() map[string]*Event {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 5000000, time.UTC)
	hmi, plc := netip.MustParseAddrPort("192.0.2.130:40001"), netip.MustParseAddrPort("192.0.2.10:502")
	mac := Net{HasMAC: true, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0x82}, DstMAC: [6]byte{2, 0, 0, 0, 0, 0x0a}, EtherType: 0x0800}
	tcp, udp := mac, mac
	tcp.IPProto, udp.IPProto = ProtoTCP, ProtoUDP
	icmp := mac
	icmp.IPProto, icmp.ICMPType = ProtoICMP, 8
	l2 := Net{HasMAC: true, SrcMAC: [6]byte{2, 0, 0, 0, 0, 0x82}, DstMAC: [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EtherType: 0x88cc}
	return map[string]*Event{
		"modbus-deny": {Seq: 1, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeDeny, Mode: "enforce", Verdict: "deny",
			Action: "reply", Conduit: "hmi-polls-plc", Rule: "modbus#1", Reason: "function_not_allowed", FromZone: "supervisory",
			ToZone: "cell3", Src: hmi, Dst: plc, Proto: "modbus", Net: tcp, Message: "deny modbus 192.0.2.130:40001 -> 192.0.2.10:502: function_not_allowed",
			Fields: map[string]any{"dir": "request", "tid": 2, "unit": 1, "fc": 6, "addr": 40}},
		"after-reset": {Time: t0.Add(2 * time.Millisecond), Severity: SevNotice, Type: TypeDeny, Mode: "enforce", Verdict: "deny",
			Conduit: "hmi-polls-plc", Rule: "modbus#1", Reason: "function_not_allowed", Src: hmi, Dst: plc, Proto: "modbus", Net: tcp,
			PcapFile: "plant.pcap", Frame: 9, AfterReset: true,
			Fields: map[string]any{"dir": "request", "tid": 3, "unit": 1, "fc": 6, "addr": 41, "value": 7}},
		"dnp3-alert": {Seq: 2, BootID: "b", Time: t0, Severity: SevWarning, Type: TypeAlert, Mode: "monitor", Verdict: "alert",
			Conduit: "scada-rtu", Rule: "dnp3#1", Reason: "object_not_allowed", Src: netip.MustParseAddrPort("192.0.2.140:20000"),
			Dst: netip.MustParseAddrPort("192.0.2.20:20000"), Proto: "dnp3", Net: udp,
			Fields: map[string]any{"dir": "request", "fc": 5, "link_src": 1, "link_dst": 10, "objects": []dnp3.Object{{Group: 12, Variation: 1}}}},
		"opcua-deny": {Seq: 3, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeDeny, Mode: "enforce", Verdict: "deny", Action: "reset",
			Conduit: "opc-clients", Rule: "opcua#1", Reason: "service_not_allowed", Src: netip.MustParseAddrPort("192.0.2.140:50000"),
			Dst: netip.MustParseAddrPort("192.0.2.30:4840"), Proto: "opcua", Net: tcp,
			Fields: map[string]any{"dir": "request", "msg_type": "MSG", "service": 673}},
		"l2-deny": {Seq: 4, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeDeny, Mode: "enforce", Verdict: "deny", Action: "drop",
			Reason: "ethertype_not_allowed", Proto: "l2", Net: l2, Message: "deny l2 02:00:00:00:00:82 -> ff:ff:ff:ff:ff:ff ethertype 0x88cc: ethertype_not_allowed"},
		"icmp-alert": {Seq: 5, BootID: "b", Time: t0, Severity: SevWarning, Type: TypeAlert, Mode: "monitor", Verdict: "alert",
			Reason: "flow_not_allowed", Src: netip.AddrPortFrom(hmi.Addr(), 0), Dst: netip.AddrPortFrom(plc.Addr(), 0), Proto: "icmp", Net: icmp},
		"tcp-deny": {Seq: 6, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeDeny, Mode: "enforce", Verdict: "deny", Action: "drop",
			Reason: "flow_not_allowed", Src: netip.MustParseAddrPort("192.0.2.130:40002"), Dst: netip.MustParseAddrPort("192.0.2.10:22"), Proto: "tcp", Net: tcp},
		"aggregated": {Seq: 7, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeAggregated, Mode: "enforce", Verdict: "deny", Action: "reply",
			Conduit: "hmi-polls-plc", Rule: "modbus#1", Reason: "function_not_allowed", Src: hmi, Dst: plc, Proto: "modbus", Net: tcp, Count: 4,
			Fields: map[string]any{"fc": 6, "aggregated_type": "deny", "first_seen": "2026-01-01T08:00:00.011000Z", "last_seen": "2026-01-01T08:00:00.029000Z"}},
		"policy-reload": {Seq: 8, BootID: "b", Time: t0, Severity: SevNotice, Type: TypePolicyReload, File: "/etc/otgw/policy.yaml", Version: "3", Message: "policy reloaded"},
		"start":         {Seq: 9, BootID: "b", Time: t0, Severity: SevNotice, Type: TypeStart, Version: "1.0.0", Message: "otgw started"},
		"transaction": {Seq: 18, BootID: "b", Time: t0, Severity: SevInfo, Type: TypeTransaction, Mode: "enforce", Verdict: "allow",
			Conduit: "hmi-polls-plc", Rule: "modbus#1", Src: hmi, Dst: plc, Proto: "modbus", Net: tcp,
			Message: "transaction modbus 192.0.2.130:40001 -> 192.0.2.10:502: read_holding_registers: ok",
			Fields: map[string]any{"dir": "request", "tid": 4, "unit": 1, "fc": 3, "addr": 0, "qty": 10,
				"response": map[string]any{"dir": "response", "tid": 4, "unit": 1, "fc": 3, "function": "read_holding_registers"}}},
		"gap": {Seq: 10, BootID: "b", Time: t0, Severity: SevWarning, Type: TypeGap,
			Fields: map[string]any{"prevBootId": "a", "lastSeq": 300, "missingFrom": 301}},
	}
}

// The record names of the schema, and names beside numbers.
func TestRecordSchemaNames(t *testing.T) {
	ev := sampleEvents()
	for _, tc := range []struct {
		event string
		want  []string
	}{
		{"modbus-deny", []string{`"timestamp":"2026-01-01T08:00:00.005000Z"`, `"flow_id":`, `"community_id":"1:`, `"event_type":"deny"`,
			`"src_ip":"192.0.2.130","src_port":40001,"dest_ip":"192.0.2.10","dest_port":502,"proto":"TCP"`, `"app_proto":"modbus"`,
			`"ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048}`,
			`"verdict":"deny","action":"reply","reason":"function_not_allowed","conduit":"hmi-polls-plc","rule":"modbus#1","mode":"enforce"`,
			`"modbus":{"addr":40,"dir":"request","fc":6,"function":"write_single_register","tid":2,"unit":1}`}},
		{"after-reset", []string{`"verdict":"deny","reason":"function_not_allowed"`, `"pcap_cnt":9,"after_reset":true`}},
		{"dnp3-alert", []string{`"proto":"UDP"`, `"dnp3":{`, `"function":"direct_operate"`, `"objects":["g12v1"]`}},
		{"opcua-deny", []string{`"opcua":{`, `"service":"write"`, `"service_id":673`}},
		{"l2-deny", []string{`"ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"ff:ff:ff:ff:ff:ff","ether_type":35020}`}},
		{"icmp-alert", []string{`"proto":"ICMP","icmp_type":8,"icmp_code":0`, `"community_id":"1:`}},
		{"transaction", []string{`"event_type":"transaction"`, `"verdict":"allow"`, `"severity":"info"`, `"flow_id":`,
			`"modbus":{"addr":0,"dir":"request","fc":3,"function":"read_holding_registers","qty":10,"response":{"dir":"response","fc":3,"function":"read_holding_registers","tid":4,"unit":1},"tid":4,"unit":1}`}},
	} {
		got := string(ev[tc.event].AppendJSON(nil))
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %s\nlacks %s", tc.event, got, w)
			}
		}
		if strings.Contains(got, "invalid AddrPort") {
			t.Errorf("%s: %s", tc.event, got)
		}
	}
	if strings.Contains(string(ev["modbus-deny"].AppendJSON(nil)), "after_reset") {
		t.Error("after_reset written when false")
	}
	l2 := string(ev["l2-deny"].AppendJSON(nil))
	for _, absent := range []string{"src_ip", "flow_id", "community_id", `"proto"`} {
		if strings.Contains(l2, absent) {
			t.Errorf("L2 record has %s: %s", absent, l2)
		}
	}
}

// Every sample decodes back to the same record (the spool stores events
// in this form), and the samples are the fuzz seeds.
func TestRecordRoundTrip(t *testing.T) {
	for name, e := range sampleEvents() {
		a := e.AppendJSON(nil)
		var back Event
		if err := UnmarshalJSONEvent(a, &back); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, a)
		}
		if b := back.AppendJSON(nil); string(a) != string(b) {
			t.Errorf("%s: round trip changed the record:\n%s\n%s", name, a, b)
		}
		if back.Proto != e.Proto || back.Net != e.Net || back.Src != e.Src {
			t.Errorf("%s: decoded proto %q net %+v src %v, want %q %+v %v", name, back.Proto, back.Net, back.Src, e.Proto, e.Net, e.Src)
		}
		var m map[string]any
		if err := json.Unmarshal(a, &m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Records spooled by the previous schema still decode.
func TestLegacyRecordDecodes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "json", "deny.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e Event
	if err := UnmarshalJSONEvent(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeDeny || e.Proto != "modbus" || e.Src.String() != "192.0.2.130:50123" || e.FromZone != "supervisory" || e.Time.IsZero() {
		t.Errorf("legacy record decoded as %+v", e)
	}
}
