"""Float64 references of a BERT encoder layer and a GPT-2 block, in numpy.

These are the "what it should compute" against which the integer model of
:mod:`tessera.sw.models.quantize` (and later the accelerator) is measured. They follow the
Hugging Face implementations operation for operation:

* :func:`bert_layer`: ``BertLayer`` (post-LayerNorm), exact-erf GELU, eps from the weights;
* :func:`gpt2_layer`: ``GPT2Block`` (pre-LayerNorm, causal), GPT-2's ``gelu_new`` (the tanh
  approximation); :func:`gpt2_decode_step` decodes token by token with a :class:`KVCache`.

Weights
-------
A layer's weights are a dict with these keys (``H`` hidden size, ``F`` feed-forward size);
matrices are stored ``(in, out)`` so that ``y = x @ w + b`` (torch's ``Linear.weight`` is
``(out, in)``: transpose it when importing):

==========================  ========  ==================================================
key                         shape     meaning
==========================  ========  ==================================================
``wq``, ``wk``, ``wv``      (H, H)    query, key, value projections
``bq``, ``bk``, ``bv``      (H,)      their biases
``wo``, ``bo``              (H, H),   attention output projection
                            (H,)
``ln1_g``, ``ln1_b``        (H,)      first LayerNorm (BERT: after attention + residual;
                                      GPT-2: before attention, ``ln_1``)
``w1``, ``b1``              (H, F),   feed-forward up projection (BERT
                            (F,)      ``intermediate.dense``, GPT-2 ``mlp.c_fc``)
``w2``, ``b2``              (F, H),   feed-forward down projection (BERT
                            (H,)      ``output.dense``, GPT-2 ``mlp.c_proj``)
``ln2_g``, ``ln2_b``        (H,)      second LayerNorm
``heads``                   int       number of attention heads (``H % heads == 0``)
``eps``                     float     LayerNorm epsilon (BERT 1e-12, GPT-2 1e-5)
==========================  ========  ==================================================

Attention masks
---------------
``mask`` is boolean-like, true (or 1) where attention is allowed. Either a key mask with the
shape of ``x`` without its last axis (``(S,)`` or ``(B, S)``: the tokenizer's attention mask;
padding keys are ignored by every query) or a full mask ``(..., S, S)`` (query, key).
Disallowed scores are replaced by ``MASK_SCORE`` (-1e30) before the Softmax, which gives
them a weight of exactly 0 (a row with no allowed key becomes uniform, as in Hugging Face).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WEIGHT_KEYS",
    "MATRIX_KEYS",
    "MASK_SCORE",
    "check_weights",
    "layer_norm",
    "gelu_erf",
    "gelu_tanh",
    "softmax",
    "attention_keep",
    "bert_layer",
    "bert_layer_trace",
    "gpt2_layer",
    "KVCache",
    "gpt2_decode_step",
    "random_bert_weights",
    "random_gpt2_weights",
]

#: The array entries of a layer's weight dict (besides ``heads`` and ``eps``).
WEIGHT_KEYS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_g", "ln1_b",
               "w1", "b1", "w2", "b2", "ln2_g", "ln2_b")
#: The matrices among them, stored (in, out).
MATRIX_KEYS = ("wq", "wk", "wv", "wo", "w1", "w2")
#: Score given to masked (query, key) pairs: exp of it is exactly 0 in float64.
MASK_SCORE = -1e30

_erf = np.frompyfunc(math.erf, 1, 1)


def check_weights(w: dict) -> tuple[int, int, int]:
    """Check a layer's weight dict and return ``(hidden, heads, ffn)``.

    Raises
    ------
    ValueError
        Naming the missing key, the array with the wrong shape, or a bad ``heads`` / ``eps``.
    """
    if not isinstance(w, dict):
        raise ValueError(f"weights must be a dict, not {type(w).__name__}")
    missing = [k for k in (*WEIGHT_KEYS, "heads", "eps") if k not in w]
    if missing:
        raise ValueError(f"weights are missing {', '.join(missing)}")
    wq = np.asarray(w["wq"])
    if wq.ndim != 2 or wq.shape[0] != wq.shape[1]:
        raise ValueError(f"wq must be a square (H, H) matrix, not {wq.shape}")
    hidden = wq.shape[0]
    w1 = np.asarray(w["w1"])
    if w1.ndim != 2:
        raise ValueError(f"w1 must be a (H, F) matrix, not {w1.shape}")
    ffn = w1.shape[1]
    expected = {"wq": (hidden, hidden), "wk": (hidden, hidden), "wv": (hidden, hidden),
                "wo": (hidden, hidden), "w1": (hidden, ffn), "w2": (ffn, hidden),
                "b1": (ffn,)}
    for key in WEIGHT_KEYS:
        shape = np.shape(w[key])
        want = expected.get(key, (hidden,))
        if shape != want:
            raise ValueError(f"{key} must have shape {want}, not {shape}")
        if not np.all(np.isfinite(w[key])):
            raise ValueError(f"{key} must be finite")
    heads = w["heads"]
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
        raise ValueError(f"heads must be a positive integer, not {heads!r}")
    if hidden % heads:
        raise ValueError(f"the hidden size {hidden} must be a multiple of heads ({heads})")
    eps = w["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps >= 0:
        raise ValueError(f"eps must be a nonnegative number, not {eps!r}")
    return hidden, int(heads), ffn


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * gamma + beta`` (biased
    variance, as torch)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU, ``x * (1 + erf(x / sqrt 2)) / 2`` (BERT's ``"gelu"``)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GPT-2's ``gelu_new``:
    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x**3)))``."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max subtracted first)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _as_float(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, not {x.dtype}")
    return x.astype(np.float64)


def _check_input(x, hidden: int) -> np.ndarray:
    x = _as_float(x, "x")
    if x.ndim < 2 or x.shape[-1] != hidden:
        raise ValueError(f"x must have shape (..., S, {hidden}), not {x.shape}")
    return x


def attention_keep(mask, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """The boolean mask ``(..., 1, S, S)`` (heads axis of length 1) of allowed (query, key)
    pairs, from a key mask ``x_shape[:-1]`` or a full mask ``(..., S, S)``; None if
    ``mask`` is None.

    Raises
    ------
    ValueError
        If the mask has neither shape.
    """
    if mask is None:
        return None
    mask = np.asarray(mask).astype(bool)
    seq = x_shape[-2]
    if mask.shape == tuple(x_shape[:-1]):
        return mask[..., None, None, :]  # (..., heads, query, key)
    if mask.ndim >= 2 and mask.shape[-2:] == (seq, seq):
        return mask[..., None, :, :]
    raise ValueError(f"mask must have shape {tuple(x_shape[:-1])} (keys) or (..., {seq}, "
                     f"{seq}) (queries, keys), not {mask.shape}")


def _split_heads(t: np.ndarray, heads: int) -> np.ndarray:
    # (..., S, H) -> (..., heads, S, dh)
    *lead, seq, hidden = t.shape
    return np.swapaxes(t.reshape(*lead, seq, heads, hidden // heads), -2, -3)


def _merge_heads(t: np.ndarray) -> np.ndarray:
    # (..., heads, S, dh) -> (..., S, H)
    t = np.swapaxes(t, -2, -3)
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


def bert_layer_trace(x, w: dict, mask=None) -> dict[str, np.ndarray]:
    """Run :func:`bert_layer` and return every named intermediate (float64).

    Names (``x`` is ``(..., S, H)``; heads-split tensors are ``(..., heads, S, S)``):

    ``x`` input; ``q``, ``k``, ``v`` projections ``x w + b`` ``(..., S, H)``;
    ``scores`` ``q_h k_h^T / sqrt(dh)`` before masking; ``probs`` Softmax of the masked
    scores; ``ctx`` the heads' ``probs v_h`` merged ``(..., S, H)``; ``attn``
    ``ctx wo + bo``; ``res1`` ``x + attn`` (input of LayerNorm 1); ``h1`` its LayerNorm;
    ``ffn_in`` ``h1 w1 + b1``; ``f`` its GELU; ``ffn_out`` ``f w2 + b2``; ``res2``
    ``h1 + ffn_out``; ``out`` its LayerNorm (the layer's output).

    Parameters
    ----------
    x : array (..., S, H)
    w : dict
        The layer's weights (see the module docstring).
    mask : array, optional
        Key mask ``x.shape[:-1]`` or full mask ``(..., S, S)``; true where allowed.

    Raises
    ------
    ValueError
        For bad weights, input shape or mask shape.
    """
    hidden, heads, _ = check_weights(w)
    x = _check_input(x, hidden)
    keep = attention_keep(mask, x.shape)
    eps = float(w["eps"])
    t = {"x": x}
    t["q"] = x @ w["wq"] + w["bq"]
    t["k"] = x @ w["wk"] + w["bk"]
    t["v"] = x @ w["wv"] + w["bv"]
    qh, kh, vh = (_split_heads(t[n], heads) for n in ("q", "k", "v"))
    t["scores"] = qh @ np.swapaxes(kh, -1, -2) / math.sqrt(hidden // heads)
    scores = t["scores"] if keep is None else np.where(keep, t["scores"], MASK_SCORE)
    t["probs"] = softmax(scores)
    t["ctx"] = _merge_heads(t["probs"] @ vh)
    t["attn"] = t["ctx"] @ w["wo"] + w["bo"]
    t["res1"] = x + t["attn"]
    t["h1"] = layer_norm(t["res1"], w["ln1_g"], w["ln1_b"], eps)
    t["ffn_in"] = t["h1"] @ w["w1"] + w["b1"]
    t["f"] = gelu_erf(t["ffn_in"])
    t["ffn_out"] = t["f"] @ w["w2"] + w["b2"]
    t["res2"] = t["h1"] + t["ffn_out"]
    t["out"] = layer_norm(t["res2"], w["ln2_g"], w["ln2_b"], eps)
    return t


def bert_layer(x, w: dict, mask=None) -> np.ndarray:
    """One BERT encoder layer (Hugging Face ``BertLayer``, post-LayerNorm), in float64.

    ``Q, K, V = x W + b``; per head ``softmax(Q_h K_h^T / sqrt(dh) + mask) V_h``;
    ``h = LN(x + ctx Wo + bo)``; ``out = LN(h + gelu_erf(h W1 + b1) W2 + b2)``.

    Parameters
    ----------
    x : array (..., S, H)
        Hidden states (any leading batch axes).
    w : dict
        The layer's weights (see the module docstring); ``eps`` is LayerNorm's epsilon.
    mask : array, optional
        Key mask ``x.shape[:-1]`` or full mask ``(..., S, S)``; true where allowed.

    Returns
    -------
    ndarray (..., S, H) of float64

    Raises
    ------
    ValueError
        For bad weights, input shape or mask shape.
    """
    return bert_layer_trace(x, w, mask)["out"]


# --------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------

def _causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, offset: int) -> np.ndarray:
    """``q`` (..., heads, n, dh) at absolute positions ``offset ..``; ``k``, ``v``
    (..., heads, T, dh) at positions ``0 .. T-1``; query ``i`` sees keys ``j <= offset + i``."""
    n, total = q.shape[-2], k.shape[-2]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    allowed = np.arange(total)[None, :] <= offset + np.arange(n)[:, None]
    return softmax(np.where(allowed, scores, MASK_SCORE)) @ v


def _gpt2_mlp(a: np.ndarray, w: dict) -> np.ndarray:
    h = layer_norm(a, w["ln2_g"], w["ln2_b"], float(w["eps"]))
    return gelu_tanh(h @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]


def gpt2_layer(x, w: dict) -> np.ndarray:
    """One GPT-2 block (Hugging Face ``GPT2Block``), pre-LayerNorm, causal, in float64.

    ``a = x + Attn(LN1(x)) Wo + bo`` with causal self-attention (query ``i`` sees keys
    ``j <= i``); ``out = a + gelu_tanh(LN2(a) W1 + b1) W2 + b2``. GELU is GPT-2's
    ``gelu_new``, the tanh approximation (:func:`gelu_tanh`), not the exact erf form.
    GPT-2's fused ``attn.c_attn`` (H, 3H) splits into ``wq | wk | wv`` in that order
    (Conv1D weights are already (in, out)).

    Parameters
    ----------
    x : array (..., S, H)
    w : dict
        The block's weights (see the module docstring; ``eps`` is 1e-5 for GPT-2).

    Returns
    -------
    ndarray (..., S, H) of float64
    """
    hidden, heads, _ = check_weights(w)
    x = _check_input(x, hidden)
    h = layer_norm(x, w["ln1_g"], w["ln1_b"], float(w["eps"]))
    qh, kh, vh = (_split_heads(h @ w[f"w{n}"] + w[f"b{n}"], heads) for n in "qkv")
    a = x + _merge_heads(_causal_attention(qh, kh, vh, 0)) @ w["wo"] + w["bo"]
    return a + _gpt2_mlp(a, w)


@dataclass
class KVCache:
    """The keys and values of the tokens decoded so far, for one layer and one sequence.

    Members
    -------
    k, v : ndarray (heads, T, dh) of float64
        Keys and values of positions ``0 .. T-1`` (after the projection biases).
    """

    k: np.ndarray
    v: np.ndarray

    def __post_init__(self):
        if self.k.ndim != 3 or self.k.shape != self.v.shape:
            raise ValueError(f"k and v must both be (heads, T, dh), not {self.k.shape} and "
                             f"{self.v.shape}")

    @classmethod
    def empty(cls, heads: int, head_dim: int) -> KVCache:
        """An empty cache for ``heads`` heads of ``head_dim`` elements."""
        for name, n in (("heads", heads), ("head_dim", head_dim)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"{name} must be a positive integer, not {n!r}")
        z = np.zeros((heads, 0, head_dim))
        return cls(z, z.copy())

    def __len__(self) -> int:
        return int(self.k.shape[1])


def gpt2_decode_step(x_new, w: dict, cache: KVCache) -> np.ndarray:
    """Decode new tokens of one sequence through a GPT-2 block with a KV cache.

    The keys and values of the new tokens are appended to ``cache`` (in place); each new
    token attends to every cached token and to the new tokens up to itself. Decoding a
    sequence one token at a time gives :func:`gpt2_layer` of the whole sequence.

    Parameters
    ----------
    x_new : array (H,) or (n, H)
        The new token's (or ``n`` new tokens') hidden state, at positions
        ``len(cache) ..``.
    w : dict
        The block's weights.
    cache : KVCache
        This layer's cache, updated in place.

    Returns
    -------
    ndarray of float64, the shape of ``x_new``
        The block's output for the new tokens.

    Raises
    ------
    ValueError
        For a bad shape, or a cache whose heads or head size do not match the weights.
    """
    hidden, heads, _ = check_weights(w)
    x = _as_float(x_new, "x_new")
    single = x.ndim == 1
    x = x[None, :] if single else x
    if x.ndim != 2 or x.shape[1] != hidden:
        raise ValueError(f"x_new must have shape ({hidden},) or (n, {hidden}), not "
                         f"{np.shape(x_new)}")
    if not isinstance(cache, KVCache):
        raise ValueError(f"cache must be a KVCache, not {type(cache).__name__}")
    if cache.k.shape[0] != heads or cache.k.shape[2] != hidden // heads:
        raise ValueError(f"the cache holds {cache.k.shape[0]} heads of {cache.k.shape[2]}, "
                         f"the weights {heads} of {hidden // heads}")
    offset = len(cache)
    h = layer_norm(x, w["ln1_g"], w["ln1_b"], float(w["eps"]))
    qh, kh, vh = (_split_heads(h @ w[f"w{n}"] + w[f"b{n}"], heads) for n in "qkv")
    cache.k = np.concatenate([cache.k, kh], axis=1)
    cache.v = np.concatenate([cache.v, vh], axis=1)
    a = x + _merge_heads(_causal_attention(qh, cache.k, cache.v, offset)) @ w["wo"] + w["bo"]
    out = a + _gpt2_mlp(a, w)
    return out[0] if single else out


# --------------------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------------------

def _random_weights(hidden: int, heads: int, ffn: int, rng: np.random.Generator,
                    std: float, eps: float) -> dict:
    for name, n in (("hidden", hidden), ("heads", heads), ("ffn", ffn)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive integer, not {n!r}")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, not {type(rng).__name__}")
    if not std > 0:
        raise ValueError(f"std must be positive, not {std!r}")
    shapes = {"wq": (hidden, hidden), "wk": (hidden, hidden), "wv": (hidden, hidden),
              "wo": (hidden, hidden), "w1": (hidden, ffn), "w2": (ffn, hidden)}
    w = {}
    for key in WEIGHT_KEYS:
        if key in shapes:
            w[key] = rng.normal(0.0, std, shapes[key])
        elif key.endswith("_g"):
            w[key] = 1.0 + rng.normal(0.0, 0.1, hidden)  # trained gammas spread around 1
        elif key == "b1":
            w[key] = rng.normal(0.0, 0.05, ffn)
        else:
            w[key] = rng.normal(0.0, 0.05, hidden)  # small biases and betas
    w["heads"] = int(heads)
    w["eps"] = float(eps)
    return w


def random_bert_weights(hidden: int, heads: int, ffn: int, rng: np.random.Generator,
                        std: float = 0.04, eps: float = 1e-12) -> dict:
    """Random BERT-layer weights with the magnitudes of a trained model.

    Matrices ``N(0, std)`` (trained BERTs have 0.02 to 0.05; 0.04 gives attention that is
    neither flat nor one-hot on unit-variance inputs), biases and LayerNorm betas
    ``N(0, 0.05)``, LayerNorm gammas ``1 + N(0, 0.1)``.

    Parameters
    ----------
    hidden, heads, ffn : int
        Hidden size (a multiple of ``heads``), number of heads, feed-forward size.
    rng : numpy.random.Generator
    std : float
        Standard deviation of the matrices.
    eps : float
        LayerNorm epsilon (BERT's 1e-12).

    Returns
    -------
    dict
        The weight dict of :func:`bert_layer`.

    Raises
    ------
    ValueError
        For nonpositive sizes, ``hidden % heads != 0`` or a bad ``rng``.
    """
    return _random_weights(hidden, heads, ffn, rng, std, eps)


def random_gpt2_weights(hidden: int, heads: int, ffn: int | None = None,
                        rng: np.random.Generator | None = None, std: float = 0.04,
                        eps: float = 1e-5) -> dict:
    """Random GPT-2-block weights with the magnitudes of a trained model.

    As :func:`random_bert_weights`, with GPT-2's defaults: ``ffn = 4 * hidden`` and
    LayerNorm epsilon 1e-5.

    Raises
    ------
    ValueError
        For nonpositive sizes, ``hidden % heads != 0`` or a bad ``rng``.
    """
    if rng is None:
        raise ValueError("rng must be a numpy Generator, not None")
    return _random_weights(hidden, heads, 4 * hidden if ffn is None else ffn, rng, std, eps)
