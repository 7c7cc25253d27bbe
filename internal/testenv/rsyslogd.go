package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Rsyslogd is a private rsyslogd a test runs as its SOC receiver, and can
// stop (SIGTERM to the PID it started, so rsyslogd writes what it
// accepted) and start again. Dir holds its work and out directories; its
// config is Conf (the caller writes it); its own output goes to
// Dir/out/rsyslogd.stdout.
type Rsyslogd struct {
	Dir, Conf string
	t         testing.TB
	bin       string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// NewRsyslogd makes the directories of an rsyslogd whose config is
// Dir/confName; it is stopped when t ends. Without rsyslogd, t skips (or
// fails under CI).
func NewRsyslogd(t testing.TB, confName string) *Rsyslogd {
	t.Helper()
	r := &Rsyslogd{t: t, bin: NeedCmd(t, "rsyslogd"), Dir: t.TempDir()}
	r.Conf = filepath.Join(r.Dir, confName)
	for _, d := range []string{"work", "out"} {
		if err := os.MkdirAll(filepath.Join(r.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(r.Stop)
	return r
}

// Start runs rsyslogd in the foreground and waits up to 10 s until ready
// reports true; it fails t if rsyslogd exits or is not ready by then.
func (r *Rsyslogd) Start(ready func() bool) {
	r.t.Helper()
	out, err := os.OpenFile(filepath.Join(r.Dir, "out", "rsyslogd.stdout"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Close()
	r.cmd = exec.Command(r.bin, "-n", "-f", r.Conf, "-i", filepath.Join(r.Dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = out, out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(r.cmd, r.exited)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-r.exited:
			r.t.Fatalf("rsyslogd exited: %s", r.Output())
		default:
		}
		if ready() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("rsyslogd did not start listening within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates the rsyslogd this test started, by its PID (SIGTERM,
// then SIGKILL after 10 s).
func (r *Rsyslogd) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	}
	r.cmd = nil
}

// Output is what rsyslogd wrote to its stdout and stderr so far.
func (r *Rsyslogd) Output() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "out", "rsyslogd.stdout"))
	return string(b)
}
