"""i-exp and i-Softmax: integer-only exponential and Softmax after I-BERT.

Kim et al. 2021, "I-BERT: Integer-only BERT Quantization", arXiv 2101.01321, section 3.4
and the reference code (``IntSoftmax``): subtract the row maximum so every input is
``<= 0``; write ``x = -z ln 2 + p`` with ``p`` in ``(-ln 2, 0]``; approximate
``exp(p) ~ 0.35815147 p**2 + 0.96963238 p + 1`` (max error 1.9e-3 on ``(-ln 2, 0]``) and
shift right by ``z``; clamp ``z`` at 30. Then ``factor = floor(2**32 / sum)`` and
``out = floor(exp * factor / 2**24)``: unsigned 8-bit probabilities at scale ``2**-8``.
Here ``out`` is rounded (half up) instead of floored (:func:`i_softmax`).

One departure in width: the reference code requantizes exp to 16 bits before the sum. On
long rows with a dominant score (attention sinks) that floors thousands of small terms to 0:
a 4096-long row with one score 12 above ``N(0, 1)`` neighbours comes out 0.034 off in
probability. Here exp keeps 20 bits (the row maximum maps to ``[2**19, 2**20)``), which is
the most that keeps the sum of 4096 terms within 32 bits, so ``factor = floor(2**32 / sum)``
and the ``2**24`` shift stay exactly as in the reference. The floor of ``factor`` costs less
than ``e / 2**24 <= 1/16`` of an output step.

Split:

* :func:`exp_constants` (driver side, floats): from the input scale ``S`` it picks the
  input shift and the integer constants, so that every intermediate has the fixed width
  listed below whatever ``S`` is.
* :func:`i_exp`, :func:`i_softmax`, :func:`softmax_stats` (datapath): integers only.

Datapath, per element (``N`` = ``ln2_q``, all widths unsigned unless said):

==============  =====================================================  ====
value           definition                                             bits
==============  =====================================================  ====
row max ``xm``  ``max(x)`` over the row                                s32
``a``           ``xm - x``                                             32
``a_t``         ``a >> t`` rounded half up (``t >= 0``) or             19
                ``a << -t`` (``t < 0``), then ``min(., 30 N)``
``z``           ``a_t // N`` (0 to 30)                                 5
``r``           ``a_t - z N``, i.e. ``p = -r`` in ``(-N, 0]``          14
``q_b - r``     ``q_b`` in ``[2**14.9, 2**16)``                        16
``poly``        ``q_c - r (q_b - r)``: ``(p + q_b) p + q_c``           31
``e``           ``poly >> (z + w)`` (floor); ``z + w`` in ``[9, 41]``  20
``sum``         sum of ``e`` over the row: below ``4096 * 2**20``      32
``factor``      ``floor(2**32 / sum)``; ``sum >= 2**19``               14
``e * factor``  at most ``2**32``                                      33
``out``         ``min((e * factor + 2**23) >> 24, 255)``               8
==============  =====================================================  ====

``N = ceil(ln 2 / S_t)`` lies in ``(2**13, 2**14]``, where ``S_t = S * 2**t`` is the scale
after the input shift, so ln 2 is represented to better than ``2**-13`` relative. The
input shift rounds half up (the project's half-away-from-zero rounding applied to the
magnitude ``a``), a second departure from the reference code, which floors: a floor there
adds up to ``S_t`` of argument error, and the measured worst i-exp error on ``(-ln 2, 0]``
grows from 1.95e-3 to 1.99e-3, too close to the 2e-3 bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ...hw.config import MAX_ROW_LEN
from .intmath import (
    MAX_SCALE,
    MIN_SCALE,
    check_int,
    check_int_array,
    check_scale,
    reciprocal,
    shift_right,
)

__all__ = [
    "EXP_COEFFS",
    "EXP_Z_MAX",
    "LN2_BITS",
    "EXP_BITS",
    "MAX_ROW_LEN",
    "SOFTMAX_RECIP_BITS",
    "SOFTMAX_OUT_SHIFT",
    "SOFTMAX_OUT_MAX",
    "SOFTMAX_OUT_SCALE",
    "MIN_SCALE",
    "MAX_SCALE",
    "ExpConstants",
    "exp_constants",
    "i_exp",
    "i_softmax",
    "SoftmaxStats",
    "softmax_stats",
]

#: ``exp(p) ~ a p**2 + b p + c`` on ``(-ln 2, 0]``: the I-BERT reference code's fit.
EXP_COEFFS = (0.35815147, 0.96963238, 1.0)
#: ``z`` is clamped here (I-BERT); ``2**-30`` is below one 20-bit exp code.
EXP_Z_MAX = 30
#: ``ln2_q = ceil(ln 2 / S_t)`` lies in ``(2**(LN2_BITS-1), 2**LN2_BITS]``.
LN2_BITS = 14
#: Width of the exp codes summed by Softmax (I-BERT uses 16; see the module docstring).
EXP_BITS = 20
#: ``factor = floor(2**SOFTMAX_RECIP_BITS / sum)`` (I-BERT: ``max_bit = 32``).
SOFTMAX_RECIP_BITS = 32
#: ``out = floor(e * factor / 2**SOFTMAX_OUT_SHIFT)`` (I-BERT: ``32 - output_bit``).
SOFTMAX_OUT_SHIFT = 24
#: Largest probability code: one-hot rows would give 256; unsigned 8 bits clip it.
SOFTMAX_OUT_MAX = 255
#: Scale of the probability codes.
SOFTMAX_OUT_SCALE = 2.0 ** -8
#: Accepted input scales (they keep the input shift ``t`` within ``[-16, 31]``).

_LN2 = math.log(2.0)
_B_OVER_A = EXP_COEFFS[1] / EXP_COEFFS[0]  # I-BERT's coef[1] /= coef[0]
_C_OVER_A = EXP_COEFFS[2] / EXP_COEFFS[0]  # I-BERT's coef[2] /= coef[0]
_A_MAX = (1 << 32) - 1  # largest xm - x for int32 inputs


@dataclass(frozen=True)
class ExpConstants:
    """Integer constants of i-exp and i-Softmax for one input scale (from the driver).

    Parameters
    ----------
    shift : int
        ``t``, the input shift: right (rounding half up) if positive, left if negative.
    ln2_q : int
        ``N = ceil(ln 2 / S_t)`` (I-BERT's ``-x0_int``), in ``(2**13, 2**14]``.
    q_b : int
        ``floor((b / a) / S_t)`` (I-BERT's ``b_int``), in ``[N, 2**16)``.
    q_c : int
        ``floor((c / a) / S_t**2)`` (I-BERT's ``c_int``), below ``2**31``.
    out_shift : int
        ``w = bit_length(q_c) - 20``, so that ``exp(0)`` becomes ``q_c >> w`` in
        ``[2**19, 2**20)``.
    out_scale : float
        Scale of the i-exp result: ``a * S_t**2 * 2**w``.

    Raises
    ------
    ValueError
        If a constant is outside the range the fixed-width datapath assumes.
    """

    shift: int
    ln2_q: int
    q_b: int
    q_c: int
    out_shift: int
    out_scale: float

    def __post_init__(self):
        check_int(self.shift, "shift", -16, 31)
        n = check_int(self.ln2_q, "ln2_q", (1 << (LN2_BITS - 1)) + 1, 1 << LN2_BITS)
        q_b = check_int(self.q_b, "q_b", n, (1 << 16) - 1)
        q_c = check_int(self.q_c, "q_c", 1, (1 << 31) - 1)
        w = check_int(self.out_shift, "out_shift", 0, 31)
        if not 1 << (EXP_BITS - 1) <= q_c >> w < 1 << EXP_BITS:
            raise ValueError(f"q_c >> out_shift must lie in [2**19, 2**20), not {q_c >> w}")
        # The polynomial's smallest value on (-N, 0] is at r = N - 1; it must stay positive.
        low = q_c - (n - 1) * (q_b - (n - 1))
        if low <= 0:
            raise ValueError(f"the exp polynomial must stay positive on (-ln2_q, 0], not {low}")


def exp_constants(in_scale: float) -> ExpConstants:
    """Driver side: the i-exp / i-Softmax constants for inputs at scale ``in_scale``.

    The input shift ``t`` is the smallest with ``ceil(ln 2 / (S * 2**t)) <= 2**14``; then
    ``q_b``, ``q_c`` are the I-Poly constants of I-BERT at the shifted scale ``S_t``. Floats
    are used here only; the datapath receives the integers.

    Parameters
    ----------
    in_scale : float
        Scale ``S`` of the int32 Softmax input, in ``[2**-40, 1]``.

    Returns
    -------
    ExpConstants

    Raises
    ------
    ValueError
        If ``in_scale`` is not a positive finite number in ``[2**-40, 1]``.
    """
    scale = check_scale(in_scale)
    t = -16
    while math.ceil(_LN2 / math.ldexp(scale, t)) > 1 << LN2_BITS:
        t += 1
    s_t = math.ldexp(scale, t)
    n = math.ceil(_LN2 / s_t)
    q_b = math.floor(_B_OVER_A / s_t)
    q_c = math.floor(_C_OVER_A / (s_t * s_t))
    w = q_c.bit_length() - EXP_BITS
    return ExpConstants(shift=t, ln2_q=n, q_b=q_b, q_c=q_c, out_shift=w,
                        out_scale=EXP_COEFFS[0] * s_t * s_t * 2.0 ** w)


def i_exp(x: np.ndarray, consts: ExpConstants) -> np.ndarray:
    """Integer-only ``exp(x)`` for ``x <= 0`` (I-BERT's i-exp), as 20-bit codes.

    Parameters
    ----------
    x : ndarray of int64
        Inputs at scale ``S`` (the scale ``consts`` was made for), in ``[-(2**32 - 1), 0]``
        (the difference of two int32 values, as after subtracting the row maximum).
    consts : ExpConstants

    Returns
    -------
    ndarray of int64
        Codes in ``[0, 2**20)``; ``exp(x) ~ code * consts.out_scale``.

    Raises
    ------
    ValueError
        If ``x`` is not an int64 array or holds a value outside ``[-(2**32 - 1), 0]``.
    """
    check_int_array(x, "x", np.int64, -_A_MAX, 0)
    if not isinstance(consts, ExpConstants):
        raise ValueError(f"consts must be an ExpConstants, not {type(consts).__name__}")
    a = -x  # 32-bit magnitude
    n = np.int64(consts.ln2_q)
    clamp = np.int64(EXP_Z_MAX * consts.ln2_q)  # I-BERT: x = max(x, 30 * x0_int)
    if consts.shift >= 0:
        a_t = shift_right(a, consts.shift, "half_away")
    else:
        # A saturating left shift in hardware; here a << 16 < 2**48 fits int64.
        a_t = a << np.int64(-consts.shift)
    a_t = np.minimum(a_t, clamp)
    z = a_t // n
    r = a_t - z * n  # p = -r
    poly = np.int64(consts.q_c) - r * (np.int64(consts.q_b) - r)  # (p + q_b) p + q_c
    return poly >> (z + np.int64(consts.out_shift))


def _check_rows(x: np.ndarray) -> np.ndarray:
    check_int_array(x, "x", np.int32)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the row), not 0")
    if not 1 <= x.shape[-1] <= MAX_ROW_LEN:
        raise ValueError(f"rows of x must have 1 to {MAX_ROW_LEN} elements, "
                         f"not {x.shape[-1]}")
    return x


class SoftmaxStats(NamedTuple):
    """Per-row intermediates of i-Softmax (shape of ``x`` with the last axis of length 1)."""

    row_max: np.ndarray  #: int32: the row maximum
    exp_sum: np.ndarray  #: int64: sum of the 20-bit exp codes, in ``[2**19, 2**32)``
    factor: np.ndarray   #: int64: ``floor(2**32 / exp_sum)``, in ``[1, 2**13]``


def _rows(x: np.ndarray, consts: ExpConstants) -> tuple[np.ndarray, SoftmaxStats]:
    row_max = x.max(axis=-1, keepdims=True)
    e = i_exp(x.astype(np.int64) - row_max.astype(np.int64), consts)
    exp_sum = e.sum(axis=-1, keepdims=True, dtype=np.int64)  # < 4096 * 2**20 = 2**32
    return e, SoftmaxStats(row_max, exp_sum, reciprocal(exp_sum, SOFTMAX_RECIP_BITS))


def softmax_stats(x: np.ndarray, consts: ExpConstants) -> SoftmaxStats:
    """The row maximum, exp sum and reciprocal factor i-Softmax computes for each row.

    Parameters
    ----------
    x : ndarray of int32
        Scores at scale ``S``; rows along the last axis, 1 to 4096 elements each.
    consts : ExpConstants
        From ``exp_constants(S)``.

    Returns
    -------
    SoftmaxStats

    Raises
    ------
    ValueError
        If ``x`` is not an int32 array with rows of 1 to 4096 elements.
    """
    _check_rows(x)
    return _rows(x, consts)[1]


def i_softmax(x: np.ndarray, consts: ExpConstants, shift: int = 0) -> np.ndarray:
    """Integer-only Softmax over the last axis (I-BERT's i-Softmax, its output rounded).

    ``out = min(round(e * floor(2**32 / sum(e)) / 2**(24 + shift)), 255 >> shift)`` where
    ``e`` is :func:`i_exp` of ``x - max(x)`` and ``round`` rounds half up (the values are
    non-negative: half away from zero). I-BERT floors instead; that biases every
    probability down by half a step on average, so a row of ``n`` keys sums to about
    ``1 - n / 2**(9 - shift)``: 0.68 for 82 keys at 7 bits, an attenuation of the whole
    attention output that grows with the sentence (``docs/accuracy.md``).

    Parameters
    ----------
    x : ndarray of int32
        Scores at scale ``S``; rows along the last axis, 1 to 4096 elements each.
    consts : ExpConstants
        From ``exp_constants(S)``.
    shift : int
        Bits dropped from the 8-bit codes, 0 or more: ``shift = 1`` gives 7-bit codes
        0..127 at scale ``2**-7`` (what the array multiplies as signed int8); 9 and more
        give 0.

    Returns
    -------
    ndarray of uint8
        Probabilities at scale ``2**(shift - 8)`` (``SOFTMAX_OUT_SCALE`` for
        ``shift = 0``), same shape as ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not an int32 array with rows of 1 to 4096 elements, or ``shift`` is not
        a non-negative integer.
    """
    _check_rows(x)
    shift = check_int(shift, "shift", 0, 63)
    e, stats = _rows(x, consts)
    if shift > 8:
        return np.zeros(x.shape, dtype=np.uint8)
    total = np.int64(SOFTMAX_OUT_SHIFT + shift)
    # e * factor <= 2**32, so the sum with the rounding constant fits int64.
    out = (e * stats.factor + (np.int64(1) << (total - 1))) >> total
    return np.minimum(out, np.int64(SOFTMAX_OUT_MAX >> shift)).astype(np.uint8)

