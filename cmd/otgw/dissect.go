package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"text/tabwriter"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/dissect"
)

// portFlags collects repeated --port proto=N flags.
type portFlags map[uint16]protocols.Proto

func (p portFlags) String() string { return "" }
func (p portFlags) Set(s string) error {
	proto, port, err := dissect.ParsePort(s)
	if err != nil {
		return err
	}
	p[port] = proto
	return nil
}

func init() {
	register("dissect", "print every Modbus, DNP3 and OPC UA PDU of a capture", cmdDissect)
}

func cmdDissect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dissect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "one JSON object per PDU (fields as in DESIGN.md)")
	ports := portFlags(dissect.DefaultPorts())
	fs.Var(ports, "port", "also dissect `proto=N` (modbus, dnp3, opcua) on server port N; repeatable (on other ports protocols are recognised by content)")
	portsOnly := fs.Bool("ports-only", false, "recognise protocols by port only (standard ports and --port), not by content")
	workers := fs.Int("workers", 0, "dissect connections on `N` goroutines (0: one per CPU); the output is the same for every N")
	// Hidden (not in the usage line): for profiling, see BENCHMARKS.md "offline".
	cpuProf := fs.String("cpuprofile", "", "debug: write a Go CPU profile of the whole run to this file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw dissect [--json] [--port proto=N]... [--workers N] CAPTURE...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(stderr, "otgw dissect: --cpuprofile:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintln(stderr, "otgw dissect: --cpuprofile:", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	out := bufio.NewWriterSize(stdout, 1<<16)
	defer out.Flush()
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FRAME\tTIME\tSRC\tDST\tPROTO\tDIR\tPDU")
	}
	format := func(dst []byte, p *dissect.PDU) ([]byte, error) {
		return fmt.Appendf(dst, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Frame, p.Time.UTC().Format("15:04:05.000000"),
			p.Src, p.Dst, p.Proto, p.Dir, p.Summary()), nil
	}
	var sink io.Writer = tw
	if *asJSON {
		format = func(dst []byte, p *dissect.PDU) ([]byte, error) {
			dst, err := p.AppendJSON(dst)
			return append(dst, '\n'), err
		}
		sink = out
	}
	code := 0
	for _, path := range fs.Args() {
		st, err := dissect.RunParallel(path, dissect.Options{Ports: ports, PortsOnly: *portsOnly}, *workers, format, sink)
		if err != nil {
			fmt.Fprintf(stderr, "otgw dissect: %v\n", err)
			code = 1
			continue
		}
		if tw != nil {
			tw.Flush()
		}
		fmt.Fprintf(stderr, "%s: %v\n", path, st)
	}
	return code
}
