// Package packet decodes the link, network and transport headers of one
// frame into a caller-owned Packet, allocating nothing: Ethernet II with up
// to two 802.1Q/802.1ad tags, BSD loopback (DLT_NULL), Linux cooked capture
// (SLL and SLL2), raw IP; IPv4 (RFC 791) with fragment detection; IPv6
// (RFC 8200) with its extension-header chain; TCP (RFC 9293), UDP (RFC 768),
// ICMP and ICMPv6.
//
// The datapath (gateway) and the offline tools (simulate/capture, replay,
// dissect) share it, so a frame is read the same way everywhere. Decode
// never panics on input; a frame it cannot read is reported with a sentinel
// error and whatever layers were read before the problem.
package packet
