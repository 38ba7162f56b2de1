"""The stream register slice in Amaranth's simulator: every item through in order, with and
without idle and backpressure, one per cycle when neither side pauses, and its ready and
valid from registers; the turn slice equal to it cycle for cycle; a FIFO's room as a
register equals its ready."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from tessera.hw.skid import SkidBuffer, TurnSlice, room_register


def run(items, p_idle, p_stall, seed=1):
    """Send ``items`` through a buffer; returns what came out and the cycles taken."""
    dut = SkidBuffer(16)
    got, cycles = [], [0]

    async def producer(ctx):
        rng = random.Random(seed)
        for x in items:
            while rng.random() < p_idle:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, x)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        while len(got) < len(items):
            ready = rng.random() >= p_stall
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles[0] += 1
            if valid and ready:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, cycles[0]


@pytest.mark.parametrize("p_idle, p_stall", [(0, 0), (0.3, 0), (0, 0.3), (0.3, 0.5)],
                         ids=["flowing", "idle", "backpressure", "both"])
def test_every_item_in_order(p_idle, p_stall):
    items = list(range(1, 200))
    got, _ = run(items, p_idle, p_stall)
    assert got == items


def test_one_item_per_cycle_when_nobody_pauses():
    items = list(range(100))
    got, cycles = run(items, 0, 0)
    assert got == items and cycles == len(items) + 1    # one cycle in the head


def test_ready_and_valid_come_from_registers():
    """A change of the consumer's ready (or the producer's valid) shows on the other
    side only after a clock edge."""
    dut = SkidBuffer(8)

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 5)
        await ctx.tick()                       # 5 into the head
        ctx.set(dut.i.payload, 6)
        await ctx.tick()                       # 6 into the spare: full
        assert not ctx.get(dut.i.ready)
        ctx.set(dut.o.ready, 1)                # the consumer takes 5 ...
        assert not ctx.get(dut.i.ready)        # ... ready is still low in this cycle
        assert ctx.get(dut.o.payload) == 5
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.o.valid)            # valid does not follow i.valid
        await ctx.tick()
        assert ctx.get(dut.i.ready) and ctx.get(dut.o.payload) == 6

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_room_register_is_the_fifos_ready_as_a_flip_flop(depth):
    m = Module()
    m.submodules.q = q = fifo.SyncFIFO(width=4, depth=depth)
    room = room_register(m, q, "room")
    rng = random.Random(depth)

    async def bench(ctx):
        full = 0
        for _ in range(400):
            ctx.set(q.w_en, rng.random() < 0.6)
            ctx.set(q.r_en, rng.random() < 0.4)
            assert ctx.get(room) == ctx.get(q.w_rdy)
            full += not ctx.get(q.w_rdy)
            await ctx.tick()
        assert full > 0                 # the FIFO was full at times: both values seen

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("p_idle, p_stall", [(0, 0), (0.3, 0), (0, 0.3), (0.5, 0.5)],
                         ids=["flowing", "idle", "backpressure", "both"])
def test_turn_slice_is_the_skid_buffer_cycle_for_cycle(p_idle, p_stall):
    """Both slices side by side on the same random valid, payload and ready: every cycle
    the same ready, valid and (when valid) payload."""
    m = Module()
    m.submodules.skid = skid = SkidBuffer(12)
    m.submodules.turn = turn = TurnSlice(12)
    rng = random.Random(7)
    cycles = []

    async def bench(ctx):
        for n in range(600):
            valid, ready = rng.random() >= p_idle, rng.random() >= p_stall
            payload = rng.randrange(1 << 12)
            for dut in (skid, turn):
                ctx.set(dut.i.valid, valid)
                ctx.set(dut.i.payload, payload)
                ctx.set(dut.o.ready, ready)
            seen = [(ctx.get(d.i.ready), ctx.get(d.o.valid),
                     ctx.get(d.o.payload) if ctx.get(d.o.valid) else None)
                    for d in (skid, turn)]
            assert seen[0] == seen[1], (n, seen)
            cycles.append(seen[0])
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # The run reached a full slice where the consumer stalls, an empty one where the
    # producer idles.
    assert any(not ready for ready, _, _ in cycles) == (p_stall > 0)
    assert any(not v for _, v, _ in cycles[1:]) == (p_idle > 0)
