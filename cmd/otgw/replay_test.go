package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplayCommand(t *testing.T) {
	dir := filepath.Join("..", "..", "simulate", "scenarios", "m21-pipelined")
	if _, err := os.Stat(dir); err != nil {
		t.Skip("scenarios not generated")
	}
	pol, pc := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "input.pcap")
	out := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"summary", []string{"--policy", pol, pc}, 0, "function_not_allowed"},
		{"json", []string{"--policy", pol, "--json", pc}, 0, `"verdict":"deny"`},
		{"fail on deny", []string{"--policy", pol, "--fail-on-deny", "--out", out, pc}, 3, "report.html"},
		{"no policy", []string{pc}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		got := run(append([]string{"replay"}, tc.args...), &stdout, &stderr)
		if got != tc.wantCode || !strings.Contains(stdout.String(), tc.wantOut) {
			t.Errorf("%s: exit %d want %d; stdout %q lacks %q (stderr %s)", tc.name, got, tc.wantCode, stdout.String(), tc.wantOut, stderr.String())
		}
	}
	for _, f := range []string{"allowed.pcap", "denied.pcap", "report.json", "report.html"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("--out: %v", err)
		}
	}
}

func TestLearnCommandPassesCheck(t *testing.T) {
	pc := filepath.Join("..", "..", "simulate", "scenarios", "m15-frostygoop", "input.pcap")
	if _, err := os.Stat(pc); err != nil {
		t.Skip("scenarios not generated")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"learn", "--zone", "sup=192.0.2.128/25", "--zone", "sup=north", "--zone", "cell=192.0.2.0/25", "--zone", "cell=south", pc}, &stdout, &stderr); code != 0 {
		t.Fatalf("learn exit %d: %s", code, stderr.String())
	}
	p := filepath.Join(t.TempDir(), "learned.yaml")
	if err := os.WriteFile(p, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var co bytes.Buffer
	if code := run([]string{"check", p}, &co, &co); code != 0 {
		t.Fatalf("check of learned policy: exit %d: %s\n%s", code, co.String(), stdout.String())
	}
	var ro bytes.Buffer
	if code := run([]string{"replay", "--policy", p, "--fail-on-deny", pc}, &ro, &ro); code != 0 {
		t.Errorf("replay of the learned capture: exit %d\n%s", code, ro.String())
	}
}
