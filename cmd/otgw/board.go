package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/otgw/otgw/board"
)

func init() {
	register("board", "list board profiles or detect this machine's (list|detect)", runBoard)
}

func runBoard(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("board", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/", "root directory to read DMI and device tree from (detect)")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw board [--json] list\n       otgw board [--json] [--root DIR] detect")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// Flags may also follow the verb: otgw board detect --root /x.
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	verb := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	switch verb {
	case "list":
		ps := board.List()
		if *asJSON {
			return printJSON(stdout, stderr, ps)
		}
		for _, p := range ps {
			fmt.Fprintf(stdout, "%-12s %-6s north=%s south=%s mgmt=%s fail=%s bypass=%s slots=%s\n",
				p.Name, p.Arch, strings.Join(p.Ports.North, "|"), strings.Join(p.Ports.South, "|"),
				strings.Join(p.Ports.Management, "|"), p.FailMode, p.Bypass.Kind, p.Slots.Kind)
		}
		return 0
	case "detect":
		p, err := board.Detect(*root)
		if err != nil {
			fmt.Fprintf(stderr, "otgw board detect: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, stderr, p)
		}
		fmt.Fprintln(stdout, p.Name)
		return 0
	default:
		fmt.Fprintf(stderr, "otgw board: unknown verb %q\n", verb)
		fs.Usage()
		return 2
	}
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "otgw board: %v\n", err)
		return 1
	}
	return 0
}
