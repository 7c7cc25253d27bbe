package update

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// PartitionSlots are the A/B root partitions of a real board: two block
// devices (or, in tests, two preallocated files) named by the board
// profile's slots.a and slots.b. An image is written from offset 0 in
// place; the partition is never truncated or grown, and its size is the
// slot capacity. It is safe for concurrent use on different slots.
type PartitionSlots struct {
	A, B string
}

var _ Slots = PartitionSlots{}

func (p PartitionSlots) path(s Slot) (string, error) {
	switch s {
	case SlotA:
		return p.A, nil
	case SlotB:
		return p.B, nil
	}
	return "", fmt.Errorf("update: no slot %v", s)
}

// size returns the size of a partition or file (seeking to its end works
// for both).
func partSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("update: slot: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("update: slot %s: %w", path, err)
	}
	return n, nil
}

// Capacity implements Slots: the smaller partition's size (0 when one
// cannot be opened, which refuses every image).
func (p PartitionSlots) Capacity() int64 {
	a, err1 := partSize(p.A)
	b, err2 := partSize(p.B)
	if err1 != nil || err2 != nil {
		return 0
	}
	return min(a, b)
}

// Create implements Slots.
func (p PartitionSlots) Create(s Slot) (SlotWriter, error) {
	path, err := p.path(s)
	if err != nil {
		return nil, err
	}
	size, err := partSize(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("update: slot %v: %w", s, err)
	}
	return &partWriter{f: f, max: size}, nil
}

// Open implements Slots. The reader returns the whole partition; the
// installer reads back only the image's signed size.
func (p PartitionSlots) Open(s Slot) (io.ReadCloser, error) {
	path, err := p.path(s)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("update: slot %v: %w", s, err)
	}
	return f, nil
}

type partWriter struct {
	f   *os.File
	n   int64
	max int64
}

func (w *partWriter) Write(b []byte) (int, error) {
	if w.n+int64(len(b)) > w.max {
		return 0, fmt.Errorf("%w: partition holds %d bytes", ErrTooLarge, w.max)
	}
	k, err := w.f.WriteAt(b, w.n)
	w.n += int64(k)
	if err != nil {
		return k, fmt.Errorf("update: write slot at %d: %w", w.n, err)
	}
	return k, nil
}

func (w *partWriter) Close() error {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return fmt.Errorf("update: sync slot: %w", err)
	}
	return w.f.Close()
}

func (w *partWriter) Abort() { w.f.Close() }

// Provision writes a factory image to slot A of slots and stores an
// initial boot state with A committed at version and svn (twice, so both
// redundant copies hold it).
func Provision(slots Slots, boot Bootloader, image []byte, version string, svn uint32) error {
	w, err := slots.Create(SlotA)
	if err != nil {
		return err
	}
	if _, err := w.Write(image); err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	_, sum, _ := HashPayload(bytes.NewReader(image))
	st := InitialBootState(SlotInfo{Version: version, SVN: svn, Size: int64(len(image)), SHA256: sum})
	if err := boot.Store(&st); err != nil {
		return err
	}
	return boot.Store(&st)
}
