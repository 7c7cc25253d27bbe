package dnp3

import (
	"errors"

	"github.com/otgw/otgw/protocols"
)

// Anomaly names one way a DNP3 frame, transport segment or application
// fragment departs from IEEE 1815-2012. Rules match anomalies by their
// String names, which are stable. The zero value AnomalyNone means none.
type Anomaly uint8

// Anomalies, by layer.
const (
	AnomalyNone Anomaly = iota

	// Data link layer (clause 9.2).
	AnomalyBadStart  // octets before a frame do not start with 0x05 0x64 (resynchronised)
	AnomalyBadLength // LENGTH below 5 (clause 9.2.4.1.2)
	AnomalyLinkCRC   // header CRC does not match (clause 9.2.4.1.6)
	AnomalyDataCRC   // a data block CRC does not match (clause 9.2.4.2)
	AnomalyBroadcast // destination 0xFFFD-0xFFFF (clause 9.2.5.3.2): legal but worth a rule

	// Transport function (clause 8.2).
	AnomalyTransportSeq       // sequence number did not increment by one (mod 64)
	AnomalyFragmentWithoutFIR // a segment without FIR and no fragment in progress
	AnomalyReassemblyOverflow // fragment larger than the reassembly limit
	AnomalyTransportTruncated // link frame carried no transport header octet

	// Application layer (clause 4.2).
	AnomalyTruncatedHeader // fragment shorter than its application header
	AnomalyUnknownFunction // function code not in Table 4-1
	AnomalyWrongDirection  // request code from the outstation or response code from the master
	AnomalyBadQualifier    // reserved qualifier, or one that cannot go with the object
	AnomalyBadRange        // start index greater than stop index
	AnomalyUnknownObject   // group/variation whose size is not known (walk stopped)
	AnomalyTruncatedObject // object header or data runs past the end of the fragment
	AnomalyTooManyObjects  // more than MaxObjects object headers (walk stopped)
	AnomalyUnexpectedData  // octets after a function that carries no objects

	// Pairing (clause 4.2.2.4, SEQ of the application control octet), found by a stateful observer such as the
	// gateway, never by Fragment.Decode: a solicited response whose SEQ
	// answers no outstanding request while requests await a response.
	AnomalySeqMismatch

	anomalyCount
)

var anomalyNames = [anomalyCount]string{
	AnomalyNone:               "none",
	AnomalyBadStart:           "bad_start",
	AnomalyBadLength:          "bad_length",
	AnomalyLinkCRC:            "link_crc",
	AnomalyDataCRC:            "data_crc",
	AnomalyBroadcast:          "broadcast",
	AnomalyTransportSeq:       "transport_seq",
	AnomalyFragmentWithoutFIR: "fragment_without_fir",
	AnomalyReassemblyOverflow: "reassembly_overflow",
	AnomalyTransportTruncated: "transport_truncated",
	AnomalyTruncatedHeader:    "truncated_header",
	AnomalyUnknownFunction:    "unknown_function",
	AnomalyWrongDirection:     "wrong_direction",
	AnomalyBadQualifier:       "bad_qualifier",
	AnomalyBadRange:           "bad_range",
	AnomalyUnknownObject:      "unknown_object",
	AnomalyTruncatedObject:    "truncated_object",
	AnomalyTooManyObjects:     "too_many_objects",
	AnomalyUnexpectedData:     "unexpected_data",
	AnomalySeqMismatch:        "seq_mismatch",
}

// String returns the stable snake_case name used in events and policies.
func (a Anomaly) String() string {
	if a < anomalyCount {
		return anomalyNames[a]
	}
	return "unknown_anomaly"
}

// proto is DNP3's number, registered with its anomaly names (and the
// short spelling "crc" of data_crc).
var proto = protocols.Register(protocols.ProtoDNP3, "dnp3", protocols.Vocabulary{
	Anomalies: anomalyNames[:],
	Aliases:   map[string]uint8{"crc": uint8(AnomalyDataCRC)},
})

// Tagged returns a as a protocols.Anomaly (AnomalyNone for AnomalyNone),
// the form sessions report and rules match. It does not allocate.
func (a Anomaly) Tagged() protocols.Anomaly { return protocols.NewAnomaly(proto, uint8(a)) }

// AnomalyByName returns the anomaly with the given String name.
func AnomalyByName(name string) (Anomaly, bool) {
	for i, n := range anomalyNames {
		if n == name {
			return Anomaly(i), true
		}
	}
	// Accept the short spelling of the data CRC anomaly.
	if name == "crc" {
		return AnomalyDataCRC, true
	}
	return AnomalyNone, false
}

// Errors returned by the decoders. They are sentinels so the hot path can
// compare them without allocating; the matching Anomaly is set as well.
var (
	ErrTruncated   = errors.New("dnp3: truncated")
	ErrBadStart    = errors.New("dnp3: link frame does not start with 0x05 0x64")
	ErrBadLength   = errors.New("dnp3: link LENGTH below 5")
	ErrLinkCRC     = errors.New("dnp3: link header CRC error")
	ErrDataCRC     = errors.New("dnp3: link data block CRC error")
	ErrFragment    = errors.New("dnp3: application fragment shorter than its header")
	ErrBadFunction = errors.New("dnp3: unknown application function code")
	ErrObjects     = errors.New("dnp3: malformed object headers")
	ErrNoUserData  = errors.New("dnp3: link frame carries no transport header")
)
