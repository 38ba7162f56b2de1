"""cocotb testbench of the DMA engine (in :class:`~tessera.sim.dma_system.DmaSystem`).

Main memory is cocotbext-axi's ``AxiRam`` (or, for the benchmark, :mod:`axi_latency_ram`
with a fixed latency), with pause generators on every channel. Every transfer is checked
against the golden model of memory (``sw/golden/dma.py``) on both sides: the local rows it
should have written, and main memory (inside and outside the block).

The job comes as JSON in ``$TESSERA_JOB``; figures go to ``$TESSERA_RESULT``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tessera.hw.config import TesseraConfig
from tessera.hw.dma import command_layout, done_layout
from tessera.hw.memory import acc_port_signature, spad_port_signature
from tessera.sim.packing import unpack_lanes
from tessera.sw.golden import dma as golden

# Error injection: reads and writes of the top BAD_SIZE bytes of main memory answer SLVERR.
BAD_SIZE = 256


def inject_errors(ram, lo: int, hi: int) -> None:
    """Make ``ram`` (an ``AxiRam``) answer SLVERR to any beat that touches [lo, hi)."""
    read, write = ram.read_if._read, ram.write_if._write

    async def faulty_read(address, length):
        if address + length > lo and address < hi:
            raise IndexError("injected read error")
        return await read(address, length)

    async def faulty_write(address, data):
        if address + len(data) > lo and address < hi:
            raise IndexError("injected write error")
        return await write(address, data)

    ram.read_if._read, ram.write_if._write = faulty_read, faulty_write


class Harness:
    def __init__(self, dut, config: TesseraConfig, job: dict):
        self.dut, self.config, self.job = dut, config, job
        self.cmd_layout = command_layout(config)
        self.done_layout = done_layout(config)
        self.base = job["mem_base"]
        self.size = job["mem_size"]
        self.mem = np.zeros(self.size, dtype=np.uint8)          # golden main memory
        self.spad = np.zeros((config.spad_rows, config.spad_row_bytes), dtype=np.int64)
        self.acc = np.zeros((config.acc_rows, config.cols), dtype=np.int64)
        self.cycle = 0

    async def step(self):
        await FallingEdge(self.dut.clk)
        self.cycle += 1

    async def send(self, name: str, payload: int, timeout: int = 200_000):
        valid, ready = getattr(self.dut, f"{name}__valid"), getattr(self.dut, f"{name}__ready")
        getattr(self.dut, f"{name}__payload").value = payload
        valid.value = 1
        for _ in range(timeout):
            await ReadOnly()
            fired = int(ready.value)
            await self.step()
            if fired:
                break
        else:
            raise TimeoutError(f"{name} not ready within {timeout} cycles (a hang)")
        valid.value = 0

    async def recv(self, name: str, timeout: int = 200_000, what: str = "") -> int:
        valid, ready = getattr(self.dut, f"{name}__valid"), getattr(self.dut, f"{name}__ready")
        ready.value = 1
        for _ in range(timeout):
            await ReadOnly()
            if int(valid.value):
                value = int(getattr(self.dut, f"{name}__payload").value)
                await self.step()
                ready.value = 0
                return value
            await self.step()
        raise TimeoutError(f"no completion on {name} within {timeout} cycles (a hang) {what}")

    def done(self, word: int) -> tuple[str, int]:
        err_off, err_w = self.done_layout["error"].offset, self.done_layout["error"].width
        a_off = self.done_layout["addr"].offset
        code = (word >> err_off) & ((1 << err_w) - 1)
        name = {v: k for k, v in golden.ERRORS.items()}[code]
        return name, (word >> a_off) & ((1 << self.config.addr_bits) - 1)

    async def local(self, which: str, addr: int, write: bool = False, row=None) -> np.ndarray:
        sig = spad_port_signature(self.config) if which == "spad" else \
            acc_port_signature(self.config)
        req_layout = sig.members["req"].signature.members["payload"].shape
        fields = {"addr": addr, "write": int(write),
                  "data": [int(v) for v in (row if row is not None else
                                            np.zeros(sig.row_shape.length, int))]}
        if sig.accumulate:
            fields["accumulate"] = 0
        port = f"dbg_{which}__req"
        await self.send(port, req_layout.const(fields).as_value().value)
        # The answer (a read's data, a write's "written") comes once the port's request
        # is served: a few cycles at most, as nothing else runs meanwhile.
        resp_layout = sig.members["resp"].shape
        answered = resp_layout["written" if write else "valid"].offset
        for _ in range(16):
            await ReadOnly()
            resp = int(getattr(self.dut, f"dbg_{which}__resp").value)
            await self.step()
            if resp >> answered & 1:
                data = resp >> resp_layout["data"].offset & ((1 << sig.row_shape.size) - 1)
                return unpack_lanes([data], sig.row_shape)[0]
        raise TimeoutError(f"no answer from the {which} debug port (a hang)")


def random_command(rng: random.Random, h: Harness, load: bool) -> golden.DmaCommand:
    """A random transfer inside the good part of memory. Loads go to the scratchpad, or
    into the accumulator as int8 times a scale or as whole lanes (wide, a quarter of them
    with stride 0: one row, a bias, into many accumulator rows); a few have a bad shape."""
    c = h.config
    if load and rng.random() < 0.05:
        return bad_shape_command(rng, h)
    kind = rng.random() if load else 1.0
    wide = kind < 0.25 and c.acc_bits % 8 == 0
    to_acc = kind < 0.45
    if wide:
        row_bytes = golden.lane_bytes(c) * rng.randint(1, c.cols)
    else:
        row_bytes = rng.randint(1, c.cols if to_acc else c.spad_row_bytes)
    rows = rng.randint(1, 12)
    if load and rng.random() < (0.25 if wide else 0.1):
        stride = 0
    elif rng.random() < 0.4:
        stride = row_bytes
    else:
        stride = row_bytes + rng.randint(0, 3 * c.bus_bytes)
    extent = (rows - 1) * stride + row_bytes
    lo = h.base
    # Mostly inside the good part of memory; sometimes near 4 KiB boundaries.
    if rng.random() < 0.3:
        boundary = h.base + 4096 * rng.randint(1, max(1, h.size // 4096 - 1))
        addr = boundary - rng.randint(1, 2 * c.bus_bytes)
    else:
        addr = rng.randint(lo, h.base + h.size - BAD_SIZE - extent - 1)
    depth = c.acc_rows if to_acc else c.spad_rows
    local_addr = rng.randint(0, depth - rows)
    return golden.DmaCommand(addr, stride, rows, row_bytes, local_addr, to_acc,
                             to_acc and rng.random() < 0.5, rng.choice([1, 1, -1, 3, -7, 300]),
                             wide)


def bad_shape_command(rng: random.Random, h: Harness) -> golden.DmaCommand:
    """A load the engine must refuse with SHAPE: empty, wider than its kind of local row,
    wide but not into the accumulator, or wide but not whole lanes."""
    c = h.config
    # Any row_bytes the command's field can hold, not only the allowed ones.
    field_max = (1 << h.cmd_layout["row_bytes"].width) - 1
    lb = golden.lane_bytes(c)
    choices = [
        (1, 0, True, False), (0, 4, False, False),               # no bytes; no rows
        (2, rng.randint(1, c.spad_row_bytes), False, True),      # wide into the scratchpad
    ]
    if c.cols < field_max:                                       # narrow into the acc
        choices.append((2, rng.randint(c.cols + 1, field_max), True, False))
    if c.spad_row_bytes < field_max:
        choices.append((2, rng.randint(c.spad_row_bytes + 1, field_max), False, False))
    if c.acc_row_bytes < field_max:
        choices.append((2, rng.randint(c.acc_row_bytes + 1, field_max), True, True))
    if lb > 1:
        choices.append((2, lb * rng.randint(0, c.cols - 1) + rng.randint(1, lb - 1), True, True))
    rows, row_bytes, to_acc, wide = rng.choice(choices)
    return golden.DmaCommand(h.base + rng.randint(0, 64), row_bytes, rows, row_bytes,
                             rng.randint(0, 8), to_acc, rng.random() < 0.5, 1, wide)


def start_in_reset(dut, window_base: int, window_size: int) -> None:
    """Start the clock, hold reset, idle every stream and set the main-memory window."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("i_load", "i_store", "dbg_spad__req", "dbg_acc__req"):
        getattr(dut, f"{name}__valid").value = 0
    for name in ("o_load_done", "o_store_done"):
        getattr(dut, f"{name}__ready").value = 0
    dut.window_base.value = window_base
    dut.window_size.value = window_size


