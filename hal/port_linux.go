package hal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PortOptions tune OpenPort. The zero value is the gateway's default:
// promiscuous, 4 MiB socket buffers, through the qdisc.
type PortOptions struct {
	// RcvBufBytes and SndBufBytes size the socket buffers (SO_RCVBUFFORCE,
	// falling back to SO_RCVBUF without CAP_NET_ADMIN). 0 means 4 MiB.
	RcvBufBytes, SndBufBytes int
	// NoPromisc leaves the interface's promiscuity alone (tests that only
	// need frames addressed to the port).
	NoPromisc bool
	// QdiscBypass sends with PACKET_QDISC_BYPASS: lower cost per frame,
	// but no traffic shaping and a busy NIC drops instead of queueing.
	QdiscBypass bool
	// IO selects the frame I/O method (IODefault: the TPACKET_V2 ring,
	// falling back to recvmmsg/sendmmsg where the ring cannot be set up).
	IO IOMode
	// RingFrameSize is the size of one ring slot in bytes for IORing
	// (0: 2048, which holds frames up to 1982 bytes on receive and 2016
	// on transmit: a 1500-byte MTU with two VLAN tags). Larger frames are
	// truncated on receive and refused (EMSGSIZE) on transmit. Rounded up
	// to a multiple of 16.
	RingFrameSize int
	// RxRingFrames and TxRingFrames are the ring lengths in slots for
	// IORing (0: DefaultRxRingFrames, DefaultTxRingFrames), rounded up to
	// whole ring blocks. The rings are locked kernel memory mapped into
	// the process: RingFrameSize*(RxRingFrames+TxRingFrames) bytes count
	// in its RSS from the start.
	RxRingFrames, TxRingFrames int
	// SpinRead is how long an IORing or IOXDP ReadBatch keeps polling the
	// empty ring before it parks the goroutine (0: park at once). Spinning
	// saves the wakeup of a parked reader when frames arrive within the
	// window, at the price of that much CPU after every burst.
	SpinRead time.Duration
	// XSKMap, with IOXDP, is the XDP program's socket map the port
	// registers its AF_XDP socket in (hal/xdp's flow bypass, which owns
	// the program on the interface); nil: the port attaches its own
	// redirect program.
	XSKMap XSKMap
	// BusyPoll, with IOXDP, asks the kernel to busy-poll the driver's
	// NAPI context for the socket (SO_PREFER_BUSY_POLL, SO_BUSY_POLL of
	// SpinRead but at least 20 µs, SO_BUSY_POLL_BUDGET 64;
	// Documentation/networking/af_xdp.rst): while ReadBatch spins
	// (SpinRead) each look at the RX ring is preceded by a recvfrom that
	// runs the driver's receive. Where the socket has no NAPI context of
	// its own (generic mode, veth without native XDP) it costs the system
	// calls and gains nothing.
	BusyPoll bool
	// XDPGeneric, with IOXDP and no XSKMap, attaches the port's own
	// program in generic (skb) mode instead of trying native mode first.
	XDPGeneric bool
	// SocketFilter, with IORing or IOMmsg, is a BPF socket filter program
	// (BPF_PROG_TYPE_SOCKET_FILTER) attached to the receiving socket with
	// SO_ATTACH_BPF before it is bound, so no frame reaches the socket
	// unfiltered: frames it returns 0 for are not delivered (hal/xdp's TC
	// bypass skips the frames its tc program forwards). IOXDP refuses it.
	SocketFilter SocketFilter
}

// SocketFilter is a loaded BPF socket filter program (*ebpf.Program of
// github.com/cilium/ebpf satisfies it).
type SocketFilter interface {
	FD() int
}

// IOMode is the frame I/O method of a Port.
type IOMode string

// I/O methods.
const (
	// IODefault is the measured-faster method, IORing, with a fallback to
	// IOMmsg where the ring cannot be set up (qemu-user, old kernels).
	IODefault IOMode = ""
	// IORing moves frames through TPACKET_V2 RX and TX rings mapped into
	// the process (PACKET_RX_RING, PACKET_TX_RING): no system call per
	// received batch, one send(2) kick per transmitted batch.
	IORing IOMode = "ring"
	// IOMmsg moves frames with recvmmsg(2)/sendmmsg(2) on a plain
	// AF_PACKET socket.
	IOMmsg IOMode = "mmsg"
	// IOXDP moves frames through an AF_XDP socket on the interface's
	// receive queue 0, in copy mode, with an XDP program redirecting the
	// queue's frames to it (afxdp_linux.go). The interface must have one
	// receive queue.
	IOXDP IOMode = "xdp"
	// IOAuto is IOXDP where AF_XDP can be set up, else IODefault.
	IOAuto IOMode = "auto"
)

