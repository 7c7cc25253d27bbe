package syslog

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/otgw/otgw/gateway/events"
)

// Format selects how an event is written on the wire.
type Format uint8

// Formats.
const (
	// FormatRFC5424 is RFC 5424 (the default): the registered SD-IDs
	// origin, meta and timeQuality, the otgw@PEN element when an
	// enterprise number is configured, and the event as JSON in MSG.
	FormatRFC5424 Format = iota
	// FormatCEF is an RFC 5424 header followed by an ArcSight CEF:0 line.
	FormatCEF
	// FormatLEEF is an RFC 5424 header followed by an IBM QRadar LEEF:2.0 line.
	FormatLEEF
	// FormatJSON is one JSON object per line (the events.AppendJSON schema),
	// for JSON-lines collectors; LF framed on TCP/TLS.
	FormatJSON
)

// String returns the name used in the URL's format= parameter.
func (f Format) String() string {
	switch f {
	case FormatRFC5424:
		return "rfc5424"
	case FormatCEF:
		return "cef"
	case FormatLEEF:
		return "leef"
	case FormatJSON:
		return "json"
	}
	return "unknown"
}

// ParseFormat parses a format name (see Format.String).
func ParseFormat(s string) (Format, error) {
	for f := FormatRFC5424; f <= FormatJSON; f++ {
		if f.String() == s {
			return f, nil
		}
	}
	return 0, fmt.Errorf("%w %q (want rfc5424, cef, leef or json)", ErrBadFormat, s)
}

// RFC 5424 section 6 header field limits.
const (
	maxHostname = 255
	maxAppName  = 48
	maxProcID   = 128
	maxMsgID    = 32
	maxSDName   = 32
)

// DefaultFacility is RFC 5424 facility 13, "log audit".
const DefaultFacility = 13

// Formatter turns events into wire messages. Its fields are set once; it is
// safe for concurrent use after that. The zero value writes RFC 5424 with
// facility 0 and NILVALUE header fields, and no private SD element.
type Formatter struct {
	Format Format
	// Facility is the RFC 5424 facility (0..23).
	Facility int
	// Hostname, AppName and ProcID fill the header; empty means NILVALUE.
	Hostname, AppName, ProcID string
	// EnterpriseID is the IANA Private Enterprise Number of the SD-ID
	// "otgw@<EnterpriseID>". 32473 (RFC 5612) is for documentation and
	// tests only. 0 omits the private SD element.
	EnterpriseID uint32
	// Software and SWVersion fill the origin SD element and the CEF/LEEF
	// product and version.
	Software, SWVersion string
	// OriginIPs fill the ip parameters of the origin SD element (RFC 5424
	// section 7.2.1: the originator's addresses, the parameter repeats).
	OriginIPs []string
	// Uptime returns the sysUpTime of the meta SD element for e (RFC 5424
	// section 7.3.2: time since the syslog part of the system started),
	// or false when unknown, e.g. for an event spooled by an earlier run.
	// Nil: sysUpTime is omitted.
	Uptime func(e *events.Event) (time.Duration, bool)
	// MaxBytes caps one message (0 = no cap). A longer event is shortened
	// (message text, then long values, then protocol fields) and marked
	// truncated="1"; it is never split.
	MaxBytes int
}

// Append appends the message for e to dst (no transport framing).
func (f *Formatter) Append(dst []byte, e *events.Event) []byte {
	start := len(dst)
	out := f.appendLimited(dst, e, -1, false)
	if f.MaxBytes <= 0 || len(out)-start <= f.MaxBytes {
		return out
	}
	// Pass 2: cut long values to 64 bytes, mark truncated.
	out = f.appendLimited(out[:start], e, 64, false)
	if len(out)-start <= f.MaxBytes {
		return out
	}
	// Pass 3: also drop the protocol fields; then cut the tail at a rune
	// boundary (only the free text or the last value is affected).
	out = f.appendLimited(out[:start], e, 64, true)
	if len(out)-start > f.MaxBytes {
		cut := start + f.MaxBytes
		for cut > start && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut]
	}
	return out
}

