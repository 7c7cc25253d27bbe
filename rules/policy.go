package rules

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policy is the parsed policy file (DESIGN.md, "The policy file (YAML,
// version 1)"): plain data, as written, with no validation beyond the shape
// of the YAML. Values with a small syntax of their own (ranges, table specs,
// function and object names, networks) are kept as the strings the author
// wrote; Compile parses and checks them and reports problems with the
// position Load recorded. rules/learn builds a Policy and writes it with
// Marshal. The zero value is an empty version-0 policy, which Compile rejects.
type Policy struct {
	Version  int
	Name     string
	Mode     string // monitor | enforce; "" means enforce
	Action   string // drop | reset | reply; "" means drop
	Zones    []Zone
	Assets   []Asset
	L2       L2
	Conduits []Conduit
	// Detections overrides the rate-based detections' defaults (see
	// Detector); entries in file order.
	Detections []Detection

	// File is the source file name used in messages (set by Load).
	File string
	pos  map[string]Pos // node positions by path, set by Load
}

// Zone is a named network segment behind one bridge port.
type Zone struct {
	Name        string
	Comment     string
	LineComment string   // end-of-line comment of the entry's first line (Marshal: one line)
	Port        string   // bridge port name (north, south); "" for any
	Networks    []string // CIDR prefixes
	VLANs       []string // VLAN ids or ranges
}

// Asset is a named host.
type Asset struct {
	Name        string
	Comment     string
	LineComment string // end-of-line comment of the entry's first line (Marshal: one line)
	IP          string
	MAC         string
	Zone        string
}

// L2 lists the non-IP ethertypes allowed to cross (names or 0xNNNN).
type L2 struct {
	Allow   []string
	Comment string // head comment of the l2 key (Marshal)
}

// Conduit allows traffic initiated by From towards To.
type Conduit struct {
	Name        string
	Comment     string
	LineComment string // end-of-line comment of the entry's first line (Marshal: one line)
	Description string
	From        []string // zone or asset names
	To          []string
	Mode        string // overrides Policy.Mode
	Action      string // overrides Policy.Action
	Tolerate    []string
	// Log names what is logged of the traffic the conduit allows:
	// "transactions" (one record per request/response pair, event_type
	// "transaction"). Empty: only denies and alerts are events.
	Log   []string
	Rules []Rule
}

// Rule is one item of a conduit's rules list; exactly one protocol is set.
type Rule struct {
	Name        string
	Comment     string
	LineComment string // end-of-line comment of the entry's first line (Marshal: one line)
	Modbus      *ModbusRule
	DNP3        *DNP3Rule
	OPCUA       *OPCUARule
	TCP         *PortRule
	UDP         *PortRule
	ICMP        *ICMPRule
	// Section is the rule of a protocol a rule section registered
	// (RegisterSection), keyed by its name.
	Section *SectionRule
}

// SectionRule allows the PDUs of a registered protocol (Section).
type SectionRule struct {
	Key      string   // the protocol's name, the rule's key
	Ports    []string // default: the section's port
	Tolerate []string
}

// ModbusRule allows Modbus/TCP (Modbus Messaging on TCP/IP v1.0b) PDUs.
type ModbusRule struct {
	Units    []string // unit ids or ranges; empty allows every unit
	Ports    []string // default 502
	Tolerate []string
	Allow    []ModbusAllow
}

// ModbusAllow is one allowance: exactly one of Read, Write, Function.
type ModbusAllow struct {
	Comment     string
	LineComment string   // end-of-line comment of the entry's first line (Marshal: one line)
	Read        string   // "holding 0-99[, 200-209]"
	Write       string   // "holding 40-49"
	Values      string   // "0-1000", holding writes only
	Function    []string // names, codes or code/sub-code
}

// DNP3Rule allows DNP3 (IEEE 1815) application fragments.
type DNP3Rule struct {
	Masters     []string // link addresses or ranges; empty allows any
	Outstations []string
	Ports       []string // default 20000 (TCP and UDP)
	Tolerate    []string
	// RequireAuth: control functions need DNP3 Secure Authentication
	// (IEEE 1815-2012 clause 7); see the package documentation.
	RequireAuth bool
	Allow       []DNP3Allow
}

// DNP3Allow allows functions with objects, or unsolicited responses.
type DNP3Allow struct {
	Comment     string
	LineComment string // end-of-line comment of the entry's first line (Marshal: one line)
	Function    []string
	Objects     []string // g12, g12v1, names; empty allows any object
	Unsolicited bool
}

// OPCUARule allows OPC UA binary (OPC 10000-6) messages.
type OPCUARule struct {
	MinSecurityMode  string   // none | sign | sign_and_encrypt; "" means none
	SecurityPolicies []string // short names; empty allows any
	Ports            []string // default 4840
	Tolerate         []string
	Allow            []OPCUAAllow
}

// OPCUAAllow allows services, and for write and call only the listed nodes.
type OPCUAAllow struct {
	Comment     string
	LineComment string // end-of-line comment of the entry's first line (Marshal: one line)
	Service     []string
	Nodes       []string
}

// PortRule allows TCP or UDP flows to destination ports (empty: any port).
type PortRule struct {
	Ports []string
}

// ICMPRule allows ICMP types (empty: any type).
type ICMPRule struct {
	Types []string
}

// Pos is a 1-based position in the policy file.
type Pos struct{ Line, Col int }

// posOf returns the position recorded for path or its nearest ancestor.
func (p *Policy) posOf(path string) Pos {
	if p == nil || p.pos == nil {
		return Pos{}
	}
	for {
		if ps, ok := p.pos[path]; ok {
			return ps
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			return Pos{}
		}
		path = path[:i]
	}
}

// Load reads and parses a policy file. See Parse. It reads at most
// MaxPolicyBytes: a longer file is refused with the line the limit falls
// on, without reading the rest.
func Load(path string) (*Policy, error) {
	data, err := ReadPolicy(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses policy YAML; name is the file name used in messages. Unknown
// keys and wrong shapes are errors. The error, if any, is a Problems value
// (errors.Is(err, ErrInvalid)). Unless the YAML itself is unreadable the
// returned Policy holds everything that could be read even when err != nil,
// so that Compile can report further problems in the same run.
//
// The limits (MaxPolicyBytes, MaxPolicyValues, MaxListLen, MaxRanges,
// MaxPolicyDepth) are checked first, by a scan of the text, so that the
// YAML tree is built only for a file within them.
func Parse(name string, data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, tooBig(name, data[:MaxPolicyBytes], int64(len(data)))
	}
	if err := prescan(name, data); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return nil, Problems{{File: name, Line: line, Col: 1, Msg: "YAML: " + msg}}
	}
	d := &decoder{file: name, p: &Policy{File: name, pos: map[string]Pos{}}}
	if len(doc.Content) == 0 {
		d.errAt(Pos{1, 1}, "empty policy file")
		return d.p, d.probs.sorted()
	}
	d.policy(doc.Content[0])
	if len(d.probs) > 0 {
		return d.p, d.probs.sorted()
	}
	return d.p, nil
}

type decoder struct {
	file  string
	p     *Policy
	probs Problems
}

func nodePos(n *yaml.Node) Pos { return Pos{n.Line, n.Column} }

func (d *decoder) errAt(p Pos, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Line: p.Line, Col: p.Col, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) mark(path string, n *yaml.Node) { d.p.pos[path] = nodePos(n) }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// keysHook, when set (by the schema test only), is told the keys each
// mapping of the file may hold, by path: the loader's vocabulary, which the
// JSON Schema must match.
var keysHook func(path string, known []string)

// fields walks a mapping, calling fn for each known key and reporting
// unknown and duplicate keys with a suggestion.
func (d *decoder) fields(n *yaml.Node, path, what string, known []string, fn func(key string, k, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		d.errAt(nodePos(n), "%s must be a mapping, not %s", what, kindName(n))
		return false
	}
	if keysHook != nil {
		keysHook(path, known)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if !contains(known, key) {
			d.errAt(nodePos(k), "unknown key %q in %s%s", key, what, suggest(key, known))
			continue
		}
		if seen[key] {
			d.errAt(nodePos(k), "duplicate key %q in %s", key, what)
			continue
		}
		seen[key] = true
		d.mark(join(path, key), v)
		d.mark(join(path, key)+"^", k)
		fn(key, k, v)
	}
	return true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *decoder) str(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		d.errAt(nodePos(n), "%s must be a scalar, not %s", what, kindName(n))
		return ""
	}
	return n.Value
}

