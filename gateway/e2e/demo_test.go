package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// TestMakeDemo runs the README's `make demo` (simulate/demo/demo.sh) as a
// user would, from the repository root, and checks that it shows the
// gateway's main job: the HMI's reads pass, its forbidden write is
// refused with a Modbus exception and never reaches the PLC, and the
// gateway prints the deny event. (The demo once waited for an event key
// the record schema had renamed and failed at its first step; nothing
// noticed.)
func TestMakeDemo(t *testing.T) {
	testenv.NeedRoot(t)
	bash := testenv.NeedCmd(t, "bash")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join("simulate", "demo", "demo.sh"))
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"HMI: poll 5: holding 0-9 = 1000 1001",
		"HMI: the write was refused: Modbus exception",
		"HMI: holding 5 reads 1005 afterwards",
		"PLC: stopping; it executed 0 writes",
		"[deny] deny modbus",
		"otgw_pdus_denied_total 1",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make demo output lacks %q:\n%s", want, out)
		}
	}
}
