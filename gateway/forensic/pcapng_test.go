package forensic_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

// writeTestFile writes frames with comments on alternating interfaces.
func writeTestFile(t *testing.T, frames [][]byte, comments []string, t0 time.Time) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := forensic.NewWriter(&buf, "otgw test", []forensic.Interface{
		{Name: "north (n0)", LinkType: forensic.LinkEthernet, SnapLen: 2048},
		{Name: "south (s0)", LinkType: forensic.LinkEthernet, SnapLen: 2048},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		if err := w.WritePacket(i%2, t0.Add(time.Duration(i)*1234567*time.Nanosecond), f, len(f)+i%2*10, forensic.FlagInbound, comments[i]); err != nil {
			t.Fatal(err)
		}
	}
	if w.Size() != int64(buf.Len()) {
		t.Errorf("Size = %d, wrote %d", w.Size(), buf.Len())
	}
	path := filepath.Join(t.TempDir(), "t.pcapng")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testFrames() ([][]byte, []string) {
	var frames [][]byte
	var comments []string
	for i := range 7 {
		f := make([]byte, 60+i*3) // odd lengths exercise the padding
		for j := range f {
			f[j] = byte(i*7 + j)
		}
		frames = append(frames, f)
		comments = append(comments, []string{
			"otgw deny flow_id=42 reason=function_not_allowed",
			"", // no comment
			`otgw deny flow_id=7 conduit="hmi polls\tplc" rule=modbus#1`,
			"zone é ünïcode ✓",
			"x",
			"abcd",
			"abcde",
		}[i])
	}
	return frames, comments
}

// The writer's files read back identically with our reader: data,
// original length, interface, nanosecond time, flags and comment.
func TestWriterRoundTrip(t *testing.T) {
	frames, comments := testFrames()
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 123456789, time.UTC)
	path := writeTestFile(t, frames, comments, t0)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pkts, ifaces, err := forensic.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 2 || ifaces[0].Name != "north (n0)" || ifaces[1].Name != "south (s0)" || ifaces[1].SnapLen != 2048 {
		t.Errorf("interfaces = %+v", ifaces)
	}
	if len(pkts) != len(frames) {
		t.Fatalf("read %d packets, wrote %d", len(pkts), len(frames))
	}
	for i, p := range pkts {
		want := t0.Add(time.Duration(i) * 1234567 * time.Nanosecond)
		if !bytes.Equal(p.Data, frames[i]) || p.OrigLen != len(frames[i])+i%2*10 || p.Iface != i%2 ||
			!p.Time.Equal(want) || p.Flags != forensic.FlagInbound || p.Comment != comments[i] || p.Index != i+1 {
			t.Errorf("packet %d: got iface %d time %v orig %d flags %d comment %q, want %d %v %d %d %q",
				i, p.Iface, p.Time, p.OrigLen, p.Flags, p.Comment, i%2, want, len(frames[i])+i%2*10, forensic.FlagInbound, comments[i])
		}
	}
}

// The project's capture reader (simulate/capture, tested against
// Wireshark's tools) reads the same frames, interfaces and times.
func TestWriterReadByCaptureReader(t *testing.T) {
	frames, comments := testFrames()
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 123456789, time.UTC)
	path := writeTestFile(t, frames, comments, t0)
	var n int
	sum, err := capture.Read(path, func(f *capture.Frame) error {
		i := f.Index - 1
		if !bytes.Equal(f.Data, frames[i]) || f.IfaceIdx != i%2 || !f.Time.Equal(t0.Add(time.Duration(i)*1234567*time.Nanosecond)) {
			t.Errorf("frame %d: iface %d time %v", f.Index, f.IfaceIdx, f.Time)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(frames) || len(sum.Damage) != 0 {
		t.Errorf("capture.Read: %d frames, damage %v; want %d, none", n, sum.Damage, len(frames))
	}
}

// tshark (Wireshark's dissector) reads every frame, its comment and the
// interface name.
func TestWriterReadByTshark(t *testing.T) {
	tshark := testenv.NeedCmd(t, "tshark")
	frames, comments := testFrames()
	path := writeTestFile(t, frames, comments, time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC))
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "frame.interface_name", "-e", "frame.len", "-e", "frame.comment").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(frames) {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), len(frames), out)
	}
	for i, l := range lines {
		f := strings.SplitN(l, "|", 4)
		iface := []string{"north (n0)", "south (s0)"}[i%2]
		// tshark prints a tab in a field as the two characters \t.
		wantComment := strings.ReplaceAll(comments[i], "\t", `\t`)
		if len(f) != 4 || f[1] != iface || f[3] != wantComment {
			t.Errorf("tshark frame %d: %q, want interface %q comment %q", i+1, l, iface, wantComment)
		}
	}
}

// Malformed input is an error naming the offset, never a panic.
func TestReadMalformed(t *testing.T) {
	frames, comments := testFrames()
	path := writeTestFile(t, frames[:2], comments[:2], time.Unix(0, 0))
	good, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"not pcapng", []byte("\xd4\xc3\xb2\xa1xxxxxxxxxxxxxxxxxxxxxx"), "not pcapng"},
		{"truncated", good[:len(good)-5], "truncated block"},
		{"bad length", append(append([]byte(nil), good[:len(good)-4]...), 1, 0, 0, 0), "trailing length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := forensic.Read(bytes.NewReader(tc.b))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "offset") {
				t.Errorf("Read = %v, want an error with %q and the offset", err, tc.want)
			}
		})
	}
}

// FuzzRead: any input is read or refused without a panic. Seeds: a valid
// file and its truncations.
func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	w, _ := forensic.NewWriter(&buf, "fuzz", []forensic.Interface{{Name: "n", LinkType: 1}})
	_ = w.WritePacket(0, time.Unix(1, 2), []byte{1, 2, 3, 4, 5}, 5, 1, "comment")
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, _, _ := forensic.Read(bytes.NewReader(b))
		for _, p := range pkts {
			if len(p.Data) > len(b) {
				t.Fatalf("packet of %d bytes from %d bytes of input", len(p.Data), len(b))
			}
		}
	})
}
