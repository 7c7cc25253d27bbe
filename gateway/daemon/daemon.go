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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/syslog"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/halsim"
	"github.com/otgw/otgw/rules"
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
	// ring cannot be set up).
	IO hal.IOMode
	// SpinRead is how long a ring port's reader polls the empty ring
	// before it parks (0: park at once); see hal.PortOptions.SpinRead.
	SpinRead time.Duration
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
}

// Errors of Run.
var (
	ErrNoPolicy     = errors.New("daemon: a policy file is required")
	ErrBridged      = errors.New("daemon: port is enslaved to a bridge, which would forward uninspected traffic")
	ErrPortsMissing = errors.New("daemon: no board profile detected: give --board or --ports north,south")
)

// Daemon is a running gateway: the state the status endpoint reports.
// Its methods are safe for concurrent use.
type Daemon struct {
	cfg     Config
	profile board.Profile
	ports   [2]string
	started time.Time
	watcher *rules.Watcher
	engine  *gateway.Engine
	fwd     *Forwarder
	pipe    *events.Pipeline
	hports  [2]hal.Port
	linkUp  [2]atomic.Bool
	addr    atomic.Pointer[string] // status endpoint's bound address
	// evm counts verdict and reload events for the status endpoint;
	// exporter is the syslog exporter (nil without --syslog). Both are set
	// before the status endpoint starts.
	evm      *eventMetrics
	exporter *syslog.Exporter
}

