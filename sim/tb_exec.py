"""cocotb testbench of the execute unit (:class:`~tessera.sim.exec_system.ExecSystem`):
random CONFIG / PRELOAD / COMPUTE programs from the scratchpad into the accumulator,
checked against the golden executor bit for bit. Job in ``$TESSERA_JOB``."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly

from tessera.hw.config import TesseraConfig
from tessera.hw.isa import encode
from tessera.sim.exec_system import random_program
from tessera.sim.tb_dma import Harness
from tessera.sw.golden.executor import Machine

ACC_ROWS_CHECKED = 40


@cocotb.test()
async def exec_programs(dut):
    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = json.loads(Path(os.environ["TESSERA_JOB"]).read_text())
    h = Harness(dut, config, {"mem_base": 0, "mem_size": 16})
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("i_cmd", "dbg_spad__req", "dbg_acc__req"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o_done__ready.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await h.step()
    rng = random.Random(job["seed"])
    spad = np.random.default_rng(job["seed"]).integers(-128, 128, (64, config.spad_row_bytes))
    for addr, row in enumerate(spad):
        await h.local("spad", addr, write=True, row=row)
    prog = random_program(config, rng, job["commands"])
    words = [encode(config, c) for c in prog]
    done = 0

    async def count_done():
        nonlocal done
        while True:
            await h.step()
            await ReadOnly()
            done += int(dut.o_done__valid.value)

    counter = cocotb.start_soon(count_done())
    for w in words:
        await h.send("i_cmd", w)
    for _ in range(20_000):
        if done >= len(words):
            break
        await h.step()
    counter.cancel()
    assert done == len(words), f"{done} of {len(words)} commands completed (a hang)"
    golden = Machine(config, 16)
    golden.spad[:64] = spad
    golden.run(prog)
    for r in range(ACC_ROWS_CHECKED):
        got = await h.local("acc", r)
        assert (got == golden.acc[r]).all(), f"accumulator row {r}: {got} != {golden.acc[r]}"
    with open(os.environ["TESSERA_RESULT"], "w") as f:
        json.dump({"commands": len(words), "macs": golden.macs}, f)