// appendLimited formats e; valueMax >= 0 truncates values and marks the
// event truncated, noFields drops Event.Fields.
func (f *Formatter) appendLimited(dst []byte, e *events.Event, valueMax int, noFields bool) []byte {
	p := params(e, f, valueMax, noFields)
	switch f.Format {
	case FormatCEF:
		dst = append(f.appendHeader(dst, e), " -"...) // no SD: the CEF line is the MSG
		return f.appendCEF(dst, e, p, valueMax)
	case FormatLEEF:
		dst = append(f.appendHeader(dst, e), " -"...)
		return f.appendLEEF(dst, e, p, valueMax)
	case FormatJSON:
		return shortened(e, valueMax, noFields).AppendJSON(dst)
	}
	dst = f.appendHeader(dst, e)
	dst = f.appendSD(dst, e, p)
	// MSG is the event in the JSON schema, with every non-ASCII character
	// escaped: an all-ASCII MSG is MSG-ANY and needs no BOM (RFC 5424
	// section 6.4), and JSON parsers downstream never meet one.
	dst = append(dst, ' ')
	return appendASCIIJSON(dst, shortened(e, valueMax, noFields).AppendJSON(nil))
}

// shortened returns e, or for valueMax >= 0 a copy with every text value
// cut to valueMax bytes (string protocol fields too, or none of them with
// noFields) and Fields["truncated"] set.
func shortened(e *events.Event, valueMax int, noFields bool) *events.Event {
	if valueMax < 0 {
		return e
	}
	c := *e
	for _, s := range []*string{&c.Message, &c.Mode, &c.Verdict, &c.Action, &c.Conduit, &c.Rule, &c.Reason,
		&c.FromZone, &c.ToZone, &c.Proto, &c.Step, &c.Version, &c.File, &c.Port} {
		*s = truncUTF8(*s, valueMax)
	}
	if noFields {
		c.Fields = nil
	}
	c.Fields = withTruncated(c.Fields)
	for k, v := range c.Fields {
		if s, ok := v.(string); ok {
			c.Fields[k] = truncUTF8(s, valueMax)
		}
	}
	return &c
}

// appendASCIIJSON appends the JSON text js with every non-ASCII rune
// written as a \u escape (a surrogate pair above U+FFFF), which is the
// same JSON value: non-ASCII bytes occur only inside strings.
func appendASCIIJSON(dst, js []byte) []byte {
	for len(js) > 0 {
		c := js[0]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			js = js[1:]
			continue
		}
		r, n := utf8.DecodeRune(js)
		js = js[n:]
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			dst = appendU(appendU(dst, r1), r2)
			continue
		}
		dst = appendU(dst, r)
	}
	return dst
}

func appendU(dst []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(dst, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
}

func withTruncated(m map[string]any) map[string]any {
	n := make(map[string]any, len(m)+1)
	for k, v := range m {
		n[k] = v
	}
	n["truncated"] = true
	return n
}

// MsgID returns the RFC 5424 MSGID (the event class) of e, e.g.
// "MODBUS_DENY", "POLICY_RELOAD", "LOG_DROPPED".
func MsgID(e *events.Event) string {
	var s string
	switch e.Type {
	case events.TypeDeny, events.TypeAlert:
		s = string(e.Type)
		if e.Proto != "" {
			s = e.Proto + "_" + s
		}
	case events.TypeDropped:
		s = "LOG_DROPPED"
	case events.TypeAggregated:
		s = "EVENTS_SUPPRESSED"
	case events.TypeGap:
		s = "LOG_GAP"
	case events.TypeExporter:
		s = "LOG_DEST"
		if e.Step != "" {
			s += "_" + e.Step
		}
	case events.TypeUpdate:
		s = "UPDATE"
		if e.Step != "" {
			s += "_" + e.Step
		}
	default:
		s = string(e.Type)
	}
	if s == "" {
		return "-"
	}
	return headerField(strings.ToUpper(s), maxMsgID)
}

// headerField maps s to printable US-ASCII without spaces (RFC 5424
// PRINTUSASCII, %d33-126), cut to max; empty becomes the NILVALUE "-".
func headerField(s string, max int) string {
	ok := len(s) <= max && s != ""
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 33 && s[i] <= 126
	}
	if ok {
		return s
	}
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		b = append(b, c)
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// TimestampLayout is the RFC 5424 TIMESTAMP written: UTC, microseconds.
const TimestampLayout = "2006-01-02T15:04:05.000000Z07:00"

func (f *Formatter) appendHeader(dst []byte, e *events.Event) []byte {
	pri := f.Facility*8 + int(min(e.Severity, events.SevDebug))
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(pri), 10)
	dst = append(dst, ">1 "...)
	if e.Time.IsZero() {
		dst = append(dst, '-')
	} else {
		dst = e.Time.UTC().AppendFormat(dst, TimestampLayout)
	}
	dst = append(dst, ' ')
	dst = append(dst, headerField(f.Hostname, maxHostname)...)
	dst = append(dst, ' ')
	dst = append(dst, headerField(f.AppName, maxAppName)...)
	dst = append(dst, ' ')
	dst = append(dst, headerField(f.ProcID, maxProcID)...)
	dst = append(dst, ' ')
	dst = append(dst, MsgID(e)...)
	return dst
}

