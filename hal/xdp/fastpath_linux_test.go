package xdp

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

var modes = []Mode{ModeNative, ModeGeneric}

// udpConn opens a UDP socket bound to addr inside ns.
func udpConn(t *testing.T, ns *netns.NS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() error {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err == nil {
			c, err = net.ListenUDP("udp4", a)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recvCount reads datagrams on c until quiet for wait and returns how
// many arrived.
func recvCount(c *net.UDPConn, wait time.Duration, reply bool) int {
	buf := make([]byte, 2048)
	n := 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		m, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return n
		}
		n++
		if reply {
			_, _ = c.WriteToUDP(buf[:m], from)
		}
	}
}

// A UDP flow in the map crosses the gateway in both directions with no
// user-space forwarder; other traffic does not; counters count; Remove
// stops it.
func TestFastPathUDP(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			l := line(t)
			b := newFastPath(t, l, Config{Mode: mode})
			if b.Mode(North) != mode || b.Mode(South) != mode {
				t.Fatalf("modes %s/%s, want %s", b.Mode(North), b.Mode(South), mode)
			}
			cli := udpConn(t, l.Client, "192.0.2.1:40000")
			srv9 := udpConn(t, l.Server, "0.0.0.0:9")
			srv10 := udpConn(t, l.Server, "0.0.0.0:10")
			to9 := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9}
			to10 := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 10}
			payload := bytes.Repeat([]byte{0xab}, 100)
			send := func(to *net.UDPAddr, n int) {
				for i := 0; i < n; i++ {
					if _, err := cli.WriteToUDP(payload, to); err != nil {
						t.Fatal(err)
					}
				}
			}

			send(to9, 5)
			if got := recvCount(srv9, 200*time.Millisecond, false); got != 0 {
				t.Fatalf("before Add: %d datagrams crossed, want 0 (nothing forwards)", got)
			}
			k := udpKey("192.0.2.1:40000", "192.0.2.2:9")
			if err := b.Add(k, South); err != nil {
				t.Fatal(err)
			}
			const n = 100
			replies := make(chan int, 1)
			// Idle bounds of a second: the first datagram may be a while
			// coming on a loaded machine, and the reader of replies starts
			// before anything is sent.
			go func() { replies <- recvCount(cli, time.Second, false) }()
			send(to9, n)
			send(to10, 5)
			if got := recvCount(srv9, time.Second, true); got != n {
				t.Errorf("bypassed flow: %d of %d datagrams crossed", got, n)
			}
			if got := recvCount(srv10, 100*time.Millisecond, false); got != 0 {
				t.Errorf("port 10 (not bypassed): %d datagrams crossed, want 0", got)
			}
			if got := <-replies; got != n {
				t.Errorf("reverse direction: %d of %d replies crossed", got, n)
			}
			f, err := b.Lookup(k)
			if err != nil {
				t.Fatal(err)
			}
			frameLen := uint64(14 + 20 + 8 + len(payload))
			if f.Forward.Packets != n || f.Forward.Bytes != n*frameLen || f.Reverse.Packets != n || f.Reverse.Bytes != n*frameLen {
				t.Errorf("counters %+v / %+v, want %d packets, %d bytes each way", f.Forward, f.Reverse, n, n*frameLen)
			}
			var walked []Flow
			if err := b.Walk(func(f Flow) bool { walked = append(walked, f); return true }); err != nil {
				t.Fatal(err)
			}
			if len(walked) != 1 || walked[0] != f {
				t.Errorf("Walk = %+v, want [%+v]", walked, f)
			}

			if err := b.Remove(k); err != nil {
				t.Fatal(err)
			}
			send(to9, 10)
			if got := recvCount(srv9, 200*time.Millisecond, false); got != 0 {
				t.Errorf("after Remove: %d datagrams crossed, want 0", got)
			}
			if err := b.Remove(k); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Remove: %v, want ErrNotFound", err)
			}
			st, err := b.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.Redirected != 2*n || st.NoMatch < 5+5+10 {
				t.Errorf("stats %+v: want %d redirected, >= 20 not matched", st, 2*n)
			}
		})
	}
}

