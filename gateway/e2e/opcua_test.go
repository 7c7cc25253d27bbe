package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/debug"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// peerEnv selects a peer role for a re-executed test binary.
const peerEnv = "OTGW_E2E_PEER"

// The OPC UA address space of the peer server (a gopcua MapNamespace):
// string NodeIds in the namespace the server reports.
const (
	uaSetpoint    = "Line1.Setpoint"
	uaSetpointVal = 42.5
	uaName        = "Line1.Name"
	uaNameVal     = "press-3"
	uaPort        = 4840
)

// runPeer is the main of a peer child process; it returns the exit code.
func runPeer(role string, args []string) int {
	log.SetFlags(0)
	switch role {
	case "opcua-server":
		return opcuaServerMain(args)
	case "opcua-client":
		return opcuaClientMain(args)
	}
	fmt.Fprintf(os.Stderr, "unknown peer role %q\n", role)
	return 2
}

// opcuaServerMain runs a gopcua server (security None, anonymous) on
// all addresses at port until SIGTERM/SIGKILL. It prints "READY ns=N" once listening
// and "WRITE key=value" for every write it executes.
func opcuaServerMain(args []string) int {
	fs := flag.NewFlagSet("opcua-server", flag.ContinueOnError)
	host := fs.String("host", "127.0.0.1", "address clients use to reach the server")
	port := fs.Int("port", uaPort, "listen port")
	if fs.Parse(args) != nil {
		return 2
	}
	s := server.New(
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		// The first endpoint is the listen address; the others are the
		// URLs clients use.
		server.EndPoint("0.0.0.0", *port),
		server.EndPoint(*host, *port),
		server.EndPoint("127.0.0.1", *port),
	)
	ns := server.NewMapNamespace(s, "urn:otgw:e2e")
	ns.Data[uaSetpoint] = uaSetpointVal
	ns.Data[uaName] = uaNameVal
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for key := range ns.ExternalNotification {
			fmt.Printf("WRITE %s=%v\n", key, ns.GetValue(key))
		}
	}()
	if err := s.Start(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "start: %v\n", err)
		return 1
	}
	fmt.Printf("READY ns=%d\n", ns.ID())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(2 * time.Minute): // bounded even if the test forgets it
	}
	_ = s.Close()
	return 0
}

// uaResult is what the client peer reports as one JSON line on stdout.
type uaResult struct {
	Setpoint    float64  `json:"setpoint"`
	Name        string   `json:"name"`
	ReadStatus  []string `json:"read_status"`
	Browse      []string `json:"browse"`
	WriteErr    string   `json:"write_err,omitempty"`
	WriteStatus uint32   `json:"write_status,omitempty"` // ua.StatusCode of the failure, if any
	ChannelErr  string   `json:"channel_err,omitempty"`  // a UA-TCP ERR the connection received
	Wrote       bool     `json:"wrote"`
	Err         string   `json:"err,omitempty"`
}

