package hal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ethtool ioctl (include/uapi/linux/ethtool.h): features are named by
// the ETH_SS_FEATURES string set and read/written as bit blocks with
// ETHTOOL_GFEATURES/ETHTOOL_SFEATURES, as ethtool -k/-K does.
const (
	ethSSFeatures  = 4 // ETH_SS_FEATURES
	ethGStringLen  = 32
	maxFeatureBits = 4096 // sanity bound on the kernel's answer
)

// offloadFeatures are turned off by Prepare, grouped as Offloads reports them.
var offloadFeatures = []struct {
	name  string
	group func(*Offloads) *bool
}{
	{"rx-gro", func(o *Offloads) *bool { return &o.GRO }},
	{"rx-gro-hw", func(o *Offloads) *bool { return &o.GRO }},
	{"rx-gro-list", func(o *Offloads) *bool { return &o.GRO }},
	{"rx-udp-gro-forwarding", func(o *Offloads) *bool { return &o.GRO }},
	{"rx-lro", func(o *Offloads) *bool { return &o.LRO }},
	{"tx-tcp-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-tcp-ecn-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-tcp-mangleid-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-tcp6-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-tcp-accecn-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-udp-segmentation", func(o *Offloads) *bool { return &o.TSO }},
	{"tx-generic-segmentation", func(o *Offloads) *bool { return &o.GSO }},
}

// ifreqPtr is struct ifreq with ifr_data: 16 bytes of name, then a
// pointer, padded beyond sizeof(struct ifreq) on every architecture.
type ifreqPtr struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24]byte
}

func ethtoolIoctl(fd int, name string, buf []byte) (uintptr, error) {
	var ifr ifreqPtr
	if len(name) >= unix.IFNAMSIZ {
		return 0, unix.EINVAL
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&buf[0])
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(buf)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

// featureSet is the kernel's view of an interface's features.
type featureSet struct {
	names                                     []string
	available, requested, active, neverChange []uint32 // bit blocks
}

func (f *featureSet) index(name string) int {
	for i, n := range f.names {
		if n == name {
			return i
		}
	}
	return -1
}

func bit(blocks []uint32, i int) bool { return blocks[i/32]&(1<<(i%32)) != 0 }

func ethtoolSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		// Kernels without IPv4 still answer on a netlink socket.
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	}
	return fd, err
}

