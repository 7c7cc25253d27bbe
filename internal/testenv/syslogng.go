package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := strings.NewReplacer("@PORT@", fmt.Sprint(port), "@OUT@", out).Replace(syslogNGConf)
	cf := filepath.Join(dir, "syslog-ng.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ma := multiarch()
	var diag bytes.Buffer
	cmd := exec.Command(bin, "--module-path="+mods[0], "-f", cf, "-R", filepath.Join(dir, "persist"),
		"-c", filepath.Join(dir, "ctl"), "-p", filepath.Join(dir, "pid"), "--no-caps", "-F")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+strings.Join([]string{
		filepath.Join(root, "usr", "lib", "syslog-ng"),
		filepath.Join(root, "usr", "lib", ma),
		filepath.Join(root, "lib", ma),
	}, ":"))
	cmd.Stdout, cmd.Stderr = &diag, &diag
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("syslog-ng exited: %s", diag.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("syslog-ng not listening on %d within 10s: %s", port, diag.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
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
