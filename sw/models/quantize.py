"""I-BERT-style static int8 quantization of a BERT layer, and its integer model.

:func:`integer_bert_layer` is the contract that the accelerator's lowering of a BERT
encoder layer must reproduce bit for bit. It is written only with the golden operators of
``tessera.sw.golden`` (wrapped int8 x int8 -> int32 matrix products, dyadic requantization,
i-Softmax, i-GELU, i-LayerNorm) and integer additions; every float lives in
:func:`quantize_bert_layer` (the driver side), which turns a float layer and calibration
inputs into the integer constants of a :class:`QuantizedBertLayer`.

Quantization (Kim et al. 2021, I-BERT, arXiv 2101.01321: uniform symmetric, static scales)
---------------------------------------------------------------------------------------------
* Activations: symmetric int8, ``scale = range / 127`` where ``range`` is ``max |t|`` over
  the calibration data (or a percentile of ``|t|``, see :func:`calibrate`), taken from the
  float reference's intermediates (:func:`tessera.sw.models.reference.bert_layer_trace`)
  over the real (unmasked) tokens. Tensors: ``x`` (input), ``q``, ``k``, ``v``, ``ctx``,
  ``h1`` (LayerNorm 1), ``f`` (GELU output), ``out`` (LayerNorm 2).
* Weights: int8 in ``[-127, 127]``, ``scale = max|w| / 127``. ``wq``, ``wk``, ``wv``,
  ``w1`` (whose results are requantized) have one scale per group of ``G`` consecutive
  output columns (``G = 16``: the accelerator applies one requantization multiplier per
  16-column block); ``wo``, ``w2`` (whose int32 results go to LayerNorm through the
  accumulator, which needs one scale per row) one scale per tensor.
* Biases: int32, ``round(b / (s_in * s_w))`` with each column's weight scale.

A :class:`QuantizedLinear` stores the *accumulator* scale of each group of output columns,
``c_g = s_in * s_w[g]``: that is what the integer dataflow needs.

Integer dataflow (``S`` tokens, ``H`` hidden, ``dh = H / heads``; every sum wraps at 32 bits
as the accumulator does; ``requantize`` rounds half away from zero and saturates):

1. ``Q, K, V``: ``acc = matmul(x_q, W_q) + b_q``; per 16-column group ``g``:
   ``q = requantize(acc, m_g, e_g, 8)`` with ``(m_g, e_g) = dyadic_multiplier(c_g / s_q)``
   (likewise ``k``, ``v``).
2. Per head ``h`` (columns ``h dh .. (h+1) dh``):
   ``scores = matmul(q_h, k_h^T) + mask_bias`` (int32 at ``s_q s_k``), where
   ``mask_bias`` is 0 where attention is allowed and :data:`MASK_BIAS` (``-2**30``)
   where it is not (the lowering can preload it into the accumulator like a bias);
   ``probs = i_softmax(scores, exp_constants(s_q s_k / sqrt(dh)), shift=1)``: 7-bit
   probabilities 0..127 at scale ``2**-7``, rounded (the array multiplies signed int8, so
   the Softmax drops the lowest bit of its unsigned 8-bit output);
   ``ctx_h = requantize(matmul(probs, v_h), dyadic_multiplier(2**-7 s_v / s_ctx), 8)``.
3. ``res1 = matmul(ctx, Wo_q) + bo_q + x_q * r1`` (int32 at ``c_o = s_ctx s_wo``), with
   ``r1 = s_x / c_o`` an integer in ``[1, 32767]`` (the accelerator loads the int8
   residual into the accumulator times a 16-bit integer scale).
4. ``h1 = i_layernorm(res1, layernorm_constants(ln1_g, ln1_b, s_h1))``: int8 at ``s_h1``.
5. ``ffn = matmul(h1, W1_q) + b1_q``; per 16-column group ``g``:
   ``gelu_g, s_gelu_g = i_gelu(ffn_g, gelu_constants(c_g))`` and
   ``f_g = requantize(gelu_g, dyadic_multiplier(s_gelu_g / s_f), 8)``.
6. ``res2 = matmul(f, W2_q) + b2_q + h1 * r2`` with ``r2 = s_h1 / c_2`` (``c_2 = s_f
   s_w2``); ``out = i_layernorm(res2, layernorm_constants(ln2_g, ln2_b, s_out))``: int8 at
   ``s_out``.

Residual scales: ``r = clip(floor(s_res / c), 1, 32767)`` and the accumulator scale is then
set to ``c = s_res / r``, i.e. the weight scale of ``wo`` (``w2``) is coarsened by at most
``1 / r`` (0.1% for the usual ``r`` in the hundreds to thousands) so that the residual term
is exact, instead of rounding ``r`` (which would scale the whole residual stream by up to
``1 / (2 r)``). Adapting ``s_ctx`` instead would be equivalent (only the product
``s_ctx s_wo`` matters); adapting the weight scale also works per group (below).

Masked scores: with ``|scores| <= dh 127 128 < 2**23`` for ``dh <= 256``,
``score + MASK_BIAS`` stays within int32, and ``max - masked >= 2**30 - 2**23``, which
:func:`quantize_bert_layer` checks to be at least ``32 ln 2`` at the Softmax's input scale
(then i-exp clamps ``z`` at 30 and the masked exp code is 0). A row with every key masked
keeps its original scores' Softmax (the float reference makes it uniform); key masks from a
tokenizer always keep ``[CLS]``.

The LayerNorm-prescale extension (``ln_prescale=True``): a change of the dataflow
---------------------------------------------------------------------------------
Measured on all-MiniLM-L6-v2, the dataflow above loses most of its accuracy in ``w2``: in
layers 0-3 a single FFN unit drives the known outlier dimension (99) of the residual stream
with one weight of 3.5 to 7.9 where the rest of ``w2`` is below 0.3 (median 0.03), so a
per-tensor int8 scale leaves most weights at 0 or +-1 code. One scale per tensor is forced
by LayerNorm reading the int32 row. ``ln_prescale=True`` removes that constraint:

* ``wo`` and ``w2`` get one scale per 16-column group like the other matrices, so ``res1``
  (``res2``) has an accumulator scale ``c_g`` per group;
* the residual multiplier is per 16-column group: ``r_g = s_res[g] / c_g`` (one integer
  per block of the residual load);
* before LayerNorm each group is brought to one scale ``c_ref`` by a dyadic multiplier with
  a 32-bit result: ``ln_in[:, g] = requantize(res[:, g], m_g, e_g, 32)`` with
  ``(m_g, e_g) = dyadic_multiplier(c_g / c_ref)``, ``c_ref = max(min_g c_g,
  range(res) / 2**30)`` (ratios >= 1 lose nothing; the bound keeps calibrated values
  within int32); then ``i_layernorm(ln_in, ...)``.

With the per-group residual multipliers, the int8 activations that feed a residual (``x``,
``h1``, ``out``) may also have one scale per 16-column group: LayerNorm's output takes it
for free (gamma and beta of each column are divided by its scale, one requantization
multiplier stays), and the matrices that read them fold it into their rows. ``f`` (GELU
output) may have per-group scales in either dataflow (its requantization is already per
group) with ``w2``'s rows compensating. ``smooth`` chooses these: group ``g`` of tensor
``t`` gets ``range_t (r_g / r_max)**alpha / 127`` (``r_g`` the group's calibrated max,
``alpha = 0`` per tensor, 1 per group; SmoothQuant's migration strength).
:data:`EXTENDED` is the setting measured best; see :func:`quantize_bert_layer`.

Measured (each MiniLM layer fed the float reference's input of that layer, calibrated on
``minilm.CALIBRATION_SENTENCES``, compared on the held-out ``EVALUATION_SENTENCES``; cosine
of the dequantized int8 output with the float output over the real tokens):

==========  ======  ======  ======  ======  ======  ======
layer       0       1       2       3       4       5
==========  ======  ======  ======  ======  ======  ======
base        0.9590  0.9839  0.9797  0.9857  0.9941  0.9951
EXTENDED    0.9934  0.9951  0.9945  0.9954  0.9971  0.9971
==========  ======  ======  ======  ======  ======  ======

``ln_prescale`` alone gives 0.988 to 0.996; per-group ``h1`` and ``f`` scales add the rest.
Percentile calibration does not help (clipping the outlier dimensions costs more than the
finer step gains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ...hw.config import TesseraConfig
from ..golden.gelu import gelu_constants, i_gelu
from ..golden.layernorm import LayerNormConstants, i_layernorm, layernorm_constants
from ..golden.matmul import matmul, wrap
from ..golden.requant import DIGIT_SHIFT, WIDE_MAX, WIDE_MIN, dyadic_multiplier, requantize
from ..golden.softmax import ExpConstants, exp_constants, i_softmax
from .reference import attention_keep, bert_layer_trace, check_weights

__all__ = [
    # helpers shared by the BERT and GPT-2 quantizers
    "LayerShape",
    "accumulate_int32",
    "activation_scales",
    "calibrated_ranges",
    "check_percentiles",
    "check_scales",
    "check_smooth",
    "compact_scale",
    "group_requants",
    "integer_linear",
    "requantize_groups",
    "scaled_layernorm",
    "GROUP",
    "PROB_BITS",
    "PROB_SCALE",
    "MASK_BIAS",
    "RESIDUAL_MAX",
    "ACTIVATIONS",
    "EXTENDED",
    "SPLIT_RATIO",
    "split_ffn_outliers",
    "MATMUL_CONFIG",
    "quantize_activation",
    "dequantize",
    "QuantizedLinear",
    "gptq_codes",
    "quantize_linear",
    "CalibratedRange",
    "calibrate",
    "QuantizedBertLayer",
    "quantize_bert_layer",
    "integer_bert_layer",
    "integer_bert_layer_trace",
    "trace_scales",
    "dequantize_trace",
    "FLOAT_NAMES",
    "cosine",
    "layer_errors",
]

#: Output columns per weight scale / requantization multiplier (the array's 16 columns).
GROUP = 16
#: Attention probabilities are 7-bit codes 0..127 (i-Softmax's 8 bits less one, rounded).
PROB_BITS = 7
#: Their scale.
PROB_SCALE = 2.0 ** -PROB_BITS
#: Added to masked scores in the accumulator.
MASK_BIAS = -(1 << 30)
#: Largest integer residual scale (a 16-bit signed multiplier).
RESIDUAL_MAX = (1 << 15) - 1
#: The activations that get a calibrated int8 scale.
ACTIVATIONS = ("x", "q", "k", "v", "ctx", "h1", "f", "out")
#: The activations that ``wide`` quantization makes 15-bit (the products' inputs and the
#: residual stream), and their steps per int8 step.
WIDE_ACTIVATIONS = ("x", "ctx", "h1", "f", "out")
WIDE_STEPS = 1 << DIGIT_SHIFT
#: Tensors that may have per-group scales (``smooth``), and which of them need
#: ``ln_prescale`` (they feed a residual).
_SMOOTHABLE = ("x", "h1", "f", "out")
_RESIDUAL_FED = ("x", "h1", "out")
#: The extended dataflow's options that reach cosine 0.99 on every MiniLM layer.
EXTENDED = {"ln_prescale": True, "smooth": {"h1": 0.5, "f": 0.5}}
#: An FFN unit is split (:func:`split_ffn_outliers`) when the largest weight of its ``w2`` row
#: is more than this many times the median row's largest weight.
SPLIT_RATIO = 16
#: The matrix unit the dataflow assumes: int8 x int8, int32 wrapping accumulation.
MATMUL_CONFIG = TesseraConfig(input_bits=8, weight_bits=8, acc_bits=32)

_INT8_MAX = 127
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_MAX_HEAD_DIM = 256  # keeps |scores| + |MASK_BIAS| within int32 (see the module docstring)
_RES_HEADROOM = float(1 << 30)  # calibrated LayerNorm inputs stay below this many codes


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (the project's rounding), in float."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _check_scale(scale, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number, not {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a positive finite number, not {scale!r}")
    return float(scale)


def check_scales(scale, name: str, n: int) -> np.ndarray:
    """A scalar or (n,) array of positive finite scales, as an (n,) array."""
    if np.ndim(scale) == 0:
        return np.full(n, _check_scale(scale, name))
    s = np.asarray(scale, dtype=np.float64)
    if s.shape != (n,) or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"{name} must be a positive number or ({n},) positive numbers, "
                         f"not shape {s.shape}")
    return s


def compact_scale(s: np.ndarray):
    """A float when every element is the same, else the array."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 0:
        return float(s)
    return float(s[0]) if s.size and np.all(s == s[0]) else s


