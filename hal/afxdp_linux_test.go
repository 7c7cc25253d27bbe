package hal_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// xdpLine is src/"s0" — gw/"a0", gw/"b0" — dst/"d0": two veths, with an
// AF_XDP port on each of the gateway's ends.
type xdpLine struct {
	src, gw, dst *netns.NS
	s, a, b, d   hal.Port
}

func newXDPLine(t *testing.T, opts hal.PortOptions) *xdpLine {
	t.Helper()
	testenv.NeedRoot(t)
	l := &xdpLine{src: netns.New(t, "xsrc"), gw: netns.New(t, "xgw"), dst: netns.New(t, "xdst")}
	netns.Veth(t, l.src, "s0", l.gw, "a0")
	netns.Veth(t, l.gw, "b0", l.dst, "d0")
	for _, e := range []struct {
		ns  *netns.NS
		dev string
	}{{l.src, "s0"}, {l.gw, "a0"}, {l.gw, "b0"}, {l.dst, "d0"}} {
		waitUp(t, e.ns, e.dev)
	}
	opts.IO = hal.IOXDP
	l.a, l.b = openPortOpts(t, l.gw, "a0", opts), openPortOpts(t, l.gw, "b0", opts)
	for _, p := range []hal.Port{l.a, l.b} {
		if got := hal.PortIO(p); got != hal.IOXDP {
			t.Fatalf("PortIO(%s) = %q, want xdp", p.Name(), got)
		}
	}
	l.s = openPortOpts(t, l.src, "s0", hal.PortOptions{IO: hal.IORing})
	l.d = openPortOpts(t, l.dst, "d0", hal.PortOptions{IO: hal.IORing})
	return l
}

// relay forwards every frame read on in to out until stop is closed,
// as the gateway's worker does (one goroutine per direction).
func relay(t *testing.T, in, out hal.Port, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		bs, sizes := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch)
		frames := make([][]byte, hal.MaxBatch)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = in.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := in.ReadBatch(bs, sizes, nil)
			if err != nil {
				continue
			}
			for i := 0; i < n; i++ {
				frames[i] = bs[i][:sizes[i]]
			}
			if _, err := out.WriteBatch(frames[:n]); err != nil {
				t.Errorf("WriteBatch on %s: %v", out.Name(), err)
				return
			}
		}
	}()
	return done
}

// TestXDPPortPairForwardsBothWays sends test frames of every size from 60
// to 1514 bytes through two AF_XDP ports (each on its own veth, joined by
// a relay as the gateway's workers join them) in both directions and
// checks that every frame arrives once, byte for byte.
func TestXDPPortPairForwardsBothWays(t *testing.T) {
	l := newXDPLine(t, hal.PortOptions{RxRingFrames: 64, TxRingFrames: 64})
	stop := make(chan struct{})
	d1, d2 := relay(t, l.a, l.b, stop), relay(t, l.b, l.a, stop)
	stopRelays := sync.OnceFunc(func() { close(stop); <-d1; <-d2 })
	defer stopRelays()
	for _, dir := range []struct {
		name     string
		from, to hal.Port
		base     uint32
	}{{"src to dst", l.s, l.d, 0}, {"dst to src", l.d, l.s, 1 << 20}} {
		t.Run(dir.name, func(t *testing.T) {
			const total = 1455 // sizes 60..1514
			want := make(map[uint32][]byte, total)
			frames := make([][]byte, 0, total)
			for i := 0; i < total; i++ {
				f := frame(60+i, dir.base+uint32(i))
				want[dir.base+uint32(i)] = f
				frames = append(frames, f)
			}
			got := make(map[uint32]int, total)
			bad := 0
			var arrived atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				collect(t, dir.to, total, 20*time.Second, func(f []byte, _ hal.FrameMeta) {
					s, ok := testSeq(f)
					if !ok {
						return
					}
					arrived.Add(1)
					if w, ok := want[s]; !ok || !bytes.Equal(f, w) {
						bad++
						return
					}
					got[s]++
				})
			}()
			// Batches of 16, never more than 32 frames ahead of the sink,
			// so the 64-frame rings of the ports in between keep up
			// however late the relay goroutines run on a busy machine:
			// this test is about bytes, not rate.
			for i := 0; i < total; i += 16 {
				deadline := time.Now().Add(2 * time.Second)
				for int64(i)-arrived.Load() > 32 && time.Now().Before(deadline) {
					time.Sleep(100 * time.Microsecond)
				}
				if _, err := dir.from.WriteBatch(frames[i:min(i+16, total)]); err != nil {
					t.Fatal(err)
				}
			}
			<-done
			missing, dup := 0, 0
			for s := range want {
				switch got[s] {
				case 0:
					missing++
				case 1:
				default:
					dup++
				}
			}
			if missing != 0 || dup != 0 || bad != 0 {
				t.Errorf("%d frames sent: %d missing, %d duplicated, %d with wrong bytes", total, missing, dup, bad)
			}
		})
	}
	// A relay counts a batch as sent once its WriteBatch returns, which is
	// after the kernel delivered the frames to the sink: stop the relays
	// first, or the counters may lag the frames the sink saw by a batch.
	stopRelays()
	for _, p := range []hal.Port{l.a, l.b} {
		st := p.Stats()
		if st.RxFrames < 1455 || st.TxFrames < 1455 {
			t.Errorf("%s stats %+v: want >= 1455 frames each way", p.Name(), st)
		}
	}
}

