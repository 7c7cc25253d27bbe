package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
)

func fwTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(testenv.NeedCmd(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestFWRealBoards drives `otgw fw` on the x86-generic (GRUB) and
// nanopi-r4s (U-Boot) profiles with partition files and environments in
// a temporary directory (the --slot-a/--slot-b/--env overrides of the
// profile's paths): provision, install writes the inactive partition, the
// real tool plays the bootloader's try, commit, status.
func TestFWRealBoards(t *testing.T) {
	for _, tc := range []struct{ board, kind, arch string }{{"x86-generic", "grub", "amd64"}, {"nanopi-r4s", "uboot", "arm64"}} {
		t.Run(tc.board, func(t *testing.T) {
			dir := t.TempDir()
			p := func(n string) string { return filepath.Join(dir, n) }
			for _, part := range []string{"otgw-a", "otgw-b"} {
				os.WriteFile(p(part), make([]byte, 1<<20), 0o644)
			}
			var env string
			switch tc.kind {
			case "grub":
				env = p("grubenv")
				fwTool(t, "grub-editenv", env, "create")
			case "uboot":
				env = p("fw_env.config")
				var cfg strings.Builder
				for i := 0; i < 2; i++ {
					os.WriteFile(p(fmt.Sprintf("env%d", i)), make([]byte, 0x4000), 0o644)
					fmt.Fprintf(&cfg, "%s 0x0 0x4000\n", p(fmt.Sprintf("env%d", i)))
				}
				os.WriteFile(env, []byte(cfg.String()), 0o644)
			}
			dev := []string{"--board", tc.board, "--state", p("data"), "--arch", tc.arch, "--slot-a", p("otgw-a"), "--slot-b", p("otgw-b"), "--env", env}
			fwMust(t, "fw", "keygen", "--out", p("k"))
			fwMust(t, "fw", "root", "--pub", p("k.pub"), "--key", p("k.key"), "--out", p("root.json"))
			fwWriteImage(t, p("factory.img"), "factory ", 5000)
			img := fwWriteImage(t, p("new.img"), "rootfs-1.1.0 ", 70000)
			fwMust(t, append([]string{"fw", "provision", "--version", "1.0.0", p("factory.img")}, dev...)...)
			fwMust(t, "fw", "sign", "--key", p("k.key"), "--version", "1.1.0", "--svn", "2", "--board", tc.board, "--arch", tc.arch,
				"--out", p("fw.otgw"), p("new.img"))
			if out := fwMust(t, append([]string{"fw", "install", "--root", p("root.json"), p("fw.otgw")}, dev...)...); !strings.Contains(out, "to slot B") {
				t.Fatalf("install: %s", out)
			}
			if part, _ := os.ReadFile(p("otgw-b")); !bytes.Equal(part[:len(img)], img) {
				t.Fatal("partition B does not hold the image")
			}
			if code, _, errs := fwRun(t, append([]string{"fw", "reboot"}, dev...)...); code != 2 || !strings.Contains(errs, "real bootloader") {
				t.Errorf("fw reboot on a real board: %d %s", code, errs)
			}
			// Power-on: the bootloader spends a try and boots B.
			switch tc.kind {
			case "grub":
				fwTool(t, "grub-editenv", env, "set", "boot_tries=2")
			case "uboot":
				fwTool(t, "fw_setenv", "-c", env, "bootcount", "1")
			}
			fwMust(t, append([]string{"fw", "commit"}, dev...)...)
			out := fwMust(t, append([]string{"fw", "status"}, dev...)...)
			if !strings.Contains(out, "running slot B, primary B") || !strings.Contains(out, "counter 2") {
				t.Errorf("status: %s", out)
			}
			switch tc.kind {
			case "grub":
				if got := fwTool(t, "grub-editenv", env, "list"); !strings.Contains(got, "saved_entry=slot-B") || strings.Contains(got, "boot_once") {
					t.Errorf("grubenv after commit:\n%s", got)
				}
			case "uboot":
				if got := fwTool(t, "fw_printenv", "-c", env); !strings.Contains(got, "boot_slot=B") || !strings.Contains(got, "upgrade_available=0") {
					t.Errorf("u-boot env after commit:\n%s", got)
				}
			}
			if _, err := os.Stat(p("data/anchor")); err != nil {
				t.Errorf("no anchor file in the state directory: %v", err)
			}
		})
	}
}
