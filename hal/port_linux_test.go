package hal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestPortFramesCrossBothWays(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		tests := []struct {
			name     string
			from, to hal.Port
		}{
			{"gw to peer", pr.p, pr.q},
			{"peer to gw", pr.q, pr.p},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				want := frame(100, uint32(1000+i))
				if n, err := tc.from.WriteBatch([][]byte{want}); n != 1 || err != nil {
					t.Fatalf("WriteBatch = %d, %v; want 1, nil", n, err)
				}
				var got []byte
				collect(t, tc.to, 1, 2*time.Second, func(f []byte, _ hal.FrameMeta) {
					if s, ok := testSeq(f); ok && s == uint32(1000+i) {
						got = append([]byte(nil), f...)
					}
				})
				if !bytes.Equal(got, want) {
					t.Errorf("frame on %s:\n got %x\nwant %x", tc.to.Name(), got, want)
				}
			})
		}
	})
}

func TestPortBatch1000Frames(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		// The burst must fit what the receiver buffers if its reader is
		// scheduled late: an RX ring of 2048 slots (the 4 MiB socket
		// buffer holds it for mmsg). A full ring drops, as
		// TestRingRxDropsCounted shows.
		pr := newPairOpts(t, hal.PortOptions{IO: mode, RxRingFrames: 2048})
		const total = 1000
		frames := make([][]byte, total)
		for i := range frames {
			frames[i] = frame(60+i%1400, uint32(i))
		}
		done := make(chan map[uint32]int, 1)
		go func() { done <- collect(t, pr.q, total, 5*time.Second, nil) }()
		start := time.Now()
		for off := 0; off < total; off += 64 {
			end := min(off+64, total)
			if n, err := pr.p.WriteBatch(frames[off:end]); err != nil || n != end-off {
				t.Fatalf("WriteBatch(frames[%d:%d]) = %d, %v", off, end, n, err)
			}
		}
		seen := <-done
		t.Logf("1000 frames in %v", time.Since(start))
		if len(seen) != total {
			t.Errorf("distinct frames received = %d, want %d", len(seen), total)
		}
		for s, c := range seen {
			if c != 1 {
				t.Errorf("frame %d received %d times, want once", s, c)
			}
		}
		st := pr.p.Stats()
		if st.TxFrames != total {
			t.Errorf("sender TxFrames = %d, want %d", st.TxFrames, total)
		}
		if st.WriteCalls > total/32 {
			t.Errorf("sender WriteCalls = %d: frames were not batched", st.WriteCalls)
		}
		if rs := pr.q.Stats(); rs.RxFrames < total || rs.ReadCalls >= rs.RxFrames {
			t.Errorf("receiver RxFrames = %d ReadCalls = %d; want >= %d frames in fewer calls", rs.RxFrames, rs.ReadCalls, total)
		}
	})
}

// tagged inserts an 802.1Q/802.1ad tag into an untagged frame.
func tagged(f []byte, tpid, tci uint16) []byte {
	out := make([]byte, 0, len(f)+4)
	out = append(out, f[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, tci)
	return append(out, f[12:]...)
}

// untag returns f without its outer VLAN tag, if it has one.
func untag(f []byte) []byte {
	if len(f) >= 18 {
		switch binary.BigEndian.Uint16(f[12:]) {
		case 0x8100, 0x88a8:
			return append(append([]byte(nil), f[:12]...), f[16:]...)
		}
	}
	return f
}

// readMatch reads from p until a frame satisfies match or d passes.
func readMatch(t testing.TB, p hal.Port, d time.Duration, match func([]byte) bool) ([]byte, hal.FrameMeta, bool) {
	t.Helper()
	bs, sizes, meta := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch), make([]hal.FrameMeta, hal.MaxBatch)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		p.SetReadDeadline(deadline)
		n, err := p.ReadBatch(bs, sizes, meta)
		if errors.Is(err, hal.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBatch on %s: %v", p.Name(), err)
		}
		for i := 0; i < n; i++ {
			if f := bs[i][:sizes[i]]; match(f) {
				return append([]byte(nil), f...), meta[i], true
			}
		}
	}
	return nil, hal.FrameMeta{}, false
}

