package update_test

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

// tool runs a real bootloader tool and returns its stdout.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	path := testenv.NeedCmd(t, name)
	out, err := exec.Command(path, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, msg)
	}
	return string(out)
}

// listVars parses "name=value" lines as grub-editenv list and fw_printenv
// print them.
func listVars(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestGRUBEnvAgainstGrubEditenv(t *testing.T) {
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours")
	vars := map[string]string{"saved_entry": "slot-A", "boot_once": "slot-B", "boot_tries": "3", "note": "two words", "otgw_x": "a=b"}
	b, err := update.EncodeGRUBEnv(vars)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != update.GRUBEnvSize {
		t.Fatalf("block of %d bytes", len(b))
	}
	os.WriteFile(ours, b, 0o644)
	if got := listVars(tool(t, "grub-editenv", ours, "list")); !reflect.DeepEqual(got, vars) {
		t.Errorf("grub-editenv reads our block as %v, want %v", got, vars)
	}

	theirs := filepath.Join(dir, "theirs")
	tool(t, "grub-editenv", theirs, "create")
	tool(t, "grub-editenv", theirs, "set", "saved_entry=slot-B", "boot_tries=2", "msg=a b")
	raw, _ := os.ReadFile(theirs)
	got, err := update.DecodeGRUBEnv(raw)
	want := map[string]string{"saved_entry": "slot-B", "boot_tries": "2", "msg": "a b"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("we read grub-editenv's block as %v, %v; want %v", got, err, want)
	}
	// Byte-identical: grub-editenv writes the same block for the same
	// variables in the same order.
	mine, _ := update.EncodeGRUBEnv(want)
	tool(t, "grub-editenv", theirs, "unset", "saved_entry", "boot_tries", "msg")
	tool(t, "grub-editenv", theirs, "set", "boot_tries=2", "msg=a b", "saved_entry=slot-B")
	raw, _ = os.ReadFile(theirs)
	if !bytes.Equal(raw, mine) {
		t.Errorf("blocks differ:\nours   %q\ntheirs %q", mine[:160], raw[:160])
	}
}

func writeFWEnvConfig(t *testing.T, dir string, copies int) string {
	t.Helper()
	var cfg strings.Builder
	for i := 0; i < copies; i++ {
		p := filepath.Join(dir, fmt.Sprintf("uboot-env.%d", i))
		if err := os.WriteFile(p, make([]byte, 0x2000), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "%s 0x0 0x2000\n", p)
	}
	path := filepath.Join(dir, "fw_env.config")
	os.WriteFile(path, []byte("# test environment\n"+cfg.String()), 0o644)
	return path
}

func TestUBootEnvAgainstFwSetenv(t *testing.T) {
	for _, copies := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d copies", copies), func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeFWEnvConfig(t, dir, copies)
			empty := filepath.Join(dir, "empty")
			os.WriteFile(empty, nil, 0o644)
			tool(t, "fw_setenv", "-c", cfg, "-f", empty, "bootcmd", "run distro_bootcmd")

			// Our Store keeps their variable and adds ours; they read it.
			boot, err := update.NewUBootBoot(cfg)
			if err != nil {
				t.Fatal(err)
			}
			boot.Cmdline = ""
			st := update.InitialBootState(update.SlotInfo{Version: "1.0.0", SVN: 1, Size: 10})
			st.Slots[update.SlotB] = update.SlotInfo{State: update.SlotPending, Version: "1.1.0", SVN: 2, Size: 20}
			st.Trial, st.TriesLeft = update.SlotB, 3
			if err := boot.Store(&st); err != nil {
				t.Fatal(err)
			}
			got := listVars(tool(t, "fw_printenv", "-c", cfg))
			for k, v := range map[string]string{"bootcmd": "run distro_bootcmd", "boot_slot": "B", "upgrade_available": "1",
				"bootlimit": "3", "bootcount": "0", "otgw_trial": "B", "slot_a_ok": "1", "slot_b_ok": "1"} {
				if got[k] != v {
					t.Errorf("fw_printenv %s=%q, want %q", k, got[k], v)
				}
			}
			if !strings.HasPrefix(got["altbootcmd"], "setenv boot_slot A;") {
				t.Errorf("altbootcmd %q", got["altbootcmd"])
			}
			// U-Boot boots twice (bootcount is incremented by U-Boot; here
			// fw_setenv plays it), and we read that back.
			tool(t, "fw_setenv", "-c", cfg, "bootcount", "2")
			ld, err := boot.Load()
			if err != nil {
				t.Fatal(err)
			}
			if ld.Booted != update.SlotB || ld.TriesLeft != 1 {
				t.Errorf("after bootcount=2: booted %v tries %d, want B 1", ld.Booted, ld.TriesLeft)
			}
			// Writes alternate between the copies and stay readable.
			for i := 0; i < 3; i++ {
				if err := boot.Store(&ld); err != nil {
					t.Fatal(err)
				}
				if got := listVars(tool(t, "fw_printenv", "-c", cfg)); got["otgw_tries"] != "1" || got["bootlimit"] != "1" {
					t.Errorf("store %d: fw_printenv otgw_tries=%q bootlimit=%q", i, got["otgw_tries"], got["bootlimit"])
				}
			}
			// altbootcmd ran: U-Boot gave up on B.
			tool(t, "fw_setenv", "-c", cfg, "upgrade_available", "0")
			tool(t, "fw_setenv", "-c", cfg, "boot_slot", "A")
			ld, err = boot.Load()
			if err != nil {
				t.Fatal(err)
			}
			if ld.Booted != update.SlotA || ld.Trial != update.NoSlot || ld.Slots[update.SlotB].State != update.SlotBad || ld.Fallback != update.FallbackTries {
				t.Errorf("after altbootcmd: %+v", ld)
			}
		})
	}
}

