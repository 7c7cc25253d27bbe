package gateway

import (
	"bytes"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// pstep is one PDU of a pairing test: who sends it and the reason of its
// deny ("" when it must cross). A denied step is the last of its case (the
// deny resets the connection).
type pstep struct {
	client bool
	b      []byte
	deny   string
}

// runPairing sends steps over f (its handshake already done) and checks
// each verdict.
func runPairing(t *testing.T, r *rig, f *capture.TCPFlow, steps []pstep) {
	t.Helper()
	for i, s := range steps {
		fr := f.Send(s.client, s.b)
		in, out := South, North
		if s.client {
			in, out = North, South
		}
		got := r.handle(in, fr)
		if s.deny == "" {
			if len(got) != 1 || got[0].out != out || !bytes.Equal(got[0].frame, fr) {
				t.Fatalf("step %d: got %s, want it forwarded (%v) %+v", i, describe(got), r.counters().DropsByName(), r.lastEvent())
			}
			continue
		}
		for _, g := range got {
			if bytes.Equal(g.frame, fr) {
				t.Fatalf("step %d: forwarded, want denied", i)
			}
		}
		if ev := r.lastEvent(); ev == nil || ev.Reason != s.deny {
			t.Fatalf("step %d: event %+v, want reason %s", i, ev, s.deny)
		}
		if i != len(steps)-1 {
			t.Fatalf("bad test: denied step %d is not the last", i)
		}
	}
	if c := r.counters(); int(c.PDUsDenied) != len(steps)-countAllowed(steps) {
		t.Fatalf("denied %d PDUs, want %d", c.PDUsDenied, len(steps)-countAllowed(steps))
	}
}

const unpaired = "response_without_request"

func countAllowed(steps []pstep) int {
	n := 0
	for _, s := range steps {
		if s.deny == "" {
			n++
		}
	}
	return n
}

// TestDNP3RepeatedSequenceNumber: a master may repeat a request with the
// same application sequence number (IEEE 1815-2012 clause 4.2.2.4, the SEQ field of the application control octet) and
// the outstation answers each copy; every answer consumes one request, and
// one answer more than requests is unpaired.
func TestDNP3RepeatedSequenceNumber(t *testing.T) {
	req := func(seq uint8) pstep { return pstep{true, dnp3Req(seq, dnp3.FuncRead, 60, 2), ""} }
	resp := func(seq uint8, allow bool) pstep {
		if allow {
			return pstep{false, dnp3Resp(seq), ""}
		}
		return pstep{false, dnp3Resp(seq), unpaired}
	}
	repeat := func(n int, s pstep) []pstep {
		out := make([]pstep, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	tests := []struct {
		name  string
		steps []pstep
	}{
		{"7 8 7 8 7 each answered in order", []pstep{
			req(7), req(8), req(7), req(8), req(7),
			resp(7, true), resp(8, true), resp(7, true), resp(8, true), resp(7, true),
		}},
		{"two copies of seq 7, two answers", []pstep{req(7), req(7), resp(7, true), resp(7, true)}},
		{"two copies of seq 7, third answer unpaired", []pstep{req(7), req(7), resp(7, true), resp(7, true), resp(7, false)}},
		{"answer consumed: same seq again needs a new request", []pstep{req(3), resp(3, true), req(4), resp(4, true), resp(3, false)}},
		{"count saturates at dnp3.MaxRepeat", append(append(repeat(dnp3.MaxRepeat+5, req(9)),
			repeat(dnp3.MaxRepeat, resp(9, true))...), resp(9, false))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", dnp3Conduit), nil)
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40100")}, rtuEP)
			r.handshake(f)
			runPairing(t, r, f, tc.steps)
		})
	}
}

// TestMarkPickedUp: on a connection its harness picked up mid-stream,
// responses before the first one that pairs with a request the engine saw
// answer requests sent before the pickup and cross; after that, and on
// any connection not marked, an unpaired response is denied.
func TestMarkPickedUp(t *testing.T) {
	const mbUnpaired = "malformed:" + unpaired // the Modbus pairing anomaly, not tolerated here
	dnpClient := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40100")}
	uaClient := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40200")}
	uaReq := func(id uint32) []byte {
		return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 100 + id, RequestID: id},
			opcua.AppendReadRequest(nil, id, opcua.StringID(2, "Line1.Speed")))
	}
	uaResp := func(id uint32) []byte {
		return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 200 + id, RequestID: id},
			opcua.AppendResponse(nil, opcua.ServiceRead, id, 0))
	}
	tests := []struct {
		name           string
		conduit        string
		client, server capture.Endpoint
		mark           bool
		steps          []pstep
	}{
		{"modbus: stale answers cross until one pairs", modbusConduit, hmiEP, plcEP, true, []pstep{
			{false, readResp(31998, make([]uint16, 10)), ""}, // before any request
			{true, readReq(1, 0, 10), ""},
			{false, readResp(31999, make([]uint16, 3)), ""}, // tid_mismatch: still a stale answer
			{false, readResp(1, make([]uint16, 10)), ""},    // pairs: the allowance ends
			{false, readResp(2, make([]uint16, 10)), mbUnpaired},
		}},
		{"modbus: not marked", modbusConduit, hmiEP, plcEP, false, []pstep{
			{false, readResp(31998, make([]uint16, 10)), mbUnpaired},
		}},
		{"modbus: not marked, tid mismatch", modbusConduit, hmiEP, plcEP, false, []pstep{
			{true, readReq(1, 0, 10), ""},
			{false, readResp(31999, make([]uint16, 10)), "malformed:tid_mismatch"},
		}},
		{"dnp3: stale answers cross until one pairs", dnp3Conduit, dnpClient, rtuEP, true, []pstep{
			{false, dnp3Resp(2), ""},
			{true, dnp3Req(4, dnp3.FuncRead, 60, 2), ""},
			{false, dnp3Resp(3), ""},
			{false, dnp3Resp(4), ""},
			{false, dnp3Resp(5), unpaired},
		}},
		{"dnp3: not marked", dnp3Conduit, dnpClient, rtuEP, false, []pstep{
			{false, dnp3Resp(2), unpaired},
		}},
		// The channel was opened before the pickup; the client renews it
		// (OPN with channel id 7) and reads.
		{"opcua: stale answers cross until one pairs", opcuaConduit, uaClient, uaEP, true, []pstep{
			{false, uaResp(3), ""},
			{true, opcua.AppendOpenRequest(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 104, RequestID: 4}, opcua.ModeNone), ""},
			{false, uaResp(2), ""},
			{false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 204, RequestID: 4}, 2), ""},
			{true, uaReq(5), ""},
			{false, uaResp(5), ""},
			{false, uaResp(6), unpaired},
		}},
		{"opcua: not marked", opcuaConduit, uaClient, uaEP, false, []pstep{
			{false, uaResp(4), "malformed:msg_before_open"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", tc.conduit), nil)
			f := capture.NewTCPFlow(tc.client, tc.server)
			r.handshake(f)
			if tc.mark {
				if !r.e.MarkPickedUp(tc.client.Addr, tc.server.Addr) {
					t.Fatal("MarkPickedUp found no inspected flow")
				}
			}
			runPairing(t, r, f, tc.steps)
		})
	}
}

