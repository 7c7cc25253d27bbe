package replay

import (
	"os"
	"strings"
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// truncatedCapture writes a Modbus session of polls and cuts the file in
// the middle of its last frame; it returns the path and the whole frames.
func truncatedCapture(t *testing.T, polls int) (string, int) {
	t.Helper()
	f := capture.NewTCPFlow(testHMI, testPLC)
	frames := f.Handshake()
	for i := range polls {
		frames = append(frames, f.Send(true, readReq(uint16(i))), f.Send(false, readResp(uint16(i))))
	}
	path := writeCapture(t, frames)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)-20], 0o644); err != nil {
		t.Fatal(err)
	}
	return path, len(frames) - 1
}

// TestTruncatedCaptureReplaysUpToTheDamage: a capture cut short (a killed
// tcpdump) is replayed up to its last whole frame, alone or merged with
// another capture, and the report says what was lost and where.
func TestTruncatedCaptureReplaysUpToTheDamage(t *testing.T) {
	path, whole := truncatedCapture(t, 5)
	for _, paths := range [][]string{{path}, {path, path}} {
		rep, err := Run(Options{Policy: mustPolicy(t, readOnly)}, paths...)
		if err != nil {
			t.Fatalf("%d files: %v", len(paths), err)
		}
		if rep.Frames != whole*len(paths) {
			t.Errorf("%d files: %d frames, want %d", len(paths), rep.Frames, whole*len(paths))
		}
		if len(rep.CaptureDamage) != len(paths) || !strings.Contains(rep.CaptureDamage[0], "c.pcap: damaged capture: 12 frames read") ||
			!strings.Contains(rep.CaptureDamage[0], "truncated record") {
			t.Errorf("%d files: damage %q", len(paths), rep.CaptureDamage)
		}
		var sum strings.Builder
		if err := rep.WriteSummary(&sum); err != nil || !strings.Contains(sum.String(), "warning: c.pcap: damaged capture") {
			t.Errorf("summary does not warn:\n%s", sum.String())
		}
	}
}
