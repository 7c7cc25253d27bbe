// Package protocols holds what the three industrial protocol parsers
// (protocols/modbus, protocols/dnp3, protocols/opcua) share: the direction of
// a PDU and the offline per-connection interface that `otgw dissect`, `otgw
// learn` and replay reports use.
//
// The hot path (the inline gateway) does not go through Conn: it drives each
// package's zero-allocation Framer and Decode directly. Conn is for offline
// tools, where clarity beats speed and allocation is allowed.
package protocols
