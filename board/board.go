package board

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed profiles.yaml
var profilesYAML []byte

// Sentinel errors.
var (
	ErrUnknownBoard = errors.New("board: no profile matches this machine")
	ErrNoProfile    = errors.New("board: no such profile")
	ErrNoPort       = errors.New("board: none of the port's interface names exists")
)

// XDPMode says whether `otgw run` hands flows of plain tcp:/udp:
// conduits to the XDP flow bypass (hal/xdp; DESIGN.md "Fast path").
type XDPMode string

// XDP modes.
const (
	XDPOff  XDPMode = "off"  // every frame goes through the user-space engine
	XDPAuto XDPMode = "auto" // attach in native (driver) mode, else as a tc program (packet-socket ports, Linux 6.6); where only generic mode is possible, or nothing, say so once and go on without
	XDPOn   XDPMode = "on"   // as auto, then generic mode; where nothing attaches, refuse to start
)

// ParseXDPMode parses auto, on or off.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPOff, XDPAuto, XDPOn:
		return m, nil
	}
	return "", fmt.Errorf("board: xdp %q: want auto, on or off", s)
}

// XDPDefault is the profile's XDP mode, off when it names none.
func (p *Profile) XDPDefault() XDPMode {
	if p.XDP == "" {
		return XDPOff
	}
	return p.XDP
}

// FailMode is what happens to traffic when the gateway is not forwarding.
type FailMode string

// Fail modes.
const (
	FailClosed FailMode = "closed" // nothing crosses (default)
	FailOpen   FailMode = "open"   // the bypass joins the ports
)

// BypassKind names how a board bypasses the gateway.
type BypassKind string

// Bypass kinds.
const (
	BypassNone   BypassKind = "none"
	BypassGPIO   BypassKind = "gpio"   // a relay on a GPIO line (hal.GPIOBypass)
	BypassBridge BypassKind = "bridge" // kernel bridge fallback (hal.Bridge)
	BypassSim    BypassKind = "sim"    // hal/halsim.Bypass
)

// SlotKind names the A/B update mechanism.
type SlotKind string

// Slot kinds.
const (
	SlotFile  SlotKind = "file"
	SlotUBoot SlotKind = "uboot"
	SlotGRUB  SlotKind = "grub"
)

// Profile is one board. Treat it as read-only.
type Profile struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Arch        string   `yaml:"arch"` // GOARCH, or "any"
	Match       Match    `yaml:"match"`
	Ports       Ports    `yaml:"ports"`
	Watchdog    string   `yaml:"watchdog"` // device path; "" = none
	LEDs        []LED    `yaml:"leds"`
	Bypass      Bypass   `yaml:"bypass"`
	FailMode    FailMode `yaml:"fail_mode"`
	XDP         XDPMode  `yaml:"xdp"` // the XDP flow bypass by default ("" = off)
	IO          IO       `yaml:"io"`  // the ports' frame I/O by default
	Slots       Slots    `yaml:"slots"`
}

// IO is a board's default frame I/O for its ports (otgw run --io) and
// their buffer sizes, which count in the process's RSS (each frame 2 KiB,
// per port). The zero value takes hal's defaults: the TPACKET_V2 ring
// (falling back to recvmmsg), 512 RX and 256 TX frames.
type IO struct {
	Mode     string `yaml:"mode"`      // ring, mmsg, xdp (AF_XDP) or auto (xdp, else the default); "" = the default
	RxFrames int    `yaml:"rx_frames"` // per port: RX ring slots or AF_XDP RX UMEM frames (0 = hal's default)
	TxFrames int    `yaml:"tx_frames"` // per port: TX ring slots or AF_XDP TX UMEM frames (0 = hal's default)
}

// Match says how Detect recognises the board.
type Match struct {
	Compatible  []string `yaml:"compatible"`   // device-tree root compatible strings
	BoardName   []string `yaml:"board_name"`   // DMI board_name
	ProductName []string `yaml:"product_name"` // DMI product_name
	FallbackDMI bool     `yaml:"fallback_dmi"` // any machine with DMI, if nothing else matched
}

