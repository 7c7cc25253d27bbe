package update

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The boot state in a bootloader environment (BOOT.md "Mapping to U-Boot"
// and "Mapping to GRUB"): every BootState field is an otgw_* variable,
// protected by otgw_crc (CRC-32 of the sorted "name=value\n" lines of the
// other otgw_* variables with a value) and ordered by otgw_seq. An empty
// variable and a missing one are the same: U-Boot deletes a variable set
// to "" (setenv, env import, fw_setenv), so the empty otgw_* variables
// are not written to a U-Boot environment and after its first saveenv
// they are gone from one written before. Beside them, Store sets
// the bootloader's own variables so that the bootloader, which knows
// nothing of otgw_*, boots the right slot and counts tries; Load reads
// them back, because the bootloader changes them between our writes.

// bootStateVars returns the otgw_* variables for st with sequence seq.
func bootStateVars(st *BootState, seq uint64) map[string]string {
	v := map[string]string{
		"otgw_seq":              strconv.FormatUint(seq, 10),
		"otgw_primary":          st.Primary.String(),
		"otgw_trial":            st.Trial.String(),
		"otgw_tries":            strconv.Itoa(int(st.TriesLeft)),
		"otgw_booted":           st.Booted.String(),
		"otgw_svn":              strconv.FormatUint(uint64(st.SVN), 10),
		"otgw_root":             strconv.FormatUint(uint64(st.RootVersion), 10),
		"otgw_fallback":         st.Fallback.String(),
		"otgw_fallback_version": st.FallbackVersion,
	}
	for _, s := range []Slot{SlotA, SlotB} {
		i := st.Slots[s]
		p := "otgw_" + strings.ToLower(s.String()) + "_"
		v[p+"state"] = i.State.String()
		v[p+"version"] = i.Version
		v[p+"svn"] = strconv.FormatUint(uint64(i.SVN), 10)
		v[p+"size"] = strconv.FormatInt(i.Size, 10)
		v[p+"sha256"] = hex.EncodeToString(i.SHA256[:])
	}
	v["otgw_crc"] = otgwVarsCRC(v)
	return v
}

func otgwVarsCRC(v map[string]string) string {
	return otgwVarsCRCForm(v, false)
}

// otgwVarsCRCForm computes otgw_crc; withEmpty is the form before empty
// variables were left out (environments written by earlier releases,
// still accepted by decodeBootStateVars).
func otgwVarsCRCForm(v map[string]string, withEmpty bool) string {
	h := crc32.NewIEEE()
	for _, k := range sortedKeys(v) {
		if strings.HasPrefix(k, "otgw_") && k != "otgw_crc" && (withEmpty || v[k] != "") {
			fmt.Fprintf(h, "%s=%s\n", k, v[k])
		}
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

func parseSlot(s string, allowNone bool) (Slot, bool) {
	switch s {
	case "A":
		return SlotA, true
	case "B":
		return SlotB, true
	case "none":
		return NoSlot, allowNone
	}
	return NoSlot, false
}

func parseSlotState(s string) (SlotState, bool) {
	for st := SlotEmpty; st <= SlotBad; st++ {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

func parseFallback(s string) (FallbackReason, bool) {
	for r := FallbackNone; r <= FallbackOperator; r++ {
		if r.String() == s {
			return r, true
		}
	}
	return 0, false
}

// decodeBootStateVars reads the otgw_* variables; a missing, malformed or
// CRC-mismatched set is ErrNoBootState.
func decodeBootStateVars(v map[string]string) (BootState, uint64, error) {
	var st BootState
	bad := func(what string) (BootState, uint64, error) {
		return BootState{}, 0, fmt.Errorf("%w: environment: %s", ErrNoBootState, what)
	}
	if v["otgw_crc"] == "" {
		return bad("no otgw_* variables")
	}
	if otgwVarsCRC(v) != v["otgw_crc"] && otgwVarsCRCForm(v, true) != v["otgw_crc"] {
		return bad("otgw_crc mismatch")
	}
	seq, err := strconv.ParseUint(v["otgw_seq"], 10, 64)
	if err != nil {
		return bad("otgw_seq")
	}
	u32 := func(k string) (uint32, bool) {
		n, err := strconv.ParseUint(v[k], 10, 32)
		return uint32(n), err == nil
	}
	var ok [8]bool
	st.Primary, ok[0] = parseSlot(v["otgw_primary"], false)
	st.Trial, ok[1] = parseSlot(v["otgw_trial"], true)
	st.Booted, ok[2] = parseSlot(v["otgw_booted"], false)
	tries, err := strconv.ParseUint(v["otgw_tries"], 10, 8)
	ok[3] = err == nil
	st.TriesLeft = uint8(tries)
	st.SVN, ok[4] = u32("otgw_svn")
	st.RootVersion, ok[5] = u32("otgw_root")
	st.Fallback, ok[6] = parseFallback(v["otgw_fallback"])
	st.FallbackVersion = v["otgw_fallback_version"]
	ok[7] = len(st.FallbackVersion) <= MaxVersionLen
	for i, o := range ok {
		if !o {
			return bad(fmt.Sprintf("field %d", i))
		}
	}
	for _, s := range []Slot{SlotA, SlotB} {
		p := "otgw_" + strings.ToLower(s.String()) + "_"
		i := &st.Slots[s]
		var ok1, ok2 bool
		i.State, ok1 = parseSlotState(v[p+"state"])
		i.Version = v[p+"version"]
		i.SVN, ok2 = u32(p + "svn")
		size, err := strconv.ParseInt(v[p+"size"], 10, 64)
		sum, ok3 := decodeHex32(v[p+"sha256"])
		if !ok1 || !ok2 || err != nil || !ok3 || len(i.Version) > MaxVersionLen {
			return bad("slot " + s.String())
		}
		i.Size, i.SHA256 = size, sum
	}
	return st, seq, nil
}

// EnvBoot is a Bootloader that keeps the boot state in a GRUB or U-Boot
// environment (NewGRUBBoot, NewUBootBoot). It is safe for concurrent use.
type EnvBoot struct {
	// Cmdline is the kernel command line file (default /proc/cmdline).
	// Its otgw.slot=A|B, set by grub.cfg's menu entry or U-Boot's
	// bootargs, is the slot that really runs and overrides the stored
	// Booted: after an operator rollback or a fallback nothing else tells
	// user space which slot the bootloader chose, and installing to
	// "the other slot" must never hit the running one.
	Cmdline string

	kind string // "grub" or "uboot"
	mu   sync.Mutex
	// grub: copies[0] is the grubenv GRUB loads, copies[1] its backup.
	grub [2]*grubEnvFile
	// uboot: the environment of fw_env.config.
	uboot *ubootEnv
}

var _ Bootloader = (*EnvBoot)(nil)

// NewGRUBBoot keeps the boot state in the grubenv at path and in a backup
// copy at path+".bak" (GRUB loads the first and falls back to the second
// when it is unreadable; see BOOT.md). Both files are created as empty
// environment blocks if missing.
func NewGRUBBoot(path string) (*EnvBoot, error) {
	b := &EnvBoot{Cmdline: "/proc/cmdline", kind: "grub", grub: [2]*grubEnvFile{{path: path}, {path: path + ".bak"}}}
	return b, nil
}

// NewUBootBoot keeps the boot state in the U-Boot environment described by
// the fw_env.config at configPath, the file fw_printenv/fw_setenv read.
func NewUBootBoot(configPath string) (*EnvBoot, error) {
	locs, err := ParseFWEnvConfig(configPath)
	if err != nil {
		return nil, err
	}
	return &EnvBoot{Cmdline: "/proc/cmdline", kind: "uboot", uboot: &ubootEnv{locs: locs}}, nil
}

// Load implements Bootloader.
func (b *EnvBoot) Load() (BootState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, _, _, err := b.load()
	return st, err
}

func (b *EnvBoot) load() (BootState, uint64, map[string]string, error) {
	if b.kind == "uboot" {
		vars, _, err := b.uboot.read()
		if err != nil {
			return BootState{}, 0, nil, fmt.Errorf("%w: %v", ErrNoBootState, err)
		}
		st, seq, err := decodeBootStateVars(vars)
		if err != nil {
			return st, 0, vars, err
		}
		ubootOverlay(&st, vars)
		b.cmdlineOverlay(&st)
		return st, seq, vars, nil
	}
	var best BootState
	var bestSeq uint64
	var bestVars map[string]string
	found := false
	for _, c := range b.grub {
		vars, err := c.read()
		if err != nil {
			continue
		}
		st, seq, err := decodeBootStateVars(vars)
		if err != nil {
			continue
		}
		if !found || seq > bestSeq { // equal: keep the first (the copy GRUB writes)
			best, bestSeq, bestVars, found = st, seq, vars, true
		}
	}
	if !found {
		return BootState{}, 0, nil, fmt.Errorf("%w in %s or %s", ErrNoBootState, b.grub[0].path, b.grub[1].path)
	}
	grubOverlay(&best, bestVars)
	b.cmdlineOverlay(&best)
	return best, bestSeq, bestVars, nil
}

// cmdlineOverlay sets Booted from otgw.slot= on the kernel command line,
// when there is one.
func (b *EnvBoot) cmdlineOverlay(st *BootState) {
	if b.Cmdline == "" {
		return
	}
	raw, err := readCapped(b.Cmdline, 8<<10)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(raw)) {
		if v, ok := strings.CutPrefix(f, "otgw.slot="); ok {
			if s, ok := parseSlot(v, false); ok {
				st.Booted = s
			}
		}
	}
}

// Store implements Bootloader. GRUB: the backup copy is written and synced
// first, then the grubenv GRUB reads, both with sequence newest+1, so a
// power cut leaves one complete copy. U-Boot: the inactive redundant copy
// is written with flags+1, as fw_setenv does.
func (b *EnvBoot) Store(st *BootState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, seq, _, err := b.load()
	if err != nil && !errors.Is(err, ErrNoBootState) {
		return err
	}
	if b.kind == "uboot" {
		vars, _, rerr := b.uboot.read()
		if rerr != nil {
			vars = map[string]string{}
		}
		setOtgwVars(vars, bootStateVars(st, seq+1))
		for k, v := range vars {
			if strings.HasPrefix(k, "otgw_") && v == "" {
				delete(vars, k) // U-Boot would (see otgwVarsCRC)
			}
		}
		ubootNatives(st, vars)
		return b.uboot.write(vars)
	}
	for i := 1; i >= 0; i-- {
		vars, rerr := b.grub[i].read()
		if rerr != nil {
			vars = map[string]string{}
		}
		setOtgwVars(vars, bootStateVars(st, seq+1))
		grubNatives(st, vars)
		if err := b.grub[i].write(vars); err != nil {
			return err
		}
	}
	return nil
}

func setOtgwVars(vars, otgw map[string]string) {
	for k := range vars {
		if strings.HasPrefix(k, "otgw_") {
			delete(vars, k)
		}
	}
	for k, v := range otgw {
		vars[k] = v
	}
}

func trialRunning(st *BootState) bool {
	return st.Trial.valid() && st.Slots[st.Trial].State == SlotPending
}

// grubEntry names a slot's menu entry in grub.cfg.
func grubEntry(s Slot) string { return "slot-" + s.String() }

// grubNatives sets the variables grub.cfg reads (BOOT.md): saved_entry is
// the committed slot; boot_once and boot_tries name the trial slot and
// its remaining tries, decremented by grub.cfg with save_env at each boot.
func grubNatives(st *BootState, vars map[string]string) {
	vars["saved_entry"] = grubEntry(st.Primary)
	delete(vars, "boot_failed")
	if trialRunning(st) {
		vars["boot_once"] = grubEntry(st.Trial)
		vars["boot_tries"] = strconv.Itoa(int(st.TriesLeft))
		return
	}
	delete(vars, "boot_once")
	delete(vars, "boot_tries")
}

// grubOverlay applies what GRUB did since the last Store: a try spent
// (boot_tries lower than stored: the trial slot booted), or the trial
// abandoned (boot_once cleared with tries exhausted: the primary booted).
func grubOverlay(st *BootState, vars map[string]string) {
	if !trialRunning(st) {
		return
	}
	if vars["boot_once"] == grubEntry(st.Trial) {
		n, err := strconv.ParseUint(vars["boot_tries"], 10, 8)
		if err == nil && uint8(n) < st.TriesLeft {
			st.TriesLeft, st.Booted = uint8(n), st.Trial
		}
		return
	}
	abandon(st) // grub.cfg cleared boot_once: tries exhausted
}

// abandon records the bootloader's fallback from an exhausted trial.
func abandon(st *BootState) {
	st.Slots[st.Trial].State = SlotBad
	st.Fallback, st.FallbackVersion = FallbackTries, st.Slots[st.Trial].Version
	st.Trial, st.TriesLeft, st.Booted = NoSlot, 0, st.Primary
}

// ubootNatives sets the variables U-Boot's bootcount logic reads (BOOT.md):
// boot_slot is the slot bootcmd loads; with a trial, upgrade_available=1,
// bootlimit=tries and bootcount=0 (U-Boot increments bootcount at every
// boot and runs altbootcmd once it exceeds bootlimit); altbootcmd switches
// back to the committed slot. slot_X_ok says whether bootcmd may boot X.
func ubootNatives(st *BootState, vars map[string]string) {
	vars["bootcount"] = "0"
	if trialRunning(st) {
		vars["boot_slot"] = st.Trial.String()
		vars["upgrade_available"] = "1"
		vars["bootlimit"] = strconv.Itoa(int(st.TriesLeft))
	} else {
		vars["boot_slot"] = st.Primary.String()
		vars["upgrade_available"] = "0"
		delete(vars, "bootlimit")
	}
	vars["altbootcmd"] = fmt.Sprintf("setenv boot_slot %s; setenv upgrade_available 0; setenv bootcount 0; setenv slot_%s_ok 0; saveenv; run bootcmd",
		st.Primary, strings.ToLower(st.Primary.Other().String()))
	for _, s := range []Slot{SlotA, SlotB} {
		ok := "0"
		if st.Bootable(s) || (s == st.Trial && trialRunning(st)) {
			ok = "1"
		}
		vars["slot_"+strings.ToLower(s.String())+"_ok"] = ok
	}
}

// ubootOverlay applies what U-Boot did since the last Store: bootcount
// boots spent (the trial slot booted), or altbootcmd ran
// (upgrade_available cleared: the trial was abandoned).
func ubootOverlay(st *BootState, vars map[string]string) {
	if !trialRunning(st) {
		return
	}
	if vars["upgrade_available"] != "1" {
		abandon(st) // altbootcmd ran: tries exhausted
		return
	}
	n, err := strconv.ParseUint(vars["bootcount"], 10, 32)
	if err != nil || n == 0 {
		return
	}
	st.Booted = st.Trial
	if n >= uint64(st.TriesLeft) {
		st.TriesLeft = 0
	} else {
		st.TriesLeft -= uint8(n)
	}
}

// grubEnvFile is one grubenv file.
type grubEnvFile struct{ path string }

func (g *grubEnvFile) read() (map[string]string, error) {
	b, err := readCapped(g.path, GRUBEnvSize+1)
	if err != nil {
		return nil, err
	}
	return DecodeGRUBEnv(b)
}

// write rewrites the block in place (same size, as GRUB's save_env does),
// creating it if missing, and syncs it.
func (g *grubEnvFile) write(vars map[string]string) error {
	b, err := EncodeGRUBEnv(vars)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return fmt.Errorf("update: write %s: %w", g.path, err)
	}
	if err := f.Truncate(GRUBEnvSize); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("update: sync %s: %w", g.path, err)
	}
	return f.Close()
}

// ubootEnv is a single or redundant U-Boot environment.
type ubootEnv struct{ locs []UBootEnvLocation }

func (u *ubootEnv) redundant() bool { return len(u.locs) == 2 }

// read returns the active copy's variables and its index.
func (u *ubootEnv) read() (map[string]string, int, error) {
	var vars [2]map[string]string
	var flags [2]byte
	var errs [2]error
	for i, l := range u.locs {
		b, err := readAt(l.Device, l.Offset, l.Size)
		if err != nil {
			errs[i] = err
			continue
		}
		vars[i], flags[i], errs[i] = DecodeUBootEnv(b, u.redundant())
	}
	switch {
	case !u.redundant() && errs[0] == nil:
		return vars[0], 0, nil
	case !u.redundant():
		return nil, -1, errs[0]
	case errs[0] == nil && errs[1] == nil:
		if ubootNewer(flags[1], flags[0]) {
			return vars[1], 1, nil
		}
		return vars[0], 0, nil
	case errs[0] == nil:
		return vars[0], 0, nil
	case errs[1] == nil:
		return vars[1], 1, nil
	}
	return nil, -1, errors.Join(errs[0], errs[1])
}

func (u *ubootEnv) write(vars map[string]string) error {
	if !u.redundant() {
		b, err := EncodeUBootEnv(vars, u.locs[0].Size, false, 0)
		if err != nil {
			return err
		}
		return writeAt(u.locs[0].Device, u.locs[0].Offset, b)
	}
	target, flags := 0, byte(1)
	if _, active, err := u.read(); err == nil {
		l := u.locs[active]
		raw, rerr := readAt(l.Device, l.Offset, l.Size)
		if rerr != nil {
			return rerr
		}
		target, flags = 1-active, raw[4]+1
	}
	l := u.locs[target]
	b, err := EncodeUBootEnv(vars, l.Size, true, flags)
	if err != nil {
		return err
	}
	return writeAt(l.Device, l.Offset, b)
}
