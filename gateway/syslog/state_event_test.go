package syslog

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/events"
)

// TestDestinationStateEvents: a destination reports each change between
// up and down once, and a down destination whose failures turn into TLS
// rejections says so, once, until it is up again: with TLS 1.3 a receiver
// that rejects our certificate after the handshake can first look like a
// dropped connection, and the operator must still learn it is the
// certificate.
func TestDestinationStateEvents(t *testing.T) {
	var steps []string
	x := &Exporter{cfg: Config{Notify: events.SinkFunc(func(e *events.Event) { steps = append(steps, e.Step) })}}
	d := &dest{d: Destination{Name: "soc"}, x: x, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.up.Store(true)
	refused := errors.New("connection refused")
	rejected := &tlsError{errors.New("remote error: tls: certificate required")}
	for _, s := range []struct {
		up  bool
		err error
	}{
		{false, refused}, {false, refused}, // down once
		{false, rejected}, {false, rejected}, // now the certificate: once
		{false, refused},         // back to a plain failure
		{true, nil}, {true, nil}, // up once
		{false, rejected}, // straight to a TLS failure
		{false, rejected},
	} {
		d.setUp(s.up, s.err)
	}
	if got, want := strings.Join(steps, " "), "down tls_fail up tls_fail"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}
