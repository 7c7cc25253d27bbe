package hal_test

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"golang.org/x/sys/unix"
)

// ringPair is a veth pair whose gw end "p0" is a ring port with opts and
// whose peer end "q0" uses the recvmmsg port, so the ring is checked
// against the other implementation.
func ringPair(t *testing.T, opts hal.PortOptions) *pair {
	t.Helper()
	pr := newPairIO(t, hal.IOMmsg)
	pr.p.Close()
	opts.IO = hal.IORing
	pr.p = openPortOpts(t, pr.gw, "p0", opts)
	return pr
}

// inOrder reads want test frames from p and reports the sequence numbers
// in arrival order.
func inOrder(t *testing.T, p hal.Port, want int, d time.Duration) []uint32 {
	t.Helper()
	var seqs []uint32
	bs, sizes := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch)
	deadline := time.Now().Add(d)
	for len(seqs) < want && time.Now().Before(deadline) {
		p.SetReadDeadline(deadline)
		n, err := p.ReadBatch(bs, sizes, nil)
		if errors.Is(err, hal.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBatch on %s: %v", p.Name(), err)
		}
		for i := 0; i < n; i++ {
			if s, ok := testSeq(bs[i][:sizes[i]]); ok {
				seqs = append(seqs, s)
			}
		}
	}
	return seqs
}

func TestPortDefaultIsRing(t *testing.T) {
	pr := newPair(t)
	if got := hal.PortIO(pr.p); got != hal.IORing {
		t.Errorf("PortIO(OpenPort with IODefault) = %q, want %q", got, hal.IORing)
	}
}

func TestParseIOMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want hal.IOMode
		ok   bool
	}{{"", hal.IODefault, true}, {"ring", hal.IORing, true}, {"mmsg", hal.IOMmsg, true}, {"xdp", hal.IOXDP, true}, {"auto", hal.IOAuto, true}, {"v3", "", false}} {
		got, err := hal.ParseIOMode(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseIOMode(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// One WriteBatch of many more frames than the TX ring has slots must wrap
// around the ring, wait for the kernel to free slots, and keep the order.
func TestRingTxWrapsInOrder(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{TxRingFrames: 32})
	const total = 500
	frames := make([][]byte, total)
	for i := range frames {
		frames[i] = frame(60+i%200, uint32(i))
	}
	done := make(chan []uint32, 1)
	go func() { done <- inOrder(t, pr.q, total, 5*time.Second) }()
	for round := 0; round < 2; round++ { // the second round starts mid-ring
		n, err := pr.p.WriteBatch(frames[round*total/2 : (round+1)*total/2])
		if n != total/2 || err != nil {
			t.Fatalf("WriteBatch(%d frames through a 32-slot ring) = %d, %v", total/2, n, err)
		}
	}
	wantInOrder(t, <-done, total)
	if st := pr.p.Stats(); st.TxFrames != total || st.TxErrors != 0 {
		t.Errorf("TxFrames %d TxErrors %d, want %d, 0", st.TxFrames, st.TxErrors, total)
	}
}

// A TX ring that stays full (the port's qdisc releases frames slowly, so
// the kernel keeps their slots): WriteBatch must wait for the kernel to
// free slots (the TX socket's private epoll set, not a busy loop), then
// send everything exactly once and in order.
func TestRingTxWaitsForSlowEgress(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{TxRingFrames: 32})
	// 4 Mbit/s: 200 frames of 1,000 bytes take about 400 ms to leave.
	pr.gw.MustRun("tc", "qdisc", "add", "dev", "p0", "root", "tbf", "rate", "4mbit", "burst", "2000", "limit", "1000000")
	const total = 200
	frames := make([][]byte, total)
	for i := range frames {
		frames[i] = frame(1000, uint32(i))
	}
	done := make(chan []uint32, 1)
	go func() { done <- inOrder(t, pr.q, total, 10*time.Second) }()
	runtime.LockOSThread() // so that RUSAGE_THREAD is this goroutine's
	defer runtime.UnlockOSThread()
	var cpu0, cpu1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &cpu0)
	start := time.Now()
	n, err := pr.p.WriteBatch(frames)
	wall := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &cpu1)
	if n != total || err != nil {
		t.Fatalf("WriteBatch(%d frames through a 32-slot ring behind a slow qdisc) = %d, %v", total, n, err)
	}
	wantInOrder(t, <-done, total)
	// The batch cannot fit the ring, so WriteBatch must have waited for
	// the qdisc, and waiting must not burn a core.
	if wall < 100*time.Millisecond {
		t.Errorf("WriteBatch returned after %v: did not wait for the slow egress", wall)
	}
	used := time.Duration(cpu1.Utime.Nano()+cpu1.Stime.Nano()) - time.Duration(cpu0.Utime.Nano()+cpu0.Stime.Nano())
	if used > wall/2 {
		t.Errorf("WriteBatch used %v of CPU in %v waiting for slots: busy waiting", used, wall)
	}
}

