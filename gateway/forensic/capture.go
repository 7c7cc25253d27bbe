package forensic

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/rules"
)

// Defaults of Config.
const (
	DefaultMaxBytes = 64 << 20
	DefaultMaxFiles = 8
	DefaultQueueLen = 256
	DefaultSnapLen  = 2048
	// MinFileBytes is the smallest per-file bound (MaxBytes/MaxFiles)
	// Open accepts: room for the headers and a few full-size frames.
	MinFileBytes = 64 << 10
)

// File names: prefix, a sequence number that continues across runs, suffix.
const (
	filePrefix = "denied-"
	fileSuffix = ".pcapng"
)

// Config configures a Capture. Dir is required; the zero value of every
// other field selects the documented default.
type Config struct {
	// Dir receives the files (created with mode 0750 if missing).
	Dir string
	// MaxBytes bounds the bytes of all capture files in Dir together
	// (default DefaultMaxBytes); MaxFiles bounds their number (default
	// DefaultMaxFiles). A file is closed at MaxBytes/MaxFiles bytes.
	MaxBytes int64
	MaxFiles int
	// QueueLen is the number of frames that may wait for the writer
	// (default DefaultQueueLen); SnapLen the bytes kept of each (default
	// DefaultSnapLen; longer frames are cut, their length on the wire kept).
	QueueLen int
	SnapLen  int
	// Ports names the two interfaces of the files (default "north",
	// "south").
	Ports [2]string
	// App is written as the section's shb_userappl, e.g. "otgw 1.2".
	App string
	// Now returns the capture time of a frame (default time.Now).
	Now func() time.Time
	// Logger receives the writer's start/stop lines and write errors
	// (rate-limited); nil discards.
	Logger *slog.Logger
}

// Stats are cumulative counters of a Capture.
type Stats struct {
	Frames      uint64 `json:"frames"`       // denied frames written
	Bytes       uint64 `json:"bytes"`        // bytes written to files
	Dropped     uint64 `json:"dropped"`      // denied frames not captured: no free slot (the writer is behind)
	WriteErrors uint64 `json:"write_errors"` // failed writes or file creations (the frames involved are lost)
	Files       uint64 `json:"files"`        // files opened
	Removed     uint64 `json:"removed"`      // old files removed to stay within the bounds
	Queued      int    `json:"queued"`       // frames waiting for the writer now
}

// slot is one preallocated frame buffer with the context its comment needs.
type slot struct {
	buf      []byte
	n, orig  int
	in       gateway.PortID
	t        time.Time
	src, dst netip.AddrPort
	proto    string
	verdict  rules.Verdict
	named    string
	evasion  string
}

// Capture writes denied frames to rotating pcapng files. Its methods are
// safe for concurrent use; Tap and Capture.OnVerdict never block.
type Capture struct {
	cfg     Config
	log     *slog.Logger
	perFile int64
	free    chan *slot // slots the datapath may fill
	queue   chan *slot // filled slots for the writer; cap == number of slots
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool

	frames, bytes, dropped, writeErrors, files, removed atomic.Uint64

	// Owned by the writer goroutine (run):
	f       *os.File
	bw      *bufio.Writer // flushed whenever the queue is empty
	w       *Writer
	seq     uint64
	kept    []string // capture files in Dir, oldest first, the open one last
	keptLen map[string]int64
	pkt     packet.Packet
	comment []byte
	errLog  time.Time

	closeOnce sync.Once
}

// Errors of Open.
var (
	ErrNoDir    = errors.New("forensic: a capture directory is required")
	ErrTooSmall = errors.New("forensic: the size bound leaves too little per file")
)

