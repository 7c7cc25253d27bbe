package rules

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/otgw/otgw/protocols"
)

// SchemaID is the $id of the policy's JSON Schema.
const SchemaID = "https://otgw.invalid/schema/policy-v1.json"

// Schema returns the JSON Schema (draft 2020-12) of the policy file,
// version 1: every key the loader accepts, with its shape, the closed
// vocabularies (modes, actions, function, service, policy and anomaly
// names of the parser packages, ethertype, ICMP and detector names) as
// enumerations, and a description per key. Editors use it for completion
// and hover help (yaml-language-server: a `# yaml-language-server:
// $schema=...` comment or a settings entry); `otgw schema` prints it.
//
// The schema checks shape and vocabulary only. `otgw check` (Parse and
// Compile) is the authority: it also checks what a schema cannot say (that
// zone and asset names exist, ranges are ordered, an anomaly belongs to
// the rule's protocol, networks do not overlap). A test keeps the two in
// step: every key the loader accepts is in the schema and nothing else.
func Schema() []byte {
	b, err := json.MarshalIndent(schemaDoc(), "", "  ")
	if err != nil {
		panic("rules: schema does not marshal: " + err.Error()) // a programmer error
	}
	return append(b, '\n')
}

type obj = map[string]any

func str(desc string) obj     { return obj{"type": "string", "description": desc} }
func boolean(desc string) obj { return obj{"type": "boolean", "description": desc} }

// scalars is a value or a list of values (the loader accepts both).
func scalars(desc string, item obj) obj {
	return obj{"description": desc, "anyOf": []any{item, obj{"type": "array", "items": item}}}
}

// named is a string from names (completion) or, where numbers are accepted
// too, a number or a numeric string matching numPattern.
func named(names []string, numPattern string) obj {
	n := append([]string(nil), names...)
	sort.Strings(n)
	alts := []any{obj{"enum": n}}
	if numPattern != "" {
		alts = append(alts, obj{"type": "integer", "minimum": 0}, obj{"type": "string", "pattern": numPattern})
	}
	return obj{"anyOf": alts}
}

func enum(desc string, vals ...string) obj { return obj{"enum": vals, "description": desc} }

