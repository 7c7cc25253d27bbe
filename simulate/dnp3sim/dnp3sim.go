// Package dnp3sim is a tiny DNP3 master and outstation over TCP (IEEE
// 1815-2012), built on the encoders and decoders of protocols/dnp3, for
// the gateway's end-to-end tests and demos: no DNP3 peer is installable
// from Debian.
//
// The outstation answers READ of analog inputs (g30, any variation asked)
// with g30v2 points 0-3 (16-bit with flag, values 100+i), READ of binary
// inputs (g1) with g1v2 points 0-3, class 0 (g60v1) with both, and
// SELECT/OPERATE/DIRECT_OPERATE of g12v1 by echoing the request objects
// (status success); it counts the operations it executed, so a test can
// prove a denied control never reached it. Other functions get a null
// response with IIN2 "function code not supported" (clause 5.2.2.2).
//
// Link layer: unconfirmed user data only (no link confirms), as DNP3 over
// TCP usually runs (IEEE 1815-2012 annex on networking).
package dnp3sim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/protocols/dnp3"
)

// IIN2 bits (IEEE 1815-2012 internal indications IIN2.0-IIN2.2).
const (
	IIN2NoFuncCodeSupport = 0x01
	IIN2ObjectUnknown     = 0x02
)

// ErrClosed: the connection ended.
var ErrClosed = errors.New("dnp3sim: connection closed")

// conn reads and writes application fragments over one TCP connection.
type conn struct {
	c     net.Conn
	local uint16 // our link address
	peer  uint16
	ctrl  uint8 // CONTROL octet of our frames
	rbuf  []byte
	reasm dnp3.Reassembler
	lf    dnp3.LinkFrame
	tseq  uint8
}

// readFragment returns the next complete application fragment (a copy).
func (c *conn) readFragment() ([]byte, error) {
	var fr dnp3.Framer
	tmp := make([]byte, 4096)
	for {
		for len(c.rbuf) > 0 {
			n, _, err := fr.Next(c.rbuf)
			if n == 0 {
				break
			}
			frame := c.rbuf[:n]
			c.rbuf = c.rbuf[n:]
			if err != nil || c.lf.Decode(frame) != nil {
				continue
			}
			ud := c.lf.UserData()
			if len(ud) == 0 {
				continue
			}
			if frag, _ := c.reasm.Add(ud); frag != nil {
				return append([]byte(nil), frag...), nil
			}
		}
		n, err := c.c.Read(tmp)
		if n > 0 {
			c.rbuf = append(c.rbuf, tmp[:n]...)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ErrClosed
			}
			return nil, err
		}
	}
}

func (c *conn) writeFragment(apdu []byte) error {
	var out []byte
	out, c.tseq = dnp3.AppendLinkFramesSeq(nil, c.ctrl, c.peer, c.local, c.tseq, apdu)
	_, err := c.c.Write(out)
	return err
}

// Outstation serves DNP3 on a listener.
type Outstation struct {
	Addr       uint16 // own link address
	operations atomic.Int64
	requests   atomic.Int64
	ln         net.Listener
	wg         sync.WaitGroup
}

// Operations returns how many control operations the outstation executed.
func (o *Outstation) Operations() int64 { return o.operations.Load() }

// Requests returns how many application requests it answered.
func (o *Outstation) Requests() int64 { return o.requests.Load() }

// Listen starts serving on addr ("0.0.0.0:20000"); the socket is created
// in the calling thread's network namespace.
func (o *Outstation) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	o.ln = ln
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.wg.Add(1)
			go func() { defer o.wg.Done(); o.serve(c) }()
		}
	}()
	return nil
}

// Close stops the listener and waits for the connections to end.
func (o *Outstation) Close() error {
	if o.ln == nil {
		return nil
	}
	err := o.ln.Close()
	o.wg.Wait()
	return err
}

func (o *Outstation) serve(nc net.Conn) {
	defer nc.Close()
	c := &conn{c: nc, local: o.Addr, ctrl: dnp3.CtrlOutstationData}
	var lf dnp3.LinkFrame
	var f dnp3.Fragment
	for {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Minute))
		frag, err := c.readFragment()
		if err != nil {
			return
		}
		lf = c.lf
		c.peer = lf.Src
		if f.Decode(frag, true); f.Func == dnp3.FuncConfirm {
			continue
		}
		o.requests.Add(1)
		resp := o.respond(frag, &f)
		if err := c.writeFragment(resp); err != nil {
			return
		}
	}
}