// Ports lists candidate interface names per role, first existing wins.
type Ports struct {
	North      []string `yaml:"north"`
	South      []string `yaml:"south"`
	Management []string `yaml:"management"`
}

// LED is one LED with the role the gateway gives it (status, fault,
// link, bypass) and its name under /sys/class/leds.
type LED struct {
	Role string `yaml:"role"`
	Name string `yaml:"name"`
}

// Bypass describes the board's bypass.
type Bypass struct {
	Kind      BypassKind `yaml:"kind"`
	Chip      string     `yaml:"chip"`       // gpio: /dev/gpiochipN
	Line      uint32     `yaml:"line"`       // gpio: line offset on the chip
	ActiveLow bool       `yaml:"active_low"` // gpio
	Bridge    string     `yaml:"bridge"`     // bridge: interface name
}

// Slots describes the A/B update slots; `otgw fw` picks its slot driver
// and bootloader from them (update.SimBoard for file, update.PartitionSlots
// with update.NewGRUBBoot or update.NewUBootBoot for grub and uboot).
type Slots struct {
	Kind  SlotKind `yaml:"kind"`
	A     string   `yaml:"a"`     // slot A root partition (block device; file for sim)
	B     string   `yaml:"b"`     // slot B
	Env   string   `yaml:"env"`   // uboot: fw_env.config; grub: grubenv
	State string   `yaml:"state"` // persistent state directory (trust, anchors, lock; sim: slots and boot state)
}

var profiles = mustLoad(profilesYAML)

func mustLoad(b []byte) []Profile {
	ps, err := Parse(b)
	if err != nil {
		panic(err) // embedded data: a bug, caught by the package's tests
	}
	return ps
}

// Parse reads profiles from YAML and validates them.
func Parse(b []byte) ([]Profile, error) {
	var ps []Profile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&ps); err != nil {
		return nil, fmt.Errorf("board: profiles: %w", err)
	}
	seen := map[string]bool{}
	for i := range ps {
		p := &ps[i]
		if seen[p.Name] {
			return nil, fmt.Errorf("board: profile %q defined twice", p.Name)
		}
		seen[p.Name] = true
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// Validate checks a profile's invariants.
func (p *Profile) Validate() error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("board: profile %q: %s", p.Name, fmt.Sprintf(f, a...))
	}
	switch {
	case p.Name == "":
		return bad("no name")
	case len(p.Ports.North) == 0 || len(p.Ports.South) == 0:
		return bad("north and south ports are required")
	}
	switch p.Arch {
	case "any", "amd64", "arm64", "arm":
	default:
		return bad("arch %q (want amd64, arm64, arm or any)", p.Arch)
	}
	switch p.Bypass.Kind {
	case BypassNone, BypassSim:
	case BypassGPIO:
		if p.Bypass.Chip == "" {
			return bad("gpio bypass needs a chip")
		}
	case BypassBridge:
		if p.Bypass.Bridge == "" {
			return bad("bridge bypass needs a bridge name")
		}
	default:
		return bad("bypass kind %q", p.Bypass.Kind)
	}
	switch p.FailMode {
	case FailClosed:
	case FailOpen:
		if p.Bypass.Kind == BypassNone {
			return bad("fail_mode open needs a bypass (relay or bridge)")
		}
	default:
		return bad("fail_mode %q (want closed or open)", p.FailMode)
	}
	switch p.XDP {
	case "", XDPOff, XDPAuto, XDPOn:
	default:
		return bad("xdp %q (want auto, on or off)", p.XDP)
	}
	switch p.IO.Mode {
	case "", "ring", "mmsg", "xdp", "auto":
	default:
		return bad("io mode %q (want ring, mmsg, xdp or auto)", p.IO.Mode)
	}
	if p.IO.RxFrames < 0 || p.IO.RxFrames > 1<<16 || p.IO.TxFrames < 0 || p.IO.TxFrames > 1<<16 {
		return bad("io rx_frames %d, tx_frames %d (want 0-65536)", p.IO.RxFrames, p.IO.TxFrames)
	}
	switch p.Slots.Kind {
	case SlotFile, SlotUBoot, SlotGRUB:
		if p.Slots.A == "" || p.Slots.B == "" || p.Slots.A == p.Slots.B {
			return bad("slots need two distinct paths a and b")
		}
		if p.Slots.Kind != SlotFile && p.Slots.Env == "" {
			return bad("%s slots need env (the bootloader environment)", p.Slots.Kind)
		}
	default:
		return bad("slots kind %q (want file, uboot or grub)", p.Slots.Kind)
	}
	return nil
}

