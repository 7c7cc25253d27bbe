package txlog_test

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

const allProtocols = `version: 1
name: tx3
mode: enforce
action: drop
zones:
  a: { port: north, networks: [192.0.2.0/28] }
  b: { port: south, networks: [192.0.2.16/28] }
assets:
  hmi: { ip: 192.0.2.1, zone: a }
conduits:
  - name: logged
    from: hmi
    to: b
    log: transactions
    rules:
      - modbus: { allow: [ { read: holding 0-99 } ] }
      - dnp3:
          allow:
            - { function: read, objects: [g60] }
            - { function: confirm }
            - { unsolicited: true }
      - opcua: { allow: [ { service: [read] } ] }
`

// script is the traffic every protocol plays, by transaction id: two
// pipelined requests answered out of order, then one more.
var script = []struct {
	req bool
	id  int
}{{true, 11}, {true, 12}, {false, 12}, {false, 11}, {true, 13}, {false, 13}}

// proto renders the script in one protocol: its server port, the
// exchanges that open a session (client first, alternating), what
// requests and responses look like, what else crosses without being a
// transaction, and the field the request and its response share.
type proto struct {
	name     string
	port     uint16
	open     [][]byte
	req      func(id int) []byte
	resp     func(id int) []byte
	noise    [][2][]byte // {from client, from server}, after the script
	idField  string
	extraTxs int // transactions of the opening exchanges
}

func protocolsUnderTest() []proto {
	const master, outstation = 1, 10
	var ua [2]uint32 // OPC UA sequence numbers per direction
	uaHdr := func(d int, id int) opcua.SecureHeader {
		ua[d]++
		return opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: ua[d] + 1, RequestID: uint32(id)}
	}
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.20:4840/"}
	return []proto{{
		name: "modbus", port: 502, idField: "tid",
		req: func(id int) []byte {
			return modbus.AppendRequest(nil, uint16(id), 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, 10, 2))
		},
		resp: func(id int) []byte {
			return modbus.AppendResponse(nil, uint16(id), 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{7, 8}))
		},
	}, {
		name: "dnp3", port: 20000, idField: "seq",
		req: func(id int) []byte {
			return dnp3.AppendLinkFrames(nil, dnp3.CtrlMasterData, outstation, master, dnp3.AppendReadClass0123(nil, uint8(id)))
		},
		resp: func(id int) []byte {
			return dnp3.AppendLinkFrames(nil, dnp3.CtrlOutstationData, master, outstation,
				dnp3.AppendResponseHeader(nil, uint8(id), dnp3.FuncResponse, 0, false))
		},
		// An unsolicited response and its CONFIRM: no transaction.
		noise: [][2][]byte{{
			dnp3.AppendLinkFrames(nil, dnp3.CtrlMasterData, outstation, master, dnp3.AppendConfirm(nil, 3, true)),
			dnp3.AppendLinkFrames(nil, dnp3.CtrlOutstationData, master, outstation,
				dnp3.AppendResponseHeader(nil, 3, dnp3.FuncUnsolicitedResp, 0, true)),
		}},
	}, {
		name: "opcua", port: 4840, idField: "request_id", extraTxs: 1, // the OPN
		open: [][]byte{
			opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, hello),
			opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone),
			opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1),
		},
		req: func(id int) []byte {
			return opcua.AppendMessage(nil, opcua.ChunkFinal, uaHdr(0, id), opcua.AppendReadRequest(nil, uint32(id), opcua.StringID(2, "x")))
		},
		resp: func(id int) []byte {
			return opcua.AppendMessage(nil, opcua.ChunkFinal, uaHdr(1, id), opcua.AppendResponse(nil, opcua.ServiceRead, uint32(id), 0))
		},
	}}
}

// The transaction log pairs each request with the response its
// protocol's session paired it with, the same way for the three
// protocols: the same script (pipelined requests answered out of order)
// makes one record per transaction whose request and response carry the
// same transaction id, and what is no transaction (a DNP3 unsolicited
// response and its CONFIRM) makes none.
func TestPairsEveryProtocol(t *testing.T) {
	r := newRigPolicy(t, allProtocols, txlog.Config{})
	ps := protocolsUnderTest()
	for i, p := range ps {
		cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(40000+i))}
		srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), p.port)}
		fl := capture.NewTCPFlow(cli, srv)
		for j, f := range fl.Handshake() {
			r.tap.Handle(gateway.PortID(j%2), f, nopTx)
		}
		for j, b := range p.open {
			r.tap.Handle(gateway.PortID(j%2), fl.Send(j%2 == 0, b), nopTx)
		}
		for _, op := range script {
			if op.req {
				r.tap.Handle(gateway.North, fl.Send(true, p.req(op.id)), nopTx)
			} else {
				r.tap.Handle(gateway.South, fl.Send(false, p.resp(op.id)), nopTx)
			}
		}
		for _, n := range p.noise {
			r.tap.Handle(gateway.South, fl.Send(false, n[1]), nopTx)
			r.tap.Handle(gateway.North, fl.Send(true, n[0]), nopTx)
		}
	}
	if c := r.eng.Counters(); c.PDUsDenied != 0 || c.PDUsAllowed == 0 {
		t.Fatalf("%d PDUs denied, %d allowed: the test's traffic must be allowed", c.PDUsDenied, c.PDUsAllowed)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	got := map[string][]string{}
	for _, ev := range r.evs {
		resp, _ := ev.Fields["response"].(map[string]any)
		got[ev.Proto] = append(got[ev.Proto], fmt.Sprintf("%v/%v", ev.Fields[idFieldOf(ps, ev.Proto)], resp[idFieldOf(ps, ev.Proto)]))
	}
	for _, p := range ps {
		want := []string{"11/11", "12/12", "13/13"}
		if p.extraTxs > 0 {
			want = append([]string{"1/1"}, want...)
		}
		sort.Strings(got[p.name])
		if fmt.Sprint(got[p.name]) != fmt.Sprint(want) {
			t.Errorf("%s: transactions (request/response id) %v, want %v", p.name, got[p.name], want)
		}
	}
	if st := r.log.Stats(); st.Pending != 0 || st.Unanswered != 0 {
		t.Errorf("Stats = %+v, want nothing pending", st)
	}
}

func idFieldOf(ps []proto, name string) string {
	for _, p := range ps {
		if p.name == name {
			return p.idField
		}
	}
	return ""
}
