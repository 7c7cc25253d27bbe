package hal_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

func in(t testing.TB, ns *netns.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareTurnsOffloadsOff(t *testing.T) {
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "gw"), netns.New(t, "peer")
	netns.Veth(t, gw, "p0", peer, "q0")
	// veth starts with TSO/GSO on; turn GRO on too so Prepare has all of
	// them to undo.
	var before, after hal.Offloads
	in(t, gw, func() error {
		if err := hal.SetFeatures("p0", map[string]bool{"rx-gro": true, "tx-generic-segmentation": true}); err != nil {
			return err
		}
		var err error
		if before, err = hal.OffloadState("p0"); err != nil {
			return err
		}
		l, err := hal.OpenLink("p0")
		if err != nil {
			return err
		}
		if err := l.Prepare(hal.LinkOptions{}); err != nil {
			return err
		}
		after, err = hal.OffloadState("p0")
		return err
	})
	if !before.GRO || !before.TSO || !before.GSO {
		t.Fatalf("before Prepare: %v; want gro, tso, gso on (test setup)", before)
	}
	if after.Any() {
		t.Errorf("after Prepare: %v; want all off", after)
	}
	// Independent check with ethtool(8) where installed.
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Log("ethtool not installed: skipped the independent check")
		return
	}
	out := gw.MustRun("ethtool", "-k", "p0")
	for _, feat := range []string{"generic-receive-offload", "large-receive-offload",
		"tcp-segmentation-offload", "generic-segmentation-offload"} {
		sc := bufio.NewScanner(strings.NewReader(out))
		found := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, feat+": "); ok {
				found = true
				if !strings.HasPrefix(v, "off") {
					t.Errorf("ethtool -k: %s", line)
				}
			}
		}
		if !found {
			t.Errorf("ethtool -k does not list %s:\n%s", feat, out)
		}
	}
}

func TestPrepareAddresses(t *testing.T) {
	testenv.NeedRoot(t)
	tests := []struct {
		name    string
		opts    hal.LinkOptions
		wantErr error
	}{
		{"refused by default", hal.LinkOptions{}, hal.ErrHasAddress},
		{"stripped on request", hal.LinkOptions{StripAddrs: true}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, peer := netns.New(t, "gw"), netns.New(t, "peer")
			netns.Veth(t, gw, "p0", peer, "q0")
			gw.Addr("p0", "192.0.2.5/24")
			var err error
			var info hal.LinkInfo
			in(t, gw, func() error {
				l, e := hal.OpenLink("p0")
				if e != nil {
					return e
				}
				err = l.Prepare(tc.opts)
				info, e = l.Info()
				return e
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Prepare = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if len(info.Addrs) != 0 || info.IPv6 || !info.Promisc || !info.AdminUp {
				t.Errorf("after Prepare: %+v; want no addresses, IPv6 off, promiscuous, up", info)
			}
		})
	}
}

func TestPreparePairMTU(t *testing.T) {
	testenv.NeedRoot(t)
	tests := []struct {
		name      string
		southMTU  string
		opts      hal.LinkOptions
		wantErr   error
		wantMTUIs int
	}{
		{"equal", "1500", hal.LinkOptions{}, nil, 1500},
		{"unequal refused", "1400", hal.LinkOptions{}, hal.ErrMTUMismatch, 0},
		{"unequal fixed by option", "1400", hal.LinkOptions{MTU: 1400}, nil, 1400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := netns.NewLine(t)
			l.Gateway.IP("link", "set", l.South, "mtu", tc.southMTU)
			var err error
			var mtu int
			in(t, l.Gateway, func() error {
				n, e1 := hal.OpenLink(l.North)
				s, e2 := hal.OpenLink(l.South)
				if e := errors.Join(e1, e2); e != nil {
					return e
				}
				err = hal.PreparePair(n, s, tc.opts)
				info, e := n.Info()
				mtu = info.MTU
				return e
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("PreparePair = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && mtu != tc.wantMTUIs {
				t.Errorf("north MTU = %d, want %d", mtu, tc.wantMTUIs)
			}
		})
	}
}

func TestWatchLinksReportsDownAndUp(t *testing.T) {
	testenv.NeedRoot(t)
	gw, peer := netns.New(t, "gw"), netns.New(t, "peer")
	netns.Veth(t, gw, "p0", peer, "q0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ch <-chan hal.LinkEvent
	in(t, gw, func() (err error) { ch, err = hal.WatchLinks(ctx, "p0"); return err })
	next := func() hal.LinkEvent {
		t.Helper()
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed")
			}
			return ev
		case <-time.After(3 * time.Second):
			t.Fatal("no link event")
		}
		return hal.LinkEvent{}
	}
	if ev := next(); ev.Name != "p0" || !ev.OperUp {
		t.Fatalf("initial event %+v, want p0 up", ev)
	}
	// Carrier loss: the peer's end goes down.
	peer.IP("link", "set", "q0", "down")
	if ev := next(); ev.OperUp || !ev.AdminUp {
		t.Errorf("after peer down: %+v, want admin up, oper down", ev)
	}
	peer.IP("link", "set", "q0", "up")
	if ev := next(); !ev.OperUp {
		t.Errorf("after peer up: %+v, want oper up", ev)
	}
	cancel()
	for range ch { // closes after cancel
	}
}

// udpReachable reports whether a datagram from the client reaches the
// server within d.
func udpReachable(t testing.TB, l *netns.Line, d time.Duration) bool {
	t.Helper()
	var srv *net.UDPConn
	in(t, l.Server, func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(l.ServerAddr), Port: 7007})
		return err
	})
	defer srv.Close()
	var cli net.Conn
	in(t, l.Client, func() (err error) { cli, err = net.Dial("udp4", l.ServerAddr+":7007"); return err })
	defer cli.Close()
	got := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64)
		srv.SetReadDeadline(time.Now().Add(d))
		if _, _, err := srv.ReadFromUDP(buf); err == nil {
			got <- struct{}{}
		}
		close(got)
	}()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		cli.Write([]byte("ping")) // repeated: the first waits for ARP
		select {
		case _, ok := <-got:
			return ok
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, ok := <-got
	return ok
}

// Without the gateway nothing crosses (fail-closed); the kernel-bridge
// fail-open passes traffic while engaged and stops when released.
func TestBridgeFailOpenAndBack(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	if udpReachable(t, l, 500*time.Millisecond) {
		t.Fatal("traffic crossed an idle gateway: not fail-closed")
	}
	var br *hal.Bridge
	in(t, l.Gateway, func() error {
		br = hal.NewBridge("otgwbr0", l.North, l.South)
		return br.Engage()
	})
	if !br.Engaged() {
		t.Error("Engaged() = false after Engage")
	}
	if !udpReachable(t, l, 3*time.Second) {
		t.Fatal("fail-open bridge engaged but traffic does not cross")
	}
	in(t, l.Gateway, func() error {
		if !hal.NewBridge("otgwbr0", l.North, l.South).Engaged() {
			return errors.New("NewBridge does not see the engaged bridge")
		}
		return br.Release()
	})
	if br.Engaged() {
		t.Error("Engaged() = true after Release")
	}
	if udpReachable(t, l, 500*time.Millisecond) {
		t.Error("traffic still crosses after Release")
	}
	out := l.Gateway.IP("link", "show")
	if strings.Contains(out, "otgwbr0") {
		t.Errorf("bridge not deleted:\n%s", out)
	}
}
