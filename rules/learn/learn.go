// Package learn drafts a policy from observed traffic: it allows exactly
// what was observed and nothing else (issue 4, DESIGN.md `otgw learn`).
//
// It is pure policy logic: a Learner takes a stream of Observations, the
// decisions of the enforcing engine, and drafts a rules.Policy.
// simulate/learnrun produces that stream by replaying captures through
// gateway.Engine under a bootstrap policy in monitor mode, so each PDU is
// decoded by the very parsers and adapters whose output the learned
// policy will later be evaluated against. From the observations it builds:
//   - assets by address, in the --zone whose network holds them, else in
//     a zone per network they share (IPv4 /24, IPv6 /64; a zone of host
//     addresses where such a network would overlap a given zone);
//   - one conduit per (initiator, responder, protocol), named by the
//     zones of its two ends and the protocol;
//   - the three protocols on the ports where they were inspected (the
//     standard ones, --port, and those where learnrun recognised them by
//     content; Learner.Inspected says which); S7comm,
//     EtherNet/IP and IEC 60870-5-104 flows as port rules with a warning
//     that they pass uninspected;
//   - Modbus: units, read and write ranges per table (overlapping or
//     adjacent ranges merged) and the other function codes (with
//     sub-function for FC 8, MEI type for FC 43 and UMAS function code for
//     FC 90, Schneider UMAS), Modbus Application
//     Protocol v1.1b3 section 6;
//   - DNP3: master and outstation link addresses, functions with the
//     object groups/variations seen with them, unsolicited responses
//     (IEEE 1815-2012 clause 4 and Annex A);
//   - OPC UA: the lowest security mode and the policies seen at OPN, the
//     services seen, and for Write and Call the NodeIds (OPC 10000-4/6);
//   - other TCP/UDP flows as port rules, ICMP by type, non-IP ethertypes
//     in the l2 list (802.3 length-field frames as llc);
//   - parser anomalies seen on a conduit as `tolerate` entries of its
//     rule, so that replaying the same captures denies nothing a policy
//     can allow; each carries "observed anomaly: review before enforcing"
//     with its count and first/last seen time, on the rule's line and in
//     its head comment. What no policy can allow (a response the gateway
//     cannot pair with a request, bytes that cannot be framed as the
//     protocol, whose anomaly rules.Tolerable refuses, an object or
//     function the policy language has no name for, segments the TCP
//     normaliser refuses) is never written as a key: it becomes a
//     "REVIEW:" comment on the rule and a line of Stats.Unlearnable, so
//     that learn always drafts a policy `otgw check` accepts.
//
// Every allowance carries a comment with its count and first/last seen time
// so that a reviewer can delete what looks wrong. The result is a
// rules.Policy; rules.Marshal writes it.
package learn

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// Options tune Learn. The zero value learns without zones.
type Options struct {
	// Name of the drafted policy (default "learned").
	Name string
	// Zones to place assets in (from --zone). A zone without networks is
	// allowed but holds no asset.
	Zones []rules.Zone
	// Action is the policy's deny action (default "reply"). Learning
	// keeps `reply` because no action keeps a connection alive after a
	// deny: the bytes of a TCP stream cannot be skipped, so `drop` blocks
	// the direction at the denied PDU (later data is "blocked" and the
	// peer's ACKs of it fall out of window) while `reply` answers the
	// client with a protocol-native error and resets both ends. Measured
	// on learn->replay of the 137 captures in ../shared/pcaps and the
	// scenarios: 36 root denies followed by 2,006 "closed" frames under
	// reply or reset, 1,988 "blocked" or "out_of_window" frames under drop.
	// In a live network `drop` also leaves the client retransmitting until
	// its own timeout, where `reply` tells it at once.
	Action string
	// Ports adds server ports to inspect as a protocol (from --port
	// proto=N), on top of the standard ones and of those where Learn
	// recognises a protocol by content (dissect.Detect).
	Ports map[uint16]protocols.Proto
	// PortsOnly turns off recognition by content.
	PortsOnly bool
}

