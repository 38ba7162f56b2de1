"""The narrowings that save the output path's DSP blocks: each product is as wide as the
values it can see, and the bounds it relies on hold for every legal input.

The units' results are checked bit for bit against the golden model by
``test_output_path.py``; the tests here check the arithmetic building blocks alone and,
through the golden model, the value ranges those building blocks assume.
"""

import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from tessera.hw.intmath import times_const


def comb_values(inputs, output, cases):
    """``output`` for each tuple of ``cases`` given to ``inputs``, combinationally."""
    m = Module()
    out = Signal.like(output)
    m.d.comb += out.eq(output)
    results = []

    async def bench(ctx):
        for case in cases:
            for sig, v in zip(inputs, case, strict=True):
                ctx.set(sig, v)
            results.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("shape", [unsigned(15), signed(12), unsigned(32)], ids=str)
@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 7, 30, 255, 4097])
def test_times_const_is_the_product(shape, k):
    x = Signal(shape)
    lo, hi = ((-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed
              else (0, (1 << shape.width) - 1))
    rng = random.Random(k)
    vs = [lo, hi, 0, 1, lo + 1, hi - 1] + [rng.randint(lo, hi) for _ in range(40)]
    assert comb_values([x], times_const(x, k), [(v,) for v in vs]) == [v * k for v in vs]


def test_times_const_rejects_negative_constants():
    with pytest.raises(ValueError, match="k must be a non-negative integer, not -3"):
        times_const(Signal(8), -3)
