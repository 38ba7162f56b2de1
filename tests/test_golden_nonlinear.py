"""Golden model of the integer non-linear operations: exactness, widths, accuracy, errors.

The slow references in this file are written from the documented datapaths with Python
integers, element by element, independently of the vectorised numpy model; agreement
between the two is what makes the model trustworthy as the hardware's specification.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tessera.hw.config import TesseraConfig
from tessera.sw.golden import accuracy, gelu, intmath, layernorm, requant, softmax

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MAX = (1 << 63) - 1


def i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def i32(values) -> np.ndarray:
    return np.array(values, dtype=np.int32)


# --------------------------------------------------------------------------------------
# Slow references (Python ints)
# --------------------------------------------------------------------------------------

def ref_round(value: Fraction, mode: str) -> int:
    """Round an exact rational: floor, half away from zero, or half to even."""
    floor = math.floor(value)
    if mode == "floor":
        return floor
    frac = value - floor
    if frac != Fraction(1, 2):
        return floor + (frac > Fraction(1, 2))
    if mode == "half_away":
        return floor + 1 if value > 0 else floor
    return floor + (floor % 2)  # half_even: move to the even neighbour


def ref_requant(q: int, m: int, e: int, bits: int, mode: str) -> int:
    value = ref_round(Fraction(q * m, 1 << e), mode)
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, value))


def ref_half_away(x: int, s: int) -> int:
    """Round half away from zero of x / 2**s, written on the magnitude."""
    if s == 0:
        return x
    mag = (abs(x) + (1 << (s - 1))) >> s
    return mag if x >= 0 else -mag


def ref_softmax_row(row: list[int], c: softmax.ExpConstants, shift: int = 0) -> list[int]:
    top = max(row)
    codes = []
    for x in row:
        a = top - x
        a_t = (a + ((1 << c.shift) >> 1)) >> c.shift if c.shift >= 0 else a << -c.shift
        z, r = divmod(min(a_t, 30 * c.ln2_q), c.ln2_q)
        p = -r
        poly = (p + c.q_b) * p + c.q_c
        codes.append(poly >> (z + c.out_shift))
    factor = (1 << 32) // sum(codes)
    # Rounded half up to 8 - shift bits (I-BERT floors).
    return [min((e * factor + (1 << (23 + shift))) >> (24 + shift), 255 >> shift)
            for e in codes]


def ref_gelu(q: int, c: gelu.GeluConstants) -> int:
    mag = abs(q)
    u = (mag + ((1 << c.shift) >> 1)) >> c.shift if c.shift >= 0 else mag << -c.shift
    u = min(u, -c.q_b)
    poly = (u + c.q_b) ** 2 + c.q_c  # I-BERT's form, at the negative scale a S_e**2
    one = (-c.q_c) >> c.poly_shift
    frac = (-poly) >> c.poly_shift
    g = one + frac if q >= 0 else one - frac
    return ref_half_away(q * g, 17)


def ref_layernorm_row(row: list[int], c: layernorm.LayerNormConstants) -> tuple[list, list]:
    n, total = len(row), sum(row)
    dev = [n * x - total for x in row]
    dmax = max(abs(v) for v in dev)
    s = dmax.bit_length() - 15 if dmax else 0
    d = [v >> s if s >= 0 else v << -s for v in dev]
    root = math.isqrt(sum(v * v for v in d))
    factor = (1 << 31) // root if root else (1 << 32) - 1
    y = [(v * factor) >> 1 for v in d]
    out = []
    for yy, g, b in zip(y, c.gamma_q.tolist(), c.beta_q.tolist(), strict=True):
        acc32 = ref_half_away(yy * g + b, 16)
        out.append(max(-128, min(127, ref_half_away(acc32 * c.m, c.e))))
    return y, out


# --------------------------------------------------------------------------------------
# intmath
# --------------------------------------------------------------------------------------

def test_bit_length_matches_python():
    values = [0, 1, 2, 3] + [v for k in range(2, 63) for v in ((1 << k) - 1, 1 << k)]
    values.append(INT64_MAX)
    got = intmath.bit_length(i64(values))
    assert got.tolist() == [v.bit_length() for v in values]


def test_isqrt_exhaustive_below_2_18():
    n = np.arange(1 << 18, dtype=np.int64)
    assert intmath.isqrt(n).tolist() == [math.isqrt(v) for v in range(1 << 18)]


def test_isqrt_edges_up_to_int64_max():
    n = accuracy._isqrt_edges(63)
    n = np.concatenate([n, i64([INT64_MAX, INT64_MAX - 1, (1 << 62) - 1, (1 << 31) - 1])])
    root, passes = intmath.isqrt_with_passes(n)
    assert root.tolist() == [math.isqrt(v) for v in n.tolist()]
    assert passes.max() <= intmath.ISQRT_MAX_PASSES[63]


def test_isqrt_zero_bypasses_the_loop():
    root, passes = intmath.isqrt_with_passes(i64([0, 1, 4]))
    assert root.tolist() == [0, 1, 2]
    assert passes.tolist()[0] == 0 and min(passes.tolist()[1:]) >= 1


@pytest.mark.parametrize("bits", sorted(intmath.ISQRT_MAX_PASSES))
def test_isqrt_pass_budget_is_exact(bits):
    # The documented budget is never exceeded, and some input needs all of it.
    found = accuracy.isqrt_passes(bits, samples=1 << 15)
    assert found["worst_passes"] == intmath.ISQRT_MAX_PASSES[bits]


def test_isqrt_some_31_bit_inputs_need_6_passes():
    # REFERENCES: the paper's "at most 4 iterations" does not hold.
    n = i64([(1 << 30) + (1 << 16), (1 << 31) - 1])
    root, passes = intmath.isqrt_with_passes(n)
    assert intmath.bit_length(n).tolist() == [31, 31]
    assert root.tolist() == [math.isqrt(v) for v in n.tolist()]
    assert passes.tolist()[0] == 6


def test_fast_exhaustive_pass_count_agrees_with_isqrt():
    # The fixed-trip-count variant used for the 2**32 measurement counts like isqrt does.
    for bits in (5, 13, 16):
        assert accuracy.isqrt_passes_exhaustive(bits, chunk=1000) == accuracy.isqrt_passes(bits)


def test_isqrt_exhaustive_small_widths_agree_with_budget():
    _, passes = intmath.isqrt_with_passes(np.arange(1 << 16, dtype=np.int64))
    assert passes.max() == intmath.ISQRT_MAX_PASSES[16]


@pytest.mark.parametrize("k", [0, 1, 24, 31, 32, 62])
def test_reciprocal_edges(k):
    ds = sorted({1, 2, 3, 5, 7} | {v for j in range(1, 62) for v in ((1 << j) - 1, 1 << j,
                                                                     (1 << j) + 1)}
                | {1 << 62})
    got = intmath.reciprocal(i64(ds), k)
    assert got.tolist() == [(1 << k) // d for d in ds]
    assert intmath.reciprocal(i64([0]), k).tolist() == [(1 << (k + 1)) - 1]


def test_shift_right_tie_table():
    x = i64([5, -5, 3, -3, 7, -7, 4, -4])
    assert intmath.shift_right(x, 1, "floor").tolist() == [2, -3, 1, -2, 3, -4, 2, -2]
    assert intmath.shift_right(x, 1, "half_away").tolist() == [3, -3, 2, -2, 4, -4, 2, -2]
    assert intmath.shift_right(x, 1, "half_even").tolist() == [2, -2, 2, -2, 4, -4, 2, -2]


@pytest.mark.parametrize("mode", intmath.ROUNDING_MODES)
def test_shift_right_matches_exact_rounding(mode):
    rng = np.random.default_rng(1)
    lim = (1 << 62) - 1
    xs = [0, 1, -1, lim, -lim] + rng.integers(-lim, lim, 200, dtype=np.int64).tolist()
    for s in (0, 1, 2, 5, 16, 31, 62, 63):
        ties = [((2 * j + 1) << s) >> 1 for j in range(-3, 3)] if s else []
        values = [v for v in xs + ties if abs(v) <= lim]
        got = intmath.shift_right(i64(values), s, mode)
        assert got.tolist() == [ref_round(Fraction(v, 1 << s), mode) for v in values], s


def test_shift_right_per_row_shift_amounts():
    x = i64([[-6, 6], [-6, 6], [-6, 6]])
    s = i64([[0], [1], [2]])
    assert intmath.shift_right(x, s).tolist() == [[-6, 6], [-3, 3], [-2, 2]]


def test_saturate_edges():
    x = i64([INT64_MAX, -INT64_MAX - 1, 128, 127, -128, -129, 0])
    assert intmath.saturate(x, 8).tolist() == [127, -128, 127, 127, -128, -128, 0]
    assert intmath.saturate(x, 64).tolist() == x.tolist()
    assert intmath.saturate(i64([3, -3]), 2).tolist() == [1, -2]


def test_intmath_rejects_bad_input():
    with pytest.raises(ValueError, match="^n must be an int64 array, not float64$"):
        intmath.isqrt(np.array([4.0]))
    with pytest.raises(ValueError, match="^n must be an int64 array, not int32$"):
        intmath.isqrt(i32([4]))
    with pytest.raises(ValueError, match=r"^n must lie in \[0, 9223372036854775807\], not -1$"):
        intmath.isqrt(i64([-1]))
    with pytest.raises(ValueError, match=r"^k must lie in \[0, 62\], not 63$"):
        intmath.reciprocal(i64([1]), 63)
    with pytest.raises(ValueError, match=r"^d must lie in \[0, 4611686018427387904\], not -2$"):
        intmath.reciprocal(i64([-2]), 8)
    with pytest.raises(ValueError, match="^x must be an int64 array, not list$"):
        intmath.shift_right([1, 2], 1)
    with pytest.raises(ValueError, match=r"^s must lie in \[0, 63\], not 64$"):
        intmath.shift_right(i64([1]), 64)
    with pytest.raises(ValueError, match="^rounding must be one of 'floor', 'half_away', "
                                         "'half_even', not 'up'$"):
        intmath.shift_right(i64([1]), 1, "up")
    with pytest.raises(ValueError, match=r"^x must lie in \[-4611686018427387903, "):
        intmath.shift_right(i64([-(1 << 62)]), 1)
    with pytest.raises(ValueError, match=r"^bits must lie in \[2, 64\], not 1$"):
        intmath.saturate(i64([0]), 1)


# --------------------------------------------------------------------------------------
# requant
# --------------------------------------------------------------------------------------

def test_dyadic_multiplier_is_accurate_over_the_range():
    rng = np.random.default_rng(2)
    ratios = [1.0, 0.5, 0.75, 2.0 ** -32, 3.0, 1e3, 2.0 ** 30 - 1.0]
    ratios += [float(2.0 ** v) for v in rng.uniform(-32, 29.9, 300)]
    for r in ratios:
        m, e = requant.dyadic_multiplier(r)
        assert 1 << 30 <= m < 1 << 31 and 0 <= e <= 63, (r, m, e)
        assert abs(Fraction(m, 1 << e) - Fraction(r)) <= Fraction(r) / (1 << 31), r
    assert requant.dyadic_multiplier(1.0) == (1 << 30, 30)
    assert requant.dyadic_multiplier(0.5) == (1 << 30, 31)
    # The mantissa rounds up to 2**31: m drops to 2**30 and e by one.
    assert requant.dyadic_multiplier(1.0 - 2.0 ** -33) == (1 << 30, 30)
    assert requant.dyadic_multiplier(2.0 ** 30 - 2.0 ** -20) == (1 << 30, 0)


def test_dyadic_multiplier_subnormal_ratios():
    assert requant.dyadic_multiplier(2.0 ** -40) == (1 << 23, 63)
    m, e = requant.dyadic_multiplier(1e-30)
    assert (m, e) == (0, 63)
    q = i32([INT32_MIN, -1, 0, 1, INT32_MAX])
    for r in (2.0 ** -33, 2.0 ** -40, 1e-30):
        m, e = requant.dyadic_multiplier(r)
        # Below 2**-32 every int32 input rounds to 0, exactly as round(q * r) does.
        assert requant.requantize(q, m, e, 32).tolist() == [0] * 5


@pytest.mark.parametrize("bad, message", [
    (0.0, "ratio must be a positive finite number, not 0.0"),
    (-1.5, "ratio must be a positive finite number, not -1.5"),
    (float("nan"), "ratio must be a positive finite number, not nan"),
    (float("inf"), "ratio must be a positive finite number, not inf"),
    (2.0 ** 30, "ratio must be below 2**30, not 1073741824.0"),
    ("1", "ratio must be a number, not '1'"),
])
def test_dyadic_multiplier_rejects(bad, message):
    with pytest.raises(ValueError) as info:
        requant.dyadic_multiplier(bad)
    assert str(info.value) == message


def test_requantize_matches_python_reference():
    q_values = [INT32_MIN, INT32_MIN + 1, -(1 << 20), -12345, -3, -2, -1, 0, 1, 2, 3, 12345,
                1 << 20, INT32_MAX - 1, INT32_MAX]
    q = i32(q_values)
    for m in (0, 1, 3, 1 << 30, 1518500250, (1 << 31) - 1):
        for e in (0, 1, 2, 30, 31, 40, 62, 63):
            for bits in (8, 16, 32):
                for mode in ("half_away", "half_even", "floor"):
                    got = requant.requantize(q, m, e, bits, mode)
                    want = [ref_requant(v, m, e, bits, mode) for v in q_values]
                    assert got.tolist() == want, (m, e, bits, mode)
                    assert got.dtype == requant.out_dtype(bits)


def test_requantize_rounds_ties_away_from_zero_by_default():
    # q * 1 / 2 = +-0.5, +-1.5, +-2.5
    q = i32([1, -1, 3, -3, 5, -5])
    assert requant.requantize(q, 1, 1).tolist() == [1, -1, 2, -2, 3, -3]
    assert requant.requantize(q, 1, 1, rounding="half_even").tolist() == [0, 0, 2, -2, 2, -2]


def test_requantize_saturates():
    q = i32([INT32_MAX, INT32_MIN, 200, -200, 127, -128])
    assert requant.requantize(q, 1 << 30, 30, 8).tolist() == [127, -128, 127, -128, 127, -128]
    assert requant.requantize(q, 1 << 30, 30, 4).tolist() == [7, -8, 7, -8, 7, -8]
    assert requant.requantize(q, (1 << 31) - 1, 0, 32).tolist()[:2] == [INT32_MAX, INT32_MIN]


def test_relu_commutes_with_requantize():
    rng = np.random.default_rng(3)
    q = np.concatenate([i32([INT32_MIN, -1, 0, 1, INT32_MAX]),
                        rng.integers(INT32_MIN, INT32_MAX, 500, dtype=np.int32)])
    m, e = requant.dyadic_multiplier(0.00123)
    a = requant.requantize(requant.relu(q), m, e)
    b = requant.relu(requant.requantize(q, m, e))
    assert a.tolist() == b.tolist()
    assert requant.relu(q).dtype == np.int32 and requant.relu(q).min() == 0


def test_requantize_rejects_bad_input():
    with pytest.raises(ValueError, match="^q must be an int32 array, not float64$"):
        requant.requantize(np.array([1.0]), 1, 1)
    with pytest.raises(ValueError, match="^q must be an int32 array, not int64$"):
        requant.requantize(i64([1]), 1, 1)
    with pytest.raises(ValueError, match=r"^m must lie in \[0, 2147483647\], not 2147483648$"):
        requant.requantize(i32([1]), 1 << 31, 1)
    with pytest.raises(ValueError, match=r"^e must lie in \[0, 63\], not 64$"):
        requant.requantize(i32([1]), 1, 64)
    with pytest.raises(ValueError, match=r"^out_bits must lie in \[2, 32\], not 33$"):
        requant.requantize(i32([1]), 1, 1, 33)
    with pytest.raises(ValueError, match="^q must be a signed integer array, not uint8$"):
        requant.relu(np.array([1], dtype=np.uint8))


# --------------------------------------------------------------------------------------
# i-exp and i-Softmax
# --------------------------------------------------------------------------------------

SCALES = [2.0 ** -k for k in (0, 3, 8, 12, 16, 24, 40)] + [0.3, 1.1e-3, 3.3e-5, 7.7e-9]


@pytest.mark.parametrize("scale", SCALES)
def test_exp_constants_keep_documented_widths(scale):
    c = softmax.exp_constants(scale)  # __post_init__ re-checks every range
    assert (1 << 13) < c.ln2_q <= 1 << 14
    assert c.q_b < 1 << 16 and c.q_c < 1 << 31
    assert 1 << 19 <= c.q_c >> c.out_shift < 1 << 20
    codes = softmax.i_exp(i64([0]), c)
    assert abs(codes[0] * c.out_scale - 1.0) < 2e-6


def test_i_exp_error_bound():
    rng = np.random.default_rng(4)
    scales = [2.0 ** -3, 2.0 ** -11, 2.0 ** -17, 2.0 ** -24]
    scales += [float(2.0 ** -v) for v in rng.uniform(2, 24, 8)]
    (row,) = accuracy.exp_accuracy(scales, max_points=1 << 17)
    assert row["samples"] > 100_000
    assert row["max_abs_err"] <= accuracy.EXP_MAX_ERR


def test_i_exp_is_monotone_and_clamped():
    c = softmax.exp_constants(2.0 ** -10)
    x = np.arange(-40_000, 1, dtype=np.int64)
    codes = softmax.i_exp(x, c)
    assert np.all(np.diff(codes) >= 0)
    assert codes[-1] == c.q_c >> c.out_shift
    assert softmax.i_exp(i64([-(1 << 32) + 1]), c).tolist() == [0]
    # Far below -30 ln 2 the clamp holds the code at 0.
    assert codes[0] == 0


def test_i_softmax_matches_python_reference():
    rng = np.random.default_rng(5)
    for scale in (2.0 ** -12, 0.05, 7e-7):
        c = softmax.exp_constants(scale)
        for n in (1, 2, 17, 300):
            rows = np.round(rng.normal(0.0, 3.0, (3, n)) / scale).astype(np.int64)
            rows = np.clip(rows, INT32_MIN, INT32_MAX).astype(np.int32)
            rows[0, 0] = INT32_MAX
            got = softmax.i_softmax(rows, c)
            assert got.dtype == np.uint8
            assert got.tolist() == [ref_softmax_row(r, c) for r in rows.tolist()]
            for shift in (1, 3, 8):
                got = softmax.i_softmax(rows, c, shift)
                assert got.tolist() == [ref_softmax_row(r, c, shift) for r in rows.tolist()]
    row = i32([INT32_MIN, INT32_MAX, 0, -5, INT32_MIN + 1])
    c = softmax.exp_constants(2.0 ** -20)
    assert softmax.i_softmax(row, c).tolist() == ref_softmax_row(row.tolist(), c)


def test_i_softmax_error_bound():
    rows = accuracy.softmax_accuracy(lengths=(16, 33, 1000, 4096), rows=8,
                                     scales=(2.0 ** -12, 1.7e-3), temperatures=(0.5, 2.0, 8.0))
    assert len(rows) == 4
    for row in rows:
        assert row["max_abs_err"] <= accuracy.SOFTMAX_MAX_ERR, row


def test_i_softmax_long_row_with_a_dominant_score():
    # With I-BERT's 16-bit exp this row loses every small term (error 0.034); 20 bits keep it.
    rng = np.random.default_rng(6)
    scale = 2.0 ** -12
    scores = rng.normal(0.0, 1.0, 4096)
    scores[7] = 12.0  # the other 4095 terms add up to about 4% of the sum
    q = np.round(scores / scale).astype(np.int32)
    x = q * scale
    ref = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    out = softmax.i_softmax(q, softmax.exp_constants(scale)) / 256.0
    assert ref[7] < 0.97
    assert np.abs(out - ref).max() <= accuracy.SOFTMAX_MAX_ERR


@pytest.mark.parametrize("n", [1, 2, 15, 17, 100, 255, 256, 257, 4096])
def test_i_softmax_all_equal_rows(n):
    c = softmax.exp_constants(2.0 ** -8)
    out = softmax.i_softmax(np.full((2, n), -77, dtype=np.int32), c).astype(np.int64)
    assert np.all(out == out[0, 0])
    assert abs(out[0, 0] / 256.0 - 1.0 / n) <= 1.0 / 256.0
    e = c.q_c >> c.out_shift  # every element is the row maximum
    assert out[0, 0] == min((e * ((1 << 32) // (n * e)) + (1 << 23)) >> 24, 255)


def test_i_softmax_one_hot_and_extremes():
    c = softmax.exp_constants(2.0 ** -12)
    row = np.full(33, INT32_MIN, dtype=np.int32)
    row[5] = INT32_MAX
    out = softmax.i_softmax(row, c)
    assert out[5] == 255 and np.count_nonzero(out) == 1
    assert softmax.i_softmax(i32([INT32_MIN, INT32_MAX]), c).tolist() == [0, 255]
    assert softmax.i_softmax(i32([INT32_MAX]), c).tolist() == [255]
    assert softmax.i_softmax(i32([INT32_MIN]), c).tolist() == [255]


def test_i_softmax_is_shift_invariant_and_sums_to_one():
    rng = np.random.default_rng(7)
    c = softmax.exp_constants(2.0 ** -10)
    x = rng.integers(-5000, 5000, (64, 61), dtype=np.int32)
    out = softmax.i_softmax(x, c)
    assert out.tolist() == softmax.i_softmax(x + np.int32(123_456), c).tolist()
    sums = out.astype(np.int64).sum(axis=-1)
    # Each code is within half a step of its value, whose row sums to 1 less the floor of
    # factor (at most 61 * 2**20 / 2**24 < 4 steps).
    assert np.all(sums <= 256 + 30) and np.all(sums >= 256 - 34)
    # Rounding is unbiased: flooring, as I-BERT does, would lose about 61 / 2 steps a row.
    assert abs(sums.mean() - 256) < 4
    sums7 = softmax.i_softmax(x, c, 1).astype(np.int64).sum(axis=-1)
    assert abs(sums7.mean() - 128) < 4


def test_i_softmax_shift():
    c = softmax.exp_constants(2.0 ** -12)
    row = np.full(33, INT32_MIN, dtype=np.int32)
    row[5] = INT32_MAX
    assert softmax.i_softmax(row, c, 1)[5] == 127  # a one-hot row: 128 clipped
    assert softmax.i_softmax(row, c, 8)[5] == 0
    assert not softmax.i_softmax(row, c, 9).any() and not softmax.i_softmax(row, c, 63).any()
    for bad in (-1, 64, 1.0, True):
        with pytest.raises(ValueError, match="shift"):
            softmax.i_softmax(row, c, bad)


def test_softmax_stats_widths():
    c = softmax.exp_constants(2.0 ** -16)
    rows = np.stack([np.full(4096, 9, dtype=np.int32), np.arange(4096, dtype=np.int32) * 1000])
    stats = softmax.softmax_stats(rows, c)
    assert stats.row_max[:, 0].tolist() == [9, 4095 * 1000]
    assert np.all(stats.exp_sum >= 1 << 19) and np.all(stats.exp_sum < 1 << 32)
    assert np.all(stats.factor >= 1) and np.all(stats.factor <= 1 << 13)


def test_softmax_rejects_bad_input():
    c = softmax.exp_constants(0.01)
    with pytest.raises(ValueError, match="^x must be an int32 array, not float64$"):
        softmax.i_softmax(np.zeros(4), c)
    with pytest.raises(ValueError, match="^x must be an int32 array, not int64$"):
        softmax.i_softmax(i64([1, 2]), c)
    with pytest.raises(ValueError, match="^rows of x must have 1 to 4096 elements, not 0$"):
        softmax.i_softmax(np.zeros((2, 0), dtype=np.int32), c)
    with pytest.raises(ValueError, match="^rows of x must have 1 to 4096 elements, not 4097$"):
        softmax.i_softmax(np.zeros(4097, dtype=np.int32), c)
    with pytest.raises(ValueError, match=r"^x must have at least one dimension \(the row\)"):
        softmax.i_softmax(np.array(3, dtype=np.int32), c)
    with pytest.raises(ValueError, match=r"^x must lie in \[-4294967295, 0\], not 1$"):
        softmax.i_exp(i64([0, 1]), c)
    for bad, message in [(0.0, "in_scale must be a positive finite number, not 0.0"),
                         (-2.0, "in_scale must be a positive finite number, not -2.0"),
                         (float("nan"), "in_scale must be a positive finite number, not nan"),
                         (2.0, "in_scale must lie in [2**-40, 1], not 2.0"),
                         (None, "in_scale must be a number, not None")]:
        with pytest.raises(ValueError) as info:
            softmax.exp_constants(bad)
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^ln2_q must lie in \[8193, 16384\], not 100$"):
        softmax.ExpConstants(shift=0, ln2_q=100, q_b=200, q_c=1000, out_shift=0,
                             out_scale=1.0)


# --------------------------------------------------------------------------------------
# i-GELU
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", SCALES)
def test_gelu_constants_keep_documented_widths(scale):
    c = gelu.gelu_constants(scale)
    assert (1 << 13) < -c.q_b <= 1 << 14
    assert c.q_b ** 2 <= -c.q_c < 1 << 29
    assert 1 << 15 <= (-c.q_c) >> c.poly_shift < 1 << 16
    assert scale < c.out_scale <= 2 * scale


def test_i_gelu_error_bound():
    scales = [2.0 ** -10, 2.0 ** -16, 2.0 ** -23, 9.3e-4, 1.3e-4, 7.7e-6, 2.9e-9]
    (row,) = accuracy.gelu_accuracy(scales, max_points=100_001)
    assert row["max_abs_err"] <= accuracy.GELU_MAX_ERR
    assert row["rms_err"] <= accuracy.GELU_RMS_ERR


@pytest.mark.parametrize("scale", [2.0 ** -6, 2.0 ** -3, 0.3, 1.0])
def test_i_gelu_coarse_scales_add_at_most_one_input_step(scale):
    (row,) = accuracy.gelu_accuracy([scale])
    assert row["max_abs_err"] <= accuracy.GELU_POLY_MAX_ERR + scale


def test_i_gelu_matches_python_reference():
    rng = np.random.default_rng(8)
    for scale in (2.0 ** -16, 0.02, 3.1e-9, 1.0):
        c = gelu.gelu_constants(scale)
        q = np.concatenate([i32([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX]),
                            rng.integers(INT32_MIN, INT32_MAX, 300, dtype=np.int32),
                            np.clip(np.round(rng.normal(0, 3.0, 300) / scale), INT32_MIN,
                                    INT32_MAX).astype(np.int32)])
        out, out_scale = gelu.i_gelu(q, c)
        assert out.dtype == np.int32 and out_scale == c.out_scale
        assert out.tolist() == [ref_gelu(v, c) for v in q.tolist()]


def test_i_gelu_extremes_fit_without_saturation():
    for scale in (2.0 ** -30, 2.0 ** -16, 0.01):
        c = gelu.gelu_constants(scale)
        q = i32([INT32_MIN, INT32_MIN + 1, INT32_MAX, 1 << 30, -(1 << 30), 0])
        out, out_scale = gelu.i_gelu(q, c)
        assert np.all(np.abs(out.astype(np.int64)) <= np.abs(q.astype(np.int64)))
        x = q.astype(np.float64) * scale
        ref = np.where(x > 3.0 * math.sqrt(2.0), x, np.where(x < -3.0 * math.sqrt(2.0), 0.0,
                                                             np.nan))
        big = ~np.isnan(ref)
        # Past the clamp, GELU(x) is x (to one output step) or exactly 0.
        assert np.all(np.abs(out[big] * out_scale - ref[big]) <= out_scale)
        assert np.all(out[big & (x < 0)] == 0) and out[-1] == 0


def test_i_gelu_rejects_bad_input():
    c = gelu.gelu_constants(2.0 ** -10)
    with pytest.raises(ValueError, match="^q must be an int32 array, not float32$"):
        gelu.i_gelu(np.zeros(3, dtype=np.float32), c)
    with pytest.raises(ValueError, match="^q must be an int32 array, not int16$"):
        gelu.i_gelu(np.zeros(3, dtype=np.int16), c)
    with pytest.raises(ValueError, match="^consts must be a GeluConstants, not ExpConstants$"):
        gelu.i_gelu(i32([1]), softmax.exp_constants(0.1))
    with pytest.raises(ValueError, match="^in_scale must be a positive finite number, not -0.5$"):
        gelu.gelu_constants(-0.5)
    with pytest.raises(ValueError, match=r"^in_scale must lie in \[2\*\*-40, 1\], not 1e-20$"):
        gelu.gelu_constants(1e-20)


# --------------------------------------------------------------------------------------
# i-LayerNorm
# --------------------------------------------------------------------------------------

def _ln_consts(n: int, seed: int = 0, out_scale: float = 0.05):
    rng = np.random.default_rng(seed)
    return layernorm.layernorm_constants(rng.normal(1.0, 0.2, n), rng.normal(0.0, 0.3, n),
                                         out_scale)


def _adversarial_rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    rows = [np.where(np.arange(n) % 2 == 0, INT32_MIN, INT32_MAX),
            np.full(n, INT32_MAX), np.full(n, INT32_MIN),
            np.concatenate([[INT32_MIN], np.full(n - 1, INT32_MAX)]),
            np.concatenate([[INT32_MAX], np.zeros(n - 1)]),
            rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
            rng.integers(0, 2, n), rng.normal(0, 1e6, n)]
    return np.array(rows).astype(np.int32) if n > 1 else np.array(rows)[:, :1].astype(np.int32)


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17, 300])
def test_i_layernorm_matches_python_reference(n):
    c = _ln_consts(n, seed=n, out_scale=0.02)
    rows = _adversarial_rows(n)
    y, _ = layernorm.i_layernorm_normalize(rows)
    out = layernorm.i_layernorm(rows, c)
    assert out.dtype == np.int8
    for row, y_row, out_row in zip(rows.tolist(), y.tolist(), out.tolist(), strict=True):
        want_y, want_out = ref_layernorm_row(row, c)
        assert y_row == want_y
        assert out_row == want_out


def test_i_layernorm_long_row_matches_python_reference():
    c = _ln_consts(4095, seed=1)
    rows = _adversarial_rows(4095)[[0, 5, 7]]
    out = layernorm.i_layernorm(rows, c)
    assert out.tolist() == [ref_layernorm_row(r, c)[1] for r in rows.tolist()]


@pytest.mark.parametrize("n", [1, 2, 17, 4096])
def test_i_layernorm_intermediate_widths(n):
    rows = _adversarial_rows(n)
    stats = layernorm.layernorm_stats(rows)
    y, scale = layernorm.i_layernorm_normalize(rows)
    assert scale == math.sqrt(n) / 2.0 ** 30
    assert np.all(np.abs(stats.sum) <= n << 31)
    assert np.all((stats.shift >= -14) & (stats.shift <= 29))
    assert np.all((stats.var >= 0) & (stats.var <= n << 30))
    assert np.all(stats.root <= 1 << 21)
    varying = (rows != rows[:, :1]).any(axis=-1)
    assert np.all(stats.root[varying] >= 1 << 14)
    assert np.all((stats.factor[varying] >= 1 << 10) & (stats.factor[varying] <= 1 << 17))
    assert np.all(np.abs(y.astype(np.int64)) <= 1 << 30)
    assert np.all(y[~varying] == 0)


def test_i_layernorm_error_bound():
    rows = accuracy.layernorm_accuracy(lengths=(16, 17, 768, 4096), rows=8)
    assert len(rows) == 4
    for row in rows:
        bound = (accuracy.LAYERNORM_NORM_MAX_ERR if row["unit"] == "abs"
                 else accuracy.LAYERNORM_MAX_LSB)
        assert row["max_abs_err"] <= bound, row


def test_i_layernorm_single_outlier_rows_keep_the_bound():
    # The hardest case for the pre-shift: one value sets the shift, the rest nearly vanish.
    rng = np.random.default_rng(10)
    for n in (16, 1024, 4096):
        rows = []
        for big in (1, 7, 100, 12345, (1 << 20) + 7, INT32_MAX):
            rows += [np.r_[big, np.zeros(n - 1)], np.r_[big, rng.integers(0, 3, n - 1)],
                     np.r_[big, big, rng.normal(0, 1, n - 2)]]
        x = np.clip(np.round(np.array(rows)), INT32_MIN, INT32_MAX).astype(np.int32)
        xf = x.astype(np.float64)
        ref = (xf - xf.mean(axis=-1, keepdims=True)) / xf.std(axis=-1, keepdims=True)
        y, scale = layernorm.i_layernorm_normalize(x)
        assert np.abs(y * scale - ref).max() <= accuracy.LAYERNORM_NORM_MAX_ERR


def test_i_layernorm_small_integer_rows_are_centred_exactly():
    # A rounded integer mean would leave a row of 0s and 1s off centre.
    for row in ([0, 1] * 8, [0, 0, 0, 1], [5, 6, 6]):
        x = i32(row).astype(np.float64)
        y, scale = layernorm.i_layernorm_normalize(i32(row))
        ref = (x - x.mean()) / x.std()
        assert np.abs(y * scale - ref).max() < 1e-4


def test_i_layernorm_exact_invariances():
    rng = np.random.default_rng(9)
    x = rng.integers(-(1 << 20), 1 << 20, (6, 77), dtype=np.int32)
    y, _ = layernorm.i_layernorm_normalize(x)
    for shifted in (x + np.int32(1_000_000), x * np.int32(8), x * np.int32(-1) * np.int32(-1)):
        assert layernorm.i_layernorm_normalize(shifted)[0].tolist() == y.tolist()


def test_i_layernorm_constant_rows_give_beta():
    n = 40
    beta = np.linspace(-1.2, 1.2, n)
    c = layernorm.layernorm_constants(np.linspace(0.5, 2.0, n), beta, 0.01)
    rows = i32([[v] * n for v in (INT32_MIN, -1, 0, 7, INT32_MAX)])
    out = layernorm.i_layernorm(rows, c)
    assert np.all(out == out[0])
    assert np.all(np.abs(out * 0.01 - beta) <= 0.5 * 0.01 + 1e-9)


def test_i_layernorm_saturates_to_int8():
    n = 64
    gamma, beta = np.ones(n), np.zeros(n)
    c = layernorm.layernorm_constants(gamma, beta, out_scale=0.01)  # +-1.28 fits
    row = np.zeros((1, n), dtype=np.int32)
    row[0, 0] = 1000  # normalized value sqrt(63) ~ 7.9, the others ~ -0.126
    out = layernorm.i_layernorm(row, c)
    assert out[0, 0] == 127
    assert np.all(out[0, 1:] == round(-1 / math.sqrt(63) / 0.01))


def test_layernorm_rejects_bad_input():
    c = _ln_consts(8)
    with pytest.raises(ValueError, match="^x must be an int32 array, not float64$"):
        layernorm.i_layernorm(np.zeros((2, 8)), c)
    with pytest.raises(ValueError, match=r"^rows of x must have 8 elements \(the length of "
                                         r"gamma\), not 9$"):
        layernorm.i_layernorm(np.zeros((2, 9), dtype=np.int32), c)
    with pytest.raises(ValueError, match="^rows of x must have 1 to 4096 elements, not 4097$"):
        layernorm.i_layernorm_normalize(np.zeros(4097, dtype=np.int32))
    with pytest.raises(ValueError, match="^gamma must be a float array, not int64$"):
        layernorm.layernorm_constants(np.ones(4, dtype=np.int64), np.zeros(4), 0.1)
    with pytest.raises(ValueError, match="^gamma and beta must have the same length, not 4 "
                                         "and 5$"):
        layernorm.layernorm_constants(np.ones(4), np.zeros(5), 0.1)
    with pytest.raises(ValueError, match="^beta must be finite$"):
        layernorm.layernorm_constants(np.ones(2), np.array([0.0, np.inf]), 0.1)
    with pytest.raises(ValueError, match="^out_scale must be a positive finite number, not 0$"):
        layernorm.layernorm_constants(np.ones(4), np.zeros(4), 0)
    with pytest.raises(ValueError, match="^rows must have 1 to 4096 elements, not 4097$"):
        layernorm.layernorm_constants(np.ones(4097), np.zeros(4097), 0.1)
    with pytest.raises(ValueError, match="^gamma_q must be an int16 array, not int32$"):
        layernorm.LayerNormConstants(gamma_q=np.ones(4, dtype=np.int32),
                                     beta_q=np.zeros(4, dtype=np.int64), m=1, e=1,
                                     gamma_scale=1.0, out_scale=1.0)


# --------------------------------------------------------------------------------------
# Configuration, table, docs
# --------------------------------------------------------------------------------------

def test_row_length_bound_matches_the_default_configuration():
    assert softmax.MAX_ROW_LEN == layernorm.MAX_ROW_LEN == TesseraConfig().max_row_len


def test_render_markdown():
    rows = [{"operation": "i-exp", "case": "c", "samples": 3, "max_abs_err": 0.00123456,
             "rms_err": None, "unit": "abs", "bound": 0.002}]
    text = accuracy.render_markdown(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| operation | case | samples | max abs error |")
    assert lines[2] == "| i-exp | c | 3 | 0.00123 | - | abs | 0.002 |"
    assert text.endswith("\n") and len(lines) == 3
