package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// SyslogNGRoot is where .ci/unpack-syslog-ng unpacks Debian's
// syslog-ng-core (override with OTGW_SYSLOG_NG_ROOT). The package
// Conflicts with rsyslog, which the tests also need, so it is unpacked
// beside it rather than installed; the libraries it needs are real
// installs named in .ci/peers.
const SyslogNGRoot = "/opt/otgw-peers/syslog-ng"

// syslogNGConf is a private syslog-ng on loopback: its syslog() source
// (RFC 5424 with octet counting over TCP), every message written as the
// parsed MSGID, the structured data as JSON (format-json of the .SDATA
// scope: {"_SDATA":{"SD-ID":{"param":"value"}}}) and MESSAGE, tab
// separated, one line each.
const syslogNGConf = `@version: current
options { keep-hostname(yes); create-dirs(no); stats-freq(0); };
source s_soc { syslog(ip("127.0.0.1") port(@PORT@) transport("tcp")); };
destination d_out { file("@OUT@" template("MSGID=${MSGID}\tSD=$(format-json --scope sdata)\tMSG=${MESSAGE}\n")); };
log { source(s_soc); destination(d_out); };
`

// SyslogNG runs the unpacked syslog-ng (see SyslogNGRoot) in the foreground
// with a private config in t.TempDir(), listening on a free loopback TCP
// port, and waits until it accepts connections. It returns the port and a
// reader of its output file: one line per message, "MSGID=...\tSD=<JSON of
// the SD-IDs>\tMSG=...". It is stopped (SIGTERM to the PID it started, then
// SIGKILL) when t ends. Without the unpacked tree, t skips naming
// .ci/unpack-syslog-ng (or fails under CI).
func SyslogNG(t testing.TB) (port int, output func() string) {
	t.Helper()
	Integration(t)
	root := os.Getenv("OTGW_SYSLOG_NG_ROOT")
	if root == "" {
		root = SyslogNGRoot
	}
	bin := filepath.Join(root, "usr", "sbin", "syslog-ng")
	mods, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "syslog-ng", "[0-9]*"))
	if _, err := os.Stat(bin); err != nil || len(mods) == 0 {
		missing(t, "needs syslog-ng unpacked at "+root+" (set OTGW_SYSLOG_NG_ROOT): run .ci/unpack-syslog-ng "+
			"(Debian's syslog-ng-core Conflicts with rsyslog, so it is unpacked, not installed)")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "received.log")
	port = FreeTCPPort(t)
	conf := strings.NewReplacer("@PORT@", fmt.Sprint(port), "@OUT@", out).Replace(syslogNGConf)
	cf := filepath.Join(dir, "syslog-ng.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ma := multiarch()
	cmd := exec.Command(bin, "--module-path="+mods[0], "-f", cf, "-R", filepath.Join(dir, "persist"),
		"-c", filepath.Join(dir, "ctl"), "-p", filepath.Join(dir, "pid"), "--no-caps", "-F")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+strings.Join([]string{
		filepath.Join(root, "usr", "lib", "syslog-ng"),
		filepath.Join(root, "usr", "lib", ma),
		filepath.Join(root, "lib", ma),
	}, ":"))
	StartListening(t, "syslog-ng", cmd, port)
	return port, func() string {
		b, _ := os.ReadFile(out)
		return string(b)
	}
}

// multiarch is Debian's multiarch triplet of the running machine, where
// the unpacked package keeps its private libraries.
func multiarch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	case "386":
		return "i386-linux-gnu"
	case "riscv64":
		return "riscv64-linux-gnu"
	}
	return runtime.GOARCH + "-linux-gnu"
}
