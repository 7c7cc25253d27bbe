// Package testenv tells tests what the machine offers: the shared capture
// corpus (../shared), root for network namespaces, and real peer programs
// (rsyslogd, mbpoll, python3 with pymodbus, node).
//
// Policy: where a requirement is missing, a test skips with a message naming
// what is missing and why — except under CI=true, where a missing
// requirement is a failure, because CI's .ci/run installs everything and a
// silent skip there would hide a broken install. Under qemu-user emulation
// (OTGW_QEMU=1, set by `make test-arm64`) tests that need namespaces or
// external peers skip: they run in the native pass of the same CI run.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Emulated reports whether the tests run under qemu-user (OTGW_QEMU=1).
func Emulated() bool { return os.Getenv("OTGW_QEMU") == "1" }

func missing(t testing.TB, msg string) {
	t.Helper()
	if InCI() && !Emulated() {
		t.Fatalf("CI=true but %s (.ci/run must provide it)", msg)
	}
	t.Skip(msg)
}

// ModuleRoot returns the directory that holds go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if ok {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// SharedDir returns the absolute path of ../shared beside the project
// (override with OTGW_SHARED). Tests that use it skip, naming the path,
// when it is absent (a user's clone); under CI it must be present.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("OTGW_SHARED")
	if dir == "" {
		dir = filepath.Join(ModuleRoot(t), "..", "shared")
	}
	dir, _ = filepath.Abs(dir)
	if _, err := os.Stat(filepath.Join(dir, "pcaps")); err != nil {
		missing(t, "shared capture corpus not found at "+filepath.Join(dir, "pcaps")+
			" (set OTGW_SHARED); truth tests need the real captures")
	}
	return dir
}

// Pcaps returns the absolute path of ../shared/pcaps (see SharedDir).
func Pcaps(t testing.TB) string {
	t.Helper()
	return filepath.Join(SharedDir(t), "pcaps")
}

// Integration marks a test that needs the real machine: network namespaces,
// real peers or services. It skips under qemu-user emulation.
func Integration(t testing.TB) {
	t.Helper()
	if Emulated() {
		t.Skip("integration test: runs in the native pass; qemu-user cannot host namespaces or peers")
	}
}

// NeedRoot skips (or fails under CI) unless the test runs as root, which
// network namespaces, veth pairs and AF_PACKET need.
func NeedRoot(t testing.TB) {
	t.Helper()
	Integration(t)
	if os.Geteuid() != 0 {
		missing(t, "needs root for network namespaces and AF_PACKET")
	}
}

// NeedCmd returns the path of a program the test runs as a real peer,
// skipping (or failing under CI) when it is not installed.
func NeedCmd(t testing.TB, name string) string {
	t.Helper()
	Integration(t)
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		missing(t, "needs "+name+" (a real peer); install it as .ci/run does")
	}
	return p
}

// PositiveInt is the count in the environment variable name (a test's
// size knob), def where it is unset; anything but a positive whole
// number fails the test.
func PositiveInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}
