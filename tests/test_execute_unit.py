"""The execute unit in Amaranth's simulator: command streams from the scratchpad through the
matrix unit into the accumulator, against the golden executor bit for bit."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from tessera.hw.config import TesseraConfig, preset
from tessera.hw.isa import Command, Opcode, encode
from tessera.sim.exec_system import ExecSystem, random_program
from tessera.sw.golden.executor import Machine


def run_on_amaranth(cfg, spad_rows: np.ndarray, prog):
    dut = ExecSystem(cfg)
    acc_out = []

    async def bench(ctx):
        for addr, row in enumerate(spad_rows):
            ctx.set(dut.dbg_spad.req.valid, 1)
            ctx.set(dut.dbg_spad.req.payload, {"addr": addr, "write": 1,
                                               "data": [int(v) for v in row]})
            await ctx.tick().until(dut.dbg_spad.req.ready)
        ctx.set(dut.dbg_spad.req.valid, 0)
        ctx.set(dut.o_done.ready, 1)
        words = [encode(cfg, c) for c in prog]
        done = 0
        for w in words:
            ctx.set(dut.i_cmd.payload.as_value(), w)
            ctx.set(dut.i_cmd.valid, 1)
            while True:
                _, _, ready, dv = await ctx.tick().sample(dut.i_cmd.ready, dut.o_done.valid)
                done += dv
                if ready:
                    break
        ctx.set(dut.i_cmd.valid, 0)
        for _ in range(5000):
            if done == len(words):
                break
            _, _, dv = await ctx.tick().sample(dut.o_done.valid)
            done += dv
        assert done == len(words), f"{done} of {len(words)} commands completed"
        for addr in range(40):
            ctx.set(dut.dbg_acc.req.valid, 1)
            ctx.set(dut.dbg_acc.req.payload, {"addr": addr, "write": 0,
                                              "data": [0] * cfg.cols, "accumulate": 0})
            await ctx.tick().until(dut.dbg_acc.req.ready)
            ctx.set(dut.dbg_acc.req.valid, 0)
            while True:
                _, _, valid, data = await ctx.tick().sample(dut.dbg_acc.resp.valid,
                                                            dut.dbg_acc.resp.data)
                if valid:
                    break
            acc_out.append([int(v) for v in data])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(acc_out, dtype=np.int64)


def assert_matches_golden(cfg, spad, prog):
    """The execute unit on the Amaranth simulator leaves the accumulator as the golden
    executor does."""
    golden = Machine(cfg, 4096)
    golden.spad[:64] = spad
    golden.run(prog)
    got = run_on_amaranth(cfg, spad, prog)
    bad = np.flatnonzero((got != golden.acc[:40]).any(axis=1))
    assert bad.size == 0, f"accumulator rows {bad.tolist()} differ from the golden executor"


@pytest.mark.parametrize("cfg", [preset("tiny"),
                                 TesseraConfig(rows=3, cols=5, dataflow="ws", spad_kib=16,
                                               acc_kib=8, max_row_len=256),
                                 TesseraConfig(rows=4, cols=3, dataflow="os", spad_kib=16,
                                               acc_kib=8, max_row_len=256)],
                         ids=["tiny-both", "ws-3x5", "os-4x3"])
def test_random_programs_match_the_golden_executor(cfg):
    rng = random.Random(7)
    nprng = np.random.default_rng(7)
    spad = nprng.integers(-128, 128, (64, cfg.spad_row_bytes))
    prog = random_program(cfg, rng, 40)
    assert_matches_golden(cfg, spad, prog)


@pytest.mark.parametrize("rows", [1, 5])
def test_back_to_back_runs_match_the_golden_executor(rows):
    """Runs of weight tiles one after another (as a lowered product streams them), between
    a PRELOAD and a COMPUTE that must still see the preloaded weights."""
    cfg = preset("tiny")
    nprng = np.random.default_rng(rows)
    spad = nprng.integers(-128, 128, (64, cfg.spad_row_bytes))
    prog = [Command(Opcode.PRELOAD, {"spad_addr": 60})]
    for n in range(6):
        prog.append(Command(Opcode.COMPUTE, {
            "a_addr": n, "b_addr": 8 * (n % 2), "rows": rows, "acc_addr": 6 * n,
            "accumulate": n % 2, "count": 8 - n, "a_stride": 7}))
    prog.append(Command(Opcode.COMPUTE, {"a_addr": 3, "b_addr": 0, "rows": rows,
                                         "acc_addr": 36, "accumulate": 0}))
    assert_matches_golden(cfg, spad, prog)

