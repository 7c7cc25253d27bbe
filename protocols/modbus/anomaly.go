package modbus

import (
	"errors"
	"strconv"

	"github.com/otgw/otgw/protocols"
)

// Anomaly is a typed finding about one ADU that a policy can match and deny.
// The zero value AnomalyNone means the ADU is well formed. String returns a
// stable snake_case name used in events, dissect output and policies.
type Anomaly uint8

// Anomalies, with the rule of the specification they break.
const (
	AnomalyNone Anomaly = iota
	// AnomalyTruncated: fewer bytes than the MBAP length announces, or a PDU
	// shorter than its function code requires (MAP §6).
	AnomalyTruncated
	// AnomalyProtocolID: MBAP protocol id is not 0 (TCP guide §3.1.3).
	AnomalyProtocolID
	// AnomalyMBAPLength: length field 0, 1 or > 254, or not the size of the
	// ADU (TCP guide §3.1.3, MAP §4.1).
	AnomalyMBAPLength
	// AnomalyNonModbus: bytes on the Modbus port that cannot be framed as
	// Modbus/TCP at all (reported by Session for a framing error).
	AnomalyNonModbus
	// AnomalyUnknownFunction: a function code that is neither public nor
	// user-defined (MAP §5), or an exception function code in a request.
	AnomalyUnknownFunction
	// AnomalyPDULength: PDU size does not fit the function code's layout.
	AnomalyPDULength
	// AnomalyQuantityOutOfRange: quantity outside the per-function limits
	// (MAP §6.1-§6.4, §6.11, §6.12, §6.17, §6.18).
	AnomalyQuantityOutOfRange
	// AnomalyAddressOutOfRange: start address + quantity exceeds 65536.
	AnomalyAddressOutOfRange
	// AnomalyByteCountMismatch: a byte count field disagrees with the
	// quantity, the PDU size, or the request's quantity.
	AnomalyByteCountMismatch
	// AnomalyBadCoilValue: FC 5 value other than 0x0000 / 0xFF00 (MAP §6.5).
	AnomalyBadCoilValue
	// AnomalyExceptionCodeInvalid: exception code not defined in MAP §7.
	AnomalyExceptionCodeInvalid
	// AnomalyUnknownSubFunction: FC 8 diagnostics sub-function reserved
	// (MAP §6.8.1) or FC 43 MEI type other than 13/14 (MAP §6.19).
	AnomalyUnknownSubFunction
	// AnomalyDiagDataInvalid: FC 8 data not what the sub-function requires.
	AnomalyDiagDataInvalid
	// AnomalyDeviceIDInvalid: FC 43/14 Read Device ID code not 1-4, or a
	// malformed object list (MAP §6.21).
	AnomalyDeviceIDInvalid
	// AnomalyFileReference: FC 20/21 reference type not 6 or record number
	// above 0x270F (MAP §6.14, §6.15).
	AnomalyFileReference
	// AnomalyResponseWithoutRequest: a response while no request is
	// outstanding on the connection (TCP guide §4.2).
	AnomalyResponseWithoutRequest
	// AnomalyTIDMismatch: a response whose transaction id matches none of
	// the outstanding requests.
	AnomalyTIDMismatch
	// AnomalyUnitMismatch: response unit id differs from its request's.
	AnomalyUnitMismatch
	// AnomalyFunctionMismatch: response function code (without the
	// exception bit) differs from its request's.
	AnomalyFunctionMismatch
	// AnomalyEchoMismatch: a write or diagnostics response that must echo
	// its request (MAP §6.5, §6.6, §6.8, §6.11, §6.12, §6.16) does not.
	AnomalyEchoMismatch
	// AnomalyTooManyOutstanding: more than MaxOutstanding requests without
	// a response; the oldest was forgotten.
	AnomalyTooManyOutstanding
	// AnomalyLongADU: an ADU longer than the specification's 260 bytes
	// (MBAP length field > 254, MAP §4.1, TCP guide §3.1.3) that is
	// otherwise well formed. Only FC 90 (Schneider UMAS) ADUs are framed
	// this long, up to MaxUMASADULen: Modicon PLCs answer engineering
	// requests with 261-byte ADUs. It is the lowest-ranked anomaly: any
	// other finding about the ADU is reported instead, so a policy that
	// tolerates long_adu tolerates nothing else. A longer ADU, or a long
	// one of another function, cannot be framed (AnomalyMBAPLength).
	AnomalyLongADU

	numAnomalies
)

