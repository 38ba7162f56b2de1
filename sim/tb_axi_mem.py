"""cocotb testbench of the Verilog AXI4 memory model (``sim/hdl/tessera_axi_mem.v``).

cocotbext-axi's ``AxiMaster`` drives the model; a numpy copy of the memory is the
reference. The model's parameters come as JSON in ``$TESSERA_AXI_MEM`` (``data_bits``,
``base``, ``words``, ``latency``, ``max_bursts``), as ``tests/test_axi_mem_rtl.py`` built it.

The tests run in one simulation, one after the other, on the same memory; each resets the
model (which empties its queues but keeps the contents) and starts its reference from a
back-door dump of the whole memory.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from tessera.sim import memimage

OKAY, DECERR = 0, 3
MAX_BURST_BEATS = 16    # the master splits transfers into bursts of at most this many beats


class Harness:
    """The model's parameters, a master on its port and the reference copy of memory
    (``ref[a]`` is the byte at address ``a``; out-of-range bytes stay zero)."""

    def __init__(self, dut, pause: float = 0.0, seed: int = 1):
        from cocotbext.axi import AxiBus, AxiMaster

        p = json.loads(os.environ["TESSERA_AXI_MEM"])
        self.dut = dut
        self.bus_bits = p["data_bits"]
        self.lanes = self.bus_bits // 8
        self.base, self.words = p["base"], p["words"]
        self.latency, self.max_bursts = p["latency"], p["max_bursts"]
        self.size = self.words * self.lanes
        self.top = self.base + self.size
        # The tests also reach this far below (if there is room) and above the memory.
        guard = max(512, self.size // 8 // self.lanes * self.lanes)
        self.lo, self.hi = max(0, self.base - guard), self.top + guard
        self.ref = np.zeros(self.hi, dtype=np.uint8)
        self.master = AxiMaster(AxiBus.from_prefix(dut, "s_axi_"), dut.clk, dut.rst,
                                max_burst_len=MAX_BURST_BEATS)
        for side in (self.master.write_if, self.master.read_if):
            side.log.setLevel(logging.WARNING)    # not a line per burst
        if pause:
            prng = random.Random(seed)
            for ch in (self.master.write_if.aw_channel, self.master.write_if.w_channel,
                       self.master.write_if.b_channel, self.master.read_if.ar_channel,
                       self.master.read_if.r_channel):
                ch.set_pause_generator(iter(lambda r=prng: r.random() < pause, None))

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        for name in ("bd_load", "bd_dump", "bd_dump_first", "bd_dump_last", "cfg_latency",
                     "cfg_gap", "cfg_we", "cfg_sel", "cfg_data"):
            getattr(self.dut, name).value = 0
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        # The reference starts from what the memory holds (earlier tests wrote to it).
        d = self.dut
        self.ref[self.base:self.top] = await memimage.backdoor_dump(
            d.clk, d.bd_dump, d.bd_dump_first, d.bd_dump_last, 0, self.words, self.bus_bits)

    def in_range(self, addr: int, length: int) -> bool:
        return self.base <= addr and addr + length <= self.top

    async def write(self, addr: int, data: bytes) -> None:
        resp = await self.master.write(addr, data)
        lo, hi = max(addr, self.base), min(addr + len(data), self.top)
        if lo < hi:   # only the beats inside the memory are written
            self.ref[lo:hi] = np.frombuffer(data, np.uint8)[lo - addr:hi - addr]
        want = OKAY if self.in_range(addr, len(data)) else DECERR
        assert int(resp.resp) == want, f"write {addr:#x}+{len(data)}: resp {resp.resp}"

    async def read_check(self, addr: int, length: int) -> None:
        resp = await self.master.read(addr, length)
        want = OKAY if self.in_range(addr, length) else DECERR
        assert int(resp.resp) == want, f"read {addr:#x}+{length}: resp {resp.resp}"
        got = np.frombuffer(resp.data, np.uint8)
        exp = self.ref[addr:addr + length]
        if not np.array_equal(got, exp):
            bad = int(np.flatnonzero(got != exp)[0])
            raise AssertionError(f"read {addr:#x}+{length}: byte {addr + bad:#x} is "
                                 f"{got[bad]:#04x}, not {exp[bad]:#04x}")


class Probe:
    """Cycle-by-cycle record of the handshakes (sampled at falling edges, where the
    values are those of the coming rising edge)."""

    def __init__(self, dut):
        self.dut = dut
        self.events: dict[str, list[int]] = {k: [] for k in
                                             ("ar", "r", "rvalid", "rlast", "aw", "w", "b")}
        cocotb.start_soon(self._run())

    async def _run(self):
        d, cycle = self.dut, 0
        pairs = {"ar": ("s_axi__arvalid", "s_axi__arready"),
                 "r": ("s_axi__rvalid", "s_axi__rready"),
                 "aw": ("s_axi__awvalid", "s_axi__awready"),
                 "w": ("s_axi__wvalid", "s_axi__wready"),
                 "b": ("s_axi__bvalid", "s_axi__bready")}
        while True:
            await FallingEdge(d.clk)
            for name, (valid, ready) in pairs.items():
                if int(getattr(d, valid).value) and int(getattr(d, ready).value):
                    self.events[name].append(cycle)
                    if name == "r" and int(d.s_axi__rlast.value):
                        self.events["rlast"].append(cycle)
            if int(d.s_axi__rvalid.value):
                self.events["rvalid"].append(cycle)
            cycle += 1


async def random_traffic(dut, pause: float, seed: int, ops: int):
    """Workers on disjoint regions (the outer ones reach past both ends of the memory)
    write random byte ranges (partial strobes at both ends) and read them back, all at
    once, so bursts of all of them are in flight together."""
    h = Harness(dut, pause, seed)
    await h.start()
    rng = random.Random(seed)
    workers = 4
    lo_all, hi_all = h.lo, h.hi
    span = (hi_all - lo_all) // workers
    counts = {"decerr": 0, "ops": 0}

    async def worker(k: int):
        lo = lo_all + k * span
        r = random.Random(rng.random())
        for _ in range(ops):
            length = r.choice([1, 2, 3, h.lanes, r.randint(1, 4 * h.lanes),
                               r.randint(1, 40 * h.lanes)])
            addr = r.randint(lo, lo + span - length)
            if r.random() < 0.55:
                await h.write(addr, r.randbytes(length))
            else:
                await h.read_check(addr, length)
            counts["ops"] += 1
            counts["decerr"] += not h.in_range(addr, length)

    tasks = [cocotb.start_soon(worker(k)) for k in range(workers)]
    for t in tasks:
        await t
    # Everything once more, to catch a write that landed in the wrong place.
    for at in range(lo_all, hi_all, 1024):
        await h.read_check(at, min(1024, hi_all - at))
    assert counts["decerr"] > 5, counts
    dut._log.info("random traffic: %s", counts)


@cocotb.test()
async def axi_mem_random(dut):
    await random_traffic(dut, pause=0.0, seed=11, ops=60)


@cocotb.test()
async def axi_mem_random_pauses(dut):
    await random_traffic(dut, pause=0.3, seed=12, ops=40)


@cocotb.test()
async def axi_mem_streaming(dut):
    """A long read of many back-to-back bursts streams one beat per cycle after a single
    latency; so does a long write, with its last response one latency after its data."""
    h = Harness(dut)
    await h.start()
    probe = Probe(dut)
    bursts = 4 * h.max_bursts + 3
    beats = bursts * MAX_BURST_BEATS
    assert beats <= h.words, "the memory is too small for this test"
    data = np.random.default_rng(5).integers(0, 256, beats * h.lanes, dtype=np.uint8)

    await h.write(h.base, data.tobytes())
    e = probe.events
    assert len(e["aw"]) == bursts and len(e["w"]) == beats and len(e["b"]) == bursts
    w_cycles = e["w"][-1] - e["w"][0] + 1
    b_latency = e["b"][-1] - e["w"][-1]
    assert b_latency == max(h.latency, 2), f"B {b_latency} cycles after the data"
    # Full bandwidth needs enough bursts in flight to cover the latency.
    streams = (h.max_bursts - 1) * MAX_BURST_BEATS >= h.latency + 4
    assert w_cycles <= beats + 4 or not streams, f"{beats} write beats took {w_cycles} cycles"

    for v in e.values():
        v.clear()
    await h.read_check(h.base, beats * h.lanes)
    assert len(e["ar"]) == bursts and len(e["r"]) == beats and len(e["rlast"]) == bursts
    first_latency = e["rvalid"][0] - e["ar"][0]
    total = e["r"][-1] - e["ar"][0] + 1
    dut._log.info("read: %d beats in %d bursts, first beat after %d cycles, %d cycles in all",
                  beats, bursts, first_latency, total)
    assert first_latency == max(h.latency, 2), f"first beat after {first_latency} cycles"
    assert total <= h.latency + beats + 4 or not streams, (
        f"{beats} beats took {total} cycles: the latency is not pipelined")


@cocotb.test()
async def axi_mem_backdoor(dut):
    """Load two images through the back door ($readmemh with @ directives), read them
    over the bus, write over part of them, and dump a range back ($writememh)."""
    h = Harness(dut)
    await h.start()
    rng = np.random.default_rng(9)
    first = rng.integers(0, 256, 300 * h.lanes + 5, dtype=np.uint8)   # a partial last word
    second = rng.integers(0, 256, 64 * h.lanes, dtype=np.uint8)
    at1, at2 = 40, h.words - 64
    n = await memimage.backdoor_load(dut.clk, dut.bd_load, first, h.bus_bits, at1)
    assert n == 301
    padded = np.zeros(n * h.lanes, np.uint8)
    padded[:len(first)] = first
    h.ref[h.base + at1 * h.lanes:h.base + (at1 + n) * h.lanes] = padded
    # A file of two parts, each with its own @ directive.
    text = memimage.encode(second[:32 * h.lanes], h.bus_bits, at2)
    text += memimage.encode(second[32 * h.lanes:], h.bus_bits, at2 + 32)
    Path(memimage.LOAD_FILE).write_bytes(text)
    dut.bd_load.value = 1
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.bd_load.value = 0
    await RisingEdge(dut.clk)
    h.ref[h.base + at2 * h.lanes:h.top] = second

    await h.read_check(h.base + at1 * h.lanes, len(first))
    await h.read_check(h.top - len(second) - 3, len(second) + 3)
    await h.write(h.base + (at1 + 10) * h.lanes + 3, bytes(range(1, 100)))
    await h.write(h.top - 7, b"\xa5" * 20)     # runs past the end: DECERR, in part written

    got = await memimage.backdoor_dump(dut.clk, dut.bd_dump, dut.bd_dump_first,
                                       dut.bd_dump_last, at1, n, h.bus_bits)
    exp = h.ref[h.base + at1 * h.lanes:h.base + (at1 + n) * h.lanes]
    assert np.array_equal(got, exp), "dump of the first image differs"
    got = await memimage.backdoor_dump(dut.clk, dut.bd_dump, dut.bd_dump_first,
                                       dut.bd_dump_last, at2, 64, h.bus_bits)
    assert np.array_equal(got, h.ref[h.base + at2 * h.lanes:h.top]), "dump of the top differs"


@cocotb.test()
async def axi_mem_edges(dut):
    """Single beats on both sides of both ends of the memory, and bursts across them."""
    h = Harness(dut)
    await h.start()
    n = h.lanes
    rng = random.Random(4)
    for edge in (h.base, h.top):
        for addr in (edge - n, edge):
            if addr >= 0:
                await h.write(addr, rng.randbytes(n))
                await h.read_check(addr, n)
        if edge >= 3 * n:     # six beats, three on either side
            await h.write(edge - 3 * n, rng.randbytes(6 * n))
            await h.read_check(edge - 3 * n, 6 * n)
        if edge >= n:         # a partial beat on either side
            await h.read_check(edge - n + 1, 2 * n - 2)


async def configure(dut, writes) -> None:
    """The model's configuration port (sim/bus_faults.py: ``BusFaults.registers()``)."""
    for sel, value in writes:
        await FallingEdge(dut.clk)
        dut.cfg_sel.value, dut.cfg_data.value, dut.cfg_we.value = sel, value, 1
        await FallingEdge(dut.clk)
        dut.cfg_we.value = 0


