package rules

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"gopkg.in/yaml.v3"
)

// policyWithUnits returns a valid policy whose one modbus rule lists the
// given units text (a flow or block list), and the line the list starts on.
func policyWithUnits(units string) (string, int) { return testenv.UnitsPolicy(units) }

func flowList(n int) string {
	var b strings.Builder
	b.WriteString("[")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("1")
	}
	b.WriteString("]")
	return b.String()
}

// blockList returns n entries "- 1", one a line, at indent 12.
func blockList(n int) string {
	return strings.Repeat("\n            - 1", n)
}

// wantProblem checks that err's first Problem is at line:col (0: any)
// and that its message holds msg.
func wantProblem(t *testing.T, err error, line, col int, msg string) {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) || len(ps) == 0 {
		t.Fatalf("got %v, want a problem at %d:%d saying %q", err, line, col, msg)
	}
	if p := ps[0]; (line != 0 && p.Line != line) || (col != 0 && p.Col != col) || !strings.Contains(p.Msg, msg) {
		t.Fatalf("got %s, want %d:%d: ...%s...", p, line, col, msg)
	}
}

func TestListLimits(t *testing.T) {
	for _, tc := range []struct {
		name      string
		units     string
		line, col int // of the first entry past the limit (relative line, absolute col)
		msg       string
	}{
		{"flow list past the limit", flowList(MaxListLen + 1), 0, 19 + 3*MaxListLen, "list has more than 10000 entries"},
		{"block list past the limit", blockList(MaxListLen + 1), MaxListLen + 1, 13, "list has more than 10000 entries"},
		{"flow list at the limit", flowList(MaxListLen), -1, 0, ""},
		{"block list at the limit", blockList(MaxListLen), -1, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, first := policyWithUnits(tc.units)
			p, err := Parse("p.yaml", []byte(src))
			if tc.line < 0 {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				if len(p.Conduits[0].Rules[0].Modbus.Units) != MaxListLen {
					t.Fatalf("got %d units", len(p.Conduits[0].Rules[0].Modbus.Units))
				}
				return
			}
			if p != nil {
				t.Errorf("a policy past the limits was built")
			}
			wantProblem(t, err, first+tc.line, tc.col, tc.msg)
		})
	}
}

// TestDecoderListLimitWithoutPrescan: the decoder refuses long lists
// itself (for any input prescan might misread), naming the first entry
// past the limit.
func TestDecoderListLimitWithoutPrescan(t *testing.T) {
	src, first := policyWithUnits(blockList(MaxListLen + 1))
	d := &decoder{file: "p.yaml", p: &Policy{File: "p.yaml", pos: map[string]Pos{}}}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	d.policy(doc.Content[0])
	wantProblem(t, d.probs.sorted(), first+MaxListLen+1, 15, "units has more than 10000 entries")
	if u := d.p.Conduits[0].Rules[0].Modbus.Units; u != nil {
		t.Errorf("built %d units", len(u))
	}
}

func TestMappingAndRangeLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nassets:\n")
	for i := range MaxListLen + 1 {
		fmt.Fprintf(&b, "  a%d: { ip: 192.0.2.1 }\n", i)
	}
	_, err := Parse("p.yaml", []byte(b.String()))
	wantProblem(t, err, 3+MaxListLen, 3, "mapping has more than 10000 entries")

	ranges := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("%d", i)
		}
		return "holding " + strings.Join(parts, ", ")
	}
	src, first := policyWithUnits("[1]\n          allow:\n            - read: " + ranges(MaxRanges+1))
	_, err = Parse("p.yaml", []byte(src))
	wantProblem(t, err, first+2, 21, "read has more than 1000 ranges")
	src, _ = policyWithUnits("[1]\n          allow:\n            - read: " + ranges(MaxRanges))
	if _, err := Parse("p.yaml", []byte(src)); err != nil {
		t.Errorf("%d ranges: %v", MaxRanges, err)
	}
}

