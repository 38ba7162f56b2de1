"""cocotb testbench of the whole accelerator on the main-memory model
(:class:`~tessera.sim.accel_system.AccelSystem`): one job per simulation.

The job (``$TESSERA_JOB``, JSON, written by ``tessera.sw.runtime``'s RTL backend) names a
memory image (``.npy`` bytes from ``MEM_BASE``), the command buffer, a timeout and what to
read back. The testbench loads the image through the model's back door, programs the
registers over AXI4-Lite, starts the run and waits for the interrupt without touching a
signal per cycle (it wakes every ``progress_cycles`` to read the cycle and command
counters into ``progress.json``), then reads STATUS and the counters, dumps main memory
and, on request, the scratchpad and accumulator through the debug ports. The result goes
to ``$TESSERA_RESULT``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from tessera.hw.config import TesseraConfig
from tessera.hw.memory import acc_port_signature, spad_port_signature
from tessera.hw.registers import (
    COUNTER_BASE,
    COUNTERS,
    DONE_CLEAR,
    OUTCOME_READS,
    REG,
    outcome,
    start_writes,
)
from tessera.sim.memimage import backdoor_dump, backdoor_load
from tessera.sim.packing import unpack_lanes

CLOCK_NS = 10


class Lite:
    """Register accesses through the harness's flopped host port (a few per run)."""

    def __init__(self, dut):
        self.dut = dut

    async def _access(self, addr: int, write: bool, value: int = 0) -> int:
        d = self.dut
        await FallingEdge(d.clk)
        d.host_addr.value, d.host_write.value = addr, int(write)
        d.host_wdata.value = value & 0xFFFFFFFF
        ack = int(d.host_ack.value)
        d.host_req.value = 1 - int(d.host_req.value)
        for _ in range(200):
            await FallingEdge(d.clk)
            if int(d.host_ack.value) != ack:
                if int(d.host_resp.value):
                    raise RuntimeError(f"register {'write' if write else 'read'} at "
                                       f"{addr:#x} answered {int(d.host_resp.value)}")
                return int(d.host_rdata.value)
        raise TimeoutError(f"register access at {addr:#x} not answered")

    async def write(self, addr: int, value: int) -> None:
        await self._access(addr, True, value)

    async def read(self, addr: int) -> int:
        return await self._access(addr, False)

    async def read64(self, addr: int) -> int:
        return await self.read(addr) | (await self.read(addr + 4)) << 32


async def read_rows(dut, config: TesseraConfig, acc: bool, rows: int) -> np.ndarray:
    """Rows of the scratchpad or accumulator, through the harness's debug port."""
    shape = (acc_port_signature(config) if acc else spad_port_signature(config)).row_shape
    words = []
    dut.dbg_acc.value = int(acc)
    for r in range(rows):
        await FallingEdge(dut.clk)
        dut.dbg_addr.value = r
        ack = int(dut.dbg_ack.value)
        dut.dbg_req.value = 1 - int(dut.dbg_req.value)
        for _ in range(100):
            await FallingEdge(dut.clk)
            if int(dut.dbg_ack.value) != ack:
                break
        else:
            raise TimeoutError(f"debug read of row {r} not answered")
        words.append(int(dut.dbg_data.value) & ((1 << shape.size) - 1))
    return np.array(unpack_lanes(words, shape), dtype=np.int64)


async def counters(lite: Lite) -> dict:
    return {name: await lite.read64(COUNTER_BASE + 8 * i)
            for i, (name, _) in enumerate(COUNTERS)}


@cocotb.test()
async def run_job(dut):
    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(Path(os.environ["TESSERA_JOB"]).read_text())
    result_path = Path(os.environ["TESSERA_RESULT"])
    progress_path = result_path.with_name("progress.json")
    bus_bits = config.bus_bits
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for name in ("host_req", "host_write", "host_addr", "host_wdata", "dbg_req", "dbg_acc",
                 "dbg_addr", "bd_load", "bd_dump", "mem_cfg_we", "mem_cfg_sel", "mem_cfg_data"):
        getattr(dut, name).value = 0
    dut.mem_latency.value = job.get("mem_latency", 0)
    dut.mem_gap.value = job.get("mem_gap", 0)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    # The memory model's faults and random timing (sim/bus_faults.py), as the native
    # harness's "fault" request writes them.
    for sel, value in job.get("faults", []):
        await FallingEdge(dut.clk)
        dut.mem_cfg_sel.value, dut.mem_cfg_data.value = sel, value
        dut.mem_cfg_we.value = 1
        await FallingEdge(dut.clk)
        dut.mem_cfg_we.value = 0

    image = np.load(job["image"])
    await backdoor_load(dut.clk, dut.bd_load, image, bus_bits, job["image_word"])
    lite = Lite(dut)
    ident = await lite.read(REG["ID"])
    chash = await lite.read(REG["CONFIG_HASH"])
    if chash != config.hash32:
        raise AssertionError(f"the simulated hardware has configuration hash {chash:#x}, "
                             f"the job expects {config.hash32:#x}")
    for offset, value in start_writes(job):
        await lite.write(offset, value)
    started = time.time()

    timeout = job["timeout_cycles"]
    every = job.get("progress_cycles", 1 << 20)
    waited = 0
    finished = False
    while waited < timeout:
        chunk = min(every, timeout - waited)
        if int(dut.irq.value):
            finished = True
            break
        trigger = await First(RisingEdge(dut.irq), Timer(chunk * CLOCK_NS, unit="ns"))
        waited += chunk
        if int(dut.irq.value) or isinstance(trigger, RisingEdge):
            finished = True
            break
        c = await counters(lite)
        progress_path.write_text(json.dumps({"cycles": c["cycles"], "commands": c["commands"],
                                             "wall_seconds": time.time() - started}))
    wall = time.time() - started
    values = {}
    for key, offset, wide in OUTCOME_READS:
        values[key] = await (lite.read64(offset) if wide else lite.read(offset))
    result = {"id": ident, "finished": finished, "wall_seconds": wall, **outcome(values)}
    if finished:
        await lite.write(*DONE_CLEAR)
        await RisingEdge(dut.clk)
        result["irq_after_clear"] = int(dut.irq.value)
    first, words = job["dump_word"], job["dump_words"]
    if words:
        dump = await backdoor_dump(dut.clk, dut.bd_dump, dut.bd_dump_first, dut.bd_dump_last,
                                   first, words, bus_bits)
        np.save(result_path.with_name("dump.npy"), dump)
    if job.get("onchip"):
        for which, rows in (("spad", config.spad_rows), ("acc", config.acc_rows)):
            data = await read_rows(dut, config, which == "acc", rows)
            np.save(result_path.with_name(f"{which}.npy"), data)
    # The protocol checkers' first violation since the reset (sim/axi_checker.py).
    result["protocol"] = ([int(dut.chk_rule.value), int(dut.chk_cycle.value),
                           int(dut.chk_addr.value)] if int(dut.chk_violation.value) else None)
    result_path.write_text(json.dumps(result))
