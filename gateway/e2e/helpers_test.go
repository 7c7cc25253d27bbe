package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/peers"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	// The test binary doubles as the OPC UA peer programs, run as child
	// processes inside the namespaces (see opcua_test.go).
	if role := os.Getenv(peerEnv); role != "" {
		os.Exit(runPeer(role, os.Args[1:]))
	}
	// And as the datapath bench's bare forwarder (floor_test.go).
	if ports := os.Getenv(floorEnv); ports != "" {
		os.Exit(runFloor(ports))
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// otgwBinary builds cmd/otgw once per test run.
func otgwBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "otgw-e2e-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "otgw")
		root := testenv.ModuleRoot(t)
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/otgw")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reader test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// basePolicy is the test policy: the client (hmi) may read holding
// registers 0-99 of the server (plc) on unit 1 and ping it; ARP passes.
// %s are the mode and the deny action.
const basePolicy = `version: 1
name: e2e
mode: %s
action: %s
zones:
  clients: { port: north, networks: [192.0.2.1/32] }
  servers: { port: south, networks: [192.0.2.2/32] }
assets:
  hmi: { ip: 192.0.2.1, zone: clients }
  plc: { ip: 192.0.2.2, zone: servers }
l2: { allow: [arp] }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
            - read: input 0-99
      - dnp3:
          masters: [1]
          outstations: [10]
          allow:
            - function: read
              objects: [g1, g30, g60]
            - function: confirm
      - opcua:
          min_security_mode: none
          allow:
            - service: [read, browse]
      - icmp: {}
`

func policyYAML(mode, action string) string { return fmt.Sprintf(basePolicy, mode, action) }

// gw is one `otgw run` process in the line's gateway namespace.
type gw struct {
	t      *testing.T
	line   *netns.Line
	cmd    *exec.Cmd
	out    *syncBuffer
	policy string
	events string
	status string
	extra  []string // more `otgw run` arguments (the datapath benchmark's --io)
}

const statusAddr = "127.0.0.1:9102"

// startGateway writes the policy and starts otgw run (with extra
// arguments); it returns once the start event is written (bounded).
func startGateway(t *testing.T, l *netns.Line, policy string, extra ...string) *gw {
	t.Helper()
	dir := t.TempDir()
	g := &gw{t: t, line: l, out: &syncBuffer{}, policy: filepath.Join(dir, "policy.yaml"),
		events: filepath.Join(dir, "events.jsonl"), status: statusAddr, extra: extra}
	if err := os.WriteFile(g.policy, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	g.start()
	return g
}

func (g *gw) start() {
	g.t.Helper()
	before := g.countEvents("start")
	args := append([]string{"run", "--policy", g.policy, "--board", "sim",
		"--ports", g.line.North + "," + g.line.South, "--events", g.events, "--status", g.status,
		"--spool", filepath.Join(filepath.Dir(g.events), "spool")}, g.extra...)
	g.cmd = g.line.Gateway.Start(g.out, otgwBinary(g.t), args...)
	g.t.Cleanup(func() {
		if g.t.Failed() {
			g.t.Logf("otgw output:\n%s", tail(g.out.String(), 60))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for g.countEvents("start") <= before {
		if time.Now().After(deadline) {
			g.t.Fatalf("otgw did not start within 15s:\n%s", tail(g.out.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL to the gateway process (by its PID) and reaps it.
func (g *gw) kill() {
	g.t.Helper()
	if err := g.cmd.Process.Kill(); err != nil {
		g.t.Fatal(err)
	}
	_ = g.cmd.Wait()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// event is the subset of an event record the tests read (decoded with
// events.UnmarshalJSONEvent; protocol field numbers as float64).
type event struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Type    string         `json:"type"`
	Mode    string         `json:"mode"`
	Verdict string         `json:"verdict"`
	Action  string         `json:"action"`
	Conduit string         `json:"conduit"`
	Reason  string         `json:"reason"`
	Proto   string         `json:"proto"`
	Src     string         `json:"src"`
	Dst     string         `json:"dst"`
	Message string         `json:"message"`
	Port    string         `json:"port"`
	Count   int            `json:"count"`
	Fields  map[string]any `json:"fields"`
}

func (g *gw) readEvents() []event {
	f, err := os.Open(g.events)
	if err != nil {
		return nil
	}
	defer f.Close()
	var evs []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r events.Event
		if events.UnmarshalJSONEvent(sc.Bytes(), &r) != nil {
			continue
		}
		e := event{Seq: r.Seq, Time: r.Time, Type: string(r.Type), Mode: r.Mode, Verdict: r.Verdict, Action: r.Action,
			Conduit: r.Conduit, Reason: r.Reason, Proto: r.Proto, Message: r.Message, Port: r.Port, Count: r.Count,
			Fields: map[string]any{}}
		if r.Src.IsValid() {
			e.Src = r.Src.String()
		}
		if r.Dst.IsValid() {
			e.Dst = r.Dst.String()
		}
		for k, v := range r.Fields {
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				v = f
			}
			e.Fields[k] = v
		}
		evs = append(evs, e)
	}
	return evs
}

// checkEventsFileSchema validates every line of the live events file
// (otgw run --events) against the record schema, gateway/events/schema.json.
func (g *gw) checkEventsFileSchema() {
	g.t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(events.Schema))
	if err != nil {
		g.t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		g.t.Fatal(err)
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		g.t.Fatal(err)
	}
	b, err := os.ReadFile(g.events)
	if err != nil {
		g.t.Fatal(err)
	}
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
		if err == nil {
			err = sch.Validate(v)
		}
		if err != nil {
			g.t.Errorf("events file record %d: %v\n%s", n+1, err, line)
		}
		n++
	}
	if n == 0 {
		g.t.Errorf("events file %s is empty", g.events)
	}
}

func (g *gw) countEvents(typ string) int {
	n := 0
	for _, e := range g.readEvents() {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// waitEvent waits (bounded) for an event matching ok.
func (g *gw) waitEvent(what string, timeout time.Duration, ok func(event) bool) event {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range g.readEvents() {
			if ok(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, e := range g.readEvents() {
				fmt.Fprintf(&b, "  %+v\n", e)
			}
			g.t.Fatalf("no %s event within %v; events:\n%s", what, timeout, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusJSON fetches the status endpoint from inside the gateway namespace.
func (g *gw) statusJSON() map[string]any {
	g.t.Helper()
	body := g.get("/status")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		g.t.Fatalf("status: %v: %s", err, body)
	}
	return m
}

func (g *gw) get(path string) string {
	g.t.Helper()
	var conn net.Conn
	err := g.line.Gateway.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", g.status, 2*time.Second)
		return err
	})
	if err != nil {
		g.t.Fatalf("status endpoint: %v", err)
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, DisableKeepAlives: true}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + g.status + path)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		g.t.Fatalf("GET %s: %s: %s", path, resp.Status, b.String())
	}
	return b.String()
}

// counter reads a number under path (e.g. "counters", "pdus_denied").
func counter(m map[string]any, path ...string) float64 {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return -1
		}
		v = mm[p]
	}
	f, _ := v.(float64)
	return f
}

// startPymodbus starts the pymodbus server in the server namespace and
// waits (bounded) until it accepts connections.
func startPymodbus(t *testing.T, l *netns.Line) {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		testenv.NeedCmd(t, "python3-pymodbus at /usr/bin/python3")
	}
	if out, err := exec.Command(py, "-c", "import pymodbus.server").CombinedOutput(); err != nil {
		testenv.NeedCmd(t, "python3-pymodbus ("+strings.TrimSpace(string(out))+")")
	}
	script := filepath.Join(testenv.ModuleRoot(t), "simulate", "peers", "modbus_server.py")
	out := &syncBuffer{}
	l.Server.Start(out, py, script, "--port", "502")
	waitListen(t, l, 502, out)
}

// waitListen waits until something listens on TCP port in the server ns.
func waitListen(t *testing.T, l *netns.Line, port int, out *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := l.Server.Do(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on port %d not up within 15s: %v\n%s", port, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakSampler is the largest value a sample function returned, sampled
// from a goroutine at a fixed interval until Stop.
type peakSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// samplePeak calls sample every interval and keeps the largest value,
// starting from start (e.g. the VmRSS of the process in KiB:
// samplePeak(t, 10*time.Millisecond, before, func() int64 { return
// int64(procRSS(t, pid)) })). The test's cleanup stops it.
func samplePeak(t *testing.T, every time.Duration, start int64, sample func() int64) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	p.peak.Store(start)
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			if v := sample(); v > p.peak.Load() {
				p.peak.Store(v)
			}
		}
	}()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Peak is the largest value so far.
func (p *peakSampler) Peak() int64 { return p.peak.Load() }

// Stop ends the sampling, waits for the goroutine and returns the peak.
func (p *peakSampler) Stop() int64 {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return p.peak.Load()
}

// servePLC serves a simulated PLC (peers, in process) on port 502 of
// the line's server namespace until the test ends, and returns it.
func servePLC(t *testing.T, l *netns.Line) *peers.PLC {
	t.Helper()
	plc := peers.NewPLC()
	if err := l.Server.Do(func() error {
		s, err := peers.Serve(plc, "0.0.0.0:502")
		if err == nil {
			t.Cleanup(func() { _ = s.Stop() })
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return plc
}

// kernelBridge joins the gateway namespace's two ports in a Linux bridge
// (offloads off on them, as the gateway has them) and gives it 300 ms to
// come up: the baseline of the benchmarks. remove takes the bridge down
// again; so does the test's cleanup if remove was not called (a t.Fatal
// while bridged must not leave the ports enslaved to the cleanups that
// still use the line).
func kernelBridge(t *testing.T, l *netns.Line) (remove func()) {
	t.Helper()
	l.Gateway.IP("link", "add", "br0", "type", "bridge")
	var once sync.Once
	remove = func() {
		once.Do(func() {
			for _, p := range []string{l.North, l.South} {
				l.Gateway.IP("link", "set", p, "nomaster")
			}
			l.Gateway.IP("link", "del", "br0")
		})
	}
	t.Cleanup(remove)
	for _, p := range []string{l.North, l.South} {
		offloadsOff(t, l.Gateway, p)
		l.Gateway.IP("link", "set", p, "master", "br0")
	}
	l.Gateway.IP("link", "set", "br0", "up")
	time.Sleep(300 * time.Millisecond)
	return remove
}
