package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/opcua"
)

// uaLiveConns is the number of connections of TestOPCUAWritesLiveRSS:
// OTGW_UA_LIVE_CONNS, default 100 (issue 15's figure).
func uaLiveConns(t *testing.T) int {
	return testenv.PositiveInt(t, "OTGW_UA_LIVE_CONNS", 100)
}

// uaWriteChunks is one msgSize-byte Write request to forbidden nodes as
// 8 KiB chunks of a channel opened by uaOpen.
func uaWriteChunks(msgSize int) []byte {
	body := pcaptest.UAWriteBody(msgSize, "Line1.Setpoint.Forbidden.")
	return opcua.AppendChunks(nil, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3}, body, 8192)
}

// uaReadMessage reads one UA-TCP message (header and body) from c.
func uaReadMessage(c net.Conn) ([]byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n < 8 || n > 1<<20 {
		return nil, fmt.Errorf("UA-TCP message of %d bytes (% x)", n, hdr)
	}
	b := make([]byte, n)
	copy(b, hdr[:])
	_, err := io.ReadFull(c, b[8:])
	return b, err
}

// uaSinkServer listens on the server namespace's port 4840 and plays an
// OPC UA server as far as the test needs: Acknowledge to the Hello, an
// OpenSecureChannel response (security None, channel 7) to the Open,
// then it reads and discards everything. It returns the listener.
func uaSinkServer(t *testing.T, l *netns.Line) net.Listener {
	var ln net.Listener
	if err := l.Server.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", uaPort)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
				if _, err := uaReadMessage(c); err != nil {
					return
				}
				if _, err := c.Write(opcua.AppendAcknowledge(nil, pcaptest.UAHello)); err != nil {
					return
				}
				if _, err := uaReadMessage(c); err != nil {
					return
				}
				if _, err := c.Write(opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln
}

// uaLiveResult is what one client connection of TestOPCUAWritesLiveRSS
// saw.
type uaLiveResult struct {
	sent int   // Write bytes the client's kernel accepted
	err  error // nil: the whole Write was sent and the server closed cleanly
}

// uaWriteConn opens a secure channel through the gateway and sends the
// Write chunks; it returns how far it got.
func uaWriteConn(l *netns.Line, chunks []byte, deadline time.Time) uaLiveResult {
	var c net.Conn
	if err := l.Client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", l.ServerAddr, uaPort), 30*time.Second)
		return err
	}); err != nil {
		return uaLiveResult{err: fmt.Errorf("dial: %w", err)}
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(opcua.AppendHello(nil, pcaptest.UAHello)); err != nil {
		return uaLiveResult{err: fmt.Errorf("hello: %w", err)}
	}
	if _, err := uaReadMessage(c); err != nil {
		return uaLiveResult{err: fmt.Errorf("acknowledge: %w", err)}
	}
	if _, err := c.Write(opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone)); err != nil {
		return uaLiveResult{err: fmt.Errorf("open: %w", err)}
	}
	if _, err := uaReadMessage(c); err != nil {
		return uaLiveResult{err: fmt.Errorf("open response: %w", err)}
	}
	n, err := c.Write(chunks)
	if err != nil {
		return uaLiveResult{sent: n, err: fmt.Errorf("write: %w", err)}
	}
	// Sent whole: the gateway refuses the Write at its last chunk
	// (reset); wait for the reset, or 30 s (a timeout: not refused).
	if d := time.Now().Add(30 * time.Second); d.Before(deadline) {
		_ = c.SetReadDeadline(d)
	}
	_, err = c.Read(make([]byte, 64))
	return uaLiveResult{sent: n, err: fmt.Errorf("after the write: %w", err)}
}