async def setup(dut):
    """Clock, reset, main memory (``AxiRam`` with pauses and injected errors) and the
    golden model, all initialised from the job."""
    from cocotbext.axi import AxiBus, AxiRam

    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(open(os.environ["TESSERA_JOB"]).read())
    h = Harness(dut, config, job)
    rng = random.Random(job["seed"])
    start_in_reset(dut, h.base, h.size)
    h.bad_lo = h.base + h.size - BAD_SIZE
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=h.base + h.size)
    inject_errors(ram, h.bad_lo, h.base + h.size)
    for log in (ram.write_if.log, ram.read_if.log):
        log.setLevel(logging.WARNING)  # a line per burst would dominate the run time
    pause = job["pause"]
    if pause:
        for i, ch in enumerate((ram.write_if.aw_channel, ram.write_if.w_channel,
                                ram.write_if.b_channel, ram.read_if.ar_channel,
                                ram.read_if.r_channel)):
            prng = random.Random(job["seed"] * 10 + i)
            ch.set_pause_generator(iter(lambda r=prng: r.random() < pause, None))
    init = np.frombuffer(rng.randbytes(h.size), dtype=np.uint8).copy()
    ram.write(h.base, init.tobytes())
    h.mem[:] = init
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await h.step()
    return h, ram, rng


