package update

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// SimBoard is the file-backed A/B slot pair and bootloader of the `sim`
// board: slot images and the two boot state copies are files in Dir.
// Reboot plays the bootloader. It is safe for concurrent use.
//
// Files: slot-a.img, slot-b.img, bootstate.0, bootstate.1 (BOOT.md).
type SimBoard struct {
	Dir string
	// SlotBytes is each slot's capacity (DefaultSimSlotBytes when 0).
	SlotBytes int64
	// Power, when set, cuts the power after its budget of written bytes:
	// the write in progress stops part-way and every later write fails
	// with ErrPowerLoss, as on a device losing power. Tests use it.
	Power *PowerBudget
	// SkipSync leaves out fsync. Tests set it for speed: the PowerBudget
	// model cuts writes at byte granularity and does not depend on it.
	SkipSync bool

	mu sync.Mutex // guards the boot state files
}

// DefaultSimSlotBytes is the sim board's slot size.
const DefaultSimSlotBytes = 256 << 20

var (
	_ Bootloader = (*SimBoard)(nil)
	_ Slots      = (*SimBoard)(nil)
)

// NewSimBoard returns the sim board stored in dir (created if missing).
func NewSimBoard(dir string) (*SimBoard, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("update: sim board: %w", err)
	}
	return &SimBoard{Dir: dir}, nil
}

// Provision writes a factory image to slot A and an initial boot state
// (both copies) with A committed at version and svn.
func (b *SimBoard) Provision(image []byte, version string, svn uint32) error {
	return Provision(b, b, image, version, svn)
}

// Reboot simulates a power cycle: the bootloader's selection (Boot) runs
// on the stored state. It returns the slot that now runs.
func (b *SimBoard) Reboot() (Slot, error) { return Boot(b) }

func (b *SimBoard) slotPath(s Slot) string {
	return filepath.Join(b.Dir, "slot-"+map[Slot]string{SlotA: "a", SlotB: "b"}[s]+".img")
}

func (b *SimBoard) statePath(i int) string {
	return filepath.Join(b.Dir, fmt.Sprintf("bootstate.%d", i))
}

// Capacity implements Slots.
func (b *SimBoard) Capacity() int64 {
	if b.SlotBytes > 0 {
		return b.SlotBytes
	}
	return DefaultSimSlotBytes
}

// Create implements Slots.
func (b *SimBoard) Create(s Slot) (SlotWriter, error) {
	if !s.valid() {
		return nil, fmt.Errorf("update: sim: no slot %v", s)
	}
	if b.Power.off() {
		return nil, ErrPowerLoss
	}
	f, err := os.OpenFile(b.slotPath(s), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("update: sim: %w", err)
	}
	return &simWriter{f: f, b: b, max: b.Capacity()}, nil
}

// Open implements Slots.
func (b *SimBoard) Open(s Slot) (io.ReadCloser, error) {
	if !s.valid() {
		return nil, fmt.Errorf("update: sim: no slot %v", s)
	}
	f, err := os.Open(b.slotPath(s))
	if err != nil {
		return nil, fmt.Errorf("update: sim: %w", err)
	}
	return f, nil
}

type simWriter struct {
	f   *os.File
	b   *SimBoard
	n   int64
	max int64
}

func (w *simWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.max {
		return 0, fmt.Errorf("%w: slot holds %d bytes", ErrTooLarge, w.max)
	}
	n, err := w.b.write(w.f, p)
	w.n += int64(n)
	return n, err
}

func (w *simWriter) Close() error {
	if w.b.Power.off() {
		w.f.Close()
		return ErrPowerLoss
	}
	if err := w.b.sync(w.f); err != nil {
		w.f.Close()
		return fmt.Errorf("update: sim: %w", err)
	}
	return w.f.Close()
}

func (w *simWriter) Abort() { w.f.Close() }

func (b *SimBoard) write(f *os.File, p []byte) (int, error) {
	k, cut := b.Power.take(len(p))
	n, err := f.Write(p[:k])
	if err != nil {
		return n, fmt.Errorf("update: sim: %w", err)
	}
	if cut {
		return n, ErrPowerLoss
	}
	return n, nil
}

func (b *SimBoard) sync(f *os.File) error {
	if b.SkipSync {
		return nil
	}
	return f.Sync()
}

// Load implements Bootloader: the valid copy with the highest sequence
// number wins.
func (b *SimBoard) Load() (BootState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, _, _, err := b.load()
	return st, err
}

func (b *SimBoard) load() (st BootState, seq uint64, idx int, err error) {
	idx = -1
	for i := 0; i < 2; i++ {
		raw, rerr := os.ReadFile(b.statePath(i))
		if rerr != nil {
			continue
		}
		s, q, derr := DecodeBootState(raw)
		if derr != nil {
			continue
		}
		if idx < 0 || q > seq {
			st, seq, idx = s, q, i
		}
	}
	if idx < 0 {
		return st, 0, -1, fmt.Errorf("%w in %s", ErrNoBootState, b.Dir)
	}
	return st, seq, idx, nil
}

// Store implements Bootloader: it overwrites the older (or invalid) copy
// with sequence number newest+1 and syncs it, so the newest valid copy is
// never the one being written.
func (b *SimBoard) Store(st *BootState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, seq, idx, err := b.load()
	target := 0
	switch {
	case errors.Is(err, ErrNoBootState):
		seq = 0
	case err != nil:
		return err
	default:
		target = 1 - idx
	}
	rec := EncodeBootState(st, seq+1)
	if b.Power.off() {
		return ErrPowerLoss
	}
	f, err := os.OpenFile(b.statePath(target), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("update: sim: %w", err)
	}
	if _, err := b.write(f, rec); err != nil {
		f.Close()
		return err
	}
	if err := b.sync(f); err != nil {
		f.Close()
		return fmt.Errorf("update: sim: %w", err)
	}
	return f.Close()
}

// PowerBudget counts the bytes a simulated device may still write before
// its power fails. A nil *PowerBudget never fails. Safe for concurrent use.
type PowerBudget struct {
	mu   sync.Mutex // guards left and cut
	left int64
	cut  bool
}

// NewPowerBudget allows n more bytes to be written.
func NewPowerBudget(n int64) *PowerBudget { return &PowerBudget{left: n} }

// Cut reports whether the power has failed.
func (p *PowerBudget) Cut() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Remaining returns the bytes that may still be written.
func (p *PowerBudget) Remaining() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.left
}

func (p *PowerBudget) off() bool { return p.Cut() }

// take grants up to n bytes; cut is true when the power failed during
// (or before) this write.
func (p *PowerBudget) take(n int) (int, bool) {
	if p == nil {
		return n, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return 0, true
	}
	if int64(n) <= p.left {
		p.left -= int64(n)
		return n, false
	}
	k := int(p.left)
	p.left, p.cut = 0, true
	return k, true
}
