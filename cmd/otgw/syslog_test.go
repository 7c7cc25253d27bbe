package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// rsyslogConf is a private rsyslogd on loopback: plain TCP with octet
// counting, every message written with the property replacer's view of
// the parsed RFC 5424 header (%msgid%, %structured-data%) and
// mmpstrucdata's parse of the SD as JSON.
const rsyslogConf = `global(workDirectory="@DIR@/work" maxMessageSize="64k")
module(load="imtcp")
module(load="mmpstrucdata")
template(name="t" type="string" string="msgid=%msgid%\tsd=%structured-data%\tsdjson=%$!rfc5424-sd%\tmsg=%msg%\n")
input(type="imtcp" address="127.0.0.1" port="@PORT@" ruleset="soc" supportOctetCountedFraming="on")
ruleset(name="soc") {
  action(type="mmpstrucdata" sd_name.lowercase="off")
  action(type="omfile" file="@DIR@/out/received.log" template="t")
}
`

// startRsyslog runs rsyslogd in the foreground on a free loopback port and
// returns the port and the path of its output; it is stopped (SIGTERM by
// PID) at cleanup.
func startRsyslog(t *testing.T) (int, string) {
	t.Helper()
	bin := testenv.NeedCmd(t, "rsyslogd")
	dir := t.TempDir()
	for _, d := range []string{"work", "out"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := testenv.FreeTCPPort(t)
	conf := strings.NewReplacer("@DIR@", dir, "@PORT@", fmt.Sprint(port)).Replace(rsyslogConf)
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	testenv.StartListening(t, "rsyslogd", cmd, port)
	return port, filepath.Join(dir, "out", "received.log")
}

// Done-when of issue 17: `otgw replay --syslog tcp://127.0.0.1:P` without
// pen= delivers RFC 5424 messages that a real rsyslog parses with MSGID
// and structured data (registered SD-IDs only), the event as JSON in MSG.
func TestReplaySyslogWithoutPENReachesRsyslog(t *testing.T) {
	dir := filepath.Join("..", "..", "simulate", "scenarios", "m07-unauthorized-write")
	pol, pc := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "input.pcap")
	if _, err := os.Stat(pc); err != nil {
		t.Fatalf("scenario capture missing: %v", err)
	}
	port, received := startRsyslog(t)
	var jsonOut, stderr bytes.Buffer
	if code := run([]string{"replay", "--policy", pol, "--json", pc}, &jsonOut, &stderr); code != 0 {
		t.Fatalf("replay --json: exit %d: %s", code, stderr.String())
	}
	want := strings.Count(jsonOut.String(), "\n")
	if want == 0 {
		t.Fatal("the scenario produces no verdict events")
	}
	var out bytes.Buffer
	if code := run([]string{"replay", "--policy", pol, "--syslog", fmt.Sprintf("tcp://127.0.0.1:%d", port), pc}, &out, &stderr); code != 0 {
		t.Fatalf("replay --syslog: exit %d: %s", code, stderr.String())
	}
	// Repeats are folded by the pipeline (EVENTS_SUPPRESSED with a count):
	// wait until the counts add up to the --json events.
	var lines []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(received)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && verdictCount(lines) >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := verdictCount(lines); got != want {
		t.Fatalf("rsyslog logged %d verdict events, want the %d of --json:\n%s", got, want, strings.Join(lines, "\n"))
	}
	verdicts := 0
	for i, l := range lines {
		f := map[string]string{}
		for _, kv := range strings.Split(l, "\t") {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		if f["msgid"] == "" || f["msgid"] == "-" {
			t.Errorf("line %d: no MSGID: %q", i+1, l)
		}
		if !strings.HasPrefix(f["sd"], "[meta sequenceId=") || !strings.Contains(f["sd"], `[origin software="otgw" swVersion="`) ||
			strings.Contains(f["sd"], "[otgw@") {
			t.Errorf("line %d: structured data %q, want meta and origin only", i+1, f["sd"])
		}
		var sd map[string]map[string]string
		if err := json.Unmarshal([]byte(f["sdjson"]), &sd); err != nil || sd["origin"]["software"] != "otgw" || sd["meta"]["sequenceId"] == "" {
			t.Errorf("line %d: mmpstrucdata parsed the SD as %q (%v)", i+1, f["sdjson"], err)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(f["msg"]), &ev); err != nil {
			t.Errorf("line %d: MSG is not JSON: %v: %q", i+1, err, f["msg"])
			continue
		}
		if ev["event_type"] == "deny" {
			verdicts++
			if !strings.HasSuffix(f["msgid"], "_DENY") {
				t.Errorf("line %d: deny event with MSGID %q", i+1, f["msgid"])
			}
		}
	}
	if verdicts == 0 {
		t.Errorf("no deny event among the %d messages:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// verdictCount adds up the verdict events in rsyslog's lines, counting an
// aggregate as its repeats.
func verdictCount(lines []string) int {
	n := 0
	for _, l := range lines {
		_, msg, ok := strings.Cut(l, "\tmsg=")
		var ev struct {
			Verdict string `json:"verdict"`
			Count   int    `json:"count"`
		}
		if !ok || json.Unmarshal([]byte(msg), &ev) != nil || ev.Verdict == "" {
			continue
		}
		n += max(ev.Count, 1)
	}
	return n
}
