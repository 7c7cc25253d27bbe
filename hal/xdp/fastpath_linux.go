package xdp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode is how the program is attached to a port.
type Mode uint8

const (
	// ModeAuto tries ModeNative, then ModeGeneric; on a veth it takes
	// ModeGeneric at once: a native redirect to a veth is dropped unless
	// the veth's peer has NAPI (GRO on or an XDP program of its own), and
	// it loses the sender's CHECKSUM_PARTIAL state, both of which a veth
	// peer has by default (measured: 0 of 10 datagrams delivered; see
	// TestAutoModeOnVeth).
	ModeAuto Mode = iota
	// ModeNative runs the program in the driver's receive path
	// (XDP_FLAGS_DRV_MODE), before an sk_buff exists.
	ModeNative
	// ModeGeneric runs it in the core receive path on the sk_buff
	// (XDP_FLAGS_SKB_MODE): works on every device, slower.
	ModeGeneric
	// ModeTC attaches, instead of the XDP program, its tc twin at tcx
	// ingress (BPF_TCX_INGRESS link, Linux 6.6): it reads the sk_buff in
	// place, with no copy and no headroom requirement, and redirects
	// with the same decision. AF_PACKET taps see every frame before tc
	// ingress does, so the caller must open its packet sockets with
	// SocketFilter (hal.PortOptions.SocketFilter), which keeps from them
	// the frames the tc program forwards. Never chosen by ModeAuto; not
	// with Config.XSK.
	ModeTC
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	case ModeTC:
		return "tc"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Sentinel errors.
var (
	// ErrUnavailable: the kernel refused to create the map, load the
	// program or attach it (no CAP_BPF/CAP_NET_ADMIN, a kernel without
	// BPF links for XDP (< 5.9), qemu-user, which has no bpf(2)). The
	// gateway falls back to forwarding everything in user space and
	// says so in a log line.
	ErrUnavailable = errors.New("xdp: not available")
	// ErrFull: the flow map holds MaxFlows flows; the flow stays in user
	// space.
	ErrFull = errors.New("xdp: flow map full")
	// ErrNotFound: no entry for the key.
	ErrNotFound = errors.New("xdp: flow not bypassed")
	// ErrClosed: the FastPath was closed.
	ErrClosed = errors.New("xdp: bypass closed")
)

// DefaultMaxFlows is Config.MaxFlows when zero.
const DefaultMaxFlows = 16384

// Config configures New.
type Config struct {
	// North and South are the two ports' interface names, in the
	// network namespace of the thread that calls New.
	North, South string
	// MaxFlows bounds the number of bypassed flows (each takes two map
	// entries of 80 bytes plus the hash table's overhead).
	MaxFlows int
	// Mode selects the attach mode; ModeAuto by default.
	Mode Mode
	// NonAtomicCounters loads the program variant without BPF atomics.
	// New takes it by itself on GOARCH=arm (the 32-bit ARM JIT has no
	// atomics) and when the kernel refuses the atomic variant.
	NonAtomicCounters bool
	// Lease bounds how long frames keep being redirected after the
	// owner stops renewing it (a goroutine renews it every Lease/8): the
	// program redirects only while the lease holds, so a dead or frozen
	// process stops the fast path within Lease even when the kernel's
	// detach of its links is delayed (the XDP link release takes the
	// rtnl lock, which other netlink users may hold for long). 0 means
	// DefaultLease; negative means no lease (the detach alone). When a
	// busy process renews late, frames of bypassed flows go to user
	// space meanwhile: the engine must forward those as it did before
	// the flow was bypassed.
	Lease time.Duration
	// XSK makes the program hand every frame it does not redirect to the
	// AF_XDP socket registered for the frame's receive queue
	// (RegisterXSK: the gateway's --io xdp ports, hal.PortOptions.XSKMap)
	// instead of passing it to the stack; where no socket is registered
	// the frame passes as before. Each port then gets its own copy of the
	// program with its own XSKMAP.
	XSK bool
	// Logger receives one line per start and stop (nil: discard).
	Logger *slog.Logger
}

// DefaultLease is Config.Lease when zero.
//
// 80 ms keeps a SIGKILL's stop under 100 ms with room for frames in flight;
// renewal every 10 ms tolerates a process that gets no CPU for 70 ms
// (observed under a load of 10-14 on 2 cores with 50 ms, which lapsed).
const DefaultLease = 80 * time.Millisecond

// leaseRenewals is how many times per lease the deadline is renewed.
const leaseRenewals = 8

// FastPath is the XDP flow bypass on a pair of ports (named so because in
// hal a Bypass is the fail-open relay or bridge): one program attached
// to both, and the flow map it reads. Frames of a flow in the map that
// arrive on the flow's ingress port are redirected (bpf_redirect) to the
// other port; every other frame continues to the kernel and so to the
// gateway's AF_PACKET sockets (XDP_PASS).
//
// The attachments are BPF links held only by this process's file
// descriptors, never pinned: when the process exits or is killed the
// kernel detaches the program and nothing forwards (fail-closed).
//
// Methods are safe for concurrent use. The zero value is not usable: use
// New.
type FastPath struct {
	mu     sync.RWMutex // guards closed against Close; the maps are the kernel's
	closed bool

	prog      *ebpf.Program // the north port's (and without XSK the south port's too)
	progSouth *ebpf.Program // with XSK: the south port's copy, with its own xsk map
	filter    *ebpf.Program // ModeTC: the packet sockets' filter (SocketFilter)
	xsks      [2]*ebpf.Map  // with XSK: per port, receive queue -> AF_XDP socket
	flows     *ebpf.Map
	stats     *ebpf.Map
	lease     *ebpf.Map
	leaseD    time.Duration // 0: no lease
	stopRenew chan struct{} // closed by Close; nil without a lease
	renewDone chan struct{}
	links     [2]link.Link
	ifindex   [2]uint32
	names     [2]string
	modes     [2]Mode
	atomic    bool
	log       *slog.Logger
}

// New creates the maps, loads the program and attaches it to both ports.
// It must run on a thread in the ports' network namespace (interface
// indexes are resolved there, after the kernel accepted the maps and the
// program, so that a system without XDP answers ErrUnavailable whatever
// the port names). An error wrapping ErrUnavailable means
// XDP cannot be used here; nothing is left attached then.
func New(cfg Config) (b *FastPath, err error) {
	if cfg.North == "" || cfg.South == "" || cfg.North == cfg.South {
		return nil, fmt.Errorf("xdp: need two distinct ports, got %q and %q", cfg.North, cfg.South)
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.Mode == ModeTC && cfg.XSK {
		return nil, errors.New("xdp: ModeTC cannot serve AF_XDP sockets (Config.XSK): they need the XDP program")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b = &FastPath{names: [2]string{cfg.North, cfg.South}, log: log.With("component", "xdp")}
	partial := b // the results are nil on error: release what was made
	defer func() {
		if err != nil {
			_ = partial.release()
		}
	}()
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer
	// ones to the memory cgroup, and this is a no-op there.
	if err := rlimit.RemoveMemlock(); err != nil {
		b.log.Warn("xdp: cannot raise RLIMIT_MEMLOCK", "err", err)
	}
	b.flows, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: flowsMapName, Type: ebpf.Hash,
		KeySize: keySize, ValueSize: valueSize, MaxEntries: uint32(2 * cfg.MaxFlows),
	})
	if err != nil {
		return nil, fmt.Errorf("xdp: create flow map: %w (%w)", ErrUnavailable, err)
	}
	b.stats, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: statsMapName, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numStats,
	})
	if err != nil {
		return nil, fmt.Errorf("xdp: create stats map: %w (%w)", ErrUnavailable, err)
	}
	b.lease, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: leaseMapName, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("xdp: create lease map: %w (%w)", ErrUnavailable, err)
	}
	switch {
	case cfg.Lease == 0:
		b.leaseD = DefaultLease
	case cfg.Lease > 0:
		b.leaseD = cfg.Lease
	}
	if err := b.renew(); err != nil {
		return nil, err
	}
	// The 32-bit ARM JIT has no BPF atomics: with them the kernel would
	// run the whole program in the interpreter (or refuse it with
	// CONFIG_BPF_JIT_ALWAYS_ON), so plain counters from the start there.
	if cfg.XSK {
		for i := range b.xsks {
			b.xsks[i], err = ebpf.NewMap(&ebpf.MapSpec{
				Name: xskMapName, Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: maxXSKQueues,
			})
			if err != nil {
				return nil, fmt.Errorf("xdp: create XSKMAP: %w (%w)", ErrUnavailable, err)
			}
		}
	}
	fl := forXDP
	if cfg.Mode == ModeTC {
		fl = forTC
	}
	b.atomic = !cfg.NonAtomicCounters && runtime.GOARCH != "arm"
	b.prog, err = b.load(fl, b.atomic, b.xsks[0])
	if err != nil && b.atomic {
		b.log.Info("xdp: program with atomic counters refused, loading plain counters", "err", err)
		b.atomic = false
		b.prog, err = b.load(fl, false, b.xsks[0])
	}
	if err == nil && cfg.XSK {
		b.progSouth, err = b.load(fl, b.atomic, b.xsks[1])
	}
	if err == nil && cfg.Mode == ModeTC {
		b.filter, err = b.load(forFilter, false, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("xdp: load program: %w (%w)", ErrUnavailable, err)
	}
	for i, name := range b.names {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("xdp: port %s: %w", name, err)
		}
		b.ifindex[i] = uint32(ifi.Index)
	}
	for i := range b.names {
		if err := b.attach(i, cfg.Mode); err != nil {
			return nil, err
		}
	}
	if b.leaseD > 0 {
		b.stopRenew, b.renewDone = make(chan struct{}), make(chan struct{})
		go b.runRenew()
	}
	b.log.Info("xdp: bypass attached", "north", cfg.North, "north_mode", b.modes[0],
		"south", cfg.South, "south_mode", b.modes[1], "atomic_counters", b.atomic,
		"max_flows", cfg.MaxFlows, "lease", b.leaseD, "xsk", cfg.XSK)
	return b, nil
}

