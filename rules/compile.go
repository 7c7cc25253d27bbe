package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// generations numbers compiled rulesets process-wide, so a flow's cached
// match can tell which ruleset computed it.
var generations atomic.Uint64

// Ruleset is a compiled, immutable policy. It is safe for concurrent use by
// any number of goroutines; swap versions with atomic.Pointer[Ruleset].
type Ruleset struct {
	gen    uint64
	name   string
	hash   string
	mode   Mode
	action DenyAction

	zones      []czone
	zoneRanges []zrange // sorted, disjoint (Compile rejects overlaps)
	portZones  []int32  // zones without networks
	assets     []casset
	assetByIP  map[netip.Addr]int32
	assetByMAC map[[6]byte]int32 // assets without an IP
	// fromBits/toBits: per endpoint (zones, then assets), the conduits
	// whose from/to lists name it, as a bitset in file order. nil: none.
	fromBits, toBits [][]uint64
	words            int

	conduits []cconduit
	l2       []uint16
	l2LLC    bool // IEEE 802.3 frames with a length field (L2LLC)
	detect   [NumDetectors]Threshold
}

type czone struct {
	name, port string
	vlans      []r16
	hasNets    bool
}

type zrange struct {
	lo, hi netip.Addr
	zone   int32
}

type casset struct {
	name   string
	ip     netip.Addr
	mac    [6]byte
	hasMAC bool
	zone   int32
}

type cconduit struct {
	name     string
	mode     Mode
	action   DenyAction
	tolerate anomalySet
	rules    []crule
	logTx    bool // log: transactions
}

// LogValues are the values of a conduit's log key.
var LogValues = []string{"transactions"}

type ruleKind uint8

const (
	kindModbus ruleKind = iota
	kindDNP3
	kindOPCUA
	kindTCP
	kindUDP
	kindICMP
	kindSection // a registered protocol's (Section)
)

type crule struct {
	name     string
	kind     ruleKind
	proto    protocols.Proto
	tolerate anomalySet
	ports    []r16 // empty: any (tcp/udp rules only)
	tcp, udp bool
	mb       *cmodbus
	dn       *cdnp3
	ua       *copcua
	sec      *Section
	icmpAny  bool
	icmp     [4]uint64
}

// r16 is an inclusive range.
type r16 struct{ lo, hi uint16 }

func in16(rs []r16, v uint16) bool {
	for _, r := range rs {
		if v >= r.lo && v <= r.hi {
			return true
		}
	}
	return false
}

type cmodbus struct {
	unitsAny bool
	units    [4]uint64
	read     [5][]r16  // by Table: merged disjoint ranges
	write    [5][]wseg // by Table: elementary segments
	funcs    []mfunc
}

type wseg struct {
	lo, hi uint16
	anyVal bool
	vals   []r16
}

type mfunc struct {
	fc     uint8
	anySub bool
	sub    uint16
}

type cdnp3 struct {
	mastersAny, outstationsAny bool
	masters, outstations       []r16
	fcs                        []dfunc
	unsolicited                bool
	requireAuth                bool
}

type dfunc struct {
	fc     uint8
	anyObj bool
	objs   []dobj
}

type dobj struct {
	group, variation uint8
	anyVar           bool
}

type copcua struct {
	minMode  opcua.SecurityMode
	policies []string
	services []ufunc
}

type ufunc struct {
	id      uint32
	anyNode bool
	nodes   []opcua.NodeID
}

// Generation returns the ruleset's process-wide version number; it grows
// with every Compile.
func (rs *Ruleset) Generation() uint64 { return rs.gen }

// Name returns the policy name.
func (rs *Ruleset) Name() string { return rs.name }

// Hash returns the hex SHA-256 of the policy content (comments included,
// file name and layout excluded).
func (rs *Ruleset) Hash() string { return rs.hash }

// NumConduits returns the number of conduits.
func (rs *Ruleset) NumConduits() int { return len(rs.conduits) }

// LogTransactions reports whether conduit i (Verdict.Conduit) logs its
// allowed transactions (log: transactions); false for i < 0 or out of
// range. It allocates nothing.
func (rs *Ruleset) LogTransactions(i int) bool {
	return i >= 0 && i < len(rs.conduits) && rs.conduits[i].logTx
}

// ConduitName returns conduit i's name.
func (rs *Ruleset) ConduitName(i int) string { return rs.conduits[i].name }

// RuleNames returns the names of conduit i's rules (for "rules never hit").
func (rs *Ruleset) RuleNames(i int) []string {
	out := make([]string, len(rs.conduits[i].rules))
	for j, r := range rs.conduits[i].rules {
		out[j] = r.name
	}
	return out
}

// compiler collects problems with positions while compiling.
type compiler struct {
	p     *Policy
	probs Problems
}

func (c *compiler) errf(path, format string, args ...any) {
	ps := c.p.posOf(path)
	c.probs = append(c.probs, Problem{File: c.p.File, Line: ps.Line, Col: ps.Col, Msg: fmt.Sprintf(format, args...)})
}

// Compile checks p and builds its Ruleset. Every problem is reported in one
// Problems error (errors.Is(err, ErrInvalid)), with positions when p came
// from Load.
func Compile(p *Policy) (*Ruleset, error) {
	if p == nil {
		return nil, Problems{{Msg: "nil policy"}}
	}
	c := &compiler{p: p}
	rs := c.compile()
	if err := c.probs.sorted(); err != nil {
		return nil, err
	}
	rs.gen = generations.Add(1)
	return rs, nil
}

func parseMode(s string) (Mode, bool) {
	switch s {
	case "", "enforce":
		return ModeEnforce, true
	case "monitor":
		return ModeMonitor, true
	}
	return 0, false
}

