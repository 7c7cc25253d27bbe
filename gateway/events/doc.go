// Package events is otgw's security event model and pipeline: every deny,
// alert (monitor mode), policy reload or error, link change, start/stop,
// firmware update step and exporter health change is an Event with a
// sequence number and the boot id, handed to a Sink.
//
// Producers (the gateway loop, rules reload, update, the exporters) call
// Sink.Emit, which never blocks the caller: the datapath must not wait for
// logging. The Pipeline assigns Seq (contiguous per boot) and BootID (a
// random UUID per process start), folds repeats of identical denies into
// one TypeAggregated event per window (never events of severity critical
// or worse), queues them in a bounded queue (a full queue drops, counts and
// later reports "dropped N" as a TypeDropped event), and fans them out to
// the exporters from one dispatcher goroutine. JSONFile is the default
// exporter (JSON lines, size-capped with one rotation); gateway/syslog is
// the SOC exporter. Severities follow RFC 5424 section 6.2.1; TimeQuality
// follows RFC 5424 section 7.1.
package events
