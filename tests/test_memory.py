"""The banked memories in Amaranth's simulator: concurrent ports streaming through their
request buffers, bank conflicts, read-after-write ordering and accumulate, against a model
replayed in the order the requests were served."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from amaranth.sim import Simulator

from tessera.hw.config import preset
from tessera.hw.memory import READ_LATENCY_CYCLES, Accumulator, BankedMemory, Scratchpad
from tessera.sw.golden.matmul import wrap


def run_ports(mem, requests_per_port, seed, hot_rows, pause=0.3):
    """Each port streams random reads, writes and accumulates, one whenever it is ready
    (pausing at random), each tagged with its number; a monitor notes when each is
    answered (a read's data, a write's ``written``). Returns the requests by (port,
    number): (accepted cycle, addr, write, accumulate, row); the answers: (cycle, port,
    number, data or None); and the cycles taken."""
    lanes = mem.row_shape.length
    bits = mem.row_shape.elem_shape.width
    requests, answers, cycle, left = {}, [], [0], [mem.n_ports]

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    def port_bench(i):
        async def bench(ctx):
            p, rng = mem.port(i), random.Random(seed * 10 + i)
            for n in range(requests_per_port):
                # Port 0 hammers a few rows (conflicts); the others roam.
                addr = rng.choice(hot_rows) if i == 0 else rng.randrange(mem.depth)
                write = rng.random() < 0.5
                acc = mem.accumulate and rng.random() < 0.5
                row = [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) for _ in range(lanes)]
                fields = {"addr": addr, "write": write, "data": row, "tag": n}
                if mem.accumulate:
                    fields["accumulate"] = acc
                ctx.set(p.req.valid, 1)
                ctx.set(p.req.payload, fields)
                await ctx.tick().until(p.req.ready)
                requests[i, n] = (cycle[0] - 1, addr, write, acc, row)
                ctx.set(p.req.valid, 0)
                if rng.random() < pause:
                    await ctx.tick()
            for _ in range(8):          # the last answers
                await ctx.tick()
            left[0] -= 1
        return bench

    async def monitor(ctx):
        while left[0]:
            await ctx.tick()
            for i in range(mem.n_ports):
                resp = mem.port(i).resp
                if ctx.get(resp.valid):
                    answers.append((cycle[0], i, ctx.get(resp.tag),
                                    [int(v) for v in ctx.get(resp.data)]))
                if ctx.get(resp.written):
                    answers.append((cycle[0], i, ctx.get(resp.tag), None))

    sim = Simulator(mem)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(monitor)
    for i in range(mem.n_ports):
        sim.add_testbench(port_bench(i))
    sim.run()
    return requests, answers, cycle[0]


def replay(mem, requests, answers):
    """Check every answer against a model that serves the requests in the order they were
    answered; each port's in the order it sent them, at least READ_LATENCY_CYCLES after
    being accepted, each bank serving one request per cycle."""
    lanes = mem.row_shape.length
    bits = mem.row_shape.elem_shape.width
    model = np.zeros((mem.depth, lanes), dtype=np.int64)
    served, next_of = set(), [0] * mem.n_ports
    for at, port, n, got in sorted(answers, key=lambda a: a[:2]):
        accepted, addr, write, acc, row = requests[port, n]
        assert n == next_of[port], f"port {port} answered request {n} out of order"
        next_of[port] += 1
        assert at - accepted >= READ_LATENCY_CYCLES, (port, n, accepted, at)
        bank = addr // mem.rows_per_bank
        assert (at, bank) not in served, "a bank served two requests in a cycle"
        served.add((at, bank))
        assert (got is None) == write
        if write:
            model[addr] = wrap(model[addr] + row, bits) if acc else row
        else:
            assert list(model[addr]) == got, f"read of row {addr} answered at cycle {at}"
    assert next_of == [len({k for k in requests if k[0] == i}) for i in range(mem.n_ports)]


@pytest.mark.parametrize("accumulate", [False, True], ids=["plain", "accumulate"])
@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["streaming", "pausing"])
def test_ports_agree_with_a_model_in_the_order_served(accumulate, pause):
    mem = BankedMemory(32, 4, data.ArrayLayout(signed(8), 3), ports=3, accumulate=accumulate,
                       tag_bits=8)
    requests, answers, cycles = run_ports(mem, 150, seed=1, hot_rows=[0, 1, 8], pause=pause)
    replay(mem, requests, answers)
    # Three ports, 450 requests: conflicts cost cycles but the banks overlap work.
    assert len(answers) == 450 and cycles < 450
    assert READ_LATENCY_CYCLES == 3          # accepted, granted, stage 0, answered


def test_a_port_alone_streams_a_request_per_cycle():
    mem = BankedMemory(16, 2, data.ArrayLayout(signed(8), 2), ports=1, tag_bits=8)
    requests, answers, cycles = run_ports(mem, 60, seed=3, hot_rows=[0, 1, 2, 3, 9],
                                          pause=0.0)
    replay(mem, requests, answers)
    accepted = sorted(a[0] for a in requests.values())
    assert accepted == list(range(accepted[0], accepted[0] + 60))
    # Each answered READ_LATENCY_CYCLES after it was accepted.
    assert all(at - requests[0, n][0] == READ_LATENCY_CYCLES for at, _, n, _ in answers)


def test_round_robin_serves_every_port_on_one_bank():
    mem = BankedMemory(8, 1, data.ArrayLayout(signed(8), 1), ports=3, tag_bits=8)
    requests, answers, cycles = run_ports(mem, 40, seed=2, hot_rows=[0])
    replay(mem, requests, answers)
    # One bank, three ports: every port gets through, one request per cycle.
    assert {i for _, i, *_ in answers} == {0, 1, 2}
    assert len({a for a, *_ in answers}) == len(answers)


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
    (dict(depth=8, banks=2, tag_bits=-1), "tag_bits must be at least 0, not -1"),
])
def test_bad_shapes(kwargs, message):
    kwargs.setdefault("ports", 2)
    with pytest.raises(ValueError, match=message):
        BankedMemory(row_shape=data.ArrayLayout(signed(8), 2), **kwargs)
