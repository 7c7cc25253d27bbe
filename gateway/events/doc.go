// Package events is otgw's security event model and pipeline: every deny,
// alert (monitor mode), policy reload or error, link change, start/stop,
// firmware update step and exporter health change is an Event with a
// sequence number and the boot id, handed to a Sink.
//
// Producers (the gateway loop, rules reload, update, the exporters) call
// Sink.Emit, which never blocks the caller: the datapath must not wait for
// logging. Exporters (JSON lines, syslog) consume from the pipeline.
package events
