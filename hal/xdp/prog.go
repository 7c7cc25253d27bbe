package xdp

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
)

// Map names the program refers to (asm references resolved at load).
const (
	flowsMapName = "otgw_flows"
	statsMapName = "otgw_stats"
	leaseMapName = "otgw_lease"
	xskMapName   = "otgw_xsks"
)

// XDP actions (include/uapi/linux/bpf.h, enum xdp_action).
const (
	xdpPass     = 2
	xdpRedirect = 4
)

// struct xdp_md offsets (include/uapi/linux/bpf.h).
const (
	mdData           = 0
	mdDataEnd        = 4
	mdIngressIfindex = 12
	mdRxQueueIndex   = 16
)

// tcx verdicts (include/uapi/linux/bpf.h, enum tcx_action_base):
// TCX_NEXT hands the frame to the next tcx program, or on to the stack
// when there is none. bpf_redirect returns TCX_REDIRECT
// (TC_ACT_REDIRECT, 7) itself.
const tcxNext = -1

// struct __sk_buff offsets (include/uapi/linux/bpf.h): the tc and the
// socket filter programs' context.
const (
	skbLen         = 0
	skbVlanPresent = 20
	skbIfindex     = 40
)

// hdrMax is the most frame bytes the parser reads: Ethernet (14), IPv4
// with options (60), TCP up to its flags (20). IPv6 needs 14+40+20.
// hdrFirst is what the sk_buff flavours copy first: enough for IPv4
// without options.
const (
	hdrMax   = 14 + 60 + 20
	hdrFirst = 14 + 20 + 20
)

// Stack layout, relative to the frame pointer R10.
const (
	stKey  = -40  // the frame's key (keySize bytes)
	stRev  = -80  // the reverse key, built on FIN/RST/SYN
	stStat = -84  // u32 index into the stats array
	stBuf  = -184 // socket filter: 96 bytes for the frame's first hdrMax
	// stFrame is where the frame starts in stBuf: 2 bytes in, so that the
	// IP header is 4-byte aligned (the verifier enforces aligned stack
	// accesses).
	stFrame = stBuf + 2
)

// flavour is the kind of program the flow decision is built into. All
// three share the parser, the flow lookup and the checks (ingress port,
// TCP flags, closed, lease), so a frame gets the same verdict from each.
type flavour uint8

const (
	// forXDP: the XDP program (struct xdp_md). A bypassed frame is
	// redirected (bpf_redirect: XDP_REDIRECT); any other passes
	// (XDP_PASS) or, with xsk, goes to the AF_XDP socket of its queue.
	forXDP flavour = iota
	// forTC: the tcx ingress program (BPF_PROG_TYPE_SCHED_CLS, struct
	// __sk_buff): it reads the headers with bpf_skb_load_bytes and
	// never writes to the sk_buff (no copy of it, no headroom needed). A
	// bypassed frame is redirected (bpf_redirect: TC_ACT_REDIRECT); any
	// other goes on (TCX_NEXT).
	forTC
	// forFilter: the socket filter for the gateway's packet sockets
	// (BPF_PROG_TYPE_SOCKET_FILTER, struct __sk_buff, headers read as
	// forTC reads them: the same instructions).
	// AF_PACKET taps run before tc ingress, so without it user space
	// would get a copy of every frame the tc program redirects. It takes
	// forTC's decision without its effects (no counters, no closed mark,
	// no last-seen): 0 (not delivered) for a frame forTC redirects, the
	// whole frame otherwise.
	forFilter
)

func (f flavour) String() string {
	switch f {
	case forXDP:
		return "xdp"
	case forTC:
		return "tc"
	case forFilter:
		return "filter"
	}
	return fmt.Sprintf("flavour(%d)", uint8(f))
}

// tcpCloseFlags are the TCP flags that hand a bypassed flow back to user
// space: FIN and RST end it, SYN starts a new connection on the same
// 5-tuple (RFC 9293 3.1: FIN 0x01, SYN 0x02, RST 0x04).
const tcpCloseFlags = 0x07

