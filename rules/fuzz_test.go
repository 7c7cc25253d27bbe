package rules

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse and Compile: they must never
// panic, a nil Policy comes only with an error, and a policy that compiles
// must survive Marshal and Parse again.
func FuzzParse(f *testing.F) {
	// Seeds: the DESIGN.md example and the shipped examples.
	for _, pattern := range []string{"testdata/*.yaml", "../examples/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("version: 1\nconduits: [{name: a, from: x, to: y}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if p == nil {
			if err == nil {
				t.Fatal("nil policy without error")
			}
			return
		}
		if _, cerr := Compile(p); cerr != nil || err != nil {
			return
		}
		out, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		q, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
		}
		if _, err := Compile(q); err != nil {
			t.Fatalf("Marshal output does not compile: %v\n%s", err, out)
		}
	})
}
