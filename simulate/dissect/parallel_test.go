package dissect_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/simulate/dissect"
)

func jsonLine(dst []byte, p *dissect.PDU) ([]byte, error) {
	dst, err := p.AppendJSON(dst)
	return append(dst, '\n'), err
}

// sequential is what `otgw dissect --json` wrote before RunParallel: Run,
// one line per PDU in callback order, stopping at the first error.
func sequential(t *testing.T, path string, format dissect.Format) ([]byte, error) {
	t.Helper()
	var out []byte
	_, err := dissect.Run(path, dissect.Options{}, func(p *dissect.PDU) error {
		n := len(out)
		var err error
		if out, err = format(out, p); err != nil {
			out = out[:n]
		}
		return err
	})
	return out, err
}

func TestRunParallelSameBytesAsRun(t *testing.T) {
	for _, path := range corpus(t) {
		want, err := sequential(t, path, jsonLine)
		if err != nil {
			t.Fatalf("%s: Run: %v", path, err)
		}
		for _, workers := range []int{1, 2, 3, 7} {
			var got bytes.Buffer
			if _, err := dissect.RunParallel(path, dissect.Options{}, workers, jsonLine, &got); err != nil {
				t.Fatalf("%s: RunParallel(%d): %v", filepath.Base(path), workers, err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s: RunParallel(%d) wrote %d bytes that differ from Run's %d", filepath.Base(path), workers, got.Len(), len(want))
			}
		}
	}
}

// largest returns the corpus capture with the most PDUs of Run.
func largest(t *testing.T) (string, int) {
	t.Helper()
	best, most := "", 0
	for _, path := range corpus(t) {
		n := 0
		dissect.Run(path, dissect.Options{}, func(*dissect.PDU) error { n++; return nil })
		if n > most {
			best, most = path, n
		}
	}
	return best, most
}

func TestRunParallelStopsAtFirstErrorInCaptureOrder(t *testing.T) {
	path, n := largest(t)
	if n < 3000 {
		t.Fatalf("%s: %d PDUs, want a capture of several batches", path, n)
	}
	errBoom := errors.New("boom")
	for _, at := range []int{1, 7, n / 2, n} {
		// failing fails at the at-th PDU in capture order (frame and
		// content are the same whichever worker meets it).
		var wantFrame int
		count := 0
		dissect.Run(path, dissect.Options{}, func(p *dissect.PDU) error {
			if count++; count == at {
				wantFrame = p.Frame
				line, _ := p.AppendJSON(nil)
				wantFrame = wantFrame*1000 + len(line)
				return errBoom
			}
			return nil
		})
		failing := func(dst []byte, p *dissect.PDU) ([]byte, error) {
			line, _ := p.AppendJSON(nil)
			if p.Frame*1000+len(line) == wantFrame {
				return append(dst, "partial"...), fmt.Errorf("frame %d: %w", p.Frame, errBoom)
			}
			return jsonLine(dst, p)
		}
		want, werr := sequential(t, path, failing)
		if !errors.Is(werr, errBoom) {
			t.Fatalf("at %d: sequential run did not fail: %v", at, werr)
		}
		for _, workers := range []int{1, 2, 3} {
			var got bytes.Buffer
			_, err := dissect.RunParallel(path, dissect.Options{}, workers, failing, &got)
			if err == nil || err.Error() != werr.Error() {
				t.Errorf("at %d, %d workers: err %v, want %v", at, workers, err, werr)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("at %d, %d workers: wrote %d bytes, want the %d before the error", at, workers, got.Len(), len(want))
			}
		}
	}
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

var errFull = errors.New("disk full")

func (w *failWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		return 0, errFull
	}
	w.n -= len(b)
	return len(b), nil
}

func TestRunParallelWriterError(t *testing.T) {
	path, _ := largest(t)
	for _, n := range []int{0, 1000, 300000} {
		if _, err := dissect.RunParallel(path, dissect.Options{}, 2, jsonLine, &failWriter{n: n}); !errors.Is(err, errFull) {
			t.Errorf("writer failing after %d bytes: err %v, want %v", n, err, errFull)
		}
	}
}