// renew sets the lease deadline to now + Lease (or to never).
func (b *FastPath) renew() error {
	deadline := uint64(math.MaxUint64)
	if b.leaseD > 0 {
		deadline = monotonicNow() + uint64(b.leaseD)
	}
	if err := b.lease.Update(uint32(0), deadline, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdp: renew lease: %w", err)
	}
	return nil
}

// runRenew renews the lease every Lease/leaseRenewals until Close.
func (b *FastPath) runRenew() {
	b.log.Info("xdp: runRenew started", "every", b.leaseD/leaseRenewals)
	defer close(b.renewDone)
	t := time.NewTicker(b.leaseD / leaseRenewals)
	defer t.Stop()
	for {
		select {
		case <-b.stopRenew:
			b.log.Info("xdp: runRenew stopped")
			return
		case <-t.C:
			if err := b.renew(); err != nil {
				b.log.Warn("xdp: runRenew", "err", err)
			}
		}
	}
}

// maxXSKQueues bounds the receive queues an XSKMAP holds sockets for.
const maxXSKQueues = 64

// load loads the program of flavour f; with xsk (not nil) the XDP
// variant that hands frames it does not redirect to the sockets in xsk.
func (b *FastPath) load(f flavour, atomic bool, xsk *ebpf.Map) (*ebpf.Program, error) {
	insns := build(f, atomic, xsk != nil)
	maps := map[string]*ebpf.Map{flowsMapName: b.flows, leaseMapName: b.lease}
	if f != forFilter { // the filter counts nothing
		maps[statsMapName] = b.stats
	}
	if xsk != nil {
		maps[xskMapName] = xsk
	}
	for name, m := range maps {
		if err := insns.AssociateMap(name, m); err != nil {
			return nil, err
		}
	}
	spec := &ebpf.ProgramSpec{
		Name: "otgw_bypass", Type: ebpf.XDP, Instructions: insns,
		// No GPL-only helper is used (map lookup, ktime, redirect,
		// skb_pull_data, skb_load_bytes).
		License: "otgw, see NOTICE",
	}
	switch f {
	case forTC:
		spec.Name, spec.Type = "otgw_bypass_tc", ebpf.SchedCLS
	case forFilter:
		spec.Name, spec.Type = "otgw_bypass_sf", ebpf.SocketFilter
	}
	return ebpf.NewProgram(spec)
}