// TestEnvBootRoundTrip: Store then Load returns the same state for random
// states, on both environments (nothing changed in between).
func TestEnvBootRoundTrip(t *testing.T) {
	dir := t.TempDir()
	grub, _ := update.NewGRUBBoot(filepath.Join(dir, "grubenv"))
	uboot, err := update.NewUBootBoot(writeFWEnvConfig(t, dir, 2))
	if err != nil {
		t.Fatal(err)
	}
	grub.Cmdline, uboot.Cmdline = "", ""
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 60; i++ {
		st := randomBootState(rng)
		for name, bl := range map[string]update.Bootloader{"grub": grub, "uboot": uboot} {
			if err := bl.Store(&st); err != nil {
				t.Fatalf("%s store: %v", name, err)
			}
			got, err := bl.Load()
			if err != nil || got != st {
				t.Fatalf("%s round trip %d:\n got %+v, %v\nwant %+v", name, i, got, err, st)
			}
		}
	}
}

// TestEnvBootBootedFromCmdline: the kernel command line's otgw.slot= says
// which slot runs. After an operator rollback to the other committed slot
// and a reboot, the stored state still names the old slot as booted; the
// command line corrects it, so the next install goes to the slot that is
// not running.
func TestEnvBootBootedFromCmdline(t *testing.T) {
	d := newRealDevice(t, "grub")
	d.install(t, "1.1.0", 1)
	tool(t, "grub-editenv", filepath.Join(filepath.Dir(d.slots.A), "grubenv"), "set", "boot_tries=2")
	if err := d.in.Commit(context.Background(), healthy); err != nil {
		t.Fatal(err)
	}
	if err := d.in.Rollback(); err != nil { // back to A (same SVN)
		t.Fatal(err)
	}
	cmdline := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(cmdline, []byte("BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=otgw-a otgw.slot=A ro quiet\n"), 0o644)
	d.boot.Cmdline = cmdline
	st, err := d.boot.Load()
	if err != nil || st.Booted != update.SlotA || st.Primary != update.SlotA {
		t.Fatalf("after rollback and reboot: booted %v primary %v, %v; want A A", st.Booted, st.Primary, err)
	}
	d.install(t, "1.2.0", 1)
	if st, _ := d.boot.Load(); st.Trial != update.SlotB {
		t.Errorf("install went to slot %v while A runs", st.Trial)
	}
	part, _ := os.ReadFile(d.slots.A)
	if !bytes.Equal(part[:len(d.e.Factory)], d.e.Factory) {
		t.Error("the running slot A was overwritten")
	}
}

