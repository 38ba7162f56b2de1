"""i-LayerNorm: integer-only LayerNorm after I-BERT, for rows of up to 4096 int32 values.

Kim et al. 2021, "I-BERT: Integer-only BERT Quantization", arXiv 2101.01321, section 3.5
and the reference code (``IntLayerNorm``): deviations from the mean, their sum of squares,
an integer square root by Newton iteration (:func:`~.intmath.isqrt`),
``factor = floor(2**31 / std)`` and ``y = floor(dev * factor / 2)`` at scale
``sqrt(n) / 2**30``. The reference code assumes inputs of at most 22 bits; this model takes
full int32 accumulator values and rows of up to 4096, and keeps every width fixed, by:

1. *An exact mean.* Deviations are taken as ``n*x - sum(x)`` (``n`` times ``x - mean``):
   LayerNorm does not depend on the scale of its input, so the factor ``n`` costs nothing,
   and nothing is rounded. A rounded integer mean would be off by up to half an input step,
   which wrecks rows of small integers (a row of 0s and 1s would not be centred).
2. *A per-row pre-shift.* From the row's extremes (pass 1: sum, min, max, as a normalization
   unit gathers them) the deviation of largest magnitude ``dmax`` is known before pass 2; the
   shift ``s = bit_length(dmax) - 15`` brings every deviation into int16 (shifting right with
   floor if ``s > 0``, left if ``s < 0``). The largest deviation then has 15 magnitude bits,
   so the square root has at least 15 bits and ``factor`` at least 10 bits of precision
   whatever the row's scale and length. (The reference's 22-bit inputs would leave
   ``factor = 2**31 / std`` with as few as 4 bits on 4096-long rows.)

Datapath, per row of ``n`` elements (``n <= 4096``; signed widths marked ``s``):

===============  =================================================================  ====
value            definition                                                         bits
===============  =================================================================  ====
``x``            input                                                              s32
``sum``          ``sum(x)``                                                         s44
``n*x``          ``n`` times ``x``                                                  s44
``dev``          ``n*x - sum``; ``|dev| < 2**44``                                   s45
``dmax``         ``max(n*max(x) - sum, sum - n*min(x))``                            44
``s``            ``bit_length(dmax) - 15`` in ``[-14, 29]``, 0 if ``dmax = 0``      s6
``d``            ``dev >> s`` (floor) or ``dev << -s``; in ``[-2**15, 2**15)``      s16
``var``          ``sum(d**2)`` at most ``n * 2**30 <= 2**42``                       43
``root``         ``isqrt(var)``, at most ``2**21``; at least ``2**14`` unless       22
                 the row is constant; at most 6 Newton passes
                 (``ISQRT_MAX_PASSES[43]``)
``factor``       ``floor(2**31 / root)`` in ``[2**10, 2**17]``; ``2**32 - 1``       32
                 for ``root = 0`` (then every ``d`` is 0)
``d * factor``   ``|d| <= root``, so at most ``2**31`` in magnitude                 s33
``y``            ``(d * factor) >> 1`` (floor, as the reference); ``|y| <= 2**30``  s32
``y * gamma_q``  ``gamma_q`` int16; at most ``2**45`` in magnitude                  s46
``acc``          ``y * gamma_q + beta_q``; ``|beta_q| < 2**45``                     s47
``acc32``        ``acc`` shifted right by 16, rounded half away; ``<= 2**30``       s32
``out``          ``requantize(acc32, m, e, 8)`` (half away, saturate)               s8
===============  =================================================================  ====

``y`` is the normalized value at scale ``sqrt(n) / 2**30``; ``gamma_q`` is at scale
``S_g`` and ``beta_q`` at ``sqrt(n) / 2**30 * S_g`` (as I-BERT puts biases at the product
scale); ``m / 2**e`` is ``sqrt(n) / 2**30 * S_g * 2**16 / S_out``. Like I-BERT, no epsilon
is added to the variance: a constant row normalizes to 0 and its output is ``beta``.

Split: :func:`layernorm_constants` (driver side, floats: quantizes gamma and beta, makes
``m, e``) and :func:`layernorm_stats`, :func:`i_layernorm_normalize`,
:func:`i_layernorm` (datapath, integers only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ...hw.config import MAX_ROW_LEN
from ...hw.store_unit import PARAM_ROWS
from .intmath import bit_length, check_int, check_int_array, isqrt, reciprocal, shift_right
from .requant import dyadic_multiplier, requantize

__all__ = [
    "MAX_ROW_LEN",
    "DEV_BITS",
    "LN_RECIP_BITS",
    "GAMMA_BITS",
    "BETA_LIMIT",
    "ACC_SHIFT",
    "LayerNormConstants",
    "layernorm_constants",
    "LayerNormStats",
    "layernorm_stats",
    "i_layernorm_normalize",
    "i_layernorm",
    "layernorm_table",
]

#: Pre-shifted deviations lie in ``[-2**DEV_BITS, 2**DEV_BITS)`` (int16).
DEV_BITS = 15
#: ``factor = floor(2**LN_RECIP_BITS / root)`` (I-BERT: ``2**31``).
LN_RECIP_BITS = 31
#: gamma is quantized to signed 16 bits.
GAMMA_BITS = 16
#: ``|beta_q| < BETA_LIMIT``.
BETA_LIMIT = 1 << 45
#: ``acc32 = round(acc / 2**ACC_SHIFT)`` brings the affine result into int32 for requant.
ACC_SHIFT = 16

_Y_FRAC_BITS = 30  # y is at scale sqrt(n) / 2**30


@dataclass(frozen=True, eq=False)
class LayerNormConstants:
    """Quantized affine parameters and output requantization of i-LayerNorm (driver-made).

    Parameters
    ----------
    gamma_q : ndarray of int16
        ``round(gamma / gamma_scale)``, one per element of a row.
    beta_q : ndarray of int64
        ``round(beta / (sqrt(n) / 2**30 * gamma_scale))``, ``|beta_q| < 2**45``.
    m, e : int
        Dyadic multiplier and shift of ``sqrt(n) / 2**30 * gamma_scale * 2**16 / out_scale``.
    gamma_scale : float
        Scale ``S_g`` of ``gamma_q``.
    out_scale : float
        Scale of the int8 output.

    Raises
    ------
    ValueError
        If an array has the wrong dtype, shape or range, or ``m``, ``e`` are out of range.
    """

    gamma_q: np.ndarray
    beta_q: np.ndarray
    m: int
    e: int
    gamma_scale: float
    out_scale: float

    def __post_init__(self):
        check_int_array(self.gamma_q, "gamma_q", np.int16)
        check_int_array(self.beta_q, "beta_q", np.int64, -BETA_LIMIT + 1, BETA_LIMIT - 1)
        if self.gamma_q.ndim != 1 or self.gamma_q.shape != self.beta_q.shape:
            raise ValueError(f"gamma_q and beta_q must be 1-D of the same length, not "
                             f"{self.gamma_q.shape} and {self.beta_q.shape}")
        if not 1 <= self.gamma_q.shape[0] <= MAX_ROW_LEN:
            raise ValueError(f"rows must have 1 to {MAX_ROW_LEN} elements, "
                             f"not {self.gamma_q.shape[0]}")
        check_int(self.m, "m", 0, (1 << 31) - 1)
        check_int(self.e, "e", 0, 63)

    @property
    def row_len(self) -> int:
        """Number of elements in a row."""
        return int(self.gamma_q.shape[0])


def _check_float_vector(v, name: str) -> np.ndarray:
    if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
        got = v.dtype if isinstance(v, np.ndarray) else type(v).__name__
        raise ValueError(f"{name} must be a float array, not {got}")
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, not {v.ndim}-D")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite")
    return v.astype(np.float64)


def layernorm_constants(gamma: np.ndarray, beta: np.ndarray,
                        out_scale: float) -> LayerNormConstants:
    """Driver side: quantize LayerNorm's gamma and beta and make the output requantization.

    ``S_g = G / (2**15 - 1)`` with ``G = max(max|gamma|, max|beta| / sqrt(n))``: the first
    term keeps ``gamma_q`` in int16, the second keeps ``|beta_q| <= 2**30 (2**15 - 1)``,
    below :data:`BETA_LIMIT`.

    Parameters
    ----------
    gamma, beta : ndarray of float, shape (n,)
        LayerNorm's scale and shift, ``1 <= n <= 4096``.
    out_scale : float
        Scale of the int8 output; positive. Values beyond ``127 * out_scale`` saturate.

    Returns
    -------
    LayerNormConstants

    Raises
    ------
    ValueError
        For non-float or non-finite arrays, mismatched or bad lengths, a nonpositive
        ``out_scale``, or an output scale so much finer than the normalized values that the
        requantization ratio reaches ``2**30``.
    """
    gamma = _check_float_vector(gamma, "gamma")
    beta = _check_float_vector(beta, "beta")
    if gamma.shape != beta.shape:
        raise ValueError(f"gamma and beta must have the same length, not {gamma.shape[0]} "
                         f"and {beta.shape[0]}")
    n = gamma.shape[0]
    if not 1 <= n <= MAX_ROW_LEN:
        raise ValueError(f"rows must have 1 to {MAX_ROW_LEN} elements, not {n}")
    if (isinstance(out_scale, bool) or not isinstance(out_scale, (int, float, np.floating))
            or not math.isfinite(out_scale) or out_scale <= 0):
        raise ValueError(f"out_scale must be a positive finite number, not {out_scale!r}")
    y_scale = math.sqrt(n) / 2.0 ** _Y_FRAC_BITS
    big = max(float(np.max(np.abs(gamma))), float(np.max(np.abs(beta))) / math.sqrt(n))
    if big == 0.0:
        big = 1.0  # gamma = beta = 0: any scale represents them exactly
    g_max = (1 << (GAMMA_BITS - 1)) - 1
    gamma_scale = big / g_max
    gamma_q = np.clip(np.round(gamma / gamma_scale), -g_max, g_max).astype(np.int16)
    beta_q = np.round(beta / (y_scale * gamma_scale)).astype(np.int64)
    m, e = dyadic_multiplier(y_scale * gamma_scale * 2.0 ** ACC_SHIFT / float(out_scale))
    return LayerNormConstants(gamma_q=gamma_q, beta_q=beta_q, m=m, e=e,
                              gamma_scale=gamma_scale, out_scale=float(out_scale))


class LayerNormStats(NamedTuple):
    """Per-row intermediates of i-LayerNorm (shape of ``x`` with a last axis of length 1)."""

    sum: np.ndarray     #: int64: ``sum(x)``
    shift: np.ndarray   #: int64: pre-shift ``s`` (right if positive, left if negative)
    var: np.ndarray     #: int64: ``sum(d**2)``
    root: np.ndarray    #: int64: ``isqrt(var)``
    factor: np.ndarray  #: int64: ``floor(2**31 / root)``


def _check_rows(x: np.ndarray) -> np.ndarray:
    check_int_array(x, "x", np.int32)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the row), not 0")
    if not 1 <= x.shape[-1] <= MAX_ROW_LEN:
        raise ValueError(f"rows of x must have 1 to {MAX_ROW_LEN} elements, "
                         f"not {x.shape[-1]}")
    return x


def _normalize(x: np.ndarray) -> tuple[np.ndarray, LayerNormStats]:
    n = np.int64(x.shape[-1])
    x64 = x.astype(np.int64)
    total = x64.sum(axis=-1, keepdims=True)  # |sum| <= 2**43
    # Pass 1 also keeps min and max, which bound the deviations before pass 2 sees them.
    dmax = np.maximum(n * x64.max(axis=-1, keepdims=True) - total,
                      total - n * x64.min(axis=-1, keepdims=True))
    s = np.where(dmax > 0, bit_length(dmax) - DEV_BITS, np.int64(0))
    dev = n * x64 - total  # n * (x - mean), exact
    d = np.where(s >= 0, dev >> np.maximum(s, 0), dev << np.maximum(-s, 0))
    var = (d * d).sum(axis=-1, keepdims=True)  # <= 4096 * 2**30
    root = isqrt(var)
    factor = reciprocal(root, LN_RECIP_BITS)
    y = (d * factor) >> np.int64(1)  # I-BERT: floor(y * factor / 2)
    return y, LayerNormStats(total, s, var, root, factor)


def layernorm_stats(x: np.ndarray) -> LayerNormStats:
    """The per-row sum, pre-shift, variance sum, square root and factor of i-LayerNorm.

    Parameters
    ----------
    x : ndarray of int32
        Rows along the last axis, 1 to 4096 elements each.

    Returns
    -------
    LayerNormStats

    Raises
    ------
    ValueError
        If ``x`` is not an int32 array with rows of 1 to 4096 elements.
    """
    return _normalize(_check_rows(x))[1]


def i_layernorm_normalize(x: np.ndarray) -> tuple[np.ndarray, float]:
    """``(x - mean) / std`` over the last axis, in integers (before gamma and beta).

    Parameters
    ----------
    x : ndarray of int32
        Rows along the last axis, 1 to 4096 elements each; any input scale.

    Returns
    -------
    y : ndarray of int32
        Normalized values, ``|y| <= 2**30``, same shape as ``x``.
    scale : float
        ``sqrt(n) / 2**30``: ``(x - mean) / std ~ y * scale``.

    Raises
    ------
    ValueError
        If ``x`` is not an int32 array with rows of 1 to 4096 elements.
    """
    y, _ = _normalize(_check_rows(x))
    return y.astype(np.int32), math.sqrt(x.shape[-1]) / 2.0 ** _Y_FRAC_BITS


def i_layernorm(x: np.ndarray, consts: LayerNormConstants, out_bits: int = 8) -> np.ndarray:
    """Integer-only LayerNorm over the last axis, requantized to int8 (or to ``out_bits``:
    16 for a wide activation's digits).

    Parameters
    ----------
    x : ndarray of int32
        Rows along the last axis of ``consts.row_len`` elements; any input scale.
    consts : LayerNormConstants
        From :func:`layernorm_constants`.

    Returns
    -------
    ndarray of int8
        ``LayerNorm(x) * gamma + beta ~ out * consts.out_scale``, same shape as ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not an int32 array, or its rows do not have ``consts.row_len`` elements.
    """
    _check_rows(x)
    if not isinstance(consts, LayerNormConstants):
        raise ValueError(f"consts must be a LayerNormConstants, not {type(consts).__name__}")
    if x.shape[-1] != consts.row_len:
        raise ValueError(f"rows of x must have {consts.row_len} elements (the length of "
                         f"gamma), not {x.shape[-1]}")
    y, _ = _normalize(x)
    acc = y * consts.gamma_q.astype(np.int64) + consts.beta_q  # |acc| < 2**46
    acc32 = shift_right(acc, ACC_SHIFT, "half_away").astype(np.int32)  # |acc32| <= 2**30
    return requantize(acc32, consts.m, consts.e, out_bits)


def layernorm_table(gamma_q: np.ndarray, beta_q: np.ndarray, block: int,
                    prescale=None) -> np.ndarray:
    """The bytes of a LayerNorm table (int32 rows, ``PARAM_ROWS`` per block of ``block``
    elements: gamma, beta's low 32 bits, beta's high bits; with ``prescale``, one
    ``(m, e)`` per block, a fourth row with them in lanes 0 and 1), as the store unit
    reads it (and the golden executor, ``executor.Machine``, parses it)."""
    n = len(gamma_q)
    nb = -(-n // block)
    g = np.zeros(nb * block, np.int64)
    b = np.zeros(nb * block, np.int64)
    g[:n], b[:n] = gamma_q, beta_q
    low = b & 0xFFFFFFFF
    table = np.zeros((nb, PARAM_ROWS + (prescale is not None), block), np.int64)
    table[:, 0] = g.reshape(nb, block)
    table[:, 1] = np.where(low >= 1 << 31, low - (1 << 32), low).reshape(nb, block)
    table[:, 2] = (b >> 32).reshape(nb, block)
    if prescale is not None:
        if len(prescale) != nb:
            raise ValueError(f"{len(prescale)} prescales for {nb} blocks")
        table[:, PARAM_ROWS, :2] = np.array(prescale, dtype=np.int64).reshape(nb, 2)
    return table.reshape(-1).astype("<i4").view(np.uint8)
