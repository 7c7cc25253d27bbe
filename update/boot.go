package update

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Slot names one of the two A/B firmware slots.
type Slot uint8

// Slots A and B; NoSlot marks "none" (no trial pending).
const (
	SlotA  Slot = 0
	SlotB  Slot = 1
	NoSlot Slot = 0xff
)

// String returns "A", "B" or "none".
func (s Slot) String() string {
	switch s {
	case SlotA:
		return "A"
	case SlotB:
		return "B"
	case NoSlot:
		return "none"
	}
	return fmt.Sprintf("Slot(%d)", uint8(s))
}

// Other returns the other slot of the pair.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

func (s Slot) valid() bool { return s == SlotA || s == SlotB }

// SlotState is the life cycle of one slot's contents.
type SlotState uint8

// Slot states. Only Good and (on trial) Pending slots are ever booted.
const (
	SlotEmpty   SlotState = iota // never written
	SlotDirty                    // being written, or a write was interrupted: not bootable
	SlotPending                  // verified image, to be tried (boot counter running)
	SlotGood                     // committed after a passed health check
	SlotBad                      // failed verification, boot or health check: not bootable
)

// String names the state.
func (s SlotState) String() string {
	switch s {
	case SlotEmpty:
		return "empty"
	case SlotDirty:
		return "dirty"
	case SlotPending:
		return "pending"
	case SlotGood:
		return "good"
	case SlotBad:
		return "bad"
	}
	return fmt.Sprintf("SlotState(%d)", uint8(s))
}

// FallbackReason says why the last boot did not start the intended slot.
type FallbackReason uint8

// Fallback reasons.
const (
	FallbackNone        FallbackReason = iota
	FallbackTries                      // boot counter exhausted (image did not come up or not committed)
	FallbackHealthCheck                // health check failed; the slot was marked bad
	FallbackOperator                   // `otgw fw rollback`
)

// String returns the reason token used in events.
func (r FallbackReason) String() string {
	switch r {
	case FallbackNone:
		return "none"
	case FallbackTries:
		return "boot_attempts_exhausted"
	case FallbackHealthCheck:
		return "healthcheck"
	case FallbackOperator:
		return "operator"
	}
	return fmt.Sprintf("FallbackReason(%d)", uint8(r))
}

// MaxVersionLen caps SlotInfo.Version in the boot state.
const MaxVersionLen = 48

// SlotInfo is what the boot state records about one slot.
type SlotInfo struct {
	State   SlotState
	Version string // release version, at most MaxVersionLen bytes
	SVN     uint32
	Size    int64
	SHA256  [32]byte
}

// BootState is the bootloader's view of the A/B pair (BOOT.md). The zero
// value is not valid; see InitialBootState.
type BootState struct {
	Primary   Slot // committed slot, booted when no trial runs
	Trial     Slot // slot on trial (pending), or NoSlot
	TriesLeft uint8
	Booted    Slot // slot chosen at the last boot (the running one)
	// SVN is the security version counter: the highest SVN ever
	// committed. It only grows, and only on commit.
	SVN uint32
	// Fallback records why the last boot fell back; Installer.Startup
	// reports it once and clears it.
	Fallback        FallbackReason
	FallbackVersion string // version of the slot that was abandoned
	Slots           [2]SlotInfo
	// RootVersion is the highest trust root version the device has
	// accepted: one of the two anchors (BOOT.md "Anchors"); the other is
	// the anchor file in the state directory.
	RootVersion uint32
}

// InitialBootState describes a factory-provisioned device: slot A holds a
// committed image, slot B is empty.
func InitialBootState(a SlotInfo) BootState {
	a.State = SlotGood
	return BootState{Primary: SlotA, Trial: NoSlot, Booted: SlotA, SVN: a.SVN, Slots: [2]SlotInfo{a, {}}}
}

// Bootable reports whether slot s may boot without a trial: it is
// committed (good) and its SVN is not below the counter (anti-rollback, as
// Android verified boot's rollback index).
func (st *BootState) Bootable(s Slot) bool {
	return s.valid() && st.Slots[s].State == SlotGood && st.Slots[s].SVN >= st.SVN
}

// Running returns the info of the running slot.
func (st *BootState) Running() SlotInfo { return st.Slots[st.Booted&1] }

// Boot state record (BOOT.md "Record layout"): magic, sequence number,
// CRC-32 (IEEE) of every other byte of the record, then the fields.
//
// Version 2 appends RootVersion; a version 1 record (without it) is still
// read, with RootVersion 0, and rewritten as version 2 by the next Store.
const (
	bootMagic       = "OTGWBS\x00\x02"
	bootMagicV1     = "OTGWBS\x00\x01"
	bootRecordLenV1 = 8 + 8 + 4 + 8 + 2*slotRecordLen + 1 + 1 + MaxVersionLen
	bootRecordLen   = bootRecordLenV1 + 4
	slotRecordLen   = 1 + 4 + 8 + 32 + 1 + MaxVersionLen
	bootCRCOffset   = 16
	bootBodyOffset  = 20
)

// EncodeBootState returns the fixed-size record for st with sequence
// number seq.
func EncodeBootState(st *BootState, seq uint64) []byte {
	b := make([]byte, 0, bootRecordLen)
	b = append(b, bootMagic...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, 0, 0, 0, 0) // CRC, filled below
	b = append(b, byte(st.Primary), byte(st.Trial), st.TriesLeft, byte(st.Booted))
	b = binary.BigEndian.AppendUint32(b, st.SVN)
	for _, s := range st.Slots {
		b = append(b, byte(s.State))
		b = binary.BigEndian.AppendUint32(b, s.SVN)
		b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
		b = append(b, s.SHA256[:]...)
		b = appendStr(b, s.Version)
	}
	b = append(b, byte(st.Fallback))
	b = appendStr(b, st.FallbackVersion)
	b = binary.BigEndian.AppendUint32(b, st.RootVersion)
	binary.BigEndian.PutUint32(b[bootCRCOffset:], recordCRC(b))
	return b
}

