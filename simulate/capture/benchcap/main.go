// Command benchcap writes the capture of the offline benchmark (make
// bench-offline): Modbus/TCP polls and DNP3 class reads over a few hundred
// TCP connections, interleaved round-robin as a busy plant network would
// interleave them, and the policy that allows all of it. Frames are built
// with simulate/capture's TCPFlow (correct sequence numbers and checksums)
// from the project's protocol encoders; the output is the same for the same
// flags.
//
//	go run ./simulate/capture/benchcap -frames 600000 -conns 300 -out dist/bench-offline
//
// writes DIR/offline.pcap and DIR/policy.yaml. Generated files belong in
// dist/ and are never committed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

// policy allows every request the capture makes: clients in
// 192.0.2.128/25 (supervisory) poll servers in 192.0.2.0/25 (cell).
const policy = `version: 1
name: bench-offline
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
conduits:
  - name: polls
    from: supervisory
    to: cell
    rules:
      - modbus:
          allow:
            - read: holding 0-999
            - read: coils 0-999
      - dnp3:
          allow:
            - function: read
              objects: [g1, g2, g30, g60]
`

// conn is one generated connection and its poll counter.
type conn struct {
	f    *capture.TCPFlow
	dnp3 bool
	n    int
}

func main() {
	frames := flag.Int("frames", 600000, "frames to write (about; whole polls are written)")
	conns := flag.Int("conns", 300, "TCP connections (a third DNP3, the rest Modbus/TCP)")
	out := flag.String("out", "dist/bench-offline", "output directory")
	flag.Parse()
	// Client ports are 40000+i: keep them below 65536.
	if *conns < 1 || *conns > 12000 {
		fmt.Fprintln(os.Stderr, "benchcap: -conns must be 1..12000")
		os.Exit(2)
	}
	if err := run(*frames, *conns, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchcap:", err)
		os.Exit(1)
	}
}

func run(frames, nconns int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o644); err != nil {
		return err
	}
	path := filepath.Join(dir, "offline.pcap")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := capture.NewWriter(bw)
	if err != nil {
		return err
	}
	w.Step = 100 * time.Microsecond
	written := 0
	put := func(b []byte) error {
		written++
		return w.WriteFrame(b)
	}
	cs := make([]*conn, nconns)
	for i := range cs {
		// 120 clients (.129-.248) and 100 servers (.1-.100): several
		// connections may join one pair, each on its own client port.
		cli := netip.AddrFrom4([4]byte{192, 0, 2, byte(129 + i%120)})
		srv := netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%100)})
		c := &conn{dnp3: i%3 == 2}
		port := uint16(502)
		if c.dnp3 {
			port = 20000
		}
		c.f = capture.NewTCPFlow(
			capture.Endpoint{MAC: capture.MAC(byte(1 + i%120)), Addr: netip.AddrPortFrom(cli, uint16(40000+i))},
			capture.Endpoint{MAC: capture.MAC(byte(200 + i%50)), Addr: netip.AddrPortFrom(srv, port)})
		cs[i] = c
		for _, fr := range c.f.Handshake() {
			if err := put(fr); err != nil {
				return err
			}
		}
	}
	regs := make([]uint16, 10)
	var req, resp []byte
	for i := 0; written < frames; i++ {
		c := cs[i%nconns]
		c.n++
		if c.dnp3 {
			seq := uint8(c.n & 0x0f)
			apdu := dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, seq, dnp3.FuncRead), 60, 1)
			req = dnp3.AppendLinkFrames(req[:0], 0xC4, 10, 1, apdu)
			rapdu := dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)
			resp = dnp3.AppendLinkFrames(resp[:0], 0x44, 1, 10, rapdu)
		} else {
			tid := uint16(c.n)
			fc, addr := uint8(3), uint16(c.n%90)
			if c.n%4 == 0 {
				fc = 1
			}
			req = modbus.AppendRequest(req[:0], tid, 1, modbus.AppendAddrQty(nil, fc, addr, 10))
			var pdu []byte
			if fc == 3 {
				regs[0] = uint16(c.n)
				pdu = modbus.AppendReadRegistersResponse(nil, 3, regs)
			} else {
				pdu = modbus.AppendReadBitsResponse(nil, 1, []bool{true, false, true, true, false, false, true, false, true, true})
			}
			resp = modbus.AppendResponse(resp[:0], tid, 1, pdu)
		}
		if err := put(c.f.Send(true, req)); err != nil {
			return err
		}
		if err := put(c.f.Send(false, resp)); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "benchcap: %s: %d frames, %d connections\n", path, written, nconns)
	return nil
}
