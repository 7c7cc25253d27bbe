package syslog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Spool record layout (little endian), 20-byte header then payload:
//
//	0  uint32 payload length
//	4  uint32 CRC-32C of bytes 8..end (id, severity, pad, payload)
//	8  uint64 record id (monotonic for the life of the spool directory)
//	16 uint8  severity (RFC 5424 numbering), then 3 bytes zero
const (
	recHeader   = 20
	maxRecord   = 1 << 20
	segPrefix   = "seg-"
	segSuffix   = ".log"
	cursorPref  = "cursor-"
	minSegBytes = 16 << 10
	maxSegBytes = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	path string
	f    *os.File
	size int64
	last uint64 // highest id written to it
}

type entry struct {
	id   uint64
	seg  *segment
	off  int64 // of the header
	n    uint32
	sev  uint8
	dead bool
}

// record is one spooled payload handed to a destination.
type record struct {
	id      uint64
	payload []byte
}

// spool is the persistent, size-capped, multi-cursor store between Emit and
// the destinations. All methods are safe for concurrent use.
type spool struct {
	dir    string
	capB   int64
	segMax int64
	log    *slog.Logger

	mu        sync.Mutex // guards everything below
	segs      []*segment // oldest first; the last one is appended to
	idx       []entry    // live records, by id
	used      int64      // bytes in segment files
	nextID    uint64
	cursors   map[string]uint64 // destination name -> next id to send
	dirtyCurs bool
	dirtyDir  bool
	unsynced  []*segment
	dropped   uint64 // total records dropped to the cap
	lost      uint64 // records lost to corruption found when opening
	pending   uint64 // drops not yet reported
	wbuf      []byte
	waiters   []chan struct{}
	closed    bool
	// freedAt is when a record last left the spool (every destination
	// confirmed it; records dropped to the cap do not count): the
	// destinations' progress that SpoolFullWait waits for.
	freedAt time.Time
}

func openSpool(dir string, capBytes int64, names []string, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("syslog: spool: %w", err)
	}
	s := &spool{
		dir: dir, capB: capBytes, log: log,
		segMax:  min(max(capBytes/16, minSegBytes), maxSegBytes),
		cursors: map[string]uint64{},
		nextID:  1,
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("syslog: spool: %w", err)
	}
	var segNames []string
	var maxCursor uint64
	for _, de := range ents {
		n := de.Name()
		switch {
		case strings.HasSuffix(n, ".tmp"):
			_ = os.Remove(filepath.Join(dir, n)) // an interrupted compaction or cursor write
		case strings.HasPrefix(n, segPrefix) && strings.HasSuffix(n, segSuffix):
			segNames = append(segNames, n)
		case strings.HasPrefix(n, cursorPref):
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				return nil, fmt.Errorf("syslog: spool: %w", err)
			}
			v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				log.Warn("ignoring unreadable cursor", "file", n, "err", err)
				continue
			}
			s.cursors[strings.TrimPrefix(n, cursorPref)] = v
			maxCursor = max(maxCursor, v)
		}
	}
	sort.Strings(segNames) // fixed-width hex first ids: name order is id order
	for _, n := range segNames {
		if err := s.loadSegment(filepath.Join(dir, n)); err != nil {
			return nil, err
		}
	}
	if len(s.idx) > 0 {
		s.nextID = max(s.nextID, s.idx[len(s.idx)-1].id+1)
	}
	for _, g := range s.segs {
		s.nextID = max(s.nextID, g.last+1)
	}
	// A cursor persisted ahead of the last synced record (power cut) must
	// not make new records invisible: ids always grow past every cursor.
	s.nextID = max(s.nextID, maxCursor)
	for _, name := range names {
		if _, ok := s.cursors[name]; !ok {
			// A new destination starts at the oldest record still spooled.
			s.cursors[name] = 0
		}
	}
	for name := range s.cursors {
		if !contains(names, name) {
			delete(s.cursors, name) // a destination no longer configured
		}
	}
	s.reclaimLocked()
	return s, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// resyncBudget bounds the bytes checksummed while looking for the next
// valid record after corruption, per segment, so that a crafted file
// cannot make start-up quadratic.
const resyncBudget = 64 << 20

// validRecordAt reports whether b holds a well-formed record at off with
// an id above after, and returns its payload length and id.
func validRecordAt(b []byte, off int, after uint64, budget *int) (n int, id uint64, ok bool) {
	if off+recHeader > len(b) {
		return 0, 0, false
	}
	n = int(binary.LittleEndian.Uint32(b[off:]))
	if n > maxRecord || n > len(b)-off-recHeader {
		return 0, 0, false
	}
	if b[off+17] != 0 || b[off+18] != 0 || b[off+19] != 0 {
		return 0, 0, false
	}
	id = binary.LittleEndian.Uint64(b[off+8:])
	if id <= after || id == ^uint64(0) {
		return 0, 0, false // ids must grow; anything else is not ours
	}
	*budget -= recHeader + n
	if crc32.Checksum(b[off+8:off+recHeader+n], crcTable) != binary.LittleEndian.Uint32(b[off+4:]) {
		return 0, 0, false
	}
	return n, id, true
}

