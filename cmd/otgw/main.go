// Command otgw is the OT/ICS segmentation gateway: one static binary with a
// subcommand per job (run, check, dissect, replay, learn, fw, board, version).
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. run returns the process exit code.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

// register adds a subcommand; each subcommand's file calls it from init.
func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	if _, dup := commands[name]; dup {
		panic("otgw: duplicate command " + name)
	}
	commands[name] = command{name: name, summary: summary, run: run}
}

// Exit codes, the same for every subcommand.
const (
	exitOK      = 0
	exitRuntime = 1 // the command ran and failed (bad policy file, I/O, a missing privilege)
	exitUsage   = 2 // bad command line; -h/--help is not one
	// exitDenied (3) is replay --fail-on-deny's "something was denied".
)

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: otgw COMMAND [ARGS]")
	fmt.Fprintln(w, "       otgw --version")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'otgw COMMAND -h' for a command's flags.")
	fmt.Fprintln(w, "Exit status: 0 success, 1 runtime error, 2 usage error, 3 denied (replay --fail-on-deny).")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		return runVersion(args[1:], stdout, stderr)
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "otgw: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	code := c.run(args[1:], stdout, stderr)
	if code == exitUsage && helpRequested(args[1:]) {
		// The subcommand printed its usage because it was asked to:
		// that is a successful answer, not a usage error.
		return exitOK
	}
	return code
}

// helpRequested reports whether args ask for help (-h, -help or --help
// anywhere before a "--" that ends the flags), which a subcommand's flag
// set (or a nested one, as in "otgw fw sign -h") answers with its usage.
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: otgw version (or otgw --version)")
		return exitUsage
	}
	fmt.Fprintf(stdout, "otgw %s\n", version)
	return exitOK
}

func init() {
	register("version", "print the version (also: otgw --version)", runVersion)
}
