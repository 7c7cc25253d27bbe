package xdp

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
)

// TestHelperFastPathChild is not a test: it is the child process of
// TestFailClosedOnSIGKILL (a re-exec of the test binary inside the
// gateway namespace). It attaches the bypass, adds one TCP flow, says
// READY and waits to be killed.
func TestHelperFastPathChild(t *testing.T) {
	spec := os.Getenv("OTGW_XDP_CHILD_FLOW") // "SRC DST MODE LEASE"
	if spec == "" {
		t.Skip("helper process")
	}
	f := strings.Fields(spec)
	mode := ModeNative
	switch f[2] {
	case ModeGeneric.String():
		mode = ModeGeneric
	case ModeTC.String():
		mode = ModeTC
	}
	lease, err := time.ParseDuration(f[3])
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{North: "north0", South: "south0", Mode: mode, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	k := Key{Proto: ProtoTCP, Src: netip.MustParseAddrPort(f[0]), Dst: netip.MustParseAddrPort(f[1])}
	if err := b.Add(k, South); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %s\n", b.Mode(North))
	time.Sleep(time.Minute) // killed here; no Close
}

// Fail-closed for the fast path (XDP and tc modes): a process holding the bypass is killed
// with SIGKILL during a bypassed TCP stream, and the stream stops
// (nothing else forwards): within the lease (DefaultLease) at most, and
// for good when the kernel detaches the program as the process's file
// descriptors go. The figure is the time from the kill to the kernel's
// receive time of the last segment the server read. The "detach only"
// case (no lease) is measured and reported, and asserted only to stop
// within a second: the detach waits for the rtnl lock, which other
// netlink users (namespace teardown of parallel tests) can hold for
// hundreds of milliseconds.
func TestFailClosedOnSIGKILL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  Mode
		lease time.Duration
		limit time.Duration
	}{
		{"native", ModeNative, DefaultLease, 100 * time.Millisecond},
		{"generic", ModeGeneric, DefaultLease, 100 * time.Millisecond},
		{"native detach only", ModeNative, -1, time.Second},
		{"tc", ModeTC, DefaultLease, 100 * time.Millisecond},
		{"tc detach only", ModeTC, -1, time.Second},
	} {
		mode := tc.mode
		t.Run(tc.name, func(t *testing.T) {
			l := line(t)
			// Handshake through the stand-in engine, which then stops:
			// from here on only the child's XDP program forwards.
			fw := startForwarder(t, l, 5001)
			s := netns.NewRxSink(t, listen(t, l.Server, "tcp4", "0.0.0.0:5001"))
			c := dialFrom(t, l.Client, "tcp4", "192.0.2.1:40002", "192.0.2.2:5001")
			fw.stop()

			cmd := l.Gateway.Command(context.Background(), os.Args[0], "-test.run=^TestHelperFastPathChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "OTGW_XDP_CHILD_FLOW=192.0.2.1:40002 192.0.2.2:5001 "+mode.String()+" "+tc.lease.String())
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			ready := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "READY") {
						ready <- sc.Text()
						return
					}
				}
				close(ready)
			}()
			select {
			case r, ok := <-ready:
				if !ok {
					t.Fatal("child exited before READY")
				}
				if r != "READY "+mode.String() {
					t.Fatalf("child: %q", r)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("child not ready")
			}

			// Stream until the writes block (the window fills once the
			// path is gone).
			stopWriter := make(chan struct{})
			go func() {
				buf := make([]byte, 16<<10)
				for {
					select {
					case <-stopWriter:
						return
					default:
					}
					_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
					_, _ = c.Write(buf)
				}
			}()
			t.Cleanup(func() { close(stopWriter) })
			waitFor(t, "the bypassed stream to carry 4 MiB", 10*time.Second, func() bool { return s.N.Load() > 4<<20 })

			// The stream must be crossing right up to the kill, or a
			// stall before it would pass for a stop.
			waitFor(t, "data crossing in the 20 ms before the kill", 5*time.Second, func() bool {
				n0 := s.N.Load()
				time.Sleep(20 * time.Millisecond)
				return s.N.Load() > n0
			})
			killed := time.Now()
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no Close, no cleanup
				t.Fatal(err)
			}
			_ = cmd.Wait()
			time.Sleep(tc.limit + 50*time.Millisecond)
			atLimit := s.N.Load()
			time.Sleep(time.Second)
			if s.LastRx.Load() == 0 {
				t.Fatal("no SO_TIMESTAMPNS receive time recorded")
			}
			last := time.Unix(0, s.LastRx.Load())
			stoppedAfter := last.Sub(killed)
			t.Logf("%s: stream stopped %v after SIGKILL (kernel receive time of the last segment the server read)",
				tc.name, stoppedAfter.Round(10*time.Microsecond))
			if stoppedAfter > tc.limit {
				t.Errorf("stream still crossing %v after SIGKILL, want < %v", stoppedAfter, tc.limit)
			}
			if s.N.Load() != atLimit {
				t.Errorf("%d bytes crossed in the second after the limit", s.N.Load()-atLimit)
			}
			for _, port := range []string{l.North, l.South} {
				if out := l.Gateway.IP("-d", "link", "show", port); strings.Contains(out, "xdp") {
					t.Errorf("%s still has an XDP program after the owner died:\n%s", port, out)
				}
			}
			if n := l.TCXPrograms(t); n != [2]int{0, 0} {
				t.Errorf("tcx ingress programs left after the owner died: %v", n)
			}
		})
	}
}
