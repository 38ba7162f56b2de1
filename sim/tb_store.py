"""cocotb testbench of the store path (:class:`~tessera.sim.store_system.StoreSystem`):
accumulator rows through the output path to main memory or back into the scratchpad,
checked against the golden model bit for bit, with pauses on every AXI channel.

Random commands of every operation go to both destinations; then commands whose rows are
whole chunks one after the other in main memory (blocked layouts), which the store unit
sends as one DMA store (the bursts on the bus are counted to check that); then DMA errors
on both paths (a block outside the window, an SLVERR), each followed by a command that
must work.

The job comes as JSON in ``$TESSERA_JOB``; counts go to ``$TESSERA_RESULT``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tessera.hw.config import TesseraConfig
from tessera.hw.output_path import OutputOp
from tessera.hw.store_unit import store_command_layout
from tessera.sim import output_path_jobs as jobs
from tessera.sim.tb_dma import Harness, inject_errors
from tessera.sw.golden.layernorm import layernorm_table


@cocotb.test()
async def store_jobs(dut):
    from cocotbext.axi import AxiBus, AxiRam

    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(open(os.environ["TESSERA_JOB"]).read())
    h = Harness(dut, config, job)
    C = config.cols
    start_in_reset_store(dut, h.base, h.size)
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=h.base + h.size)
    for log in (ram.write_if.log, ram.read_if.log):
        log.setLevel("WARNING")
    if job["pause"]:
        for i, ch in enumerate((ram.write_if.aw_channel, ram.write_if.w_channel,
                                ram.write_if.b_channel)):
            r = random.Random(job["seed"] * 10 + i)
            ch.set_pause_generator(iter(lambda r=r: r.random() < job["pause"], None))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await h.step()
    bench = StoreBench(dut, h, ram, job["seed"])
    prng = bench.prng

    for _ in range(job["commands"]):
        length = prng.choice([1, 3, C, 2 * C + 1, 5 * C])
        stride = length if prng.random() < 0.3 else length + prng.randrange(0, 3 * C)
        await bench.run(OutputOp(prng.randrange(len(OutputOp))), prng.randint(1, 3), length,
                        to_spad=prng.random() < 0.5, stride=stride)

    # Whole chunks one after the other: one DMA store per command, checked bit for bit.
    for op, rows, chunks in ((OutputOp.NONE, 8, 1), (OutputOp.RELU, 5, 1),
                             (OutputOp.REQUANT, 4, 3), (OutputOp.SOFTMAX, 3, 2),
                             (OutputOp.GELU, 6, 1), (OutputOp.LAYERNORM, 3, 4),
                             (OutputOp.NONE, 1, 5), (OutputOp.SOFTMAX, 12, 1),
                             (OutputOp.REQUANT, 16, 8)):
        await bench.run(op, rows, chunks * C, to_spad=False, stride=chunks * C)
    # ... across a 4 KiB boundary: two bursts.
    await bench.run(OutputOp.RELU, 6, 2 * C, to_spad=False, stride=2 * C,
                    dram_addr=h.base + 4096 - 3 * C - 5)

    # DMA errors on both paths; each failed command still hands the DMA all its rows, so
    # the command after it runs.
    end = h.base + h.size
    for stride in (2 * C, 3 * C):    # one store; row by row
        await bench.run(OutputOp.NONE, 4, 2 * C, to_spad=False, stride=stride,
                        dram_addr=end - 2 * stride - C, expect="WINDOW")
        await bench.run(OutputOp.RELU, 3, C, to_spad=False, stride=C, dram_addr=h.base)
    bad_lo = h.base + h.size // 2
    inject_errors(ram, bad_lo, bad_lo + 64)
    for stride in (C, C + 1):
        await bench.run(OutputOp.NONE, 5, C, to_spad=False, stride=stride,
                        dram_addr=bad_lo - 2 * stride, expect="SLVERR")
        await bench.run(OutputOp.REQUANT, 4, 2 * C, to_spad=False, stride=2 * C,
                        dram_addr=h.base + 64)

    # Refused: accumulator rows out of range, and an unknown operation.
    bad = {"desc": {"op": 0, "length": 4, "rows": 2, "m": 1, "e": 0},
           "acc_addr": config.acc_rows - 1, "to_spad": 1, "spad_addr": 0,
           "dram_addr": h.base, "stride": 4}
    await h.send("i_store", bench.layout.const(bad).as_value().value)
    assert h.done(await h.recv("o_store_done"))[0] == "LOCAL"
    bench.counts["refused"] += 1
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump(bench.counts, f)


class StoreBench:
    """Runs store commands on :class:`~tessera.sim.store_system.StoreSystem` and checks
    them: the accumulator is loaded through the back door with a random output-path job,
    the results are compared with the golden model in the scratchpad or main memory, and
    the write bursts on the bus are counted."""

    def __init__(self, dut, h: Harness, ram, seed: int):
        self.dut, self.h, self.ram = dut, h, ram
        self.config = h.config
        self.layout = store_command_layout(h.config)
        self.rng = np.random.default_rng(seed)
        self.prng = random.Random(seed)
        self.n = 0
        self.bursts = 0
        self.counts = {"spad": 0, "dram": 0, "contiguous": 0, "dma_errors": 0, "refused": 0}
        cocotb.start_soon(self._count_bursts())

    async def _count_bursts(self):
        valid, ready = self.dut.m_axi__awvalid, self.dut.m_axi__awready
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            self.bursts += int(valid.value) & int(ready.value)

    async def run(self, op: OutputOp, rows: int, length: int, *, to_spad: bool, stride: int,
                  dram_addr: int | None = None, expect: str = "NONE") -> None:
        """One command of ``rows`` random rows of ``length`` elements; it must finish with
        ``expect``."""
        h, config, prng = self.h, self.config, self.prng
        C = config.cols
        n, self.n = self.n, self.n + 1
        jb = jobs.random_job(config, op, rows, length, self.rng, prng.choice(jobs.ROW_KINDS))
        b = jobs.beats(config, [jb], seed=n)
        chunks = -(-length // C)
        acc_addr = prng.randrange(0, config.acc_rows - rows * chunks + 1)
        # Load the accumulator through the back door: one chunk per row, pass 0 of each
        # logical row (the rows repeat once per pass in the beats).
        per_row = chunks * jb.passes
        for r in range(rows):
            for k in range(chunks):
                await h.local("acc", acc_addr + r * chunks + k, write=True,
                              row=b.row_data[r * per_row + k])
        spad_addr = prng.randrange(0, config.spad_rows - rows * chunks + 1)
        if dram_addr is None:
            dram_addr = h.base + prng.randrange(0, h.size - rows * stride - 1)
        fields = {"desc": jb.descriptor(), "acc_addr": acc_addr, "to_spad": int(to_spad),
                  "spad_addr": spad_addr, "dram_addr": dram_addr, "stride": stride}
        what = f"command {n} ({op.name}, {rows}x{length}, stride {stride})"
        if op == OutputOp.LAYERNORM:
            # The gamma / beta table in the accumulator, clear of the rows being stored.
            table = layernorm_table(b.gamma[:chunks].reshape(-1), b.beta[:chunks].reshape(-1),
                                    C).view("<i4").reshape(-1, C).astype(np.int64)
            param_addr = acc_addr + rows * chunks
            if param_addr + len(table) > config.acc_rows:
                param_addr = acc_addr - len(table)
            for i, row in enumerate(table):
                await h.local("acc", param_addr + i, write=True, row=row)
            fields["param_addr"] = param_addr
        bursts = self.bursts
        await h.send("i_store", self.layout.const(fields).as_value().value)
        err, addr = h.done(await h.recv("o_store_done", what=f"for {what}"))
        bursts = self.bursts - bursts
        assert err == expect, f"{what}: {err}, expected {expect}"
        assert not int(self.dut.op_error.value), f"{what}: the output path flagged an error"
        want = b.out_data.reshape(rows, chunks, C)
        if to_spad:
            for r in range(rows):
                for k in range(chunks):
                    got = await h.local("spad", spad_addr + r * chunks + k)
                    assert (got[:C] == want[r, k]).all(), \
                        f"{what} row {r} chunk {k}: {got[:C]} != {want[r, k]}"
            self.counts["spad"] += 1
            return
        one_store = length % C == 0 and stride == length
        flat = want.reshape(rows, -1)[:, :length]
        now = np.frombuffer(self.ram.read(h.base, h.size), dtype=np.uint8)
        if err == "SLVERR":
            # Bursts before the failing one were written: take the block from memory.
            assert dram_addr <= addr < dram_addr + (rows - 1) * stride + length, hex(addr)
            for r in range(rows):
                off = dram_addr - h.base + r * stride
                h.mem[off:off + length] = now[off:off + length]
        else:
            written = rows
            if err == "WINDOW":
                # One store is refused whole; row by row, the rows before the first one
                # outside the window are written.
                inside = [dram_addr + r * stride + length <= h.base + h.size
                          for r in range(rows)]
                first_out = inside.index(False)
                assert addr == (dram_addr if one_store else dram_addr + first_out * stride), \
                    f"{what}: WINDOW reported at {addr:#x}"
                written = 0 if one_store else first_out
            for r in range(written):
                off = dram_addr - h.base + r * stride
                h.mem[off:off + length] = (flat[r] & 0xFF).astype(np.uint8)
        diff = np.flatnonzero(now != h.mem)
        assert diff.size == 0, \
            f"{what}: main memory differs at {diff.size} bytes, first at offset {diff[0]}"
        if err != "NONE":
            self.counts["dma_errors"] += 1
            return
        self.counts["dram"] += 1
        if one_store:
            # One DMA store: as many bursts as the DMA cuts the whole block into.
            want_bursts = _bursts(dram_addr, rows * length, config.bus_bytes)
            assert bursts == want_bursts, f"{what}: {bursts} bursts, not {want_bursts}"
            self.counts["contiguous"] += 1
        else:
            assert bursts >= rows, f"{what}: {bursts} bursts for {rows} rows"


def _bursts(addr: int, nbytes: int, bus_bytes: int) -> int:
    """The INCR bursts the DMA cuts one contiguous range into (see ``BurstSplitter``)."""
    count = 0
    while nbytes:
        aligned = addr - addr % bus_bytes
        room = min(4096 - aligned % 4096, 256 * bus_bytes) - (addr - aligned)
        take = min(nbytes, room)
        addr, nbytes, count = addr + take, nbytes - take, count + 1
    return count


def start_in_reset_store(dut, window_base: int, window_size: int) -> None:
    from cocotb.clock import Clock

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("i_store", "dbg_spad__req", "dbg_acc__req"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o_store_done__ready.value = 0
    dut.window_base.value = window_base
    dut.window_size.value = window_size
