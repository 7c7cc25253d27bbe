#!/usr/bin/python3
"""A real Modbus/TCP server (PLC stand-in) for otgw's end-to-end tests and
`make demo`, on Debian's python3-pymodbus (3.0).

Holding register i starts at 1000 + i and input register i at 2000 + i
(addresses 0-199, zero-based on the wire); coils and discrete inputs
alternate. Usage: modbus_server.py [--host 0.0.0.0] [--port 502] [--unit 1]
"""
import argparse
import logging
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartTcpServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=502)
    ap.add_argument("--unit", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    n = 200
    store = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [i % 2 for i in range(n)]),
        co=ModbusSequentialDataBlock(0, [(i + 1) % 2 for i in range(n)]),
        hr=ModbusSequentialDataBlock(0, [1000 + i for i in range(n)]),
        ir=ModbusSequentialDataBlock(0, [2000 + i for i in range(n)]),
        zero_mode=True,  # request address 0 is register 0
    )
    ctx = ModbusServerContext(slaves={args.unit: store}, single=False)
    print("modbus server listening on %s:%d unit %d" % (args.host, args.port, args.unit), flush=True)
    StartTcpServer(context=ctx, address=(args.host, args.port))


if __name__ == "__main__":
    main()