// ParseIOMode parses "ring", "mmsg", "xdp", "auto" or "" (IODefault).
func ParseIOMode(s string) (IOMode, error) {
	switch m := IOMode(s); m {
	case IODefault, IORing, IOMmsg, IOXDP, IOAuto:
		return m, nil
	}
	return "", fmt.Errorf("hal: I/O mode %q: want ring, mmsg, xdp or auto", s)
}

// PortIO reports the I/O method of a Port opened by OpenPort ("" for
// other Port implementations).
func PortIO(p Port) IOMode {
	switch p.(type) {
	case *ringPort:
		return IORing
	case *afPacket:
		return IOMmsg
	case *xdpPort:
		return IOXDP
	}
	return ""
}

const defaultSockBuf = 4 << 20

// ethPAll is ETH_P_ALL in network byte order, as packet(7) wants it.
var ethPAll = htons(unix.ETH_P_ALL)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// cmsgBufLen holds one PACKET_AUXDATA control message.
var cmsgBufLen = unix.CmsgSpace(sizeofAuxdata)

// afPacket is the Linux Port: one AF_PACKET SOCK_RAW socket bound to one
// interface. Fields under "read side" are touched only by the ReadBatch
// owner, "write side" only by the WriteBatch owner.
type afPacket struct {
	name    string
	ifindex int
	file    *os.File
	rc      syscall.RawConn
	closed  atomic.Bool

	// read side
	rmsgs  [MaxBatch]unix.Mmsghdr
	riov   [MaxBatch]unix.Iovec
	rnames [MaxBatch]unix.RawSockaddrLinklayer
	rctl   []byte // MaxBatch * cmsgBufLen
	rvlen  int
	rn     int
	rerr   unix.Errno
	readFn func(fd uintptr) bool

	// write side
	wmsgs   [MaxBatch]unix.Mmsghdr
	wiov    [MaxBatch]unix.Iovec
	wvlen   int
	wn      int
	werr    unix.Errno
	writeFn func(fd uintptr) bool

	portCounters
}

// OpenPort opens an AF_PACKET port on the named interface in the calling
// thread's network namespace, with the I/O method opts.IO. It does not
// change the link (see PrepareLink); it does join promiscuous mode for the
// socket's lifetime unless opts.NoPromisc.
func OpenPort(name string, opts PortOptions) (Port, error) {
	switch opts.IO {
	case IORing:
		return openRing(name, opts)
	case IOMmsg:
		return openMmsg(name, opts)
	case IOXDP:
		if opts.SocketFilter != nil {
			return nil, fmt.Errorf("hal: port %s: a socket filter needs a packet socket (ring or mmsg), not AF_XDP", name)
		}
		return openXDP(name, opts)
	case IOAuto:
		if opts.SocketFilter != nil {
			opts.IO = IODefault
			return OpenPort(name, opts)
		}
		if p, err := openXDP(name, opts); err == nil {
			return p, nil
		}
		opts.IO = IODefault
		return OpenPort(name, opts)
	case IODefault:
		p, err := openRing(name, opts)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, unix.ENODEV) {
			return nil, err
		}
		return openMmsg(name, opts)
	}
	return nil, fmt.Errorf("hal: port %s: unknown I/O mode %q", name, opts.IO)
}

