package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/otgw/otgw/rules"
)

func init() {
	register("schema", "print the policy's JSON Schema (editor completion; reference in docs/policy.md)", runSchema)
}

func runSchema(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	md := fs.Bool("markdown", false, "print the policy reference (docs/policy.md) instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw schema [--markdown] > otgw-policy.json")
		fmt.Fprintln(stderr, "Prints the JSON Schema (draft 2020-12) of policy files, version 1, for editors")
		fmt.Fprintln(stderr, "(yaml-language-server: '# yaml-language-server: $schema=otgw-policy.json').")
		fmt.Fprintln(stderr, "The schema checks shape and names; 'otgw check' remains the authority.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if *md {
		_, _ = io.WriteString(stdout, rules.Reference())
		return 0
	}
	_, _ = stdout.Write(rules.Schema())
	return 0
}
