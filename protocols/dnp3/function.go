package dnp3

// FunctionCode is an application layer function code
// (IEEE 1815-2012 clause 4.2.2.5, Table 4-1). Its String names are the
// vocabulary of DNP3 policy rules.
type FunctionCode uint8

// Function codes. Codes 0-33 are requests (CONFIRM is sent by either end),
// 129-131 responses.
const (
	FuncConfirm            FunctionCode = 0
	FuncRead               FunctionCode = 1
	FuncWrite              FunctionCode = 2
	FuncSelect             FunctionCode = 3
	FuncOperate            FunctionCode = 4
	FuncDirectOperate      FunctionCode = 5
	FuncDirectOperateNR    FunctionCode = 6
	FuncImmedFreeze        FunctionCode = 7
	FuncImmedFreezeNR      FunctionCode = 8
	FuncFreezeClear        FunctionCode = 9
	FuncFreezeClearNR      FunctionCode = 10
	FuncFreezeAtTime       FunctionCode = 11
	FuncFreezeAtTimeNR     FunctionCode = 12
	FuncColdRestart        FunctionCode = 13
	FuncWarmRestart        FunctionCode = 14
	FuncInitializeData     FunctionCode = 15
	FuncInitializeAppl     FunctionCode = 16
	FuncStartAppl          FunctionCode = 17
	FuncStopAppl           FunctionCode = 18
	FuncSaveConfig         FunctionCode = 19
	FuncEnableUnsolicited  FunctionCode = 20
	FuncDisableUnsolicited FunctionCode = 21
	FuncAssignClass        FunctionCode = 22
	FuncDelayMeasure       FunctionCode = 23
	FuncRecordCurrentTime  FunctionCode = 24
	FuncOpenFile           FunctionCode = 25
	FuncCloseFile          FunctionCode = 26
	FuncDeleteFile         FunctionCode = 27
	FuncGetFileInfo        FunctionCode = 28
	FuncAuthenticateFile   FunctionCode = 29
	FuncAbortFile          FunctionCode = 30
	FuncActivateConfig     FunctionCode = 31
	FuncAuthenticateReq    FunctionCode = 32
	FuncAuthReqNoAck       FunctionCode = 33
	FuncResponse           FunctionCode = 129
	FuncUnsolicitedResp    FunctionCode = 130
	FuncAuthenticateResp   FunctionCode = 131
)

var functionNames = [...]string{
	FuncConfirm:            "confirm",
	FuncRead:               "read",
	FuncWrite:              "write",
	FuncSelect:             "select",
	FuncOperate:            "operate",
	FuncDirectOperate:      "direct_operate",
	FuncDirectOperateNR:    "direct_operate_nr",
	FuncImmedFreeze:        "immed_freeze",
	FuncImmedFreezeNR:      "immed_freeze_nr",
	FuncFreezeClear:        "freeze_clear",
	FuncFreezeClearNR:      "freeze_clear_nr",
	FuncFreezeAtTime:       "freeze_at_time",
	FuncFreezeAtTimeNR:     "freeze_at_time_nr",
	FuncColdRestart:        "cold_restart",
	FuncWarmRestart:        "warm_restart",
	FuncInitializeData:     "initialize_data",
	FuncInitializeAppl:     "initialize_appl",
	FuncStartAppl:          "start_appl",
	FuncStopAppl:           "stop_appl",
	FuncSaveConfig:         "save_config",
	FuncEnableUnsolicited:  "enable_unsolicited",
	FuncDisableUnsolicited: "disable_unsolicited",
	FuncAssignClass:        "assign_class",
	FuncDelayMeasure:       "delay_measure",
	FuncRecordCurrentTime:  "record_current_time",
	FuncOpenFile:           "open_file",
	FuncCloseFile:          "close_file",
	FuncDeleteFile:         "delete_file",
	FuncGetFileInfo:        "get_file_info",
	FuncAuthenticateFile:   "authenticate_file",
	FuncAbortFile:          "abort_file",
	FuncActivateConfig:     "activate_config",
	FuncAuthenticateReq:    "authenticate_req",
	FuncAuthReqNoAck:       "auth_req_no_ack",
}

// Known reports whether Table 4-1 defines the code.
func (f FunctionCode) Known() bool {
	return int(f) < len(functionNames) || (f >= FuncResponse && f <= FuncAuthenticateResp)
}

// IsResponse reports whether the code is sent by an outstation and its
// fragment carries internal indications (129, 130, 131; clause 4.2.2.6).
func (f FunctionCode) IsResponse() bool { return f >= FuncResponse && f <= FuncAuthenticateResp }

// String returns the snake_case name, or "fc_N" for undefined codes.
func (f FunctionCode) String() string {
	switch f {
	case FuncResponse:
		return "response"
	case FuncUnsolicitedResp:
		return "unsolicited_response"
	case FuncAuthenticateResp:
		return "authenticate_resp"
	}
	if int(f) < len(functionNames) {
		return functionNames[f]
	}
	return "fc_" + itoa(int(f))
}

// FunctionByName returns the function code with the given String name. It
// also accepts the decimal code of a known function ("5"), because policies
// accept numbers wherever a name is.
func FunctionByName(name string) (FunctionCode, bool) {
	switch name {
	case "response":
		return FuncResponse, true
	case "unsolicited_response":
		return FuncUnsolicitedResp, true
	case "authenticate_resp":
		return FuncAuthenticateResp, true
	}
	for i, n := range functionNames {
		if n == name {
			return FunctionCode(i), true
		}
	}
	if len(name) > 0 && len(name) <= 3 {
		v := 0
		for _, c := range []byte(name) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		if v <= 255 && FunctionCode(v).Known() {
			return FunctionCode(v), true
		}
	}
	return 0, false
}

// carriesNoObjectData reports whether, in a request with this function,
// object headers name points without carrying object data (clause 4.4:
// READ, the freeze functions, unsolicited enable/disable, ASSIGN_CLASS).
// FREEZE_AT_TIME carries one g50v2 with data; objectData handles it.
func (f FunctionCode) carriesNoObjectData() bool {
	switch f {
	case FuncRead, FuncImmedFreeze, FuncImmedFreezeNR, FuncFreezeClear, FuncFreezeClearNR,
		FuncFreezeAtTime, FuncFreezeAtTimeNR, FuncEnableUnsolicited, FuncDisableUnsolicited,
		FuncAssignClass:
		return true
	}
	return false
}

// carriesNoObjects reports whether the function has no object headers at
// all (clause 4.4: CONFIRM, the restarts, DELAY_MEASURE, RECORD_CURRENT_TIME).
func (f FunctionCode) carriesNoObjects() bool {
	switch f {
	case FuncConfirm, FuncColdRestart, FuncWarmRestart, FuncDelayMeasure, FuncRecordCurrentTime:
		return true
	}
	return false
}
