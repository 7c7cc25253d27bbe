package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/xdp"
	"github.com/otgw/otgw/rules"
)

// The XDP flow bypass in the daemon (DESIGN.md "Fast path"; hal/xdp): the
// engine offers flows of plain tcp:/udp: conduits once their opening was
// allowed (gateway.Bypass); runFastPath adds them to the program's flow
// map, and keeps the map in step with the engine: it removes flows the
// program saw close (FIN, RST, SYN), flows the engine expired or evicted,
// and, after a policy reload, flows whose conduit changed or is gone
// (gateway.Engine.BypassCheck), and it tells the engine when a bypassed
// flow was last forwarded so that a busy flow does not expire. The
// program and its links belong to this process: when it dies, nothing
// forwards (and the lease stops the program within hal/xdp.DefaultLease
// even before the kernel detaches it).

// Tuning of runFastPath.
const (
	// xdpOfferQueue bounds the offers waiting for runFastPath; an offer
	// that finds it full is lost (the flow stays in user space).
	xdpOfferQueue = 4096
	// xdpPoll is how often runFastPath looks for a policy reload (a
	// reload is applied to the bypassed flows within about this).
	xdpPoll = 20 * time.Millisecond
	// xdpSync is how often every bypassed flow is checked against the
	// engine (expiry, eviction) and its last-seen time handed over.
	xdpSync = time.Second
)

// fastPath is the daemon's side of the XDP bypass.
type fastPath struct {
	fp     *xdp.FastPath
	xsk    bool // the program hands what it does not forward to AF_XDP ports (--io xdp or auto)
	log    *slog.Logger
	offers chan offer

	lost   atomic.Uint64 // offers dropped on a full queue
	offerN atomic.Uint64 // offers received from the engine
	// retired is the engine of a datapath that failed: its offers still
	// queued are dropped, its flows leave the map (xdpFlush).
	retired atomic.Pointer[gateway.Engine]

	mu      sync.Mutex // guards flows, totals and the counters below; held across map reads and writes that must look atomic to a scrape
	flows   map[xdp.Key]*bypassed
	totals  map[string]*[2]uint64 // conduit: packets and bytes of flows no longer in the map
	added   uint64
	full    uint64            // refused: the map is full
	failed  uint64            // refused: another error
	removed map[string]uint64 // by reason
}

// offer is one engine offer on its way to runFastPath.
type offer struct {
	bf gateway.BypassFlow
	e  *gateway.Engine
}

// bypassed is a flow in the map, as runFastPath added it.
type bypassed struct {
	bf gateway.BypassFlow
	e  *gateway.Engine // the engine that offered it (a datapath restart replaces the engine)
}

// offerSink is the gateway.Bypass of one engine.
type offerSink struct {
	x *fastPath
	e atomic.Pointer[gateway.Engine]
}

// Offer queues the flow for runFastPath; it never blocks or allocates.
func (s *offerSink) Offer(bf gateway.BypassFlow) {
	s.x.offerN.Add(1)
	select {
	case s.x.offers <- offer{bf: bf, e: s.e.Load()}:
	default:
		s.x.lost.Add(1)
	}
}

// engineBypass returns the Bypass to configure a new engine with (nil
// without the fast path) and the function that binds it to that engine.
func (d *Daemon) engineBypass() (gateway.Bypass, func(*gateway.Engine)) {
	x := d.xdp
	if x == nil {
		return nil, func(*gateway.Engine) {}
	}
	s := &offerSink{x: x}
	return s, func(e *gateway.Engine) { s.e.Store(e) }
}

// xdpMode is the mode in force: the flag, or the board profile's default.
func (d *Daemon) xdpMode() board.XDPMode {
	if d.cfg.XDP != "" {
		return d.cfg.XDP
	}
	return d.profile.XDPDefault()
}

