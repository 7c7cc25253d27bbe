package rules

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/protocols/registry"
)

// decode feeds one unit to a fresh-or-given session and fails unless it
// is a PDU.
func decode(t *testing.T, ss protocols.Session, dir protocols.Dir, b []byte) {
	t.Helper()
	if u := ss.Decode(dir, b); u != protocols.UnitPDU {
		t.Fatalf("Decode(% x) = %v, want a PDU", b, u)
	}
}

// TestSetModbusSession: Set reads a write request's range and values, a
// response's pairing, and a pairing anomaly when the response has none of
// its own.
func TestSetModbusSession(t *testing.T) {
	ss := registry.New(protocols.ProtoModbus, protocols.TCP, protocols.Config{})
	var p PDU
	decode(t, ss, protocols.Request, modbus.AppendRequest(nil, 1, 1, []byte{16, 0, 40, 0, 3, 6, 0, 1, 0, 2, 0, 3}))
	if !p.Set(ss) {
		t.Fatal("Set refused a Modbus session")
	}
	m := &p.Modbus
	if p.Proto != protocols.ProtoModbus || p.Dir != protocols.Request || p.Anomaly != protocols.AnomalyNone || m.Unit != 1 || m.FC != 16 || m.Addr != 40 || m.Qty != 3 || m.Unread ||
		m.NValues != 3 || m.Values[0] != 1 || m.Values[2] != 3 {
		t.Fatalf("FC 16 request: %+v anomaly %q, modbus %+v", p.Proto, p.Anomaly, *m)
	}
	rs := mustCompile(t, "testdata/design.yaml")
	f := flow("192.0.2.130", "192.0.2.10", 502)
	if v := rs.Evaluate(&f, &p); v.Action != Allow {
		t.Fatalf("FC 16 holding 40-42 within the policy's write range: %v %v", v.Action, v.ReasonString())
	}
	ss.Commit(true, true)

	decode(t, ss, protocols.Response, modbus.AppendResponse(nil, 1, 1, []byte{16, 0, 40, 0, 3}))
	p.Set(ss)
	if p.Dir != protocols.Response || !m.PairedRequest || p.Anomaly != protocols.AnomalyNone || m.NValues != 0 {
		t.Fatalf("paired response: dir %v anomaly %q modbus %+v", p.Dir, p.Anomaly, *m)
	}
	ss.Commit(true, true)

	decode(t, ss, protocols.Response, modbus.AppendResponse(nil, 9, 1, []byte{16, 0, 40, 0, 3}))
	p.Set(ss)
	if m.PairedRequest || p.Anomaly == protocols.AnomalyNone || p.Anomaly != ss.Anomaly() {
		t.Fatalf("response to nothing: paired %v anomaly %q, the session says %q", m.PairedRequest, p.Anomaly, ss.Anomaly())
	}
}

// TestSetModbusWriteReach: a byte count that claims more registers than
// the quantity widens the range the rule judges to what a server could
// write (MAP section 6.12), so a tolerated byte_count_mismatch cannot
// hide registers past the write range.
func TestSetModbusWriteReach(t *testing.T) {
	ss := registry.New(protocols.ProtoModbus, protocols.TCP, protocols.Config{})
	var p PDU
	// FC 16, holding 47, quantity 2, byte count 10 with 10 bytes: 5 registers.
	decode(t, ss, protocols.Request, modbus.AppendRequest(nil, 1, 1, []byte{16, 0, 47, 0, 2, 10, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5}))
	p.Set(ss)
	if p.Anomaly == protocols.AnomalyNone || p.Modbus.Addr != 47 || p.Modbus.Qty != 5 {
		t.Fatalf("anomaly %q, addr %d qty %d, want an anomaly and 5 registers from 47", p.Anomaly, p.Modbus.Addr, p.Modbus.Qty)
	}
	// A truncated request's address is unknown, not zero.
	decode(t, ss, protocols.Request, modbus.AppendRequest(nil, 2, 1, []byte{3}))
	p.Set(ss)
	if !p.Modbus.Unread {
		t.Fatalf("FC 3 without address: Unread false (anomaly %q)", p.Anomaly)
	}
}