// scanned is one well-formed record found by scanSegment.
type scanned struct {
	off int // of the header
	n   int // payload length
	id  uint64
	sev uint8
}

// scanSegment finds the well-formed records of a segment file's content b
// whose ids grow above after. Corrupt bytes (a torn tail after a power
// cut, or damage in the middle) are skipped: the reader resynchronises on
// the next record with a valid checksum and a growing id. lost estimates
// the records lost: at least one per damaged region, at most the id gap
// across it or what the region could hold. damaged counts the regions.
func scanSegment(b []byte, after uint64, log *slog.Logger) (recs []scanned, lost uint64, damaged int) {
	budget := resyncBudget
	last := after
	off := 0
	for off < len(b) {
		n, id, ok := validRecordAt(b, off, last, &budget)
		if !ok {
			start := off
			for off++; off < len(b) && budget > 0; off++ {
				if n, id, ok = validRecordAt(b, off, last, &budget); ok {
					break
				}
			}
			if !ok {
				off = len(b)
			}
			damaged++
			est := uint64(1)
			if ok && len(recs) > 0 {
				est = max(1, min(id-last-1, uint64((off-start)/recHeader)))
			}
			lost += est
			log.Warn("spool: skipping corrupt bytes", "at", start, "bytes", off-start, "lost_records", est)
			if !ok {
				break
			}
		}
		recs = append(recs, scanned{off: off, n: n, id: id, sev: b[off+16]})
		last = id
		off += recHeader + n
	}
	return recs, lost, damaged
}

