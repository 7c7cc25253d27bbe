package e2e

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// mbClient runs fn with a goburrow/modbus client connected from the
// client namespace to the server (the whole session runs inside the
// namespace, so a reconnect stays there too).
func mbClient(t *testing.T, l *netns.Line, timeout time.Duration, fn func(c modbus.Client) error) error {
	t.Helper()
	return l.Client.Do(func() error {
		h := modbus.NewTCPClientHandler(l.ServerAddr + ":502")
		h.SlaveId = 1
		h.Timeout = timeout
		if err := h.Connect(); err != nil {
			return err
		}
		defer h.Close()
		return fn(modbus.NewClient(h))
	})
}

func regs(b []byte) []int {
	out := make([]int, len(b)/2)
	for i := range out {
		out[i] = int(b[2*i])<<8 | int(b[2*i+1])
	}
	return out
}

// readHolding reads holding registers through the gateway.
func readHolding(t *testing.T, l *netns.Line, addr, qty uint16) []int {
	t.Helper()
	var got []int
	err := mbClient(t, l, 3*time.Second, func(c modbus.Client) error {
		b, err := c.ReadHoldingRegisters(addr, qty)
		got = regs(b)
		return err
	})
	if err != nil {
		t.Fatalf("read holding %d+%d through the gateway: %v", addr, qty, err)
	}
	return got
}

