package events

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
)

// IANA protocol numbers the flow identifiers know about.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// FlowTuple is what Community ID v1 hashes: the endpoints and the IP
// protocol. For ICMP and ICMPv6, SrcPort is the type and DstPort the code.
type FlowTuple struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// icmpCounterpart maps ICMP request/response types to each other (Community
// ID v1 spec, "ICMP"); a type without one makes a one-way flow.
var icmpCounterpart = map[uint8]uint8{
	8: 0, 0: 8, // echo
	13: 14, 14: 13, // timestamp
	15: 16, 16: 15, // information
	10: 9, 9: 10, // router solicitation / advertisement
	17: 18, 18: 17, // address mask
}

var icmp6Counterpart = map[uint8]uint8{
	128: 129, 129: 128, // echo
	133: 134, 134: 133, // router solicitation / advertisement
	135: 136, 136: 135, // neighbor solicitation / advertisement
	130: 131, 131: 130, // multicast listener query / report
	144: 145, 145: 144, // home agent address discovery
	146: 147, 147: 146, // mobile prefix solicitation / advertisement
}

// hasPorts reports whether the Community ID of proto includes ports.
func hasPorts(proto uint8) bool {
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP, ProtoICMPv6:
		return true
	}
	return false
}

// digest returns the SHA-1 of the Community ID v1 input of t (the ordered
// tuple, seed first), or false when the addresses are not of one family.
func (t FlowTuple) digest(seed uint16) ([sha1.Size]byte, bool) {
	if !t.Src.IsValid() || !t.Dst.IsValid() || t.Src.Is4() != t.Dst.Is4() {
		return [sha1.Size]byte{}, false
	}
	src, dst := t.Src.Unmap(), t.Dst.Unmap()
	sp, dp := t.SrcPort, t.DstPort
	oneWay := false
	switch t.Proto {
	case ProtoICMP, ProtoICMPv6:
		m := icmpCounterpart
		if t.Proto == ProtoICMPv6 {
			m = icmp6Counterpart
		}
		if c, ok := m[uint8(sp)]; ok {
			dp = uint16(c)
		} else {
			oneWay = true
		}
	}
	if !oneWay {
		if c := src.Compare(dst); c > 0 || (c == 0 && sp > dp) {
			src, dst, sp, dp = dst, src, dp, sp
		}
	}
	buf := make([]byte, 0, 2+16+16+2+4)
	buf = binary.BigEndian.AppendUint16(buf, seed)
	buf = append(buf, src.AsSlice()...)
	buf = append(buf, dst.AsSlice()...)
	buf = append(buf, t.Proto, 0)
	if hasPorts(t.Proto) {
		buf = binary.BigEndian.AppendUint16(buf, sp)
		buf = binary.BigEndian.AppendUint16(buf, dp)
	}
	return sha1.Sum(buf), true
}

// CommunityID returns the Community ID v1 of t with the given seed
// (https://github.com/corelight/community-id-spec): "1:" and the base64
// SHA-1 of seed, the endpoints in canonical order, protocol, a zero byte
// and the ports. It is the same for both directions of a flow (and for an
// ICMP request and its reply), so it joins our events with Zeek's,
// Suricata's and Arkime's records of the same traffic. "" when the
// addresses are missing or of different families.
func CommunityID(t FlowTuple, seed uint16) string {
	d, ok := t.digest(seed)
	if !ok {
		return ""
	}
	return communityID(d)
}

func communityID(d [sha1.Size]byte) string { return "1:" + base64.StdEncoding.EncodeToString(d[:]) }

// flowIDs returns FlowID(t) and CommunityID(t, 0) from one hash.
func flowIDs(t FlowTuple) (uint64, string) {
	d, ok := t.digest(0)
	if !ok {
		return 0, ""
	}
	return flowID(d), communityID(d)
}

func flowID(d [sha1.Size]byte) uint64 {
	id := binary.BigEndian.Uint64(d[:8]) & (1<<53 - 1)
	if id == 0 {
		id = 1
	}
	return id
}

// FlowID returns the event flow_id of t: the first 53 bits of its
// Community ID hash (seed 0), so that JSON consumers using doubles keep
// it exact. It depends only on the flow's endpoints and protocol, so live
// events and a replay of a capture of the same traffic carry the same
// flow_id; successive connections reusing the same ports share it (the
// timestamp tells them apart). 0 when CommunityID is "".
func FlowID(t FlowTuple) uint64 {
	d, ok := t.digest(0)
	if !ok {
		return 0
	}
	return flowID(d)
}
