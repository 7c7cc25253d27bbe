package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// realFrame is a test frame with the local-experimental ethertype and seq
// at byte 14 (tagged: with an 802.1Q tag before the ethertype).
func realFrame(seq uint32, size int, vlan uint16) []byte {
	b := make([]byte, 0, size+4)
	b = append(b, 0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01)
	if vlan != 0 {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, vlan)
	}
	b = binary.BigEndian.AppendUint16(b, 0x88B5)
	b = binary.BigEndian.AppendUint32(b, seq)
	for len(b) < size {
		b = append(b, byte(len(b)))
	}
	return b
}

// The Forwarder over real AF_PACKET ports of each I/O method: frames cross
// both ways in order and unchanged (VLAN tags included), crafted frames
// go back out of the ingress port.
func TestForwarderOverRealPorts(t *testing.T) {
	testenv.NeedRoot(t)
	for _, mode := range []hal.IOMode{hal.IORing, hal.IOMmsg} {
		t.Run(string(mode), func(t *testing.T) {
			a, gw, b := netns.New(t, "fa"), netns.New(t, "fgw"), netns.New(t, "fb")
			netns.Veth(t, a, "a0", gw, "n0")
			netns.Veth(t, gw, "s0", b, "b0")
			// Frames sent before linkwatch activates a new veth's queue
			// are dropped: wait for operstate UP on all four ends.
			deadline := time.Now().Add(3 * time.Second)
			for _, e := range []struct {
				ns  *netns.NS
				dev string
			}{{a, "a0"}, {gw, "n0"}, {gw, "s0"}, {b, "b0"}} {
				for !strings.Contains(e.ns.IP("-o", "link", "show", e.dev), "state UP") {
					if time.Now().After(deadline) {
						t.Fatalf("%s not up after 3s", e.dev)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			open := func(ns *netns.NS, name string, io hal.IOMode) hal.Port {
				var p hal.Port
				if err := ns.Do(func() (err error) { p, err = hal.OpenPort(name, hal.PortOptions{IO: io}); return err }); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Close() })
				return p
			}
			north, south := open(gw, "n0", mode), open(gw, "s0", mode)
			pa, pb := open(a, "a0", hal.IOMmsg), open(b, "b0", hal.IOMmsg)
			f, err := NewForwarder(ForwarderConfig{North: north, South: south, Handler: &passHandler{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			defer func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run = %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Error("forwarder did not stop")
				}
			}()

			const n = 300
			for _, dir := range []struct {
				name     string
				from, to hal.Port
			}{{"north to south", pa, pb}, {"south to north", pb, pa}} {
				want := make([][]byte, n)
				for i := range want {
					var vlan uint16
					if i%10 == 3 {
						vlan = uint16(100 + i)
					}
					want[i] = realFrame(uint32(i), 60+i%1000, vlan)
				}
				for off := 0; off < n; off += 50 {
					if k, err := dir.from.WriteBatch(want[off : off+50]); k != 50 || err != nil {
						t.Fatalf("%s: WriteBatch = %d, %v", dir.name, k, err)
					}
				}
				got := readTest(t, dir.to, n, 3*time.Second)
				if len(got) != n {
					t.Fatalf("%s: %d of %d frames arrived", dir.name, len(got), n)
				}
				for i := range got {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("%s: frame %d:\n got %x\nwant %x", dir.name, i, got[i], want[i])
					}
				}
			}
			// A crafted answer goes back out of the ingress port.
			ask := realFrame(7777, 64, 0)
			ask[0] = 0xee
			if _, err := pa.WriteBatch([][]byte{ask}); err != nil {
				t.Fatal(err)
			}
			if got := readTest(t, pa, 1, 2*time.Second); len(got) != 1 || !bytes.Equal(got[0][1:], ask[1:]) {
				t.Errorf("crafted reply: got %d frames, want the echo of the 0xee frame", len(got))
			}
		})
	}
}

// readTest reads frames with the test ethertype (tagged or not) from p
// until want arrived or d passed.
func readTest(t *testing.T, p hal.Port, want int, d time.Duration) [][]byte {
	t.Helper()
	bufs := make([][]byte, hal.MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, hal.MaxBatch)
	var got [][]byte
	deadline := time.Now().Add(d)
	for len(got) < want && time.Now().Before(deadline) {
		_ = p.SetReadDeadline(deadline)
		k, err := p.ReadBatch(bufs, sizes, nil)
		if errors.Is(err, hal.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < k; i++ {
			fr := bufs[i][:sizes[i]]
			et := binary.BigEndian.Uint16(fr[12:])
			if et == 0x8100 && len(fr) >= 18 {
				et = binary.BigEndian.Uint16(fr[16:])
			}
			if et == 0x88B5 {
				got = append(got, append([]byte(nil), fr...))
			}
		}
	}
	return got
}