func randomBootState(rng *rand.Rand) update.BootState {
	var st update.BootState
	st.Primary = update.Slot(rng.IntN(2))
	st.Booted = update.Slot(rng.IntN(2))
	st.SVN, st.RootVersion = rng.Uint32(), rng.Uint32()
	for i := range st.Slots {
		st.Slots[i] = update.SlotInfo{State: update.SlotState(rng.IntN(5)), Version: fmt.Sprintf("%d.%d.%d", rng.IntN(9), rng.IntN(20), rng.IntN(99)),
			SVN: rng.Uint32(), Size: rng.Int64()}
		for j := range st.Slots[i].SHA256 {
			st.Slots[i].SHA256[j] = byte(rng.IntN(256))
		}
	}
	st.Trial = update.NoSlot
	if rng.IntN(2) == 0 {
		st.Trial = st.Primary.Other()
		st.Slots[st.Trial].State = update.SlotPending
		st.TriesLeft = uint8(rng.IntN(4))
		st.Booted = st.Primary
	}
	if rng.IntN(3) == 0 {
		st.Fallback, st.FallbackVersion = update.FallbackTries, "0.9.0"
	}
	return st
}

// TestAttackPowerLossDuringGRUBEnvWrite: a power cut leaves the grubenv
// GRUB reads torn (any prefix of the new block over the old); the backup
// copy was written and synced first, so Load returns the new state, and a
// torn backup (cut during the first write) leaves the old state.
func TestAttackPowerLossDuringGRUBEnvWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grubenv")
	g, _ := update.NewGRUBBoot(path)
	g.Cmdline = ""
	old := update.InitialBootState(update.SlotInfo{Version: "1.0.0", SVN: 1})
	if err := g.Store(&old); err != nil {
		t.Fatal(err)
	}
	oldMain, _ := os.ReadFile(path)
	oldBak, _ := os.ReadFile(path + ".bak")
	next := old
	next.Slots[update.SlotB] = update.SlotInfo{State: update.SlotDirty, Version: "1.1.0", SVN: 2}
	if err := g.Store(&next); err != nil {
		t.Fatal(err)
	}
	newMain, _ := os.ReadFile(path)
	newBak, _ := os.ReadFile(path + ".bak")
	for cut := 0; cut <= update.GRUBEnvSize; cut += 7 {
		torn := append(append([]byte(nil), newMain[:cut]...), oldMain[cut:]...)
		os.WriteFile(path, torn, 0o644)
		os.WriteFile(path+".bak", newBak, 0o644)
		if got, err := g.Load(); err != nil || got != next {
			t.Fatalf("main torn at %d: %+v, %v; want the new state", cut, got, err)
		}
		tornBak := append(append([]byte(nil), newBak[:cut]...), oldBak[cut:]...)
		os.WriteFile(path, oldMain, 0o644)
		os.WriteFile(path+".bak", tornBak, 0o644)
		got, err := g.Load()
		if err != nil || (got != old && got != next) {
			t.Fatalf("backup torn at %d: %+v, %v; want old or new", cut, got, err)
		}
	}
}

// realDevice is an Installer on partition files with a GRUB or U-Boot
// environment, with bundles from a sim Env's keys for board b.
type realDevice struct {
	e     *updatetest.Env
	in    *update.Installer
	boot  *update.EnvBoot
	slots update.PartitionSlots
	cfg   update.Config
}

