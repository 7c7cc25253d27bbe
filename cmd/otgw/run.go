package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/gateway/txlog"
	"github.com/otgw/otgw/hal"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func init() {
	register("run", "the inline gateway: enforce a policy between two ports", runGateway)
}

func runGateway(args []string, _, stderr io.Writer) int {
	// SIGHUP means "reload the policy", never "terminate": subscribe before
	// anything else, so one that arrives during start-up waits for the
	// policy watcher instead of ending the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      daemon.Config
		ports    string
		syslogs  multiFlag
		logLevel string
		ioMode   string
		xdpMode  string
		cpuProf  string
	)
	fs.StringVar(&cfg.PolicyPath, "policy", "", "policy file (required; reloaded on change and on SIGHUP)")
	fs.StringVar(&cfg.Board, "board", "", "board profile (default: detect; see 'otgw board list')")
	fs.StringVar(&ports, "ports", "", "NORTH,SOUTH interface names (override the board profile)")
	fs.Var(&syslogs, "syslog", "syslog destination URL, repeatable (tls://host:6514?..., tcp://, udp://)")
	fs.StringVar(&cfg.SpoolDir, "spool", "/var/lib/otgw/spool", "syslog spool directory")
	fs.StringVar(&cfg.EventsFile, "events", "", "append events as JSON lines to this file")
	fs.StringVar(&cfg.StatusAddr, "status", "", "status endpoint address, e.g. 127.0.0.1:9102 (JSON on /status, Prometheus on /metrics)")
	fs.BoolVar(&cfg.StripAddrs, "strip-addrs", false, "remove IP addresses found on the ports instead of refusing to start")
	fs.IntVar(&cfg.MaxFlows, "max-flows", 0, "flow table size (default: the engine's)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&ioMode, "io", "", "port I/O: ring (TPACKET_V2 mmap rings), mmsg (recvmmsg/sendmmsg), xdp (AF_XDP sockets in copy mode, one receive queue per port; refuses to start where AF_XDP cannot be set up) or auto (xdp, else the default with a log line); default ring, falling back to mmsg where rings are unavailable")
	fs.StringVar(&xdpMode, "xdp", "", "XDP flow bypass of plain tcp:/udp: conduits: auto (attach in native mode, else say so and forward in user space), on (attach, in generic mode where native is not possible (veth), or refuse to start) or off; default: the board profile's")
	fwRoot := fs.String("fw-root", "", "factory firmware trust root: report the last boot, health-check a trial firmware slot and commit it after --trial-period (update/BOOT.md)")
	fwState := fs.String("fw-state", "", "firmware state directory (default: the board profile's slots.state)")
	fwTimestamp := fs.String("fw-timestamp", "", "file or http(s) URL of the signed timestamp statement, fetched hourly; a stale one raises an update event")
	trialPeriod := fs.Duration("trial-period", time.Minute, "how long trial firmware must stay healthy (policy, both ports up, watchdog fed) before it is committed")
	fs.StringVar(&cfg.CaptureDenied, "capture-denied", "", "keep a rotating pcapng capture of denied frames in this directory (each frame's comment names its event's flow_id and reason)")
	captureSize := sizeFlag(forensic.DefaultMaxBytes)
	fs.Var(&captureSize, "capture-denied-size", "bound on all --capture-denied files together, e.g. 512MiB, 1GiB")
	fs.IntVar(&cfg.CaptureDeniedFiles, "capture-denied-files", forensic.DefaultMaxFiles, "number of --capture-denied files kept (each closed at size/files bytes, the oldest removed)")
	fs.Float64Var(&cfg.TransactionRate, "transaction-rate", txlog.DefaultRate, "records per second (on average) of the transaction log of conduits with log: transactions; the excess is counted, not logged")
	fs.DurationVar(&cfg.SpinRead, "spin-read", 0, "ring and xdp: poll an empty ring this long before sleeping (costs that much CPU after every burst; made latency worse on 2 cores, see BENCHMARKS.md)")
	fs.BoolVar(&cfg.BusyPoll, "busy-poll", false, "xdp only: busy-poll the driver's receive while spinning (--spin-read) or polling (--poll; SO_PREFER_BUSY_POLL, SO_BUSY_POLL): for NICs in native XDP mode, nothing to poll on veth")
	fs.BoolVar(&cfg.Poll, "poll", false, "ring and xdp: busy-poll both ports from one thread that never sleeps: less added round-trip time, for one core busy all the time and less throughput in a flood (for boards with a core to give the datapath; needs 2 CPUs; where the ring cannot be set up and the default I/O falls back to mmsg, the gateway stops; see BENCHMARKS.md)")
	// Hidden (not in the usage line): for profiling the datapath, see
	// BENCHMARKS.md "datapath" (OTGW_BENCH_PROFILE in gateway/e2e).
	fs.StringVar(&cpuProf, "cpuprofile", "", "debug: write a Go CPU profile of the whole run to this file")
	fs.StringVar(&cfg.XDPAttach, "xdp-attach", "", "debug: with --xdp on or auto, attach only native (driver mode, even on veth: the peers need GRO on and transmit checksumming off), generic, or tc (a tcx ingress program plus a socket filter on the ports' packet sockets; Linux 6.6; not with --io xdp or auto); default: native (not on veth), then tc (packet sockets), then generic (--xdp on only). With --io xdp and no bypass, generic attaches the ports' own programs in generic mode")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otgw run --policy P [--board NAME] [--ports north,south] [--syslog URL]... [--events FILE] [--status ADDR] [--capture-denied DIR] [--io ring|mmsg|xdp|auto] [--poll] [--xdp auto|on|off]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 || cfg.PolicyPath == "" {
		fs.Usage()
		return exitUsage
	}
	cfg.CaptureDeniedBytes = int64(captureSize)
	if cfg.CaptureDeniedFiles < 1 {
		fmt.Fprintln(stderr, "otgw run: --capture-denied-files: want at least 1")
		return exitUsage
	}
	if ports != "" {
		var err error
		if cfg.North, cfg.South, err = daemon.ParsePorts(ports); err != nil {
			fmt.Fprintln(stderr, "otgw run:", err)
			return 2
		}
	}
	var err error
	if cfg.IO, err = hal.ParseIOMode(ioMode); err != nil {
		fmt.Fprintln(stderr, "otgw run: --io:", err)
		return 2
	}
	if cfg.Poll && (cfg.SpinRead > 0 || cfg.IO == hal.IOMmsg) {
		fmt.Fprintln(stderr, "otgw run: --poll: not with --spin-read (a polling datapath never sleeps) nor --io mmsg (it polls ring or xdp ports)")
		return 2
	}
	if cfg.Poll && runtime.NumCPU() < 2 {
		// The polling thread would hold the only CPU: the watchdog, the
		// exporter and the status endpoint would run only when it is
		// preempted.
		fmt.Fprintf(stderr, "otgw run: --poll needs 2 CPUs or more, this machine has %d\n", runtime.NumCPU())
		return 2
	}
	if xdpMode != "" {
		if cfg.XDP, err = board.ParseXDPMode(xdpMode); err != nil {
			fmt.Fprintln(stderr, "otgw run: --xdp:", err)
			return 2
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(stderr, "otgw run: --log-level:", err)
		return 2
	}
	if missing := missingCaps(procStatusPath); missing != "" {
		fmt.Fprintf(stderr, "otgw run: needs root or the capabilities CAP_NET_ADMIN and CAP_NET_RAW (missing %s): "+
			"run it as root, from the packaged systemd unit, or after setcap cap_net_admin,cap_net_raw+ep on the binary\n", missing)
		return exitRuntime
	}
	if v := os.Getenv("OTGW_FAULT_PANIC_AFTER_FRAMES"); v != "" {
		// Fault injection for the crash tests (gateway/e2e): the first
		// datapath panics on that frame. Said loudly: never in service.
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			cfg.FaultPanicAfterFrames = n
			fmt.Fprintf(stderr, "otgw run: OTGW_FAULT_PANIC_AFTER_FRAMES=%d: the datapath will panic on purpose (test fault injection)\n", n)
		}
	}
	if v := os.Getenv("OTGW_FAULT_XDP_UNAVAILABLE"); v != "" {
		// Fault injection for the fall-back tests: the attach fails as on
		// a kernel without XDP, in every mode, or only in the modes named
		// (native,generic,tc). Said loudly: never in service.
		cfg.XDPFaultUnavailable = "all"
		if v != "1" {
			cfg.XDPFaultUnavailable = v
		}
		fmt.Fprintf(stderr, "otgw run: OTGW_FAULT_XDP_UNAVAILABLE=%s: the XDP attach will fail on purpose (test fault injection)\n", v)
	}
	cfg.SyslogURLs = syslogs
	cfg.Stderr = stderr
	cfg.Version = version
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.HUP = hup
	cfg.Logger.Info("otgw run: starting", "policy", cfg.PolicyPath, "version", version)
	if os.Getenv("GOMEMLIMIT") == "" {
		// The documented bounds (gateway/doc.go: 160 MiB RSS; the cap +
		// 32 MiB under OPC UA reassembly) hold with the inspection cap
		// full only if the collector runs before the heap doubles
		// (BENCHMARKS.md "hostile load"): a soft limit under the bound,
		// less the binary's pages and the packet rings. GOMEMLIMIT
		// overrides it.
		debug.SetMemoryLimit(runMemoryLimitFor(cfg.MaxFlows))
	}
	if *fwRoot != "" {
		cfg.Update = fwRunUpdate(cfg.Board, *fwState, *fwRoot, runtime.GOARCH, *trialPeriod, *fwTimestamp, cfg.Logger)
	}
	if cpuProf != "" {
		f, err := os.Create(cpuProf)
		if err != nil {
			fmt.Fprintln(stderr, "otgw run: --cpuprofile:", err)
			return exitRuntime
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintln(stderr, "otgw run: --cpuprofile:", err)
			return exitRuntime
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "otgw run:", err)
		return exitRuntime
	}
	return exitOK
}

