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
from amaranth.hdl import Const, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from tessera.hw import layernorm as hln
from tessera.hw import requant as hrq
from tessera.hw.intmath import times_const
from tessera.sw.golden import intmath as gint
from tessera.sw.golden import layernorm as gln
from tessera.sw.golden import requant as grq


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


def dyadic_edges(rng):
    """(q, m, e) cases for the requantizer's multiplier: the edges of q's and m's 16-bit
    halves and of their sums (the Karatsuba operands), the int32 and u31 extremes, every
    shift, and random values."""
    qs = {-(1 << 31), -(1 << 31) + 1, (1 << 31) - 1, 0, 1, -1}
    for k in (15, 16, 17, 30):
        qs.update({(1 << k) - 1, 1 << k, (1 << k) + 1, -(1 << k) - 1, -(1 << k),
                   -(1 << k) + 1})
    qs.update({0x7FFF_FFFF - 0xFFFF, 0x7FFF_FFFF ^ 0x8000, -0x8000_0000 + 0xFFFF, 0x1_FFFF})
    ms = {0, 1, 2, (1 << 31) - 1, 1 << 30, (1 << 30) + 1, 0xFFFF, 0x1_0000, 0x7FFF_0000,
          0x7FFF_0000 + 0xFFFF - 1, 0x8000, 0x7FFF}
    qs = sorted(qs) + [int(v) for v in rng.integers(-(1 << 31), 1 << 31, 40)]
    ms = sorted(ms) + [int(v) for v in rng.integers(0, 1 << 31, 12)]
    cases = [(q, m, int(rng.integers(0, 64))) for q in qs for m in ms]
    cases += [(q, m, e) for e in range(64) for q, m in ((-(1 << 31), (1 << 31) - 1),
                                                        ((1 << 31) - 1, (1 << 31) - 1),
                                                        (-12345, 0x5555_5555))]
    return cases


@pytest.mark.parametrize("bits", [8, 32])
def test_dyadic_lanes_are_the_exact_rounded_product(bits):
    """``requant.dyadic_lanes`` (the requantizer's, to int8, and the store unit's prescale,
    to int32: three DSPs per lane, Karatsuba, rounding after the shift) gives
    ``saturate(round_half_away(q m / 2**e), bits)`` for every edge of its operands, with
    ``m`` and ``e`` changing every cycle."""
    lanes = 4
    rng = np.random.default_rng(7)
    cases = dyadic_edges(rng)
    cases += [cases[0]] * (-len(cases) % lanes)
    q = [Signal(signed(32), name=f"q{j}") for j in range(lanes)]
    mult, e = Signal(unsigned(hrq.MULTIPLIER_BITS)), Signal(unsigned(hrq.SHIFT_BITS))
    m = Module()
    outs = hrq.dyadic_lanes(m, Const(1), q, mult, e, "t", bits)
    # Lanes of one chunk share m and e: chunk i takes cases[lanes * i : lanes * (i + 1)]'s
    # q and the first one's (m, e).
    chunks = [cases[i:i + lanes] for i in range(0, len(cases), lanes)]
    got = []

    async def bench(ctx):
        for k in range(len(chunks) + hrq.DYADIC_STAGES - 1):
            if k < len(chunks):
                for j, (qv, _, _) in enumerate(chunks[k]):
                    ctx.set(q[j], qv)
                ctx.set(mult, chunks[k][0][1])
                ctx.set(e, chunks[k][0][2])
            await ctx.tick()
            if k + 1 >= hrq.DYADIC_STAGES:
                got.append([ctx.get(o) for o in outs])

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == len(chunks)
    for chunk, out in zip(chunks, got, strict=True):
        mv, ev = chunk[0][1], chunk[0][2]
        qv = np.array([c[0] for c in chunk], dtype=np.int64)
        exact = gint.shift_right(qv * np.int64(mv), ev, "half_away")
        want = np.clip(exact, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        assert out == want.tolist(), (chunk, out)
        assert out == grq.requantize(qv.astype(np.int32), mv, ev, bits).tolist()
