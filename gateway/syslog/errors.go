package syslog

import "errors"

// Sentinel errors; match with errors.Is.
var (
	ErrBadURL       = errors.New("syslog: bad destination URL")
	ErrBadFormat    = errors.New("syslog: unknown format")
	ErrSpoolCorrupt = errors.New("syslog: spool record corrupt")
	ErrClosed       = errors.New("syslog: exporter closed")
	ErrNotConfirmed = errors.New("syslog: delivery not confirmed")
	ErrPeerClosed   = errors.New("syslog: receiver closed the connection")
	ErrCloseTimeout = errors.New("syslog: close deadline passed before the spool drained")
	ErrUndelivered  = errors.New("syslog: records not delivered")
)
