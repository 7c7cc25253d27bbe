package dissect

import (
	"net/netip"
	"testing"

	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

var (
	uaHello = opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://[::1]:48010"}
	uaCh    = opcua.SecureHeader{ChannelID: 7, TokenID: 1}
)

func uaMsg(seq, id uint32, body []byte) []byte {
	h := uaCh
	h.SequenceNumber, h.RequestID = seq, id
	return opcua.AppendMessage(nil, opcua.ChunkFinal, h, body)
}

func TestSniff(t *testing.T) {
	readReq := uaMsg(2, 2, opcua.AppendReadRequest(nil, 2, opcua.Numeric(0, 2258)))
	readResp := uaMsg(2, 2, opcua.AppendResponse(nil, opcua.ServiceRead, 2, 0))
	dnReq := dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 0))
	dnResp := dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncResponse, 0, false))
	badCRC := append([]byte(nil), dnReq...)
	badCRC[8] ^= 1
	mbReq := modbus.AppendRequest(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 10))
	mbResp := modbus.AppendResponse(nil, 1, 1, modbus.AppendReadRegistersResponse(nil, 3, []uint16{1, 2}))
	for _, tc := range []struct {
		name  string
		b     []byte
		proto protocols.Proto
		dir   protocols.Dir
	}{
		{"ua hello", opcua.AppendHello(nil, uaHello), protocols.ProtoOPCUA, protocols.Request},
		{"ua ack", opcua.AppendAcknowledge(nil, uaHello), protocols.ProtoOPCUA, protocols.Response},
		{"ua open request", opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone), protocols.ProtoOPCUA, protocols.Request},
		{"ua read request mid-stream", readReq, protocols.ProtoOPCUA, protocols.Request},
		{"ua read response mid-stream", readResp, protocols.ProtoOPCUA, protocols.Response},
		{"dnp3 from master", dnReq, protocols.ProtoDNP3, protocols.Request},
		{"dnp3 from outstation", dnResp, protocols.ProtoDNP3, protocols.Response},
		{"dnp3 bad header crc", badCRC, protocols.ProtoNone, protocols.DirUnknown},
		{"modbus request", mbReq, protocols.ProtoModbus, protocols.Request},
		{"two modbus requests", append(append([]byte(nil), mbReq...), mbReq...), protocols.ProtoModbus, protocols.Request},
		{"modbus response", mbResp, protocols.ProtoModbus, protocols.Response},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), protocols.ProtoNone, protocols.DirUnknown},
		{"tls", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03}, protocols.ProtoNone, protocols.DirUnknown},
		{"tpkt", []byte{0x03, 0x00, 0x00, 0x16, 0x11, 0xe0, 0x00, 0x00, 0x00, 0x01, 0x00}, protocols.ProtoNone, protocols.DirUnknown},
	} {
		p, d, ok := Sniff(tc.b)
		if p != tc.proto || d != tc.dir || ok != (tc.proto != protocols.ProtoNone) {
			t.Errorf("%s: Sniff = %v %v %v, want %v %v", tc.name, p, d, ok, tc.proto, tc.dir)
		}
	}
}

// TestDissectByContent: OPC UA on a non-standard port over IPv6
// loopback, picked up mid-stream with the server's answer first, is found
// by content and its directions come from the message types; DNP3 on
// 20000 where the outstation opened the connection to the master takes
// its directions from the DIR bit, not from the port.
func TestDissectByContent(t *testing.T) {
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("[::1]:48010")}
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("[::1]:53000")}
	ua := capture.NewTCPFlow(cli, srv)
	out := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.10:41000")}
	master := capture.Endpoint{MAC: capture.MAC(4), Addr: netip.MustParseAddrPort("192.0.2.130:20000")}
	dn := capture.NewTCPFlow(out, master) // the outstation connects
	frames := [][]byte{
		ua.Send(false, uaMsg(9, 9, opcua.AppendResponse(nil, opcua.ServiceRead, 9, 0))),
		ua.Send(true, uaMsg(10, 10, opcua.AppendReadRequest(nil, 10, opcua.Numeric(0, 2258)))),
		ua.Send(false, uaMsg(10, 10, opcua.AppendResponse(nil, opcua.ServiceRead, 10, 0))),
	}
	frames = append(frames, dn.Handshake()...)
	frames = append(frames,
		dn.Send(false, dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 0))),
		dn.Send(true, dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncResponse, 0, false))),
	)
	path := pcaptest.Write(t, "gen.pcap", frames)
	type got struct {
		proto protocols.Proto
		dir   protocols.Dir
		src   string
	}
	var pdus []got
	if _, err := Run(path, Options{}, func(p *PDU) error {
		pdus = append(pdus, got{p.Proto, p.Dir, p.Src.String()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []got{
		{protocols.ProtoOPCUA, protocols.Response, "[::1]:48010"},
		{protocols.ProtoOPCUA, protocols.Request, "[::1]:53000"},
		{protocols.ProtoOPCUA, protocols.Response, "[::1]:48010"},
		{protocols.ProtoDNP3, protocols.Request, "192.0.2.130:20000"},
		{protocols.ProtoDNP3, protocols.Response, "192.0.2.10:41000"},
	}
	if len(pdus) != len(want) {
		t.Fatalf("got %d PDUs %v, want %v", len(pdus), pdus, want)
	}
	for i := range want {
		if pdus[i] != want[i] {
			t.Errorf("PDU %d: got %v, want %v", i, pdus[i], want[i])
		}
	}
	found, _, err := Detect(nil, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[48010] != protocols.ProtoOPCUA {
		t.Errorf("Detect = %v, want 48010: opcua", found)
	}
	pdus = nil
	if _, err := Run(path, Options{PortsOnly: true}, func(p *PDU) error {
		pdus = append(pdus, got{p.Proto, p.Dir, p.Src.String()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(pdus) != 2 {
		t.Errorf("PortsOnly: %d PDUs, want the 2 on port 20000", len(pdus))
	}
}

// FuzzSniff: Sniff never panics and says a direction only with a protocol.
func FuzzSniff(f *testing.F) {
	f.Add(opcua.AppendHello(nil, uaHello))
	f.Add(uaMsg(2, 2, opcua.AppendReadRequest(nil, 2, opcua.Numeric(0, 2258))))
	f.Add(dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 0)))
	f.Add(modbus.AppendRequest(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 10)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, d, ok := Sniff(b)
		if !ok && (p != protocols.ProtoNone || d != protocols.DirUnknown) {
			t.Fatalf("Sniff = %v %v %v", p, d, ok)
		}
	})
}
