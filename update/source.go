package update

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// BundleExt is the file name extension of bundles in a directory source.
const BundleExt = ".otgw"

// MaxDirEntries caps the directory entries looked at in a directory source.
const MaxDirEntries = 1024

// InstallFrom installs from src: an http:// or https:// URL, a directory
// (a USB stick: the newest valid bundle for this board and architecture
// among its *.otgw files), or a bundle file. Transfers are bounded by
// Config.Timeout and Config.IdleTimeout, and by the size caps.
func (in *Installer) InstallFrom(ctx context.Context, src string) (*Manifest, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cfg.Trust == nil {
		return nil, errNoTrust
	}
	ctx, g := in.guard(ctx)
	defer g.stop()
	rc, name, err := in.open(ctx, src)
	if err != nil {
		in.emit(SevNotice, "started", "", "", "firmware update started from "+src, map[string]any{"source": src})
		in.reject(nil, src, err)
		return nil, err
	}
	defer rc.Close()
	return in.installLocked(ctx, g.reader(ctx, rc), name)
}

// Inspect verifies a bundle file, URL or directory without writing
// anything: the header and the whole payload hash, as Install would. It
// returns the manifest of the bundle it chose.
func (in *Installer) Inspect(ctx context.Context, src string) (*Manifest, string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cfg.Trust == nil {
		return nil, "", errNoTrust
	}
	st, err := in.cfg.Boot.Load()
	if err != nil {
		return nil, "", err
	}
	ctx, g := in.guard(ctx)
	defer g.stop()
	rc, name, err := in.open(ctx, src)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	m, err := VerifyBundle(g.reader(ctx, rc), in.cfg.Trust, in.policy(&st))
	return m, name, err
}

// VerifyBundle runs the whole Verifier over r, discarding the payload.
func VerifyBundle(r io.Reader, t *Trust, p Policy) (*Manifest, error) {
	v := NewVerifier(t, p)
	m, err := v.ReadHeader(r)
	if err != nil {
		return m, err
	}
	return m, v.Payload(r, io.Discard)
}

func (in *Installer) open(ctx context.Context, src string) (io.ReadCloser, string, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		return in.openHTTP(ctx, src)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return nil, src, fmt.Errorf("%w: %v", ErrNoBundle, err)
	}
	if fi.IsDir() {
		st, err := in.cfg.Boot.Load()
		if err != nil {
			return nil, src, err
		}
		path, _, err := SelectBundle(src, in.cfg.Trust, in.policy(&st))
		if err != nil {
			return nil, src, err
		}
		src = path
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, src, fmt.Errorf("%w: %v", ErrNoBundle, err)
	}
	return f, src, nil
}

// SelectBundle picks the newest bundle in dir whose header verifies under
// t and p: highest SVN, then version, then creation time, then name. Only
// headers are read. Every file is re-verified in full when installed, so a
// file swapped after selection is caught by its hash. When none verifies,
// the error matches ErrNoBundle and names each file's reason.
func SelectBundle(dir string, t *Trust, p Policy) (string, *Manifest, error) {
	d, err := os.Open(dir)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrNoBundle, err)
	}
	ents, err := d.ReadDir(MaxDirEntries)
	d.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return "", nil, fmt.Errorf("%w: %v", ErrNoBundle, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	var (
		best     string
		bestM    *Manifest
		problems []string
	)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), BundleExt) || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		m, err := readHeaderFile(path, t, p)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", e.Name(), Reason(err)))
			continue
		}
		if bestM == nil || newer(m, bestM) {
			best, bestM = path, m
		}
	}
	if bestM == nil {
		if len(problems) == 0 {
			problems = append(problems, "no *"+BundleExt+" files")
		}
		return "", nil, fmt.Errorf("%w in %s (%s)", ErrNoBundle, dir, strings.Join(problems, "; "))
	}
	return best, bestM, nil
}

func readHeaderFile(path string, t *Trust, p Policy) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return NewVerifier(t, p).ReadHeader(f)
}

// newer orders candidate bundles (strictly newer a than b).
func newer(a, b *Manifest) bool {
	if a.SVN != b.SVN {
		return a.SVN > b.SVN
	}
	if c := CompareVersions(a.Version, b.Version); c != 0 {
		return c > 0
	}
	return a.Created.After(b.Created)
}

func (in *Installer) openHTTP(ctx context.Context, url string) (io.ReadCloser, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, url, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	req.Header.Set("User-Agent", "otgw-update/1")
	resp, err := in.cfg.HTTPClient.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil && errors.Is(c, ErrTimeout) {
			return nil, url, c
		}
		return nil, url, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, url, fmt.Errorf("%w: HTTP status %s", ErrDownload, resp.Status)
	}
	limit := int64(bundlePrefixLen) + MaxHeaderBytes + in.cfg.MaxPayloadBytes
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, url, fmt.Errorf("%w: Content-Length %d exceeds %d", ErrTooLarge, resp.ContentLength, limit)
	}
	return resp.Body, url, nil
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  30 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
			DisableCompression:     true, // the bundle is hashed as served
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect from https to " + req.URL.Scheme)
			}
			return nil
		},
	}
}

// guard bounds a transfer: the returned context ends with an ErrTimeout
// cause after Config.Timeout in total or Config.IdleTimeout without a byte
// read through g.reader.
type guard struct {
	cancel context.CancelCauseFunc
	stopT  func()
	idle   time.Duration
	mu     sync.Mutex // guards timer
	timer  *time.Timer
}

func (in *Installer) guard(parent context.Context) (context.Context, *guard) {
	total := in.cfg.Timeout
	tctx, tcancel := context.WithTimeoutCause(parent, total, fmt.Errorf("%w: transfer exceeded %v", ErrTimeout, total))
	ctx, cancel := context.WithCancelCause(tctx)
	g := &guard{cancel: cancel, idle: in.cfg.IdleTimeout}
	g.timer = time.AfterFunc(g.idle, func() {
		cancel(fmt.Errorf("%w: no data for %v", ErrTimeout, g.idle))
	})
	g.stopT = func() { tcancel() }
	return ctx, g
}

func (g *guard) progress() {
	g.mu.Lock()
	g.timer.Reset(g.idle)
	g.mu.Unlock()
}

func (g *guard) stop() {
	g.mu.Lock()
	g.timer.Stop()
	g.mu.Unlock()
	g.cancel(context.Canceled)
	g.stopT()
}

func (g *guard) reader(ctx context.Context, r io.Reader) io.Reader {
	return &guardedReader{ctx: ctx, r: r, g: g}
}

type guardedReader struct {
	ctx context.Context
	r   io.Reader
	g   *guard
}

func (gr *guardedReader) Read(p []byte) (int, error) {
	if gr.ctx.Err() != nil {
		return 0, gr.cause()
	}
	n, err := gr.r.Read(p)
	if n > 0 {
		gr.g.progress()
	}
	if err != nil && err != io.EOF && gr.ctx.Err() != nil {
		return n, gr.cause()
	}
	return n, err
}

func (gr *guardedReader) cause() error {
	c := context.Cause(gr.ctx)
	if c == nil {
		c = gr.ctx.Err()
	}
	return c
}
