# amaranth: UnusedElaboratable=no
# (the constructor test makes a component that is rightly never elaborated)
"""The narrowings that save the output path's DSP blocks: each product is as wide as the
values it can see, and the bounds it relies on hold for every legal input.

The units' results are checked bit for bit against the golden model by
``test_output_path.py``; the tests here check the arithmetic building blocks alone and,
through the golden model, the value ranges those building blocks assume.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from tessera.hw import layernorm as hln
from tessera.hw.intmath import times_const
from tessera.sw.golden import layernorm as gln


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


def layernorm_rows(rng) -> list[np.ndarray]:
    """Rows of every kind LayerNorm meets, and the ones at the edges of its statistics:
    constant rows and single elements (root 0), one element off a constant row (the
    smallest non-zero variance for a pre-shift), int32 extremes, every magnitude, one-hot
    rows, rows of 0s and 1s, and every length from 1 to 9 and some up to 4096."""
    rows = []
    lo, hi = -(1 << 31), (1 << 31) - 1
    for n in list(range(1, 10)) + [16, 17, 128, 767, 768, 4096]:
        for v in (lo, hi, 0, -1, 12345):
            rows.append(np.full(n, v))
            for off in (1, -1, hi, lo):
                if n > 1:
                    r = np.full(n, v, dtype=np.int64)
                    r[rng.integers(n)] += off
                    rows.append(np.clip(r, lo, hi))
        for bits in (1, 2, 8, 15, 16, 17, 24, 31, 32):
            rows.append(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), n))
        rows.append(rng.choice([lo, hi, lo + 1, hi - 1, 0, -1, 1], n))
        rows.append(rng.integers(0, 2, n))
        one_hot = np.zeros(n, dtype=np.int64)
        one_hot[rng.integers(n)] = rng.choice([lo, hi, 1, -1])
        rows.append(one_hot)
        # A deviation whose magnitude is a power of two at every pre-shift.
        for k in range(0, 31):
            r = np.zeros(n, dtype=np.int64)
            r[0] = 1 << k
            rows.append(r)
            rows.append(-r)
    return [np.asarray(r, dtype=np.int32) for r in rows]


def test_layernorm_factor_fits_the_pass_2_multiplier():
    """``hw.layernorm.FACTOR_BITS``: pass 2 multiplies ``d`` by ``factor mod 2**17`` in one
    18 x 18 DSP and takes ``factor = 2**17`` as a shift. That is exact when every row either
    has ``factor <= 2**17`` or has ``d = 0`` everywhere (root 0, factor all ones).

    Why: the pre-shift gives the largest deviation 15 magnitude bits, so some ``|d| >=
    2**14``, ``var >= 2**28``, ``root >= 2**14`` and ``factor <= 2**31 / 2**14 = 2**17``;
    ``var = 0`` only if every ``d`` is 0. (The other deviations, which sum to minus the
    largest, keep ``root`` above ``2**14`` on rows of up to 4096, so ``factor = 2**17`` is
    not met here; the hardware takes it as a shift all the same.)"""
    rng = np.random.default_rng(15)
    seen_zero = 0
    for x in layernorm_rows(rng):
        st = gln.layernorm_stats(x)
        n, s = np.int64(x.shape[-1]), int(st.shift[0])
        dev = n * x.astype(np.int64) - st.sum
        d = dev >> s if s >= 0 else dev << -s
        assert -(1 << gln.DEV_BITS) <= d.min() and d.max() < 1 << gln.DEV_BITS
        root, factor = int(st.root[0]), int(st.factor[0])
        if root == 0:
            assert not d.any()
            seen_zero += 1
        else:
            assert np.abs(d).max() >= 1 << (gln.DEV_BITS - 1)
            assert root >= 1 << 14 and factor < 1 << (hln.FACTOR_BITS + 1)
            assert factor <= 1 << hln.FACTOR_BITS
            assert np.abs(d).max() * factor <= 1 << 31   # y = (d * factor) >> 1 fits s32
    assert seen_zero   # the root-0 case was met


def test_layernorm_needs_two_lanes():
    with pytest.raises(ValueError, match="cols must be an integer of at least 2 .*, not 1"):
        hln.LayerNormUnit(1)
