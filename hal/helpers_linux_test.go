package hal_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// testEtherType is the IEEE 802 "local experimental" ethertype, so test
// frames never look like anything the kernel answers; frames carry a
// magic and a sequence number so stray traffic (IPv6 router
// solicitations, MLD) is told apart.
const testEtherType = 0x88B5

var testMagic = [4]byte{'o', 't', 'g', 'w'}

// frame builds an untagged test frame of size bytes carrying seq.
func frame(size int, seq uint32) []byte {
	b := make([]byte, size)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})  // dst: locally administered
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x01}) // src
	binary.BigEndian.PutUint16(b[12:], testEtherType)
	copy(b[14:18], testMagic[:])
	binary.BigEndian.PutUint32(b[18:], seq)
	for i := 22; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

// testSeq returns the sequence number of an untagged test frame.
func testSeq(b []byte) (uint32, bool) {
	if len(b) < 22 || binary.BigEndian.Uint16(b[12:]) != testEtherType || [4]byte(b[14:18]) != testMagic {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[18:]), true
}

// pair is two namespaces joined by one veth: gw/"p0" — peer/"q0".
type pair struct {
	gw, peer *netns.NS
	p, q     hal.Port
}

func openPort(t testing.TB, ns *netns.NS, name string) hal.Port {
	t.Helper()
	return openPortOpts(t, ns, name, hal.PortOptions{})
}

func openPortOpts(t testing.TB, ns *netns.NS, name string, opts hal.PortOptions) hal.Port {
	t.Helper()
	var p hal.Port
	err := ns.Do(func() (err error) {
		p, err = hal.OpenPort(name, opts)
		return err
	})
	if err != nil {
		t.Fatalf("OpenPort(%s) in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newPair(t testing.TB) *pair {
	t.Helper()
	return newPairIO(t, hal.IODefault)
}

// newPairIO opens both ends with the I/O method mode (an explicit mode
// fails rather than falling back).
func newPairIO(t testing.TB, mode hal.IOMode) *pair {
	t.Helper()
	return newPairOpts(t, hal.PortOptions{IO: mode})
}

// newPairOpts opens both ends with opts.
func newPairOpts(t testing.TB, o hal.PortOptions) *pair {
	t.Helper()
	mode := o.IO
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "gw"), netns.New(t, "peer")
	netns.Veth(t, gw, "p0", peer, "q0")
	waitUp(t, gw, "p0")
	waitUp(t, peer, "q0")
	pr := &pair{gw: gw, peer: peer, p: openPortOpts(t, gw, "p0", o), q: openPortOpts(t, peer, "q0", o)}
	if mode != hal.IODefault {
		for _, p := range []hal.Port{pr.p, pr.q} {
			if got := hal.PortIO(p); got != mode {
				t.Fatalf("PortIO(%s) = %q, want %q", p.Name(), got, mode)
			}
		}
	}
	return pr
}

// waitUp waits (bounded) until dev's operational state is UP. The kernel
// brings a new veth's queue up from linkwatch, which may lag the
// "ip link set up" by up to a second on a busy machine; frames sent
// before that are dropped by the placeholder qdisc.
func waitUp(t testing.TB, ns *netns.NS, dev string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(ns.IP("-o", "link", "show", dev), "state UP") {
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not up after 3s", dev, ns.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ioModes are the Port implementations every port test runs against.
var ioModes = []hal.IOMode{hal.IORing, hal.IOMmsg, hal.IOXDP}

// forEachIO runs f as one subtest per I/O method.
func forEachIO(t *testing.T, f func(t *testing.T, mode hal.IOMode)) {
	t.Helper()
	for _, m := range ioModes {
		t.Run(string(m), func(t *testing.T) { f(t, m) })
	}
}

func bufs(n, size int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b
}

// collect reads test frames from p until want have arrived or the
// deadline passes, returning the sequence numbers seen (each frame's
// bytes are passed to check if not nil).
func collect(t testing.TB, p hal.Port, want int, d time.Duration, check func([]byte, hal.FrameMeta)) map[uint32]int {
	t.Helper()
	seen := map[uint32]int{}
	bs, sizes, meta := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch), make([]hal.FrameMeta, hal.MaxBatch)
	deadline := time.Now().Add(d)
	got := 0
	for got < want && time.Now().Before(deadline) {
		if err := p.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := p.ReadBatch(bs, sizes, meta)
		if errors.Is(err, hal.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBatch on %s: %v", p.Name(), err)
		}
		for i := 0; i < n; i++ {
			f := bs[i][:sizes[i]]
			if check != nil {
				check(f, meta[i])
			}
			if s, ok := testSeq(f); ok {
				seen[s]++
				got++
			}
		}
	}
	return seen
}
