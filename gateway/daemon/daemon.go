package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/gateway/syslog"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/halsim"
)

// Config configures Run. PolicyPath is required; the zero value of every
// other field selects the documented default.
type Config struct {
	// PolicyPath is the policy file; it is watched (fsnotify) and reloaded
	// on change and on SIGHUP.
	PolicyPath string
	// Board names the board profile; "" detects it (board.Detect) and
	// falls back to "sim" when North and South are both given.
	Board string
	// North and South override the profile's port names.
	North, South string
	// SyslogURLs are syslog destinations (syslog.ParseURL); with none,
	// events also go to Stderr as JSON lines.
	SyslogURLs []string
	// SpoolDir is the syslog exporter's spool (default /var/lib/otgw/spool).
	SpoolDir string
	// EventsFile receives every event as a JSON line ("" for none).
	EventsFile string
	// StatusAddr is the status endpoint's listen address, e.g.
	// "127.0.0.1:9102" ("" for none): JSON on /status (and /), Prometheus
	// text on /metrics.
	StatusAddr string
	// StripAddrs removes IP addresses found on the ports instead of
	// refusing to start.
	StripAddrs bool
	// MaxFlows bounds the flow table (0: the engine's default).
	MaxFlows int
	// IO is the ports' frame I/O method (hal.IODefault: the TPACKET_V2
	// ring, measured faster, falling back to recvmmsg/sendmmsg where the
	// ring cannot be set up), or the board profile's io.mode. hal.IOXDP
	// (AF_XDP) refuses to start where AF_XDP cannot be set up; hal.IOAuto
	// then falls back to the default with a log line (openPorts). The
	// profile's io.rx_frames and io.tx_frames size the rings or UMEM.
	IO hal.IOMode
	// SpinRead is how long a ring or AF_XDP port's reader polls the empty
	// ring before it parks (0: park at once); see hal.PortOptions.SpinRead.
	SpinRead time.Duration
	// BusyPoll makes AF_XDP ports (IO xdp) busy-poll the driver while they
	// spin (SpinRead); see hal.PortOptions.BusyPoll.
	BusyPoll bool
	// Poll busy-polls both ports from one thread that never sleeps (ring
	// or AF_XDP ports); see ForwarderConfig.Poll.
	Poll bool
	// WatchdogInterval is the keepalive period (default 1s).
	WatchdogInterval time.Duration
	// Stderr receives events as JSON lines while no syslog destination is
	// configured (nil: none).
	Stderr io.Writer
	// Logger receives operational logs (nil: discard).
	Logger *slog.Logger
	// Version is reported in events and on the status endpoint.
	Version string
	// Ready, when set, is called once the datapath runs (tests).
	Ready func(*Daemon)
	// HUP, when set, receives SIGHUP (the caller subscribed it as early as
	// it could); nil: Run subscribes at its start.
	HUP chan os.Signal
	// FaultPanicAfterFrames > 0 makes the first datapath panic on that
	// frame: fault injection for the crash tests (otgw run reads it from
	// OTGW_FAULT_PANIC_AFTER_FRAMES). Never set it in service.
	FaultPanicAfterFrames int
	// Update, when set, reports the last boot and health-checks a trial
	// firmware slot: commit after its period, or roll back (health.go).
	Update *UpdateConfig
	// CaptureDenied, when set, is the directory of the rotating pcapng
	// capture of denied frames (gateway/forensic), bounded by
	// CaptureDeniedBytes in all (default forensic.DefaultMaxBytes) and
	// CaptureDeniedFiles files (default forensic.DefaultMaxFiles).
	CaptureDenied      string
	CaptureDeniedBytes int64
	CaptureDeniedFiles int
	// TransactionRate bounds the transaction records of conduits with
	// log: transactions, per second on average (default txlog.DefaultRate;
	// bursts of txlog.DefaultBurst).
	TransactionRate float64
	// XDP selects the XDP flow bypass (xdp.go): "" takes the board
	// profile's default. XDPFaultUnavailable makes the attach fail as on
	// a kernel without XDP, in every mode ("all") or in the modes of a
	// comma-separated list ("tc", "native,tc"): fault injection for the
	// fall-back tests (otgw run reads it from OTGW_FAULT_XDP_UNAVAILABLE).
	// Never set it in service.
	XDP                 board.XDPMode
	XDPFaultUnavailable string
	// XDPAttach, with XDP on or auto, forces the attach mode (otgw run's hidden
	// --xdp-attach, for measurements): "native" takes driver mode even on
	// a veth, whose peers then need GRO on and transmit checksumming off
	// (hal/xdp doc.go), "generic" skb mode, "tc" the bypass as a tcx
	// ingress program with a socket filter on the ports' packet sockets
	// (hal/xdp.ModeTC; Linux 6.6; not with IO xdp or auto, refused at
	// start); "" the default (openXDP: native but not on veth ports, then
	// tc with packet sockets, then generic with XDP on only). With IO
	// xdp and no bypass, "generic" attaches the ports' own programs in
	// generic mode (hal.PortOptions.XDPGeneric).
	XDPAttach string
}