// packetSocket opens a non-blocking AF_PACKET socket on the interface
// with the settings both I/O methods share: PACKET_IGNORE_OUTGOING,
// promiscuous membership, socket buffers, PACKET_QDISC_BYPASS. setup runs
// just before bind (rings are set up there, while the socket still
// receives nothing); the caller owns the returned fd.
func packetSocket(name string, opts PortOptions, setup func(fd int) error) (fd, ifindex int, err error) {
	// Protocol 0: the socket receives nothing until bind, so no frames of
	// other interfaces slip in while it is being configured.
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("hal: port %s: socket(AF_PACKET): %w", name, err)
	}
	fail := func(what string, err error) (int, int, error) {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("hal: port %s: %s: %w", name, what, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("interface name", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fail("no such interface", err)
	}
	ifindex = int(ifr.Uint32())
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING (needs Linux 4.20)", err)
	}
	if !opts.NoPromisc {
		mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fail("PACKET_MR_PROMISC", err)
		}
	}
	rb, sb := opts.RcvBufBytes, opts.SndBufBytes
	if rb <= 0 {
		rb = defaultSockBuf
	}
	if sb <= 0 {
		sb = defaultSockBuf
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rb) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rb)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sb) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sb)
	}
	if opts.QdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fail("PACKET_QDISC_BYPASS", err)
		}
	}
	if opts.SocketFilter != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, opts.SocketFilter.FD()); err != nil {
			return fail("SO_ATTACH_BPF", err)
		}
	}
	if setup != nil {
		if err := setup(fd); err != nil {
			return fail("ring", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	return fd, ifindex, nil
}

// openMmsg opens the recvmmsg/sendmmsg Port.
func openMmsg(name string, opts PortOptions) (Port, error) {
	fd, ifindex, err := packetSocket(name, opts, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1)
	})
	if err != nil {
		return nil, err
	}
	p := &afPacket{name: name, ifindex: ifindex, rctl: make([]byte, MaxBatch*cmsgBufLen)}
	// A non-blocking fd handed to os.NewFile joins the runtime poller:
	// blocked reads park the goroutine, deadlines and Close wake it.
	p.file = os.NewFile(uintptr(fd), "afpacket:"+name)
	p.rc, err = p.file.SyscallConn()
	if err != nil {
		p.file.Close()
		return nil, fmt.Errorf("hal: port %s: %w", name, err)
	}
	for i := range p.rmsgs {
		h := &p.rmsgs[i].Hdr
		h.Iov = &p.riov[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&p.rnames[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Control = &p.rctl[i*cmsgBufLen]
	}
	for i := range p.wmsgs {
		p.wmsgs[i].Hdr.Iov = &p.wiov[i]
		p.wmsgs[i].Hdr.SetIovlen(1)
	}
	// Method values are built once here, so the hot path allocates nothing.
	p.readFn = p.doRead
	p.writeFn = p.doWrite
	return p, nil
}

func (p *afPacket) Name() string { return p.name }

func (p *afPacket) SetReadDeadline(t time.Time) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return p.file.SetReadDeadline(t)
}

func (p *afPacket) doRead(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&p.rmsgs[0])),
		uintptr(p.rvlen), unix.MSG_TRUNC, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	p.rn, p.rerr = int(r), e
	return true
}

// batchLen returns how many frames one ReadBatch may fill: the shortest
// of the slices, at most MaxBatch; ErrShortBuffer when one of those
// buffers is below MinBufSize.
func batchLen(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	n := min(len(bufs), len(sizes), MaxBatch)
	if meta != nil {
		n = min(n, len(meta))
	}
	for i := 0; i < n; i++ {
		if len(bufs[i]) < MinBufSize {
			return 0, ErrShortBuffer
		}
	}
	return n, nil
}

// vlanTag reports whether the kernel stripped a VLAN tag from a received
// frame (auxdata or tpacket2_hdr status and TCI) and returns its TPID,
// 0x8100 where the kernel did not say (IEEE 802.1Q-2018 clause 9).
func vlanTag(status uint32, tci, tpid uint16) (uint16, bool) {
	if status&unix.TP_STATUS_VLAN_VALID == 0 && tci == 0 {
		return 0, false
	}
	if status&unix.TP_STATUS_VLAN_TPID_VALID == 0 || tpid == 0 {
		tpid = 0x8100
	}
	return tpid, true
}

func (p *afPacket) ReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	n, err := batchLen(bufs, sizes, meta)
	if n == 0 || err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		b := bufs[i]
		p.riov[i].Base = &b[0]
		p.riov[i].SetLen(len(b) - VLANHeadroom)
		h := &p.rmsgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.SetControllen(cmsgBufLen)
		h.Flags = 0
		p.rmsgs[i].Len = 0
	}
	p.rvlen, p.rn, p.rerr = n, 0, 0
	err = p.rc.Read(p.readFn)
	// Drop references to the caller's buffers.
	for i := 0; i < n; i++ {
		p.riov[i].Base = nil
	}
	if err != nil {
		return 0, readErr(err, &p.closed)
	}
	if p.rerr != 0 {
		if p.closed.Load() {
			return 0, ErrClosed
		}
		return 0, p.rerr
	}
	got := p.rn
	var bytes uint64
	for i := 0; i < got; i++ {
		b := bufs[i]
		wire := int(p.rmsgs[i].Len) // with MSG_TRUNC: the frame's full length
		size := min(wire, len(b)-VLANHeadroom)
		m := FrameMeta{WireLen: wire, Truncated: wire > size, PktType: p.rnames[i].Pkttype}
		h := &p.rmsgs[i].Hdr
		if status, tci, tpid, ok := auxdata(p.rctl[i*cmsgBufLen : i*cmsgBufLen+int(h.Controllen)]); ok {
			m.ChecksumNotReady = status&unix.TP_STATUS_CSUMNOTREADY != 0
			if tpid, ok := vlanTag(status, tci, tpid); ok && size >= 12 {
				// Shift the payload right by 4 (copy handles overlap) and
				// put TPID and TCI back after the MAC addresses.
				copy(b[16:size+4], b[12:size])
				binary.BigEndian.PutUint16(b[12:], tpid)
				binary.BigEndian.PutUint16(b[14:], tci)
				size += 4
				m.WireLen += 4
				m.VLANRestored = true
				p.rxVLAN.Add(1)
			}
		}
		if m.Truncated {
			p.rxTrunc.Add(1)
		}
		sizes[i] = size
		if meta != nil {
			meta[i] = m
		}
		bytes += uint64(size)
	}
	p.rcalls.Add(1)
	p.rxFrames.Add(uint64(got))
	p.rxBytes.Add(bytes)
	return got, nil
}