func (b *FastPath) attach(i int, mode Mode) error {
	if mode == ModeTC {
		// A tcx link, like the XDP one, is held only by this process's
		// file descriptor: the kernel detaches it when the process dies.
		l, err := link.AttachTCX(link.TCXOptions{Program: b.prog, Interface: int(b.ifindex[i]), Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("xdp: attach tcx ingress to %s: %w (%w)", b.names[i], ErrUnavailable, err)
		}
		b.links[i], b.modes[i] = l, ModeTC
		return nil
	}
	try := []Mode{mode}
	if mode == ModeAuto {
		try = []Mode{ModeNative, ModeGeneric}
		if l, err := netlink.LinkByName(b.names[i]); err == nil && l.Type() == "veth" {
			b.log.Info("xdp: veth port: generic mode (a native redirect to a veth needs NAPI on its peer)", "port", b.names[i])
			try = []Mode{ModeGeneric}
		}
	}
	var errs []error
	for _, m := range try {
		flags := link.XDPDriverMode
		if m == ModeGeneric {
			flags = link.XDPGenericMode
		}
		prog := b.prog
		if i == int(South) && b.progSouth != nil {
			prog = b.progSouth
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: int(b.ifindex[i]), Flags: flags})
		if err == nil {
			b.links[i], b.modes[i] = l, m
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
	}
	return fmt.Errorf("xdp: attach to %s: %w (%w)", b.names[i], ErrUnavailable, errors.Join(errs...))
}

// RegisterXSK makes fd, an AF_XDP socket bound to receive queue queue of
// the port with interface index ifindex, the destination of that queue's
// frames the bypass does not forward (hal.XSKMap). It needs Config.XSK.
func (b *FastPath) RegisterXSK(ifindex, queue, fd int) error {
	m, err := b.xskMap(ifindex, queue)
	if err != nil {
		return err
	}
	if err := m.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdp: register AF_XDP socket for ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return nil
}

// UnregisterXSK removes the socket of a port's receive queue; its frames
// pass to the stack from then on (hal.XSKMap).
func (b *FastPath) UnregisterXSK(ifindex, queue int) error {
	m, err := b.xskMap(ifindex, queue)
	if err != nil {
		return err
	}
	if err := m.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xdp: unregister AF_XDP socket for ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return nil
}

func (b *FastPath) xskMap(ifindex, queue int) (*ebpf.Map, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	if b.xsks[0] == nil {
		return nil, fmt.Errorf("xdp: AF_XDP socket for ifindex %d: the bypass was made without Config.XSK", ifindex)
	}
	if queue < 0 || queue >= maxXSKQueues {
		return nil, fmt.Errorf("xdp: AF_XDP socket for queue %d: want 0-%d", queue, maxXSKQueues-1)
	}
	for i, ifi := range b.ifindex {
		if int(ifi) == ifindex {
			return b.xsks[i], nil
		}
	}
	return nil, fmt.Errorf("xdp: AF_XDP socket for ifindex %d: not one of the bypass's ports %s/%s", ifindex, b.names[0], b.names[1])
}

// SocketFilter returns, in ModeTC, the socket filter the caller's packet
// sockets on both ports must carry (hal.PortOptions.SocketFilter;
// SO_ATTACH_BPF takes its own reference): it keeps from them the frames
// the tc program forwards, with the same decision, so that user space
// does not forward them a second time. nil in the XDP modes, where the
// program runs before the sockets and nothing needs filtering.
//
// The filter and the tc program look the flow up one after the other, so
// a change of the flow map between the two (an Add, a Remove, a closing
// FIN/RST/SYN of the other direction, the lease lapsing) can split their
// verdicts for a frame in flight: delivered to the socket and redirected
// (a duplicate, only of a flow Add just allowed, or of a bypassed flow
// when the lease is renewed after a lapse), or not delivered and not
// redirected (a drop). Neither forwards a frame of a flow that is not in
// the map: fail-closed holds.
//
// The tc and filter programs compare pointers into their stack copy of
// the headers; the kernel may ask CAP_PERFMON (or CAP_SYS_ADMIN) for that
// where the XDP program, on packet pointers, needs only CAP_BPF and
// CAP_NET_ADMIN: without it New reports ErrUnavailable (not checked
// here: otgw runs as root).
func (b *FastPath) SocketFilter() *ebpf.Program { return b.filter }

// Mode returns the attach mode a port got.
func (b *FastPath) Mode(s Side) Mode { return b.modes[s&1] }

// Ifindex returns a port's interface index.
func (b *FastPath) Ifindex(s Side) int { return int(b.ifindex[s&1]) }

// AtomicCounters reports whether the loaded program uses BPF atomics.
func (b *FastPath) AtomicCounters() bool { return b.atomic }

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return uint64(ts.Nano())
}