// Errors of Run.
var (
	ErrNoPolicy     = errors.New("daemon: a policy file is required")
	ErrBridged      = errors.New("daemon: port is enslaved to a bridge, which would forward uninspected traffic")
	ErrPortsMissing = errors.New("daemon: no board profile detected: give --board or --ports north,south")
)

// Datapath restarts after a worker panic or stall: at most maxRestarts
// within restartWindow, restartDelay apart. Past that, Run returns the
// error and the fail mode stays applied (the process supervisor or the
// hardware watchdog takes over): a packet that crashes the engine every
// time must not make the gateway flap between bypass and inspection.
const (
	maxRestarts   = 3
	restartWindow = 10 * time.Minute
	restartDelay  = time.Second
)

// ErrStalled is returned by the datapath when a worker stopped making
// progress (no heartbeat for StallAfter) and was abandoned.
var ErrStalled = errors.New("daemon: datapath stalled")

// Daemon is a running gateway: the state the status endpoint reports.
// Its methods are safe for concurrent use.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	profile board.Profile
	ports   [2]string
	started time.Time
	watcher *Watcher
	pipe    *events.Pipeline
	bypass  hal.Bypass // nil unless the profile is fail-open
	linkUp  [2]atomic.Bool
	addr    atomic.Pointer[string] // status endpoint's bound address

	// dp is the datapath now running: replaced as a whole when it is
	// restarted after a panic or stall, so readers load it once.
	dp atomic.Pointer[datapath]
	// Fields of the last start attempt, for the stop event.
	stopSev    events.Severity
	stopReason string
	restarts   atomic.Uint64
	faultArmed bool // FaultPanicAfterFrames is on a datapath already (openDatapath's goroutine only)
	mtu        int
	// evm counts verdict and reload events for the status endpoint;
	// exporter is the syslog exporter (nil without --syslog). Both are set
	// before the status endpoint starts.
	evm      *eventMetrics
	exporter *syslog.Exporter
	// capture is the denied-frame capture (nil without CaptureDenied),
	// shared by every datapath run; each run taps it anew.
	capture *forensic.Capture
	// txlog pairs the allowed requests and responses of conduits with
	// log: transactions into transaction events.
	txlog *txlog.Log
	// The XDP flow bypass (xdp.go): nil unless attached; xdpState and
	// xdpReason are set once by Run before the status endpoint starts.
	xdp       *fastPath
	xdpState  string
	xdpReason string
}

// datapath is one run of the forwarding plane: two ports, an engine with
// its flow table, the forwarder. A restart builds a new one.
type datapath struct {
	engine *gateway.Engine
	fwd    *Forwarder
	hports [2]hal.Port
}

// cleanups is Run's one cleanup path: each step that acquires something
// pushes its release; they run in reverse order when Run returns.
type cleanups []func()

func (c *cleanups) push(f func()) { *c = append(*c, f) }
func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}

