package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"golang.org/x/sys/unix"
)

// recServer is a Modbus/TCP server that records, per connection, every
// byte its recv() calls return and every request it would execute (each
// complete ADU its own framing finds, exactly as read). It answers reads
// of holding registers with zeros and echoes single writes, so clients see
// a working PLC. It is the receiver of the wire-equivalence tests: a
// request it executed that the gateway did not judge and allow is a
// bypass.
type recServer struct {
	ln   net.Listener
	idle time.Duration // a connection silent this long is closed (default 30s)
	mu   sync.Mutex    // guards raw, reqs and byPort
	raw  [][]byte      // per accepted connection: every byte recv() returned
	reqs [][]byte      // every complete request ADU, in arrival order
	// byPort: the requests executed per client port.
	byPort map[uint16][][]byte
}

// startRecServer listens on addr (e.g. "0.0.0.0:502") inside ns.
func startRecServer(t *testing.T, ns *netns.NS, addr string) *recServer {
	t.Helper()
	s := &recServer{idle: 30 * time.Second, byPort: map[uint16][][]byte{}}
	if err := ns.Do(func() (err error) {
		s.ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.ln.Close() })
	go s.serve()
	return s
}

func (s *recServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.raw = append(s.raw, nil)
		i := len(s.raw) - 1
		s.mu.Unlock()
		go s.conn(c, i)
	}
}

func (s *recServer) conn(c net.Conn, i int) {
	defer c.Close()
	var port uint16
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		port = uint16(a.Port)
	}
	s.mu.Lock()
	idle := s.idle
	s.mu.Unlock()
	var buf []byte
	b := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(b)
		if n > 0 {
			s.mu.Lock()
			s.raw[i] = append(s.raw[i], b[:n]...)
			s.mu.Unlock()
			buf = append(buf, b[:n]...)
		}
		for len(buf) >= 7 {
			l := int(binary.BigEndian.Uint16(buf[4:]))
			if l < 2 || l > 254 {
				return // not Modbus: a PLC would close the connection
			}
			if len(buf) < 6+l {
				break
			}
			req := append([]byte(nil), buf[:6+l]...)
			buf = buf[6+l:]
			s.mu.Lock()
			s.reqs = append(s.reqs, req)
			s.byPort[port] = append(s.byPort[port], req)
			s.mu.Unlock()
			if _, werr := c.Write(answer(req)); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// answer builds the response a PLC would send to req.
func answer(req []byte) []byte {
	h := append([]byte(nil), req[:7]...)
	fc := req[7]
	var pdu []byte
	switch {
	case fc == 3 && len(req) >= 12:
		q := int(binary.BigEndian.Uint16(req[10:]))
		q = min(q, 125)
		pdu = append([]byte{3, byte(2 * q)}, make([]byte, 2*q)...)
	case fc == 6 && len(req) >= 12:
		pdu = append([]byte(nil), req[7:12]...)
	default:
		pdu = []byte{fc | 0x80, 1}
	}
	binary.BigEndian.PutUint16(h[4:], uint16(1+len(pdu)))
	return append(h, pdu...)
}

// requests returns a copy of the requests executed so far.
func (s *recServer) requests() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.reqs...)
}

// writes returns the executed requests with a write function code.
func (s *recServer) writes() [][]byte {
	var out [][]byte
	for _, r := range s.requests() {
		switch r[7] {
		case 5, 6, 15, 16, 22, 23:
			out = append(out, r)
		}
	}
	return out
}

// sendUrgent connects to addr and sends head with MSG_OOB (its last byte
// urgent) and then tail, under TCP_CORK so that both leave in one segment
// carrying URG, as in issue 13. It keeps the connection open for hold.
func sendUrgent(addr string, head, tail []byte, hold time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1); serr != nil {
			return
		}
		if serr = unix.Send(int(fd), head, unix.MSG_OOB); serr != nil {
			return
		}
		if serr = unix.Send(int(fd), tail, 0); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 0)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("urgent send: %w", serr)
	}
	time.Sleep(hold)
	return nil
}

// urgentWrites are the two attacks of issue 13: FC 6 write holding 0 =
// 258 with one extra urgent byte inside the MBAP header (the parser, kept
// inline, reads length 254) or after the unit id (it reads FC 3 read
// holding 1536). head ends with the urgent byte.
var urgentWrites = []struct {
	name       string
	head, tail []byte
}{
	{"in MBAP header", []byte{0, 7, 0, 0, 0, 0xfe}, []byte{6, 1, 6, 0, 0, 1, 2}},
	{"after unit id", []byte{0, 8, 0, 0, 0, 6, 1, 3}, []byte{6, 0, 0, 1, 2}},
}

// TestUrgentDataLive: a real Linux client sends a write hidden with
// urgent data (send MSG_OOB under TCP_CORK) through `otgw run` to a real
// Linux receiver under a read-only policy. First, without the gateway
// (loopback in the server namespace), the receiver is shown to execute
// FC 6 write holding 0 = 258: the attack is real. Through the gateway the
// write is never executed and the gateway reports evasion:tcp_urgent.
func TestUrgentDataLive(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tc := range urgentWrites {
		t.Run(tc.name, func(t *testing.T) {
			l := netns.NewLine(t)
			srv := startRecServer(t, l.Server, "0.0.0.0:502")
			// The receiver's interpretation, no gateway in the path.
			if err := l.Server.Do(func() error { return sendUrgent("127.0.0.1:502", tc.head, tc.tail, 300*time.Millisecond) }); err != nil {
				t.Fatal(err)
			}
			// The server records what it executed in its own goroutine:
			// wait for it (bounded), then check it is exactly the write.
			w := srv.writes()
			for deadline := time.Now().Add(5 * time.Second); len(w) == 0 && time.Now().Before(deadline); w = srv.writes() {
				time.Sleep(10 * time.Millisecond)
			}
			if len(w) != 1 || binary.BigEndian.Uint16(w[0][8:]) != 0 || binary.BigEndian.Uint16(w[0][10:]) != 258 {
				t.Fatalf("receiver without gateway executed %x, want one FC 6 write holding 0 = 258", w)
			}
			before := len(srv.requests())
			g := startGateway(t, l, policyYAML("enforce", "drop"))
			if err := l.Client.Do(func() error {
				return sendUrgent(l.ServerAddr+":502", tc.head, tc.tail, 1500*time.Millisecond)
			}); err != nil {
				t.Fatal(err)
			}
			if got := srv.requests()[before:]; len(got) != 0 {
				t.Errorf("through the gateway the receiver executed %x, want nothing", got)
			}
			ev := g.waitEvent("evasion", 5*time.Second, func(e event) bool { return e.Reason == "evasion:tcp_urgent" })
			if ev.Type != "deny" || ev.Action != "drop" {
				t.Errorf("evasion event type %q action %q, want deny drop", ev.Type, ev.Action)
			}
		})
	}
}
