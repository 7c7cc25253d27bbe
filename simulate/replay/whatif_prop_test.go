package replay

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// TestWhatIfEqualsMonitor is issue 14's property: for random policies
// and captures (Modbus, DNP3 and OPC UA connections built with the
// protocols' encoders, pipelined and split PDUs, responses or none,
// traffic no conduit or port allows, any deny action, conduits in either
// mode), the PDUs and flows an enforce-mode what-if replay reports as
// refused are exactly those a monitor-mode replay of the same frames
// alerts on: same frames, reasons, conduits, rules, endpoints and PDU
// fields. And the what-if adds to the events of the gateway on the wire
// only refusals marked after_reset, each standing in for the normaliser
// drop of its frame. The lazy what-if shadow gives the eager one's
// events and report, byte for byte.
func TestWhatIfEqualsMonitor(t *testing.T) {
	cases := 300
	if testing.Short() {
		cases = 60
	}
	r := rand.New(rand.NewPCG(14, 6))
	dir := t.TempDir()
	var total, afterReset, conseq int
	var lazy lazyStats
	lazyObserve = func(s lazyStats) { lazy.add(s) }
	defer func() { lazyObserve = nil }()
	for n := range cases {
		pp := randomPolicy(r)
		frames := randomCapture(r)
		path := filepath.Join(dir, fmt.Sprintf("case%d.pcap", n))
		pcaptest.WriteFile(t, path, frames)
		ctx := fmt.Sprintf("case %d (%d frames)", n, len(frames))

		_, wire := replayEvents(t, pp.yaml(false), path, false)
		got, whatIf := replayEvents(t, pp.yaml(false), path, true)
		mon, monEvs := replayEvents(t, pp.yaml(true), path, false)

		// The lazy what-if shadow (lazy.go) gives the eager one's events
		// and report, byte for byte.
		shadowLazy = false
		eager, eagerEvs := replayEvents(t, pp.yaml(false), path, true)
		shadowLazy = true
		if d := sameRun(got, whatIf, eager, eagerEvs); d != "" {
			t.Fatalf("%s: the lazy shadow's %s\npolicy:\n%s", ctx, d, pp.yaml(false))
		}

		// Refused (what-if, enforce) == alerted (monitor).
		var refused, alerts []string
		for _, e := range whatIf {
			if e.Refused {
				refused = append(refused, refusalKey(e))
			}
		}
		for _, e := range monEvs {
			switch {
			case strings.HasPrefix(e.Reason, gateway.ReasonDetectPrefix):
			case e.Verdict == "alert":
				alerts = append(alerts, refusalKey(e))
			default:
				t.Fatalf("%s: monitor replay denied %s at frame %d\npolicy:\n%s", ctx, e.Reason, e.Frame, pp.yaml(true))
			}
		}
		if d := diffMultisets(refused, alerts); d != "" {
			t.Fatalf("%s: what-if refusals differ from the monitor alerts:\n%s\npolicy:\n%s", ctx, d, pp.yaml(false))
		}
		if mon.PDUsAlerted == 0 && len(alerts) > 0 && got.WhatIf.Requests+got.WhatIf.Responses > 0 {
			t.Fatalf("%s: PDU refusals without monitor PDU alerts", ctx)
		}

		// The wire's events are kept; what the what-if adds is marked.
		var kept, added []string
		afterFrames := map[string]bool{}
		for _, e := range whatIf {
			if e.AfterReset {
				afterFrames[frameKey(e)] = true
				continue
			}
			kept = append(kept, eventKey(e))
		}
		var wireKept []string
		for _, e := range wire {
			if afterFrames[frameKey(e)] && e.Rule == "" && e.Fields == nil && e.Verdict == "deny" {
				added = append(added, e.Reason) // the normaliser drop a refusal stands in for
				continue
			}
			wireKept = append(wireKept, eventKey(e))
		}
		if len(added) > len(afterFrames) {
			t.Fatalf("%s: %d normaliser drops replaced on %d frames with after_reset refusals", ctx, len(added), len(afterFrames))
		}
		if d := diffMultisets(kept, wireKept); d != "" {
			t.Fatalf("%s: what-if changed the wire's events:\n%s\npolicy:\n%s", ctx, d, pp.yaml(false))
		}

		w := got.WhatIf
		if w.Refused != len(refused) || w.OnWire+w.AfterReset != w.Refused || w.Requests+w.Responses+w.Flows != w.Refused {
			t.Fatalf("%s: WhatIf counts %+v for %d refusals", ctx, *w, len(refused))
		}
		sumN := 0
		for _, g := range w.ByFunction {
			sumN += g.N
		}
		if sumN != w.Refused {
			t.Fatalf("%s: groups add up to %d, refused %d", ctx, sumN, w.Refused)
		}
		total += w.Refused
		afterReset += w.AfterReset
		conseq += w.Consequences
	}
	t.Logf("%d cases: %d refusals, %d of them after a reset; %d denies following from enforcement alone", cases, total, afterReset, conseq)
	if afterReset == 0 || total == afterReset {
		t.Errorf("the generator exercised no reset (%d refusals, %d after reset)", total, afterReset)
	}
	t.Logf("lazy shadows: %+v", lazy)
	if lazy.skipped == 0 || lazy.caught == 0 {
		t.Errorf("the generator exercised no lazy skip or catch-up: %+v", lazy)
	}
}

