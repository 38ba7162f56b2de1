"""A whole GPT-2-style decoder (sw/lower/decoder.py): greedy generation with one program
per step through every block, KV caches in main memory; equal to the chained integer
blocks, and the cached steps equal to recomputing the whole sequence."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.sw.lower.decoder import AcceleratorDecoder
from tessera.sw.models.chain import (
    float_generate,
    generate,
    integer_generate,
    quantize_decoder,
    random_gpt2_model,
)
from tessera.sw.models.gpt2_quantize import integer_gpt2_layer
from tessera.sw.models.quantize import quantize_activation
from tessera.sw.runtime import Runtime

TINY = preset("tiny")
PROMPT, STEPS = [3, 17, 8, 40, 22], 4


def small_decoder(layers=2, H=32, heads=2, F=64, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    model = random_gpt2_model(layers, H, heads, F, vocab, 16, rng)
    cal = [list(rng.integers(0, vocab, 12)) for _ in range(3)]
    return model, quantize_decoder(model, cal)


def test_generation_equals_the_integer_blocks_and_a_full_recomputation():
    model, qls = small_decoder()
    dec = AcceleratorDecoder(Runtime(TINY, "golden"), qls, len(PROMPT) + STEPS)
    got, _ = generate(model, qls, PROMPT, STEPS, dec.step)
    want, outs = integer_generate(model, qls, PROMPT, STEPS)
    assert got == want
    # The steps' outputs (prefill, then one token each) equal the blocks run on the whole
    # sequence at once.
    seq = PROMPT + got[:-1]
    x = quantize_activation(model.embed(seq), qls[0].in_scale)
    for ql in qls:
        x = integer_gpt2_layer(x, ql)
    assert (np.concatenate(outs) == x).all()
    # one program per step: the prefill, then a token each
    assert [n for n, _, _ in dec.results] == [len(PROMPT)] + [1] * (STEPS - 1)
    # and the integer model mostly agrees with the float one
    assert float_generate(model, PROMPT, STEPS)[0] == got[0]


@pytest.mark.rtl
def test_generation_on_verilator_equals_golden():
    model, qls = small_decoder(H=16, F=32)
    gold = AcceleratorDecoder(Runtime(TINY, "golden"), qls, len(PROMPT) + STEPS)
    rtl = AcceleratorDecoder(Runtime(TINY, "verilator"), qls, len(PROMPT) + STEPS)
    assert generate(model, qls, PROMPT, STEPS, rtl.step)[0] == \
        generate(model, qls, PROMPT, STEPS, gold.step)[0]
    assert (rtl.rt.image[:rtl.rt._used] == gold.rt.image[:gold.rt._used]).all()
