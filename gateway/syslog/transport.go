package syslog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// tlsConfig builds the client TLS configuration of d: TLS 1.2 or later,
// server verified against d.CAFile (system roots when empty) and the
// server name, optional client certificate. Files are read once, at New.
func tlsConfig(d *Destination) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.CAFile != "" {
		pem, err := os.ReadFile(d.CAFile)
		if err != nil {
			return nil, fmt.Errorf("syslog: %s: ca: %w", d.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("syslog: %s: ca: no certificate in %s", d.Name, d.CAFile)
		}
		c.RootCAs = pool
	}
	if d.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(d.CertFile, d.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("syslog: %s: client certificate: %w", d.Name, err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	c.ServerName = d.ServerName
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(d.Addr)
		if err != nil {
			return nil, fmt.Errorf("syslog: %s: %w", d.Name, err)
		}
		c.ServerName = host
	}
	return c, nil
}

// conn is one connection to a receiver. For stream transports a reader
// goroutine watches the receive side: a syslog receiver never sends
// application data, so anything it delivers (a TLS alert, EOF, a reset)
// means the session is dead.
type conn struct {
	nc      net.Conn
	tcp     *net.TCPConn // nil for UDP
	dead    chan struct{}
	deadErr error // set before dead is closed
}

func (c *conn) watch() {
	go func() {
		var b [512]byte
		for {
			n, err := c.nc.Read(b[:])
			if err != nil || n > 0 {
				if err == nil {
					err = errors.New("receiver sent unexpected data")
				}
				c.deadErr = err
				close(c.dead)
				return
			}
		}
	}()
}

func (c *conn) isDead() error {
	if c == nil {
		return ErrPeerClosed
	}
	select {
	case <-c.dead:
		err := fmt.Errorf("%w: %w", ErrPeerClosed, c.deadErr)
		// A TLS alert from the receiver after the handshake (TLS 1.3: it
		// rejected our certificate later than ConfirmWait) is a TLS
		// failure, however late it came.
		if oe, ok := errors.AsType[*net.OpError](c.deadErr); ok && oe.Op == "remote error" {
			return &tlsError{err}
		}
		return err
	default:
		return nil
	}
}

func (c *conn) close() { _ = c.nc.Close() }

// tlsError marks a failure during or right after the TLS handshake.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "tls: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// dial connects to d and, for TCP and TLS, proves the session: the TLS
// handshake must complete and the receiver must then stay quiet for
// d.ConfirmWait. In TLS 1.3 the server checks our certificate after our
// handshake has already returned; a receiver that rejects it closes or
// alerts within that window, and nothing is ever counted as delivered on
// such a connection.
func dial(ctx context.Context, d *Destination, tc *tls.Config) (*conn, error) {
	var nd net.Dialer
	dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	defer cancel()
	if d.Network == "udp" {
		nc, err := nd.DialContext(dctx, "udp", d.Addr)
		if err != nil {
			return nil, err
		}
		return &conn{nc: nc}, nil
	}
	nc, err := nd.DialContext(dctx, "tcp", d.Addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, tcp: nc.(*net.TCPConn), dead: make(chan struct{})}
	if d.Network == "tls" {
		tl := tls.Client(nc, tc)
		if err := tl.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, &tlsError{err}
		}
		c.nc = tl
	}
	c.watch()
	t := time.NewTimer(d.ConfirmWait)
	defer t.Stop()
	select {
	case <-c.dead:
		c.close()
		err := fmt.Errorf("%w after the handshake: %v", ErrPeerClosed, c.deadErr)
		if d.Network == "tls" {
			return nil, &tlsError{err}
		}
		return nil, err
	case <-ctx.Done():
		c.close()
		return nil, ctx.Err()
	case <-t.C:
	}
	return c, nil
}

// appendFrame frames msg for the transport: RFC 6587 section 3.4.1 / RFC
// 5425 section 4.3 octet counting on streams, LF after JSON lines, nothing
// on UDP (one message per datagram).
func appendFrame(dst []byte, network string, f Format, msg []byte) []byte {
	switch {
	case network == "udp":
		return append(dst, msg...)
	case f == FormatJSON:
		return append(append(dst, msg...), '\n')
	}
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}

// send writes b and confirms it: for streams, the peer's TCP must have
// acknowledged every byte (SIOCOUTQ == 0) and the session must still be
// alive. For UDP nothing can be confirmed; a write error (e.g. ICMP port
// unreachable reported on a connected socket) fails the batch.
func (c *conn) send(ctx context.Context, b []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	_ = c.nc.SetWriteDeadline(deadline)
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	if c.tcp == nil {
		return nil
	}
	wait := 200 * time.Microsecond
	for {
		if err := c.isDead(); err != nil {
			return err
		}
		n := unackedBytes(c.tcp)
		if n == 0 {
			break
		}
		if n < 0 {
			// Unknown off Linux: give the receiver one round of the
			// quiet period's worth of scheduling to object.
			time.Sleep(5 * time.Millisecond)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d bytes unacknowledged after %v", ErrNotConfirmed, n, timeout)
		}
		select {
		case <-c.dead:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Millisecond)
	}
	return c.isDead()
}
