package gen

import "github.com/otgw/otgw/simulate/capture"

func captureFlags() capture.TCPFlags { return capture.TCPFlags{PSH: true, ACK: true} }
