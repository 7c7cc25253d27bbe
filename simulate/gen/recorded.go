package gen

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Recorded traffic. A case whose traffic a real protocol library can send
// runs that library's client against a real server library over
// 127.0.0.1, through recProxy, a recording TCP proxy. The recorded byte
// streams are cut into application messages (re-chunked by the protocol's
// own length field, so how the kernel split the stream does not matter)
// and written into the scenario's capture with the Builder, on the
// documentation addresses of the suite: no port, sequence number or
// timestamp of the run reaches input.pcap. Each library call is one step
// (recProxy.mark before it); calls are synchronous (one request, its whole
// response, then the next request), so the order of messages is the
// protocol's, not the scheduler's.
//
// What the engine must say stays declared by the case (frame of the
// message the case names, verdict, reason): the recording only supplies
// the bytes.

// recTimeout bounds every recorded exchange.
const recTimeout = 10 * time.Second

// wireMsg is one application message of a recorded connection.
type wireMsg struct {
	client bool // sent by the client (else by the server)
	b      []byte
}

// recording is one recorded TCP connection: its messages in wire order
// and where each step (library call) starts.
type recording struct {
	msgs  []wireMsg
	steps []int // steps[i]: index in msgs of the first message of step i
}

// step returns the messages of step i.
func (r *recording) step(i int) []wireMsg {
	end := len(r.msgs)
	if i+1 < len(r.steps) {
		end = r.steps[i+1]
	}
	return r.msgs[r.steps[i]:end]
}

// msgLen returns the length of the message at the start of b, or 0 when b
// does not hold its length field yet.
type msgLen func(b []byte) int

// chunk is one read of the proxy, or a step mark.
type chunk struct {
	client bool
	mark   bool
	b      []byte
}

// recProxy accepts one connection on 127.0.0.1:0, forwards it to target
// and records every chunk it forwards with its direction, in the order
// read. A chunk is recorded before it is forwarded, so once a client
// call has returned with its response, the response is in the log.
type recProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex // guards log, conns and err
	log    []chunk
	conns  []net.Conn
	err    error
	closed bool
}

func startProxy(target string) (*recProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &recProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.runAccept()
	return p, nil
}

// Addr is the address the client dials.
func (p *recProxy) Addr() string { return p.ln.Addr().String() }

func (p *recProxy) runAccept() {
	defer p.wg.Done()
	c, err := p.ln.Accept()
	if err != nil {
		return // closed before the client came
	}
	_ = p.ln.Close() // one connection per recording
	s, err := net.DialTimeout("tcp", p.target, recTimeout)
	if err != nil {
		p.fail(err)
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, s)
	closed := p.closed
	p.mu.Unlock()
	if closed {
		_ = c.Close()
		_ = s.Close()
		return
	}
	p.wg.Add(2)
	go p.runCopy(c, s, true)
	go p.runCopy(s, c, false)
}

func (p *recProxy) runCopy(from, to net.Conn, client bool) {
	defer p.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.log = append(p.log, chunk{client: client, b: append([]byte(nil), buf[:n]...)})
			p.mu.Unlock()
			if _, werr := to.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	// Half-close: let the other direction drain.
	if tc, ok := to.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *recProxy) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

// mark starts a new step: everything recorded so far belongs to the
// previous ones.
func (p *recProxy) mark() {
	p.mu.Lock()
	p.log = append(p.log, chunk{mark: true})
	p.mu.Unlock()
}

// finish stops the proxy (closing both connections) and cuts the log into
// messages with length. Bytes of a message left incomplete at the end (a
// close racing the shutdown) are dropped.
func (p *recProxy) finish(length msgLen) (*recording, error) {
	p.mu.Lock()
	p.closed = true
	log := append([]chunk(nil), p.log...) // what the steps produced
	for _, c := range p.conns {
		_ = c.Close()
	}
	err := p.err
	p.mu.Unlock()
	_ = p.ln.Close()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(recTimeout):
		return nil, errors.New("gen: recording proxy did not stop")
	}
	if err != nil {
		return nil, err
	}
	return cut(log, length)
}

// cut turns a chunk log into messages: the bytes of each direction are
// concatenated and split where length says a message ends.
func cut(log []chunk, length msgLen) (*recording, error) {
	r := &recording{}
	var pend [2][]byte // [0] server, [1] client
	for _, c := range log {
		if c.mark {
			if len(pend[0])+len(pend[1]) != 0 {
				return nil, errors.New("gen: a message spans two steps (call returned before its response was complete)")
			}
			r.steps = append(r.steps, len(r.msgs))
			continue
		}
		d := 0
		if c.client {
			d = 1
		}
		pend[d] = append(pend[d], c.b...)
		for {
			n := length(pend[d])
			if n <= 0 || n > len(pend[d]) {
				break
			}
			r.msgs = append(r.msgs, wireMsg{client: c.client, b: append([]byte(nil), pend[d][:n]...)})
			pend[d] = pend[d][n:]
		}
	}
	return r, nil
}

// play writes every message of r's steps [from, to) on c.
func (c *Conn) play(r *recording, from, to int) {
	for i := from; i < to; i++ {
		for _, m := range r.step(i) {
			c.msg(m)
		}
	}
}

// request writes the client messages of step i (the request the case
// expects a verdict on: a gateway that drops it means the server never
// sees it, so its answer is not written) and returns the frame of the
// last one.
func (c *Conn) request(r *recording, i int) int {
	f := 0
	for _, m := range r.step(i) {
		if m.client {
			f = c.msg(m)
		}
	}
	if f == 0 {
		panic(fmt.Sprintf("gen: step %d of the recording has no request", i))
	}
	return f
}

func (c *Conn) msg(m wireMsg) int {
	if m.client {
		return c.C(m.b)
	}
	return c.S(m.b)
}

// freePort returns a port on 127.0.0.1 that was free a moment ago, for
// server libraries that cannot listen on port 0 and report it.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