// param is one name/value of the event projection, in a fixed order.
type param struct{ name, value string }

// params lists e's fields in the otgw schema (the names of the RFC 5424 SD
// element; CEF and LEEF map them to their dictionaries).
func params(e *events.Event, f *Formatter, valueMax int, noFields bool) []param {
	p := make([]param, 0, 24+len(e.Fields))
	add := func(name, v string) {
		if v == "" {
			return
		}
		if valueMax >= 0 {
			v = truncUTF8(v, valueMax)
		}
		p = append(p, param{name, v})
	}
	addInt := func(name string, v int) {
		if v != 0 {
			add(name, strconv.Itoa(v))
		}
	}
	add("bootId", e.BootID)
	add("type", string(e.Type))
	add("mode", e.Mode)
	add("verdict", e.Verdict)
	add("action", e.Action)
	add("conduit", e.Conduit)
	add("rule", e.Rule)
	add("reason", e.Reason)
	add("zoneSrc", e.FromZone)
	add("zoneDst", e.ToZone)
	if e.Src.IsValid() {
		add("src", e.Src.Addr().String())
		addInt("srcPort", int(e.Src.Port()))
	}
	if e.Dst.IsValid() {
		add("dst", e.Dst.Addr().String())
		addInt("dstPort", int(e.Dst.Port()))
	}
	add("proto", e.Proto)
	addInt("frame", e.Frame)
	addInt("count", e.Count)
	add("step", e.Step)
	add("version", e.Version)
	add("file", e.File)
	addInt("line", e.Line)
	add("port", e.Port)
	if !noFields && len(e.Fields) > 0 {
		keys := make([]string, 0, len(e.Fields))
		for k := range e.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := sdName(k)
			if name == "" || reserved(p, name) {
				name = sdName("f_" + k)
			}
			add(name, valueString(e.Fields[k]))
		}
	}
	if valueMax >= 0 {
		p = append(p, param{"truncated", "1"})
	}
	return p
}

func reserved(p []param, name string) bool {
	switch name {
	case "seq", "sev", "truncated":
		return true
	}
	for _, q := range p {
		if q.name == name {
			return true
		}
	}
	return false
}

// valueString renders a Fields value: numbers and strings as themselves,
// anything else as JSON.
func valueString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case uint8:
		return strconv.Itoa(int(x))
	case uint16:
		return strconv.Itoa(int(x))
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case int32:
		return strconv.Itoa(int(x))
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case netip.Addr:
		return x.String()
	case netip.AddrPort:
		return x.String()
	case time.Time:
		return x.UTC().Format(TimestampLayout)
	case fmt.Stringer:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// sdName maps a key to an RFC 5424 SD-NAME: 1..32 printable US-ASCII
// characters except '=', ' ', ']' and '"'.
func sdName(s string) string {
	b := make([]byte, 0, min(len(s), maxSDName))
	for i := 0; i < len(s) && len(b) < maxSDName; i++ {
		c := s[i]
		if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' {
			c = '_'
		}
		b = append(b, c)
	}
	return string(b)
}

