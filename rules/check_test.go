package rules

import (
	"errors"
	"strings"
	"testing"
)

// checkLines runs what `otgw check` runs and returns its problem lines.
func checkLines(name, src string) []string {
	p, lerr := Parse(name, []byte(src))
	var cerr error
	if p != nil {
		_, cerr = Compile(p)
	}
	err := Merge(lerr, cerr)
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		return []string{err.Error()}
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// head is a valid start of a policy; cases append zones/assets/conduits.
const head = `version: 1
name: t
zones:
  north: { port: north, networks: [192.0.2.128/25] }
  south: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: north }
  plc: { ip: 192.0.2.10, zone: south }
`

func TestCheckBadPolicies(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"unknown top-level key", head + "conduit: []\n", []string{
			`p.yaml:9:1: unknown key "conduit" in policy (did you mean "conduits"?)`}},
		{"unknown detection", head + "detections:\n  modbus_adress_scan: { count: 5 }\n", []string{
			`p.yaml:10:3: unknown detection "modbus_adress_scan" (one of modbus_server_busy, modbus_address_scan, modbus_function_scan, dnp3_unsolicited_storm, dnp3_object_scan, dnp3_function_scan, syn_flood) (did you mean "modbus_address_scan"?)`}},
		{"detection count too large", head + "detections:\n  modbus_address_scan: { count: 100, window: 60s }\n", []string{
			`p.yaml:10:33: detection modbus_address_scan: count must be a number from 1 to 32, not "100"`}},
		{"detection bad window", head + "detections:\n  dnp3_unsolicited_storm: { window: 10 }\n", []string{
			`p.yaml:10:37: detection dnp3_unsolicited_storm: window must be a duration such as 30s or 5m (at most 24h), not "10"`}},
		{"detection bad scalar", head + "detections:\n  dnp3_object_scan: on\n", []string{
			`p.yaml:10:21: detection "dnp3_object_scan" must be off or a mapping with count and window, not "on"`}},
		{"detection unknown key", head + "detections:\n  dnp3_object_scan: { limit: 3 }\n", []string{
			`p.yaml:10:23: unknown key "limit" in detection "dnp3_object_scan"`}},
		{"seq_mismatch with require_auth", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3: { require_auth: true, tolerate: [seq_mismatch] }\n", []string{
			`p.yaml:14:47: tolerate seq_mismatch cannot go with require_auth: an authenticated response must answer its own request`}},
		{"missing version", "name: t\n", []string{
			`p.yaml:1:1: missing key "version" (this reader knows version 1)`}},
		{"wrong version", "version: 2\n", []string{
			`p.yaml:1:10: unsupported version 2 (this reader knows version 1)`}},
		{"bad mode", head + "mode: monitr\n", []string{
			`p.yaml:9:7: unknown mode "monitr" (monitor or enforce) (did you mean "monitor"?)`}},
		{"bad action", head + "action: rst\n", []string{
			`p.yaml:9:9: unknown action "rst" (drop, reset or reply) (did you mean "reset"?)`}},
		{"unknown zone key", "version: 1\nzones:\n  a: { prot: north, networks: [192.0.2.0/24] }\n", []string{
			`p.yaml:3:8: unknown key "prot" in zone "a" (did you mean "port"?)`}},
		{"bad network", "version: 1\nzones:\n  a: { port: north, networks: [192.0.2.0/33] }\n", []string{
			`p.yaml:3:32: bad network "192.0.2.0/33" (want CIDR like 192.0.2.0/24)`}},
		{"host bits", "version: 1\nzones:\n  a: { port: north, networks: [192.0.2.1/24] }\n", []string{
			`p.yaml:3:32: network "192.0.2.1/24" has host bits set (did you mean "192.0.2.0/24"?)`}},
		{"overlapping zones", "version: 1\nzones:\n  a: { port: north, networks: [192.0.2.0/24] }\n  b: { port: south, networks: [192.0.2.128/25] }\n", []string{
			`p.yaml:4:32: network 192.0.2.128/25 of zone "b" overlaps 192.0.2.0/24 of zone "a"`}},
		{"zone without port or networks", "version: 1\nzones:\n  a: { vlans: [10] }\n", []string{
			`p.yaml:3:3: zone "a" has neither port nor networks: it would match every host`}},
		{"reversed vlan range", "version: 1\nzones:\n  a: { port: north, vlans: [20-10] }\n", []string{
			`p.yaml:3:29: VLAN id: reversed range "20-10" (did you mean "10-20"?)`}},
		{"duplicate zone", "version: 1\nzones:\n  a: { port: north }\n  a: { port: south }\n", []string{
			`p.yaml:4:3: duplicate zone name "a"`}},
		{"asset outside zone", head + "  rtu: { ip: 198.51.100.7, zone: south }\n", []string{
			`p.yaml:9:14: asset "rtu": ip 198.51.100.7 is outside its zone "south" (192.0.2.0/25)`}},
		{"asset unknown zone", head + "  rtu: { ip: 192.0.2.20, zone: suoth }\n", []string{
			`p.yaml:9:32: asset "rtu": unknown zone "suoth" (did you mean "south"?)`}},
		{"asset bad ip", head + "  rtu: { ip: 192.0.2.300, zone: south }\n", []string{
			`p.yaml:9:14: bad ip "192.0.2.300"`}},
		{"asset bad mac", head + "  rtu: { ip: 192.0.2.20, mac: 00:11:22, zone: south }\n", []string{
			`p.yaml:9:31: bad mac "00:11:22" (want 00:11:22:33:44:55)`}},
		{"duplicate asset ip", head + "  plc2: { ip: 192.0.2.10, zone: south }\n", []string{
			`p.yaml:9:15: ip 192.0.2.10 of asset "plc2" is also asset "plc"'s`}},
		{"asset named like a zone", head + "  south: { ip: 192.0.2.11, zone: south }\n", []string{
			`p.yaml:9:3: duplicate name "south": zones and assets share one namespace`}},
		{"unknown l2 name", head + "l2: { allow: [arp, lldpp] }\n", []string{
			`p.yaml:9:20: unknown ethertype "lldpp" (a name like arp, lldp, llc for 802.3 frames with a length field, or a number from 0x0600) (did you mean "lldp"?)`}},
		{"unknown asset in conduit", head + "conduits:\n  - name: c\n    from: hmi\n    to: plcc\n    rules: [ { tcp: { ports: [22] } } ]\n", []string{
			`p.yaml:12:9: conduit "c": unknown zone or asset "plcc" (did you mean "plc"?)`}},
		{"duplicate conduit", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules: [ { tcp: {} } ]\n  - name: c\n    from: hmi\n    to: plc\n    rules: [ { tcp: {} } ]\n", []string{
			`p.yaml:14:11: duplicate conduit name "c" (first at conduit 1)`}},
		{"conduit never matches (same port)", head + "conduits:\n  - name: c\n    from: plc\n    to: south\n    rules: [ { tcp: {} } ]\n", []string{
			`p.yaml:12:9: conduit "c" can never match: both ends are on port "south" and traffic between them never crosses the gateway`}},
		{"conduit never matches (self)", "version: 1\nzones:\n  z: { networks: [192.0.2.0/24] }\nassets:\n  a: { ip: 192.0.2.1, zone: z }\nconduits:\n  - name: c\n    from: a\n    to: a\n    rules: [ { tcp: {} } ]\n", []string{
			`p.yaml:9:9: conduit "c" can never match: an asset does not talk to itself through the gateway`}},
		{"conduit without rules", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n", []string{
			`p.yaml:10:5: conduit "c" has no rules: it can never allow anything`}},
		{"unknown conduit key", head + "conduits:\n  - name: c\n    form: hmi\n    to: plc\n    rules: [ { tcp: {} } ]\n", []string{
			`p.yaml:10:5: conduit "c" has no "from"`,
			`p.yaml:11:5: unknown key "form" in conduit (did you mean "from"?)`}},
		{"two protocols in one rule", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - tcp: {}\n        udp: {}\n", []string{
			`p.yaml:15:14: a rule holds one protocol: start a new list item for "udp"`}},
		{"modbus unknown table", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - read: holdin 0-9\n", []string{
			`p.yaml:16:21: unknown table "holdin" (coils, discrete, input, holding) (did you mean "holding"?)`}},
		{"modbus reversed address range", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - read: holding 99-0\n", []string{
			`p.yaml:16:21: read: address reversed range "99-0" (did you mean "0-99"?)`}},
		{"modbus address beyond 65535", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - write: coils 0-70000\n", []string{
			`p.yaml:16:22: write: address "0-70000" is outside 0-65535`}},
		{"modbus write to input registers", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - write: input 0-9\n", []string{
			`p.yaml:16:22: input is read-only: Modbus has no function that writes it`}},
		{"modbus values on coils", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - write: coils 0-9\n              values: 0-1\n", []string{
			`p.yaml:17:23: values apply only to holding register writes`}},
		{"modbus reversed values", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - write: holding 0-9\n              values: 100-1\n", []string{
			`p.yaml:17:23: values: reversed range "100-1" (did you mean "1-100"?)`}},
		{"modbus unknown function", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - function: read_device_identfication\n", []string{
			`p.yaml:16:25: unknown modbus function "read_device_identfication" (did you mean "read_device_identification"?)`}},
		{"modbus table function named", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - function: 16\n", []string{
			`p.yaml:16:25: function 16 (write_multiple_registers) accesses a table: allow it with read: or write: and an address range`}},
		{"modbus sub-code on plain function", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - function: 17/1\n", []string{
			`p.yaml:16:25: function 17 has no sub-code (only 8 diagnostics, 43 encapsulated interface transport and 90 umas do)`}},
		{"modbus unit out of range", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          units: [1, 300]\n          allow:\n            - read: coils\n", []string{
			`p.yaml:15:22: unit: "300" is outside 0-255`}},
		{"modbus unknown allow key", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          allow:\n            - reed: coils 0-9\n", []string{
			`p.yaml:16:15: unknown key "reed" in modbus allow entry (did you mean "read"?)`,
			`p.yaml:16:15: a modbus allow entry needs exactly one of read, write, function`}},
		{"dnp3 unknown function", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: direct_operat\n", []string{
			`p.yaml:16:25: unknown dnp3 function "direct_operat" (did you mean "direct_operate"?)`}},
		{"dnp3 unknown object", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: read\n              objects: [g1, g5]\n", []string{
			`p.yaml:17:29: unknown dnp3 object group 5 in "g5"`}},
		{"dnp3 object name typo", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: read\n              objects: [binary_inptu]\n", []string{
			`p.yaml:17:25: unknown dnp3 object "binary_inptu" (gN, gNvM or a group name) (did you mean "binary_input"?)`}},
		{"dnp3 unsolicited as function", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: unsolicited_response\n", []string{
			"p.yaml:16:25: allow unsolicited responses with `unsolicited: true`"}},
		{"dnp3 reversed master range", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          masters: [10-1]\n          allow:\n            - function: read\n", []string{
			`p.yaml:15:21: link address: reversed range "10-1" (did you mean "1-10"?)`}},
		{"opcua unknown service", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          allow:\n            - service: [read, brwse]\n", []string{
			`p.yaml:16:31: unknown opcua service "brwse" (did you mean "browse"?)`}},
		{"opcua bad security mode", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          min_security_mode: signed\n", []string{
			`p.yaml:15:30: unknown security mode "signed" (none, sign, sign_and_encrypt) (did you mean "sign"?)`}},
		{"opcua unknown policy", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          security_policies: [Basic256Sha265]\n", []string{
			`p.yaml:15:31: unknown security policy "Basic256Sha265" (did you mean "Basic256Sha256"?)`}},
		{"opcua nodes on read", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          allow:\n            - service: read\n              nodes: [\"ns=2;s=X\"]\n", []string{
			`p.yaml:16:24: nodes restrict only write and call, not "read"`}},
		{"opcua bad node id", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          allow:\n            - service: write\n              nodes: [\"ns=2,s=X\"]\n", []string{
			`p.yaml:17:23: bad NodeId "ns=2,s=X": missing ';' after namespace`}},
		{"tcp port zero", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - tcp: { ports: [0] }\n", []string{
			`p.yaml:14:24: port: "0" is outside 1-65535`}},
		{"icmp unknown type", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - icmp: { types: [echo_requst] }\n", []string{
			`p.yaml:14:25: unknown icmp type "echo_requst" (did you mean "echo_request"?)`}},
		{"tolerate on a conduit without inspected rules", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    tolerate: [Bad-Name]\n    rules: [ { tcp: {} } ]\n", []string{
			`p.yaml:13:16: tolerate "Bad-Name": anomalies are reported only by modbus, dnp3 and opcua rules, and this conduit has none`}},
		{"modbus tolerate typo", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - modbus:\n          tolerate: [mbap_lenght]\n          allow:\n            - read: coils\n", []string{
			`p.yaml:15:22: unknown modbus anomaly "mbap_lenght" (did you mean "mbap_length"?)`}},
		{"dnp3 tolerates a modbus anomaly", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          tolerate: [bad_range, mbap_length]\n          allow:\n            - function: read\n", []string{
			`p.yaml:15:33: unknown dnp3 anomaly "mbap_length" (did you mean "bad_length"?)`}},
		// Issue 14: anomalies of bytes that cannot be framed are denied
		// whatever a rule tolerates, so naming one is an error, not a no-op.
		{"tolerate what enforcement cannot honour", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          tolerate: [link_crc, bad_range, reassembly_overflow]\n          allow:\n            - function: read\n      - modbus:\n          tolerate: [non_modbus, tid_mismatch]\n          allow:\n            - read: coils\n      - opcua:\n          tolerate: [unknown_message_type]\n", []string{
			`p.yaml:15:22: tolerate "link_crc": bytes with this anomaly cannot be framed as dnp3 and are denied whatever the policy tolerates: remove it (the gateway cannot honour it)`,
			`p.yaml:15:43: tolerate "reassembly_overflow": bytes with this anomaly cannot be framed as dnp3 and are denied whatever the policy tolerates: remove it (the gateway cannot honour it)`,
			`p.yaml:19:22: tolerate "non_modbus": bytes with this anomaly cannot be framed as modbus and are denied whatever the policy tolerates: remove it (the gateway cannot honour it)`,
			`p.yaml:23:22: tolerate "unknown_message_type": bytes with this anomaly cannot be framed as opcua and are denied whatever the policy tolerates: remove it (the gateway cannot honour it)`}},
		{"opcua tolerate typo", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - opcua:\n          tolerate: msg_befor_open\n          allow:\n            - service: read\n", []string{
			`p.yaml:15:21: unknown opcua anomaly "msg_befor_open" (did you mean "msg_before_open"?)`}},
		{"conduit tolerate checked against its rules' protocols", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    tolerate: [data_crcc, bad_channel_id]\n    rules:\n      - modbus: { allow: [ { read: coils } ] }\n      - dnp3: { allow: [ { function: read } ] }\n", []string{
			`p.yaml:13:16: unknown modbus/dnp3 anomaly "data_crcc" (did you mean "data_crc"?)`,
			`p.yaml:13:27: unknown modbus/dnp3 anomaly "bad_channel_id"`}},
		{"dnp3 require_auth not a boolean", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          require_auth: yes\n          allow:\n            - function: operate\n", []string{
			`p.yaml:15:25: require_auth must be true or false, not "yes"`}},
		{"dnp3 require_auth misspelt", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          require_auht: true\n          allow:\n            - function: operate\n", []string{
			`p.yaml:15:11: unknown key "require_auht" in dnp3 rule (did you mean "require_auth"?)`}},
		{"dnp3 authentication response listed", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: [operate, authenticate_resp]\n", []string{
			"p.yaml:16:35: authentication responses (131) ride the allowed flow: use `require_auth: true` to judge the Secure Authentication exchange"}},
		{"dnp3 function by its old long name", head + "conduits:\n  - name: c\n    from: hmi\n    to: plc\n    rules:\n      - dnp3:\n          allow:\n            - function: immediate_freeze\n", []string{
			`p.yaml:16:25: unknown dnp3 function "immediate_freeze" (did you mean "immed_freeze"?)`}},
		{"yaml syntax error", "version: 1\nzones: [\n", []string{
			`p.yaml:2:1: YAML: did not find expected node content`}},
		{"several problems in one run", head + "conduits:\n  - name: c\n    from: hmii\n    to: plc\n    mode: enforced\n    rules:\n      - modbus:\n          allow:\n            - read: coils 9-1\n", []string{
			`p.yaml:11:11: conduit "c": unknown zone or asset "hmii" (did you mean "hmi"?)`,
			`p.yaml:13:11: unknown mode "enforced" (monitor or enforce) (did you mean "enforce"?)`,
			`p.yaml:17:21: read: address reversed range "9-1" (did you mean "1-9"?)`}},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d bad policies; the issue asks for at least 30", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkLines("p.yaml", tt.src)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestCheckGoodPolicy(t *testing.T) {
	if got := checkLines("design.yaml", mustRead(t, "testdata/design.yaml")); got != nil {
		t.Fatalf("DESIGN.md example: got problems %q, want none", got)
	}
}