// AddZone adds a `--zone NAME=CIDR|port` value to o: a CIDR (or address)
// joins the zone's networks, "north"/"south" sets its port. Several flags
// for one name accumulate.
func (o *Options) AddZone(spec string) error {
	name, val, ok := strings.Cut(spec, "=")
	name, val = strings.TrimSpace(name), strings.TrimSpace(val)
	if !ok || name == "" || val == "" {
		return fmt.Errorf("--zone %q: want NAME=CIDR or NAME=north|south", spec)
	}
	var z *rules.Zone
	for i := range o.Zones {
		if o.Zones[i].Name == name {
			z = &o.Zones[i]
		}
	}
	if z == nil {
		o.Zones = append(o.Zones, rules.Zone{Name: name})
		z = &o.Zones[len(o.Zones)-1]
	}
	switch strings.ToLower(val) {
	case "north", "south":
		if z.Port != "" && z.Port != strings.ToLower(val) {
			return fmt.Errorf("--zone %q: zone %s already on port %s", spec, name, z.Port)
		}
		z.Port = strings.ToLower(val)
		return nil
	}
	if p, err := netip.ParsePrefix(val); err == nil {
		z.Networks = append(z.Networks, p.Masked().String())
		return nil
	}
	if a, err := netip.ParseAddr(val); err == nil {
		z.Networks = append(z.Networks, netip.PrefixFrom(a, a.BitLen()).String())
		return nil
	}
	return fmt.Errorf("--zone %q: %q is neither a CIDR nor north|south", spec, val)
}

// Stats describe what was learned.
type Stats struct {
	Frames, PDUs, Flows int
	Assets, Conduits    int
	// Unlearnable lists observations no policy can allow (for example a
	// response whose request the capture does not hold, or an OPC UA
	// service type id outside OPC 10000-4), with counts.
	Unlearnable []string
	// CaptureDamage has one line per damaged capture, learned up to (or
	// around) the damage (replay.Report.CaptureDamage).
	CaptureDamage []string
}

// seen counts an observation.
type seen struct {
	n           int
	first, last time.Time
}

func (s *seen) add(t time.Time) {
	if s.n == 0 || t.Before(s.first) {
		s.first = t
	}
	if t.After(s.last) {
		s.last = t
	}
	s.n++
}

