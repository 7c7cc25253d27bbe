package events

import (
	"net/netip"
	"testing"
)

// The published baseline of the Community ID v1 spec, as Zeek's and the
// reference implementations test it (corelight/community-id-spec).
func TestCommunityIDVectors(t *testing.T) {
	v6a, v6b := netip.MustParseAddr("fe80:1:203:405:607:809:a0b:c0d"), netip.MustParseAddr("fe80:1011:1213:1415:1617:1819:1a1b:1c1d")
	a, b := netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("5.6.7.8")
	tests := []struct {
		name string
		t    FlowTuple
		seed uint16
		want string
	}{
		{"tcp", FlowTuple{a, b, ProtoTCP, 1122, 3344}, 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="},
		{"tcp reversed", FlowTuple{b, a, ProtoTCP, 3344, 1122}, 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="},
		{"udp", FlowTuple{a, b, ProtoUDP, 1122, 3344}, 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="},
		{"udp reversed", FlowTuple{b, a, ProtoUDP, 3344, 1122}, 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="},
		{"icmp echo", FlowTuple{a, b, ProtoICMP, 8, 0}, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="},
		{"icmp echo reply", FlowTuple{b, a, ProtoICMP, 0, 0}, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="},
		{"icmp6 echo", FlowTuple{v6a, v6b, ProtoICMPv6, 128, 0}, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="},
		{"icmp6 echo reply", FlowTuple{v6b, v6a, ProtoICMPv6, 129, 0}, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="},
		{"rsvp (no ports)", FlowTuple{a, b, 46, 0, 0}, 0, "1:ikv3kmf89luf73WPz1jOs49S768="},
		{"tcp seed 1", FlowTuple{a, b, ProtoTCP, 1122, 3344}, 1, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="},
		{"udp seed 1", FlowTuple{a, b, ProtoUDP, 1122, 3344}, 1, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="},
		{"icmp seed 1", FlowTuple{a, b, ProtoICMP, 8, 0}, 1, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="},
		{"icmp6 seed 1", FlowTuple{v6a, v6b, ProtoICMPv6, 128, 0}, 1, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="},
		{"mixed families", FlowTuple{a, v6b, ProtoTCP, 1, 2}, 0, ""},
		{"no addresses", FlowTuple{Proto: ProtoTCP}, 0, ""},
	}
	for _, tc := range tests {
		if got := CommunityID(tc.t, tc.seed); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFlowIDBothDirections(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.130"), netip.MustParseAddr("192.0.2.10")
	fwd := FlowID(FlowTuple{a, b, ProtoTCP, 40001, 502})
	rev := FlowID(FlowTuple{b, a, ProtoTCP, 502, 40001})
	other := FlowID(FlowTuple{a, b, ProtoTCP, 40002, 502})
	if fwd == 0 || fwd != rev || fwd == other || fwd >= 1<<53 {
		t.Errorf("flow ids: forward %d, reverse %d, other connection %d", fwd, rev, other)
	}
}