@cocotb.test()
async def axi_mem_faults(dut):
    """Random latency and stalls on all five channels, an SLVERR range for reads and a
    DECERR range for writes: every byte still lands where it should, the beats in a range
    answer its error (a read beat zeros, a write beat not written), the others OKAY; set
    back to no faults, the ranges answer OKAY again."""
    from tessera.sim.bus_faults import BusFaults, ErrorRange

    h = Harness(dut)
    await h.start()
    n, base = h.lanes, h.base
    rd = (base + 0x200, base + 0x240)        # SLVERR on reads
    wr = (base + 0x400 + 3, base + 0x404)    # DECERR on writes: one bus word
    faults = BusFaults(seed=5, latency=(3, 40), stall_ar=0.4, stall_r=0.4, stall_aw=0.4,
                       stall_w=0.4, stall_b=0.4,
                       errors=(ErrorRange(*rd, "slverr", writes=False),
                               ErrorRange(*wr, "decerr", reads=False)))
    dut.cfg_latency.value = faults.base_latency(0)
    await configure(dut, faults.registers())
    try:
        await _faulty_traffic(dut, h, rd, wr)
    finally:     # the configuration outlives resets: the next tests need none
        await configure(dut, BusFaults().registers())
        dut.cfg_latency.value = 0
    await h.read_check(rd[0], rd[1] - rd[0])
    await h.write(wr[0], b"\x5a")
    await h.read_check(wr[0] // n * n, n)


async def _faulty_traffic(dut, h, rd, wr) -> None:
    n, base = h.lanes, h.base
    rng = random.Random(8)
    chunk = 8 * n

    def overlaps(addr, length, lo, hi):     # whole bus words
        return addr // n * n < hi and -(-(addr + length) // n) * n > lo

    for addr in range(base, base + 0x600, chunk):
        data = rng.randbytes(chunk)
        resp = await h.master.write(addr, data)
        bad = overlaps(addr, chunk, *wr)
        assert int(resp.resp) == (DECERR if bad else OKAY), f"write {addr:#x}: {resp.resp}"
        word = wr[0] // n * n
        kept = h.ref[word:word + n].copy()
        h.ref[addr:addr + chunk] = np.frombuffer(data, np.uint8)
        if bad:     # the beat in the range is not written: it keeps what it held
            h.ref[word:word + n] = kept
    for addr in range(base, base + 0x600, chunk):
        resp = await h.master.read(addr, chunk)
        got = np.frombuffer(resp.data, np.uint8)
        exp = h.ref[addr:addr + chunk].copy()
        bad = overlaps(addr, chunk, *rd)
        if bad:
            lo, hi = max(rd[0] // n * n, addr), min(-(-rd[1] // n) * n, addr + chunk)
            exp[lo - addr:hi - addr] = 0
        assert int(resp.resp) == (2 if bad else OKAY), f"read {addr:#x}: {resp.resp}"
        assert np.array_equal(got, exp), f"read {addr:#x}: data differs"


@cocotb.test()
async def axi_mem_reset_midway(dut):
    """A reset with bursts in flight empties the queues; traffic afterwards is served
    normally (the memory keeps what was written before the reset)."""
    h = Harness(dut)
    await h.start()
    rng = random.Random(3)
    for k in range(4):
        cocotb.start_soon(h.master.write(h.base + k * 1024, rng.randbytes(700)))
        cocotb.start_soon(h.master.read(h.base + 4096 + k * 1024, 700))
    await ClockCycles(dut.clk, h.latency + 8)
    assert int(dut.s_axi__wready.value) or int(dut.s_axi__rvalid.value), "nothing in flight"
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, 2 * h.latency)
    for name in ("rvalid", "bvalid", "wready"):
        assert not int(getattr(dut, f"s_axi__{name}").value), f"{name} high after the reset"
    d = dut
    h.ref[h.base:h.top] = await memimage.backdoor_dump(
        d.clk, d.bd_dump, d.bd_dump_first, d.bd_dump_last, 0, h.words, h.bus_bits)
    for k in range(8):
        await h.write(h.base + k * 512 + k, rng.randbytes(300))
    await h.read_check(h.base, 8 * 512)
