package learn

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

func TestAddZone(t *testing.T) {
	var o Options
	for _, s := range []string{"cell=192.0.2.0/25", "cell=south", "sup=192.0.2.130"} {
		if err := o.AddZone(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.AddZone("bad"); err == nil {
		t.Error("AddZone(bad): want error")
	}
	got := len(o.Zones)
	if got != 2 || o.Zones[0].Port != "south" || o.Zones[1].Networks[0] != "192.0.2.130/32" {
		t.Errorf("zones = %+v", o.Zones)
	}
}

func TestFormatNodeID(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    opcua.NodeID
		want string
	}{
		{"numeric ns0", opcua.NodeID{Numeric: 85}, "i=85"},
		{"string", opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Setpoint")}, "ns=2;s=Line1.Setpoint"},
	} {
		got := FormatNodeID(&tc.n)
		if got != tc.want {
			t.Errorf("%s: got %q want %q", tc.name, got, tc.want)
		}
		back, err := opcua.ParseNodeID(got)
		if err != nil || back.Namespace != tc.n.Namespace || back.Numeric != tc.n.Numeric || string(back.Bytes) != string(tc.n.Bytes) {
			t.Errorf("%s: round trip %q -> %+v, %v", tc.name, got, back, err)
		}
	}
}

// TestToleratedAnomalyIsWarned checks that an anomaly observed on a
// conduit becomes a tolerate entry of its rule, with the reviewer's
// warning, count and first/last seen time on the rule's own line, and that
// the result passes `otgw check`.
func TestToleratedAnomalyIsWarned(t *testing.T) {
	first := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	last := first.Add(90 * time.Minute)
	client, server := netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10")
	for _, tc := range []struct {
		name, proto, anomaly string
		n                    int
		want                 string
	}{
		{"modbus", "modbus", "tid_mismatch", 3,
			"modbus: # observed anomaly: review before enforcing: tid_mismatch x3 (first 2024-01-02T03:04:05Z, last 2024-01-02T04:34:05Z)"},
		{"dnp3", "dnp3", "bad_qualifier", 1,
			"dnp3: # observed anomaly: review before enforcing: bad_qualifier x1 (first 2024-01-02T03:04:05Z, last 2024-01-02T03:04:05Z)"},
		{"opcua", "opcua", "msg_before_open", 2,
			"opcua: # observed anomaly: review before enforcing: msg_before_open x2 (first 2024-01-02T03:04:05Z, last 2024-01-02T04:34:05Z)"},
	} {
		l := New(Options{})
		c := l.obs(client, server, tc.proto, first)
		for i := 0; i < tc.n; i++ {
			at := first
			if i > 0 {
				at = last
			}
			c.tolerate.add(tc.anomaly, at)
		}
		y, err := rules.Marshal(l.Policy())
		if err != nil {
			t.Fatalf("%s: marshal: %v", tc.name, err)
		}
		got := ""
		for _, line := range strings.Split(string(y), "\n") {
			if l := strings.TrimPrefix(strings.TrimSpace(line), "- "); strings.HasPrefix(l, tc.proto+":") {
				got = l
			}
		}
		if got != tc.want {
			t.Errorf("%s: rule line\n got %q\nwant %q\n%s", tc.name, got, tc.want, y)
		}
		if !strings.Contains(string(y), "# observed anomaly: review before enforcing: tolerate "+tc.anomaly+": seen ") {
			t.Errorf("%s: no per-anomaly head comment in\n%s", tc.name, y)
		}
		p, err := rules.Parse("learned.yaml", y)
		if err != nil {
			t.Fatalf("%s: parse: %v\n%s", tc.name, err, y)
		}
		if _, err := rules.Compile(p); err != nil {
			t.Fatalf("%s: compile: %v\n%s", tc.name, err, y)
		}
		r := p.Conduits[0].Rules[0]
		var tol []string
		switch {
		case r.Modbus != nil:
			tol = r.Modbus.Tolerate
		case r.DNP3 != nil:
			tol = r.DNP3.Tolerate
		case r.OPCUA != nil:
			tol = r.OPCUA.Tolerate
		}
		if len(tol) != 1 || tol[0] != tc.anomaly {
			t.Errorf("%s: tolerate = %v, want [%s]", tc.name, tol, tc.anomaly)
		}
	}
}

// TestModbusNonRequestLearnsNoUnit checks that a request without a
// request function code (bytes that are no Modbus ADU) allows neither its
// function nor its "unit" byte, and is reported as unlearnable.
func TestModbusNonRequestLearnsNoUnit(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		dir       protocols.Dir
		fc, unit  uint8
		wantUnits int
		wantUnl   int
	}{
		{"function code 0", protocols.Request, 0, 0, 0, 1},
		{"function code 200", protocols.Request, 200, 7, 0, 1},
		{"read holding", protocols.Request, 3, 1, 1, 0},
		{"exception response", protocols.Response, 0x83, 1, 1, 0},
	} {
		l := New(Options{})
		c := l.obs(netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10"), "modbus", at)
		l.modbus(c, &rules.PDU{Dir: tc.dir, Proto: protocols.ProtoModbus, Modbus: rules.Modbus{FC: tc.fc, Unit: tc.unit, Qty: 1}}, at)
		if got := len(c.mbUnits); got != tc.wantUnits {
			t.Errorf("%s: got %d units, want %d", tc.name, got, tc.wantUnits)
		}
		if got := len(l.Stats().Unlearnable); got != tc.wantUnl {
			t.Errorf("%s: got %d unlearnable, want %d", tc.name, got, tc.wantUnl)
		}
	}
}

var genTime = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)

func protoOf(name string) protocols.Proto {
	switch name {
	case "modbus":
		return protocols.ProtoModbus
	case "dnp3":
		return protocols.ProtoDNP3
	}
	return protocols.ProtoOPCUA
}

// anomalyNames lists every anomaly name proto's parser reports.
func anomalyNames(proto string) []string {
	var out []string
	for i := 1; i < 256; i++ {
		var s string
		switch proto {
		case "modbus":
			s = modbus.Anomaly(i).String()
		case "dnp3":
			s = dnp3.Anomaly(i).String()
		default:
			s = opcua.Anomaly(i).String()
		}
		if strings.HasPrefix(rules.Tolerable(protoOf(proto), s), "unknown ") {
			break
		}
		out = append(out, s)
	}
	return out
}

// TestDraftNeverTolerates checks, over every anomaly name of the three
// parsers, that a learned rule tolerates exactly the ones enforcement
// honours (rules.Tolerable) and comments the others, and that the draft
// passes check.
func TestDraftNeverTolerates(t *testing.T) {
	for _, proto := range []string{"modbus", "dnp3", "opcua"} {
		l := New(Options{})
		c := l.obs(netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10"), proto, genTime)
		var not []string
		for _, a := range anomalyNames(proto) {
			if rules.Tolerable(protoOf(proto), a) == "" {
				c.tolerate.add(a, genTime)
			} else {
				c.unframed.add(a, genTime)
				not = append(not, a)
			}
		}
		if len(not) == 0 {
			t.Errorf("%s: every anomaly tolerable: the unframeable list is empty", proto)
		}
		y, err := rules.Marshal(l.Policy())
		if err != nil {
			t.Fatal(err)
		}
		p, err := rules.Parse("learned.yaml", y)
		if err != nil {
			t.Fatalf("%s: %v\n%s", proto, err, y)
		}
		if _, err := rules.Compile(p); err != nil {
			t.Fatalf("%s: check: %v\n%s", proto, err, y)
		}
		for _, a := range not {
			if !strings.Contains(string(y), unframedWarning+": "+a+" ") {
				t.Errorf("%s: no review comment for %s", proto, a)
			}
		}
	}
}

// TestLearnGroupsZones: hosts outside --zone are grouped by network (/24,
// /64) into a zone each, unless that network would overlap a given zone;
// conduits are named by zone pair and protocol, numbered when repeated.
func TestLearnGroupsZones(t *testing.T) {
	var o Options
	if err := o.AddZone("cell=198.51.100.0/25"); err != nil {
		t.Fatal(err)
	}
	l := New(o)
	a := netip.MustParseAddr
	l.obs(a("192.0.2.130"), a("198.51.100.10"), "modbus", genTime)
	l.obs(a("192.0.2.131"), a("198.51.100.11"), "modbus", genTime)
	l.obs(a("192.0.2.131"), a("198.51.100.200"), "tcp", genTime).ports[22] = &seen{n: 1, first: genTime, last: genTime}
	l.obs(a("2001:db8::1"), a("2001:db8::2"), "udp", genTime).ports[161] = &seen{n: 1, first: genTime, last: genTime}
	p := l.Policy()
	y, err := rules.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := rules.Parse("learned.yaml", y)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Compile(pp); err != nil {
		t.Fatalf("check: %v\n%s", err, y)
	}
	var zones, conduits []string
	for _, z := range p.Zones {
		zones = append(zones, z.Name+"="+strings.Join(z.Networks, ","))
	}
	for _, c := range p.Conduits {
		conduits = append(conduits, c.Name)
	}
	wantZones := "cell=198.51.100.0/25 net-192-0-2-0-24=192.0.2.0/24 net-2001-db8-64=2001:db8::/64 observed=198.51.100.200/32"
	if got := strings.Join(zones, " "); got != wantZones {
		t.Errorf("zones\n got %s\nwant %s", got, wantZones)
	}
	wantConduits := "net-192-0-2-0-24-to-cell-modbus net-192-0-2-0-24-to-cell-modbus-2 net-192-0-2-0-24-to-observed-tcp within-net-2001-db8-64-udp"
	if got := strings.Join(conduits, " "); got != wantConduits {
		t.Errorf("conduits\n got %s\nwant %s", got, wantConduits)
	}
}
