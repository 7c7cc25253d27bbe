package replay

import "net/netip"

type netipAddr = netip.Addr

func mustParseAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