async def check_local(h: Harness, cmd: golden.DmaCommand) -> None:
    which = "acc" if cmd.to_acc else "spad"
    model = h.acc if cmd.to_acc else h.spad
    for r in range(cmd.local_addr, cmd.local_addr + cmd.rows):
        got = await h.local(which, r)
        assert (got == model[r]).all(), \
            f"{which} row {r} after {cmd}: got {got.tolist()}, want {model[r].tolist()}"


def main_memory(h: Harness, ram) -> np.ndarray:
    return np.frombuffer(ram.read(h.base, h.size), dtype=np.uint8)


async def run_transfers(h: Harness, ram, rng: random.Random, count: int) -> dict:
    """``count`` random loads and stores (some refused, some hitting injected errors),
    each checked against the golden model on both sides."""
    config = h.config
    counts = {"loads": 0, "stores": 0, "wide_loads": 0, "wide_stride0": 0, "errors": {},
              "bytes": 0}
    error_rate = h.job.get("error_rate", 0.0)
    for n in range(count):
        load = rng.random() < 0.5
        cmd = random_command(rng, h, load)
        kind = rng.random()
        if kind < error_rate / 2:
            # Outside the window: refused before any bus traffic.
            cmd = golden.DmaCommand(h.base + h.size - 2, 4, 1, 4, 0)
        elif kind < error_rate:
            rb = rng.randint(1, config.spad_row_bytes)
            cmd = golden.DmaCommand(h.bad_lo - rb, rb, rng.randint(2, 8), rb, 0)
        expect = golden.check_command(cmd, config, h.base, h.size, load)
        touches_bad = expect == "NONE" and \
            (golden.block_offsets(cmd, h.base).max() + h.base >= h.bad_lo)
        payload = h.cmd_layout.const(cmd.as_payload()).as_value().value
        if load:
            await h.send("i_load", payload)
            err, addr = h.done(await h.recv("o_load_done", what=f"for {cmd}"))
        else:
            await h.send("i_store", payload)
            err, addr = h.done(await h.recv("o_store_done", what=f"for {cmd}"))
        if touches_bad:
            assert err == "SLVERR", f"transfer {n} {cmd}: expected SLVERR, got {err}"
            # The report names the first failing burst: it starts inside the block.
            assert cmd.dram_addr <= addr < h.bad_lo + config.bus_bytes, (hex(addr), cmd)
        else:
            assert err == expect, f"transfer {n} {cmd}: expected {expect}, got {err}"
        counts["errors"][err] = counts["errors"].get(err, 0) + 1
        if err != "NONE":
            if not load and err == "SLVERR":
                # Bursts before the failing one were written: take the block from memory.
                idx = golden.block_offsets(cmd, h.base)
                h.mem[idx] = main_memory(h, ram)[idx]
            continue
        if load:
            golden.load(h.mem, cmd, config, h.acc if cmd.to_acc else h.spad, h.base)
            await check_local(h, cmd)
            counts["loads"] += 1
            if cmd.wide:
                counts["wide_loads"] += 1
                counts["wide_stride0"] += int(cmd.stride == 0 and cmd.rows > 1)
        else:
            golden.store(h.mem, cmd, h.spad[cmd.local_addr:cmd.local_addr + cmd.rows], h.base)
            counts["stores"] += 1
            now = main_memory(h, ram)
            diff = np.flatnonzero(now != h.mem)
            assert diff.size == 0, \
                f"store {n} {cmd}: main memory differs at {diff.size} bytes, first at " \
                f"{hex(h.base + diff[0])}: got {now[diff[0]]}, want {h.mem[diff[0]]}"
        counts["bytes"] += cmd.rows * cmd.row_bytes
    # Nothing outside the checked blocks ever changed.
    assert (main_memory(h, ram) == h.mem).all(), "main memory differs from the model at the end"
    return counts


