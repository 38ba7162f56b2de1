"""The whole accelerator on the generated Verilog (tiny configuration, the Verilog memory
model): tiled products through command fetch, the queues and tokens, against the golden
executor bit for bit on both simulators; illegal commands and addresses stop cleanly with
the command's index; a deadlock is reported instead of hanging; the registers. Products,
every store operation and an attention head also run in Amaranth's simulator (the fast
tier: the DMA, the store unit and the whole accelerator without a Verilog build)."""

import numpy as np
import pytest

# pytest puts this folder on the path: the helpers of the golden-model tests serve here too.
from test_attention import place_head
from test_lowering import gemm_on, output_spec

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode, Queue, encode
from tessera.hw.output_path import OutputOp
from tessera.sw.golden.layernorm import layernorm_table
from tessera.sw.lower.gemm import reference_gemm
from tessera.sw.runtime import Runtime
from tessera.sw.runtime.diff import differential_check

RTL = pytest.mark.rtl
#: The Verilog on both simulators (the RTL tier), and the accelerator in Amaranth's own
#: simulator (the fast tier: no build; the same design before Verilog generation).
SIMS = [pytest.param("icarus", marks=RTL), pytest.param("verilator", marks=RTL), "amaranth"]
TINY = preset("tiny")
#: Two output lanes for the tiny array's four columns: every chunk through the output path
#: in two pieces (the store unit, the splitter and the packer around the units).
LANES2 = TINY.replace(output_lanes=2)


@pytest.mark.parametrize("sim", SIMS)
def test_products_match_the_golden_executor(sim):
    rng = np.random.default_rng(11)
    # (Lowered products run their K tiles as COMPUTE runs; the one-row product, a decode
    # step, streams one activation row per weight tile.)
    for (M, K, N), bias, kind in [((10, 13, 9), True, "relu"), ((21, 8, 30), False, "gelu"),
                                  ((1, 40, 23), True, "requant")]:
        a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        bv = rng.integers(-2**18, 2**18, N) if bias else None
        out = output_spec(kind)
        rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
        got, prog, result = gemm_on(rtl, a, b, bv, out)
        want, _, gresult = gemm_on(gold, a, b, bv, out)
        assert (got == reference_gemm(TINY, a, b, bv, out)).all()
        assert np.array_equal(rtl.image, gold.image)      # every byte of main memory
        c = result.counters
        assert c["macs"] == gresult.counters["macs"] and c["commands"] == len(prog)
        assert c["cycles"] > 0 and c["array_busy"] * TINY.rows * TINY.cols == c["macs"]
        assert c["bytes_read"] >= gresult.counters["bytes_loaded"]


@RTL
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_triple_buffered_products_match_the_golden_executor(sim):
    """Three scratchpad slots per operand (loads two steps ahead, as decode steps are
    planned on the default configuration), with a bias (one-row tiles of two blocks: one
    merged bias load per tile) and without."""
    from dataclasses import replace

    from tessera.sw.lower.plan import GemmShape, plan_gemm

    rng = np.random.default_rng(12)
    for (M, K, N), bias, nt in [((1, 24, 30), True, 2), ((6, 21, 14), False, 1)]:
        a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        bv = rng.integers(-2**18, 2**18, N) if bias else None
        out = output_spec("requant")
        plan = replace(plan_gemm(TINY, GemmShape(M, K, N), bias=bias), mt=M, nt=nt, kt=2,
                       a_slots=3, b_slots=3)
        rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
        got, _, _ = gemm_on(rtl, a, b, bv, out, plan)
        gemm_on(gold, a, b, bv, out, plan)
        assert (got == reference_gemm(TINY, a, b, bv, out)).all()
        assert np.array_equal(rtl.image, gold.image)


@RTL
def test_differential_check_agrees_on_rtl():
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (6, 9)), rng.integers(-128, 128, (9, 7))
    setup = Runtime(TINY, "golden")
    _, prog, _ = gemm_on(setup, a, b, rng.integers(-99, 99, 7), output_spec("requant"))
    rtl, gold = Runtime(TINY, "verilator"), Runtime(TINY, "golden")
    for rt in (rtl, gold):
        rt.image[:] = setup.image
        rt._top = setup._top
    diff = differential_check(rtl, gold, prog)
    assert diff.agree, diff.describe()


def _load(rt, **kw):
    args = dict(dram_addr=rt.mem_base, stride=4, rows=1, row_bytes=4, local_addr=0)
    args.update(kw)
    return Command(Opcode.LOAD, args)