// A frame refused in the middle of a batch: the ones before it are sent,
// WriteBatch returns its index and the error, the ones after it are not
// sent until the caller writes them again, and then exactly once.
func TestRingTxErrorMidBatch(t *testing.T) {
	tests := []struct {
		name    string
		badSize int
		want    unix.Errno
	}{
		// Larger than a TX slot: refused before it reaches the ring.
		{"larger than the slot", 3000, unix.EMSGSIZE},
		// Fits the slot but exceeds the 1500-byte MTU: the kernel marks
		// the slot TP_STATUS_WRONG_FORMAT and the port takes the rest of
		// the batch back.
		{"larger than the MTU", 1700, unix.EMSGSIZE},
		{"empty", 0, unix.EINVAL},
	}
	pr := ringPair(t, hal.PortOptions{})
	for ti, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := uint32(10000 * (ti + 1))
			frames := [][]byte{frame(64, base), frame(64, base+1), nil, frame(64, base+3), frame(64, base+4)}
			if tc.badSize > 0 {
				frames[2] = frame(tc.badSize, base+2)
			} else {
				frames[2] = []byte{}
			}
			n, err := pr.p.WriteBatch(frames)
			if n != 2 || !errors.Is(err, tc.want) {
				t.Fatalf("WriteBatch = %d, %v; want 2, %v", n, err, tc.want)
			}
			if n, err := pr.p.WriteBatch(frames[3:]); n != 2 || err != nil {
				t.Fatalf("WriteBatch(rest) = %d, %v; want 2, nil", n, err)
			}
			seqs := inOrder(t, pr.q, 4, 2*time.Second)
			want := []uint32{base, base + 1, base + 3, base + 4}
			if len(seqs) != len(want) {
				t.Fatalf("received %v, want %v", seqs, want)
			}
			for i := range want {
				if seqs[i] != want[i] {
					t.Fatalf("received %v, want %v", seqs, want)
				}
			}
			// Nothing more: the refused frame and no duplicates.
			if extra := inOrder(t, pr.q, 1, 200*time.Millisecond); len(extra) != 0 {
				t.Errorf("unexpected frames after the batch: %v", extra)
			}
		})
	}
	if st := pr.p.Stats(); st.TxErrors != uint64(len(tests)) {
		t.Errorf("TxErrors = %d, want %d", st.TxErrors, len(tests))
	}
}

// A frame larger than an RX slot arrives truncated by the kernel and is
// reported as such with its wire length.
func TestRingRxTruncatedBySlot(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{RingFrameSize: 256})
	if _, err := pr.q.WriteBatch([][]byte{frame(600, 7000)}); err != nil {
		t.Fatal(err)
	}
	got, meta, ok := readMatch(t, pr.p, 2*time.Second, func(f []byte) bool {
		s, ok := testSeq(f)
		return ok && s == 7000
	})
	if !ok {
		t.Fatal("frame not received")
	}
	if !meta.Truncated || meta.WireLen != 600 || len(got) >= 600 || len(got) < 100 {
		t.Errorf("size %d meta %+v; want a truncated frame (256-byte slot) with WireLen 600", len(got), meta)
	}
}

