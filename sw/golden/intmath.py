"""Integer building blocks shared by the non-linear units: bit length, square root,
reciprocal, rounding shifts and saturation.

Everything here works on numpy ``int64`` arrays and uses integer operations only, in the
form a hardware datapath computes them: shifts, adds, compares, one multiply or divide per
step. The widths each function needs are in its docstring; the units that use them
(``softmax``, ``gelu``, ``layernorm``, ``requant``) say which width they instantiate.

Rounding convention of the project: a right shift that produces a *value* (requantization,
the output of a unit) rounds half away from zero (``"half_away"``), as gemmlowp and TFLite
do: it is symmetric about zero, so it adds no bias to zero-mean data, and it costs one adder
(``x + 2**(s-1) - (x < 0)``, then an arithmetic shift; nothing to round when ``s = 0``).
Shifts inside a datapath that the I-BERT reference code writes as ``floor`` stay ``floor``.
``"half_even"`` is provided for comparison with frameworks (``torch.round``,
``numpy.round``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "MIN_SCALE",
    "MAX_SCALE",
    "check_scale",
    "INT64_MAX",
    "ROUNDING_MODES",
    "ISQRT_MAX_PASSES",
    "check_int",
    "check_int_array",
    "bit_length",
    "isqrt",
    "isqrt_with_passes",
    "reciprocal",
    "shift_right",
    "saturate",
]

INT64_MAX = (1 << 63) - 1

#: ``floor``: arithmetic shift; ``half_away``: round half away from zero (the project's
#: requantization rounding); ``half_even``: round half to even.
ROUNDING_MODES = ("floor", "half_away", "half_even")

#: Worst-case number of Newton passes of :func:`isqrt` for inputs below ``2**bits``,
#: measured by ``tessera.sw.golden.accuracy`` (exhaustively up to 32 bits, over all edges
#: and random samples above; see docs/accuracy.md). A pass is one evaluation of
#: ``(x + n // x) >> 1``, counting the last one, whose result is not smaller and stops the
#: loop. The hardware must budget this many divisions per square root.
ISQRT_MAX_PASSES = {16: 5, 31: 6, 32: 6, 43: 6, 63: 7}


def check_int_array(x, name: str, dtype, lo: int | None = None,
                    hi: int | None = None) -> np.ndarray:
    """Check that ``x`` is a numpy array of exactly ``dtype`` with values in ``[lo, hi]``.

    Parameters
    ----------
    x : object
        The value to check.
    name : str
        The argument's name, for the message.
    dtype : numpy dtype or type
        The required dtype (no implicit conversion: a hardware port has one width).
    lo, hi : int, optional
        Inclusive bounds on the values.

    Returns
    -------
    ndarray
        ``x`` itself.

    Raises
    ------
    ValueError
        ``"x must be an int32 array, not float64"`` for a wrong type or dtype;
        ``"x must lie in [lo, hi], not ..."`` for a value out of range.
    """
    dtype = np.dtype(dtype)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be an {dtype} array, not {type(x).__name__}")
    if x.dtype != dtype:
        raise ValueError(f"{name} must be an {dtype} array, not {x.dtype}")
    if x.size and lo is not None and x.min() < lo:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {x.min()}")
    if x.size and hi is not None and x.max() > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {x.max()}")
    return x


def check_int(value, name: str, lo: int, hi: int) -> int:
    """Check that ``value`` is an integer (not a bool) in ``[lo, hi]``.

    Parameters
    ----------
    value : object
    name : str
        The argument's name, for the message.
    lo, hi : int
        Inclusive bounds.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``"k must be an integer, not 1.5"`` or ``"k must lie in [0, 62], not 63"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {value}")
    return int(value)


