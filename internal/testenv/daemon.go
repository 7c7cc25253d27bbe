package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// FreeTCPPort returns a loopback TCP port that was free a moment ago,
// for a receiver the test starts next.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartListening starts cmd, a receiver running in the foreground (its
// output collected for diagnostics), and waits up to 10 s until it
// accepts TCP connections on the loopback port. When t ends it is sent
// SIGTERM by its PID, then SIGKILL after 10 s.
func StartListening(t testing.TB, name string, cmd *exec.Cmd, port int) {
	t.Helper()
	var diag bytes.Buffer
	cmd.Stdout, cmd.Stderr = &diag, &diag
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", name, diag.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %d within 10s: %s", name, port, diag.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
