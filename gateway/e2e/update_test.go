package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

// servePaced serves body on 127.0.0.1 (host namespace) in chunks of
// chunk bytes every pace, so the download lasts long enough for polls to
// overlap it. It returns the URL and a counter of bytes written.
func servePaced(t *testing.T, body []byte, chunk int, pace time.Duration) (string, *atomic.Int64) {
	t.Helper()
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		fl, _ := w.(http.Flusher)
		for i := 0; i < len(body); i += chunk {
			end := min(i+chunk, len(body))
			if _, err := w.Write(body[i:end]); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			sent.Add(int64(end - i))
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pace):
			}
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL + "/fw.otgw", &sent
}

// pollUntil polls holding registers through the gateway on one connection
// until ctx ends (or limit polls, or the time bound), checking each value;
// it returns the number of polls and the failures.
func pollUntil(ctx context.Context, l *netns.Line, limit int, bound time.Duration) (n int, failures []string, err error) {
	start := time.Now()
	err = l.Client.Do(func() error {
		h := modbus.NewTCPClientHandler(l.ServerAddr + ":502")
		h.SlaveId = 1
		h.Timeout = 2 * time.Second
		if err := h.Connect(); err != nil {
			return err
		}
		defer h.Close()
		c := modbus.NewClient(h)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for ; n < limit && time.Since(start) < bound; n++ {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			a := uint16(n % 90)
			b, err := c.ReadHoldingRegisters(a, 10)
			if err != nil || len(b) != 20 || int(b[0])<<8|int(b[1]) != 1000+int(a) {
				failures = append(failures, fmt.Sprintf("poll %d: %v % x", n, err, b))
			}
		}
		return nil
	})
	return n, failures, err
}

// TestPollsDuringFirmwareUpdate (issue 7, U23): Modbus polls keep flowing
// through the bridge while a signed bundle is downloaded over HTTP and
// written into the sim board's inactive slot; none is lost. Then the
// simulated reboot boots the trial slot and a health check that itself
// polls through the gateway commits it.
func TestPollsDuringFirmwareUpdate(t *testing.T) {
	testenv.NeedRoot(t)
	// About 650 polls fit in the ~1.3 s install at one per 2 ms; 50 is
	// enough to prove traffic crossed during it, and leaves room for a
	// connect's lost SYN (1 s retransmission) on a loaded machine.
	const minPolls = 50
	l := netns.NewLine(t)
	plc := servePLC(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))

	e := updatetest.New(t, updatetest.Options{ImageBytes: 2 << 20})
	payload := updatetest.Image("1.2.0", 2<<20)
	bundle := e.Bundle(updatetest.Spec{Version: "1.2.0", SVN: 2, Payload: payload})
	// 2 MiB in 64 KiB chunks every 40 ms: the download takes about 1.3 s.
	url, sent := servePaced(t, bundle, 64<<10, 40*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var polls int
	var failures []string
	start := time.Now()
	installErr, trafficErr := e.InstallDuring(ctx, url, func(ctx context.Context) error {
		var err error
		polls, failures, err = pollUntil(ctx, l, 100_000, 20*time.Second)
		return err
	})
	took := time.Since(start)
	if installErr != nil {
		t.Fatalf("install from %s: %v", url, installErr)
	}
	if trafficErr != nil {
		t.Fatalf("polls during the install: %v", trafficErr)
	}
	if got := sent.Load(); got != int64(len(bundle)) {
		t.Errorf("server sent %d bytes, want the whole bundle (%d)", got, len(bundle))
	}
	if polls < minPolls {
		t.Errorf("%d polls during the %v download and install, want >= %d", polls, took.Round(time.Millisecond), minPolls)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d polls failed during the update, first: %s", len(failures), polls, failures[0])
	}
	t.Logf("%d polls, %d lost, during download+install of %d bytes in %v", polls, len(failures), len(bundle), took.Round(time.Millisecond))

	st := e.State()
	if st.Trial != update.SlotB || st.Slots[update.SlotB].State != update.SlotPending {
		t.Fatalf("after install: trial %v, slot B state %v; want B pending", st.Trial, st.Slots[update.SlotB].State)
	}
	if !bytes.Equal(e.SlotImage(update.SlotB), payload) || !bytes.Equal(e.SlotImage(update.SlotA), e.Factory) {
		t.Fatal("slot contents wrong after install: want the new image in B and the factory image untouched in A")
	}
	if ev := e.Events.Last("installed"); ev == nil || ev.Version != "1.2.0" {
		t.Errorf("installed event: %+v", ev)
	}

	// Simulated reboot into the trial slot, then the commit with a health
	// check whose datapath part is a poll through the running gateway.
	s, err := e.Board.Reboot()
	if err != nil {
		t.Fatalf("reboot: %v", err)
	}
	if s != update.SlotB {
		t.Fatalf("booted %v, want trial slot B", s)
	}
	e.Reopen()
	if _, err := e.Installer.Startup(); err != nil {
		t.Fatalf("startup: %v", err)
	}
	health := update.Health{
		Datapath: func(ctx context.Context) error {
			n, fails, err := pollUntil(ctx, l, 10, 5*time.Second)
			if err == nil && (n != 10 || len(fails) > 0) {
				err = fmt.Errorf("%d polls, %d failed: %v", n, len(fails), fails)
			}
			return err
		},
		Policy: func(context.Context) error {
			if name, _ := g.statusJSON()["policy"].(map[string]any)["name"].(string); name != "e2e" {
				return fmt.Errorf("policy in force %q, want e2e", name)
			}
			return nil
		},
		Exporter: func(context.Context) error { return nil },
	}
	if err := e.Installer.Commit(ctx, health); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if ev := e.Events.Last("committed"); ev == nil || ev.Version != "1.2.0" {
		t.Errorf("committed event: %+v", ev)
	}
	st = e.State()
	if st.Primary != update.SlotB || st.Trial != update.NoSlot || st.SVN != 2 {
		t.Errorf("after commit: primary %v trial %v SVN %d; want B, none, 2", st.Primary, st.Trial, st.SVN)
	}
	if n := plc.Writes(); n != 0 {
		t.Errorf("PLC saw %d writes, want 0", n)
	}
}
