package modbus

import "strconv"

// Public function codes (MAP §5.1, §6).
const (
	FuncReadCoils                  uint8 = 1
	FuncReadDiscreteInputs         uint8 = 2
	FuncReadHoldingRegisters       uint8 = 3
	FuncReadInputRegisters         uint8 = 4
	FuncWriteSingleCoil            uint8 = 5
	FuncWriteSingleRegister        uint8 = 6
	FuncReadExceptionStatus        uint8 = 7
	FuncDiagnostics                uint8 = 8
	FuncGetCommEventCounter        uint8 = 11
	FuncGetCommEventLog            uint8 = 12
	FuncWriteMultipleCoils         uint8 = 15
	FuncWriteMultipleRegisters     uint8 = 16
	FuncReportServerID             uint8 = 17
	FuncReadFileRecord             uint8 = 20
	FuncWriteFileRecord            uint8 = 21
	FuncMaskWriteRegister          uint8 = 22
	FuncReadWriteMultipleRegisters uint8 = 23
	FuncReadFIFOQueue              uint8 = 24
	FuncEncapsulatedInterface      uint8 = 43

	// ExceptionBit is set in the function code of an exception response
	// (MAP §7).
	ExceptionBit uint8 = 0x80
)

// MEI types of FC 43 (MAP §6.19-§6.21).
const (
	MEICANopen          uint8 = 13
	MEIReadDeviceID     uint8 = 14
	MaxReadDeviceIDCode uint8 = 4 // codes 1 basic, 2 regular, 3 extended, 4 individual
)

// Diagnostics sub-functions (FC 8, MAP §6.8.1) that take a fixed two-byte
// data field with a defined value.
const (
	DiagReturnQueryData      uint16 = 0x00
	DiagRestartComm          uint16 = 0x01
	DiagReturnRegister       uint16 = 0x02
	DiagChangeASCIIDelimiter uint16 = 0x03
	DiagForceListenOnly      uint16 = 0x04
	DiagClearCounters        uint16 = 0x0A
	DiagClearOverrun         uint16 = 0x14
)

// IsUserDefined reports whether fc is in the user-defined ranges 65-72 or
// 100-110 (MAP §5.1), which the specification leaves to vendors.
func IsUserDefined(fc uint8) bool {
	return (fc >= 65 && fc <= 72) || (fc >= 100 && fc <= 110)
}

// IsPublic reports whether fc is a public function code this package
// decodes (MAP §5.1 and §6).
func IsPublic(fc uint8) bool {
	switch fc {
	case 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43:
		return true
	}
	return false
}

// FunctionName returns the specification's name of a function code in
// snake_case (the exception bit is ignored), "user_defined_N" or
// "function_N".
func FunctionName(fc uint8) string {
	fc &^= ExceptionBit
	switch fc {
	case 1:
		return "read_coils"
	case 2:
		return "read_discrete_inputs"
	case 3:
		return "read_holding_registers"
	case 4:
		return "read_input_registers"
	case 5:
		return "write_single_coil"
	case 6:
		return "write_single_register"
	case 7:
		return "read_exception_status"
	case 8:
		return "diagnostics"
	case 11:
		return "get_comm_event_counter"
	case 12:
		return "get_comm_event_log"
	case 15:
		return "write_multiple_coils"
	case 16:
		return "write_multiple_registers"
	case 17:
		return "report_server_id"
	case 20:
		return "read_file_record"
	case 21:
		return "write_file_record"
	case 22:
		return "mask_write_register"
	case 23:
		return "read_write_multiple_registers"
	case 24:
		return "read_fifo_queue"
	case 43:
		return "encapsulated_interface_transport"
	case FuncUMAS:
		return "umas"
	}
	if IsUserDefined(fc) {
		return "user_defined_" + strconv.Itoa(int(fc))
	}
	return "function_" + strconv.Itoa(int(fc))
}

// Table is the data-model table a PDU addresses (MAP §4.3), or the file or
// FIFO spaces of FC 20/21 and 24.
type Table uint8

// Tables. The zero value TableNone means the PDU addresses no table.
const (
	TableNone Table = iota
	TableCoils
	TableDiscreteInputs
	TableHoldingRegisters
	TableInputRegisters
	TableFile
	TableFIFO
)

// String returns the table's policy name.
func (t Table) String() string {
	switch t {
	case TableCoils:
		return "coils"
	case TableDiscreteInputs:
		return "discrete"
	case TableHoldingRegisters:
		return "holding"
	case TableInputRegisters:
		return "input"
	case TableFile:
		return "file"
	case TableFIFO:
		return "fifo"
	}
	return "none"
}

// ExceptionCode is the code of an exception response (MAP §7).
type ExceptionCode uint8

// Exception codes defined by MAP §7.
const (
	ExceptionNone                    ExceptionCode = 0
	ExceptionIllegalFunction         ExceptionCode = 0x01
	ExceptionIllegalDataAddress      ExceptionCode = 0x02
	ExceptionIllegalDataValue        ExceptionCode = 0x03
	ExceptionServerDeviceFailure     ExceptionCode = 0x04
	ExceptionAcknowledge             ExceptionCode = 0x05
	ExceptionServerDeviceBusy        ExceptionCode = 0x06
	ExceptionMemoryParityError       ExceptionCode = 0x08
	ExceptionGatewayPathUnavailable  ExceptionCode = 0x0A
	ExceptionGatewayTargetNoResponse ExceptionCode = 0x0B
)

// Valid reports whether the code is defined by MAP §7.
func (c ExceptionCode) Valid() bool {
	switch c {
	case 1, 2, 3, 4, 5, 6, 8, 0x0A, 0x0B:
		return true
	}
	return false
}

// String returns the code's snake_case name, or "exception_N".
func (c ExceptionCode) String() string {
	switch c {
	case ExceptionNone:
		return "none"
	case ExceptionIllegalFunction:
		return "illegal_function"
	case ExceptionIllegalDataAddress:
		return "illegal_data_address"
	case ExceptionIllegalDataValue:
		return "illegal_data_value"
	case ExceptionServerDeviceFailure:
		return "server_device_failure"
	case ExceptionAcknowledge:
		return "acknowledge"
	case ExceptionServerDeviceBusy:
		return "server_device_busy"
	case ExceptionMemoryParityError:
		return "memory_parity_error"
	case ExceptionGatewayPathUnavailable:
		return "gateway_path_unavailable"
	case ExceptionGatewayTargetNoResponse:
		return "gateway_target_no_response"
	}
	return "exception_" + strconv.Itoa(int(c))
}
