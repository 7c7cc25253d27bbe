package learnrun

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/replay"
)

// learnPolicy learns from paths and returns the policy as `otgw check`
// sees it: Marshal, Parse, Compile.
func learnPolicy(t *testing.T, paths ...string) *rules.Policy {
	t.Helper()
	_, p := learnYAML(t, paths...)
	return p
}

func replayEvents(t *testing.T, p *rules.Policy, paths ...string) []*replay.Event {
	t.Helper()
	var evs []*replay.Event
	if _, err := replay.Run(replay.Options{Policy: p, OnEvent: func(e *replay.Event) { evs = append(evs, e) }}, paths...); err != nil {
		t.Fatalf("replay: %v", err)
	}
	return evs
}

// captures lists ../shared/pcaps and the generated scenario captures.
func captures(t *testing.T) []string {
	dir := testenv.Pcaps(t)
	var out []string
	for _, pat := range []string{filepath.Join(dir, "*.pcap"), filepath.Join(dir, "*.pcapng"), "../scenarios/*/input.pcap"} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

// residual is a deny that replaying a capture under the policy learned
// from that same capture still gives, with the reason no policy can
// prevent it. Anomalies are tolerated and every observed function,
// object, service, unit and port is allowed, so what remains is judged
// before any rule could allow it: a response the gateway cannot pair with
// a request it saw (rules allow responses only on a paired request, the
// defence against spoofed responses, scenario m18; on a connection the
// capture joins mid-stream, replay lets responses before the first paired
// one answer requests sent before the capture), bytes that cannot be
// framed as the protocol at all (no function or service to allow), and
// segments or fragments the TCP normaliser refuses (DESIGN.md). Each
// listed deny also closes its connection, so the rest of that connection
// is denied as "closed" (or "blocked"); the test checks that every such
// consequence follows a listed deny on the same connection.
type residual struct {
	frame  int
	reason string
	why    string
}

// Reasons shared by several entries.
const (
	whyNonProtocol = "bytes that are no PDU of the port's protocol: nothing to allow (evasion scenario)"
	whyMalformed   = "PDU too malformed to have a function or service a rule could allow"
	// A DNP3 request whose object walk stopped (a bad qualifier or range,
	// a function the parser cannot walk): the objects after that point are
	// unknown, so learn drafts no entry for it (one could only allow "any
	// object") and a rule that lists objects refuses it, tolerated anomaly
	// or not. Malformed on the wire.
	whyUnwalked = "DNP3 request whose objects could not all be read"
)

// residuals lists, per capture (shared captures by file name, scenarios by
// folder name), every deny expected after learn->replay: exactly these and
// nothing else.
var residuals = map[string][]residual{
	// Real captures in ../shared/pcaps.
	"dnp3_digitalbond_test_data_part1.pcap": {
		{19, "malformed:bad_start", whyMalformed + ": request whose link frame has no 0x0564 start (bad_start)"},
		{154, "object_not_allowed", whyUnwalked + " (bad_qualifier after g60v2-v4)"},
		{163, "function_not_allowed", whyUnwalked + " (bad_qualifier after g60v2, g1v7, g60v4)"},
		{174, "function_not_allowed", whyUnwalked + " (bad_qualifier after g60v2, g1v7, g60v4)"},
	},
	"dnp3_openics_RequestLinkStatus.pcap": {
		{6, "malformed:link_crc", whyMalformed + ": link status answer (link layer only) with a link CRC error (link_crc)"},
	},
	"dnp3_suricata_too-long-reassembly-response.pcap": {
		{20, "malformed:reassembly_overflow", whyMalformed + ": response fragments overflowing transport reassembly (reassembly_overflow, Suricata test case)"},
	},
	"modbus_digitalbond_test_data_part1.pcap": {
		{76, "malformed:non_modbus", whyMalformed + ": request that is no Modbus/TCP ADU (non_modbus)"},
	},
	// Scenario captures (simulate/scenarios/<case>/input.pcap): the
	// evasions and malformed cases must still be denied.
	"d12-non-dnp3":           {{4, "malformed:bad_start", whyNonProtocol}},
	"d13-malformed-response": {{5, "malformed:data_crc", whyMalformed + ": response with a transport CRC error (data_crc)"}},
	"d14-parser-anomalies": {
		{6, "malformed:link_crc", whyMalformed + ": request with a link CRC error (link_crc)"},
		{12, "function_not_allowed", whyUnwalked + " (function code 112, which IEEE 1815 does not define)"},
	},
	"e10-urgent-in-mbap":    {{6, "evasion:tcp_urgent", "evasion: urgent data on an inspected conduit"}},
	"e11-urgent-after-unit": {{6, "evasion:tcp_urgent", "evasion: urgent data on an inspected conduit"}},
	"e12-udp-reverse":       {{3, "modbus_udp_not_inspected", "Modbus over UDP is never allowed uninspected"}},
	"e03-overlap-different": {{5, "evasion:tcp_overlap_mismatch", "evasion: retransmission overlapping inspected bytes with different content"}},
	"e04-out-of-order":      {{4, "out_of_order", "evasion: out-of-order segment to an inspected port"}},
	"e05-ip-fragments": {
		{4, "fragment", "evasion: IP fragment to an inspected port"},
		{5, "fragment", "evasion: IP fragment to an inspected port"},
	},
	// Bytes that cannot be framed as the port's protocol are denied as
	// malformed:<anomaly>, whatever a rule tolerates.
	"e07-non-protocol-502":   {{4, "malformed:non_modbus", whyNonProtocol}},
	"e08-non-protocol-20000": {{4, "malformed:bad_start", whyNonProtocol}},
	"e09-non-protocol-4840":  {{4, "malformed:unknown_message_type", whyNonProtocol}},
	"m08-illegal-size":       {{6, "malformed:non_modbus", whyMalformed + ": MBAP length beyond the ADU maximum (non_modbus)"}},
	"m09-non-modbus-pid":     {{6, "malformed:non_modbus", whyMalformed + ": MBAP protocol id not 0 (non_modbus)"}},
	"m10-incorrect-length":   {{6, "address_out_of_range", "a read whose MBAP length ends the PDU before its address: what it reads is unknown, so no rule allows it, even tolerating truncated"}},
	"u01-malformed": {
		{4, "malformed:unknown_message_type", whyMalformed + ": unknown UA-TCP message type"},
		{8, "malformed:invalid_message_size", whyMalformed + ": UA-TCP message size out of bounds"},
	},
}

// captureKey names a capture as residuals does.
func captureKey(path string) string {
	if filepath.Base(path) == "input.pcap" {
		return filepath.Base(filepath.Dir(path))
	}
	if filepath.Base(filepath.Dir(path)) == "testdata" {
		return "testdata/" + filepath.Base(path)
	}
	return filepath.Base(path)
}

// connKey identifies a connection whichever way the event points.
func connKey(e *replay.Event) [2]netip.AddrPort {
	a, b := e.Src, e.Dst
	if b.Addr().Less(a.Addr()) || b.Addr() == a.Addr() && b.Port() < a.Port() {
		a, b = b, a
	}
	return [2]netip.AddrPort{a, b}
}

// TestLearnThenReplayDeniesNothing is the guarantee of issue 4 on every
// capture in ../shared/pcaps, testdata and the scenarios: the learned
// policy passes `otgw check` and replaying the same capture denies nothing
// but the residuals listed above, each exactly once at its frame, plus the
// frames of the connections those denies closed.
func TestLearnThenReplayDeniesNothing(t *testing.T) {
	files, total, roots, consequences := 0, 0, 0, 0
	var shared [3]int // captures in ../shared/pcaps: files, root denies, closed frames
	clean := 0        // shared captures replayed without any deny
	byReason := map[string]int{}
	visited := map[string]bool{}
	for _, path := range captures(t) {
		files++
		key := captureKey(path)
		visited[key] = true
		want := map[[2]string]string{}
		for _, r := range residuals[key] {
			want[[2]string{strconv.Itoa(r.frame), r.reason}] = r.why
		}
		pol := learnPolicy(t, path)
		evs := replayEvents(t, pol, path)
		total += len(evs)
		nr, nc := roots, consequences
		closedBy := map[[2]netip.AddrPort]bool{}
		for _, e := range evs {
			if e.Verdict != "deny" {
				t.Errorf("%s: frame %d: verdict %q (%s), want only denies in enforce mode", key, e.Frame, e.Verdict, e.Reason)
				continue
			}
			// A connection a listed deny closed: its later frames, and,
			// once its closed flow has expired (the engine never reuses
			// an expired flow), its mid-stream frames that find no flow.
			if e.Reason == "closed" || e.Reason == "blocked" || e.Reason == "no_flow" && closedBy[connKey(e)] {
				consequences++
				if !closedBy[connKey(e)] {
					t.Errorf("%s: frame %d: %s %s->%s with no listed deny before it on that connection", key, e.Frame, e.Reason, e.Src, e.Dst)
				}
				continue
			}
			k := [2]string{strconv.Itoa(e.Frame), e.Reason}
			if _, ok := want[k]; !ok {
				t.Errorf("%s: frame %d: false deny %s %s %v", key, e.Frame, e.Proto, e.Reason, e.Fields)
				continue
			}
			delete(want, k)
			roots++
			closedBy[connKey(e)] = true
			byReason[e.Reason]++
			if a, ok := strings.CutPrefix(e.Reason, "malformed:"); ok && tolerates(pol, a) {
				t.Errorf("%s: frame %d: residual %s although the draft tolerates %s: learn wrote what enforcement does not honour", key, e.Frame, e.Reason, a)
			}
		}
		for k, why := range want {
			t.Errorf("%s: frame %s: want deny %s (%s), got none", key, k[0], k[1], why)
		}
		if filepath.Dir(path) == filepath.Clean(testenv.Pcaps(t)) {
			if roots == nr && consequences == nc {
				clean++
			}
			shared[0]++
			shared[1] += roots - nr
			shared[2] += consequences - nc
		}
	}
	for key := range residuals {
		if !visited[key] {
			t.Errorf("%s: listed in residuals but no such capture was replayed", key)
		}
	}
	t.Logf("%d captures: %d deny events after learn->replay: %d listed residual denies, %d frames of the connections they closed; of these, %d shared captures: %d residual denies, %d closed frames",
		files, total, roots, consequences, shared[0], shared[1], shared[2])
	t.Logf("shared captures clean after learn->replay: %d of %d; residual denies by reason (all captures): %v", clean, shared[0], byReason)
}

// tolerates reports whether any rule or conduit of p tolerates anomaly.
func tolerates(p *rules.Policy, anomaly string) bool {
	for _, c := range p.Conduits {
		lists := [][]string{c.Tolerate}
		for _, r := range c.Rules {
			switch {
			case r.Modbus != nil:
				lists = append(lists, r.Modbus.Tolerate)
			case r.DNP3 != nil:
				lists = append(lists, r.DNP3.Tolerate)
			case r.OPCUA != nil:
				lists = append(lists, r.OPCUA.Tolerate)
			}
		}
		for _, l := range lists {
			if slices.Contains(l, anomaly) {
				return true
			}
		}
	}
	return false
}

// TestLearnedPolicyDeniesOneExtraAction appends, as a second capture file
// after the end of each capture, one new connection from a learned client
// carrying one action that was never observed; replaying both files must
// deny exactly that action on top of what the capture alone gives.
func TestLearnedPolicyDeniesOneExtraAction(t *testing.T) {
	tmp := t.TempDir()
	n := 0
	for _, path := range captures(t) {
		pol := learnPolicy(t, path)
		extra, reason, ok := forbidden(t, pol, path, tmp)
		if !ok {
			continue
		}
		n++
		base := replayEvents(t, pol, path)
		both := replayEvents(t, pol, path, extra)
		var added []*replay.Event
		for _, e := range both {
			if e.File == filepath.Base(extra) {
				added = append(added, e)
			}
		}
		if len(both) != len(base)+1 || len(added) != 1 || !strings.HasPrefix(added[0].Reason, reason) {
			var got []string
			for _, e := range added {
				got = append(got, e.Reason)
			}
			t.Errorf("%s: base %d events, with extra action %d; extra-file events %v, want exactly one %s",
				filepath.Base(path), len(base), len(both), got, reason)
		}
	}
	t.Logf("extra forbidden action checked on %d captures", n)
}

// forbidden writes a one-connection capture starting one second after the
// capture at path ends, with an action the learned policy does not allow.
func forbidden(t *testing.T, pol *rules.Policy, path, dir string) (string, string, bool) {
	var end time.Time
	if err := capture.ReadFrames(path, func(f *capture.Frame) error {
		if f.Time.After(end) {
			end = f.Time
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ip := map[string]netip.Addr{}
	for _, a := range pol.Assets {
		ip[a.Name] = netip.MustParseAddr(a.IP)
	}
	for _, c := range pol.Conduits {
		from, to := ip[c.From[0]], ip[c.To[0]]
		if !from.IsValid() || !to.IsValid() || from == to || len(c.Rules) != 1 {
			continue
		}
		r := c.Rules[0]
		var payload []byte
		var port uint16
		reason := ""
		switch {
		case r.Modbus != nil:
			unit := uint8(1)
			if len(r.Modbus.Units) > 0 {
				unit = uint8(atoi(r.Modbus.Units[0]))
			}
			for _, a := range r.Modbus.Allow {
				for _, f := range a.Function {
					if f == "8/4" {
						return "", "", false
					}
				}
			}
			payload = modbus.AppendRequest(nil, 0x7777, unit, modbus.AppendDiagnostics(nil, 4, []uint16{0}))
			port, reason = 502, "function_not_allowed"
		case r.DNP3 != nil && len(r.DNP3.Masters) > 0 && len(r.DNP3.Outstations) > 0:
			for _, a := range r.DNP3.Allow {
				for _, f := range a.Function {
					if f == "activate_config" || f == "31" {
						return "", "", false
					}
				}
			}
			apdu := dnp3.AppendRequestHeader(nil, 1, dnp3.FunctionCode(31))
			payload = dnp3.AppendLinkFrames(nil, 0xC4, uint16(atoi(r.DNP3.Outstations[0])), uint16(atoi(r.DNP3.Masters[0])), apdu)
			port, reason = 20000, "function_not_allowed"
		case r.TCP != nil:
			port, reason = 1, "port_not_allowed"
		default:
			continue
		}
		if (r.Modbus != nil && len(r.Modbus.Ports) > 0) || (r.DNP3 != nil && len(r.DNP3.Ports) > 0) {
			continue
		}
		out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))+"-extra.pcap")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		w, err := capture.NewWriter(f)
		if err != nil {
			t.Fatal(err)
		}
		w.Time = end.Add(time.Second)
		fl := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.AddrPortFrom(from, 61000)},
			capture.Endpoint{MAC: capture.MAC(2), Addr: netip.AddrPortFrom(to, port)})
		if payload == nil {
			_ = w.WriteFrame(fl.Segment(true, fl.NextSeq(true), 0, capture.TCPFlags{SYN: true}, nil))
		} else {
			for _, fr := range fl.Handshake() {
				_ = w.WriteFrame(fr)
			}
			_ = w.WriteFrame(fl.Send(true, payload))
		}
		f.Close()
		return out, reason, true
	}
	return "", "", false
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

