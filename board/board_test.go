package board

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEmbeddedProfiles(t *testing.T) {
	want := map[string]string{"sim": "any", "x86-generic": "amd64", "nanopi-r4s": "arm64", "ls1021a-iot": "arm"}
	got := map[string]string{}
	for _, p := range List() {
		got[p.Name] = p.Arch
		if p.Name == "sim-open" {
			// The crash tests' fail-open twin: a kernel bridge bypass.
			if p.FailMode != FailOpen || p.Bypass.Kind != BypassBridge {
				t.Errorf("sim-open: fail_mode %s, bypass %s; want open with a bridge", p.FailMode, p.Bypass.Kind)
			}
			continue
		}
		if p.FailMode != FailClosed {
			t.Errorf("%s: fail_mode %s, want closed by default", p.Name, p.FailMode)
		}
	}
	for name, arch := range want {
		if got[name] != arch {
			t.Errorf("profile %s arch = %q, want %q", name, got[name], arch)
		}
	}
}

// fakeRoot builds a root directory with the given files.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, v := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    string
		wantErr error
	}{
		{"nanopi r4s device tree", map[string]string{
			"proc/device-tree/compatible": "friendlyarm,nanopi-r4s\x00rockchip,rk3399\x00"}, "nanopi-r4s", nil},
		{"r4s enterprise variant", map[string]string{
			"proc/device-tree/compatible": "friendlyarm,nanopi-r4s-enterprise\x00friendlyarm,nanopi-r4s\x00rockchip,rk3399\x00"}, "nanopi-r4s", nil},
		{"ls1021a-iot device tree", map[string]string{
			"proc/device-tree/compatible": "fsl,ls1021a-iot\x00fsl,ls1021a\x00"}, "ls1021a-iot", nil},
		{"x86 pc by dmi fallback", map[string]string{
			"sys/class/dmi/id/board_name":   "X11SBA-LN4F\n",
			"sys/class/dmi/id/product_name": "SYS-E200-9A\n"}, "x86-generic", nil},
		{"unknown arm board", map[string]string{
			"proc/device-tree/compatible": "raspberrypi,4-model-b\x00brcm,bcm2711\x00"}, "", ErrUnknownBoard},
		{"sibling soc is not a match", map[string]string{
			"proc/device-tree/compatible": "fsl,ls1021a-twr\x00fsl,ls1021a\x00"}, "", ErrUnknownBoard},
		{"empty root", map[string]string{}, "", ErrUnknownBoard},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Detect(fakeRoot(t, tc.files))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Detect err = %v, want %v", err, tc.wantErr)
			}
			if p.Name != tc.want {
				t.Errorf("Detect = %q, want %q", p.Name, tc.want)
			}
		})
	}
}

func TestDetectDMIExactMatchBeatsFallback(t *testing.T) {
	ps, err := Parse([]byte(`
- {name: generic, arch: amd64, match: {fallback_dmi: true}, ports: {north: [a], south: [b]}, bypass: {kind: none}, fail_mode: closed, slots: {kind: grub, a: x, b: y, env: e}}
- {name: appliance, arch: amd64, match: {board_name: [APU2]}, ports: {north: [a], south: [b]}, bypass: {kind: gpio, chip: /dev/gpiochip0, line: 3}, fail_mode: open, slots: {kind: grub, a: x, b: y, env: e}}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := detect(ps, Facts{HasDMI: true, BoardName: "apu2"})
	if err != nil || p.Name != "appliance" {
		t.Errorf("detect = %q, %v; want appliance", p.Name, err)
	}
}

func TestParseRejects(t *testing.T) {
	base := "{name: x, arch: arm64, ports: {north: [a], south: [b]}, bypass: {kind: none}, fail_mode: closed, slots: {kind: file, a: p, b: q}}"
	tests := []struct {
		name, yaml, wantMsg string
	}{
		{"fail open without bypass", strings.Replace(base, "fail_mode: closed", "fail_mode: open", 1), "needs a bypass"},
		{"gpio without chip", strings.Replace(base, "kind: none", "kind: gpio", 1), "needs a chip"},
		{"same slot twice", strings.Replace(base, "b: q", "b: p", 1), "distinct"},
		{"unknown arch", strings.Replace(base, "arm64", "mips", 1), "arch"},
		{"no south", strings.Replace(base, ", south: [b]", "", 1), "south"},
		{"unknown field", strings.Replace(base, "arch:", "archh: x, arch:", 1), "archh"},
		{"duplicate", "[" + base + ", " + base + "]", "twice"},
		{"uboot without env", strings.Replace(base, "kind: file", "kind: uboot", 1), "need env"},
		{"unknown io mode", strings.Replace(base, "fail_mode:", "io: {mode: v3}, fail_mode:", 1), "io mode"},
		{"negative io frames", strings.Replace(base, "fail_mode:", "io: {rx_frames: -1}, fail_mode:", 1), "rx_frames"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := tc.yaml
			if !strings.HasPrefix(y, "[") {
				y = "[" + y + "]"
			}
			_, err := Parse([]byte(y))
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Parse err = %v, want one containing %q", err, tc.wantMsg)
			}
		})
	}
}

func TestResolvePort(t *testing.T) {
	root := fakeRoot(t, map[string]string{"sys/class/net/enp1s0/ifindex": "2\n"})
	p, _ := Lookup("nanopi-r4s")
	if _, err := ResolvePort(p.Ports.North, NetExists(root)); !errors.Is(err, ErrNoPort) {
		t.Errorf("north on a machine without eth0/end0: err = %v, want ErrNoPort", err)
	}
	got, err := ResolvePort(p.Ports.South, NetExists(root))
	if err != nil || got != "enp1s0" {
		t.Errorf("south = %q, %v; want enp1s0 (systemd name)", got, err)
	}
}

func TestLookupUnknown(t *testing.T) {
	if _, err := Lookup("nope"); !errors.Is(err, ErrNoProfile) {
		t.Errorf("Lookup(nope) = %v, want ErrNoProfile", err)
	}
}
