package xdp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
)

// openPort opens a hal port on dev inside ns, closed at the end of the test.
func openPort(t *testing.T, ns *netns.NS, dev string, opts hal.PortOptions) hal.Port {
	t.Helper()
	var p hal.Port
	if err := ns.Do(func() (err error) { p, err = hal.OpenPort(dev, opts); return err }); err != nil {
		t.Fatalf("open %s in %s: %v", dev, ns.Name, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// drain reads p until it has been quiet for quiet and returns the frames.
func drain(t *testing.T, p hal.Port, quiet time.Duration) [][]byte {
	t.Helper()
	bufs := make([][]byte, hal.MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, hal.MaxBatch)
	var out [][]byte
	for {
		if err := p.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			t.Fatal(err)
		}
		n, err := p.ReadBatch(bufs, sizes, nil)
		for i := 0; i < n; i++ {
			out = append(out, append([]byte(nil), bufs[i][:sizes[i]]...))
		}
		if err != nil {
			return out
		}
	}
}

func count(frames [][]byte, want []byte) int {
	n := 0
	for _, f := range frames {
		if bytes.Equal(f, want) {
			n++
		}
	}
	return n
}

// The tc program and the socket filter decide alike: every crafted frame
// either crosses the gateway (the tc program redirected it, and the
// gateway's filtered packet socket did not get it) or reaches that
// socket (and does not cross), never both and never neither. The frames
// cover the cases of the verdict table, a RST that hands a flow back, and
// Remove. The addresses belong to no endpoint, so no stack answers.
func TestTCFilterVerdicts(t *testing.T) {
	l := line(t)
	b := newFastPath(t, l, Config{Mode: ModeTC})
	if b.Mode(North) != ModeTC || b.Mode(South) != ModeTC || b.SocketFilter() == nil {
		t.Fatalf("modes %s/%s, filter %v", b.Mode(North), b.Mode(South), b.SocketFilter())
	}
	if n := l.TCXPrograms(t); n != [2]int{1, 1} {
		t.Fatalf("tcx ingress programs on the ports: %v, want 1 each", n)
	}
	opts := hal.PortOptions{IO: hal.IORing, SocketFilter: b.SocketFilter()}
	gw := [2]hal.Port{openPort(t, l.Gateway, l.North, opts), openPort(t, l.Gateway, l.South, opts)}
	ends := [2]hal.Port{openPort(t, l.Client, "eth0", hal.PortOptions{}), openPort(t, l.Server, "eth0", hal.PortOptions{})}

	k4 := tcpKey("198.51.100.1:40000", "198.51.100.2:5001")
	k6 := tcpKey("[2001:db8::1]:40000", "[2001:db8::2]:5001")
	ku := udpKey("198.51.100.1:40001", "198.51.100.2:9")
	kr := tcpKey("198.51.100.1:40002", "198.51.100.2:5001") // closed by a RST below
	kx := tcpKey("198.51.100.1:40003", "198.51.100.2:5001") // removed below
	for _, k := range []Key{k4, k6, ku, kr, kx} {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	}
	type step struct {
		name    string
		side    Side // where the frame enters the gateway
		f       frameSpec
		crosses bool
		before  func()
	}
	steps := []step{
		{name: "ipv4 tcp forward", side: North, f: frameSpec{key: k4, tcpFlags: "A", payload: 1000}, crosses: true},
		{name: "ipv4 tcp reverse", side: South, f: frameSpec{key: k4.Reverse(), tcpFlags: "A"}, crosses: true},
		{name: "ipv4 tcp with options", side: North, f: frameSpec{key: k4, tcpFlags: "PA", ihl: 7, payload: 3}, crosses: true},
		{name: "ipv6 tcp forward", side: North, f: frameSpec{key: k6, tcpFlags: "A", payload: 10}, crosses: true},
		{name: "ipv6 tcp reverse", side: South, f: frameSpec{key: k6.Reverse(), tcpFlags: "A"}, crosses: true},
		{name: "udp", side: North, f: frameSpec{key: ku, payload: 18}, crosses: true},
		{name: "udp reverse", side: South, f: frameSpec{key: ku.Reverse(), payload: 18}, crosses: true},
		{name: "wrong port", side: South, f: frameSpec{key: k4, tcpFlags: "A"}},
		{name: "unknown flow", side: North, f: frameSpec{key: tcpKey("198.51.100.1:40000", "198.51.100.2:5002"), tcpFlags: "A"}},
		{name: "udp as tcp", side: North, f: frameSpec{key: Key{Proto: ProtoTCP, Src: ku.Src, Dst: ku.Dst}, tcpFlags: "A"}},
		{name: "ipv4 fragment", side: North, f: frameSpec{key: k4, tcpFlags: "A", fragment: true}},
		{name: "ipv6 fragment header", side: North, f: frameSpec{key: k6, tcpFlags: "A", fragment: true}},
		{name: "vlan tagged", side: North, f: frameSpec{key: k4, tcpFlags: "A", vlan: true}},
		{name: "before RST", side: North, f: frameSpec{key: kr, tcpFlags: "A", payload: 1}, crosses: true},
		{name: "RST", side: South, f: frameSpec{key: kr.Reverse(), tcpFlags: "R"}},
		{name: "after RST", side: North, f: frameSpec{key: kr, tcpFlags: "A", payload: 2}},
		{name: "before Remove", side: North, f: frameSpec{key: kx, tcpFlags: "A", payload: 1}, crosses: true},
		{name: "after Remove", side: North, f: frameSpec{key: kx, tcpFlags: "A", payload: 2}, before: func() {
			if err := b.Remove(kx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "FIN", side: North, f: frameSpec{key: k4, tcpFlags: "FA"}},
		{name: "after FIN, reverse", side: South, f: frameSpec{key: k4.Reverse(), tcpFlags: "A", payload: 5}},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		fr := frame(t, s.f)
		if _, err := ends[s.side].WriteBatch([][]byte{fr}); err != nil {
			t.Fatalf("%s: send: %v", s.name, err)
		}
		up := count(drain(t, gw[s.side], 50*time.Millisecond), fr)
		across := count(drain(t, ends[s.side.Other()], 50*time.Millisecond), fr)
		want := [2]int{1, 0}
		if s.crosses {
			want = [2]int{0, 1}
		}
		if [2]int{up, across} != want {
			t.Errorf("%s: reached the gateway's socket %d times and crossed %d times, want %d and %d",
				s.name, up, across, want[0], want[1])
		}
	}
	for _, k := range []Key{kr, k4} {
		if f, err := b.Lookup(k); err != nil || !f.Closed {
			t.Errorf("%s: Lookup = %+v, %v; want closed", k, f, err)
		}
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Redirected != 9 || st.Closing != 2 {
		t.Errorf("stats %+v: want 9 redirected, 2 closing", st)
	}

	// Close: the links go, and the sockets' filter (which they keep)
	// delivers every frame at once.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := l.TCXPrograms(t); n != [2]int{0, 0} {
		t.Errorf("tcx ingress programs after Close: %v, want none", n)
	}
	fr := frame(t, frameSpec{key: ku, payload: 18})
	if _, err := ends[North].WriteBatch([][]byte{fr}); err != nil {
		t.Fatal(err)
	}
	if up, across := count(drain(t, gw[North], 50*time.Millisecond), fr), count(drain(t, ends[South], 50*time.Millisecond), fr); up != 1 || across != 0 {
		t.Errorf("after Close: a bypassed flow's frame reached the socket %d times and crossed %d times, want 1 and 0", up, across)
	}
}

// ModeTC refuses Config.XSK, and the XDP modes have no socket filter.
func TestTCConfig(t *testing.T) {
	l := line(t)
	err := l.Gateway.Do(func() error {
		b, err := New(Config{North: l.North, South: l.South, Mode: ModeTC, XSK: true})
		if err == nil {
			b.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "XSK") {
		t.Errorf("ModeTC with XSK: %v, want an error naming XSK", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("ModeTC with XSK: %v is a configuration error, not ErrUnavailable", err)
	}
	b := newFastPath(t, l, Config{})
	if b.SocketFilter() != nil {
		t.Errorf("%s mode: SocketFilter = %v, want nil", b.Mode(North), b.SocketFilter())
	}
	if ModeTC.String() != "tc" {
		t.Errorf("ModeTC.String() = %q", ModeTC.String())
	}
}

// Close leaves no filter state that withholds frames: with no lease
// (Config.Lease < 0, so nothing lapses by itself) and the lease's end
// failing in Close (its map descriptor closed under it, as a failed
// bpf(2) call would leave it), a bypassed flow's frame arriving after
// Close still reaches the gateway's filtered socket, once, and does not
// cross: Close emptied the flow map before it detached the tc program.
func TestTCCloseWithoutLeaseDeliversBypassedFlows(t *testing.T) {
	l := line(t)
	b := newFastPath(t, l, Config{Mode: ModeTC, Lease: -1})
	opts := hal.PortOptions{IO: hal.IORing, SocketFilter: b.SocketFilter()}
	gw := [2]hal.Port{openPort(t, l.Gateway, l.North, opts), openPort(t, l.Gateway, l.South, opts)}
	ends := [2]hal.Port{openPort(t, l.Client, "eth0", hal.PortOptions{}), openPort(t, l.Server, "eth0", hal.PortOptions{})}
	ku := udpKey("198.51.100.1:40001", "198.51.100.2:9")
	kt := tcpKey("198.51.100.1:40000", "198.51.100.2:5001")
	for _, k := range []Key{ku, kt} {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	}
	frames := []struct {
		side Side
		fr   []byte
	}{
		{North, frame(t, frameSpec{key: ku, payload: 18})},
		{South, frame(t, frameSpec{key: ku.Reverse(), payload: 18})},
		{North, frame(t, frameSpec{key: kt, tcpFlags: "A", payload: 10})},
	}
	// While open, the flows are bypassed: the frames cross, unseen.
	for _, f := range frames {
		if _, err := ends[f.side].WriteBatch([][]byte{f.fr}); err != nil {
			t.Fatal(err)
		}
		up, across := count(drain(t, gw[f.side], 50*time.Millisecond), f.fr), count(drain(t, ends[f.side.Other()], 50*time.Millisecond), f.fr)
		if up != 0 || across != 1 {
			t.Fatalf("before Close: reached the socket %d times and crossed %d times, want 0 and 1", up, across)
		}
	}
	_ = b.lease.Close() // the lease's end in Close fails (EBADF)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, f := range frames {
		if _, err := ends[f.side].WriteBatch([][]byte{f.fr}); err != nil {
			t.Fatal(err)
		}
		up, across := count(drain(t, gw[f.side], 50*time.Millisecond), f.fr), count(drain(t, ends[f.side.Other()], 50*time.Millisecond), f.fr)
		if up != 1 || across != 0 {
			t.Errorf("frame %d after Close: reached the socket %d times and crossed %d times, want 1 and 0", i, up, across)
		}
	}
}