// sameRun returns what differs between two replays' events (JSON lines)
// and report.json, "" when nothing does.
func sameRun(a *Report, aEvs []*Event, b *Report, bEvs []*Event) string {
	var ae, be []byte
	for _, e := range aEvs {
		ae = append(append(ae, e.JSON()...), '\n')
	}
	for _, e := range bEvs {
		be = append(append(be, e.JSON()...), '\n')
	}
	if string(ae) != string(be) {
		return fmt.Sprintf("events differ from the eager shadow's:\n%s\nvs\n%s", ae, be)
	}
	aj, err1 := json.Marshal(a)
	bj, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil || string(aj) != string(bj) {
		return fmt.Sprintf("report.json differs from the eager shadow's (%v %v)", err1, err2)
	}
	return ""
}

// refusalKey identifies a refusal whatever the mode that reported it.
func refusalKey(e *Event) string {
	f, _ := json.Marshal(e.Fields)
	return fmt.Sprintf("%s:%d %s %s/%s %s %s>%s %s", e.File, e.Frame, e.Reason, e.Conduit, e.Rule, e.Proto, e.Src, e.Dst, f)
}

// eventKey is refusalKey with the verdict, mode and actions.
func eventKey(e *Event) string {
	return refusalKey(e) + " " + e.Verdict + " " + e.Mode + " " + e.Action + " " + e.DenyAction
}

func frameKey(e *Event) string { return fmt.Sprintf("%s:%d", e.File, e.Frame) }

// diffMultisets lists what a and b do not share ("" when equal).
func diffMultisets(a, b []string) string {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	var out []string
	for k, v := range m {
		switch {
		case v > 0:
			out = append(out, fmt.Sprintf("  only first (%d): %s", v, k))
		case v < 0:
			out = append(out, fmt.Sprintf("  only second (%d): %s", -v, k))
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("  ... %d more", len(out)-20))
	}
	return strings.Join(out, "\n")
}

// ---- random policies ----

// Hosts: two HMIs (assets) and a stranger in the north zone; a PLC, an
// RTU and an OPC UA server (assets) and an unknown host in the south.
var (
	propHMI      = netip.MustParseAddr("192.0.2.130")
	propEng      = netip.MustParseAddr("192.0.2.131")
	propStranger = netip.MustParseAddr("192.0.2.200")
	propPLC      = netip.MustParseAddr("192.0.2.10")
	propRTU      = netip.MustParseAddr("192.0.2.20")
	propOPC      = netip.MustParseAddr("192.0.2.30")
	propOther    = netip.MustParseAddr("192.0.2.40")
)

type propConduit struct {
	from, to, mode, action string
	rules                  []string
}

