package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw dissect [--json] [--port proto=N]... CAPTURE...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	out := bufio.NewWriterSize(stdout, 1<<16)
	defer out.Flush()
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FRAME\tTIME\tSRC\tDST\tPROTO\tDIR\tPDU")
	}
	code := 0
	for _, path := range fs.Args() {
		st, err := dissect.Run(path, dissect.Options{Ports: ports, PortsOnly: *portsOnly}, func(p *dissect.PDU) error {
			if *asJSON {
				b, err := p.JSON()
				if err != nil {
					return err
				}
				out.Write(b)
				return out.WriteByte('\n')
			}
			_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Frame, p.Time.UTC().Format("15:04:05.000000"),
				p.Src, p.Dst, p.Proto, p.Dir, p.Summary())
			return err
		})
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
