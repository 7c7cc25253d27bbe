package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// bigPolicy is a large but valid policy: floodPolicy's zones with n
// conduits of k read ranges each (740 x 60 is 1.6 MB, just under the
// 200,000 values rules accepts).
func bigPolicy(n, k int) string {
	var b strings.Builder
	head, _, _ := strings.Cut(floodPolicy, "conduits:\n")
	b.WriteString(strings.Replace(head, "name: flood", "name: big", 1))
	b.WriteString("conduits:\n")
	for c := range n {
		fmt.Fprintf(&b, "  - name: c%d\n    from: clients\n    to: servers\n    rules:\n      - modbus:\n          units: [1]\n          allow:\n", c)
		for i := range k {
			fmt.Fprintf(&b, "            - read: holding %d-%d\n", i, i+c%100)
		}
	}
	return b.String()
}

// reloadMemBoundKB is how far otgw's RSS may stay above its level before
// a large policy was loaded, once the original policy is back.
const reloadMemBoundKB = 24 << 10

// TestReloadMemoryReturns is issue 15's reload memory, measured on `otgw
// run`: a large but valid policy (1.6 MB, 740 conduits, ~200,000 values)
// is hot-reloaded while a poller runs, then the original policy is put
// back. otgw's RSS after the revert comes back to within 24 MiB of where
// it was before the large policy (the daemon returns freed heap to the
// system after a reload). The figures go to the log (BENCHMARKS.md).
func TestReloadMemoryReturns(t *testing.T) {
	testenv.NeedRoot(t)
	l := benchLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, floodPolicy)
	pid := g.cmd.Process.Pid
	if err := dialFrom(l, "", 5*time.Second); err != nil {
		t.Fatalf("read before the reloads: %v", err)
	}
	// A poller keeps a flow busy, so it is re-judged under each policy.
	var lost atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if err := dialFrom(l, "", 3*time.Second); err != nil {
				lost.Add(1)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	settle := func() int {
		time.Sleep(2 * time.Second)
		return procRSS(t, pid)
	}
	peak := samplePeak(t, 20*time.Millisecond, 0, func() int64 { return int64(procRSS(t, pid)) })
	before := settle()
	reloads := 0
	swap := func(policy, name string) time.Duration {
		t.Helper()
		tmp := filepath.Join(filepath.Dir(g.policy), ".policy.tmp")
		if err := os.WriteFile(tmp, []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := os.Rename(tmp, g.policy); err != nil {
			t.Fatal(err)
		}
		reloads++
		want := reloads
		n := 0
		g.waitEvent("policy_reload of "+name, 30*time.Second, func(e event) bool {
			if e.Type == "policy_reload" {
				n++
			}
			return n >= want
		})
		return time.Since(start)
	}
	big := bigPolicy(740, 60)
	tBig := swap(big, "the large policy")
	withBig := settle()
	peakBig := peak.Peak()
	tBack := swap(floodPolicy, "the original policy")
	after := settle()
	time.Sleep(3 * time.Second)
	later := procRSS(t, pid)
	peak.Stop()
	st := g.statusJSON()
	name, _ := st["policy"].(map[string]any)["name"].(string)
	t.Logf("policy %d bytes: reload seen after %v, back after %v; poller lost %d connections", len(big), tBig.Round(time.Millisecond), tBack.Round(time.Millisecond), lost.Load())
	t.Logf("otgw RSS: %d KiB before, %d KiB with the large policy (peak %d KiB during its reload), %d KiB 2 s after the revert, %d KiB 5 s after",
		before, withBig, peakBig, after, later)
	if name != "flood" {
		t.Errorf("policy in force %q, want flood", name)
	}
	if later > before+reloadMemBoundKB {
		t.Errorf("RSS %d KiB 5 s after the revert, over %d KiB before + %d KiB", later, before, reloadMemBoundKB)
	}
	if lost.Load() != 0 {
		t.Errorf("%d polls lost across the reloads", lost.Load())
	}
}
