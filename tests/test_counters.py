"""Performance counters (``hw/counters.py``) in Amaranth's simulator: increments of any
size add up while enabled, nothing counts while disabled, clear wins, 64-bit width."""

import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from tessera.hw.counters import Counters


def test_counters_add_what_they_are_given():
    dut = Counters({"cycles": 1, "bytes": 16, "macs": 256})
    rng = random.Random(3)
    want = {"cycles": 0, "bytes": 0, "macs": 0}

    async def bench(ctx):
        for step in range(300):
            enable, clear = rng.random() < 0.7, step in (100, 101, 250)
            incs = {"cycles": 1, "bytes": rng.choice([0, 16]), "macs": rng.randrange(257)}
            ctx.set(dut.enable, enable)
            ctx.set(dut.clear, clear)
            for name, inc in incs.items():
                ctx.set(getattr(dut, f"inc_{name}"), inc)
            await ctx.tick()
            for name, inc in incs.items():
                # A count shows the increments of the cycles before the last one (none
                # once cleared).
                assert ctx.get(getattr(dut, name)) == (0 if clear else want[name]), \
                    (step, name)
                want[name] = 0 if clear else want[name] + (inc if enable else 0)
        ctx.set(dut.enable, 0)                  # ... and the last cycle's, a cycle later
        await ctx.tick()
        for name in incs:
            assert ctx.get(getattr(dut, name)) == want[name], name
        assert want["macs"] > 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_counters_are_64_bits_and_checked():
    dut = Counters({"x": 1})
    Fragment.get(dut, None)
    assert len(dut.x) == 64
    with pytest.raises(ValueError, match="at least one counter"):
        Counters({})
    with pytest.raises(ValueError, match="positive integers: y"):
        Counters({"x": 1, "y": 0})
