package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3-4-gabc1234", "1.2.3+4+gabc1234"},
		{"9a1212a-dirty", "9a1212a+dirty"},
		{"dev", "0~dev"},
		{"", "0"},
		{"v2.0.0-rc1", "2.0.0+rc1"},
	} {
		if got := DebianVersion(tc.in); got != tc.want {
			t.Errorf("DebianVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The man page formats without warnings.
func TestManPage(t *testing.T) {
	groff := testenv.NeedCmd(t, "groff")
	cmd := exec.Command(groff, "-man", "-ww", "-z", filepath.Join(repoRoot(t), "board", "deb", "otgw.1"))
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	return testenv.ModuleRoot(t)
}

// run runs a command, failing the test with its output on error.
func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Every architecture's package is a valid .deb that dpkg-deb reads, with
// the files, modes and conffiles of the layout.
func TestPackagesForEveryArch(t *testing.T) {
	dpkgDeb := testenv.NeedCmd(t, "dpkg-deb")
	dir := t.TempDir()
	for _, arch := range Arches {
		p := &Package{Version: "1.2.3", Arch: arch, Binary: []byte("#!/bin/sh\necho otgw\n"), Root: repoRoot(t), Time: time.Unix(1700000000, 0)}
		deb, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, p.FileName())
		if err := os.WriteFile(path, deb, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(runCmd(t, dpkgDeb, "--field", path, "Architecture")); got != arch {
			t.Errorf("%s: Architecture %q", path, got)
		}
		contents := runCmd(t, dpkgDeb, "--contents", path)
		for _, want := range []string{"-rwxr-xr-x root/root", "./usr/bin/otgw", "./lib/systemd/system/otgw.service", "./etc/default/otgw", "./etc/otgw/policy.example.yaml",
			"./usr/share/man/man1/otgw.1.gz", "./usr/share/bash-completion/completions/otgw"} {
			if !strings.Contains(contents, want) {
				t.Errorf("%s lacks %s:\n%s", path, want, contents)
			}
		}
		if got := runCmd(t, dpkgDeb, "--info", path, "conffiles"); got != "/etc/default/otgw\n/etc/otgw/policy.example.yaml\n" {
			t.Errorf("%s: conffiles %q", path, got)
		}
		again, _ := p.Build()
		if !bytes.Equal(deb, again) {
			t.Errorf("%s: two builds differ (not reproducible)", arch)
		}
	}
}

// Done-when of issue 17: dpkg -i of the amd64 package (into a scratch
// root: the machine's own package database stays untouched) installs a
// unit that systemd-analyze verify accepts, and the installed binary runs.
func TestInstallAndVerifyUnit(t *testing.T) {
	testenv.NeedRoot(t)
	dpkg := testenv.NeedCmd(t, "dpkg")
	analyze := testenv.NeedCmd(t, "systemd-analyze")
	goBin := testenv.NeedCmd(t, "go")
	if runtime.GOARCH != "amd64" {
		t.Skip("the amd64 package's binary runs on amd64 only")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "otgw")
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w -X main.version=1.2.3", "-o", bin, "./cmd/otgw")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := run("1.2.3", dir, repoRoot(t), []string{"amd64=" + bin}); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(dir, "otgw_1.2.3_amd64.deb")

	root := filepath.Join(dir, "root")
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, dpkg, "--root="+root, "--force-script-chrootless", "--log=/dev/null", "-i", deb)
	if got := runCmd(t, dpkg, "--root="+root, "-s", "otgw"); !strings.Contains(got, "Status: install ok installed") {
		t.Fatalf("dpkg -s otgw:\n%s", got)
	}
	if got := runCmd(t, filepath.Join(root, "usr/bin/otgw"), "--version"); got != "otgw 1.2.3\n" {
		t.Errorf("installed otgw --version = %q", got)
	}
	// systemd-analyze verify resolves the unit's dependencies (targets,
	// slices) and the commands it runs inside --root: give it the host's
	// systemd units and kill(1), as a real system has them.
	units := filepath.Join(root, "lib/systemd/system")
	hostUnits, _ := filepath.Glob("/lib/systemd/system/*")
	for _, u := range hostUnits {
		if strings.HasSuffix(u, ".target") || strings.HasSuffix(u, ".slice") || strings.HasSuffix(u, ".socket") {
			b, err := os.ReadFile(u)
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(units, filepath.Base(u)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		kill = "/bin/kill"
	}
	kb, err := os.ReadFile(kill)
	if err != nil {
		t.Fatalf("kill(1): %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/kill"), kb, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/otgw/policy.yaml"), []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--root="+root, "otgw.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The unit grants CAP_NET_ADMIN and CAP_NET_RAW, nothing else.
	unit, err := os.ReadFile(filepath.Join(units, "otgw.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n", "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW\n", "NoNewPrivileges=yes\n", "ProtectSystem=strict\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("installed unit lacks %q", want)
		}
	}
}
