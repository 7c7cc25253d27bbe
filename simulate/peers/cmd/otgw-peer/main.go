// Command otgw-peer runs the test peers of otgw for scripts (make demo,
// make bench-datapath):
//
//	otgw-peer plc [-listen 0.0.0.0:502]            Modbus/TCP PLC (simonvetter/modbus)
//	otgw-peer hmi -plc ADDR [-polls N] [-interval D] [-write REG=VAL]
//	                                               HMI (goburrow/modbus): polls holding
//	                                               0-9, then tries one write
//	otgw-peer capture -o FILE                      writes a demo capture (HMI polls and
//	                                               a forbidden write) for offline replay
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goburrow/modbus"

	mb "github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/peers"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: otgw-peer plc|hmi|capture [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "plc":
		err = runPLC(os.Args[2:])
	case "hmi":
		err = runHMI(os.Args[2:])
	case "capture":
		err = runCapture(os.Args[2:])
	default:
		err = fmt.Errorf("unknown peer %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "otgw-peer:", err)
		os.Exit(1)
	}
}

func runPLC(args []string) error {
	fs := flag.NewFlagSet("plc", flag.ExitOnError)
	listen := fs.String("listen", "0.0.0.0:502", "listen address")
	_ = fs.Parse(args)
	plc := peers.NewPLC()
	s, err := peers.Serve(plc, *listen)
	if err != nil {
		return err
	}
	fmt.Printf("PLC: Modbus/TCP server on %s (holding register i = 1000+i)\n", *listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Printf("PLC: stopping; it executed %d writes\n", plc.Writes())
	return s.Stop()
}

func runHMI(args []string) error {
	fs := flag.NewFlagSet("hmi", flag.ExitOnError)
	addr := fs.String("plc", "", "PLC address host:port")
	polls := fs.Int("polls", 5, "number of polls of holding 0-9")
	interval := fs.Duration("interval", 300*time.Millisecond, "time between polls")
	write := fs.String("write", "", "REG=VAL: one write single register after the polls")
	_ = fs.Parse(args)
	if *addr == "" {
		return errors.New("hmi: -plc is required")
	}
	h := modbus.NewTCPClientHandler(*addr)
	h.SlaveId = 1
	h.Timeout = 2 * time.Second
	if err := h.Connect(); err != nil {
		return err
	}
	defer h.Close()
	c := modbus.NewClient(h)
	for i := 0; i < *polls; i++ {
		b, err := c.ReadHoldingRegisters(0, 10)
		if err != nil {
			return fmt.Errorf("poll %d: %w", i+1, err)
		}
		vals := make([]string, 0, 10)
		for j := 0; j+1 < len(b); j += 2 {
			vals = append(vals, strconv.Itoa(int(b[j])<<8|int(b[j+1])))
		}
		fmt.Printf("HMI: poll %d: holding 0-9 = %s\n", i+1, strings.Join(vals, " "))
		time.Sleep(*interval)
	}
	if *write != "" {
		r, v, ok := strings.Cut(*write, "=")
		reg, err1 := strconv.Atoi(r)
		val, err2 := strconv.Atoi(v)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("hmi: -write %q: want REG=VAL", *write)
		}
		fmt.Printf("HMI: write holding %d = %d (forbidden by the policy)\n", reg, val)
		_, err := c.WriteSingleRegister(uint16(reg), uint16(val))
		var me *modbus.ModbusError
		switch {
		case errors.As(err, &me):
			fmt.Printf("HMI: the write was refused: Modbus exception %d (function %#x)\n", me.ExceptionCode, me.FunctionCode)
		case err != nil:
			fmt.Printf("HMI: the write failed: %v\n", err)
		default:
			fmt.Println("HMI: the write was executed")
		}
		h2 := modbus.NewTCPClientHandler(*addr)
		h2.SlaveId, h2.Timeout = 1, 2*time.Second
		defer h2.Close()
		if b, err := modbus.NewClient(h2).ReadHoldingRegisters(uint16(reg), 1); err == nil {
			fmt.Printf("HMI: holding %d reads %d afterwards\n", reg, int(b[0])<<8|int(b[1]))
		}
	}
	return nil
}

// runCapture writes the offline demo capture: an HMI (192.0.2.140) polls
// holding registers 0-9 of a PLC (192.0.2.10) five times, then writes
// holding register 5, which the demo policy forbids.
func runCapture(args []string) error {
	fs := flag.NewFlagSet("capture", flag.ExitOnError)
	out := fs.String("o", "demo.pcap", "output pcap")
	_ = fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := capture.NewWriter(f)
	if err != nil {
		return err
	}
	hmi := capture.Endpoint{MAC: capture.MAC(0x40), Addr: netip.MustParseAddrPort("192.0.2.140:49152")}
	plc := capture.Endpoint{MAC: capture.MAC(0x10), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
	fl := capture.NewTCPFlow(hmi, plc)
	write := w.WriteFrame
	for _, fr := range fl.Handshake() {
		if err := write(fr); err != nil {
			return err
		}
	}
	regs := make([]uint16, 10)
	for i := range regs {
		regs[i] = uint16(1000 + i)
	}
	tid := uint16(1)
	for i := 0; i < 5; i++ {
		req := mb.AppendRequest(nil, tid, 1, mb.AppendAddrQty(nil, 3, 0, 10))
		resp := mb.AppendResponse(nil, tid, 1, mb.AppendReadRegistersResponse(nil, 3, regs))
		if err := write(fl.Send(true, req)); err != nil {
			return err
		}
		if err := write(fl.Send(false, resp)); err != nil {
			return err
		}
		tid++
	}
	wr := mb.AppendRequest(nil, tid, 1, mb.AppendWriteSingleRegister(nil, 5, 4242))
	if err := write(fl.Send(true, wr)); err != nil {
		return err
	}
	if err := write(fl.Send(false, mb.AppendResponse(nil, tid, 1, mb.AppendWriteSingleRegister(nil, 5, 4242)))); err != nil {
		return err
	}
	return nil
}
