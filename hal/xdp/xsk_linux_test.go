package xdp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
)

var _ hal.XSKMap = (*FastPath)(nil)

// With Config.XSK the bypass and the gateway's AF_XDP ports share the
// program on each port: a bypassed flow crosses inside the kernel and
// never reaches the sockets, every other frame reaches them (and the
// stand-in engine forwards it); after the ports close, nothing but the
// bypassed flow crosses.
func TestFastPathXSK(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			l := line(t)
			b := newFastPath(t, l, Config{Mode: mode, XSK: true})
			f := startForwarderOpts(t, l, 0, hal.PortOptions{IO: hal.IOXDP, XSKMap: b})
			for _, p := range f.ports {
				if got := hal.PortIO(p); got != hal.IOXDP {
					t.Fatalf("PortIO(%s) = %q, want xdp", p.Name(), got)
				}
			}
			cli := udpConn(t, l.Client, "192.0.2.1:40000")
			srv9 := udpConn(t, l.Server, "0.0.0.0:9")
			srv10 := udpConn(t, l.Server, "0.0.0.0:10")
			to9 := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9}
			to10 := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 10}
			payload := bytes.Repeat([]byte{0xcd}, 200)
			send := func(to *net.UDPAddr, n int) {
				for i := 0; i < n; i++ {
					if _, err := cli.WriteToUDP(payload, to); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := b.Add(udpKey("192.0.2.1:40000", "192.0.2.2:9"), South); err != nil {
				t.Fatal(err)
			}
			const n = 50
			send(to10, n)
			if got := recvCount(srv10, 300*time.Millisecond, false); got != n {
				t.Errorf("through the AF_XDP ports: %d of %d datagrams crossed", got, n)
			}
			rx0 := f.ports[0].Stats().RxFrames
			send(to9, n)
			if got := recvCount(srv9, 300*time.Millisecond, false); got != n {
				t.Errorf("bypassed: %d of %d datagrams crossed", got, n)
			}
			if rx := f.ports[0].Stats().RxFrames - rx0; rx != 0 {
				t.Errorf("bypassed: %d frames reached the AF_XDP socket, want 0", rx)
			}
			f.stop()
			send(to10, 5)
			if got := recvCount(srv10, 200*time.Millisecond, false); got != 0 {
				t.Errorf("ports closed: %d datagrams crossed, want 0", got)
			}
			send(to9, 5)
			if got := recvCount(srv9, 200*time.Millisecond, false); got != 5 {
				t.Errorf("ports closed, bypassed flow: %d of 5 crossed", got)
			}
		})
	}
}
