package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
)

const module = "github.com/otgw/otgw/"

// layer is one rule: packages under from must not depend on packages under
// any of not.
type layer struct {
	from string
	not  []string
	why  string
}

var layers = []layer{
	{"protocols", []string{"rules", "gateway", "hal", "board", "update", "simulate", "cmd", "internal"}, "parsers and sessions stand alone"},
	{"rules", []string{"gateway", "hal", "simulate", "update", "board", "cmd"}, "rules is pure"},
	{"gateway", []string{"simulate", "cmd"}, "the product does not depend on its test harness"},
	{"hal", []string{"gateway", "rules", "simulate", "update", "cmd"}, "hardware sits below the engine"},
	{"board", []string{"gateway", "rules", "simulate", "update", "cmd"}, "board profiles are data"},
	{"update", []string{"gateway", "rules", "simulate", "cmd"}, "updates stand alone; the daemon adapts their events"},
}

// debt lists the packages that break a rule today, each with the issue that
// removes the import. The test fails when a listed package no longer breaks
// its rule, so the list only shrinks.
var debt = map[string]string{}

func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// deps returns, for each package of the module, its transitive non-test
// dependencies inside the module (paths relative to the module).
func deps(t *testing.T) map[string][]string {
	t.Helper()
	if testenv.Emulated() {
		t.Skip("runs in the native pass: go list is not run under qemu-user")
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...")
	cmd.Dir = testenv.ModuleRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], module) {
			continue
		}
		pkg := strings.TrimPrefix(f[0], module)
		var ours []string
		for _, d := range f[1:] {
			if strings.HasPrefix(d, module) {
				ours = append(ours, strings.TrimPrefix(d, module))
			}
		}
		m[pkg] = ours
	}
	if len(m) < 10 {
		t.Fatalf("go list found only %d packages of the module", len(m))
	}
	return m
}

func TestLayers(t *testing.T) {
	all := deps(t)
	pkgs := make([]string, 0, len(all))
	for p := range all {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		var broken []string
		for _, l := range layers {
			if !under(pkg, l.from) {
				continue
			}
			for _, d := range all[pkg] {
				for _, n := range l.not {
					if under(d, n) {
						broken = append(broken, d+" ("+l.why+")")
					}
				}
			}
		}
		reason, owed := debt[pkg]
		switch {
		case len(broken) > 0 && !owed:
			t.Errorf("%s depends on %s", pkg, strings.Join(broken, ", "))
		case len(broken) == 0 && owed:
			t.Errorf("%s no longer breaks its layer (%s): remove it from debt", pkg, reason)
		case len(broken) > 0:
			t.Logf("known debt: %s depends on %d forbidden packages (%s)", pkg, len(broken), reason)
		}
	}
	for pkg := range debt {
		if _, ok := all[pkg]; !ok {
			t.Errorf("debt lists %s, which is not a package of the module", pkg)
		}
	}
}