// build returns the program of flavour f. It is written with cilium/ebpf's asm
// package rather than compiled from C so that the bytecode is built by
// the Go toolchain for every GOARCH; the kernel's verifier and JIT do the
// rest. With atomic, counters are updated with BPF atomic adds (JITed on
// x86-64 and arm64); without, with plain load-add-store, which the 32-bit
// ARM JIT supports and which loses an increment only when two CPUs handle
// frames of the same direction of the same flow at the same instant (one
// RX queue per flow under RSS makes that rare).
//
// Register use: R6 ctx, R7 map value, R8 frame bytes, R9 IP protocol,
// then the TCP close flags, then the time; R2 the packet cursor, R3
// data_end (for forTC and forFilter both point into the stack copy,
// and R7 and R9 serve the copy until the parser is done).
//
// With xsk (forXDP only), a frame the program does not redirect to the
// other port goes to the AF_XDP socket of its receive queue in the xsk
// map (the gateway's --io xdp port), or to the stack where none is
// registered.
func build(f flavour, atomic, xsk bool) asm.Instructions {
	var in asm.Instructions
	emit := func(ins ...asm.Instruction) { in = append(in, ins...) }

	stackKey := func(off int16) int16 { return stKey + off }
	stackRev := func(off int16) int16 { return stRev + off }

	// The time for the lease and last seen. tc and the socket filter
	// (Linux 6.6 for tcx, so the helper is there: 5.11) use the coarse
	// CLOCK_MONOTONIC, which reads no clock source: under a hypervisor
	// (kvm-clock) a bpf_ktime_get_ns was about a third of the filter's
	// cost per frame (perf, TestFastPathBench). It lags by up to a tick
	// (4 ms at HZ=250): the lease lasts that much longer, last seen looks
	// that much older. XDP keeps bpf_ktime_get_ns (Linux 5.9 and up).
	clock := asm.FnKtimeGetNs
	if f != forXDP {
		clock = asm.FnKtimeGetCoarseNs
	}

	// short is where the parser goes when the frame ends before a header
	// does; for the sk_buff flavours, the stack copy of it.
	short := "unparsed"
	if f != forXDP {
		short = "short"
	}
	emit(asm.Mov.Reg(asm.R6, asm.R1))
	ifindexOff := int16(skbIfindex)
	if f == forXDP {
		ifindexOff = mdIngressIfindex
		emit(
			asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
		)
	} else {
		// tc and socket filter: a tag the NIC stripped (rx-vlan-offload)
		// is not in the key: such frames pass, as tagged ones do. The
		// parser reads a copy of the frame's head on the stack
		// (bpf_skb_load_bytes; a socket filter has no direct packet
		// access, and for tc it spares a bpf_skb_pull_data, which would
		// write to the sk_buff and copy it when it is a clone or its
		// headers are not linear, as AF_PACKET senders' are not): first
		// min(len, hdrFirst) bytes, which hold untagged IPv4 without
		// options with TCP or UDP; where a header goes further the
		// parser jumps to "short", which copies min(len, hdrMax) bytes
		// and parses again, once (R7: copied all already). R9 holds the
		// length copied until the parser sets it.
		emit(
			asm.LoadMem(asm.R1, asm.R6, skbVlanPresent, asm.Word),
			asm.JNE.Imm(asm.R1, 0, "unparsed"),
			asm.Mov.Imm(asm.R1, 0),
		)
		for off := int16(0); off < 96; off += 8 {
			emit(asm.StoreMem(asm.R10, stBuf+off, asm.R1, asm.DWord))
		}
		emit(
			asm.Mov.Imm(asm.R7, 0),
			asm.LoadMem(asm.R9, asm.R6, skbLen, asm.Word),
			asm.JLT.Imm(asm.R9, 14, "unparsed"),
			asm.JLE.Imm(asm.R9, hdrFirst, "copy"),
			asm.Mov.Imm(asm.R9, hdrFirst),
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("copy"),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, stFrame),
			asm.Mov.Reg(asm.R4, asm.R9),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "unparsed"),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, stFrame),
			asm.Mov.Reg(asm.R3, asm.R2),
			asm.Add.Reg(asm.R3, asm.R9),
		)
	}

	// Ethernet.
	emit(
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("eth"),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, short),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.StoreImm(asm.R10, stackKey(2), 0, asm.Half),
		asm.JEq.Imm(asm.R5, 0x0800, "ipv4"),
		asm.JEq.Imm(asm.R5, 0x86dd, "ipv6"),
		asm.Ja.Label("unparsed"),
	)

	// IPv4 (RFC 791): no fragments; options skipped through IHL.
	emit(
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ipv4"),
		asm.Add.Imm(asm.R4, 14+20),
		asm.JGT.Reg(asm.R4, asm.R3, short),
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R5),
		asm.RSh.Imm(asm.R1, 4),
		asm.JNE.Imm(asm.R1, 4, "unparsed"),
		asm.And.Imm(asm.R5, 0x0f),
		asm.LSh.Imm(asm.R5, 2),
		asm.JLT.Imm(asm.R5, 20, "unparsed"),
		asm.LoadMem(asm.R1, asm.R2, 14+6, asm.Half), // flags + fragment offset
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.And.Imm(asm.R1, 0x3fff), // MF or a non-zero offset
		asm.JNE.Imm(asm.R1, 0, "unparsed"),
		asm.LoadMem(asm.R8, asm.R2, 14+2, asm.Half), // total length
		asm.HostTo(asm.BE, asm.R8, asm.Half),
		asm.Add.Imm(asm.R8, 14),
		asm.LoadMem(asm.R9, asm.R2, 14+9, asm.Byte),
		asm.StoreImm(asm.R10, stackKey(keyFamily), 4, asm.Byte),
		asm.StoreMem(asm.R10, stackKey(keyProto), asm.R9, asm.Byte),
	)
	for _, a := range []struct{ pkt, st int16 }{{14 + 12, keySrc}, {14 + 16, keyDst}} {
		emit(
			asm.StoreImm(asm.R10, stackKey(a.st), 0, asm.Word),
			asm.StoreImm(asm.R10, stackKey(a.st+4), 0, asm.Word),
			asm.StoreImm(asm.R10, stackKey(a.st+8), 0, asm.Half),
			asm.StoreImm(asm.R10, stackKey(a.st+10), 0xffff, asm.Half),
			asm.LoadMem(asm.R1, asm.R2, a.pkt, asm.Word),
			asm.StoreMem(asm.R10, stackKey(a.st+12), asm.R1, asm.Word),
		)
	}
	emit(
		asm.Add.Reg(asm.R2, asm.R5),
		asm.Add.Imm(asm.R2, 14),
		asm.Ja.Label("l4"),
	)

	// IPv6 (RFC 8200): the next header must be TCP or UDP; extension
	// headers (including the fragment header) go to user space.
	emit(
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ipv6"),
		asm.Add.Imm(asm.R4, 14+40),
		asm.JGT.Reg(asm.R4, asm.R3, short),
		asm.LoadMem(asm.R1, asm.R2, 14, asm.Byte),
		asm.RSh.Imm(asm.R1, 4),
		asm.JNE.Imm(asm.R1, 6, "unparsed"),
		asm.LoadMem(asm.R8, asm.R2, 14+4, asm.Half), // payload length
		asm.HostTo(asm.BE, asm.R8, asm.Half),
		asm.Add.Imm(asm.R8, 14+40),
		asm.LoadMem(asm.R9, asm.R2, 14+6, asm.Byte),
		asm.StoreImm(asm.R10, stackKey(keyFamily), 6, asm.Byte),
		asm.StoreMem(asm.R10, stackKey(keyProto), asm.R9, asm.Byte),
	)
	for i := int16(0); i < 16; i += 4 {
		emit(
			asm.LoadMem(asm.R1, asm.R2, 14+8+i, asm.Word),
			asm.StoreMem(asm.R10, stackKey(keySrc+i), asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R2, 14+24+i, asm.Word),
			asm.StoreMem(asm.R10, stackKey(keyDst+i), asm.R1, asm.Word),
		)
	}
	emit(asm.Add.Imm(asm.R2, 14+40))

	// TCP (RFC 9293) or UDP (RFC 768): ports, and TCP's flags.
	emit(
		asm.JEq.Imm(asm.R9, int32(ProtoTCP), "tcp").WithSymbol("l4"),
		asm.JEq.Imm(asm.R9, int32(ProtoUDP), "udp"),
		asm.Ja.Label("unparsed"),

		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("tcp"),
		asm.Add.Imm(asm.R4, 20),
		asm.JGT.Reg(asm.R4, asm.R3, short),
		asm.LoadMem(asm.R9, asm.R2, 13, asm.Byte),
		asm.And.Imm(asm.R9, tcpCloseFlags),
		asm.Ja.Label("ports"),

		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("udp"),
		asm.Add.Imm(asm.R4, 8),
		asm.JGT.Reg(asm.R4, asm.R3, short),
		asm.Mov.Imm(asm.R9, 0),

		asm.LoadMem(asm.R1, asm.R2, 0, asm.Half).WithSymbol("ports"),
		asm.StoreMem(asm.R10, stackKey(keySport), asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R2, 2, asm.Half),
		asm.StoreMem(asm.R10, stackKey(keyDport), asm.R1, asm.Half),
	)

	// Look the flow up; frames of unknown flows, of closed flows and of
	// flows on the wrong port pass.
	emit(
		asm.LoadMapPtr(asm.R1, 0).WithReference(flowsMapName),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "nomatch"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R7, valIngress, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, ifindexOff, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "wrongport"),
		asm.JNE.Imm(asm.R9, 0, "closing"),
		asm.LoadMem(asm.R1, asm.R7, valClosed, asm.Byte),
		asm.JNE.Imm(asm.R1, 0, "closed"),
		// The lease: redirect only while the owner keeps renewing the
		// deadline in the lease array (now > deadline: pass).
		clock.Call(),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.StoreImm(asm.R10, stStat, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(leaseMapName),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stStat),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "lapsed"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JGT.Reg(asm.R9, asm.R1, "lapsed"),
	)
	if f == forFilter {
		// The tc program redirects this frame: not for the socket. The
		// rest of the frames are delivered whole (the largest snap
		// length); the closing frame is marked by the tc program.
		emit(
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		)
		in = append(in, copyAll()...)
		for _, label := range []string{"closing", "closed", "wrongport", "nomatch", "unparsed", "lapsed"} {
			emit(asm.Mov.Imm(asm.R0, -1).WithSymbol(label), asm.Return())
		}
		return in
	}
	emit(asm.StoreMem(asm.R7, valLastSeen, asm.R9, asm.DWord))
	if atomic {
		emit(
			asm.Mov.Imm(asm.R1, 1),
			asm.AddAtomic.Mem(asm.R7, asm.R1, asm.DWord, valPackets),
			asm.AddAtomic.Mem(asm.R7, asm.R8, asm.DWord, valBytes),
		)
	} else {
		emit(
			asm.LoadMem(asm.R1, asm.R7, valPackets, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R7, valPackets, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.R7, valBytes, asm.DWord),
			asm.Add.Reg(asm.R1, asm.R8),
			asm.StoreMem(asm.R7, valBytes, asm.R1, asm.DWord),
		)
	}
	in = append(in, countStat(statRedirected, "")...)
	emit(
		asm.LoadMem(asm.R1, asm.R7, valEgress, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(), // XDP_REDIRECT or TC_ACT_REDIRECT; the transmit happens after return
		asm.Return(),
	)

	// FIN, RST or SYN: mark this direction and the reverse closed, pass.
	emit(
		asm.StoreImm(asm.R7, valClosed, 1, asm.Byte).WithSymbol("closing"),
		asm.LoadMem(asm.R1, asm.R10, stackKey(0), asm.Word), // family, proto, zero
		asm.StoreMem(asm.R10, stackRev(0), asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R10, stackKey(keySport), asm.Half),
		asm.StoreMem(asm.R10, stackRev(keyDport), asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R10, stackKey(keyDport), asm.Half),
		asm.StoreMem(asm.R10, stackRev(keySport), asm.R1, asm.Half),
	)
	for i := int16(0); i < 16; i += 4 {
		emit(
			asm.LoadMem(asm.R1, asm.R10, stackKey(keySrc+i), asm.Word),
			asm.StoreMem(asm.R10, stackRev(keyDst+i), asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R10, stackKey(keyDst+i), asm.Word),
			asm.StoreMem(asm.R10, stackRev(keySrc+i), asm.R1, asm.Word),
		)
	}
	emit(
		asm.LoadMapPtr(asm.R1, 0).WithReference(flowsMapName),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stRev),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "closing_pass"),
		asm.StoreImm(asm.R0, valClosed, 1, asm.Byte),
	)
	in = append(in, countStat(statClosing, "closing_pass")...)
	in = append(in, pass(f, xsk)...)

	if f == forTC {
		in = append(in, copyAll()...)
	}
	for _, s := range []struct {
		label string
		stat  int
	}{{"closed", statClosed}, {"wrongport", statWrongPort}, {"nomatch", statNoMatch}, {"unparsed", statUnparsed}, {"lapsed", statLapsed}} {
		in = append(in, countStat(s.stat, s.label)...)
		in = append(in, pass(f, xsk)...)
	}
	return in
}

