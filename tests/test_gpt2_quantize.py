"""The integer GPT-2 block: prefill and int8-KV-cache decoding, its dataflow, accuracy and
argument checks.

Fast tests (numpy only, no simulator).
"""

from __future__ import annotations

import numpy as np
import pytest

from tessera.sw.golden.gelu import i_gelu
from tessera.sw.golden.layernorm import i_layernorm, layernorm_constants
from tessera.sw.golden.matmul import wrap
from tessera.sw.golden.requant import requantize
from tessera.sw.golden.softmax import i_softmax
from tessera.sw.models import gpt2_quantize as G
from tessera.sw.models import quantize as Q
from tessera.sw.models import reference as R


@pytest.fixture(scope="module")
def gpt2():
    """Random GPT-2-shaped block (hidden 256, 4 heads, ffn 1024), calibration and test data."""
    rng = np.random.default_rng(1)
    w = R.random_gpt2_weights(256, 4, rng=rng)
    calib = [rng.normal(size=(32, 256)) for _ in range(6)]
    x = rng.normal(size=(32, 256))
    return w, calib, x


@pytest.fixture(scope="module")
def gpt2_q(gpt2):
    w, calib, _ = gpt2
    return G.quantize_gpt2_layer(w, calib)


def _outlier_data(seed: int = 0):
    """Hidden 256 with three residual dimensions offset by 30, -50 and 80 (GPT-2's massive
    activations, roughly)."""
    rng = np.random.default_rng(seed)
    w = R.random_gpt2_weights(256, 4, rng=rng)
    dims, offsets = [3, 77, 200], np.array([30.0, -50.0, 80.0])

    def draw():
        x = rng.normal(size=(32, 256))
        x[:, dims] += offsets
        return x

    return w, [draw() for _ in range(6)], draw(), dims


# --------------------------------------------------------------------------------------
# The float trace
# --------------------------------------------------------------------------------------

def test_float_trace_is_the_reference(gpt2):
    w, _, x = gpt2
    t = G.gpt2_layer_trace(x, w)
    np.testing.assert_allclose(t["out"], R.gpt2_layer(x, w), atol=1e-12, rtol=0)
    np.testing.assert_allclose(t["probs"].sum(-1), 1.0, atol=1e-12)
    assert np.all(t["probs"][..., np.triu_indices(32, 1)[0], np.triu_indices(32, 1)[1]] == 0)
    batch = G.gpt2_layer_trace(np.stack([x, x[::-1]]), w)
    np.testing.assert_allclose(batch["out"][1], R.gpt2_layer(x[::-1], w), atol=1e-12)
    erf = G.gpt2_layer_trace(x, w, gelu="erf")
    np.testing.assert_allclose(erf["x1"], t["x1"], atol=1e-12)  # before the GELU: equal
    assert 0 < np.abs(erf["f"] - t["f"]).max() < 5e-4
    with pytest.raises(ValueError, match="gelu must be 'tanh' or 'erf', not 'exact'"):
        G.gpt2_layer_trace(x, w, gelu="exact")


# --------------------------------------------------------------------------------------
# The integer block
# --------------------------------------------------------------------------------------

