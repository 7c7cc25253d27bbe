package gen

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite simulate/scenarios from the generators")

// TestGenerate checks that the committed scenario folders are what the
// generators make (rewrite them with -update).
func TestGenerate(t *testing.T) {
	dir := filepath.Join("..", "scenarios")
	if *update {
		if err := WriteAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range All() {
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
