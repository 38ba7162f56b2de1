"""i-GELU: integer-only GELU after I-BERT.

Kim et al. 2021, "I-BERT: Integer-only BERT Quantization", arXiv 2101.01321, section 3.3
and the reference code (``IntGELU``): ``erf(x) ~ L(x) = sgn(x) [a (min(|x|, -b) + b)**2 + 1]``
with ``a = -0.2888``, ``b = -1.769``; ``GELU(x) = x * 1/2 * [1 + L(x / sqrt 2)]``. In
integers (I-Poly): with the erf argument at scale ``S_e``, ``q_b = floor(b / S_e)`` and
``q_c = floor(c / (a S_e**2))`` (``c = 1``), and ``(u + q_b)**2 + q_c`` is ``L`` at scale
``a S_e**2``. The division by ``sqrt 2`` is folded into the scale: ``S_e = S 2**t / sqrt 2``.

Split:

* :func:`gelu_constants` (driver side, floats): the shifts ``t`` and ``r``, ``q_b`` and
  ``q_c``, and the output scale, chosen so that the widths below hold for any input scale.
* :func:`i_gelu` (datapath): integers only.

I-BERT's scale ``a S_e**2`` is negative (``a < 0``); this model negates the polynomial,
``P = -((u + q_b)**2 + q_c)`` (``P >= 0``, erf of ``|x|`` at the positive scale
``|a| S_e**2``), so every value and scale below is non-negative except the signed input
and output.

Datapath, per element (``B = -q_b``, ``Pmax = -q_c``; unsigned unless said):

=========  ==============================================================  ====
value      definition                                                      bits
=========  ==============================================================  ====
``q``      input                                                           s32
``|q|``    magnitude                                                       32
``u``      ``min(|q| >> t rounded half up, B)`` (``t >= 0``) or            15
           ``min(|q| << -t, B)`` (``t < 0``); ``B`` in ``(2**13, 2**14]``
``B - u``  ``-(u + q_b)``                                                  15
``P``      ``Pmax - (B - u)**2``; ``Pmax`` below ``2**28.15``              29
``one``    ``Pmax >> r``, in ``[2**15, 2**16)``: the code of erf = 1       16
``Pr``     ``P >> r`` (floor, as I-BERT's ``floor(y / 2**14)``)            16
``G``      ``one + Pr`` if ``q >= 0`` else ``one - Pr``: ``1 + erf``       17
``q * G``  signed product, ``|q * G| < 2**48``                             s49
``out``    ``round_half_away(q * G / 2**17)``                              s32
=========  ==============================================================  ====

The output scale is ``S * 2**16 / one``, which lies in ``(S, 2S]``. It is defined by the
code ``one`` that the datapath uses for erf = 1 (rather than by I-BERT's ``|a| S_e**2 2**r``,
which differs from ``1 / one`` by the floor in ``one``, up to ``2**-15`` relative): then
``1 + erf`` is exactly 2 past the clamp and GELU of a large input is ``x`` to one output
step, however large ``x`` is. The range ``(S, 2S]`` makes saturation unnecessary:
``G <= 2 one < 2**17``, so ``|out| <= |q|`` and every int32 input, ``-2**31`` and
``2**31 - 1`` included, gives an output that fits int32 (a finer output scale would have to
clip large accumulator values). The price is at most one input step of output rounding
error, ``S``. ``G`` is exactly 0 when ``x / sqrt 2 <= b``, so GELU of a large negative input
is exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .intmath import MAX_SCALE, MIN_SCALE, check_int, check_int_array, check_scale, shift_right

__all__ = [
    "ERF_A",
    "ERF_B",
    "ERF_C",
    "ERF_CLAMP_BITS",
    "ERF_ONE_BITS",
    "GELU_OUT_SHIFT",
    "MIN_SCALE",
    "MAX_SCALE",
    "GeluConstants",
    "gelu_constants",
    "i_gelu",
]

#: I-BERT's erf polynomial ``sgn(x) [a (min(|x|, -b) + b)**2 + c]``.
ERF_A = -0.2888
ERF_B = -1.769
ERF_C = 1.0
#: ``B = -q_b`` lies in ``(2**(ERF_CLAMP_BITS-1), 2**ERF_CLAMP_BITS]``.
ERF_CLAMP_BITS = 14
#: ``one = Pmax >> r`` lies in ``[2**(ERF_ONE_BITS-1), 2**ERF_ONE_BITS)``.
ERF_ONE_BITS = 16
#: ``out = round(q * G / 2**GELU_OUT_SHIFT)``.
GELU_OUT_SHIFT = 17
#: Accepted input scales (they keep the input shift ``t`` within ``[-13, 31]``).


@dataclass(frozen=True)
class GeluConstants:
    """Integer constants of i-GELU for one input scale (from the driver).

    Parameters
    ----------
    shift : int
        ``t``: the erf argument is ``|q|`` shifted right by ``t`` (rounding half up), or
        left by ``-t`` if ``t < 0``.
    q_b : int
        ``floor(b / S_e)``, negative; ``B = -q_b`` in ``(2**13, 2**14]``.
    q_c : int
        ``floor(c / (a S_e**2))``, negative; ``Pmax = -q_c`` at least ``B**2`` and below
        ``2**29``.
    poly_shift : int
        ``r = bit_length(Pmax) - 16``, so ``one = Pmax >> r`` is in ``[2**15, 2**16)``.
    out_scale : float
        Scale of the int32 output, ``S * 2**16 / one`` with ``one = -q_c >> poly_shift``.

    Raises
    ------
    ValueError
        If a constant is outside the range the fixed-width datapath assumes.
    """

    shift: int
    q_b: int
    q_c: int
    poly_shift: int
    out_scale: float

    def __post_init__(self):
        check_int(self.shift, "shift", -13, 31)
        b = -check_int(self.q_b, "q_b", -(1 << ERF_CLAMP_BITS), -(1 << (ERF_CLAMP_BITS - 1)) - 1)
        p_max = -check_int(self.q_c, "q_c", -(1 << 29) + 1, 0)
        if p_max < b * b:
            raise ValueError(f"-q_c must be at least q_b**2 ({b * b}), not {p_max}")
        r = check_int(self.poly_shift, "poly_shift", 0, 28)
        if not 1 << (ERF_ONE_BITS - 1) <= p_max >> r < 1 << ERF_ONE_BITS:
            raise ValueError(f"-q_c >> poly_shift must lie in [2**15, 2**16), not {p_max >> r}")


def gelu_constants(in_scale: float) -> GeluConstants:
    """Driver side: the i-GELU constants for int32 inputs at scale ``in_scale``.

    ``t`` is the smallest shift with ``B = -floor(b / S_e) <= 2**14`` where
    ``S_e = in_scale * 2**t / sqrt 2``; then ``q_b``, ``q_c`` are I-BERT's I-Poly
    constants at ``S_e``. Floats are used here only.

    Parameters
    ----------
    in_scale : float
        Scale ``S`` of the int32 GELU input, in ``[2**-40, 1]``.

    Returns
    -------
    GeluConstants

    Raises
    ------
    ValueError
        If ``in_scale`` is not a positive finite number in ``[2**-40, 1]``.
    """
    scale = check_scale(in_scale)
    t = -13

    def erf_scale(t: int) -> float:
        return math.ldexp(scale, t) / math.sqrt(2.0)

    while -math.floor(ERF_B / erf_scale(t)) > 1 << ERF_CLAMP_BITS:
        t += 1
    s_e = erf_scale(t)
    q_b = math.floor(ERF_B / s_e)
    q_c = math.floor(ERF_C / (ERF_A * s_e * s_e))
    r = (-q_c).bit_length() - ERF_ONE_BITS
    one = (-q_c) >> r
    out_scale = scale * 2.0 ** (GELU_OUT_SHIFT - 1) / one  # G = 2 * one means 1 + erf = 2
    return GeluConstants(shift=t, q_b=q_b, q_c=q_c, poly_shift=r, out_scale=out_scale)


def i_gelu(q: np.ndarray, consts: GeluConstants) -> tuple[np.ndarray, float]:
    """Integer-only GELU (I-BERT's i-GELU) of int32 values.

    Parameters
    ----------
    q : ndarray of int32
        Inputs at scale ``S`` (the scale ``consts`` was made for), any shape.
    consts : GeluConstants
        From ``gelu_constants(S)``.

    Returns
    -------
    out : ndarray of int32
        ``GELU(q * S) ~ out * out_scale``, same shape as ``q``.
    out_scale : float
        ``consts.out_scale``, in ``(S, 2S]``.

    Raises
    ------
    ValueError
        If ``q`` is not an int32 array or ``consts`` is not a GeluConstants.
    """
    check_int_array(q, "q", np.int32)
    if not isinstance(consts, GeluConstants):
        raise ValueError(f"consts must be a GeluConstants, not {type(consts).__name__}")
    q64 = q.astype(np.int64)
    mag = np.abs(q64)  # up to 2**31: 32 bits unsigned
    big_b = np.int64(-consts.q_b)
    if consts.shift >= 0:
        u = shift_right(mag, consts.shift, "half_away")
    else:
        # A saturating left shift in hardware; here 2**31 << 13 fits int64.
        u = mag << np.int64(-consts.shift)
    u = np.minimum(u, big_b)  # I-BERT: min(|x|, -b)
    p_max = np.int64(-consts.q_c)
    p = p_max - (big_b - u) ** 2  # -((u + q_b)**2 + q_c) >= 0
    r = np.int64(consts.poly_shift)
    one = p_max >> r
    p_r = p >> r
    g = np.where(q64 < 0, one - p_r, one + p_r)  # (1 + erf) in [0, 2**17)
    # |q * g| < 2**31 * 2**17 and g < 2**17, so |out| <= |q|: no saturation needed.
    out = shift_right(q64 * g, GELU_OUT_SHIFT, "half_away")
    return out.astype(np.int32), consts.out_scale