// Run starts the gateway and blocks until ctx is done or the datapath
// fails for good. Steps: board profile and port names, event pipeline and
// exporters, policy (a gateway never starts without a valid one), links
// (fail-closed check, offloads off, no addresses), then the control plane
// (policy watcher, link watcher, watchdog, status endpoint) and the
// datapath (ports, engine, forwarder), restarted after a worker panic or
// stall as the fail mode asks. Stop is the reverse; a clean stop disarms
// the watchdog. A SIGHUP at any time reloads the policy (during start-up
// it is kept until the watcher runs; it never terminates the process).
func Run(ctx context.Context, cfg Config) error {
	if cfg.PolicyPath == "" {
		return ErrNoPolicy
	}
	hup := cfg.HUP
	if hup == nil {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	cfg.setDefaults()
	d := &Daemon{cfg: cfg, started: time.Now(), log: cfg.Logger.With("component", "daemon"),
		stopSev: events.SevNotice, stopReason: "stopped"}
	var c cleanups
	defer c.run()
	if err := d.resolvePorts(); err != nil {
		return err
	}
	if d.cfg.IO == hal.IODefault && d.profile.IO.Mode != "" {
		// The board's default I/O (board.IO), unless --io says otherwise.
		io, err := hal.ParseIOMode(d.profile.IO.Mode)
		if err != nil {
			return fmt.Errorf("daemon: board %s: %w", d.profile.Name, err)
		}
		d.cfg.IO = io
	}
	if err := d.openEvents(&c); err != nil {
		return err
	}
	// From here a failed start is an event (severity error) before Run returns.
	var err error
	d.watcher, err = NewWatcher(WatcherConfig{Path: cfg.PolicyPath, Sink: d.pipe, Logger: cfg.Logger, SIGHUP: true, HUP: hup})
	if err != nil {
		return d.failStart("policy", fmt.Errorf("daemon: %w", err))
	}
	if err := d.prepareLinks(&c); err != nil {
		return err
	}
	if err := d.openCapture(&c); err != nil {
		return d.failStart("capture-denied", err)
	}
	if d.txlog, err = txlog.New(txlog.Config{Rules: d.watcher.Ruleset, Sink: d.pipe, Rate: cfg.TransactionRate}); err != nil {
		return d.failStart("transaction log", fmt.Errorf("daemon: %w", err))
	}
	if err := d.openXDP(ctx, &c); err != nil {
		return err
	}
	return d.serve(ctx)
}

func (cfg *Config) setDefaults() {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WatchdogInterval <= 0 {
		cfg.WatchdogInterval = time.Second
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = "/var/lib/otgw/spool"
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
}

// failStart records why the start failed (for the stop event) and returns err.
func (d *Daemon) failStart(step string, err error) error {
	d.stopSev = events.SevError
	d.stopReason = fmt.Sprintf("failed to start (%s): %v", step, err)
	return err
}

// resolvePorts picks the board profile and the two port names.
func (d *Daemon) resolvePorts() error {
	cfg := &d.cfg
	var err error
	switch {
	case cfg.Board != "":
		d.profile, err = board.Lookup(cfg.Board)
	case cfg.North != "" && cfg.South != "":
		if d.profile, err = board.Detect("/"); err != nil {
			d.profile, err = board.Lookup("sim")
		}
	default:
		d.profile, err = board.Detect("/")
		if err != nil {
			err = fmt.Errorf("%w (%v)", ErrPortsMissing, err)
		}
	}
	if err != nil {
		return err
	}
	exists := func(name string) bool { _, err := netlink.LinkByName(name); return err == nil }
	d.ports = [2]string{cfg.North, cfg.South}
	for i, cands := range [2][]string{d.profile.Ports.North, d.profile.Ports.South} {
		if d.ports[i] == "" {
			if d.ports[i], err = board.ResolvePort(cands, exists); err != nil {
				return fmt.Errorf("daemon: board %s %s port: %w", d.profile.Name, gateway.PortID(i), err)
			}
		}
	}
	if d.ports[0] == d.ports[1] {
		return fmt.Errorf("daemon: north and south are the same interface %q", d.ports[0])
	}
	return nil
}

// openEvents opens the JSON-lines file, stderr (until syslog is
// configured) and the syslog exporters, and pushes their release: the stop
// event first, then the pipeline drains into the exporters, then they
// close. It runs last of all cleanups, after the workers stopped.
func (d *Daemon) openEvents(c *cleanups) error {
	cfg := &d.cfg
	var sinks []events.Sink
	var jf *events.JSONFile
	var err error
	if cfg.EventsFile != "" {
		if jf, err = events.OpenJSONFile(cfg.EventsFile, 0); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		sinks = append(sinks, jf)
	}
	if cfg.Stderr != nil && len(cfg.SyslogURLs) == 0 {
		sinks = append(sinks, &lineSink{w: cfg.Stderr})
	}
	d.evm = newEventMetrics()
	sinks = append(sinks, d.evm)
	d.pipe = events.NewPipeline(events.PipelineConfig{Logger: cfg.Logger}, sinks...)
	var exporter *syslog.Exporter
	c.push(func() {
		d.pipe.Emit(&events.Event{Severity: d.stopSev, Type: events.TypeStop, Version: cfg.Version,
			Message: fmt.Sprintf("otgw %s: board %s, north %s, south %s", d.stopReason, d.profile.Name, d.ports[0], d.ports[1])})
		d.pipe.Close()
		if exporter != nil {
			_ = exporter.Close()
		}
		if jf != nil {
			_ = jf.Close()
		}
	})
	if len(cfg.SyslogURLs) == 0 {
		return nil
	}
	scfg, err := syslog.ParseURLs(cfg.SyslogURLs...)
	if err != nil {
		return d.failStart("syslog", fmt.Errorf("daemon: --syslog: %w", err))
	}
	scfg.Notify = d.pipe
	scfg.SWVersion = cfg.Version
	if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
		return d.failStart("syslog", fmt.Errorf("daemon: spool: %w", err))
	}
	if exporter, err = syslog.New(scfg, cfg.SpoolDir, cfg.Logger); err != nil {
		return d.failStart("syslog", fmt.Errorf("daemon: syslog: %w", err))
	}
	d.exporter = exporter
	d.pipe.AddSink(exporter)
	return nil
}

// prepareLinks checks that nothing but this process connects the ports
// (fail-closed), takes a fail-open board's bypass out of the path, and
// prepares both links (offloads off, no addresses, equal MTUs).
func (d *Daemon) prepareLinks(c *cleanups) error {
	var err error
	if d.bypass, err = d.openBypass(); err != nil {
		return d.failStart("bypass", err)
	}
	if d.bypass != nil {
		c.push(func() { _ = d.bypass.Close() })
	}
	var links [2]*hal.NetLink
	for i, name := range d.ports {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return d.failStart("link", fmt.Errorf("daemon: port %s: %w", name, err))
		}
		if l.Attrs().MasterIndex != 0 && d.bypass == nil {
			return d.failStart("fail-closed check", fmt.Errorf("daemon: port %s (board %s, fail mode %s): %w", name, d.profile.Name, d.profile.FailMode, ErrBridged))
		}
		if links[i], err = hal.OpenLink(name); err != nil {
			return d.failStart("link", err)
		}
	}
	if d.bypass != nil {
		// The gateway forwards now: take the bypass out of the path.
		if err := d.bypass.Release(); err != nil {
			return d.failStart("bypass", fmt.Errorf("daemon: release bypass: %w", err))
		}
	}
	if err := hal.PreparePair(links[0], links[1], hal.LinkOptions{StripAddrs: d.cfg.StripAddrs}); err != nil {
		return d.failStart("link setup", fmt.Errorf("daemon: %w", err))
	}
	d.mtu = 1500
	if info, err := links[0].Info(); err == nil && info.MTU > 0 {
		d.mtu = info.MTU
	}
	return nil
}