// Run starts the gateway and blocks until ctx is done or the datapath
// fails. Order: board profile and port names, event pipeline and
// exporters, policy (a gateway never starts without a valid one), link
// preparation (fail-closed check, offloads off, no addresses), ports,
// engine, workers, then the policy watcher, link watcher, watchdog and
// status endpoint. Stop is the reverse; a clean stop disarms the watchdog.
func Run(ctx context.Context, cfg Config) error {
	if cfg.PolicyPath == "" {
		return ErrNoPolicy
	}
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
	log := cfg.Logger.With("component", "daemon")
	d := &Daemon{cfg: cfg, started: time.Now()}

	// Board and ports.
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

	// Events: JSON-lines file, stderr until syslog is configured, syslog.
	var sinks []events.Sink
	var jf *events.JSONFile
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
	stopReason := "stopped"
	// Runs after the workers stopped (later defers run first): the stop
	// event, then the pipeline drains into the exporters, then they close.
	defer func() {
		sev := events.SevNotice
		if strings.HasPrefix(stopReason, "failed") {
			sev = events.SevError // a start that failed is no routine stop
		}
		d.pipe.Emit(&events.Event{Severity: sev, Type: events.TypeStop, Version: cfg.Version,
			Message: fmt.Sprintf("otgw %s: board %s, north %s, south %s", stopReason, d.profile.Name, d.ports[0], d.ports[1])})
		d.pipe.Close()
		if exporter != nil {
			_ = exporter.Close()
		}
		if jf != nil {
			_ = jf.Close()
		}
	}()
	if len(cfg.SyslogURLs) > 0 {
		scfg, err := syslog.ParseURLs(cfg.SyslogURLs...)
		if err != nil {
			return fmt.Errorf("daemon: --syslog: %w", err)
		}
		scfg.Notify = d.pipe
		scfg.SWVersion = cfg.Version
		if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
			return fmt.Errorf("daemon: spool: %w", err)
		}
		x, err := syslog.New(scfg, cfg.SpoolDir, cfg.Logger)
		if err != nil {
			return fmt.Errorf("daemon: syslog: %w", err)
		}
		exporter = x
		d.exporter = x
		d.pipe.AddSink(x)
	}

	// Policy.
	d.watcher, err = rules.NewWatcher(rules.WatcherConfig{Path: cfg.PolicyPath, Sink: d.pipe, Logger: cfg.Logger, SIGHUP: true})
	if err != nil {
		stopReason = "failed to start (policy)"
		return fmt.Errorf("daemon: %w", err)
	}

	// Links: fail-closed check, then prepare.
	bypass, err := d.openBypass()
	if err != nil {
		stopReason = "failed to start (bypass)"
		return err
	}
	if bypass != nil {
		defer bypass.Close()
	}
	var links [2]*hal.NetLink
	for i, name := range d.ports {
		l, err := netlink.LinkByName(name)
		if err != nil {
			stopReason = "failed to start (link)"
			return fmt.Errorf("daemon: port %s: %w", name, err)
		}
		if l.Attrs().MasterIndex != 0 && bypass == nil {
			stopReason = "failed to start (fail-closed check)"
			return fmt.Errorf("daemon: port %s (board %s, fail mode %s): %w", name, d.profile.Name, d.profile.FailMode, ErrBridged)
		}
		if links[i], err = hal.OpenLink(name); err != nil {
			stopReason = "failed to start (link)"
			return err
		}
	}
	if bypass != nil {
		// The gateway forwards now: take the bypass out of the path.
		if err := bypass.Release(); err != nil {
			stopReason = "failed to start (bypass)"
			return fmt.Errorf("daemon: release bypass: %w", err)
		}
	}
	if err := hal.PreparePair(links[0], links[1], hal.LinkOptions{StripAddrs: cfg.StripAddrs}); err != nil {
		stopReason = "failed to start (link setup)"
		return fmt.Errorf("daemon: %w", err)
	}
	mtu := 1500
	if info, err := links[0].Info(); err == nil && info.MTU > 0 {
		mtu = info.MTU
	}

	// Ports and engine. A ring slot holds the largest frame of the MTU
	// with two VLAN tags.
	bufSize := max(DefaultBufSize, mtu+14+8+hal.VLANHeadroom)
	popts := hal.PortOptions{IO: cfg.IO, SpinRead: cfg.SpinRead}
	if need := mtu + 14 + 8 + 80; need > hal.DefaultRingFrameSize {
		popts.RingFrameSize = need
	}
	for i, name := range d.ports {
		if d.hports[i], err = hal.OpenPort(name, popts); err != nil {
			if i == 1 {
				d.hports[0].Close()
			}
			stopReason = "failed to start (port)"
			return fmt.Errorf("daemon: %w", err)
		}
	}
	d.engine, err = gateway.NewEngine(gateway.Config{
		Rules: d.watcher.Ruleset, Sink: d.pipe, Logger: cfg.Logger, MaxFlows: cfg.MaxFlows,
	})
	if err != nil {
		d.hports[0].Close()
		d.hports[1].Close()
		stopReason = "failed to start (engine)"
		return fmt.Errorf("daemon: %w", err)
	}
	d.fwd, err = NewForwarder(ForwarderConfig{
		North: d.hports[0], South: d.hports[1], Handler: d.engine,
		BufSize: bufSize, Logger: cfg.Logger,
	})
	if err != nil {
		d.hports[0].Close()
		d.hports[1].Close()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	fwdErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		fwdErr <- d.fwd.Run(ctx)
	}()

	// Control plane.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.watcher.Run(ctx); err != nil {
			log.Error("policy watcher", "err", err)
		}
	}()
	if lc, err := hal.WatchLinks(ctx, d.ports[0], d.ports[1]); err != nil {
		log.Warn("link state not watched", "err", err)
	} else {
		wg.Add(1)
		go func() { defer wg.Done(); d.runLinks(lc) }()
	}
	if wd, err := d.openWatchdog(); err != nil {
		log.Error("watchdog not armed", "err", err)
	} else if wd != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = hal.RunWatchdog(ctx, wd, cfg.WatchdogInterval, d.fwd.Healthy, cfg.Logger)
			if d.fwd.Healthy() {
				_ = wd.Close() // clean stop: magic close disarms it
			}
		}()
	}
	if cfg.StatusAddr != "" {
		ln, err := net.Listen("tcp", cfg.StatusAddr)
		if err != nil {
			cancel()
			stopReason = "failed to start (status endpoint)"
			<-fwdErr
			return fmt.Errorf("daemon: status endpoint: %w", err)
		}
		a := ln.Addr().String()
		d.addr.Store(&a)
		srv := &http.Server{Handler: d.StatusHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Info("runStatus started", "addr", a)
			defer log.Info("runStatus stopped", "addr", a)
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("status endpoint", "err", err)
			}
		}()
	}

	rs := d.watcher.Ruleset()
	d.pipe.Emit(&events.Event{Severity: events.SevNotice, Type: events.TypeStart, Version: cfg.Version,
		File: cfg.PolicyPath,
		Message: fmt.Sprintf("otgw %s started: board %s, north %s, south %s, fail mode %s, policy %s gen %d",
			cfg.Version, d.profile.Name, d.ports[0], d.ports[1], failMode(d.profile), rs.Name(), rs.Generation())})
	log.Info("gateway running", "board", d.profile.Name, "north", d.ports[0], "south", d.ports[1], "policy", rs.Name(),
		"io", string(hal.PortIO(d.hports[0])), "spin_read", cfg.SpinRead)
	if cfg.Ready != nil {
		cfg.Ready(d)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fwdErr:
		stopReason = "stopped: datapath failed"
	}
	cancel()
	if runErr == nil {
		runErr = <-fwdErr
	}
	if bypass != nil && runErr == nil && d.profile.FailMode == board.FailOpen {
		// Fail-open profile: traffic keeps flowing uninspected while the
		// gateway is down, and the SOC is told.
		if err := bypass.Engage(); err == nil {
			d.pipe.Emit(&events.Event{Severity: events.SevWarning, Type: events.TypeBypass,
				Message: "bypass engaged: traffic passes uninspected while the gateway is stopped"})
		}
	}
	return runErr
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

// Engine returns the running engine.
func (d *Daemon) Engine() *gateway.Engine { return d.engine }

// ParsePorts splits "north,south" into the two port names.
func ParsePorts(s string) (north, south string, err error) {
	a, b, ok := strings.Cut(s, ",")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !ok || a == "" || b == "" || strings.Contains(b, ",") {
		return "", "", fmt.Errorf("daemon: --ports %q: want NORTH,SOUTH", s)
	}
	return a, b, nil
}