CASES = {
    "illegal opcode": (lambda rt: [_load(rt), 0xF], ErrorCode.ILLEGAL_OPCODE, 1),
    "token to no queue": (lambda rt: [_load(rt), Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.NONE, length=4, rows=1)), signal_next=True)],
        ErrorCode.ILLEGAL_TOKEN, 1),
    "compute without weights": (lambda rt: [Command(Opcode.COMPUTE, dict(rows=2))],
                                ErrorCode.ILLEGAL_FIELD, 0),
    "run in the output-stationary dataflow": (lambda rt: [
        Command(Opcode.CONFIG, {"os": 1}), Command(Opcode.COMPUTE, dict(rows=2, count=2))],
        ErrorCode.ILLEGAL_FIELD, 1),
    "run's weights out of range": (lambda rt: [Command(Opcode.COMPUTE, dict(
        b_addr=TINY.spad_rows - 2 * TINY.rows, rows=1, count=3))], ErrorCode.LOCAL, 0),
    "run's activations out of range": (lambda rt: [Command(Opcode.COMPUTE, dict(
        a_addr=TINY.spad_rows - 10, a_stride=5, rows=1, count=3))], ErrorCode.LOCAL, 0),
    "run longer than the scratchpad holds": (lambda rt: [Command(Opcode.COMPUTE, dict(
        rows=1, count=TINY.spad_rows // TINY.rows + 1))], ErrorCode.ILLEGAL_FIELD, 0),
    "preload out of range": (lambda rt: [Command(Opcode.PRELOAD, dict(
        spad_addr=TINY.spad_rows - 2))], ErrorCode.LOCAL, 0),
    "load outside memory": (lambda rt: [_load(rt), _load(rt, dram_addr=rt.mem_base
                                                         + rt.mem_size - 2)],
                            ErrorCode.WINDOW, 1),
    "load into missing rows": (lambda rt: [_load(rt, local_addr=TINY.spad_rows - 1, rows=2)],
                               ErrorCode.LOCAL, 0),
    "store of a bad length": (lambda rt: [Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.NONE, length=0, rows=1)))], ErrorCode.SHAPE, 0),
    "layernorm table out of range": (lambda rt: [Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.LAYERNORM, length=8, rows=1), to_spad=1,
        param_addr=TINY.acc_rows - 5))], ErrorCode.LOCAL, 0),
    "prescale without layernorm": (lambda rt: [Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.NONE, length=4, rows=1), to_spad=1, prescale=1))],
        ErrorCode.SHAPE, 0),
    "nop in the dispatcher": (lambda rt: [Command(Opcode.NOP, {"queue": Queue.LOAD}),
                                          Command(Opcode.NOP, {"queue": Queue.DISPATCH})],
                              ErrorCode.ILLEGAL_FIELD, 1),
    "deadlock": (lambda rt: [Command(Opcode.PRELOAD, {"spad_addr": 0}, wait_prev=True),
                             _load(rt), Command(Opcode.FENCE, {})], ErrorCode.DEADLOCK, 0),
    # A refused command ends the dispatch: what came before it still runs, and a
    # deadlock among those (a wait only a later command would answer) is the error.
    "refused behind a wait": (lambda rt: [Command(Opcode.PRELOAD, {"spad_addr": 0},
                                                  wait_prev=True), 0xF],
                              ErrorCode.DEADLOCK, 0),
    # ... and an error of theirs comes first.
    "refused behind a failing load": (lambda rt: [
        _load(rt, dram_addr=rt.mem_base + rt.mem_size - 2), 0xF], ErrorCode.WINDOW, 0),
    # More commands for a queue than it holds, ahead of the token they wait for.
    "queue full before its token": (lambda rt: [
        Command(Opcode.NOP, {"queue": Queue.STORE}, wait_prev=True)]
        + [Command(Opcode.NOP, {"queue": Queue.STORE})] * TINY.store_queue_depth
        + [Command(Opcode.NOP, {"queue": Queue.EXECUTE}, signal_next=True)],
        ErrorCode.DEADLOCK, 0),
}