// openCapture opens the denied-frame capture when one is configured; it
// closes (writing what is queued) after the datapath stopped.
func (d *Daemon) openCapture(c *cleanups) error {
	if d.cfg.CaptureDenied == "" {
		return nil
	}
	var err error
	d.capture, err = forensic.Open(forensic.Config{
		Dir: d.cfg.CaptureDenied, MaxBytes: d.cfg.CaptureDeniedBytes, MaxFiles: d.cfg.CaptureDeniedFiles,
		SnapLen: max(DefaultBufSize, d.mtu+14+8+hal.VLANHeadroom),
		Ports:   [2]string{gateway.North.String() + " (" + d.ports[0] + ")", gateway.South.String() + " (" + d.ports[1] + ")"},
		App:     "otgw " + d.cfg.Version, Logger: d.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("daemon: --capture-denied: %w", err)
	}
	c.push(func() { _ = d.capture.Close() })
	return nil
}

// openDatapath opens both ports and builds a new engine and forwarder.
func (d *Daemon) openDatapath() (*datapath, error) {
	// A ring slot holds the largest frame of the MTU with two VLAN tags.
	bufSize := max(DefaultBufSize, d.mtu+14+8+hal.VLANHeadroom)
	popts := hal.PortOptions{IO: d.cfg.IO, SpinRead: d.cfg.SpinRead, BusyPoll: d.cfg.BusyPoll,
		RxRingFrames: d.profile.IO.RxFrames, TxRingFrames: d.profile.IO.TxFrames}
	if need := d.mtu + 14 + 8 + 80; need > hal.DefaultRingFrameSize {
		popts.RingFrameSize = need
	}
	dp := &datapath{}
	var err error
	if dp.hports, err = d.openPorts(popts); err != nil {
		return nil, err
	}
	closePorts := func() { dp.hports[0].Close(); dp.hports[1].Close() }
	bypass, bindBypass := d.engineBypass()
	ecfg := gateway.Config{
		Rules: d.watcher.Ruleset, Sink: d.pipe, Logger: d.cfg.Logger, MaxFlows: d.cfg.MaxFlows, Bypass: bypass,
	}
	// The taps see each frame and the engine's verdicts about it: the
	// transaction log pairs allowed requests and responses of conduits
	// with log: transactions; the capture copies a denied frame before
	// the engine rewrites or answers it.
	tx := d.txlog.NewTap()
	ecfg.OnVerdict = tx.OnVerdict
	var capTap *forensic.Tap
	if d.capture != nil {
		capTap = d.capture.NewTap()
		ecfg.OnVerdict = func(dec *gateway.Decision) { capTap.OnVerdict(dec); tx.OnVerdict(dec) }
	}
	dp.engine, err = gateway.NewEngine(ecfg)
	if err != nil {
		closePorts()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	bindBypass(dp.engine)
	tx.Next = dp.engine
	var h Handler = tx
	if capTap != nil {
		capTap.Next = tx
		h = capTap
	}
	// Only the first datapath: restarts counts a restart after its
	// datapath is open, so it cannot tell the first restarted one.
	if n := d.cfg.FaultPanicAfterFrames; n > 0 && !d.faultArmed {
		d.faultArmed = true
		h = panicAfter(h, n)
	}
	dp.fwd, err = NewForwarder(ForwarderConfig{
		North: dp.hports[0], South: dp.hports[1], Handler: h, BufSize: bufSize, Poll: d.cfg.Poll, Logger: d.cfg.Logger,
	})
	if err != nil {
		closePorts()
		return nil, err
	}
	return dp, nil
}

// openPorts opens both ports with the I/O method of popts. AF_XDP ports
// register their sockets with the XDP flow bypass's program when it is
// attached (one XDP program per port), else each attaches its own. With
// hal.IOAuto, a failure to set up AF_XDP on either port is logged once
// and both ports open with hal.IODefault. With the tc bypass
// (hal/xdp.ModeTC) both packet sockets carry its socket filter, so that
// they do not receive the frames the tc program forwards: the FastPath
// lives as long as Run (openXDP ran before; a datapath restart reopens
// the ports with the same FastPath and so the same filter).
func (d *Daemon) openPorts(popts hal.PortOptions) ([2]hal.Port, error) {
	var ps [2]hal.Port
	if d.xdp != nil {
		if f := d.xdp.fp.SocketFilter(); f != nil {
			// Never a typed nil in the interface: only ModeTC has a filter.
			popts.SocketFilter = f
		}
	}
	if popts.IO == hal.IOXDP || popts.IO == hal.IOAuto {
		if d.xdp != nil && d.xdp.xsk {
			popts.XSKMap = d.xdp.fp
		}
		popts.XDPGeneric = d.cfg.XDPAttach == "generic"
	}
	open := func(popts hal.PortOptions) error {
		for i, name := range d.ports {
			p, err := hal.OpenPort(name, popts)
			if err != nil {
				if i == 1 {
					ps[0].Close()
				}
				ps = [2]hal.Port{}
				return err
			}
			ps[i] = p
		}
		return nil
	}
	if popts.IO == hal.IOAuto {
		popts.IO = hal.IOXDP
		err := open(popts)
		if err == nil {
			return ps, nil
		}
		d.log.Warn("AF_XDP unavailable, ports use the default I/O", "err", err)
		popts.IO, popts.XSKMap = hal.IODefault, nil
	}
	if err := open(popts); err != nil {
		return ps, fmt.Errorf("daemon: %w", err)
	}
	return ps, nil
}

// serve runs the control plane once and the datapath until ctx is done,
// restarting the datapath after a panic or stall (see maxRestarts).
func (d *Daemon) serve(ctx context.Context) error {
	dp, err := d.openDatapath()
	if err != nil {
		return d.failStart("datapath", err)
	}
	dp.fwd.arm()
	d.dp.Store(dp)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if err := d.startControl(ctx, &wg); err != nil {
		cancel()
		dp.hports[0].Close()
		dp.hports[1].Close()
		return d.failStart("status endpoint", err)
	}
	rs := d.watcher.Ruleset()
	d.pipe.Emit(&events.Event{Severity: events.SevNotice, Type: events.TypeStart, Version: d.cfg.Version,
		File: d.cfg.PolicyPath,
		Message: fmt.Sprintf("otgw %s started: board %s, north %s, south %s, fail mode %s, policy %s gen %d",
			d.cfg.Version, d.profile.Name, d.ports[0], d.ports[1], failMode(d.profile), rs.Name(), rs.Generation())})
	d.log.Info("gateway running", "board", d.profile.Name, "north", d.ports[0], "south", d.ports[1], "policy", rs.Name(),
		"io", string(hal.PortIO(dp.hports[0])), "spin_read", d.cfg.SpinRead, "poll", d.cfg.Poll)

	// A trial firmware slot is committed after its health period or rolled
	// back (health.go); a failed trial stops the gateway so that the
	// image's init reboots into the previous slot.
	var trialErr atomic.Pointer[error]
	if d.cfg.Update != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.runUpdateHealth(ctx); errors.Is(err, ErrTrialFailed) {
				trialErr.Store(&err)
				cancel()
			} else if err != nil {
				d.log.Error("firmware update supervision", "err", err)
			}
		}()
	}

	var recent []time.Time // restarts within restartWindow
	for first := true; ; first = false {
		d.dp.Store(dp)
		if first && d.cfg.Ready != nil {
			d.cfg.Ready(d)
		}
		err := d.runDatapath(ctx, dp)
		d.xdpFlush() // the flows' engine is gone: nothing it offered forwards any more
		if te := trialErr.Load(); te != nil {
			d.stopReason = "stopped: trial firmware failed its health check"
			d.stopSev = events.SevError
			return *te
		}
		if ctx.Err() != nil && (err == nil || errors.Is(err, ErrStalled)) {
			// Clean stop. A fail-open profile keeps traffic flowing
			// uninspected while the gateway is down, and the SOC is told.
			d.applyFailMode("the gateway is stopped")
			return nil
		}
		var pe *PanicError
		if !errors.As(err, &pe) && !errors.Is(err, ErrStalled) {
			d.stopReason = "stopped: datapath failed"
			d.stopSev = events.SevError
			d.applyFailMode("the datapath failed")
			return err
		}
		d.reportCrash(err, pe)
		d.applyFailMode("the datapath is restarting")
		now := time.Now()
		recent = append(recent, now)
		for len(recent) > 0 && now.Sub(recent[0]) > restartWindow {
			recent = recent[1:]
		}
		if len(recent) > maxRestarts {
			d.stopReason = fmt.Sprintf("stopped: %d datapath failures within %v", len(recent), restartWindow)
			d.stopSev = events.SevCritical
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(restartDelay):
		}
		if dp, err = d.openDatapath(); err != nil {
			d.stopReason = "stopped: datapath restart failed"
			d.stopSev = events.SevCritical
			return err
		}
		if d.bypass != nil && d.bypass.Engaged() {
			if err := d.bypass.Release(); err != nil {
				dp.hports[0].Close()
				dp.hports[1].Close()
				d.stopReason = "stopped: bypass release failed"
				d.stopSev = events.SevCritical
				return fmt.Errorf("daemon: release bypass: %w", err)
			}
		}
		dp.fwd.arm()
		n := d.restarts.Add(1)
		d.pipe.Emit(&events.Event{Severity: events.SevWarning, Type: events.TypeStart, Version: d.cfg.Version,
			Message: fmt.Sprintf("otgw datapath restarted (%d of at most %d within %v): a new engine and flow table; connections re-establish", n, maxRestarts, restartWindow)})
	}
}

