package rules

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

// The reference evaluator below interprets a Policy directly, re-reading its
// strings on every call and looping register by register: slow and
// obviously faithful to the documented semantics, so that the compiled
// Ruleset can be checked against it on random inputs.

type refResult struct {
	action  Action
	reason  Reason
	conduit int
	rule    int
}

func refZone(p *Policy, name string) *Zone {
	for i := range p.Zones {
		if p.Zones[i].Name == name {
			return &p.Zones[i]
		}
	}
	return nil
}

func refZoneCond(z *Zone, port string, vlan uint16) bool {
	if z.Port != "" && port != "" && z.Port != port {
		return false
	}
	if len(z.VLANs) > 0 {
		found := false
		for _, v := range z.VLANs {
			lo, hi, _ := parseRange(v, 1, 4094)
			if vlan != 0 && int(vlan) >= lo && int(vlan) <= hi {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func refEndpoint(p *Policy, name string, addr netip.Addr, mac [6]byte, port string, vlan uint16) bool {
	if z := refZone(p, name); z != nil {
		if !refZoneCond(z, port, vlan) {
			return false
		}
		if len(z.Networks) == 0 {
			return true
		}
		for _, n := range z.Networks {
			if netip.MustParsePrefix(n).Contains(addr) {
				return true
			}
		}
		return false
	}
	for _, a := range p.Assets {
		if a.Name != name {
			continue
		}
		if a.IP != "" && netip.MustParseAddr(a.IP) != addr {
			return false
		}
		if a.MAC != "" {
			hw, _ := net.ParseMAC(a.MAC)
			if a.IP == "" && mac == ([6]byte{}) {
				return false
			}
			if mac != ([6]byte{}) && string(hw) != string(mac[:]) {
				return false
			}
		}
		return refZoneCond(refZone(p, a.Zone), port, vlan)
	}
	return false
}

func refCands(p *Policy, f *Flow) []int {
	var out []int
	for ci, c := range p.Conduits {
		from, to := false, false
		for _, n := range c.From {
			from = from || refEndpoint(p, n, f.Src, f.SrcMAC, f.InPort, f.VLAN)
		}
		for _, n := range c.To {
			to = to || refEndpoint(p, n, f.Dst, f.DstMAC, f.OutPort, f.VLAN)
		}
		if from && to {
			out = append(out, ci)
		}
	}
	return out
}

func refMode(p *Policy, c *Conduit) Mode {
	m := p.Mode
	if c != nil && c.Mode != "" {
		m = c.Mode
	}
	if m == "monitor" {
		return ModeMonitor
	}
	return ModeEnforce
}

func refDecide(p *Policy, ci, ri int, reason Reason) refResult {
	r := refResult{action: Allow, reason: reason, conduit: ci, rule: ri}
	var c *Conduit
	if ci >= 0 {
		c = &p.Conduits[ci]
	}
	if reason != ReasonAllowed {
		r.action = Deny
		if refMode(p, c) == ModeMonitor {
			r.action = Alert
		}
	}
	return r
}

func inList(list []string, v int, lo, hi int) bool {
	for _, s := range list {
		a, b, _ := parseRange(s, lo, hi)
		if v >= a && v <= b {
			return true
		}
	}
	return false
}

func refPorts(list []string, def int, port uint16) bool {
	if len(list) == 0 {
		return def == 0 || int(port) == def
	}
	return inList(list, int(port), 1, 65535)
}

func refRuleProto(r *Rule) (protocols.Proto, []string, int, bool, bool, []string) {
	switch {
	case r.Modbus != nil:
		return protocols.ProtoModbus, r.Modbus.Ports, 502, true, false, r.Modbus.Tolerate
	case r.DNP3 != nil:
		return protocols.ProtoDNP3, r.DNP3.Ports, 20000, true, true, r.DNP3.Tolerate
	case r.OPCUA != nil:
		return protocols.ProtoOPCUA, r.OPCUA.Ports, 4840, true, false, r.OPCUA.Tolerate
	case r.TCP != nil:
		return protocols.ProtoNone, r.TCP.Ports, 0, true, false, nil
	case r.UDP != nil:
		return protocols.ProtoNone, r.UDP.Ports, 0, false, true, nil
	}
	return protocols.ProtoNone, nil, 0, false, false, nil
}

func refEvaluate(p *Policy, f *Flow, pdu *PDU) refResult {
	return refEvaluateAuth(p, &refAuth{}, f, pdu)
}

// refEvaluateAuth evaluates pdu on a flow whose DNP3 Secure
// Authentication state is st, and advances st when the PDU crosses.
func refEvaluateAuth(p *Policy, st *refAuth, f *Flow, pdu *PDU) refResult {
	res := refEvaluateAt(p, st, f, pdu)
	if res.action != Deny && pdu.Proto == protocols.ProtoDNP3 {
		st.advance(pdu.Dir, &pdu.DNP3)
	}
	return res
}

func refEvaluateAt(p *Policy, st *refAuth, f *Flow, pdu *PDU) refResult {
	cands := refCands(p, f)
	if len(cands) == 0 {
		return refDecide(p, -1, -1, ReasonNoConduit)
	}
	udp := f.Transport == TransportUDP
	var deny *refResult
	for _, ci := range cands {
		c := &p.Conduits[ci]
		for ri := range c.Rules {
			r := &c.Rules[ri]
			proto, ports, def, tcpOK, udpOK, tol := refRuleProto(r)
			if proto == protocols.ProtoNone || proto != pdu.Proto || (udp && !udpOK) || (!udp && !tcpOK) || !refPorts(ports, def, f.DstPort) {
				continue
			}
			reason := ReasonAllowed
			switch {
			case pdu.Anomaly != protocols.AnomalyNone && !contains(tol, pdu.Anomaly.String()) && !contains(c.Tolerate, pdu.Anomaly.String()):
				reason = ReasonMalformed
			case r.Modbus != nil:
				m := pdu.Modbus
				if pdu.Dir == protocols.Response && pdu.Anomaly.String() == "tid_mismatch" {
					m.PairedRequest = true // tolerated, as the check above shows
				}
				reason = refModbus(r.Modbus, pdu.Dir, &m)
			case r.DNP3 != nil:
				d := pdu.DNP3
				if pdu.Dir == protocols.Response && pdu.Anomaly.String() == "seq_mismatch" { // never with require_auth (Compile)
					d.PairedRequest = true
				}
				reason = refDNP3(r.DNP3, pdu.Dir, &d, st)
			case r.OPCUA != nil:
				reason = refOPCUA(r.OPCUA, pdu.Dir, &pdu.OPCUA)
			}
			if reason == ReasonAllowed {
				return refDecide(p, ci, ri, reason)
			}
			if deny == nil {
				d := refDecide(p, ci, ri, reason)
				deny = &d
			}
		}
	}
	if deny != nil {
		return *deny
	}
	return refDecide(p, cands[0], -1, ReasonProtocolNotAllowed)
}

// refTable splits "holding 0-9, 20" into the table and its ranges.
func refTable(spec string) (Table, [][2]int) {
	name, rest, _ := strings.Cut(strings.TrimSpace(spec), " ")
	var rr [][2]int
	if strings.TrimSpace(rest) == "" {
		rr = append(rr, [2]int{0, 65535})
	}
	for _, part := range strings.Split(rest, ",") {
		if strings.TrimSpace(part) != "" {
			a, b, _ := parseRange(part, 0, 65535)
			rr = append(rr, [2]int{a, b})
		}
	}
	return tableNames[name], rr
}

func refModbus(m *ModbusRule, dir protocols.Dir, p *Modbus) Reason {
	if len(m.Units) > 0 && !inList(m.Units, int(p.Unit), 0, 255) {
		return ReasonUnitNotAllowed
	}
	if dir == protocols.Response {
		if p.PairedRequest {
			return ReasonAllowed
		}
		return ReasonResponseWithoutRequest
	}
	hasTable := func(write bool, t Table) bool {
		for _, a := range m.Allow {
			spec := a.Read
			if write {
				spec = a.Write
			}
			if spec != "" {
				if tt, _ := refTable(spec); tt == t {
					return true
				}
			}
		}
		return false
	}
	// regOK: some allowance of the kind covers reg (and, for values, allows v).
	regOK := func(write bool, t Table, reg int, checkVal bool, v int, known bool) bool {
		for _, a := range m.Allow {
			spec := a.Read
			if write {
				spec = a.Write
			}
			if spec == "" {
				continue
			}
			tt, rr := refTable(spec)
			if tt != t {
				continue
			}
			for _, r := range rr {
				if reg < r[0] || reg > r[1] {
					continue
				}
				if !checkVal || a.Values == "" {
					return true
				}
				lo, hi, _ := parseRange(a.Values, 0, 65535)
				if known && v >= lo && v <= hi {
					return true
				}
			}
		}
		return false
	}
	access := func(write bool, t Table, addr, qty int, values bool, unknown bool) Reason {
		if qty == 0 {
			qty = 1
		}
		if addr+qty-1 > 65535 {
			return ReasonAddressOutOfRange
		}
		for reg := addr; reg < addr+qty; reg++ {
			if !regOK(write, t, reg, false, 0, false) {
				return ReasonAddressOutOfRange
			}
		}
		if values {
			for reg := addr; reg < addr+qty; reg++ {
				i := reg - addr
				known := !unknown && i < int(p.NValues)
				v := 0
				if known {
					v = int(p.Values[i])
				}
				if !regOK(write, t, reg, true, v, known) {
					return ReasonValueOutOfRange
				}
			}
		}
		return ReasonAllowed
	}
	if p.Unread {
		// The request ended before its address and sub-function: a
		// table function is refused for its address (once the function
		// is known to be allowed), a sub-function must be "any".
		switch p.FC {
		case 1, 2, 3, 4:
			t := map[uint8]Table{1: TableCoils, 2: TableDiscrete, 3: TableHolding, 4: TableInput}[p.FC]
			if !hasTable(false, t) {
				return ReasonFunctionNotAllowed
			}
			return ReasonAddressOutOfRange
		case 5, 15:
			if !hasTable(true, TableCoils) {
				return ReasonFunctionNotAllowed
			}
			return ReasonAddressOutOfRange
		case 6, 16, 22:
			if !hasTable(true, TableHolding) {
				return ReasonFunctionNotAllowed
			}
			return ReasonAddressOutOfRange
		case 23:
			if !hasTable(false, TableHolding) || !hasTable(true, TableHolding) {
				return ReasonFunctionNotAllowed
			}
			return ReasonAddressOutOfRange
		}
		for _, a := range m.Allow {
			for _, fs := range a.Function {
				if f, _ := parseModbusFunc(fs); f.fc == p.FC && f.anySub {
					return ReasonAllowed
				}
			}
		}
		return ReasonFunctionNotAllowed
	}
	switch p.FC {
	case 1, 2, 3, 4:
		t := map[uint8]Table{1: TableCoils, 2: TableDiscrete, 3: TableHolding, 4: TableInput}[p.FC]
		if !hasTable(false, t) {
			return ReasonFunctionNotAllowed
		}
		return access(false, t, int(p.Addr), int(p.Qty), false, false)
	case 5, 15:
		if !hasTable(true, TableCoils) {
			return ReasonFunctionNotAllowed
		}
		q := int(p.Qty)
		if p.FC == 5 {
			q = 1
		}
		return access(true, TableCoils, int(p.Addr), q, true, false)
	case 6, 16, 22:
		if !hasTable(true, TableHolding) {
			return ReasonFunctionNotAllowed
		}
		q := int(p.Qty)
		if p.FC != 16 {
			q = 1
		}
		return access(true, TableHolding, int(p.Addr), q, true, p.FC == 22)
	case 23:
		if !hasTable(false, TableHolding) || !hasTable(true, TableHolding) {
			return ReasonFunctionNotAllowed
		}
		if r := access(false, TableHolding, int(p.Addr), int(p.Qty), false, false); r != ReasonAllowed {
			return r
		}
		return access(true, TableHolding, int(p.WriteAddr), int(p.WriteQty), true, false)
	}
	for _, a := range m.Allow {
		for _, fs := range a.Function {
			f, _ := parseModbusFunc(fs)
			if f.fc == p.FC && (f.anySub || f.sub == p.Sub) {
				return ReasonAllowed
			}
		}
	}
	return ReasonFunctionNotAllowed
}

// refAuth follows the Secure Authentication exchange of one association as
// doc.go describes it.
type refAuth struct {
	awaiting      bool // a request expecting a response crossed, no final response yet
	control       bool // that request is a control (critical)
	authorised    bool // the control's challenge was answered, or it came in aggressive mode
	openChallenge bool // g120v1 sent, no g120v2 yet
	openKeyStatus bool // g120v5 sent, no g120v6 yet
	everAnswered  bool // some challenge was answered
}

// refControl: every request code except confirm, read, delay measure and
// the authentication requests.
func refControl(fc uint8) bool {
	switch fc {
	case 0, 1, 23, 32, 33, 129, 130, 131:
		return false
	}
	return true
}

func refNoResponse(fc uint8) bool {
	switch fc {
	case 0, 6, 8, 10, 12, 33:
		return true
	}
	return false
}

func refHas(p *DNP3, g, v uint8) bool {
	for i := 0; i < int(p.NObjects); i++ {
		if p.Objects[i].Group == g && p.Objects[i].Variation == v {
			return true
		}
	}
	return false
}

func refAllAuth(p *DNP3) bool {
	if p.ObjectsTruncated {
		return false
	}
	for i := 0; i < int(p.NObjects); i++ {
		if p.Objects[i].Group != 120 {
			return false
		}
	}
	return true
}

func refAggressive(p *DNP3) bool {
	n := int(p.NObjects)
	return !p.ObjectsTruncated && n >= 2 && p.Objects[0] == DNP3Object{Group: 120, Variation: 3, Qualifier: p.Objects[0].Qualifier, Start: p.Objects[0].Start, Stop: p.Objects[0].Stop} &&
		p.Objects[n-1].Group == 120 && p.Objects[n-1].Variation == 9
}

func (st *refAuth) advance(dir protocols.Dir, p *DNP3) {
	if dir == protocols.Response {
		if p.FC == 131 {
			if refHas(p, 120, 1) {
				st.openChallenge = true
			}
			if refHas(p, 120, 5) {
				st.openKeyStatus = true
			}
			if refHas(p, 120, 7) {
				st.openChallenge = false
			}
		}
		if p.FC == 129 && !p.Unsolicited {
			st.awaiting, st.control, st.authorised, st.openChallenge = false, false, false, false
		}
		return
	}
	switch p.FC {
	case 32:
		if refHas(p, 120, 2) && st.openChallenge {
			st.openChallenge = false
			st.everAnswered = true
			st.authorised = st.authorised || st.control
		}
		if refHas(p, 120, 6) && st.openKeyStatus {
			st.openKeyStatus = false
			st.everAnswered = true
		}
		st.awaiting = true
	case 0, 33:
	default:
		st.awaiting = !refNoResponse(p.FC)
		st.control = refControl(p.FC)
		st.authorised = st.control && refAggressive(p)
		st.openChallenge = false
	}
}

func refDNP3(d *DNP3Rule, dir protocols.Dir, p *DNP3, st *refAuth) Reason {
	master, outstation := int(p.LinkSrc), int(p.LinkDst)
	if dir == protocols.Response {
		master, outstation = outstation, master
	}
	if (len(d.Masters) > 0 && !inList(d.Masters, master, 0, 65535)) || (len(d.Outstations) > 0 && !inList(d.Outstations, outstation, 0, 65535)) {
		return ReasonLinkAddressNotAllowed
	}
	if dir == protocols.Response {
		if p.FC == 130 || p.Unsolicited {
			for _, a := range d.Allow {
				if a.Unsolicited {
					return ReasonAllowed
				}
			}
			return ReasonUnsolicitedNotAllowed
		}
		if d.RequireAuth {
			if p.FC == 131 {
				switch {
				case !refAllAuth(p):
					return ReasonObjectNotAllowed
				case p.PairedRequest || st.awaiting:
					return ReasonAllowed
				}
				return ReasonResponseWithoutRequest
			}
			if p.PairedRequest && st.control && !st.authorised {
				return ReasonAuthRequired
			}
		}
		if p.PairedRequest || (p.FC == 131 && st.awaiting) {
			return ReasonAllowed
		}
		return ReasonResponseWithoutRequest
	}
	if p.FuncUnread {
		return ReasonFunctionNotAllowed
	}
	if d.RequireAuth {
		switch {
		case p.FC == 32 || p.FC == 33:
			switch {
			case !refAllAuth(p):
				return ReasonObjectNotAllowed
			case p.FC == 32 && refHas(p, 120, 2) && !st.openChallenge:
				return ReasonAuthRequired
			case p.FC == 32 && refHas(p, 120, 6) && !st.openKeyStatus:
				return ReasonAuthRequired
			}
			return ReasonAllowed
		case refControl(p.FC) && refAggressive(p):
			if !st.everAnswered {
				return ReasonAuthRequired
			}
			// Judge the request without its authentication objects.
			q := *p
			q.NObjects = 0
			for i := 0; i < int(p.NObjects); i++ {
				if p.Objects[i].Group != 120 {
					q.Objects[q.NObjects] = p.Objects[i]
					q.NObjects++
				}
			}
			p = &q
		}
	}
	fcKnown := false
	for i := 0; i < int(p.NObjects)+1; i++ {
		// i == NObjects: the function itself, with no object left to check.
		ok := false
		for _, a := range d.Allow {
			for _, fs := range a.Function {
				fc, _ := parseDNP3Func(fs)
				if fc != p.FC || a.Unsolicited {
					continue
				}
				fcKnown = true
				if len(a.Objects) == 0 || i == int(p.NObjects) {
					ok = true
					continue
				}
				if p.ObjectsTruncated {
					continue
				}
				for _, os := range a.Objects {
					o, _ := parseDNP3Object(os)
					if o.group == p.Objects[i].Group && (o.anyVar || o.variation == p.Objects[i].Variation) {
						ok = true
					}
				}
			}
		}
		if !fcKnown {
			return ReasonFunctionNotAllowed
		}
		// An entry without objects allows any object.
		anyObj := false
		for _, a := range d.Allow {
			for _, fs := range a.Function {
				if fc, _ := parseDNP3Func(fs); fc == p.FC && len(a.Objects) == 0 {
					anyObj = true
				}
			}
		}
		if anyObj {
			return ReasonAllowed
		}
		if p.ObjectsTruncated {
			return ReasonObjectNotAllowed
		}
		if !ok {
			return ReasonObjectNotAllowed
		}
	}
	return ReasonAllowed
}

func refOPCUA(u *OPCUARule, dir protocols.Dir, p *OPCUA) Reason {
	switch p.MsgType {
	case opcua.TypeHEL, opcua.TypeACK, opcua.TypeERR, opcua.TypeRHE, opcua.TypeCLO:
		return ReasonAllowed
	case opcua.TypeOPN, opcua.TypeMSG:
	default:
		return ReasonServiceNotAllowed
	}
	if dir == protocols.Response {
		if p.PairedRequest {
			return ReasonAllowed
		}
		return ReasonResponseWithoutRequest
	}
	min := map[string]opcua.SecurityMode{"": 1, "none": 1, "sign": 2, "sign_and_encrypt": 3}[u.MinSecurityMode]
	// Unknown mode (no OPN seen) meets only the default minimum, None.
	if p.SecurityMode < min && !(p.SecurityMode == opcua.ModeInvalid && min == opcua.ModeNone) {
		return ReasonSecurityModeTooLow
	}
	if p.MsgType == opcua.TypeOPN {
		if len(u.SecurityPolicies) > 0 && !contains(u.SecurityPolicies, p.SecurityPolicy) {
			return ReasonSecurityPolicyNotAllowed
		}
		return ReasonAllowed
	}
	if p.ServiceID == 0 {
		if p.SecurityMode == opcua.ModeSignAndEncrypt {
			return ReasonAllowed
		}
		return ReasonServiceNotAllowed
	}
	for _, id := range opcuaImplied {
		if id == p.ServiceID {
			return ReasonAllowed
		}
	}
	listed := false
	for _, a := range u.Allow {
		for _, s := range a.Service {
			if id, _ := parseService(s); id == p.ServiceID {
				listed = true
				if len(a.Nodes) == 0 || (id != opcuaWrite && id != opcuaCall) {
					return ReasonAllowed
				}
			}
		}
	}
	if !listed {
		return ReasonServiceNotAllowed
	}
	if p.NodesTruncated {
		return ReasonNodeNotAllowed
	}
	for i := 0; i < int(p.NNodes); i++ {
		ok := false
		for _, a := range u.Allow {
			for _, s := range a.Service {
				if id, _ := parseService(s); id != p.ServiceID {
					continue
				}
				for _, ns := range a.Nodes {
					n, _ := opcua.ParseNodeID(ns)
					q := &p.Nodes[i]
					if n.Namespace == q.Namespace && n.Type == q.Type && n.Numeric == q.Numeric && string(n.Bytes) == string(q.Bytes) {
						ok = true
					}
				}
			}
		}
		if !ok {
			return ReasonNodeNotAllowed
		}
	}
	return ReasonAllowed
}

// ---- random generation ----

var (
	genIPs = []string{"192.0.2.10", "192.0.2.11", "192.0.2.20", "192.0.2.130", "192.0.2.131", "192.0.2.200"}
	genMAC = "02:00:00:00:00:0a"
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func genRange(r *rand.Rand, max int) string {
	a := r.IntN(max + 1)
	if r.IntN(3) == 0 {
		return fmt.Sprint(a)
	}
	b := a + r.IntN(max-a+1)
	return fmt.Sprintf("%d-%d", a, b)
}

func genPolicy(r *rand.Rand) *Policy {
	p := &Policy{Version: 1, Name: "rand", Mode: pick(r, []string{"", "enforce", "monitor"})}
	p.Zones = []Zone{
		{Name: "south", Port: "south", Networks: []string{"192.0.2.0/25"}},
		{Name: "north", Port: "north", Networks: []string{"192.0.2.128/25"}},
	}
	if r.IntN(2) == 0 {
		p.Zones = append(p.Zones, Zone{Name: "vl", Port: "north", VLANs: []string{pick(r, []string{"10", "10-20", "30"})}})
	}
	p.Assets = []Asset{
		{Name: "plc1", IP: "192.0.2.10", Zone: "south"},
		{Name: "plc2", IP: "192.0.2.20", Zone: "south"},
		{Name: "hmi", IP: "192.0.2.130", Zone: "north"},
	}
	if r.IntN(2) == 0 {
		p.Assets[0].MAC = genMAC
	}
	north := []string{"north", "hmi"}
	south := []string{"south", "plc1", "plc2"}
	if len(p.Zones) == 3 {
		north = append(north, "vl")
	}
	nc := 1 + r.IntN(4)
	for i := 0; i < nc; i++ {
		c := Conduit{Name: fmt.Sprintf("c%d", i), Mode: pick(r, []string{"", "", "monitor", "enforce"})}
		from, to := north, south
		if r.IntN(4) == 0 {
			from, to = south, north
		}
		c.From = []string{pick(r, from)}
		if r.IntN(3) == 0 {
			c.From = append(c.From, pick(r, from))
		}
		c.To = []string{pick(r, to)}
		nr := 1 + r.IntN(3)
		for j := 0; j < nr; j++ {
			c.Rules = append(c.Rules, genRule(r))
		}
		if r.IntN(5) == 0 {
			// Tolerate lists must name an anomaly of one of the conduit's
			// inspected protocols.
			for _, rule := range c.Rules {
				if t := genTolerate(&rule); t != "" {
					c.Tolerate = []string{t}
					break
				}
			}
		}
		p.Conduits = append(p.Conduits, c)
	}
	return p
}

// genTolerate returns an anomaly the rule's parser reports, "" for rules
// without a parser.
func genTolerate(rule *Rule) string {
	switch {
	case rule.Modbus != nil:
		return "pdu_length"
	case rule.DNP3 != nil:
		return "bad_qualifier"
	case rule.OPCUA != nil:
		return "truncated"
	}
	return ""
}

func genDNP3Rule(r *rand.Rand) *DNP3Rule {
	d := &DNP3Rule{}
	d.RequireAuth = r.IntN(3) == 0
	if r.IntN(4) == 0 {
		d.Tolerate = []string{"bad_qualifier"}
		if !d.RequireAuth {
			d.Tolerate = append(d.Tolerate, "seq_mismatch")
		}
	}
	if r.IntN(2) == 0 {
		d.Masters = []string{genRange(r, 3)}
	}
	if r.IntN(2) == 0 {
		d.Outstations = []string{genRange(r, 12)}
	}
	for k := 0; k < 1+r.IntN(3); k++ {
		if r.IntN(5) == 0 {
			d.Allow = append(d.Allow, DNP3Allow{Unsolicited: true})
			continue
		}
		a := DNP3Allow{Function: []string{pick(r, []string{"read", "write", "select", "operate", "direct_operate", "confirm", "2", "authenticate_req"})}}
		for o := 0; o < r.IntN(3); o++ {
			a.Objects = append(a.Objects, pick(r, []string{"g1", "g2", "g12v1", "g30", "g60v1", "binary_input", "g32v2"}))
		}
		d.Allow = append(d.Allow, a)
	}
	return d
}

func genRule(r *rand.Rand) Rule {
	switch r.IntN(6) {
	case 0, 1:
		m := &ModbusRule{}
		if r.IntN(2) == 0 {
			m.Units = []string{genRange(r, 4)}
		}
		if r.IntN(6) == 0 {
			m.Ports = []string{"5020"}
		}
		if r.IntN(4) == 0 {
			m.Tolerate = []string{"pdu_length", "tid_mismatch"}
		}
		for k := 0; k < 1+r.IntN(4); k++ {
			tbl := pick(r, []string{"coils", "discrete", "input", "holding"})
			switch r.IntN(3) {
			case 0:
				m.Allow = append(m.Allow, ModbusAllow{Read: tbl + " " + genRange(r, 40)})
			case 1:
				tbl = pick(r, []string{"coils", "holding", "holding"})
				a := ModbusAllow{Write: tbl + " " + genRange(r, 40)}
				if tbl == "holding" && r.IntN(4) != 0 {
					a.Values = genRange(r, 100)
				}
				m.Allow = append(m.Allow, a)
			default:
				m.Allow = append(m.Allow, ModbusAllow{Function: []string{pick(r, []string{"8", "8/0", "43/14", "diagnostics", "report_server_id", "7"})}})
			}
		}
		return Rule{Modbus: m}
	case 2:
		return Rule{DNP3: genDNP3Rule(r)}
	case 3:
		u := &OPCUARule{MinSecurityMode: pick(r, []string{"", "none", "sign", "sign_and_encrypt"})}
		if r.IntN(4) == 0 {
			u.Tolerate = []string{"truncated"}
		}
		if r.IntN(2) == 0 {
			u.SecurityPolicies = []string{pick(r, []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep"})}
		}
		for k := 0; k < 1+r.IntN(3); k++ {
			a := OPCUAAllow{Service: []string{pick(r, []string{"read", "browse", "write", "call", "publish", "write", "call"})}}
			if (a.Service[0] == "write" || a.Service[0] == "call") && r.IntN(4) != 0 {
				a.Nodes = []string{pick(r, []string{"ns=2;s=A", "ns=2;s=B", "i=2258"})}
			}
			u.Allow = append(u.Allow, a)
		}
		return Rule{OPCUA: u}
	case 4:
		return Rule{TCP: &PortRule{Ports: []string{pick(r, []string{"22", "502", "1-1024"})}}}
	}
	return Rule{UDP: &PortRule{}}
}

func genFlowPDU(r *rand.Rand, f *Flow, p *PDU) {
	*f = Flow{}
	north, south := genIPs[3:], genIPs[:3]
	f.Src, f.Dst = netip.MustParseAddr(pick(r, north)), netip.MustParseAddr(pick(r, south))
	f.InPort, f.OutPort = "north", "south"
	switch r.IntN(8) {
	case 0:
		f.Src, f.Dst = f.Dst, f.Src
		f.InPort, f.OutPort = "south", "north"
	case 1:
		f.Src, f.Dst = netip.MustParseAddr(pick(r, genIPs)), netip.MustParseAddr(pick(r, genIPs))
		if r.IntN(2) == 0 {
			f.InPort, f.OutPort = "", ""
		}
	}
	if r.IntN(3) == 0 {
		f.VLAN = uint16(pick(r, []int{10, 15, 30}))
	}
	if r.IntN(2) == 0 {
		f.SrcMAC = [6]byte{2, 0, 0, 0, 0, byte(pick(r, []int{10, 11}))}
		f.DstMAC = [6]byte{2, 0, 0, 0, 0, byte(pick(r, []int{10, 11}))}
	}
	f.Transport = TransportTCP
	if r.IntN(8) == 0 {
		f.Transport = TransportUDP
	}
	*p = PDU{Dir: protocols.Request}
	if r.IntN(5) == 0 {
		p.Dir = protocols.Response
	}
	var anomaly string
	if r.IntN(15) == 0 {
		anomaly = pick(r, []string{"pdu_length", "bad_qualifier", "truncated", "crc_error", "tid_mismatch", "seq_mismatch"})
	}
	defer func() {
		if anomaly == "" {
			return
		}
		// A name the protocol's parser does not report stands for a
		// code its vocabulary does not name: never tolerated.
		a, ok := protocols.AnomalyByName(p.Proto, anomaly)
		if !ok {
			a = protocols.NewAnomaly(p.Proto, 200)
		}
		p.Anomaly = a
	}()
	switch r.IntN(3) {
	case 0:
		p.Proto = protocols.ProtoModbus
		f.DstPort = uint16(pick(r, []int{502, 502, 5020, 22}))
		m := &p.Modbus
		m.Unit = uint8(r.IntN(6))
		m.FC = uint8(pick(r, []int{1, 2, 3, 4, 5, 6, 6, 6, 15, 16, 16, 16, 22, 23, 23, 8, 43, 17, 7, 90}))
		m.Sub = uint16(pick(r, []int{0, 1, 14}))
		m.Addr = uint16(r.IntN(45))
		m.Qty = uint16(r.IntN(12))
		if r.IntN(30) == 0 {
			m.Addr = 65530
		}
		m.WriteAddr, m.WriteQty = uint16(r.IntN(45)), uint16(1+r.IntN(8))
		m.NValues = uint8(r.IntN(12))
		for i := range m.NValues {
			m.Values[i] = uint16(r.IntN(70))
		}
		m.PairedRequest = r.IntN(2) == 0
		m.Unread = r.IntN(15) == 0
	case 1:
		p.Proto = protocols.ProtoDNP3
		f.DstPort = uint16(pick(r, []int{20000, 20000, 502}))
		d := &p.DNP3
		d.LinkSrc, d.LinkDst = uint16(r.IntN(5)), uint16(r.IntN(14))
		d.FC = uint8(pick(r, []int{0, 1, 2, 3, 4, 5, 129, 130, 32, 131}))
		d.NObjects = uint8(r.IntN(4))
		for i := range d.NObjects {
			d.Objects[i] = DNP3Object{Group: uint8(pick(r, []int{1, 2, 12, 30, 32, 60, 120})), Variation: uint8(r.IntN(3))}
		}
		if r.IntN(8) == 0 {
			genAggressive(d)
		}
		d.ObjectsTruncated = r.IntN(20) == 0
		d.FuncUnread = r.IntN(25) == 0
		d.Unsolicited = r.IntN(3) == 0
		d.PairedRequest = r.IntN(2) == 0
	default:
		p.Proto = protocols.ProtoOPCUA
		f.DstPort = uint16(pick(r, []int{4840, 4840, 22}))
		u := &p.OPCUA
		u.MsgType = opcua.MessageType(pick(r, []int{0, 1, 2, 3, 4, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7}))
		u.SecurityMode = opcua.SecurityMode(r.IntN(4))
		u.SecurityPolicy = pick(r, []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep"})
		u.ServiceID = uint32(pick(r, []int{0, 631, 527, 673, 673, 712, 712, 826, 461, 999}))
		u.NNodes = uint8(1 + r.IntN(2))
		for i := range u.NNodes {
			u.Nodes[i] = pick(r, []opcua.NodeID{opcua.StringID(2, "A"), opcua.StringID(2, "B"), opcua.Numeric(0, 2258)})
		}
		u.NodesTruncated = r.IntN(20) == 0
		u.PairedRequest = r.IntN(2) == 0
	}
}

// genAggressive frames d's objects as an aggressive-mode request: g120v3
// first, g120v9 last.
func genAggressive(d *DNP3) {
	n := min(int(d.NObjects), MaxObjects-2)
	copy(d.Objects[1:], d.Objects[:n])
	d.Objects[0] = DNP3Object{Group: 120, Variation: 3, Qualifier: 0x5b, Start: 0, Stop: 0}
	d.Objects[n+1] = DNP3Object{Group: 120, Variation: 9, Qualifier: 0x5b}
	d.NObjects = uint8(n + 2)
}

// TestCompiledMatchesReference compares Evaluate with refEvaluate on random
// (policy, flow, PDU) triples.
func TestCompiledMatchesReference(t *testing.T) {
	// The same count under qemu emulation (a few seconds there): the
	// coverage check below needs it on every architecture.
	want := 100_000
	r := rand.New(rand.NewPCG(1, 2))
	pairs, policies, allowed := 0, 0, 0
	reasons := map[Reason]int{}
	for pairs < want {
		p := genPolicy(r)
		rs, err := Compile(p)
		if err != nil {
			continue // e.g. a conduit that can never match
		}
		policies++
		var f Flow
		var pdu PDU
		for range 50 {
			genFlowPDU(r, &f, &pdu)
			got := rs.Evaluate(&f, &pdu)
			exp := refEvaluate(p, &f, &pdu)
			pairs++
			reasons[exp.reason]++
			if got.Action == Allow {
				allowed++
			}
			if got.Action != exp.action || got.Reason != exp.reason || got.Conduit != exp.conduit || got.Rule != exp.rule {
				pol, _ := Marshal(p)
				t.Fatalf("pair %d: compiled %v/%v conduit %d rule %d, reference %v/%v conduit %d rule %d\nflow %+v\npdu %+v\npolicy:\n%s",
					pairs, got.Action, got.Reason, got.Conduit, got.Rule, exp.action, exp.reason, exp.conduit, exp.rule, f, pdu, pol)
			}
		}
	}
	t.Logf("%d pairs over %d policies agree; %d allowed; reasons %v", pairs, policies, allowed, reasons)
	// The generator must exercise the interesting outcomes, or the
	// agreement means little.
	for _, must := range []Reason{ReasonAllowed, ReasonNoConduit, ReasonFunctionNotAllowed, ReasonAddressOutOfRange,
		ReasonValueOutOfRange, ReasonUnitNotAllowed, ReasonObjectNotAllowed, ReasonSecurityModeTooLow,
		ReasonServiceNotAllowed, ReasonNodeNotAllowed, ReasonUnsolicitedNotAllowed, ReasonResponseWithoutRequest,
		ReasonMalformed, ReasonLinkAddressNotAllowed, ReasonSecurityPolicyNotAllowed, ReasonProtocolNotAllowed} {
		if reasons[must] < 20 {
			t.Errorf("reason %v seen %d times; the generator should reach it more often", must, reasons[must])
		}
	}
}
