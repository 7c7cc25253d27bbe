package dissect

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
)

// AppendJSON appends the PDU as one JSON object (see JSON) to dst. A PDU
// from a Dissector is rendered by its session straight into dst (jsonSink);
// the values of a PDU built by hand (integers, strings, DNP3 function
// codes and object lists) are written directly, any other type through
// encoding/json, so the bytes are those json.Marshal would write. It
// allocates nothing for the values our sessions render.
func (p *PDU) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"frame":`...)
	dst = strconv.AppendInt(dst, int64(p.Frame), 10)
	dst = append(dst, `,"time":"`...)
	dst = p.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","src":`...)
	dst = appendAddrPort(dst, p.Src)
	dst = append(dst, `,"dst":`...)
	dst = appendAddrPort(dst, p.Dst)
	dst = append(dst, `,"proto":`...)
	dst = appendQuote(dst, p.Proto.String())
	dst = append(dst, `,"dir":`...)
	dst = appendQuote(dst, p.Dir.String())
	if p.sess != nil && !p.loaded {
		// The sink lives in p: a local one would escape through the
		// interface call and cost an allocation per line.
		p.sink.dst = dst
		p.sess.Fields(&p.sink)
		dst, p.sink.dst = p.sink.dst, nil
	}
	for _, kv := range p.Fields {
		dst = append(dst, ',')
		dst = appendQuote(dst, kv.Key)
		dst = append(dst, ':')
		var err error
		if dst, err = appendValue(dst, kv.Value); err != nil {
			return dst, fmt.Errorf("dissect: frame %d: field %s: %w", p.Frame, kv.Key, err)
		}
	}
	if p.Anomaly != "" {
		dst = append(dst, `,"anomaly":`...)
		dst = appendQuote(dst, p.Anomaly)
	}
	return append(dst, '}'), nil
}

// appendAddrPort appends strconv.Quote(a.String()).
func appendAddrPort(dst []byte, a netip.AddrPort) []byte {
	if !a.IsValid() || a.Addr().Zone() != "" {
		return appendQuote(dst, a.String())
	}
	dst = append(dst, '"')
	dst = a.AppendTo(dst)
	return append(dst, '"')
}

// plain reports whether s needs no escaping in either strconv.Quote or
// encoding/json (printable ASCII other than the quote, the backslash and
// json's HTML-escaped <, > and &), so both write it as-is between quotes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendQuote is strconv.AppendQuote with a fast path for plain strings.
func appendQuote(dst []byte, s string) []byte {
	if plain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	return strconv.AppendQuote(dst, s)
}

// appendValue appends v as json.Marshal would.
func appendValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case string:
		if plain(v) {
			dst = append(dst, '"')
			dst = append(dst, v...)
			return append(dst, '"'), nil
		}
	case dnp3.FunctionCode:
		// No MarshalJSON/MarshalText: json writes the number.
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case dnp3.LinkFunc:
		// MarshalText: json writes the name as a string.
		if s := v.String(); plain(s) {
			dst = append(dst, '"')
			dst = append(dst, s...)
			return append(dst, '"'), nil
		}
	case []dnp3.Object:
		return appendObjects(dst, v), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// jsonSink writes a session's fields (protocols.Sink) as JSON members, each
// preceded by a comma, the bytes json.Marshal would write for the values
// protocols.Record holds.
type jsonSink struct{ dst []byte }

func (w *jsonSink) key(k string) {
	w.dst = append(w.dst, ',')
	w.dst = appendQuote(w.dst, k)
	w.dst = append(w.dst, ':')
}

func (w *jsonSink) Int(k string, v int) {
	w.key(k)
	w.dst = strconv.AppendInt(w.dst, int64(v), 10)
}

func (w *jsonSink) Str(k, v string) {
	w.key(k)
	w.dst = appendJSONString(w.dst, v)
}

func (w *jsonSink) Bytes(k string, v []byte) {
	w.key(k)
	w.dst = appendJSONBytes(w.dst, v)
}

func (w *jsonSink) IntList(k string, v []int) {
	w.key(k)
	w.dst = append(w.dst, '[')
	for i, x := range v {
		if i > 0 {
			w.dst = append(w.dst, ',')
		}
		w.dst = strconv.AppendInt(w.dst, int64(x), 10)
	}
	w.dst = append(w.dst, ']')
}

func (w *jsonSink) BoolList(k string, v []bool) {
	w.key(k)
	w.dst = append(w.dst, '[')
	for i, x := range v {
		if i > 0 {
			w.dst = append(w.dst, ',')
		}
		w.dst = strconv.AppendBool(w.dst, x)
	}
	w.dst = append(w.dst, ']')
}

func (w *jsonSink) StrList(k string, v protocols.List) {
	w.key(k)
	w.dst = append(w.dst, '[')
	for i := range v.Len() {
		if i > 0 {
			w.dst = append(w.dst, ',')
		}
		// Render the item after the open quote; escape it when it needs
		// escaping (rare: NodeIds are mostly plain).
		start := len(w.dst)
		w.dst = append(w.dst, '"')
		w.dst = v.AppendItem(w.dst, i)
		if item := w.dst[start+1:]; !plainBytes(item) {
			w.dst = appendJSONString(w.dst[:start], string(item))
			continue
		}
		w.dst = append(w.dst, '"')
	}
	w.dst = append(w.dst, ']')
}

func (w *jsonSink) Objects(k string, v []protocols.Object) {
	w.key(k)
	w.dst = appendObjects(w.dst, v)
}

// appendObjects writes an object list as json.Marshal writes []dnp3.Object.
func appendObjects(dst []byte, v []protocols.Object) []byte {
	if v == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, o := range v {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"group":`...)
		dst = strconv.AppendInt(dst, int64(o.Group), 10)
		dst = append(dst, `,"variation":`...)
		dst = strconv.AppendInt(dst, int64(o.Variation), 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendJSONString appends s as json.Marshal would.
func appendJSONString(dst []byte, s string) []byte {
	if plain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// appendJSONBytes appends b as json.Marshal(string(b)) would.
func appendJSONBytes(dst []byte, b []byte) []byte {
	if plainBytes(b) {
		dst = append(dst, '"')
		dst = append(dst, b...)
		return append(dst, '"')
	}
	return appendJSONString(dst, string(b))
}

// plainBytes is plain for bytes.
func plainBytes(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