@cocotb.test()
async def dma_job(dut):
    h, ram, rng = await setup(dut)
    counts = await run_transfers(h, ram, rng, h.job["transfers"])
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump(counts, f)


@cocotb.test()
async def dma_reset_midway(dut):
    """Reset in the middle of a long load and a long store; the engine then works."""
    h, ram, rng = await setup(dut)
    c = h.config
    rows = min(64, c.spad_rows // 2)
    load = golden.DmaCommand(h.base, c.spad_row_bytes, rows, c.spad_row_bytes, 0)
    store = golden.DmaCommand(h.base + h.size // 2, c.spad_row_bytes, rows,
                              c.spad_row_bytes, rows)
    cocotb.start_soon(h.send("i_load", h.cmd_layout.const(load.as_payload()).as_value().value))
    await h.send("i_store", h.cmd_layout.const(store.as_payload()).as_value().value)
    await ClockCycles(dut.clk, rng.randint(5, 40))
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    for name in ("i_load", "i_store"):
        getattr(dut, f"{name}__valid").value = 0
    await h.step()
    # The SRAMs keep what was written before the reset; resynchronise the model.
    for r in range(2 * rows):
        h.spad[r] = await h.local("spad", r)
    h.mem[:] = main_memory(h, ram)
    counts = await run_transfers(h, ram, rng, h.job["transfers"])
    assert counts["loads"] + counts["stores"] > 0
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump(counts, f)


@cocotb.test()
async def dma_bandwidth(dut):
    """Long reads and long writes against a memory with a fixed latency: bytes per cycle.

    Also injects a decode error (DECERR) at the end and checks it is reported."""
    from tessera.sim.axi_latency_ram import LatencyAxiRam

    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(open(os.environ["TESSERA_JOB"]).read())
    h = Harness(dut, config, job)
    base, size = job["mem_base"], job["mem_size"]
    bad = (base + size - 4096, base + size)
    ram = LatencyAxiRam(dut, "m_axi_", base, size, job["latency_cycles"], decerr=bad)
    rng = np.random.default_rng(job["seed"])
    ram.mem[:] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    start_in_reset(dut, base, size)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0

    async def memory():
        while True:
            await FallingEdge(dut.clk)
            ram.drive()
            await ReadOnly()
            ram.sample(0)

    cocotb.start_soon(memory())
    rb = config.spad_row_bytes
    rows = job["rows"]
    figures = {}
    start_wall = time.perf_counter()
    for direction, name, done in (("read", "i_load", "o_load_done"),
                                  ("write", "i_store", "o_store_done")):
        addr = base if direction == "read" else base + size // 2
        cmd = golden.DmaCommand(addr, rb, rows, rb, 0)
        await h.step()
        t0 = ram.cycle
        await h.send(name, h.cmd_layout.const(cmd.as_payload()).as_value().value)
        err, _ = h.done(await h.recv(done, timeout=100 * rows + 10_000))
        cycles = ram.cycle - t0
        assert err == "NONE", f"long {direction}: {err}"
        figures[f"{direction}_cycles"] = cycles
        figures[f"{direction}_bytes_per_cycle"] = rows * rb / cycles
    # The store wrote back exactly what the load read.
    src = np.frombuffer(bytes(ram.mem[:rows * rb]), dtype=np.uint8)
    dst = np.frombuffer(bytes(ram.mem[size // 2:size // 2 + rows * rb]), dtype=np.uint8)
    assert (src == dst).all(), "the long store did not write back what the long load read"
    for name, done in (("i_load", "o_load_done"), ("i_store", "o_store_done")):
        cmd = golden.DmaCommand(bad[0] + 3, rb, 4, rb, 0)
        await h.send(name, h.cmd_layout.const(cmd.as_payload()).as_value().value)
        err, addr = h.done(await h.recv(done))
        assert err == "DECERR" and addr == bad[0] + 3, (name, err, hex(addr))
    figures["sim_cycles"] = ram.cycle
    figures["sim_wall_s"] = time.perf_counter() - start_wall
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump(figures, f)