// TestOPCUAWritesLiveRSS is issue 15's OPC UA figure on the live
// product: `otgw run` (board sim, default table and memory cap, its own
// soft memory limit) between veth namespaces receives OTGW_UA_LIVE_CONNS
// connections (default 100), all at once, each sending one 15 MB Write
// request (1,834 chunks of 8 KiB) to nodes the policy forbids. otgw's VmRSS, sampled every 10 ms
// from /proc/PID/status through the run, must stay under the daemon's
// memory cap (flows.memory_cap of its status) + 32 MiB; its inspection
// memory must stay under the cap; every Write is refused (reset), none
// reaches the server whole.
//
// The Writes are refused as the cap fills (message_too_large), so about
// 70 MB cross before every connection is reset: 6-17 s on a 2-core
// machine, part of make test (and of make bench-uamem):
//
//	go test -count=1 -run '^TestOPCUAWritesLiveRSS$' -v ./gateway/e2e
func TestOPCUAWritesLiveRSS(t *testing.T) {
	testenv.NeedRoot(t)
	nconns := uaLiveConns(t)
	const msgSize = 15_000_000
	chunks := uaWriteChunks(msgSize)
	l := benchLine(t)
	uaSinkServer(t, l)
	g := startGateway(t, l, uaWritePolicy)
	defer g.stop()
	pid := g.cmd.Process.Pid
	st := g.statusJSON()
	memCap := int64(counter(st, "flows", "memory_cap"))
	if memCap <= 0 {
		t.Fatalf("status has no flows.memory_cap: %v", st["flows"])
	}
	boundKB := int(memCap>>10) + 32<<10
	time.Sleep(time.Second)
	before := procRSS(t, pid)

	peakRSS := samplePeak(t, 10*time.Millisecond, int64(before), func() int64 { return int64(procRSS(t, pid)) })
	peakMem := samplePeak(t, 100*time.Millisecond, 0, func() int64 { // the engine's inspection memory
		return int64(counter(g.statusJSON(), "flows", "memory_bytes"))
	})

	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	res := make([]uaLiveResult, nconns)
	var cw sync.WaitGroup
	for i := range res {
		cw.Add(1)
		go func() {
			defer cw.Done()
			res[i] = uaWriteConn(l, chunks, deadline)
		}()
	}
	cw.Wait()
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	peakRSS.Stop()
	peakMem.Stop()
	after := procRSS(t, pid)

	var sent int64
	whole, reset, timeouts := 0, 0, 0
	other := map[string]int{}
	for _, r := range res {
		sent += int64(r.sent)
		if r.sent == len(chunks) {
			whole++
		}
		var ne net.Error
		switch {
		case r.err == nil:
		case errors.Is(r.err, io.EOF), isReset(r.err):
			reset++
		case errors.As(r.err, &ne) && ne.Timeout():
			timeouts++
		default:
			other[r.err.Error()]++
		}
	}
	g.stop() // flushes the aggregated events
	reasons, denied := map[string]int{}, 0
	for _, ev := range g.readEvents() {
		switch {
		case ev.Type == "deny":
			reasons[ev.Reason]++
			denied++
		case ev.Type == "aggregated" && ev.Verdict == "deny":
			reasons[ev.Reason] += ev.Count
			denied += ev.Count
		}
	}
	t.Logf("%d connections x %.2f MB Write (%d bytes of chunks each): %d MB sent by the clients in %v; %d sent whole, %d reset/closed, %d timed out",
		nconns, msgSize/1e6, len(chunks), sent>>20, elapsed.Round(time.Millisecond), whole, reset, timeouts)
	t.Logf("deny events (aggregated counts included) by reason: %s", sortedCounts(reasons))
	if len(other) > 0 {
		t.Logf("other client errors: %v", other)
	}
	t.Logf("otgw run: memory cap %d KiB; inspection memory peak %d KiB; VmRSS before %d KiB, peak %d KiB, after %d KiB (bound: cap + 32 MiB = %d KiB)",
		memCap>>10, peakMem.Peak()>>10, before, peakRSS.Peak(), after, boundKB)
	if peakRSS.Peak() > int64(boundKB) {
		t.Errorf("otgw run peaked at %d KiB VmRSS, over the memory cap + 32 MiB (%d KiB)", peakRSS.Peak(), boundKB)
	}
	if peakMem.Peak() > memCap {
		t.Errorf("inspection memory peaked at %d bytes, over the %d-byte cap", peakMem.Peak(), memCap)
	}
	if timeouts > 0 {
		t.Errorf("%d connections timed out (not refused within 3 minutes, or 30 s after their whole Write)", timeouts)
	}
	if whole+reset+timeouts < nconns {
		t.Errorf("%d of %d connections failed before their Write (%v)", nconns-whole-reset-timeouts, nconns, other)
	}
	if reset != nconns {
		t.Errorf("%d of %d connections refused, want every Write refused", reset, nconns)
	}
	if denied < nconns {
		t.Errorf("%d deny events (%v), want at least one per connection (%d)", denied, sortedCounts(reasons), nconns)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s=%d ", k, m[k])
	}
	return s
}
