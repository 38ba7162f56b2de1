"""A whole encoder as one command stream (sw/lower/encoder.py): the layers chained in main
memory, equal bit for bit to the chained integer layers on the golden model and on both
simulators."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Opcode
from tessera.sw.lower.encoder import (
    lower_encoder,
    place_encoder,
    run_batch,
    run_batch_by_phase,
    run_encoder,
)
from tessera.sw.lower.plan import LoweringError
from tessera.sw.models.chain import integer_encoder, quantize_chain
from tessera.sw.models.quantize import EXTENDED, cosine, dequantize, quantize_activation
from tessera.sw.models.reference import bert_layer, random_bert_weights
from tessera.sw.runtime import Runtime

TINY = preset("tiny")


def small_encoder(layers=2, S=12, H=32, heads=2, F=64, seed=0, **options):
    rng = np.random.default_rng(seed)
    ws = [random_bert_weights(H, heads, F, rng) for _ in range(layers)]
    qls = quantize_chain(ws, [rng.normal(0, 1, (S, H)) for _ in range(3)], **options)
    x = rng.normal(0, 1, (S, H))
    mask = np.ones(S, bool)
    mask[-3:] = False
    return ws, qls, x, mask


@pytest.mark.parametrize("options", [{}, EXTENDED])
def test_encoder_equals_the_chained_integer_layers(options):
    ws, qls, x, mask = small_encoder(3, **options)
    xq = quantize_activation(x, qls[0].in_scale)
    got, result, prog = run_encoder(Runtime(TINY, "golden"), qls, xq, mask, check=True)
    assert (got == integer_encoder(xq, qls, mask)).all()
    assert [c.opcode for c in prog].count(Opcode.FINISH) == 1
    ref = x
    for w in ws:
        ref = bert_layer(ref, w, mask=mask)
    assert cosine(dequantize(got, qls[-1].out_scale)[mask], ref[mask]) > 0.99


def test_the_layers_read_each_other_in_place():
    """One input placed; each later layer's input is the address the one before writes."""
    _, qls, x, mask = small_encoder(3)
    rt = Runtime(TINY, "golden")
    p = place_encoder(rt, qls, quantize_activation(x, qls[0].in_scale), mask)
    assert [lp.x for lp in p.layers[1:]] == [lp.out for lp in p.layers[:-1]]
    assert len({lp.wqkv for lp in p.layers}) == 3
    prog = lower_encoder(TINY, qls, p)
    assert prog[-1].opcode == Opcode.FINISH


def test_layers_not_quantized_as_a_chain_are_refused():
    rng = np.random.default_rng(1)
    from tessera.sw.models.quantize import quantize_bert_layer

    ws = [random_bert_weights(32, 2, 64, rng) for _ in range(2)]
    qls = [quantize_bert_layer(w, [rng.normal(0, 1, (12, 32))]) for w in ws]
    x = quantize_activation(rng.normal(0, 1, (12, 32)), qls[0].in_scale)
    with pytest.raises(LoweringError, match="layer 1's input scale is not layer 0's output"):
        run_encoder(Runtime(TINY, "golden"), qls, x)
    with pytest.raises(LoweringError, match="at least one layer"):
        run_encoder(Runtime(TINY, "golden"), [], x)


@pytest.mark.rtl
@pytest.mark.parametrize("sim, wide", [("verilator", False), ("icarus", False),
                                       ("verilator", True)])
def test_encoder_on_rtl_equals_golden(sim, wide):
    """int8 on both simulators; wide activations (two digit planes per tensor) on Verilator
    (Icarus runs the two-pass program, tests/test_wide_activations.py)."""
    _, qls, x, mask = small_encoder(2, S=8, H=16, F=32, wide=wide, **EXTENDED)
    xq = quantize_activation(x, qls[0].in_scale, wide=wide)
    gold = Runtime(TINY, "golden")
    want, _, _ = run_encoder(gold, qls, xq, mask, check=True)
    rt = Runtime(TINY, sim)
    got, result, _ = run_encoder(rt, qls, xq, mask, check=True)
    assert (got == want).all() and (got == integer_encoder(xq, qls, mask)).all()
    # every byte of main memory the program touched, intermediates included
    assert (rt.image[:rt._used] == gold.image[:gold._used]).all()
    assert result.counters["macs"] > 0