// Add bypasses both directions of a flow: frames of k that arrive on
// egress.Other() are redirected to egress, and frames of k.Reverse() that
// arrive on egress are redirected to egress.Other(). An existing entry
// for either direction is replaced (its counters restart). Add is a
// control-plane call (two map updates, a few microseconds).
func (b *FastPath) Add(k Key, egress Side) error {
	if err := k.check(); err != nil {
		return err
	}
	if egress > South {
		return fmt.Errorf("xdp: add %s: bad side %d", k, egress)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	now := monotonicNow()
	fk, rk := k.encode(), k.Reverse().encode()
	fv := entry{egress: b.ifindex[egress], ingress: b.ifindex[egress.Other()], lastSeen: now}.encode()
	rv := entry{egress: b.ifindex[egress.Other()], ingress: b.ifindex[egress], reverse: true, lastSeen: now}.encode()
	if err := b.flows.Update(&rk, &rv, ebpf.UpdateAny); err != nil {
		return updateErr(k, err)
	}
	if err := b.flows.Update(&fk, &fv, ebpf.UpdateAny); err != nil {
		_ = b.flows.Delete(&rk)
		return updateErr(k, err)
	}
	return nil
}

func updateErr(k Key, err error) error {
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("xdp: add %s: %w", k, ErrFull)
	}
	return fmt.Errorf("xdp: add %s: %w", k, err)
}

