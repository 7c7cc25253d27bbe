// Package dnp3 parses DNP3 (IEEE 1815-2012) as carried over TCP and UDP,
// port 20000 (IEEE 1815-2012 Annex E), for the inline gateway and offline tools.
//
// It owns the three DNP3 layers and nothing else:
//
//   - Data link layer (IEEE 1815-2012 clause 9): Framer.Next finds frames in
//     a byte stream (start octets 0x05 0x64, LENGTH 5..255, header CRC) and
//     resynchronises after garbage; LinkFrame.Decode checks the header CRC
//     and the CRC of every 16-octet data block (CRC-16/DNP, clause 9.2.3.4,
//     polynomial 0x3D65 reflected, inverted result) and copies the user data
//     into a fixed buffer inside the caller-owned LinkFrame.
//   - Transport function (clause 8): Reassembler joins transport segments
//     (FIR, FIN, 6-bit sequence, clause 8.2) into one application fragment
//     in a fixed buffer bounded by MaxFragment.
//   - Application layer (clause 4, object library Annex A): Fragment.Decode
//     reads the application control octet (FIR, FIN, CON, UNS, SEQ, clause
//     4.2.2.4), the function code (clause 4.2.2.5, Table 4-1), the internal
//     indications of responses (clause 4.2.2.6) and the object headers
//     (group, variation, qualifier and range, clause 4.2.2.7), walking past
//     object data with the sizes of the object library (Annex A) so that
//     every header of a fragment, up to MaxObjects, is known. Unknown objects
//     stop the walk with an anomaly; what was parsed is kept.
//
// Malformations are reported as a typed Anomaly that the policy engine can
// deny. Decoders never panic on input and never allocate: every result lives
// in a struct owned by the caller. None of the types is safe for concurrent
// use; the zero value of each is ready to use.
//
// Session ties the three layers into a protocols.Session, the per-flow
// state the engine and `otgw dissect` both hold: link frames, transport
// reassembly per link address pair, application decoding, pairing of
// solicited responses by SEQ and the fields of each unit (offline, one per
// link frame, as tshark reports DNP3). The encoder (AppendLinkFrames
// and the Append* request and response helpers) builds valid traffic for
// tests, scenarios and the simulator.
package dnp3
