package syslog

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHelperSpoolChild is not a test: it is the child process of
// TestRsyslogKilledWhileDown (re-exec of the test binary).
func TestHelperSpoolChild(t *testing.T) {
	dir := os.Getenv("OTGW_SYSLOG_CHILD_DIR")
	if dir == "" {
		t.Skip("helper process")
	}
	port, _ := strconv.Atoi(os.Getenv("OTGW_SYSLOG_CHILD_PORT"))
	n, _ := strconv.Atoi(os.Getenv("OTGW_SYSLOG_CHILD_N"))
	d := fastDest("tcp", port, nil)
	x, err := New(Config{Destinations: []Destination{d}, SyncInterval: 50 * time.Millisecond}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		x.Emit(testEvent(i))
	}
	time.Sleep(200 * time.Millisecond) // > SyncInterval: the batch fsync has run
	os.Stdout.WriteString("READY\n")
	time.Sleep(time.Minute) // killed here
}

// S07: the gateway is killed (SIGKILL) while the SOC is down; after the
// restart, everything up to the last fsync batch is delivered, and one
// LOG_GAP event names the killed boot and where its missing range starts.
func TestRsyslogKilledWhileDown(t *testing.T) {
	pki := newPKI(t)
	r := newReceiver(t, pki)
	spoolDir := t.TempDir()
	const n = 300
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSpoolChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OTGW_SYSLOG_CHILD_DIR="+spoolDir,
		"OTGW_SYSLOG_CHILD_PORT="+strconv.Itoa(r.plain), "OTGW_SYSLOG_CHILD_N="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "READY") {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("child exited before READY")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no Close, no flush
		t.Fatal(err)
	}
	_ = cmd.Wait()

	r.start()
	x := newExporter(t, spoolDir, fastDest("tcp", r.plain, nil))
	u, dups := waitSeqs(t, r, "tcp-plain", n, 10*time.Second)
	var gaps []parsedLine
	r.waitLines(5*time.Second, func(l []string) bool {
		gaps = gaps[:0]
		for _, s := range l {
			if p := parseLine(t, s); p.msgid == "LOG_GAP" {
				gaps = append(gaps, p)
			}
		}
		return len(gaps) > 0
	})
	_ = x.Close()
	if !contiguous(u, n) {
		t.Fatalf("after restart %d of %d spooled events delivered", len(u), n)
	}
	if len(gaps) != 1 {
		t.Fatalf("received %d LOG_GAP events, want 1", len(gaps))
	}
	sd := gaps[0].sd["otgw@32473"]
	if sd["prevBootId"] != testEvent(1).BootID || sd["lastSeq"] != strconv.Itoa(n) || sd["missingFrom"] != strconv.Itoa(n+1) {
		t.Errorf("LOG_GAP structured data %v, want prevBootId %s lastSeq %d missingFrom %d", sd, testEvent(1).BootID, n, n+1)
	}
	t.Logf("loss 0 of %d after SIGKILL; %d duplicates", n, dups)
}