// A TCP connection whose handshake went through user space (the test's
// forwarder, standing in for the engine) is bypassed after Add: its bulk
// data never reaches user space; FIN reaches user space, closes the flow
// in the map and the connection ends normally through the forwarder;
// Expire then removes the flow and reports its counters. In tc mode the
// forwarder's ring ports carry the socket filter, as the gateway opens
// them: the bulk data crosses and none of it reaches the forwarder.
func TestFastPathTCP(t *testing.T) {
	for _, mode := range append(modes[:len(modes):len(modes)], ModeTC) {
		t.Run(mode.String(), func(t *testing.T) {
			l := line(t)
			b := newFastPath(t, l, Config{Mode: mode})
			var fw *forwarder
			if mode == ModeTC {
				fw = startForwarderOpts(t, l, 5001, hal.PortOptions{IO: hal.IORing, SocketFilter: b.SocketFilter()})
			} else {
				fw = startForwarder(t, l, 5001)
			}
			s := newSink(listen(t, l.Server, "tcp4", "0.0.0.0:5001"))
			c := dialFrom(t, l.Client, "tcp4", "192.0.2.1:40001", "192.0.2.2:5001")
			// The forwarder records the client's final ACK after it
			// forwarded it, which may be after connect returned.
			var hs []tcpSeen
			waitFor(t, "the handshake's 3 segments in user space", 2*time.Second, func() bool {
				hs = append(hs, fw.take()...)
				return len(hs) >= 3
			})
			k := tcpKey("192.0.2.1:40001", "192.0.2.2:5001")
			if err := b.Add(k, South); err != nil {
				t.Fatal(err)
			}
			const total = 8 << 20
			buf := make([]byte, 64<<10)
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			for sent := 0; sent < total; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "8 MiB at the server", 10*time.Second, func() bool { return s.n.Load() == total })
			if seen := fw.take(); len(seen) != 0 {
				t.Errorf("bulk transfer: %d frames of the flow reached user space, want 0 (first %+v)", len(seen), seen[0])
			}
			f, err := b.Lookup(k)
			if err != nil {
				t.Fatal(err)
			}
			if f.Closed || f.Forward.Bytes < total || f.Forward.Packets < total/1500 || f.Reverse.Packets == 0 {
				t.Errorf("counters during the stream: %+v", f)
			}

			// Close: the FIN goes to user space and the forwarder carries it.
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.eof:
			case <-time.After(5 * time.Second):
				t.Fatal("the server never saw the FIN")
			}
			if s.n.Load() != total {
				t.Errorf("server read %d bytes, want %d", s.n.Load(), total)
			}
			var finFromClient bool
			for _, x := range fw.take() {
				if x.sport == 40001 && x.flags&0x01 != 0 {
					finFromClient = true
				}
			}
			if !finFromClient {
				t.Error("the client's FIN did not reach user space")
			}
			if f, err = b.Lookup(k); err != nil || !f.Closed {
				t.Errorf("after FIN: Lookup = %+v, %v; want closed", f, err)
			}
			var expired []Flow
			n, err := b.Expire(time.Hour, func(f Flow) { expired = append(expired, f) })
			if err != nil || n != 1 || len(expired) != 1 || expired[0].Key != k || expired[0].Forward.Bytes < total {
				t.Errorf("Expire = %d, %v, %+v; want the closed flow with its counters", n, err, expired)
			}
			if _, err := b.Lookup(k); !errors.Is(err, ErrNotFound) {
				t.Errorf("after Expire: Lookup error %v, want ErrNotFound", err)
			}
		})
	}
}