// runDatapath runs one datapath until ctx is done, it fails, or a worker
// stalls for StallAfter (then the datapath is abandoned: ErrStalled).
func (d *Daemon) runDatapath(ctx context.Context, dp *datapath) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dp.fwd.Run(ctx) }()
	tick := time.NewTicker(readWake)
	defer tick.Stop()
	var unhealthySince, lastExpire time.Time
	for {
		select {
		case err := <-done:
			return err
		case now := <-tick.C:
			// Idle flows leave the table (and give back their inspectors)
			// once a second even when no new flow comes to reclaim them,
			// so counters, /flows and the memory cap show live flows only.
			if dp.engine != nil && now.Sub(lastExpire) >= time.Second {
				dp.engine.Expire(now)
				lastExpire = now
			}
			if dp.fwd.Healthy() {
				unhealthySince = time.Time{}
				continue
			}
			if unhealthySince.IsZero() {
				unhealthySince = time.Now()
				continue
			}
			if time.Since(unhealthySince) < StallAfter {
				continue
			}
			// Both workers' heartbeats are checked by Healthy: one is stuck
			// (an endless loop or a lock that is never released). Close the
			// ports; a worker blocked inside the Handler is left behind.
			cancel()
			select {
			case err := <-done:
				if err == nil {
					err = ErrStalled
				}
				return err
			case <-time.After(StallAfter):
				return ErrStalled
			}
		}
	}
}

