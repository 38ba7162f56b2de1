"""cocotb testbench of the store path (:class:`~tessera.sim.store_system.StoreSystem`):
accumulator rows through the output path to main memory or back into the scratchpad,
checked against the golden model bit for bit, with pauses on every AXI channel.

The job comes as JSON in ``$TESSERA_JOB``; counts go to ``$TESSERA_RESULT``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from tessera.hw.config import TesseraConfig
from tessera.hw.output_path import OutputOp
from tessera.hw.store_unit import store_command_layout
from tessera.sim import output_path_jobs as jobs
from tessera.sim.tb_dma import Harness


@cocotb.test()
async def store_jobs(dut):
    from cocotbext.axi import AxiBus, AxiRam

    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(open(os.environ["TESSERA_JOB"]).read())
    h = Harness(dut, config, job)
    C = config.cols
    rng = np.random.default_rng(job["seed"])
    prng = random.Random(job["seed"])
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
    layout = store_command_layout(config)
    counts = {"spad": 0, "dram": 0, "refused": 0}

    for n in range(job["commands"]):
        op = OutputOp(prng.randrange(len(OutputOp)))
        rows = prng.randint(1, 3)
        length = prng.choice([1, 3, C, 2 * C + 1, 5 * C])
        jb = jobs.random_job(config, op, rows, length, rng, prng.choice(jobs.ROW_KINDS))
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
        to_spad = prng.random() < 0.5
        spad_addr = prng.randrange(0, config.spad_rows - rows * chunks + 1)
        stride = length + prng.randrange(0, 3 * C)
        dram_addr = h.base + prng.randrange(0, h.size - rows * stride - 1)
        fields = {"desc": jb.descriptor(), "acc_addr": acc_addr, "to_spad": int(to_spad),
                  "spad_addr": spad_addr, "dram_addr": dram_addr, "stride": stride}
        if op == OutputOp.LAYERNORM:
            words = jobs.encode_params(config, b.gamma, b.beta)
            params = cocotb.start_soon(send_all(h, "i_param", words))
        await h.send("i_store", layout.const(fields).as_value().value)
        err, _ = h.done(await h.recv("o_store_done", what=f"for {op.name} {fields}"))
        assert err == "NONE", f"command {n} ({op.name}): {err}"
        assert not int(dut.op_error.value), f"command {n}: the output path flagged an error"
        if op == OutputOp.LAYERNORM:
            await params
        want = b.out_data.reshape(rows, chunks, C)
        if to_spad:
            for r in range(rows):
                for k in range(chunks):
                    got = await h.local("spad", spad_addr + r * chunks + k)
                    assert (got[:C] == want[r, k]).all(), \
                        f"command {n} ({op.name}) row {r} chunk {k}: {got[:C]} != {want[r, k]}"
            counts["spad"] += 1
        else:
            flat = want.reshape(rows, -1)[:, :length]
            for r in range(rows):
                off = dram_addr - h.base + r * stride
                h.mem[off:off + length] = (flat[r] & 0xFF).astype(np.uint8)
            now = np.frombuffer(ram.read(h.base, h.size), dtype=np.uint8)
            diff = np.flatnonzero(now != h.mem)
            assert diff.size == 0, \
                f"command {n} ({op.name}, {rows}x{length}): main memory differs at " \
                f"{diff.size} bytes, first at offset {diff[0]}"
            counts["dram"] += 1

    # Refused: accumulator rows out of range, and an unknown operation.
    bad = {"desc": {"op": 0, "length": 4, "rows": 2, "m": 1, "e": 0},
           "acc_addr": config.acc_rows - 1, "to_spad": 1, "spad_addr": 0,
           "dram_addr": h.base, "stride": 4}
    await h.send("i_store", layout.const(bad).as_value().value)
    assert h.done(await h.recv("o_store_done"))[0] == "LOCAL"
    counts["refused"] += 1
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump(counts, f)


async def send_all(h: Harness, name: str, words: list[int]) -> None:
    for w in words:
        await h.send(name, w)


def start_in_reset_store(dut, window_base: int, window_size: int) -> None:
    from cocotb.clock import Clock

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("i_store", "i_param", "dbg_spad__req", "dbg_acc__req"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o_store_done__ready.value = 0
    dut.window_base.value = window_base
    dut.window_size.value = window_size