// short reports whether a list (per = 1) or mapping (per = 2, key and
// value) has at most MaxListLen entries; else it reports the first entry
// past the limit. Prescan refuses such files before the YAML tree is
// built; this keeps Parse right for any input.
func (d *decoder) short(content []*yaml.Node, per int, what string) bool {
	if len(content)/per <= MaxListLen {
		return true
	}
	d.errAt(nodePos(content[MaxListLen*per]), "%s has more than %d entries (the limit)", what, MaxListLen)
	return false
}

// ranges reads a scalar holding comma-separated ranges, at most MaxRanges.
func (d *decoder) ranges(n *yaml.Node, what string) string {
	s := d.str(n, what)
	if strings.Count(s, ",") >= MaxRanges {
		d.errAt(nodePos(n), "%s has more than %d ranges (the limit)", what, MaxRanges)
		return ""
	}
	return s
}

func (d *decoder) boolean(n *yaml.Node, what string) bool {
	s := d.str(n, what)
	switch s {
	case "true":
		return true
	case "false", "":
		return false
	}
	d.errAt(nodePos(n), "%s must be true or false, not %q", what, s)
	return false
}

// list accepts a scalar or a list of scalars.
func (d *decoder) list(n *yaml.Node, path, what string) []string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		d.mark(path+".0", n)
		return []string{n.Value}
	case yaml.SequenceNode:
		if !d.short(n.Content, 1, what) {
			return nil
		}
		out := make([]string, 0, len(n.Content))
		for i, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				d.errAt(nodePos(c), "%s entries must be scalars, not %s", what, kindName(c))
				continue
			}
			d.mark(fmt.Sprintf("%s.%d", path, len(out)), c)
			_ = i
			out = append(out, c.Value)
		}
		return out
	}
	d.errAt(nodePos(n), "%s must be a value or a list, not %s", what, kindName(n))
	return nil
}