// reportCrash sends the SOC a critical event for a worker panic or stall.
func (d *Daemon) reportCrash(err error, pe *PanicError) {
	msg := "datapath stalled: a worker made no progress for " + StallAfter.String()
	if pe != nil {
		msg = fmt.Sprintf("datapath worker %s panicked: %v (at %s)", pe.Port, pe.Value, panicSite(pe.Stack))
	}
	d.log.Error("datapath failed", "err", err)
	d.pipe.Emit(&events.Event{Severity: events.SevCritical, Type: events.TypeCrash, Version: d.cfg.Version,
		Message: msg + "; fail mode " + string(failMode(d.profile))})
}

// panicSite returns the first frame of a panic's stack outside the runtime
// and this package's recovery: the function that panicked.
func panicSite(stack []byte) string {
	lines := strings.Split(string(stack), "\n")
	for i := 0; i+1 < len(lines); i++ {
		fn := strings.TrimSpace(lines[i])
		if strings.HasPrefix(fn, "panic(") || strings.HasPrefix(fn, "runtime/debug.") || strings.HasPrefix(fn, "goroutine ") ||
			strings.Contains(fn, "daemon.(*Forwarder).Run") || strings.Contains(fn, "daemon.panicAfter") || !strings.Contains(fn, "(") {
			continue
		}
		return fn + " " + strings.TrimSpace(lines[i+1])
	}
	return "unknown"
}

