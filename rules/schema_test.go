package rules

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite docs/policy.md from the schema")

// normPath turns a loader path (conduits.0.rules.1.modbus.allow.0,
// zones.cell3) into the schema's shape (conduits.[].rules.[].modbus.allow.[],
// zones.*).
func normPath(p string) string {
	if p == "" {
		return ""
	}
	seg := strings.Split(p, ".")
	for i, s := range seg {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			seg[i] = "[]"
		}
		if i == 1 && (seg[0] == "zones" || seg[0] == "assets" || seg[0] == "detections") {
			seg[i] = "*"
		}
	}
	return strings.Join(seg, ".")
}

// schemaKeys walks the schema and returns the property names of every
// object it describes, by path.
func schemaKeys(t *testing.T) map[string][]string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(Schema(), &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	walkSchemaObjects(doc, func(path []string, s map[string]any) {
		out[strings.Join(path, ".")] = schemaKeysSorted(s["properties"].(map[string]any))
	})
	return out
}

// TestSchemaKeysMatchLoader: at every level of the policy file, the keys
// the JSON Schema describes are exactly the keys the loader accepts (so
// editor completion never offers a key `otgw check` refuses, nor misses one
// it accepts). testdata/all-keys.yaml reaches every level.
func TestSchemaKeysMatchLoader(t *testing.T) {
	loader := map[string][]string{}
	keysHook = func(path string, known []string) {
		k := append([]string(nil), known...)
		sort.Strings(k)
		loader[normPath(path)] = k
	}
	defer func() { keysHook = nil }()
	data, err := os.ReadFile("testdata/all-keys.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("testdata/all-keys.yaml", data)
	if err != nil {
		t.Fatalf("all-keys.yaml does not parse: %v", err)
	}
	if _, err := Compile(p); err != nil {
		t.Fatalf("all-keys.yaml does not compile: %v", err)
	}
	schema := schemaKeys(t)
	for path, want := range loader {
		got, ok := schema[path]
		if !ok {
			t.Errorf("schema has no object at %q; the loader accepts %v there", path, want)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("keys at %q: schema %v, loader %v", path, got, want)
		}
	}
	for path := range schema {
		if _, ok := loader[path]; !ok {
			t.Errorf("schema describes an object at %q that testdata/all-keys.yaml does not reach (or the loader has no such level)", path)
		}
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("the schema does not compile as JSON Schema 2020-12: %v", err)
	}
	return s
}

// yamlToJSONValue decodes YAML the way an editor's schema validator sees
// it: as JSON values.
func yamlToJSONValue(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSchemaAcceptsValidPolicies: every policy in the repository that
// `otgw check` accepts (examples, test data, scenarios, the demo) is valid
// against the schema.
func TestSchemaAcceptsValidPolicies(t *testing.T) {
	s := compileSchema(t)
	var files []string
	for _, g := range []string{"../examples/*.yaml", "testdata/*.yaml", "../simulate/scenarios/*/policy.yaml", "../simulate/demo/policy.yaml"} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 50 {
		t.Fatalf("found only %d policies", len(files))
	}
	for _, f := range files {
		p, err := Load(f)
		if err == nil {
			_, err = Compile(p)
		}
		if err != nil {
			continue // a deliberately bad policy: the next test's business
		}
		data, _ := os.ReadFile(f)
		if err := s.Validate(yamlToJSONValue(t, data)); err != nil {
			t.Errorf("%s: accepted by check, refused by the schema: %v", f, err)
		}
	}
}

// TestSchemaRefusesBadShapes: shapes the loader refuses, the schema refuses
// too.
func TestSchemaRefusesBadShapes(t *testing.T) {
	s := compileSchema(t)
	base := "version: 1\nzones:\n  a: {networks: [192.0.2.0/25]}\n  b: {networks: [192.0.2.128/25]}\n"
	for _, tc := range []struct{ name, yaml string }{
		{"unknown top-level key", base + "modes: enforce\n"},
		{"misspelt mode", base + "mode: enforcing\n"},
		{"wrong version", "version: 2\n"},
		{"two protocols in one rule", base + "conduits:\n  - {from: a, to: b, rules: [{tcp: {}, udp: {}}]}\n"},
		{"unknown key in a modbus allow entry", base + "conduits:\n  - {from: a, to: b, rules: [{modbus: {allow: [{reed: holding 0-9}]}}]}\n"},
		{"unknown opcua security mode", base + "conduits:\n  - {from: a, to: b, rules: [{opcua: {min_security_mode: encrypt}}]}\n"},
		{"unknown detector", base + "detections:\n  modbus_nonsense: off\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("x.yaml", []byte(tc.yaml))
			if err == nil {
				_, err = Compile(p)
			}
			if err == nil {
				t.Fatalf("the loader accepts it; the case is wrong")
			}
			if s.Validate(yamlToJSONValue(t, []byte(tc.yaml))) == nil {
				t.Errorf("the schema accepts what check refuses (%v)", err)
			}
		})
	}
}

// TestPolicyReference: docs/policy.md is generated from the schema (go
// test ./rules -run TestPolicyReference -update rewrites it).
func TestPolicyReference(t *testing.T) {
	got := Reference()
	path := filepath.Join("..", "docs", "policy.md")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("docs/policy.md is out of date: run go test ./rules -run TestPolicyReference -update")
	}
}
