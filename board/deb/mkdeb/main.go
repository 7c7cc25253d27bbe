// Command mkdeb builds otgw's Debian packages from prebuilt binaries:
// /usr/bin/otgw, the hardened systemd unit (board/deb/otgw.service),
// /etc/default/otgw, /etc/otgw with an example policy, the man page and
// bash completion. It writes the
// .deb format itself (deb(5): an ar archive of debian-binary,
// control.tar.gz and data.tar.gz), reproducibly: every file time is
// SOURCE_DATE_EPOCH (default: the binary's modification time), owner root.
//
//	go run ./board/deb/mkdeb -version 1.2.3 -out dist amd64=dist/otgw-linux-amd64 arm64=... armhf=...
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Arches are the Debian architectures a package is built for.
var Arches = []string{"amd64", "arm64", "armhf"}

// file is one file of the package's data.
type file struct {
	path     string // absolute, in the installed system
	mode     int64
	data     []byte
	conffile bool
}

// Package describes one .deb.
type Package struct {
	Version string // Debian version (DebianVersion of the build version)
	Arch    string
	Binary  []byte // the otgw executable for Arch
	Root    string // repository root: board/deb/ and examples/ are read from it
	Time    time.Time
}

// DebianVersion turns a build version (git describe: "v1.2.3-4-gabc",
// "9a1212a-dirty", "dev") into a valid native Debian version: it starts
// with a digit and holds only [A-Za-z0-9.+~].
func DebianVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0~" + v
	}
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '+' || c == '~') {
			b[i] = '+'
		}
	}
	return strings.TrimRight(string(b), "+~.")
}

func (p *Package) files() ([]file, error) {
	read := func(rel string) ([]byte, error) { return os.ReadFile(filepath.Join(p.Root, rel)) }
	unit, err := read("board/deb/otgw.service")
	if err != nil {
		return nil, err
	}
	def, err := read("board/deb/default")
	if err != nil {
		return nil, err
	}
	pol, err := read("examples/packaging-modbus.yaml")
	if err != nil {
		return nil, err
	}
	notice, err := read("NOTICE")
	if err != nil {
		return nil, err
	}
	man, err := read("board/deb/otgw.1")
	if err != nil {
		return nil, err
	}
	completion, err := read("board/deb/otgw.bash-completion")
	if err != nil {
		return nil, err
	}
	var manGz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&manGz, gzip.BestCompression) // no name, zero time: reproducible
	if _, err := zw.Write(man); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return []file{
		{path: "/usr/bin/otgw", mode: 0o755, data: p.Binary},
		{path: "/lib/systemd/system/otgw.service", mode: 0o644, data: unit},
		{path: "/etc/default/otgw", mode: 0o644, data: def, conffile: true},
		{path: "/etc/otgw/policy.example.yaml", mode: 0o644, data: pol, conffile: true},
		{path: "/usr/share/doc/otgw/NOTICE", mode: 0o644, data: notice},
		{path: "/usr/share/man/man1/otgw.1.gz", mode: 0o644, data: manGz.Bytes()},
		{path: "/usr/share/bash-completion/completions/otgw", mode: 0o644, data: completion},
	}, nil
}

