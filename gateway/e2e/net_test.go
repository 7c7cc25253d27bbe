package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"
)

func dialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, d)
}

// ping sends one ICMP echo request (RFC 792) to addr over a raw socket in
// the calling thread's namespace and waits up to d for the reply.
func ping(addr string, id, seq uint16, d time.Duration) error {
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, 8+32)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	var sum uint32
	for i := 0; i < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	dst := &net.IPAddr{IP: net.ParseIP(addr)}
	if _, err := c.WriteTo(msg, dst); err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		// The raw socket sees every ICMP message; match ours.
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id &&
			binary.BigEndian.Uint16(buf[6:]) == seq && from.String() == addr {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo reply from %s", addr)
		}
	}
}
