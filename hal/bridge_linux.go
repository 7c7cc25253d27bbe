package hal

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
)

// Bridge is the software fail-open: Engage joins the ports into a kernel
// bridge (no STP, no addresses, no IPv6) so traffic passes uninspected;
// Release takes them out again and deletes the bridge. The bridge outlives
// the process on purpose: a supervisor engages it when the gateway is
// gone. Use it only where the board profile asks for fail-open.
//
// It acts in the network namespace of the calling thread. Safe for
// concurrent use.
type Bridge struct {
	name  string
	ports []string

	mu      sync.Mutex // guards engaged
	engaged bool
}

var _ Bypass = (*Bridge)(nil)

// NewBridge returns a Bridge named name over ports; nothing changes until
// Engage. If a bridge of that name already holds the ports (a previous
// supervisor engaged it), Engaged reports true.
func NewBridge(name string, ports ...string) *Bridge {
	b := &Bridge{name: name, ports: append([]string(nil), ports...)}
	if br, err := netlink.LinkByName(name); err == nil && br.Type() == "bridge" {
		b.engaged = true
		for _, p := range ports {
			l, err := netlink.LinkByName(p)
			if err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
				b.engaged = false
			}
		}
	}
	return b
}

// Engage implements Bypass. It is idempotent.
func (b *Bridge) Engage() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	br, err := netlink.LinkByName(b.name)
	if err != nil {
		la := netlink.NewLinkAttrs()
		la.Name = b.name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return fmt.Errorf("hal: bridge %s: create: %w", b.name, err)
		}
		if br, err = netlink.LinkByName(b.name); err != nil {
			return fmt.Errorf("hal: bridge %s: %w", b.name, err)
		}
		// STP is off on a new bridge, so ports forward at once.
	} else if br.Type() != "bridge" {
		return fmt.Errorf("hal: bridge %s: exists and is a %s", b.name, br.Type())
	}
	// The bridge is a switch, not a host.
	if err := disableIPv6(b.name); err != nil {
		return err
	}
	for _, p := range b.ports {
		l, err := netlink.LinkByName(p)
		if err != nil {
			return fmt.Errorf("hal: bridge %s: port %s: %w", b.name, p, err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return fmt.Errorf("hal: bridge %s: add port %s: %w", b.name, p, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("hal: bridge %s: port %s up: %w", b.name, p, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("hal: bridge %s: up: %w", b.name, err)
	}
	b.engaged = true
	return nil
}

// Release implements Bypass: the ports leave the bridge, which is deleted.
func (b *Bridge) Release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	br, brErr := netlink.LinkByName(b.name)
	for _, p := range b.ports {
		l, err := netlink.LinkByName(p)
		if err != nil {
			continue // gone with its namespace or unplugged: not bridged
		}
		if brErr == nil && l.Attrs().MasterIndex == br.Attrs().Index {
			if err := netlink.LinkSetNoMaster(l); err != nil {
				errs = append(errs, fmt.Errorf("hal: bridge %s: remove port %s: %w", b.name, p, err))
			}
		}
	}
	if brErr == nil {
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("hal: bridge %s: delete: %w", b.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.engaged = false
	return nil
}

// Engaged implements Bypass.
func (b *Bridge) Engaged() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.engaged
}

// Close implements Bypass. It leaves the bridge as it is: an engaged
// fail-open must survive the process that engaged it.
func (b *Bridge) Close() error { return nil }
