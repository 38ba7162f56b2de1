"""A quantized BERT encoder layer lowered to one command stream: on the golden executor it
equals the integer model (tessera.sw.models.quantize.integer_bert_layer) bit for bit."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.sw.lower.bert import PHASES, run_bert_layer
from tessera.sw.models.quantize import (
    EXTENDED,
    cosine,
    dequantize,
    integer_bert_layer,
    quantize_activation,
    quantize_bert_layer,
)
from tessera.sw.models.reference import bert_layer, random_bert_weights
from tessera.sw.runtime import Runtime


def small_layer(S=12, H=32, heads=2, F=64, seed=0, **options):
    rng = np.random.default_rng(seed)
    w = random_bert_weights(H, heads, F, rng)
    ql = quantize_bert_layer(w, [rng.normal(0, 1, (S, H)) for _ in range(3)], **options)
    x = rng.normal(0, 1, (S, H))
    mask = np.ones(S, bool)
    mask[-2:] = False
    return w, ql, x, mask


@pytest.mark.parametrize("cfg_name, shape", [("tiny", (12, 32, 2, 64)),
                                             ("default", (40, 64, 2, 128))])
def test_layer_equals_the_integer_model(cfg_name, shape):
    w, ql, x, mask = small_layer(*shape)
    xq = quantize_activation(x, ql.in_scale)
    got, results, phases = run_bert_layer(Runtime(preset(cfg_name), "golden"), ql, xq, mask,
                                          check=True)
    assert list(phases) == list(PHASES)
    assert (got == integer_bert_layer(xq, ql, mask)).all()
    ref = bert_layer(x, w, mask=mask)
    assert cosine(dequantize(got, ql.out_scale)[mask], ref[mask]) > 0.995


def test_the_extended_dataflow_equals_its_integer_model():
    """ln_prescale: per-group Wo / W2 scales and residual multipliers, each column block
    of the LayerNorm input brought to one scale by the store unit."""
    w, ql, x, mask = small_layer(**EXTENDED)
    assert ql.ln1_prescale is not None
    xq = quantize_activation(x, ql.in_scale)
    got, _, _ = run_bert_layer(Runtime(preset("tiny"), "golden"), ql, xq, mask, check=True)
    assert (got == integer_bert_layer(xq, ql, mask)).all()
