"""Accuracy of the integer non-linear operations against float64 references.

Each ``*_accuracy`` function measures one operation and returns rows of a table (a list of
dicts with the keys of :data:`COLUMNS`); :func:`accuracy_table` gathers them and
:func:`render_markdown` formats them. The tables of docs/accuracy.md are printed by::

    python -m tessera.sw.golden.accuracy

and ``--isqrt-exhaustive-bits 32`` adds an exhaustive count of square-root passes over
every input below ``2**32`` (about ten minutes). The bounds stated in docs/accuracy.md are the
constants below; tests/test_golden_nonlinear.py asserts them.

Errors are measured on quantized inputs (the float reference sees the same values the
integer model sees), so they are the error of the integer operation itself.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from . import gelu as _gelu
from . import layernorm as _ln
from . import softmax as _sm
from .intmath import bit_length, isqrt_with_passes

__all__ = [
    "COLUMNS",
    "EXP_MAX_ERR",
    "GELU_MAX_ERR",
    "GELU_MAX_ERR_SCALE",
    "GELU_RMS_ERR",
    "GELU_POLY_MAX_ERR",
    "SOFTMAX_MAX_ERR",
    "LAYERNORM_NORM_MAX_ERR",
    "LAYERNORM_MAX_LSB",
    "exp_accuracy",
    "gelu_accuracy",
    "softmax_accuracy",
    "layernorm_accuracy",
    "isqrt_passes",
    "isqrt_passes_exhaustive",
    "accuracy_table",
    "render_markdown",
    "main",
]

#: Columns of a table row.
COLUMNS = ("operation", "case", "samples", "max_abs_err", "rms_err", "unit", "bound")

#: i-exp on (-ln 2, 0], absolute (I-BERT: 1.9e-3 for the polynomial alone).
EXP_MAX_ERR = 2e-3
#: i-GELU on [-4, 4], absolute, for input scales ``S <= GELU_MAX_ERR_SCALE`` (the output
#: rounding adds up to one input step ``S`` to the polynomial's 0.0182).
GELU_MAX_ERR = 0.02
GELU_MAX_ERR_SCALE = 2.0 ** -10
#: i-GELU RMS error on [-4, 4] (I-BERT: 0.0082), same scales.
GELU_RMS_ERR = 0.0085
#: i-GELU at any input scale ``S``: max abs error at most ``GELU_POLY_MAX_ERR + S`` (the
#: polynomial's 0.01815, then one input step of output rounding).
GELU_POLY_MAX_ERR = 0.0182
#: i-Softmax, absolute error of a probability: the rounding to 8 bits (<= 2**-9), or the
#: clip of a near one-hot row's 256 to 255 (2**-8), plus the exp error relative to the row
#: sum.
SOFTMAX_MAX_ERR = 5e-3
#: i-LayerNorm normalized value ``(x - mean) / std``, absolute, before gamma and beta.
LAYERNORM_NORM_MAX_ERR = 4e-3
#: i-LayerNorm int8 output, in output steps (0.5 is the rounding alone).
LAYERNORM_MAX_LSB = 0.55

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _row(operation, case, samples, max_abs, rms, unit, bound):
    return {"operation": operation, "case": case, "samples": int(samples),
            "max_abs_err": float(max_abs), "rms_err": None if rms is None else float(rms),
            "unit": unit, "bound": bound}


def _grid(lo: int, hi: int, max_points: int) -> np.ndarray:
    """Every integer in [lo, hi] if there are few enough, else an even sample with the ends."""
    if hi - lo + 1 <= max_points:
        return np.arange(lo, hi + 1, dtype=np.int64)
    return np.unique(np.linspace(lo, hi, max_points).round().astype(np.int64))


def _random_scales(rng, lo_exp: float, hi_exp: float, count: int) -> list[float]:
    return [float(2.0 ** -e) for e in rng.uniform(lo_exp, hi_exp, size=count)]


def exp_accuracy(scales=None, max_points: int = 1 << 20, seed: int = 0) -> list[dict]:
    """Max abs error of i-exp on ``(-ln 2, 0]`` for several input scales.

    Parameters
    ----------
    scales : sequence of float, optional
        Input scales; by default powers of two from ``2**-2`` to ``2**-24`` and 16 random
        scales between them.
    max_points : int
        Most input points per scale (all points when fewer).
    seed : int
        Seed of the random scales.

    Returns
    -------
    list of dict
        One row per group of scales: powers of two, then the random ones.
    """
    rng = np.random.default_rng(seed)
    groups = ([("S = 2^-2 ... 2^-24", [2.0 ** -k for k in range(2, 25, 2)]),
               ("16 random S in [2^-24, 2^-2]", _random_scales(rng, 2, 24, 16))]
              if scales is None else [("S = " + ", ".join(f"{s:.3g}" for s in scales), scales)])
    rows = []
    for name, group in groups:
        worst, count = 0.0, 0
        for scale in group:
            consts = _sm.exp_constants(scale)
            k = _grid(0, math.ceil(math.log(2.0) / scale), max_points)
            k = k[k * scale < math.log(2.0)]
            approx = _sm.i_exp(-k, consts) * consts.out_scale
            worst = max(worst, float(np.abs(approx - np.exp(-k * scale)).max()))
            count += k.size
        rows.append(_row("i-exp", f"x in (-ln 2, 0], {name}", count, worst, None, "abs",
                         EXP_MAX_ERR))
    return rows


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_accuracy(scales=None, max_points: int = 200_001, seed: int = 0) -> list[dict]:
    """Max abs and RMS error of i-GELU on ``[-4, 4]`` for several input scales.

    Parameters
    ----------
    scales : sequence of float, optional
        Input scales; by default ``2**-10``, ``2**-16``, ``2**-24`` and 8 random scales in
        ``[2**-30, 2**-10]``, then the coarse ``2**-6`` (bounded by
        ``GELU_POLY_MAX_ERR + S`` only).
    max_points : int
        Most input points per scale (an even sample of ``[-4, 4]`` beyond that).
    seed : int
        Seed of the random scales.

    Returns
    -------
    list of dict
    """
    rng = np.random.default_rng(seed)
    if scales is None:
        groups = [("S = 2^-10, 2^-16, 2^-24", [2.0 ** -10, 2.0 ** -16, 2.0 ** -24]),
                  ("8 random S in [2^-30, 2^-10]", _random_scales(rng, 10, 30, 8)),
                  ("S = 2^-6 (coarse: + up to one input step)", [2.0 ** -6])]
    else:
        groups = [("S = " + ", ".join(f"{s:.3g}" for s in scales), scales)]
    rows = []
    for name, group in groups:
        worst, sq, count = 0.0, 0.0, 0
        for scale in group:
            consts = _gelu.gelu_constants(scale)
            lim = min(math.floor(4.0 / scale), _INT32_MAX)
            q = _grid(-lim, lim, max_points)
            out, out_scale = _gelu.i_gelu(q.astype(np.int32), consts)
            err = out * out_scale - _gelu_ref(q * scale)
            worst = max(worst, float(np.abs(err).max()))
            sq += float((err * err).sum())
            count += q.size
        bounded = max(group) <= GELU_MAX_ERR_SCALE
        rows.append(_row("i-GELU", f"x in [-4, 4], {name}", count, worst,
                         math.sqrt(sq / count), "abs",
                         f"{GELU_MAX_ERR} (RMS {GELU_RMS_ERR})" if bounded
                         else f"{GELU_POLY_MAX_ERR} + S"))
    return rows


def _quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), _INT32_MIN, _INT32_MAX).astype(np.int32)


def _softmax_ref(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_accuracy(lengths=(16, 128, 512, 4096), temperatures=(0.5, 1.0, 2.0, 4.0, 8.0),
                     scales=(2.0 ** -12, 2.0 ** -6), rows: int = 32,
                     seed: int = 0) -> list[dict]:
    """Max abs error of i-Softmax probabilities on attention-like score rows.

    Scores are ``N(0, T**2)`` for each temperature ``T`` (the spread of real attention
    logits), plus rows with outliers: one score 12 above an ``N(0, 1)`` row (a near one-hot
    row) and four scores 6 above it. They are quantized at each scale and the reference is
    the float64 softmax of the quantized values.

    Parameters
    ----------
    lengths : sequence of int
        Row lengths, 1 to 4096.
    temperatures : sequence of float
        Standard deviations of the scores.
    scales : sequence of float
        Input scales (``2**-12`` is typical of an int32 ``QK^T`` accumulator).
    rows : int
        Rows per (length, distribution, scale).
    seed : int

    Returns
    -------
    list of dict
        One row per scale and distribution family, over all lengths.
    """
    rng = np.random.default_rng(seed)
    table = []
    for scale in scales:
        consts = _sm.exp_constants(scale)
        for family in ("normal", "outliers"):
            worst, sq, count = 0.0, 0.0, 0
            for n in lengths:
                cases = []
                if family == "normal":
                    cases = [rng.normal(0.0, t, size=(rows, n)) for t in temperatures]
                else:
                    base = rng.normal(0.0, 1.0, size=(rows, n))
                    one = base.copy()
                    one[np.arange(rows), rng.integers(0, n, rows)] += 12.0
                    few = base.copy()
                    for _ in range(4):
                        few[np.arange(rows), rng.integers(0, n, rows)] += 6.0
                    cases = [one, few]
                for scores in cases:
                    q = _quantize(scores, scale)
                    out = _sm.i_softmax(q, consts).astype(np.float64) * _sm.SOFTMAX_OUT_SCALE
                    err = out - _softmax_ref(q.astype(np.float64) * scale)
                    worst = max(worst, float(np.abs(err).max()))
                    sq += float((err * err).sum())
                    count += err.size
            what = (f"N(0, T^2), T = {', '.join(f'{t:g}' for t in temperatures)}"
                    if family == "normal" else "N(0, 1) + one at +12 / four at +6")
            lens = ", ".join(str(n) for n in lengths)
            table.append(_row("i-Softmax", f"{what}; n = {lens}; S = 2^{math.log2(scale):g}",
                              count, worst, math.sqrt(sq / count), "abs (probability)",
                              SOFTMAX_MAX_ERR))
    return table


def _layernorm_rows(rng, rows: int, n: int, sigma: float, outliers: bool) -> np.ndarray:
    """BERT-like LayerNorm inputs: normal values with a per-row offset and, optionally, a
    few fixed channels 20 to 60 times larger (the outlier dimensions of real models)."""
    x = rng.normal(0.0, sigma, size=(rows, n)) + rng.normal(0.0, sigma, size=(rows, 1))
    if outliers and n >= 8:
        channels = rng.choice(n, size=max(1, n // 256), replace=False)
        x[:, channels] *= rng.uniform(20.0, 60.0, size=channels.size)
    return x


def layernorm_accuracy(lengths=(16, 17, 128, 768, 4096), sigmas=(2.0 ** 4, 2.0 ** 12, 2.0 ** 24),
                       rows: int = 32, seed: int = 0) -> list[dict]:
    """Error of i-LayerNorm: normalized values, and int8 outputs in output steps.

    Inputs are int32 values ``N(mu_row, sigma**2)`` for several ``sigma`` (from small
    integers to accumulator values near the int32 limit when outliers are present), with
    and without outlier channels. ``gamma ~ N(1, 0.2**2)``, ``beta ~ N(0, 0.3**2)``; the
    output scale is chosen per case so that the float reference just fits int8. The float
    reference uses no epsilon, like the integer model.

    Parameters
    ----------
    lengths : sequence of int
        Row lengths, 1 to 4096.
    sigmas : sequence of float
        Spread of the int32 inputs.
    rows : int
        Rows per (length, sigma, outlier flag).
    seed : int

    Returns
    -------
    list of dict
        Two rows per outlier flag: normalized error (abs) and output error (steps).
    """
    rng = np.random.default_rng(seed)
    table = []
    for outliers in (False, True):
        norm_worst, out_worst, out_sq, count = 0.0, 0.0, 0.0, 0
        for n in lengths:
            gamma = rng.normal(1.0, 0.2, size=n)
            beta = rng.normal(0.0, 0.3, size=n)
            for sigma in sigmas:
                x = _quantize(_layernorm_rows(rng, rows, n, sigma, outliers), 1.0)
                xf = x.astype(np.float64)
                sd = xf.std(axis=-1, keepdims=True)
                keep = sd[:, 0] > 0  # constant rows are tested separately
                x, xf, sd = x[keep], xf[keep], sd[keep]
                norm = (xf - xf.mean(axis=-1, keepdims=True)) / sd
                y, y_scale = _ln.i_layernorm_normalize(x)
                norm_worst = max(norm_worst, float(np.abs(y * y_scale - norm).max()))
                ref = norm * gamma + beta
                out_scale = float(np.abs(ref).max()) / 127.0
                consts = _ln.layernorm_constants(gamma, beta, out_scale)
                out = _ln.i_layernorm(x, consts).astype(np.float64) * out_scale
                err = (out - ref) / out_scale
                out_worst = max(out_worst, float(np.abs(err).max()))
                out_sq += float((err * err).sum())
                count += err.size
        what = ("normal rows" if not outliers else "normal rows + outlier channels x20..60")
        case = (f"{what}; n = {', '.join(map(str, lengths))}; "
                f"sigma = {', '.join(f'2^{math.log2(s):g}' for s in sigmas)}")
        table.append(_row("i-LayerNorm", case + " (normalized)", count, norm_worst, None,
                          "abs", LAYERNORM_NORM_MAX_ERR))
        table.append(_row("i-LayerNorm", case + " (int8 out)", count, out_worst,
                          math.sqrt(out_sq / count), "output steps", LAYERNORM_MAX_LSB))
    return table


def _isqrt_edges(bits: int) -> np.ndarray:
    """Edge inputs below ``2**bits``: 0, 1, powers of two and their neighbours, ``4**k``
    plus every smaller power of two, and the squares (and their neighbours) of the 129
    integers around ``sqrt(2**k)`` for every ``k``. The slowest inputs sit there: just above
    a power of two the first guess ``2**ceil(bits/2)`` is furthest above the root (twice it
    above ``4**k``), and ``r**2 - 1`` for ``r`` just above ``sqrt(2**k)`` is the typical
    worst case."""
    hi = (1 << bits) - 1
    values = {0, 1, hi}
    for k in range(bits):
        values.update({(1 << k) - 1, 1 << k, (1 << k) + 1})
        r0 = math.isqrt(1 << k)
        for r in range(max(1, r0 - 64), r0 + 65):
            values.update({r * r - 1, r * r, r * r + 1})
    for k in range((bits + 1) // 2 + 1):
        for i in range(2 * k):  # 4**k plus every power of two below it
            values.update({(1 << (2 * k)) + (1 << i) + d for d in (-1, 0, 1)})
    return np.array(sorted(v for v in values if 0 <= v <= hi), dtype=np.int64)


def isqrt_passes(bits: int, samples: int = 1 << 20, seed: int = 0) -> dict:
    """Worst-case Newton passes of ``isqrt`` for inputs below ``2**bits``: edges + sample.

    Every input is also checked: ``root**2 <= n < (root + 1)**2``.

    Parameters
    ----------
    bits : int
        Input width, 1 to 63.
    samples : int
        Uniform random inputs added to the edges (all inputs if ``2**bits`` is smaller).
    seed : int

    Returns
    -------
    dict
        ``bits``, ``inputs`` (count), ``worst_passes``, ``worst_input``, ``method``.

    Raises
    ------
    AssertionError
        If a root is wrong (which would be a bug in ``isqrt``).
    """
    if (1 << bits) <= samples:
        n = np.arange(0, 1 << bits, dtype=np.int64)
        method = "exhaustive"
    else:
        rng = np.random.default_rng(seed)
        # Half uniform, half with a uniformly drawn bit length (small inputs too).
        uniform = rng.integers(0, hi := (1 << bits) - 1, size=samples // 2, dtype=np.int64,
                               endpoint=True)
        lengths = rng.integers(1, bits, size=samples - samples // 2, endpoint=True)
        by_length = (np.left_shift(np.int64(1), lengths - 1)
                     + (rng.integers(0, hi, size=lengths.size, dtype=np.int64, endpoint=True)
                        >> (bits - lengths + 1)))
        n = np.concatenate([_isqrt_edges(bits), uniform, by_length])
        method = f"edges + {samples} random"
    root, passes = isqrt_with_passes(n)
    # (root + 1)**2 > n written as n - root**2 <= 2 root, which cannot overflow int64.
    ok = (root * root <= n) & (n - root * root <= 2 * root)
    assert ok.all(), f"isqrt is wrong for {n[~ok][:4]}"
    i = int(np.argmax(passes))
    return {"bits": bits, "inputs": int(n.size), "worst_passes": int(passes[i]),
            "worst_input": int(n[i]), "method": method}


def isqrt_passes_exhaustive(bits: int, chunk: int = 1 << 22) -> dict:
    """Worst-case Newton passes over *every* input below ``2**bits`` (bits <= 32).

    Uses a fixed-trip-count form of the same iteration (masked, no gathers) so that
    ``2**32`` inputs take minutes; it checks every root as it goes.

    Parameters
    ----------
    bits : int
        1 to 32.
    chunk : int
        Inputs per vector step.

    Returns
    -------
    dict
        As :func:`isqrt_passes`, with ``method = "exhaustive"``.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must lie in [1, 32], not {bits}")
    worst, worst_input = 0, 0
    for start in range(0, 1 << bits, chunk):
        n = np.arange(start, min(start + chunk, 1 << bits), dtype=np.int64)
        x = np.left_shift(np.int64(1), (bit_length(n) + 1) >> 1)
        active = n > 0
        passes = np.zeros_like(n)
        while active.any():
            nxt = (x + n // x) >> 1
            passes += active
            active &= nxt < x
            x = np.where(active, nxt, x)
        ok = (x * x <= n) & ((x + 1) * (x + 1) > n) | (n == 0)
        assert ok.all(), f"isqrt is wrong for {n[~ok][:4]}"
        i = int(np.argmax(passes))
        if passes[i] > worst:
            worst, worst_input = int(passes[i]), int(n[i])
    return {"bits": bits, "inputs": 1 << bits, "worst_passes": worst,
            "worst_input": worst_input, "method": "exhaustive"}


def accuracy_table(seed: int = 0) -> list[dict]:
    """Every accuracy row: i-exp, i-GELU, i-Softmax, i-LayerNorm (the docs' table).

    Parameters
    ----------
    seed : int

    Returns
    -------
    list of dict
    """
    return (exp_accuracy(seed=seed) + gelu_accuracy(seed=seed) + softmax_accuracy(seed=seed)
            + layernorm_accuracy(seed=seed))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_markdown(rows: list[dict]) -> str:
    """A Markdown table of accuracy rows (the keys of :data:`COLUMNS`).

    Parameters
    ----------
    rows : list of dict

    Returns
    -------
    str
        The table, one line per row, ending with a newline.
    """
    head = ["operation", "case", "samples", "max abs error", "RMS error", "unit", "bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _render_isqrt(results: list[dict]) -> str:
    lines = ["| input bits | inputs checked | method | worst passes | a worst input |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['bits']} | {r['inputs']} | {r['method']} | {r['worst_passes']} "
                     f"| {r['worst_input']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Print the accuracy table and the square-root pass counts as Markdown."""
    parser = argparse.ArgumentParser(prog="python -m tessera.sw.golden.accuracy",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isqrt-exhaustive-bits", type=int, default=0, metavar="BITS",
                        help="also count passes over every input below 2**BITS (<= 32)")
    args = parser.parse_args(argv)
    out = sys.stdout
    out.write(render_markdown(accuracy_table(args.seed)))
    out.write("\n")
    results = [isqrt_passes(b, seed=args.seed) for b in (16, 20, 31, 43, 63)]
    if args.isqrt_exhaustive_bits:
        results.append(isqrt_passes_exhaustive(args.isqrt_exhaustive_bits))
    out.write(_render_isqrt(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
