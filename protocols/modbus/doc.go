// Package modbus owns Modbus/TCP: stream framing, zero-allocation decoding of
// application data units (ADUs) into caller-owned structs, typed anomalies
// that policies can deny, request/response pairing by transaction id, the
// per-flow protocols.Session the engine and dissect drive, and a small
// encoder used by test and scenario generators.
//
// Specifications:
//
//   - MODBUS Application Protocol Specification V1.1b3 (2012), "MAP" below:
//     §4.1 PDU size (max 253 bytes), §4.2 data encoding (big-endian),
//     §4.3 data model (coils, discrete inputs, input and holding registers),
//     §5 function code categories (public 1-64, 73-99, 111-127; user-defined
//     65-72 and 100-110), §6.1-§6.21 request/response layouts and quantity
//     limits, §7 exception responses and codes 01-0B.
//   - MODBUS Messaging on TCP/IP Implementation Guide V1.0b (2006), "TCP"
//     below: §3.1.3 MBAP header (transaction id, protocol id 0, length = unit
//     id + PDU bytes, unit id), §3.1.2 maximum ADU 260 bytes, §4.2 pipelined
//     requests matched by transaction id.
//   - Vendor extension: Schneider Electric UMAS in FC 90 (umas.go): the
//     pairing key and UMAS function code are decoded, and its ADUs may
//     carry MBAP length 255 (261 bytes), which Modicon PLCs send, named
//     AnomalyLongADU (long_adu) for a policy to tolerate.
//
// Layers, kept apart as in Suricata:
//
//   - MBAP is a gVisor-style view of the 7-byte header; call IsValid before
//     the accessors.
//   - Framer.Next splits a byte stream into ADUs, however the bytes were
//     segmented, and rejects bytes that cannot be Modbus/TCP so the gateway
//     can deny "non-Modbus bytes on the Modbus port".
//   - ADU.Decode fills a caller-owned ADU without allocating; the ADU aliases
//     the decoded buffer (ADU.Data) and is valid until the buffer is reused.
//   - Pairing matches responses to outstanding requests (bounded table, zero
//     allocation), so responses without a request, mismatched function codes
//     or units, and read responses of the wrong size are caught, and values
//     in a response can be attributed to register addresses.
//   - Session implements protocols.Session: framing, decoding, pairing
//     and the fields of each ADU, for the engine (no allocation) and for
//     offline tools (Feed).
//
// Nothing in this package panics on input, and the hot-path functions
// (Framer.Next, ADU.Decode, Pairing) allocate nothing.
package modbus