// TestSetOPCUANodesMatchPolicy: the NodeIds the parser decodes from a
// Write are the ones the same text names in a policy (GUIDs in wire
// order on both sides), and a node the policy does not list is refused.
func TestSetOPCUANodesMatchPolicy(t *testing.T) {
	rs := mustCompile(t, "testdata/design.yaml")
	f := flow("192.0.2.131", "192.0.2.50", 4840)
	hdr := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2}
	for _, tc := range []struct {
		node string
		want Reason
	}{
		{"ns=2;s=Line1.Setpoint", ReasonAllowed},
		{"ns=2;s=Line1.Speed", ReasonNodeNotAllowed},
		{"ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", ReasonNodeNotAllowed},
	} {
		n, err := opcua.ParseNodeID(tc.node)
		if err != nil {
			t.Fatal(err)
		}
		var m opcua.Message
		if err := m.Decode(opcua.AppendMessage(nil, opcua.ChunkFinal, hdr, opcua.AppendWriteRequest(nil, 1, opcua.WriteValue{Node: n}))); err != nil {
			t.Fatalf("%s: %v", tc.node, err)
		}
		var p PDU
		p.SetOPCUA(&m, protocols.Request, opcua.ServiceWrite.RequestTypeID(), opcua.ModeSign)
		if p.OPCUA.NNodes != 1 || !p.OPCUA.Nodes[0].Equal(n) || p.OPCUA.MsgType != opcua.TypeMSG || p.OPCUA.SecurityMode != opcua.ModeSign {
			t.Fatalf("%s: PDU %+v", tc.node, p.OPCUA)
		}
		if v := rs.Evaluate(&f, &p); v.Reason != tc.want {
			t.Errorf("write %s: %v, want %v", tc.node, v.ReasonString(), tc.want)
		}
	}
	// The policy's GUID node, decoded from the wire, is that node.
	g, _ := opcua.ParseNodeID("ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a")
	var m opcua.Message
	if err := m.Decode(opcua.AppendMessage(nil, opcua.ChunkFinal, hdr, opcua.AppendWriteRequest(nil, 1, opcua.WriteValue{Node: g}))); err != nil || m.NumNodes != 1 || !m.Nodes[0].Equal(g) {
		t.Fatalf("GUID wire round trip: %v %v", err, m.NodeList())
	}
}

// otherSession is a session of a protocol rules do not know.
type otherSession struct{ protocols.Session }

func (otherSession) Dir() protocols.Dir { return protocols.Request }

// Proto is a protocol no rule section registered.
func (otherSession) Proto() protocols.Proto { return protocols.MaxProtos - 1 }

// TestSetUnknownSessionFailsClosed: Set refuses a session it cannot read
// and leaves nothing of the previous PDU in p.
func TestSetUnknownSessionFailsClosed(t *testing.T) {
	p := mb(3, 0, 10)
	p.Anomaly = modbus.AnomalyTruncated.Tagged()
	if p.Set(otherSession{}) {
		t.Fatal("Set accepted a session of no protocol of rules")
	}
	if p.Proto != protocols.ProtoNone || p.Anomaly != protocols.AnomalyNone || p.Modbus != (Modbus{}) {
		t.Fatalf("PDU after a refused Set: %v %q %+v", p.Proto, p.Anomaly, p.Modbus)
	}
}

// TestSetAllocatesNothing: the adapters run once per PDU on the hot path.
func TestSetAllocatesNothing(t *testing.T) {
	mbs := registry.New(protocols.ProtoModbus, protocols.TCP, protocols.Config{})
	decode(t, mbs, protocols.Request, modbus.AppendRequest(nil, 1, 1, []byte{16, 0, 40, 0, 3, 6, 0, 1, 0, 2, 0, 3}))
	n, _ := opcua.ParseNodeID("ns=2;s=Line1.Setpoint")
	var m opcua.Message
	if err := m.Decode(opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2},
		opcua.AppendWriteRequest(nil, 1, opcua.WriteValue{Node: n}))); err != nil {
		t.Fatal(err)
	}
	var p PDU
	if allocs := testing.AllocsPerRun(200, func() {
		p.Set(mbs)
		p.SetOPCUA(&m, protocols.Request, 673, opcua.ModeSign)
		p.Malformed(protocols.ProtoDNP3, protocols.Request, dnp3.AnomalyBadStart.Tagged())
	}); allocs != 0 {
		t.Errorf("Set/SetOPCUA/Malformed allocate %v times per run, want 0", allocs)
	}
}