def quantize_activation(x, scale, wide: bool = False) -> np.ndarray:
    """``saturate(round(x / scale))`` to int8 (round half away from zero; driver side), or
    with ``wide`` to a wide activation (int16 in ``[WIDE_MIN, WIDE_MAX]``).

    Parameters
    ----------
    x : array
    scale : float or ndarray
        One scale, or one per column (broadcast against the last axis of ``x``).
    wide : bool

    Raises
    ------
    ValueError
        For a nonpositive scale, a non-numeric ``x``, or one holding NaN (which has no
        int8 value: the cast would make one up).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"x must be a numeric array, not {x.dtype}")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError("x holds NaN, which has no int8 value (infinities saturate)")
    scale = (_check_scale(scale, "scale") if np.ndim(scale) == 0
             else check_scales(scale, "scale", x.shape[-1]))
    q = _round(x.astype(np.float64) / scale)
    if wide:
        return np.clip(q, WIDE_MIN, WIDE_MAX).astype(np.int16)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale) -> np.ndarray:
    """``q * scale`` in float64; ``scale`` a number or an array broadcast against ``q``
    (one per column, for example)."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"q must be an integer array, not {q.dtype}")
    return q.astype(np.float64) * np.asarray(scale, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Linear layers
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class QuantizedLinear:
    """An int8 weight matrix, its int32 bias and the scales of its accumulator.

    ``x_q @ weight + bias`` is, in column group ``g``, ``x @ w + b`` at scale
    ``acc_scale[g]``.

    Members
    -------
    weight : ndarray (in, out) of int8
        ``round(in_scale[i] * w[i, j] / acc_scale[g(j)])`` in ``[-127, 127]``: with a
        uniform ``in_scale`` that is ``round(w / s_w)`` with ``s_w = acc_scale / in_scale``.
    acc_scale : ndarray (groups,) of float64
        Accumulator scale ``c_g`` of each group of ``group`` consecutive output columns.
    group : int
        Columns per scale (the number of columns for one scale per tensor); the last
        group may be narrower.
    bias : ndarray (out,) of int32
        ``round(b / c)`` at each column's accumulator scale.
    in_scale : ndarray (in,) of float64
        Scale of each element of the int8 input.
    residual : ndarray (groups,) of int64, or None
        The residual multipliers ``r_g`` if the accumulator also receives an int8 residual.
    """

    weight: np.ndarray
    acc_scale: np.ndarray
    group: int
    bias: np.ndarray
    in_scale: np.ndarray
    residual: np.ndarray | None = None

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def groups(self) -> list[slice]:
        """The column slices that share a scale."""
        n = self.out_features
        return [slice(c, min(c + self.group, n)) for c in range(0, n, self.group)]

    def _per_column(self, v: np.ndarray) -> np.ndarray:
        return np.repeat(v, self.group)[: self.out_features]

    def acc_scales(self) -> np.ndarray:
        """The accumulator scale of every output column, (out,)."""
        return self._per_column(self.acc_scale)

    def residual_columns(self) -> np.ndarray:
        """The residual multiplier of every output column, (out,) int64."""
        if self.residual is None:
            raise ValueError("this layer has no residual")
        return self._per_column(self.residual).astype(np.int64)

    def weight_scales(self) -> np.ndarray:
        """The weight scale ``s_w[g] = acc_scale[g] / in_scale`` of each group; meaningful
        for a uniform ``in_scale`` only (otherwise it is folded into the rows)."""
        return self.acc_scale / self.in_scale[0]


def gptq_codes(target: np.ndarray, x: np.ndarray, damp: float) -> np.ndarray:
    """int8 codes for the real weight codes ``target`` that keep ``x @ codes`` close to
    ``x @ target``: GPTQ (Frantar et al. 2023, arXiv 2210.17323).

    The input rows are rounded one after the other (to nearest, saturating at +-127), and
    each row's rounding error is made up for by the rows not yet rounded, weighted by the
    inverse of the inputs' Hessian ``H = x^T x + damp mean(diag H) I``: the least-squares
    correction of the output error ``x @ (codes - target)`` on the inputs. Only the integer
    codes change; the scales stay those of ``target``.

    Why: rounding every weight to its nearest code makes the errors of one output add up
    as they come; on all-MiniLM-L6-v2 the weights cause about half of the chained
    encoder's error (``docs/accuracy.md``), and the correlated inputs (LayerNorm outputs,
    GELU outputs) let a rounding error be cancelled by the next rows.

    Parameters
    ----------
    target : ndarray (in, out) of float
        The weights in code units (``in_scale w / acc_scale``).
    x : ndarray (n, in) of float
        Inputs in code units (``x / in_scale``), for example the calibration data's.
    damp : float
        Added to the Hessian's diagonal, as a fraction of its mean: above 0; larger values
        trust the inputs less (towards rounding to nearest).

    Returns
    -------
    ndarray (in, out) of int8

    Raises
    ------
    ValueError
        For bad shapes, a damp that is not a positive number, or inputs that are all 0.
    """
    target = np.asarray(target, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if target.ndim != 2 or x.ndim != 2 or x.shape[1] != target.shape[0]:
        raise ValueError(f"target must be (in, out) and x (n, in), not {target.shape} and "
                         f"{x.shape}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp < math.inf:
        raise ValueError(f"damp must be a positive number, not {damp!r}")
    h = x.T @ x
    diag = np.diag(h).copy()
    live = diag > 0
    if not live.any():
        raise ValueError("the inputs are all 0")
    h[~live, ~live] = 1.0  # an input that is always 0: its row is rounded to nearest
    h += damp * diag[live].mean() * np.eye(len(h))
    # The upper Cholesky factor of H^-1: row i holds the weights that spread row i's error
    # over rows i + 1 ... (GPTQ's formulation).
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    w = target.copy()
    codes = np.empty_like(w)
    block = 128  # rows whose corrections of later blocks are applied at once (the same sums)
    for start in range(0, len(w), block):
        end = min(start + block, len(w))
        err = np.empty((end - start, w.shape[1]))
        for i in range(start, end):
            codes[i] = np.clip(_round(w[i]), -_INT8_MAX, _INT8_MAX)
            err[i - start] = (w[i] - codes[i]) / u[i, i]
            w[i + 1:end] -= np.outer(u[i, i + 1:end], err[i - start])
        w[end:] -= u[start:end, end:].T @ err
    return codes.astype(np.int8)


def quantize_linear(w: np.ndarray, b: np.ndarray, in_scale, group: int | None = GROUP,
                    residual_scale=None, inputs: np.ndarray | None = None,
                    damp: float | None = None) -> QuantizedLinear:
    """Quantize ``y = x @ w + b`` for int8 inputs at ``in_scale`` (driver side).

    The accumulator scale of column group ``g`` is ``c_g = max |in_scale[i] w[i, j]| / 127``
    over the group (with a uniform ``in_scale``: ``in_scale * max|w| / 127``). With
    ``residual_scale`` the accumulator also receives ``residual_q * r_g`` and ``c_g`` is
    coarsened to ``residual_scale / r_g`` with ``r_g = clip(floor(residual_scale / c_g),
    1, 32767)`` so that the residual term is exact.

    Parameters
    ----------
    w : ndarray (in, out) of float
    b : ndarray (out,) of float
    in_scale : float or ndarray (in,)
        Scale of the int8 input (per element when it has per-group scales).
    group : int or None
        Output columns per accumulator scale; None for one scale for the whole matrix.
    residual_scale : float or ndarray (out,), optional
        Scale of the int8 residual added into the accumulator; it must be uniform within
        each group.
    inputs : ndarray (n, in), optional
        Float inputs of the layer (calibration data). With them (and ``damp``) the weights
        are rounded by :func:`gptq_codes` to keep ``inputs @ w`` close, not each weight to
        its nearest code; the scales are the same.
    damp : float, optional
        GPTQ's damping, needed with ``inputs``.

    Returns
    -------
    QuantizedLinear

    Raises
    ------
    ValueError
        For bad shapes or scales, a residual scale that varies within a group, a bias that
        does not fit int32 at its scale, or ``inputs`` of the wrong shape or without
        ``damp``.
    """
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise ValueError(f"w must be (in, out) and b (out,), not {w.shape} and {b.shape}")
    n_in, n = w.shape
    s_in = check_scales(in_scale, "in_scale", n_in)
    if group is None:
        group = n
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
        raise ValueError(f"group must be a positive integer or None, not {group!r}")
    group = int(group)
    scaled = w * s_in[:, None]  # x @ w = x_q @ (in_scale * w)
    starts = range(0, n, group)
    ranges = np.array([np.abs(scaled[:, c:c + group]).max(initial=0.0) for c in starts])
    # An all-zero group can have any scale; take the largest (or 1 if all are 0).
    ranges = np.where(ranges > 0, ranges, ranges.max(initial=0.0) or 1.0)
    acc = ranges / _INT8_MAX
    residual = None
    if residual_scale is not None:
        s_res = check_scales(residual_scale, "residual_scale", n)
        s_res_g = np.array([s_res[c] for c in starts])
        for k, c in enumerate(starts):
            if np.any(s_res[c:c + group] != s_res_g[k]):
                raise ValueError(f"residual_scale must be uniform within each group of "
                                 f"{group} columns (group {k} is not)")
        residual = np.clip(np.floor(s_res_g / acc), 1, RESIDUAL_MAX).astype(np.int64)
        acc = s_res_g / residual  # never finer than max-abs: no weight saturates
    col = np.repeat(acc, group)[:n]
    if inputs is None:
        weight = np.clip(_round(scaled / col), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    else:
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"inputs must be (n, {n_in}), not {x.shape}")
        if damp is None:
            raise ValueError("inputs need a damp (GPTQ's damping)")
        weight = gptq_codes(scaled / col, x / s_in, damp)
    bias = _round(b / col)
    if bias.size and (bias.min() < _INT32_MIN or bias.max() > _INT32_MAX):
        raise ValueError(f"the bias does not fit int32 at its accumulator scale (largest "
                         f"|code| {np.abs(bias).max():.3g}): the input scale is too fine")
    return QuantizedLinear(weight=weight, acc_scale=acc, group=group,
                           bias=bias.astype(np.int32), in_scale=s_in, residual=residual)


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------

class CalibratedRange(NamedTuple):
    """The calibrated range of one tensor."""

    range: float          #: ``max |t|`` or the chosen percentile of ``|t|``
    columns: np.ndarray   #: ``max |t|`` of each column (last axis), for per-group scales


def _calibration_items(calibration_inputs):
    if isinstance(calibration_inputs, np.ndarray):
        return [(calibration_inputs, None)]
    items = []
    for item in calibration_inputs:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError("a calibration item must be x or a pair (x, mask)")
            items.append(item)
        else:
            items.append((item, None))
    if not items:
        raise ValueError("calibration_inputs must hold at least one input")
    return items


_CALIBRATED = (*ACTIVATIONS, "res1", "res2")


def check_percentiles(percentile, names) -> dict:
    """``{name: p}`` from a calibration's ``percentile`` argument (None, a number for
    every tensor of ``names`` but ``x``, or a dict), checked."""
    if percentile is None:
        pct = {}
    elif isinstance(percentile, dict):
        pct = dict(percentile)
    else:
        pct = {name: percentile for name in names if name != "x"}
    for name, p in pct.items():
        if name not in names:
            raise ValueError(f"percentile names must be among {', '.join(names)}, "
                             f"not {name!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ValueError(f"a percentile must be a number in (0, 100], not {p!r}")
    return pct


def calibrated_ranges(values: dict, pct: dict) -> dict[str, CalibratedRange]:
    """The calibrated range of each tensor from its ``|t|`` rows (a list of ``(n, cols)``
    arrays): ``max |t|``, or its percentile in ``pct``; never 0."""
    ranges = {}
    for name, rows in values.items():
        v = np.concatenate(rows)
        r = float(np.percentile(v, pct[name])) if name in pct else float(v.max(initial=0.0))
        if not r > 0:
            raise ValueError(f"the calibration data give {name} a range of 0")
        ranges[name] = CalibratedRange(r, v.max(axis=0))
    return ranges


def calibrate(w: dict, calibration_inputs, percentile: float | dict | None = None
              ) -> dict[str, CalibratedRange]:
    """Activation ranges of a BERT layer from its float reference.

    Parameters
    ----------
    w : dict
        The layer's float weights.
    calibration_inputs : array or sequence
        An input ``(..., S, H)``, or a sequence of inputs or of pairs ``(x, mask)``; with
        a key mask, only the real tokens' rows count.
    percentile : float or dict, optional
        None: ``max |t|``. A number ``p`` in ``(0, 100]``: the ``p``-th percentile of
        ``|t|`` for every tensor except ``x`` (whose scale may be fixed by the previous
        layer). A dict ``{name: p}`` for the named tensors only.

    Returns
    -------
    dict
        ``{name: CalibratedRange}`` for the names of :data:`ACTIVATIONS` and for
        ``res1``, ``res2`` (the LayerNorm inputs). A range, not a scale: the int8 scale is
        ``range / 127``.

    Raises
    ------
    ValueError
        For bad inputs or percentiles, or a tensor that is 0 over all the data.
    """
    check_weights(w)
    pct = check_percentiles(percentile, ACTIVATIONS)
    values = {name: [np.abs(t) for t in rows]
              for name, rows in _calibration_rows(w, calibration_inputs, _CALIBRATED).items()}
    return calibrated_ranges(values, pct)


def _calibration_rows(w: dict, calibration_inputs, names) -> dict[str, list[np.ndarray]]:
    """The float reference's tensors ``names`` over the calibration inputs: for each, a
    list of ``(tokens, columns)`` arrays of the real (unmasked) tokens."""
    values = {name: [] for name in names}
    for x, mask in _calibration_items(calibration_inputs):
        trace = bert_layer_trace(x, w, mask)
        x = trace["x"]
        rows = None
        if mask is not None and np.shape(mask) == x.shape[:-1]:
            rows = np.asarray(mask).astype(bool)
        for name in names:
            t = trace[name]
            values[name].append(t.reshape(-1, t.shape[-1]) if rows is None else t[rows])
    return values


def activation_scales(cal: CalibratedRange, group: int, alpha: float) -> np.ndarray:
    """Per-column int8 scales: ``range (r_g / r_max)**alpha / 127`` per group ``g``."""
    n = cal.columns.shape[0]
    if alpha == 0:
        return np.full(n, cal.range / _INT8_MAX)
    r_g = np.array([cal.columns[c:c + group].max() for c in range(0, n, group)])
    r_max = r_g.max()
    r_g = np.maximum(r_g, r_max * 2.0 ** -8)  # an all-but-silent group keeps a sane scale
    return np.repeat(cal.range * (r_g / r_max) ** alpha, group)[:n] / _INT8_MAX


# --------------------------------------------------------------------------------------
# The quantized layer
# --------------------------------------------------------------------------------------

class LayerShape:
    """What a quantized transformer layer's shape and interface scales are, from its
    matrices (``wq``, ``w1``), ``heads`` and ``scales``."""

    @property
    def hidden(self) -> int:
        return int(self.wq.weight.shape[0])

    @property
    def ffn(self) -> int:
        return self.w1.out_features

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def in_scale(self):
        """Scale of the int8 input ``x_q``: a float, or (H,) per-column scales."""
        return self.scales["x"]

    @property
    def out_scale(self):
        """Scale of the int8 output (the next layer's ``in_scale`` when chained)."""
        return self.scales["out"]

    @property
    def wide(self) -> bool:
        """Wide activations (``quantize_bert_layer(wide=True)``; ``options["wide"]``)."""
        return bool(self.options.get("wide", False))


@dataclass(frozen=True, eq=False)
class QuantizedBertLayer(LayerShape):
    """Every integer constant (and, for reference, every scale) of a quantized BERT layer.

    Members
    -------
    heads : int
        Attention heads; ``head_dim = hidden / heads``.
    group : int
        Columns per scale group (16).
    wq, wk, wv, w1 : QuantizedLinear
        One accumulator scale per group.
    wo, w2 : QuantizedLinear
        One accumulator scale (per group with ``ln_prescale``), and the residual
        multipliers ``residual`` (``r1``, ``r2``): one integer, or one per group with
        ``ln_prescale``, each in ``[1, 32767]``.
    q_requant, k_requant, v_requant : tuple of (m, e)
        One dyadic multiplier per group: ``c_g / s_q`` (``s_k``, ``s_v``).
    softmax : ExpConstants
        i-exp constants for the scores at ``s_q s_k / sqrt(dh)``.
    mask_bias : int
        Added to masked scores (:data:`MASK_BIAS`).
    ctx_requant : (m, e)
        ``2**-7 s_v / s_ctx``.
    ln1_prescale, ln2_prescale : tuple of (m, e), or None
        With ``ln_prescale``: per group of ``wo`` (``w2``), ``c_g / c_ref``, applied as
        ``requantize(res, m, e, 32)`` before LayerNorm. None in the base dataflow.
    ln1, ln2 : LayerNormConstants
        LayerNorm 1 and 2 (with per-group output scales folded into gamma and beta).
    gelu : tuple of GeluConstants
        One per group of ``w1``: input scale ``c_g`` of ``w1``.
    f_requant : tuple of (m, e)
        One per group of ``w1``: ``gelu[g].out_scale / s_f[g]``.
    scales : dict
        ``{name: scale}``: the int8 activations of :data:`ACTIVATIONS` (a float, or one
        per column for per-group scales) and ``ln1_in``, ``ln2_in`` (the LayerNorm inputs'
        scales).
    ranges : dict
        The calibrated ranges they were made from (``{name: CalibratedRange}``).
    options : dict
        ``ln_prescale``, ``smooth``, ``percentile``, ``split_ffn``, ``gptq``, as given to
        :func:`quantize_bert_layer`.
    """

    heads: int
    group: int
    wq: QuantizedLinear
    wk: QuantizedLinear
    wv: QuantizedLinear
    wo: QuantizedLinear
    w1: QuantizedLinear
    w2: QuantizedLinear
    q_requant: tuple
    k_requant: tuple
    v_requant: tuple
    softmax: ExpConstants
    mask_bias: int
    ctx_requant: tuple
    ln1_prescale: tuple | None
    ln2_prescale: tuple | None
    ln1: LayerNormConstants
    ln2: LayerNormConstants
    gelu: tuple
    f_requant: tuple
    scales: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def residual1(self) -> tuple[int, ...]:
        """``r1`` (one per group of ``wo``)."""
        return tuple(int(r) for r in self.wo.residual)

    @property
    def residual2(self) -> tuple[int, ...]:
        """``r2`` (one per group of ``w2``)."""
        return tuple(int(r) for r in self.w2.residual)


def group_requants(lin: QuantizedLinear, out_scale: np.ndarray) -> tuple:
    """Per group of ``lin``: ``dyadic_multiplier(c_g / out_scale[g])``."""
    return tuple(dyadic_multiplier(float(c / out_scale[cols.start]))
                 for c, cols in zip(lin.acc_scale, lin.groups, strict=True))


def _prescale(lin: QuantizedLinear, res_range: float) -> tuple[tuple, float]:
    """LayerNorm input prescale: per group ``c_g / c_ref``, and ``c_ref``."""
    c_ref = max(float(lin.acc_scale.min()), res_range / _RES_HEADROOM)
    return tuple(dyadic_multiplier(float(c / c_ref)) for c in lin.acc_scale), c_ref


def scaled_layernorm(gamma, beta, out_scales: np.ndarray) -> LayerNormConstants:
    """LayerNorm constants with output scale ``out_scales[j]`` for column ``j``: gamma and
    beta are divided by ``out_scales / s_ref`` (``s_ref`` the finest), so one output
    requantization to ``s_ref`` gives each column at its own scale."""
    s_ref = float(out_scales.min())
    k = s_ref / out_scales
    return layernorm_constants(np.asarray(gamma, dtype=np.float64) * k,
                               np.asarray(beta, dtype=np.float64) * k, s_ref)


def check_smooth(smooth, names) -> dict:
    """``smooth`` as a dict ``{name: alpha}``, its names among ``names``, checked."""
    smooth = {} if smooth is None else dict(smooth)
    for name, alpha in smooth.items():
        if name not in names:
            raise ValueError(f"smooth names must be among {', '.join(names)}, "
                             f"not {name!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not 0 <= alpha <= 1:
            raise ValueError(f"smooth[{name!r}] must be a number in [0, 1], not {alpha!r}")
    return smooth


def _check_options(smooth, ln_prescale: bool) -> dict:
    if not isinstance(ln_prescale, bool):
        raise ValueError(f"ln_prescale must be a bool, not {ln_prescale!r}")
    smooth = check_smooth(smooth, _SMOOTHABLE)
    for name, alpha in smooth.items():
        if alpha and name in _RESIDUAL_FED and not ln_prescale:
            raise ValueError(f"per-group scales for {name!r} need ln_prescale=True (it feeds "
                             f"a residual, whose multiplier is per tensor without it)")
    return smooth


def split_ffn_outliers(w: dict, group: int = GROUP, ratio: float = SPLIT_RATIO) -> dict:
    """The layer ``w`` with its outlier FFN units split over ``group`` new units: the same
    function in exact arithmetic, a finer int8 scale for ``w2`` in integers.

    A unit ``u`` is an outlier when ``max |w2[u, :]|`` exceeds ``ratio`` times the median
    of that maximum over the units. Its slot is emptied (``w1[:, u]``, ``b1[u]`` and
    ``w2[u]`` set to 0, so that it computes GELU(0) = 0 and adds nothing) and ``k_u``
    copies of it are appended, each with ``w2[u] / k_u``: ``sum k_u GELU(z) w2[u] / k_u``
    is what the unit gave. The ``k_u`` add up to ``group`` (one more scale group of ``w1``'s
    outputs; ``F`` grows by ``group``), shared in proportion to the units' largest weights,
    at least one each (the ``group`` largest outliers if there are more).

    Why: ``w2`` has one scale per group of output columns, and in all-MiniLM-L6-v2's layers
    0 to 3 one unit writes the residual stream's outlier dimension with a weight 22 to 55
    times the median unit's largest one, so the group of that column keeps 0 or 1 int8
    codes for its other weights. Split 16 ways the unit's weights are 16 times smaller.

    Parameters
    ----------
    w : dict
        A float BERT layer (:func:`tessera.sw.models.reference.bert_layer`).
    group : int
        Units added (one scale group).
    ratio : float
        The outlier threshold.

    Returns
    -------
    dict
        ``w`` itself if no unit is an outlier, else a copy with ``w1``, ``b1``, ``w2`` of
        ``F + group`` units.
    """
    w1, b1, w2 = (np.asarray(w[n], dtype=np.float64) for n in ("w1", "b1", "w2"))
    row_max = np.abs(w2).max(axis=1)
    order = np.argsort(row_max)[::-1]
    units = [int(u) for u in order[:group] if row_max[u] > ratio * np.median(row_max)]
    if not units:
        return w
    size = row_max[units]
    copies = np.maximum(1, np.floor(group * size / size.sum())).astype(int)
    while copies.sum() < group:
        copies[np.argmax(size / copies)] += 1
    while copies.sum() > group:
        copies[np.argmax(copies)] -= 1
    w1, b1, w2 = w1.copy(), b1.copy(), w2.copy()
    cols, biases, rows = [], [], []
    for u, k in zip(units, copies, strict=True):
        cols += [w1[:, u].copy()] * k  # copies: the slot is emptied next
        biases += [b1[u]] * k
        rows += [w2[u] / k] * k
        w1[:, u], b1[u], w2[u] = 0.0, 0.0, 0.0
    split = dict(w)
    split["w1"] = np.concatenate([w1, np.stack(cols, axis=1)], axis=1)
    split["b1"] = np.concatenate([b1, biases])
    split["w2"] = np.concatenate([w2, np.stack(rows)], axis=0)
    return split


def quantize_bert_layer(w: dict, calibration_inputs, *, group: int = GROUP,
                        in_scale=None, percentile: float | dict | None = None,
                        ln_prescale: bool = False,
                        smooth: dict | None = None,
                        split_ffn: bool = False,
                        gptq: float | None = None,
                        wide: bool = False) -> QuantizedBertLayer:
    """Quantize a BERT layer for :func:`integer_bert_layer` (driver side).

    The defaults give the base dataflow of the module docstring; ``ln_prescale=True``
    (with ``smooth``) the extended one. :data:`EXTENDED` holds the measured best options:
    ``quantize_bert_layer(w, data, **EXTENDED)``.

    Parameters
    ----------
    w : dict
        The float layer (weight dict of :func:`tessera.sw.models.reference.bert_layer`).
    calibration_inputs : array or sequence
        Float inputs of the layer, or pairs ``(x, mask)`` (see :func:`calibrate`).
    group : int
        Output columns per scale group (16: the accelerator's requantization block).
    in_scale : float or ndarray (H,), optional
        Force the input scale (the previous layer's ``out_scale`` when chaining layers);
        by default calibrated (``max |x| / 127``, or per group with ``smooth["x"]``).
    percentile : float or dict, optional
        Percentile calibration (see :func:`calibrate`); max-abs by default.
    ln_prescale : bool
        The extension of the dataflow: per-group ``wo``, ``w2`` scales, per-group residual
        multipliers, LayerNorm inputs brought to one scale per row by per-group dyadic
        multipliers (see the module docstring).
    smooth : dict, optional
        ``{name: alpha}`` for ``x``, ``h1``, ``f``, ``out``: per-group int8 scales
        ``range (r_g / r_max)**alpha / 127``; ``x``, ``h1``, ``out`` need ``ln_prescale``.
    split_ffn : bool
        Quantize :func:`split_ffn_outliers` of ``w`` (the same function, ``group`` more FFN
        units when a unit is an outlier): ``ql.ffn`` is then ``F + group``.
    gptq : float, optional
        Round the six matrices' weights by :func:`gptq_codes` on the calibration inputs
        (the float reference's ``x``, ``ctx``, ``h1``, ``f``) with this damping, instead of
        to nearest. The scales do not change.
    wide : bool
        Wide activations (``docs/architecture.md``): ``x``, ``ctx``, ``h1``, ``f`` and
        ``out`` as 15-bit values (two int8 digits on the accelerator) at ``2**-7`` of
        their int8 scales, the same ranges; ``q``, ``k``, ``v`` stay int8. The weights
        are the same int8 codes, the accumulators ``2**7`` finer. An ``in_scale`` given is
        already the wide one (a wide layer's ``out_scale``).

    Returns
    -------
    QuantizedBertLayer

    Raises
    ------
    ValueError
        For bad weights, calibration data or options, a head size above 256, or scales that
        a fixed-width constant cannot represent (the message names which).
    """
    hidden, heads, ffn = check_weights(w)
    smooth = _check_options(smooth, ln_prescale)
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"group must be a positive integer, not {group!r}")
    if not isinstance(split_ffn, bool):
        raise ValueError(f"split_ffn must be a bool, not {split_ffn!r}")
    if not isinstance(wide, bool):
        raise ValueError(f"wide must be a bool, not {wide!r}")
    if gptq is not None and (isinstance(gptq, bool) or not isinstance(gptq, (int, float))
                             or not 0 < gptq < math.inf):
        raise ValueError(f"gptq must be None or a positive damping, not {gptq!r}")
    if split_ffn:
        w = split_ffn_outliers(w, group)
    dh = hidden // heads
    if dh > _MAX_HEAD_DIM:
        raise ValueError(f"the head size must be at most {_MAX_HEAD_DIM} (so that masked "
                         f"scores stay within int32), not {dh}")
    # One pass of the float reference gives the ranges and GPTQ's inputs (as calibrate).
    pct = check_percentiles(percentile, ACTIVATIONS)
    rows = _calibration_rows(w, calibration_inputs, _CALIBRATED)
    ranges = calibrated_ranges({name: [np.abs(t) for t in r] for name, r in rows.items()}, pct)
    s = {name: activation_scales(ranges[name], group, smooth.get(name, 0.0))
         for name in ACTIVATIONS}
    if wide:
        for name in WIDE_ACTIVATIONS:
            s[name] = s[name] / WIDE_STEPS
    if in_scale is not None:
        s["x"] = check_scales(in_scale, "in_scale", hidden)
        if not ln_prescale and np.any(s["x"] != s["x"][0]):
            raise ValueError("a per-column in_scale needs ln_prescale=True")
    for name in ("q", "k", "v", "ctx"):
        s[name] = float(s[name][0])

    inputs = {name: None if gptq is None else np.concatenate(rows[name])
              for name in ("x", "ctx", "h1", "f")}
    wq, wk, wv = (quantize_linear(w[f"w{n}"], w[f"b{n}"], s["x"], group, inputs=inputs["x"],
                                  damp=gptq) for n in "qkv")
    score_scale = s["q"] * s["k"] / math.sqrt(dh)
    softmax = exp_constants(score_scale)
    if ((1 << 30) - 2 * dh * 127 * 128) * score_scale < 32 * math.log(2.0):
        raise ValueError(f"the score scale {score_scale:.3g} is so fine that MASK_BIAS "
                         f"does not drive masked probabilities to 0")
    res_group = group if ln_prescale else None
    wo = quantize_linear(w["wo"], w["bo"], s["ctx"], res_group, residual_scale=s["x"],
                         inputs=inputs["ctx"], damp=gptq)
    ln1_prescale, c1 = _prescale(wo, ranges["res1"].range) if ln_prescale else (None, None)
    ln1 = scaled_layernorm(w["ln1_g"], w["ln1_b"], s["h1"])
    w1 = quantize_linear(w["w1"], w["b1"], s["h1"], group, inputs=inputs["h1"], damp=gptq)
    gelu = tuple(gelu_constants(float(c)) for c in w1.acc_scale)
    w2 = quantize_linear(w["w2"], w["b2"], s["f"], res_group, residual_scale=s["h1"],
                         inputs=inputs["f"], damp=gptq)
    ln2_prescale, c2 = _prescale(w2, ranges["res2"].range) if ln_prescale else (None, None)
    ln2 = scaled_layernorm(w["ln2_g"], w["ln2_b"], s["out"])
    f_requant = tuple(dyadic_multiplier(g.out_scale / float(s["f"][cols.start]))
                      for g, cols in zip(gelu, w1.groups, strict=True))
    scales = {name: compact_scale(v) for name, v in s.items()}
    scales["ln1_in"] = float(wo.acc_scale[0]) if c1 is None else c1
    scales["ln2_in"] = float(w2.acc_scale[0]) if c2 is None else c2
    return QuantizedBertLayer(
        heads=heads, group=group, wq=wq, wk=wk, wv=wv, wo=wo, w1=w1, w2=w2,
        q_requant=group_requants(wq, np.full(hidden, s["q"])),
        k_requant=group_requants(wk, np.full(hidden, s["k"])),
        v_requant=group_requants(wv, np.full(hidden, s["v"])),
        softmax=softmax, mask_bias=MASK_BIAS,
        ctx_requant=dyadic_multiplier(PROB_SCALE * s["v"] / s["ctx"]),
        ln1_prescale=ln1_prescale, ln2_prescale=ln2_prescale, ln1=ln1, ln2=ln2,
        gelu=gelu, f_requant=f_requant, scales=scales, ranges=ranges,
        options={"ln_prescale": ln_prescale, "smooth": smooth, "percentile": percentile,
                 "split_ffn": split_ffn, "gptq": gptq, "wide": wide})


# --------------------------------------------------------------------------------------
# The integer layer
# --------------------------------------------------------------------------------------

def accumulate_int32(*terms: np.ndarray) -> np.ndarray:
    """Sum into the int32 accumulator, wrapping as it does."""
    total = terms[0].astype(np.int64)
    for t in terms[1:]:
        total = total + t.astype(np.int64)
    return wrap(total, 32).astype(np.int32)


def integer_linear(x: np.ndarray, lin: QuantizedLinear, residual: np.ndarray | None = None
                   ) -> np.ndarray:
    """The int32 accumulator of ``x @ W + bias`` (and a residual loaded first, int8 times
    its per-block integer scale), wrapping as the hardware's does. ``x`` and the residual
    are int8, or wide (int16 in ``[WIDE_MIN, WIDE_MAX]``: their digits' two passes sum to
    the same product, modulo ``2**32``)."""
    product = matmul(x, lin.weight, MATMUL_CONFIG) if x.dtype == np.int8 else \
        x.astype(np.int64) @ lin.weight.astype(np.int64)   # wide: two passes of the array
    terms = [product, lin.bias[None, :]]
    if residual is not None:
        # The residual load: int8 times a 16-bit integer per column block.
        terms.append(residual.astype(np.int64) * lin.residual_columns()[None, :])
    return accumulate_int32(*terms)


def requantize_groups(acc: np.ndarray, lin: QuantizedLinear, requants, bits: int) -> np.ndarray:
    """``acc`` requantized per column group of ``lin`` with ``requants`` (one dyadic
    ``(m, e)`` per group), to ``bits`` (8 or 32)."""
    out = np.empty(acc.shape, dtype=np.int8 if bits == 8 else np.int32)
    for cols, (m, e) in zip(lin.groups, requants, strict=True):
        out[:, cols] = requantize(np.ascontiguousarray(acc[:, cols]), m, e, bits)
    return out


def _mask_bias(mask, seq: int, bias: int) -> np.ndarray | None:
    keep = attention_keep(mask, (seq, 0))
    if keep is None:
        return None
    keep = np.broadcast_to(keep[0], (seq, seq))  # drop the heads axis
    return np.where(keep, 0, bias).astype(np.int32)


def _check_input(x_q, ql: QuantizedBertLayer) -> np.ndarray:
    if not isinstance(ql, QuantizedBertLayer):
        raise ValueError(f"ql must be a QuantizedBertLayer, not {type(ql).__name__}")
    wide = ql.wide
    want = np.int16 if wide else np.int8
    if not isinstance(x_q, np.ndarray) or x_q.dtype != want:
        got = x_q.dtype if isinstance(x_q, np.ndarray) else type(x_q).__name__
        raise ValueError(f"x_q must be an {np.dtype(want).name} array"
                         f"{' (a wide layer)' if wide else ''}, not {got}")
    if wide and x_q.size and (x_q.min() < WIDE_MIN or x_q.max() > WIDE_MAX):
        raise ValueError(f"a wide layer's input holds {WIDE_MIN} .. {WIDE_MAX}, not "
                         f"{int(x_q.min())} .. {int(x_q.max())}")
    if x_q.ndim not in (2, 3) or x_q.shape[-1] != ql.hidden:
        raise ValueError(f"x_q must have shape (S, {ql.hidden}) or (B, S, {ql.hidden}), "
                         f"not {x_q.shape}")
    return x_q


def wide_activation(y: np.ndarray) -> np.ndarray:
    """A requantization to 16 bits as the wide activation its two digits hold: clamped to
    ``[WIDE_MIN, WIDE_MAX]``, int16."""
    return np.clip(y, WIDE_MIN, WIDE_MAX).astype(np.int16)


def _trace_one(x: np.ndarray, ql: QuantizedBertLayer, mask) -> dict[str, np.ndarray]:
    if ql.wide:
        bits, act = 16, wide_activation
    else:
        bits, act = 8, (lambda y: y)
    seq, dh = x.shape[0], ql.head_dim
    t = {"x": x}
    for name, lin, rq in (("q", ql.wq, ql.q_requant), ("k", ql.wk, ql.k_requant),
                          ("v", ql.wv, ql.v_requant)):
        t[f"{name}_acc"] = integer_linear(x, lin)
        t[name] = requantize_groups(t[f"{name}_acc"], lin, rq, 8)
    bias = _mask_bias(mask, seq, ql.mask_bias)
    scores, probs, ctx_acc = [], [], []
    for h in range(ql.heads):
        cols = slice(h * dh, (h + 1) * dh)
        qk = matmul(t["q"][:, cols], t["k"][:, cols].T, MATMUL_CONFIG)
        s = accumulate_int32(qk) if bias is None else accumulate_int32(qk, bias)
        # i-Softmax rounded to 7-bit codes at 2**-7: the array takes signed int8.
        p = i_softmax(s, ql.softmax, 8 - PROB_BITS).astype(np.int8)
        scores.append(s)
        probs.append(p)
        ctx_acc.append(accumulate_int32(matmul(p, t["v"][:, cols], MATMUL_CONFIG)))
    t["scores"] = np.stack(scores)
    t["probs"] = np.stack(probs)
    t["ctx_acc"] = np.concatenate(ctx_acc, axis=-1)
    t["ctx"] = act(requantize(t["ctx_acc"], *ql.ctx_requant, bits))
    t["res1"] = integer_linear(t["ctx"], ql.wo, x)
    t["ln1_in"] = (t["res1"] if ql.ln1_prescale is None
                   else requantize_groups(t["res1"], ql.wo, ql.ln1_prescale, 32))
    t["h1"] = act(i_layernorm(t["ln1_in"], ql.ln1, bits))
    t["ffn_acc"] = integer_linear(t["h1"], ql.w1)
    gelu = np.empty(t["ffn_acc"].shape, dtype=np.int32)
    f = np.empty(t["ffn_acc"].shape, dtype=np.int8 if bits == 8 else np.int16)
    for cols, consts, (m, e) in zip(ql.w1.groups, ql.gelu, ql.f_requant, strict=True):
        gelu[:, cols], _ = i_gelu(np.ascontiguousarray(t["ffn_acc"][:, cols]), consts)
        f[:, cols] = act(requantize(np.ascontiguousarray(gelu[:, cols]), m, e, bits))
    t["gelu"] = gelu
    t["f"] = f
    t["res2"] = integer_linear(f, ql.w2, t["h1"])
    t["ln2_in"] = (t["res2"] if ql.ln2_prescale is None
                   else requantize_groups(t["res2"], ql.w2, ql.ln2_prescale, 32))
    t["out"] = act(i_layernorm(t["ln2_in"], ql.ln2, bits))
    return t


def integer_bert_layer_trace(x_q: np.ndarray, ql: QuantizedBertLayer,
                             mask=None) -> dict[str, np.ndarray]:
    """Run :func:`integer_bert_layer` and return every named intermediate.

    Names, dtypes and shapes (for ``x_q`` ``(S, H)``; a batch ``(B, S, H)`` adds a leading
    axis to each):

    ============  =====  =============  ====================================================
    name          dtype  shape          value
    ============  =====  =============  ====================================================
    ``x``         int8   (S, H)         input, at ``s_x``
    ``q_acc``     int32  (S, H)         ``x Wq + bq`` (``k_acc``, ``v_acc`` alike)
    ``q``         int8   (S, H)         requantized per group (``k``, ``v`` alike)
    ``scores``    int32  (heads, S, S)  ``q_h k_h^T`` + mask bias
    ``probs``     int8   (heads, S, S)  i-Softmax to 7 bits, 0..127 at ``2**-7``
    ``ctx_acc``   int32  (S, H)         the heads' ``probs v_h``, at ``2**-7 s_v``
    ``ctx``       int8   (S, H)         requantized to ``s_ctx``
    ``res1``      int32  (S, H)         ``ctx Wo + bo + x r1``
    ``ln1_in``    int32  (S, H)         ``res1`` prescaled per group (``ln_prescale``), else
                                        ``res1``
    ``h1``        int8   (S, H)         LayerNorm 1
    ``ffn_acc``   int32  (S, F)         ``h1 W1 + b1``
    ``gelu``      int32  (S, F)         i-GELU per group (per-group scales)
    ``f``         int8   (S, F)         requantized per group to ``s_f``
    ``res2``      int32  (S, H)         ``f W2 + b2 + h1 r2``
    ``ln2_in``    int32  (S, H)         ``res2`` prescaled (``ln_prescale``), else ``res2``
    ``out``       int8   (S, H)         LayerNorm 2 at ``s_out``: the layer's output
    ============  =====  =============  ====================================================

    :func:`trace_scales` gives the scale of each.

    Parameters
    ----------
    x_q : ndarray (S, H) or (B, S, H) of int8
        The input at ``ql.in_scale``.
    ql : QuantizedBertLayer
    mask : array, optional
        Key mask ``x_q.shape[:-1]`` or full mask ``(S, S)`` / ``(B, S, S)``; true where
        attention is allowed.

    Raises
    ------
    ValueError
        For a wrong dtype or shape of ``x_q`` or ``mask``.
    """
    x_q = _check_input(x_q, ql)
    seq = x_q.shape[-2]
    if mask is not None:
        mask = np.asarray(mask)
        allowed = {x_q.shape[:-1], (seq, seq), (*x_q.shape[:-2], seq, seq)}
        if mask.shape not in allowed:
            raise ValueError(f"mask must have shape {x_q.shape[:-1]} (keys) or (..., {seq}, "
                             f"{seq}) (queries, keys), not {mask.shape}")
    if x_q.ndim == 2:
        return _trace_one(x_q, ql, mask)
    traces = []
    for b in range(x_q.shape[0]):
        if mask is None:
            mb = None
        elif mask.shape == x_q.shape[:-1] or mask.ndim == 3:
            mb = mask[b]  # a key mask (B, S) or full masks (B, S, S)
        else:
            mb = mask  # one full (S, S) mask for the whole batch
        traces.append(_trace_one(x_q[b], ql, mb))
    return {name: np.stack([t[name] for t in traces]) for name in traces[0]}


def integer_bert_layer(x_q: np.ndarray, ql: QuantizedBertLayer, mask=None) -> np.ndarray:
    """The integer BERT layer: int8 input at ``ql.in_scale`` -> int8 output at
    ``ql.out_scale``. The dataflow is in the module docstring; only golden operators and
    wrapping int32 additions are used.

    Parameters
    ----------
    x_q : ndarray (S, H) or (B, S, H) of int8
    ql : QuantizedBertLayer
    mask : array, optional
        Key mask ``x_q.shape[:-1]`` or full mask; true where attention is allowed.

    Returns
    -------
    ndarray of int8, the shape of ``x_q``

    Raises
    ------
    ValueError
        For a wrong dtype or shape of ``x_q`` or ``mask``.
    """
    return integer_bert_layer_trace(x_q, ql, mask)["out"]


def trace_scales(ql: QuantizedBertLayer) -> dict[str, float | np.ndarray]:
    """The float scale of each intermediate of :func:`integer_bert_layer_trace` (a number,
    or one per column). ``scores`` is given at ``s_q s_k / sqrt(dh)``, so that it
    dequantizes to ``q_h k_h^T / sqrt(dh)``."""
    s = ql.scales
    return {
        "x": s["x"], "q_acc": ql.wq.acc_scales(), "q": s["q"], "k_acc": ql.wk.acc_scales(),
        "k": s["k"], "v_acc": ql.wv.acc_scales(), "v": s["v"],
        "scores": s["q"] * s["k"] / math.sqrt(ql.head_dim), "probs": PROB_SCALE,
        "ctx_acc": PROB_SCALE * s["v"], "ctx": s["ctx"],
        "res1": compact_scale(ql.wo.acc_scales()), "ln1_in": s["ln1_in"], "h1": s["h1"],
        "ffn_acc": ql.w1.acc_scales(),
        "gelu": np.repeat([g.out_scale for g in ql.gelu], ql.w1.group)[: ql.ffn],
        "f": s["f"], "res2": compact_scale(ql.w2.acc_scales()), "ln2_in": s["ln2_in"],
        "out": s["out"],
    }


#: The float reference's intermediate (:func:`~.reference.bert_layer_trace`) that each
#: integer intermediate approximates.
FLOAT_NAMES = {"x": "x", "q_acc": "q", "q": "q", "k_acc": "k", "k": "k", "v_acc": "v",
               "v": "v", "scores": "scores", "probs": "probs", "ctx_acc": "ctx", "ctx": "ctx",
               "res1": "res1", "ln1_in": "res1", "h1": "h1", "ffn_acc": "ffn_in", "gelu": "f",
               "f": "f", "res2": "res2", "ln2_in": "res2", "out": "out"}


def dequantize_trace(trace: dict, ql: QuantizedBertLayer) -> dict[str, np.ndarray]:
    """Every intermediate of :func:`integer_bert_layer_trace` in float64 (same names)."""
    scales = trace_scales(ql)
    return {name: dequantize(v, scales[name]) for name, v in trace.items()}


def cosine(a, b) -> float:
    """Cosine similarity of two arrays taken as flat vectors."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def layer_errors(x, w: dict, ql: QuantizedBertLayer, mask=None) -> dict[str, dict]:
    """Stage-by-stage accuracy of the integer layer against the float reference.

    The float input ``x`` is quantized at ``ql.in_scale``, run through
    :func:`integer_bert_layer_trace`, dequantized and compared with
    :func:`~.reference.bert_layer_trace` of the same float ``x`` (both with ``mask``).
    With a key mask only the real tokens count (rows, and for ``scores`` / ``probs`` also
    key columns).

    Returns
    -------
    dict
        ``{name: {"cosine": c, "max_abs": e, "rms": r, "token_cosine_min": t}}`` for each
        integer intermediate: cosine of the whole tensor, largest and RMS absolute error,
        and (for the ``(S, X)`` tensors) the smallest cosine of one token's vector.
    """
    x = np.asarray(x, dtype=np.float64)
    if ql.options.get("split_ffn"):
        w = split_ffn_outliers(w, ql.group)  # the FFN intermediates as the layer has them
    ref = bert_layer_trace(x, w, mask)
    xq = quantize_activation(x, ql.in_scale, wide=ql.wide)
    deq = dequantize_trace(integer_bert_layer_trace(xq, ql, mask), ql)
    rows = None
    if mask is not None and np.shape(mask) == x.shape[:-1]:
        rows = np.asarray(mask).astype(bool)
    result = {}
    for name, value in deq.items():
        r = ref[FLOAT_NAMES[name]]
        if rows is not None:
            if name in ("scores", "probs"):
                keep = np.broadcast_to(rows[..., None, :, None] & rows[..., None, None, :],
                                       r.shape)
                value, r = value[keep], r[keep]
            else:
                value, r = value[rows], r[rows]
        d = value - r
        entry = {"cosine": cosine(value, r), "max_abs": float(np.abs(d).max(initial=0.0)),
                 "rms": float(np.sqrt(np.mean(d * d))) if d.size else 0.0}
        if name not in ("scores", "probs"):
            v2, r2 = value.reshape(-1, value.shape[-1]), r.reshape(-1, r.shape[-1])
            num = (v2 * r2).sum(-1)
            den = np.linalg.norm(v2, axis=-1) * np.linalg.norm(r2, axis=-1)
            entry["token_cosine_min"] = float((num / np.where(den > 0, den, 1.0)).min())
        result[name] = entry
    return result
