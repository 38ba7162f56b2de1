"""Dyadic requantization (I-BERT, Kim et al. 2021, arXiv 2101.01321, section 3.1) and ReLU.

A ratio of scales ``S_in / S_out`` is written as ``m / 2**e`` with ``m`` a 31-bit integer,
and an int32 value is requantized as ``saturate(round(q * m / 2**e))``.

Two halves, kept apart on purpose:

* :func:`dyadic_multiplier` is driver-side: it takes a float ratio and computes the
  integer constants ``(m, e)`` once. It is the only function here that touches floats.
* :func:`requantize` and :func:`relu` are the datapath: integers only, bit-exact.

Widths the hardware must mirror:

* ``q``: int32. ``m``: unsigned, at most 31 bits (``[2**30, 2**31 - 1]`` when normal).
  ``e``: 6-bit unsigned shift, 0 to 63.
* ``q * m``: ``|q| <= 2**31`` and ``m <= 2**31 - 1``, so ``|q * m| <= 2**62 - 2**31``: a
  63-bit signed product, which fits int64 with room for the rounding constant
  ``2**(e-1) <= 2**62`` (the sum stays below ``2**63``). No Python-int fallback is needed.
* Rounding: half away from zero (``ROUNDING``), then saturation to ``out_bits``.

Wide activations (:func:`output_digit`): a value requantized to 16 bits, clamped to
``[WIDE_MIN, WIDE_MAX]``, is held as two int8 digits, ``high * 2**DIGIT_SHIFT + low``,
``high = floor((y + 64) / 128)`` in ``[-128, 127]`` and ``low = y - 128 high`` in
``[-64, 63]``: a 15-bit activation that the int8 array multiplies in two passes.
"""

from __future__ import annotations

import math

import numpy as np

from ...hw.requant import DIGIT_SHIFT, WIDE_BITS, WIDE_MAX, WIDE_MIN, OutputDigit
from .intmath import check_int, check_int_array, saturate, shift_right

__all__ = [
    "MULTIPLIER_BITS",
    "MAX_SHIFT",
    "MAX_RATIO",
    "ROUNDING",
    "dyadic_multiplier",
    "requantize",
    "relu",
    "out_dtype",
    "output_digit",
    "wide_digits",
    "DIGIT_SHIFT",
    "WIDE_BITS",
    "WIDE_MIN",
    "WIDE_MAX",
    "OutputDigit",
]