// Remove ends the bypass of the flow k belongs to (either direction may
// be given): both entries are deleted and the flow's frames go to user
// space again. ErrNotFound when neither direction was in the map.
func (b *FastPath) Remove(k Key) error {
	if err := k.check(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	found := false
	for _, kk := range [2]mapKey{k.encode(), k.Reverse().encode()} {
		err := b.flows.Delete(&kk)
		switch {
		case err == nil:
			found = true
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return fmt.Errorf("xdp: remove %s: %w", k, err)
		}
	}
	if !found {
		return fmt.Errorf("xdp: remove %s: %w", k, ErrNotFound)
	}
	return nil
}

// Lookup returns the flow k belongs to (either direction may be given).
func (b *FastPath) Lookup(k Key) (Flow, error) {
	if err := k.check(); err != nil {
		return Flow{}, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return Flow{}, ErrClosed
	}
	var es [2]*entry
	for i, kk := range [2]mapKey{k.encode(), k.Reverse().encode()} {
		var v mapValue
		err := b.flows.Lookup(&kk, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return Flow{}, fmt.Errorf("xdp: lookup %s: %w", k, err)
		}
		e := v.decode()
		es[i] = &e
	}
	if es[0] == nil && es[1] == nil {
		return Flow{}, fmt.Errorf("xdp: lookup %s: %w", k, ErrNotFound)
	}
	if (es[0] != nil && es[0].reverse) || (es[0] == nil && !es[1].reverse) {
		k, es[0], es[1] = k.Reverse(), es[1], es[0]
	}
	return b.flow(k.unmap(), es[0], es[1]), nil
}

// flow assembles a Flow from its forward and reverse entries (either may
// be nil while an Add or Remove is half done).
func (b *FastPath) flow(k Key, fwd, rev *entry) Flow {
	f := Flow{Key: k}
	side := func(ifindex uint32) Side {
		if ifindex == b.ifindex[South] {
			return South
		}
		return North
	}
	if fwd != nil {
		f.Egress = side(fwd.egress)
		f.Forward = Counters{Packets: fwd.packets, Bytes: fwd.bytes, LastSeen: time.Duration(fwd.lastSeen)}
		f.Closed = fwd.closed
	}
	if rev != nil {
		if fwd == nil {
			f.Egress = side(rev.egress).Other()
		}
		f.Reverse = Counters{Packets: rev.packets, Bytes: rev.bytes, LastSeen: time.Duration(rev.lastSeen)}
		f.Closed = f.Closed || rev.closed
	}
	return f
}

// Walk calls fn for every bypassed flow until fn returns false. It
// reads the whole map first (a consistent-enough snapshot: the program
// never adds or deletes entries, only marks them closed and counts).
func (b *FastPath) Walk(fn func(Flow) bool) error {
	flows, err := b.snapshot()
	if err != nil {
		return err
	}
	for _, f := range flows {
		if !fn(f) {
			break
		}
	}
	return nil
}

func (b *FastPath) snapshot() ([]Flow, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	all := make(map[mapKey]entry)
	var (
		k mapKey
		v mapValue
	)
	it := b.flows.Iterate()
	for it.Next(&k, &v) {
		all[k] = v.decode()
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("xdp: walk flow map: %w", err)
	}
	var out []Flow
	for mk, e := range all {
		key, ok := mk.decode()
		if !ok {
			continue // only Add writes keys; cannot happen
		}
		rk := key.Reverse().encode()
		if e.reverse {
			if _, paired := all[rk]; paired {
				continue // reported with its forward entry
			}
			out = append(out, b.flow(key.Reverse(), nil, &e))
			continue
		}
		fwd := e
		if r, ok := all[rk]; ok {
			out = append(out, b.flow(key, &fwd, &r))
		} else {
			out = append(out, b.flow(key, &fwd, nil))
		}
	}
	return out, nil
}

// Expire removes the flows that are closed (FIN, RST or SYN seen by the
// program) or whose both directions were last seen idle or longer ago,
// and calls fn (when not nil) with each removed flow's final figures,
// so the caller can add them to its per-conduit counters. It returns the
// number of flows removed. The gateway calls it periodically, with the
// idle timeout of its own flow table.
func (b *FastPath) Expire(idle time.Duration, fn func(Flow)) (int, error) {
	flows, err := b.snapshot()
	if err != nil {
		return 0, err
	}
	now := time.Duration(monotonicNow())
	n := 0
	for _, f := range flows {
		last := max(f.Forward.LastSeen, f.Reverse.LastSeen)
		if !f.Closed && now-last < idle {
			continue
		}
		if err := b.Remove(f.Key); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // removed meanwhile
			}
			return n, err
		}
		// The figures are the snapshot's: frames redirected between the
		// snapshot and the delete (microseconds) are not in them.
		if fn != nil {
			fn(f)
		}
		n++
	}
	return n, nil
}