// openXDP attaches the fast path as --xdp (or the board profile) asks,
// and starts runFastPath; the release (stop, detach) is pushed on c.
//
// The attach modes are tried in order until one attaches (attachOrder):
// native (driver) mode, except on veth ports, where a native redirect is
// dropped unless the peer has NAPI; then, with packet-socket ports (--io
// ring or mmsg), the tc twin (hal/xdp.ModeTC, Linux 6.6), which reads the
// sk_buff in place and whose socket filter openPorts puts on the ports'
// packet sockets; then, with --xdp on only, generic mode. auto never takes
// generic mode: it copies every non-linear sk_buff and slowed the
// inspected path's Modbus round trip even with no flow bypassed
// (BENCHMARKS.md, "XDP flow bypass in otgw run"), and the inspected path
// is the gateway's first job. Where nothing attaches, auto says so once
// and the gateway forwards everything in user space; on refuses to start.
// --xdp-attach forces one mode. This FastPath lives until Run returns, so
// in tc mode every port the datapath (re)opens carries its filter.
func (d *Daemon) openXDP(ctx context.Context, c *cleanups) error {
	mode := d.xdpMode()
	d.xdpState = xdpStateOff
	if d.cfg.XDPAttach == "tc" && mode == board.XDPOff {
		// (generic with off still means the AF_XDP ports' own programs.)
		return d.failStart("xdp", errors.New("daemon: --xdp-attach tc needs --xdp on or auto (the XDP mode in force is off)"))
	}
	if mode == board.XDPOff {
		d.log.Info("xdp: fast path off", "board", d.profile.Name)
		return nil
	}
	// With AF_XDP ports the bypass's program is also theirs: there is one
	// XDP program per port, and the tc program cannot hand frames to them.
	xsk := d.cfg.IO == hal.IOXDP || d.cfg.IO == hal.IOAuto
	veth := vethPort(d.ports)
	order, err := attachOrder(mode, d.cfg.XDPAttach, d.cfg.IO, veth)
	if err != nil {
		return d.failStart("xdp", err)
	}
	cfg := xdp.Config{North: d.ports[0], South: d.ports[1], MaxFlows: d.cfg.MaxFlows, Logger: d.cfg.Logger, XSK: xsk}
	var fp *xdp.FastPath
	var errs []error
	if len(order) == 0 {
		errs = append(errs, fmt.Errorf("xdp: port %s is a veth, where only generic mode can feed AF_XDP ports: %w (auto never takes generic mode; --xdp on does)", veth, xdp.ErrUnavailable))
	}
	for _, m := range order {
		cfg.Mode = m
		if f := d.cfg.XDPFaultUnavailable; f == "all" || slices.Contains(strings.Split(f, ","), m.String()) {
			err = fmt.Errorf("%w (test fault injection: OTGW_FAULT_XDP_UNAVAILABLE=%s)", xdp.ErrUnavailable, f)
		} else {
			fp, err = xdp.New(cfg)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, xdp.ErrUnavailable) {
			return d.failStart("xdp", fmt.Errorf("daemon: --xdp %s: %s mode: %w", mode, m, err))
		}
		errs = append(errs, fmt.Errorf("%s mode: %w", m, err))
	}
	if fp == nil {
		err := errors.Join(errs...)
		if mode == board.XDPOn {
			return d.failStart("xdp", fmt.Errorf("daemon: --xdp %s: %w", mode, err))
		}
		d.xdpState, d.xdpReason = xdpStateUnavailable, err.Error()
		d.log.Warn("xdp: fast path unavailable, every flow stays in user space", "err", err)
		return nil
	}
	if len(errs) > 0 {
		// Attached, but not in the first mode tried: the status says why.
		d.xdpReason = errors.Join(errs...).Error()
		d.log.Info("xdp: fast path attached after a mode was unavailable", "mode", cfg.Mode, "unavailable", d.xdpReason)
	}
	x := &fastPath{fp: fp, xsk: xsk, log: d.cfg.Logger.With("component", "xdp"), offers: make(chan offer, xdpOfferQueue),
		flows: map[xdp.Key]*bypassed{}, totals: map[string]*[2]uint64{}, removed: map[string]uint64{}}
	d.xdp, d.xdpState = x, xdpStateAttached
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d.runFastPath(ctx) }()
	c.push(func() {
		cancel()
		<-done
		_ = fp.Close()
	})
	return nil
}

