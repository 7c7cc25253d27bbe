package dnp3

// crcTable is the byte-wise table of CRC-16/DNP: polynomial 0x3D65
// (x^16+x^13+x^12+x^11+x^10+x^8+x^6+x^5+x^2+1), processed LSB first (the
// reflected polynomial is 0xA6BC), initial value 0, result inverted
// (IEEE 1815-2012 clause 9.2.3.4 and Annex E.2 of the older Basic 4 set).
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA6BC
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// CRC returns the CRC-16/DNP of b. On the wire it is sent low octet first.
func CRC(b []byte) uint16 {
	var c uint16
	for _, x := range b {
		c = c>>8 ^ crcTable[byte(c)^x]
	}
	return ^c
}

// crcOK reports whether the two octets after data hold data's CRC.
func crcOK(data []byte, crc []byte) bool {
	c := CRC(data)
	return crc[0] == byte(c) && crc[1] == byte(c>>8)
}
