package hal

import (
	"fmt"
	"net/netip"
)

// LinkOptions say how Prepare readies an interface as a bridge port. The
// zero value refuses ports that carry addresses and leaves the MTU alone.
type LinkOptions struct {
	// StripAddrs deletes IP addresses found on the port instead of
	// refusing it with ErrHasAddress.
	StripAddrs bool
	// MTU, when > 0, is set on the port.
	MTU int
}

// LinkInfo is a snapshot of an interface's state.
type LinkInfo struct {
	Name     string
	Index    int
	MTU      int
	AdminUp  bool // IFF_UP
	OperUp   bool // carrier and operational (IFF_LOWER_UP / RFC 2863 "up")
	Promisc  bool
	IPv6     bool // IPv6 enabled on the interface (disable_ipv6 == 0)
	Addrs    []netip.Prefix
	Offloads Offloads
}

// Offloads is the active state of the offloads that make the frames a
// socket sees differ from the frames on the wire.
type Offloads struct {
	GRO bool // rx-gro or rx-gro-hw: the stack merges received segments
	LRO bool // rx-lro: the NIC merges received segments
	TSO bool // tx-tcp*-segmentation, tx-udp-segmentation
	GSO bool // tx-generic-segmentation
}

// Any reports whether any of the offloads is on.
func (o Offloads) Any() bool { return o.GRO || o.LRO || o.TSO || o.GSO }

func (o Offloads) String() string {
	return fmt.Sprintf("gro=%v lro=%v tso=%v gso=%v", o.GRO, o.LRO, o.TSO, o.GSO)
}

// Link is one interface's control plane.
type Link interface {
	Name() string
	// Prepare readies the interface as a transparent bridge port: IPv6
	// off, no IP addresses (refused or stripped), GRO/LRO/TSO/GSO off,
	// promiscuous, up. It is idempotent.
	Prepare(opts LinkOptions) error
	// Info returns the interface's current state.
	Info() (LinkInfo, error)
}

// PreparePair prepares both bridge ports and checks that their MTUs are
// equal: a bridge between unequal MTUs silently drops the larger frames.
func PreparePair(north, south Link, opts LinkOptions) error {
	for _, l := range []Link{north, south} {
		if err := l.Prepare(opts); err != nil {
			return err
		}
	}
	ni, err := north.Info()
	if err != nil {
		return err
	}
	si, err := south.Info()
	if err != nil {
		return err
	}
	if ni.MTU != si.MTU {
		return fmt.Errorf("hal: %s mtu %d, %s mtu %d: %w", ni.Name, ni.MTU, si.Name, si.MTU, ErrMTUMismatch)
	}
	return nil
}

// LinkEvent reports a change of an interface's state.
type LinkEvent struct {
	Name    string
	Index   int
	AdminUp bool
	OperUp  bool
	Removed bool // the interface disappeared
}
