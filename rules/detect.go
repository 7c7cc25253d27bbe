package rules

import (
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
)

// Detector is a rate-based detection: the gateway counts matching responses
// per subject (an IP address) and raises one alert event when Count of them
// fall within Window. These are answers a policy allows on their own (an
// exception response, an unsolicited response) whose number betrays a scan
// or a device in trouble (../shared/SCENARIOS.md M11-M13, D2, D10, D11).
// Detections never deny: they add an alert to the event stream, in monitor
// and enforce mode alike.
type Detector uint8

// Detectors, in policy-file order. Values index Ruleset.Detection.
const (
	// DetectModbusServerBusy: Modbus exception responses 05 Acknowledge or
	// 06 Server Device Busy (MAP v1.1b3 section 7) from one server.
	DetectModbusServerBusy Detector = iota
	// DetectModbusAddressScan: exception 02 Illegal Data Address answers to
	// one client: someone walking the points list.
	DetectModbusAddressScan
	// DetectModbusFunctionScan: exception 01 Illegal Function answers to one
	// client: someone probing function codes.
	DetectModbusFunctionScan
	// DetectDNP3UnsolicitedStorm: unsolicited responses (FC 130) from one
	// outstation.
	DetectDNP3UnsolicitedStorm
	// DetectDNP3ObjectScan: responses to one master whose IIN2 reports
	// object unknown (IIN2.1) or parameter error (IIN2.2), IEEE 1815-2012
	// internal indications.
	DetectDNP3ObjectScan
	// DetectDNP3FunctionScan: responses to one master whose IIN2 reports no
	// function code support (IIN2.0).
	DetectDNP3FunctionScan
	// DetectSYNFlood: TCP SYNs from one client refused because it already
	// has as many half-open connections (handshake not complete) as the
	// gateway allows one address: a SYN flood from, or spoofing, that
	// address. Counted by the gateway's flow table, not from responses.
	DetectSYNFlood
	// NumDetectors is the number of detectors.
	NumDetectors
)

var detectorNames = [NumDetectors]string{
	"modbus_server_busy",
	"modbus_address_scan",
	"modbus_function_scan",
	"dnp3_unsolicited_storm",
	"dnp3_object_scan",
	"dnp3_function_scan",
	"syn_flood",
}

// What each detector counts, for event messages.
var detectorWhat = [NumDetectors]string{
	"Modbus busy/acknowledge exceptions (05/06) from",
	"Modbus illegal data address exceptions (02) to",
	"Modbus illegal function exceptions (01) to",
	"DNP3 unsolicited responses from",
	"DNP3 responses with IIN2 object unknown/parameter error to",
	"DNP3 responses with IIN2 no function code support to",
	"SYNs over the half-open connection limit from",
}

// Threshold is one detector's setting: Count matching responses within
// Window raise an alert. Count 0: the detector is off.
type Threshold struct {
	Count  int
	Window time.Duration
}

// MaxDetectCount bounds Threshold.Count: the gateway keeps that many
// timestamps per subject, in memory fixed at start.
const MaxDetectCount = 32

// DefaultThresholds are the settings of a policy without a detections
// section (SCENARIOS.md, after the Quickdraw rules [QD1]).
var DefaultThresholds = [NumDetectors]Threshold{
	DetectModbusServerBusy:     {3, 60 * time.Second},
	DetectModbusAddressScan:    {5, 60 * time.Second},
	DetectModbusFunctionScan:   {3, 60 * time.Second},
	DetectDNP3UnsolicitedStorm: {5, 10 * time.Second},
	DetectDNP3ObjectScan:       {5, 30 * time.Second},
	DetectDNP3FunctionScan:     {3, 60 * time.Second},
	DetectSYNFlood:             {10, 10 * time.Second},
}

// String returns the detector's policy-file name (also the event reason
// after "detect:").
func (d Detector) String() string {
	if d < NumDetectors {
		return detectorNames[d]
	}
	return "detector(" + strconv.Itoa(int(d)) + ")"
}

// What describes what the detector counts, ending with "from" or "to"
// before the subject address.
func (d Detector) What() string {
	if d < NumDetectors {
		return detectorWhat[d]
	}
	return d.String()
}

// DetectorNames lists the detector names in order.
func DetectorNames() []string { return append([]string(nil), detectorNames[:]...) }

// Detection is one entry of the policy's detections section, as written:
// `name: off` or `name: {count: N, window: 60s}`.
type Detection struct {
	Name    string
	Comment string // Marshal: written above the entry (rules/learn)
	Off     bool
	Count   string
	Window  string
}