func newRealDevice(t *testing.T, kind string) *realDevice {
	t.Helper()
	e := updatetest.New(t, updatetest.Options{})
	dir := t.TempDir()
	d := &realDevice{e: e, slots: update.PartitionSlots{A: filepath.Join(dir, "otgw-a"), B: filepath.Join(dir, "otgw-b")}}
	for _, p := range []string{d.slots.A, d.slots.B} {
		if err := os.WriteFile(p, make([]byte, 256<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	board := "x86-generic"
	switch kind {
	case "grub":
		d.boot, err = update.NewGRUBBoot(filepath.Join(dir, "grubenv"))
	case "uboot":
		board = "nanopi-r4s"
		d.boot, err = update.NewUBootBoot(writeFWEnvConfig(t, dir, 2))
	}
	if err != nil {
		t.Fatal(err)
	}
	d.boot.Cmdline = "" // the host's /proc/cmdline is not this device's
	if err := update.Provision(d.slots, d.boot, e.Factory, "1.0.0", 1); err != nil {
		t.Fatal(err)
	}
	d.cfg = e.Config
	d.cfg.Board, d.cfg.Slots, d.cfg.Boot, d.cfg.StateDir = board, d.slots, d.boot, filepath.Join(dir, "data")
	d.reopen(t)
	return d
}

func (d *realDevice) reopen(t *testing.T) {
	t.Helper()
	in, err := update.NewInstaller(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.in = in
}

func (d *realDevice) install(t *testing.T, version string, svn uint32) {
	t.Helper()
	b := d.e.Bundle(updatetest.Spec{Version: version, SVN: svn, Board: d.cfg.Board})
	if _, err := d.in.Install(context.Background(), bytes.NewReader(b), "test"); err != nil {
		t.Fatalf("install %s: %v", version, err)
	}
	img := updatetest.Image(version, 64<<10)
	part, _ := os.ReadFile(d.slots.B)
	if st, _ := d.boot.Load(); st.Trial == update.SlotA {
		part, _ = os.ReadFile(d.slots.A)
	}
	if !bytes.Equal(part[:len(img)], img) {
		t.Fatalf("partition does not hold image %s", version)
	}
}

// TestGRUBLifecycleWithGrubEditenv: install to partition B, GRUB's
// grub.cfg (played by grub-editenv, doing what BOOT.md's script does)
// spends a try and boots B, the health check commits it; a second update
// is never committed, GRUB exhausts its tries and falls back.
func TestGRUBLifecycleWithGrubEditenv(t *testing.T) {
	d := newRealDevice(t, "grub")
	grubenv := filepath.Join(filepath.Dir(d.slots.A), "grubenv")
	d.install(t, "1.1.0", 2)
	got := listVars(tool(t, "grub-editenv", grubenv, "list"))
	if got["saved_entry"] != "slot-A" || got["boot_once"] != "slot-B" || got["boot_tries"] != "3" {
		t.Fatalf("after install grubenv: %v", got)
	}
	tool(t, "grub-editenv", grubenv, "set", "boot_tries=2") // grub.cfg at power-on
	d.reopen(t)
	if s, err := d.in.Startup(); err != nil || s != update.SlotB {
		t.Fatalf("startup: %v %v, want B", s, err)
	}
	if err := d.in.Commit(context.Background(), healthy); err != nil {
		t.Fatal(err)
	}
	got = listVars(tool(t, "grub-editenv", grubenv, "list"))
	if got["saved_entry"] != "slot-B" || got["boot_once"] != "" || got["otgw_svn"] != "2" {
		t.Fatalf("after commit grubenv: %v", got)
	}

	d.install(t, "1.2.0", 3) // to slot A
	for _, n := range []string{"2", "1", "0"} {
		tool(t, "grub-editenv", grubenv, "set", "boot_tries="+n)
	}
	tool(t, "grub-editenv", grubenv, "unset", "boot_once") // tries exhausted
	tool(t, "grub-editenv", grubenv, "set", "boot_failed=1")
	d.e.Events.Reset()
	d.reopen(t)
	if s, err := d.in.Startup(); err != nil || s != update.SlotB {
		t.Fatalf("startup after exhausted tries: %v %v, want B", s, err)
	}
	st, _ := d.boot.Load()
	if st.Slots[update.SlotA].State != update.SlotBad || st.SVN != 2 || st.Primary != update.SlotB {
		t.Errorf("after fallback: %+v", st)
	}
	if ev := d.e.Events.Last("rolled_back"); ev == nil || ev.Reason != "boot_attempts_exhausted" {
		t.Errorf("rolled_back event: %v", d.e.Events.Steps())
	}
}

// TestUBootLifecycleWithFwSetenv: the same on U-Boot, fw_setenv playing
// U-Boot's bootcount and altbootcmd.
func TestUBootLifecycleWithFwSetenv(t *testing.T) {
	d := newRealDevice(t, "uboot")
	cfg := filepath.Join(filepath.Dir(d.slots.A), "fw_env.config")
	d.install(t, "1.1.0", 2)
	tool(t, "fw_setenv", "-c", cfg, "bootcount", "1")
	d.reopen(t)
	if s, err := d.in.Startup(); err != nil || s != update.SlotB {
		t.Fatalf("startup: %v %v", s, err)
	}
	if err := d.in.Commit(context.Background(), healthy); err != nil {
		t.Fatal(err)
	}
	got := listVars(tool(t, "fw_printenv", "-c", cfg))
	if got["boot_slot"] != "B" || got["upgrade_available"] != "0" || got["bootcount"] != "0" || got["otgw_svn"] != "2" {
		t.Fatalf("after commit: %v", got)
	}
	d.install(t, "1.2.0", 3)
	tool(t, "fw_setenv", "-c", cfg, "bootcount", "4")
	tool(t, "fw_setenv", "-c", cfg, "boot_slot", "B") // altbootcmd
	tool(t, "fw_setenv", "-c", cfg, "upgrade_available", "0")
	d.e.Events.Reset()
	d.reopen(t)
	if s, err := d.in.Startup(); err != nil || s != update.SlotB {
		t.Fatalf("startup after altbootcmd: %v %v", s, err)
	}
	if ev := d.e.Events.Last("rolled_back"); ev == nil {
		t.Errorf("no rolled_back event: %v", d.e.Events.Steps())
	}
	keys := make([]string, 0)
	for k := range listVars(tool(t, "fw_printenv", "-c", cfg)) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("environment variables: %s", strings.Join(keys, " "))
}

// TestAttackPowerLossDuringUBootEnvWrite: a power cut tears the copy being
// written (the inactive one); its CRC fails, so the other copy, holding
// the previous state, stays active: the device boots the old or the new
// decision, never neither.
func TestAttackPowerLossDuringUBootEnvWrite(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFWEnvConfig(t, dir, 2)
	u, err := update.NewUBootBoot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u.Cmdline = ""
	old := update.InitialBootState(update.SlotInfo{Version: "1.0.0", SVN: 1})
	if err := u.Store(&old); err != nil {
		t.Fatal(err)
	}
	copies := []string{filepath.Join(dir, "uboot-env.0"), filepath.Join(dir, "uboot-env.1")}
	before := [2][]byte{}
	for i, c := range copies {
		before[i], _ = os.ReadFile(c)
	}
	next := old
	next.Slots[update.SlotB] = update.SlotInfo{State: update.SlotDirty, Version: "1.1.0", SVN: 2}
	if err := u.Store(&next); err != nil {
		t.Fatal(err)
	}
	written := -1
	after := [2][]byte{}
	for i, c := range copies {
		after[i], _ = os.ReadFile(c)
		if !bytes.Equal(after[i], before[i]) {
			written = i
		}
	}
	if written < 0 {
		t.Fatal("Store changed neither copy")
	}
	for cut := 0; cut < len(after[written]); cut += 61 {
		torn := append(append([]byte(nil), after[written][:cut]...), before[written][cut:]...)
		os.WriteFile(copies[written], torn, 0o644)
		got, err := u.Load()
		if err != nil || (got != old && got != next) {
			t.Fatalf("copy %d torn at %d: %+v, %v; want the old or new state", written, cut, got, err)
		}
	}
}

// TestEnvBootEmptyVariables: U-Boot deletes a variable whose value is
// empty when it imports an environment (boot.scr's env import, and
// U-Boot's own load at power-on), so after its first save the empty
// otgw_* variables (a slot's version before it was written, the fallback
// version) are gone. The boot state must still load then, and an
// environment written before empty variables were left out of otgw_crc
// must load too.
func TestEnvBootEmptyVariables(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFWEnvConfig(t, dir, 2)
	boot, err := update.NewUBootBoot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot.Cmdline = ""
	st := update.InitialBootState(update.SlotInfo{Version: "1.0.0", SVN: 1, Size: 10})
	st.Slots[update.SlotB] = update.SlotInfo{State: update.SlotPending, Version: "1.1.0", SVN: 2, Size: 20}
	st.Trial, st.TriesLeft = update.SlotB, 3
	if err := boot.Store(&st); err != nil {
		t.Fatal(err)
	}
	got := listVars(tool(t, "fw_printenv", "-c", cfg))
	if _, ok := got["otgw_fallback_version"]; ok {
		t.Errorf("empty otgw_fallback_version written to the U-Boot environment: %v", got)
	}
	// U-Boot (boot.scr) imports the environment, which drops every empty
	// variable, counts a boot and saves everything it holds.
	for k, v := range got {
		if v == "" {
			tool(t, "fw_setenv", "-c", cfg, k)
		}
	}
	tool(t, "fw_setenv", "-c", cfg, "bootcount", "1")
	ld, err := boot.Load()
	if err != nil {
		t.Fatalf("load after U-Boot saved: %v", err)
	}
	if ld.Booted != update.SlotB || ld.TriesLeft != 2 || ld.FallbackVersion != "" {
		t.Errorf("after bootcount=1: booted %v tries %d fallback version %q, want B 2 \"\"", ld.Booted, ld.TriesLeft, ld.FallbackVersion)
	}

	// A grubenv whose otgw_crc covers the empty variables (written by an
	// earlier release) still loads, and so does one with them removed.
	gpath := filepath.Join(dir, "grubenv")
	grub, _ := update.NewGRUBBoot(gpath)
	grub.Cmdline = ""
	if err := grub.Store(&st); err != nil {
		t.Fatal(err)
	}
	vars := listVars(tool(t, "grub-editenv", gpath, "list"))
	if vars["otgw_fallback_version"] != "" || vars["otgw_seq"] == "" {
		t.Fatalf("grubenv: %v", vars)
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lines strings.Builder
	for _, k := range keys {
		if strings.HasPrefix(k, "otgw_") && k != "otgw_crc" {
			fmt.Fprintf(&lines, "%s=%s\n", k, vars[k])
		}
	}
	vars["otgw_crc"] = fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(lines.String())))
	for _, f := range []string{gpath, gpath + ".bak"} {
		b, err := update.EncodeGRUBEnv(vars)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := grub.Load(); err != nil || got != st {
		t.Errorf("grubenv with the earlier otgw_crc form: %+v, %v; want %+v", got, err, st)
	}
	tool(t, "grub-editenv", gpath, "unset", "otgw_fallback_version")
	tool(t, "grub-editenv", gpath+".bak", "unset", "otgw_fallback_version")
	if err := grub.Store(&st); err != nil {
		t.Fatal(err)
	}
	tool(t, "grub-editenv", gpath, "unset", "otgw_fallback_version")
	tool(t, "grub-editenv", gpath+".bak", "unset", "otgw_fallback_version")
	if got, err := grub.Load(); err != nil || got != st {
		t.Errorf("grubenv without the empty variable: %+v, %v; want %+v", got, err, st)
	}
}