// sizeFlag is a byte count given as a number with an optional unit: B,
// KiB, MiB, GiB (powers of 1024) or kB, MB, GB (powers of 1000).
type sizeFlag int64

func (s *sizeFlag) String() string {
	switch n := int64(*s); {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10)
	}
}

func (s *sizeFlag) Set(v string) error {
	units := []struct {
		suffix string
		mul    int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mul := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mul = strings.TrimSpace(n), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mul {
		return fmt.Errorf("want a positive size such as 64MiB, not %q", v)
	}
	*s = sizeFlag(n * mul)
	return nil
}

// procStatusPath is where missingCaps reads the effective capabilities.
const procStatusPath = "/proc/self/status"

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12 // links, promiscuous mode, offloads, sysctls of the ports
	capNetRaw   = 13 // AF_PACKET sockets
)

// missingCaps names the capabilities the gateway needs that the process
// lacks in its effective set ("" when it has both, or when the set cannot
// be read: then the first operation that needs them reports it).
func missingCaps(statusPath string) string {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return ""
		}
		var miss []string
		if eff&(1<<capNetAdmin) == 0 {
			miss = append(miss, "CAP_NET_ADMIN")
		}
		if eff&(1<<capNetRaw) == 0 {
			miss = append(miss, "CAP_NET_RAW")
		}
		return strings.Join(miss, " and ")
	}
	return ""
}

// runMemoryLimit is otgw run's soft memory limit (runtime/debug
// SetMemoryLimit) when GOMEMLIMIT is not set: the default inspection
// memory cap (64 MiB) + 24 MiB, so that with the binary's pages and the
// packet rings (about 20 MB of RSS outside the Go heap) the process stays
// under the cap + 32 MiB while the cap is full of OPC UA reassembly and
// the garbage of grown buffers (issue 15; gateway/e2e
// TestOPCUAWritesLiveRSS; with 140 MiB it peaked at 98 MB). The datapath
// allocates nothing per packet, so the collector runs this often only
// while buffers grow.
const runMemoryLimit = (64 + 24) << 20

// runMemoryLimitFor is runMemoryLimit for a flow table of maxFlows slots
// (0: the default): a table larger than the default adds its extra slots,
// so a full table never leaves the collector running continuously under
// the limit.
func runMemoryLimitFor(maxFlows int) int64 {
	return runMemoryLimit + max(0, gateway.TableBytes(maxFlows)-gateway.TableBytes(gateway.DefaultMaxFlows))
}
