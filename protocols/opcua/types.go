package opcua

import "strings"

// MessageType is the UA-TCP / UASC message type (OPC 10000-6 §7.1.2.2,
// §6.7.2.2). The zero value TypeUnknown is not a valid type.
type MessageType uint8

// Message types.
const (
	TypeUnknown MessageType = iota
	TypeHEL                 // Hello, client → server
	TypeACK                 // Acknowledge, server → client
	TypeERR                 // Error, server → client
	TypeRHE                 // ReverseHello, server → client
	TypeOPN                 // OpenSecureChannel
	TypeMSG                 // secured service message
	TypeCLO                 // CloseSecureChannel
)

var typeNames = [...]string{"", "HEL", "ACK", "ERR", "RHE", "OPN", "MSG", "CLO"}

// String returns the three-letter code ("" for TypeUnknown).
func (t MessageType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return ""
}

// messageType maps the three header bytes to a MessageType.
func messageType(a, b, c byte) MessageType {
	switch {
	case a == 'H' && b == 'E' && c == 'L':
		return TypeHEL
	case a == 'A' && b == 'C' && c == 'K':
		return TypeACK
	case a == 'E' && b == 'R' && c == 'R':
		return TypeERR
	case a == 'R' && b == 'H' && c == 'E':
		return TypeRHE
	case a == 'O' && b == 'P' && c == 'N':
		return TypeOPN
	case a == 'M' && b == 'S' && c == 'G':
		return TypeMSG
	case a == 'C' && b == 'L' && c == 'O':
		return TypeCLO
	}
	return TypeUnknown
}

// ChunkType is the IsFinal byte as it appears on the wire: 'F', 'C' or 'A'.
// The zero value means "not decoded".
type ChunkType byte

// Chunk types (OPC 10000-6 §6.7.2.2).
const (
	ChunkFinal        ChunkType = 'F'
	ChunkIntermediate ChunkType = 'C'
	ChunkAbort        ChunkType = 'A'
)

// String returns "F", "C", "A", or "" for any other value.
func (c ChunkType) String() string {
	switch c {
	case ChunkFinal:
		return "F"
	case ChunkIntermediate:
		return "C"
	case ChunkAbort:
		return "A"
	}
	return ""
}

// SecurityMode is the MessageSecurityMode (OPC 10000-4 §7.20). The zero
// value ModeInvalid also stands for "not known".
type SecurityMode uint8

// Security modes, numbered as on the wire.
const (
	ModeInvalid        SecurityMode = 0
	ModeNone           SecurityMode = 1
	ModeSign           SecurityMode = 2
	ModeSignAndEncrypt SecurityMode = 3
)

// String returns "None", "Sign", "SignAndEncrypt", or "" when unknown.
func (m SecurityMode) String() string {
	switch m {
	case ModeNone:
		return "None"
	case ModeSign:
		return "Sign"
	case ModeSignAndEncrypt:
		return "SignAndEncrypt"
	}
	return ""
}

// ModeByName parses a mode as written in policies: "none", "sign",
// "sign_and_encrypt" / "signandencrypt" (any case), or the numbers 1-3.
func ModeByName(s string) (SecurityMode, bool) {
	switch strings.ToLower(strings.ReplaceAll(s, "_", "")) {
	case "none", "1":
		return ModeNone, true
	case "sign", "2":
		return ModeSign, true
	case "signandencrypt", "3":
		return ModeSignAndEncrypt, true
	}
	return ModeInvalid, false
}

// SecurityPolicy is a known SecurityPolicyUri (OPC 10000-7). The zero value
// PolicyUnknown is an absent or unrecognised URI.
type SecurityPolicy uint8

// Security policies.
const (
	PolicyUnknown SecurityPolicy = iota
	PolicyNone
	PolicyBasic128Rsa15
	PolicyBasic256
	PolicyBasic256Sha256
	PolicyAes128Sha256RsaOaep
	PolicyAes256Sha256RsaPss
	policyCount
)

// PolicyURIPrefix is the common prefix of the standard policy URIs.
const PolicyURIPrefix = "http://opcfoundation.org/UA/SecurityPolicy#"

var policyNames = [policyCount]string{
	"", "None", "Basic128Rsa15", "Basic256", "Basic256Sha256",
	"Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss",
}

// String returns the short name (the URI fragment), "" for PolicyUnknown.
func (p SecurityPolicy) String() string {
	if p < policyCount {
		return policyNames[p]
	}
	return ""
}

// URI returns the full SecurityPolicyUri ("" for PolicyUnknown).
func (p SecurityPolicy) URI() string {
	if p == PolicyUnknown || p >= policyCount {
		return ""
	}
	return PolicyURIPrefix + policyNames[p]
}

// symSigLen is the length of the symmetric signature appended to every MSG
// chunk in mode Sign (HMAC-SHA1 for the deprecated policies, HMAC-SHA256
// otherwise; OPC 10000-7).
func (p SecurityPolicy) symSigLen() int {
	switch p {
	case PolicyBasic128Rsa15, PolicyBasic256:
		return 20
	case PolicyBasic256Sha256, PolicyAes128Sha256RsaOaep, PolicyAes256Sha256RsaPss:
		return 32
	}
	return 0
}

// symBlockSize is the block size of the symmetric cipher of p (AES-CBC
// for every known policy but None, OPC 10000-7): a SignAndEncrypt chunk
// encrypts whole blocks. 0: no cipher, or not a block cipher.
func (p SecurityPolicy) symBlockSize() int {
	switch p {
	case PolicyBasic128Rsa15, PolicyBasic256, PolicyBasic256Sha256, PolicyAes128Sha256RsaOaep, PolicyAes256Sha256RsaPss:
		return 16
	}
	return 0
}

// PolicyByName parses a policy by short name (case-insensitive) or full URI.
func PolicyByName(s string) (SecurityPolicy, bool) {
	s = strings.TrimPrefix(s, PolicyURIPrefix)
	for p := PolicyNone; p < policyCount; p++ {
		if strings.EqualFold(s, policyNames[p]) {
			return p, true
		}
	}
	return PolicyUnknown, false
}

// PolicyByURI maps a SecurityPolicyUri as found on the wire; it does not
// allocate.
func PolicyByURI(uri []byte) SecurityPolicy {
	if len(uri) <= len(PolicyURIPrefix) || string(uri[:len(PolicyURIPrefix)]) != PolicyURIPrefix {
		return PolicyUnknown
	}
	frag := uri[len(PolicyURIPrefix):]
	for p := PolicyNone; p < policyCount; p++ {
		if string(frag) == policyNames[p] {
			return p
		}
	}
	return PolicyUnknown
}
