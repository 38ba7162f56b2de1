"""cocotb testbench of the generic board top (:mod:`~.board_system`): a host program runs
against it through the board's UART pins, as it would against a real board's serial port.

:class:`UartSource` drives ``uart_rx`` with 8N1 frames and :class:`UartSink` decodes
``uart_tx`` (both time bits with timers: no Python per clock cycle).
:class:`BridgedTransport` gives them the synchronous ``write(bytes)`` / ``read(n)`` of a
serial port, for code running in a :func:`cocotb.task.bridge` thread (each call resumes the
simulation until it is done).

The test ``run_host_program`` imports the function ``$TESSERA_HOST_PROGRAM``
(``module:function``; the caller's, e.g. a pytest module), calls it with the transport in
a bridge thread and writes what it returns (JSON) to ``$TESSERA_RESULT``: the host side
(the runtime's ``uart`` backend) is the caller's, unchanged.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from tessera.sim.board_system import SIM_DIVISOR

CLOCK_NS = 10

__all__ = ["UartSource", "UartSink", "BridgedTransport"]


class UartSource:
    """8N1 frames on ``pin``, ``divisor`` clock periods of ``period_ns`` per bit."""

    def __init__(self, pin, divisor: int, period_ns: int):
        self.pin, self.bit_ns = pin, divisor * period_ns
        pin.value = 1
        self.bytes_sent = 0

    async def send(self, data: bytes) -> None:
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.pin.value = bit
                await Timer(self.bit_ns, unit="ns")
            self.bytes_sent += 1


class UartSink:
    """Decodes 8N1 frames on ``pin``, sampling each bit in its middle; bytes go to a
    queue, frames with a bad stop bit to ``errors``."""

    def __init__(self, pin, divisor: int, period_ns: int):
        self.pin, self.bit_ns = pin, divisor * period_ns
        self.queue: Queue = Queue()
        self.errors = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.pin)
            await Timer(self.bit_ns // 2, unit="ns")
            if int(self.pin.value):
                continue                                  # a glitch
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                byte |= int(self.pin.value) << i
            await Timer(self.bit_ns, unit="ns")
            if int(self.pin.value):
                self.queue.put_nowait(byte)
            else:
                self.errors += 1

    async def recv(self, n: int, timeout_ns: int) -> bytes:
        """Up to ``n`` bytes; fewer if none comes for ``timeout_ns``."""
        out = bytearray()
        while len(out) < n:
            if self.queue.empty():
                got = cocotb.start_soon(self.queue.get())
                timer = Timer(timeout_ns, unit="ns")
                if await First(got, timer) is timer:
                    got.cancel()
                    break
                out.append(got.result())
            else:
                out.append(self.queue.get_nowait())
        return bytes(out)


class BridgedTransport:
    """``write(bytes)`` / ``read(n)`` for a :func:`cocotb.task.bridge` thread: each call runs
    the simulation until the bytes are on the line (write) or have come, or no byte came
    for ``timeout_cycles`` (read: a short read, as a serial port's timeout gives)."""

    def __init__(self, source: UartSource, sink: UartSink, timeout_cycles: int,
                 period_ns: int):
        self.source, self.sink = source, sink
        self.timeout_ns = timeout_cycles * period_ns
        self._write = resume(source.send)
        self._read = resume(sink.recv)

    def write(self, data: bytes) -> None:
        self._write(bytes(data))

    def read(self, n: int) -> bytes:
        return self._read(n, self.timeout_ns)


@cocotb.test()
async def run_host_program(dut):
    module, _, name = os.environ["TESSERA_HOST_PROGRAM"].partition(":")
    program = getattr(importlib.import_module(module), name)
    result_path = Path(os.environ["TESSERA_RESULT"])
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    source = UartSource(dut.uart_rx, SIM_DIVISOR, CLOCK_NS)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 40)                   # the board's own reset is held longer
    sink = UartSink(dut.uart_tx, SIM_DIVISOR, CLOCK_NS)
    # A reply's bytes follow each other closely; a request may take the accelerator a
    # while (the host polls, so reads wait only for the link): 200 byte times.
    transport = BridgedTransport(source, sink, 200 * 10 * SIM_DIVISOR, CLOCK_NS)
    started, sim_started = time.time(), get_sim_time(unit="ns")
    out = await bridge(program)(transport)
    wall = time.time() - started
    cycles = (get_sim_time(unit="ns") - sim_started) // CLOCK_NS
    out = dict(out, sim_cycles=int(cycles), wall_seconds=wall,
               bytes_to_board=source.bytes_sent, framing_errors=sink.errors,
               board_error=int(dut.error.value))
    result_path.write_text(json.dumps(out))
