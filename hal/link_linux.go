package hal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetLink is the Linux Link over rtnetlink (github.com/vishvananda/netlink)
// and the ethtool ioctl. It acts in the network namespace of the thread
// that calls its methods. Safe for concurrent use (it holds no state but
// the name).
type NetLink struct {
	name string
}

var _ Link = (*NetLink)(nil)

// OpenLink returns the Link for an existing interface.
func OpenLink(name string) (*NetLink, error) {
	if _, err := netlink.LinkByName(name); err != nil {
		return nil, fmt.Errorf("hal: link %s: %w", name, err)
	}
	return &NetLink{name: name}, nil
}

// Name returns the interface name.
func (l *NetLink) Name() string { return l.name }

// Prepare implements Link. Order matters: IPv6 goes off first, which also
// removes the IPv6 link-local address the kernel adds on link up, so the
// address check that follows sees only addresses someone configured.
func (l *NetLink) Prepare(opts LinkOptions) error {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return fmt.Errorf("hal: link %s: %w", l.name, err)
	}
	if err := disableIPv6(l.name); err != nil {
		return err
	}
	addrs, err := addrList(link)
	if err != nil {
		return fmt.Errorf("hal: link %s: list addresses: %w", l.name, err)
	}
	if len(addrs) > 0 && !opts.StripAddrs {
		return fmt.Errorf("hal: link %s: %s (a bridge port must not be a host; remove it or allow stripping): %w",
			l.name, addrsString(addrs), ErrHasAddress)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("hal: link %s: strip %s: %w", l.name, a.IPNet, err)
		}
	}
	if opts.MTU > 0 && link.Attrs().MTU != opts.MTU {
		if err := netlink.LinkSetMTU(link, opts.MTU); err != nil {
			return fmt.Errorf("hal: link %s: set mtu %d: %w", l.name, opts.MTU, err)
		}
	}
	if err := offloadsOff(l.name); err != nil {
		return err
	}
	if err := netlink.SetPromiscOn(link); err != nil {
		return fmt.Errorf("hal: link %s: promiscuous: %w", l.name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("hal: link %s: up: %w", l.name, err)
	}
	return nil
}

// Info implements Link.
func (l *NetLink) Info() (LinkInfo, error) {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return LinkInfo{}, fmt.Errorf("hal: link %s: %w", l.name, err)
	}
	a := link.Attrs()
	info := LinkInfo{
		Name: l.name, Index: a.Index, MTU: a.MTU,
		AdminUp: a.Flags&(1<<0) != 0, // net.FlagUp
		OperUp:  a.OperState == netlink.OperUp || a.RawFlags&unix.IFF_LOWER_UP != 0 && a.OperState == netlink.OperUnknown,
		Promisc: a.Promisc != 0,
		IPv6:    ipv6Enabled(l.name),
	}
	addrs, err := addrList(link)
	if err != nil {
		return info, fmt.Errorf("hal: link %s: list addresses: %w", l.name, err)
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad); ok {
			info.Addrs = append(info.Addrs, p)
		}
	}
	if info.Offloads, err = OffloadState(l.name); err != nil {
		return info, err
	}
	return info, nil
}

func addrList(link netlink.Link) ([]netlink.Addr, error) {
	return netlink.AddrList(link, netlink.FAMILY_ALL)
}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func addrsString(addrs []netlink.Addr) string {
	s := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok {
			s = append(s, p.String())
		}
	}
	return "has address " + strings.Join(s, ", ")
}

func ipv6Sysctl(name string) string {
	return filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
}

// disableIPv6 writes net.ipv6.conf.NAME.disable_ipv6=1. /proc/sys/net
// shows the namespace of the thread that opens it. A kernel without IPv6
// has no such file and nothing to disable.
func disableIPv6(name string) error {
	p := ipv6Sysctl(name)
	if _, err := os.Stat("/proc/sys/net/ipv6"); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0); err != nil {
		return fmt.Errorf("hal: link %s: disable IPv6: %w", name, err)
	}
	return nil
}

func ipv6Enabled(name string) bool {
	b, err := os.ReadFile(ipv6Sysctl(name))
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

// WatchLinks reports state changes of the named interfaces (all when
// names is empty) until ctx is done, then closes the channel. The first
// event per interface is its state at subscription. It subscribes in the
// calling thread's network namespace.
func WatchLinks(ctx context.Context, names ...string) (<-chan LinkEvent, error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	errc := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("hal: subscribe to link updates: %w", err)
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(chan LinkEvent, 16)
	go func() {
		defer close(out)
		defer close(done)
		last := map[string]LinkEvent{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-errc:
				// The subscription is dead (socket error); the owner sees
				// the channel close and can resubscribe.
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				a := u.Link.Attrs()
				if len(want) > 0 && !want[a.Name] {
					continue
				}
				ev := LinkEvent{
					Name: a.Name, Index: int(u.Index),
					AdminUp: u.Flags&unix.IFF_UP != 0,
					OperUp:  u.Flags&unix.IFF_LOWER_UP != 0 && u.Flags&unix.IFF_UP != 0,
					Removed: u.Header.Type == unix.RTM_DELLINK,
				}
				if prev, seen := last[a.Name]; seen && prev == ev {
					continue
				}
				last[a.Name] = ev
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
