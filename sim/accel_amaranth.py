"""The whole accelerator in Amaranth's own simulator: no Verilog, no compiler.

It is the ``amaranth`` backend of the runtime and what the fast test tier runs the DMA,
the store unit and the accelerator on. Main memory is :class:`~.axi_latency_ram.
LatencyAxiRam` over the runtime's image (the same model the cocotb benchmarks use, with a
fixed latency and pipelined bursts); the registers are written and read over AXI4-Lite as
a driver would, and the scratchpad and accumulator are read through the debug ports. It
simulates about 1,000 cycles per second on the tiny configuration: small programs.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from amaranth.sim import Simulator

from ..hw.accelerator import Accelerator
from ..hw.config import TesseraConfig
from ..hw.registers import (
    DONE_CLEAR,
    OUTCOME_READS,
    REG,
    outcome,
    start_writes,
)
from .axi_checker import Axi4Checker, AxiLiteChecker
from .axi_latency_ram import LatencyAxiRam

__all__ = ["run_accelerator"]


class _Pin:
    """One signal seen through the simulator context, as the memory model expects it."""

    def __init__(self, ctx, signal):
        self._ctx, self._signal = ctx, signal

    @property
    def value(self) -> int:
        return self._ctx.get(self._signal)

    @value.setter
    def value(self, v: int) -> None:
        self._ctx.set(self._signal, v)

    def __len__(self) -> int:
        return len(self._signal)


class _Pins:
    """``m_axi_<name>`` attributes of the accelerator's AXI4 master, as :class:`_Pin`."""

    def __init__(self, ctx, port):
        self._ctx, self._port = ctx, port

    def __getattr__(self, name: str) -> _Pin:
        return _Pin(self._ctx, getattr(self._port, name.removeprefix("m_axi_")))


class _Bench:
    """One testbench for everything, a cycle at a time: the memory answers, the host
    drives AXI4-Lite and the debug ports, the protocol checkers watch both ports (as the
    Verilog checkers do in the simulated system), then the clock ticks."""

    def __init__(self, ctx, dut: Accelerator, ram: LatencyAxiRam):
        self.ctx, self.dut, self.ram = ctx, dut, ram
        self.cycles = 0
        self.checkers = ((Axi4Checker(len(dut.m_axi.rdata) // 8), dut.m_axi),
                         (AxiLiteChecker(), dut.s_axil))

    async def cycle(self) -> None:
        self.ram.drive()
        for checker, port in self.checkers:
            checker.step(lambda name, port=port: self.ctx.get(getattr(port, name)))
        self.ram.sample(self.cycles)
        await self.ctx.tick()
        self.cycles += 1

    async def write(self, addr: int, value: int) -> None:
        ctx, lite = self.ctx, self.dut.s_axil
        ctx.set(lite.awaddr, addr)
        ctx.set(lite.wdata, value & 0xFFFFFFFF)
        ctx.set(lite.wstrb, 0xF)
        ctx.set(lite.awvalid, 1)
        ctx.set(lite.wvalid, 1)
        ctx.set(lite.bready, 1)
        aw = w = False
        for _ in range(100):
            aw = aw or bool(ctx.get(lite.awready))
            w = w or bool(ctx.get(lite.wready))
            b = bool(ctx.get(lite.bvalid))
            await self.cycle()
            ctx.set(lite.awvalid, int(not aw))
            ctx.set(lite.wvalid, int(not w))
            if b:
                ctx.set(lite.bready, 0)
                return
        raise RuntimeError(f"no AXI4-Lite write response for register {addr:#x}")

    async def read(self, addr: int) -> int:
        ctx, lite = self.ctx, self.dut.s_axil
        ctx.set(lite.araddr, addr)
        ctx.set(lite.arvalid, 1)
        ctx.set(lite.rready, 1)
        ar = False
        for _ in range(100):
            ar = ar or bool(ctx.get(lite.arready))
            if ctx.get(lite.rvalid):
                value = ctx.get(lite.rdata)
                await self.cycle()
                ctx.set(lite.rready, 0)
                ctx.set(lite.arvalid, 0)
                return value
            await self.cycle()
            ctx.set(lite.arvalid, int(not ar))
        raise RuntimeError(f"no AXI4-Lite read response for register {addr:#x}")

    async def read64(self, addr: int) -> int:
        return await self.read(addr) | await self.read(addr + 4) << 32

    async def rows(self, port, n: int) -> list[int]:
        """Rows 0 .. n-1 through a debug port (one request at a time)."""
        ctx, out = self.ctx, []
        for r in range(n):
            ctx.set(port.req.payload.addr, r)
            ctx.set(port.req.payload.write, 0)
            ctx.set(port.req.valid, 1)
            while not ctx.get(port.req.ready):
                await self.cycle()
            await self.cycle()
            ctx.set(port.req.valid, 0)
            while not ctx.get(port.resp.valid):
                await self.cycle()
            out.append(ctx.get(port.resp.data.as_value()))
        return out


def run_accelerator(config: TesseraConfig, image: np.ndarray, base: int, job: dict) -> dict:
    """Run the program ``job`` describes (``cmd_addr``, ``cmd_count``, ``window_base``,
    ``window_size``, ``timeout_cycles``, ``mem_latency``, ``onchip``) on the accelerator
    with main memory ``image`` (bytes from address ``base``; written in place). Returns
    what the other harnesses return: ``finished``, ``status``, the error registers, the
    counters, ``wall_seconds`` and, with ``onchip``, the scratchpad and accumulator."""
    dut = Accelerator(config, debug_ports=True)
    out: dict = {}

    async def bench(ctx):
        ram = LatencyAxiRam(_Pins(ctx, dut.m_axi), "m_axi", base, image.size,
                            job["mem_latency"])
        ram.mem = image                       # the runtime's image, written in place
        b = _Bench(ctx, dut, ram)
        for _ in range(4):
            await b.cycle()
        chash = await b.read(REG["CONFIG_HASH"])
        if chash != config.hash32:
            raise RuntimeError(f"the simulated hardware has configuration hash {chash:#x}, "
                               f"the runtime expects {config.hash32:#x}")
        for offset, value in start_writes(job):
            await b.write(offset, value)
        start = b.cycles
        while not ctx.get(dut.irq) and b.cycles - start < job["timeout_cycles"]:
            await b.cycle()
        out["finished"] = bool(ctx.get(dut.irq))
        values = {}
        for key, offset, wide in OUTCOME_READS:
            values[key] = await (b.read64(offset) if wide else b.read(offset))
        out.update(outcome(values))
        if out["finished"]:
            await b.write(*DONE_CLEAR)
        if job["onchip"]:
            out["spad"] = await b.rows(dut.dbg_spad, config.spad_rows)
            out["acc"] = await b.rows(dut.dbg_acc, config.acc_rows)
        found = [c.first for c, _ in b.checkers if c.first is not None]
        out["protocol"] = min(found, key=lambda f: f[1]) if found else None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sim.run()
    out["wall_seconds"] = time.time() - t
    return out
