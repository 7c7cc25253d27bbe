package rules

import (
	"math/bits"
	"net/netip"
	"slices"
	"sort"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// maxSide bounds the endpoints one address can match: an asset by IP, an
// asset by MAC, one zone by network, and the zones without networks (at most
// 24, checked by Compile).
const maxSide = 28

// maxCands bounds the conduits considered for one flow when more than
// maxCached match (the overflow path; only pathological policies reach it).
const maxCands = 1024

func zoneOK(z *czone, port string, vlan uint16) bool {
	if z.port != "" && port != "" && z.port != port {
		return false
	}
	if len(z.vlans) > 0 && (vlan == 0 || !in16(z.vlans, vlan)) {
		return false
	}
	return true
}

func (rs *Ruleset) assetOK(a *casset, mac [6]byte, port string, vlan uint16) bool {
	if a.hasMAC && mac != ([6]byte{}) && a.mac != mac {
		return false
	}
	return a.zone < 0 || zoneOK(&rs.zones[a.zone], port, vlan)
}

// side lists the endpoints (zones, then assets offset by len(zones)) that an
// address seen on a port matches.
func (rs *Ruleset) side(eps *[maxSide]int32, addr netip.Addr, mac [6]byte, port string, vlan uint16) int {
	n := 0
	addr = addr.Unmap()
	if ai, ok := rs.assetByIP[addr]; ok {
		if rs.assetOK(&rs.assets[ai], mac, port, vlan) {
			eps[n] = int32(len(rs.zones)) + ai
			n++
		}
	}
	if len(rs.assetByMAC) > 0 && mac != ([6]byte{}) {
		if ai, ok := rs.assetByMAC[mac]; ok && rs.assetOK(&rs.assets[ai], mac, port, vlan) {
			eps[n] = int32(len(rs.zones)) + ai
			n++
		}
	}
	zr := rs.zoneRanges
	i := sort.Search(len(zr), func(i int) bool { return addr.Less(zr[i].lo) }) - 1
	if i >= 0 && addr.Compare(zr[i].hi) <= 0 {
		if z := zr[i].zone; zoneOK(&rs.zones[z], port, vlan) {
			eps[n] = z
			n++
		}
	}
	for _, z := range rs.portZones {
		if n < maxSide && zoneOK(&rs.zones[z], port, vlan) {
			eps[n] = z
			n++
		}
	}
	return n
}

// collect writes the indexes of the conduits joining the flow's ends, in
// file order, and returns how many there are (at most len(out)).
func (rs *Ruleset) collect(f *Flow, out []uint16) (int, bool) {
	var se, de [maxSide]int32
	ns := rs.side(&se, f.Src, f.SrcMAC, f.InPort, f.VLAN)
	if ns == 0 {
		return 0, false
	}
	nd := rs.side(&de, f.Dst, f.DstMAC, f.OutPort, f.VLAN)
	if nd == 0 {
		return 0, false
	}
	n := 0
	for w := 0; w < rs.words; w++ {
		var s, d uint64
		for _, e := range se[:ns] {
			if b := rs.fromBits[e]; b != nil {
				s |= b[w]
			}
		}
		if s == 0 {
			continue
		}
		for _, e := range de[:nd] {
			if b := rs.toBits[e]; b != nil {
				d |= b[w]
			}
		}
		x := s & d
		for x != 0 {
			if n == len(out) {
				return n, true
			}
			out[n] = uint16(w*64 + bits.TrailingZeros64(x))
			n++
			x &= x - 1
		}
	}
	return n, false
}

// cands returns the flow's candidate conduits, from its cache when the
// cache was filled by this ruleset.
func (rs *Ruleset) cands(f *Flow, buf *[maxCands]uint16) []uint16 {
	c := &f.cache
	if c.gen != rs.gen {
		n, over := rs.collect(f, c.conduits[:])
		c.gen, c.n, c.overflow = rs.gen, uint8(n), over
	}
	if !c.overflow {
		return c.conduits[:c.n]
	}
	n, _ := rs.collect(f, buf[:])
	return buf[:n]
}

func (rs *Ruleset) noConduit() Verdict {
	v := Verdict{Action: Deny, Reason: ReasonNoConduit, Mode: rs.mode, DenyAction: rs.action, Conduit: -1, Rule: -1, Generation: rs.gen}
	if rs.mode == ModeMonitor {
		v.Action = Alert
	}
	return v
}

func (rs *Ruleset) verdict(ci int, ri int, reason Reason) Verdict {
	c := &rs.conduits[ci]
	v := Verdict{Action: Allow, Reason: reason, Mode: c.mode, DenyAction: c.action, Conduit: ci, Rule: ri, ConduitName: c.name, Generation: rs.gen}
	if ri >= 0 {
		v.RuleName = c.rules[ri].name
	}
	if reason != ReasonAllowed {
		v.Action = Deny
		if c.mode == ModeMonitor {
			v.Action = Alert
		}
	}
	return v
}

// EvaluateFlow judges the first packet of a flow (initiator to responder)
// and non-inspected traffic: L2 ethertypes, fragments, TCP/UDP ports and
// ICMP types. An allowed flow to an inspected protocol's port has
// Verdict.Inspect set: the gateway attaches that parser and judges every
// PDU with Evaluate. It allocates nothing.
func (rs *Ruleset) EvaluateFlow(f *Flow) Verdict {
	if f.EtherType != 0 && f.EtherType != 0x0800 && f.EtherType != 0x86dd {
		allowed := f.EtherType < 0x0600 && rs.l2LLC
		for _, t := range rs.l2 {
			allowed = allowed || t == f.EtherType
		}
		if allowed {
			return Verdict{Action: Allow, Mode: rs.mode, DenyAction: rs.action, Conduit: -1, Rule: -1, Generation: rs.gen}
		}
		v := rs.noConduit()
		v.Reason = ReasonL2NotAllowed
		return v
	}
	var buf [maxCands]uint16
	cands := rs.cands(f, &buf)
	if len(cands) == 0 {
		return rs.noConduit()
	}
	first := int(cands[0])
	if f.Fragment {
		return rs.verdict(first, -1, ReasonFragment)
	}
	switch f.Transport {
	case TransportTCP, TransportUDP:
		tcp := f.Transport == TransportTCP
		for _, ci := range cands {
			c := &rs.conduits[ci]
			for ri := range c.rules {
				r := &c.rules[ri]
				if r.kind == kindICMP || (tcp && !r.tcp) || (!tcp && !r.udp) {
					continue
				}
				if len(r.ports) == 0 || in16(r.ports, f.DstPort) {
					v := rs.verdict(int(ci), ri, ReasonAllowed)
					v.Inspect = r.proto
					return v
				}
			}
		}
		return rs.verdict(first, -1, ReasonPortNotAllowed)
	case TransportICMP, TransportICMPv6:
		for _, ci := range cands {
			c := &rs.conduits[ci]
			for ri := range c.rules {
				r := &c.rules[ri]
				if r.kind == kindICMP && (r.icmpAny || r.icmp[f.ICMPType/64]&(1<<(f.ICMPType%64)) != 0) {
					return rs.verdict(int(ci), ri, ReasonAllowed)
				}
			}
		}
		return rs.verdict(first, -1, ReasonICMPTypeNotAllowed)
	}
	return rs.verdict(first, -1, ReasonProtocolNotAllowed)
}

// Evaluate judges one application PDU of a flow. Conduits joining the
// flow's ends are tried in file order and, within each, the rules for the
// PDU's protocol whose ports hold the flow's destination port: the first
// rule that allows decides. Otherwise the first such rule's reason decides
// (deny, or alert in monitor mode); with no such rule the first conduit
// denies with protocol_not_allowed, and with no conduit the policy's
// defaults deny with no_conduit. A Modbus function code that is neither
// public nor user-defined is refused as function_not_allowed when no
// allowlist names it (see unknownFunction). It allocates nothing; it
// updates the flow's match cache and, for DNP3 PDUs it does not deny, the
// flow's Secure Authentication state (see Flow and the package
// documentation).
func (rs *Ruleset) Evaluate(f *Flow, p *PDU) Verdict {
	v := rs.evaluate(f, p)
	if v.Action != Deny && p.Proto == protocols.ProtoDNP3 {
		// The PDU crosses (allowed, or alerted in monitor mode): record it
		// in the association's Secure Authentication state.
		f.auth.advance(p.Dir, &p.DNP3)
	}
	return v
}

// anomalyUnknownFunction is the Modbus anomaly of a function code that is
// neither public nor user-defined.
var anomalyUnknownFunction = modbus.AnomalyUnknownFunction.Tagged()

// unknownFunction re-judges a Modbus PDU refused only because its function
// code is neither public nor user-defined (Modbus Application Protocol
// v1.1b3 section 5, e.g. FC 91; FC 90, Schneider UMAS, is decoded). Such a
// PDU is well framed; what the policy refuses is the function, so the
// verdict becomes function_not_allowed when the PDU without the anomaly
// would be refused for its function. A policy that tolerates
// unknown_function never gets here (the function was judged already); one
// that lists the code in an allowlist without tolerating the anomaly keeps
// the malformed verdict. p is not changed (the copy stays on the stack).
func (rs *Ruleset) unknownFunction(f *Flow, p *PDU, v Verdict) Verdict {
	q := *p
	q.Anomaly = protocols.AnomalyNone
	if v2 := rs.evaluate(f, &q); v2.Action != Allow && v2.Reason == ReasonFunctionNotAllowed {
		return v2
	}
	return v
}

func (rs *Ruleset) evaluate(f *Flow, p *PDU) Verdict {
	var buf [maxCands]uint16
	cands := rs.cands(f, &buf)
	if len(cands) == 0 {
		return rs.noConduit()
	}
	tcp := f.Transport != TransportUDP
	haveDeny := false
	var deny Verdict
	for _, ci := range cands {
		c := &rs.conduits[ci]
		for ri := range c.rules {
			r := &c.rules[ri]
			if r.proto != p.Proto || p.Proto == protocols.ProtoNone || (tcp && !r.tcp) || (!tcp && !r.udp) || !in16(r.ports, f.DstPort) {
				continue
			}
			reason := r.eval(c, p, &f.auth)
			if reason == ReasonAllowed {
				return rs.verdict(int(ci), ri, ReasonAllowed)
			}
			if !haveDeny {
				deny = rs.verdict(int(ci), ri, reason)
				if reason == ReasonMalformed {
					deny.Anomaly = p.Anomaly
				}
				haveDeny = true
			}
		}
	}
	if haveDeny {
		if deny.Reason == ReasonMalformed && p.Anomaly == anomalyUnknownFunction {
			// Off the allowed path, so that Evaluate's verdict is the
			// result of evaluate as is (it is copied otherwise).
			return rs.unknownFunction(f, p, deny)
		}
		return deny
	}
	return rs.verdict(int(cands[0]), -1, ReasonProtocolNotAllowed)
}

// PairingAnomalies are the parser anomalies of a response that matches
// no outstanding request although requests await an answer: Modbus
// tid_mismatch, DNP3 seq_mismatch. A rule that tolerates one lets such
// responses pass as answers (response_without_request otherwise).
var PairingAnomalies = [...]protocols.Anomaly{modbus.AnomalyTIDMismatch.Tagged(), dnp3.AnomalySeqMismatch.Tagged()}

func isPairingAnomaly(a protocols.Anomaly) bool {
	return a == PairingAnomalies[0] || a == PairingAnomalies[1]
}

// anomalySet is a compiled tolerate list: per protocol named, a bitset
// of its anomaly codes. A nil set tolerates nothing. has allocates
// nothing and compares no strings.
type anomalySet []anomalyBits

type anomalyBits struct {
	proto protocols.Proto
	codes [4]uint64
}

// add puts a in the set.
func (s *anomalySet) add(a protocols.Anomaly) {
	for i := range *s {
		if b := &(*s)[i]; b.proto == a.Proto() {
			b.codes[a.Code()/64] |= 1 << (a.Code() % 64)
			return
		}
	}
	b := anomalyBits{proto: a.Proto()}
	b.codes[a.Code()/64] = 1 << (a.Code() % 64)
	*s = append(*s, b)
}

// has reports whether a is in the set.
func (s anomalySet) has(a protocols.Anomaly) bool {
	for i := range s {
		if s[i].proto == a.Proto() {
			return s[i].codes[a.Code()/64]&(1<<(a.Code()%64)) != 0
		}
	}
	return false
}

func (r *crule) eval(c *cconduit, p *PDU, auth *dnp3Auth) Reason {
	if p.Anomaly != protocols.AnomalyNone && !r.tolerate.has(p.Anomaly) && !c.tolerate.has(p.Anomaly) {
		return ReasonMalformed
	}
	// A response the parser could not pair for a reason the rule or
	// conduit tolerates (a device that answers with the wrong Modbus
	// transaction id or DNP3 sequence number) counts as paired.
	pairTol := p.Dir == protocols.Response && isPairingAnomaly(p.Anomaly)
	switch r.kind {
	case kindModbus:
		return r.mb.eval(p.Dir, &p.Modbus, pairTol)
	case kindDNP3:
		return r.dn.eval(p.Dir, &p.DNP3, auth, pairTol)
	case kindOPCUA:
		return r.ua.eval(p.Dir, &p.OPCUA)
	case kindSection:
		return r.sec.judge(p)
	}
	return ReasonProtocolNotAllowed
}

// ---- Modbus ----

func covered(rr []r16, addr, qty uint16) bool {
	end := uint32(addr) + uint32(max(qty, 1)) - 1
	if end > 0xffff {
		return false
	}
	for _, r := range rr {
		if addr >= r.lo && end <= uint32(r.hi) {
			return true
		}
	}
	return false
}

// writeOK checks a write of qty registers from addr against the segments:
// ReasonAddressOutOfRange if some register is not writable,
// ReasonValueOutOfRange if some value is not allowed there.
func writeOK(segs []wseg, addr, qty uint16, vals []uint16, unknown bool) Reason {
	end := uint32(addr) + uint32(max(qty, 1)) - 1
	if end > 0xffff {
		return ReasonAddressOutOfRange
	}
	i := sort.Search(len(segs), func(i int) bool { return segs[i].hi >= addr })
	first := i
	next := uint32(addr)
	for ; i < len(segs) && next <= end; i++ {
		if uint32(segs[i].lo) > next {
			return ReasonAddressOutOfRange
		}
		next = uint32(segs[i].hi) + 1
	}
	if next <= end {
		return ReasonAddressOutOfRange
	}
	for i = first; i < len(segs) && uint32(segs[i].lo) <= end; i++ {
		s := &segs[i]
		if s.anyVal {
			continue
		}
		lo, hi := max(uint32(s.lo), uint32(addr)), min(uint32(s.hi), end)
		for reg := lo; reg <= hi; reg++ {
			k := reg - uint32(addr)
			if unknown || k >= uint32(len(vals)) || !in16(s.vals, vals[k]) {
				return ReasonValueOutOfRange
			}
		}
	}
	return ReasonAllowed
}

func (m *cmodbus) eval(dir protocols.Dir, p *Modbus, pairTol bool) Reason {
	if !m.unitsAny && m.units[p.Unit/64]&(1<<(p.Unit%64)) == 0 {
		return ReasonUnitNotAllowed
	}
	if dir == protocols.Response {
		if !p.PairedRequest && !pairTol {
			return ReasonResponseWithoutRequest
		}
		return ReasonAllowed
	}
	vals := p.Values[:min(int(p.NValues), MaxValues)]
	switch p.FC {
	case 1, 2, 3, 4:
		t := modbusTable(p.FC)
		if len(m.read[t]) == 0 {
			return ReasonFunctionNotAllowed
		}
		if p.Unread || !covered(m.read[t], p.Addr, p.Qty) {
			return ReasonAddressOutOfRange
		}
		return ReasonAllowed
	case 5, 6, 15, 16, 22:
		t := modbusTable(p.FC)
		if len(m.write[t]) == 0 {
			return ReasonFunctionNotAllowed
		}
		if p.Unread {
			return ReasonAddressOutOfRange
		}
		qty := p.Qty
		if p.FC == 5 || p.FC == 6 || p.FC == 22 {
			qty = 1
		}
		return writeOK(m.write[t], p.Addr, qty, vals, p.FC == 22)
	case 23:
		if len(m.read[TableHolding]) == 0 || len(m.write[TableHolding]) == 0 {
			return ReasonFunctionNotAllowed
		}
		if p.Unread || !covered(m.read[TableHolding], p.Addr, p.Qty) {
			return ReasonAddressOutOfRange
		}
		return writeOK(m.write[TableHolding], p.WriteAddr, p.WriteQty, vals, false)
	}
	for _, f := range m.funcs {
		if f.fc == p.FC && (f.anySub || !p.Unread && f.sub == p.Sub) {
			return ReasonAllowed
		}
	}
	return ReasonFunctionNotAllowed
}

// ---- DNP3 ----

func (d *cdnp3) eval(dir protocols.Dir, p *DNP3, auth *dnp3Auth, pairTol bool) Reason {
	master, outstation := p.LinkSrc, p.LinkDst
	if dir == protocols.Response {
		master, outstation = p.LinkDst, p.LinkSrc
	}
	if (!d.mastersAny && !in16(d.masters, master)) || (!d.outstationsAny && !in16(d.outstations, outstation)) {
		return ReasonLinkAddressNotAllowed
	}
	if dir == protocols.Response {
		if p.FC == fcUnsolicited || p.Unsolicited {
			if d.unsolicited {
				return ReasonAllowed
			}
			return ReasonUnsolicitedNotAllowed
		}
		if d.requireAuth {
			return d.authResponse(p, auth)
		}
		if p.FC == fcAuthResp && auth.outstanding {
			// A challenge or authentication error answers the request
			// that awaits a response (IEEE 1815-2012 clause 7).
			return ReasonAllowed
		}
		if !p.PairedRequest && !pairTol {
			return ReasonResponseWithoutRequest
		}
		return ReasonAllowed
	}
	if p.FuncUnread {
		return ReasonFunctionNotAllowed
	}
	skipAuth := false
	if d.requireAuth {
		var reason Reason
		var decided bool
		reason, decided, skipAuth = d.authRequest(p, auth)
		if decided {
			return reason
		}
	}
	for i := range d.fcs {
		e := &d.fcs[i]
		if e.fc != p.FC {
			continue
		}
		if e.anyObj {
			return ReasonAllowed
		}
		if p.ObjectsTruncated {
			return ReasonObjectNotAllowed
		}
		for _, o := range p.Objects[:min(int(p.NObjects), MaxObjects)] {
			if skipAuth && o.Group == gAuth {
				continue // aggressive mode framing, judged by authRequest
			}
			ok := false
			for _, a := range e.objs {
				if a.group == o.Group && (a.anyVar || a.variation == o.Variation) {
					ok = true
					break
				}
			}
			if !ok {
				return ReasonObjectNotAllowed
			}
		}
		return ReasonAllowed
	}
	return ReasonFunctionNotAllowed
}

// ---- OPC UA ----

func (u *copcua) eval(dir protocols.Dir, p *OPCUA) Reason {
	switch p.MsgType {
	case opcua.TypeHEL, opcua.TypeACK, opcua.TypeERR, opcua.TypeRHE, opcua.TypeCLO:
		return ReasonAllowed
	case opcua.TypeOPN, opcua.TypeMSG:
	default:
		return ReasonServiceNotAllowed
	}
	if dir == protocols.Response {
		if !p.PairedRequest {
			return ReasonResponseWithoutRequest
		}
		return ReasonAllowed
	}
	// A channel whose OPN the gateway did not see (opened before it
	// started, or a capture that begins mid-stream) has an unknown mode:
	// judged by what can be known, it meets a minimum of None (the
	// default) and no higher one.
	if mode := max(p.SecurityMode, opcua.ModeNone); mode < u.minMode {
		return ReasonSecurityModeTooLow
	}
	if p.MsgType == opcua.TypeOPN {
		if len(u.policies) > 0 && !slices.Contains(u.policies, p.SecurityPolicy) {
			return ReasonSecurityPolicyNotAllowed
		}
		return ReasonAllowed
	}
	if p.ServiceID == 0 {
		// SignAndEncrypt bodies are opaque (DESIGN.md): only the headers and
		// the channel's mode, checked above and at OPN, can be judged.
		if p.SecurityMode == opcua.ModeSignAndEncrypt {
			return ReasonAllowed
		}
		return ReasonServiceNotAllowed
	}
	for i := range u.services {
		e := &u.services[i]
		if e.id != p.ServiceID {
			continue
		}
		if e.anyNode || (p.ServiceID != opcuaWrite && p.ServiceID != opcuaCall) {
			return ReasonAllowed
		}
		if p.NodesTruncated {
			return ReasonNodeNotAllowed
		}
		for j := range p.Nodes[:min(int(p.NNodes), MaxNodes)] {
			ok := false
			for k := range e.nodes {
				if e.nodes[k].Equal(p.Nodes[j]) {
					ok = true
					break
				}
			}
			if !ok {
				return ReasonNodeNotAllowed
			}
		}
		return ReasonAllowed
	}
	return ReasonServiceNotAllowed
}
