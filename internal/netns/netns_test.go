package netns_test

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

func TestLineBuildsAndCleansUp(t *testing.T) {
	testenv.NeedRoot(t)
	var names []string
	t.Run("build", func(t *testing.T) {
		l := netns.NewLine(t)
		names = []string{l.Client.Name, l.Gateway.Name, l.Server.Name}
		for _, ns := range []*netns.NS{l.Client, l.Gateway, l.Server} {
			if _, err := os.Stat(ns.Path()); err != nil {
				t.Fatalf("namespace %s missing: %v", ns.Name, err)
			}
		}
		if out := l.Gateway.IP("-br", "link"); !strings.Contains(out, "north0") || !strings.Contains(out, "south0") {
			t.Errorf("gateway links:\n%s", out)
		}
		if out := l.Client.IP("-br", "addr"); !strings.Contains(out, "192.0.2.1/24") {
			t.Errorf("client addresses:\n%s", out)
		}
		// Do runs Go code inside the namespace: a socket bound to the
		// client's address only works there.
		err := l.Client.Do(func() error {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(l.ClientAddr)})
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Errorf("bind to client address inside Do: %v", err)
		}
		// ... and not outside it.
		if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(l.ClientAddr)}); err == nil {
			c.Close()
			t.Error("client address bindable in the test's own namespace")
		}
		srv := l.Server.Start(nil, "sleep", "30")
		if srv.Process == nil {
			t.Fatal("Start returned no process")
		}
	})
	// The subtest's cleanups ran: namespaces are gone.
	time.Sleep(10 * time.Millisecond)
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s still present after cleanup", n)
		}
	}
}