func TestAllowedReadsPass(t *testing.T) {
	testenv.NeedRoot(t)
	mbpoll := testenv.NeedCmd(t, "mbpoll")
	l := netns.NewLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))

	// mbpoll (Debian): 1-based references, holding registers 1-10.
	out, err := l.Client.Run(mbpoll, "-m", "tcp", "-a", "1", "-r", "1", "-c", "10", "-t", "4", "-1", "-o", "2", l.ServerAddr)
	if err != nil {
		t.Fatalf("mbpoll: %v\n%s", err, out)
	}
	for i := 0; i < 10; i++ {
		want := "[" + strconv.Itoa(i+1) + "]: \t" + strconv.Itoa(1000+i)
		if !strings.Contains(out, want) {
			t.Errorf("mbpoll output lacks %q:\n%s", want, out)
		}
	}

	// goburrow/modbus: holding 10-19 and input 0-4.
	err = mbClient(t, l, 3*time.Second, func(c modbus.Client) error {
		b, err := c.ReadHoldingRegisters(10, 10)
		if err != nil {
			return err
		}
		for i, v := range regs(b) {
			if want := 1010 + i; v != want {
				t.Errorf("holding %d: got %d, want %d", 10+i, v, want)
			}
		}
		b, err = c.ReadInputRegisters(0, 5)
		if err != nil {
			return err
		}
		for i, v := range regs(b) {
			if want := 2000 + i; v != want {
				t.Errorf("input %d: got %d, want %d", i, v, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("goburrow client: %v", err)
	}
	st := g.statusJSON()
	if got := counter(st, "counters", "pdus_allowed"); got < 6 {
		t.Errorf("pdus_allowed = %v, want >= 6 (3 requests and 3 responses)", got)
	}
	if got := counter(st, "counters", "pdus_denied"); got != 0 {
		t.Errorf("pdus_denied = %v, want 0", got)
	}
}

// TestDeniedWrite: a write the policy does not allow gets a Modbus
// exception (reply), a reset (reset) or nothing (drop), and the PLC's
// register is unchanged.
func TestDeniedWrite(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tc := range []struct {
		action string
		check  func(t *testing.T, err error)
	}{
		{"reply", func(t *testing.T, err error) {
			var me *modbus.ModbusError
			if !errors.As(err, &me) {
				t.Fatalf("got %v, want a Modbus exception", err)
			}
			if me.FunctionCode != 0x86 || (me.ExceptionCode != 1 && me.ExceptionCode != 2) {
				t.Errorf("got fc %#x exception %d, want fc 0x86 exception 1 or 2", me.FunctionCode, me.ExceptionCode)
			}
		}},
		{"reset", func(t *testing.T, err error) {
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) &&
				!strings.Contains(strings.ToLower(errString(err)), "eof") {
				t.Fatalf("got %v, want a connection reset", err)
			}
		}},
		{"drop", func(t *testing.T, err error) {
			if err == nil || !strings.Contains(errString(err), "timeout") {
				t.Fatalf("got %v, want a timeout (the write was dropped)", err)
			}
		}},
	} {
		t.Run(tc.action, func(t *testing.T) {
			l := netns.NewLine(t)
			startPymodbus(t, l)
			g := startGateway(t, l, policyYAML("enforce", tc.action))
			if got := readHolding(t, l, 5, 1); got[0] != 1005 {
				t.Fatalf("holding 5 before: got %d, want 1005", got[0])
			}
			start := time.Now()
			err := mbClient(t, l, time.Second, func(c modbus.Client) error {
				_, err := c.WriteSingleRegister(5, 4242)
				return err
			})
			t.Logf("write answered after %v: %v", time.Since(start).Round(time.Millisecond), err)
			tc.check(t, err)
			if got := readHolding(t, l, 5, 1); got[0] != 1005 {
				t.Errorf("holding 5 after the denied write: got %d, want 1005 (unchanged)", got[0])
			}
			ev := g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "modbus" })
			if ev.Action != tc.action || ev.Mode != "enforce" || ev.Conduit != "hmi-plc" {
				t.Errorf("deny event: got action %q mode %q conduit %q, want %q enforce hmi-plc", ev.Action, ev.Mode, ev.Conduit, tc.action)
			}
			if fc, _ := ev.Fields["fc"].(float64); fc != 6 || ev.Fields["function"] != "write_single_register" {
				t.Errorf("deny event fc: got %v (%v), want 6 (write_single_register)", ev.Fields["fc"], ev.Fields["function"])
			}
			if v, _ := ev.Fields["value"].(float64); v != 4242 {
				t.Errorf("deny event value: got %v, want 4242 (the refused write)", ev.Fields["value"])
			}
			g.checkEventsFileSchema()
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestMonitorModePassesAndReports: in monitor mode the forbidden write
// reaches the PLC and an alert marked monitor is reported.
func TestMonitorModePassesAndReports(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("monitor", "reply"))
	err := mbClient(t, l, 3*time.Second, func(c modbus.Client) error {
		_, err := c.WriteSingleRegister(7, 4242)
		return err
	})
	if err != nil {
		t.Fatalf("write in monitor mode: %v", err)
	}
	if got := readHolding(t, l, 7, 1); got[0] != 4242 {
		t.Errorf("holding 7 after the write in monitor mode: got %d, want 4242", got[0])
	}
	ev := g.waitEvent("alert", 5*time.Second, func(e event) bool { return e.Type == "alert" && e.Proto == "modbus" })
	if ev.Mode != "monitor" {
		t.Errorf("alert event mode: got %q, want monitor", ev.Mode)
	}
	if n := g.countEvents("deny"); n != 0 {
		t.Errorf("%d deny events in monitor mode, want 0", n)
	}
}

// TestARPAndHandshake: ARP resolves across the gateway (l2 allows it),
// ICMP echo passes, and a TCP handshake completes and is tracked.
func TestARPAndHandshake(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	if err := l.Client.Do(func() error { return ping(l.ServerAddr, 0x4f54, 1, 2*time.Second) }); err != nil {
		t.Fatalf("ICMP echo through the gateway: %v", err)
	}
	neigh := l.Client.IP("neigh", "show", l.ServerAddr)
	if !strings.Contains(neigh, "lladdr") {
		t.Errorf("client has no ARP entry for the server: %q", neigh)
	}
	_ = readHolding(t, l, 0, 1)
	st := g.statusJSON()
	if got := counter(st, "flows", "created"); got < 1 {
		t.Errorf("flows created = %v, want >= 1", got)
	}
	// The veth peers send with checksum offload (CHECKSUM_PARTIAL): the
	// reads above only work because the gateway completed those checksums.
	loop, _ := st["counters"].(map[string]any)["loop"].(map[string]any)
	if fixed, _ := loop["rx_csum_fixed"].([]any); len(fixed) != 2 || fixed[0].(float64) == 0 || fixed[1].(float64) == 0 {
		t.Errorf("rx_csum_fixed = %v, want > 0 in both directions (veth peers leave checksums to the 'NIC')", loop["rx_csum_fixed"])
	}
	if got := counter(st, "counters", "dropped"); got != 0 {
		t.Logf("drops: %v", st["counters"].(map[string]any)["drops"])
	}
	// A denied L4 flow (TCP port 22 is not in the policy) gets no handshake.
	err := l.Client.Do(func() error {
		c, err := dialTimeout(l.ServerAddr+":22", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("TCP to port 22 completed a handshake; the policy does not allow it")
	}
	// The flow table: the Modbus connection of the reads above, with its
	// conduit, state and PDU counts.
	var fl struct {
		Active int              `json:"active"`
		Flows  []map[string]any `json:"flows"`
	}
	if err := json.Unmarshal([]byte(g.get("/flows?proto=modbus")), &fl); err != nil {
		t.Fatalf("/flows: %v", err)
	}
	found := false
	for _, f := range fl.Flows {
		if strings.HasPrefix(f["client"].(string), l.ClientAddr+":") && f["server"] == l.ServerAddr+":502" &&
			f["proto"] == "modbus" && f["verdict"] == "allow" && f["conduit"] != "" && f["pdus"].(float64) >= 2 {
			found = true
		}
		if f["proto"] != "modbus" {
			t.Errorf("/flows?proto=modbus lists %v", f)
		}
	}
	if !found || fl.Active < 1 {
		t.Errorf("/flows lacks the Modbus connection %s -> %s:502: %+v", l.ClientAddr, l.ServerAddr, fl)
	}
	if rf, _ := st["recent_flows"].([]any); len(rf) == 0 {
		t.Errorf("/status has no recent_flows")
	}
	metrics := g.get("/metrics")
	for _, want := range []string{"otgw_up 1", `otgw_rx_frames_total{port="north"}`, `otgw_drops_total{reason="flow_denied"}`, "otgw_detections_total 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