// respond builds the response fragment to request frag.
func (o *Outstation) respond(frag []byte, f *dnp3.Fragment) []byte {
	seq := f.Seq()
	switch f.Func {
	case dnp3.FuncRead:
		out := dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)
		for _, h := range f.Headers() {
			switch h.Group {
			case 30:
				out = appendAnalogs(out)
			case 1:
				out = appendBinaries(out)
			case 60:
				out = appendBinaries(appendAnalogs(out))
			default:
				out[3] |= IIN2ObjectUnknown
			}
		}
		return out
	case dnp3.FuncSelect, dnp3.FuncOperate, dnp3.FuncDirectOperate:
		if f.Func != dnp3.FuncSelect {
			o.operations.Add(1)
		}
		// Echo the request's objects with status 0 (clause 4.4.3).
		out := dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)
		return append(out, frag[2:]...)
	}
	return dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, IIN2NoFuncCodeSupport, false)
}

// appendAnalogs appends g30v2 points 0-3: flag 0x01 (online), value 100+i.
func appendAnalogs(out []byte) []byte {
	out = dnp3.AppendRangeHeader(out, 30, 2, 0, 3)
	for i := 0; i < 4; i++ {
		v := 100 + i
		out = append(out, 0x01, byte(v), byte(v>>8))
	}
	return out
}

// appendBinaries appends g1v2 points 0-3: flag online, state i odd.
func appendBinaries(out []byte) []byte {
	out = dnp3.AppendRangeHeader(out, 1, 2, 0, 3)
	for i := 0; i < 4; i++ {
		b := byte(0x01)
		if i%2 == 1 {
			b |= 0x80
		}
		out = append(out, b)
	}
	return out
}

// Master is a DNP3 master on one TCP connection. Not safe for concurrent
// use.
type Master struct {
	c   *conn
	seq uint8
	// Timeout bounds each request's wait for the response (default 2s).
	Timeout time.Duration
}

// Dial connects a master (link address local) to the outstation (link
// address remote) at addr, in the calling thread's network namespace.
func Dial(addr string, local, remote uint16, timeout time.Duration) (*Master, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &Master{c: &conn{c: nc, local: local, peer: remote, ctrl: dnp3.CtrlMasterData}, Timeout: 2 * time.Second}, nil
}

// Close closes the connection.
func (m *Master) Close() error { return m.c.c.Close() }

// Response is a decoded response.
type Response struct {
	Func    dnp3.FunctionCode
	IIN     uint16
	Objects []dnp3.ObjectHeader
	Raw     []byte
	Analogs []int // g30v2 values when present
}

func (m *Master) request(apdu []byte) (*Response, error) {
	if err := m.c.writeFragment(apdu); err != nil {
		return nil, err
	}
	_ = m.c.c.SetReadDeadline(time.Now().Add(m.Timeout))
	frag, err := m.c.readFragment()
	if err != nil {
		return nil, err
	}
	var f dnp3.Fragment
	if err := f.Decode(frag, false); err != nil {
		return nil, fmt.Errorf("dnp3sim: bad response: %w", err)
	}
	r := &Response{Func: f.Func, IIN: f.IIN, Objects: append([]dnp3.ObjectHeader(nil), f.Headers()...), Raw: frag}
	// g30v2 range 0-3 right after the header, as the outstation sends it.
	if len(frag) >= 4+5+12 && frag[4] == 30 && frag[5] == 2 {
		for i := 0; i < 4; i++ {
			o := 4 + 5 + 3*i
			r.Analogs = append(r.Analogs, int(frag[o+1])|int(frag[o+2])<<8)
		}
	}
	return r, nil
}

func (m *Master) next() uint8 { s := m.seq; m.seq = (m.seq + 1) & 0x0F; return s }

// ReadAnalogs reads all analog inputs (g30v0, qualifier 0x06).
func (m *Master) ReadAnalogs() (*Response, error) {
	apdu := dnp3.AppendRequestHeader(nil, m.next(), dnp3.FuncRead)
	return m.request(dnp3.AppendAllHeader(apdu, 30, 0))
}

// ReadClass0 reads class 0 (g60v1).
func (m *Master) ReadClass0() (*Response, error) {
	apdu := dnp3.AppendRequestHeader(nil, m.next(), dnp3.FuncRead)
	return m.request(dnp3.AppendAllHeader(apdu, 60, 1))
}

// DirectOperate sends a g12v1 latch-on CROB to point index.
func (m *Master) DirectOperate(index uint16) (*Response, error) {
	return m.request(dnp3.AppendCROB(nil, m.next(), dnp3.FuncDirectOperate, index, dnp3.CROB{Code: 0x03, Count: 1, OnMs: 100}))
}

// ColdRestart sends COLD_RESTART (function 13).
func (m *Master) ColdRestart() (*Response, error) {
	return m.request(dnp3.AppendRequestHeader(nil, m.next(), dnp3.FuncColdRestart))
}