// auxdata finds the PACKET_AUXDATA control message without allocating.
func auxdata(ctl []byte) (status uint32, tci, tpid uint16, ok bool) {
	hdrLen := unix.CmsgLen(0)
	for len(ctl) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(ctl) {
			return 0, 0, 0, false
		}
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && l-hdrLen >= sizeofAuxdata {
			d := ctl[hdrLen:l]
			return binary.NativeEndian.Uint32(d[0:]), binary.NativeEndian.Uint16(d[16:]),
				binary.NativeEndian.Uint16(d[18:]), true
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next > len(ctl) {
			break
		}
		ctl = ctl[next:]
	}
	return 0, 0, 0, false
}

func (p *afPacket) doWrite(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&p.wmsgs[0])),
		uintptr(p.wvlen), 0, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	p.wn, p.werr = int(r), e
	return true
}

func (p *afPacket) WriteBatch(frames [][]byte) (int, error) {
	sent := 0
	for sent < len(frames) {
		k := min(len(frames)-sent, MaxBatch)
		var bytes uint64
		for i := 0; i < k; i++ {
			f := frames[sent+i]
			if len(f) == 0 {
				k = i
				break
			}
			p.wiov[i].Base = &f[0]
			p.wiov[i].SetLen(len(f))
			bytes += uint64(len(f))
		}
		if k == 0 { // an empty frame at frames[sent]
			p.txErrors.Add(1)
			return sent, unix.EINVAL
		}
		p.wvlen, p.wn, p.werr = k, 0, 0
		err := p.rc.Write(p.writeFn)
		for i := 0; i < k; i++ {
			p.wiov[i].Base = nil
		}
		p.wcalls.Add(1)
		if err != nil {
			if p.closed.Load() {
				return sent, ErrClosed
			}
			return sent, err
		}
		if p.werr != 0 {
			p.txErrors.Add(1)
			return sent, p.werr
		}
		if p.wn < k { // partial: recount bytes of what went out
			bytes = 0
			for i := 0; i < p.wn; i++ {
				bytes += uint64(len(frames[sent+i]))
			}
		}
		p.txFrames.Add(uint64(p.wn))
		p.txBytes.Add(bytes)
		sent += p.wn
		if p.wn == 0 {
			// Cannot happen without an error; avoid spinning if it does.
			return sent, unix.EIO
		}
	}
	return sent, nil
}

func (p *afPacket) Stats() PortStats { return p.snapshot(p.rc, &p.closed) }

// portCounters are the statistics both Port implementations keep.
type portCounters struct {
	rxFrames, rxBytes, txFrames, txBytes      atomic.Uint64
	rxTrunc, rxVLAN, txErrors, rcalls, wcalls atomic.Uint64

	mu          sync.Mutex // guards kernelDrops (PACKET_STATISTICS resets on read)
	kernelDrops uint64
}

// snapshot reads the counters, adding the kernel's drops since the last
// call (PACKET_STATISTICS) while the socket is open.
func (c *portCounters) snapshot(rc syscall.RawConn, closed *atomic.Bool) PortStats {
	c.mu.Lock()
	if !closed.Load() {
		_ = rc.Control(func(fd uintptr) {
			if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
				c.kernelDrops += uint64(st.Drops)
			}
		})
	}
	drops := c.kernelDrops
	c.mu.Unlock()
	return PortStats{
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(),
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(),
		RxTruncated: c.rxTrunc.Load(), RxVLANRestored: c.rxVLAN.Load(),
		TxErrors: c.txErrors.Load(), KernelDrops: drops,
		ReadCalls: c.rcalls.Load(), WriteCalls: c.wcalls.Load(),
	}
}

func (p *afPacket) Close() error {
	if p.closed.Swap(true) {
		return ErrClosed
	}
	return p.file.Close()
}

// sizeofAuxdata is sizeof(struct tpacket_auxdata): the same 20 bytes on
// every architecture (u32 x3, u16 x4).
const sizeofAuxdata = int(unsafe.Sizeof(unix.TpacketAuxdata{}))
