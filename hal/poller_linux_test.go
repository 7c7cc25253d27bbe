package hal_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
)

// TestTryReadBatch: the mmap'd-ring ports are Pollers. On an empty ring
// TryReadBatch returns 0 at once, without allocating; frames written by
// the peer are then found by looking again (byte for byte, in order);
// after Close it returns ErrClosed. The recvmmsg port is not a Poller.
func TestTryReadBatch(t *testing.T) {
	for _, mode := range []hal.IOMode{hal.IORing, hal.IOXDP} {
		t.Run(string(mode), func(t *testing.T) {
			pr := newPairOpts(t, hal.PortOptions{IO: mode})
			pl, ok := pr.p.(hal.Poller)
			if !ok {
				t.Fatalf("%s port %T is not a hal.Poller", mode, pr.p)
			}
			bs, sizes := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch)
			meta := make([]hal.FrameMeta, hal.MaxBatch)
			// Drain what the link sent when it came up (IPv6 NDP, MLD).
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
				if n, err := pl.TryReadBatch(bs, sizes, meta); err != nil {
					t.Fatal(err)
				} else if n == 0 {
					break
				}
			}
			start := time.Now()
			looks := 0
			allocs := testing.AllocsPerRun(1000, func() {
				if n, err := pl.TryReadBatch(bs, sizes, meta); err == nil && n == 0 {
					looks++
				}
			})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("1001 looks at an empty ring took %v: TryReadBatch must not wait", took)
			}
			if allocs != 0 || looks < 900 {
				t.Errorf("TryReadBatch on an empty ring: %v allocations per look, %d of 1001 empty; want 0 and nearly all", allocs, looks)
			}
			const total = 200
			want := make([][]byte, total)
			for i := range want {
				want[i] = frame(60+i*7, uint32(i))
				if _, err := pr.q.WriteBatch(want[i : i+1]); err != nil {
					t.Fatal(err)
				}
			}
			var got [][]byte
			for deadline := time.Now().Add(5 * time.Second); len(got) < total && time.Now().Before(deadline); {
				n, err := pl.TryReadBatch(bs, sizes, meta)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					if _, ok := testSeq(bs[i][:sizes[i]]); ok {
						got = append(got, bytes.Clone(bs[i][:sizes[i]]))
					}
				}
			}
			if len(got) != total {
				t.Fatalf("found %d of %d frames by polling", len(got), total)
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("frame %d differs (order or bytes)", i)
				}
			}
			if st := pr.p.Stats(); st.RxFrames < total || st.ReadCalls > st.RxFrames {
				t.Errorf("stats %+v: want >= %d frames, read calls counted only when frames were found", st, total)
			}
			pr.p.Close()
			if _, err := pl.TryReadBatch(bs, sizes, meta); !errors.Is(err, hal.ErrClosed) {
				t.Errorf("TryReadBatch after Close = %v, want ErrClosed", err)
			}
		})
	}
	t.Run("mmsg", func(t *testing.T) {
		pr := newPairIO(t, hal.IOMmsg)
		if _, ok := pr.p.(hal.Poller); ok {
			t.Errorf("the recvmmsg port is a Poller; a busy-polling datapath would read it with a system call per look")
		}
	})
}

// TestTryReadBatchClose: Close while another goroutine polls a port that
// is receiving (the ring is unmapped in Close, and a look in progress
// holds the descriptor, so Close waits for it): no crash, the poller sees
// ErrClosed.
func TestTryReadBatchClose(t *testing.T) {
	for _, mode := range []hal.IOMode{hal.IORing, hal.IOXDP} {
		t.Run(string(mode), func(t *testing.T) {
			pr := newPairOpts(t, hal.PortOptions{IO: mode})
			pl := pr.p.(hal.Poller)
			stop := make(chan struct{})
			defer close(stop)
			go func() { // the peer keeps sending
				for i := uint32(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					_, _ = pr.q.WriteBatch([][]byte{frame(100, i)})
				}
			}()
			errc := make(chan error, 1)
			var frames atomic.Int64
			go func() {
				bs, sizes := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch)
				for {
					n, err := pl.TryReadBatch(bs, sizes, nil)
					if err != nil {
						errc <- err
						return
					}
					frames.Add(int64(n))
				}
			}()
			for deadline := time.Now().Add(5 * time.Second); frames.Load() < 100 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			if err := pr.p.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, hal.ErrClosed) {
					t.Errorf("TryReadBatch after Close = %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the poller did not see Close")
			}
			if frames.Load() < 100 {
				t.Errorf("only %d frames polled before Close, want >= 100 (the close was to happen while frames flowed)", frames.Load())
			}
		})
	}
}
