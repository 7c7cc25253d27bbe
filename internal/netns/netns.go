// Package netns builds throw-away network topologies for tests: named
// network namespaces, veth pairs between them, addresses and links up, and
// a way to run commands or Go code inside a namespace. Everything a test
// creates is removed in t.Cleanup, also when the test fails.
//
// It drives iproute2 (`ip`) for configuration, because that is what an
// operator would type and what the kernel documents (ip-netns(8),
// ip-link(8)), and uses setns(2) through golang.org/x/sys/unix to run Go
// code inside a namespace on a locked OS thread.
//
// Names: namespaces get a unique name per test ("otgw-<label>-<pid>-<n>"),
// so parallel tests and other engineers' runs on the same host never
// collide. Veth pairs are created directly inside their namespaces
// (`ip link add NAME netns A type veth peer name PEER netns B`), so
// interface names only need to be unique within a namespace, never in the
// root namespace.
//
// Example: the client — gateway (two ports) — server line that the
// end-to-end tests use:
//
//	func TestBridge(t *testing.T) {
//		testenv.NeedRoot(t)
//		client, gw, server := netns.New(t, "cli"), netns.New(t, "gw"), netns.New(t, "srv")
//		netns.Veth(t, client, "eth0", gw, "north0")
//		netns.Veth(t, gw, "south0", server, "eth0")
//		client.Addr("eth0", "192.0.2.1/24")
//		server.Addr("eth0", "192.0.2.2/24")
//		// ... open hal ports inside gw:
//		var p hal.Port
//		err := gw.Do(func() (err error) { p, err = hal.OpenPort("north0", hal.PortOptions{}); return err })
//		// ... or start a peer: srv := server.Start("/usr/bin/python3", "server.py")
//		out := client.MustRun("ping", "-c1", "-W1", "192.0.2.2")
//	}
//
// Or in one call: l := netns.NewLine(t) gives the same topology with the
// addresses above (see Line).
//
// Needs root (testenv.NeedRoot) and iproute2.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cmdTimeout bounds every ip(8) invocation.
const cmdTimeout = 10 * time.Second

var seq atomic.Uint32

// NS is one network namespace owned by a test. Its methods may be called
// from any goroutine; Do runs its function on a locked OS thread.
type NS struct {
	Name string // name under /run/netns
	t    testing.TB
}

// ipPath finds iproute2's ip, which Debian installs in /usr/sbin or /sbin
// (not always on a test's PATH).
func ipPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("netns: iproute2 'ip' not found (install iproute2)")
	return ""
}

func sanitize(label string) string {
	var b strings.Builder
	for _, r := range label {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
		if b.Len() >= 12 {
			break
		}
	}
	if b.Len() == 0 {
		return "ns"
	}
	return b.String()
}

// New creates a network namespace with a unique name derived from label and
// registers its removal (and that of every interface inside it) with
// t.Cleanup. The loopback interface is brought up.
func New(t testing.TB, label string) *NS {
	t.Helper()
	name := fmt.Sprintf("otgw-%s-%d-%d", sanitize(label), os.Getpid(), seq.Add(1))
	ns := &NS{Name: name, t: t}
	if out, err := ipCmd(t, "netns", "add", name); err != nil {
		t.Fatalf("netns: ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		// Deleting the namespace destroys the veth ends inside it (and
		// thereby their peers) and any bridge created there.
		if out, err := ipCmd(t, "netns", "del", name); err != nil {
			t.Errorf("netns: ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.MustRun(ipPath(t), "link", "set", "lo", "up")
	return ns
}

func ipCmd(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return exec.CommandContext(ctx, ipPath(t), args...).CombinedOutput()
}

// Path returns the namespace's bind mount, usable with setns(2) and with
// netlink's NsHandle.
func (ns *NS) Path() string { return filepath.Join("/run/netns", ns.Name) }

// Command returns a command that runs inside the namespace
// (`ip netns exec NAME name args...`). The caller starts and waits for it.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns.Name, name}, args...)
	return exec.CommandContext(ctx, ipPath(ns.t), full...)
}

// Run runs a command inside the namespace, bounded by a timeout, and
// returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := ns.Command(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("netns %s: %s %s: %w", ns.Name, name, strings.Join(args, " "), err)
	}
	return out.String(), err
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		ns.t.Fatalf("%v: %s", err, out)
	}
	return out
}

