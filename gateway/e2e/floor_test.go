package e2e

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/haltest"
	"github.com/otgw/otgw/internal/netns"
)

// The floor of the datapath bench: a bare user-space forwarder between
// the gateway's two ports (hal ring ports, the daemon's I/O; one goroutine
// per direction, partial checksums completed as the daemon does,
// no engine, no policy), run as a child process of the test binary in the
// gateway's namespace. Its added Modbus round trip over the kernel bridge
// is what leaving the kernel costs on this machine, whatever the gateway
// does with the frames; otgw's figure minus it is the engine's and the
// daemon's share.

// floorEnv makes a re-executed test binary the bare forwarder between the
// two ports it names ("north0,south0").
const floorEnv = "OTGW_E2E_FLOOR"

// runFloor is the main of the forwarder child; it forwards until SIGTERM.
func runFloor(spec string) int {
	names := strings.Split(spec, ",")
	if len(names) != 2 {
		fmt.Fprintf(os.Stderr, "%s=%q: want NORTH,SOUTH\n", floorEnv, spec)
		return 2
	}
	var ps [2]hal.Port
	for i, n := range names {
		p, err := hal.OpenPort(n, hal.PortOptions{IO: hal.IORing})
		if err != nil {
			fmt.Fprintf(os.Stderr, "floor: open %s: %v\n", n, err)
			return 1
		}
		ps[i] = p
	}
	done := make(chan struct{}, 2)
	go floorDirection(ps[0], ps[1], done)
	go floorDirection(ps[1], ps[0], done)
	fmt.Println("floor forwarder running io=ring")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-done:
	}
	ps[0].Close()
	ps[1].Close()
	return 0
}

// floorDirection is haltest.Forward with the daemon's checksum
// completion, on one goroutine as in the daemon; done is told when it
// ends.
func floorDirection(in, out hal.Port, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	haltest.Forward(in, out, daemon.CompleteChecksum)
}

// benchFloor starts the bare forwarder on the line, measures the Modbus
// round trip and the Modbus flood through it (the forwarder's CPU in
// rttCPU and mbCPU, as a gateway's) and stops it.
func benchFloor(t *testing.T, l *netns.Line) benchResult {
	t.Helper()
	out := &syncBuffer{}
	cmd := l.Gateway.Command(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floorEnv+"="+l.North+","+l.South)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "io=ring") {
		select {
		case <-exited:
			t.Fatalf("floor forwarder exited during start-up:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("floor forwarder did not start within 10s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var r benchResult
	c0, t0 := procCPU(t, cmd.Process.Pid), time.Now()
	r.rttP50, r.rttP99, r.polls, r.pollErrors = modbusRTT(t, l)
	r.rttCPU = float64(procCPU(t, cmd.Process.Pid)-c0) / float64(time.Since(t0))
	c0 = procCPU(t, cmd.Process.Pid)
	r.mb = modbusFlood(t, l)
	r.mbCPU = float64(procCPU(t, cmd.Process.Pid)-c0) / float64(r.mb.elapsed)
	if r.mb.errors() != 0 {
		t.Errorf("modbus flood through the floor forwarder: %v", r.mb)
	}
	return r
}
