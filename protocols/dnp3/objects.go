package dnp3

// objKind says how the data of one object of a group/variation is sized
// (IEEE 1815-2012 Annex A, the object library).
type objKind uint8

const (
	kindUnknown  objKind = iota // size unknown: the walk must stop
	kindFixed                   // size octets per object
	kindPacked                  // size bits per point, packed over the whole range
	kindNoData                  // class objects (g60): never carry data
	kindAttr                    // g0 device attribute: type, length, value
	kindFreeOnly                // only valid with a free-format (size-prefixed) qualifier
)

// objectSize returns how objects of group g, variation v are sized.
// Variation 0 ("any variation") has no size: it is only valid where
// objects carry no data (READ and similar requests).
func objectSize(g, v uint8) (objKind, int) {
	switch g {
	case 0: // device attributes (A.1)
		if v == 0 {
			return kindUnknown, 0
		}
		return kindAttr, 0
	case 1: // binary input (A.2)
		switch v {
		case 1:
			return kindPacked, 1
		case 2:
			return kindFixed, 1
		}
	case 2: // binary input event (A.3)
		switch v {
		case 1:
			return kindFixed, 1
		case 2:
			return kindFixed, 7
		case 3:
			return kindFixed, 3
		}
	case 3: // double-bit binary input (A.4)
		switch v {
		case 1:
			return kindPacked, 2
		case 2:
			return kindFixed, 1
		}
	case 4: // double-bit binary input event (A.5)
		switch v {
		case 1:
			return kindFixed, 1
		case 2:
			return kindFixed, 7
		case 3:
			return kindFixed, 3
		}
	case 10: // binary output (A.6)
		switch v {
		case 1:
			return kindPacked, 1
		case 2:
			return kindFixed, 1
		}
	case 11, 13: // binary output event, binary output command event (A.7, A.9)
		switch v {
		case 1:
			return kindFixed, 1
		case 2:
			return kindFixed, 7
		}
	case 12: // binary output command (A.8): CROB, PCB, pattern mask
		switch v {
		case 1, 2:
			return kindFixed, 11
		case 3:
			return kindPacked, 1
		}
	case 20: // counter (A.10)
		if s := pick(v, 5, 3, 5, 3, 4, 2, 4, 2); s > 0 {
			return kindFixed, s
		}
	case 21: // frozen counter (A.11)
		if s := pick(v, 5, 3, 5, 3, 11, 9, 11, 9, 4, 2, 4, 2); s > 0 {
			return kindFixed, s
		}
	case 22, 23: // counter event, frozen counter event (A.12, A.13)
		if s := pick(v, 5, 3, 5, 3, 11, 9, 11, 9); s > 0 {
			return kindFixed, s
		}
	case 30: // analog input (A.14)
		if s := pick(v, 5, 3, 4, 2, 5, 9); s > 0 {
			return kindFixed, s
		}
	case 31: // frozen analog input (A.15)
		if s := pick(v, 5, 3, 11, 9, 4, 2, 5, 9); s > 0 {
			return kindFixed, s
		}
	case 32, 33, 42, 43: // analog events, analog output (command) events
		if s := pick(v, 5, 3, 11, 9, 5, 9, 11, 15); s > 0 {
			return kindFixed, s
		}
	case 34: // analog input reporting deadband (A.18)
		if s := pick(v, 2, 4, 4); s > 0 {
			return kindFixed, s
		}
	case 40, 41: // analog output status, analog output block (A.19, A.20)
		if s := pick(v, 5, 3, 5, 9); s > 0 {
			return kindFixed, s
		}
	case 50: // time and date (A.23)
		if s := pick(v, 6, 10, 6, 11); s > 0 {
			return kindFixed, s
		}
	case 51: // common time of occurrence (A.24)
		if s := pick(v, 6, 6); s > 0 {
			return kindFixed, s
		}
	case 52: // time delay (A.25)
		if s := pick(v, 2, 2); s > 0 {
			return kindFixed, s
		}
	case 60: // class objects (A.26)
		if v >= 1 && v <= 4 {
			return kindNoData, 0
		}
	case 70: // file control (A.27): free format
		if v >= 1 && v <= 8 {
			return kindFreeOnly, 0
		}
	case 80: // internal indications (A.28)
		if v == 1 {
			return kindPacked, 1
		}
	case 83: // data set / private registration objects (A.29)
		if v == 1 || v == 2 {
			return kindFreeOnly, 0
		}
	case 85, 87, 88: // data set prototype, present value, snapshot (A.30, A.32, A.33)
		if v == 1 {
			return kindFreeOnly, 0
		}
	case 86: // data set descriptor (A.31)
		switch v {
		case 1, 3:
			return kindFreeOnly, 0
		case 2:
			return kindFixed, 1
		}
	case 90: // application identifier (A.34)
		if v == 1 {
			return kindFreeOnly, 0
		}
	case 91: // status of requested operation (A.35)
		if v == 1 {
			return kindFreeOnly, 0
		}
	case 101: // binary-coded decimal integer (A.37)
		if s := pick(v, 2, 4, 8); s > 0 {
			return kindFixed, s
		}
	case 102: // unsigned integer (A.38)
		if v == 1 {
			return kindFixed, 1
		}
	case 110, 111, 112, 113: // octet strings, virtual terminal: variation = length (A.39-A.42)
		if v > 0 {
			return kindFixed, int(v)
		}
	case 120: // secure authentication (A.45)
		switch {
		case v == 3: // aggressive mode request: CSQ (4), user number (2)
			return kindFixed, 6
		case v == 4: // session key status request: user number (2)
			return kindFixed, 2
		case v >= 1 && v <= 15:
			return kindFreeOnly, 0
		}
	case 121: // security statistic (A.46)
		if v == 1 {
			return kindFixed, 7
		}
	case 122: // security statistic event (A.47)
		if s := pick(v, 7, 13); s > 0 {
			return kindFixed, s
		}
	}
	return kindUnknown, 0
}

// pick returns sizes[v-1], or 0 when v is outside 1..len(sizes).
func pick(v uint8, sizes ...int) int {
	if v == 0 || int(v) > len(sizes) {
		return 0
	}
	return sizes[v-1]
}