// applyFailMode engages a fail-open board's bypass (traffic passes
// uninspected) and tells the SOC; a fail-closed board forwards nothing
// while the datapath is down, which needs no action.
func (d *Daemon) applyFailMode(why string) {
	if d.bypass == nil || d.profile.FailMode != board.FailOpen || d.bypass.Engaged() {
		return
	}
	if err := d.bypass.Engage(); err != nil {
		d.log.Error("bypass not engaged", "err", err)
		d.pipe.Emit(&events.Event{Severity: events.SevCritical, Type: events.TypeBypass,
			Message: "bypass could not be engaged (" + err.Error() + "): nothing forwards while " + why})
		return
	}
	d.pipe.Emit(&events.Event{Severity: events.SevWarning, Type: events.TypeBypass,
		Message: "bypass engaged: traffic passes uninspected while " + why})
}

// startControl starts the policy watcher, link watcher, watchdog and
// status endpoint; they run until ctx is done.
func (d *Daemon) startControl(ctx context.Context, wg *sync.WaitGroup) error {
	cfg := &d.cfg
	if cfg.StatusAddr != "" {
		ln, err := net.Listen("tcp", cfg.StatusAddr)
		if err != nil {
			return fmt.Errorf("daemon: status endpoint: %w", err)
		}
		a := ln.Addr().String()
		d.addr.Store(&a)
		srv := &http.Server{Handler: d.StatusHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.log.Info("runStatus started", "addr", a)
			defer d.log.Info("runStatus stopped", "addr", a)
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("status endpoint", "err", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.watcher.Run(ctx); err != nil {
			d.log.Error("policy watcher", "err", err)
		}
	}()
	if lc, err := hal.WatchLinks(ctx, d.ports[0], d.ports[1]); err != nil {
		d.log.Warn("link state not watched", "err", err)
	} else {
		wg.Add(1)
		go func() { defer wg.Done(); d.runLinks(lc) }()
	}
	if wd, err := d.openWatchdog(); err != nil {
		d.log.Error("watchdog not armed", "err", err)
	} else if wd != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = hal.RunWatchdog(ctx, wd, cfg.WatchdogInterval, d.Healthy, cfg.Logger)
			if d.Healthy() && d.restarts.Load() == 0 {
				_ = wd.Close() // clean stop: magic close disarms it
			}
		}()
	}
	return nil
}