def _words(rt, prog):
    """Command words; the commands the encoder refuses are built by hand, as a faulty
    driver would."""
    from dataclasses import replace

    from tessera.hw.isa import _tree, command_layout_for, header_layout

    hbase = command_layout_for(TINY)["header"].offset
    out = []
    for c in prog:
        if isinstance(c, int):
            out.append(c)
        elif c.opcode == Opcode.NOP and c.args["queue"] == Queue.DISPATCH:
            offset = _tree(TINY, Opcode.NOP)["queue"].offset
            out.append(encode(TINY, Command(Opcode.NOP, {"queue": Queue.LOAD}))
                       | Queue.DISPATCH.value << offset)
        elif c.opcode == Opcode.COMPUTE and c.args.get("count", 0) > TINY.spad_rows // TINY.rows:
            field = _tree(TINY, Opcode.COMPUTE)["count"]
            out.append(encode(TINY, replace(c, args=dict(c.args, count=0)))
                       | c.args["count"] << field.offset)
        elif c.opcode == Opcode.STORE and c.signal_next:
            word = encode(TINY, replace(c, signal_next=False))
            out.append(word | 1 << (hbase + header_layout()["signal_next"].offset))
        else:
            out.append(encode(TINY, c))
    return out


@RTL
def test_illegal_commands_stop_cleanly_with_their_index():
    """Each faulty program stops with the code and command index the golden executor
    reports, and the machine then runs a good program (nothing stuck)."""
    for name, (make, code, index) in CASES.items():
        rtl, gold = Runtime(TINY, "verilator"), Runtime(TINY, "golden")
        words = _words(rtl, make(rtl))
        r, g = rtl.run(words, timeout_cycles=20_000), gold.run(words)
        assert (r.error, r.error_index) == (code, index), f"{name}: {r.describe()}"
        assert (g.error, g.error_index, g.error_addr) == (code, index, r.error_addr), \
            f"{name}: {g.describe()}"
        if code == ErrorCode.WINDOW:
            assert r.error_addr == rtl.mem_base + rtl.mem_size - 2


