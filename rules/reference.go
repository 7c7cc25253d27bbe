package rules

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Reference returns the policy reference as Markdown (docs/policy.md),
// generated from Schema so that the reference, editor completion and the
// loader cannot drift apart: one section per mapping of the file, one row
// per key with its shape, its description and the names it accepts.
func Reference() string {
	var doc map[string]any
	if err := json.Unmarshal(Schema(), &doc); err != nil {
		panic("rules: schema does not unmarshal: " + err.Error())
	}
	var b strings.Builder
	b.WriteString(`# otgw policy reference (version 1)

Generated from the policy's JSON Schema (` + "`otgw schema`" + `, ` + "`rules/schema.go`" + `) by
` + "`go test ./rules -run TestPolicyReference -update`" + `; do not edit by hand.
The semantics (evaluation order, responses, tolerances, rate detections,
DNP3 Secure Authentication) are described in ` + "`rules/doc.go`" + ` (` + "`go doc ./rules`" + `).

A policy names zones (network segments behind a bridge port), assets (hosts)
and conduits (who may initiate what towards whom, IEC 62443-3-2); everything
else is denied: non-IP frames not in ` + "`l2.allow`" + `, every flow no conduit allows,
and every Modbus, DNP3 and OPC UA PDU no rule allows. ` + "`otgw check POLICY`" + `
validates a file and reports every problem as ` + "`FILE:LINE:COL: message`" + `.

Editors: point yaml-language-server at the schema, e.g. with a first line
` + "`# yaml-language-server: $schema=otgw-policy.json`" + ` after ` + "`otgw schema > otgw-policy.json`" + `.
The schema checks shape and names; ` + "`otgw check`" + ` also checks what a schema
cannot (that names exist, ranges are ordered, anomalies belong to the protocol).

## Example

` + "```yaml" + `
version: 1
name: cell-3
mode: enforce              # monitor | enforce (a conduit may override)
action: reply              # default deny action: drop | reset | reply
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell3:       { port: south, networks: [192.0.2.0/25] }
assets:
  hmi1: { ip: 192.0.2.130, zone: supervisory }
  plc1: { ip: 192.0.2.10,  zone: cell3 }
l2: { allow: [arp] }
conduits:
  - name: hmi-polls-plc
    from: hmi1
    to: plc1
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
            - write: holding 40-49
              values: 0-1000
            - function: 43/14
` + "```" + `
`)
	type section struct {
		path string
		s    map[string]any
	}
	var sections []section
	walkSchemaObjects(doc, func(path []string, s map[string]any) {
		sections = append(sections, section{strings.ReplaceAll(strings.ReplaceAll(strings.Join(path, "."), ".[]", "[]"), "*", "NAME"), s})
	})
	for _, sec := range sections {
		title := sec.path
		if title == "" {
			title = "top level"
		}
		fmt.Fprintf(&b, "\n## %s\n\n", title)
		if d, ok := sec.s["description"].(string); ok {
			b.WriteString(d + "\n\n")
		}
		var req []string
		if r, ok := sec.s["required"].([]any); ok {
			for _, x := range r {
				req = append(req, fmt.Sprint(x))
			}
		}
		b.WriteString("| key | value | meaning |\n| --- | --- | --- |\n")
		props := sec.s["properties"].(map[string]any)
		for _, k := range schemaKeysSorted(props) {
			p, _ := props[k].(map[string]any)
			key := "`" + k + "`"
			for _, r := range req {
				if r == k {
					key += " (required)"
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", key, shape(p), cell(describe(p)))
		}
	}
	return b.String()
}

// walkSchemaObjects calls visit for every object schema with properties
// that doc describes, in key order, with its path: property names, "[]"
// for a list's items, "*" for the values of a mapping of names; anyOf and
// oneOf alternatives share their parent's path. Reference and the schema
// tests walk the schema with it.
func walkSchemaObjects(doc map[string]any, visit func(path []string, s map[string]any)) {
	var walk func(path []string, s map[string]any)
	walk = func(path []string, s map[string]any) {
		if props, ok := s["properties"].(map[string]any); ok {
			visit(path, s)
			for _, k := range schemaKeysSorted(props) {
				if m, ok := props[k].(map[string]any); ok {
					walk(append(path[:len(path):len(path)], k), m)
				}
			}
		}
		if it, ok := s["items"].(map[string]any); ok {
			walk(append(path[:len(path):len(path)], "[]"), it)
		}
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			walk(append(path[:len(path):len(path)], "*"), ap)
		}
		for _, alt := range []string{"anyOf", "oneOf"} {
			if as, ok := s[alt].([]any); ok {
				for _, a := range as {
					if m, ok := a.(map[string]any); ok {
						walk(path, m)
					}
				}
			}
		}
	}
	walk(nil, doc)
}

func schemaKeysSorted(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// shape says in a few words what a key holds.
func shape(p map[string]any) string {
	if c, ok := p["const"]; ok {
		return fmt.Sprintf("`%v`", c)
	}
	if e, ok := p["enum"].([]any); ok {
		var v []string
		for _, x := range e {
			v = append(v, fmt.Sprintf("`%v`", x))
		}
		return strings.Join(v, " \\| ")
	}
	if as, ok := p["anyOf"].([]any); ok {
		for _, a := range as {
			if m, ok := a.(map[string]any); ok && m["type"] == "array" {
				return "value or list"
			}
		}
		return "value"
	}
	switch t := p["type"].(type) {
	case string:
		switch t {
		case "object":
			if _, ok := p["properties"]; ok {
				return "mapping (below)"
			}
			return "mapping of names (below)"
		case "array":
			return "list (below)"
		}
		return t
	case []any:
		return "value"
	}
	return "value"
}

// describe is a key's description plus the names it accepts, if closed.
func describe(p map[string]any) string {
	d, _ := p["description"].(string)
	var names []string
	seen := map[string]bool{} // a value-or-list names its values twice
	var collect func(m map[string]any)
	collect = func(m map[string]any) {
		if e, ok := m["enum"].([]any); ok && p["enum"] == nil {
			for _, x := range e {
				if n := fmt.Sprint(x); !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			}
		}
		for _, alt := range []string{"anyOf", "oneOf"} {
			if as, ok := m[alt].([]any); ok {
				for _, a := range as {
					if am, ok := a.(map[string]any); ok {
						collect(am)
					}
				}
			}
		}
		if it, ok := m["items"].(map[string]any); ok {
			collect(it)
		}
	}
	collect(p)
	if len(names) > 0 {
		d += " Names: " + strings.Join(names, ", ") + "."
	}
	return d
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
