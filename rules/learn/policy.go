package learn

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
)

// unzoned is the zone of hosts outside every --zone.
const unzoned = "observed"

func selfZone(a netip.Addr) string { return "self-" + assetName(a) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// assetName names a host after its address ("h-192-0-2-10").
func assetName(a netip.Addr) string {
	s := a.String()
	s = strings.NewReplacer(".", "-", ":", "-", "%", "-").Replace(s)
	return "h-" + strings.Trim(s, "-")
}

func (l *Learner) zoneOf(a netip.Addr) string {
	best, bits := "", -1
	for _, z := range l.opts.Zones {
		for _, n := range z.Networks {
			p, err := netip.ParsePrefix(n)
			if err == nil && p.Contains(a) && p.Bits() > bits {
				best, bits = z.Name, p.Bits()
			}
		}
	}
	return best
}

// merge joins overlapping or adjacent intervals; the seen counts add up.
func merge(m map[[2]uint32]*seen) ([][2]uint32, []seen) {
	keys := make([][2]uint32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	var out [][2]uint32
	var ss []seen
	for _, k := range keys {
		s := m[k]
		if n := len(out); n > 0 && k[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], k[1])
			ss[n-1].merge(s)
			continue
		}
		out = append(out, k)
		ss = append(ss, *s)
	}
	return out, ss
}

func (s *seen) merge(o *seen) {
	if o.n == 0 {
		return
	}
	if s.n == 0 || o.first.Before(s.first) {
		s.first = o.first
	}
	if o.last.After(s.last) {
		s.last = o.last
	}
	s.n += o.n
}

func rangeStr(r [2]uint32) string {
	if r[0] == r[1] {
		return strconv.Itoa(int(r[0]))
	}
	return fmt.Sprintf("%d-%d", r[0], r[1])
}

func sortedNums[K ~uint8 | ~uint16 | ~uint32](m map[K]*seen) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

var tableOrder = []rules.Table{rules.TableCoils, rules.TableDiscrete, rules.TableInput, rules.TableHolding}

var modeNames = map[opcua.SecurityMode]string{opcua.ModeNone: "none", opcua.ModeSign: "sign", opcua.ModeSignAndEncrypt: "sign_and_encrypt"}

// dnp3Name is the policy name of a function code (IEEE 1815-2012 Table
// 4-1), as rules reads it; the number when it has none.
func dnp3Name(fc uint8) string {
	f := dnp3.FunctionCode(fc)
	if f.Known() {
		if back, ok := dnp3.FunctionByName(f.String()); ok && uint8(back) == fc {
			return f.String()
		}
	}
	return strconv.Itoa(int(fc))
}

