package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/dnp3sim"
)

// TestSimonvetterPLC: the second Modbus server implementation, in-process
// in the server namespace, behind the gateway: reads pass with the right
// values; the denied write never reaches the PLC (its write count stays 0).
func TestSimonvetterPLC(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	plc := servePLC(t, l)
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	if got := readHolding(t, l, 40, 5); got[0] != 1040 || got[4] != 1044 {
		t.Errorf("holding 40-44: got %v, want 1040..1044", got)
	}
	err := mbClient(t, l, 2*time.Second, func(c modbus.Client) error {
		_, err := c.WriteMultipleRegisters(40, 2, []byte{0, 1, 0, 2})
		return err
	})
	var me *modbus.ModbusError
	if !errors.As(err, &me) || me.FunctionCode != 0x90 {
		t.Errorf("write multiple: got %v, want a Modbus exception with fc 0x90", err)
	}
	if n := plc.Writes(); n != 0 {
		t.Errorf("PLC executed %d writes, want 0", n)
	}
	if v := plc.Holding(40); v != 1040 {
		t.Errorf("holding 40 = %d, want 1040", v)
	}
	g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "modbus" })
}

// TestDNP3 runs the dnp3sim master and outstation across the gateway:
// allowed reads pass with their values; a DIRECT_OPERATE the policy does
// not allow gets a DNP3 response with IIN2 "function code not supported"
// from the gateway (action reply) and never reaches the outstation.
func TestDNP3(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	o := &dnp3sim.Outstation{Addr: 10}
	if err := l.Server.Do(func() error { return o.Listen("0.0.0.0:20000") }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	err := l.Client.Do(func() error {
		m, err := dnp3sim.Dial(l.ServerAddr+":20000", 1, 10, 2*time.Second)
		if err != nil {
			return err
		}
		defer m.Close()
		r, err := m.ReadAnalogs()
		if err != nil {
			return err
		}
		if len(r.Analogs) != 4 || r.Analogs[0] != 100 || r.Analogs[3] != 103 {
			t.Errorf("analogs through the gateway: got %v, want [100 101 102 103]", r.Analogs)
		}
		if _, err := m.ReadClass0(); err != nil {
			t.Errorf("class 0 read: %v", err)
		}
		r, err = m.DirectOperate(2)
		if err != nil {
			t.Errorf("direct operate: got %v, want a response from the gateway", err)
			return nil
		}
		if r.IIN&dnp3sim.IIN2NoFuncCodeSupport == 0 {
			t.Errorf("direct operate: got IIN %#04x, want IIN2 function code not supported", r.IIN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := o.Operations(); n != 0 {
		t.Errorf("outstation executed %d operations, want 0", n)
	}
	ev := g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "dnp3" })
	if ev.Action != "reply" {
		t.Errorf("deny event action %q, want reply", ev.Action)
	}
}