// Healthy reports whether the datapath runs with both workers making
// progress (the watchdog is fed only then). Safe from any goroutine.
func (d *Daemon) Healthy() bool {
	dp := d.dp.Load()
	return dp != nil && dp.fwd.Healthy()
}

// panicAfter wraps h so that it panics on the n-th frame: fault injection
// for the crash tests (Config.FaultPanicAfterFrames), never set in service.
func panicAfter(h Handler, n int) Handler {
	var seen atomic.Int64
	return HandlerFunc(func(in gateway.PortID, frame []byte, tx gateway.Tx) {
		if seen.Add(1) == int64(n) {
			panic(fmt.Sprintf("fault injection: panic on frame %d", n))
		}
		h.Handle(in, frame, tx)
	})
}

func failMode(p board.Profile) board.FailMode {
	if p.FailMode == "" {
		return board.FailClosed
	}
	return p.FailMode
}

// openBypass returns the board's bypass when the profile is fail-open, nil
// otherwise (fail-closed: nothing but this process connects the ports).
func (d *Daemon) openBypass() (hal.Bypass, error) {
	if d.profile.FailMode != board.FailOpen {
		return nil, nil
	}
	switch d.profile.Bypass.Kind {
	case board.BypassBridge:
		name := d.profile.Bypass.Bridge
		if name == "" {
			name = "otgw-bypass"
		}
		return hal.NewBridge(name, d.ports[0], d.ports[1]), nil
	case board.BypassGPIO:
		b, err := hal.OpenGPIOBypass(d.profile.Bypass.Chip, d.profile.Bypass.Line, d.profile.Bypass.ActiveLow)
		if err != nil {
			return nil, fmt.Errorf("daemon: bypass relay: %w", err)
		}
		return b, nil
	case board.BypassSim:
		return &halsim.Bypass{}, nil
	}
	return nil, nil
}

// openWatchdog returns the board's watchdog: the device, or on the sim
// board the simulated twin; nil when the board has none.
func (d *Daemon) openWatchdog() (hal.Watchdog, error) {
	if d.profile.Watchdog != "" {
		return hal.OpenWatchdog(d.profile.Watchdog)
	}
	if d.profile.Name == "sim" {
		return halsim.NewWatchdog(10*d.cfg.WatchdogInterval, nil), nil
	}
	return nil, nil
}

// runLinks turns link state changes into events.
func (d *Daemon) runLinks(lc <-chan hal.LinkEvent) {
	log := d.cfg.Logger.With("component", "links")
	log.Info("runLinks started")
	defer log.Info("runLinks stopped")
	first := map[string]bool{}
	for ev := range lc {
		i := 0
		if ev.Name == d.ports[1] {
			i = 1
		}
		up := ev.OperUp && !ev.Removed
		d.linkUp[i].Store(up)
		state := "down"
		sev := events.SevWarning
		if up {
			state, sev = "up", events.SevNotice
		}
		if ev.Removed {
			state = "removed"
		}
		what := "link"
		if !first[ev.Name] {
			first[ev.Name] = true
			what = "link at start"
		}
		d.pipe.Emit(&events.Event{Severity: sev, Type: events.TypeLink, Port: ev.Name,
			Message: fmt.Sprintf("%s %s (%s) %s", what, ev.Name, gateway.PortID(i), state)})
	}
}

// lineSink writes events as JSON lines to a writer (stderr).
type lineSink struct {
	mu  sync.Mutex // guards w and buf
	w   io.Writer
	buf []byte
}

func (s *lineSink) Emit(e *events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(e.AppendJSON(s.buf[:0]), '\n')
	_, _ = s.w.Write(s.buf)
}

// StatusAddr returns the address the status endpoint listens on ("" when
// it is off).
func (d *Daemon) StatusAddr() string {
	if a := d.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Engine returns the engine of the datapath now running (a restart
// replaces it).
func (d *Daemon) Engine() *gateway.Engine {
	if dp := d.dp.Load(); dp != nil {
		return dp.engine
	}
	return nil
}

// ParsePorts splits "north,south" into the two port names.
func ParsePorts(s string) (north, south string, err error) {
	a, b, ok := strings.Cut(s, ",")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !ok || a == "" || b == "" || strings.Contains(b, ",") {
		return "", "", fmt.Errorf("daemon: --ports %q: want NORTH,SOUTH", s)
	}
	return a, b, nil
}
