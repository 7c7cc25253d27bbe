package gen

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var (
	update = flag.Bool("update", false, "rewrite simulate/scenarios from the generators")
	only   = flag.String("only", "", "with -update: rewrite only these cases (comma-separated catalogue ids, e.g. M6,U4)")
)

// TestGenerate checks that the committed scenario folders are what the
// generators make (rewrite them with -update).
func TestGenerate(t *testing.T) {
	dir := filepath.Join("..", "scenarios")
	if *update {
		var keep func(*Scenario) bool
		if *only != "" {
			ids := strings.Split(*only, ",")
			keep = func(s *Scenario) bool { return slices.Contains(ids, s.ID) }
		}
		if err := WriteCases(dir, keep); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range Suite() {
		pc, err := s.Generate()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		for name, want := range map[string][]byte{"input.pcap": pc, "expect.yaml": s.ExpectYAML(), "policy.yaml": []byte(s.Policy)} {
			got, err := os.ReadFile(filepath.Join(dir, s.Name, name))
			if err != nil {
				t.Errorf("%s/%s: %v (run go test ./simulate/gen -run TestGenerate -update)", s.Name, name, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s/%s differs from the generator's output (run with -update)", s.Name, name)
			}
		}
	}
}

// TestRecordedDeterministic: the cases recorded from real libraries give
// byte-identical captures and expectations on every run (no port,
// sequence number, id, nonce or timestamp of the run leaks into them).
func TestRecordedDeterministic(t *testing.T) {
	ov := overrides()
	if len(ov) == 0 {
		t.Fatal("no recorded cases")
	}
	run := func() map[string][]byte {
		t.Helper()
		out := map[string][]byte{}
		for _, s := range Suite() {
			pc, err := s.Generate()
			if err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
			if _, ok := ov[s.ID]; ok {
				out[s.Name] = append(pc, s.ExpectYAML()...)
			}
		}
		return out
	}
	first := run()
	if len(first) != len(ov) {
		t.Fatalf("Suite applied %d of %d overrides", len(first), len(ov))
	}
	for range 2 {
		for name, got := range run() {
			if !bytes.Equal(got, first[name]) {
				t.Errorf("%s: a second recording differs from the first", name)
			}
		}
	}
}

// TestRecordedSources: every recorded case says in its README which
// libraries made its traffic, with the versions go.mod requires.
func TestRecordedSources(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range []string{libGoburrow, libSimonvetter, libGopcua} {
		if !strings.Contains(string(mod), "\t"+lib+" ") && !strings.Contains(string(mod), "\t"+lib+"\n") {
			t.Errorf("go.mod does not require %s", lib)
		}
	}
	for _, s := range Suite() {
		o, ok := overrides()[s.ID]
		if !ok {
			if s.Source != "" {
				t.Errorf("%s: Source %q on a case that is not recorded", s.Name, s.Source)
			}
			continue
		}
		readme := string(s.README())
		if !strings.Contains(readme, o.source) {
			t.Errorf("%s: README does not name the source", s.Name)
		}
		if !strings.Contains(readme, libGopcua) && !strings.Contains(readme, libGoburrow) {
			t.Errorf("%s: README names no library with its version", s.Name)
		}
	}
}

// TestOverridesLeaveCraftedCases: swapping in recorded traffic changes
// only the recorded cases; every other capture is byte for byte what
// cases.go alone makes (the crafted cases share a transaction id counter).
func TestOverridesLeaveCraftedCases(t *testing.T) {
	crafted := map[string][]byte{}
	for _, s := range All() {
		pc, err := s.Generate()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		crafted[s.Name] = pc
	}
	ov := overrides()
	for _, s := range Suite() {
		pc, err := s.Generate()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if _, ok := ov[s.ID]; !ok && !bytes.Equal(pc, crafted[s.Name]) {
			t.Errorf("%s: capture changed by the recorded cases", s.Name)
		}
	}
}
