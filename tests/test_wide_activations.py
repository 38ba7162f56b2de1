"""Wide (15-bit) activations as two int8 digits: the output path writes either digit of a
requantization to 16 bits, and a product over them is two passes through the int8 array,
the high digits' results shifted left by ``DIGIT_SHIFT`` as the accumulator takes them
(COMPUTE's and LOAD's ``shift``). The golden definitions, and one program that uses all
three on the accelerator, against the golden executor bit for bit and against the exact
15-bit arithmetic."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode
from tessera.hw.output_path import OutputDigit, OutputOp
from tessera.sw.golden import requant as grq
from tessera.sw.golden.matmul import wrap
from tessera.sw.golden.output import output_op
from tessera.sw.runtime import Runtime

RTL = pytest.mark.rtl
TINY = preset("tiny")


def test_digits_hold_every_wide_value_and_clamp_the_others():
    y = np.arange(grq.WIDE_MIN - 300, grq.WIDE_MAX + 300)
    high, low = grq.wide_digits(y)
    assert high.min() == -128 and high.max() == 127
    assert low.min() == -64 and low.max() == 63
    assert np.array_equal(high * (1 << grq.DIGIT_SHIFT) + low,
                          np.clip(y, grq.WIDE_MIN, grq.WIDE_MAX))
    # the digits are what the output path writes of a 16-bit requantization
    assert np.array_equal(grq.output_digit(y, OutputDigit.HIGH), high)
    assert np.array_equal(grq.output_digit(y, OutputDigit.LOW), low)
    assert np.array_equal(grq.output_digit(y, OutputDigit.INT8), np.clip(y, -128, 127))
    with pytest.raises(ValueError, match="digit must be"):
        grq.output_digit(y, 3)


@pytest.mark.parametrize("op", [OutputOp.NONE, OutputOp.REQUANT, OutputOp.RELU])
def test_output_digits_are_the_16_bit_requantization(op):
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 31), 1 << 31, (5, 40)).astype(np.int32)
    m, e = (1, 0) if op == OutputOp.NONE else grq.dyadic_multiplier(2.0 ** -20)
    y = grq.requantize(x, m, e, 16).astype(np.int64)
    if op == OutputOp.RELU:
        y = np.maximum(y, 0)
    high = output_op(op, x, m, e, digit=OutputDigit.HIGH)
    low = output_op(op, x, m, e, digit=OutputDigit.LOW)
    assert np.array_equal(high * 128 + low, np.clip(y, grq.WIDE_MIN, grq.WIDE_MAX))
    assert np.array_equal(output_op(op, x, m, e), output_op(op, x, m, e,
                                                            digit=OutputDigit.INT8))


def _two_pass_program(rt: Runtime, seed: int):
    """A wide product with a wide residual, and its result stored as two digits: ``acc =
    a15 @ w + r15 * scale``, out = the digits of ``requantize(acc, m, e, 16)``."""
    c = rt.config
    R, C = c.rows, c.cols
    rng = np.random.default_rng(seed)
    M, n = 6, 3                                     # rows, K tiles
    K = n * R
    a15 = rng.integers(grq.WIDE_MIN, grq.WIDE_MAX + 1, (M, K))
    r15 = rng.integers(grq.WIDE_MIN, grq.WIDE_MAX + 1, (M, C))
    w = rng.integers(-128, 128, (K, C))
    scale = int(rng.integers(-300, 300))
    m, e = grq.dyadic_multiplier(2.0 ** -12)

    def tiles(x):       # (M, K) -> tile-major rows of R bytes: tile i's M rows together
        return x.reshape(M, n, R).transpose(1, 0, 2).reshape(n * M, R)

    (a_hi, a_lo), (r_hi, r_lo) = grq.wide_digits(a15), grq.wide_digits(r15)
    i8 = np.int8
    at = {name: rt.place(v.astype(i8)) for name, v in
          (("a_hi", tiles(a_hi)), ("a_lo", tiles(a_lo)), ("w", w), ("r_hi", r_hi),
           ("r_lo", r_lo))}
    out_hi, out_lo = rt.alloc(M * C), rt.alloc(M * C)
    hi_at, lo_at, w_at = 0, n * M, 2 * n * M

    def load(name, rows, row_bytes, local, **kw):
        return Command(Opcode.LOAD, dict(dram_addr=at[name], stride=row_bytes, rows=rows,
                                         row_bytes=row_bytes, local_addr=local, **kw))

    def store(digit, addr):
        desc = {"op": OutputOp.REQUANT, "length": C, "rows": M, "m": m, "e": e,
                "consts": {"out": {"digit": digit}}}
        return Command(Opcode.STORE, dict(desc=desc, acc_addr=0, dram_addr=addr, stride=C))

    program = [
        load("a_hi", n * M, R, hi_at), load("a_lo", n * M, R, lo_at), load("w", K, C, w_at),
        load("r_hi", M, C, 0, to_acc=1, scale=scale, shift=1),
        load("r_lo", M, C, 0, to_acc=1, scale=scale, accumulate=1),
        Command(Opcode.FENCE, {}),
        Command(Opcode.COMPUTE, dict(a_addr=hi_at, b_addr=w_at, rows=M, acc_addr=0,
                                     accumulate=1, shift=1, count=n, a_stride=M)),
        Command(Opcode.COMPUTE, dict(a_addr=lo_at, b_addr=w_at, rows=M, acc_addr=0,
                                     accumulate=1, count=n, a_stride=M)),
        Command(Opcode.FENCE, {}),
        store(OutputDigit.HIGH, out_hi), store(OutputDigit.LOW, out_lo),
        Command(Opcode.FINISH, {}),
    ]
    acc = wrap(a15 @ w + r15 * scale, c.acc_bits)
    want = np.clip(grq.requantize(acc.astype(np.int32), m, e, 16), grq.WIDE_MIN,
                   grq.WIDE_MAX)
    return program, (out_hi, out_lo), acc, want


def _run(rt: Runtime, seed: int):
    program, (out_hi, out_lo), acc, want = _two_pass_program(rt, seed)
    result = rt.run(program, onchip=True, check=True)
    M, C = want.shape
    hi = rt.read(out_hi, M * C).view(np.int8).reshape(M, C).astype(np.int64)
    lo = rt.read(out_lo, M * C).view(np.int8).reshape(M, C).astype(np.int64)
    return result, acc, want, hi, lo


def test_a_two_pass_product_is_the_wide_product_on_golden():
    result, acc, want, hi, lo = _run(Runtime(TINY, "golden"), 1)
    assert np.array_equal(result.acc[:len(acc), :TINY.cols], acc)
    assert np.array_equal(hi * 128 + lo, want)
    assert lo.min() >= -64 and lo.max() <= 63


def test_shift_only_into_the_accumulator():
    rt = Runtime(TINY, "golden")
    at = rt.place(np.zeros(64, np.int8))
    bad = Command(Opcode.LOAD, dict(dram_addr=at, stride=4, rows=2, row_bytes=4,
                                    local_addr=0, shift=1))
    result = rt.run([bad, Command(Opcode.FINISH, {})])
    assert result.error == ErrorCode.SHAPE and result.error_index == 0


@pytest.mark.parametrize("sim", [pytest.param("icarus", marks=RTL),
                                 pytest.param("verilator", marks=RTL), "amaranth"])
def test_a_two_pass_product_on_the_accelerator(sim):
    rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
    result, acc, want, hi, lo = _run(rtl, 2)
    _run(gold, 2)
    assert np.array_equal(hi * 128 + lo, want)
    assert np.array_equal(rtl.image, gold.image)
    assert np.array_equal(result.acc[:len(acc), :TINY.cols], acc)


def _wide_gemm(rt: Runtime, M: int, K: int, N: int, seed: int, residual: bool):
    """A lowered product over wide A (and a wide residual), stored wide; returns the wide
    result and the exact 15-bit arithmetic's."""
    from tessera.sw.lower.gemm import GemmBuffers, OutputSpec, lower_gemm
    from tessera.sw.lower.layout import Blocked, bias_bytes, from_blocked, to_blocked
    from tessera.sw.lower.plan import GemmShape, plan_gemm

    c = rt.config
    d = c.rows
    rng = np.random.default_rng(seed)
    a15 = rng.integers(grq.WIDE_MIN, grq.WIDE_MAX + 1, (M, K))
    r15 = rng.integers(grq.WIDE_MIN, grq.WIDE_MAX + 1, (M, N))
    w = rng.integers(-128, 128, (K, N))
    bias = rng.integers(-2**20, 2**20, N)
    scales = tuple(int(v) for v in rng.integers(1, 300, -(-N // d)))
    m, e = grq.dyadic_multiplier(2.0 ** -14)
    A, B, C = Blocked(M, K, d), Blocked(K, N, d, d), Blocked(M, N, d)

    def planes(x, shape):
        return [rt.place(to_blocked(v, shape)) for v in grq.wide_digits(x)]

    a_hi, a_lo = planes(a15, A)
    r_hi, r_lo = planes(r15, C) if residual else (None, None)
    c_hi, c_lo = rt.alloc(C.nbytes), rt.alloc(C.nbytes)
    plan = plan_gemm(c, GemmShape(M, K, N), bias=True, a_planes=2, c_planes=2)
    bufs = GemmBuffers(a_hi, rt.place(to_blocked(w, B)), c_hi, rt.place(bias_bytes(bias, d)),
                       r_hi, scales, a_lo=a_lo, residual_lo=r_lo, c_lo=c_lo)
    prog = lower_gemm(c, plan, bufs, OutputSpec(OutputOp.REQUANT, m, e))
    rt.run(prog, check=True)
    hi = from_blocked(rt.read(c_hi, C.nbytes), C).astype(np.int64)
    lo = from_blocked(rt.read(c_lo, C.nbytes), C).astype(np.int64)
    acc = a15 @ w + bias
    if residual:
        acc = acc + r15 * np.repeat(scales, d)[:N]
    want = np.clip(grq.requantize(wrap(acc, 32).astype(np.int32), m, e, 16), grq.WIDE_MIN,
                   grq.WIDE_MAX)
    return hi * 128 + lo, want, prog


@pytest.mark.parametrize("M, K, N, residual", [(10, 13, 9, True), (1, 40, 23, True),
                                               (21, 8, 30, False)])
def test_lowered_wide_products_on_golden(M, K, N, residual):
    got, want, prog = _wide_gemm(Runtime(TINY, "golden"), M, K, N, 3, residual)
    assert np.array_equal(got, want)
    runs = [c for c in prog if c.opcode == Opcode.COMPUTE]
    assert sum(c.args.get("shift", 0) for c in runs) * 2 == len(runs)


@pytest.mark.parametrize("sim", [pytest.param("verilator", marks=RTL), "amaranth"])
def test_lowered_wide_products_on_the_accelerator(sim):
    rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
    got, want, _ = _wide_gemm(rtl, 10, 13, 9, 4, True)
    _wide_gemm(gold, 10, 13, 9, 4, True)
    assert np.array_equal(got, want)
    assert np.array_equal(rtl.image, gold.image)


@pytest.mark.parametrize("cfg_name, shape, options", [
    ("tiny", (12, 32, 2, 64), {}),
    ("tiny", (12, 32, 2, 64), {"ln_prescale": True, "smooth": {"h1": 0.5, "f": 0.5}}),
    ("default", (40, 64, 2, 128), {"ln_prescale": True, "smooth": {"h1": 0.5, "f": 0.5}})])
def test_a_wide_layer_equals_its_integer_model(cfg_name, shape, options):
    """The wide layer's lowering (every product two passes, its wide tensors two stores)
    equals the integer model bit for bit, and is closer to the float layer than int8."""
    from test_bert_lowering import small_layer

    from tessera.sw.lower.bert import run_bert_layer
    from tessera.sw.models.quantize import (
        cosine,
        dequantize,
        integer_bert_layer,
        quantize_activation,
    )
    from tessera.sw.models.reference import bert_layer

    w, ql, x, mask = small_layer(*shape, wide=True, **options)
    _, ql8, _, _ = small_layer(*shape, **options)
    xq = quantize_activation(x, ql.in_scale, wide=True)
    assert xq.dtype == np.int16 and np.abs(xq).max() > 1000
    got, _, phases = run_bert_layer(Runtime(preset(cfg_name), "golden"), ql, xq, mask,
                                    check=True)
    assert got.dtype == np.int16
    assert np.array_equal(got, integer_bert_layer(xq, ql, mask))
    ref = bert_layer(x, w, mask=mask)[mask]
    wide = cosine(dequantize(got, ql.out_scale)[mask], ref)
    xq8 = quantize_activation(x, ql8.in_scale)
    narrow = cosine(dequantize(integer_bert_layer(xq8, ql8, mask), ql8.out_scale)[mask], ref)
    assert wide > narrow and wide > 0.999
    shifted = sum(c.args.get("shift", 0) for name in phases for c in phases[name])
    assert shifted > 0
