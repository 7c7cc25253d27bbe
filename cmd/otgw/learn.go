package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/learnrun"
)

func init() {
	register("learn", "draft a policy that allows exactly what the captures show", runLearn)
}

func runLearn(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("learn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts learn.Options
	fs.Func("zone", "NAME=CIDR or NAME=north|south (repeatable; places assets in zones)", opts.AddZone)
	fs.StringVar(&opts.Name, "name", "learned", "policy name")
	fs.StringVar(&opts.Action, "action", "reply", "default deny action of the draft: drop, reset or reply")
	ports := portFlags{}
	fs.Var(ports, "port", "also inspect `proto=N` (modbus, dnp3, opcua) on server port N; repeatable (protocols are also recognised by content on any port)")
	fs.BoolVar(&opts.PortsOnly, "ports-only", false, "recognise protocols by port only (standard ports and --port), not by content")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw learn [--zone NAME=CIDR|port ...] [--port proto=N ...] CAPTURE... > policy.yaml")
		fmt.Fprintln(stderr, "Replays the captures through the engine and drafts a policy allowing what was seen, with counts and first/last seen as comments.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	opts.Ports = ports
	p, st, err := learnrun.Learn(opts, fs.Args()...)
	if err != nil {
		fmt.Fprintf(stderr, "otgw learn: %v\n", err)
		return 1
	}
	y, err := rules.Marshal(p)
	if err != nil {
		fmt.Fprintf(stderr, "otgw learn: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(y); err != nil {
		return 1
	}
	fmt.Fprintf(stderr, "otgw learn: %d frames, %d PDUs: %d assets, %d conduits\n", st.Frames, st.PDUs, st.Assets, st.Conduits)
	for _, d := range st.CaptureDamage {
		fmt.Fprintf(stderr, "otgw learn: warning: %s\n", d)
	}
	for _, u := range st.Unlearnable {
		fmt.Fprintf(stderr, "otgw learn: cannot allow %s\n", u)
	}
	return 0
}