func comment(k *yaml.Node) string {
	c := strings.TrimSpace(k.HeadComment)
	var lines []string
	for _, l := range strings.Split(c, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// lineComment returns the end-of-line comment of the line that holds key
// k and its value v: yaml.v3 puts it on the value when the value is a
// scalar or flow collection, on the key when it is a block collection.
func lineComment(k, v *yaml.Node) string {
	c := v.LineComment
	if c == "" {
		c = k.LineComment
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(c), "#"))
}

// firstLineComment returns the end-of-line comment of a mapping's first line.
func firstLineComment(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode || len(n.Content) < 2 {
		return ""
	}
	return lineComment(n.Content[0], n.Content[1])
}

var policyKeys = []string{"version", "name", "mode", "action", "zones", "assets", "l2", "detections", "conduits"}

func (d *decoder) policy(n *yaml.Node) {
	p := d.p
	ok := d.fields(n, "", "policy", policyKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			s := d.str(v, "version")
			iv, err := strconv.Atoi(s)
			if err != nil {
				d.errAt(nodePos(v), "version must be a number, not %q", s)
				p.Version = -1
				return
			}
			p.Version = iv
		case "name":
			p.Name = d.str(v, "name")
		case "mode":
			p.Mode = d.str(v, "mode")
		case "action":
			p.Action = d.str(v, "action")
		case "zones":
			d.zones(v)
		case "assets":
			d.assets(v)
		case "l2":
			d.fields(v, "l2", "l2", []string{"allow"}, func(_ string, _, v *yaml.Node) {
				p.L2.Allow = d.list(v, "l2.allow", "l2 allow")
			})
		case "detections":
			d.detections(v)
		case "conduits":
			if v.Kind != yaml.SequenceNode {
				if v.Tag != "!!null" {
					d.errAt(nodePos(v), "conduits must be a list, not %s", kindName(v))
				}
				return
			}
			if !d.short(v.Content, 1, "conduits") {
				return
			}
			for i, c := range v.Content {
				d.conduit(c, i)
			}
		}
	})
	if ok {
		if _, has := p.pos["version"]; !has {
			d.errAt(nodePos(n), "missing key \"version\" (this reader knows version 1)")
			p.Version = -1
		}
	}
}

