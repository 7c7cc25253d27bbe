package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// ErrBadSeverity is returned by ParseSeverity for an unknown name.
var ErrBadSeverity = errors.New("events: unknown severity")

// ParseSeverity returns the Severity named by s (the RFC 5424 names
// that String returns).
func ParseSeverity(s string) (Severity, error) {
	for i := SevEmergency; i <= SevDebug; i++ {
		if i.String() == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrBadSeverity, s)
}

// jsonEvent is the stable JSON-lines schema of an Event. Field names are
// snake case and empty values are omitted; Fields keeps the dissect names.
type jsonEvent struct {
	Seq         uint64           `json:"seq"`
	BootID      string           `json:"boot_id,omitempty"`
	Time        string           `json:"time,omitempty"`
	TimeQuality *jsonTimeQuality `json:"time_quality,omitempty"`
	Severity    string           `json:"severity"`
	Type        Type             `json:"type"`
	Message     string           `json:"message,omitempty"`
	Mode        string           `json:"mode,omitempty"`
	Verdict     string           `json:"verdict,omitempty"`
	Action      string           `json:"action,omitempty"`
	Conduit     string           `json:"conduit,omitempty"`
	Rule        string           `json:"rule,omitempty"`
	Reason      string           `json:"reason,omitempty"`
	FromZone    string           `json:"from_zone,omitempty"`
	ToZone      string           `json:"to_zone,omitempty"`
	Src         string           `json:"src,omitempty"`
	Dst         string           `json:"dst,omitempty"`
	Proto       string           `json:"proto,omitempty"`
	Frame       int              `json:"frame,omitempty"`
	Count       int              `json:"count,omitempty"`
	Fields      map[string]any   `json:"fields,omitempty"`
	Step        string           `json:"step,omitempty"`
	Version     string           `json:"version,omitempty"`
	File        string           `json:"file,omitempty"`
	Line        int              `json:"line,omitempty"`
	Port        string           `json:"port,omitempty"`
}

type jsonTimeQuality struct {
	TZKnown        bool `json:"tz_known"`
	IsSynced       bool `json:"is_synced"`
	SyncAccuracyUS int  `json:"sync_accuracy_us,omitempty"`
}

// JSONTimeLayout is the layout of "time" in the JSON form: RFC 3339 in UTC
// with microseconds, as RFC 5424 section 6.2.3 allows at most.
const JSONTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

func addrPortString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

// AppendJSON appends e as one JSON object without a trailing newline, in the
// schema of the JSON-lines exporter (keys in a fixed order, Fields sorted by
// key). It allocates; it is meant for the exporter side, not the datapath.
func (e *Event) AppendJSON(dst []byte) []byte {
	j := jsonEvent{
		Seq: e.Seq, BootID: e.BootID, Severity: e.Severity.String(), Type: e.Type,
		Message: e.Message, Mode: e.Mode, Verdict: e.Verdict, Action: e.Action,
		Conduit: e.Conduit, Rule: e.Rule, Reason: e.Reason, FromZone: e.FromZone,
		ToZone: e.ToZone, Src: addrPortString(e.Src), Dst: addrPortString(e.Dst),
		Proto: e.Proto, Frame: e.Frame, Count: e.Count, Fields: e.Fields,
		Step: e.Step, Version: e.Version, File: e.File, Line: e.Line, Port: e.Port,
	}
	if !e.Time.IsZero() {
		j.Time = e.Time.UTC().Format(JSONTimeLayout)
	}
	if e.TimeQuality != (TimeQuality{}) {
		j.TimeQuality = &jsonTimeQuality{e.TimeQuality.TZKnown, e.TimeQuality.IsSynced, e.TimeQuality.SyncAccuracy}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&j); err != nil {
		// Only Fields can fail (a value JSON cannot represent): keep the
		// event and say what was lost rather than dropping it.
		j.Fields = map[string]any{"fields_error": err.Error()}
		buf.Reset()
		_ = enc.Encode(&j)
	}
	return append(dst, bytes.TrimRight(buf.Bytes(), "\n")...)
}

// UnmarshalJSONEvent parses one object written by AppendJSON into e. Numbers
// in Fields come back as json.Number so that they print exactly as they were
// written. On error e is left zero. Input is untrusted (a spool record or a
// JSON-lines file): it never panics, and data after the object is an error.
func UnmarshalJSONEvent(b []byte, e *Event) error {
	*e = Event{}
	ev, err := unmarshalJSONEvent(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

func unmarshalJSONEvent(b []byte) (Event, error) {
	var j jsonEvent
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return Event{}, fmt.Errorf("events: decode json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Event{}, fmt.Errorf("events: decode json: data after the object")
	}
	sev, err := ParseSeverity(j.Severity)
	if err != nil {
		return Event{}, err
	}
	e := Event{
		Seq: j.Seq, BootID: j.BootID, Severity: sev, Type: j.Type, Message: j.Message,
		Mode: j.Mode, Verdict: j.Verdict, Action: j.Action, Conduit: j.Conduit,
		Rule: j.Rule, Reason: j.Reason, FromZone: j.FromZone, ToZone: j.ToZone,
		Proto: j.Proto, Frame: j.Frame, Count: j.Count, Fields: j.Fields,
		Step: j.Step, Version: j.Version, File: j.File, Line: j.Line, Port: j.Port,
	}
	if j.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, j.Time)
		if err != nil {
			return Event{}, fmt.Errorf("events: decode json: time: %w", err)
		}
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			// RFC 3339 (and so AppendJSON's output) has four-digit years.
			return Event{}, fmt.Errorf("events: decode json: time %q out of range", j.Time)
		}
		e.Time = t
	}
	if j.TimeQuality != nil {
		e.TimeQuality = TimeQuality{j.TimeQuality.TZKnown, j.TimeQuality.IsSynced, j.TimeQuality.SyncAccuracyUS}
	}
	if j.Src != "" {
		if e.Src, err = netip.ParseAddrPort(j.Src); err != nil {
			return Event{}, fmt.Errorf("events: decode json: src: %w", err)
		}
	}
	if j.Dst != "" {
		if e.Dst, err = netip.ParseAddrPort(j.Dst); err != nil {
			return Event{}, fmt.Errorf("events: decode json: dst: %w", err)
		}
	}
	return e, nil
}
