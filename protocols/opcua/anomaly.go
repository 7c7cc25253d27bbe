package opcua

import (
	"errors"

	"github.com/otgw/otgw/protocols"
)

// Anomaly is a typed protocol violation that rules can match. The zero value
// AnomalyNone means the chunk is well formed.
type Anomaly uint8

// Anomalies. Names (String) are stable: policies and events use them.
const (
	AnomalyNone                  Anomaly = iota
	AnomalyInvalidMessageSize            // MessageSize below the type's minimum, above the cap or the negotiated buffer size, or not equal to the data
	AnomalyUnknownMessageType            // MessageType not HEL/ACK/ERR/RHE/OPN/MSG/CLO
	AnomalyInvalidChunkType              // IsFinal not F/C/A, or not F for a non-MSG type
	AnomalyAbnormalStringLength          // String/ByteString length < -1 or above the spec limit
	AnomalyAbnormalArrayLength           // array length < -1 or more elements than bytes left
	AnomalyBadProtocolVersion            // HEL/ACK ProtocolVersion != 0
	AnomalyTooManyChunks                 // more chunks than MaxChunks or the negotiated MaxChunkCount
	AnomalyMessageTooLarge               // reassembled message above MaxMessageSize or the negotiated MaxMessageSize
	AnomalyTruncated                     // a field runs past the end of a final chunk
	AnomalyUnknownService                // body type id is not a known service request/response
	AnomalyMsgBeforeOpen                 // MSG/CLO before an OpenSecureChannel response (or after CLO)
	AnomalyBadChannelID                  // SecureChannelId differs from the one the server assigned
	AnomalyBadNodeID                     // invalid NodeId encoding byte
	AnomalyTooManyNodes                  // Write/Call with more than MaxNodes NodeIds
	AnomalyBadSecurityMode               // SecurityMode not 1..3, or not None under policy None
	AnomalyUnknownSecurityPolicy         // SecurityPolicyUri not a known policy
	AnomalyBadEncoding                   // invalid Variant/ExtensionObject encoding or nesting too deep
	AnomalyUnexpectedMessage             // message type not allowed in this state or direction (e.g. second HEL, ACK from client)
	AnomalyInterleavedChunks             // chunk of another request while a message is incomplete (§6.7.3)
	AnomalyGap                           // bytes were lost; the stream was resynchronised at this chunk
	AnomalySecurityModeMismatch          // a chunk of a channel judged SignAndEncrypt shows plaintext (see Channel)
	anomalyCount
)

var anomalyNames = [anomalyCount]string{
	AnomalyNone:                  "",
	AnomalyInvalidMessageSize:    "invalid_message_size",
	AnomalyUnknownMessageType:    "unknown_message_type",
	AnomalyInvalidChunkType:      "invalid_chunk_type",
	AnomalyAbnormalStringLength:  "abnormal_string_length",
	AnomalyAbnormalArrayLength:   "abnormal_array_length",
	AnomalyBadProtocolVersion:    "bad_protocol_version",
	AnomalyTooManyChunks:         "too_many_chunks",
	AnomalyMessageTooLarge:       "message_too_large",
	AnomalyTruncated:             "truncated",
	AnomalyUnknownService:        "unknown_service",
	AnomalyMsgBeforeOpen:         "msg_before_open",
	AnomalyBadChannelID:          "bad_channel_id",
	AnomalyBadNodeID:             "bad_node_id",
	AnomalyTooManyNodes:          "too_many_nodes",
	AnomalyBadSecurityMode:       "bad_security_mode",
	AnomalyUnknownSecurityPolicy: "unknown_security_policy",
	AnomalyBadEncoding:           "bad_encoding",
	AnomalyUnexpectedMessage:     "unexpected_message",
	AnomalyInterleavedChunks:     "interleaved_chunks",
	AnomalyGap:                   "gap",
	AnomalySecurityModeMismatch:  "security_mode_mismatch",
}

// String returns the anomaly's policy name ("" for AnomalyNone,
// "anomaly(N)" for values out of range).
func (a Anomaly) String() string {
	if a < anomalyCount {
		return anomalyNames[a]
	}
	return "anomaly(" + itoa(uint32(a)) + ")"
}

// proto is OPC UA's number, registered with its anomaly names.
var proto = protocols.Register(protocols.ProtoOPCUA, "opcua", protocols.Vocabulary{Anomalies: anomalyNames[:]})