// named walks a mapping of name -> mapping, keeping file order.
func (d *decoder) named(n *yaml.Node, section string, fn func(name, path string, k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		if n.Tag != "!!null" {
			d.errAt(nodePos(n), "%s must be a mapping of names, not %s", section, kindName(n))
		}
		return
	}
	if !d.short(n.Content, 2, section) {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := section + "." + k.Value
		if _, dup := d.p.pos[path+"^"]; dup {
			d.errAt(nodePos(k), "duplicate %s name %q", strings.TrimSuffix(section, "s"), k.Value)
			continue
		}
		d.mark(path, v)
		d.mark(path+"^", k)
		fn(k.Value, path, k, v)
	}
}

func (d *decoder) zones(n *yaml.Node) {
	d.named(n, "zones", func(name, path string, k, v *yaml.Node) {
		z := Zone{Name: name, Comment: comment(k), LineComment: lineComment(k, v)}
		d.fields(v, path, "zone "+strconv.Quote(name), []string{"port", "networks", "vlans", "description"}, func(key string, _, v *yaml.Node) {
			switch key {
			case "port":
				z.Port = d.str(v, "port")
			case "networks":
				z.Networks = d.list(v, path+".networks", "networks")
			case "vlans":
				z.VLANs = d.list(v, path+".vlans", "vlans")
			case "description":
				if z.Comment == "" {
					z.Comment = d.str(v, "description")
				}
			}
		})
		d.p.Zones = append(d.p.Zones, z)
	})
}

func (d *decoder) assets(n *yaml.Node) {
	d.named(n, "assets", func(name, path string, k, v *yaml.Node) {
		a := Asset{Name: name, Comment: comment(k), LineComment: lineComment(k, v)}
		d.fields(v, path, "asset "+strconv.Quote(name), []string{"ip", "mac", "zone", "description"}, func(key string, _, v *yaml.Node) {
			switch key {
			case "ip":
				a.IP = d.str(v, "ip")
			case "mac":
				a.MAC = d.str(v, "mac")
			case "zone":
				a.Zone = d.str(v, "zone")
			case "description":
				if a.Comment == "" {
					a.Comment = d.str(v, "description")
				}
			}
		})
		d.p.Assets = append(d.p.Assets, a)
	})
}

var conduitKeys = []string{"name", "description", "from", "to", "mode", "action", "tolerate", "log", "rules"}

func (d *decoder) conduit(n *yaml.Node, i int) {
	path := fmt.Sprintf("conduits.%d", i)
	d.mark(path, n)
	c := Conduit{}
	if n.Kind == yaml.MappingNode && len(n.Content) > 0 {
		c.Comment = comment(n.Content[0])
		if c.Comment == "" {
			c.Comment = comment(n)
		}
		c.LineComment = firstLineComment(n)
	}
	d.fields(n, path, "conduit", conduitKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "name":
			c.Name = d.str(v, "conduit name")
		case "description":
			c.Description = d.str(v, "description")
		case "from":
			c.From = d.list(v, path+".from", "from")
		case "to":
			c.To = d.list(v, path+".to", "to")
		case "mode":
			c.Mode = d.str(v, "mode")
		case "action":
			c.Action = d.str(v, "action")
		case "tolerate":
			c.Tolerate = d.list(v, path+".tolerate", "tolerate")
		case "log":
			c.Log = d.list(v, path+".log", "log")
		case "rules":
			if v.Kind != yaml.SequenceNode {
				d.errAt(nodePos(v), "rules must be a list, not %s", kindName(v))
				return
			}
			if !d.short(v.Content, 1, "rules") {
				return
			}
			for j, r := range v.Content {
				c.Rules = append(c.Rules, d.rule(r, fmt.Sprintf("%s.rules.%d", path, j)))
			}
		}
	})
	d.p.Conduits = append(d.p.Conduits, c)
}