// TestMarkPickedUpNeedsInspectedFlow: the mark applies to an existing
// inspected flow only.
func TestMarkPickedUpNeedsInspectedFlow(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	if r.e.MarkPickedUp(hmiEP.Addr, plcEP.Addr) {
		t.Fatal("MarkPickedUp reported a flow that does not exist")
	}
	f := capture.NewTCPFlow(hmiEP, plcEP)
	r.handshake(f)
	if !r.e.MarkPickedUp(hmiEP.Addr, plcEP.Addr) {
		t.Fatal("MarkPickedUp found no inspected flow after the handshake")
	}
}

// TestInspectorResetClearsPickup: inspectors are recycled; neither the
// pickup mark nor a request awaiting its answer may survive into the next
// connection that gets the inspector: after reset, a response pairs with
// nothing.
func TestInspectorResetClearsPickup(t *testing.T) {
	uaMsg := func(resp bool) []byte {
		body := opcua.AppendReadRequest(nil, 3, opcua.StringID(2, "Line1.Speed"))
		if resp {
			body = opcua.AppendResponse(nil, opcua.ServiceRead, 3, 0)
		}
		return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3}, body)
	}
	for _, tc := range []struct {
		name      string
		proto     protocols.Proto
		req, resp []byte
	}{
		{"modbus", protocols.ProtoModbus, readReq(9, 0, 1), readResp(9, []uint16{1})},
		{"dnp3", protocols.ProtoDNP3, dnp3Req(7, dnp3.FuncRead, 60, 2), dnp3Resp(7)},
		{"opcua", protocols.ProtoOPCUA, uaMsg(false), uaMsg(true)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
			in := r.e.newInspector(tc.proto)
			in.sess.Gap(protocols.Request)
			in.sess.Gap(protocols.Response)
			in.sess.Decode(protocols.Request, tc.req)
			in.sess.Commit(true, true)
			in.sess.PickUp()
			in.reset()
			in.sess.Decode(protocols.Response, tc.resp)
			if in.sess.Paired() {
				t.Fatal("a response paired after reset: the pickup or the request survived")
			}
		})
	}
}
