// Package capture reads packet captures for the offline tools (dissect,
// replay, learn, the truth tests): pcap and pcapng, the format detected from
// the magic number because file extensions lie, with the link types found
// in ICS captures (Ethernet with 802.1Q, BSD loopback, Linux cooked capture,
// raw IP), IPv4 and IPv6.
//
// The reader is our own (stdlib only), written for hostile files: every
// length is checked as a 32-bit unsigned number against MaxFrameLen or
// MaxBlockLen before it sizes anything, so no file makes it allocate more
// than its 64 KiB read buffer and one frame, on 32-bit targets too. Each
// pcapng frame carries its own interface's link type. Damage is read
// around as tshark does: a truncated file is read up to its last whole
// record, a damaged pcapng block is skipped and reading resumes at the
// next whole block; Summary lists each place with its byte offset and the
// bytes lost (Read), or ReadFrames returns a *DamageError after the frames.
//
// ReadFrames yields raw frames; ReadStreams also follows TCP connections and
// yields each direction's bytes in order, the way a receiving host would
// see them (duplicates and retransmissions trimmed, out-of-order segments
// held until the hole fills, holes that never fill reported as gaps). It is
// a passive reassembler for analysis; the inline gateway has its own
// normaliser that also judges overlaps.
package capture