var ruleKeys = []string{"name", "modbus", "dnp3", "opcua", "tcp", "udp", "icmp"}

func (d *decoder) rule(n *yaml.Node, path string) Rule {
	d.mark(path, n)
	r := Rule{}
	if n.Kind == yaml.MappingNode && len(n.Content) > 0 {
		r.Comment = comment(n.Content[0])
		r.LineComment = firstLineComment(n)
	}
	protos := 0
	d.fields(n, path, "rule", append(ruleKeys[:len(ruleKeys):len(ruleKeys)], sectionKeys...), func(key string, _, v *yaml.Node) {
		p := path + "." + key
		if key != "name" {
			protos++
			if protos > 1 {
				d.errAt(nodePos(v), "a rule holds one protocol: start a new list item for %q", key)
				return
			}
		}
		switch key {
		case "name":
			r.Name = d.str(v, "rule name")
		case "modbus":
			r.Modbus = d.modbus(v, p)
		case "dnp3":
			r.DNP3 = d.dnp3(v, p)
		case "opcua":
			r.OPCUA = d.opcua(v, p)
		case "tcp", "udp":
			pr := &PortRule{}
			if v.Tag != "!!null" {
				d.fields(v, p, key, []string{"ports"}, func(_ string, _, v *yaml.Node) {
					pr.Ports = d.list(v, p+".ports", "ports")
				})
			}
			if key == "tcp" {
				r.TCP = pr
			} else {
				r.UDP = pr
			}
		case "icmp":
			ir := &ICMPRule{}
			if v.Tag != "!!null" {
				d.fields(v, p, "icmp", []string{"types"}, func(_ string, _, v *yaml.Node) {
					ir.Types = d.list(v, p+".types", "types")
				})
			}
			r.ICMP = ir
		default:
			sr := &SectionRule{Key: key}
			if v.Tag != "!!null" {
				d.fields(v, p, key+" rule", []string{"ports", "tolerate"}, func(k string, _, v *yaml.Node) {
					if k == "ports" {
						sr.Ports = d.list(v, p+".ports", "ports")
					} else {
						sr.Tolerate = d.list(v, p+".tolerate", "tolerate")
					}
				})
			}
			r.Section = sr
		}
	})
	if n.Kind == yaml.MappingNode && protos == 0 {
		d.errAt(nodePos(n), "rule names no protocol (one of modbus, dnp3, opcua, tcp, udp, icmp)")
	}
	return r
}

func (d *decoder) modbus(n *yaml.Node, path string) *ModbusRule {
	m := &ModbusRule{}
	d.fields(n, path, "modbus rule", []string{"units", "ports", "tolerate", "allow"}, func(key string, _, v *yaml.Node) {
		switch key {
		case "units":
			m.Units = d.list(v, path+".units", "units")
		case "ports":
			m.Ports = d.list(v, path+".ports", "ports")
		case "tolerate":
			m.Tolerate = d.list(v, path+".tolerate", "tolerate")
		case "allow":
			d.items(v, path+".allow", func(e *yaml.Node, ep string, k0 *yaml.Node) {
				a := ModbusAllow{Comment: comment(k0), LineComment: firstLineComment(e)}
				d.fields(e, ep, "modbus allow entry", []string{"read", "write", "values", "function"}, func(key string, _, v *yaml.Node) {
					switch key {
					case "read":
						a.Read = d.ranges(v, "read")
					case "write":
						a.Write = d.ranges(v, "write")
					case "values":
						a.Values = d.ranges(v, "values")
					case "function":
						a.Function = d.list(v, ep+".function", "function")
					}
				})
				m.Allow = append(m.Allow, a)
			})
		}
	})
	return m
}

