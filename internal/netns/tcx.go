package netns

import (
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TCXPrograms returns how many BPF programs are attached at tcx ingress
// of each gateway port (North, South): the tc flow bypass's, or what a
// crashed gateway left behind.
func (l *Line) TCXPrograms(t testing.TB) (n [2]int) {
	t.Helper()
	for i, port := range []string{l.North, l.South} {
		err := l.Gateway.Do(func() error {
			ifi, err := net.InterfaceByName(port)
			if err != nil {
				return err
			}
			r, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return err
			}
			n[i] = len(r.Programs)
			return nil
		})
		if err != nil {
			t.Fatalf("query tcx programs on %s: %v", port, err)
		}
	}
	return n
}
