package rules

import (
	"reflect"
	"strings"
	"testing"
)

// learnedPolicy is a policy as rules/learn drafts it: counts and first/last
// seen as end-of-line comments on every allowance.
func learnedPolicy() *Policy {
	return &Policy{
		Version: 1, Name: "learned",
		Zones: []Zone{
			{Name: "north", Port: "north", Networks: []string{"192.0.2.128/25"}, LineComment: "3 hosts"},
			{Name: "south", Port: "south", Networks: []string{"192.0.2.0/25"}},
		},
		Assets: []Asset{
			{Name: "hmi", IP: "192.0.2.130", Zone: "north", Comment: "seen as client", LineComment: "first 2024-05-01T10:00:00Z"},
			{Name: "plc", IP: "192.0.2.10", Zone: "south", LineComment: "412 PDUs"},
		},
		Conduits: []Conduit{{
			Name: "hmi-plc", From: []string{"hmi"}, To: []string{"plc"}, LineComment: "1530 PDUs in 2 flows",
			Rules: []Rule{
				{LineComment: "modbus: 1200 PDUs", Modbus: &ModbusRule{Units: []string{"1"}, Allow: []ModbusAllow{
					{Read: "holding 0-99", LineComment: "1100 PDUs, last 2024-05-01T11:00:00Z"},
					{Write: "holding 40-49", Values: "0-1000", LineComment: "90 PDUs"},
					{Function: []string{"43/14"}, Comment: "device id", LineComment: "10 PDUs"},
				}}},
				{DNP3: &DNP3Rule{RequireAuth: true, Allow: []DNP3Allow{
					{Function: []string{"read"}, Objects: []string{"g60"}, LineComment: "300 PDUs"},
					{Unsolicited: true, LineComment: "12 PDUs"},
				}}},
				{Name: "ua", OPCUA: &OPCUARule{Allow: []OPCUAAllow{
					{Service: []string{"read", "browse"}, LineComment: "28 PDUs"},
				}}, LineComment: "named rule"},
				{TCP: &PortRule{Ports: []string{"22"}}, LineComment: "ssh: 2 flows"},
			},
		}},
	}
}

func TestMarshalLineCommentsRoundTrip(t *testing.T) {
	p := learnedPolicy()
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"read: holding 0-99 # 1100 PDUs, last 2024-05-01T11:00:00Z\n",
		"function: 43/14 # 10 PDUs\n",
		"unsolicited: true # 12 PDUs\n",
		"name: hmi-plc # 1530 PDUs in 2 flows\n",
		"require_auth: true\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, out)
		}
	}
	q, err := Parse("learned.yaml", out)
	if err != nil {
		t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
	}
	q.File, q.pos = "", nil
	if !reflect.DeepEqual(p, q) {
		t.Errorf("round trip changed the policy:\ngot  %+v\nwant %+v\nYAML:\n%s", q, p, out)
	}
	if _, err := Compile(q); err != nil {
		t.Errorf("round-tripped policy does not compile: %v", err)
	}
}

func TestParseLineComments(t *testing.T) {
	src := head + `conduits:
  - name: c   # conduit note
    from: hmi
    to: plc
    rules:
      - modbus:   # rule note
          allow:
            - read: coils 0-9   # 7 PDUs
            - write: holding 1-2
              values: 0-5       # on the second line: not the entry's
`
	p, err := Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Conduits[0]
	tests := []struct{ name, got, want string }{
		{"conduit", c.LineComment, "conduit note"},
		{"rule", c.Rules[0].LineComment, "rule note"},
		{"first allow entry", c.Rules[0].Modbus.Allow[0].LineComment, "7 PDUs"},
		{"comment after the first line", c.Rules[0].Modbus.Allow[1].LineComment, ""},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