func (d *decoder) detections(n *yaml.Node) {
	d.named(n, "detections", func(name, path string, k, v *yaml.Node) {
		det := Detection{Name: name, Comment: comment(k)}
		if v.Kind == yaml.ScalarNode {
			switch v.Value {
			case "off", "false":
				det.Off = true
			default:
				d.errAt(nodePos(v), "detection %q must be off or a mapping with count and window, not %q", name, v.Value)
			}
		} else {
			d.fields(v, path, "detection "+strconv.Quote(name), []string{"count", "window"}, func(key string, _, v *yaml.Node) {
				switch key {
				case "count":
					det.Count = d.str(v, "count")
				case "window":
					det.Window = d.str(v, "window")
				}
			})
		}
		d.p.Detections = append(d.p.Detections, det)
	})
}

// compileDetections fills rs.detect from the defaults and the policy's
// detections section.
func (c *compiler) detections(rs *Ruleset) {
	rs.detect = DefaultThresholds
	for _, det := range c.p.Detections {
		path := "detections." + det.Name
		i := -1
		for j, n := range detectorNames {
			if n == det.Name {
				i = j
			}
		}
		if i < 0 {
			c.errf(path+"^", "unknown detection %q (one of %s)%s", det.Name, strings.Join(detectorNames[:], ", "), suggest(det.Name, detectorNames[:]))
			continue
		}
		if det.Off {
			rs.detect[i] = Threshold{}
			continue
		}
		t := DefaultThresholds[i]
		if det.Count != "" {
			n, err := strconv.Atoi(det.Count)
			if err != nil || n < 1 || n > MaxDetectCount {
				c.errf(path+".count", "detection %s: count must be a number from 1 to %d, not %q", det.Name, MaxDetectCount, det.Count)
				continue
			}
			t.Count = n
		}
		if det.Window != "" {
			w, err := time.ParseDuration(det.Window)
			if err != nil || w <= 0 || w > 24*time.Hour {
				c.errf(path+".window", "detection %s: window must be a duration such as 30s or 5m (at most 24h), not %q", det.Name, det.Window)
				continue
			}
			t.Window = w
		}
		rs.detect[i] = t
	}
}

// Detection returns the setting of detector d (Count 0: off).
func (rs *Ruleset) Detection(d Detector) Threshold {
	if rs == nil || d >= NumDetectors {
		return Threshold{}
	}
	return rs.detect[d]
}

// marshalDetections writes the detections section in policy order.
func marshalDetections(p *Policy) *yaml.Node {
	m := mapping()
	for _, det := range p.Detections {
		if det.Off {
			k := add(m, det.Name, scalar("off"))
			k.HeadComment = commentText(det.Comment)
			continue
		}
		v := flowMapping()
		if det.Count != "" {
			add(v, "count", scalar(det.Count))
		}
		if det.Window != "" {
			add(v, "window", scalar(det.Window))
		}
		k := add(m, det.Name, v)
		k.HeadComment = commentText(det.Comment)
	}
	return m
}

// DetectMatch is one rate detector a response counts for. Server: the
// subject is the responding device (the response's source address), not
// the requester the response goes to.
type DetectMatch struct {
	Det    Detector
	Server bool
}

// MaxDetectMatches is the most detectors one response counts for.
const MaxDetectMatches = 2

// Detections returns the rate detectors the response p counts for (the
// first n of m): a Modbus exception 01, 02, 05 or 06; a DNP3 unsolicited
// response, or a solicited one whose IIN2 reports no function support,
// an unknown object or a parameter error. Requests count for none. It is
// the one classification the engine counts by and learn measures with; it
// allocates nothing.
func (p *PDU) Detections() (m [MaxDetectMatches]DetectMatch, n int) {
	if p.Dir != protocols.Response {
		return m, 0
	}
	add := func(det Detector, server bool) {
		m[n] = DetectMatch{det, server}
		n++
	}
	switch p.Proto {
	case protocols.ProtoModbus:
		if p.Modbus.FC&0x80 == 0 {
			break
		}
		switch modbus.ExceptionCode(p.Modbus.Exception) {
		case modbus.ExceptionIllegalFunction:
			add(DetectModbusFunctionScan, false)
		case modbus.ExceptionIllegalDataAddress:
			add(DetectModbusAddressScan, false)
		case modbus.ExceptionAcknowledge, modbus.ExceptionServerDeviceBusy:
			add(DetectModbusServerBusy, true)
		}
	case protocols.ProtoDNP3:
		switch dnp3.FunctionCode(p.DNP3.FC) {
		case dnp3.FuncUnsolicitedResp:
			add(DetectDNP3UnsolicitedStorm, true)
		case dnp3.FuncResponse:
			// The scans are read in solicited responses (FC 0x81).
			if p.DNP3.IIN&(dnp3.IINObjectUnknown|dnp3.IINParameterError) != 0 {
				add(DetectDNP3ObjectScan, false)
			}
			if p.DNP3.IIN&dnp3.IINNoFuncCodeSupport != 0 {
				add(DetectDNP3FunctionScan, false)
			}
		}
	}
	return m, n
}
