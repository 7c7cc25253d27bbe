package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// Issue 17: the syslog output is tested against rsyslog (syslog_test.go)
// and syslog-ng. testenv.SyslogNG writes one line per message:
// MSGID, the structured data as syslog-ng's format-json of the .SDATA
// scope, and MESSAGE.

type syslogNGLine struct {
	raw, msgid, msg string
	sd              map[string]map[string]string // SD-ID -> param -> value, as syslog-ng parsed it
}

// replayToSyslogNG runs `otgw replay --policy P --json` for the count of
// verdict events, then `otgw replay --syslog URL` into a private
// syslog-ng, and returns that count and syslog-ng's parsed lines once
// their verdict events add up to it (or after 10 s).
func replayToSyslogNG(t *testing.T, query string, verdicts func([]syslogNGLine) int) (int, []syslogNGLine) {
	t.Helper()
	dir := filepath.Join("..", "..", "simulate", "scenarios", "m07-unauthorized-write")
	pol, pc := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "input.pcap")
	if _, err := os.Stat(pc); err != nil {
		t.Fatalf("scenario capture missing: %v", err)
	}
	port, output := testenv.SyslogNG(t)
	var jsonOut, stderr bytes.Buffer
	if code := run([]string{"replay", "--policy", pol, "--json", pc}, &jsonOut, &stderr); code != 0 {
		t.Fatalf("replay --json: exit %d: %s", code, stderr.String())
	}
	want := strings.Count(jsonOut.String(), "\n")
	if want == 0 {
		t.Fatal("the scenario produces no verdict events")
	}
	if !strings.Contains(jsonOut.String(), `"verdict":"deny"`) {
		t.Fatalf("the scenario has no deny among its events:\n%s", jsonOut.String())
	}
	url := fmt.Sprintf("tcp://127.0.0.1:%d%s", port, query)
	var out bytes.Buffer
	stderr.Reset()
	if code := run([]string{"replay", "--policy", pol, "--syslog", url, pc}, &out, &stderr); code != 0 {
		t.Fatalf("replay --syslog %s: exit %d: %s", url, code, stderr.String())
	}
	var lines []syslogNGLine
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines = parseSyslogNG(t, output())
		if verdicts(lines) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(lines) == 0 {
		t.Fatalf("syslog-ng logged nothing from replay --syslog %s", url)
	}
	return want, lines
}

func parseSyslogNG(t *testing.T, s string) []syslogNGLine {
	t.Helper()
	var lines []syslogNGLine
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if l == "" {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.SplitN(l, "\t", 3) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		ln := syslogNGLine{raw: l, msgid: f["MSGID"], msg: f["MSG"]}
		var sd struct {
			SData map[string]map[string]string `json:"_SDATA"`
		}
		if f["SD"] != "" {
			if err := json.Unmarshal([]byte(f["SD"]), &sd); err != nil {
				t.Errorf("syslog-ng's SD is not JSON: %v: %q", err, l)
			}
		}
		ln.sd = sd.SData
		lines = append(lines, ln)
	}
	return lines
}

// jsonVerdicts adds up the verdict events whose MESSAGE is the event as
// JSON (rfc5424), an aggregate counting as its repeats.
func jsonVerdicts(lines []syslogNGLine) int {
	n := 0
	for _, l := range lines {
		var ev struct {
			Verdict string `json:"verdict"`
			Count   int    `json:"count"`
		}
		if json.Unmarshal([]byte(l.msg), &ev) != nil || ev.Verdict == "" {
			continue
		}
		n += max(ev.Count, 1)
	}
	return n
}

// checkRFC5424 asserts every line syslog-ng logged has a MSGID, the
// registered SD-IDs origin and meta parsed, the event as JSON in MESSAGE,
// and (pen > 0) our otgw@PEN element, else none of ours.
func checkRFC5424(t *testing.T, want int, lines []syslogNGLine, pen int) {
	t.Helper()
	if got := jsonVerdicts(lines); got != want {
		t.Fatalf("syslog-ng logged %d verdict events, want the %d replay reports:\n%s", got, want, rawLines(lines))
	}
	denies := 0
	ours := fmt.Sprintf("otgw@%d", pen)
	for i, l := range lines {
		if l.msgid == "" || l.msgid == "-" {
			t.Errorf("line %d: syslog-ng parsed no MSGID: %q", i+1, l.raw)
		}
		if l.sd["origin"]["software"] != "otgw" || l.sd["origin"]["swVersion"] == "" {
			t.Errorf("line %d: syslog-ng parsed origin as %v: %q", i+1, l.sd["origin"], l.raw)
		}
		if _, err := strconv.ParseUint(l.sd["meta"]["sequenceId"], 10, 64); err != nil {
			t.Errorf("line %d: syslog-ng parsed meta as %v: %q", i+1, l.sd["meta"], l.raw)
		}
		for id := range l.sd {
			if strings.HasPrefix(id, "otgw@") && (pen == 0 || id != ours) {
				t.Errorf("line %d: SD-ID %q (pen=%d): %q", i+1, id, pen, l.raw)
			}
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(l.msg), &ev); err != nil {
			t.Errorf("line %d: MESSAGE is not the event as JSON: %v: %q", i+1, err, l.raw)
			continue
		}
		if pen > 0 && ev["verdict"] != nil {
			own := l.sd[ours]
			if len(own) == 0 {
				t.Errorf("line %d: no %s element parsed with pen=%d: %q", i+1, ours, pen, l.raw)
			} else if v, _ := ev["verdict"].(string); own["verdict"] != v {
				t.Errorf("line %d: %s verdict=%q, the event says %q: %q", i+1, ours, own["verdict"], v, l.raw)
			}
		}
		if ev["event_type"] == "deny" { // not an aggregate (EVENTS_SUPPRESSED)
			denies++
			if !strings.HasSuffix(l.msgid, "_DENY") {
				t.Errorf("line %d: deny event with MSGID %q", i+1, l.msgid)
			}
		}
	}
	t.Logf("syslog-ng parsed %d messages carrying the %d verdict events of replay (%d denies)", len(lines), want, denies)
	if denies == 0 {
		t.Errorf("no deny event among the %d messages:\n%s", len(lines), rawLines(lines))
	}
}

