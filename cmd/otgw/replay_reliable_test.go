package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/syslog"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

// Issue 15, item 5: replay delivers events reliably. The captures are
// generated here (simulate/capture): n SYNs from 198.51.100.1-250 to
// 192.0.2.10 on ports 1000 and up, none allowed, so each is one deny with
// its own aggregation key (source address, destination port): nothing is
// folded, and every event must reach rsyslog as its own line.

const reliablePolicy = `version: 1
name: reliable
mode: enforce
action: drop
zones:
  outside: { port: north, networks: [198.51.100.0/24] }
  plant:   { port: south, networks: [192.0.2.0/24] }
assets:
  plc: { ip: 192.0.2.10, zone: plant }
conduits:
  - name: ssh-only
    from: outside
    to: plc
    rules:
      - tcp: { ports: [22] }
`

// denyCapture writes the policy and a capture of n denied SYNs into dir.
func denyCapture(t *testing.T, dir string, n int) (policy, pcap string) {
	t.Helper()
	return denyCaptureKeys(t, dir, n, 250)
}

// denyCaptureKeys is denyCapture with the sources cycling over srcs
// addresses (1: every deny shares one aggregation key per destination
// port, and the ports change every 250 frames).
func denyCaptureKeys(t *testing.T, dir string, n, srcs int) (policy, pcap string) {
	t.Helper()
	policy, pcap = filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "denies.pcap")
	if err := os.WriteFile(policy, []byte(reliablePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := capture.NewWriter(bw)
	if err != nil {
		t.Fatal(err)
	}
	w.Step = 50 * time.Microsecond
	plc := netip.MustParseAddr("192.0.2.10")
	for i := 0; i < n; i++ {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%srcs)})
		fl := capture.NewTCPFlow(
			capture.Endpoint{MAC: capture.MAC(200), Addr: netip.AddrPortFrom(src, uint16(20000+i%40000))},
			capture.Endpoint{MAC: capture.MAC(10), Addr: netip.AddrPortFrom(plc, uint16(1000+i/250))})
		if err := w.WriteFrame(fl.Handshake()[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return policy, pcap
}

// socReceiver is a private rsyslogd on a fixed loopback port that the
// test can stop (SIGTERM to the PID it started, so rsyslogd writes what
// it accepted) and start again on the same port. Each message becomes one
// line "msgid=...<TAB>sd=...<TAB>msg=<the event as JSON>".
type socReceiver struct {
	*testenv.Rsyslogd
	t    *testing.T
	port int
}

const socReceiverConf = `global(workDirectory="@DIR@/work" maxMessageSize="64k")
module(load="imtcp")
template(name="t" type="string" string="msgid=%msgid%\tsd=%structured-data%\tmsg=%msg%\n")
input(type="imtcp" address="127.0.0.1" port="@PORT@" ruleset="soc" supportOctetCountedFraming="on")
ruleset(name="soc") {
  action(type="omfile" file="@DIR@/out/received.log" template="t")
}
`

func newSOCReceiver(t *testing.T) *socReceiver {
	t.Helper()
	r := &socReceiver{Rsyslogd: testenv.NewRsyslogd(t, "rsyslog.conf"), t: t}
	r.port = testenv.FreeTCPPort(t)
	conf := strings.NewReplacer("@DIR@", r.Dir, "@PORT@", fmt.Sprint(r.port)).Replace(socReceiverConf)
	if err := os.WriteFile(r.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *socReceiver) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", r.port) }

func (r *socReceiver) start() {
	r.t.Helper()
	r.Start(func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop terminates the rsyslogd this test started, by its PID.
func (r *socReceiver) stop() { r.Stop() }

var seqRE = regexp.MustCompile(`sequenceId="([0-9]+)"`)

// received counts the complete lines rsyslog wrote, the distinct
// sequenceIds among the deny lines, and the lines by msgid.
func (r *socReceiver) received() (lines, denies int, byMsgID map[string]int) {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "out", "received.log"))
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	seen := map[string]bool{}
	byMsgID = map[string]int{}
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		lines++
		id, _, _ := strings.Cut(strings.TrimPrefix(l, "msgid="), "\t")
		byMsgID[id]++
		if m := seqRE.FindStringSubmatch(l); m != nil && id == "TCP_DENY" {
			seen[m[1]] = true
		}
	}
	return lines, len(seen), byMsgID
}

func (r *socReceiver) waitDenies(want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		_, d, _ := r.received()
		if d >= want || time.Now().After(deadline) {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// (a) A healthy receiver and 200,000 deny events: every one arrives, none
// is dropped (the pipeline waits instead), and replay says so.
func TestReplaySyslogDeliversEveryDeny(t *testing.T) {
	const n = 200000
	policy, pcap := denyCapture(t, t.TempDir(), n)
	r := newSOCReceiver(t)
	r.start()
	var out, stderr bytes.Buffer
	t0 := time.Now()
	code := run([]string{"replay", "--policy", policy, "--syslog", r.url(), pcap}, &out, &stderr)
	took := time.Since(t0)
	if code != exitOK {
		t.Fatalf("replay: exit %d, want 0; stderr:\n%s", code, stderr.String())
	}
	got := r.waitDenies(n, 10*time.Second)
	lines, _, by := r.received()
	t.Logf("%d deny events, %d received (%d lines %v) in %v (%.0f events/s); stderr:\n%s",
		n, got, lines, by, took.Round(time.Millisecond), float64(n)/took.Seconds(), stderr.String())
	if got != n || by["TCP_DENY"] != n || lines != n {
		t.Errorf("rsyslog logged %d distinct denies in %d lines (%v), want exactly %d", got, lines, by, n)
	}
	if want := fmt.Sprintf("all %d records delivered", n); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
	}
	if strings.Contains(stderr.String(), "lost") {
		t.Errorf("stderr reports a loss:\n%s", stderr.String())
	}
}

// (b) The receiver goes down for 5 s in the middle of the run (the test
// stops the rsyslogd it started and starts it again on the same port):
// replay either delivers every event or exits non-zero saying how many
// were not delivered. Never exit 0 with events missing.
func TestReplaySyslogReceiverDownFiveSeconds(t *testing.T) {
	const n = 100000
	policy, pcap := denyCapture(t, t.TempDir(), n)
	r := newSOCReceiver(t)
	r.start()
	var out, stderr bytes.Buffer
	done := make(chan int, 1)
	t0 := time.Now()
	go func() {
		done <- run([]string{"replay", "--policy", policy, "--syslog", r.url(), "--syslog-timeout", "30s", pcap}, &out, &stderr)
	}()
	if got := r.waitDenies(n/10, 30*time.Second); got < n/10 {
		t.Fatalf("only %d events arrived before the outage", got)
	}
	r.stop()
	_, before, _ := r.received()
	down := time.Now()
	time.Sleep(5 * time.Second)
	r.start()
	outage := time.Since(down)
	var code int
	select {
	case code = <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("replay did not finish within 120 s")
	}
	took := time.Since(t0)
	got := r.waitDenies(n, 10*time.Second)
	lines, _, by := r.received()
	t.Logf("%d events; %d arrived before the %v outage; exit %d after %v; received %d distinct (%d lines: %v); stderr:\n%s",
		n, before, outage.Round(time.Millisecond), code, took.Round(time.Millisecond), got, lines, by, stderr.String())
	switch {
	case code == exitOK && got == n:
		// every event delivered
	case code == exitOK:
		t.Errorf("exit 0 but rsyslog has %d of %d events", got, n)
	default:
		m := regexp.MustCompile(`: ([0-9]+) records not delivered`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Errorf("exit %d without the count of records not delivered:\n%s", code, stderr.String())
		}
	}
}

// (c) The receiver is down for the whole run and the timeout is short:
// replay exits 1 naming the count. With --spool DIR it keeps every event
// there (exit 0, and it says so), and the live exporter (otgw run
// --spool DIR) delivers them once the receiver is up.
func TestReplaySyslogReceiverDownWholeRun(t *testing.T) {
	const n = 20000
	dir := t.TempDir()
	policy, pcap := denyCapture(t, dir, n)
	r := newSOCReceiver(t) // configured, not started
	t.Run("temporary spool", func(t *testing.T) {
		var out, stderr bytes.Buffer
		t0 := time.Now()
		code := run([]string{"replay", "--policy", policy, "--syslog", r.url(), "--syslog-timeout", "2s", pcap}, &out, &stderr)
		t.Logf("exit %d after %v; stderr:\n%s", code, time.Since(t0).Round(time.Millisecond), stderr.String())
		if code != exitRuntime {
			t.Errorf("exit %d, want %d", code, exitRuntime)
		}
		if want := fmt.Sprintf(": %d records not delivered after waiting 2s", n); !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q", want)
		}
	})
	t.Run("named spool", func(t *testing.T) {
		spool := filepath.Join(dir, "spool")
		var out, stderr bytes.Buffer
		code := run([]string{"replay", "--policy", policy, "--syslog", r.url(), "--syslog-timeout", "1s", "--spool", spool, pcap}, &out, &stderr)
		t.Logf("exit %d; stderr:\n%s", code, stderr.String())
		if code != exitOK {
			t.Errorf("exit %d, want 0: every event is safely in %s", code, spool)
		}
		if want := fmt.Sprintf(": %d records kept in the spool %s", n, spool); !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q", want)
		}
		// The live exporter, on the same spool, once the SOC is back.
		r.start()
		cfg, err := syslog.ParseURL(r.url())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Notify = events.Discard
		x, err := syslog.New(cfg, spool, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		t0 := time.Now()
		if err := x.Flush(ctx); err != nil {
			t.Errorf("live exporter Flush: %v", err)
		}
		if err := x.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		got := r.waitDenies(n, 10*time.Second)
		t.Logf("live exporter delivered the spool in %v: %d distinct denies received", time.Since(t0).Round(time.Millisecond), got)
		if got != n {
			t.Errorf("received %d distinct denies from the spool, want %d", got, n)
		}
	})
}

var (
	foldedRE = regexp.MustCompile(`\(([0-9]+) repeats folded into ([0-9]+) aggregated events`)
	countRE  = regexp.MustCompile(`"count":([0-9]+)`)
)

// Aggregation stays as configured offline: repeats of one deny are folded
// into aggregated events carrying their count, replay says so, and the
// denies plus the counts received add up to every event (none lost).
func TestReplaySyslogAggregationIsNotLoss(t *testing.T) {
	const n = 5000
	policy, pcap := denyCaptureKeys(t, t.TempDir(), n, 1)
	r := newSOCReceiver(t)
	r.start()
	var out, stderr bytes.Buffer
	if code := run([]string{"replay", "--policy", policy, "--syslog", r.url(), pcap}, &out, &stderr); code != exitOK {
		t.Fatalf("replay: exit %d; stderr:\n%s", code, stderr.String())
	}
	m := foldedRE.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("stderr does not say what was folded:\n%s", stderr.String())
	}
	var folded, summaries int
	fmt.Sscan(m[1], &folded)
	fmt.Sscan(m[2], &summaries)
	want := n - folded + summaries // records: the denies that passed plus the summaries
	deadline := time.Now().Add(10 * time.Second)
	var denies, counted, lines int
	for {
		b, _ := os.ReadFile(filepath.Join(r.Dir, "out", "received.log"))
		denies, counted, lines = 0, 0, 0
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l == "" {
				continue
			}
			lines++
			switch {
			case strings.HasPrefix(l, "msgid=TCP_DENY\t"):
				denies++
			case strings.HasPrefix(l, "msgid=EVENTS_SUPPRESSED\t"):
				if c := countRE.FindStringSubmatch(l); c != nil {
					var k int
					fmt.Sscan(c[1], &k)
					counted += k
				}
			}
		}
		if lines >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d denies: %d lines received, %d deny lines + %d repeats in summaries; stderr:\n%s", n, lines, denies, counted, stderr.String())
	if folded == 0 {
		t.Error("nothing was folded: the capture does not exercise aggregation")
	}
	if denies+counted != n || counted != folded {
		t.Errorf("received %d denies + %d folded = %d, want %d (replay said %d folded)", denies, counted, denies+counted, n, folded)
	}
}
