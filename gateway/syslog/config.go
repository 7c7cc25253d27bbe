package syslog

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

// Defaults.
const (
	DefaultSpoolBytes   = 64 << 20
	DefaultSyncInterval = 200 * time.Millisecond
	DefaultCloseTimeout = 5 * time.Second
	DefaultConfirmWait  = 500 * time.Millisecond
	DefaultBackoffMin   = 250 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultMaxBytesTCP  = 8192 // RFC 5425 section 4.3.1: receivers should handle 8192
	DefaultMaxBytesUDP  = 2048 // RFC 5426 section 3.2: should accept 2048 over IPv4
	DefaultWriteTimeout = 10 * time.Second
	DefaultDialTimeout  = 10 * time.Second
	defaultBatchRecords = 512
	defaultBatchBytes   = 256 << 10
	maxURLParamDuration = 24 * time.Hour
)

// Destination is one SOC receiver. Build it with ParseURL.
type Destination struct {
	// Name identifies the destination's cursor in the spool (letters,
	// digits, '.', '-', '_'); default derived from the URL.
	Name string
	// Network is "udp" (RFC 5426), "tcp" (RFC 6587 octet counting) or "tls"
	// (RFC 5425).
	Network string
	// Addr is host:port.
	Addr string
	// Format of the messages; EnterpriseID, Facility, AppName, Hostname and
	// MaxBytes configure it (see Formatter). Empty Hostname/AppName take
	// the Config's.
	Format       Format
	EnterpriseID uint32
	Facility     int
	AppName      string
	Hostname     string
	MaxBytes     int

	// TLS: CAFile verifies the server (system roots when empty); CertFile
	// and KeyFile are the optional client certificate; ServerName overrides
	// the name checked in the server certificate (default: host of Addr).
	// TLS 1.2 is the floor.
	CAFile, CertFile, KeyFile, ServerName string

	// ConfirmWait is how long a new TCP/TLS connection must stay quiet (no
	// alert, no close from the receiver) before anything sent on it counts
	// as delivered; see the package documentation.
	ConfirmWait time.Duration
	// BackoffMin/BackoffMax bound the jittered exponential reconnect delay.
	BackoffMin, BackoffMax time.Duration
	// WriteTimeout bounds one batch write plus its confirmation.
	WriteTimeout time.Duration
}

// Config configures an Exporter. ParseURL returns one with a single
// destination; append more Destinations for several SOCs.
type Config struct {
	Destinations []Destination
	// SpoolBytes caps the spool on disk (default DefaultSpoolBytes).
	SpoolBytes int64
	// SyncInterval is the fsync batch period of the spool (default
	// DefaultSyncInterval): a power cut loses at most this much.
	SyncInterval time.Duration
	// CloseTimeout bounds how long Close waits for the destinations to
	// drain the spool (default DefaultCloseTimeout).
	CloseTimeout time.Duration
	// SpoolFullWait, when positive, makes Emit wait for room in a full
	// spool instead of dropping the lowest-severity records, as long as
	// the destinations keep making room: Emit gives up (and the spool
	// drops as usual, counted in Stats.Dropped) once the spool has been
	// full and no record left it for SpoolFullWait. Offline tools (otgw
	// replay) set it so that a slow or briefly absent receiver slows the
	// replay down instead of losing events. Zero, the live default, never
	// waits: the gateway's event pipeline must not stall on the SOC. With
	// SpoolFullWait set Notify too: the exporter's own events spooled
	// without it would displace lower-severity records of a full spool.
	SpoolFullWait time.Duration
	// Hostname, AppName, SWVersion fill the message headers (defaults:
	// os.Hostname(), "otgw", "dev").
	Hostname, AppName, SWVersion string
	// OriginIPs are the ip parameters of the RFC 5424 origin element
	// (default: this host's global unicast addresses, at most 4; an empty
	// non-nil slice omits them).
	OriginIPs []string
	// Notify receives the exporter's own events (dropped N, destination
	// down/up, TLS failures), normally the events.Pipeline so they get a
	// sequence number and reach every exporter. Nil: the exporter spools
	// them itself, without a sequence number.
	Notify events.Sink
}

// ParseURL parses one destination URL:
//
//	tls://host:6514?ca=/etc/soc/ca.pem&cert=gw.pem&key=gw.key&format=rfc5424&pen=NNNN
//	tcp://host:514?format=cef
//	udp://host:514?format=leef
//
// Parameters: format (rfc5424|cef|leef|json), pen (IANA Private Enterprise
// Number: adds the otgw@PEN SD element to rfc5424), facility (0..23), app, hostname, name,
// maxbytes, ca, cert, key, servername (tls only), confirm, backoffmin,
// backoffmax, writetimeout (Go durations). Unknown parameters are errors,
// so a typo never silently weakens TLS.
func ParseURL(raw string) (Config, error) {
	d, err := parseDestination(raw)
	if err != nil {
		return Config{}, err
	}
	return Config{Destinations: []Destination{d}}, nil
}

