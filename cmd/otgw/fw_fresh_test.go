package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFWFreshnessCLI: a root delegating a timestamp key, statements made
// with `fw timestamp`, fetched by `fw refresh` over HTTP, and `fw status`
// reporting fresh, then stale (with an event) once the statement expires.
func TestFWFreshnessCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	state := p("state")
	dev := []string{"--board", "sim", "--state", state, "--arch", "amd64"}
	fwMust(t, "fw", "keygen", "--out", p("k1"))
	fwMust(t, "fw", "keygen", "--out", p("ts"))
	fwMust(t, "fw", "root", "--pub", p("k1.pub"), "--timestamp-pub", p("ts.pub"), "--key", p("k1.key"), "--out", p("root.json"))
	fwWriteImage(t, p("factory.img"), "factory ", 4096)
	fwMust(t, append([]string{"fw", "provision", "--version", "1.0.0", p("factory.img")}, dev...)...)

	status := func() fwStatusJSON {
		t.Helper()
		code, out, errs := fwRun(t, append([]string{"fw", "status", "--json", "--root", p("root.json")}, dev...)...)
		if code != 0 {
			t.Fatalf("status: %d %s", code, errs)
		}
		var s fwStatusJSON
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.Freshness == nil {
			t.Fatalf("status json: %v\n%s", err, out)
		}
		lastStatusErr = errs
		return s
	}
	if s := status(); !s.Freshness.Stale || s.Freshness.Reason != "missing" || !strings.Contains(lastStatusErr, "step=stale") {
		t.Errorf("no statement yet: %+v, stderr %q", s.Freshness, lastStatusErr)
	}

	// Firmware keys cannot sign a timestamp; the timestamp key can.
	fwMust(t, "fw", "timestamp", "--key", p("k1.key"), "--board", "sim", "--latest", "1.2.0", "--svn", "2", "--out", p("forged.json"))
	if code, _, errs := fwRun(t, append([]string{"fw", "refresh", "--root", p("root.json"), p("forged.json")}, dev...)...); code != 1 || !strings.Contains(errs, "reason=untrusted_key") {
		t.Errorf("refresh with a forged statement: exit %d %s", code, errs)
	}
	fwMust(t, "fw", "timestamp", "--key", p("ts.key"), "--board", "sim", "--latest", "1.2.0", "--svn", "2",
		"--version", "5", "--expires", "2s", "--out", p("ts.json"))
	body, _ := os.ReadFile(p("ts.json"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	if out := fwMust(t, append([]string{"fw", "refresh", "--root", p("root.json"), srv.URL + "/timestamp.json"}, dev...)...); !strings.Contains(out, "timestamp v5 accepted") {
		t.Fatalf("refresh: %s", out)
	}
	if s := status(); s.Freshness.Stale || !s.Freshness.Behind || s.Freshness.Latest != "1.2.0" {
		t.Errorf("after refresh: %+v", s.Freshness)
	}
	// A replayed older statement is refused.
	fwMust(t, "fw", "timestamp", "--key", p("ts.key"), "--board", "sim", "--latest", "1.0.0", "--svn", "1",
		"--version", "4", "--out", p("old.json"))
	if code, _, errs := fwRun(t, append([]string{"fw", "refresh", "--root", p("root.json"), p("old.json")}, dev...)...); code != 1 || !strings.Contains(errs, "reason=rollback") {
		t.Errorf("refresh with an older statement: exit %d %s", code, errs)
	}
	time.Sleep(2100 * time.Millisecond) // the statement expires; nothing new comes
	if s := status(); !s.Freshness.Stale || s.Freshness.Reason != "expired" || !strings.Contains(lastStatusErr, "step=stale") {
		t.Errorf("after expiry: %+v, stderr %q", s.Freshness, lastStatusErr)
	}
	code, out, _ := fwRun(t, append([]string{"fw", "status", "--root", p("root.json")}, dev...)...)
	if code != 0 || !strings.Contains(out, "freshness: STALE (expired)") {
		t.Errorf("text status: %d %s", code, out)
	}
}

var lastStatusErr string

// TestFWRotateAnchorsCLI: `fw rotate` refuses an expired root; after a
// rotation, deleting STATE/trust/root.2.json makes install refuse (reason
// rollback) instead of trusting root v1's revoked key again.
func TestFWRotateAnchorsCLI(t *testing.T) {
	d := newFWDev(t)
	p := func(n string) string { return filepath.Join(d.dir, n) }
	fwMust(t, "fw", "keygen", "--out", p("k2"))
	fwMust(t, "fw", "root", "--version", "2", "--pub", p("k2.pub"), "--key", d.key, "--key", p("k2.key"),
		"--expires", "2001-01-01T00:00:00Z", "--out", p("expired.json"))
	if code, _, errs := fwRun(t, d.args("rotate", "--root", d.root, p("expired.json"))...); code != 1 || !strings.Contains(errs, "reason=expired") {
		t.Errorf("rotate to an expired root: exit %d %s", code, errs)
	}
	fwMust(t, "fw", "root", "--version", "2", "--pub", p("k2.pub"), "--key", d.key, "--key", p("k2.key"), "--out", p("root2.json"))
	fwMust(t, d.args("rotate", "--root", d.root, p("root2.json"))...)
	if code, _, errs := fwRun(t, d.args("install", "--root", d.root, d.bundle)...); code != 1 || !strings.Contains(errs, "reason=revoked_key") {
		t.Fatalf("install signed by the revoked key: exit %d %s", code, errs)
	}
	if err := os.Remove(filepath.Join(d.state, "trust", "root.2.json")); err != nil {
		t.Fatal(err)
	}
	code, _, errs := fwRun(t, d.args("install", "--root", d.root, d.bundle)...)
	if code != 1 || !strings.Contains(errs, "reason=rollback") || !strings.Contains(errs, "anchored v2") {
		t.Errorf("install after deleting root.2.json: exit %d %s; want refused, reason=rollback", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(d.state, "slot-b.img")); len(got) != 0 {
		t.Errorf("slot B written (%d bytes)", len(got))
	}
}