#: Width of the unsigned multiplier ``m``.
MULTIPLIER_BITS = 31
#: Largest shift ``e`` (a 6-bit field).
MAX_SHIFT = 63
#: Ratios must be below this, so that ``e >= 0`` (no left shift in the datapath).
MAX_RATIO = float(1 << 30)
#: The project's requantization rounding (see intmath).
ROUNDING = "half_away"

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def dyadic_multiplier(ratio: float) -> tuple[int, int]:
    """Integer multiplier and shift with ``m / 2**e`` close to ``ratio`` (driver side).

    ``mantissa, exponent = frexp(ratio)`` (``mantissa`` in ``[0.5, 1)``);
    ``m = floor(mantissa * 2**31 + 0.5)``; ``e = 31 - exponent``. If ``m`` rounds up to
    ``2**31`` it becomes ``2**30`` and ``e`` drops by one, so ``m`` always fits 31 bits and
    the relative error is at most ``2**-31``.

    Ratios at or above 1 give small ``e`` (``e = 0`` near ``2**30``). Ratios so small that
    ``e`` would exceed 63 are represented like floating-point subnormals: ``e = 63`` and
    ``m = floor(ratio * 2**63 + 0.5)`` (below ``2**30``, possibly 0). That loses relative
    precision but no result: for ``ratio < 2**-32`` every int32 input requantizes to 0,
    exactly as ``round(q * ratio)`` does.

    Parameters
    ----------
    ratio : float
        ``S_in / S_out``, finite, in ``(0, 2**30)``.

    Returns
    -------
    m : int
        In ``[0, 2**31 - 1]``; in ``[2**30, 2**31 - 1]`` unless ``e == 63``.
    e : int
        In ``[0, 63]``.

    Raises
    ------
    ValueError
        If ``ratio`` is not a finite number in ``(0, 2**30)``.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)):
        raise ValueError(f"ratio must be a number, not {ratio!r}")
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio <= 0.0:
        raise ValueError(f"ratio must be a positive finite number, not {ratio!r}")
    if ratio >= MAX_RATIO:
        raise ValueError(f"ratio must be below 2**30, not {ratio!r}")
    mantissa, exponent = math.frexp(ratio)
    m = math.floor(mantissa * (1 << MULTIPLIER_BITS) + 0.5)  # exact: scaling by 2**31
    if m == 1 << MULTIPLIER_BITS:
        m, exponent = 1 << (MULTIPLIER_BITS - 1), exponent + 1
    e = MULTIPLIER_BITS - exponent
    if e > MAX_SHIFT:
        m, e = math.floor(math.ldexp(ratio, MAX_SHIFT) + 0.5), MAX_SHIFT
    return int(m), int(e)


def out_dtype(out_bits: int) -> np.dtype:
    """The numpy dtype that holds a signed ``out_bits``-bit result (int8, int16 or int32)."""
    out_bits = check_int(out_bits, "out_bits", 2, 32)
    return np.dtype(np.int8 if out_bits <= 8 else np.int16 if out_bits <= 16 else np.int32)


def requantize(q: np.ndarray, m: int, e: int, out_bits: int = 8,
               rounding: str = ROUNDING) -> np.ndarray:
    """``saturate(round(q * m / 2**e), out_bits)``: the requantization datapath.

    Parameters
    ----------
    q : ndarray of int32
        Accumulator values.
    m : int
        Multiplier in ``[0, 2**31 - 1]`` (from :func:`dyadic_multiplier`).
    e : int
        Shift in ``[0, 63]``.
    out_bits : int
        Signed output width, 2 to 32.
    rounding : str
        ``"half_away"`` (the project's convention), ``"half_even"`` or ``"floor"``.

    Returns
    -------
    ndarray
        int8, int16 or int32 (the smallest that holds ``out_bits``), same shape as ``q``.

    Raises
    ------
    ValueError
        If ``q`` is not an int32 array, or ``m``, ``e``, ``out_bits`` or ``rounding`` is
        out of range.
    """
    check_int_array(q, "q", np.int32)
    m = check_int(m, "m", 0, (1 << MULTIPLIER_BITS) - 1)
    e = check_int(e, "e", 0, MAX_SHIFT)
    dtype = out_dtype(out_bits)
    # |q * m| <= 2**31 * (2**31 - 1) < 2**62: exact in int64 (see the module docstring).
    product = q.astype(np.int64) * np.int64(m)
    return saturate(shift_right(product, e, rounding), out_bits).astype(dtype)


def relu(q: np.ndarray) -> np.ndarray:
    """``max(q, 0)`` elementwise, in the dtype of ``q``.

    ReLU commutes with :func:`requantize` (both are monotone and map 0 to 0), so the
    hardware may apply it before or after requantization with the same result.

    Parameters
    ----------
    q : ndarray of a signed integer dtype (int8, int16, int32 or int64)

    Returns
    -------
    ndarray of the same dtype

    Raises
    ------
    ValueError
        If ``q`` is not an array of a signed integer dtype.
    """
    if not isinstance(q, np.ndarray) or q.dtype.kind != "i":
        got = q.dtype if isinstance(q, np.ndarray) else type(q).__name__
        raise ValueError(f"q must be a signed integer array, not {got}")
    return np.maximum(q, q.dtype.type(0))


def wide_digits(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The digits ``(high, low)`` of wide values ``y`` (any integers; clamped to
    ``[WIDE_MIN, WIDE_MAX]`` first): ``high * 2**DIGIT_SHIFT + low`` is the clamped value,
    ``high`` in ``[-128, 127]``, ``low`` in ``[-64, 63]``; both int64."""
    y = np.clip(np.asarray(y, dtype=np.int64), WIDE_MIN, WIDE_MAX)
    high = (y + (1 << (DIGIT_SHIFT - 1))) >> DIGIT_SHIFT
    return high, y - (high << DIGIT_SHIFT)


def output_digit(y: np.ndarray, digit) -> np.ndarray:
    """What the output path writes of ``y``, a requantization to ``WIDE_BITS`` bits (after
    ReLU): for :class:`OutputDigit` ``INT8`` ``y`` saturated to int8, for ``HIGH`` and
    ``LOW`` that digit of the wide value (:func:`wide_digits`); int64 values.

    Raises
    ------
    ValueError
        For a ``digit`` that is not an :class:`OutputDigit`.
    """
    try:
        digit = OutputDigit(digit)
    except ValueError:
        raise ValueError(f"digit must be 0 (INT8), 1 (HIGH) or 2 (LOW), not {digit!r}") from None
    y = np.asarray(y, dtype=np.int64)
    if digit == OutputDigit.INT8:
        return saturate(y, 8)
    return wide_digits(y)[0 if digit == OutputDigit.HIGH else 1]