func getFeatures(fd int, name string) (*featureSet, error) {
	ne := binary.NativeEndian
	// ETHTOOL_GSSET_INFO: how many feature names there are.
	info := make([]byte, 8+8+4)
	ne.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	ne.PutUint64(info[8:], 1<<ethSSFeatures)
	if _, err := ethtoolIoctl(fd, name, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if ne.Uint64(info[8:])&(1<<ethSSFeatures) == 0 {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: no feature strings: %w", ErrNotSupported)
	}
	count := int(ne.Uint32(info[16:]))
	if count <= 0 || count > maxFeatureBits {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %d features: %w", count, ErrNotSupported)
	}
	// ETHTOOL_GSTRINGS: their names.
	strs := make([]byte, 12+count*ethGStringLen)
	ne.PutUint32(strs[0:], unix.ETHTOOL_GSTRINGS)
	ne.PutUint32(strs[4:], ethSSFeatures)
	ne.PutUint32(strs[8:], uint32(count))
	if _, err := ethtoolIoctl(fd, name, strs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	fs := &featureSet{names: make([]string, count)}
	for i := range fs.names {
		s := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		fs.names[i] = string(s)
	}
	// ETHTOOL_GFEATURES: the bit blocks.
	blocks := (count + 31) / 32
	gf := make([]byte, 8+blocks*16)
	ne.PutUint32(gf[0:], unix.ETHTOOL_GFEATURES)
	ne.PutUint32(gf[4:], uint32(blocks))
	if _, err := ethtoolIoctl(fd, name, gf); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}
	for _, p := range []*[]uint32{&fs.available, &fs.requested, &fs.active, &fs.neverChange} {
		*p = make([]uint32, blocks)
	}
	for b := 0; b < blocks; b++ {
		o := 8 + b*16
		fs.available[b] = ne.Uint32(gf[o:])
		fs.requested[b] = ne.Uint32(gf[o+4:])
		fs.active[b] = ne.Uint32(gf[o+8:])
		fs.neverChange[b] = ne.Uint32(gf[o+12:])
	}
	return fs, nil
}

// Features returns the active state of every named ethtool feature of the
// interface (as `ethtool -k` lists them), in the calling thread's network
// namespace.
func Features(name string) (map[string]bool, error) {
	fd, err := ethtoolSocket()
	if err != nil {
		return nil, fmt.Errorf("hal: ethtool %s: %w", name, err)
	}
	defer unix.Close(fd)
	fs, err := getFeatures(fd, name)
	if err != nil {
		return nil, fmt.Errorf("hal: ethtool %s: %w", name, err)
	}
	m := make(map[string]bool, len(fs.names))
	for i, n := range fs.names {
		if n != "" {
			m[n] = bit(fs.active, i)
		}
	}
	return m, nil
}

// SetFeatures requests ethtool features on or off (ethtool -K) and
// verifies the result. A feature the driver cannot change, or that stays
// in the wrong state, is an error wrapping ErrOffload; an unknown name
// wraps ErrNotSupported.
func SetFeatures(name string, want map[string]bool) error {
	fd, err := ethtoolSocket()
	if err != nil {
		return fmt.Errorf("hal: ethtool %s: %w", name, err)
	}
	defer unix.Close(fd)
	return setFeatures(fd, name, want, true)
}

func setFeatures(fd int, name string, want map[string]bool, strict bool) error {
	fs, err := getFeatures(fd, name)
	if err != nil {
		return fmt.Errorf("hal: ethtool %s: %w", name, err)
	}
	blocks := len(fs.active)
	valid := make([]uint32, blocks)
	req := make([]uint32, blocks)
	change := false
	for feat, on := range want {
		i := fs.index(feat)
		if i < 0 {
			if strict {
				return fmt.Errorf("hal: ethtool %s: feature %q: %w", name, feat, ErrNotSupported)
			}
			continue
		}
		if bit(fs.active, i) == on {
			continue
		}
		if bit(fs.neverChange, i) || !bit(fs.available, i) {
			return fmt.Errorf("hal: ethtool %s: %s is fixed %v by the driver: %w", name, feat, bit(fs.active, i), ErrOffload)
		}
		valid[i/32] |= 1 << (i % 32)
		if on {
			req[i/32] |= 1 << (i % 32)
		}
		change = true
	}
	if change {
		ne := binary.NativeEndian
		sf := make([]byte, 8+blocks*8)
		ne.PutUint32(sf[0:], unix.ETHTOOL_SFEATURES)
		ne.PutUint32(sf[4:], uint32(blocks))
		for b := 0; b < blocks; b++ {
			ne.PutUint32(sf[8+b*8:], valid[b])
			ne.PutUint32(sf[8+b*8+4:], req[b])
		}
		// A positive return carries ETHTOOL_F_* "wish" flags: some
		// request was not applied as asked; the re-read below decides.
		if _, err := ethtoolIoctl(fd, name, sf); err != nil {
			return fmt.Errorf("hal: ethtool %s: ETHTOOL_SFEATURES: %v: %w", name, err, ErrOffload)
		}
		if fs, err = getFeatures(fd, name); err != nil {
			return fmt.Errorf("hal: ethtool %s: %w", name, err)
		}
	}
	for feat, on := range want {
		if i := fs.index(feat); i >= 0 && bit(fs.active, i) != on {
			return fmt.Errorf("hal: ethtool %s: %s still %v after request (depends on another feature?): %w",
				name, feat, !on, ErrOffload)
		}
	}
	return nil
}

// offloadsOff turns every feature of offloadFeatures off that the
// interface has.
func offloadsOff(name string) error {
	fd, err := ethtoolSocket()
	if err != nil {
		return fmt.Errorf("hal: ethtool %s: %w", name, err)
	}
	defer unix.Close(fd)
	want := make(map[string]bool, len(offloadFeatures))
	for _, f := range offloadFeatures {
		want[f.name] = false
	}
	return setFeatures(fd, name, want, false)
}

// OffloadState reads the Offloads summary of an interface.
func OffloadState(name string) (Offloads, error) {
	m, err := Features(name)
	if err != nil {
		return Offloads{}, err
	}
	var o Offloads
	for _, f := range offloadFeatures {
		if m[f.name] {
			*f.group(&o) = true
		}
	}
	return o, nil
}
