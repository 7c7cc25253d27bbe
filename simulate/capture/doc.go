// Package capture reads packet captures for the offline tools (dissect,
// replay, learn, the truth tests): pcap and pcapng, the format detected from
// the magic number because file extensions lie, with the link types found
// in ICS captures (Ethernet with 802.1Q, BSD loopback, Linux cooked capture,
// raw IP), IPv4 and IPv6.
//
// ReadFrames yields raw frames; ReadStreams also follows TCP connections and
// yields each direction's bytes in order, the way a receiving host would
// see them (duplicates and retransmissions trimmed, out-of-order segments
// held until the hole fills, holes that never fill reported as gaps). It is
// a passive reassembler for analysis; the inline gateway has its own
// normaliser that also judges overlaps.
package capture
