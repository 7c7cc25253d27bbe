package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// TestRebootedClientLive: an HMI that rebooted reconnects from the same
// source port while the gateway and the Linux server still hold its old
// connection. Through the gateway datapath (as in the evasion harness),
// the crafted client opens a connection, has a read executed, then
// "reboots": it sends a SYN with a new ISN, outside the old window. The
// server's kernel answers with a challenge ACK of the old connection
// (RFC 5961 section 4), which must reach the client; the client resets
// at the acknowledged sequence number, as a stack without the connection
// does, retransmits its SYN and gets a new connection whose read the
// server executes. Before, the gateway dropped the SYN (bad_tcp) until
// the old flow's idle timeout (1 h).
func TestRebootedClientLive(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	srv := startRecServer(t, l.Server, "0.0.0.0:502")
	cmac := macOf(t, l.Client, "eth0")
	l.Server.IP("neigh", "replace", evClient, "lladdr", fmt.Sprintf("%x:%x:%x:%x:%x:%x", cmac[0], cmac[1], cmac[2], cmac[3], cmac[4], cmac[5]), "nud", "permanent", "dev", "eth0")
	eng := startInprocGateway(t, l, fmt.Sprintf(evPolicy, "drop"), nil)
	c := newRawClient(t, l)
	const sport = 40100
	watch := func() *rconn {
		rc := &rconn{synack: make(chan uint32, 1)}
		c.mu.Lock()
		c.conns[sport] = rc
		c.mu.Unlock()
		return rc
	}
	connect := func(rc *rconn, isn uint32, what string) uint32 {
		for try := 0; try < 3; try++ {
			c.send(c.seg(sport, isn, 0, packet.TCPSyn, 0, nil, false, uint16(try)))
			select {
			case s := <-rc.synack:
				c.send(c.seg(sport, isn+1, s+1, packet.TCPAck, 0, nil, false, 10))
				return s
			case <-time.After(time.Second):
			}
		}
		t.Fatalf("%s: no SYN-ACK from the server (engine counters %v)", what, eng.Counters().DropsByName())
		return 0
	}
	req := func(tid byte) []byte { return []byte{0, tid, 0, 0, 0, 6, 1, 3, 0, 10, 0, 2} } // read holding 10-11
	executed := func(n int, what string) {
		for wait := time.Now().Add(3 * time.Second); time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
			srv.mu.Lock()
			got := len(srv.byPort[sport])
			srv.mu.Unlock()
			if got >= n {
				return
			}
		}
		t.Fatalf("%s: the server did not execute the read (engine counters %v)", what, eng.Counters().DropsByName())
	}

	// The connection before the reboot: one read, executed and answered;
	// the client acknowledges the answer so that nothing is retransmitted.
	rc := watch()
	isn := uint32(0x10000000)
	s := connect(rc, isn, "first connection")
	q := req(1)
	c.send(c.seg(sport, isn+1, s+1, packet.TCPAck|packet.TCPPsh, 0, q, false, 11))
	executed(1, "first connection")
	c.send(c.seg(sport, isn+1+uint32(len(q)), s+1+uint32(len(answer(q))), packet.TCPAck, 0, nil, false, 12))
	time.Sleep(100 * time.Millisecond)

	// The reboot: a SYN with an ISN far outside the old window.
	rc = watch()
	isn2 := isn + 1<<30
	c.send(c.seg(sport, isn2, 0, packet.TCPSyn, 0, nil, false, 20))
	var cack uint32
	for wait := time.Now().Add(3 * time.Second); cack == 0 && time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
		if a := rc.ack.Load(); a != 0 {
			cack = uint32(a)
		}
	}
	if want := isn + 1 + uint32(len(q)); cack != want {
		t.Fatalf("challenge ACK: got ack %d, want the old connection's next byte %d (engine counters %v)", cack, want, eng.Counters().DropsByName())
	}
	select {
	case <-rc.synack:
		t.Fatal("the server answered the SYN on its open connection with a SYN-ACK")
	default:
	}
	// The rebooted client knows no such connection: RST at the ACK's
	// acknowledgement number (RFC 9293 section 3.10.7.3), then its SYN
	// again.
	c.send(c.seg(sport, cack, 0, packet.TCPRst, 0, nil, false, 21))
	time.Sleep(50 * time.Millisecond)
	s2 := connect(rc, isn2, "connection after the reboot")
	c.send(c.seg(sport, isn2+1, s2+1, packet.TCPAck|packet.TCPPsh, 0, req(2), false, 22))
	executed(2, "connection after the reboot")
	if d := eng.Counters().Drops[gateway.DropBadTCP]; d != 0 {
		t.Errorf("bad_tcp drops %d, want 0", d)
	}
}
