"""The banked memories in Amaranth's simulator: concurrent ports, bank conflicts,
read-after-write ordering and accumulate, against a model replayed in acceptance order."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from amaranth.sim import Simulator

from tessera.hw.config import preset
from tessera.hw.memory import READ_LATENCY_CYCLES, Accumulator, BankedMemory, Scratchpad
from tessera.sw.golden.matmul import wrap


def run_ports(mem, requests_per_port, seed, hot_rows):
    """Each port issues random reads, writes and accumulates; returns what each saw."""
    log, cycle = [], [0]
    lanes = mem.row_shape.length
    bits = mem.row_shape.elem_shape.width

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    def port_bench(i):
        async def bench(ctx):
            p, rng = mem.port(i), random.Random(seed * 10 + i)
            for _ in range(requests_per_port):
                # Port 0 hammers a few rows (conflicts); the others roam.
                addr = rng.choice(hot_rows) if i == 0 else rng.randrange(mem.depth)
                write = rng.random() < 0.5
                acc = mem.accumulate and rng.random() < 0.5
                row = [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) for _ in range(lanes)]
                fields = {"addr": addr, "write": write, "data": row}
                if mem.accumulate:
                    fields["accumulate"] = acc
                ctx.set(p.req.valid, 1)
                ctx.set(p.req.payload, fields)
                await ctx.tick().until(p.req.ready)
                accepted = cycle[0] - 1
                ctx.set(p.req.valid, 0)
                if not write:
                    _, _, valid, got = await ctx.tick().sample(p.resp.valid, p.resp.data)
                    assert valid, "read data must arrive one cycle after acceptance"
                    row = [int(v) for v in got]
                log.append((accepted, i, addr, write, acc, row))
        return bench

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    for i in range(mem.n_ports):
        sim.add_testbench(port_bench(i))
    sim.run()
    return log, cycle[0]


@pytest.mark.parametrize("accumulate", [False, True], ids=["plain", "accumulate"])
def test_ports_agree_with_a_model_in_acceptance_order(accumulate):
    mem = BankedMemory(32, 4, data.ArrayLayout(signed(8), 3), ports=3, accumulate=accumulate)
    log, cycles = run_ports(mem, 150, seed=1, hot_rows=[0, 1, 8])
    model = np.zeros((32, 3), dtype=np.int64)
    per_cycle_bank = {}
    for accepted, _, addr, write, acc, row in sorted(log):
        bank = addr // mem.rows_per_bank
        assert (accepted, bank) not in per_cycle_bank, "a bank served two requests in a cycle"
        per_cycle_bank[accepted, bank] = True
        if write:
            model[addr] = wrap(model[addr] + row, 8) if acc else row
        else:
            assert list(model[addr]) == row, f"read of row {addr} at cycle {accepted}"
    # Three ports, 450 requests: conflicts cost cycles but the banks overlap work.
    assert len(log) == 450 and cycles < 450
    assert READ_LATENCY_CYCLES == 1


def test_round_robin_serves_every_port_on_one_bank():
    mem = BankedMemory(8, 1, data.ArrayLayout(signed(8), 1), ports=3)
    log, cycles = run_ports(mem, 40, seed=2, hot_rows=[0])
    # One bank, three ports: every port gets through, one request per cycle.
    assert {i for _, i, *_ in log} == {0, 1, 2}
    assert len({a for a, *_ in log}) == len(log)


def test_configured_memories():
    cfg = preset("tiny")
    spad, acc = Scratchpad(cfg, ports=2), Accumulator(cfg, ports=2)
    assert spad.depth == cfg.spad_rows and spad.banks == cfg.spad_banks
    assert acc.depth == cfg.acc_rows and acc.accumulate
    assert acc.row_shape.length == cfg.cols
    for mem in (spad, acc):
        Fragment.get(mem, None)  # they elaborate


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=12, banks=3), "banks must be a power of two, not 3"),
    (dict(depth=10, banks=4), r"depth must be a positive multiple of banks \(4\), not 10"),
    (dict(depth=8, banks=2, ports=0), "ports must be at least 1, not 0"),
])
def test_bad_shapes(kwargs, message):
    kwargs.setdefault("ports", 2)
    with pytest.raises(ValueError, match=message):
        BankedMemory(row_shape=data.ArrayLayout(signed(8), 2), **kwargs)
