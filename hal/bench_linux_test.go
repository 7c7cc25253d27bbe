package hal_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/haltest"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// forward is the trivial user-space bridge direction (haltest.Forward)
// on one locked thread.
func forward(in, out hal.Port, wg *sync.WaitGroup) {
	defer wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	haltest.Forward(in, out, nil)
}

// benchLine is src/"s0" — gw/"a0","b0" — dst/"d0" with a source and a
// sink port in the end namespaces.
type benchLine struct {
	gw        *netns.NS
	src, dst  hal.Port
	stopUser  func()
	userspace bool
}

func newBenchLine(b *testing.B, userspace bool, o hal.PortOptions) *benchLine {
	src, gw, dst := netns.New(b, "bsrc"), netns.New(b, "bgw"), netns.New(b, "bdst")
	netns.Veth(b, src, "s0", gw, "a0")
	netns.Veth(b, gw, "b0", dst, "d0")
	l := &benchLine{gw: gw, userspace: userspace}
	for _, ns := range []*netns.NS{src, gw, dst} {
		in(b, ns, func() error {
			for _, dev := range []string{"s0", "a0", "b0", "d0"} {
				if lk, err := hal.OpenLink(dev); err == nil {
					if err := lk.Prepare(hal.LinkOptions{}); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	l.src = openPort(b, src, "s0")
	l.dst = openPort(b, dst, "d0")
	if userspace {
		a, c := openPortOpts(b, gw, "a0", o), openPortOpts(b, gw, "b0", o)
		var wg sync.WaitGroup
		wg.Add(2)
		go forward(a, c, &wg)
		go forward(c, a, &wg)
		l.stopUser = func() { a.Close(); c.Close(); wg.Wait() }
		b.Cleanup(l.stopUser)
	} else {
		in(b, gw, func() error { return hal.NewBridge("benchbr0", "a0", "b0").Engage() })
	}
	return l
}

// run sends n small frames from src and counts what reaches dst.
func (l *benchLine) run(b *testing.B, n int) (received int, elapsed time.Duration) {
	const size = 60 // minimum Ethernet frame without FCS
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = frame(size, uint32(i))
	}
	var got int
	done := make(chan struct{})
	go func() {
		defer close(done)
		bs, sizes := bufs(hal.MaxBatch, 2048), make([]int, hal.MaxBatch)
		idle := 200 * time.Millisecond
		for {
			l.dst.SetReadDeadline(time.Now().Add(idle))
			k, err := l.dst.ReadBatch(bs, sizes, nil)
			if err != nil {
				return // quiet for 200ms: everything that will arrive has
			}
			for i := 0; i < k; i++ {
				if _, ok := testSeq(bs[i][:sizes[i]]); ok {
					got++
				}
			}
			elapsed = time.Since(startTime)
		}
	}()
	startTime = time.Now()
	b.ResetTimer()
	for sent := 0; sent < n; {
		k := min(len(batch), n-sent)
		m, _ := l.src.WriteBatch(batch[:k])
		sent += max(m, 1)
	}
	<-done
	b.StopTimer()
	return got, elapsed
}

var startTime time.Time

// BenchmarkForward compares frames/s through the user-space AF_PACKET
// bridge (TPACKET_V2 rings, then recvmmsg/sendmmsg) with the kernel
// bridge on the same topology in the same run, and the AF_XDP port with
// its own program in native and in generic mode. The source and sink
// ports use the default (ring) I/O in every case.
// Run with -benchtime=NNNNx (frames per run), e.g.:
//
//	go test -run '^$' -bench Forward -benchtime=300000x ./hal
func BenchmarkForward(b *testing.B) {
	testenv.NeedRoot(b)
	for _, tc := range []struct {
		name      string
		userspace bool
		opts      hal.PortOptions
	}{
		{"hal-ring", true, hal.PortOptions{IO: hal.IORing}},
		{"hal-mmsg", true, hal.PortOptions{IO: hal.IOMmsg}},
		{"hal-xdp", true, hal.PortOptions{IO: hal.IOXDP}},
		{"hal-xdp-generic", true, hal.PortOptions{IO: hal.IOXDP, XDPGeneric: true}},
		{"kernel-bridge", false, hal.PortOptions{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := newBenchLine(b, tc.userspace, tc.opts)
			got, elapsed := l.run(b, b.N)
			if elapsed <= 0 {
				elapsed = time.Nanosecond
			}
			b.ReportMetric(float64(got)/elapsed.Seconds(), "fwd-frames/s")
			b.ReportMetric(100*float64(b.N-got)/float64(b.N), "loss-%")
			b.ReportMetric(0, "ns/op")
		})
	}
}