func TestValueAndDepthLimits(t *testing.T) {
	// Many lists, each within MaxListLen, more values than
	// MaxPolicyValues: lists of 100 in a list, one a line.
	var b strings.Builder
	b.WriteString("version: 1\nl2:\n  allow: [")
	inner := "[" + strings.Repeat("x, ", 99) + "x], "
	for range MaxPolicyValues / 100 {
		b.WriteString("\n    " + inner)
	}
	b.WriteString("]\n")
	_, err := Parse("p.yaml", []byte(b.String()))
	// 8 values before the outer list; 102 a line (the inner list, its
	// entry in the outer one, 100 scalars).
	wantProblem(t, err, 3+(MaxPolicyValues-9)/102+1, 0, fmt.Sprintf("more than %d values", MaxPolicyValues))

	deep := "version: 1\nname: " + strings.Repeat("[", MaxPolicyDepth+1) + strings.Repeat("]", MaxPolicyDepth+1) + "\n"
	_, err = Parse("p.yaml", []byte(deep))
	wantProblem(t, err, 2, 6+MaxPolicyDepth, "nested deeper than 64")

	// Colons inside quotes and comments do not build nodes, but the
	// indicator bound counts them: a file of nothing else is refused too.
	colons := "version: 1\n# " + strings.Repeat(":", 2*MaxPolicyValues+1) + "\n"
	_, err = Parse("p.yaml", []byte(colons))
	wantProblem(t, err, 2, 0, fmt.Sprintf("more than %d list entries, keys and separators", 2*MaxPolicyValues))
}

// TestPrescanReadsYAML: text that only looks like lists (block scalars,
// quoted strings, comments, plain scalars) is not counted as entries.
func TestPrescanReadsYAML(t *testing.T) {
	many := strings.Repeat("- x\n      ", MaxListLen+1)
	for _, tc := range []struct{ name, src string }{
		{"block scalar", "version: 1\nname: |\n      " + many + "\n"},
		{"folded block scalar under a dash", "version: 1\nl2:\n  allow:\n  - >-\n      " + many + "\n  - arp\n"},
		{"quoted string", "version: 1\nname: '" + strings.Repeat("[a, b], ", MaxListLen) + "it''s'\n"},
		{"double-quoted string", "version: 1\nname: \"" + strings.Repeat("[a, \\\"b\\\"], ", MaxListLen) + "\"\n"},
		{"comment", "version: 1\n# " + strings.Repeat("[a, b], ", MaxListLen) + "\nname: x\n"},
		{"plain scalar", "version: 1\nname: a [b, c] " + strings.Repeat("d, ", MaxListLen) + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := prescan("p.yaml", []byte(tc.src)); err != nil {
				t.Fatalf("prescan: %v", err)
			}
			if _, err := Parse("p.yaml", []byte(tc.src)); err != nil && strings.Contains(err.Error(), "limit") {
				t.Fatalf("parse: %v", err)
			}
		})
	}
	// A quote inside a multi-line plain scalar is text in YAML: a long
	// list after it is still refused (by the scan or the decoder).
	src := "version: 1\nname: word\n  'x\nl2:\n  allow:" + strings.Repeat("\n  - arp", MaxListLen+1) + "\n"
	_, err := Parse("p.yaml", []byte(src))
	wantProblem(t, err, 5+MaxListLen+1, 0, "more than 10000 entries")
}

// TestHugePolicyRefused: a 100 MB policy (33 M units) is refused by Load
// at the line the 4 MiB limit falls on, having read 4 MiB of it; a policy
// just under the size limit with a 1.3 M-entry list is refused by the
// scan, before any YAML tree is built.
func TestHugePolicyRefused(t *testing.T) {
	dir := t.TempDir()
	path := testenv.HugePolicy(t, dir, 100<<20/3)
	var err error
	n := testenv.Allocated(func() { _, err = Load(path) })
	wantProblem(t, err, 12, 0, "more than the limit of 4194304 bytes")
	if !strings.Contains(err.Error(), path+":12:") {
		t.Errorf("error %q does not name the file and line", err)
	}
	if n > 2*MaxPolicyBytes+testenv.AllocSlack {
		t.Errorf("Load allocated %d bytes, want at most %d", n, 2*MaxPolicyBytes+testenv.AllocSlack)
	}

	path = testenv.HugePolicy(t, dir, (MaxPolicyBytes-4096)/3)
	n = testenv.Allocated(func() { _, err = Load(path) })
	wantProblem(t, err, 12, 19+3*MaxListLen, "list has more than 10000 entries")
	if n > 2*MaxPolicyBytes+testenv.AllocSlack {
		t.Errorf("Load allocated %d bytes, want at most %d", n, 2*MaxPolicyBytes+testenv.AllocSlack)
	}
}