// attachOrder is the list of attach modes openXDP tries for the XDP mode
// in force (auto or on), the --xdp-attach flag ("" for the default), the
// ports' I/O (AF_XDP sockets, with xdp or auto, can be fed by an XDP
// program only) and the first veth port ("" for none). See openXDP. It is
// empty for auto with AF_XDP on a veth.
func attachOrder(mode board.XDPMode, attach string, io hal.IOMode, veth string) ([]xdp.Mode, error) {
	xsk := io == hal.IOXDP || io == hal.IOAuto
	switch attach {
	case "native":
		return []xdp.Mode{xdp.ModeNative}, nil
	case "generic":
		return []xdp.Mode{xdp.ModeGeneric}, nil
	case "tc":
		if xsk {
			return nil, fmt.Errorf("daemon: --xdp-attach tc needs packet sockets (--io ring or mmsg), not I/O %s (--io or the board profile)", io)
		}
		return []xdp.Mode{xdp.ModeTC}, nil
	case "":
	default:
		return nil, fmt.Errorf("daemon: --xdp-attach %q: want native, generic or tc", attach)
	}
	var order []xdp.Mode
	if veth == "" {
		order = append(order, xdp.ModeNative)
	}
	if !xsk {
		order = append(order, xdp.ModeTC)
	}
	if mode == board.XDPOn {
		order = append(order, xdp.ModeGeneric)
	}
	return order, nil
}

// vethPort returns the first of ports that is a veth, or "".
func vethPort(ports [2]string) string {
	for _, name := range ports {
		if l, err := netlink.LinkByName(name); err == nil && l.Type() == "veth" {
			return name
		}
	}
	return ""
}

// xdp states for the status document.
const (
	xdpStateOff         = "off"
	xdpStateUnavailable = "unavailable"
	xdpStateAttached    = "attached"
)

// runFastPath adds offered flows to the map and keeps the map in step
// with the engine and the policy until ctx is done.
func (d *Daemon) runFastPath(ctx context.Context) {
	x := d.xdp
	x.log.Info("runFastPath started", "north_mode", x.fp.Mode(xdp.North), "south_mode", x.fp.Mode(xdp.South))
	defer x.log.Info("runFastPath stopped")
	poll := time.NewTicker(xdpPoll)
	defer poll.Stop()
	var (
		lastRS   *rules.Ruleset
		lastSync time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-x.offers:
			x.add(o)
		case now := <-poll.C:
			rs := d.watcher.Ruleset()
			if rs != lastRS || now.Sub(lastSync) >= xdpSync {
				lastRS, lastSync = rs, now
				x.sync(d.Engine())
			}
		}
	}
}

// key is the map key of a flow: the client's direction.
func key(bf *gateway.BypassFlow) xdp.Key {
	return xdp.Key{Proto: bf.Proto, Src: bf.Client, Dst: bf.Server}
}

