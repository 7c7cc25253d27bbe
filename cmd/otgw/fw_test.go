package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fwRun runs the CLI in-process and returns its exit code and output.
func fwRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func fwMust(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := fwRun(t, args...)
	if code != 0 {
		t.Fatalf("otgw %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out + errs
}

func fwWriteImage(t *testing.T, path, tag string, n int) []byte {
	t.Helper()
	b := bytes.Repeat([]byte(tag), n/len(tag)+1)[:n]
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFWEndToEnd drives the whole operator workflow through `fwRun fw`:
// keys, a 2-of-2 root, signing, verification, provisioning the sim board,
// install from a file, reboot to the trial slot, commit, then rejected
// attacks (tampered bundle, threshold not met, rollback), install from a
// directory and from an HTTP URL, and root rotation.
func TestFWEndToEnd(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	state := p("state")

	fwMust(t, "fw", "keygen", "--out", p("k1"))
	fwMust(t, "fw", "keygen", "--out", p("k2"))
	if code, _, _ := fwRun(t, "fw", "keygen", "--out", p("k1")); code == 0 {
		t.Error("keygen overwrote an existing key")
	}
	if fi, err := os.Stat(p("k1.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	fwMust(t, "fw", "root", "--version", "1", "--threshold", "2", "--pub", p("k1.pub"), "--pub", p("k2.pub"),
		"--key", p("k1.key"), "--key", p("k2.key"), "--out", p("root.json"))

	factory := fwWriteImage(t, p("factory.img"), "factory-1.0.0 ", 20000)
	fwWriteImage(t, p("new.img"), "release-1.1.0 ", 30000)
	fwMust(t, "fw", "sign", "--key", p("k1.key"), "--key", p("k2.key"), "--version", "1.1.0", "--svn", "2",
		"--board", "sim", "--arch", "amd64", "--out", p("fw-1.1.0.otgw"), p("new.img"))
	if out := fwMust(t, "fw", "verify", "--root", p("root.json"), p("fw-1.1.0.otgw")); !strings.Contains(out, "OK version 1.1.0 svn 2") {
		t.Errorf("verify output: %s", out)
	}

	// Tampered copy: verify and install both refuse it.
	b, _ := os.ReadFile(p("fw-1.1.0.otgw"))
	b[len(b)-10] ^= 1
	os.WriteFile(p("tampered.otgw"), b, 0o644)
	if code, _, errs := fwRun(t, "fw", "verify", "--root", p("root.json"), p("tampered.otgw")); code != 1 || !strings.Contains(errs, "reason=hash_mismatch") {
		t.Errorf("verify tampered: exit %d, %s", code, errs)
	}

	dev := []string{"--board", "sim", "--state", state, "--arch", "amd64"}
	fwMust(t, append([]string{"fw", "provision", "--version", "1.0.0", "--svn", "1", p("factory.img")}, dev...)...)
	code, _, errs := fwRun(t, append([]string{"fw", "install", "--root", p("root.json"), p("tampered.otgw")}, dev...)...)
	if code != 1 || !strings.Contains(errs, "step=rejected") || !strings.Contains(errs, "reason=hash_mismatch") {
		t.Fatalf("install tampered: exit %d\n%s", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(state, "slot-a.img")); !bytes.Equal(got, factory) {
		t.Fatal("tampered install changed the active slot")
	}

	// Threshold not met: one of two keys.
	fwMust(t, "fw", "sign", "--key", p("k1.key"), "--version", "1.1.0", "--svn", "2",
		"--board", "sim", "--arch", "amd64", "--out", p("one-sig.otgw"), p("new.img"))
	if code, _, errs := fwRun(t, append([]string{"fw", "install", "--root", p("root.json"), p("one-sig.otgw")}, dev...)...); code != 1 || !strings.Contains(errs, "reason=threshold") {
		t.Errorf("install with one signature: exit %d\n%s", code, errs)
	}

	out := fwMust(t, append([]string{"fw", "install", "--root", p("root.json"), p("fw-1.1.0.otgw")}, dev...)...)
	if !strings.Contains(out, "step=installed") || !strings.Contains(out, "to slot B") {
		t.Fatalf("install output: %s", out)
	}
	if out := fwMust(t, append([]string{"fw", "reboot"}, dev...)...); !strings.Contains(out, "booted slot B (1.1.0) on trial") {
		t.Fatalf("reboot output: %s", out)
	}
	if out := fwMust(t, append([]string{"fw", "commit"}, dev...)...); !strings.Contains(out, "step=committed") {
		t.Fatalf("commit output: %s", out)
	}
	var st fwStatusJSON
	if err := json.Unmarshal([]byte(fwMust(t, append([]string{"fw", "status", "--json"}, dev...)...)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Running != "B" || st.Primary != "B" || st.SVN != 2 || st.Slots[1].Version != "1.1.0" {
		t.Fatalf("status after commit: %+v", st)
	}

	// Rollback: an older release with a lower SVN.
	fwMust(t, "fw", "sign", "--key", p("k1.key"), "--key", p("k2.key"), "--version", "1.0.5", "--svn", "1",
		"--board", "sim", "--arch", "amd64", "--out", p("old.otgw"), p("factory.img"))
	if code, _, errs := fwRun(t, append([]string{"fw", "install", "--root", p("root.json"), p("old.otgw")}, dev...)...); code != 1 || !strings.Contains(errs, "reason=rollback") {
		t.Errorf("install rollback: exit %d\n%s", code, errs)
	}

	// Directory (USB stick): the newest valid bundle wins.
	usb := p("usb")
	os.Mkdir(usb, 0o755)
	fwWriteImage(t, p("r2.img"), "release-1.2.0 ", 25000)
	os.Rename(p("old.otgw"), filepath.Join(usb, "old.otgw"))
	os.Rename(p("one-sig.otgw"), filepath.Join(usb, "one-sig.otgw"))
	fwMust(t, "fw", "sign", "--key", p("k1.key"), "--key", p("k2.key"), "--version", "1.2.0", "--svn", "2",
		"--board", "sim", "--arch", "amd64", "--out", filepath.Join(usb, "fw-1.2.0.otgw"), p("r2.img"))
	if out := fwMust(t, append([]string{"fw", "install", "--root", p("root.json"), usb}, dev...)...); !strings.Contains(out, "installed 1.2.0") {
		t.Fatalf("install from directory: %s", out)
	}
	// Operator abandons it before reboot.
	fwMust(t, append([]string{"fw", "rollback"}, dev...)...)

	// HTTP on 127.0.0.1.
	bundle, _ := os.ReadFile(filepath.Join(usb, "fw-1.2.0.otgw"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bundle) }))
	defer srv.Close()
	if out := fwMust(t, append([]string{"fw", "install", "--root", p("root.json"), "--timeout", "10s", srv.URL + "/fw.otgw"}, dev...)...); !strings.Contains(out, "installed 1.2.0") {
		t.Fatalf("install from http: %s", out)
	}
	fwMust(t, append([]string{"fw", "rollback"}, dev...)...)

	// Root rotation to k3 alone, signed by the old 2-of-2 and the new key.
	fwMust(t, "fw", "keygen", "--out", p("k3"))
	fwMust(t, "fw", "root", "--version", "2", "--threshold", "1", "--pub", p("k3.pub"),
		"--key", p("k1.key"), "--key", p("k2.key"), "--key", p("k3.key"), "--out", p("root2.json"))
	if out := fwMust(t, append([]string{"fw", "rotate", "--root", p("root.json"), p("root2.json")}, dev...)...); !strings.Contains(out, "now v2") {
		t.Fatalf("rotate: %s", out)
	}
	fwMust(t, "fw", "sign", "--key", p("k3.key"), "--version", "1.3.0", "--svn", "3",
		"--board", "sim", "--arch", "amd64", "--out", p("fw-1.3.0.otgw"), p("r2.img"))
	fwMust(t, append([]string{"fw", "install", "--root", p("root.json"), p("fw-1.3.0.otgw")}, dev...)...)
	fwMust(t, append([]string{"fw", "rollback"}, dev...)...)
	// The old keys were revoked by the rotation.
	if code, _, errs := fwRun(t, append([]string{"fw", "install", "--root", p("root.json"), filepath.Join(usb, "fw-1.2.0.otgw")}, dev...)...); code != 1 || !strings.Contains(errs, "reason=revoked_key") {
		t.Errorf("install signed by revoked keys: exit %d\n%s", code, errs)
	}
}

func TestFWUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no subcommand", []string{"fw"}, 2},
		{"unknown subcommand", []string{"fw", "frobnicate"}, 2},
		{"install without board", []string{"fw", "install", "--root", "r", "x.otgw"}, 2},
		{"install on a board without its partitions", []string{"fw", "install", "--board", "x86-generic", "--state", "d", "--root", "r", "x.otgw"}, 2},
		{"install on an unknown board", []string{"fw", "install", "--board", "vax", "--state", "d", "--root", "r", "x.otgw"}, 2},
		{"sign without key", []string{"fw", "sign", "--version", "1.0.0", "--board", "sim", "--arch", "amd64", "--out", "o", "in"}, 2},
	}
	for _, tt := range tests {
		if got, _, _ := fwRun(t, tt.args...); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}