def _batch(qls, lengths, seed=5):
    rng = np.random.default_rng(seed)
    H = qls[0].hidden
    return [quantize_activation(rng.normal(0, 1, (n, H)), qls[0].in_scale) for n in lengths]


def test_a_batch_of_sequences_gives_each_its_own_result():
    """Sequences of different lengths in one program: each equals the sequence run alone,
    and the same sequence padded and masked in the integer model; no padding rows."""
    _, qls, _, _ = small_encoder(2, **EXTENDED)
    xs = _batch(qls, (5, 12, 8, 1))
    outs, result, _ = run_batch(Runtime(TINY, "golden"), qls, xs, check=True)
    for x, out in zip(xs, outs, strict=True):
        alone, _, _ = run_encoder(Runtime(TINY, "golden"), qls, x, check=True)
        assert (out == alone).all() and (out == integer_encoder(x, qls)).all()
        padded = np.zeros((12, x.shape[1]), np.int8)
        padded[:len(x)] = x
        keep = np.arange(12) < len(x)
        assert (integer_encoder(padded, qls, keep)[:len(x)] == out).all()
    # the products ran over the 26 tokens, not 4 x 12 padded rows
    H, F = qls[0].hidden, qls[0].ffn
    gemm_macs = 26 * (3 * H * H + H * H + 2 * H * F) * len(qls)
    assert result.counters["macs"] < 1.3 * gemm_macs + 26 * 12 * H * 2 * len(qls)


@pytest.mark.rtl
def test_a_batch_on_rtl_equals_golden():
    _, qls, _, _ = small_encoder(2, S=8, H=16, F=32, **EXTENDED)
    xs = _batch(qls, (3, 8, 6))
    want, _, _ = run_batch(Runtime(TINY, "golden"), qls, xs, check=True)
    got, _, _ = run_batch(Runtime(TINY, "verilator"), qls, xs, check=True)
    assert all((a == b).all() for a, b in zip(got, want, strict=True))


@pytest.mark.rtl
def test_the_phases_run_alone_give_the_same_result_and_work():
    """run_batch_by_phase (the per-operation counters): the same outputs and MACs as the
    one program, and about its cycles (each program's start and drain on top)."""
    _, qls, _, _ = small_encoder(2, S=8, H=16, F=32, **EXTENDED)
    xs = _batch(qls, (5, 7))
    one, result, _ = run_batch(Runtime(TINY, "verilator"), qls, xs, check=True)
    each, runs, phases = run_batch_by_phase(Runtime(TINY, "verilator"), qls, xs, check=True)
    assert all((a == b).all() for a, b in zip(one, each, strict=True))
    assert len(runs) == 2 and all(set(r) == set(phases[0]) for r in runs)
    macs = sum(r.counters["macs"] for run in runs for r in run.values())
    cycles = sum(r.counters["cycles"] for run in runs for r in run.values())
    assert macs == result.counters["macs"]
    assert result.counters["cycles"] <= cycles < 1.3 * result.counters["cycles"]


def test_a_wide_batch_equals_the_chained_integer_layers():
    """Wide activations through a chained encoder: each layer reads the two digit planes
    the one before writes, each sequence of a batch equals itself run alone."""
    _, qls, _, _ = small_encoder(2, wide=True, **EXTENDED)
    rng = np.random.default_rng(6)
    xs = [quantize_activation(rng.normal(0, 1, (n, 32)), qls[0].in_scale, wide=True)
          for n in (5, 12, 1)]
    outs, _, _ = run_batch(Runtime(TINY, "golden"), qls, xs, check=True)
    for x, out in zip(xs, outs, strict=True):
        assert out.dtype == np.int16
        assert (out == integer_encoder(x, qls)).all()
    with pytest.raises(LoweringError, match="differ in wide activations"):
        narrow = small_encoder(2, **EXTENDED)[1]
        run_encoder(Runtime(TINY, "golden"), [qls[0], narrow[1]], xs[0])