var (
	genMaster = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40001")}
	genOut    = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:20000")}
)

// learnYAML learns from paths and returns the draft as written and as
// `otgw check` reads it back (it must compile).
func learnYAML(t *testing.T, paths ...string) (string, *rules.Policy) {
	t.Helper()
	p, _, err := Learn(learn.Options{}, paths...)
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
	path := pcaptest.Write(t, "dnp3-g255-linkcrc.pcap", frames)

	y, p := learnYAML(t, path)
	for _, bad := range []string{"g255", "link_crc"} {
		for _, line := range strings.Split(y, "\n") {
			code, _, _ := strings.Cut(line, "#")
			if strings.Contains(code, bad) {
				t.Errorf("draft names %s outside a comment: %q", bad, line)
			}
		}
	}
	for _, want := range []string{"REVIEW: seen but cannot be allowed: dnp3 write request whose objects could not all be read (read: g255v0", "REVIEW: observed anomaly that no policy can allow: link_crc"} {
		if !strings.Contains(y, want) {
			t.Errorf("draft lacks the review comment %q:\n%s", want, y)
		}
	}
	got := strings.Join(denies(t, p, path), ", ")
	if want := "6 function_not_allowed, 7 closed, 11 malformed:link_crc"; got != want {
		t.Errorf("replay of the draft denies [%s], want [%s]\n%s", got, want, y)
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
	path := pcaptest.Write(t, "l2.pcap", frames)
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
// (`function: 90/<name>`) and, for its 261-byte ADUs, `tolerate:
// [long_adu]` with the review comment saying what that lets through.
// Replaying the session under the draft denies nothing; the draft without
// the tolerate entry denies the first long ADU by name
// (malformed:long_adu) and nothing before it; and the draft without
// stop_plc denies exactly the stop request, leaving the session's earlier
// PDUs, long ones included, alone (no non_modbus, no reset before it).
func TestLearnUMASSession(t *testing.T) {
	frames, stop := umasSession()
	path := pcaptest.Write(t, "umas.pcap", frames)
	y, p := learnYAML(t, path)
	for _, want := range []string{"90/read_id", "90/take_plc_reservation", "90/upload_block", "90/stop_plc", "90/start_plc"} {
		if !strings.Contains(y, "function: "+want+"\n") {
			t.Errorf("draft lacks function %s:\n%s", want, y)
		}
	}
	mr := p.Conduits[0].Rules[0].Modbus
	if !slices.Equal(mr.Tolerate, []string{"long_adu"}) {
		t.Errorf("draft tolerates %v, want [long_adu]:\n%s", mr.Tolerate, y)
	}
	if !regexp.MustCompile(`# observed anomaly: review before enforcing: tolerate long_adu: Modbus ADUs over the 260-byte limit.*: seen 3 times`).MatchString(y) {
		t.Errorf("draft lacks the long_adu review comment with its count:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
	mr.Tolerate = nil
	firstLong := 0
	for i, f := range frames {
		if len(f) > 14+20+20+modbus.MaxADULen {
			firstLong = i + 1
			break
		}
	}
	if got := denies(t, p, path); len(got) == 0 || got[0] != strconv.Itoa(firstLong)+" malformed:long_adu" {
		t.Errorf("without tolerate: denies %v, want first %d malformed:long_adu", got, firstLong)
	}
	mr.Tolerate = []string{"long_adu"}
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
	path := pcaptest.Write(t, "content.pcap", frames)

	p, _, err := Learn(learn.Options{Ports: map[uint16]protocols.Proto{5020: protocols.ProtoModbus}, PortsOnly: true}, path)
	if err != nil {
		t.Fatal(err)
	}
	if y, _ := rules.Marshal(p); strings.Contains(string(y), "opcua:") {
		t.Errorf("PortsOnly: OPC UA on 48010 inspected:\n%s", y)
	}
	p, _, err = Learn(learn.Options{Ports: map[uint16]protocols.Proto{5020: protocols.ProtoModbus}}, path)
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
		path := pcaptest.Write(t, "ua-midstream-"+port+".pcap", frames)
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
	path := pcaptest.Write(t, "dnp3-udp.pcap", frames)
	y, p := learnYAML(t, path)
	if !strings.Contains(y, "dnp3:") || !strings.Contains(y, "ports: [20005]") {
		t.Errorf("draft lacks an inspected dnp3 rule on 20005:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}

// TestLearnDNP3OutstationConnects: the outstation opens the TCP
// connection to the master's port 20000 (DNP3 "dual endpoint"/reverse
// connection). Directions come from the DIR bit; replaying the capture
// under its draft denies nothing.
func TestLearnDNP3OutstationConnects(t *testing.T) {
	out := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.10:41000")}
	master := capture.Endpoint{MAC: capture.MAC(4), Addr: netip.MustParseAddrPort("192.0.2.130:20000")}
	fl := capture.NewTCPFlow(out, master)
	frames := fl.Handshake()
	frames = append(frames,
		fl.Send(true, dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncUnsolicitedResp, 0, true))),
		fl.Send(false, dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendConfirm(nil, 0, true))),
		fl.Send(false, dnp3.AppendLinkFrames(nil, 0xC4, 10, 1, dnp3.AppendReadClass0123(nil, 1))),
		fl.Send(true, dnp3.AppendLinkFrames(nil, 0x44, 1, 10, dnp3.AppendResponseHeader(nil, 1, dnp3.FuncResponse, 0, false))),
	)
	path := pcaptest.Write(t, "dnp3-reverse.pcap", frames)
	y, p := learnYAML(t, path)
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}

// TestLearnWarnsMidStreamUninspected: an IEC 60870-5-104 connection the
// capture joins after it opened, the server (port 2404) sending first: the
// draft's port rule warns that the protocol passes uninspected and that
// the direction is a guess.
func TestLearnWarnsMidStreamUninspected(t *testing.T) {
	scada := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:54768")}
	rtu := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.20:2404")}
	fl := capture.NewTCPFlow(scada, rtu)
	frames := [][]byte{
		fl.Send(false, []byte{0x68, 0x04, 0x43, 0x00, 0x00, 0x00}), // TESTFR act
		fl.Send(true, []byte{0x68, 0x04, 0x83, 0x00, 0x00, 0x00}),  // TESTFR con
	}
	path := pcaptest.Write(t, "iec104-midstream.pcap", frames)
	y, p := learnYAML(t, path)
	if !strings.Contains(y, "# WARNING: IEC 60870-5-104 (port 2404) passes UNINSPECTED, and the capture joined these connections after they opened") {
		t.Errorf("draft lacks the warning:\n%s", y)
	}
	if d := denies(t, p, path); len(d) > 0 {
		t.Errorf("replay of the draft denies %v\n%s", d, y)
	}
}