var anomalyNames = [numAnomalies]string{
	AnomalyNone:                   "none",
	AnomalyTruncated:              "truncated",
	AnomalyProtocolID:             "protocol_id",
	AnomalyMBAPLength:             "mbap_length",
	AnomalyNonModbus:              "non_modbus",
	AnomalyUnknownFunction:        "unknown_function",
	AnomalyPDULength:              "pdu_length",
	AnomalyQuantityOutOfRange:     "quantity_out_of_range",
	AnomalyAddressOutOfRange:      "address_out_of_range",
	AnomalyByteCountMismatch:      "byte_count_mismatch",
	AnomalyBadCoilValue:           "bad_coil_value",
	AnomalyExceptionCodeInvalid:   "exception_code_invalid",
	AnomalyUnknownSubFunction:     "unknown_sub_function",
	AnomalyDiagDataInvalid:        "diag_data_invalid",
	AnomalyDeviceIDInvalid:        "device_id_invalid",
	AnomalyFileReference:          "file_reference",
	AnomalyResponseWithoutRequest: "response_without_request",
	AnomalyTIDMismatch:            "tid_mismatch",
	AnomalyUnitMismatch:           "unit_mismatch",
	AnomalyFunctionMismatch:       "function_mismatch",
	AnomalyEchoMismatch:           "echo_mismatch",
	AnomalyTooManyOutstanding:     "too_many_outstanding",
	AnomalyLongADU:                "long_adu",
}

// String returns the anomaly's stable snake_case name ("none" for the zero
// value, "anomaly_N" for values this version does not know).
func (a Anomaly) String() string {
	if a < numAnomalies {
		return anomalyNames[a]
	}
	return "anomaly_" + strconv.Itoa(int(a))
}

// proto is Modbus's number, registered with its anomaly names.
var proto = protocols.Register(protocols.ProtoModbus, "modbus", protocols.Vocabulary{Anomalies: anomalyNames[:]})

// Tagged returns a as a protocols.Anomaly (AnomalyNone for AnomalyNone),
// the form sessions report and rules match. It does not allocate.
func (a Anomaly) Tagged() protocols.Anomaly { return protocols.NewAnomaly(proto, uint8(a)) }

// ParseAnomaly returns the anomaly with the given String name.
func ParseAnomaly(name string) (Anomaly, bool) {
	for i, n := range anomalyNames {
		if n == name {
			return Anomaly(i), true
		}
	}
	return AnomalyNone, false
}

// Errors. Framing errors (ErrProtocolID, ErrLength) match ErrNotModbus with
// errors.Is; decoding errors match ErrMalformed. The hot path returns these
// sentinels only, never a formatted error.
var (
	// ErrNotModbus: the bytes cannot be a Modbus/TCP ADU.
	ErrNotModbus = errors.New("modbus: not Modbus/TCP")
	// ErrProtocolID: MBAP protocol id is not 0.
	ErrProtocolID error = &kindError{"modbus: MBAP protocol id is not 0", ErrNotModbus}
	// ErrLength: MBAP length field outside 2-254.
	ErrLength error = &kindError{"modbus: MBAP length outside 2-254 (255 for FC 90, UMAS)", ErrNotModbus}
	// ErrTruncated: fewer bytes than one ADU.
	ErrTruncated = errors.New("modbus: truncated ADU")
	// ErrMalformed: the ADU was decoded but breaks the specification; the
	// ADU's Anomaly says how.
	ErrMalformed = errors.New("modbus: malformed ADU")
)

// kindError is a sentinel that also matches its parent kind with errors.Is.
type kindError struct {
	msg    string
	parent error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.parent }
