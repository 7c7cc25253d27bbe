// Package peers holds the real protocol peers that otgw's end-to-end tests,
// `make demo` and `make bench-datapath` put on both sides of the gateway:
//
//   - PLC: a Modbus/TCP server on github.com/simonvetter/modbus with a
//     register bank (holding register i = 1000+i, input register i =
//     2000+i) that records every write it executes, so a test can prove
//     that a denied write never reached the PLC;
//   - modbus_server.py: the same register layout on Debian's
//     python3-pymodbus (3.0), a second, independent server implementation;
//   - cmd/otgw-peer: one binary with the PLC, an HMI client
//     (github.com/goburrow/modbus) that polls and tries one write, and the
//     DNP3 master/outstation of simulate/dnp3sim, for scripts.
//
// Addresses follow the Modbus Application Protocol v1.1b3 section 4.4: zero
// based on the wire.
package peers
