// Package xdp is the gateway's fast path: an XDP program on both ports
// that forwards the frames of flows the engine has handed over straight
// to the other port, inside the kernel, while every other frame goes on to
// the gateway's AF_PACKET sockets as before (Suricata's capture bypass;
// DESIGN.md, "Fast path").
//
// It owns:
//
//   - the program (prog.go), written with github.com/cilium/ebpf's asm
//     package, so the bytecode is produced by the Go toolchain (pure Go,
//     CGO_ENABLED=0) and is the same on amd64, arm64 and armv7 (but for
//     the counter variant, below); the
//     kernel's verifier checks it and the JIT compiles it at load. It
//     parses untagged Ethernet II, IPv4 (RFC 791; options skipped, no
//     fragments) and IPv6 (RFC 8200; no extension headers), TCP (RFC
//     9293) and UDP (RFC 768), looks the 5-tuple up in a hash map and
//     either redirects the frame (bpf_redirect to the entry's egress
//     ifindex, XDP_REDIRECT) or passes it (XDP_PASS). Anything it cannot
//     parse plainly passes: VLAN tags, fragments, extension headers,
//     truncated headers, non-IP.
//   - the flow map: BPF_MAP_TYPE_HASH with one entry per direction (key:
//     family, protocol, ports, addresses; value: egress and ingress
//     ifindex, closed and direction flags, packets, bytes, last seen from
//     bpf_ktime_get_ns). Directional entries keep the program simple (no
//     canonical ordering of addresses); Add and Remove always write both.
//     A frame is redirected only when it arrives on the entry's ingress
//     port. A TCP frame with FIN, RST or SYN on a bypassed flow is not
//     redirected: it passes to user space and both directions are marked
//     closed, so every later frame of the flow passes too and the engine
//     sees the close (or the new connection). Expire removes closed and
//     idle flows and reports their final counters.
//   - the attachment: one BPF link per port (BPF_LINK_CREATE with
//     BPF_XDP, Linux 5.9), native (driver) mode first and generic (skb)
//     mode as the fallback (generic at once on veth ports, see below). The links are held only by this process's
//     file descriptors and are never pinned in bpffs: when the process
//     exits or is killed the kernel detaches the program and nothing
//     forwards, so the gateway stays fail-closed. The detach takes the
//     rtnl lock and can wait behind other netlink users, so the program
//     also holds a lease: it redirects only while the owner keeps
//     renewing a deadline in a one-entry array (Config.Lease, 80 ms by
//     default, renewed every 10 ms); a dead or frozen owner stops the
//     fast path within the lease (measured by TestFailClosedOnSIGKILL).
//
// ModeTC (otgw run --xdp auto or on, where native mode is not possible
// and the ports are packet sockets) attaches the same
// decision built as a tc program instead, at tcx ingress (BPF_LINK_CREATE
// with BPF_TCX_INGRESS, Linux 6.6; like the XDP links held only by this
// process's file descriptors, so fail-closed the same way). Generic XDP
// on an sk_buff needs XDP_PACKET_HEADROOM and a linear buffer, so the
// kernel copies (pskb_expand_head, linearises) every TCP segment; the tc
// program copies only the headers to its stack (bpf_skb_load_bytes),
// never writes to the sk_buff, and redirects it with bpf_redirect
// (TC_ACT_REDIRECT). AF_PACKET taps see a frame before tc ingress does
// (net/core/dev.c, __netif_receive_skb_core), so the gateway's packet
// sockets must carry FastPath.SocketFilter, the same decision built as a
// socket filter, which keeps from them the frames the tc program
// redirects. Both programs read the headers with the same instructions
// (prog.go, build), and frames with a VLAN tag the NIC stripped (skb
// vlan_present) pass in both. What that costs and gains on veth:
// BENCHMARKS.md, "The tc bypass".
//
// With Config.XSK (the gateway's --io xdp), what the program does not
// redirect goes to the AF_XDP socket registered for the frame's receive
// queue (bpf_redirect_map on a per-port BPF_MAP_TYPE_XSKMAP, with XDP_PASS
// as the fallback action where no socket is registered; FastPath is a
// hal.XSKMap): one XDP program per port serves both the bypass and the
// inspected path. Each port then gets its own copy of the program, bound
// to its own XSKMAP. Documentation/networking/af_xdp.rst.
//
// Kernel references: Documentation/bpf/map_hash.rst and map_array.rst
// (the flow hash map; the per-CPU stats array and the lease array),
// Documentation/bpf/redirect.rst (bpf_redirect, XDP_REDIRECT),
// include/uapi/linux/bpf.h (struct xdp_md, enum xdp_action, the
// bpf_map_lookup_elem and bpf_ktime_get_ns helpers, BPF_LINK_CREATE),
// Documentation/bpf/standardization/instruction-set.rst (the bytecode,
// including the atomic add), Documentation/bpf/bpf_prog_run.rst
// (BPF_PROG_RUN, which the tests use to run the program on crafted
// frames) and Documentation/bpf/verifier.rst.
//
// Counters: the flow counters are updated with BPF atomic adds. The
// 32-bit ARM JIT does not implement atomics, so on GOARCH=arm, and
// wherever the kernel refuses the atomic program, New loads a variant
// with plain load-add-store, which can lose an increment only when two
// CPUs handle the same direction of the same flow at once (RSS keeps a
// flow on one queue). The program's own counters (Stats) are in a
// per-CPU array and need no atomics.
//
// Limits the caller must respect:
//
//   - Hand over only flows whose conduit needs no payload inspection, after
//     the engine allowed the handshake (the package does not judge), and
//     for TCP only once the handshake is complete (the client's ACK): a
//     SYN, or a retransmitted SYN-ACK, on a bypassed flow hands it back.
//   - Frames of a bypassed flow still reach user space: the FIN, RST or
//     SYN that closes it and everything after, frames on the wrong port,
//     and all of them while the lease has lapsed. The engine forwards
//     them as it would any frame of an allowed flow.
//   - The key has no VLAN id: do not bypass on ports that carry 802.1Q
//     traffic. Tagged frames that the NIC leaves tagged pass to user
//     space, but a NIC with rx-vlan-offload on strips the tag before XDP.
//   - In native mode frames must carry complete checksums, as on a wire.
//     Between veths, a local sender's CHECKSUM_PARTIAL state does not
//     survive a native redirect and the receiver drops the frame (0 of 10
//     datagrams arrived in TestChecksumPartialPeers); generic mode keeps
//     the sk_buff and its state (10 of 10). The sim board turns the
//     peers' transmit checksumming off or uses ModeGeneric.
//   - A native-mode redirect to a veth needs NAPI on the veth's peer
//     (GRO on, or an XDP program attached there), else the kernel drops
//     the redirected frames silently (drivers/net/veth.c, veth_xdp_xmit;
//     0 of 10 delivered in TestAutoModeOnVeth). ModeAuto therefore takes
//     generic mode on veth ports. Physical NICs with ndo_xdp_xmit are not
//     affected; generic mode works on any device.
//   - bpf(2) needs CAP_BPF and CAP_NET_ADMIN (root here). qemu-user has
//     no bpf(2): New returns ErrUnavailable there, as on kernels before
//     5.9, and the caller forwards everything in user space.
//   - Packet loads are not aligned to 4 bytes after the 14-byte Ethernet
//     header; that is fine on every architecture with efficient unaligned
//     access (x86-64, arm64, ARMv7), where the verifier does not enforce
//     strict alignment.
package xdp