// Expire removes flows idle for the timeout and keeps active ones.
func TestExpireIdle(t *testing.T) {
	l := line(t)
	b := newFastPath(t, l, Config{})
	idle, busy := udpKey("192.0.2.1:1000", "192.0.2.2:9"), udpKey("192.0.2.1:1001", "192.0.2.2:9")
	for _, k := range []Key{idle, busy} {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	run(t, b, North, frame(t, frameSpec{key: busy, payload: 10}), l.Gateway.Do) // busy seen now
	var got []Key
	n, err := b.Expire(200*time.Millisecond, func(f Flow) { got = append(got, f.Key) })
	if err != nil || n != 1 || len(got) != 1 || got[0] != idle {
		t.Errorf("Expire = %d, %v, %v; want only %s", n, err, got, idle)
	}
	if _, err := b.Lookup(busy); err != nil {
		t.Errorf("busy flow: %v", err)
	}
}

func TestAddErrors(t *testing.T) {
	l := line(t)
	b := newFastPath(t, l, Config{MaxFlows: 2})
	if err := b.Add(Key{Proto: 1}, South); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("invalid key: %v, want ErrInvalidKey", err)
	}
	keys := []Key{
		udpKey("192.0.2.1:1000", "192.0.2.2:9"),
		udpKey("192.0.2.1:1001", "192.0.2.2:9"),
		udpKey("192.0.2.1:1002", "192.0.2.2:9"),
	}
	for _, k := range keys[:2] {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Add(keys[0].Reverse(), North); err != nil { // replaces both entries of keys[0]
		t.Errorf("re-adding a flow from the other side: %v", err)
	}
	if err := b.Add(keys[2], South); !errors.Is(err, ErrFull) {
		t.Errorf("third flow with MaxFlows 2: %v, want ErrFull", err)
	}
	if _, err := b.Lookup(keys[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused Add left an entry: %v", err)
	}
	for _, port := range []string{l.North, l.South} {
		if out := l.Gateway.IP("-d", "link", "show", port); !strings.Contains(out, "xdp") {
			t.Errorf("ip link does not show the program on %s:\n%s", port, out)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(keys[2], South); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if out := l.Gateway.IP("-d", "link", "show", l.North); strings.Contains(out, "xdp") {
		t.Errorf("program still attached after Close:\n%s", out)
	}
}

// Where the kernel refuses, New returns ErrUnavailable and leaves nothing
// attached: here the loopback device, which has no native XDP.
func TestUnavailableLeavesNothingAttached(t *testing.T) {
	l := line(t)
	err := l.Gateway.Do(func() error {
		b, err := New(Config{North: l.North, South: "lo", Mode: ModeNative})
		if err == nil {
			b.Close()
		}
		return err
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New on lo in native mode: %v, want ErrUnavailable", err)
	}
	t.Logf("the error a caller logs: %v", err)
	if out := l.Gateway.IP("-d", "link", "show", l.North); strings.Contains(out, "xdp") {
		t.Errorf("program left attached after a failed New:\n%s", out)
	}
	err = l.Gateway.Do(func() error { _, err := New(Config{North: l.North, South: "nosuch0"}); return err })
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("missing interface: %v, want a plain error", err)
	}
}

// Peers that leave checksums to offload (CHECKSUM_PARTIAL, the veth
// default): in generic mode the sk_buff keeps that state across the
// redirect and the receiver accepts the datagrams; a native-mode redirect
// turns the frame into an xdp_frame without it, and the receiver drops
// them for a bad checksum (logged, not asserted: kernel behaviour). The
// sim board therefore either turns the peers' transmit checksumming off
// or uses ModeGeneric.
func TestChecksumPartialPeers(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			testenv.NeedRoot(t)
			l := netns.NewLine(t)
			for _, p := range []struct {
				ns      *netns.NS
				mac     net.HardwareAddr
				peer    string
				peerMAC net.HardwareAddr
			}{{l.Client, cliMAC, l.ServerAddr, srvMAC}, {l.Server, srvMAC, l.ClientAddr, cliMAC}} {
				p.ns.IP("link", "set", "eth0", "address", p.mac.String())
				p.ns.IP("neigh", "replace", p.peer, "lladdr", p.peerMAC.String(), "dev", "eth0", "nud", "permanent")
				if err := p.ns.Do(func() error { return hal.SetFeatures("eth0", map[string]bool{"rx-gro": true}) }); err != nil {
					t.Fatal(err)
				}
			}
			b := newFastPath(t, l, Config{Mode: mode})
			k := udpKey("192.0.2.1:40000", "192.0.2.2:9")
			if err := b.Add(k, South); err != nil {
				t.Fatal(err)
			}
			cli := udpConn(t, l.Client, "192.0.2.1:40000")
			srv := udpConn(t, l.Server, "0.0.0.0:9")
			for i := 0; i < 10; i++ {
				if _, err := cli.WriteToUDP(make([]byte, 100), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9}); err != nil {
					t.Fatal(err)
				}
			}
			got := recvCount(srv, 300*time.Millisecond, false)
			f, err := b.Lookup(k)
			if err != nil || f.Forward.Packets != 10 {
				t.Fatalf("Lookup = %+v, %v; want 10 redirected", f, err)
			}
			t.Logf("%s mode, peers' transmit checksumming on: %d of 10 datagrams accepted by the receiver", mode, got)
			if mode == ModeGeneric && got != 10 {
				t.Errorf("generic mode: %d of 10 delivered, want 10", got)
			}
		})
	}
}