// loadSegment indexes one segment file. A damaged file is rewritten with
// its good records only, so the loss is counted once (see scanSegment).
func (s *spool) loadSegment(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	g := &segment{path: path}
	last := uint64(0)
	if len(s.idx) > 0 {
		last = s.idx[len(s.idx)-1].id
	}
	recs, lost, damaged := scanSegment(b, last, s.log.With("file", path))
	size := int64(len(b))
	if damaged > 0 {
		buf := make([]byte, 0, len(b))
		for i := range recs {
			r := &recs[i]
			start := r.off
			r.off = len(buf)
			buf = append(buf, b[start:start+recHeader+r.n]...)
		}
		if err := writeFileSync(path, buf); err != nil {
			return err
		}
		size = int64(len(buf))
		s.lost += lost
		s.dirtyDir = true
	}
	for _, r := range recs {
		s.idx = append(s.idx, entry{id: r.id, seg: g, off: int64(r.off), n: uint32(r.n), sev: r.sev})
		g.last = r.id
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	g.f, g.size = f, size
	s.segs = append(s.segs, g)
	s.used += g.size
	return nil
}

// minCursorLocked is the lowest next-id over all destinations: records
// below it have been delivered everywhere.
func (s *spool) minCursorLocked() uint64 {
	m := s.nextID
	for _, c := range s.cursors {
		m = min(m, c)
	}
	return m
}

// reclaimLocked deletes the oldest segments whose records every
// destination has confirmed (never the one being appended to).
func (s *spool) reclaimLocked() {
	mc := s.minCursorLocked()
	for len(s.segs) > 1 && s.segs[0].last < mc {
		g := s.segs[0]
		_ = g.f.Close()
		if err := os.Remove(g.path); err != nil {
			s.log.Warn("spool: remove segment", "err", err)
		}
		s.used -= g.size
		s.segs = s.segs[1:]
		i := 0
		for i < len(s.idx) && s.idx[i].seg == g {
			i++
		}
		s.idx = s.idx[i:]
		s.dirtyDir = true
	}
}

// append stores one record. It returns false when the record itself was
// dropped (the spool is full of more severe records, or the disk failed).
func (s *spool) append(sev uint8, payload []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	need := int64(recHeader + len(payload))
	if len(payload) > maxRecord || need > s.capB/4 {
		s.dropLocked(1)
		return false, nil
	}
	if s.used+need > s.capB && !s.makeRoomLocked(sev, need) {
		s.dropLocked(1)
		return false, nil
	}
	g := s.activeLocked(need)
	if g == nil {
		s.dropLocked(1)
		return false, fmt.Errorf("syslog: spool: cannot open a segment")
	}
	id := s.nextID
	b := s.wbuf[:0]
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = append(b, sev, 0, 0, 0)
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	s.wbuf = b
	if _, err := g.f.WriteAt(b, g.size); err != nil {
		_ = g.f.Truncate(g.size)
		s.dropLocked(1)
		return false, fmt.Errorf("syslog: spool: %w", err)
	}
	s.idx = append(s.idx, entry{id: id, seg: g, off: g.size, n: uint32(len(payload)), sev: sev})
	g.size += need
	g.last = id
	s.used += need
	s.nextID++
	if len(s.unsynced) == 0 || s.unsynced[len(s.unsynced)-1] != g {
		s.unsynced = append(s.unsynced, g)
	}
	for _, w := range s.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	return true, nil
}

func (s *spool) dropLocked(n uint64) {
	s.dropped += n
	s.pending += n
}

// activeLocked returns the segment to append need bytes to, starting a new
// one when the current is full.
func (s *spool) activeLocked(need int64) *segment {
	if n := len(s.segs); n > 0 && s.segs[n-1].size+need <= s.segMax {
		return s.segs[n-1]
	}
	if n := len(s.segs); n > 0 && s.segs[n-1].size == 0 {
		return s.segs[n-1] // an empty segment takes any record
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%s%016x%s", segPrefix, s.nextID, segSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		s.log.Error("spool: create segment", "err", err)
		return nil
	}
	g := &segment{path: path, f: f}
	s.segs = append(s.segs, g)
	s.dirtyDir = true
	s.reclaimLocked()
	return g
}

// makeRoomLocked frees space for a record of severity sev: it drops the
// undelivered records of the lowest severity first (oldest first within a
// severity), never one more severe than sev, down to 7/8 of the cap so the
// rewrite cost is amortised. It reports whether the new record now fits.
func (s *spool) makeRoomLocked(sev uint8, need int64) bool {
	s.reclaimLocked()
	mc := s.minCursorLocked()
	target := s.capB - s.capB/8 - need
	// Bytes a compaction frees anyway: records every destination has.
	free := int64(0)
	for _, e := range s.idx {
		if e.id < mc {
			free += recHeader + int64(e.n)
		}
	}
	victims := uint64(0)
	for lvl := 7; lvl >= int(sev) && s.used-free > target; lvl-- {
		for i := range s.idx {
			e := &s.idx[i]
			if e.id >= mc && int(e.sev) == lvl && !e.dead {
				e.dead = true
				victims++
				free += recHeader + int64(e.n)
				if s.used-free <= target {
					break
				}
			}
		}
	}
	if free > 0 {
		s.compactLocked(mc)
	}
	s.dropLocked(victims)
	return s.used+need <= s.capB
}

// compactLocked rewrites every segment holding dead or fully delivered
// records without them (write to .tmp, fsync, rename).
func (s *spool) compactLocked(mc uint64) {
	keep := make([]entry, 0, len(s.idx))
	byseg := map[*segment][]int{}
	for i, e := range s.idx {
		byseg[e.seg] = append(byseg[e.seg], i)
	}
	newSegs := s.segs[:0:0]
	for gi, g := range s.segs {
		ids := byseg[g]
		changed := false
		for _, i := range ids {
			if s.idx[i].dead || s.idx[i].id < mc {
				changed = true
				break
			}
		}
		if !changed {
			for _, i := range ids {
				keep = append(keep, s.idx[i])
			}
			newSegs = append(newSegs, g)
			continue
		}
		tmp := g.path + ".tmp"
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			s.log.Error("spool: compact", "err", err)
			for _, i := range ids {
				e := s.idx[i]
				e.dead = false
				keep = append(keep, e)
			}
			newSegs = append(newSegs, g)
			continue
		}
		var off int64
		buf := make([]byte, 0, g.size)
		var moved []entry
		for _, i := range ids {
			e := s.idx[i]
			if e.dead || e.id < mc {
				continue
			}
			rec := make([]byte, recHeader+int(e.n))
			if _, err := g.f.ReadAt(rec, e.off); err != nil {
				s.log.Error("spool: compact read", "err", err)
				continue
			}
			buf = append(buf, rec...)
			e.off = off
			off += int64(len(rec))
			moved = append(moved, e)
		}
		_, werr := f.Write(buf)
		serr := f.Sync()
		if werr != nil || serr != nil {
			s.log.Error("spool: compact write", "err", werr, "sync_err", serr)
			f.Close()
			_ = os.Remove(tmp)
			for _, i := range ids {
				e := s.idx[i]
				e.dead = false
				keep = append(keep, e)
			}
			newSegs = append(newSegs, g)
			continue
		}
		if err := os.Rename(tmp, g.path); err != nil {
			s.log.Error("spool: compact rename", "err", err)
		}
		_ = g.f.Close()
		s.used += off - g.size
		g.f, g.size = f, off
		s.dirtyDir = true
		if off == 0 && gi != len(s.segs)-1 {
			_ = g.f.Close()
			_ = os.Remove(g.path)
			continue
		}
		for _, e := range moved {
			e.seg = g
			keep = append(keep, e)
		}
		newSegs = append(newSegs, g)
	}
	s.idx = keep
	s.segs = newSegs
}

