package xdp

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
)

const benchPhase = 2 * time.Second

// benchSmall blasts 60-byte UDP frames (192.0.2.1:40000 > 192.0.2.2:9)
// from the client's port for benchPhase and counts those the server's
// port receives (both AF_PACKET, so the endpoints' stacks are not in the
// figure). It returns frames/s offered and delivered.
func benchSmall(t *testing.T, l *netns.Line) (offered, delivered float64) {
	t.Helper()
	var tx, rx hal.Port
	if err := l.Client.Do(func() (err error) { tx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := l.Server.Do(func() (err error) { rx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	fr := frame(t, frameSpec{key: udpKey("192.0.2.1:40000", "192.0.2.2:9"), payload: 18})
	var got atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, hal.MaxBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, hal.MaxBatch)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _ := rx.ReadBatch(bufs, sizes, nil)
			for i := 0; i < n; i++ {
				if sizes[i] == len(fr) && bufs[i][23] == ProtoUDP {
					got.Add(1)
				}
			}
		}
	}()
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = fr
	}
	var sent int64
	start := time.Now()
	for time.Since(start) < benchPhase {
		n, _ := tx.WriteBatch(batch)
		sent += int64(n)
	}
	el := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	return float64(sent) / el.Seconds(), float64(got.Load()) / el.Seconds()
}

// benchTCP sends bulk TCP from the client (fixed source port) to the
// server for benchPhase and returns the bits/s the server read. bypass,
// when not nil, is called after the handshake (which crossed by whatever
// forwards at that moment).
func benchTCP(t *testing.T, l *netns.Line, srcPort int, bypass func(Key)) float64 {
	t.Helper()
	ln := listen(t, l.Server, "tcp4", "0.0.0.0:5001")
	s := newSink(ln)
	c := dialFrom(t, l.Client, "tcp4", fmt.Sprintf("192.0.2.1:%d", srcPort), "192.0.2.2:5001")
	if bypass != nil {
		bypass(tcpKey(fmt.Sprintf("192.0.2.1:%d", srcPort), "192.0.2.2:5001"))
	}
	buf := make([]byte, 64<<10)
	_ = c.SetWriteDeadline(time.Now().Add(benchPhase + 2*time.Second))
	n0, start := s.n.Load(), time.Now()
	for time.Since(start) < benchPhase {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("tcp bench write: %v", err)
		}
	}
	bits := float64(s.n.Load()-n0) * 8 / time.Since(start).Seconds()
	_ = c.Close()
	_ = ln.Close()
	return bits
}

type benchRow struct {
	name           string
	offered, small float64
	tcp            float64
}

func benchBridge(t *testing.T, l *netns.Line, srcPort int) benchRow {
	// The gateway ports' offloads off, as the gateway has them.
	l.Gateway.IP("link", "add", "br0", "type", "bridge")
	for _, p := range []string{l.North, l.South} {
		err := l.Gateway.Do(func() error {
			return hal.SetFeatures(p, map[string]bool{"tx-tcp-segmentation": false, "tx-generic-segmentation": false, "rx-gro": false})
		})
		if err != nil {
			t.Fatal(err)
		}
		l.Gateway.IP("link", "set", p, "master", "br0")
	}
	l.Gateway.IP("link", "set", "br0", "up")
	time.Sleep(300 * time.Millisecond)
	r := benchRow{name: "kernel bridge"}
	r.offered, r.small = benchSmall(t, l)
	r.tcp = benchTCP(t, l, srcPort, nil)
	for _, p := range []string{l.North, l.South} {
		l.Gateway.IP("link", "set", p, "nomaster")
	}
	l.Gateway.IP("link", "del", "br0")
	return r
}

func benchBypass(t *testing.T, l *netns.Line, mode Mode, srcPort int) benchRow {
	var b *Bypass
	if err := l.Gateway.Do(func() (err error) {
		b, err = New(Config{North: l.North, South: l.South, Mode: mode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The stand-in engine forwards what XDP passes (the TCP handshake
	// crosses through it; ARP is static here).
	fw := startForwarder(t, l, 5001)
	r := benchRow{name: "XDP bypass, " + mode.String() + " mode"}
	if err := b.Add(udpKey("192.0.2.1:40000", "192.0.2.2:9"), South); err != nil {
		t.Fatal(err)
	}
	r.offered, r.small = benchSmall(t, l)
	r.tcp = benchTCP(t, l, srcPort, func(k Key) {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	})
	st, _ := b.Stats()
	t.Logf("%s: program stats %+v; frames the user-space forwarder saw on port 5001: %d", r.name, st, len(fw.take()))
	fw.stop()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return r
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// TestBypassBench is `make bench-xdp`: the kernel bridge and the XDP
// bypass (native and generic mode) on the same veth line, interleaved
// over OTGW_BENCH_ROUNDS rounds (default 3): small-packet rate of one
// bypassed UDP flow and TCP throughput of one bypassed stream; medians
// with the range. Enabled by OTGW_BENCH_XDP=1; the table goes to the log
// and to $OTGW_BENCH_OUT when set.
func TestBypassBench(t *testing.T) {
	if os.Getenv("OTGW_BENCH_XDP") != "1" {
		t.Skip("set OTGW_BENCH_XDP=1 (make bench-xdp)")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("OTGW_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	l := line(t)
	names := []string{"kernel bridge", "XDP bypass, native mode", "XDP bypass, generic mode"}
	small := make([][]float64, len(names))
	offered := make([][]float64, len(names))
	tcp := make([][]float64, len(names))
	for round := 0; round < rounds; round++ {
		rs := []benchRow{benchBridge(t, l, 40100+10*round)}
		for i, mode := range modes {
			rs = append(rs, benchBypass(t, l, mode, 40101+10*round+i))
		}
		for i, r := range rs {
			small[i] = append(small[i], r.small)
			offered[i] = append(offered[i], r.offered)
			tcp[i] = append(tcp[i], r.tcp)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var sb strings.Builder
	fmt.Fprintf(&sb, "| path | small packets: frames/s delivered, median [min-max] (offered) | vs bridge | TCP, one stream, median [min-max] | vs bridge |\n|---|---|---|---|---|\n")
	for i, name := range names {
		fmt.Fprintf(&sb, "| %s | %.0f [%.0f-%.0f] (%.0f) | %.2fx | %.0f Mbit/s [%.0f-%.0f] | %.2fx |\n",
			name, median(small[i]), slices.Min(small[i]), slices.Max(small[i]), median(offered[i]),
			median(small[i])/median(small[0]),
			median(tcp[i])/1e6, slices.Min(tcp[i])/1e6, slices.Max(tcp[i])/1e6, median(tcp[i])/median(tcp[0]))
	}
	fmt.Fprintf(&sb, "\n%d rounds, %v per phase; load average at the end: %s", rounds, benchPhase, load)
	t.Logf("\n%s", sb.String())
	if out := os.Getenv("OTGW_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(sb.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
