package hal

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SysLEDs is where the kernel's LED class lives.
const SysLEDs = "/sys/class/leds"

// SysfsLED is one LED of the Linux LED class
// (Documentation/leds/leds-class.rst): files brightness, max_brightness
// and trigger under /sys/class/leds/NAME. Safe for concurrent use (every
// call is one sysfs write).
type SysfsLED struct {
	name string
	dir  string
	max  int
}

var _ LED = (*SysfsLED)(nil)

// OpenLED opens the LED name under root (SysLEDs when root is "").
func OpenLED(root, name string) (*SysfsLED, error) {
	if root == "" {
		root = SysLEDs
	}
	if name == "" || strings.ContainsAny(name, "/") || name == "." || name == ".." {
		return nil, fmt.Errorf("hal: led %q: bad name", name)
	}
	dir := filepath.Join(root, name)
	b, err := os.ReadFile(filepath.Join(dir, "max_brightness"))
	if err != nil {
		return nil, fmt.Errorf("hal: led %s: %w", name, err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || max <= 0 {
		return nil, fmt.Errorf("hal: led %s: max_brightness %q", name, strings.TrimSpace(string(b)))
	}
	return &SysfsLED{name: name, dir: dir, max: max}, nil
}

// Name implements LED.
func (l *SysfsLED) Name() string { return l.name }

func (l *SysfsLED) write(file, v string) error {
	// sysfs attributes are written in place, never created or truncated
	// (O_TRUNC is harmless there, and lets the test tree behave alike).
	if err := os.WriteFile(filepath.Join(l.dir, file), []byte(v+"\n"), 0); err != nil {
		return fmt.Errorf("hal: led %s: %s: %w", l.name, file, err)
	}
	return nil
}

// Set implements LED: trigger none, then brightness max or 0.
func (l *SysfsLED) Set(on bool) error {
	if err := l.write("trigger", "none"); err != nil {
		return err
	}
	v := 0
	if on {
		v = l.max
	}
	return l.write("brightness", strconv.Itoa(v))
}

// SetTrigger implements LED. The trigger must be one the kernel lists in
// the trigger file.
func (l *SysfsLED) SetTrigger(trigger string) error {
	avail, _, err := l.Triggers()
	if err != nil {
		return err
	}
	for _, t := range avail {
		if t == trigger {
			return l.write("trigger", trigger)
		}
	}
	return fmt.Errorf("hal: led %s: trigger %q not available (%s): %w", l.name, trigger,
		strings.Join(avail, " "), ErrNotSupported)
}

// Triggers lists the available triggers and the current one (the
// bracketed entry of the trigger file: "none [heartbeat] timer").
func (l *SysfsLED) Triggers() (avail []string, current string, err error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "trigger"))
	if err != nil {
		return nil, "", fmt.Errorf("hal: led %s: %w", l.name, err)
	}
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			f = f[1 : len(f)-1]
			current = f
		}
		avail = append(avail, f)
	}
	return avail, current, nil
}

// Brightness reads the current brightness.
func (l *SysfsLED) Brightness() (int, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "brightness"))
	if err != nil {
		return 0, fmt.Errorf("hal: led %s: %w", l.name, err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
