package update

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFileName is the lock file in a device's state directory.
const LockFileName = "lock"

// StateLock is an exclusive, advisory lock on a state directory, held by
// one `otgw fw` command (or the gateway) while it changes slots, boot state
// or trust. The zero value is not useful; see LockState.
type StateLock struct {
	f *os.File
}

// LockState takes the state directory's lock without waiting: flock(2)
// LOCK_EX|LOCK_NB on dir/lock, which the kernel releases when the holder
// exits, however it exits (so a crashed install leaves no stale lock). The
// holder's pid is written into the file for the error message of the next
// caller. A lock that is held is ErrBusy.
func LockState(dir string) (*StateLock, error) { return lockState(dir, "") }

// LockStateAs takes the lock as the running gateway (role "run": its
// trial health check, boot report and freshness check hold it briefly).
func LockStateAs(dir, role string) (*StateLock, error) { return lockState(dir, role) }

// gatewayHoldMax bounds how long LockStateWait waits for the running
// gateway's short critical sections.
const gatewayHoldMax = 15 * time.Second

// LockStateWait is LockState for an `otgw fw` command: when the holder is
// the running gateway (LockStateAs "run"), whose critical sections are
// short (boot report, commit, freshness), it waits up to 15 s for it
// instead of refusing; any other holder (another fw command, an install
// that may run for minutes) is refused at once with ErrBusy, as before.
func LockStateWait(dir string) (*StateLock, error) {
	deadline := time.Now().Add(gatewayHoldMax)
	confirmed := false
	for {
		l, err := lockState(dir, "")
		if err == nil || !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			return l, err
		}
		if !strings.Contains(err.Error(), "(the running gateway)") {
			// The holder's line is written just after its flock and
			// outlives its release: read at either moment, it names the
			// previous holder. Refuse only when a second look agrees.
			if confirmed {
				return l, err
			}
			confirmed = true
		} else {
			confirmed = false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// holderLineLen is the length of the holder's line in the lock file
// (pid, role, spaces, newline); the reader reads this many bytes.
const holderLineLen = 32

func lockState(dir, role string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := make([]byte, holderLineLen)
		n, _ := f.ReadAt(holder, 0)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			f := strings.Fields(string(holder[:n]))
			if len(f) > 0 {
				if pid, perr := strconv.Atoi(f[0]); perr == nil && pid > 0 {
					who = "process " + strconv.Itoa(pid)
				}
			}
			if len(f) > 1 && f[1] == "run" {
				who += " (the running gateway)"
			}
			return nil, fmt.Errorf("%w: %s holds %s; wait for it to finish", ErrBusy, who, path)
		}
		return nil, fmt.Errorf("update: lock %s: %w", path, err)
	}
	// Written over the previous holder's line, then cut to length: the
	// file never reads empty while a holder exists. Every line is
	// holderLineLen bytes, so a look mid-write never reads the tail of
	// the previous holder's line after the new one.
	line := fmt.Appendf(nil, "%-*s\n", holderLineLen-1, strings.TrimSpace(strconv.Itoa(os.Getpid())+" "+role))
	if _, err := f.WriteAt(line, 0); err == nil {
		_ = f.Truncate(int64(len(line)))
	}
	return &StateLock{f: f}, nil
}

// Unlock releases the lock. It is safe to call on a nil lock and more than
// once.
func (l *StateLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	// The line stays: the next holder writes over it. Cleared here, a
	// caller's look between this and the unlock read no holder at all.
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}