// Stats returns the program's counters summed over CPUs.
func (b *FastPath) Stats() (Stats, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return Stats{}, ErrClosed
	}
	var sum [numStats]uint64
	for i := range sum {
		var per []uint64
		if err := b.stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("xdp: read stats: %w", err)
		}
		for _, v := range per {
			sum[i] += v
		}
	}
	return Stats{
		Redirected: sum[statRedirected], NoMatch: sum[statNoMatch], Closing: sum[statClosing],
		Closed: sum[statClosed], WrongPort: sum[statWrongPort], Unparsed: sum[statUnparsed],
		Lapsed: sum[statLapsed],
	}, nil
}

// Close detaches the program from both ports and frees the maps. Frames
// of bypassed flows go to user space from then on. Close is idempotent.
//
// In ModeTC the sockets keep their filter (and through it the maps)
// after Close, and from then on it must deliver every frame, as nothing
// redirects any more. Two things each make it do so, and Close does both
// before it detaches the tc program: it ends the lease, and it empties
// the flow map (without a lease, Config.Lease < 0, nothing else would
// end the withholding if the lease's end failed). Both only take
// bypass away (nothing can add a flow once closed is set), so a frame
// whose two lookups straddle them is withheld by the filter and passed
// on by the tc program: lost, like any frame in flight at a stop, but
// never forwarded twice, and nothing is redirected without an entry.
// Detaching first would instead withhold and not redirect every
// bypassed frame until the map was empty. If both fail the error says
// so: the filter may then keep withholding bypassed flows' frames.
func (b *FastPath) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.stopRenew != nil {
		close(b.stopRenew)
		<-b.renewDone
	}
	leaseErr := b.lease.Update(uint32(0), uint64(0), ebpf.UpdateAny)
	if leaseErr != nil {
		b.log.Warn("xdp: end lease", "err", leaseErr)
	}
	var errs []error
	if err := b.clearFlows(); err != nil {
		b.log.Warn("xdp: empty flow map", "err", err)
		if leaseErr != nil {
			errs = append(errs, fmt.Errorf("xdp: end lease: %w", leaseErr), err)
		}
	}
	errs = append(errs, b.release())
	b.log.Info("xdp: bypass detached", "north", b.names[0], "south", b.names[1])
	return errors.Join(errs...)
}

// clearFlows deletes every entry of the flow map (the keys are read
// first: deleting while iterating a hash map can restart the walk).
func (b *FastPath) clearFlows() error {
	var (
		k    mapKey
		v    mapValue
		keys []mapKey
	)
	it := b.flows.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	var errs []error
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("xdp: walk flow map: %w", err))
	}
	for i := range keys {
		if err := b.flows.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("xdp: delete flow: %w", err))
			break
		}
	}
	return errors.Join(errs...)
}

func (b *FastPath) release() error {
	var errs []error
	for i, l := range b.links {
		if l != nil {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("xdp: detach from %s: %w", b.names[i], err))
			}
			b.links[i] = nil
		}
	}
	for _, p := range []*ebpf.Program{b.prog, b.progSouth, b.filter} {
		if p != nil {
			_ = p.Close()
		}
	}
	for _, m := range []*ebpf.Map{b.flows, b.stats, b.lease, b.xsks[0], b.xsks[1]} {
		if m != nil {
			_ = m.Close()
		}
	}
	return errors.Join(errs...)
}