// Open prepares Dir (removing the oldest capture files of earlier runs
// beyond the bounds) and starts the writer goroutine. No file is created
// before the first denied frame.
func Open(cfg Config) (*Capture, error) {
	if cfg.Dir == "" {
		return nil, ErrNoDir
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = DefaultMaxFiles
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.SnapLen <= 0 {
		cfg.SnapLen = DefaultSnapLen
	}
	if cfg.Ports[0] == "" {
		cfg.Ports[0] = gateway.North.String()
	}
	if cfg.Ports[1] == "" {
		cfg.Ports[1] = gateway.South.String()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	perFile := cfg.MaxBytes / int64(cfg.MaxFiles)
	if perFile < MinFileBytes {
		return nil, fmt.Errorf("%w: %d bytes over %d files is %d per file, at least %d needed", ErrTooSmall, cfg.MaxBytes, cfg.MaxFiles, perFile, MinFileBytes)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("forensic: %w", err)
	}
	c := &Capture{cfg: cfg, log: cfg.Logger.With("component", "capture-denied"), perFile: perFile,
		free: make(chan *slot, cfg.QueueLen), queue: make(chan *slot, cfg.QueueLen),
		stop: make(chan struct{}), done: make(chan struct{}), keptLen: map[string]int64{}}
	if err := c.scan(); err != nil {
		return nil, err
	}
	// One slab for every slot: QueueLen*SnapLen bytes, allocated once.
	slab := make([]byte, cfg.QueueLen*cfg.SnapLen)
	for i := 0; i < cfg.QueueLen; i++ {
		c.free <- &slot{buf: slab[i*cfg.SnapLen : (i+1)*cfg.SnapLen : (i+1)*cfg.SnapLen]}
	}
	go c.run()
	return c, nil
}

// Dir returns the capture directory.
func (c *Capture) Dir() string { return c.cfg.Dir }

// Stats returns the counters.
func (c *Capture) Stats() Stats {
	return Stats{Frames: c.frames.Load(), Bytes: c.bytes.Load(), Dropped: c.dropped.Load(),
		WriteErrors: c.writeErrors.Load(), Files: c.files.Load(), Removed: c.removed.Load(), Queued: len(c.queue)}
}

// Close writes the frames still queued, closes the current file and stops
// the writer. Frames offered after Close are counted as dropped.
func (c *Capture) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.stop)
		<-c.done
	})
	return nil
}

// Denied copies frame, which arrived on port in and was denied by the
// decision d, into a free slot for the writer, and reports whether it
// did: false (and Stats.Dropped counts it) when every slot waits for the
// writer. It allocates nothing and never blocks; frame and d may be
// reused once it returns.
func (c *Capture) Denied(in gateway.PortID, frame []byte, d *gateway.Decision) bool {
	if c.closed.Load() {
		c.dropped.Add(1)
		return false
	}
	var s *slot
	select {
	case s = <-c.free:
	default:
		c.dropped.Add(1)
		return false
	}
	s.n = copy(s.buf, frame)
	s.orig = len(frame)
	s.in = in
	s.t = c.cfg.Now()
	s.src, s.dst, s.proto = d.Src, d.Dst, d.Proto
	s.verdict = d.Verdict
	s.named, s.evasion = d.Named, d.EvasionName
	c.queue <- s // never blocks: the queue holds every slot
	return true
}

// run is the writer goroutine: it writes queued frames until Close, then
// the frames still queued.
func (c *Capture) run() {
	c.log.Info("runCapture started", "dir", c.cfg.Dir, "max_bytes", c.cfg.MaxBytes, "max_files", c.cfg.MaxFiles)
	defer close(c.done)
	defer c.log.Info("runCapture stopped", "frames", c.frames.Load(), "dropped", c.dropped.Load())
	for {
		select {
		case s := <-c.queue:
			c.write(s)
			if len(c.queue) == 0 {
				c.flush()
			}
		case <-c.stop:
			for {
				select {
				case s := <-c.queue:
					c.write(s)
				default:
					c.closeFile()
					return
				}
			}
		}
	}
}

// write writes one slot's frame and gives the slot back.
func (c *Capture) write(s *slot) {
	defer func() { c.free <- s }()
	c.comment = c.appendComment(c.comment[:0], s)
	comment := string(c.comment) // one allocation per denied frame, on the writer side
	need := int64(PacketSize(s.n, comment))
	if c.w != nil && c.w.Size()+need > c.perFile {
		c.closeFile()
	}
	if c.w == nil {
		if err := c.openFile(); err != nil {
			c.fail(err)
			return
		}
	}
	before := c.w.Size()
	if err := c.w.WritePacket(int(s.in), s.t, s.buf[:s.n], s.orig, FlagInbound, comment); err != nil {
		c.fail(err)
		c.closeFile()
		return
	}
	c.frames.Add(1)
	c.bytes.Add(uint64(c.w.Size() - before))
}

// fail counts a lost frame and logs at most once a minute.
func (c *Capture) fail(err error) {
	c.writeErrors.Add(1)
	if now := time.Now(); now.Sub(c.errLog) >= time.Minute {
		c.errLog = now
		c.log.Error("denied frame not captured", "err", err, "write_errors", c.writeErrors.Load())
	}
}

