package hal

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GPIO v2 line flags (include/uapi/linux/gpio.h, enum gpio_v2_line_flag);
// x/sys/unix has the structs but not these.
const (
	gpioV2LineFlagActiveLow = 1 << 1
	gpioV2LineFlagOutput    = 1 << 3
)

// GPIOBypass drives a bypass relay on one GPIO line through the GPIO
// character device v2 uAPI (GPIO_V2_GET_LINE_IOCTL, then
// GPIO_V2_LINE_SET_VALUES_IOCTL on the line's fd). Logical 1 = engaged
// (relay shorts the ports); ActiveLow inverts the electrical level. Safe
// for concurrent use.
type GPIOBypass struct {
	chip string
	line uint32

	mu      sync.Mutex // guards fd and engaged
	fd      int
	engaged bool
}

var _ Bypass = (*GPIOBypass)(nil)

// OpenGPIOBypass requests the line as an output, initially released
// (inline). chip is a path such as /dev/gpiochip0.
func OpenGPIOBypass(chip string, line uint32, activeLow bool) (*GPIOBypass, error) {
	f, err := os.OpenFile(chip, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("hal: bypass gpio: %w", err)
	}
	defer f.Close() // the line fd stays valid without the chip fd
	var req unix.GPIOV2LineRequest
	req.Offsets[0] = line
	req.Num_lines = 1
	copy(req.Consumer[:len(req.Consumer)-1], "otgw-bypass")
	req.Config.Flags = gpioV2LineFlagOutput
	if activeLow {
		req.Config.Flags |= gpioV2LineFlagActiveLow
	}
	// Output value 0 (released) from the first instant.
	req.Config.Num_attrs = 1
	req.Config.Attrs[0].Attr.Id = unix.GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES
	req.Config.Attrs[0].Attr.Flags = 0 // the values bitmap
	req.Config.Attrs[0].Mask = 1
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.GPIO_V2_GET_LINE_IOCTL,
		uintptr(unsafe.Pointer(&req))); e != 0 {
		return nil, fmt.Errorf("hal: bypass gpio %s line %d: GPIO_V2_GET_LINE_IOCTL: %w", chip, line, e)
	}
	return &GPIOBypass{chip: chip, line: line, fd: int(req.Fd)}, nil
}

func (g *GPIOBypass) set(on bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd < 0 {
		return os.ErrClosed
	}
	v := unix.GPIOV2LineValues{Mask: 1}
	if on {
		v.Bits = 1
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(g.fd), unix.GPIO_V2_LINE_SET_VALUES_IOCTL,
		uintptr(unsafe.Pointer(&v))); e != 0 {
		return fmt.Errorf("hal: bypass gpio %s line %d: set %v: %w", g.chip, g.line, on, e)
	}
	g.engaged = on
	return nil
}

// Engage implements Bypass.
func (g *GPIOBypass) Engage() error { return g.set(true) }

// Release implements Bypass.
func (g *GPIOBypass) Release() error { return g.set(false) }

// Engaged implements Bypass.
func (g *GPIOBypass) Engaged() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.engaged
}

// Close implements Bypass. The kernel releases the line; whether the
// relay holds its state then depends on the board's wiring (a latching
// relay or a pull resistor sets the rest position).
func (g *GPIOBypass) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(g.fd)
	g.fd = -1
	return err
}