// Frames that find the RX ring full are dropped by the kernel and counted.
func TestRingRxDropsCounted(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{RxRingFrames: 32})
	const total = 400
	frames := make([][]byte, 64)
	for sent := 0; sent < total; sent += len(frames) {
		for i := range frames {
			frames[i] = frame(64, uint32(sent+i))
		}
		if _, err := pr.q.WriteBatch(frames); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	st := pr.p.Stats()
	if st.KernelDrops == 0 {
		t.Errorf("KernelDrops = 0 after %d frames into a 32-slot ring nobody read", total)
	}
	seqs := inOrder(t, pr.p, total, 300*time.Millisecond)
	if len(seqs) == 0 || len(seqs) > 32 {
		t.Errorf("read %d frames from a 32-slot ring, want 1-32", len(seqs))
	}
	// The ring works again once drained.
	if _, err := pr.q.WriteBatch([][]byte{frame(64, 9999)}); err != nil {
		t.Fatal(err)
	}
	if s := inOrder(t, pr.p, 1, 2*time.Second); len(s) != 1 || s[0] != 9999 {
		t.Errorf("after draining: received %v, want [9999]", s)
	}
}

// SpinRead: a reader spinning on the ring still delivers frames, honours
// the deadline and is woken by Close (which unmaps the ring only after
// the spinning callback has returned).
func TestRingSpinRead(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{SpinRead: 20 * time.Millisecond})
	if _, err := pr.q.WriteBatch([][]byte{frame(64, 1), frame(64, 2)}); err != nil {
		t.Fatal(err)
	}
	if s := inOrder(t, pr.p, 2, 2*time.Second); len(s) != 2 {
		t.Fatalf("received %v, want 2 frames", s)
	}
	pr.p.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	bs, sizes := bufs(4, 2048), make([]int, 4)
	start := time.Now()
	for {
		_, err := pr.p.ReadBatch(bs, sizes, nil)
		if errors.Is(err, hal.ErrTimeout) {
			break
		}
		if err != nil || time.Since(start) > 2*time.Second {
			t.Fatalf("ReadBatch = %v after %v, want ErrTimeout after about 100ms", err, time.Since(start))
		}
	}
	pr.p.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := pr.p.ReadBatch(bs, sizes, nil); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(30 * time.Millisecond)
	// Frames keep arriving while Close runs.
	for i := 0; i < 5; i++ {
		pr.q.WriteBatch([][]byte{frame(64, uint32(100+i))})
	}
	if err := pr.p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, hal.ErrClosed) {
			t.Errorf("ReadBatch after Close = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake the spinning reader")
	}
	if err := pr.p.Close(); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if err := pr.p.SetReadDeadline(time.Now()); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("SetReadDeadline after Close = %v, want ErrClosed", err)
	}
	_ = pr.p.Stats() // safe after Close
}

// Close while another goroutine writes: no crash, WriteBatch reports
// ErrClosed.
func TestRingCloseWhileWriting(t *testing.T) {
	pr := ringPair(t, hal.PortOptions{TxRingFrames: 32})
	frames := make([][]byte, hal.MaxBatch)
	for i := range frames {
		frames[i] = frame(1000, uint32(i))
	}
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < 100000; i++ {
			if _, err := pr.p.WriteBatch(frames); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	time.Sleep(20 * time.Millisecond)
	pr.p.Close()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, hal.ErrClosed) {
			t.Errorf("WriteBatch during Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writer not stopped by Close")
	}
}

// wantInOrder checks that frames 0..total-1 arrived, each once, in order.
func wantInOrder(t *testing.T, seqs []uint32, total int) {
	t.Helper()
	if len(seqs) != total {
		t.Fatalf("received %d frames, want %d", len(seqs), total)
	}
	for i, s := range seqs {
		if s != uint32(i) {
			t.Fatalf("frame %d has seq %d: out of order or duplicated", i, s)
		}
	}
}
