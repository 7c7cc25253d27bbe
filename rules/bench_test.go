package rules

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

// bigPolicy has n conduits, each from its own HMI to its own PLC, plus one
// zone-to-zone conduit, so lookups go through the asset and zone indexes.
func bigPolicy(n int) *Policy {
	p := &Policy{Version: 1, Name: fmt.Sprintf("big-%d", n), Action: "reply",
		Zones: []Zone{
			{Name: "north", Port: "north", Networks: []string{"2001:db8:2::/48"}},
			{Name: "south", Port: "south", Networks: []string{"2001:db8:1::/48"}},
		}}
	for i := 0; i < n; i++ {
		p.Assets = append(p.Assets,
			Asset{Name: fmt.Sprintf("hmi%d", i), IP: fmt.Sprintf("2001:db8:2::%x", i+1), Zone: "north"},
			Asset{Name: fmt.Sprintf("plc%d", i), IP: fmt.Sprintf("2001:db8:1::%x", i+1), Zone: "south"})
		p.Conduits = append(p.Conduits, Conduit{
			Name: fmt.Sprintf("c%d", i), From: []string{fmt.Sprintf("hmi%d", i)}, To: []string{fmt.Sprintf("plc%d", i)},
			Rules: []Rule{
				{Modbus: &ModbusRule{Units: []string{"1"}, Allow: []ModbusAllow{
					{Read: "holding 0-99, 200-299"}, {Read: "coils 0-15"},
					{Write: "holding 40-49", Values: "0-1000"}, {Function: []string{"43/14"}}}}},
				{DNP3: &DNP3Rule{Masters: []string{"1"}, Outstations: []string{"10"}, Allow: []DNP3Allow{
					{Function: []string{"read"}, Objects: []string{"g1", "g2", "g30", "g32", "g60"}},
					{Function: []string{"select", "operate"}, Objects: []string{"g12v1"}}}}},
				{OPCUA: &OPCUARule{MinSecurityMode: "sign", Allow: []OPCUAAllow{
					{Service: []string{"read", "browse", "publish"}},
					{Service: []string{"write"}, Nodes: []string{"ns=2;s=Line1.Setpoint"}}}}},
			}})
	}
	p.Conduits = append(p.Conduits, Conduit{Name: "ssh", From: []string{"north"}, To: []string{"south"},
		Rules: []Rule{{TCP: &PortRule{Ports: []string{"22"}}}}})
	return p
}

func benchPDUs() []struct {
	name string
	port uint16
	pdu  PDU
} {
	read := PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: Modbus{Unit: 1, FC: 3, Addr: 200, Qty: 50}}
	write := PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: Modbus{Unit: 1, FC: 16, Addr: 40, Qty: 10, NValues: 10}}
	denied := PDU{Proto: protocols.ProtoModbus, Dir: protocols.Request, Modbus: Modbus{Unit: 1, FC: 16, Addr: 60, Qty: 2, NValues: 2}}
	dnp := PDU{Proto: protocols.ProtoDNP3, Dir: protocols.Request, DNP3: DNP3{LinkSrc: 1, LinkDst: 10, FC: 1, NObjects: 4}}
	for i, g := range []uint8{60, 60, 60, 60} {
		dnp.DNP3.Objects[i] = DNP3Object{Group: g, Variation: uint8(i + 1)}
	}
	ua := PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Request, OPCUA: OPCUA{MsgType: opcua.TypeMSG, SecurityMode: 2, ServiceID: 673, NNodes: 1}}
	ua.OPCUA.Nodes[0] = opcua.NodeID{Namespace: 2, Type: opcua.NodeIDString, Bytes: []byte("Line1.Setpoint")}
	return []struct {
		name string
		port uint16
		pdu  PDU
	}{{"modbus_read", 502, read}, {"modbus_write16", 502, write}, {"modbus_denied", 502, denied},
		{"dnp3_read_class", 20000, dnp}, {"opcua_write_node", 4840, ua}}
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		rs, err := Compile(bigPolicy(n))
		if err != nil {
			b.Fatal(err)
		}
		i := n / 2
		for _, tc := range benchPDUs() {
			f := Flow{InPort: "north", OutPort: "south", Transport: TransportTCP, SrcPort: 40000, DstPort: tc.port,
				Src: netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%x", i+1)), Dst: netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", i+1))}
			pdu := tc.pdu
			if v := rs.Evaluate(&f, &pdu); (v.Action == Allow) == (tc.name == "modbus_denied") {
				b.Fatalf("%s: unexpected verdict %v %v", tc.name, v.Action, v.Reason)
			}
			b.Run(fmt.Sprintf("conduits=%d/%s", n, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = rs.Evaluate(&f, &pdu)
				}
			})
			if tc.name == "modbus_read" {
				// First PDU of a flow, or first after a reload: the conduit
				// match is computed from the indexes.
				b.Run(fmt.Sprintf("conduits=%d/%s_uncached", n, tc.name), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						f.Invalidate()
						_ = rs.Evaluate(&f, &pdu)
					}
				})
			}
		}
	}
}

func BenchmarkEvaluateFlow(b *testing.B) {
	for _, n := range []int{10, 1000} {
		rs, err := Compile(bigPolicy(n))
		if err != nil {
			b.Fatal(err)
		}
		f := Flow{InPort: "north", OutPort: "south", Transport: TransportTCP, DstPort: 22,
			Src: netip.MustParseAddr("2001:db8:2::ffff"), Dst: netip.MustParseAddr("2001:db8:1::ffff")}
		b.Run(fmt.Sprintf("conduits=%d/tcp_zone_uncached", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Invalidate()
				_ = rs.EvaluateFlow(&f)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000} {
		p := bigPolicy(n)
		b.Run(fmt.Sprintf("conduits=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReload measures what a policy reload costs inside rules: Parse
// and Compile of a 1,000-conduit policy file's bytes (the daemon's Watcher
// adds a file read and one atomic swap).
func BenchmarkReload(b *testing.B) {
	p := bigPolicy(1000)
	data, err := Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		pol, err := Parse("policy.yaml", data)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := Compile(pol)
		if err != nil {
			b.Fatal(err)
		}
		if rs.NumConduits() != 1001 {
			b.Fatalf("ruleset has %d conduits", rs.NumConduits())
		}
	}
}
