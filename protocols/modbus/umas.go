package modbus

import (
	"strconv"

	"github.com/otgw/otgw/protocols"
)

// Schneider Electric UMAS, the engineering protocol of Unity/EcoStruxure
// Control Expert for Modicon PLCs, rides Modbus/TCP in function code 90
// (0x5A), a code the specification neither defines nor leaves to users
// (MAP §5.1). Its PDU is
//
//	request:  0x5A | pairing key (1) | UMAS function code (1) | data
//	response: 0x5A | pairing key (1) | 0xFE (ok) or 0xFD (error) | data
//
// and a device answers engineering requests with ADUs one byte longer than
// the specification allows: MBAP length 255 (a 261-byte ADU). Framer and
// Decode accept such an ADU for FC 90 only; Decode decodes it fully and
// names the excess AnomalyLongADU ("long_adu"), a condition a policy
// allows with `tolerate: [long_adu]` and that is denied as
// malformed:long_adu otherwise (the rest of the session is unaffected when
// tolerated). Function
// codes and sizes from the public reverse engineering the Wireshark UMAS
// dissector follows (packet-mbtcp.h). Decode puts the UMAS function code of
// a request in ADU.Sub (HasSub), the pairing key in UMASKey, and the
// status of a response in UMASStatus, so that a policy can allow or deny
// by `function: 90/<sub>`.
const (
	// FuncUMAS is the Modbus function code of Schneider UMAS.
	FuncUMAS uint8 = 90
	// MaxUMASLengthField is the largest MBAP length field of a UMAS ADU
	// that Framer and Decode accept (255: unit id, function code and 253
	// UMAS bytes), one more than MaxLengthField.
	MaxUMASLengthField = 255
	// MaxUMASADULen is the largest UMAS ADU on the wire (261 bytes), the
	// largest ADU this package frames.
	MaxUMASADULen = 6 + MaxUMASLengthField

	// UMASResponseOK and UMASResponseError are the status codes of a UMAS
	// response.
	UMASResponseOK    uint8 = 0xFE
	UMASResponseError uint8 = 0xFD
)

// UMAS function codes (the byte after the pairing key of a request).
const (
	UMASInitComm              uint8 = 0x01
	UMASReadID                uint8 = 0x02
	UMASReadProjectInfo       uint8 = 0x03
	UMASReadPLCInfo           uint8 = 0x04
	UMASReadCardInfo          uint8 = 0x06
	UMASRepeat                uint8 = 0x0A
	UMASTakePLCReservation    uint8 = 0x10
	UMASReleasePLCReservation uint8 = 0x11
	UMASKeepAlive             uint8 = 0x12
	UMASReadMemoryBlock       uint8 = 0x20
	UMASReadVariables         uint8 = 0x22
	UMASWriteVariables        uint8 = 0x23
	UMASReadCoilsRegisters    uint8 = 0x24
	UMASWriteCoilsRegisters   uint8 = 0x25
	UMASDataDictionary        uint8 = 0x26
	UMASInitializeUpload      uint8 = 0x30
	UMASUploadBlock           uint8 = 0x31
	UMASEndStrategyUpload     uint8 = 0x32
	UMASInitializeDownload    uint8 = 0x33
	UMASDownloadBlock         uint8 = 0x34
	UMASEndStrategyDownload   uint8 = 0x35
	UMASReadEthMasterData     uint8 = 0x39
	UMASStartPLC              uint8 = 0x40
	UMASStopPLC               uint8 = 0x41
	UMASMonitorPLC            uint8 = 0x50
	UMASCheckPLC              uint8 = 0x58
	UMASReadIOObject          uint8 = 0x70
	UMASWriteIOObject         uint8 = 0x71
	UMASGetStatusModule       uint8 = 0x73
)

// umasNames are the snake_case names of the UMAS function codes. Upload
// and download follow the PLC's view as the dissector names them:
// 0x30-0x32 read the application from the PLC, 0x33-0x35 write one to it.
var umasNames = [...]struct {
	code uint8
	name string
}{
	{UMASInitComm, "init_comm"}, {UMASReadID, "read_id"}, {UMASReadProjectInfo, "read_project_info"},
	{UMASReadPLCInfo, "read_plc_info"}, {UMASReadCardInfo, "read_card_info"}, {UMASRepeat, "repeat"},
	{UMASTakePLCReservation, "take_plc_reservation"}, {UMASReleasePLCReservation, "release_plc_reservation"},
	{UMASKeepAlive, "keep_alive"}, {UMASReadMemoryBlock, "read_memory_block"},
	{UMASReadVariables, "read_variables"}, {UMASWriteVariables, "write_variables"},
	{UMASReadCoilsRegisters, "read_coils_registers"}, {UMASWriteCoilsRegisters, "write_coils_registers"},
	{UMASDataDictionary, "data_dictionary"}, {UMASInitializeUpload, "initialize_upload"},
	{UMASUploadBlock, "upload_block"}, {UMASEndStrategyUpload, "end_strategy_upload"},
	{UMASInitializeDownload, "initialize_download"}, {UMASDownloadBlock, "download_block"},
	{UMASEndStrategyDownload, "end_strategy_download"}, {UMASReadEthMasterData, "read_eth_master_data"},
	{UMASStartPLC, "start_plc"}, {UMASStopPLC, "stop_plc"}, {UMASMonitorPLC, "monitor_plc"},
	{UMASCheckPLC, "check_plc"}, {UMASReadIOObject, "read_io_object"}, {UMASWriteIOObject, "write_io_object"},
	{UMASGetStatusModule, "get_status_module"},
}

// UMASFunctionName returns the name of a UMAS function code, or
// "umas_0xNN" for a code without one.
func UMASFunctionName(code uint8) string {
	for _, u := range umasNames {
		if u.code == code {
			return u.name
		}
	}
	return "umas_0x" + strconv.FormatUint(uint64(code)|0x100, 16)[1:]
}

// UMASFunctionByName returns the UMAS function code named s
// (UMASFunctionName's spelling).
func UMASFunctionByName(s string) (uint8, bool) {
	for _, u := range umasNames {
		if u.name == s {
			return u.code, true
		}
	}
	return 0, false
}

// UMASFunctionNames lists the named UMAS function codes in code order.
func UMASFunctionNames() []string {
	out := make([]string, len(umasNames))
	for i, u := range umasNames {
		out[i] = u.name
	}
	return out
}

// maxLengthField returns the largest MBAP length field allowed for an ADU
// with function code fc (the exception bit ignored).
func maxLengthField(fc uint8) int {
	if fc&^ExceptionBit == FuncUMAS {
		return MaxUMASLengthField
	}
	return MaxLengthField
}

// decodeUMAS reads the pairing key and the UMAS function code (request) or
// status (response) of an FC 90 PDU; UMAS data is left in Data.
func (a *ADU) decodeUMAS() {
	d := a.Data
	if len(d) < 2 {
		a.flag(AnomalyTruncated)
		return
	}
	a.UMASKey = d[0]
	if a.Dir == protocols.Response {
		a.UMASStatus = d[1]
		return
	}
	a.HasSub, a.Sub = true, uint16(d[1])
}