// recordCRC is the CRC-32 (IEEE) of the record without its CRC field: the
// magic and sequence number are covered too, so a flipped bit cannot make a
// stale copy look newer.
func recordCRC(b []byte) uint32 {
	return crc32.Update(crc32.ChecksumIEEE(b[:bootCRCOffset]), crc32.IEEETable, b[bootBodyOffset:])
}

func appendStr(b []byte, s string) []byte {
	if len(s) > MaxVersionLen {
		s = s[:MaxVersionLen]
	}
	b = append(b, byte(len(s)))
	var pad [MaxVersionLen]byte
	copy(pad[:], s)
	return append(b, pad[:]...)
}

// DecodeBootState parses a record written by EncodeBootState. A short,
// corrupt or inconsistent record is ErrNoBootState.
func DecodeBootState(b []byte) (BootState, uint64, error) {
	var st BootState
	v1 := len(b) == bootRecordLenV1 && string(b[:8]) == bootMagicV1
	if !v1 && (len(b) != bootRecordLen || string(b[:8]) != bootMagic) {
		return st, 0, fmt.Errorf("%w: bad length or magic", ErrNoBootState)
	}
	if binary.BigEndian.Uint32(b[bootCRCOffset:]) != recordCRC(b) {
		return st, 0, fmt.Errorf("%w: CRC mismatch", ErrNoBootState)
	}
	seq := binary.BigEndian.Uint64(b[8:])
	p := b[bootBodyOffset:]
	st.Primary, st.Trial, st.TriesLeft, st.Booted = Slot(p[0]), Slot(p[1]), p[2], Slot(p[3])
	st.SVN = binary.BigEndian.Uint32(p[4:])
	p = p[8:]
	for i := range st.Slots {
		s := &st.Slots[i]
		s.State = SlotState(p[0])
		s.SVN = binary.BigEndian.Uint32(p[1:])
		s.Size = int64(binary.BigEndian.Uint64(p[5:]))
		copy(s.SHA256[:], p[13:45])
		var ok bool
		if s.Version, ok = readStr(p[45:]); !ok || s.State > SlotBad {
			return st, 0, fmt.Errorf("%w: slot %d record", ErrNoBootState, i)
		}
		p = p[slotRecordLen:]
	}
	st.Fallback = FallbackReason(p[0])
	var ok bool
	if st.FallbackVersion, ok = readStr(p[1:]); !ok {
		return st, 0, fmt.Errorf("%w: fallback record", ErrNoBootState)
	}
	if !v1 {
		st.RootVersion = binary.BigEndian.Uint32(p[2+MaxVersionLen:])
	}
	if !st.Primary.valid() || !st.Booted.valid() || !(st.Trial.valid() || st.Trial == NoSlot) {
		return st, 0, fmt.Errorf("%w: slot numbers out of range", ErrNoBootState)
	}
	return st, seq, nil
}

func readStr(p []byte) (string, bool) {
	n := int(p[0])
	if n > MaxVersionLen {
		return "", false
	}
	return string(p[1 : 1+n]), true
}

// Bootloader stores the boot state. Implementations keep it redundantly
// (two copies with sequence numbers and CRCs, as U-Boot's redundant
// environment does) so that a power cut during Store leaves either the old
// or the new state readable, never neither.
type Bootloader interface {
	// Load returns the newest valid state; ErrNoBootState if none.
	Load() (BootState, error)
	// Store makes st the newest state.
	Store(st *BootState) error
}

// Slots stores the two firmware images.
type Slots interface {
	// Capacity is the largest image a slot holds, in bytes.
	Capacity() int64
	// Create opens slot s for a complete rewrite.
	Create(s Slot) (SlotWriter, error)
	// Open reads the image in slot s.
	Open(s Slot) (io.ReadCloser, error)
}

// SlotWriter receives one image. Close makes the written bytes durable
// (fsync on files); Abort discards the writer after an error.
type SlotWriter interface {
	io.Writer
	Close() error
	Abort()
}

// Boot runs the boot-selection logic a bootloader runs at power-on and
// records its choice: a pending trial slot is booted while tries remain
// (each boot spends one, like U-Boot's bootcount against bootlimit); an
// exhausted trial is marked bad and the primary slot boots instead (U-Boot
// altbootcmd, GRUB fallback entry). If the primary is not Bootable, the
// other slot boots if it is. It returns the booted slot.
func Boot(bl Bootloader) (Slot, error) {
	st, err := bl.Load()
	if err != nil {
		return NoSlot, err
	}
	orig := st
	if st.Trial.valid() && st.Slots[st.Trial].State == SlotPending {
		if st.TriesLeft > 0 {
			st.TriesLeft--
			st.Booted = st.Trial
			if err := bl.Store(&st); err != nil {
				return NoSlot, err
			}
			return st.Booted, nil
		}
		st.Slots[st.Trial].State = SlotBad
		st.Fallback, st.FallbackVersion = FallbackTries, st.Slots[st.Trial].Version
	}
	st.Trial, st.TriesLeft = NoSlot, 0
	switch {
	case st.Bootable(st.Primary):
		st.Booted = st.Primary
	case st.Bootable(st.Primary.Other()):
		st.Primary = st.Primary.Other()
		st.Booted = st.Primary
	default:
		return NoSlot, ErrUnbootable
	}
	if st == orig {
		return st.Booted, nil
	}
	if err := bl.Store(&st); err != nil {
		return NoSlot, err
	}
	return st.Booted, nil
}