func parseDenyAction(s string) (DenyAction, bool) {
	switch s {
	case "", "drop":
		return ActionDrop, true
	case "reset":
		return ActionReset, true
	case "reply":
		return ActionReply, true
	}
	return 0, false
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// compile builds the Ruleset of c.p in named steps: the policy-wide
// settings here, then detections, zones, assets, l2 and conduits (each
// conduit's rules through rule and the per-protocol modbus, dnp3 and
// opcua). Problems accumulate in c.probs; the Ruleset is only used when
// there are none.
func (c *compiler) compile() *Ruleset {
	p := c.p
	rs := &Ruleset{name: p.Name, assetByIP: map[netip.Addr]int32{}, assetByMAC: map[[6]byte]int32{}}
	// The hash identifies the policy's content (not its file name or
	// layout); JSON is a cheap canonical form of the plain-data Policy.
	h := sha256.New()
	q := *p
	q.File = ""
	if err := json.NewEncoder(h).Encode(&q); err == nil {
		rs.hash = hex.EncodeToString(h.Sum(nil))
	}
	if p.Version != 1 && p.Version != -1 {
		c.errf("version", "unsupported version %d (this reader knows version 1)", p.Version)
	}
	var ok bool
	if rs.mode, ok = parseMode(p.Mode); !ok {
		c.errf("mode", "unknown mode %q (monitor or enforce)%s", p.Mode, suggest(p.Mode, []string{"monitor", "enforce"}))
	}
	if rs.action, ok = parseDenyAction(p.Action); !ok {
		c.errf("action", "unknown action %q (drop, reset or reply)%s", p.Action, suggest(p.Action, []string{"drop", "reset", "reply"}))
	}

	c.detections(rs)
	endpoint := map[string]int32{} // zone and asset names share one namespace
	pfxs := c.zones(rs, endpoint)
	c.assets(rs, endpoint, pfxs)
	c.l2(rs)
	c.conduits(rs, endpoint)
	return rs
}

// zonePrefix is one network of a zone, with its path in the policy.
type zonePrefix struct {
	p    netip.Prefix
	zone int32
	path string
}

// zones compiles the policy's zones into rs (zones, portZones,
// zoneRanges), entering their names in endpoint, and returns their
// networks.
func (c *compiler) zones(rs *Ruleset, endpoint map[string]int32) []zonePrefix {
	p := c.p
	var pfxs []zonePrefix
	for zi, z := range p.Zones {
		path := "zones." + z.Name
		if _, dup := endpoint[z.Name]; dup {
			c.errf(path+"^", "duplicate zone name %q", z.Name)
		}
		if !nameRE.MatchString(z.Name) {
			c.errf(path+"^", "bad zone name %q (letters, digits, '_', '.', '-')", z.Name)
		}
		endpoint[z.Name] = int32(zi)
		cz := czone{name: z.Name, port: z.Port, hasNets: len(z.Networks) > 0}
		for i, n := range z.Networks {
			np := fmt.Sprintf("%s.networks.%d", path, i)
			pr, err := netip.ParsePrefix(n)
			if err != nil {
				if a, err2 := netip.ParseAddr(n); err2 == nil {
					pr = netip.PrefixFrom(a, a.BitLen())
				} else {
					c.errf(np, "bad network %q (want CIDR like 192.0.2.0/24)", n)
					continue
				}
			}
			if pr.Masked() != pr {
				c.errf(np, "network %q has host bits set (did you mean %q?)", n, pr.Masked().String())
				continue
			}
			pfxs = append(pfxs, zonePrefix{pr, int32(zi), np})
		}
		cz.vlans = c.ranges(z.VLANs, path+".vlans", 1, 4094, "VLAN id")
		if z.Port == "" && len(z.Networks) == 0 {
			c.errf(path+"^", "zone %q has neither port nor networks: it would match every host", z.Name)
		}
		if z.Port != "" && !nameRE.MatchString(z.Port) {
			c.errf(path+".port", "bad port name %q", z.Port)
		}
		if !cz.hasNets {
			rs.portZones = append(rs.portZones, int32(zi))
		}
		rs.zones = append(rs.zones, cz)
	}
	if len(rs.portZones) > 24 {
		c.errf("zones", "at most 24 zones without networks are supported, have %d", len(rs.portZones))
	}
	for i := range pfxs {
		for j := 0; j < i; j++ {
			a, b := pfxs[i], pfxs[j]
			if a.p.Overlaps(b.p) {
				if a.zone == b.zone {
					c.errf(a.path, "network %s overlaps %s in the same zone", a.p, b.p)
				} else {
					c.errf(a.path, "network %s of zone %q overlaps %s of zone %q", a.p, p.Zones[a.zone].Name, b.p, p.Zones[b.zone].Name)
				}
			}
		}
	}
	for _, x := range pfxs {
		rs.zoneRanges = append(rs.zoneRanges, zrange{lo: x.p.Addr(), hi: lastAddr(x.p), zone: x.zone})
	}
	sort.Slice(rs.zoneRanges, func(i, j int) bool { return rs.zoneRanges[i].lo.Less(rs.zoneRanges[j].lo) })
	return pfxs
}

// assets compiles the policy's assets into rs (assets, assetByIP,
// assetByMAC), entering their names in endpoint after the zones'; pfxs are
// the zones' networks, which an asset's ip must lie in.
func (c *compiler) assets(rs *Ruleset, endpoint map[string]int32, pfxs []zonePrefix) {
	p := c.p
	zoneNames := make([]string, len(p.Zones))
	for i, z := range p.Zones {
		zoneNames[i] = z.Name
	}
	nz := int32(len(p.Zones))
	ipOwner := map[netip.Addr]string{}
	macOwner := map[[6]byte]string{}
	for ai, a := range p.Assets {
		path := "assets." + a.Name
		if _, dup := endpoint[a.Name]; dup {
			c.errf(path+"^", "duplicate name %q: zones and assets share one namespace", a.Name)
		} else {
			endpoint[a.Name] = nz + int32(ai)
		}
		if !nameRE.MatchString(a.Name) {
			c.errf(path+"^", "bad asset name %q (letters, digits, '_', '.', '-')", a.Name)
		}
		ca := casset{name: a.Name, zone: -1}
		zi := int32(-1)
		for i, z := range p.Zones {
			if z.Name == a.Zone {
				zi = int32(i)
			}
		}
		switch {
		case a.Zone == "":
			c.errf(path+"^", "asset %q has no zone", a.Name)
		case zi < 0:
			c.errf(path+".zone", "asset %q: unknown zone %q%s", a.Name, a.Zone, suggest(a.Zone, zoneNames))
		}
		ca.zone = zi
		if a.IP == "" && a.MAC == "" {
			c.errf(path+"^", "asset %q has neither ip nor mac", a.Name)
		}
		if a.IP != "" {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil || ip.Zone() != "" {
				c.errf(path+".ip", "bad ip %q", a.IP)
			} else {
				ip = ip.Unmap()
				ca.ip = ip
				if o, dup := ipOwner[ip]; dup {
					c.errf(path+".ip", "ip %s of asset %q is also asset %q's", ip, a.Name, o)
				}
				ipOwner[ip] = a.Name
				if zi >= 0 && len(p.Zones[zi].Networks) > 0 {
					inside := false
					for _, x := range pfxs {
						if x.zone == zi && x.p.Contains(ip) {
							inside = true
						}
					}
					if !inside {
						c.errf(path+".ip", "asset %q: ip %s is outside its zone %q (%s)", a.Name, ip, a.Zone, strings.Join(p.Zones[zi].Networks, ", "))
					}
				}
			}
		}
		if a.MAC != "" {
			hw, err := net.ParseMAC(a.MAC)
			if err != nil || len(hw) != 6 {
				c.errf(path+".mac", "bad mac %q (want 00:11:22:33:44:55)", a.MAC)
			} else {
				copy(ca.mac[:], hw)
				ca.hasMAC = true
				if o, dup := macOwner[ca.mac]; dup {
					c.errf(path+".mac", "mac %s of asset %q is also asset %q's", a.MAC, a.Name, o)
				}
				macOwner[ca.mac] = a.Name
			}
		}
		if ca.ip.IsValid() {
			rs.assetByIP[ca.ip] = int32(ai)
		} else if ca.hasMAC {
			rs.assetByMAC[ca.mac] = int32(ai)
		}
		rs.assets = append(rs.assets, ca)
	}
}

// l2 compiles the policy's allowed non-IP ethertypes into rs (l2, l2LLC).
func (c *compiler) l2(rs *Ruleset) {
	p := c.p
	l2Known := sortedKeys(l2Names)
	for i, s := range p.L2.Allow {
		path := fmt.Sprintf("l2.allow.%d", i)
		if v, ok := l2Names[strings.ToLower(s)]; ok {
			rs.l2 = append(rs.l2, v)
			continue
		}
		if strings.ToLower(s) == L2LLC {
			rs.l2LLC = true
			continue
		}
		v, err := strconv.ParseUint(s, 0, 16)
		if err != nil || v < 0x0600 {
			c.errf(path, "unknown ethertype %q (a name like arp, lldp, llc for 802.3 frames with a length field, or a number from 0x0600)%s", s, suggest(s, append(l2Known, L2LLC)))
			continue
		}
		rs.l2 = append(rs.l2, uint16(v))
	}
}

// conduits compiles the policy's conduits and their rules into rs
// (conduits, words, fromBits, toBits); endpoint maps every zone and asset
// name to its endpoint index.
func (c *compiler) conduits(rs *Ruleset, endpoint map[string]int32) {
	p := c.p
	names := make([]string, 0, len(endpoint))
	for n := range endpoint {
		names = append(names, n)
	}
	sort.Strings(names)
	nEndpoints := len(p.Zones) + len(p.Assets)
	rs.words = (len(p.Conduits) + 63) / 64
	rs.fromBits = make([][]uint64, nEndpoints)
	rs.toBits = make([][]uint64, nEndpoints)
	seen := map[string]int{}
	for ci := range p.Conduits {
		rs.conduits = append(rs.conduits, c.conduit(rs, ci, endpoint, names, seen))
	}
}

// conduit compiles conduit ci and its rules (rule, and per protocol
// modbus, dnp3, opcua), setting its bit in rs.fromBits and rs.toBits for
// each of its endpoints. names are the sorted endpoint names (for
// suggestions); seen maps the conduit names met so far to their index.
func (c *compiler) conduit(rs *Ruleset, ci int, endpoint map[string]int32, names []string, seen map[string]int) cconduit {
	var ok bool
	cd := &c.p.Conduits[ci]
	path := fmt.Sprintf("conduits.%d", ci)
	cc := cconduit{name: cd.Name}
	if cd.Name == "" {
		c.errf(path, "conduit has no name")
		cc.name = fmt.Sprintf("conduit#%d", ci+1)
	} else if prev, dup := seen[cd.Name]; dup {
		c.errf(path+".name", "duplicate conduit name %q (first at conduit %d)", cd.Name, prev+1)
	} else {
		seen[cd.Name] = ci
	}
	if cd.Mode == "" {
		cc.mode = rs.mode
	} else if cc.mode, ok = parseMode(cd.Mode); !ok {
		c.errf(path+".mode", "unknown mode %q (monitor or enforce)%s", cd.Mode, suggest(cd.Mode, []string{"monitor", "enforce"}))
	}
	if cd.Action == "" {
		cc.action = rs.action
	} else if cc.action, ok = parseDenyAction(cd.Action); !ok {
		c.errf(path+".action", "unknown action %q (drop, reset or reply)%s", cd.Action, suggest(cd.Action, []string{"drop", "reset", "reply"}))
	}
	var fromEps, toEps []int32
	for side, list := range [2][]string{cd.From, cd.To} {
		key := [2]string{"from", "to"}[side]
		if len(list) == 0 {
			c.errf(path, "conduit %q has no %q", cc.name, key)
		}
		for i, n := range list {
			e, ok := endpoint[n]
			if !ok {
				c.errf(fmt.Sprintf("%s.%s.%d", path, key, i), "conduit %q: unknown zone or asset %q%s", cc.name, n, suggest(n, names))
				continue
			}
			bits := &rs.fromBits[e]
			if side == 1 {
				bits = &rs.toBits[e]
			}
			if *bits == nil {
				*bits = make([]uint64, rs.words)
			}
			(*bits)[ci/64] |= 1 << (uint(ci) % 64)
			if side == 0 {
				fromEps = append(fromEps, e)
			} else {
				toEps = append(toEps, e)
			}
		}
	}
	if len(fromEps) > 0 && len(toEps) > 0 {
		if why := c.neverMatches(rs, fromEps, toEps); why != "" {
			c.errf(path+".to", "conduit %q can never match: %s", cc.name, why)
		}
	}
	if len(cd.Rules) == 0 {
		c.errf(path, "conduit %q has no rules: it can never allow anything", cc.name)
	}
	counts := map[string]int{}
	for ri := range cd.Rules {
		cc.rules = append(cc.rules, c.rule(&cd.Rules[ri], fmt.Sprintf("%s.rules.%d", path, ri), counts))
	}
	var protos []protocols.Proto
	for _, r := range cc.rules {
		if r.proto != protocols.ProtoNone && !slices.Contains(protos, r.proto) {
			protos = append(protos, r.proto)
		}
	}
	cc.tolerate = c.anomalies(cd.Tolerate, path+".tolerate", protos)
	for li, l := range cd.Log {
		switch l {
		case "transactions":
			cc.logTx = true
		default:
			c.errf(fmt.Sprintf("%s.log.%d", path, li), "conduit %q: unknown log value %q (transactions)%s", cc.name, l, suggest(l, LogValues))
		}
	}
	return cc
}

// endpointPort returns the bridge port of a zone or asset's zone ("" if any).
func endpointPort(rs *Ruleset, e int32) string {
	if int(e) < len(rs.zones) {
		return rs.zones[e].port
	}
	a := rs.assets[int(e)-len(rs.zones)]
	if a.zone < 0 {
		return ""
	}
	return rs.zones[a.zone].port
}

// neverMatches explains why no (from, to) pair can ever be a flow through
// the gateway, or returns "".
func (c *compiler) neverMatches(rs *Ruleset, from, to []int32) string {
	why := ""
	for _, f := range from {
		for _, t := range to {
			switch {
			case f == t && int(f) >= len(rs.zones):
				why = "an asset does not talk to itself through the gateway"
			case endpointPort(rs, f) != "" && endpointPort(rs, f) == endpointPort(rs, t):
				why = fmt.Sprintf("both ends are on port %q and traffic between them never crosses the gateway", endpointPort(rs, f))
			default:
				return ""
			}
		}
	}
	return why
}

// canonAnomaly returns the name proto's parser reports for the anomaly
// named s (its vocabulary may hold aliases, e.g. dnp3 "crc"), and whether
// s names one. The vocabulary is the one the parser registered
// (protocols.Register), so a protocol's rule section needs no case here.
func canonAnomaly(proto protocols.Proto, s string) (string, bool) {
	if a, ok := protocols.AnomalyByName(proto, s); ok {
		return a.String(), true
	}
	return "", false
}

// anomalies checks a tolerate list against the anomalies the parsers of
// protos report and compiles it to the set of typed anomalies it names:
// a name stands for the anomaly of that name of every protocol of protos
// that reports one. A conduit's list is checked against the protocols of
// its rules.
func (c *compiler) anomalies(list []string, path string, protos []protocols.Proto) anomalySet {
	if len(list) == 0 {
		return nil
	}
	var names, what []string
	for _, p := range protos {
		names = append(names, protocols.AnomalyNames(p)...)
		what = append(what, p.String())
	}
	var out anomalySet
	for i, a := range list {
		ip := fmt.Sprintf("%s.%d", path, i)
		if len(protos) == 0 {
			c.errf(ip, "tolerate %q: anomalies are reported only by modbus, dnp3 and opcua rules, and this conduit has none", a)
			continue
		}
		var canon string
		for _, p := range protos {
			if n, ok := canonAnomaly(p, a); ok {
				canon = n
				break
			}
		}
		if canon == "" {
			c.errf(ip, "unknown %s anomaly %q%s", strings.Join(what, "/"), a, suggest(a, names))
			continue
		}
		if why := unhonoured(protos, canon); why != "" {
			c.errf(ip, "tolerate %q: %s", a, why)
			continue
		}
		for _, p := range protos {
			if an, ok := protocols.AnomalyByName(p, canon); ok {
				out.add(an)
			}
		}
	}
	return out
}

// unframeable lists, per protocol, the anomalies the gateway reports only
// for bytes it cannot frame as a PDU of the protocol: a Modbus/TCP MBAP
// header whose protocol id is not 0 or whose length is out of range (the
// framer refuses it, reported as non_modbus); a DNP3 link frame that fails
// its start, length or CRC checks, or a transport segment that cannot be
// reassembled (IEEE 1815-2012 clauses 8.2 and 9.2); an OPC UA chunk header
// of unknown message or chunk type (OPC 10000-6 section 7.1.2). The stream
// cannot be followed past such bytes, so enforcement denies them whatever a
// rule tolerates (gateway/inspect.go, Engine.malformed): a tolerate entry
// naming one would be a silent no-op, and Compile refuses it.
var unframeable = map[protocols.Proto][]string{
	protocols.ProtoModbus: {"non_modbus", "protocol_id", "mbap_length"},
	protocols.ProtoDNP3: {"bad_start", "bad_length", "link_crc", "data_crc", "transport_seq",
		"fragment_without_fir", "reassembly_overflow", "transport_truncated"},
	protocols.ProtoOPCUA: {"unknown_message_type", "invalid_chunk_type"},
}

// unhonoured returns why a tolerate entry naming anomaly (in the parsers'
// spelling) cannot be honoured by rules of protos, or "" when it can: at
// least one of protos reports it on a PDU a rule judges.
func unhonoured(protos []protocols.Proto, anomaly string) string {
	var which []string
	for _, p := range protos {
		if _, ok := canonAnomaly(p, anomaly); !ok {
			continue
		}
		if !slices.Contains(unframeable[p], anomaly) {
			return ""
		}
		which = append(which, p.String())
	}
	if len(which) == 0 {
		return ""
	}
	return "bytes with this anomaly cannot be framed as " + strings.Join(which, "/") +
		" and are denied whatever the policy tolerates: remove it (the gateway cannot honour it)"
}

// Tolerable returns "" when a tolerate list of a rule of protocol proto
// may name anomaly and enforcement honours it, else the problem Compile
// would report. Learn uses it to draft only what check accepts.
func Tolerable(proto protocols.Proto, anomaly string) string {
	canon, ok := canonAnomaly(proto, anomaly)
	if !ok {
		return fmt.Sprintf("unknown %s anomaly %q", proto, anomaly)
	}
	if why := unhonoured([]protocols.Proto{proto}, canon); why != "" {
		return fmt.Sprintf("tolerate %q: %s", anomaly, why)
	}
	return ""
}

// CheckModbusFunction returns "" when s is a value of a modbus allow
// entry's function list that Compile accepts, else the problem it reports.
func CheckModbusFunction(s string) string { _, msg := parseModbusFunc(s); return msg }

// CheckDNP3Function returns "" when s names a DNP3 function Compile accepts
// in an allow entry, else the problem it reports.
func CheckDNP3Function(s string) string { _, msg := parseDNP3Func(s); return msg }

// CheckDNP3Object returns "" when s names a DNP3 object Compile accepts in
// an allow entry, else the problem it reports.
func CheckDNP3Object(s string) string { _, msg := parseDNP3Object(s); return msg }

// CheckOPCUAService returns "" when s names an OPC UA service Compile
// accepts, else the problem it reports.
func CheckOPCUAService(s string) string { _, msg := parseService(s); return msg }

// CheckSecurityPolicy returns "" when s names an OPC UA security policy
// Compile accepts, else the problem it reports.
func CheckSecurityPolicy(s string) string {
	if _, ok := opcua.PolicyByName(s); !ok {
		return fmt.Sprintf("unknown security policy %q", s)
	}
	return ""
}

// lastAddr returns the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		a[i/8] |= 1 << (7 - uint(i%8))
	}
	out := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		out = out.Unmap()
	}
	return out
}