// IP runs `ip ARGS...` inside the namespace and fails the test on error.
func (ns *NS) IP(args ...string) string {
	ns.t.Helper()
	return ns.MustRun(ipPath(ns.t), args...)
}

// Start starts a long-running command (a peer server) inside the
// namespace, with stdout and stderr both going to out (nil discards; out
// is written from one goroutine, read it after the process ended or make
// it safe for concurrent use). At cleanup the process group is killed by
// the process's PID and reaped.
func (ns *NS) Start(out io.Writer, name string, args ...string) *exec.Cmd {
	ns.t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	// Own process group, so cleanup also reaches children of ip netns exec.
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		ns.t.Fatalf("netns %s: start %s: %v", ns.Name, name, err)
	}
	ns.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL) // the group we created, by PID
			_ = cmd.Wait()
		}
	})
	return cmd
}

// Do runs fn with the calling goroutine locked to an OS thread that has
// joined the namespace; sockets and netlink handles fn creates belong to
// the namespace and stay there after Do returns. Goroutines that fn starts
// do NOT run in the namespace. The thread is restored to its original
// namespace afterwards; if that fails the thread stays locked and is
// discarded by the runtime when the goroutine exits.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine, so a thread that cannot be restored is thrown away
	// with it rather than poisoning the caller's goroutine.
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open %s: %w", ns.Path(), err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: setns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else: leave locked; the runtime kills the thread at goroutine exit.
		errc <- ferr
	}()
	return <-errc
}

// Veth creates a veth pair with one end aName in a and the other bName in
// b (a and b may be the same namespace), and brings both ends up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	if out, err := ipCmd(t, "link", "add", aName, "netns", a.Name, "type", "veth",
		"peer", "name", bName, "netns", b.Name); err != nil {
		t.Fatalf("netns: veth %s/%s — %s/%s: %v: %s", a.Name, aName, b.Name, bName, err, out)
	}
	a.Up(aName)
	b.Up(bName)
}

// Up sets a link up.
func (ns *NS) Up(dev string) { ns.t.Helper(); ns.IP("link", "set", dev, "up") }

// Addr adds an address in CIDR form (e.g. "192.0.2.1/24") to dev.
func (ns *NS) Addr(dev, cidr string) { ns.t.Helper(); ns.IP("addr", "add", cidr, "dev", dev) }

// VLAN creates an 802.1Q subinterface of parent with the given id, named
// name, and brings it up. It returns an error (rather than failing the
// test) because kernels without 8021q support cannot do it; callers
// usually skip then.
func (ns *NS) VLAN(parent, name string, id int) error {
	ns.t.Helper()
	out, err := ns.Run(ipPath(ns.t), "link", "add", "link", parent, "name", name, "type", "vlan", "id", fmt.Sprint(id))
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
	}
	ns.Up(name)
	return nil
}

// Line is the standard end-to-end topology: Client (eth0, 192.0.2.1/24) —
// Gateway (North "north0", South "south0", no addresses) — Server (eth0,
// 192.0.2.2/24). Nothing bridges the gateway's ports: the test puts a
// bridge (user-space or kernel) there.
type Line struct {
	Client, Gateway, Server *NS
	ClientAddr, ServerAddr  string // without prefix length
	North, South            string // gateway port names
}

// NewLine builds a Line and registers its removal.
func NewLine(t testing.TB) *Line {
	t.Helper()
	l := &Line{
		Client: New(t, "cli"), Gateway: New(t, "gw"), Server: New(t, "srv"),
		ClientAddr: "192.0.2.1", ServerAddr: "192.0.2.2",
		North: "north0", South: "south0",
	}
	Veth(t, l.Client, "eth0", l.Gateway, l.North)
	Veth(t, l.Gateway, l.South, l.Server, "eth0")
	l.Client.Addr("eth0", l.ClientAddr+"/24")
	l.Server.Addr("eth0", l.ServerAddr+"/24")
	return l
}