// opcuaClientMain connects a gopcua client (security None), reads the
// two tags, browses the namespace's Objects folder and, with -write,
// writes the setpoint; it prints a uaResult.
func opcuaClientMain(args []string) int {
	fs := flag.NewFlagSet("opcua-client", flag.ContinueOnError)
	url := fs.String("url", "", "endpoint URL")
	nsi := fs.Int("ns", 1, "namespace index of the tags")
	write := fs.Float64("write", 0, "value to write to the setpoint (0: no write)")
	if fs.Parse(args) != nil {
		return 2
	}
	var r uaResult
	defer func() {
		b, _ := json.Marshal(&r)
		fmt.Println(string(b))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := opcua.NewClient(*url, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.SecurityPolicy("None"),
		opcua.AutoReconnect(false), opcua.RequestTimeout(3*time.Second), opcua.DialTimeout(3*time.Second))
	if err != nil {
		r.Err = "client: " + err.Error()
		return 1
	}
	if err := c.Connect(ctx); err != nil {
		r.Err = "connect: " + err.Error()
		return 1
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		_ = c.Close(cctx)
	}()
	ns := uint16(*nsi)
	rr, err := c.Read(ctx, &ua.ReadRequest{
		NodesToRead: []*ua.ReadValueID{
			{NodeID: ua.NewStringNodeID(ns, uaSetpoint), AttributeID: ua.AttributeIDValue},
			{NodeID: ua.NewStringNodeID(ns, uaName), AttributeID: ua.AttributeIDValue},
		},
		TimestampsToReturn: ua.TimestampsToReturnBoth,
	})
	if err != nil {
		r.Err = "read: " + err.Error()
		return 1
	}
	for _, res := range rr.Results {
		r.ReadStatus = append(r.ReadStatus, res.Status.Error())
	}
	if len(rr.Results) == 2 {
		if v, ok := rr.Results[0].Value.Value().(float64); ok {
			r.Setpoint = v
		}
		if v, ok := rr.Results[1].Value.Value().(string); ok {
			r.Name = v
		}
	}
	br, err := c.Browse(ctx, &ua.BrowseRequest{
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID: ua.NewNumericNodeID(ns, id.ObjectsFolder), BrowseDirection: ua.BrowseDirectionForward,
			IncludeSubtypes: true, ResultMask: uint32(ua.BrowseResultMaskAll),
		}},
	})
	if err != nil {
		r.Err = "browse: " + err.Error()
		return 1
	}
	for _, res := range br.Results {
		for _, ref := range res.References {
			r.Browse = append(r.Browse, ref.BrowseName.Name)
		}
	}
	if *write == 0 {
		return 0
	}
	// gopcua drops a UA-TCP ERR from the server side (its secure channel
	// turns it into EOF for the pending request) and only logs it in its
	// debug log: capture that log for the write so the report can say
	// whether an ERR arrived.
	dbg := &syncBuffer{}
	debug.Logger = log.New(dbg, "", 0)
	debug.Enable = true
	defer func() {
		debug.Enable = false
		for _, ln := range strings.Split(dbg.String(), "\n") {
			if i := strings.Index(ln, "recv ERR"); i >= 0 {
				r.ChannelErr = strings.TrimSpace(ln[i:])
				break
			}
		}
	}()
	v, _ := ua.NewVariant(*write)
	wr, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID: ua.NewStringNodeID(ns, uaSetpoint), AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: v},
	}}})
	var sc ua.StatusCode
	switch {
	case err != nil:
		r.WriteErr = err.Error()
		if errors.As(err, &sc) {
			r.WriteStatus = uint32(sc)
		}
	case len(wr.Results) != 1 || wr.Results[0] != ua.StatusOK:
		r.WriteErr = fmt.Sprintf("write results %v", wr.Results)
	default:
		r.Wrote = true
	}
	return 0
}

// runOPCUAClient runs the client peer in ns (bounded) and decodes its
// report.
func runOPCUAClient(t *testing.T, ns *netns.NS, url string, nsi int, write float64) uaResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	args := []string{"-url", url, "-ns", strconv.Itoa(nsi)}
	if write != 0 {
		args = append(args, "-write", strconv.FormatFloat(write, 'g', -1, 64))
	}
	cmd := ns.Command(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), peerEnv+"=opcua-client")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	line := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	var r uaResult
	if jerr := json.Unmarshal([]byte(line), &r); jerr != nil {
		t.Fatalf("opcua client (%v): no report: %v\nstdout: %s\nstderr: %s", err, jerr, out, tail(stderr.String(), 20))
	}
	return r
}

