// Package opcua parses OPC UA Binary (UA-TCP / UA Secure Conversation)
// traffic for the gateway: a stream framer, a zero-allocation chunk decoder
// into a caller-owned Message, a per-connection secure channel tracker
// (Channel) with bounded chunk reassembly, the per-flow protocols.Session
// the engine and dissect drive, and an encoder used by tests and the
// scenario suite.
//
// Specifications (OPC 10000-6 "Mappings", 1.04/1.05):
//   - §7.1.2 UA Connection Protocol (UACP / UA-TCP): the 8-byte message
//     header (MessageType HEL/ACK/ERR/RHE/OPN/MSG/CLO, IsFinal F/C/A,
//     MessageSize), Hello (§7.1.2.3), Acknowledge (§7.1.2.4), Error
//     (§7.1.2.5) and ReverseHello (§7.1.2.6). EndpointUrl and Reason are at
//     most 4096 bytes; ProtocolVersion is 0.
//   - §6.7.2 UA Secure Conversation MessageChunk: SecureChannelId, the
//     asymmetric security header of OPN (§6.7.2.3: SecurityPolicyUri,
//     SenderCertificate, ReceiverCertificateThumbprint), the symmetric header
//     of MSG/CLO (TokenId), the sequence header (§6.7.2.4: SequenceNumber,
//     RequestId), and the rule that IsFinal is meaningful only for MSG
//     ("always F for other MessageTypes"). §6.7.3 MessageChunks and error
//     handling: chunks of one message are sent sequentially; an 'A' chunk
//     aborts the message and carries an Error code and Reason.
//   - §5.2 OPC UA Binary encoding: built-in types (§5.2.2), NodeId encodings
//     (§5.2.2.9, TwoByte/FourByte/Numeric/String/Guid/ByteString),
//     ExtensionObject (§5.2.2.15), Variant (§5.2.2.16), DataValue
//     (§5.2.2.17), DiagnosticInfo (§5.2.2.12); message bodies start with the
//     NodeId of the body's DefaultBinary encoding (§5.2.9 / §6.7.2.5).
//
// Services and their structures are from OPC 10000-4 §5 (RequestHeader
// §7.28, ResponseHeader §7.29, OpenSecureChannel §5.5.2, Write §5.10.4,
// Call §5.11.2); the numeric binary-encoding ids come from the OPC
// Foundation NodeIds.csv (the same values gopcua's id package carries).
//
// # Security
//
// With SecurityPolicy None or MessageSecurityMode Sign, MSG bodies are
// plaintext and the decoder reports the service type id and, for Write and
// Call, the NodeIds written or called. With SignAndEncrypt only the headers
// and sizes are judged (the body is opaque). An OPN under a policy other
// than None is asymmetrically encrypted from the sequence header on, so its
// mode cannot be read; Channel infers Sign or SignAndEncrypt from the MSG
// chunks (block alignment, sequence numbers, whether the body decodes) and
// checks the inference on every chunk: a channel inferred SignAndEncrypt
// that shows plaintext is security_mode_mismatch and is judged as Sign from
// then on (see Channel).
//
// # Output vocabulary
//
// security_policy is reported as the short name of the policy, i.e. the
// fragment of the URI after '#' ("None", "Basic256Sha256"), which is the
// vocabulary of the policy file (DESIGN.md "security_policies"); a URI that
// is not under http://opcfoundation.org/UA/SecurityPolicy# is reported whole.
// service is the numeric binary-encoding id (631 ReadRequest, 673
// WriteRequest...), as tshark's opcua.servicenodeid.numeric.
//
// # Allocation and ownership
//
// Framer.Next, Message.Decode and Channel.Decode allocate nothing (Channel's
// reassembly buffer grows once per connection up to MaxMessageSize). Byte
// slices in a Message alias the input (or the Channel's reassembly buffer)
// and are valid until the input is reused. None of the types is safe for
// concurrent use.
package opcua
