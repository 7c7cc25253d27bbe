package hal

import (
	"errors"
	"time"
)

// Sentinel errors. Hot-path methods return these unwrapped (or an
// unix.Errno from the kernel); control-plane functions wrap them with %w.
var (
	// ErrClosed is returned by a Port's methods after Close.
	ErrClosed = errors.New("hal: port closed")
	// ErrTimeout is returned by ReadBatch when the read deadline passed.
	ErrTimeout = errors.New("hal: read deadline exceeded")
	// ErrShortBuffer: a buffer given to ReadBatch is smaller than
	// MinBufSize.
	ErrShortBuffer = errors.New("hal: buffer smaller than MinBufSize")
	// ErrHasAddress: a port carries an IP address and the options say
	// refuse (a transparent bridge port must not be a host).
	ErrHasAddress = errors.New("hal: port has an IP address")
	// ErrMTUMismatch: the two ports of a bridge have different MTUs.
	ErrMTUMismatch = errors.New("hal: port MTUs differ")
	// ErrOffload: an offload could not be turned off (fixed on by the
	// driver, or the driver refuses the ethtool request).
	ErrOffload = errors.New("hal: offload cannot be turned off")
	// ErrNotSupported: the operation is not available on this system.
	ErrNotSupported = errors.New("hal: not supported")
)

// VLANHeadroom is the room ReadBatch keeps at the end of each buffer so a
// stripped 802.1Q tag (4 bytes) can be put back without truncating.
const VLANHeadroom = 4

// MinBufSize is the smallest buffer ReadBatch accepts: an Ethernet header
// plus VLANHeadroom.
const MinBufSize = 14 + VLANHeadroom

// MaxBatch is the largest batch a Port moves in one system call.
const MaxBatch = 128

// FrameMeta describes one received frame. The zero value describes an
// untagged, complete frame.
type FrameMeta struct {
	// WireLen is the frame's length including a restored VLAN tag, which
	// exceeds the returned size when the frame was truncated.
	WireLen int
	// Truncated reports that the buffer was too small for the frame; the
	// gateway must drop it.
	Truncated bool
	// VLANRestored reports that the kernel had stripped an 802.1Q/802.1ad
	// tag and ReadBatch put it back into the frame.
	VLANRestored bool
	// ChecksumNotReady reports TP_STATUS_CSUMNOTREADY: the frame came from
	// a local stack with checksum offload (veth, not the wire) and its
	// L4 checksum is not computed yet. A bridge forwarding it unchanged
	// delivers a frame whose receiver discards it, so the gateway must
	// complete the checksum (or the sim peers turn tx checksumming off).
	ChecksumNotReady bool
	// PktType is the sockaddr_ll packet type (PACKET_HOST,
	// PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST).
	PktType uint8
}

// PortStats are a Port's counters since it was opened. All fields count
// frames unless named Bytes.
type PortStats struct {
	RxFrames, RxBytes uint64
	TxFrames, TxBytes uint64
	RxTruncated       uint64 // frames larger than the buffer
	RxVLANRestored    uint64 // tags put back from auxiliary data
	TxErrors          uint64 // frames the kernel refused (e.g. EMSGSIZE)
	TxDropped         uint64 // AF_XDP: frames of a write the device did not take (down, or not in time), queued ones and the rest of the batch
	KernelDrops       uint64 // PACKET_STATISTICS tp_drops: socket buffer full
	ReadCalls         uint64 // recvmmsg calls that returned frames
	WriteCalls        uint64 // sendmmsg calls
}

// Port moves whole Ethernet frames on one interface, in batches, in the
// shape of wireguard-go's conn.Bind.
//
// Concurrency: ReadBatch may run concurrently with WriteBatch, but neither
// may run concurrently with itself (one owner goroutine per direction).
// Close, Stats, Name and SetReadDeadline are safe from any goroutine; Close
// wakes a blocked ReadBatch or WriteBatch, which then return ErrClosed.
type Port interface {
	// Name returns the interface name.
	Name() string
	// ReadBatch blocks until at least one frame arrives, then fills up to
	// len(bufs) frames (capped by len(sizes) and MaxBatch): frame i is
	// bufs[i][:sizes[i]], described by meta[i] when meta is not nil. Each
	// buffer must hold at least MinBufSize bytes; the last VLANHeadroom
	// bytes are reserved to restore a VLAN tag. Buffers are owned by the
	// caller and never retained. It returns ErrTimeout after the read
	// deadline and ErrClosed after Close.
	ReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (n int, err error)
	// WriteBatch sends the frames (complete Ethernet frames without FCS)
	// in order. It returns the number sent; on error frames[n] failed
	// with err and frames after it were not sent, so the caller counts
	// frames[n] as dropped and may continue with frames[n+1:]. A port that
	// queues frames before the device answers (AF_XDP) may return n ==
	// len(frames) with the device's error: none is left to count (AF_XDP
	// drops what the device did not take, PortStats.TxDropped). The
	// frames are not retained.
	WriteBatch(frames [][]byte) (n int, err error)
	// SetReadDeadline sets the deadline for ReadBatch; the zero time means
	// none.
	SetReadDeadline(t time.Time) error
	// Stats returns the counters.
	Stats() PortStats
	// Close releases the port and wakes blocked callers.
	Close() error
}

// Poller is a Port whose frames can be looked for without waiting: the
// mmap'd-ring ports (IORing, IOXDP). A datapath that busy-polls its ports
// from one thread (daemon's Poll) needs Pollers.
type Poller interface {
	Port
	// TryReadBatch is ReadBatch without the wait: it returns at once,
	// with 0 frames when none is ready. It never spins (SpinRead does not
	// apply; with BusyPoll an AF_XDP look makes one recvfrom call) and
	// honours a deadline: past one it returns ErrTimeout.
	TryReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (n int, err error)
}

// Watchdog is a hardware watchdog: the board resets unless Keepalive is
// called within the timeout. The owner pets it only while the datapath is
// healthy (see RunWatchdog).
type Watchdog interface {
	// Keepalive restarts the timeout.
	Keepalive() error
	// Close disarms the watchdog with the magic close ('V') where the
	// driver allows it (no nowayout), then closes the device.
	Close() error
}

// LED is one board LED.
type LED interface {
	// Name returns the LED's name (its sysfs directory).
	Name() string
	// Set turns the LED fully on or off (and its trigger to none).
	Set(on bool) error
	// SetTrigger hands the LED to a kernel trigger ("none", "heartbeat",
	// "timer", "netdev", "default-on").
	SetTrigger(trigger string) error
}

// Bypass connects the two bridge ports without the gateway: a relay that
// shorts the copper pairs, or a kernel bridge (Bridge) as software
// fallback. Engaged means traffic passes uninspected (fail-open).
type Bypass interface {
	// Engage connects the ports directly (fail-open).
	Engage() error
	// Release disconnects them, so only the gateway forwards.
	Release() error
	// Engaged reports the state last set.
	Engaged() bool
	// Close releases the device; the relay keeps its last state where the
	// hardware latches, else returns to its rest position.
	Close() error
}