// read returns up to maxN records (maxBytes of payload) with id >= from.
func (s *spool) read(from uint64, maxN, maxBytes int) ([]record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.idx), func(i int) bool { return s.idx[i].id >= from })
	var out []record
	total := 0
	for ; i < len(s.idx) && len(out) < maxN; i++ {
		e := s.idx[i]
		if len(out) > 0 && total+int(e.n) > maxBytes {
			break
		}
		p := make([]byte, e.n)
		if _, err := e.seg.f.ReadAt(p, e.off+recHeader); err != nil {
			return out, fmt.Errorf("syslog: spool read: %w", err)
		}
		out = append(out, record{id: e.id, payload: p})
		total += int(e.n)
	}
	return out, nil
}

// tail returns up to n of the newest records, oldest first. Records that
// cannot be read are skipped.
func (s *spool) tail(n int) []record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []record
	for _, e := range s.idx[max(0, len(s.idx)-n):] {
		p := make([]byte, e.n)
		if _, err := e.seg.f.ReadAt(p, e.off+recHeader); err == nil {
			out = append(out, record{id: e.id, payload: p})
		}
	}
	return out
}

func (s *spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// next returns the id the next appended record will get.
func (s *spool) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextID
}

// cursor returns the next id destination name will send.
func (s *spool) cursor(name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[name]
}

// ack records that destination name has confirmed every record below next.
func (s *spool) ack(name string, next uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if next > s.cursors[name] {
		before := s.minCursorLocked()
		s.cursors[name] = next
		s.dirtyCurs = true
		if s.minCursorLocked() > before {
			s.freedAt = time.Now()
		}
		s.reclaimLocked()
	}
}

// hasRoom reports whether a record of n payload bytes fits under the cap
// without dropping an undelivered record (true as well when waiting is
// pointless: the spool is closed or the record can never fit), and when
// records last left the spool (see freedAt).
func (s *spool) hasRoom(n int) (ok bool, freedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	need := int64(recHeader + n)
	if s.closed || n > maxRecord || need > s.capB/4 {
		return true, s.freedAt // never fits: append drops it, waiting would not help
	}
	if s.used+need > s.capB {
		s.reclaimLocked()
	}
	return s.used+need <= s.capB, s.freedAt
}

// pendingFor counts the records destination name has not confirmed.
func (s *spool) pendingFor(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cursors[name]
	i := sort.Search(len(s.idx), func(i int) bool { return s.idx[i].id >= c })
	return len(s.idx) - i
}

// takeDrops returns and clears the count of drops not yet reported.
func (s *spool) takeDrops() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.pending
	s.pending = 0
	return n
}

func (s *spool) stats() (records int, bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.idx), s.used, s.dropped
}

// lostAtOpen is the count of records lost to corruption found by openSpool.
func (s *spool) lostAtOpen() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// wake returns a channel that receives after every append.
func (s *spool) wake() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(chan struct{}, 1)
	s.waiters = append(s.waiters, c)
	return c
}

// sync fsyncs written segments and persists the cursors.
func (s *spool) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncLocked()
}

func (s *spool) syncLocked() error {
	var first error
	for _, g := range s.unsynced {
		if !s.liveSegLocked(g) {
			continue // deleted by reclaim or compaction since it was written
		}
		if err := g.f.Sync(); err != nil && first == nil {
			first = fmt.Errorf("syslog: spool sync: %w", err)
		}
	}
	s.unsynced = s.unsynced[:0]
	if s.dirtyCurs {
		for name, c := range s.cursors {
			if err := writeFileSync(filepath.Join(s.dir, cursorPref+name), []byte(strconv.FormatUint(c, 10)+"\n")); err != nil && first == nil {
				first = err
			}
		}
		s.dirtyCurs = false
		s.dirtyDir = true
	}
	if s.dirtyDir {
		if d, err := os.Open(s.dir); err == nil {
			_ = d.Sync()
			d.Close()
		}
		s.dirtyDir = false
	}
	return first
}

func (s *spool) liveSegLocked(g *segment) bool {
	for _, h := range s.segs {
		if h == g {
			return true
		}
	}
	return false
}

// writeFileSync replaces path atomically and durably.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if werr != nil || serr != nil || cerr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("syslog: spool: write %s: %v %v %v", path, werr, serr, cerr)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("syslog: spool: %w", err)
	}
	return nil
}

// close syncs and closes the spool files. With flush false it closes
// without syncing, as a crash would (tests).
func (s *spool) close(flush bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if flush {
		err = s.syncLocked()
	}
	for _, g := range s.segs {
		_ = g.f.Close()
	}
	return err
}