func rawLines(lines []syslogNGLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// `otgw replay --syslog tcp://127.0.0.1:P` without pen= reaches a real
// syslog-ng, which parses MSGID and the registered SD-IDs only.
func TestReplaySyslogNGWithoutPEN(t *testing.T) {
	want, lines := replayToSyslogNG(t, "", jsonVerdicts)
	checkRFC5424(t, want, lines, 0)
}

// With pen=N our own SD element otgw@N reaches syslog-ng's SDATA beside
// origin and meta.
func TestReplaySyslogNGWithPEN(t *testing.T) {
	const pen = 32473 // RFC 5612's documentation PEN
	want, lines := replayToSyslogNG(t, fmt.Sprintf("?pen=%d", pen), jsonVerdicts)
	checkRFC5424(t, want, lines, pen)
}

// format=cef: syslog-ng's MESSAGE is the CEF:0 line, header and extension.
func TestReplaySyslogNGCEF(t *testing.T) {
	cefVerdicts := func(lines []syslogNGLine) int {
		n := 0
		for _, l := range lines {
			ext := cefExtension(l.msg)
			if ext["outcome"] == "" {
				continue
			}
			c, err := strconv.Atoi(ext["cnt"])
			if err != nil || c < 1 {
				c = 1
			}
			n += c
		}
		return n
	}
	want, lines := replayToSyslogNG(t, "?format=cef", cefVerdicts)
	if got := cefVerdicts(lines); got != want {
		t.Fatalf("syslog-ng logged %d CEF verdict events, want the %d replay reports:\n%s", got, want, rawLines(lines))
	}
	denies := 0
	for i, l := range lines {
		h := strings.SplitN(l.msg, "|", 8)
		if len(h) != 8 || h[0] != "CEF:0" || h[1] != "otgw" || h[2] != "otgw" || h[3] == "" {
			t.Errorf("line %d: MESSAGE is not a CEF:0|otgw|otgw|version|... line: %q", i+1, l.raw)
			continue
		}
		if h[4] != l.msgid {
			t.Errorf("line %d: CEF signature %q, RFC 5424 MSGID %q", i+1, h[4], l.msgid)
		}
		if sev, err := strconv.Atoi(h[6]); err != nil || sev < 0 || sev > 10 {
			t.Errorf("line %d: CEF severity %q", i+1, h[6])
		}
		ext := cefExtension(l.msg)
		if _, err := strconv.ParseInt(ext["rt"], 10, 64); err != nil {
			t.Errorf("line %d: CEF rt=%q: %q", i+1, ext["rt"], l.raw)
		}
		if ext["outcome"] == "deny" {
			denies++
			if ext["src"] == "" || ext["dst"] == "" || ext["dpt"] == "" || ext["act"] == "" || ext["cs1Label"] != "conduit" {
				t.Errorf("line %d: deny without src/dst/dpt/act/cs1 conduit in the CEF extension: %q", i+1, l.raw)
			}
		}
	}
	t.Logf("syslog-ng logged %d CEF messages carrying the %d verdict events of replay (%d denies)", len(lines), want, denies)
	if denies == 0 {
		t.Errorf("no CEF deny among the %d messages:\n%s", len(lines), rawLines(lines))
	}
}

// cefExtension splits a CEF line's extension into key=value pairs (keys
// are [A-Za-z0-9_.]; a value runs to the next " key="; '\=' is an escaped
// '=').
func cefExtension(line string) map[string]string {
	h := strings.SplitN(line, "|", 8)
	if len(h) != 8 || h[0] != "CEF:0" {
		return nil
	}
	ext := h[7]
	m := map[string]string{}
	key := func(s string) bool {
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
				return false
			}
		}
		return s != ""
	}
	var k string
	var v strings.Builder
	for _, w := range strings.Split(ext, " ") {
		if name, val, ok := strings.Cut(w, "="); ok && key(name) && !strings.HasSuffix(name, `\`) {
			if k != "" {
				m[k] = v.String()
			}
			k = name
			v.Reset()
			v.WriteString(val)
			continue
		}
		v.WriteByte(' ')
		v.WriteString(w)
	}
	if k != "" {
		m[k] = v.String()
	}
	return m
}