type propPolicy struct {
	mode, action string
	conduits     []propConduit
}

func pick[T any](r *rand.Rand, s ...T) T { return s[r.IntN(len(s))] }

// subset returns a random non-empty subset of s, in order.
func subset(r *rand.Rand, s []string) []string {
	var out []string
	for _, x := range s {
		if r.IntN(2) == 0 {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		out = append(out, pick(r, s...))
	}
	return out
}

func randomPolicy(r *rand.Rand) *propPolicy {
	p := &propPolicy{mode: "enforce", action: pick(r, "drop", "reset", "reply")}
	if r.IntN(8) == 0 {
		p.mode = "monitor"
	}
	for range 1 + r.IntN(4) {
		c := propConduit{from: pick(r, "hmi", "eng", "sup", "[hmi, eng]"), to: pick(r, "plc", "rtu", "opc", "cell", "[plc, rtu]")}
		if r.IntN(5) == 0 {
			c.mode = pick(r, "monitor", "enforce")
		}
		if r.IntN(4) == 0 {
			c.action = pick(r, "drop", "reset", "reply")
		}
		mbRead := fmt.Sprintf("{ read: holding 0-%d }", r.IntN(120))
		mbAllow := subset(r, []string{mbRead, "{ read: coils 0-15 }", "{ read: input 0-50 }",
			fmt.Sprintf("{ write: holding %d-%d }", 40, 40+r.IntN(8)), "{ write: coils 0-3 }", "{ function: 43/14 }"})
		units := pick(r, "units: [1], ", "units: [1, 2], ", "")
		dnAllow := subset(r, []string{"{ function: read, objects: [g60, g1] }", "{ function: [select, operate], objects: [g12v1] }",
			"{ function: direct_operate, objects: [g41v1] }", "{ function: confirm }", "{ function: [enable_unsolicited, disable_unsolicited] }"})
		uaAllow := subset(r, []string{"{ service: [read, browse] }", `{ service: write, nodes: ["ns=2;s=A"] }`})
		uaMin := pick(r, "", "min_security_mode: sign, ")
		all := []string{
			"modbus: { " + units + "allow: [ " + strings.Join(mbAllow, ", ") + " ] }",
			"dnp3: { masters: [1], outstations: [10], allow: [ " + strings.Join(dnAllow, ", ") + " ] }",
			"opcua: { " + uaMin + "allow: [ " + strings.Join(uaAllow, ", ") + " ] }",
			"tcp: { ports: [22] }",
		}
		c.rules = subset(r, all)
		p.conduits = append(p.conduits, c)
	}
	return p
}

// yaml renders the policy; monitor puts the policy and every conduit in
// monitor mode (written as a user would, not through WithMode).
func (p *propPolicy) yaml(monitor bool) string {
	var b strings.Builder
	mode := p.mode
	if monitor {
		mode = "monitor"
	}
	fmt.Fprintf(&b, `version: 1
name: prop
mode: %s
action: %s
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  eng: { ip: 192.0.2.131, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
  rtu: { ip: 192.0.2.20, zone: cell }
  opc: { ip: 192.0.2.30, zone: cell }
conduits:
`, mode, p.action)
	for i, c := range p.conduits {
		fmt.Fprintf(&b, "  - name: c%d\n    from: %s\n    to: %s\n", i+1, c.from, c.to)
		switch {
		case monitor:
			b.WriteString("    mode: monitor\n")
		case c.mode != "":
			fmt.Fprintf(&b, "    mode: %s\n", c.mode)
		}
		if c.action != "" {
			fmt.Fprintf(&b, "    action: %s\n", c.action)
		}
		b.WriteString("    rules:\n")
		for _, rl := range c.rules {
			fmt.Fprintf(&b, "      - %s\n", rl)
		}
	}
	return b.String()
}

// ---- random captures ----

// propConn builds the frames of one TCP connection.
type propConn struct {
	f      *capture.TCPFlow
	frames [][]byte
	dnSeq  [2]uint8 // DNP3 transport sequence per direction
}

func (c *propConn) send(client bool, b []byte) { c.frames = append(c.frames, c.f.Send(client, b)) }

// sendPDUs sends one or more PDUs from one side: in one segment
// (pipelined), split across two, or one per segment.
func (c *propConn) sendPDUs(r *rand.Rand, client bool, pdus ...[]byte) {
	switch {
	case len(pdus) > 1 && r.IntN(2) == 0:
		var all []byte
		for _, p := range pdus {
			all = append(all, p...)
		}
		c.send(client, all)
	default:
		for _, p := range pdus {
			if len(p) > 2 && r.IntN(8) == 0 {
				k := 1 + r.IntN(len(p)-1)
				c.send(client, p[:k])
				c.send(client, p[k:])
				continue
			}
			c.send(client, p)
		}
	}
}

func randomCapture(r *rand.Rand) [][]byte {
	var conns []*propConn
	for i := range 1 + r.IntN(5) {
		client := pick(r, propHMI, propHMI, propEng, propStranger)
		server := pick(r, propPLC, propPLC, propRTU, propOPC, propOther)
		port := map[netip.Addr]uint16{propPLC: 502, propRTU: 20000, propOPC: 4840, propOther: 502}[server]
		if r.IntN(10) == 0 {
			port = pick(r, uint16(22), uint16(8080))
		}
		cl := capture.Endpoint{MAC: capture.MAC(byte(client.As4()[3])), Addr: netip.AddrPortFrom(client, uint16(40000+i))}
		sv := capture.Endpoint{MAC: capture.MAC(byte(server.As4()[3])), Addr: netip.AddrPortFrom(server, port)}
		c := &propConn{f: capture.NewTCPFlow(cl, sv)}
		c.frames = append(c.frames, c.f.Handshake()...)
		switch port {
		case 502:
			modbusTalk(r, c)
		case 20000:
			dnp3Talk(r, c)
		case 4840:
			opcuaTalk(r, c)
		default:
			c.send(true, []byte("SSH-2.0-x\r\n"))
			c.send(false, []byte("SSH-2.0-y\r\n"))
		}
		conns = append(conns, c)
	}
	// Interleave the connections, each in its own order.
	var out [][]byte
	for len(conns) > 0 {
		i := r.IntN(len(conns))
		c := conns[i]
		out = append(out, c.frames[0])
		c.frames = c.frames[1:]
		if len(c.frames) == 0 {
			conns = append(conns[:i], conns[i+1:]...)
		}
	}
	return out
}

func modbusTalk(r *rand.Rand, c *propConn) {
	tid := uint16(0)
	for range 1 + r.IntN(12) {
		var reqs, resps [][]byte
		for range 1 + r.IntN(2) {
			tid++
			unit := pick(r, uint8(1), uint8(1), uint8(2))
			var pdu, resp []byte
			addr := uint16(r.IntN(130))
			switch r.IntN(7) {
			case 0:
				qty := uint16(1 + r.IntN(10))
				pdu = modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, addr, qty)
				resp = modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, make([]uint16, qty))
			case 1:
				pdu = modbus.AppendAddrQty(nil, modbus.FuncReadCoils, uint16(r.IntN(20)), 4)
				resp = modbus.AppendReadBitsResponse(nil, modbus.FuncReadCoils, make([]bool, 4))
			case 2:
				pdu = modbus.AppendWriteSingleRegister(nil, uint16(38+r.IntN(12)), uint16(r.IntN(2000)))
				resp = pdu
			case 3:
				pdu = modbus.AppendWriteMultipleRegisters(nil, uint16(38+r.IntN(12)), []uint16{1, 2})
				resp = pdu[:5]
			case 4:
				pdu = modbus.AppendWriteSingleCoil(nil, uint16(r.IntN(6)), r.IntN(2) == 0)
				resp = pdu
			case 5:
				pdu = modbus.AppendReadDeviceID(nil, 1, 0)
				resp = modbus.AppendReadDeviceIDResponse(nil, 1, 1, 0, []string{"otgw", "prop", "1"})
			default:
				pdu = modbus.AppendAddrQty(nil, modbus.FuncReadInputRegisters, addr, 2)
				resp = modbus.AppendException(nil, modbus.FuncReadInputRegisters, 2)
			}
			reqs = append(reqs, modbus.AppendRequest(nil, tid, unit, pdu))
			resps = append(resps, modbus.AppendResponse(nil, tid, unit, resp))
		}
		c.sendPDUs(r, true, reqs...)
		if r.IntN(6) != 0 {
			c.sendPDUs(r, false, resps...)
		}
	}
}