// copyAll is the sk_buff flavours' "short": the first copy of the frame
// ended before a header did; copy min(len, hdrMax) bytes and parse again,
// unless that was done already (R7), and then the frame is unparsed.
func copyAll() asm.Instructions {
	return asm.Instructions{
		asm.JNE.Imm(asm.R7, 0, "unparsed").WithSymbol("short"),
		asm.Mov.Imm(asm.R7, 1),
		asm.LoadMem(asm.R9, asm.R6, skbLen, asm.Word),
		asm.JLT.Imm(asm.R9, 14, "unparsed"), // checked before; for the verifier
		asm.JLE.Imm(asm.R9, hdrMax, "copy"),
		asm.Mov.Imm(asm.R9, hdrMax),
		asm.Ja.Label("copy"),
	}
}

// countStat increments the per-CPU stats slot idx. Per-CPU values need no
// atomics: XDP and tc programs run with migration disabled. The first instruction
// carries label when non-empty.
func countStat(idx int, label string) asm.Instructions {
	skip := fmt.Sprintf("stat_done_%d_%s", idx, label)
	first := asm.StoreImm(asm.R10, stStat, int64(idx), asm.Word)
	if label != "" {
		first = first.WithSymbol(label)
	}
	return asm.Instructions{
		first,
		asm.LoadMapPtr(asm.R1, 0).WithReference(statsMapName),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stStat),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(skip), // a jump target needs an instruction
	}
}

// pass ends the program for a frame the bypass does not forward: for tc
// TCX_NEXT; for XDP XDP_PASS, or with xsk bpf_redirect_map to the socket
// in the xsk map at the frame's receive queue, with XDP_PASS as the
// fallback action where there is none (the low bits of flags, Linux
// 5.3). R6 holds the context.
func pass(f flavour, xsk bool) asm.Instructions {
	if f == forTC {
		return asm.Instructions{asm.Mov.Imm(asm.R0, tcxNext), asm.Return()}
	}
	if !xsk {
		return asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}
	}
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdRxQueueIndex, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(xskMapName),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
}