def bit_length(n: np.ndarray) -> np.ndarray:
    """Number of bits of each non-negative integer (0 for 0), like ``int.bit_length``.

    Computed as a leading-zero counter does it: six halving steps (32, 16, ..., 1).

    Parameters
    ----------
    n : ndarray of int64
        Values in ``[0, 2**63 - 1]``.

    Returns
    -------
    ndarray of int64
        Values in ``[0, 63]``.

    Raises
    ------
    ValueError
        If ``n`` is not an int64 array or holds a negative value.
    """
    check_int_array(n, "n", np.int64, 0, INT64_MAX)
    v = n.copy()
    bits = np.zeros(n.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        high = (v >> step) != 0
        v = np.where(high, v >> step, v)
        bits += np.where(high, np.int64(step), np.int64(0))
    return bits + (v != 0).astype(np.int64)


def isqrt_with_passes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer square root by Newton iteration, and the number of passes each input took.

    The iteration of I-BERT (Kim et al. 2021, arXiv 2101.01321, Algorithm 4):
    ``x0 = 2**ceil(bit_length(n) / 2)``; ``x_{i+1} = (x_i + n // x_i) >> 1``; stop at the
    first ``x_{i+1} >= x_i`` and return ``x_i``. ``x0`` is never below ``sqrt(n)``, so the
    sequence falls monotonically to ``floor(sqrt(n))``. ``n = 0`` bypasses the loop (the
    first pass would divide by zero): root 0, no pass.

    Widths for ``n < 2**b``: ``x`` has ``ceil(b/2) + 1`` bits (``x0`` may equal
    ``2**ceil(b/2)``), the quotient ``n // x`` at most ``b - ceil(b/2) + 1`` bits and the sum
    one bit more. The paper's claim of at most 4 iterations is wrong; the measured worst
    cases are in :data:`ISQRT_MAX_PASSES`.

    Parameters
    ----------
    n : ndarray of int64
        Values in ``[0, 2**63 - 1]``.

    Returns
    -------
    root : ndarray of int64
        ``floor(sqrt(n))``.
    passes : ndarray of int64
        Newton passes evaluated, counting the final non-decreasing one.

    Raises
    ------
    ValueError
        If ``n`` is not an int64 array or holds a negative value.
    """
    bits = bit_length(n)
    flat = n.reshape(-1)
    x = np.left_shift(np.int64(1), (bits.reshape(-1) + 1) >> 1)
    root = np.zeros(flat.shape, dtype=np.int64)
    passes = np.zeros(flat.shape, dtype=np.int64)
    idx = np.flatnonzero(flat > 0)
    while idx.size:
        xi = x[idx]
        nxt = (xi + flat[idx] // xi) >> 1
        passes[idx] += 1
        done = nxt >= xi
        root[idx[done]] = xi[done]
        idx = idx[~done]
        x[idx] = nxt[~done]
    return root.reshape(n.shape), passes.reshape(n.shape)


def isqrt(n: np.ndarray) -> np.ndarray:
    """``floor(sqrt(n))`` by the Newton iteration of :func:`isqrt_with_passes`.

    Parameters
    ----------
    n : ndarray of int64
        Values in ``[0, 2**63 - 1]``.

    Returns
    -------
    ndarray of int64

    Raises
    ------
    ValueError
        If ``n`` is not an int64 array or holds a negative value.
    """
    return isqrt_with_passes(n)[0]


def reciprocal(d: np.ndarray, k: int) -> np.ndarray:
    """``floor(2**k / d)`` for unsigned ``d``, as a restoring divider computes it.

    The quotient has ``k + 1`` bits (``d = 1`` gives ``2**k``). Division by zero is defined
    as a restoring divider behaves: every trial subtraction succeeds, so all ``k + 1``
    quotient bits are 1 and the result is ``2**(k + 1) - 1``. The units that use this
    never scale a non-zero value by that result (see softmax and layernorm).

    Parameters
    ----------
    d : ndarray of int64
        Divisors in ``[0, 2**62]``.
    k : int
        Dividend exponent, 0 to 62.

    Returns
    -------
    ndarray of int64
        Values in ``[0, 2**(k + 1) - 1]``.

    Raises
    ------
    ValueError
        If ``d`` is not an int64 array, holds a value outside ``[0, 2**62]``, or ``k`` is
        outside ``[0, 62]``.
    """
    k = check_int(k, "k", 0, 62)
    check_int_array(d, "d", np.int64, 0, 1 << 62)
    safe = np.where(d == 0, np.int64(1), d)
    return np.where(d == 0, np.int64((1 << (k + 1)) - 1), np.int64(1 << k) // safe)


def shift_right(x: np.ndarray, s, rounding: str = "half_away") -> np.ndarray:
    """``x / 2**s`` rounded to an integer: an arithmetic right shift with a rounding mode.

    * ``"floor"``: ``x >> s``.
    * ``"half_away"``: ``(x + 2**(s-1) - (x < 0)) >> s`` for ``s > 0``, i.e. round half
      away from zero (ties: 2.5 -> 3, -2.5 -> -3).
    * ``"half_even"``: ``x >> s`` plus one when the dropped bits exceed one half, or equal
      it and the kept part is odd (ties: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2).

    ``s = 0`` returns ``x`` unchanged in every mode.

    Parameters
    ----------
    x : ndarray of int64
        Values with ``|x| < 2**62``, so that adding the rounding constant cannot overflow.
    s : int or ndarray of int64
        Shift amounts in ``[0, 63]``, broadcast against ``x`` (one per row, for example).
    rounding : str
        One of :data:`ROUNDING_MODES`.

    Returns
    -------
    ndarray of int64

    Raises
    ------
    ValueError
        For a wrong dtype, ``|x| >= 2**62``, a shift outside ``[0, 63]`` or an unknown
        rounding mode.
    """
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDING_MODES))}, "
                         f"not {rounding!r}")
    check_int_array(x, "x", np.int64, -(1 << 62) + 1, (1 << 62) - 1)
    if isinstance(s, np.ndarray):
        s = check_int_array(s, "s", np.int64, 0, 63)
    else:
        s = np.int64(check_int(s, "s", 0, 63))
    floor = x >> s
    if rounding == "floor":
        return floor
    # 2**(s-1) as an array; 0 where s == 0 (no bits are dropped, nothing to round).
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), np.int64(0))
    if rounding == "half_away":
        # For x < 0 the constant is 2**(s-1) - 1: ties then go down, away from zero.
        return (x + half - ((x < 0) & (s > 0)).astype(np.int64)) >> s
    mask = np.int64(INT64_MAX) >> (63 - s)  # 2**s - 1 without overflow at s = 63
    rem = x & mask  # the dropped bits, x mod 2**s, in [0, 2**s)
    up = (rem > half) | ((rem == half) & (half > 0) & ((floor & 1) == 1))
    return floor + up.astype(np.int64)


def saturate(x: np.ndarray, bits: int) -> np.ndarray:
    """Clip to the signed two's-complement range of ``bits`` bits.

    Parameters
    ----------
    x : ndarray of int64
    bits : int
        2 to 64.

    Returns
    -------
    ndarray of int64
        Values in ``[-2**(bits-1), 2**(bits-1) - 1]``.

    Raises
    ------
    ValueError
        If ``x`` is not an int64 array or ``bits`` is outside ``[2, 64]``.
    """
    bits = check_int(bits, "bits", 2, 64)
    check_int_array(x, "x", np.int64)
    return np.clip(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)


#: The input scales the driver-side constant functions accept.
MIN_SCALE = 2.0 ** -40
MAX_SCALE = 1.0


def check_scale(scale, name: str = "in_scale") -> float:
    """``scale`` as a float after checking it is a finite number in
    [``MIN_SCALE``, ``MAX_SCALE``] (driver side: the datapaths never see floats).

    Raises
    ------
    ValueError
        If it is not a number, not positive and finite, or out of that range.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, not {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, not {scale!r}")
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"{name} must lie in [2**-40, 1], not {scale!r}")
    return scale
