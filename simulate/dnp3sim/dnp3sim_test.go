package dnp3sim

import (
	"testing"
	"time"
)

// TestMasterOutstation runs the pair over loopback.
func TestMasterOutstation(t *testing.T) {
	o := &Outstation{Addr: 10}
	if err := o.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	m, err := Dial(o.ln.Addr().String(), 1, 10, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.ReadAnalogs()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100, 101, 102, 103}; len(r.Analogs) != 4 || r.Analogs[0] != want[0] || r.Analogs[3] != want[3] {
		t.Errorf("analogs: got %v, want %v", r.Analogs, want)
	}
	if r, err = m.ReadClass0(); err != nil || len(r.Objects) != 2 {
		t.Errorf("class 0: got %v objects, err %v; want 2 (g30, g1)", len(r.Objects), err)
	}
	if r, err = m.DirectOperate(3); err != nil || r.IIN&0xff != 0 {
		t.Errorf("direct operate: got IIN %#x, err %v; want 0", r.IIN, err)
	}
	if got := o.Operations(); got != 1 {
		t.Errorf("operations: got %d, want 1", got)
	}
	if r, err = m.ColdRestart(); err != nil || r.IIN&IIN2NoFuncCodeSupport == 0 {
		t.Errorf("cold restart: got IIN %#x, err %v; want IIN2 function not supported", r.IIN, err)
	}
}