def store_program(rt):
    """Accumulator rows and a LayerNorm table loaded by wide DMA loads, then stores of
    every operation: LayerNorm (gamma / beta from the table) to main memory and to the
    scratchpad, Softmax with 7-bit codes, a transposed store, GELU, requantization."""
    from tessera.sw.golden import gelu as ggelu
    from tessera.sw.golden import layernorm as gln
    from tessera.sw.golden import softmax as gsm
    from tessera.sw.golden.requant import dyadic_multiplier

    c = rt.config
    C = c.cols
    rng = np.random.default_rng(7)
    L, rows = 2 * C + 1, 3
    chunks = -(-L // C)
    x = rng.integers(-(1 << 20), 1 << 20, (rows * chunks + 8, C)).astype("<i4")
    ln = gln.layernorm_constants(rng.normal(1, 0.3, L), rng.normal(0, 0.5, L), 2.0 ** -5)
    table = layernorm_table(ln.gamma_q, ln.beta_q, C)     # int32 rows, 3 per chunk
    xa, ta = rt.alloc(x.nbytes), rt.alloc(table.size)
    rt.write(xa, x)
    rt.write(ta, table)
    out = rt.alloc(1024)
    lb = 4 * C

    def load(addr, n, local, signal):
        return Command(Opcode.LOAD, dict(dram_addr=addr, stride=lb, rows=n, row_bytes=lb,
                                         local_addr=local, to_acc=1, wide=1),
                       signal_next=signal)

    def store(op, length, nrows, acc_addr, wait=True, **kw):
        desc = dict(op=op, length=length, rows=nrows, m=kw.pop("m", 0), e=kw.pop("e", 0))
        if "consts" in kw:
            desc["consts"] = kw.pop("consts")
        return Command(Opcode.STORE, dict(desc=desc, acc_addr=acc_addr, **kw), wait_prev=wait)

    exp = gsm.exp_constants(2.0 ** -17)
    exp_c = {k: getattr(exp, k) for k in ("shift", "ln2_q", "q_b", "q_c", "out_shift")}
    gel = ggelu.gelu_constants(2.0 ** -14)
    gel_c = {k: getattr(gel, k) for k in ("shift", "q_b", "q_c", "poly_shift")}
    m, e = dyadic_multiplier(2.0 ** -13)
    relay = Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True, signal_next=True)
    return [
        # The loads finish in order: the second one's token says both are done.
        load(xa, len(x), 0, False), load(ta, table.size // lb, 100, True), relay,
        store(OutputOp.LAYERNORM, L, rows, 0, m=ln.m, e=ln.e, param_addr=100,
              dram_addr=out, stride=L + 3),
        store(OutputOp.LAYERNORM, L, rows, 0, wait=False, m=ln.m, e=ln.e, param_addr=100,
              to_spad=1, spad_addr=40),
        store(OutputOp.SOFTMAX, L, 2, 0, wait=False, e=1, consts={"exp": exp_c},
              to_spad=1, spad_addr=60),
        store(OutputOp.SOFTMAX, C, 2, 3, wait=False, consts={"exp": exp_c},
              dram_addr=out + 200, stride=C),
        store(OutputOp.REQUANT, C, 5, 2, wait=False, m=m, e=e, to_spad=1, transpose=1,
              spad_addr=80),
        store(OutputOp.GELU, 2 * C, 2, 4, wait=False, m=m, e=e, consts={"out": {"gelu": gel_c}},
              dram_addr=out + 300, stride=2 * C),
        # Blocked: chunk k of row r at acc row k * rows + r; to the scratchpad in the same
        # order, and to main memory as column blocks of a 5-row matrix.
        store(OutputOp.SOFTMAX, L, 3, 0, wait=False, e=1, consts={"exp": exp_c},
              to_spad=1, spad_addr=120, blocked=1),
        store(OutputOp.LAYERNORM, L, 3, 0, wait=False, m=ln.m, e=ln.e, param_addr=100,
              dram_addr=out + 400, stride=5 * C, blocked=1),
        store(OutputOp.REQUANT, 2 * C + 3, 2, 1, wait=False, m=m, e=e,
              dram_addr=out + 600, stride=5 * C, blocked=1),
    ]


@pytest.mark.parametrize("sim, cfg", [
    pytest.param("icarus", TINY, marks=RTL, id="icarus"),
    pytest.param("verilator", TINY, marks=RTL, id="verilator"),
    pytest.param("amaranth", TINY, id="amaranth"),
    pytest.param("verilator", LANES2, marks=RTL, id="verilator-lanes2")])
def test_store_operations_match_the_golden_executor(sim, cfg):
    """:func:`store_program` against golden, memories and rows. Two output lanes run on
    Verilator only: in Amaranth's simulator (about 40 s) they would repeat that run."""
    setup = Runtime(cfg, "golden")
    prog = store_program(setup)
    rtl, gold = Runtime(cfg, sim), Runtime(cfg, "golden")
    for rt in (rtl, gold):
        rt.image[:] = setup.image
        rt._top = setup._top
    assert gold.run(prog).ok
    gold.image[:] = setup.image
    diff = differential_check(rtl, gold, prog)
    assert diff.agree, diff.describe()


@pytest.mark.parametrize("sim, seq, dh", [pytest.param("verilator", 37, 8, marks=RTL),
                                          ("amaranth", 26, 4)])
def test_attention_head_matches_the_golden_executor(sim, seq, dh):
    """One head with a padding mask: K transposed on chip, Softmax into the scratchpad as
    P, P x V, the context stored; every byte and row against golden. On Verilator two
    query chunks; in Amaranth's simulator (about 400 cycles/s) one, half the cycles. (Icarus
    runs masked heads inside the two-layer encoder of ``tests/test_encoder.py``.)"""
    from tessera.sw.lower.attention import lower_attention_head
    from tessera.sw.lower.layout import from_blocked

    setup = Runtime(TINY, "golden")
    head, shape, want = place_head(setup, seq, dh, True, 5)
    prog = lower_attention_head(TINY, head)
    rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
    for rt in (rtl, gold):
        rt.image[:] = setup.image
        rt._top = setup._top
    diff = differential_check(rtl, gold, prog)
    assert diff.agree, diff.describe()
    assert (from_blocked(rtl.read(head.ctx, shape.nbytes), shape) == want).all()


@RTL
@pytest.mark.parametrize("sim, extended, cfg", [("verilator", False, TINY),
                                               ("verilator", True, TINY),
                                               ("verilator", True, LANES2)],
                         ids=["verilator", "verilator-extended", "verilator-extended-lanes2"])
def test_bert_layer_equals_the_integer_model(sim, extended, cfg):
    """A small quantized BERT layer (QKV, two masked heads, output projection with the
    residual and LayerNorm, FFN with i-GELU, residual and LayerNorm) on the generated
    Verilog equals the integer model bit for bit; the extended dataflow's LayerNorms
    prescale each column block. (Icarus runs the extended dataflow's layers in the
    two-layer encoder of ``tests/test_encoder.py``.)"""
    from tessera.sw.lower.bert import run_bert_layer
    from tessera.sw.models.quantize import (
        integer_bert_layer,
        quantize_activation,
        quantize_bert_layer,
    )
    from tessera.sw.models.reference import random_bert_weights

    rng = np.random.default_rng(4)
    S, H, heads, F = 10, 32, 2, 32
    w = random_bert_weights(H, heads, F, rng)
    from tessera.sw.models.quantize import EXTENDED

    ql = quantize_bert_layer(w, [rng.normal(0, 1, (S, H)) for _ in range(2)],
                             **(EXTENDED if extended else {}))
    assert (ql.ln1_prescale is not None) == extended
    xq = quantize_activation(rng.normal(0, 1, (S, H)), ql.in_scale)
    mask = np.ones(S, bool)
    mask[-3:] = False
    got, results, _ = run_bert_layer(Runtime(cfg, sim), ql, xq, mask, check=True)
    assert (got == integer_bert_layer(xq, ql, mask)).all()
    c = results["layer"].counters
    assert c["cycles"] > 0
    # Softmax, GELU and LayerNorm stores ran; some of their cycles had no matrix work.
    assert 0 < c["nonlinear_exposed"] <= c["nonlinear_busy"] < c["cycles"]


@RTL
@pytest.mark.parametrize("sim, smooth", [("icarus", False), ("verilator", True)])
def test_gpt2_prefill_and_decode_equal_the_integer_model(sim, smooth):
    """A small GPT-2 block: a causal prefill of 7 tokens writes the KV cache in main
    memory, then two decode steps append to it; each step's output equals the integer
    model bit for bit (per-group residual scales and prescaled LayerNorms on Verilator)."""
    from tessera.sw.lower.gpt2 import place_gpt2_layer, read_kv_cache, run_gpt2_step
    from tessera.sw.models import gpt2_quantize as G
    from tessera.sw.models.quantize import quantize_activation
    from tessera.sw.models.reference import random_gpt2_weights

    rng = np.random.default_rng(6)
    S, H, heads = 9, 16, 2
    w = random_gpt2_weights(H, heads, 32, rng)
    ql = G.quantize_gpt2_layer(w, [rng.normal(0, 1, (S, H)) for _ in range(2)],
                               **({"smooth": G.RESIDUAL_PER_GROUP} if smooth else {}))
    xq = quantize_activation(rng.normal(0, 1, (S, H)), ql.in_scale)
    want = G.integer_gpt2_layer(xq, ql)
    rt = Runtime(TINY, sim)
    p = place_gpt2_layer(rt, ql, S)
    got, _, _ = run_gpt2_step(rt, ql, p, xq[:7], 0, check=True)
    assert (got == want[:7]).all()
    cache = G.Int8KVCache.for_layer(ql)
    G.integer_gpt2_decode_step(xq[:7], ql, cache)
    k, v = read_kv_cache(rt, ql, p, 7)
    assert (k == cache.k).all() and (v == cache.v).all()
    for t in (7, 8):
        got, results, _ = run_gpt2_step(rt, ql, p, xq[t:t + 1], t, check=True)
        assert (got == want[t:t + 1]).all()
        assert results["layer"].counters["cycles"] > 0


@RTL
def test_decode_steps_reading_the_k_transposed_cache_on_verilator():
    """A head of 64 on tiny: a prefill of 24 tokens writes its whole key blocks into the
    K^T cache; decode steps up to 31 keys transpose every key and write back the blocks
    they complete, later ones (transposing them all would not fit tiny's accumulator) read
    the cache's tiles. Each output equals the integer model, and the cache holds every
    whole block of keys."""
    from tessera.sw.lower.gpt2 import place_gpt2_layer, read_kt_cache, run_gpt2_step
    from tessera.sw.models import gpt2_quantize as G
    from tessera.sw.models.quantize import quantize_activation
    from tessera.sw.models.reference import random_gpt2_weights

    rng = np.random.default_rng(7)
    S, H = 36, 64
    w = random_gpt2_weights(H, 1, 32, rng)
    ql = G.quantize_gpt2_layer(w, [rng.normal(0, 1, (S, H)) for _ in range(2)])
    xq = quantize_activation(rng.normal(0, 1, (S, H)), ql.in_scale)
    want = G.integer_gpt2_layer(xq, ql)
    rt = Runtime(TINY, "verilator")
    p = place_gpt2_layer(rt, ql, S)
    got, _, _ = run_gpt2_step(rt, ql, p, xq[:24], 0, check=True)
    assert (got == want[:24]).all()
    read = []
    for t in range(24, S):
        got, _, phases = run_gpt2_step(rt, ql, p, xq[t:t + 1], t, check=True)
        assert (got == want[t:t + 1]).all()
        read.append(any(c.opcode == Opcode.LOAD and c.args["dram_addr"] == p.kt_of(0, H, 4)
                        for c in phases["attention"]))
    assert read == [t >= 31 for t in range(24, S)]
    cache = G.Int8KVCache.for_layer(ql)
    G.integer_gpt2_decode_step(xq, ql, cache)
    assert (read_kt_cache(rt, ql, p, S) == cache.k).all()