func (f *Formatter) appendSD(dst []byte, e *events.Event, p []param) []byte {
	dst = append(dst, ' ') // RFC 5424 section 6: MSGID SP STRUCTURED-DATA; elements are not separated
	n := len(dst)
	if f.EnterpriseID != 0 {
		dst = append(dst, "[otgw@"...)
		dst = strconv.AppendUint(dst, uint64(f.EnterpriseID), 10)
		for _, q := range p {
			dst = appendSDParam(dst, q.name, q.value)
		}
		dst = append(dst, ']')
	}
	up, upOK := time.Duration(0), false
	if f.Uptime != nil {
		up, upOK = f.Uptime(e)
	}
	if e.Seq != 0 || upOK {
		dst = append(dst, "[meta"...)
		if e.Seq != 0 {
			// RFC 5424 section 7.3.1: 1..2147483647, then wraps to 1.
			dst = append(dst, ` sequenceId="`...)
			dst = strconv.AppendUint(dst, (e.Seq-1)%2147483647+1, 10)
			dst = append(dst, '"')
		}
		if upOK {
			// Section 7.3.2: SNMP sysUpTime, hundredths of a second
			// (TimeTicks, RFC 2578: modulo 2^32).
			dst = append(dst, ` sysUpTime="`...)
			dst = strconv.AppendUint(dst, uint64(max(up, 0)/(10*time.Millisecond))%(1<<32), 10)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	if !e.Time.IsZero() {
		tq := e.TimeQuality
		dst = append(dst, `[timeQuality tzKnown="`...)
		dst = append(dst, b01(tq.TZKnown))
		dst = append(dst, `" isSynced="`...)
		dst = append(dst, b01(tq.IsSynced))
		dst = append(dst, '"')
		if tq.IsSynced && tq.SyncAccuracy > 0 { // section 7.1.3: only when synced
			dst = append(dst, ` syncAccuracy="`...)
			dst = strconv.AppendInt(dst, int64(tq.SyncAccuracy), 10)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	if f.Software != "" {
		dst = append(dst, "[origin"...)
		dst = appendSDParam(dst, "software", truncUTF8(f.Software, 48))
		if f.SWVersion != "" {
			dst = appendSDParam(dst, "swVersion", truncUTF8(f.SWVersion, 32))
		}
		for _, ip := range f.OriginIPs {
			dst = appendSDParam(dst, "ip", ip)
		}
		if f.EnterpriseID != 0 {
			dst = appendSDParam(dst, "enterpriseId", strconv.FormatUint(uint64(f.EnterpriseID), 10))
		}
		dst = append(dst, ']')
	}
	if len(dst) == n {
		return append(dst, '-') // NILVALUE
	}
	return dst
}

func b01(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

// appendSDParam appends ` name="value"`, escaping '"', '\' and ']' in the
// value (RFC 5424 section 6.3.3) and replacing invalid UTF-8.
func appendSDParam(dst []byte, name, value string) []byte {
	dst = append(dst, ' ')
	dst = append(dst, name...)
	dst = append(dst, '=', '"')
	for _, r := range strings.ToValidUTF8(value, "\uFFFD") {
		switch r {
		case '"', '\\', ']':
			dst = append(dst, '\\', byte(r))
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return append(dst, '"')
}

// truncUTF8 cuts s to at most n bytes at a rune boundary.
func truncUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cefSeverity maps RFC 5424 severity to CEF 0..10.
func cefSeverity(s events.Severity) int {
	m := [...]int{10, 9, 8, 7, 5, 3, 2, 0}
	if int(s) < len(m) {
		return m[s]
	}
	return 0
}

// appendCEFHeader escapes '\' and '|' (and maps CR/LF to a space) in a CEF
// header field.
func appendCEFHeader(dst []byte, s string) []byte {
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch r {
		case '\\', '|':
			dst = append(dst, '\\', byte(r))
		case '\r', '\n':
			dst = append(dst, ' ')
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

// appendCEFValue escapes '\', '=' and newlines in a CEF extension value.
func appendCEFValue(dst []byte, s string) []byte {
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch r {
		case '\\', '=':
			dst = append(dst, '\\', byte(r))
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

// cefKey maps a key to CEF key characters (letters, digits, '_' and '.').
func cefKey(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// cefStd maps otgw params to the CEF dictionary; the others become
// cs1..cs6 with labels, cn1/cnt, or "ad.<name>" additional data.
var cefStd = map[string]string{
	"src": "src", "srcPort": "spt", "dst": "dst", "dstPort": "dpt",
	"proto": "app", "action": "act", "verdict": "outcome", "count": "cnt",
	"type": "cat",
}

var cefLabeled = map[string]string{
	"conduit": "cs1", "rule": "cs2", "reason": "cs3", "zoneSrc": "cs4",
	"zoneDst": "cs5", "bootId": "cs6",
}

func (f *Formatter) appendCEF(dst []byte, e *events.Event, p []param, valueMax int) []byte {
	dst = append(dst, " CEF:0|"...)
	dst = appendCEFHeader(dst, "otgw")
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, orDefault(f.Software, "otgw"))
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, orDefault(f.SWVersion, "0"))
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, MsgID(e))
	dst = append(dst, '|')
	name := e.Message
	if valueMax >= 0 {
		name = truncUTF8(name, valueMax)
	}
	dst = appendCEFHeader(dst, orDefault(name, string(e.Type)))
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, int64(cefSeverity(e.Severity)), 10)
	dst = append(dst, '|')
	first := true
	kv := func(k, v string) {
		if !first {
			dst = append(dst, ' ')
		}
		first = false
		dst = append(dst, k...)
		dst = append(dst, '=')
		dst = appendCEFValue(dst, v)
	}
	if !e.Time.IsZero() {
		kv("rt", strconv.FormatInt(e.Time.UnixMilli(), 10))
	}
	if f.Hostname != "" {
		kv("dvchost", headerField(f.Hostname, maxHostname))
	}
	if e.Seq != 0 {
		kv("cn1Label", "seq")
		kv("cn1", strconv.FormatUint(e.Seq, 10))
	}
	for _, q := range p {
		if k, ok := cefStd[q.name]; ok {
			kv(k, q.value)
		} else if k, ok := cefLabeled[q.name]; ok {
			kv(k+"Label", q.name)
			kv(k, q.value)
		} else {
			kv("ad."+cefKey(q.name), q.value)
		}
	}
	return dst
}

// LEEF 2.0 attribute delimiter: tab, declared as "x09" in the header.
const leefDelim = '\t'

// LEEFTimeFormat is the devTimeFormat declared in LEEF events.
const LEEFTimeFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"

var leefStd = map[string]string{
	"src": "src", "srcPort": "srcPort", "dst": "dst", "dstPort": "dstPort",
	"type": "cat", "proto": "app",
}

// appendLEEFValue maps the delimiter, CR and LF to a space (LEEF has no
// escape for them) and escapes nothing else.
func appendLEEFValue(dst []byte, s string) []byte {
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch r {
		case leefDelim, '\r', '\n':
			dst = append(dst, ' ')
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

func (f *Formatter) appendLEEF(dst []byte, e *events.Event, p []param, _ int) []byte {
	dst = append(dst, " LEEF:2.0|"...)
	dst = appendCEFHeader(dst, "otgw")
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, orDefault(f.Software, "otgw"))
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, orDefault(f.SWVersion, "0"))
	dst = append(dst, '|')
	dst = appendCEFHeader(dst, MsgID(e))
	dst = append(dst, "|x09|"...)
	first := true
	kv := func(k, v string) {
		if !first {
			dst = append(dst, leefDelim)
		}
		first = false
		dst = append(dst, k...)
		dst = append(dst, '=')
		dst = appendLEEFValue(dst, v)
	}
	if !e.Time.IsZero() {
		kv("devTime", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		kv("devTimeFormat", LEEFTimeFormat)
	}
	kv("sev", strconv.Itoa(max(1, cefSeverity(e.Severity))))
	if e.Seq != 0 {
		kv("seq", strconv.FormatUint(e.Seq, 10))
	}
	for _, q := range p {
		if k, ok := leefStd[q.name]; ok {
			kv(k, q.value)
		} else {
			kv(cefKey(q.name), q.value)
		}
	}
	if e.Message != "" {
		kv("msg", e.Message)
	}
	return dst
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
