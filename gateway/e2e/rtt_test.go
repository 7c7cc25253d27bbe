package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// TestModbusRTTBench measures the round trip `otgw run` adds to Modbus
// polls on an inspected conduit (benchPolicy allows Modbus reads), the RTT
// row of `make bench-datapath` on its own and repeated: OTGW_BENCH_RTT_RUNS
// runs (default 5), each the kernel bridge then the gateway (started
// afresh, extra flags from OTGW_BENCH_RTT_ARGS, default the board's I/O)
// on the same veth topology, 1,000 polls paced at 500/s each. It reports
// per run and the median of the added p50 and p99 with their range:
//
//	OTGW_BENCH_RTT=1 go test -count=1 -run '^TestModbusRTTBench$' -v ./gateway/e2e
//
// With OTGW_BENCH_RTT_PERF=DIR each gateway phase is also recorded with
// `perf sched record -a` (perfSched), with OTGW_BENCH_RTT_PROFILE=DIR with
// `perf record -g` of the gateway (perfRecord).
//
// Issue 18's goal is at most +50 us p50 and +150 us p99.
func TestModbusRTTBench(t *testing.T) {
	if os.Getenv("OTGW_BENCH_RTT") != "1" {
		t.Skip("set OTGW_BENCH_RTT=1 (added Modbus RTT of otgw run against the kernel bridge)")
	}
	testenv.NeedRoot(t)
	runs := testenv.PositiveInt(t, "OTGW_BENCH_RTT_RUNS", 5)
	args := strings.Fields(os.Getenv("OTGW_BENCH_RTT_ARGS"))
	// OTGW_BENCH_RTT_ENV: K=V ... for the gateway's environment (e.g.
	// GOMAXPROCS=1). The test process read its own at start, so setting
	// them here changes only the processes it starts.
	for _, kv := range strings.Fields(os.Getenv("OTGW_BENCH_RTT_ENV")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("OTGW_BENCH_RTT_ENV: %q is not K=V", kv)
		}
		t.Setenv(k, v)
	}
	l := benchLine(t)
	servePLC(t, l)
	load := func() string {
		b, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(b))[:3], " ")
	}
	type rtt struct{ p50, p99 time.Duration }
	var bridge, gw []rtt
	for i := range runs {
		removeBridge := kernelBridge(t, l)
		b50, b99, bn, berr := modbusRTT(t, l)
		removeBridge()

		g := startGateway(t, l, benchPolicy, args...)
		time.Sleep(300 * time.Millisecond)
		stopSched := perfSched(t, os.Getenv("OTGW_BENCH_RTT_PERF"), fmt.Sprintf("rtt-%d", i+1))
		stopPerf := perfRecord(t, os.Getenv("OTGW_BENCH_RTT_PROFILE"), g.cmd.Process.Pid, fmt.Sprintf("rtt-%d", i+1))
		g50, g99, gn, gerr := modbusRTT(t, l)
		stopPerf()
		stopSched()
		cpu := procCPU(t, g.cmd.Process.Pid)
		g.stop()
		bridge, gw = append(bridge, rtt{b50, b99}), append(gw, rtt{g50, g99})
		t.Logf("run %d (load %s): bridge p50 %v p99 %v (%d polls, %d errors); otgw p50 %v p99 %v (%d, %d; otgw CPU %v in all): added p50 %+dus p99 %+dus",
			i+1, load(), b50, b99, bn, berr, g50, g99, gn, gerr, cpu, (g50 - b50).Microseconds(), (g99 - b99).Microseconds())
		if berr+gerr > 0 {
			t.Errorf("run %d: %d bridge and %d gateway polls failed", i+1, berr, gerr)
		}
	}
	added := func(f func(rtt) time.Duration) (med, lo, hi int64) {
		var d []int64
		for i := range gw {
			d = append(d, (f(gw[i]) - f(bridge[i])).Microseconds())
		}
		sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
		return d[len(d)/2], d[0], d[len(d)-1]
	}
	m50, lo50, hi50 := added(func(r rtt) time.Duration { return r.p50 })
	m99, lo99, hi99 := added(func(r rtt) time.Duration { return r.p99 })
	summary := fmt.Sprintf("added Modbus RTT over %d runs (otgw run %s, env %s): p50 median %+dus [%+d to %+d], p99 median %+dus [%+d to %+d]; load at the end %s",
		runs, strings.Join(args, " "), os.Getenv("OTGW_BENCH_RTT_ENV"), m50, lo50, hi50, m99, lo99, hi99, load())
	t.Log(summary)
}

// perfSched records the scheduler events of the whole machine (`perf
// sched record -a`: a wakeup is recorded in the waker's context, so
// recording the gateway's process alone misses them) into dir/NAME.sched
// until stop is called, when dir is set and perf is installed; `perf
// sched timehist -i FILE` then shows how long the gateway's threads
// waited between being woken and running (sch delay) and ran.
func perfSched(t *testing.T, dir string, name string) (stop func()) {
	t.Helper()
	if dir == "" {
		return func() {}
	}
	return runPerf(t, "sched", "record", "-q", "-a", "-o", filepath.Join(dir, name+".sched"))
}
