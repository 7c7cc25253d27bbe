package events

import (
	"fmt"
	"os"
	"sync"
)

// DefaultJSONFileMaxBytes caps a JSON-lines event file before it rotates.
const DefaultJSONFileMaxBytes = 16 << 20

// JSONFile is the gateway's default exporter until syslog is configured:
// one JSON object per line (the AppendJSON schema), appended to a file
// that rotates to path+".1" when it would exceed its size cap, so the
// disk use is bounded by twice the cap.
//
// Emit writes through to the file (no user-space buffer, so a crash loses
// nothing already emitted); Sync flushes it to stable storage. Safe for
// concurrent use; meant to sit behind a Pipeline, off the datapath.
type JSONFile struct {
	path     string
	maxBytes int64

	mu     sync.Mutex // guards the fields below
	f      *os.File
	size   int64
	buf    []byte
	err    error // first write error, reported by Close
	errors uint64
}

// OpenJSONFile opens (creating or appending to) the JSON-lines file at path.
// maxBytes <= 0 selects DefaultJSONFileMaxBytes.
func OpenJSONFile(path string, maxBytes int64) (*JSONFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultJSONFileMaxBytes
	}
	j := &JSONFile{path: path, maxBytes: maxBytes}
	if err := j.open(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *JSONFile) open() error {
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("events: open json file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("events: open json file: %w", err)
	}
	j.f, j.size = f, st.Size()
	return nil
}

// Emit implements Sink.
func (j *JSONFile) Emit(e *Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		j.errors++
		return
	}
	j.buf = append(e.AppendJSON(j.buf[:0]), '\n')
	if j.size > 0 && j.size+int64(len(j.buf)) > j.maxBytes {
		j.rotateLocked()
	}
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	if err != nil {
		j.errors++
		if j.err == nil {
			j.err = fmt.Errorf("events: write %s: %w", j.path, err)
		}
	}
}

func (j *JSONFile) rotateLocked() {
	_ = j.f.Sync()
	_ = j.f.Close()
	j.f = nil
	if err := os.Rename(j.path, j.path+".1"); err != nil && j.err == nil {
		j.err = fmt.Errorf("events: rotate %s: %w", j.path, err)
	}
	if err := j.open(); err != nil && j.err == nil {
		j.err = err
	}
}

// Errors returns the number of events that could not be written.
func (j *JSONFile) Errors() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.errors
}

// Sync flushes the file to stable storage.
func (j *JSONFile) Sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return j.err
	}
	return j.f.Sync()
}

// Close syncs and closes the file and returns the first error seen.
func (j *JSONFile) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return j.err
	}
	if err := j.f.Sync(); err != nil && j.err == nil {
		j.err = err
	}
	if err := j.f.Close(); err != nil && j.err == nil {
		j.err = err
	}
	j.f = nil
	return j.err
}
