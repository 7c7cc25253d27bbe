package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/gateway/syslog"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/replay"
)

func init() {
	register("replay", "run captures through the engine under a policy: what would it block?", runReplay)
}

type urlFlags []string

func (m *urlFlags) String() string     { return strings.Join(*m, ",") }
func (m *urlFlags) Set(s string) error { *m = append(*m, s); return nil }

// replayTransactions returns the OnDecision hook that writes the
// transaction records of conduits with log: transactions (gateway/txlog,
// as the live gateway logs them) to stdout with --json and to the syslog
// destinations, or nil when no conduit logs transactions. Offline, nothing
// is rate-limited: the records carry the capture's time, file and frame.
func replayTransactions(rs *rules.Ruleset, jsonOut bool, bw *bufio.Writer, sx *replaySyslog) func(replay.FrameRef, *packet.Packet, *gateway.Decision) {
	logs := false
	for i := range rs.NumConduits() {
		logs = logs || rs.LogTransactions(i)
	}
	if !logs || (!jsonOut && sx == nil) {
		return nil
	}
	var cur replay.FrameRef
	tl, err := txlog.New(txlog.Config{
		Rules: func() *rules.Ruleset { return rs }, Rate: math.MaxFloat64, Burst: math.MaxInt32, MaxPending: 1 << 20,
		Now: func() time.Time { return cur.Time },
		Sink: events.SinkFunc(func(e *events.Event) {
			e.PcapFile, e.Frame = cur.File, cur.Index
			if jsonOut {
				bw.Write(e.AppendJSON(nil))
				bw.WriteByte('\n')
			}
			if sx != nil {
				sx.pipe.Emit(e)
			}
		}),
	})
	if err != nil {
		return nil
	}
	return func(f replay.FrameRef, p *packet.Packet, d *gateway.Decision) {
		cur = f
		tl.OnDecision(d, p)
	}
}

// exitDenied is the exit code of --fail-on-deny when something was denied.
const exitDenied = 3

func runReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policy := fs.String("policy", "", "policy file (required)")
	jsonOut := fs.Bool("json", false, "write one JSON line per verdict event (deny, alert, normaliser drop) instead of the summary")
	outDir := fs.String("out", "", "directory for allowed.pcap, denied.pcap, report.json and report.html")
	failOnDeny := fs.Bool("fail-on-deny", false, "exit 3 when anything was denied (change review pipelines)")
	strict := fs.Bool("strict-midstream", false, "do not synthesise handshakes for connections the capture joined mid-stream")
	whatIf := fs.Bool("what-if", true, "also judge every PDU after a connection's reset (after_reset in --json) and lead the summary with what the policy refuses; =false: only the events of the gateway on the wire")
	var syslogURLs urlFlags
	fs.Var(&syslogURLs, "syslog", "also export the verdict events to this syslog URL (repeatable; see otgw run)")
	syslogTimeout := fs.Duration("syslog-timeout", defaultSyslogTimeout, "with --syslog: how long to wait for the receivers to confirm every event (and for room in a full spool) before failing with the count not delivered")
	spoolDir := fs.String("spool", "", "with --syslog: keep the syslog spool in `DIR`; events not delivered in time stay there for a later run (exit 0 when all are delivered or kept)")
	// Hidden (not in the usage line): for profiling, see BENCHMARKS.md "offline".
	cpuProf := fs.String("cpuprofile", "", "debug: write a Go CPU profile of the whole run to this file")
	workers := fs.Int("workers", 0, "debug: engines the flows are sharded over (0: one per CPU; the output is the same)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw replay --policy P [--json] [--out DIR] [--syslog URL [--syslog-timeout D] [--spool DIR]] [--fail-on-deny] [--what-if=false] CAPTURE...")
		fmt.Fprintln(stderr, "Replays pcap/pcapng captures (merged in time order) through the gateway engine.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *policy == "" || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if *cpuProf != "" {
		stop, err := startCPUProfile(*cpuProf)
		if err != nil {
			fmt.Fprintln(stderr, "otgw replay: --cpuprofile:", err)
			return 1
		}
		defer stop()
	}
	pol, err := rules.Load(*policy)
	if err != nil {
		fmt.Fprintf(stderr, "otgw replay: %v\n", err)
		return 1
	}
	rs, err := rules.Compile(pol)
	if err != nil {
		fmt.Fprintf(stderr, "otgw replay: %v\n", err)
		return 1
	}
	opts := replay.Options{Policy: pol, Ruleset: rs, StrictMidstream: *strict, WhatIf: *whatIf, Workers: *workers}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	if *jsonOut {
		opts.OnEvent = func(e *replay.Event) {
			bw.Write(e.JSON())
			bw.WriteByte('\n')
		}
	}
	if *syslogTimeout <= 0 || (*spoolDir != "" && len(syslogURLs) == 0) {
		fmt.Fprintln(stderr, "otgw replay: --syslog-timeout must be positive; --spool needs --syslog")
		return exitUsage
	}
	var sx *replaySyslog
	if len(syslogURLs) > 0 {
		if _, err := syslog.ParseURLs(syslogURLs...); err != nil {
			fmt.Fprintf(stderr, "otgw replay: %v\n", err)
			return exitUsage
		}
		if sx, err = startReplaySyslog(syslogURLs, *spoolDir, *syslogTimeout); err != nil {
			fmt.Fprintf(stderr, "otgw replay: %v\n", err)
			return exitRuntime
		}
		defer sx.abort()
		opts.Sink = sx.pipe
	}
	if tl := replayTransactions(rs, *jsonOut, bw, sx); tl != nil {
		opts.OnDecision = tl
	}
	var files []*os.File
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "otgw replay: %v\n", err)
			return 1
		}
		for _, name := range []string{"allowed.pcap", "denied.pcap"} {
			f, err := os.Create(filepath.Join(*outDir, name))
			if err != nil {
				fmt.Fprintf(stderr, "otgw replay: %v\n", err)
				return 1
			}
			files = append(files, f)
		}
		a, d := bufio.NewWriter(files[0]), bufio.NewWriter(files[1])
		opts.Allowed, opts.Denied = a, d
		defer func() {
			a.Flush()
			d.Flush()
			for _, f := range files {
				f.Close()
			}
		}()
	}
	if isTerminal(stderr) {
		opts.Progress = func(done, total int) { progressBar(stderr, done, total) }
	}
	rep, err := replay.Run(opts, fs.Args()...)
	if opts.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintf(stderr, "otgw replay: %v\n", err)
		return 1
	}
	for _, d := range rep.CaptureDamage {
		fmt.Fprintf(stderr, "otgw replay: warning: %s\n", d)
	}
	if !*jsonOut {
		if err := rep.WriteSummary(bw); err != nil {
			fmt.Fprintf(stderr, "otgw replay: %v\n", err)
			return 1
		}
	}
	if *outDir != "" {
		if err := rep.WriteFiles(*outDir); err != nil {
			fmt.Fprintf(stderr, "otgw replay: %v\n", err)
			return 1
		}
		if !*jsonOut {
			fmt.Fprintf(bw, "\nwrote %s/{allowed.pcap,denied.pcap,report.json,report.html}\n", *outDir)
		}
	}
	if sx != nil {
		bw.Flush()
		if code := sx.finish(stderr); code != exitOK {
			return code
		}
	}
	if *failOnDeny && rep.Denies > 0 {
		return exitDenied
	}
	return 0
}

func progressBar(w io.Writer, done, total int) {
	if total <= 0 {
		fmt.Fprintf(w, "\r%d frames", done)
		return
	}
	const width = 40
	n := done * width / total
	fmt.Fprintf(w, "\r[%s%s] %d/%d frames", strings.Repeat("#", n), strings.Repeat(".", width-n), done, total)
}

// startCPUProfile writes a Go CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