// add puts an offered flow in the map: the client's frames arrive on
// bf.ClientPort and leave by the other port.
func (x *fastPath) add(o offer) {
	if o.e == nil || o.e == x.retired.Load() {
		return
	}
	k := key(&o.bf)
	egress := xdp.South
	if o.bf.ClientPort == gateway.South {
		egress = xdp.North
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, kk := range [2]xdp.Key{k, k.Reverse()} {
		if old := x.flows[kk]; old != nil {
			// A new connection on the same addresses (either way round):
			// the old entry's figures go to its conduit before Add
			// replaces it and restarts them.
			if f, err := x.fp.Lookup(kk); err == nil {
				x.fold(old, &f)
			}
			delete(x.flows, kk)
		}
	}
	switch err := x.fp.Add(k, egress); {
	case err == nil:
		x.flows[k] = &bypassed{bf: o.bf, e: o.e}
		x.added++
	case errors.Is(err, xdp.ErrFull):
		x.full++
	default:
		x.failed++
		x.log.Warn("xdp: flow not bypassed", "flow", k, "err", err)
	}
}

// fold adds a flow's figures to its conduit's totals. Caller holds x.mu.
func (x *fastPath) fold(b *bypassed, f *xdp.Flow) {
	t := x.totals[b.bf.Conduit]
	if t == nil {
		t = new([2]uint64)
		x.totals[b.bf.Conduit] = t
	}
	t[0] += f.Forward.Packets + f.Reverse.Packets
	t[1] += f.Forward.Bytes + f.Reverse.Bytes
}

// sync checks every bypassed flow: closed in the program (FIN, RST,
// SYN), offered by another engine (the datapath restarted), or refused
// by the engine (expired, evicted, replaced, or its conduit changed at a
// reload) leaves the map; the others hand their last-seen time to the
// engine.
func (x *fastPath) sync(e *gateway.Engine) {
	var snap []xdp.Flow
	if err := x.fp.Walk(func(f xdp.Flow) bool { snap = append(snap, f); return true }); err != nil {
		x.log.Warn("xdp: read flow map", "err", err)
		return
	}
	mono := time.Duration(monotonicNow())
	wall := time.Now()
	seen := make(map[xdp.Key]bool, len(snap))
	for i := range snap {
		f := &snap[i]
		seen[f.Key] = true
		x.mu.Lock()
		b := x.flows[f.Key]
		x.mu.Unlock()
		reason := ""
		switch {
		case b == nil:
			reason = "unknown"
		case f.Closed:
			reason = "closed"
		case e == nil || b.e != e || b.e == x.retired.Load():
			reason = "restart"
		default:
			last := max(f.Forward.LastSeen, f.Reverse.LastSeen)
			if !e.BypassCheck(&b.bf, wall.Add(last-mono)) {
				reason = "engine"
			}
		}
		if reason != "" {
			x.remove(f.Key, reason)
		}
	}
	x.mu.Lock()
	for k := range x.flows {
		if !seen[k] && !x.fpHas(k) {
			delete(x.flows, k)
		}
	}
	x.mu.Unlock()
}

// fpHas reports whether k is in the map (a flow added after the
// snapshot is).
func (x *fastPath) fpHas(k xdp.Key) bool {
	_, err := x.fp.Lookup(k)
	return err == nil
}

// remove takes k out of the map, folding its last figures into its
// conduit's totals in the same critical section as the delete, so a
// scrape never counts a flow twice or loses it.
func (x *fastPath) remove(k xdp.Key, reason string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	f, lerr := x.fp.Lookup(k)
	if err := x.fp.Remove(k); err != nil && !errors.Is(err, xdp.ErrNotFound) {
		x.log.Warn("xdp: remove", "flow", k, "err", err)
		return
	}
	if b := x.flows[k]; b != nil {
		if lerr == nil {
			x.fold(b, &f)
		}
		delete(x.flows, k)
	}
	x.removed[reason]++
}

// xdpFlush takes every flow out of the map when the datapath stops: the
// engine that offered them is gone (a failed datapath restarts with a new
// engine and flow table), and nothing it let through may forward
// meanwhile.
func (d *Daemon) xdpFlush() {
	x := d.xdp
	if x == nil {
		return
	}
	x.retired.Store(d.Engine())
	x.mu.Lock()
	keys := make([]xdp.Key, 0, len(x.flows))
	for k := range x.flows {
		keys = append(keys, k)
	}
	x.mu.Unlock()
	for _, k := range keys {
		x.remove(k, "restart")
	}
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return uint64(ts.Nano())
}

// XDPStatus is the fast path's part of the status document.
type XDPStatus struct {
	// State is attached, unavailable (auto found no XDP: Reason says
	// why) or off. Attached with a Reason: the modes tried first were
	// unavailable, and why.
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	NorthMode string `json:"north_mode,omitempty"` // native, generic or tc
	SouthMode string `json:"south_mode,omitempty"`
	Flows     int    `json:"flows"` // flows in the map now
	// Offers: flows the engine offered; Added to the map; Full: refused,
	// the map was full; Lost: the offer queue was full; Failed: another
	// error. Removed counts flows taken out of the map, by reason
	// (closed: FIN/RST/SYN seen; engine: expired, evicted or refused by
	// the policy in force; restart; unknown).
	Offers   uint64            `json:"offers"`
	Added    uint64            `json:"added"`
	Full     uint64            `json:"full"`
	Lost     uint64            `json:"lost"`
	Failed   uint64            `json:"failed"`
	Removed  map[string]uint64 `json:"removed"`
	Conduits []XDPConduit      `json:"conduits"`
	// Frames are the program's own counters (per-CPU, summed), by
	// result: redirected, no_match, closing, closed, wrong_port,
	// unparsed, lapsed (hal/xdp.Stats).
	Frames map[string]uint64 `json:"frames"`
}

// XDPConduit is what the fast path forwarded for one conduit, both
// directions, flows gone from the map included.
type XDPConduit struct {
	Conduit string `json:"conduit"`
	Flows   int    `json:"flows"` // in the map now
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// xdpStatus reads the map and the program's per-CPU counters now (one
// call per status request or scrape); nil before Run decided.
func (d *Daemon) xdpStatus() *XDPStatus {
	if d.xdpState == "" {
		return nil
	}
	s := &XDPStatus{State: d.xdpState, Reason: d.xdpReason}
	x := d.xdp
	if x == nil {
		return s
	}
	s.NorthMode, s.SouthMode = x.fp.Mode(xdp.North).String(), x.fp.Mode(xdp.South).String()
	s.Offers, s.Lost = x.offerN.Load(), x.lost.Load()
	byConduit := map[string]*XDPConduit{}
	get := func(name string) *XDPConduit {
		c := byConduit[name]
		if c == nil {
			c = &XDPConduit{Conduit: name}
			byConduit[name] = c
		}
		return c
	}
	x.mu.Lock()
	s.Added, s.Full, s.Failed = x.added, x.full, x.failed
	s.Removed = make(map[string]uint64, len(x.removed))
	for r, n := range x.removed {
		s.Removed[r] = n
	}
	for name, t := range x.totals {
		c := get(name)
		c.Packets += t[0]
		c.Bytes += t[1]
	}
	err := x.fp.Walk(func(f xdp.Flow) bool {
		s.Flows++
		name := ""
		if b := x.flows[f.Key]; b != nil {
			name = b.bf.Conduit
		}
		c := get(name)
		c.Flows++
		c.Packets += f.Forward.Packets + f.Reverse.Packets
		c.Bytes += f.Forward.Bytes + f.Reverse.Bytes
		return true
	})
	x.mu.Unlock()
	if err != nil {
		x.log.Warn("xdp: read flow map", "err", err)
	}
	for _, c := range byConduit {
		s.Conduits = append(s.Conduits, *c)
	}
	sort.Slice(s.Conduits, func(i, j int) bool { return s.Conduits[i].Conduit < s.Conduits[j].Conduit })
	if st, err := x.fp.Stats(); err == nil {
		s.Frames = map[string]uint64{"redirected": st.Redirected, "no_match": st.NoMatch, "closing": st.Closing,
			"closed": st.Closed, "wrong_port": st.WrongPort, "unparsed": st.Unparsed, "lapsed": st.Lapsed}
	}
	return s
}

// collectXDP adds the fast path's metrics to a scrape.
func collectXDP(s *XDPStatus, gauge func(string, string, float64, ...string), counter func(string, string, uint64, ...string)) {
	if s == nil {
		return
	}
	for _, st := range []string{xdpStateAttached, xdpStateUnavailable, xdpStateOff} {
		v := 0.0
		if s.State == st {
			v = 1
		}
		gauge("xdp_state", "XDP flow bypass state (value 1 for the state in force).", v, "state", st)
	}
	if s.State != xdpStateAttached {
		return
	}
	gauge("xdp_flows", "Flows in the XDP bypass map.", float64(s.Flows))
	for _, c := range s.Conduits {
		counter("xdp_bypassed_packets_total", "Frames the XDP bypass forwarded without the engine, by conduit (both directions).", c.Packets, "conduit", c.Conduit)
		counter("xdp_bypassed_bytes_total", "Bytes (Ethernet header and IP datagram) the XDP bypass forwarded, by conduit.", c.Bytes, "conduit", c.Conduit)
		gauge("xdp_conduit_flows", "Flows of a conduit in the XDP bypass map.", float64(c.Flows), "conduit", c.Conduit)
	}
	for _, r := range []struct {
		result string
		n      uint64
	}{{"added", s.Added}, {"full", s.Full}, {"lost", s.Lost}, {"failed", s.Failed}} {
		counter("xdp_offers_total", "Flows the engine offered to the XDP bypass, by result.", r.n, "result", r.result)
	}
	for _, r := range slices.Sorted(maps.Keys(s.Removed)) {
		counter("xdp_removed_total", "Flows taken out of the XDP bypass map, by reason.", s.Removed[r], "reason", r)
	}
	for _, r := range slices.Sorted(maps.Keys(s.Frames)) {
		counter("xdp_frames_total", "Frames the XDP program handled, by result (its per-CPU counters, summed).", s.Frames[r], "result", r)
	}
}
