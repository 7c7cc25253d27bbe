package hal

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DevWatchdog is the Linux watchdog device (/dev/watchdog,
// Documentation/watchdog/watchdog-api.rst). Opening it arms the watchdog.
// Safe for concurrent use.
type DevWatchdog struct {
	mu sync.Mutex // guards f
	f  *os.File
}

var _ Watchdog = (*DevWatchdog)(nil)

// OpenWatchdog opens and thereby arms the watchdog device at path.
func OpenWatchdog(path string) (*DevWatchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("hal: watchdog: %w", err)
	}
	return &DevWatchdog{f: f}, nil
}

// Keepalive implements Watchdog: WDIOC_KEEPALIVE, or a write for drivers
// (and files) that do not take the ioctl. ENOSYS counts as "does not take
// it": qemu-user answers so for ioctls it cannot translate.
func (w *DevWatchdog) Keepalive() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	err := unix.IoctlWatchdogKeepalive(int(w.f.Fd()))
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// Any write that is not 'V' is a keepalive.
		_, err = w.f.Write([]byte{0})
	}
	if err != nil {
		return fmt.Errorf("hal: watchdog keepalive: %w", err)
	}
	return nil
}

// SetTimeout asks the driver for a timeout (WDIOC_SETTIMEOUT) and returns
// the one it chose (WDIOC_GETTIMEOUT).
func (w *DevWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, os.ErrClosed
	}
	fd := int(w.f.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(d/time.Second)); err != nil {
		return 0, fmt.Errorf("hal: watchdog set timeout: %w", err)
	}
	s, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, fmt.Errorf("hal: watchdog get timeout: %w", err)
	}
	return time.Duration(s) * time.Second, nil
}

// Close implements Watchdog: the magic close character 'V' disarms the
// watchdog unless the driver was built with nowayout.
func (w *DevWatchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return os.ErrClosed
	}
	_, werr := w.f.Write([]byte{'V'})
	cerr := w.f.Close()
	w.f = nil
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("hal: watchdog magic close: %w", err)
	}
	return nil
}
