package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// TestRSSFlows measures the resident set of `otgw run` on its default I/O
// (board sim, no --io/--xdp): idle, then with 10,000 flows in the table
// (openFlows: spoofed SYNs from the client port). It is the RSS row of
// `make bench-datapath` without the throughput phases (about 10 s):
//
//	OTGW_BENCH_RSS=1 go test -count=1 -run '^TestRSSFlows$' -v ./gateway/e2e
//
// Issue 18's target is at most 32 MB with 10k flows; the test fails above
// OTGW_BENCH_RSS_MAX_KB when that is set (the figure is the machine's).
// It also logs the resident set by kind of mapping (smapsSummary), and
// with OTGW_BENCH_RSS_LOG=1 the gateway's output (run with
// GODEBUG=gctrace=1 to see the Go heap at each collection).
func TestRSSFlows(t *testing.T) {
	if os.Getenv("OTGW_BENCH_RSS") != "1" {
		t.Skip("set OTGW_BENCH_RSS=1 (RSS of otgw run idle and with 10k flows)")
	}
	testenv.NeedRoot(t)
	l := benchLine(t)
	g := startGateway(t, l, benchPolicy)
	defer g.stop()
	pid := g.cmd.Process.Pid
	time.Sleep(2 * time.Second) // past the first status/expiry ticks
	idle := procRSS(t, pid)
	idleMaps := smapsSummary(t, pid)
	// On a loaded machine some SYNs are lost: send the same 10,000 again
	// (a repeated SYN is a retransmission of an existing flow) until all
	// are in the table.
	flows := 0
	for round := 0; round < 3 && flows < 10000; round++ {
		openFlows(t, l, 10000)
		flows = int(counter(g.statusJSON(), "flows", "active"))
	}
	full := procRSS(t, pid)
	time.Sleep(2 * time.Second) // an expiry sweep and a GC cycle later
	after := procRSS(t, pid)
	t.Logf("otgw RSS idle %.1f MiB, with %d flows %.1f MiB (%.1f MiB 2 s later)",
		float64(idle)/1024, flows, float64(full)/1024, float64(after)/1024)
	t.Logf("resident by mapping, idle: %s", idleMaps)
	t.Logf("resident by mapping, with the flows: %s", smapsSummary(t, pid))
	if os.Getenv("OTGW_BENCH_RSS_LOG") != "" {
		t.Logf("otgw output:\n%s", tail(g.out.String(), 40))
	}
	if flows < 10000 {
		t.Errorf("%d flows in the table, want >= 10000", flows)
	}
	if s := os.Getenv("OTGW_BENCH_RSS_MAX_KB"); s != "" {
		max, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("OTGW_BENCH_RSS_MAX_KB=%q: %v", s, err)
		}
		if full > max || after > max {
			t.Errorf("RSS %d / %d KiB with 10k flows, want <= %d", full, after, max)
		}
	}
}

// smapsSummary returns the resident set of process pid by kind of mapping
// (/proc/PID/smaps): the executable's file pages, anonymous memory (the
// Go heap, stacks, the runtime's own mappings), AF_PACKET rings and the
// rest, in KiB.
func smapsSummary(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	kinds := map[string]int{}
	kind := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") { // a mapping's header line
			name := ""
			if len(fs) >= 6 {
				name = strings.Join(fs[5:], " ")
			}
			switch {
			case name == exe:
				kind = "binary " + fs[1] // r-xp text, r--p rodata and pclntab, rw-p data
			case strings.HasPrefix(name, "socket:") || strings.HasPrefix(name, "/dev/") || strings.Contains(name, "packet"):
				kind = "rings"
			case name == "" || name == "[heap]" || name == "[stack]":
				kind = "anon"
			default:
				kind = "other(" + name + ")"
			}
			continue
		}
		if fs[0] == "Rss:" && len(fs) >= 2 && !strings.HasPrefix(kind, "other([v") { // [vdso] and co: 0
			kb, _ := strconv.Atoi(fs[1])
			kinds[kind] += kb
		}
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "%s %.1f MiB; ", k, float64(kinds[k])/1024)
	}
	return b.String()
}

// TestBinaryLeavesOutGopacket: otgw does not link gopacket's layers
// package, whose init fills two 2.5 MB tables that the collector then
// scans on every cycle (about 5 MiB of RSS and 2-3 MiB of the binary's
// pages; BENCHMARKS.md "RSS: gopacket out of the binary"). Tests may use
// gopacket; the code otgw links must not.
func TestBinaryLeavesOutGopacket(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./cmd/otgw")
	cmd.Dir = testenv.ModuleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/otgw: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/gopacket/gopacket") {
			t.Errorf("otgw links %s (issue 18: RSS); build frames and write pcaps with simulate/capture instead", p)
		}
	}
}
