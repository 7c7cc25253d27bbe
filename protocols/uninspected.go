package protocols

import "encoding/binary"

// App names an industrial protocol the gateway recognises on a flow but
// does not inspect: such a flow rides a plain `tcp:`/`udp:` rule, and its
// events name the protocol (app_proto) so that a SOC sees S7comm, not
// "tcp". The zero value AppNone means nothing was recognised.
type App uint8

// Recognised, uninspected protocols.
const (
	AppNone App = iota
	// AppS7comm: Siemens S7comm over ISO-on-TCP, TPKT (RFC 1006) and COTP
	// (ISO 8073) on TCP 102.
	AppS7comm
	// AppENIP: EtherNet/IP encapsulation (CIP explicit messaging,
	// ODVA Vol. 2 section 2-3) on TCP or UDP 44818.
	AppENIP
	// AppENIPIO: EtherNet/IP implicit (class 0/1) I/O on UDP 2222.
	AppENIPIO
	// AppIEC104: IEC 60870-5-104 APCI (start byte 0x68) on TCP 2404.
	AppIEC104
)

// String returns the app_proto name: "s7comm", "enip" (explicit and
// implicit EtherNet/IP alike, as Suricata names it) or "iec104"; "" for
// AppNone.
func (a App) String() string {
	switch a {
	case AppS7comm:
		return "s7comm"
	case AppENIP, AppENIPIO:
		return "enip"
	case AppIEC104:
		return "iec104"
	}
	return ""
}

// Title is the protocol's name for people (learn's review comments).
func (a App) Title() string {
	switch a {
	case AppS7comm:
		return "S7comm (ISO-on-TCP, TPKT/COTP)"
	case AppENIP:
		return "EtherNet/IP (CIP)"
	case AppENIPIO:
		return "EtherNet/IP implicit I/O (CIP)"
	case AppIEC104:
		return "IEC 60870-5-104"
	}
	return ""
}

// Recognise names the uninspected industrial protocol of a packet of a
// TCP (udp false) or UDP flow between srcPort and dstPort carrying
// payload, or AppNone. The protocol's registered port must be one end of
// the flow (a request goes to it, a response comes from it), and a
// payload, when there is one, must look like the protocol: a TPKT
// header with a COTP TPDU code, an EtherNet/IP encapsulation header with
// a defined command and a length that fits, an IEC 104 APCI. An empty
// payload (a SYN, a bare ACK) is recognised by the port alone. Pure and
// allocation-free.
func Recognise(udp bool, srcPort, dstPort uint16, payload []byte) App {
	a := byPort(udp, dstPort)
	if a == AppNone {
		a = byPort(udp, srcPort)
	}
	if a == AppNone || len(payload) == 0 || looksLike(a, payload) {
		return a
	}
	return AppNone
}

// byPort is the protocol registered on port for the transport.
func byPort(udp bool, port uint16) App {
	switch {
	case port == 102 && !udp:
		return AppS7comm
	case port == 44818:
		return AppENIP
	case port == 2222 && udp:
		return AppENIPIO
	case port == 2404 && !udp:
		return AppIEC104
	}
	return AppNone
}

// looksLike checks the start of a payload against a's header.
func looksLike(a App, b []byte) bool {
	switch a {
	case AppS7comm:
		// TPKT: version 3, reserved 0, length >= header + COTP LI byte
		// (RFC 1006 section 6); COTP: length indicator, then the TPDU
		// code in the high nibble (CR 0xE, CC 0xD, DR 0x8, DC 0xC, DT 0xF,
		// ED 0x1, AK 0x6, EA 0x2, RJ 0x5, ER 0x7; ISO 8073 section 13).
		if len(b) < 6 || b[0] != 3 || b[1] != 0 || binary.BigEndian.Uint16(b[2:4]) < 7 {
			return false
		}
		switch b[5] >> 4 {
		case 0xE, 0xD, 0x8, 0xC, 0xF, 0x1, 0x6, 0x2, 0x5, 0x7:
			return int(b[4]) >= 1
		}
		return false
	case AppENIP:
		// Encapsulation header (24 bytes, little endian): command,
		// length of the data that follows, session, status, context,
		// options. A segment may carry several or part of one message,
		// so the length need only fit below the 65511-byte maximum.
		if len(b) < 24 {
			return false
		}
		switch binary.LittleEndian.Uint16(b[0:2]) {
		case 0x0000, 0x0004, 0x0063, 0x0064, 0x0065, 0x0066, 0x006F, 0x0070, 0x0072, 0x0073:
			return binary.LittleEndian.Uint16(b[2:4]) <= 65511
		}
		return false
	case AppENIPIO:
		// Common Packet Format: an item count, then typed items (at
		// least the address and data items of a connected packet).
		return len(b) >= 6 && binary.LittleEndian.Uint16(b[0:2]) >= 1 && binary.LittleEndian.Uint16(b[0:2]) <= 8
	case AppIEC104:
		// APCI: start 0x68, APDU length 4-253 (IEC 60870-5-104 section
		// 5.1).
		return len(b) >= 2 && b[0] == 0x68 && b[1] >= 4 && b[1] <= 253
	}
	return false
}