// The kernel strips the outer tag on receive (skb_vlan_untag) before
// AF_PACKET sees the frame; ReadBatch must put it back from auxdata.
func TestPortVLANTagRestored(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		tests := []struct {
			name      string
			tpid, tci uint16
		}{
			{"untagged", 0, 0},
			{"802.1Q vid 100 pcp 5", 0x8100, 5<<13 | 100},
			{"802.1Q vid 4094", 0x8100, 4094},
			{"802.1Q priority tag vid 0", 0x8100, 3 << 13},
			{"802.1ad S-tag vid 7", 0x88a8, 7},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				seq := uint32(2000 + i)
				want := frame(80, seq)
				if tc.tpid != 0 {
					want = tagged(want, tc.tpid, tc.tci)
				}
				if _, err := pr.q.WriteBatch([][]byte{want}); err != nil {
					t.Fatal(err)
				}
				got, meta, ok := readMatch(t, pr.p, 2*time.Second, func(f []byte) bool {
					s, ok := testSeq(untag(f))
					return ok && s == seq
				})
				if !ok {
					t.Fatalf("frame %d not received", seq)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("frame:\n got %x\nwant %x", got, want)
				}
				// XDP runs before the kernel strips a tag: an AF_XDP port
				// gets it in the frame, with nothing to restore.
				restored := tc.tpid != 0 && mode != hal.IOXDP
				if meta.VLANRestored != restored || meta.WireLen != len(want) {
					t.Errorf("meta = %+v, want VLANRestored=%v WireLen=%d", meta, restored, len(want))
				}
			})
		}
	})
}

func TestPortIgnoresOwnOutput(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		const n = 20
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = frame(64, uint32(3000+i))
		}
		if k, err := pr.p.WriteBatch(frames); k != n || err != nil {
			t.Fatalf("WriteBatch = %d, %v", k, err)
		}
		// The frames went out: the peer sees all of them ...
		if seen := collect(t, pr.q, n, 2*time.Second, nil); len(seen) != n {
			t.Fatalf("peer received %d frames, want %d", len(seen), n)
		}
		// ... and the sending port reads none of them back.
		if echo := collect(t, pr.p, 1, 300*time.Millisecond, nil); len(echo) != 0 {
			t.Errorf("sending port read back %d of its own frames (PACKET_IGNORE_OUTGOING not in effect)", len(echo))
		}
	})
}

func TestPortTruncatedFrame(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		want := frame(600, 4000)
		if _, err := pr.q.WriteBatch([][]byte{want}); err != nil {
			t.Fatal(err)
		}
		small := [][]byte{make([]byte, 128)}
		sizes, meta := make([]int, 1), make([]hal.FrameMeta, 1)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			pr.p.SetReadDeadline(deadline)
			n, err := pr.p.ReadBatch(small, sizes, meta)
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 && binary.BigEndian.Uint16(small[0][12:]) == testEtherType {
				if got, wantSize := sizes[0], 128-hal.VLANHeadroom; got != wantSize || !meta[0].Truncated || meta[0].WireLen != 600 {
					t.Errorf("size %d meta %+v; want size %d Truncated WireLen 600", got, meta[0], wantSize)
				}
				if st := pr.p.Stats(); st.RxTruncated == 0 {
					t.Error("RxTruncated not counted")
				}
				return
			}
		}
		t.Fatal("frame not received")
	})
}

func TestPortCloseWakesReader(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		errc := make(chan error, 1)
		go func() {
			bs, sizes := bufs(4, 2048), make([]int, 4)
			for {
				if _, err := pr.p.ReadBatch(bs, sizes, nil); err != nil {
					errc <- err
					return
				}
			}
		}()
		time.Sleep(50 * time.Millisecond)
		if err := pr.p.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, hal.ErrClosed) {
				t.Errorf("ReadBatch after Close = %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not wake the blocked reader")
		}
		if _, err := pr.p.WriteBatch([][]byte{frame(64, 1)}); !errors.Is(err, hal.ErrClosed) {
			t.Errorf("WriteBatch after Close = %v, want ErrClosed", err)
		}
	})
}