// TestXDPPortCloseDetaches checks that a port's own XDP program goes with
// the port (and, by the same BPF link, with the process): fail-closed.
func TestXDPPortCloseDetaches(t *testing.T) {
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "xgw"), netns.New(t, "xpeer")
	netns.Veth(t, gw, "p0", peer, "q0")
	waitUp(t, gw, "p0")
	var p hal.Port
	if err := gw.Do(func() (err error) { p, err = hal.OpenPort("p0", hal.PortOptions{IO: hal.IOXDP}); return err }); err != nil {
		t.Fatal(err)
	}
	if out := gw.IP("-d", "link", "show", "p0"); !strings.Contains(out, "prog/xdp") {
		t.Fatalf("no XDP program on p0 while the port is open:\n%s", out)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if out := gw.IP("-d", "link", "show", "p0"); strings.Contains(out, "prog/xdp") {
		t.Errorf("XDP program left on p0 after Close:\n%s", out)
	}
}

// TestXDPPortRefusesJumboFrames: a frame size that does not fit a UMEM
// frame is refused at open, naming the port.
func TestXDPPortRefusesJumboFrames(t *testing.T) {
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "xgw"), netns.New(t, "xpeer")
	netns.Veth(t, gw, "p0", peer, "q0")
	err := gw.Do(func() error {
		p, err := hal.OpenPort("p0", hal.PortOptions{IO: hal.IOXDP, RingFrameSize: 9100})
		if err == nil {
			p.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "p0") {
		t.Errorf("OpenPort(9100-byte frames) = %v, want an error naming p0", err)
	}
}

// TestXDPPortSpinBusyPoll: with SpinRead and BusyPoll (socket options
// accepted, recvfrom per look while spinning) frames still cross both ways
// byte for byte, and a reader spinning on an empty ring still honours its
// deadline.
func TestXDPPortSpinBusyPoll(t *testing.T) {
	pr := newPairOpts(t, hal.PortOptions{IO: hal.IOXDP, SpinRead: time.Millisecond, BusyPoll: true})
	for i, dir := range []struct{ from, to hal.Port }{{pr.p, pr.q}, {pr.q, pr.p}} {
		want := frame(200, uint32(7000+i))
		if _, err := dir.from.WriteBatch([][]byte{want}); err != nil {
			t.Fatal(err)
		}
		got, _, ok := readMatch(t, dir.to, 2*time.Second, func(f []byte) bool {
			s, ok := testSeq(f)
			return ok && s == uint32(7000+i)
		})
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("%s -> %s: got %x, want %x", dir.from.Name(), dir.to.Name(), got, want)
		}
	}
	start := time.Now()
	_ = pr.p.SetReadDeadline(start.Add(50 * time.Millisecond))
	for {
		_, err := pr.p.ReadBatch(bufs(1, 2048), make([]int, 1), nil)
		if err == hal.ErrTimeout {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("ReadBatch never timed out")
		}
	}
}

// TestXDPPortDropsFramesOnLinkDown: frames written while the port's link
// is down never leave later: WriteBatch reports the device's error
// (ENETDOWN), counts them dropped, not sent, and once the link is up
// again only frames written since arrive at the peer. The port's TX ring
// (16 frames) is filled several times over while down, so the UMEM
// frames of the dropped ones must come back for the frames after.
func TestXDPPortDropsFramesOnLinkDown(t *testing.T) {
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "xgw"), netns.New(t, "xpeer")
	netns.Veth(t, gw, "p0", peer, "q0")
	waitUp(t, gw, "p0")
	waitUp(t, peer, "q0")
	p := openPortOpts(t, gw, "p0", hal.PortOptions{IO: hal.IOXDP, TxRingFrames: 16})
	gw.IP("link", "set", "p0", "down")
	const downFrames = 5 * 10
	for i := 0; i < downFrames; i += 10 {
		batch := make([][]byte, 10)
		for k := range batch {
			batch[k] = frame(100, uint32(100+i+k))
		}
		start := time.Now()
		n, err := p.WriteBatch(batch)
		if !errors.Is(err, syscall.ENETDOWN) || n != len(batch) {
			t.Errorf("WriteBatch while down = %d, %v; want %d, ENETDOWN", n, err, len(batch))
		}
		if d := time.Since(start); d > 5*time.Millisecond {
			t.Logf("WriteBatch while down took %v", d)
		}
	}
	st := p.Stats()
	if st.TxFrames != 0 || st.TxDropped != downFrames {
		t.Errorf("after writing %d frames while down: %d sent, %d dropped; want 0 and %d", downFrames, st.TxFrames, st.TxDropped, downFrames)
	}
	gw.IP("link", "set", "p0", "up")
	waitUp(t, gw, "p0")
	sink := openPortOpts(t, peer, "q0", hal.PortOptions{IO: hal.IORing})
	const upFrames = 64
	for i := 0; i < upFrames; i += 8 {
		batch := make([][]byte, 8)
		for k := range batch {
			batch[k] = frame(100, uint32(1000+i+k))
		}
		if n, err := p.WriteBatch(batch); err != nil || n != len(batch) {
			t.Fatalf("WriteBatch after up = %d, %v", n, err)
		}
		time.Sleep(time.Millisecond)
	}
	got := collect(t, sink, upFrames+downFrames, time.Second, nil)
	stale, fresh := 0, 0
	for s, c := range got {
		switch {
		case s >= 100 && s < 100+downFrames:
			stale += c
		case s >= 1000 && s < 1000+upFrames && c == 1:
			fresh++
		}
	}
	if stale != 0 || fresh != upFrames {
		t.Errorf("after the link came up: %d frames written while down arrived (want 0), %d of %d written since arrived once", stale, fresh, upFrames)
	}
	st = p.Stats()
	if st.TxFrames != upFrames || st.TxDropped != downFrames {
		t.Errorf("stats %+v: want %d sent, %d dropped", st, upFrames, downFrames)
	}
}
