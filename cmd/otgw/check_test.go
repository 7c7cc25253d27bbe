package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/otgw/otgw/rules"
)

func TestCheckCommand(t *testing.T) {
	t.Chdir(t.TempDir())
	bad := "version: 1\nmode: enforcing\nzones:\n  a: { prot: north }\n"
	if err := os.WriteFile("bad.yaml", []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	long := "version: 1\nl2:\n  allow: [" + strings.Repeat("arp, ", 10_001) + "arp]\n"
	if err := os.WriteFile("long.yaml", []byte(long), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
	}{
		{"every problem in one run", []string{"bad.yaml"}, 1,
			"bad.yaml:2:7: unknown mode \"enforcing\" (monitor or enforce) (did you mean \"enforce\"?)\n" +
				"bad.yaml:4:3: zone \"a\" has neither port nor networks: it would match every host\n" +
				"bad.yaml:4:8: unknown key \"prot\" in zone \"a\" (did you mean \"port\"?)\n"},
		{"a list past the limit, refused at its entry", []string{"long.yaml"}, 1,
			"long.yaml:3:50011: list has more than 10000 entries (the limit)\n"},
		{"missing file", []string{"nope.yaml"}, 1, "nope.yaml: rules: open nope.yaml: no such file or directory\n"},
		{"no argument", nil, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"check"}, tt.args...), &out, &errb)
			if code != tt.code || out.String() != tt.stdout {
				t.Errorf("exit %d, stdout:\n%s\nwant exit %d, stdout:\n%s", code, out.String(), tt.code, tt.stdout)
			}
		})
	}
}

func TestCheckCommandExamples(t *testing.T) {
	for _, f := range []string{"../../examples/water-dnp3.yaml", "../../examples/packaging-modbus.yaml", "../../examples/historian-opcua.yaml"} {
		var out, errb bytes.Buffer
		if code := run([]string{"check", f}, &out, &errb); code != 0 || !strings.Contains(out.String(), ": ok: ") {
			t.Errorf("otgw check %s: exit %d, output %q; want exit 0 and an ok summary", f, code, out.String())
		}
	}
}

// TestSchemaCommand: otgw schema prints the JSON Schema rules.Schema
// builds, and --markdown the reference docs/policy.md holds.
func TestSchemaCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runSchema(nil, &out, &errb); code != 0 {
		t.Fatalf("otgw schema: exit %d: %s", code, errb.String())
	}
	var doc map[string]any
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("otgw schema printed no JSON: %v", err)
	}
	if doc["$id"] != rules.SchemaID || doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$id %v, $schema %v", doc["$id"], doc["$schema"])
	}
	out.Reset()
	if code := runSchema([]string{"--markdown"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "# otgw policy reference") {
		t.Errorf("otgw schema --markdown: exit %d, %.40q", code, out.String())
	}
	if code := runSchema([]string{"-h"}, &out, &errb); code != 0 {
		t.Errorf("otgw schema -h: exit %d, want 0", code)
	}
	if code := runSchema([]string{"extra"}, &out, &errb); code != 2 {
		t.Errorf("otgw schema extra: exit %d, want 2", code)
	}
}