// startOPCUAServer starts the server peer in the server namespace and
// returns its output and the namespace index of its tags.
func startOPCUAServer(t *testing.T, l *netns.Line) (*syncBuffer, int) {
	t.Helper()
	out := &syncBuffer{}
	cmd := l.Server.Command(context.Background(), os.Args[0], "-host", l.ServerAddr, "-port", strconv.Itoa(uaPort))
	cmd.Env = append(os.Environ(), peerEnv+"=opcua-server")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group we created, by PID
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("opcua server output:\n%s", tail(out.String(), 40))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := out.String()
		if i := strings.Index(s, "READY ns="); i >= 0 {
			rest := s[i+len("READY ns="):]
			if j := strings.IndexByte(rest, '\n'); j >= 0 {
				n, err := strconv.Atoi(rest[:j])
				if err != nil {
					t.Fatalf("opcua server: bad READY line %q", s[i:])
				}
				return out, n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("opcua server not ready within 15s:\n%s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOPCUAReadAllowedWriteDenied: a gopcua client and a gopcua server,
// each a child process in its namespace, talk through the gateway under a
// policy that allows read and browse but not write. Reads return the
// server's values and browse lists its tags; the write is refused (the
// channel is in None mode, so action reply answers with a UA-TCP ERR) and
// never reaches the server, whose value stays unchanged; the deny event is
// written. A direct write inside the server namespace then succeeds, so
// the refusal was the gateway's.
func TestOPCUAReadAllowedWriteDenied(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	srvOut, nsi := startOPCUAServer(t, l)
	waitListen(t, l, uaPort, srvOut)
	g := startGateway(t, l, policyYAML("enforce", "reply"))
	url := fmt.Sprintf("opc.tcp://%s:%d", l.ServerAddr, uaPort)

	r := runOPCUAClient(t, l.Client, url, nsi, 0)
	if r.Err != "" {
		t.Fatalf("read/browse through the gateway: %s", r.Err)
	}
	if r.Setpoint != uaSetpointVal || r.Name != uaNameVal {
		t.Errorf("read through the gateway: got %v %q, want %v %q (status %v)", r.Setpoint, r.Name, uaSetpointVal, uaNameVal, r.ReadStatus)
	}
	if want := []string{uaName, uaSetpoint}; strings.Join(r.Browse, ",") != strings.Join(want, ",") {
		t.Errorf("browse through the gateway: got %v, want %v", r.Browse, want)
	}

	r = runOPCUAClient(t, l.Client, url, nsi, 99)
	if r.Err != "" {
		t.Fatalf("session before the write: %s", r.Err)
	}
	if r.Wrote || r.WriteErr == "" {
		t.Fatalf("write through the gateway: succeeded (%+v), want it refused", r)
	}
	// Action reply on a None channel: the gateway answers with a UA-TCP
	// ERR (41 bytes: Bad_ServiceUnsupported and the reason
	// "otgw: service_not_allowed"), then resets; the client's connection
	// receives that ERR and the pending Write fails.
	if !strings.HasPrefix(r.ChannelErr, "recv ERR") {
		t.Errorf("write refused with %q but no UA-TCP ERR received (%q): want the gateway's native ERR", r.WriteErr, r.ChannelErr)
	}
	t.Logf("write refused: %s; client connection: %s", r.WriteErr, r.ChannelErr)
	ev := g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "opcua" })
	if ev.Action != "reply" || ev.Conduit != "hmi-plc" {
		t.Errorf("deny event: action %q conduit %q, want reply hmi-plc", ev.Action, ev.Conduit)
	}
	if svc, _ := ev.Fields["service_id"].(float64); svc != 673 || ev.Fields["service"] != "write" {
		t.Errorf("deny event service %v (id %v), want write (673, WriteRequest); event %+v", ev.Fields["service"], ev.Fields["service_id"], ev)
	}
	if nodes, _ := ev.Fields["nodes"].([]any); len(nodes) != 1 || !strings.HasSuffix(fmt.Sprint(nodes[0]), ";s="+uaSetpoint) {
		t.Errorf("deny event nodes %v, want the setpoint's NodeId (s=%s)", ev.Fields["nodes"], uaSetpoint)
	}
	if strings.Contains(srvOut.String(), "WRITE ") {
		t.Errorf("the server executed a write:\n%s", srvOut.String())
	}

	// The server's value is unchanged: read directly in its namespace
	// (not through the gateway) and again through the gateway.
	direct := fmt.Sprintf("opc.tcp://127.0.0.1:%d", uaPort)
	if r := runOPCUAClient(t, l.Server, direct, nsi, 0); r.Err != "" || r.Setpoint != uaSetpointVal {
		t.Errorf("direct read after the denied write: %v (%s), want %v", r.Setpoint, r.Err, uaSetpointVal)
	}
	if r := runOPCUAClient(t, l.Client, url, nsi, 0); r.Err != "" || r.Setpoint != uaSetpointVal {
		t.Errorf("read through the gateway after the denied write: %v (%s), want %v", r.Setpoint, r.Err, uaSetpointVal)
	}
	// Control: the node is writable when the gateway is not in the path.
	if r := runOPCUAClient(t, l.Server, direct, nsi, 77); !r.Wrote {
		t.Errorf("direct write in the server namespace: %+v, want it to succeed", r)
	}
	if r := runOPCUAClient(t, l.Server, direct, nsi, 0); r.Setpoint != 77 {
		t.Errorf("direct read after the direct write: %v, want 77", r.Setpoint)
	}
}