// items walks a list of mappings.
func (d *decoder) items(n *yaml.Node, path string, fn func(e *yaml.Node, path string, firstKey *yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		d.errAt(nodePos(n), "allow must be a list, not %s", kindName(n))
		return
	}
	if !d.short(n.Content, 1, "allow") {
		return
	}
	for i, e := range n.Content {
		ep := fmt.Sprintf("%s.%d", path, i)
		d.mark(ep, e)
		k0 := e
		if e.Kind == yaml.MappingNode && len(e.Content) > 0 {
			k0 = e.Content[0]
		}
		fn(e, ep, k0)
	}
}

func (d *decoder) dnp3(n *yaml.Node, path string) *DNP3Rule {
	r := &DNP3Rule{}
	d.fields(n, path, "dnp3 rule", []string{"masters", "outstations", "ports", "tolerate", "require_auth", "allow"}, func(key string, _, v *yaml.Node) {
		switch key {
		case "masters":
			r.Masters = d.list(v, path+".masters", "masters")
		case "outstations":
			r.Outstations = d.list(v, path+".outstations", "outstations")
		case "ports":
			r.Ports = d.list(v, path+".ports", "ports")
		case "tolerate":
			r.Tolerate = d.list(v, path+".tolerate", "tolerate")
		case "require_auth":
			r.RequireAuth = d.boolean(v, "require_auth")
		case "allow":
			d.items(v, path+".allow", func(e *yaml.Node, ep string, k0 *yaml.Node) {
				a := DNP3Allow{Comment: comment(k0), LineComment: firstLineComment(e)}
				d.fields(e, ep, "dnp3 allow entry", []string{"function", "objects", "unsolicited"}, func(key string, _, v *yaml.Node) {
					switch key {
					case "function":
						a.Function = d.list(v, ep+".function", "function")
					case "objects":
						a.Objects = d.list(v, ep+".objects", "objects")
					case "unsolicited":
						a.Unsolicited = d.boolean(v, "unsolicited")
					}
				})
				r.Allow = append(r.Allow, a)
			})
		}
	})
	return r
}

func (d *decoder) opcua(n *yaml.Node, path string) *OPCUARule {
	r := &OPCUARule{}
	d.fields(n, path, "opcua rule", []string{"min_security_mode", "security_policies", "ports", "tolerate", "allow"}, func(key string, _, v *yaml.Node) {
		switch key {
		case "min_security_mode":
			r.MinSecurityMode = d.str(v, "min_security_mode")
		case "security_policies":
			r.SecurityPolicies = d.list(v, path+".security_policies", "security_policies")
		case "ports":
			r.Ports = d.list(v, path+".ports", "ports")
		case "tolerate":
			r.Tolerate = d.list(v, path+".tolerate", "tolerate")
		case "allow":
			d.items(v, path+".allow", func(e *yaml.Node, ep string, k0 *yaml.Node) {
				a := OPCUAAllow{Comment: comment(k0), LineComment: firstLineComment(e)}
				d.fields(e, ep, "opcua allow entry", []string{"service", "nodes"}, func(key string, _, v *yaml.Node) {
					switch key {
					case "service":
						a.Service = d.list(v, ep+".service", "service")
					case "nodes":
						a.Nodes = d.list(v, ep+".nodes", "nodes")
					}
				})
				r.Allow = append(r.Allow, a)
			})
		}
	})
	return r
}

// ---- Marshal ----

