"""``pipelined_tree``: a reduction ``stages`` enabled cycles after its values, with or
without spare stages."""

import random

import pytest
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.sim import Simulator

from tessera.hw.intmath import pipelined_tree, tree_stages


@pytest.mark.parametrize("n, spare", [(4, 0), (4, 2), (5, 1), (1, 2)])
def test_pipelined_tree_is_a_delayed_reduction(n, spare):
    """Random values and a random enable: the sum and the maximum come out exactly
    ``tree_stages(n) + spare`` enabled cycles after their values, and hold while the
    enable is low."""
    stages = tree_stages(n) + spare
    m = Module()
    en = Signal()
    xs = [Signal(signed(16), name=f"x{i}") for i in range(n)]
    total = pipelined_tree(m, en, xs, lambda a, b: a + b, "sum", stages)
    top = pipelined_tree(m, en, xs, lambda a, b: Mux(a > b, a, b), "max", stages)
    rng = random.Random(n * 10 + spare)

    async def bench(ctx):
        history = []            # the values of each enabled cycle, latest last
        for _ in range(300):
            values = [rng.randrange(-2**15, 2**15) for _ in xs]
            enable = rng.random() < 0.7
            for x, v in zip(xs, values, strict=True):
                ctx.set(x, v)
            ctx.set(en, enable)
            if len(history) >= stages:
                want = history[-stages]
                assert ctx.get(total) == sum(want)
                assert ctx.get(top) == max(want)
            if enable:
                history.append(values)
            await ctx.tick()
        assert len(history) > 150

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