// appendComment appends the packet comment of s: the event's flow_id and
// community_id (from the frame's tuple, as events.Event computes them),
// reason, conduit, rule, action and application protocol.
func (c *Capture) appendComment(b []byte, s *slot) []byte {
	v := &s.verdict
	ev := events.Event{Src: s.src, Dst: s.dst, Proto: s.proto}
	c.pkt.Reset()
	if c.pkt.Decode(s.buf[:s.n], packet.LinkEthernet) == nil || c.pkt.IPVersion != 0 {
		ev.Net = gateway.EventNet(&c.pkt)
	}
	b = append(b, "otgw deny"...)
	if t, ok := ev.Tuple(); ok {
		b = append(b, " flow_id="...)
		b = strconv.AppendUint(b, events.FlowID(t), 10)
		b = appendKV(b, "community_id", events.CommunityID(t, 0))
	}
	reason := v.ReasonString()
	switch {
	case s.named != "":
		reason = s.named
	case s.evasion != "":
		reason = "evasion:" + s.evasion
	}
	b = appendKV(b, "reason", reason)
	b = appendKV(b, "conduit", v.ConduitName)
	b = appendKV(b, "rule", v.RuleName)
	b = appendKV(b, "action", v.DenyAction.String())
	if s.proto != "" {
		b = appendKV(b, "app_proto", s.proto)
	}
	if s.src.IsValid() && s.dst.IsValid() {
		b = appendKV(b, "src", s.src.String())
		b = appendKV(b, "dest", s.dst.String())
	}
	return b
}

// appendKV appends " key=value", quoting a value with spaces, quotes,
// backslashes or characters that are not printable; nothing for an empty
// value. (A reader splits at the first '='.)
func appendKV(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	if strings.ContainsAny(v, " \t\"\\") || !strconv.CanBackquote(v) {
		return strconv.AppendQuote(b, v)
	}
	return append(b, v...)
}

// openFile starts the next capture file, removing the oldest ones so that
// the new file at its full size stays within both bounds.
func (c *Capture) openFile() error {
	c.seq++
	name := fmt.Sprintf("%s%06d%s", filePrefix, c.seq, fileSuffix)
	c.trim(c.cfg.MaxFiles-1, c.cfg.MaxBytes-c.perFile)
	f, err := os.OpenFile(filepath.Join(c.cfg.Dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("forensic: %w", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	w, err := NewWriter(bw, c.cfg.App, []Interface{
		{Name: c.cfg.Ports[0], LinkType: LinkEthernet, SnapLen: uint32(c.cfg.SnapLen)},
		{Name: c.cfg.Ports[1], LinkType: LinkEthernet, SnapLen: uint32(c.cfg.SnapLen)},
	})
	if err != nil {
		f.Close()
		_ = os.Remove(f.Name())
		return fmt.Errorf("forensic: %s: %w", name, err)
	}
	c.f, c.w, c.bw = f, w, bw
	c.kept = append(c.kept, name)
	c.keptLen[name] = w.Size()
	c.files.Add(1)
	c.log.Info("capture file opened", "file", f.Name())
	return nil
}

// flush writes the buffered blocks to the file: a reader then sees every
// frame written so far.
func (c *Capture) flush() {
	if c.bw != nil && c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			c.fail(err)
			c.closeFile()
		}
	}
}

func (c *Capture) closeFile() {
	if c.f == nil {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.fail(err)
	}
	name := filepath.Base(c.f.Name())
	c.keptLen[name] = c.w.Size()
	if err := c.f.Close(); err != nil {
		c.fail(err)
	}
	c.f, c.w, c.bw = nil, nil, nil
}

// trim removes the oldest closed capture files until at most files remain
// holding at most bytes together.
func (c *Capture) trim(files int, bytes int64) {
	var total int64
	for _, n := range c.kept {
		total += c.keptLen[n]
	}
	for len(c.kept) > 0 && (len(c.kept) > files || total > bytes) {
		old := c.kept[0]
		if err := os.Remove(filepath.Join(c.cfg.Dir, old)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("old capture file not removed", "file", old, "err", err)
		}
		total -= c.keptLen[old]
		delete(c.keptLen, old)
		c.kept = c.kept[1:]
		c.removed.Add(1)
	}
}

// scan finds the capture files of earlier runs (oldest first) so that
// they count against the bounds and numbering continues after them.
func (c *Capture) scan() error {
	ents, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return fmt.Errorf("forensic: %w", err)
	}
	type old struct {
		name string
		seq  uint64
	}
	var found []old
	for _, e := range ents {
		n := e.Name()
		num, ok := strings.CutPrefix(n, filePrefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		num, ok = strings.CutSuffix(num, fileSuffix)
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		found = append(found, old{n, seq})
		c.keptLen[n] = info.Size()
	}
	sort.Slice(found, func(i, j int) bool { return found[i].seq < found[j].seq })
	for _, o := range found {
		c.kept = append(c.kept, o.name)
		c.seq = max(c.seq, o.seq)
	}
	return nil
}