func (c *propConn) dnp3(client bool, apdu []byte) []byte {
	d := 1
	ctrl, dst, src := uint8(0x44), uint16(1), uint16(10)
	if client {
		d, ctrl, dst, src = 0, 0xC4, 10, 1
	}
	b, next := dnp3.AppendLinkFramesSeq(nil, ctrl, dst, src, c.dnSeq[d], apdu)
	c.dnSeq[d] = next
	return b
}

func dnp3Talk(r *rand.Rand, c *propConn) {
	for i := range 1 + r.IntN(10) {
		seq := uint8(i % 16)
		var apdu []byte
		switch r.IntN(6) {
		case 0, 1:
			apdu = dnp3.AppendReadClass0123(nil, seq)
		case 2:
			apdu = dnp3.AppendCROB(nil, seq, pick(r, dnp3.FuncSelect, dnp3.FuncOperate, dnp3.FuncDirectOperate), uint16(r.IntN(4)), dnp3.CROB{Code: dnp3.CROBLatchOn, Count: 1})
		case 3:
			apdu = dnp3.AppendAnalogOutput(nil, seq, dnp3.FuncDirectOperate, uint16(r.IntN(4)), int32(r.IntN(100)))
		case 4:
			apdu = dnp3.AppendUnsolicited(nil, seq, r.IntN(2) == 0)
		default:
			apdu = dnp3.AppendRequestHeader(nil, seq, pick(r, dnp3.FuncColdRestart, dnp3.FuncWarmRestart, dnp3.FuncStopAppl))
		}
		c.sendPDUs(r, true, c.dnp3(true, apdu))
		if r.IntN(6) != 0 {
			c.sendPDUs(r, false, c.dnp3(false, dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)))
		}
	}
}

