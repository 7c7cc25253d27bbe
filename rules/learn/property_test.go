package learn

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// TestLearnAlwaysDraftsACheckablePolicy feeds random observations (any
// function code, sub-function, object group and variation, anomaly name,
// security mode and policy, NodeId, ethertype, ICMP type and address,
// including hosts talking to themselves and --zone networks they overlap)
// to a Learner: every draft must pass `otgw check` (issue 14: learn never
// fails and never writes a key check refuses).
func TestLearnAlwaysDraftsACheckablePolicy(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 14))
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	anomalies := append(append(anomalyNames("modbus"), anomalyNames("dnp3")...), anomalyNames("opcua")...)
	anomalies = append(anomalies, "", "", "", "", "bogus_anomaly")
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("198.51.100.7"),
		netip.MustParseAddr("198.51.100.200"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("0.0.0.0")}
	policies := []string{"", "None", "Basic256Sha256", "Aes256_Sha256_RsaPss", "http://example.com/UA/Unknown#Policy"}
	for n := 0; n < 300; n++ {
		var o Options
		if r.IntN(2) == 0 {
			_ = o.AddZone("cell=198.51.100.0/25")
			_ = o.AddZone("cell=south")
		}
		l := New(o)
		l.Inspected(map[uint16]protocols.Proto{uint16(1 + r.IntN(65535)): protocols.Proto(1 + r.IntN(3))})
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for range 1 + r.IntN(30) {
			at = at.Add(time.Duration(r.IntN(5000)) * time.Millisecond)
			src := netip.AddrPortFrom(addrs[r.IntN(len(addrs))], uint16(r.IntN(65536)))
			dst := netip.AddrPortFrom(addrs[r.IntN(len(addrs))], uint16(r.IntN(65536)))
			if src.Addr().Is4() != dst.Addr().Is4() {
				dst = netip.AddrPortFrom(src.Addr(), dst.Port())
			}
			ob := &Observation{Time: at, Src: src, Dst: dst}
			switch k := r.IntN(10); {
			case k == 0:
				ob.Proto, ob.EtherType = "l2", uint16(r.IntN(65536))
			case k == 1:
				ob.Proto, ob.IPSrc, ob.IPDst, ob.ICMPType = "icmp", src.Addr(), dst.Addr(), uint8(r.IntN(256))
			case k == 2:
				ob.Proto = pick([]string{"tcp", "udp", "modbus", "dnp3", "opcua"})
				if ob.Proto != "tcp" && ob.Proto != "udp" {
					ob.Verdict.Inspect, _ = protoByName(ob.Proto)
					ob.Proto = "tcp"
				}
			default:
				p := &rules.PDU{Proto: protocols.Proto(1 + r.IntN(3)), Dir: protocols.Dir(1 + r.IntN(2))}
				if name := pick(anomalies); name != "" {
					// A name the protocol's parser does not report stands
					// for a code its vocabulary does not name.
					var ok bool
					if p.Anomaly, ok = protocols.AnomalyByName(p.Proto, name); !ok {
						p.Anomaly = protocols.NewAnomaly(p.Proto, 200)
					}
				}
				ob.Proto = p.Proto.String()
				switch p.Proto {
				case protocols.ProtoModbus:
					m := &p.Modbus
					m.Unit, m.FC, m.Sub = uint8(r.IntN(256)), uint8(r.IntN(256)), uint16(r.IntN(65536))
					m.Addr, m.Qty = uint16(r.IntN(65536)), uint16(r.IntN(200))
					m.WriteAddr, m.WriteQty = uint16(r.IntN(65536)), uint16(r.IntN(200))
					m.NValues = uint8(r.IntN(4))
				case protocols.ProtoDNP3:
					d := &p.DNP3
					d.LinkSrc, d.LinkDst, d.FC = uint16(r.IntN(65536)), uint16(r.IntN(65536)), uint8(r.IntN(256))
					d.NObjects = uint8(r.IntN(4))
					for i := range d.NObjects {
						d.Objects[i] = rules.DNP3Object{Group: uint8(r.IntN(256)), Variation: uint8(r.IntN(256))}
					}
					d.ObjectsTruncated = r.IntN(20) == 0
					d.Unsolicited = r.IntN(5) == 0
				case protocols.ProtoOPCUA:
					u := &p.OPCUA
					u.MsgType = opcua.MessageType(r.IntN(8))
					u.SecurityMode = opcua.SecurityMode(r.IntN(5))
					u.SecurityPolicy = pick(policies)
					u.ServiceID = uint32(pick2(r, 631, 673, 712, 527, 0, uint32(r.IntN(2000))))
					u.NNodes = uint8(r.IntN(3))
					for i := range u.NNodes {
						u.Nodes[i] = opcua.NodeID{Namespace: uint16(r.IntN(3)), Type: opcua.NodeIDType(r.IntN(5)), Numeric: uint32(r.IntN(100)), Bytes: []byte{byte(r.IntN(256)), 'x'}}
					}
				}
				ob.PDU = p
				ob.Verdict.Action = rules.Action(r.IntN(3))
			}
			l.Observe(ob)
		}
		y, err := rules.Marshal(l.Policy())
		if err != nil {
			t.Fatalf("case %d: marshal: %v", n, err)
		}
		p, err := rules.Parse("learned.yaml", y)
		if err != nil {
			t.Fatalf("case %d: parse: %v\n%s", n, err, y)
		}
		if _, err := rules.Compile(p); err != nil {
			t.Fatalf("case %d: check refuses the draft: %v\n%s", n, err, y)
		}
	}
}

func pick2(r *rand.Rand, v ...uint32) uint32 { return v[r.IntN(len(v))] }

func protoByName(s string) (protocols.Proto, bool) {
	for _, p := range []protocols.Proto{protocols.ProtoModbus, protocols.ProtoDNP3, protocols.ProtoOPCUA} {
		if p.String() == s {
			return p, true
		}
	}
	return protocols.ProtoNone, false
}
