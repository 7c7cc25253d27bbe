// Package haltest is test support for hal's Ports: the trivial user-space
// bridge direction that hal's forwarding benchmark and the datapath
// bench's floor (gateway/e2e) both run.
package haltest

import (
	"errors"

	"github.com/otgw/otgw/hal"
)

// Forward moves batches of frames from in to out, as the gateway's loop
// does minus inspection, until a read fails (hal.ErrClosed at teardown) or
// out is closed; a read deadline's hal.ErrTimeout is waited through. A
// frame out refuses is counted as dropped and the rest of its batch goes
// on. fix, when not nil, completes the checksum of a frame that arrived
// with one not ready (hal.FrameMeta.ChecksumNotReady; the gateway's
// daemon.CompleteChecksum).
func Forward(in, out hal.Port, fix func(frame []byte) bool) {
	bufs, frames := make([][]byte, hal.MaxBatch), make([][]byte, hal.MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes, meta := make([]int, hal.MaxBatch), make([]hal.FrameMeta, hal.MaxBatch)
	for {
		n, err := in.ReadBatch(bufs, sizes, meta)
		if errors.Is(err, hal.ErrTimeout) {
			continue
		}
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			frames[i] = bufs[i][:sizes[i]]
			if fix != nil && meta[i].ChecksumNotReady {
				fix(frames[i])
			}
		}
		for sent := 0; sent < n; {
			k, err := out.WriteBatch(frames[sent:n])
			sent += k
			if errors.Is(err, hal.ErrClosed) {
				return
			}
			if err != nil {
				sent++ // dropped, go on
			}
		}
	}
}