// parseRange parses "N" or "N-M" within [lo, hi].
func parseRange(s string, lo, hi int) (int, int, string) {
	s = strings.TrimSpace(s)
	a, b, isRange := strings.Cut(s, "-")
	x, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil {
		return 0, 0, fmt.Sprintf("bad number or range %q", s)
	}
	y := x
	if isRange {
		y, err = strconv.Atoi(strings.TrimSpace(b))
		if err != nil {
			return 0, 0, fmt.Sprintf("bad range %q", s)
		}
	}
	if x < lo || y > hi || x > hi || y < lo {
		return 0, 0, fmt.Sprintf("%q is outside %d-%d", s, lo, hi)
	}
	if x > y {
		return 0, 0, fmt.Sprintf("reversed range %q (did you mean \"%d-%d\"?)", s, y, x)
	}
	return x, y, ""
}

func (c *compiler) ranges(list []string, path string, lo, hi int, what string) []r16 {
	var out []r16
	for i, s := range list {
		x, y, msg := parseRange(s, lo, hi)
		if msg != "" {
			c.errf(fmt.Sprintf("%s.%d", path, i), "%s: %s", what, msg)
			continue
		}
		out = append(out, r16{uint16(x), uint16(y)})
	}
	return out
}

func (c *compiler) rule(r *Rule, path string, counts map[string]int) crule {
	cr := crule{}
	n := 0
	var key string
	switch {
	case r.Modbus != nil:
		n, key = n+1, "modbus"
	}
	if r.DNP3 != nil {
		n, key = n+1, "dnp3"
	}
	if r.OPCUA != nil {
		n, key = n+1, "opcua"
	}
	if r.TCP != nil {
		n, key = n+1, "tcp"
	}
	if r.UDP != nil {
		n, key = n+1, "udp"
	}
	if r.ICMP != nil {
		n, key = n+1, "icmp"
	}
	var sec *Section
	if r.Section != nil {
		if sec = sectionByKey(r.Section.Key); sec == nil {
			c.errf(path, "unknown protocol %q", r.Section.Key)
			return cr
		}
		n, key = n+1, r.Section.Key
	}
	if n != 1 {
		if c.p.pos == nil || n > 1 {
			c.errf(path, "a rule must name exactly one protocol, has %d", n)
		}
		return cr
	}
	counts[key]++
	cr.name = r.Name
	if cr.name == "" {
		cr.name = fmt.Sprintf("%s#%d", key, counts[key])
	}
	bp := path + "." + key
	switch key {
	case "modbus":
		cr.kind, cr.proto, cr.tcp = kindModbus, protocols.ProtoModbus, true
		cr.ports = c.ports(r.Modbus.Ports, bp+".ports", 502)
		cr.tolerate = c.anomalies(r.Modbus.Tolerate, bp+".tolerate", []protocols.Proto{protocols.ProtoModbus})
		cr.mb = c.modbus(r.Modbus, bp)
	case "dnp3":
		cr.kind, cr.proto, cr.tcp, cr.udp = kindDNP3, protocols.ProtoDNP3, true, true
		cr.ports = c.ports(r.DNP3.Ports, bp+".ports", 20000)
		cr.tolerate = c.anomalies(r.DNP3.Tolerate, bp+".tolerate", []protocols.Proto{protocols.ProtoDNP3})
		if r.DNP3.RequireAuth && cr.tolerate.has(dnp3.AnomalySeqMismatch.Tagged()) {
			// Under Secure Authentication a response must answer the
			// request that was challenged; a wrong SEQ cannot be taken
			// for it.
			c.errf(bp+".tolerate", "tolerate seq_mismatch cannot go with require_auth: an authenticated response must answer its own request")
		}
		cr.dn = c.dnp3(r.DNP3, bp)
	case "opcua":
		cr.kind, cr.proto, cr.tcp = kindOPCUA, protocols.ProtoOPCUA, true
		cr.ports = c.ports(r.OPCUA.Ports, bp+".ports", 4840)
		cr.tolerate = c.anomalies(r.OPCUA.Tolerate, bp+".tolerate", []protocols.Proto{protocols.ProtoOPCUA})
		cr.ua = c.opcua(r.OPCUA, bp)
	case "tcp":
		cr.kind, cr.tcp = kindTCP, true
		cr.ports = c.ports(r.TCP.Ports, bp+".ports", 0)
	case "udp":
		cr.kind, cr.udp = kindUDP, true
		cr.ports = c.ports(r.UDP.Ports, bp+".ports", 0)
	case "icmp":
		cr.kind = kindICMP
		cr.icmpAny = len(r.ICMP.Types) == 0
		known := sortedKeys(icmpNames)
		for i, s := range r.ICMP.Types {
			v, ok := icmpNames[s]
			if !ok {
				x, err := strconv.Atoi(s)
				if err != nil || x < 0 || x > 255 {
					c.errf(fmt.Sprintf("%s.types.%d", bp, i), "unknown icmp type %q%s", s, suggest(s, known))
					continue
				}
				v = x
			}
			cr.icmp[v/64] |= 1 << (uint(v) % 64)
		}
	default: // a registered section (sec is set)
		cr.kind, cr.proto, cr.tcp, cr.udp, cr.sec = kindSection, sec.Proto, sec.TCP, sec.UDP, sec
		cr.ports = c.ports(r.Section.Ports, bp+".ports", sec.Port)
		cr.tolerate = c.anomalies(r.Section.Tolerate, bp+".tolerate", []protocols.Proto{sec.Proto})
	}
	return cr
}

