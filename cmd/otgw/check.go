package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/otgw/otgw/rules"
)

func init() {
	register("check", "validate a policy file (exit 1 with FILE:LINE:COL: lines)", runCheck)
}

// runCheck loads and compiles each policy and prints every problem of every
// file in one run.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw check POLICY...")
		fmt.Fprintln(stderr, "Validates policy files; exit 0 when all are valid, 1 with one FILE:LINE:COL: line per problem.")
		fmt.Fprintf(stderr, "Limits: %d bytes (4 MiB), %d values, %d entries a list, %d ranges a value, nesting %d.\n",
			rules.MaxPolicyBytes, rules.MaxPolicyValues, rules.MaxListLen, rules.MaxRanges, rules.MaxPolicyDepth)
		fmt.Fprintln(stderr, "\nRate detections (policy key detections: NAME: off | {count: N, window: D}); defaults:")
		for d := rules.Detector(0); d < rules.NumDetectors; d++ {
			th := rules.DefaultThresholds[d]
			fmt.Fprintf(stderr, "  %-24s %2d in %3.0fs  %s <address>\n", d, th.Count, th.Window.Seconds(), d.What())
		}
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	code := 0
	for _, path := range fs.Args() {
		p, lerr := rules.Load(path)
		var rs *rules.Ruleset
		var cerr error
		if p != nil {
			rs, cerr = rules.Compile(p)
		}
		if err := rules.Merge(lerr, cerr); err != nil {
			var ps rules.Problems
			if errors.As(err, &ps) {
				for _, pr := range ps {
					if pr.File == "" {
						pr.File = path
					}
					fmt.Fprintln(stdout, pr.String())
				}
			} else {
				fmt.Fprintln(stdout, err)
			}
			code = 1
			continue
		}
		nrules := 0
		for i := 0; i < rs.NumConduits(); i++ {
			nrules += len(rs.RuleNames(i))
		}
		fmt.Fprintf(stdout, "%s: ok: policy %q, %d zones, %d assets, %d conduits, %d rules\n",
			path, p.Name, len(p.Zones), len(p.Assets), rs.NumConduits(), nrules)
	}
	return code
}
