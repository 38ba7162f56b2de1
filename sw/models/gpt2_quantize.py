"""Static int8 quantization of a GPT-2 block, and its integer model for prefill and for
decoding with an int8 KV cache.

:func:`integer_gpt2_layer` (whole causal sequences) and :func:`integer_gpt2_decode_step`
(new tokens after an :class:`Int8KVCache`) are the contract that the accelerator's lowering
of a GPT-2 block must reproduce bit for bit. Like :func:`~.quantize.integer_bert_layer` they
are written only with the golden operators of ``tessera.sw.golden`` (wrapped int8 x int8 ->
int32 matrix products, dyadic requantization, i-Softmax, i-GELU, i-LayerNorm) and integer
additions; every float lives in :func:`quantize_gpt2_layer` (the driver side), which turns a
float block and calibration inputs into the integer constants of a
:class:`QuantizedGpt2Layer`. The float reference is :func:`~.reference.gpt2_layer`
(Hugging Face ``GPT2Block``: pre-LayerNorm, causal, ``gelu_new``); :func:`gpt2_layer_trace`
is the same computation with every intermediate named.

Quantization (as :mod:`.quantize`: I-BERT, uniform symmetric, static scales)
------------------------------------------------------------------------------
* Activations: symmetric int8, ``scale = range / 127`` where ``range`` is ``max |t|`` over
  the calibration data (or a percentile, see :func:`calibrate_gpt2`), taken from the float
  reference's intermediates. Tensors: ``x`` (input: the residual stream), ``a`` (LayerNorm
  1), ``q``, ``k``, ``v``, ``ctx``, ``x1`` (the residual stream after attention,
  ``x + attn``), ``h`` (LayerNorm 2), ``f`` (GELU output), ``out`` (``x1 + mlp``: the
  block's output and the next block's ``x``).
* Weights: int8 in ``[-127, 127]``, one scale per group of ``G = 16`` consecutive output
  columns for all six matrices. In GPT-2 every product is requantized (``wo`` and ``w2``
  give the int8 residual stream ``x1`` and ``out``) and no LayerNorm reads a product's
  accumulator, so BERT's one scale per tensor for ``wo`` and ``w2`` does not arise.
* Biases: int32, ``round(b / c_g)`` with each column's accumulator scale ``c_g``.
* KV cache: int8 ``k`` and ``v`` at the fixed calibrated scales ``s_k``, ``s_v`` (one per
  tensor): a decode step appends the new tokens' rows and never requantizes the past.
  Calibrate on sequences like those decoded, so that ``s_k``, ``s_v`` cover every position.

Integer dataflow (``n`` new tokens at positions ``o .. o+n-1`` after ``o`` cached ones, a
prefill being ``o = 0``, ``n = S``; ``T = o + n`` keys; ``H`` hidden, ``dh = H / heads``;
every sum wraps at 32 bits as the accumulator does; ``requantize`` rounds half away from
zero and saturates):

1. LayerNorm 1 of the int8 input: ``ln1_in = x_q * LN_LOAD_SCALE`` widened to int32 (the
   accelerator loads the int8 ``x`` into the accumulator with the integer scale
   :data:`LN_LOAD_SCALE` ``= 1`` and stores the rows through i-LayerNorm);
   ``a = i_layernorm(ln1_in, layernorm_constants(ln1_g, ln1_b, s_a))``: int8 at ``s_a``.
   The scale 1 loses nothing: i-LayerNorm's deviations ``n x - sum x`` are exact and its
   pre-shift brings the largest to 15 bits, so every power of two gives the same bits
   (other integers may differ in the last bit).
2. ``Q, K, V``: ``acc = matmul(a, W_q) + b_q``; per 16-column group ``g``:
   ``q = requantize(acc, m_g, e_g, 8)`` with ``(m_g, e_g) = dyadic_multiplier(c_g / s_q)``
   (likewise ``k``, ``v``).
3. The cache: the new tokens' ``k`` and ``v`` rows, split per head (head ``h`` is columns
   ``h dh .. (h+1) dh``), are appended: ``K_h``, ``V_h`` are ``(T, dh)`` int8, positions
   ``0 .. T-1``.
4. Per head ``h``: ``scores = matmul(q_h, K_h^T) + causal_bias`` (int32 at ``s_q s_k``),
   where ``causal_bias[i, j]`` is :data:`~.quantize.MASK_BIAS` (``-2**30``) for a future key
   ``j > o + i`` and 0 otherwise (a single new token needs none);
   ``probs = i_softmax(scores, exp_constants(s_q s_k / sqrt(dh)), shift=1)``: 7-bit
   probabilities 0..127 at scale ``2**-7``;
   ``ctx_h = requantize(matmul(probs, V_h), dyadic_multiplier(2**-7 s_v / s_ctx), 8)``.
5. ``res1 = matmul(ctx, Wo_q) + bo_q + x_q * r1_g`` (int32 at ``c_o[g]``), with
   ``r1_g = s_x / c_o[g]`` an integer in ``[1, 32767]`` per group (the accelerator loads
   the int8 residual into the accumulator times a 16-bit integer per column block; as in
   BERT, ``c_o[g]`` is coarsened to ``s_x / floor(s_x / c_o[g])`` so that the residual term
   is exact); ``x1 = requantize(res1, dyadic_multiplier(c_o[g] / s_x1), 8)`` per group:
   int8 at ``s_x1``, stored to main memory.
6. LayerNorm 2 of the stored residual stream: ``ln2_in = x1 * LN_LOAD_SCALE`` widened;
   ``h = i_layernorm(ln2_in, layernorm_constants(ln2_g, ln2_b, s_h))``: int8 at ``s_h``.
7. ``ffn = matmul(h, W1_q) + b1_q``; per group ``g``:
   ``gelu_g, s_gelu_g = i_gelu(ffn_g, gelu_constants(c_g))`` and
   ``f_g = requantize(gelu_g, dyadic_multiplier(s_gelu_g / s_f), 8)``.
8. ``res2 = matmul(f, W2_q) + b2_q + x1 * r2_g`` (int32 at ``c_2[g] = s_x1 / r2_g``);
   ``out = requantize(res2, dyadic_multiplier(c_2[g] / s_out), 8)`` per group: int8 at
   ``s_out``, the block's output.

Decoding equals prefill, bit for bit
------------------------------------
Every step but 4 works on each token's row alone, and a position's key and value depend
only on its own row (the cache's scales are fixed), so position ``p`` sees the same ``K`` and
``V`` rows in a prefill as when decoding. In step 4, with ``|scores| <= dh 127 128 < 2**23``
for ``dh <= 256``, a masked score lies at least ``2**30 - 2**23`` below the row maximum,
which :func:`quantize_gpt2_layer` checks to be at least ``32 ln 2`` at the Softmax's input
scale: i-exp clamps it at ``z = 30`` and its exp code is exactly 0. The row maximum, the exp
sum, the reciprocal factor and every unmasked probability are then those of the row cut
after key ``o + i``, which is what a decode step computes, and the masked probabilities are
0 and add nothing to ``probs V``. So :func:`integer_gpt2_decode_step` on tokens one at a time
(or in any chunks) gives :func:`integer_gpt2_layer`'s output exactly. For a lowering this
also means that the score row of query ``i`` may be cut after any key ``>= o + i``: key
tiles wholly in the future may be skipped instead of masked, with the same bits.

The residual stream is int8 between operations
----------------------------------------------
The accelerator stores int8 only, and its LayerNorm reads int32 accumulator rows. So the
residual stream lives in main memory as int8 (``x`` at ``s_x``, ``x1`` at ``s_x1``, ``out``
at ``s_out``); each residual sum is formed in the accumulator from the product, the bias
and the int8 residual times an integer (steps 5, 8) and requantized per group; and both
LayerNorms read an int8 residual-stream tensor loaded into the accumulator (steps 1, 6), one
mechanism for LayerNorm 2 and for the next block's LayerNorm 1. The alternative for
LayerNorm 2, normalizing ``res1`` while it is still in the accumulator (a second, LayerNorm
store of each ``Wo`` tile, with BERT's per-group prescale since ``wo`` is per group),
measured barely better: cosine of ``h`` 0.99985 instead of 0.99980 and of the output 0.99972
instead of 0.99971 (H 256); 0.99961 / 0.99955 and 0.99938 / 0.99933 (H 768). The int8
residual stream costs little over depth: six random blocks chained (each quantized with the
previous block's ``out_scale`` as its ``in_scale``) give output cosines 0.9997, 0.9995,
0.9993, 0.9991, 0.9989, 0.9987.

Per-group residual-stream scales (``smooth``)
---------------------------------------------
Trained GPT-2s carry a few residual dimensions tens to hundreds of times larger than the
rest ("massive activations"): with one int8 scale for ``x``, every other dimension is left
with a few codes. ``smooth=RESIDUAL_PER_GROUP`` (``{"x": 1, "x1": 1, "out": 1}``) gives the
residual stream one scale per 16-column group. The residual multipliers and the output
requantizations of steps 5 and 8 are per group anyway; the LayerNorm loads of steps 1 and 6
are then followed by BERT's extended prescale, which brings every group to one scale per
row: ``ln_in[:, g] = requantize(x_q[:, g] * LN_LOAD_SCALE, m_g, e_g, 32)`` with
``(m_g, e_g) = dyadic_multiplier(s_x[g] / c_ref)``, ``c_ref = max(min_g s_x[g] / 2**8,
128 max_g s_x[g] / 2**30)`` (the accelerator's LayerNorm table carries one ``(m, e)`` per
column block; ``ln1_prescale`` / ``ln2_prescale`` are None when the scale is uniform).
``a``, ``h`` and ``f`` may be per group too (a LayerNorm folds its output scales into gamma
and beta; the next matrix folds them into its rows); ``smooth`` takes ``alpha`` in
``[0, 1]``: group ``g`` of tensor ``t`` gets ``range_t (r_g / r_max)**alpha / 127``.
Measured with three residual dimensions offset by 30, -50 and 80 on N(0, 1) inputs (H 256,
3 seeds): cosine of the output over the other 253 dimensions 0.961 with one scale, 0.995
with :data:`RESIDUAL_PER_GROUP` (0.996 adding ``a``, ``h``, ``f`` at 0.5). Per-group
max-abs scales leave no headroom over the calibration data: without outliers, held-out
tokens beyond a group's calibrated maximum saturate (max abs error 0.9 instead of 0.1), so
one scale is the default.

gelu_new against i-GELU
-----------------------
i-GELU approximates the exact (erf) GELU; GPT-2 uses the tanh form. The two differ by at
most 4.7e-4 (at ``|x| = 2.7``), 1 to 2% of an int8 step of ``f``: the float block with
erf instead of tanh has an output cosine of 1 - 1e-8 (max abs difference 1.4e-3) to the tanh
one, and the integer block's cosine is the same to 5 digits against either
(:func:`gpt2_layer_errors` with ``gelu="erf"``). The substitution is invisible beside int8
quantization, and the integer model uses i-GELU unchanged.

Measured (random GPT-2-like weights from :func:`~.reference.random_gpt2_weights`, N(0, 1)
inputs, calibrated on 6 sequences and compared on a held-out one; the worst of 3 seeds;
cosine of the dequantized int8 output with the float :func:`~.reference.gpt2_layer`):

===========  ========  =========  =======  ========  ========  ===========
H, heads, S  out cos   token min  max abs  max |out|  ctx cos  probs error
===========  ========  =========  =======  ========  ========  ===========
256, 4, 32   0.9996    0.9995     0.12     4.7       0.9985    0.017
768, 12, 16  0.9993    0.9991     0.32     8.5       0.9992    0.034
768, 12, 64  0.9989    0.9978     0.40     9.1       0.9973    0.036
===========  ========  =========  =======  ========  ========  ===========

The stage that loses most is attention's context, through its 7-bit probabilities. When
these figures were measured i-Softmax floored its codes, so a row of ``T`` keys lost about
``T / 256`` of probability mass (12% at ``T = 32``); in the last query row of H 256, 4
heads, the integer probabilities kept 0.44, 0.04 and 0 of the mass at ``T = 128, 256, 512``
(largest float probability 0.02, 0.01, 0.007), and the context's cosine fell to 0.98, 0.92,
0.78. i-Softmax now rounds, which keeps the mass on average, but diffuse attention stays
fatal at long contexts: every probability below half a step (``2**-8``) still comes out 0.
The block's output keeps cosine 0.9988 there only because random attention adds little to
the residual stream. For trained GPT-2 heads that spread attention over hundreds of keys,
more probability bits (or the context divided by the row's probability sum) would be
needed; this model keeps BERT's 7-bit convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..golden.gelu import gelu_constants, i_gelu
from ..golden.layernorm import LayerNormConstants, i_layernorm
from ..golden.matmul import matmul
from ..golden.requant import dyadic_multiplier, requantize
from ..golden.softmax import MAX_ROW_LEN, ExpConstants, exp_constants, i_softmax

# Besides the public names, the BERT model's integer steps and driver-side helpers: both
# models accumulate, requantize per group and fold per-column scales into LayerNorm alike.
from .quantize import (
    GROUP,
    MASK_BIAS,
    MATMUL_CONFIG,
    PROB_BITS,
    PROB_SCALE,
    CalibratedRange,
    LayerShape,
    QuantizedLinear,
    accumulate_int32,
    activation_scales,
    calibrated_ranges,
    check_percentiles,
    check_scales,
    check_smooth,
    compact_scale,
    cosine,
    dequantize,
    group_requants,
    integer_linear,
    quantize_activation,
    quantize_linear,
    requantize_groups,
    scaled_layernorm,
)
from .reference import (
    MASK_SCORE,
    _merge_heads,
    _split_heads,
    check_weights,
    gelu_erf,
    gelu_tanh,
    layer_norm,
    softmax,
)

__all__ = [
    "GPT2_ACTIVATIONS",
    "RESIDUAL_PER_GROUP",
    "LN_LOAD_SCALE",
    "MAX_CONTEXT",
    "gpt2_layer_trace",
    "calibrate_gpt2",
    "QuantizedGpt2Layer",
    "quantize_gpt2_layer",
    "Int8KVCache",
    "integer_gpt2_layer",
    "integer_gpt2_layer_trace",
    "integer_gpt2_decode_step",
    "gpt2_trace_scales",
    "GPT2_FLOAT_NAMES",
    "dequantize_gpt2_trace",
    "gpt2_layer_errors",
]

#: The activations that get a calibrated int8 scale (names of :func:`gpt2_layer_trace`).
GPT2_ACTIVATIONS = ("x", "a", "q", "k", "v", "ctx", "x1", "h", "f", "out")
#: Tensors that may have per-group scales (``smooth``): the residual stream (``x``, ``x1``,
#: ``out``), the LayerNorm outputs (``a``, ``h``) and the GELU output (``f``).
_SMOOTHABLE = ("x", "a", "x1", "h", "f", "out")
#: ``smooth`` for one int8 scale per 16-column group of the residual stream (outliers).
RESIDUAL_PER_GROUP = {"x": 1.0, "x1": 1.0, "out": 1.0}
#: The integer scale of the accumulator load that widens an int8 residual-stream tensor for
#: LayerNorm. i-LayerNorm gives bit-identical results for any power of two here (its
#: deviations are exact and its pre-shift absorbs the factor), so 1 costs nothing.
LN_LOAD_SCALE = 1
#: Longest sequence (cache plus new tokens): i-Softmax's longest row.
MAX_CONTEXT = MAX_ROW_LEN

_MAX_HEAD_DIM = 256  # keeps |scores| + |MASK_BIAS| within int32 (see quantize)
_PRESCALE_BITS = 8   # a prescaled LayerNorm input is at least 2**8 times finer than x_q
_INT32_HEADROOM = float(1 << 30)


# --------------------------------------------------------------------------------------
# The float reference, with every intermediate named
# --------------------------------------------------------------------------------------

def gpt2_layer_trace(x, w: dict, gelu: str = "tanh") -> dict[str, np.ndarray]:
    """Run :func:`~.reference.gpt2_layer` (prefill, causal) and return every named
    intermediate (float64).

    Names (``x`` is ``(..., S, H)``; heads-split tensors are ``(..., heads, S, S)``):
    ``x`` input; ``a`` LayerNorm 1 of ``x``; ``q``, ``k``, ``v`` its projections
    ``a w + b``; ``scores`` ``q_h k_h^T / sqrt(dh)`` before the causal mask; ``probs``
    Softmax of the masked scores; ``ctx`` the heads' ``probs v_h`` merged; ``attn``
    ``ctx wo + bo``; ``x1`` ``x + attn`` (the residual stream after attention); ``h``
    LayerNorm 2 of ``x1``; ``ffn_in`` ``h w1 + b1``; ``f`` its GELU; ``ffn_out``
    ``f w2 + b2``; ``out`` ``x1 + ffn_out`` (the block's output).

    Parameters
    ----------
    x : array (..., S, H)
    w : dict
        The block's weights (:mod:`~.reference`).
    gelu : str
        ``"tanh"``: GPT-2's ``gelu_new``, which :func:`~.reference.gpt2_layer` uses;
        ``"erf"``: the exact GELU that i-GELU approximates (to measure the difference).

    Raises
    ------
    ValueError
        For bad weights, input shape or ``gelu``.
    """
    hidden, heads, _ = check_weights(w)
    if gelu not in ("tanh", "erf"):
        raise ValueError(f"gelu must be 'tanh' or 'erf', not {gelu!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"x must be a numeric array, not {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim < 2 or x.shape[-1] != hidden:
        raise ValueError(f"x must have shape (..., S, {hidden}), not {x.shape}")
    eps = float(w["eps"])
    seq = x.shape[-2]
    t = {"x": x}
    t["a"] = layer_norm(x, w["ln1_g"], w["ln1_b"], eps)
    for n in "qkv":
        t[n] = t["a"] @ w[f"w{n}"] + w[f"b{n}"]
    qh, kh, vh = (_split_heads(t[n], heads) for n in "qkv")
    t["scores"] = qh @ np.swapaxes(kh, -1, -2) / math.sqrt(hidden // heads)
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    t["probs"] = softmax(np.where(causal, t["scores"], MASK_SCORE))
    t["ctx"] = _merge_heads(t["probs"] @ vh)
    t["attn"] = t["ctx"] @ w["wo"] + w["bo"]
    t["x1"] = x + t["attn"]
    t["h"] = layer_norm(t["x1"], w["ln2_g"], w["ln2_b"], eps)
    t["ffn_in"] = t["h"] @ w["w1"] + w["b1"]
    t["f"] = gelu_tanh(t["ffn_in"]) if gelu == "tanh" else gelu_erf(t["ffn_in"])
    t["ffn_out"] = t["f"] @ w["w2"] + w["b2"]
    t["out"] = t["x1"] + t["ffn_out"]
    return t


# --------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------

def _calibration_items(calibration_inputs) -> list:
    items = ([calibration_inputs] if isinstance(calibration_inputs, np.ndarray)
             else list(calibration_inputs))
    if not items:
        raise ValueError("calibration_inputs must hold at least one input")
    for item in items:
        if isinstance(item, tuple):
            raise ValueError("a GPT-2 calibration item is a whole causal sequence (..., S, H), "
                             "not a tuple (there is no padding mask)")
    return items


def calibrate_gpt2(w: dict, calibration_inputs, percentile: float | dict | None = None
                   ) -> dict[str, CalibratedRange]:
    """Activation ranges of a GPT-2 block from its float reference (:func:`gpt2_layer_trace`
    with ``gelu_new``).

    Parameters
    ----------
    w : dict
        The block's float weights.
    calibration_inputs : array or sequence of arrays
        One input ``(..., S, H)`` or several; each is a whole causal sequence (or a batch).
    percentile : float or dict, optional
        None: ``max |t|``. A number ``p`` in ``(0, 100]``: the ``p``-th percentile of
        ``|t|`` for every tensor except ``x``. A dict ``{name: p}`` for the named tensors.

    Returns
    -------
    dict
        ``{name: CalibratedRange}`` for the names of :data:`GPT2_ACTIVATIONS`.

    Raises
    ------
    ValueError
        For bad weights, inputs or percentiles, or a tensor that is 0 over all the data.
    """
    check_weights(w)
    pct = check_percentiles(percentile, GPT2_ACTIVATIONS)
    values = {name: [] for name in GPT2_ACTIVATIONS}
    for x in _calibration_items(calibration_inputs):
        trace = gpt2_layer_trace(x, w)
        for name in GPT2_ACTIVATIONS:
            t = np.abs(trace[name])
            values[name].append(t.reshape(-1, t.shape[-1]))
    return calibrated_ranges(values, pct)


# --------------------------------------------------------------------------------------
# The quantized block
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class QuantizedGpt2Layer(LayerShape):
    """Every integer constant (and, for reference, every scale) of a quantized GPT-2 block.

    Members
    -------
    heads : int
        Attention heads; ``head_dim = hidden / heads``.
    group : int
        Columns per scale group (16).
    wq, wk, wv, w1 : QuantizedLinear
        One accumulator scale per group.
    wo, w2 : QuantizedLinear
        One accumulator scale per group, and the residual multipliers ``r1`` (``r2``): one
        integer per group in ``[1, 32767]``, for ``x`` (``x1``).
    ln1_prescale, ln2_prescale : tuple of (m, e), or None
        None when ``x`` (``x1``) has one scale; else one dyadic multiplier per group,
        ``s_x[g] / c_ref``, applied as ``requantize(x_q, m, e, 32)`` before LayerNorm.
    ln1, ln2 : LayerNormConstants
        LayerNorm 1 (output ``a``) and 2 (output ``h``), per-group output scales folded
        into gamma and beta.
    q_requant, k_requant, v_requant : tuple of (m, e)
        One per group: ``c_g / s_q`` (``s_k``, ``s_v``).
    softmax : ExpConstants
        i-exp constants for the scores at ``s_q s_k / sqrt(dh)``.
    mask_bias : int
        Added to the scores of future keys (:data:`~.quantize.MASK_BIAS`).
    ctx_requant : (m, e)
        ``2**-7 s_v / s_ctx``.
    x1_requant : tuple of (m, e)
        One per group of ``wo``: ``c_o[g] / s_x1[g]``.
    gelu : tuple of GeluConstants
        One per group of ``w1``: input scale ``c_g`` of ``w1``.
    f_requant : tuple of (m, e)
        One per group of ``w1``: ``gelu[g].out_scale / s_f[g]``.
    out_requant : tuple of (m, e)
        One per group of ``w2``: ``c_2[g] / s_out[g]``.
    scales : dict
        ``{name: scale}`` for :data:`GPT2_ACTIVATIONS` (a float, or one per column) and
        ``ln1_in``, ``ln2_in`` (the LayerNorm inputs' scales).
    ranges : dict
        The calibrated ranges (``{name: CalibratedRange}``).
    options : dict
        ``smooth`` and ``percentile`` as given to :func:`quantize_gpt2_layer`.
    """

    heads: int
    group: int
    wq: QuantizedLinear
    wk: QuantizedLinear
    wv: QuantizedLinear
    wo: QuantizedLinear
    w1: QuantizedLinear
    w2: QuantizedLinear
    ln1_prescale: tuple | None
    ln1: LayerNormConstants
    q_requant: tuple
    k_requant: tuple
    v_requant: tuple
    softmax: ExpConstants
    mask_bias: int
    ctx_requant: tuple
    x1_requant: tuple
    ln2_prescale: tuple | None
    ln2: LayerNormConstants
    gelu: tuple
    f_requant: tuple
    out_requant: tuple
    scales: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def k_scale(self) -> float:
        """Scale of the int8 keys in the cache."""
        return self.scales["k"]

    @property
    def v_scale(self) -> float:
        """Scale of the int8 values in the cache."""
        return self.scales["v"]

    @property
    def residual1(self) -> tuple[int, ...]:
        """``r1``, one per group of ``wo``."""
        return tuple(int(r) for r in self.wo.residual)

    @property
    def residual2(self) -> tuple[int, ...]:
        """``r2``, one per group of ``w2``."""
        return tuple(int(r) for r in self.w2.residual)


def _groups(n: int, group: int) -> list[slice]:
    return [slice(c, min(c + group, n)) for c in range(0, n, group)]


def _ln_prescale(s_in: np.ndarray, group: int) -> tuple[tuple | None, float]:
    """LayerNorm input of an int8 tensor at per-column scales ``s_in``: (None, its scale)
    when uniform, else per group ``dyadic_multiplier(s_g / c_ref)`` and ``c_ref``."""
    s_g = np.array([s_in[c.start] for c in _groups(s_in.shape[0], group)])
    if np.all(s_g == s_g[0]):
        return None, float(s_g[0]) / LN_LOAD_SCALE
    # Fine enough that rounding x_q * s_g / c_ref costs nothing; coarse enough that every
    # int8 code times its ratio stays below 2**30.
    c_ref = max(float(s_g.min()) * 2.0 ** -_PRESCALE_BITS,
                128.0 * float(s_g.max()) / LN_LOAD_SCALE / _INT32_HEADROOM)
    return tuple(dyadic_multiplier(float(s) / LN_LOAD_SCALE / c_ref) for s in s_g), c_ref


def quantize_gpt2_layer(w: dict, calibration_inputs, *, group: int = GROUP, in_scale=None,
                        percentile: float | dict | None = None,
                        smooth: dict | None = None) -> QuantizedGpt2Layer:
    """Quantize a GPT-2 block for :func:`integer_gpt2_layer` and
    :func:`integer_gpt2_decode_step` (driver side).

    Parameters
    ----------
    w : dict
        The float block (weight dict of :func:`tessera.sw.models.reference.gpt2_layer`).
    calibration_inputs : array or sequence of arrays
        Float inputs of the block, whole sequences (see :func:`calibrate_gpt2`).
    group : int
        Output columns per scale group (16: the accelerator's requantization block).
    in_scale : float or ndarray (H,), optional
        Force the input scale (the previous block's ``out_scale`` when chaining blocks); by
        default calibrated (``max |x| / 127``, or per group with ``smooth["x"]``). A
        per-column scale must be uniform within each group.
    percentile : float or dict, optional
        Percentile calibration (see :func:`calibrate_gpt2`); max-abs by default.
    smooth : dict, optional
        ``{name: alpha}`` for ``x``, ``a``, ``x1``, ``h``, ``f``, ``out``: per-group int8
        scales ``range (r_g / r_max)**alpha / 127`` (see the module docstring).

    Returns
    -------
    QuantizedGpt2Layer

    Raises
    ------
    ValueError
        For bad weights, calibration data or options, a head size above 256, or scales that
        a fixed-width constant cannot represent (the message names which).
    """
    hidden, heads, _ = check_weights(w)
    smooth = check_smooth(smooth, _SMOOTHABLE)
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"group must be a positive integer, not {group!r}")
    dh = hidden // heads
    if dh > _MAX_HEAD_DIM:
        raise ValueError(f"the head size must be at most {_MAX_HEAD_DIM} (so that masked "
                         f"scores stay within int32), not {dh}")
    ranges = calibrate_gpt2(w, calibration_inputs, percentile)
    s = {name: activation_scales(ranges[name], group, smooth.get(name, 0.0))
         for name in GPT2_ACTIVATIONS}
    if in_scale is not None:
        s["x"] = check_scales(in_scale, "in_scale", hidden)
        for k, cols in enumerate(_groups(hidden, group)):
            if np.any(s["x"][cols] != s["x"][cols.start]):
                raise ValueError(f"in_scale must be uniform within each group of {group} "
                                 f"columns (group {k} is not)")
    for name in ("q", "k", "v", "ctx"):
        s[name] = float(s[name][0])

    ln1_prescale, c_ln1 = _ln_prescale(s["x"], group)
    ln1 = scaled_layernorm(w["ln1_g"], w["ln1_b"], s["a"])
    wq, wk, wv = (quantize_linear(w[f"w{n}"], w[f"b{n}"], s["a"], group) for n in "qkv")
    score_scale = s["q"] * s["k"] / math.sqrt(dh)
    softmax_consts = exp_constants(score_scale)
    if ((1 << 30) - 2 * dh * 127 * 128) * score_scale < 32 * math.log(2.0):
        raise ValueError(f"the score scale {score_scale:.3g} is so fine that MASK_BIAS "
                         f"does not drive masked probabilities to 0")
    wo = quantize_linear(w["wo"], w["bo"], s["ctx"], group, residual_scale=s["x"])
    ln2_prescale, c_ln2 = _ln_prescale(s["x1"], group)
    ln2 = scaled_layernorm(w["ln2_g"], w["ln2_b"], s["h"])
    w1 = quantize_linear(w["w1"], w["b1"], s["h"], group)
    gelu = tuple(gelu_constants(float(c)) for c in w1.acc_scale)
    w2 = quantize_linear(w["w2"], w["b2"], s["f"], group, residual_scale=s["x1"])
    f_requant = tuple(dyadic_multiplier(g.out_scale / float(s["f"][cols.start]))
                      for g, cols in zip(gelu, w1.groups, strict=True))
    scales = {name: compact_scale(v) for name, v in s.items()}
    scales["ln1_in"] = c_ln1
    scales["ln2_in"] = c_ln2
    return QuantizedGpt2Layer(
        heads=heads, group=group, wq=wq, wk=wk, wv=wv, wo=wo, w1=w1, w2=w2,
        ln1_prescale=ln1_prescale, ln1=ln1,
        q_requant=group_requants(wq, np.full(hidden, s["q"])),
        k_requant=group_requants(wk, np.full(hidden, s["k"])),
        v_requant=group_requants(wv, np.full(hidden, s["v"])),
        softmax=softmax_consts, mask_bias=MASK_BIAS,
        ctx_requant=dyadic_multiplier(PROB_SCALE * s["v"] / s["ctx"]),
        x1_requant=group_requants(wo, s["x1"]), ln2_prescale=ln2_prescale, ln2=ln2,
        gelu=gelu, f_requant=f_requant, out_requant=group_requants(w2, s["out"]),
        scales=scales, ranges=ranges,
        options={"smooth": smooth, "percentile": percentile})


# --------------------------------------------------------------------------------------
# The int8 KV cache
# --------------------------------------------------------------------------------------

@dataclass
class Int8KVCache:
    """The int8 keys and values of the tokens decoded so far, for one block and one
    sequence, at the block's fixed scales ``ql.k_scale`` and ``ql.v_scale``.

    Members
    -------
    k, v : ndarray (heads, T, dh) of int8
        Keys and values of positions ``0 .. T-1`` as :func:`integer_gpt2_decode_step`
        computed them (``T <= MAX_CONTEXT``).

    Raises
    ------
    ValueError
        If ``k`` or ``v`` is not an int8 array, they differ in shape, are not 3-D, or hold
        more than :data:`MAX_CONTEXT` positions.
    """

    k: np.ndarray
    v: np.ndarray

    def __post_init__(self):
        for name in ("k", "v"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.int8:
                got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"{name} must be an int8 array, not {got}")
        if self.k.ndim != 3 or self.k.shape != self.v.shape:
            raise ValueError(f"k and v must both be (heads, T, dh), not {self.k.shape} and "
                             f"{self.v.shape}")
        if self.k.shape[1] > MAX_CONTEXT:
            raise ValueError(f"the cache holds at most {MAX_CONTEXT} positions, not "
                             f"{self.k.shape[1]}")

    @classmethod
    def empty(cls, heads: int, head_dim: int) -> Int8KVCache:
        """An empty cache for ``heads`` heads of ``head_dim`` elements."""
        for name, n in (("heads", heads), ("head_dim", head_dim)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"{name} must be a positive integer, not {n!r}")
        z = np.zeros((int(heads), 0, int(head_dim)), dtype=np.int8)
        return cls(z, z.copy())

    @classmethod
    def for_layer(cls, ql: QuantizedGpt2Layer) -> Int8KVCache:
        """An empty cache shaped for ``ql``."""
        return cls.empty(ql.heads, ql.head_dim)

    def __len__(self) -> int:
        return int(self.k.shape[1])


# --------------------------------------------------------------------------------------
# The integer block
# --------------------------------------------------------------------------------------

def _ln_input(x_q: np.ndarray, prescale, group: int) -> np.ndarray:
    """The int8 tensor loaded into the accumulator for LayerNorm (times LN_LOAD_SCALE), and
    prescaled per group when its scales differ."""
    acc = x_q.astype(np.int32) * np.int32(LN_LOAD_SCALE)
    if prescale is None:
        return acc
    out = np.empty(acc.shape, dtype=np.int32)
    for cols, (m, e) in zip(_groups(acc.shape[-1], group), prescale, strict=True):
        out[:, cols] = requantize(np.ascontiguousarray(acc[:, cols]), m, e, 32)
    return out


def _causal_bias(n: int, offset: int, bias: int) -> np.ndarray | None:
    """(n, offset + n): 0 where query ``i`` (position ``offset + i``) may see key ``j``
    (``j <= offset + i``), ``bias`` elsewhere; None when every pair is allowed."""
    if n == 1:
        return None
    allowed = np.arange(offset + n)[None, :] <= offset + np.arange(n)[:, None]
    return np.where(allowed, 0, bias).astype(np.int32)


def _trace_one(x: np.ndarray, ql: QuantizedGpt2Layer, past_k: np.ndarray,
               past_v: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The block on ``n`` new tokens after ``past_k.shape[1]`` cached ones: the trace, and
    the keys and values of every position (heads, T, dh)."""
    n, heads, dh = x.shape[0], ql.heads, ql.head_dim
    t = {"x": x}
    t["ln1_in"] = _ln_input(x, ql.ln1_prescale, ql.group)
    t["a"] = i_layernorm(t["ln1_in"], ql.ln1)
    for name, lin, rq in (("q", ql.wq, ql.q_requant), ("k", ql.wk, ql.k_requant),
                          ("v", ql.wv, ql.v_requant)):
        t[f"{name}_acc"] = integer_linear(t["a"], lin)
        t[name] = requantize_groups(t[f"{name}_acc"], lin, rq, 8)
    keys = np.concatenate([past_k, t["k"].reshape(n, heads, dh).transpose(1, 0, 2)], axis=1)
    values = np.concatenate([past_v, t["v"].reshape(n, heads, dh).transpose(1, 0, 2)], axis=1)
    bias = _causal_bias(n, past_k.shape[1], ql.mask_bias)
    scores, probs, ctx_acc = [], [], []
    for h in range(heads):
        qk = matmul(t["q"][:, h * dh:(h + 1) * dh], keys[h].T, MATMUL_CONFIG)
        s = accumulate_int32(qk) if bias is None else accumulate_int32(qk, bias)
        # i-Softmax rounded to 7-bit codes at 2**-7: the array takes signed int8.
        p = i_softmax(s, ql.softmax, 8 - PROB_BITS).astype(np.int8)
        scores.append(s)
        probs.append(p)
        ctx_acc.append(accumulate_int32(matmul(p, values[h], MATMUL_CONFIG)))
    t["scores"] = np.stack(scores)
    t["probs"] = np.stack(probs)
    t["ctx_acc"] = np.concatenate(ctx_acc, axis=-1)
    t["ctx"] = requantize(t["ctx_acc"], *ql.ctx_requant, 8)
    t["res1"] = integer_linear(t["ctx"], ql.wo, x)
    t["x1"] = requantize_groups(t["res1"], ql.wo, ql.x1_requant, 8)
    t["ln2_in"] = _ln_input(t["x1"], ql.ln2_prescale, ql.group)
    t["h"] = i_layernorm(t["ln2_in"], ql.ln2)
    t["ffn_acc"] = integer_linear(t["h"], ql.w1)
    gelu = np.empty(t["ffn_acc"].shape, dtype=np.int32)
    f = np.empty(t["ffn_acc"].shape, dtype=np.int8)
    for cols, consts, (m, e) in zip(ql.w1.groups, ql.gelu, ql.f_requant, strict=True):
        gelu[:, cols], _ = i_gelu(np.ascontiguousarray(t["ffn_acc"][:, cols]), consts)
        f[:, cols] = requantize(np.ascontiguousarray(gelu[:, cols]), m, e, 8)
    t["gelu"] = gelu
    t["f"] = f
    t["res2"] = integer_linear(f, ql.w2, t["x1"])
    t["out"] = requantize_groups(t["res2"], ql.w2, ql.out_requant, 8)
    return t, keys, values


def _check_layer(ql) -> QuantizedGpt2Layer:
    if not isinstance(ql, QuantizedGpt2Layer):
        raise ValueError(f"ql must be a QuantizedGpt2Layer, not {type(ql).__name__}")
    return ql


def _check_int8(x_q, name: str) -> np.ndarray:
    if not isinstance(x_q, np.ndarray) or x_q.dtype != np.int8:
        got = x_q.dtype if isinstance(x_q, np.ndarray) else type(x_q).__name__
        raise ValueError(f"{name} must be an int8 array, not {got}")
    return x_q


def integer_gpt2_layer_trace(x_q: np.ndarray, ql: QuantizedGpt2Layer
                             ) -> dict[str, np.ndarray]:
    """Run :func:`integer_gpt2_layer` (prefill) and return every named intermediate.

    Names, dtypes and shapes (for ``x_q`` ``(S, H)``; a batch ``(B, S, H)`` adds a leading
    axis to each):

    ============  =====  =============  ====================================================
    name          dtype  shape          value
    ============  =====  =============  ====================================================
    ``x``         int8   (S, H)         input, at ``s_x``
    ``ln1_in``    int32  (S, H)         ``x`` widened (prescaled per group if ``s_x`` is)
    ``a``         int8   (S, H)         LayerNorm 1, at ``s_a``
    ``q_acc``     int32  (S, H)         ``a Wq + bq`` (``k_acc``, ``v_acc`` alike)
    ``q``         int8   (S, H)         requantized per group (``k``, ``v`` alike)
    ``scores``    int32  (heads, S, S)  ``q_h k_h^T`` + causal mask bias
    ``probs``     int8   (heads, S, S)  i-Softmax to 7 bits, 0..127 at ``2**-7``
    ``ctx_acc``   int32  (S, H)         the heads' ``probs v_h``, at ``2**-7 s_v``
    ``ctx``       int8   (S, H)         requantized to ``s_ctx``
    ``res1``      int32  (S, H)         ``ctx Wo + bo + x r1``
    ``x1``        int8   (S, H)         ``res1`` requantized per group to ``s_x1``
    ``ln2_in``    int32  (S, H)         ``x1`` widened (prescaled per group if ``s_x1`` is)
    ``h``         int8   (S, H)         LayerNorm 2, at ``s_h``
    ``ffn_acc``   int32  (S, F)         ``h W1 + b1``
    ``gelu``      int32  (S, F)         i-GELU per group (per-group scales)
    ``f``         int8   (S, F)         requantized per group to ``s_f``
    ``res2``      int32  (S, H)         ``f W2 + b2 + x1 r2``
    ``out``       int8   (S, H)         ``res2`` requantized per group to ``s_out``: the
                                        block's output
    ============  =====  =============  ====================================================

    :func:`gpt2_trace_scales` gives the scale of each.

    Parameters
    ----------
    x_q : ndarray (S, H) or (B, S, H) of int8
        The input at ``ql.in_scale``; ``S <= MAX_CONTEXT``.
    ql : QuantizedGpt2Layer

    Raises
    ------
    ValueError
        For a wrong dtype or shape of ``x_q``.
    """
    ql = _check_layer(ql)
    x_q = _check_int8(x_q, "x_q")
    if x_q.ndim not in (2, 3) or x_q.shape[-1] != ql.hidden or x_q.shape[-2] < 1:
        raise ValueError(f"x_q must have shape (S, {ql.hidden}) or (B, S, {ql.hidden}), "
                         f"not {x_q.shape}")
    if x_q.shape[-2] > MAX_CONTEXT:
        raise ValueError(f"sequences must have at most {MAX_CONTEXT} tokens, not "
                         f"{x_q.shape[-2]}")
    empty = Int8KVCache.for_layer(ql)
    if x_q.ndim == 2:
        return _trace_one(x_q, ql, empty.k, empty.v)[0]
    traces = [_trace_one(x_q[b], ql, empty.k, empty.v)[0] for b in range(x_q.shape[0])]
    return {name: np.stack([t[name] for t in traces]) for name in traces[0]}


def integer_gpt2_layer(x_q: np.ndarray, ql: QuantizedGpt2Layer) -> np.ndarray:
    """The integer GPT-2 block on whole sequences (prefill): int8 input at ``ql.in_scale``
    -> int8 output at ``ql.out_scale``. The dataflow is in the module docstring; only
    golden operators and wrapping int32 additions are used.

    Parameters
    ----------
    x_q : ndarray (S, H) or (B, S, H) of int8

    Returns
    -------
    ndarray of int8, the shape of ``x_q``

    Raises
    ------
    ValueError
        For a wrong dtype or shape of ``x_q``.
    """
    return integer_gpt2_layer_trace(x_q, ql)["out"]


def integer_gpt2_decode_step(x_new_q: np.ndarray, ql: QuantizedGpt2Layer,
                             cache: Int8KVCache) -> np.ndarray:
    """Decode new tokens of one sequence through the integer block with an int8 KV cache.

    The new tokens' int8 keys and values (at ``ql.k_scale``, ``ql.v_scale``) are appended
    to ``cache`` (in place; the cache is left as it was if this raises); each new token
    attends to every cached position and to the new tokens up to itself. The output is,
    bit for bit, that of :func:`integer_gpt2_layer` on the whole sequence so far (module
    docstring); ``n`` tokens on an empty cache are a prefill that also fills the cache.

    Parameters
    ----------
    x_new_q : ndarray (H,) or (n, H) of int8
        The new token's (or ``n`` new tokens') input at ``ql.in_scale``, at positions
        ``len(cache) ..``.
    ql : QuantizedGpt2Layer
    cache : Int8KVCache
        This block's cache for this sequence, updated in place.

    Returns
    -------
    ndarray of int8, the shape of ``x_new_q``
        The block's output for the new tokens, at ``ql.out_scale``.

    Raises
    ------
    ValueError
        For a wrong dtype or shape of ``x_new_q``, a cache of the wrong type or shape, or
        one that would grow beyond :data:`MAX_CONTEXT` positions.
    """
    ql = _check_layer(ql)
    x = _check_int8(x_new_q, "x_new_q")
    single = x.ndim == 1
    x = x[None, :] if single else x
    if x.ndim != 2 or x.shape[1] != ql.hidden or x.shape[0] < 1:
        raise ValueError(f"x_new_q must have shape ({ql.hidden},) or (n, {ql.hidden}), not "
                         f"{x_new_q.shape}")
    if not isinstance(cache, Int8KVCache):
        raise ValueError(f"cache must be an Int8KVCache, not {type(cache).__name__}")
    if cache.k.shape[0] != ql.heads or cache.k.shape[2] != ql.head_dim:
        raise ValueError(f"the cache holds {cache.k.shape[0]} heads of {cache.k.shape[2]}, "
                         f"the block {ql.heads} of {ql.head_dim}")
    if len(cache) + x.shape[0] > MAX_CONTEXT:
        raise ValueError(f"the cache holds {len(cache)} positions: {x.shape[0]} more would "
                         f"exceed {MAX_CONTEXT}")
    t, cache.k, cache.v = _trace_one(x, ql, cache.k, cache.v)
    return t["out"][0] if single else t["out"]


# --------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------

def gpt2_trace_scales(ql: QuantizedGpt2Layer) -> dict[str, float | np.ndarray]:
    """The float scale of each intermediate of :func:`integer_gpt2_layer_trace` (a number,
    or one per column). ``scores`` is given at ``s_q s_k / sqrt(dh)``, so that it
    dequantizes to ``q_h k_h^T / sqrt(dh)``."""
    s = ql.scales
    return {
        "x": s["x"], "ln1_in": s["ln1_in"], "a": s["a"],
        "q_acc": ql.wq.acc_scales(), "q": s["q"], "k_acc": ql.wk.acc_scales(), "k": s["k"],
        "v_acc": ql.wv.acc_scales(), "v": s["v"],
        "scores": s["q"] * s["k"] / math.sqrt(ql.head_dim), "probs": PROB_SCALE,
        "ctx_acc": PROB_SCALE * s["v"], "ctx": s["ctx"],
        "res1": compact_scale(ql.wo.acc_scales()), "x1": s["x1"], "ln2_in": s["ln2_in"],
        "h": s["h"], "ffn_acc": ql.w1.acc_scales(),
        "gelu": np.repeat([g.out_scale for g in ql.gelu], ql.w1.group)[: ql.ffn],
        "f": s["f"], "res2": compact_scale(ql.w2.acc_scales()), "out": s["out"],
    }


#: The float reference's intermediate (:func:`gpt2_layer_trace`) that each integer
#: intermediate approximates.
GPT2_FLOAT_NAMES = {"x": "x", "ln1_in": "x", "a": "a", "q_acc": "q", "q": "q", "k_acc": "k",
                    "k": "k", "v_acc": "v", "v": "v", "scores": "scores", "probs": "probs",
                    "ctx_acc": "ctx", "ctx": "ctx", "res1": "x1", "x1": "x1",
                    "ln2_in": "x1", "h": "h", "ffn_acc": "ffn_in", "gelu": "f", "f": "f",
                    "res2": "out", "out": "out"}


def dequantize_gpt2_trace(trace: dict, ql: QuantizedGpt2Layer) -> dict[str, np.ndarray]:
    """Every intermediate of :func:`integer_gpt2_layer_trace` in float64 (same names)."""
    scales = gpt2_trace_scales(ql)
    return {name: dequantize(v, scales[name]) for name, v in trace.items()}


def gpt2_layer_errors(x, w: dict, ql: QuantizedGpt2Layer, gelu: str = "tanh"
                      ) -> dict[str, dict]:
    """Stage-by-stage accuracy of the integer block against the float reference.

    The float input ``x`` is quantized at ``ql.in_scale``, run through
    :func:`integer_gpt2_layer_trace`, dequantized and compared with
    :func:`gpt2_layer_trace` of the same float ``x`` (with ``gelu``: ``"tanh"`` is GPT-2;
    ``"erf"`` isolates the quantization error from the GELU substitution). ``scores`` and
    ``probs`` are compared over the causally allowed (query, key) pairs only.

    Returns
    -------
    dict
        ``{name: {"cosine": c, "max_abs": e, "rms": r, "token_cosine_min": t}}`` for each
        integer intermediate: cosine of the whole tensor, largest and RMS absolute error,
        and (for the ``(S, X)`` tensors) the smallest cosine of one token's vector.

    Raises
    ------
    ValueError
        For bad weights, input shapes or ``gelu``.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = gpt2_layer_trace(x, w, gelu)
    deq = dequantize_gpt2_trace(
        integer_gpt2_layer_trace(quantize_activation(x, ql.in_scale), ql), ql)
    seq = x.shape[-2]
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    result = {}
    for name, value in deq.items():
        r = ref[GPT2_FLOAT_NAMES[name]]
        if name in ("scores", "probs"):
            keep = np.broadcast_to(causal, r.shape)
            value, r = value[keep], r[keep]
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