def test_integer_block_is_integer_only(gpt2, gpt2_q):
    _, _, x = gpt2
    ql = gpt2_q
    x_q = Q.quantize_activation(x, ql.in_scale)
    t = G.integer_gpt2_layer_trace(x_q, ql)
    int8 = {"x", "a", "q", "k", "v", "probs", "ctx", "x1", "h", "f", "out"}
    assert set(t) == set(G.GPT2_FLOAT_NAMES) == set(G.gpt2_trace_scales(ql))
    for name, value in t.items():
        assert value.dtype == (np.int8 if name in int8 else np.int32), name
    assert t["probs"].min() >= 0 and t["probs"].max() <= 127
    future = np.triu(np.ones((32, 32), dtype=bool), 1)
    assert np.all(t["probs"][:, future] == 0)  # future keys: exactly 0
    assert np.all(t["scores"][:, future] < Q.MASK_BIAS // 2)
    np.testing.assert_array_equal(G.integer_gpt2_layer(x_q, ql), t["out"])
    # Every constant the hardware receives is an integer of its field's width.
    pairs = (*ql.q_requant, *ql.k_requant, *ql.v_requant, ql.ctx_requant, *ql.x1_requant,
             *ql.f_requant, *ql.out_requant)
    for m, e in pairs:
        assert isinstance(m, int) and isinstance(e, int) and 0 <= m < 2**31 and 0 <= e <= 63
    assert all(isinstance(r, int) and 1 <= r <= Q.RESIDUAL_MAX
               for r in (*ql.residual1, *ql.residual2))
    assert len(ql.residual1) == len(ql.residual2) == 256 // 16  # one per column group
    for lin in (ql.wq, ql.wk, ql.wv, ql.wo, ql.w1, ql.w2):
        assert lin.weight.dtype == np.int8 and lin.bias.dtype == np.int32
        assert lin.group == 16
    assert ql.ln1_prescale is None and ql.ln2_prescale is None  # one residual scale
    assert ql.mask_bias == Q.MASK_BIAS
    # A batch gives the same as its sequences one by one.
    out = G.integer_gpt2_layer(np.stack([x_q, x_q[::-1]]), ql)
    np.testing.assert_array_equal(out[0], t["out"])
    np.testing.assert_array_equal(out[1], G.integer_gpt2_layer(x_q[::-1].copy(), ql))


@pytest.mark.parametrize("per_group", [False, True])
def test_integer_block_follows_the_documented_dataflow(gpt2, per_group):
    """Recompute every stage from the previous one with the module docstring's formulas."""
    w, calib, x = gpt2
    smooth = {**G.RESIDUAL_PER_GROUP, "a": 0.5, "h": 0.5, "f": 0.5} if per_group else None
    ql = G.quantize_gpt2_layer(w, calib, smooth=smooth)
    assert (ql.ln1_prescale is not None) == per_group
    assert (ql.ln2_prescale is not None) == per_group
    t = G.integer_gpt2_layer_trace(Q.quantize_activation(x, ql.in_scale), ql)
    i64 = np.int64
    groups = [slice(c, c + 16) for c in range(0, 256, 16)]

    def acc32(v):
        return wrap(v, 32).astype(np.int32)

    def grouped(v, pairs, bits, cols=groups):
        return np.concatenate([requantize(np.ascontiguousarray(v[:, c]), m, e, bits)
                               for c, (m, e) in zip(cols, pairs, strict=True)], 1)

    def ln_input(v, prescale):
        v = v.astype(np.int32) * G.LN_LOAD_SCALE
        return v if prescale is None else grouped(v, prescale, 32)

    np.testing.assert_array_equal(t["ln1_in"], ln_input(t["x"], ql.ln1_prescale))
    np.testing.assert_array_equal(t["a"], i_layernorm(t["ln1_in"], ql.ln1))
    for n in "qkv":
        lin = getattr(ql, f"w{n}")
        np.testing.assert_array_equal(t[f"{n}_acc"], acc32(t["a"].astype(i64) @ lin.weight
                                                           + lin.bias))
        np.testing.assert_array_equal(t[n], grouped(t[f"{n}_acc"], getattr(ql, f"{n}_requant"),
                                                    8))
    dh = ql.head_dim
    bias = np.where(np.tril(np.ones((32, 32), dtype=bool)), 0, Q.MASK_BIAS)
    for h in range(ql.heads):
        c = slice(h * dh, (h + 1) * dh)
        s = acc32(t["q"][:, c].astype(i64) @ t["k"][:, c].T + bias)
        np.testing.assert_array_equal(t["scores"][h], s)
        np.testing.assert_array_equal(t["probs"][h], i_softmax(s, ql.softmax, 1))
        np.testing.assert_array_equal(t["ctx_acc"][:, c],
                                      acc32(t["probs"][h].astype(i64) @ t["v"][:, c]))
    np.testing.assert_array_equal(t["ctx"], requantize(t["ctx_acc"], *ql.ctx_requant, 8))
    res1 = acc32(t["ctx"].astype(i64) @ ql.wo.weight + ql.wo.bias
                 + t["x"].astype(i64) * ql.wo.residual_columns())
    np.testing.assert_array_equal(t["res1"], res1)
    np.testing.assert_array_equal(t["x1"], grouped(res1, ql.x1_requant, 8))
    np.testing.assert_array_equal(t["ln2_in"], ln_input(t["x1"], ql.ln2_prescale))
    np.testing.assert_array_equal(t["h"], i_layernorm(t["ln2_in"], ql.ln2))
    ffn = acc32(t["h"].astype(i64) @ ql.w1.weight + ql.w1.bias)
    np.testing.assert_array_equal(t["ffn_acc"], ffn)
    for c, g, (m, e) in zip(ql.w1.groups, ql.gelu, ql.f_requant, strict=True):
        gl, _ = i_gelu(np.ascontiguousarray(ffn[:, c]), g)
        np.testing.assert_array_equal(t["f"][:, c], requantize(gl, m, e, 8))
    res2 = acc32(t["f"].astype(i64) @ ql.w2.weight + ql.w2.bias
                 + t["x1"].astype(i64) * ql.w2.residual_columns())
    np.testing.assert_array_equal(t["res2"], res2)
    np.testing.assert_array_equal(t["out"], grouped(res2, ql.out_requant, 8))


def test_layernorm_load_scale_is_free():
    """Any power of two as LN_LOAD_SCALE gives the same i-LayerNorm bits (module docstring),
    including rows of tiny integers, which i-LayerNorm shifts left."""
    rng = np.random.default_rng(2)
    consts = layernorm_constants(1 + 0.1 * rng.normal(size=256), 0.05 * rng.normal(size=256),
                                 0.02)
    x = rng.integers(-128, 128, (16, 256)).astype(np.int32)
    x[:4] = rng.integers(-1, 2, (4, 256))
    x[4] = 0
    base = i_layernorm(x, consts)
    for k in (2, 64, 1 << 20):
        np.testing.assert_array_equal(i_layernorm(x * np.int32(k), consts), base)


# --------------------------------------------------------------------------------------
# Decoding with the int8 KV cache
# --------------------------------------------------------------------------------------

def test_decode_equals_prefill_bit_for_bit(gpt2, gpt2_q):
    _, _, x = gpt2
    ql = gpt2_q
    x_q = Q.quantize_activation(x, ql.in_scale)
    prefill = G.integer_gpt2_layer_trace(x_q, ql)
    # One token at a time.
    cache = G.Int8KVCache.for_layer(ql)
    steps = np.stack([G.integer_gpt2_decode_step(x_q[p], ql, cache) for p in range(32)])
    assert steps.dtype == np.int8 and steps.shape == (32, 256)
    np.testing.assert_array_equal(steps, prefill["out"])
    # The cache holds the prefill's keys and values, split per head.
    np.testing.assert_array_equal(cache.k, prefill["k"].reshape(32, 4, 64).transpose(1, 0, 2))
    np.testing.assert_array_equal(cache.v, prefill["v"].reshape(32, 4, 64).transpose(1, 0, 2))
    # In chunks: a prefill into the cache, then chunks of several tokens and single ones.
    cache = G.Int8KVCache.for_layer(ql)
    parts = [G.integer_gpt2_decode_step(x_q[:5], ql, cache),
             G.integer_gpt2_decode_step(x_q[5:16], ql, cache)]
    parts += [G.integer_gpt2_decode_step(x_q[p:p + 1], ql, cache) for p in range(16, 32)]
    np.testing.assert_array_equal(np.concatenate(parts), prefill["out"])
    # Causal: later tokens leave earlier outputs alone.
    changed = x_q.copy()
    changed[20:] = -changed[20:]
    np.testing.assert_array_equal(G.integer_gpt2_layer(changed, ql)[:20], prefill["out"][:20])


def test_cache_growth_and_limits(gpt2_q):
    ql = gpt2_q
    rng = np.random.default_rng(4)
    cache = G.Int8KVCache.for_layer(ql)
    assert len(cache) == 0 and cache.k.shape == (4, 0, 64) and cache.k.dtype == np.int8
    for n, total in ((3, 3), (1, 4), (6, 10)):
        x_new = rng.integers(-128, 128, (n, 256)).astype(np.int8)
        out = G.integer_gpt2_decode_step(x_new if n > 1 else x_new[0], ql, cache)
        assert out.shape == ((n, 256) if n > 1 else (256,)) and out.dtype == np.int8
        assert len(cache) == total
        assert cache.k.shape == cache.v.shape == (4, total, 64)
        assert cache.k.dtype == cache.v.dtype == np.int8
    # A full cache refuses another token and is left as it was.
    full = np.zeros((4, G.MAX_CONTEXT, 64), dtype=np.int8)
    cache = G.Int8KVCache(full, full.copy())
    with pytest.raises(ValueError, match="the cache holds 4096 positions: 1 more would "
                                         "exceed 4096"):
        G.integer_gpt2_decode_step(np.zeros(256, dtype=np.int8), ql, cache)
    assert len(cache) == G.MAX_CONTEXT
    with pytest.raises(ValueError, match="the cache holds at most 4096 positions, not 4097"):
        G.Int8KVCache(np.zeros((4, 4097, 64), np.int8), np.zeros((4, 4097, 64), np.int8))
    with pytest.raises(ValueError, match="k must be an int8 array, not float64"):
        G.Int8KVCache(np.zeros((4, 0, 64)), np.zeros((4, 0, 64)))
    with pytest.raises(ValueError, match=r"k and v must both be \(heads, T, dh\)"):
        G.Int8KVCache(np.zeros((4, 2, 64), np.int8), np.zeros((4, 3, 64), np.int8))
    with pytest.raises(ValueError, match="head_dim must be a positive integer, not 0"):
        G.Int8KVCache.empty(4, 0)


# --------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------

def test_accuracy_hidden_256(gpt2, gpt2_q):
    """Hidden 256, 4 heads, 32 tokens: measured output cosine 0.9996-0.9997, max abs error
    0.10-0.12 on outputs up to 4.7 (module docstring)."""
    w, _, x = gpt2
    e = G.gpt2_layer_errors(x, w, gpt2_q)
    assert e["out"]["cosine"] >= 0.999
    assert e["out"]["token_cosine_min"] >= 0.998
    assert e["out"]["max_abs"] <= 0.2
    assert e["probs"]["max_abs"] <= 0.025  # 7-bit probabilities: a step is 0.0078
    assert e["ctx"]["cosine"] >= 0.995     # the weakest stage
    # gelu_new against i-GELU's erf: the integer block is as close to either reference.
    e_erf = G.gpt2_layer_errors(x, w, gpt2_q, gelu="erf")
    assert abs(e_erf["out"]["cosine"] - e["out"]["cosine"]) < 1e-4
    # A batch is measured as a whole.
    e2 = G.gpt2_layer_errors(np.stack([x, x[::-1]]), w, gpt2_q)
    assert e2["out"]["cosine"] >= 0.999


def test_accuracy_hidden_768():
    """GPT-2 small's shape (hidden 768, 12 heads, ffn 3072), 16 tokens: measured output
    cosine 0.9993, max abs error 0.29-0.32 on outputs up to 8.5."""
    rng = np.random.default_rng(0)
    w = R.random_gpt2_weights(768, 12, rng=rng)
    calib = [rng.normal(size=(16, 768)) for _ in range(4)]
    x = rng.normal(size=(16, 768))
    ql = G.quantize_gpt2_layer(w, calib)
    e = G.gpt2_layer_errors(x, w, ql)
    assert e["out"]["cosine"] >= 0.998
    assert e["out"]["token_cosine_min"] >= 0.998
    assert e["out"]["max_abs"] <= 0.5


def test_chained_blocks_keep_their_accuracy():
    """Two blocks, the second quantized with the first's output scale as its input scale."""
    rng = np.random.default_rng(5)
    ws = [R.random_gpt2_weights(128, 4, rng=rng) for _ in range(2)]
    calib = [rng.normal(size=(16, 128)) for _ in range(4)]
    x = rng.normal(size=(16, 128))
    q1 = G.quantize_gpt2_layer(ws[0], calib)
    q2 = G.quantize_gpt2_layer(ws[1], [R.gpt2_layer(c, ws[0]) for c in calib],
                               in_scale=q1.out_scale)
    assert q2.in_scale == q1.out_scale
    out = G.integer_gpt2_layer(G.integer_gpt2_layer(Q.quantize_activation(x, q1.in_scale),
                                                    q1), q2)
    ref = R.gpt2_layer(R.gpt2_layer(x, ws[0]), ws[1])
    assert Q.cosine(Q.dequantize(out, q2.out_scale), ref) >= 0.999


def test_residual_outliers_need_per_group_scales():
    """With a few large residual dimensions, one int8 scale leaves the others a few codes;
    per-group residual scales (with the LayerNorm prescale) restore them."""
    w, calib, x, dims = _outlier_data()
    rest = np.setdiff1d(np.arange(256), dims)
    cos = {}
    for name, smooth in (("tensor", None), ("group", G.RESIDUAL_PER_GROUP)):
        ql = G.quantize_gpt2_layer(w, calib, smooth=smooth)
        out = G.integer_gpt2_layer(Q.quantize_activation(x, ql.in_scale), ql)
        d = Q.dequantize(out, ql.out_scale)
        cos[name] = Q.cosine(d[:, rest], R.gpt2_layer(x, w)[:, rest])
    assert cos["tensor"] < 0.98   # measured 0.96
    assert cos["group"] >= 0.99   # measured 0.995
    assert isinstance(ql.in_scale, np.ndarray) and ql.ln1_prescale is not None
    assert len(ql.ln1_prescale) == len(ql.ln2_prescale) == 256 // 16


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------

def test_bad_inputs_are_reported(gpt2, gpt2_q):
    w, calib, x = gpt2
    ql = gpt2_q
    with pytest.raises(ValueError, match="x_q must be an int8 array, not float64"):
        G.integer_gpt2_layer(x, ql)
    with pytest.raises(ValueError, match=r"x_q must have shape \(S, 256\) or \(B, S, 256\), "
                                         r"not \(32, 128\)"):
        G.integer_gpt2_layer(np.zeros((32, 128), np.int8), ql)
    with pytest.raises(ValueError, match=r"not \(256,\)"):
        G.integer_gpt2_layer(np.zeros(256, np.int8), ql)
    with pytest.raises(ValueError, match="ql must be a QuantizedGpt2Layer, not dict"):
        G.integer_gpt2_layer(np.zeros((2, 256), np.int8), {})
    cache = G.Int8KVCache.for_layer(ql)
    with pytest.raises(ValueError, match="x_new_q must be an int8 array, not int32"):
        G.integer_gpt2_decode_step(np.zeros(256, np.int32), ql, cache)
    with pytest.raises(ValueError, match=r"x_new_q must have shape \(256,\) or \(n, 256\), "
                                         r"not \(1, 2, 256\)"):
        G.integer_gpt2_decode_step(np.zeros((1, 2, 256), np.int8), ql, cache)
    with pytest.raises(ValueError, match=r"not \(0, 256\)"):
        G.integer_gpt2_decode_step(np.zeros((0, 256), np.int8), ql, cache)
    with pytest.raises(ValueError, match="cache must be an Int8KVCache, not KVCache"):
        G.integer_gpt2_decode_step(np.zeros(256, np.int8), ql, R.KVCache.empty(4, 64))
    with pytest.raises(ValueError, match="the cache holds 8 heads of 32, the block 4 of 64"):
        G.integer_gpt2_decode_step(np.zeros(256, np.int8), ql, G.Int8KVCache.empty(8, 32))
    assert len(cache) == 0  # nothing was appended by the failed calls


def test_bad_options_are_reported(gpt2):
    w, calib, _ = gpt2
    with pytest.raises(ValueError, match="smooth names must be among x, a, x1, h, f, out, "
                                         "not 'q'"):
        G.quantize_gpt2_layer(w, calib, smooth={"q": 1.0})
    with pytest.raises(ValueError, match=r"smooth\['x'\] must be a number in \[0, 1\]"):
        G.quantize_gpt2_layer(w, calib, smooth={"x": 2})
    with pytest.raises(ValueError, match="in_scale must be uniform within each group of 16 "
                                         "columns"):
        G.quantize_gpt2_layer(w, calib, in_scale=np.linspace(0.01, 0.02, 256))
    with pytest.raises(ValueError, match="a GPT-2 calibration item is a whole causal sequence"):
        G.quantize_gpt2_layer(w, [(calib[0], np.ones(32))])
    with pytest.raises(ValueError, match="calibration_inputs must hold at least one input"):
        G.quantize_gpt2_layer(w, [])
    with pytest.raises(ValueError, match="percentile must be a number"):
        G.quantize_gpt2_layer(w, calib, percentile=0)
    with pytest.raises(ValueError, match="group must be a positive integer, not 0"):
        G.quantize_gpt2_layer(w, calib, group=0)
    with pytest.raises(ValueError, match="weights are missing bo"):
        G.quantize_gpt2_layer({k: v for k, v in w.items() if k != "bo"}, calib)
    wide = R.random_gpt2_weights(512, 1, 64, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="the head size must be at most 256"):
        G.quantize_gpt2_layer(wide, np.zeros((4, 512)))
    ql = G.quantize_gpt2_layer(w, calib, percentile=99.9)
    assert ql.ranges["f"].range < ql.ranges["f"].columns.max()
    assert ql.options == {"smooth": {}, "percentile": 99.9}