// dirs lists every parent directory of the files, parents first.
func dirs(files []file) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "/"; d = filepath.Dir(d) {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	out = append(out, "/etc/otgw") // the config directory, even if emptied
	sort.Strings(out)
	return dedupe(out)
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// Build returns the .deb.
func (p *Package) Build() ([]byte, error) {
	if p.Version == "" || p.Version[0] < '0' || p.Version[0] > '9' {
		return nil, fmt.Errorf("mkdeb: version %q is not a Debian version (use DebianVersion)", p.Version)
	}
	files, err := p.files()
	if err != nil {
		return nil, err
	}
	var data bytes.Buffer
	tw, zw := tarGz(&data)
	for _, d := range append([]string{""}, dirs(files)...) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "." + d + "/", Mode: 0o755, ModTime: p.Time,
			Uname: "root", Gname: "root", Format: tar.FormatGNU}); err != nil {
			return nil, err
		}
	}
	size := int64(0)
	var sums, conffiles strings.Builder
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "." + f.path, Mode: f.mode, Size: int64(len(f.data)),
			ModTime: p.Time, Uname: "root", Gname: "root", Format: tar.FormatGNU}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
		size += (int64(len(f.data)) + 1023) / 1024
		sum := md5.Sum(f.data)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), strings.TrimPrefix(f.path, "/"))
		if f.conffile {
			fmt.Fprintln(&conffiles, f.path)
		}
	}
	if err := closeAll(tw, zw); err != nil {
		return nil, err
	}
	control := fmt.Sprintf(`Package: otgw
Version: %s
Architecture: %s
Maintainer: otgw authors <otgw@example.org>
Installed-Size: %d
Section: net
Priority: optional
Homepage: https://github.com/otgw/otgw
Description: OT/ICS segmentation gateway (Modbus/TCP, DNP3, OPC UA)
 otgw bridges two network ports transparently and enforces a YAML
 zone/conduit policy with deep inspection of Modbus/TCP, DNP3 and OPC UA,
 exporting security events to a SOC over syslog. The otgw.service unit
 runs it with CAP_NET_ADMIN and CAP_NET_RAW only, once
 /etc/otgw/policy.yaml exists.
`, p.Version, p.Arch, size+4)
	var ctl bytes.Buffer
	tw, zw = tarGz(&ctl)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, ModTime: p.Time, Uname: "root", Gname: "root", Format: tar.FormatGNU}); err != nil {
		return nil, err
	}
	for _, m := range []struct{ name, body string }{{"control", control}, {"conffiles", conffiles.String()}, {"md5sums", sums.String()}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + m.name, Mode: 0o644, Size: int64(len(m.body)),
			ModTime: p.Time, Uname: "root", Gname: "root", Format: tar.FormatGNU}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, m.body); err != nil {
			return nil, err
		}
	}
	if err := closeAll(tw, zw); err != nil {
		return nil, err
	}
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	for _, m := range []struct {
		name string
		body []byte
	}{{"debian-binary", []byte("2.0\n")}, {"control.tar.gz", ctl.Bytes()}, {"data.tar.gz", data.Bytes()}} {
		arMember(&deb, m.name, m.body, p.Time)
	}
	return deb.Bytes(), nil
}

func tarGz(w io.Writer) (*tar.Writer, *gzip.Writer) {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
	return tar.NewWriter(zw), zw
}

func closeAll(tw *tar.Writer, zw *gzip.Writer) error {
	return errors.Join(tw.Close(), zw.Close())
}

// arMember appends one member in the common ar format: a 60-byte header
// (name, mtime, uid, gid, octal mode, size, "`\n") and the data padded to
// an even length.
func arMember(w *bytes.Buffer, name string, body []byte, t time.Time) {
	fmt.Fprintf(w, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, t.Unix(), 0, 0, "100644", len(body))
	w.Write(body)
	if len(body)%2 == 1 {
		w.WriteByte('\n')
	}
}

// FileName is the conventional name of the package file.
func (p *Package) FileName() string {
	return fmt.Sprintf("otgw_%s_%s.deb", p.Version, p.Arch)
}

func main() {
	version := flag.String("version", "dev", "build version (git describe); made a Debian version")
	out := flag.String("out", "dist", "output directory")
	root := flag.String("root", ".", "repository root")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mkdeb [-version V] [-out DIR] [-root DIR] ARCH=BINARY...  (ARCH: amd64, arm64, armhf)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*version, *out, *root, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run(version, out, root string, args []string) error {
	for _, a := range args {
		arch, bin, ok := strings.Cut(a, "=")
		if !ok || !contains(Arches, arch) {
			return fmt.Errorf("%q: want ARCH=BINARY with ARCH one of %s", a, strings.Join(Arches, ", "))
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		st, err := os.Stat(bin)
		if err != nil {
			return err
		}
		t := st.ModTime().UTC().Truncate(time.Second)
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
			}
			t = time.Unix(n, 0).UTC()
		}
		p := &Package{Version: DebianVersion(version), Arch: arch, Binary: b, Root: root, Time: t}
		deb, err := p.Build()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		path := filepath.Join(out, p.FileName())
		if err := os.WriteFile(path, deb, 0o644); err != nil {
			return err
		}
		fmt.Println(path)
	}
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