// Marshal writes p as policy YAML that Parse accepts, with Comment fields as
// comments. rules/learn uses it to emit drafted policies.
func Marshal(p *Policy) ([]byte, error) {
	if p == nil {
		return nil, errors.New("rules: Marshal of nil policy")
	}
	root := mapping()
	add(root, "version", scalar(strconv.Itoa(p.Version)))
	if p.Name != "" {
		add(root, "name", scalar(p.Name))
	}
	if p.Mode != "" {
		add(root, "mode", scalar(p.Mode))
	}
	if p.Action != "" {
		add(root, "action", scalar(p.Action))
	}
	if len(p.Zones) > 0 {
		zs := mapping()
		for _, z := range p.Zones {
			m := flowMapping()
			if z.Port != "" {
				add(m, "port", scalar(z.Port))
			}
			if len(z.Networks) > 0 {
				add(m, "networks", flowSeq(z.Networks))
			}
			if len(z.VLANs) > 0 {
				add(m, "vlans", flowSeq(z.VLANs))
			}
			k := add(zs, z.Name, m)
			k.HeadComment = commentText(z.Comment)
			setLineComment(k, m, z.LineComment)
		}
		add(root, "zones", zs)
	}
	if len(p.Assets) > 0 {
		as := mapping()
		for _, a := range p.Assets {
			m := flowMapping()
			if a.IP != "" {
				add(m, "ip", scalar(a.IP))
			}
			if a.MAC != "" {
				add(m, "mac", scalar(a.MAC))
			}
			if a.Zone != "" {
				add(m, "zone", scalar(a.Zone))
			}
			k := add(as, a.Name, m)
			k.HeadComment = commentText(a.Comment)
			setLineComment(k, m, a.LineComment)
		}
		add(root, "assets", as)
	}
	if len(p.L2.Allow) > 0 {
		m := flowMapping()
		add(m, "allow", flowSeq(p.L2.Allow))
		k := add(root, "l2", m)
		k.HeadComment = commentText(p.L2.Comment)
	}
	if len(p.Detections) > 0 {
		add(root, "detections", marshalDetections(p))
	}
	cs := &yaml.Node{Kind: yaml.SequenceNode}
	for _, c := range p.Conduits {
		m := mapping()
		k := add(m, "name", scalar(c.Name))
		k.HeadComment = commentText(c.Comment)
		setLineComment(k, m.Content[1], c.LineComment)
		if c.Description != "" {
			add(m, "description", scalar(c.Description))
		}
		add(m, "from", listOrScalar(c.From))
		add(m, "to", listOrScalar(c.To))
		if c.Mode != "" {
			add(m, "mode", scalar(c.Mode))
		}
		if c.Action != "" {
			add(m, "action", scalar(c.Action))
		}
		if len(c.Tolerate) > 0 {
			add(m, "tolerate", flowSeq(c.Tolerate))
		}
		if len(c.Log) > 0 {
			add(m, "log", listOrScalar(c.Log))
		}
		rs := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range c.Rules {
			rs.Content = append(rs.Content, marshalRule(&r))
		}
		add(m, "rules", rs)
		cs.Content = append(cs.Content, m)
	}
	add(root, "conduits", cs)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("rules: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("rules: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

func marshalRule(r *Rule) *yaml.Node {
	m := mapping()
	var first *yaml.Node
	if r.Name != "" {
		first = add(m, "name", scalar(r.Name))
	}
	body := mapping()
	var key string
	switch {
	case r.Modbus != nil:
		key = "modbus"
		addList(body, "units", r.Modbus.Units)
		addList(body, "ports", r.Modbus.Ports)
		addList(body, "tolerate", r.Modbus.Tolerate)
		al := &yaml.Node{Kind: yaml.SequenceNode}
		for _, a := range r.Modbus.Allow {
			e := mapping()
			var k *yaml.Node
			switch {
			case a.Read != "":
				k = add(e, "read", scalar(a.Read))
			case a.Write != "":
				k = add(e, "write", scalar(a.Write))
				if a.Values != "" {
					add(e, "values", scalar(a.Values))
				}
			default:
				k = add(e, "function", listOrScalar(a.Function))
			}
			k.HeadComment = commentText(a.Comment)
			setLineComment(k, e.Content[1], a.LineComment)
			al.Content = append(al.Content, e)
		}
		add(body, "allow", al)
	case r.DNP3 != nil:
		key = "dnp3"
		addList(body, "masters", r.DNP3.Masters)
		addList(body, "outstations", r.DNP3.Outstations)
		addList(body, "ports", r.DNP3.Ports)
		addList(body, "tolerate", r.DNP3.Tolerate)
		if r.DNP3.RequireAuth {
			add(body, "require_auth", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
		}
		al := &yaml.Node{Kind: yaml.SequenceNode}
		for _, a := range r.DNP3.Allow {
			e := mapping()
			var k *yaml.Node
			if a.Unsolicited {
				k = add(e, "unsolicited", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
			} else {
				k = add(e, "function", listOrScalar(a.Function))
				addList(e, "objects", a.Objects)
			}
			k.HeadComment = commentText(a.Comment)
			setLineComment(k, e.Content[1], a.LineComment)
			al.Content = append(al.Content, e)
		}
		add(body, "allow", al)
	case r.OPCUA != nil:
		key = "opcua"
		if r.OPCUA.MinSecurityMode != "" {
			add(body, "min_security_mode", scalar(r.OPCUA.MinSecurityMode))
		}
		addList(body, "security_policies", r.OPCUA.SecurityPolicies)
		addList(body, "ports", r.OPCUA.Ports)
		addList(body, "tolerate", r.OPCUA.Tolerate)
		al := &yaml.Node{Kind: yaml.SequenceNode}
		for _, a := range r.OPCUA.Allow {
			e := mapping()
			k := add(e, "service", listOrScalar(a.Service))
			addList(e, "nodes", a.Nodes)
			k.HeadComment = commentText(a.Comment)
			setLineComment(k, e.Content[1], a.LineComment)
			al.Content = append(al.Content, e)
		}
		add(body, "allow", al)
	case r.TCP != nil:
		key = "tcp"
		body.Style = yaml.FlowStyle
		addList(body, "ports", r.TCP.Ports)
	case r.UDP != nil:
		key = "udp"
		body.Style = yaml.FlowStyle
		addList(body, "ports", r.UDP.Ports)
	case r.ICMP != nil:
		key = "icmp"
		body.Style = yaml.FlowStyle
		addList(body, "types", r.ICMP.Types)
	case r.Section != nil:
		key = r.Section.Key
		body.Style = yaml.FlowStyle
		addList(body, "ports", r.Section.Ports)
		addList(body, "tolerate", r.Section.Tolerate)
	}
	k := add(m, key, body)
	if first == nil {
		first = k
	}
	first.HeadComment = commentText(r.Comment)
	setLineComment(m.Content[0], m.Content[1], r.LineComment)
	return m
}

// setLineComment puts c at the end of the line holding key k and value v,
// where yaml.v3 writes and reads it back (see lineComment). A comment of
// several lines is joined into one.
func setLineComment(k, v *yaml.Node, c string) {
	c = strings.Join(strings.Fields(c), " ")
	if c == "" {
		return
	}
	if v.Kind == yaml.ScalarNode || v.Style&yaml.FlowStyle != 0 {
		v.LineComment = "# " + c
	} else {
		k.LineComment = "# " + c
	}
}

func commentText(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "# " + l
	}
	return strings.Join(lines, "\n")
}

func mapping() *yaml.Node     { return &yaml.Node{Kind: yaml.MappingNode} }
func flowMapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle} }

var plainRE = regexp.MustCompile(`^[A-Za-z0-9_./;=-]([A-Za-z0-9_./:;=, -]*[A-Za-z0-9_./;=-])?$`)

func scalar(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: s}
	// Keep plain style for numbers and simple words; quote anything YAML
	// could read as another type or that needs quoting.
	switch {
	case isNum(s):
		n.Tag = "!!int"
	case plainRE.MatchString(s) && !isYAMLWord(s) && !strings.Contains(s, ": "):
		n.Tag = "!!str"
	default:
		n.Tag = "!!str"
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func isNum(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(s) == 1 || s[0] != '0'
}

func isYAMLWord(s string) bool {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
		return true
	}
	return false
}

func flowSeq(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, scalar(s))
	}
	return n
}

func listOrScalar(items []string) *yaml.Node {
	if len(items) == 1 {
		return scalar(items[0])
	}
	return flowSeq(items)
}

func add(m *yaml.Node, key string, v *yaml.Node) *yaml.Node {
	k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
	m.Content = append(m.Content, k, v)
	return k
}

func addList(m *yaml.Node, key string, items []string) {
	if len(items) > 0 {
		add(m, key, flowSeq(items))
	}
}

// sortedKeys is used by tests and Check for stable output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