func (c *compiler) ports(list []string, path string, def uint16) []r16 {
	if len(list) == 0 {
		if def == 0 {
			return nil
		}
		return []r16{{def, def}}
	}
	return c.ranges(list, path, 1, 65535, "port")
}

// ---- Modbus ----

func (c *compiler) modbus(r *ModbusRule, path string) *cmodbus {
	m := &cmodbus{unitsAny: len(r.Units) == 0}
	for _, u := range c.ranges(r.Units, path+".units", 0, 255, "unit") {
		for v := int(u.lo); v <= int(u.hi); v++ {
			m.units[v/64] |= 1 << (uint(v) % 64)
		}
	}
	type wa struct {
		lo, hi uint16
		vals   *r16
	}
	var reads [5][]r16
	var writes [5][]wa
	tables := sortedKeys(tableNames)
	for i, a := range r.Allow {
		ep := fmt.Sprintf("%s.allow.%d", path, i)
		set := 0
		for _, s := range []string{a.Read, a.Write} {
			if s != "" {
				set++
			}
		}
		if len(a.Function) > 0 {
			set++
		}
		if set != 1 {
			c.errf(ep, "a modbus allow entry needs exactly one of read, write, function")
			continue
		}
		if a.Values != "" && a.Write == "" {
			c.errf(ep+".values", "values apply only to write entries")
		}
		spec, key := a.Read, "read"
		if a.Write != "" {
			spec, key = a.Write, "write"
		}
		if spec != "" {
			tname, rest, _ := strings.Cut(strings.TrimSpace(spec), " ")
			t, ok := tableNames[tname]
			if !ok {
				c.errf(ep+"."+key, "unknown table %q (coils, discrete, input, holding)%s", tname, suggest(tname, tables))
				continue
			}
			var rr []r16
			if strings.TrimSpace(rest) == "" {
				rr = []r16{{0, 65535}}
			}
			bad := false
			for _, part := range strings.Split(rest, ",") {
				if strings.TrimSpace(part) == "" {
					continue
				}
				x, y, msg := parseRange(part, 0, 65535)
				if msg != "" {
					c.errf(ep+"."+key, "%s: address %s", key, msg)
					bad = true
					continue
				}
				rr = append(rr, r16{uint16(x), uint16(y)})
			}
			if bad {
				continue
			}
			if key == "read" {
				reads[t] = append(reads[t], rr...)
				continue
			}
			if t == TableDiscrete || t == TableInput {
				c.errf(ep+".write", "%s is read-only: Modbus has no function that writes it", t)
				continue
			}
			var vals *r16
			if a.Values != "" {
				if t != TableHolding {
					c.errf(ep+".values", "values apply only to holding register writes")
				} else if x, y, msg := parseRange(a.Values, 0, 65535); msg != "" {
					c.errf(ep+".values", "values: %s", msg)
				} else {
					vals = &r16{uint16(x), uint16(y)}
				}
			}
			for _, x := range rr {
				writes[t] = append(writes[t], wa{x.lo, x.hi, vals})
			}
			continue
		}
		for j, f := range a.Function {
			mf, msg := parseModbusFunc(f)
			if msg != "" {
				c.errf(fmt.Sprintf("%s.function.%d", ep, j), "%s", msg)
				continue
			}
			m.funcs = append(m.funcs, mf)
		}
	}
	for t := range reads {
		m.read[t] = mergeRanges(reads[t])
	}
	for t := range writes {
		if len(writes[t]) == 0 {
			continue
		}
		// Elementary segments between all boundaries, each with the union
		// of value ranges of the allowances covering it.
		var bounds []int
		for _, w := range writes[t] {
			bounds = append(bounds, int(w.lo), int(w.hi)+1)
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		for i := 0; i+1 < len(bounds); i++ {
			lo, hi := bounds[i], bounds[i+1]-1
			seg := wseg{lo: uint16(lo), hi: uint16(hi)}
			covered := false
			for _, w := range writes[t] {
				if int(w.lo) <= lo && hi <= int(w.hi) {
					covered = true
					if w.vals == nil {
						seg.anyVal = true
					} else {
						seg.vals = append(seg.vals, *w.vals)
					}
				}
			}
			if !covered {
				continue
			}
			if seg.anyVal {
				seg.vals = nil
			} else {
				seg.vals = mergeRanges(seg.vals)
			}
			m.write[t] = append(m.write[t], seg)
		}
	}
	return m
}

func mergeRanges(in []r16) []r16 {
	if len(in) == 0 {
		return nil
	}
	s := slices.Clone(in)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	out := []r16{s[0]}
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		if int(r.lo) <= int(last.hi)+1 {
			if r.hi > last.hi {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func parseModbusFunc(s string) (mfunc, string) {
	s = strings.TrimSpace(s)
	for _, f := range modbusSubNames {
		if f.name == s {
			return mfunc{fc: f.fc, sub: f.sub}, ""
		}
	}
	code, sub, hasSub := strings.Cut(s, "/")
	fc := -1
	if x, ok := modbusFuncByName(code); ok {
		fc = int(x)
	} else if code == modbus.FunctionName(modbus.FuncUMAS) {
		fc = int(modbus.FuncUMAS)
	}
	if fc < 0 {
		x, err := strconv.Atoi(code)
		if err != nil {
			return mfunc{}, fmt.Sprintf("unknown modbus function %q%s", s, suggest(code, modbusFuncNames()))
		}
		if x < 1 || x > 127 {
			return mfunc{}, fmt.Sprintf("modbus function code %d is outside 1-127", x)
		}
		fc = x
	}
	if modbusTable(uint8(fc)) != TableNone {
		return mfunc{}, fmt.Sprintf("function %d (%s) accesses a table: allow it with read: or write: and an address range", fc, modbus.FunctionName(uint8(fc)))
	}
	mf := mfunc{fc: uint8(fc), anySub: !hasSub}
	if hasSub && fc == int(modbus.FuncUMAS) {
		// Schneider UMAS: the UMAS function code, by number or name.
		if x, ok := modbus.UMASFunctionByName(sub); ok {
			mf.sub = uint16(x)
			return mf, ""
		}
		x, err := strconv.ParseUint(sub, 0, 8)
		if err != nil {
			return mfunc{}, fmt.Sprintf("bad UMAS function %q for function 90 (0-255, 0x00-0xff or a name)%s", sub, suggest(sub, modbus.UMASFunctionNames()))
		}
		mf.sub = uint16(x)
		return mf, ""
	}
	if hasSub {
		if fc != int(modbus.FuncDiagnostics) && fc != int(modbus.FuncEncapsulatedInterface) {
			return mfunc{}, fmt.Sprintf("function %d has no sub-code (only 8 diagnostics, 43 encapsulated interface transport and 90 umas do)", fc)
		}
		max := 65535
		if fc == int(modbus.FuncEncapsulatedInterface) {
			max = 255
		}
		x, err := strconv.Atoi(sub)
		if err != nil || x < 0 || x > max {
			return mfunc{}, fmt.Sprintf("bad sub-code %q for function %d (0-%d)", sub, fc, max)
		}
		mf.sub = uint16(x)
	}
	return mf, ""
}

// ---- DNP3 ----

func dnp3GroupNames() []string {
	out := make([]string, len(dnp3Groups))
	for i, g := range dnp3Groups {
		out[i] = g.name
	}
	return out
}

var objRE = regexp.MustCompile(`^g(\d+)(?:v(\d+))?$`)

func parseDNP3Object(s string) (dobj, string) {
	for _, g := range dnp3Groups {
		if g.name == s {
			return dobj{group: g.group, anyVar: true}, ""
		}
	}
	m := objRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return dobj{}, fmt.Sprintf("unknown dnp3 object %q (gN, gNvM or a group name)%s", s, suggest(s, dnp3GroupNames()))
	}
	g, _ := strconv.Atoi(m[1])
	if g > 255 || !dnp3KnownGroup(g) {
		return dobj{}, fmt.Sprintf("unknown dnp3 object group %d in %q", g, s)
	}
	o := dobj{group: uint8(g), anyVar: m[2] == ""}
	if m[2] != "" {
		v, _ := strconv.Atoi(m[2])
		if v > 255 {
			return dobj{}, fmt.Sprintf("dnp3 variation %d in %q is outside 0-255", v, s)
		}
		o.variation = uint8(v)
	}
	return o, ""
}

func parseDNP3Func(s string) (uint8, string) {
	if fc, ok := dnp3FuncByName(s); ok {
		return fc, ""
	}
	if x, err := strconv.Atoi(s); err == nil {
		return 0, fmt.Sprintf("dnp3 function code %d is outside 0-255", x)
	}
	if n, ok := dnp3OldNames[s]; ok {
		return 0, fmt.Sprintf("unknown dnp3 function %q (did you mean %q?)", s, n)
	}
	return 0, fmt.Sprintf("unknown dnp3 function %q%s", s, suggest(s, dnp3FuncNames()))
}

func (c *compiler) dnp3(r *DNP3Rule, path string) *cdnp3 {
	d := &cdnp3{mastersAny: len(r.Masters) == 0, outstationsAny: len(r.Outstations) == 0, requireAuth: r.RequireAuth}
	d.masters = c.ranges(r.Masters, path+".masters", 0, 65535, "link address")
	d.outstations = c.ranges(r.Outstations, path+".outstations", 0, 65535, "link address")
	byFC := map[uint8]*dfunc{}
	var order []uint8
	for i, a := range r.Allow {
		ep := fmt.Sprintf("%s.allow.%d", path, i)
		if a.Unsolicited {
			if len(a.Function) > 0 || len(a.Objects) > 0 {
				c.errf(ep, "unsolicited: true stands alone in its allow entry")
			}
			d.unsolicited = true
			continue
		}
		if len(a.Function) == 0 {
			c.errf(ep, "a dnp3 allow entry needs function (or unsolicited: true)")
			continue
		}
		var objs []dobj
		for j, o := range a.Objects {
			ob, msg := parseDNP3Object(o)
			if msg != "" {
				c.errf(fmt.Sprintf("%s.objects.%d", ep, j), "%s", msg)
				continue
			}
			objs = append(objs, ob)
		}
		for j, f := range a.Function {
			fc, msg := parseDNP3Func(f)
			fp := fmt.Sprintf("%s.function.%d", ep, j)
			if msg != "" {
				c.errf(fp, "%s", msg)
				continue
			}
			switch fc {
			case 129:
				c.errf(fp, "responses ride the allowed flow and are checked against their request: do not list function 129")
				continue
			case 130:
				c.errf(fp, "allow unsolicited responses with `unsolicited: true`")
				continue
			case 131:
				c.errf(fp, "authentication responses (131) ride the allowed flow: use `require_auth: true` to judge the Secure Authentication exchange")
				continue
			}
			e := byFC[fc]
			if e == nil {
				e = &dfunc{fc: fc}
				byFC[fc] = e
				order = append(order, fc)
			}
			if len(a.Objects) == 0 {
				e.anyObj = true
			}
			e.objs = append(e.objs, objs...)
		}
	}
	for _, fc := range order {
		d.fcs = append(d.fcs, *byFC[fc])
	}
	return d
}

// ---- OPC UA ----

func parseService(s string) (uint32, string) {
	if id, ok := opcuaServiceByName(s); ok {
		return id, ""
	}
	if x, err := strconv.ParseUint(strings.TrimPrefix(s, "i="), 10, 32); err == nil {
		return 0, fmt.Sprintf("%d is not the type id of an OPC UA service request", x)
	}
	return 0, fmt.Sprintf("unknown opcua service %q%s", s, suggest(s, opcuaServiceNames()))
}

func (c *compiler) opcua(r *OPCUARule, path string) *copcua {
	u := &copcua{minMode: opcua.ModeNone}
	if r.MinSecurityMode != "" {
		m, ok := opcua.ModeByName(r.MinSecurityMode)
		if ok && m >= opcua.ModeNone && m <= opcua.ModeSignAndEncrypt {
			u.minMode = m
		} else {
			c.errf(path+".min_security_mode", "unknown security mode %q (none, sign, sign_and_encrypt)%s", r.MinSecurityMode,
				suggest(r.MinSecurityMode, []string{"none", "sign", "sign_and_encrypt"}))
		}
	}
	for i, sp := range r.SecurityPolicies {
		pol, ok := opcua.PolicyByName(sp)
		if !ok {
			short := sp
			if j := strings.LastIndexByte(sp, '#'); j >= 0 {
				short = sp[j+1:]
			}
			c.errf(fmt.Sprintf("%s.security_policies.%d", path, i), "unknown security policy %q%s", sp, suggest(short, opcuaPolicyNames()))
			continue
		}
		if pol == opcua.PolicyNone && u.minMode > opcua.ModeNone {
			c.errf(fmt.Sprintf("%s.security_policies.%d", path, i), "security policy None contradicts min_security_mode %s", r.MinSecurityMode)
		}
		u.policies = append(u.policies, pol.String())
	}
	byID := map[uint32]*ufunc{}
	var order []uint32
	get := func(id uint32) *ufunc {
		if e := byID[id]; e != nil {
			return e
		}
		e := &ufunc{id: id}
		byID[id] = e
		order = append(order, id)
		return e
	}
	for i, a := range r.Allow {
		ep := fmt.Sprintf("%s.allow.%d", path, i)
		if len(a.Service) == 0 {
			c.errf(ep, "an opcua allow entry needs service")
			continue
		}
		var nodes []opcua.NodeID
		for j, ns := range a.Nodes {
			// The error names the text and what is wrong; errf adds the
			// file and line.
			n, err := opcua.ParseNodeID(ns)
			if err != nil {
				c.errf(fmt.Sprintf("%s.nodes.%d", ep, j), "%s", err.Error())
				continue
			}
			nodes = append(nodes, n)
		}
		for j, s := range a.Service {
			id, msg := parseService(s)
			if msg != "" {
				c.errf(fmt.Sprintf("%s.service.%d", ep, j), "%s", msg)
				continue
			}
			if len(a.Nodes) > 0 && id != opcuaWrite && id != opcuaCall {
				c.errf(fmt.Sprintf("%s.service.%d", ep, j), "nodes restrict only write and call, not %q", s)
				continue
			}
			e := get(id)
			if len(a.Nodes) == 0 {
				e.anyNode = true
			}
			e.nodes = append(e.nodes, nodes...)
		}
	}
	for _, id := range opcuaImplied {
		get(id).anyNode = true
	}
	for _, id := range order {
		u.services = append(u.services, *byID[id])
	}
	return u
}