// With peers as veth creates them (GRO off, so no NAPI; checksum offload
// on), ModeAuto picks generic mode on the veth ports and the bypassed flow
// crosses. ModeNative there redirects into a veth whose peer cannot take
// xdp_frames, and the kernel drops them silently (logged, not asserted:
// kernel behaviour).
func TestAutoModeOnVeth(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeNative} {
		t.Run(mode.String(), func(t *testing.T) {
			testenv.NeedRoot(t)
			l := netns.NewLine(t)
			for _, p := range []struct {
				ns      *netns.NS
				mac     net.HardwareAddr
				peer    string
				peerMAC net.HardwareAddr
			}{{l.Client, cliMAC, l.ServerAddr, srvMAC}, {l.Server, srvMAC, l.ClientAddr, cliMAC}} {
				p.ns.IP("link", "set", "eth0", "address", p.mac.String())
				p.ns.IP("neigh", "replace", p.peer, "lladdr", p.peerMAC.String(), "dev", "eth0", "nud", "permanent")
			}
			b := newFastPath(t, l, Config{Mode: mode})
			if mode == ModeAuto && (b.Mode(North) != ModeGeneric || b.Mode(South) != ModeGeneric) {
				t.Fatalf("ModeAuto on veth: %s/%s, want generic", b.Mode(North), b.Mode(South))
			}
			k := udpKey("192.0.2.1:40000", "192.0.2.2:9")
			if err := b.Add(k, South); err != nil {
				t.Fatal(err)
			}
			cli := udpConn(t, l.Client, "192.0.2.1:40000")
			srv := udpConn(t, l.Server, "0.0.0.0:9")
			for i := 0; i < 10; i++ {
				if _, err := cli.WriteToUDP(make([]byte, 100), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9}); err != nil {
					t.Fatal(err)
				}
			}
			got := recvCount(srv, 300*time.Millisecond, false)
			f, err := b.Lookup(k)
			if err != nil || f.Forward.Packets != 10 {
				t.Fatalf("Lookup = %+v, %v; want 10 redirected", f, err)
			}
			t.Logf("%s (%s mode) with default veth peers: %d of 10 datagrams delivered", mode, b.Mode(North), got)
			if mode == ModeAuto && got != 10 {
				t.Errorf("ModeAuto: %d of 10 delivered, want 10", got)
			}
		})
	}
}
