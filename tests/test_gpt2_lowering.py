"""A quantized GPT-2 block lowered to command streams (prefill, and decoding with the KV
cache in main memory): on the golden executor each step equals the integer model
(tessera.sw.models.gpt2_quantize) bit for bit, the cache holds the integer model's keys
and values, and decoding token by token equals recomputing the whole sequence."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Opcode
from tessera.sw.lower.attention import CACHED_MIN_KEYS, MASK_NEG, causal_mask_bytes, uses_kt_cache
from tessera.sw.lower.gpt2 import (
    GPT2_PHASES,
    place_gpt2_layer,
    read_kt_cache,
    read_kv_cache,
    run_gpt2_step,
    write_kv_cache,
)
from tessera.sw.lower.plan import LoweringError
from tessera.sw.models import gpt2_quantize as G
from tessera.sw.models.quantize import cosine, dequantize, quantize_activation
from tessera.sw.models.reference import gpt2_layer, random_gpt2_weights
from tessera.sw.runtime import Runtime


def small_block(H=32, heads=2, S=12, seed=0, **options):
    rng = np.random.default_rng(seed)
    w = random_gpt2_weights(H, heads, rng=rng)
    ql = G.quantize_gpt2_layer(w, [rng.normal(0, 1, (S, H)) for _ in range(3)], **options)
    x = rng.normal(0, 1, (S, H))
    return w, ql, x, quantize_activation(x, ql.in_scale)


@pytest.mark.parametrize("cfg_name, shape, smooth", [
    ("tiny", (32, 2, 12), None),
    ("tiny", (32, 2, 12), G.RESIDUAL_PER_GROUP),
    ("default", (64, 2, 40), None),
    ("default", (128, 4, 33), G.RESIDUAL_PER_GROUP),
])
def test_prefill_then_decode_equals_the_integer_model(cfg_name, shape, smooth):
    w, ql, x, xq = small_block(*shape, **({"smooth": smooth} if smooth else {}))
    assert (ql.ln1_prescale is not None) == (smooth is not None)
    S = xq.shape[0]
    want = G.integer_gpt2_layer(xq, ql)
    rt = Runtime(preset(cfg_name), "golden")
    p = place_gpt2_layer(rt, ql, S + 3)
    pre = S - 2
    got, results, phases = run_gpt2_step(rt, ql, p, xq[:pre], 0, check=True)
    assert list(phases) == list(GPT2_PHASES) and results["layer"].ok
    assert (got == want[:pre]).all()
    cache = G.Int8KVCache.for_layer(ql)
    G.integer_gpt2_decode_step(xq[:pre], ql, cache)
    k, v = read_kv_cache(rt, ql, p, pre)
    assert (k == cache.k).all() and (v == cache.v).all()
    for t in range(pre, S):      # one token at a time: the rows of the whole sequence
        got, _, _ = run_gpt2_step(rt, ql, p, xq[t:t + 1], t, check=True)
        assert (got == want[t:t + 1]).all()
    ref = gpt2_layer(x, w)
    assert cosine(dequantize(want, ql.out_scale), ref) > 0.995


def test_decoding_past_the_k_transposed_cache_threshold():
    """A cache of 100 positions keeps K^T: the prefill writes its whole key blocks, each
    decode step the block it completes; steps below CACHED_MIN_KEYS transpose every key,
    later ones read the cache's tiles. Every step equals the integer model, and the K^T
    cache holds every whole block of keys after every step."""
    _, ql, _, xq = small_block(H=64, heads=2, S=100, seed=4)
    c = preset("default")
    assert uses_kt_cache(c, ql.head_dim, 100) and not uses_kt_cache(c, ql.head_dim, 79)
    want = G.integer_gpt2_layer(xq, ql)
    rt = Runtime(c, "golden")
    p = place_gpt2_layer(rt, ql, 100)
    got, _, _ = run_gpt2_step(rt, ql, p, xq[:70], 0, check=True)
    assert (got == want[:70]).all()
    cache = G.Int8KVCache.for_layer(ql)
    G.integer_gpt2_decode_step(xq[:70], ql, cache)
    assert (read_kt_cache(rt, ql, p, 70) == cache.k[:, :64]).all()
    read = []
    for t in range(70, 100):
        got, _, phases = run_gpt2_step(rt, ql, p, xq[t:t + 1], t, check=True)
        assert (got == want[t:t + 1]).all()
        G.integer_gpt2_decode_step(xq[t], ql, cache)
        whole = (t + 1) // 16 * 16
        assert (read_kt_cache(rt, ql, p, t + 1) == cache.k[:, :whole]).all()
        read.append(any(cmd.opcode == Opcode.LOAD and cmd.args["dram_addr"] == p.kt_of(
            0, ql.head_dim, 16) for cmd in phases["attention"]))
    assert read == [t + 1 >= CACHED_MIN_KEYS for t in range(70, 100)]


def test_long_causal_prefill_in_several_query_chunks():
    """Tiny's accumulator holds 10 score rows of 97 keys: the queries come in chunks, each
    cut after its last query's key, the causal bias only on the blocks that need it."""
    _, ql, _, xq = small_block(H=16, heads=2, S=100, seed=3)
    want = G.integer_gpt2_layer(xq, ql)
    rt = Runtime(preset("tiny"), "golden")
    p = place_gpt2_layer(rt, ql, 100)
    got, _, _ = run_gpt2_step(rt, ql, p, xq[:61], 0, check=True)
    assert (got == want[:61]).all()
    got, _, _ = run_gpt2_step(rt, ql, p, xq[61:], 61, check=True)   # 39 more at once
    assert (got == want[61:]).all()


def test_decode_after_a_cache_written_from_the_model():
    _, ql, _, xq = small_block(seed=5)
    cache = G.Int8KVCache.for_layer(ql)
    G.integer_gpt2_decode_step(xq[:9], ql, cache)
    rt = Runtime(preset("tiny"), "golden")
    p = place_gpt2_layer(rt, ql, 16)
    write_kv_cache(rt, ql, p, cache)
    got, results, _ = run_gpt2_step(rt, ql, p, xq[9:10], 9, check=True, per_phase=True)
    assert list(results) == list(GPT2_PHASES)
    assert (got[0] == G.integer_gpt2_decode_step(xq[9], ql, cache)).all()


def test_causal_mask_layout():
    m = causal_mask_bytes(3, 5, 8, 4).view("<i4").reshape(2, 3, 4)   # blocks, rows, lanes
    full = np.concatenate(list(m), axis=1)                             # rows x keys
    for i in range(3):
        assert (full[i, :6 + i] == 0).all() and (full[i, 6 + i:] == MASK_NEG).all()


def test_steps_that_do_not_fit_are_refused():
    _, ql, _, xq = small_block()
    rt = Runtime(preset("tiny"), "golden")
    p = place_gpt2_layer(rt, ql, 8)
    with pytest.raises(LoweringError, match="do not fit a KV cache of 8"):
        run_gpt2_step(rt, ql, p, xq[:3], 6)
    with pytest.raises(LoweringError, match="must be"):
        run_gpt2_step(rt, ql, p, xq[0], 0)
    with pytest.raises(LoweringError, match="Softmax rows"):
        place_gpt2_layer(rt, ql, 10_000)