func opcuaTalk(r *rand.Rand, c *propConn) {
	h := opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	c.send(true, opcua.AppendHello(nil, h))
	c.send(false, opcua.AppendAcknowledge(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535}))
	c.send(true, opcua.AppendOpenRequest(nil, opcua.SecureHeader{RequestID: 1, SequenceNumber: 1}, pick(r, opcua.ModeNone, opcua.ModeNone, opcua.ModeSign)))
	c.send(false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, RequestID: 1, SequenceNumber: 1}, 1))
	for i := range 1 + r.IntN(8) {
		seq := uint32(i + 2)
		var body []byte
		var svc opcua.Service
		switch r.IntN(4) {
		case 0:
			body, svc = opcua.AppendReadRequest(nil, seq, opcua.Numeric(0, 2258)), opcua.ServiceRead
		case 1:
			body, svc = opcua.AppendBrowseRequest(nil, seq, opcua.Numeric(0, 85)), opcua.ServiceBrowse
		case 2:
			body, svc = opcua.AppendWriteRequest(nil, seq, opcua.WriteValue{Node: opcua.StringID(2, pick(r, "A", "B")), Value: 1}), opcua.ServiceWrite
		default:
			body, svc = opcua.AppendCallRequest(nil, seq, opcua.CallMethod{Object: opcua.Numeric(2, 1), Method: opcua.Numeric(2, 2)}), opcua.ServiceCall
		}
		hdr := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: seq}
		c.sendPDUs(r, true, opcua.AppendMessage(nil, opcua.ChunkFinal, hdr, body))
		if r.IntN(6) != 0 {
			c.sendPDUs(r, false, opcua.AppendMessage(nil, opcua.ChunkFinal, hdr, opcua.AppendResponse(nil, svc, seq, 0)))
		}
	}
}