func TestPortReadDeadline(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		pr.p.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		bs, sizes := bufs(4, 2048), make([]int, 4)
		start := time.Now()
		for {
			_, err := pr.p.ReadBatch(bs, sizes, nil)
			if errors.Is(err, hal.ErrTimeout) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatal("no timeout")
			}
		}
		if d := time.Since(start); d < 90*time.Millisecond || d > time.Second {
			t.Errorf("timeout after %v, want about 100ms", d)
		}
	})
}

func TestPortRejectsShortBuffer(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		_, err := pr.p.ReadBatch([][]byte{make([]byte, hal.MinBufSize-1)}, make([]int, 1), nil)
		if !errors.Is(err, hal.ErrShortBuffer) {
			t.Errorf("ReadBatch(short) = %v, want ErrShortBuffer", err)
		}
	})
}

func TestOpenPortNoSuchInterface(t *testing.T) {
	testenv.NeedRoot(t)
	ns := netns.New(t, "none")
	err := ns.Do(func() error {
		_, err := hal.OpenPort("nonexistent0", hal.PortOptions{})
		return err
	})
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("OpenPort(nonexistent0) = %v, want ENODEV", err)
	}
}

// The hot path must not allocate: one write and one read per run.
func TestPortBatchAllocs(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode hal.IOMode) {
		pr := newPairIO(t, mode)
		out := [][]byte{frame(64, 5000), frame(64, 5001)}
		bs, sizes, meta := bufs(8, 2048), make([]int, 8), make([]hal.FrameMeta, 8)
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := pr.q.WriteBatch(out); err != nil {
				t.Fatal(err)
			}
			if _, err := pr.p.ReadBatch(bs, sizes, meta); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("allocations per WriteBatch+ReadBatch = %v, want 0", allocs)
		}
	})
}

// The GPIO v2 request's size is encoded in GPIO_V2_GET_LINE_IOCTL; a
// layout that differs on 32-bit ARM would make the ioctl fail there.
func TestGPIOLineRequestLayout(t *testing.T) {
	const iocSizeShift, iocSizeMask = 16, 0x3fff
	want := uintptr(unix.GPIO_V2_GET_LINE_IOCTL >> iocSizeShift & iocSizeMask)
	if got := unsafe.Sizeof(unix.GPIOV2LineRequest{}); got != want {
		t.Errorf("sizeof(GPIOV2LineRequest) = %d, ioctl says %d", got, want)
	}
}

type fdFilter int

func (f fdFilter) FD() int { return int(f) }

// A socket filter needs a packet socket: AF_XDP refuses it; a descriptor
// that is not a BPF program fails the open, naming SO_ATTACH_BPF. (hal/xdp
// tests that a real filter keeps frames from ring and mmsg ports.)
func TestPortSocketFilterErrors(t *testing.T) {
	_, err := hal.OpenPort("lo", hal.PortOptions{IO: hal.IOXDP, SocketFilter: fdFilter(-1)})
	if err == nil || !strings.Contains(err.Error(), "socket filter") {
		t.Errorf("IOXDP with a socket filter: %v, want a refusal", err)
	}
	testenv.NeedRoot(t)
	ns := netns.New(t, "sockfilter")
	for _, io := range []hal.IOMode{hal.IORing, hal.IOMmsg} {
		err := ns.Do(func() error {
			p, err := hal.OpenPort("lo", hal.PortOptions{IO: io, NoPromisc: true, SocketFilter: fdFilter(0)})
			if err == nil {
				p.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "SO_ATTACH_BPF") {
			t.Errorf("%s port with fd 0 as the filter: %v, want an SO_ATTACH_BPF error", io, err)
		}
	}
}