func (s *seen) comment(what string) string {
	if s.n == 0 {
		return what
	}
	c := fmt.Sprintf("%s: seen %d time%s, first %s, last %s", what, s.n, plural(s.n),
		s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339))
	return strings.TrimPrefix(c, ": ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

type seenMap map[string]*seen

func (m seenMap) add(k string, t time.Time) {
	s := m[k]
	if s == nil {
		s = &seen{}
		m[k] = s
	}
	s.add(t)
}

// conduitKey is (initiator, responder, protocol).
type conduitKey struct {
	from, to netip.Addr
	proto    string // modbus dnp3 opcua tcp udp icmp
}

type conduitObs struct {
	key       conduitKey
	all       seen
	ports     map[uint16]*seen // tcp/udp: destination ports; inspected: server ports
	srcPorts  map[uint16]*seen // initiator ports (a well-known one betrays a mid-stream guess)
	icmp      map[uint8]*seen
	tolerate  seenMap
	unframed  seenMap // anomalies no tolerate entry can honour
	notes     seenMap // other observations no rule can allow
	mbUnits   map[uint8]*seen
	mbRead    [5]map[[2]uint32]*seen // by table: [lo, hi] intervals
	mbWrite   [5]map[[2]uint32]*seen
	mbWVals   [5][2]int // observed min/max written value per table (-1 unknown)
	mbFuncs   seenMap   // "8/4", "17"
	dnMasters map[uint16]*seen
	dnOuts    map[uint16]*seen
	dnFuncs   map[uint8]seenMap // fc -> object "gXvY" ("" for none)
	dnFuncN   map[uint8]*seen
	dnUns     seen
	uaModes   map[opcua.SecurityMode]*seen
	uaPols    seenMap
	uaSvcs    map[uint32]*seen
	uaNodes   map[uint32]seenMap
}

func newObs(k conduitKey) *conduitObs {
	c := &conduitObs{key: k, ports: map[uint16]*seen{}, srcPorts: map[uint16]*seen{}, icmp: map[uint8]*seen{}, tolerate: seenMap{}, unframed: seenMap{}, notes: seenMap{},
		mbUnits: map[uint8]*seen{}, mbFuncs: seenMap{}, dnMasters: map[uint16]*seen{}, dnOuts: map[uint16]*seen{},
		dnFuncs: map[uint8]seenMap{}, dnFuncN: map[uint8]*seen{}, uaModes: map[opcua.SecurityMode]*seen{}, uaPols: seenMap{},
		uaSvcs: map[uint32]*seen{}, uaNodes: map[uint32]seenMap{}}
	for i := range c.mbRead {
		c.mbRead[i] = map[[2]uint32]*seen{}
		c.mbWrite[i] = map[[2]uint32]*seen{}
		c.mbWVals[i] = [2]int{-1, -1}
	}
	return c
}

func addN[K comparable](m map[K]*seen, k K, t time.Time) {
	s := m[k]
	if s == nil {
		s = &seen{}
		m[k] = s
	}
	s.add(t)
}

// Learner accumulates observations (Observe). A Learner is used by one
// goroutine.
type Learner struct {
	opts        Options
	assets      map[netip.Addr]*seen
	conduits    map[conduitKey]*conduitObs
	order       []conduitKey
	l2          map[uint16]*seen
	pdus, flows int
	unlearnable seenMap
	rates       rates
	detected    map[uint16]protocols.Proto // extra inspected ports (inspectPorts)
	hostZone    func(netip.Addr) string    // zone of a host in the draft (set by Policy)
	initiated   map[[2]netip.AddrPort]bool // flows seen opening: initiator, responder
}

// Inspected tells the Learner the ports, beyond the standard ones, that
// were inspected as a protocol (--port, or recognised by content), so
// that the draft says why a rule names them.
func (l *Learner) Inspected(ports map[uint16]protocols.Proto) { l.detected = ports }

// New returns an empty Learner.
func New(opts Options) *Learner {
	return &Learner{opts: opts, assets: map[netip.Addr]*seen{}, conduits: map[conduitKey]*conduitObs{},
		l2: map[uint16]*seen{}, unlearnable: seenMap{}, initiated: map[[2]netip.AddrPort]bool{}}
}

func (l *Learner) obs(from, to netip.Addr, proto string, t time.Time) *conduitObs {
	k := conduitKey{from.Unmap(), to.Unmap(), proto}
	c := l.conduits[k]
	if c == nil {
		c = newObs(k)
		l.conduits[k] = c
		l.order = append(l.order, k)
	}
	addN(l.assets, k.from, t)
	addN(l.assets, k.to, t)
	c.all.add(t)
	return c
}

// Observation is one decision of the enforcing engine as learn reads it:
// simulate/learnrun replays the captures through gateway.Engine and turns
// each of its decisions into an Observation, so that what is learned is
// what the engine will judge, while this package stays free of the
// gateway and the capture code.
type Observation struct {
	Time time.Time
	// Proto is the decision's protocol: "modbus", "dnp3", "opcua" (a PDU,
	// or the first packet of an inspected flow), "tcp", "udp", "icmp",
	// "ip" (other IP protocols, fragments) or "l2" (a non-IP frame).
	Proto   string
	Verdict rules.Verdict
	// Src and Dst: the initiator and responder of a flow-level decision,
	// the sender and receiver of a PDU.
	Src, Dst netip.AddrPort
	// PDU is the judged PDU (nil for a flow-level decision).
	PDU *rules.PDU
	// EtherType of an l2 frame; IPSrc, IPDst and ICMPType of an ICMP
	// packet.
	EtherType    uint16
	IPSrc, IPDst netip.Addr
	ICMPType     uint8
	// Detectors lists the rate detectors that count this PDU (a response
	// the engine feeds to rules.Detector), with their subject.
	Detectors []DetectorHit
}

// DetectorHit is one rate detector counting a PDU, for the subject (host)
// it counts it against.
type DetectorHit struct {
	Detector rules.Detector
	Subject  netip.Addr
}

// Observe records one engine decision.
func (l *Learner) Observe(o *Observation) {
	t := o.Time
	switch o.Proto {
	case "l2":
		addN(l.l2, o.EtherType, t)
		return
	case "icmp":
		if !o.IPSrc.IsValid() {
			return
		}
		c := l.obs(o.IPSrc, o.IPDst, "icmp", t)
		addN(c.icmp, o.ICMPType, t)
		return
	case "ip":
		// Other IP protocols and fragments: no rule can allow them.
		l.unlearnable.add("ip protocol or fragment ("+o.Verdict.Reason.String()+")", t)
		return
	}
	if o.PDU == nil {
		// A flow-level decision on the first packet: o.Src initiates.
		l.flows++
		proto := o.Proto
		if ins := o.Verdict.Inspect; ins != protocols.ProtoNone {
			proto = ins.String()
		}
		c := l.obs(o.Src.Addr(), o.Dst.Addr(), proto, t)
		addN(c.ports, o.Dst.Port(), t)
		addN(c.srcPorts, o.Src.Port(), t)
		l.initiated[[2]netip.AddrPort{o.Src, o.Dst}] = true
		return
	}
	l.pdus++
	pdu := o.PDU
	// The conduit is the flow's: from the host that opened it, as
	// enforcement matches it, whichever way the PDU goes (a DNP3
	// outstation may connect to its master). The PDU's direction decides
	// only where the flow was not seen opening.
	client, server := o.Src, o.Dst
	switch {
	case l.initiated[[2]netip.AddrPort{o.Src, o.Dst}]:
	case l.initiated[[2]netip.AddrPort{o.Dst, o.Src}]:
		client, server = o.Dst, o.Src
	case pdu.Dir == protocols.Response:
		client, server = o.Dst, o.Src
	}
	c := l.obs(client.Addr(), server.Addr(), pdu.Proto.String(), t)
	if pdu.Anomaly != protocols.AnomalyNone {
		anomaly := pdu.Anomaly.String()
		if rules.Tolerable(pdu.Proto, anomaly) == "" && !unframedPDU(pdu) {
			c.tolerate.add(anomaly, t)
		} else {
			// Bytes the gateway cannot frame (or an anomaly no rule can
			// name): denied whatever the policy says, so the draft says
			// so in a comment instead of a tolerate entry check refuses.
			c.unframed.add(anomaly, t)
			l.unlearnable.add(pdu.Proto.String()+" "+anomaly+" (bytes the gateway cannot frame: always denied)", t)
			// The engine judged such bytes with empty fields: there is
			// no unit, address or function to learn from them.
			return
		}
	}
	switch pdu.Proto {
	case protocols.ProtoModbus:
		l.modbus(c, pdu, t)
	case protocols.ProtoDNP3:
		l.dnp3(c, pdu, t)
	case protocols.ProtoOPCUA:
		l.opcua(c, pdu, t)
	}
	if o.Verdict.Action != rules.Deny {
		l.rates.observe(o.Detectors, t)
	}
	if pdu.Dir == protocols.Response && o.Verdict.Reason == rules.ReasonResponseWithoutRequest {
		l.note(c, pdu.Proto.String()+" response without request", t)
	}
}

// unframedPDU reports whether the engine judged p as bytes it could not
// frame (gateway Engine.malformed: an anomaly on a PDU whose protocol
// fields are all empty, as no framed PDU's are: a Modbus ADU has a
// function, a DNP3 link frame addresses, an OPC UA chunk a message type).
// Some anomaly names are reported both ways (OPC UA invalid_message_size
// by the framer and by the decoder); tolerating one is honoured only on
// framed PDUs, so learn tolerates only what it saw framed.
func unframedPDU(p *rules.PDU) bool {
	switch p.Proto {
	case protocols.ProtoModbus:
		return p.Modbus.FC == 0 && p.Modbus.Unit == 0
	case protocols.ProtoDNP3:
		return p.DNP3.FC == 0 && p.DNP3.LinkSrc == 0 && p.DNP3.LinkDst == 0
	case protocols.ProtoOPCUA:
		return p.OPCUA.MsgType == 0
	}
	return false
}

// note records an observation no rule can allow, for Stats.Unlearnable
// and as a review comment on c's rule.
func (l *Learner) note(c *conduitObs, what string, t time.Time) {
	l.unlearnable.add(what, t)
	c.notes.add(what, t)
}

func mbTable(fc uint8) rules.Table {
	switch fc {
	case 1, 5, 15:
		return rules.TableCoils
	case 2:
		return rules.TableDiscrete
	case 4:
		return rules.TableInput
	case 3, 6, 16, 22, 23:
		return rules.TableHolding
	}
	return rules.TableNone
}

func span(addr, qty uint16) [2]uint32 {
	end := uint32(addr) + uint32(max(qty, 1)) - 1
	return [2]uint32{uint32(addr), min(end, 0xffff)}
}

func (l *Learner) modbus(c *conduitObs, p *rules.PDU, t time.Time) {
	m := &p.Modbus
	if p.Dir == protocols.Request && (m.FC == 0 || m.FC > 127) {
		// Not a request function code (Modbus Application Protocol
		// v1.1b3 section 6), typically bytes that are no Modbus ADU: no
		// policy can allow it, and its "unit" byte is no unit to allow.
		l.note(c, fmt.Sprintf("modbus request with function code %d", m.FC), t)
		return
	}
	addN(c.mbUnits, m.Unit, t)
	if p.Dir == protocols.Response {
		return
	}
	if m.Unread {
		// Cut short before its address or sub-function: what it accesses
		// is unknown, and no rule can allow it (rules/doc.go, tolerate).
		l.unlearnable.add(fmt.Sprintf("modbus request with function code %d cut short before its address or sub-function", m.FC), t)
		return
	}
	tb := mbTable(m.FC)
	vals := m.Values[:min(int(m.NValues), rules.MaxValues)]
	wv := func(tb rules.Table) {
		for _, v := range vals {
			mm := &c.mbWVals[tb]
			if mm[0] < 0 || int(v) < mm[0] {
				mm[0] = int(v)
			}
			if int(v) > mm[1] {
				mm[1] = int(v)
			}
		}
	}
	switch m.FC {
	case 1, 2, 3, 4:
		addN(c.mbRead[tb], span(m.Addr, m.Qty), t)
	case 5, 6, 22:
		addN(c.mbWrite[tb], span(m.Addr, 1), t)
		wv(tb)
	case 15, 16:
		addN(c.mbWrite[tb], span(m.Addr, m.Qty), t)
		wv(tb)
	case 23:
		addN(c.mbRead[rules.TableHolding], span(m.Addr, m.Qty), t)
		addN(c.mbWrite[rules.TableHolding], span(m.WriteAddr, m.WriteQty), t)
		wv(rules.TableHolding)
	case 8, 43, modbus.FuncUMAS:
		// FC 90: Schneider UMAS, by its UMAS function code.
		c.mbFuncs.add(fmt.Sprintf("%d/%d", m.FC, m.Sub), t)
	default:
		c.mbFuncs.add(strconv.Itoa(int(m.FC)), t)
	}
}

func (l *Learner) dnp3(c *conduitObs, p *rules.PDU, t time.Time) {
	d := &p.DNP3
	master, out := d.LinkSrc, d.LinkDst
	if p.Dir == protocols.Response {
		master, out = d.LinkDst, d.LinkSrc
	}
	addN(c.dnMasters, master, t)
	addN(c.dnOuts, out, t)
	if p.Dir == protocols.Response {
		if d.FC == 130 || d.Unsolicited {
			c.dnUns.add(t)
		}
		return
	}
	if d.FuncUnread {
		l.unlearnable.add("dnp3 request cut short before its function code", t)
		return
	}
	if d.FC >= 129 {
		// A response function code sent by the initiator (the outstation
		// opened the connection, or the capture is odd): rules judge
		// requests by function and have no name for these.
		l.note(c, fmt.Sprintf("dnp3 response function %d sent by the initiator", d.FC), t)
		return
	}
	if d.WalkIncomplete {
		// Objects after the one that stopped the walk are unknown: no
		// entry could allow exactly what was seen (and "any object" would
		// allow far more), so the request stays denied, with a comment.
		what := fmt.Sprintf("dnp3 %s request whose objects could not all be read", dnp3.FunctionCode(d.FC))
		if n := min(int(d.NObjects), rules.MaxObjects); n > 0 {
			var read []string
			for _, o := range d.Objects[:n] {
				read = append(read, fmt.Sprintf("g%dv%d", o.Group, o.Variation))
			}
			what += " (read: " + strings.Join(read, ", ") + ", then " + p.Anomaly.String() + ")"
		} else if p.Anomaly != protocols.AnomalyNone {
			what += " (" + p.Anomaly.String() + ")"
		}
		l.note(c, what, t)
		return
	}
	objs := c.dnFuncs[d.FC]
	if objs == nil {
		objs = seenMap{}
		c.dnFuncs[d.FC] = objs
	}
	addN(c.dnFuncN, d.FC, t)
	if d.ObjectsTruncated {
		objs.add("*", t) // too many headers to list: allow any object
	}
	for _, o := range d.Objects[:min(int(d.NObjects), rules.MaxObjects)] {
		objs.add(fmt.Sprintf("g%dv%d", o.Group, o.Variation), t)
	}
}

func (l *Learner) opcua(c *conduitObs, p *rules.PDU, t time.Time) {
	u := &p.OPCUA
	if p.Dir == protocols.Response {
		return
	}
	switch u.MsgType {
	case opcua.TypeOPN:
		addN(c.uaModes, u.SecurityMode, t)
		if u.SecurityPolicy != "" {
			c.uaPols.add(u.SecurityPolicy, t)
		}
	case opcua.TypeMSG:
		addN(c.uaModes, u.SecurityMode, t)
		if u.ServiceID == 0 {
			if u.SecurityMode != opcua.ModeSignAndEncrypt {
				l.note(c, "opcua MSG without visible service in None/Sign mode", t)
			}
			return
		}
		addN(c.uaSvcs, u.ServiceID, t)
		if u.ServiceID == 673 || u.ServiceID == 712 {
			nodes := c.uaNodes[u.ServiceID]
			if nodes == nil {
				nodes = seenMap{}
				c.uaNodes[u.ServiceID] = nodes
			}
			if u.NodesTruncated {
				nodes.add("*", t)
			}
			for i := range u.Nodes[:min(int(u.NNodes), rules.MaxNodes)] {
				nodes.add(FormatNodeID(&u.Nodes[i]), t)
			}
		}
	}
}

// FormatNodeID writes a NodeId in the string form opcua.ParseNodeID reads
// (OPC 10000-6 section 5.3.1.10).
func FormatNodeID(n *opcua.NodeID) string {
	ns := ""
	if n.Namespace != 0 {
		ns = "ns=" + strconv.Itoa(int(n.Namespace)) + ";"
	}
	switch n.Type {
	case opcua.NodeIDString:
		return ns + "s=" + string(n.Bytes)
	case opcua.NodeIDGUID:
		b := n.Bytes
		if len(b) == 16 {
			// Data1..3 little-endian on the wire, Data4 as bytes.
			return fmt.Sprintf("%sg=%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", ns,
				b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
		}
		return ns + "b=" + b64(b)
	case opcua.NodeIDOpaque:
		return ns + "b=" + b64(n.Bytes)
	}
	return ns + "i=" + strconv.FormatUint(uint64(n.Numeric), 10)
}

// Stats returns counts and the unlearnable observations.
func (l *Learner) Stats() *Stats {
	st := &Stats{PDUs: l.pdus, Flows: l.flows, Assets: len(l.assets), Conduits: len(l.conduits)}
	for _, k := range sortedKeys(l.unlearnable) {
		st.Unlearnable = append(st.Unlearnable, l.unlearnable[k].comment(k))
	}
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