// ParseURLs parses several destination URLs into one Config (each gets its
// own cursor; names must be unique).
func ParseURLs(raws ...string) (Config, error) {
	var c Config
	seen := map[string]bool{}
	for _, r := range raws {
		d, err := parseDestination(r)
		if err != nil {
			return Config{}, err
		}
		if seen[d.Name] {
			return Config{}, fmt.Errorf("%w: %q: duplicate destination name %q (set name=)", ErrBadURL, r, d.Name)
		}
		seen[d.Name] = true
		c.Destinations = append(c.Destinations, d)
	}
	return c, nil
}

func parseDestination(raw string) (Destination, error) {
	bad := func(format string, a ...any) (Destination, error) {
		return Destination{}, fmt.Errorf("%w: %q: %s", ErrBadURL, raw, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", err)
	}
	d := Destination{Network: u.Scheme, Facility: DefaultFacility}
	var defPort string
	switch u.Scheme {
	case "udp", "tcp":
		defPort = "514"
	case "tls":
		defPort = "6514"
	default:
		return bad("scheme must be udp, tcp or tls")
	}
	if u.Host == "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.Fragment != "" {
		return bad("want %s://host[:port][?params]", u.Scheme)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return bad("missing host")
	}
	if port == "" {
		port = defPort
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return bad("bad port %q", port)
	}
	d.Addr = net.JoinHostPort(host, port)
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("%v", err)
	}
	dur := func(v string) (time.Duration, error) {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 || t > maxURLParamDuration {
			return 0, fmt.Errorf("bad duration %q", v)
		}
		return t, nil
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return bad("parameter %s given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "format":
			if d.Format, err = ParseFormat(v); err != nil {
				return bad("%v", err)
			}
		case "pen":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return bad("pen must be a positive IANA Private Enterprise Number")
			}
			d.EnterpriseID = uint32(n)
		case "facility":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 23 {
				return bad("facility must be 0..23")
			}
			d.Facility = n
		case "app":
			d.AppName = v
		case "hostname":
			d.Hostname = v
		case "name":
			if !validName(v) {
				return bad("name must be 1..64 of [A-Za-z0-9._-]")
			}
			d.Name = v
		case "maxbytes":
			n, err := strconv.Atoi(v)
			if err != nil || n < 480 || n > 1<<20 {
				return bad("maxbytes must be 480..1048576 (RFC 5424 section 6.1 minimum 480)")
			}
			d.MaxBytes = n
		case "ca", "cert", "key", "servername":
			if u.Scheme != "tls" {
				return bad("%s only applies to tls://", k)
			}
			switch k {
			case "ca":
				d.CAFile = v
			case "cert":
				d.CertFile = v
			case "key":
				d.KeyFile = v
			case "servername":
				d.ServerName = v
			}
		case "confirm", "backoffmin", "backoffmax", "writetimeout":
			t, err := dur(v)
			if err != nil {
				return bad("%s: %v", k, err)
			}
			switch k {
			case "confirm":
				d.ConfirmWait = t
			case "backoffmin":
				d.BackoffMin = t
			case "backoffmax":
				d.BackoffMax = t
			case "writetimeout":
				d.WriteTimeout = t
			}
		default:
			return bad("unknown parameter %q", k)
		}
	}
	if (d.CertFile == "") != (d.KeyFile == "") {
		return bad("cert and key must be given together")
	}
	if d.Name == "" {
		d.Name = u.Scheme + "-" + strings.NewReplacer(":", "-", "[", "", "]", "").Replace(d.Addr)
	}
	return d, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return s != "." && s != ".."
}

func (d *Destination) defaults(c *Config) {
	if d.ConfirmWait <= 0 {
		d.ConfirmWait = DefaultConfirmWait
	}
	if d.BackoffMin <= 0 {
		d.BackoffMin = DefaultBackoffMin
	}
	if d.BackoffMax <= 0 {
		d.BackoffMax = DefaultBackoffMax
	}
	if d.BackoffMax < d.BackoffMin {
		d.BackoffMax = d.BackoffMin
	}
	if d.WriteTimeout <= 0 {
		d.WriteTimeout = DefaultWriteTimeout
	}
	if d.MaxBytes <= 0 {
		d.MaxBytes = DefaultMaxBytesTCP
		if d.Network == "udp" {
			d.MaxBytes = DefaultMaxBytesUDP
		}
	}
	if d.Hostname == "" {
		d.Hostname = c.Hostname
	}
	if d.AppName == "" {
		d.AppName = c.AppName
	}
}
