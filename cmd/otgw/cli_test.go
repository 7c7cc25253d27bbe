package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
)

// TestMain lets a test run this binary as the otgw command itself
// (OTGW_TEST_MAIN=1), e.g. under another user.
func TestMain(m *testing.M) {
	if os.Getenv("OTGW_TEST_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// Every subcommand (and every fw subcommand) answers -h with its usage and
// exit 0, and an unknown flag with exit 2; runtime failures are 1 and a
// replay that denied something under --fail-on-deny is 3.
func TestExitCodes(t *testing.T) {
	type tc struct {
		name string
		args []string
		want int
	}
	var tests []tc
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tests = append(tests,
			tc{n + " -h", []string{n, "-h"}, exitOK},
			tc{n + " --help", []string{n, "--help"}, exitOK},
			tc{n + " unknown flag", []string{n, "--no-such-flag"}, exitUsage})
	}
	fw := make([]string, 0, len(fwCommands))
	for n := range fwCommands {
		fw = append(fw, n)
	}
	sort.Strings(fw)
	for _, n := range fw {
		tests = append(tests,
			tc{"fw " + n + " -h", []string{"fw", n, "-h"}, exitOK},
			tc{"fw " + n + " unknown flag", []string{"fw", n, "--no-such-flag"}, exitUsage})
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nzones: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scen := filepath.Join("..", "..", "simulate", "scenarios", "m07-unauthorized-write")
	tests = append(tests,
		tc{"no arguments", nil, exitUsage},
		tc{"-h", []string{"-h"}, exitOK},
		tc{"help", []string{"help"}, exitOK},
		tc{"--version", []string{"--version"}, exitOK},
		tc{"version", []string{"version"}, exitOK},
		tc{"version with an argument", []string{"version", "x"}, exitUsage},
		tc{"unknown command", []string{"frobnicate"}, exitUsage},
		tc{"board list -h (flag after the verb)", []string{"board", "list", "-h"}, exitOK},
		tc{"run without --policy", []string{"run"}, exitUsage},
		tc{"run --poll with --spin-read", []string{"run", "--policy", filepath.Join(scen, "policy.yaml"), "--poll", "--spin-read", "50us"}, exitUsage},
		tc{"run --poll with --io mmsg", []string{"run", "--policy", filepath.Join(scen, "policy.yaml"), "--poll", "--io", "mmsg"}, exitUsage},
		tc{"check an invalid policy", []string{"check", bad}, exitRuntime},
		tc{"check a missing file", []string{"check", filepath.Join(dir, "none.yaml")}, exitRuntime},
		tc{"replay a missing capture", []string{"replay", "--policy", filepath.Join(scen, "policy.yaml"), filepath.Join(dir, "none.pcap")}, exitRuntime},
		tc{"replay --fail-on-deny that denies", []string{"replay", "--policy", filepath.Join(scen, "policy.yaml"), "--fail-on-deny", filepath.Join(scen, "input.pcap")}, exitDenied},
		tc{"dissect a missing capture", []string{"dissect", filepath.Join(dir, "none.pcap")}, exitRuntime},
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if got := run(tc.args, &out, &errb); got != tc.want {
				t.Errorf("otgw %s: exit %d, want %d\nstderr: %s", strings.Join(tc.args, " "), got, tc.want, errb.String())
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		if code := run(args, &out, io.Discard); code != 0 || out.String() != "otgw "+version+"\n" {
			t.Errorf("otgw %s: exit %d, stdout %q", args[0], code, out.String())
		}
	}
}

func TestMissingCaps(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, capEff, want string
	}{
		{"root", "000001ffffffffff", ""},
		{"net admin and raw only", "0000000000003000", ""},
		{"no capabilities", "0000000000000000", "CAP_NET_ADMIN and CAP_NET_RAW"},
		{"raw only", "0000000000002000", "CAP_NET_ADMIN"},
		{"admin only", "0000000000001000", "CAP_NET_RAW"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte("Name:\totgw\nCapInh:\t0000000000000000\nCapEff:\t"+tc.capEff+"\nCapBnd:\t000001ffffffffff\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := missingCaps(p); got != tc.want {
			t.Errorf("%s: missingCaps = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Without root (here: as nobody), otgw run says what it needs instead of
// failing on the first privileged step ("disable IPv6: ... permission
// denied").
func TestRunWithoutPrivilegesSaysWhatItNeeds(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/" && strings.HasPrefix(d, os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "otgw")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join("..", "..", "simulate", "scenarios", "m07-unauthorized-write", "policy.yaml")
	abs, err := filepath.Abs(pol)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--policy", abs, "--ports", "veth-n,veth-s", "--spool", filepath.Join(dir, "spool"))
	cmd.Env = append(os.Environ(), "OTGW_TEST_MAIN=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != exitRuntime {
		t.Fatalf("otgw run as nobody: %v, want exit %d; stderr:\n%s", err, exitRuntime, stderr.String())
	}
	msg := stderr.String()
	if !strings.Contains(msg, "needs root or the capabilities CAP_NET_ADMIN and CAP_NET_RAW") || strings.Contains(msg, "permission denied") {
		t.Errorf("stderr = %q, want the capability message and no raw permission error", msg)
	}
}

// The packaged bash completion and man page know every command.
func TestCompletionAndManPageListEveryCommand(t *testing.T) {
	comp, err := os.ReadFile(filepath.Join("..", "..", "board", "deb", "otgw.bash-completion"))
	if err != nil {
		t.Fatal(err)
	}
	words := func(v string) []string {
		i := strings.Index(string(comp), v+`="`)
		if i < 0 {
			t.Fatalf("completion has no %s list", v)
		}
		rest := string(comp)[i+len(v)+2:]
		w := strings.Fields(rest[:strings.IndexByte(rest, '"')])
		sort.Strings(w)
		return w
	}
	var names, fw []string
	for n := range commands {
		names = append(names, n)
	}
	for n := range fwCommands {
		fw = append(fw, n)
	}
	sort.Strings(names)
	sort.Strings(fw)
	if got := words("local commands"); strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("completion commands %v, want %v", got, names)
	}
	if got := words("local fw"); strings.Join(got, " ") != strings.Join(fw, " ") {
		t.Errorf("completion fw commands %v, want %v", got, fw)
	}
	man, err := os.ReadFile(filepath.Join("..", "..", "board", "deb", "otgw.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.Contains(string(man), ".B "+n) {
			t.Errorf("man page does not describe %s", n)
		}
	}
}

// TestRunPollNeedsTwoCPUs: on one CPU (taskset: the process's affinity is
// what the Go runtime counts), `otgw run --poll` refuses to start, says
// why, and exits with the usage code.
func TestRunPollNeedsTwoCPUs(t *testing.T) {
	taskset := testenv.NeedCmd(t, "taskset") // util-linux (Essential in Debian)
	pol, err := filepath.Abs(filepath.Join("..", "..", "simulate", "scenarios", "m07-unauthorized-write", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(taskset, "-c", "0", os.Args[0], "run", "--policy", pol, "--poll")
	cmd.Env = append(os.Environ(), "OTGW_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != exitUsage || !strings.Contains(stderr.String(), "--poll needs 2 CPUs or more, this machine has 1") {
		t.Errorf("otgw run --poll on one CPU: %v, stderr %q; want exit %d and the reason", err, stderr.String(), exitUsage)
	}
}
