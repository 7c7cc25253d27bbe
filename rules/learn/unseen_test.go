package learn

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// Regression cases of issue 14 ("unseen traffic"), built from traffic our
// encoders generate: the sample captures that showed each class are not
// committed.

var (
	genMaster = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40001")}
	genOut    = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:20000")}
)

// writeCapture writes frames to a pcap in t's temporary directory.
func writeCapture(t *testing.T, name string, frames [][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// learnYAML learns from paths and returns the draft as written and as
// `otgw check` reads it back (it must compile).
func learnYAML(t *testing.T, paths ...string) (string, *rules.Policy) {
	t.Helper()
	p, _, err := Learn(Options{}, paths...)
	if err != nil {
		t.Fatalf("learn: %v", err)
	}
	y, err := rules.Marshal(p)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	pp, err := rules.Parse("learned.yaml", y)
	if err != nil {
		t.Fatalf("parse learned policy: %v\n%s", err, y)
	}
	if _, err := rules.Compile(pp); err != nil {
		t.Fatalf("check of learned policy: %v\n%s", err, y)
	}
	return string(y), pp
}

// denies replays paths under p and returns "frame reason" of each deny.
func denies(t *testing.T, p *rules.Policy, paths ...string) []string {
	t.Helper()
	var out []string
	for _, e := range replayEvents(t, p, paths...) {
		if e.Verdict == "deny" {
			out = append(out, strconv.Itoa(e.Frame)+" "+e.Reason)
		}
	}
	return out
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

// TestLearnUnknownObjectAndUnframeable: a DNP3 session carrying a request
// with an object group IEEE 1815-2012 does not define (group 255, as in a
// malformed-but-real trace) and, on a second connection, a link frame with
// a bad header CRC. Learn must succeed, its draft must pass check, name
// neither as a key (a comment says what was seen), tolerate nothing the
// engine cannot honour, and replaying the capture must deny exactly those
// two frames.
func TestLearnUnknownObjectAndUnframeable(t *testing.T) {
	const master, out = 1, 10
	req := func(apdu []byte) []byte { return dnp3.AppendLinkFrames(nil, 0xC4, out, master, apdu) }
	resp := func(seq uint8) []byte {
		return dnp3.AppendLinkFrames(nil, 0x44, master, out, dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false))
	}
	fl := capture.NewTCPFlow(genMaster, genOut)
	frames := fl.Handshake()
	frames = append(frames,
		fl.Send(true, req(dnp3.AppendReadClass0123(nil, 0))), // 4
		fl.Send(false, resp(0)),                              // 5
		// 6: WRITE with group 255, variation 0, all objects.
		fl.Send(true, req(dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncWrite), 255, 0))),
		fl.Send(false, resp(1)), // 7
	)
	m2 := genMaster
	m2.Addr = netip.AddrPortFrom(m2.Addr.Addr(), 40002)
	fl2 := capture.NewTCPFlow(m2, genOut)
	frames = append(frames, fl2.Handshake()...) // 8-10
	bad := req(dnp3.AppendReadClass0123(nil, 2))
	bad[8] ^= 0xff                               // header CRC
	frames = append(frames, fl2.Send(true, bad)) // 11
	path := writeCapture(t, "dnp3-g255-linkcrc.pcap", frames)

	y, p := learnYAML(t, path)
	for _, bad := range []string{"g255", "link_crc"} {
		for _, line := range strings.Split(y, "\n") {
			code, _, _ := strings.Cut(line, "#")
			if strings.Contains(code, bad) {
				t.Errorf("draft names %s outside a comment: %q", bad, line)
			}
		}
	}
	for _, want := range []string{cannotName + ": unknown dnp3 object group 255", unframedWarning + ": link_crc"} {
		if !strings.Contains(y, want) {
			t.Errorf("draft lacks the review comment %q:\n%s", want, y)
		}
	}
	got := strings.Join(denies(t, p, path), ", ")
	if want := "6 function_not_allowed, 7 closed, 11 malformed:link_crc"; got != want {
		t.Errorf("replay of the draft denies [%s], want [%s]\n%s", got, want, y)
	}
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

// l2Frame builds an Ethernet frame with type/length field et.
func l2Frame(dst, src [6]byte, et uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst[:]...), src[:]...), byte(et>>8), byte(et))
	b = append(b, payload...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// TestLearnAllowsLayer2ItSaw: a capture with ARP, LLDP, spanning tree
// BPDUs (IEEE 802.3 frames with a length field) and an ethertype without
// a name next to a Modbus session. The draft allows each in its l2 list
// (by name, `llc`, or number) and replaying the capture denies nothing.
func TestLearnAllowsLayer2ItSaw(t *testing.T) {
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	arp = append(arp, genMaster.MAC[:]...)
	arp = append(arp, genMaster.Addr.Addr().AsSlice()...)
	arp = append(arp, 0, 0, 0, 0, 0, 0)
	arp = append(arp, genOut.Addr.Addr().AsSlice()...)
	lldp := []byte{0x02, 0x07, 0x04, 0x02, 0x00, 0x5e, 0x00, 0x00, 0x02, 0x04, 0x02, 0x07, 0x31, 0x06, 0x02, 0x00, 0x78, 0x00, 0x00}
	stp := append([]byte{0x42, 0x42, 0x03}, make([]byte, 35)...) // LLC DSAP/SSAP 0x42, UI; configuration BPDU
	plc := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
	fl := capture.NewTCPFlow(genMaster, plc)
	frames := [][]byte{
		l2Frame(bcast, genMaster.MAC, 0x0806, arp),
		l2Frame([6]byte{0x01, 0x80, 0xc2, 0, 0, 0x0e}, plc.MAC, 0x88cc, lldp),
		l2Frame([6]byte{0x01, 0x80, 0xc2, 0, 0, 0}, plc.MAC, uint16(len(stp)), stp),
		l2Frame(bcast, plc.MAC, 0x88b5, []byte("local experimental ethertype")),
	}
	frames = append(frames, fl.Handshake()...)
	frames = append(frames,
		fl.Send(true, modbus.AppendRequest(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 2))),
		fl.Send(false, modbus.AppendResponse(nil, 1, 1, modbus.AppendReadRegistersResponse(nil, 3, []uint16{7, 8}))),
		l2Frame([6]byte{0x01, 0x80, 0xc2, 0, 0, 0}, plc.MAC, uint16(len(stp)), stp),
	)
	path := writeCapture(t, "l2.pcap", frames)
	y, p := learnYAML(t, path)
	if got, want := strings.Join(p.L2.Allow, " "), "llc arp 0x88b5 lldp"; got != want {
		t.Errorf("l2 allow = %q, want %q\n%s", got, want, y)
	}
	if !strings.Contains(y, "# 802.3 frames with a length field (llc): seen 2 times") {
		t.Errorf("draft lacks the l2 comment:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}

// umasSession is a Unity-style engineering session with a Modicon PLC:
// read id, reservation, an upload answered with 261-byte ADUs (MBAP length
// 255), stop and start PLC. It returns the frames and the frame number
// of the stop request.
func umasSession() ([][]byte, int) {
	eng := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:49152")}
	plc := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
	fl := capture.NewTCPFlow(eng, plc)
	frames := fl.Handshake()
	block := make([]byte, 251)
	for i := range block {
		block[i] = byte(i * 7)
	}
	tid := uint16(0)
	stop := 0
	ex := func(key, code uint8, data []byte, resp []byte) {
		tid++
		if code == modbus.UMASStopPLC {
			stop = len(frames) + 1
		}
		frames = append(frames,
			fl.Send(true, modbus.AppendRequest(nil, tid, 0, modbus.AppendUMAS(nil, key, code, data))),
			fl.Send(false, modbus.AppendResponse(nil, tid, 0, modbus.AppendUMAS(nil, key, modbus.UMASResponseOK, resp))))
	}
	ex(0, modbus.UMASReadID, nil, []byte{0x01, 0x02, 0x03})
	ex(0, modbus.UMASTakePLCReservation, []byte("UNITY-PC"), []byte{0x4c})
	for i := 0; i < 3; i++ {
		ex(0x4c, modbus.UMASUploadBlock, []byte{0, 1, byte(i), 0}, block)
	}
	ex(0x4c, modbus.UMASStopPLC, []byte{0xff, 0}, nil)
	ex(0x4c, modbus.UMASStartPLC, []byte{0xff, 0}, nil)
	ex(0x4c, modbus.UMASReleasePLCReservation, nil, nil)
	return frames, stop
}

// TestLearnUMASSession: learn drafts the UMAS function codes it saw
// (`function: 90/<name>`), replaying the session (261-byte ADUs included)
// under the draft denies nothing, and the same draft without stop_plc
// denies exactly the stop request, leaving the session's earlier PDUs
// alone (no non_modbus, no reset before it).
func TestLearnUMASSession(t *testing.T) {
	frames, stop := umasSession()
	path := writeCapture(t, "umas.pcap", frames)
	y, p := learnYAML(t, path)
	for _, want := range []string{"90/read_id", "90/take_plc_reservation", "90/upload_block", "90/stop_plc", "90/start_plc"} {
		if !strings.Contains(y, "function: "+want+"\n") {
			t.Errorf("draft lacks function %s:\n%s", want, y)
		}
	}
	if strings.Contains(y, "tolerate") {
		t.Errorf("draft tolerates an anomaly of a well-formed UMAS session:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
	mr := p.Conduits[0].Rules[0].Modbus
	mr.Allow = slices.DeleteFunc(mr.Allow, func(a rules.ModbusAllow) bool { return slices.Contains(a.Function, "90/stop_plc") })
	got := denies(t, p, path)
	if len(got) == 0 || got[0] != strconv.Itoa(stop)+" function_not_allowed" {
		t.Errorf("without stop_plc: denies %v, want first %d function_not_allowed", got, stop)
	}
	for _, d := range got[1:] {
		if !strings.HasSuffix(d, " closed") {
			t.Errorf("without stop_plc: %s after the denied stop request", d)
		}
	}
}

// uaSession returns the frames of an OPC UA session (policy None) on flow
// fl: HEL/ACK, OPN, Read and its response.
func uaSession(fl *capture.TCPFlow, mode opcua.SecurityMode) [][]byte {
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://plc:48010"}
	ch := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2}
	frames := fl.Handshake()
	return append(frames,
		fl.Send(true, opcua.AppendHello(nil, hello)),
		fl.Send(false, opcua.AppendAcknowledge(nil, hello)),
		fl.Send(true, opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, mode)),
		fl.Send(false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)),
		fl.Send(true, opcua.AppendMessage(nil, opcua.ChunkFinal, ch, opcua.AppendReadRequest(nil, 2, opcua.Numeric(0, 2258)))),
		fl.Send(false, opcua.AppendMessage(nil, opcua.ChunkFinal, ch, opcua.AppendResponse(nil, opcua.ServiceRead, 2, 0))),
	)
}

// TestLearnByContent: OPC UA on port 48010 is recognised by its content
// and drafted as an inspected opcua rule on that port; Modbus on 5020
// given with --port likewise; an S7comm flow on TCP 102 is drafted as a
// port rule with a loud warning that it passes uninspected. Replaying
// the capture under the draft denies nothing.
func TestLearnByContent(t *testing.T) {
	hmi := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:50001")}
	ua := capture.Endpoint{MAC: capture.MAC(5), Addr: netip.MustParseAddrPort("192.0.2.30:48010")}
	frames := uaSession(capture.NewTCPFlow(hmi, ua), opcua.ModeNone)
	hmi.Addr = netip.MustParseAddrPort("192.0.2.130:50002")
	mb := capture.NewTCPFlow(hmi, capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.10:5020")})
	frames = append(frames, mb.Handshake()...)
	frames = append(frames,
		mb.Send(true, modbus.AppendRequest(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 2))),
		mb.Send(false, modbus.AppendResponse(nil, 1, 1, modbus.AppendReadRegistersResponse(nil, 3, []uint16{7, 8}))))
	hmi.Addr = netip.MustParseAddrPort("192.0.2.130:50003")
	s7 := capture.NewTCPFlow(hmi, capture.Endpoint{MAC: capture.MAC(6), Addr: netip.MustParseAddrPort("192.0.2.40:102")})
	frames = append(frames, s7.Handshake()...)
	frames = append(frames, s7.Send(true, []byte{0x03, 0x00, 0x00, 0x16, 0x11, 0xe0, 0x00, 0x00, 0x00, 0x01, 0x00, 0xc1, 0x02, 0x01, 0x00, 0xc2, 0x02, 0x01, 0x02, 0xc0, 0x01, 0x0a}))
	path := writeCapture(t, "content.pcap", frames)

	p, _, err := Learn(Options{Ports: map[uint16]protocols.Proto{5020: protocols.ProtoModbus}, PortsOnly: true}, path)
	if err != nil {
		t.Fatal(err)
	}
	if y, _ := rules.Marshal(p); strings.Contains(string(y), "opcua:") {
		t.Errorf("PortsOnly: OPC UA on 48010 inspected:\n%s", y)
	}
	p, _, err = Learn(Options{Ports: map[uint16]protocols.Proto{5020: protocols.ProtoModbus}}, path)
	if err != nil {
		t.Fatal(err)
	}
	yb, _ := rules.Marshal(p)
	y := string(yb)
	pol, err := rules.Parse("learned.yaml", yb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Compile(pol); err != nil {
		t.Fatalf("check: %v\n%s", err, y)
	}
	for _, want := range []string{
		"# opcua recognised by its content on port 48010 (not its standard port): inspected there",
		"ports: [48010]",
		"ports: [5020]",
		"# WARNING: S7comm (ISO-on-TCP, TPKT/COTP) on port 102 passes UNINSPECTED",
	} {
		if !strings.Contains(y, want) {
			t.Errorf("draft lacks %q:\n%s", want, y)
		}
	}
	if d := denies(t, pol, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}

// TestLearnOPCUAMidStream: an OPC UA session captured after its OPN
// (IPv6 loopback, non-standard port, server speaking first): learn says
// in a comment that the security mode was not seen, drafts no
// min_security_mode, and replaying the capture under the draft denies
// none of its requests.
func TestLearnOPCUAMidStream(t *testing.T) {
	for _, port := range []string{"4840", "48010"} {
		srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("[::1]:" + port)}
		cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("[::1]:53000")}
		fl := capture.NewTCPFlow(cli, srv)
		ch := func(id uint32) opcua.SecureHeader {
			return opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: id, RequestID: id}
		}
		frames := [][]byte{
			fl.Send(false, opcua.AppendMessage(nil, opcua.ChunkFinal, ch(9), opcua.AppendResponse(nil, opcua.ServiceRead, 9, 0))),
		}
		for id := uint32(10); id < 14; id++ {
			frames = append(frames,
				fl.Send(true, opcua.AppendMessage(nil, opcua.ChunkFinal, ch(id), opcua.AppendReadRequest(nil, id, opcua.Numeric(0, 2258)))),
				fl.Send(false, opcua.AppendMessage(nil, opcua.ChunkFinal, ch(id), opcua.AppendResponse(nil, opcua.ServiceRead, id, 0))))
		}
		path := writeCapture(t, "ua-midstream-"+port+".pcap", frames)
		y, p := learnYAML(t, path)
		if strings.Contains(y, "min_security_mode:") {
			t.Errorf("port %s: draft sets min_security_mode without an OPN:\n%s", port, y)
		}
		if !strings.Contains(y, "security mode unknown (no OPN seen") {
			t.Errorf("port %s: draft lacks the mid-stream comment:\n%s", port, y)
		}
		if d := denies(t, p, path); len(d) > 0 {
			t.Errorf("port %s: replay of the draft denies %v\n%s", port, d, y)
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

// TestLearnDNP3UDPOnOtherPort: DNP3 over UDP on a port that is not 20000
// is recognised by content and drafted as an inspected dnp3 rule.
func TestLearnDNP3UDPOnOtherPort(t *testing.T) {
	m := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:20005")}
	o := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:20005")}
	frames := [][]byte{
		capture.UDPDatagram(m, o, dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 0))),
		capture.UDPDatagram(o, m, dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncResponse, 0, false))),
		capture.UDPDatagram(m, o, dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 1))),
		capture.UDPDatagram(o, m, dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 1, dnp3.FuncResponse, 0, false))),
	}
	path := writeCapture(t, "dnp3-udp.pcap", frames)
	y, p := learnYAML(t, path)
	if !strings.Contains(y, "dnp3:") || !strings.Contains(y, "ports: [20005]") {
		t.Errorf("draft lacks an inspected dnp3 rule on 20005:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}