func closed(desc string, props obj, required ...string) obj {
	o := obj{"type": "object", "additionalProperties": false, "properties": props}
	if desc != "" {
		o["description"] = desc
	}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func schemaDoc() obj {
	const rangePat = `^\s*[0-9]+(\s*-\s*[0-9]+)?\s*$`
	portItem := obj{"anyOf": []any{obj{"type": "integer", "minimum": 1, "maximum": 65535}, obj{"type": "string", "pattern": rangePat}}}
	ports := func(def string) obj {
		return scalars("Destination ports or ranges (\"20000-20010\"); default "+def+".", portItem)
	}
	rangeItem := obj{"anyOf": []any{obj{"type": "integer", "minimum": 0}, obj{"type": "string", "pattern": rangePat}}}
	// Only anomalies the gateway can honour are offered: bytes that cannot
	// be framed are denied whatever the policy says (Compile refuses them).
	honoured := func(p protocols.Proto, names []string) []string {
		var out []string
		for _, n := range names {
			if !slices.Contains(unframeable[p], n) {
				out = append(out, n)
			}
		}
		return out
	}
	tolerate := func(proto string, names []string) obj {
		return scalars("Parser anomalies of "+proto+" to accept instead of denying (names the parser reports and the gateway can honour).", named(names, ""))
	}
	modes := enum("monitor: forward everything and raise alerts; enforce: refuse what is not allowed.", "monitor", "enforce")
	actions := enum("How a denied PDU or flow is refused: drop, reset (TCP RST to both ends), reply (a protocol-native error, then reset).", "drop", "reset", "reply")
	// Names are offered for completion; the loader also takes codes,
	// aliases and name/sub-code forms, which the patterns admit (check has
	// the last word on spelling).
	const word = `[A-Za-z][A-Za-z0-9_]*`
	funcPat := `^(` + word + `|[0-9]+)(/(` + word + `|[0-9]+))?$`
	var tables []string
	for name := range tableNames {
		tables = append(tables, name)
	}
	sort.Strings(tables)
	tableSpec := obj{"type": "string", "pattern": `^\s*(` + strings.Join(tables, "|") + `)(\s.*)?$`,
		"description": "A table and address ranges: \"holding 0-99, 200-209\" (tables: " + strings.Join(tables, ", ") + ")."}

	modbus := closed("Modbus/TCP (Modbus Application Protocol v1.1b3, Messaging on TCP/IP v1.0b).", obj{
		"units":    scalars("Unit identifiers or ranges; empty allows every unit.", rangeItem),
		"ports":    ports("502"),
		"tolerate": tolerate("Modbus", honoured(protocols.ProtoModbus, modbusAnomalies())),
		"allow": obj{"type": "array", "description": "Allowances; a request is allowed when one entry allows it.",
			"items": closed("Exactly one of read, write or function.", obj{
				"read":     withDesc(tableSpec, "Reads of these addresses (FC 1-4 and the read half of FC 23)."),
				"write":    withDesc(tableSpec, "Writes of these addresses (FC 5, 6, 15, 16, 22 and the write half of 23)."),
				"values":   obj{"type": []string{"string", "integer"}, "description": "Allowed written values or ranges (\"0-1000\"), holding-register writes only."},
				"function": scalars("Function names, codes or code/sub-code (\"43/14\", \"8/0\").", named(modbusFuncNames(), funcPat)),
			})},
	})
	dnp3 := closed("DNP3 (IEEE 1815-2012) over TCP or UDP.", obj{
		"masters":      scalars("Master link addresses or ranges; empty allows any.", rangeItem),
		"outstations":  scalars("Outstation link addresses or ranges; empty allows any.", rangeItem),
		"ports":        ports("20000"),
		"tolerate":     tolerate("DNP3", honoured(protocols.ProtoDNP3, dnp3Anomalies())),
		"require_auth": boolean("Control functions need DNP3 Secure Authentication (IEEE 1815-2012 clause 7); see rules/doc.go."),
		"allow": obj{"type": "array", "description": "Allowances; a request is allowed when one entry allows it.",
			"items": closed("Functions with objects, or unsolicited responses.", obj{
				"function":    scalars("Function names (IEEE 1815-2012 Table 4-1) or codes.", named(dnp3FuncNames(), `^(`+word+`|[0-9]+)$`)),
				"objects":     scalars("Object groups or group/variations: g12, g12v1; empty allows any object.", obj{"type": "string", "pattern": `^g[0-9]+(v[0-9]+)?$`}),
				"unsolicited": boolean("Allow unsolicited responses from the outstations."),
			})},
	})
	opcua := closed("OPC UA binary (OPC 10000-6); session services are implied.", obj{
		"min_security_mode": enum("Lowest secure-channel mode accepted.", "none", "sign", "sign_and_encrypt"),
		"security_policies": scalars("Security policies (short names); empty allows any.", named(opcuaPolicyNames(), "")),
		"ports":             ports("4840"),
		"tolerate":          tolerate("OPC UA", honoured(protocols.ProtoOPCUA, opcuaAnomalies())),
		"allow": obj{"type": "array", "description": "Allowances; a request is allowed when one entry allows it.",
			"items": closed("Services, and for write and call the nodes they may touch.", obj{
				"service": scalars("Service names (OPC 10000-4) or binary encoding ids.", named(opcuaServiceNames(), `^(`+word+`|[0-9]+)$`)),
				"nodes":   scalars("NodeIds write and call may address (\"ns=2;s=Line1.Setpoint\").", obj{"type": "string"}),
			})},
	})
	var icmpTypes []string
	for name := range icmpNames {
		icmpTypes = append(icmpTypes, name)
	}
	protoKeys := []string{"modbus", "dnp3", "opcua", "tcp", "udp", "icmp"}
	var oneOf []any
	for _, k := range protoKeys {
		oneOf = append(oneOf, obj{"required": []string{k}})
	}
	rule := closed("One protocol rule: exactly one of modbus, dnp3, opcua, tcp, udp, icmp.", obj{
		"name":   str("A name for events and reports."),
		"modbus": modbus,
		"dnp3":   dnp3,
		"opcua":  opcua,
		"tcp":    closed("Plain TCP flows (uninspected).", obj{"ports": ports("any")}),
		"udp":    closed("Plain UDP flows (uninspected).", obj{"ports": ports("any")}),
		"icmp":   closed("ICMP messages.", obj{"types": scalars("ICMP types by name or number; empty allows any.", named(icmpTypes, `^[0-9]+$`))}),
	})
	for _, s := range sections {
		if s == nil {
			continue
		}
		k := s.Proto.String()
		props := rule["properties"].(obj)
		props[k] = closed("Registered protocol "+k+" (rules.Section).", obj{
			"ports":    ports(strconv.Itoa(int(s.Port))),
			"tolerate": tolerate(k, protocols.AnomalyNames(s.Proto)),
		})
		oneOf = append(oneOf, obj{"required": []string{k}})
	}
	rule["oneOf"] = oneOf

	var anomalies []string
	anomalies = append(anomalies, honoured(protocols.ProtoModbus, modbusAnomalies())...)
	anomalies = append(anomalies, honoured(protocols.ProtoDNP3, dnp3Anomalies())...)
	anomalies = append(anomalies, honoured(protocols.ProtoOPCUA, opcuaAnomalies())...)
	endpoints := func(desc string) obj {
		return scalars(desc, obj{"type": "string"})
	}
	conduit := closed("Traffic initiated by `from` towards `to` (IEC 62443-3-2 conduit); responses ride the flow.", obj{
		"name":        str("Conduit name, used in events and reports."),
		"description": str("Free text."),
		"from":        endpoints("Initiators: zone or asset names."),
		"to":          endpoints("Responders: zone or asset names."),
		"mode":        modes,
		"action":      actions,
		"tolerate":    scalars("Anomalies accepted on every rule of the conduit.", named(anomalies, "")),
		"log": scalars("What is logged of the traffic the conduit allows, besides denies and alerts: `transactions` writes one record "+
			"per allowed request/response pair (event_type `transaction`, severity info) to the events file and syslog, rate-limited.", named(LogValues, "")),
		"rules": obj{"type": "array", "items": rule, "description": "Protocol rules; the first that allows decides."},
	}, "from", "to", "rules")

	detector := obj{"anyOf": []any{
		obj{"enum": []string{"off"}},
		closed("A threshold: count answers within window.", obj{
			"count":  obj{"type": []string{"integer", "string"}, "description": "Number of matching answers."},
			"window": obj{"type": "string", "description": "Time window, e.g. 60s, 10m."},
		}),
	}}
	return obj{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  SchemaID,
		"title":                "otgw policy, version 1",
		"description":          "Zones, assets and conduits of an otgw gateway (IEC 62443 vocabulary); deny by default. Reference: docs/policy.md.",
		"type":                 "object",
		"additionalProperties": false,
		"required":             []string{"version"},
		"properties": obj{
			"version": obj{"const": 1, "description": "Policy format version; this reader knows 1."},
			"name":    str("Policy name, shown in events and reports."),
			"mode":    modes,
			"action":  actions,
			"zones": obj{"type": "object", "description": "Zones by name.",
				"additionalProperties": closed("A network segment behind one bridge port.", obj{
					"port":        enum("Bridge port the zone is behind.", "north", "south"),
					"networks":    scalars("CIDR prefixes.", obj{"type": "string"}),
					"vlans":       scalars("VLAN ids or ranges.", rangeItem),
					"description": str("Free text."),
				})},
			"assets": obj{"type": "object", "description": "Named hosts.",
				"additionalProperties": closed("A host.", obj{
					"ip":          str("IPv4 or IPv6 address."),
					"mac":         str("MAC address (checked on L2)."),
					"zone":        str("The zone the asset is in."),
					"description": str("Free text."),
				})},
			"l2": closed("Non-IP frames.", obj{
				"allow": scalars("Ethertypes allowed to cross: names or 0xNNNN.", named(mapKeys(l2Names), `^0[xX][0-9a-fA-F]{4}$`)),
			}),
			"detections": obj{"type": "object", "description": "Rate detections: off or {count, window} per detector.",
				"propertyNames":        obj{"enum": DetectorNames()},
				"additionalProperties": detector},
			"conduits": obj{"type": "array", "items": conduit, "description": "Conduits, tried in file order."},
		},
	}
}

func withDesc(o obj, desc string) obj {
	c := obj{}
	for k, v := range o {
		c[k] = v
	}
	c["description"] = desc
	return c
}