// Policy drafts the policy from what was observed. It is deterministic:
// assets are sorted by address and conduits by first appearance.
func (l *Learner) Policy() *rules.Policy {
	name := l.opts.Name
	if name == "" {
		name = "learned"
	}
	action := l.opts.Action
	if action == "" {
		action = "reply"
	}
	p := &rules.Policy{Version: 1, Name: name, Mode: "enforce", Action: action}
	for _, z := range l.opts.Zones {
		p.Zones = append(p.Zones, rules.Zone{Name: z.Name, Port: z.Port, Networks: z.Networks,
			Comment: "zone given with --zone"})
	}
	addrs := make([]netip.Addr, 0, len(l.assets))
	for a := range l.assets {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	// Every asset needs a zone: those outside the given zones go to a zone
	// of their own host addresses, which the reviewer should replace with
	// the real networks.
	// A host that talks to itself (a loopback capture) gets a zone of its
	// own, so that the conduit naming that zone on both sides covers only it.
	self := map[netip.Addr]bool{}
	for k := range l.conduits {
		if k.from == k.to && l.zoneOf(k.from) == "" {
			self[k.from] = true
		}
	}
	var occupied []netip.Prefix // --zone networks and self hosts: group zones must not overlap them
	for _, z := range l.opts.Zones {
		for _, n := range z.Networks {
			if pf, err := netip.ParsePrefix(n); err == nil {
				occupied = append(occupied, pf)
			}
		}
	}
	groups := map[netip.Prefix][]netip.Addr{}
	var order []netip.Prefix
	for _, a := range addrs {
		if self[a] {
			p.Zones = append(p.Zones, rules.Zone{Name: selfZone(a), Networks: []string{netip.PrefixFrom(a, a.BitLen()).String()},
				Comment: "a host seen talking to itself (loopback capture)"})
			occupied = append(occupied, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		if l.zoneOf(a) == "" {
			g := groupPrefix(a)
			if groups[g] == nil {
				order = append(order, g)
			}
			groups[g] = append(groups[g], a)
		}
	}
	// Hosts outside the given zones are grouped into networks (IPv4 /24,
	// IPv6 /64), a zone each, unless such a network would overlap a given
	// zone or a loopback host's: those hosts go to one zone of host
	// addresses. The reviewer should replace both with the real networks
	// and set their bridge port.
	zoneOfHost := map[netip.Addr]string{}
	var rest []string
	for _, g := range order {
		hosts := groups[g]
		if slices.ContainsFunc(occupied, g.Overlaps) {
			for _, a := range hosts {
				rest = append(rest, netip.PrefixFrom(a, a.BitLen()).String())
				zoneOfHost[a] = unzoned
			}
			continue
		}
		name := netName(g)
		for _, a := range hosts {
			zoneOfHost[a] = name
		}
		p.Zones = append(p.Zones, rules.Zone{Name: name, Networks: []string{g.String()},
			Comment: fmt.Sprintf("%d host%s seen in %s, outside any --zone (grouped by /%d): narrow or widen to the real network and set its bridge port",
				len(hosts), plural(len(hosts)), g, g.Bits())})
	}
	if len(rest) > 0 {
		p.Zones = append(p.Zones, rules.Zone{Name: unzoned, Networks: rest,
			Comment: "hosts seen outside any --zone whose network would overlap another zone: replace with the real networks and bridge port"})
	}
	l.hostZone = func(a netip.Addr) string {
		switch {
		case self[a]:
			return selfZone(a)
		case zoneOfHost[a] != "":
			return zoneOfHost[a]
		}
		return l.zoneOf(a)
	}
	for _, a := range addrs {
		s := l.assets[a]
		z := l.hostZone(a)
		p.Assets = append(p.Assets, rules.Asset{Name: assetName(a), IP: a.String(), Zone: z,
			Comment: fmt.Sprintf("first seen %s, last seen %s", s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339))})
	}
	var l2c []string
	l2seen := map[string]*seen{}
	for _, et := range sortedNums(l.l2) {
		name := rules.EtherTypeName(et)
		if s := l2seen[name]; s != nil {
			s.merge(l.l2[et])
			continue
		}
		s := *l.l2[et]
		l2seen[name] = &s
		p.L2.Allow = append(p.L2.Allow, name)
	}
	for _, name := range p.L2.Allow {
		what := "ethertype " + name
		if name == rules.L2LLC {
			what = "802.3 frames with a length field (llc)"
		}
		l2c = append(l2c, l2seen[name].comment(what))
	}
	p.L2.Comment = strings.Join(l2c, "\n")
	p.Detections = l.rates.detections()
	names := map[string]int{}
	portOf := map[string]string{}
	for _, z := range l.opts.Zones {
		portOf[z.Name] = z.Port
	}
	sameSide := map[string]int{} // zone -> flows between its hosts that cannot cross the gateway
	for _, k := range l.order {
		c := l.conduits[k]
		if zf, zt := l.hostZone(k.from), l.hostZone(k.to); portOf[zf] != "" && portOf[zf] == portOf[zt] {
			// Both ends behind one bridge port (a capture taken on that
			// side): such traffic never crosses the gateway, and check
			// refuses a conduit for it.
			sameSide[zf] += c.all.n
			continue
		}
		cd := rules.Conduit{
			Name:    conduitName(l.hostZone(k.from), l.hostZone(k.to), k.proto, names),
			From:    []string{assetName(k.from)},
			To:      []string{assetName(k.to)},
			Comment: c.all.comment(k.proto + " from " + k.from.String() + " to " + k.to.String()),
		}
		if k.from == k.to {
			// Both ends on one host (a loopback capture): a conduit joins
			// two endpoints, so name the host's zone on both sides.
			z := l.zoneOf(k.from)
			if z == "" {
				z = selfZone(k.from)
			}
			cd.From, cd.To = []string{z}, []string{z}
			cd.Comment += "\nboth ends are one host: the conduit names its zone"
		}
		r, ok := c.rule()
		if !ok {
			continue
		}
		for _, pt := range sortedNums(c.ports) {
			if p, ok := l.detected[pt]; ok && p.String() == k.proto && l.opts.Ports[pt] != p {
				r.Comment = joinComments(fmt.Sprintf("%s recognised by its content on port %d (not its standard port): inspected there", k.proto, pt), r.Comment)
			}
		}
		cd.Rules = append(cd.Rules, r)
		p.Conduits = append(p.Conduits, cd)
	}
	for i := range p.Zones {
		if n := sameSide[p.Zones[i].Name]; n > 0 {
			p.Zones[i].Comment = joinComments(p.Zones[i].Comment, fmt.Sprintf("%d observation%s of traffic between hosts behind port %s (this zone and others on it) "+
				"never cross the gateway: no conduit drafted for them", n, plural(n), portOf[p.Zones[i].Name]))
		}
	}
	return p
}

// groupPrefix is the network learn groups an address into: its /24
// (IPv4) or /64 (IPv6).
func groupPrefix(a netip.Addr) netip.Prefix {
	bits := 24
	if a.Is6() {
		bits = 64
	}
	g, _ := a.Prefix(bits)
	return g
}

// netName names the zone of a grouped network ("net-192-0-2-0-24").
func netName(g netip.Prefix) string {
	s := strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(g.String())
	for strings.Contains(s, "--") {
		s = strings.ReplaceAll(s, "--", "-")
	}
	return "net-" + strings.Trim(s, "-")
}

// conduitName names a conduit by the zones of its initiator and responder
// and its protocol ("net-192-0-2-128-24-to-net-192-0-2-0-24-modbus"), with
// a number from the second conduit of the same zones and protocol on.
func conduitName(from, to, proto string, used map[string]int) string {
	base := from + "-to-" + to + "-" + proto
	if from == to {
		base = "within-" + from + "-" + proto
	}
	used[base]++
	if n := used[base]; n > 1 {
		return fmt.Sprintf("%s-%d", base, n)
	}
	return base
}

func ports(m map[uint16]*seen, def uint16) []string {
	var out []string
	for _, pt := range sortedNums(m) {
		if pt == def && len(m) == 1 {
			return nil
		}
		if pt != 0 {
			out = append(out, strconv.Itoa(int(pt)))
		}
	}
	return out
}

func (c *conduitObs) tol() []string { return sortedKeys(c.tolerate) }

// uninspected names the industrial protocol conventionally on port pt of
// transport ("tcp", "udp") that the gateway does not inspect, "" for none
// (protocols.Recognise by port: S7comm on TCP 102, EtherNet/IP on 44818
// and UDP 2222, IEC 60870-5-104 on TCP 2404).
func uninspected(transport string, pt uint16) string {
	return protocols.Recognise(transport == "udp", 0, pt, nil).Title()
}

// cannotName heads the comment of something learn saw that the policy
// language has no valid key for: the draft says so instead of writing a
// key check would refuse.
const cannotName = "REVIEW: seen but cannot be allowed"

// tolWarning is the phrase every tolerated anomaly carries: parser
// anomalies are what a gateway exists to stop, and learn tolerates them
// only so that replaying the learning captures denies nothing.
const tolWarning = "observed anomaly: review before enforcing"

// anomalyHints say, for anomalies whose name alone does not tell the
// reviewer what tolerating them lets through, what was seen.
var anomalyHints = map[string]string{
	"long_adu": "Modbus ADUs over the 260-byte limit, MBAP length 255, as Schneider UMAS (FC 90) engineering sessions carry; without it each is denied as malformed:long_adu and the session is cut",
}

// tolComment is the head comment of a rule with tolerate entries: one
// line per anomaly with its count and first/last seen time.
func (c *conduitObs) tolComment() string {
	var parts []string
	for _, k := range sortedKeys(c.tolerate) {
		what := tolWarning + ": tolerate " + k
		if h := anomalyHints[k]; h != "" {
			what += ": " + h
		}
		parts = append(parts, c.tolerate[k].comment(what))
	}
	for _, k := range sortedKeys(c.notes) {
		parts = append(parts, c.notes[k].comment(cannotName+": "+k))
	}
	for _, k := range sortedKeys(c.unframed) {
		parts = append(parts, c.unframed[k].comment(fmt.Sprintf("%s: %s (bytes that cannot be framed as %s: enforcement denies them whatever the policy says; check the device or the capture)",
			unframedWarning, k, c.key.proto)))
	}
	return strings.Join(parts, "\n")
}

// unframedWarning heads the comment of an anomaly learn saw but cannot
// tolerate (rules.Tolerable): enforcement denies such bytes.
const unframedWarning = "REVIEW: observed anomaly that no policy can allow"

// tolLine is the end-of-line comment of a rule with tolerate entries, so
// the warning shows on the rule's own line too: "observed anomaly: review
// before enforcing: tid_mismatch x3 (first ..., last ...)".
func (c *conduitObs) tolLine() string {
	var parts []string
	for _, k := range sortedKeys(c.tolerate) {
		s := c.tolerate[k]
		parts = append(parts, fmt.Sprintf("%s x%d (first %s, last %s)", k, s.n,
			s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339)))
	}
	if len(parts) == 0 {
		return ""
	}
	return tolWarning + ": " + strings.Join(parts, "; ")
}

func joinComments(cs ...string) string {
	var out []string
	for _, c := range cs {
		if c != "" {
			out = append(out, c)
		}
	}
	return strings.Join(out, "\n")
}

// rule builds the conduit's single rule; false when nothing can be allowed.
func (c *conduitObs) rule() (rules.Rule, bool) {
	switch c.key.proto {
	case "tcp", "udp":
		pr := &rules.PortRule{}
		var cs []string
		for _, pt := range sortedNums(c.ports) {
			if pt == 0 {
				// Port 0 is reserved (RFC 6335): no rule can name it.
				cs = append(cs, c.ports[pt].comment(cannotName+": flows to port 0"))
				continue
			}
			pr.Ports = append(pr.Ports, strconv.Itoa(int(pt)))
			cs = append(cs, c.ports[pt].comment(fmt.Sprintf("port %d: flows", pt)))
		}
		if len(pr.Ports) == 0 {
			return rules.Rule{}, false
		}
		for _, pt := range sortedNums(c.ports) {
			if name := uninspected(c.key.proto, pt); name != "" {
				cs = append([]string{fmt.Sprintf("WARNING: %s on port %d passes UNINSPECTED: the gateway checks only the port, "+
					"not the %s functions (program download, stop CPU, writes all pass); restrict the hosts, or keep it out of the draft", name, pt, name)}, cs...)
			}
		}
		for _, pt := range sortedNums(c.srcPorts) {
			if name := uninspected(c.key.proto, pt); name != "" {
				cs = append([]string{fmt.Sprintf("WARNING: %s (port %d) passes UNINSPECTED, and the capture joined these connections after they opened: "+
					"the host on port %d is likely the server, so this draft may allow the wrong direction; review", name, pt, pt)}, cs...)
			}
		}
		r := rules.Rule{Comment: strings.Join(cs, "\n")}
		if c.key.proto == "tcp" {
			r.TCP = pr
		} else {
			r.UDP = pr
		}
		return r, true
	case "icmp":
		ir := &rules.ICMPRule{}
		var cs []string
		for _, ty := range sortedNums(c.icmp) {
			ir.Types = append(ir.Types, strconv.Itoa(int(ty)))
			cs = append(cs, c.icmp[ty].comment(fmt.Sprintf("type %d", ty)))
		}
		return rules.Rule{ICMP: ir, Comment: strings.Join(cs, "\n")}, true
	case "modbus":
		return c.modbusRule(), true
	case "dnp3":
		return c.dnp3Rule(), true
	case "opcua":
		return c.opcuaRule(), true
	}
	return rules.Rule{}, false
}

func (c *conduitObs) modbusRule() rules.Rule {
	mr := &rules.ModbusRule{Ports: ports(c.ports, 502), Tolerate: c.tol()}
	var ucs []string
	for _, u := range sortedNums(c.mbUnits) {
		mr.Units = append(mr.Units, strconv.Itoa(int(u)))
		ucs = append(ucs, c.mbUnits[u].comment(fmt.Sprintf("unit %d", u)))
	}
	for _, tb := range tableOrder {
		if rs, ss := merge(c.mbRead[tb]); len(rs) > 0 {
			var parts, cs []string
			for i, r := range rs {
				parts = append(parts, rangeStr(r))
				cs = append(cs, ss[i].comment(tb.String()+" "+rangeStr(r)+" read"))
			}
			mr.Allow = append(mr.Allow, rules.ModbusAllow{Read: tb.String() + " " + strings.Join(parts, ", "), Comment: strings.Join(cs, "\n")})
		}
	}
	for _, tb := range tableOrder {
		if rs, ss := merge(c.mbWrite[tb]); len(rs) > 0 {
			var parts, cs []string
			for i, r := range rs {
				parts = append(parts, rangeStr(r))
				cs = append(cs, ss[i].comment(tb.String()+" "+rangeStr(r)+" written"))
			}
			if v := c.mbWVals[tb]; v[0] >= 0 {
				cs = append(cs, fmt.Sprintf("values written: %d-%d (add `values:` to pin them)", v[0], v[1]))
			}
			mr.Allow = append(mr.Allow, rules.ModbusAllow{Write: tb.String() + " " + strings.Join(parts, ", "), Comment: strings.Join(cs, "\n")})
		}
	}
	var rejected []string
	for _, k := range sortFuncs(sortedKeys(c.mbFuncs)) {
		f, what := funcKey(k)
		if why := rules.CheckModbusFunction(f); why != "" {
			rejected = append(rejected, c.mbFuncs[k].comment(fmt.Sprintf("%s: function %s: %s", cannotName, f, why)))
			continue
		}
		mr.Allow = append(mr.Allow, rules.ModbusAllow{Function: []string{f}, Comment: c.mbFuncs[k].comment("function " + what)})
	}
	ucs = append(ucs, rejected...)
	if len(mr.Allow) == 0 && len(mr.Units) == 0 {
		mr.Units = nil
	}
	return rules.Rule{Modbus: mr, LineComment: c.tolLine(), Comment: joinComments(strings.Join(ucs, "\n"), c.tolComment())}
}

// funcKey returns the policy spelling of an observed "fc" or "fc/sub"
// key and a description for its comment: UMAS (FC 90) function codes by
// name, "90/stop_plc", as rules reads them.
func funcKey(k string) (string, string) {
	a, b, ok := strings.Cut(k, "/")
	if !ok || a != strconv.Itoa(int(modbus.FuncUMAS)) {
		return k, k
	}
	x, err := strconv.Atoi(b)
	if err != nil || x < 0 || x > 255 {
		return k, k
	}
	name := modbus.UMASFunctionName(uint8(x))
	if strings.HasPrefix(name, "umas_") {
		f := fmt.Sprintf("%s/0x%02x", a, x)
		return f, f + " (Schneider UMAS, unnamed function code)"
	}
	return a + "/" + name, fmt.Sprintf("%s/%s (Schneider UMAS function 0x%02x)", a, name, x)
}

func sortFuncs(fs []string) []string {
	key := func(s string) (int, int) {
		a, b, _ := strings.Cut(s, "/")
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x, y
	}
	sort.Slice(fs, func(i, j int) bool {
		a1, a2 := key(fs[i])
		b1, b2 := key(fs[j])
		return a1 < b1 || a1 == b1 && a2 < b2
	})
	return fs
}

func (c *conduitObs) dnp3Rule() rules.Rule {
	dr := &rules.DNP3Rule{Ports: ports(c.ports, 20000), Tolerate: c.tol()}
	var cs []string
	for _, a := range sortedNums(c.dnMasters) {
		dr.Masters = append(dr.Masters, strconv.Itoa(int(a)))
		cs = append(cs, c.dnMasters[a].comment(fmt.Sprintf("master %d", a)))
	}
	for _, a := range sortedNums(c.dnOuts) {
		dr.Outstations = append(dr.Outstations, strconv.Itoa(int(a)))
		cs = append(cs, c.dnOuts[a].comment(fmt.Sprintf("outstation %d", a)))
	}
	for _, fc := range sortedNums(c.dnFuncN) {
		name := dnp3Name(fc)
		if why := rules.CheckDNP3Function(name); why != "" {
			cs = append(cs, c.dnFuncN[fc].comment(fmt.Sprintf("%s: function %d: %s", cannotName, fc, why)))
			continue
		}
		a := rules.DNP3Allow{Function: []string{name}}
		objs := c.dnFuncs[fc]
		lines := []string{c.dnFuncN[fc].comment(fmt.Sprintf("%s (FC %d)", name, fc))}
		if objs["*"] == nil {
			bad := 0
			for _, o := range sortedKeys(objs) {
				if why := rules.CheckDNP3Object(o); why != "" {
					// An object the policy language has no name for (a
					// group IEEE 1815-2012 does not define, as in a
					// malformed request): requests carrying it stay denied.
					lines = append(lines, objs[o].comment(fmt.Sprintf("  %s: %s", cannotName, why)))
					bad++
					continue
				}
				a.Objects = append(a.Objects, o)
				lines = append(lines, objs[o].comment("  "+o))
			}
			if bad > 0 && len(a.Objects) == 0 {
				// Without objects the entry would allow any object.
				cs = append(cs, strings.Join(lines, "\n"), fmt.Sprintf("%s: %s seen only with objects above: not allowed", cannotName, name))
				continue
			}
		} else {
			lines = append(lines, "more object headers than recorded: any object allowed")
		}
		a.Comment = strings.Join(lines, "\n")
		dr.Allow = append(dr.Allow, a)
	}
	if c.dnUns.n > 0 {
		dr.Allow = append(dr.Allow, rules.DNP3Allow{Unsolicited: true, Comment: c.dnUns.comment("unsolicited responses")})
	}
	return rules.Rule{DNP3: dr, LineComment: c.tolLine(), Comment: joinComments(strings.Join(cs, "\n"), c.tolComment())}
}

// opcuaServiceNames are the names rules accepts for the services learn
// can list (OPC 10000-4; binary encoding ids from OPC 10000-6 NodeIds.csv).
var opcuaServiceNames = map[uint32]string{422: "find_servers", 12208: "find_servers_on_network",
	428: "get_endpoints", 437: "register_server", 12211: "register_server2", 446: "open_secure_channel",
	452: "close_secure_channel", 461: "create_session", 467: "activate_session", 473: "close_session",
	479: "cancel", 488: "add_nodes", 494: "add_references", 500: "delete_nodes", 506: "delete_references",
	527: "browse", 533: "browse_next", 554: "translate_browse_paths_to_node_ids", 560: "register_nodes",
	566: "unregister_nodes", 615: "query_first", 621: "query_next", 631: "read", 664: "history_read",
	673: "write", 700: "history_update", 712: "call", 751: "create_monitored_items",
	763: "modify_monitored_items", 769: "set_monitoring_mode", 775: "set_triggering",
	781: "delete_monitored_items", 787: "create_subscription", 793: "modify_subscription",
	799: "set_publishing_mode", 826: "publish", 832: "republish", 841: "transfer_subscriptions",
	847: "delete_subscriptions"}

// impliedServices are allowed by any opcua rule (DESIGN.md).
var impliedServices = map[uint32]bool{422: true, 428: true, 446: true, 452: true, 461: true, 467: true, 473: true}

func (c *conduitObs) opcuaRule() rules.Rule {
	ur := &rules.OPCUARule{Ports: ports(c.ports, 4840), Tolerate: c.tol()}
	var cs []string
	modes := sortedNums(c.uaModes)
	if len(modes) > 0 {
		// modes[0] is ModeInvalid (unknown) when messages of a channel
		// opened before the capture were seen: the gateway admits those
		// under a minimum of None only, so the draft asks for no more.
		lo := modes[0]
		if name := modeNames[lo]; name != "" && lo > opcua.ModeNone {
			ur.MinSecurityMode = name
		}
		for _, m := range modes {
			if m == opcua.ModeInvalid {
				cs = append(cs, c.uaModes[m].comment("security mode unknown (no OPN seen: the capture starts mid-session); "+
					"min_security_mode is drafted only from the OPNs seen"))
				continue
			}
			cs = append(cs, c.uaModes[m].comment("security mode "+modeNames[m]))
		}
	}
	for _, pol := range sortedKeys(c.uaPols) {
		if why := rules.CheckSecurityPolicy(pol); why != "" {
			cs = append(cs, c.uaPols[pol].comment(cannotName+": "+why))
			continue
		}
		ur.SecurityPolicies = append(ur.SecurityPolicies, pol)
		cs = append(cs, c.uaPols[pol].comment("security policy "+pol))
	}
	if ur.MinSecurityMode != "" && slices.Contains(ur.SecurityPolicies, "None") {
		// Policy None carries no signature: a channel opened under it
		// cannot meet the minimum the other messages suggest.
		cs = append(cs, "security policy None seen: no min_security_mode drafted (it would be "+ur.MinSecurityMode+")")
		ur.MinSecurityMode = ""
	}
	for _, id := range sortedNums(c.uaSvcs) {
		name, ok := opcuaServiceNames[id]
		if !ok {
			cs = append(cs, c.uaSvcs[id].comment(fmt.Sprintf("service i=%d is no OPC 10000-4 service request: cannot be allowed", id)))
			continue
		}
		if impliedServices[id] {
			cs = append(cs, c.uaSvcs[id].comment(name+" (implied)"))
			continue
		}
		a := rules.OPCUAAllow{Service: []string{name}, Comment: c.uaSvcs[id].comment(fmt.Sprintf("%s (i=%d)", name, id))}
		if nodes := c.uaNodes[id]; nodes != nil && nodes["*"] == nil {
			for _, n := range sortedKeys(nodes) {
				if !utf8.ValidString(n) {
					// A String NodeId whose bytes are not UTF-8 (OPC
					// 10000-6 section 5.2.2.4 requires it): no policy
					// file can hold it.
					a.Comment += "\n" + nodes[n].comment(cannotName+": NodeId "+strconv.QuoteToASCII(n)+" is not UTF-8 text")
					continue
				}
				if _, err := opcua.ParseNodeID(n); err != nil {
					a.Comment += "\n" + nodes[n].comment(cannotName+": "+err.Error())
					continue
				}
				a.Nodes = append(a.Nodes, n)
			}
			if len(a.Nodes) == 0 {
				cs = append(cs, a.Comment, cannotName+": "+name+" seen only with the nodes above: not allowed")
				continue
			}
		}
		ur.Allow = append(ur.Allow, a)
	}
	return rules.Rule{OPCUA: ur, LineComment: c.tolLine(), Comment: joinComments(strings.Join(cs, "\n"), c.tolComment())}
}
