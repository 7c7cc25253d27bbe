package txlog_test

import (
	"encoding/json"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

const policy = `version: 1
name: tx
mode: enforce
action: reply
zones:
  a: { port: north, networks: [192.0.2.0/28] }
  b: { port: south, networks: [192.0.2.16/28] }
assets:
  hmi: { ip: 192.0.2.1, zone: a }
conduits:
  - name: logged
    from: hmi
    to: b
    log: transactions
    rules:
      - modbus: { allow: [ { read: holding 0-99 } ] }
  - name: quiet
    from: a
    to: b
    rules:
      - modbus: { allow: [ { read: holding 0-99 } ] }
`

type rig struct {
	rs  *rules.Ruleset
	eng *gateway.Engine
	tap *txlog.Tap
	log *txlog.Log
	mu  sync.Mutex
	evs []*events.Event
}

func newRig(t testing.TB, cfg txlog.Config) *rig { return newRigPolicy(t, policy, cfg) }

func newRigPolicy(t testing.TB, policy string, cfg txlog.Config) *rig {
	t.Helper()
	p, err := rules.Parse("policy.yaml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{rs: rs}
	cfg.Rules = func() *rules.Ruleset { return rs }
	cfg.Sink = events.SinkFunc(func(e *events.Event) {
		r.mu.Lock()
		r.evs = append(r.evs, e)
		r.mu.Unlock()
	})
	if r.log, err = txlog.New(cfg); err != nil {
		t.Fatal(err)
	}
	r.tap = r.log.NewTap()
	if r.eng, err = gateway.NewEngine(gateway.Config{Rules: cfg.Rules, OnVerdict: r.tap.OnVerdict}); err != nil {
		t.Fatal(err)
	}
	r.tap.Next = r.eng
	return r
}

var nopTx = gateway.TxFunc(func(gateway.PortID, []byte) {})

// session opens a connection from client to the PLC and returns the
// frames of n read transactions (request, response), tids 1..n.
func session(r *rig, client string, n int) [][]byte { return sessionOf(r, client, n, true) }

// sessionOf is session, without the responses unless answered.
func sessionOf(r *rig, client string, n int, answered bool) [][]byte {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort(client)}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.20:502")}
	fl := capture.NewTCPFlow(cli, srv)
	for i, f := range fl.Handshake() {
		r.tap.Handle(gateway.PortID(i%2), f, nopTx)
	}
	var frames [][]byte
	for tid := uint16(1); tid <= uint16(n); tid++ {
		frames = append(frames, fl.Send(true, modbus.AppendRequest(nil, tid, 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, 10, 2))))
		if answered {
			frames = append(frames, fl.Send(false, modbus.AppendResponse(nil, tid, 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{7, 8}))))
		}
	}
	return frames
}

func feed(r *rig, frames [][]byte) {
	for i, f := range frames {
		r.tap.Handle(gateway.PortID(i%2), f, nopTx)
	}
}

// One allowed read and its response on a logged conduit make one
// transaction record in the record schema: the request's protocol object
// (function, unit, address, quantity) with the response's in "response",
// the request's endpoints, flow_id and community_id, severity info. A
// conduit without the key logs nothing.
func TestTransactionRecord(t *testing.T) {
	r := newRig(t, txlog.Config{})
	feed(r, session(r, "192.0.2.1:40000", 1))
	feed(r, session(r, "192.0.2.2:40001", 3)) // quiet conduit
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.evs) != 1 {
		t.Fatalf("got %d records, want 1 (the logged conduit's transaction)", len(r.evs))
	}
	sch := testenv.CompileSchema(t, events.Schema)
	r.evs[0].Seq, r.evs[0].BootID = 1, "b" // the pipeline's part
	line := r.evs[0].AppendJSON(nil)
	if err := testenv.ValidateJSON(sch, line); err != nil {
		t.Errorf("record does not validate: %v\n%s", err, line)
	}
	var rec struct {
		EventType, Verdict, Severity, Conduit, Mode, AppProto string
		SrcIP                                                 string `json:"src_ip"`
		DestPort                                              int    `json:"dest_port"`
		FlowID                                                uint64 `json:"flow_id"`
		Modbus                                                struct {
			Function string `json:"function"`
			FC, Unit int
			Addr     int `json:"addr"`
			Qty      int `json:"qty"`
			Response struct {
				Function string `json:"function"`
				Dir      string `json:"dir"`
				FC       int    `json:"fc"`
			} `json:"response"`
		} `json:"modbus"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_ = json.Unmarshal(line, &raw)
	if raw["event_type"] != "transaction" || raw["verdict"] != "allow" || raw["severity"] != "info" || raw["conduit"] != "logged" ||
		raw["app_proto"] != "modbus" || rec.SrcIP != "192.0.2.1" || rec.DestPort != 502 || rec.FlowID == 0 {
		t.Errorf("record: %s", line)
	}
	m := rec.Modbus
	if m.Function != "read_holding_registers" || m.FC != 3 || m.Unit != 1 || m.Addr != 10 || m.Qty != 2 ||
		m.Response.Function != "read_holding_registers" || m.Response.Dir != "response" || m.Response.FC != 3 {
		t.Errorf("protocol object: %+v\n%s", m, line)
	}
	if st := r.log.Stats(); st.Records != 1 || st.Pending != 0 || st.RateLimited != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// The token bucket bounds the records: with a burst of 2 and a rate of
// one a minute, 5 transactions at once make 2 records and 3 are counted.
func TestRateBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRig(t, txlog.Config{Rate: 1.0 / 60, Burst: 2, Now: func() time.Time { return now }})
	feed(r, session(r, "192.0.2.1:40000", 5))
	if st := r.log.Stats(); st.Records != 2 || st.RateLimited != 3 || st.Pending != 0 {
		t.Errorf("Stats = %+v, want 2 records and 3 rate-limited", st)
	}
	now = now.Add(time.Minute) // one token back
	feed(r, session(r, "192.0.2.1:40002", 2))
	if st := r.log.Stats(); st.Records != 3 || st.RateLimited != 4 {
		t.Errorf("after a minute: Stats = %+v, want 3 records and 4 rate-limited", st)
	}
}

// Requests whose responses never come are forgotten beyond MaxPending.
func TestPendingBounded(t *testing.T) {
	r := newRig(t, txlog.Config{MaxPending: 3})
	for _, f := range sessionOf(r, "192.0.2.1:40000", 10, false) {
		r.tap.Handle(gateway.North, f, nopTx) // pipelined requests, never answered
	}
	if st := r.log.Stats(); st.Pending != 3 || st.Unanswered != 7 {
		t.Errorf("Stats = %+v, want 3 pending, 7 unanswered", st)
	}
}

// A conduit without the key costs nothing: a read and its response
// through the Tap and the engine allocate nothing.
func TestQuietConduitNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items)")
	}
	r := newRig(t, txlog.Config{})
	const runs = 50
	frames := session(r, "192.0.2.2:40001", runs+1)
	i := 0
	if a := testing.AllocsPerRun(runs, func() {
		r.tap.Handle(gateway.North, frames[i], nopTx)
		r.tap.Handle(gateway.South, frames[i+1], nopTx)
		i += 2
	}); a != 0 {
		t.Errorf("%v allocs per transaction on a conduit without log, want 0", a)
	}
}