// List returns all built-in profiles in file order.
func List() []Profile { return append([]Profile(nil), profiles...) }

// Lookup returns the built-in profile with the given name.
func Lookup(name string) (Profile, error) {
	for _, p := range profiles {
		if p.Name == name {
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("%w: %q", ErrNoProfile, name)
}

// Facts are what Detect read from the machine.
type Facts struct {
	Compatible  []string // device tree, most specific first
	BoardName   string   // DMI
	ProductName string   // DMI
	HasDMI      bool
}

// ReadFacts reads DMI and device-tree identification below root ("/" on a
// real system; a fake tree in tests).
func ReadFacts(root string) Facts {
	var f Facts
	read := func(p string) (string, bool) {
		b, err := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b)), err == nil
	}
	var ok1, ok2 bool
	f.BoardName, ok1 = read("sys/class/dmi/id/board_name")
	f.ProductName, ok2 = read("sys/class/dmi/id/product_name")
	f.HasDMI = ok1 || ok2
	if b, err := os.ReadFile(filepath.Join(root, "proc/device-tree/compatible")); err == nil {
		for _, s := range strings.Split(string(b), "\x00") {
			if s = strings.TrimSpace(s); s != "" {
				f.Compatible = append(f.Compatible, s)
			}
		}
	}
	return f
}

// Detect picks the profile for the machine whose root filesystem is at
// root: the most specific device-tree compatible string that a profile
// lists, else an exact DMI board or product name, else the DMI fallback
// profile when the machine has DMI. The sim profile is never detected; ask
// for it by name.
func Detect(root string) (Profile, error) {
	return detect(profiles, ReadFacts(root))
}

func detect(ps []Profile, f Facts) (Profile, error) {
	for _, c := range f.Compatible {
		for _, p := range ps {
			for _, m := range p.Match.Compatible {
				if m == c {
					return p, nil
				}
			}
		}
	}
	if f.HasDMI {
		for _, p := range ps {
			for _, m := range p.Match.BoardName {
				if f.BoardName != "" && strings.EqualFold(m, f.BoardName) {
					return p, nil
				}
			}
			for _, m := range p.Match.ProductName {
				if f.ProductName != "" && strings.EqualFold(m, f.ProductName) {
					return p, nil
				}
			}
		}
		for _, p := range ps {
			if p.Match.FallbackDMI {
				return p, nil
			}
		}
	}
	return Profile{}, fmt.Errorf("%w (dmi board %q product %q, compatible %q)",
		ErrUnknownBoard, f.BoardName, f.ProductName, f.Compatible)
}

// ResolvePort returns the first candidate name for which exists reports
// true (e.g. a check under /sys/class/net).
func ResolvePort(candidates []string, exists func(string) bool) (string, error) {
	for _, c := range candidates {
		if exists(c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: tried %s", ErrNoPort, strings.Join(candidates, ", "))
}

// NetExists reports whether an interface exists in /sys/class/net below
// root.
func NetExists(root string) func(string) bool {
	return func(name string) bool {
		_, err := os.Stat(filepath.Join(root, "sys/class/net", name))
		return err == nil
	}
}