// Tagged returns a as a protocols.Anomaly (AnomalyNone for AnomalyNone),
// the form sessions report and rules match. It does not allocate.
func (a Anomaly) Tagged() protocols.Anomaly { return protocols.NewAnomaly(proto, uint8(a)) }

// Err returns the sentinel error for a, or nil for AnomalyNone.
func (a Anomaly) Err() error {
	if a == AnomalyNone || a >= anomalyCount {
		return nil
	}
	return anomalyErrs[a]
}

// AnomalyByName returns the anomaly with the given String name.
func AnomalyByName(name string) (Anomaly, bool) {
	for i := Anomaly(1); i < anomalyCount; i++ {
		if anomalyNames[i] == name {
			return i, true
		}
	}
	return AnomalyNone, false
}

// AnomalyOf returns the Anomaly behind one of this package's sentinel
// errors (AnomalyNone for nil or foreign errors).
func AnomalyOf(err error) Anomaly {
	if err == nil {
		return AnomalyNone
	}
	for i := Anomaly(1); i < anomalyCount; i++ {
		if errors.Is(err, anomalyErrs[i]) {
			return i
		}
	}
	return AnomalyNone
}

// Sentinel errors, one per Anomaly. Hot-path functions return these
// unwrapped; match them with errors.Is or map them with AnomalyOf.
var (
	ErrInvalidMessageSize    = errors.New("opcua: invalid message size")
	ErrUnknownMessageType    = errors.New("opcua: unknown message type")
	ErrInvalidChunkType      = errors.New("opcua: invalid chunk type")
	ErrAbnormalStringLength  = errors.New("opcua: abnormal string length")
	ErrAbnormalArrayLength   = errors.New("opcua: abnormal array length")
	ErrBadProtocolVersion    = errors.New("opcua: bad protocol version")
	ErrTooManyChunks         = errors.New("opcua: too many chunks")
	ErrMessageTooLarge       = errors.New("opcua: message too large")
	ErrTruncated             = errors.New("opcua: truncated")
	ErrUnknownService        = errors.New("opcua: unknown service")
	ErrMsgBeforeOpen         = errors.New("opcua: message before OpenSecureChannel")
	ErrBadChannelID          = errors.New("opcua: bad secure channel id")
	ErrBadNodeID             = errors.New("opcua: bad NodeId encoding")
	ErrTooManyNodes          = errors.New("opcua: too many NodeIds")
	ErrBadSecurityMode       = errors.New("opcua: bad security mode")
	ErrUnknownSecurityPolicy = errors.New("opcua: unknown security policy")
	ErrBadEncoding           = errors.New("opcua: bad encoding")
	ErrUnexpectedMessage     = errors.New("opcua: unexpected message")
	ErrInterleavedChunks     = errors.New("opcua: interleaved chunks")
	ErrGap                   = errors.New("opcua: stream gap")
	ErrSecurityModeMismatch  = errors.New("opcua: security mode mismatch")
	anomalyErrs              = [anomalyCount]error{
		AnomalyInvalidMessageSize:    ErrInvalidMessageSize,
		AnomalyUnknownMessageType:    ErrUnknownMessageType,
		AnomalyInvalidChunkType:      ErrInvalidChunkType,
		AnomalyAbnormalStringLength:  ErrAbnormalStringLength,
		AnomalyAbnormalArrayLength:   ErrAbnormalArrayLength,
		AnomalyBadProtocolVersion:    ErrBadProtocolVersion,
		AnomalyTooManyChunks:         ErrTooManyChunks,
		AnomalyMessageTooLarge:       ErrMessageTooLarge,
		AnomalyTruncated:             ErrTruncated,
		AnomalyUnknownService:        ErrUnknownService,
		AnomalyMsgBeforeOpen:         ErrMsgBeforeOpen,
		AnomalyBadChannelID:          ErrBadChannelID,
		AnomalyBadNodeID:             ErrBadNodeID,
		AnomalyTooManyNodes:          ErrTooManyNodes,
		AnomalyBadSecurityMode:       ErrBadSecurityMode,
		AnomalyUnknownSecurityPolicy: ErrUnknownSecurityPolicy,
		AnomalyBadEncoding:           ErrBadEncoding,
		AnomalyUnexpectedMessage:     ErrUnexpectedMessage,
		AnomalyInterleavedChunks:     ErrInterleavedChunks,
		AnomalyGap:                   ErrGap,
		AnomalySecurityModeMismatch:  ErrSecurityModeMismatch,
	}
)

// itoa formats v in decimal without allocating more than the result.
func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}
