"""Matrix-product lowering and the runtime on the golden backend: blocked layouts, plans,
tiled products of any shape against the golden matmul, token discipline, prefixes and the
differential check."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode, Queue
from tessera.sw.golden.executor import Machine
from tessera.sw.lower.attention import AttentionHead, longest_keys, lower_attention
from tessera.sw.lower.gemm import GemmBuffers, OutputSpec, lower_gemm, reference_gemm, run_gemm
from tessera.sw.lower.layout import Blocked, bias_bytes, from_blocked, to_blocked
from tessera.sw.lower.plan import GemmShape, LoweringError, plan_gemm
from tessera.sw.runtime import Runtime
from tessera.sw.runtime.diff import differential_check, prefix_program

TINY = preset("tiny")


def test_blocked_layout_round_trip_and_padding():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (5, 7))
    shape = Blocked(5, 7, 4, row_multiple=4)
    raw = to_blocked(x, shape)
    assert raw.size == shape.nbytes == 2 * 8 * 4
    assert (from_blocked(raw, shape) == x).all()
    # Block 1, row 2 holds columns 4..6 of row 2 and a zero.
    off = shape.offset(2, 1)
    assert raw[off:off + 4].view(np.int8).tolist() == x[2, 4:].tolist() + [0]
    assert raw[shape.offset(5, 0):shape.offset(8, 0)].sum() == 0   # padding rows
    with pytest.raises(ValueError, match="outside int8"):
        to_blocked(x * 100, shape)
    assert bias_bytes(np.array([1, -2]), 4).view("<i4").tolist() == [1, -2, 0, 0]


def gemm_on(rt, a, b, bias, output, plan=None):
    got, prog, result, _ = run_gemm(rt, a, b, bias, output, plan, check=True)
    return got, prog, result


def expected(a, b, bias, output, cfg):
    return reference_gemm(cfg, a, b, bias, output)


def output_spec(kind: str) -> OutputSpec:
    if kind == "gelu":
        return OutputSpec.gelu_of(1 / 2000, 0.05)
    return OutputSpec.requant(1 / 2500, relu=kind == "relu")


@pytest.mark.parametrize("shape, bias, kind", [
    ((1, 1, 1), False, "requant"),
    ((4, 4, 4), True, "relu"),
    ((10, 13, 9), True, "requant"),
    ((37, 50, 21), False, "gelu"),
    ((64, 8, 70), True, "gelu"),
    ((3, 200, 5), True, "requant"),
    ((1, 70, 45), True, "requant"),
])
def test_tiled_products_of_any_shape_match_the_golden_matmul(shape, bias, kind):
    rng = np.random.default_rng(sum(shape))
    M, K, N = shape
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bv = rng.integers(-2**20, 2**20, N) if bias else None
    out = output_spec(kind)
    got, prog, result = gemm_on(Runtime(TINY, "golden"), a, b, bv, out)
    assert (got == expected(a, b, bv, out, TINY)).all()
    assert result.counters["macs"] >= M * K * N


@pytest.mark.parametrize("mt, nt, kt, order, a_slots, b_slots", [
    (4, 1, 1, "mn", 2, 2), (8, 2, 2, "nm", 2, 2), (12, 3, 1, "nm", 2, 2), (4, 2, 4, "mn", 2, 2),
    (4, 1, 1, "mn", 3, 3), (8, 2, 2, "nm", 2, 3), (12, 3, 1, "nm", 3, 2)])
def test_every_tiling_and_loop_order_is_correct(mt, nt, kt, order, a_slots, b_slots):
    """Plans the cost model would not pick still compute the same product (with two or
    three scratchpad slots per operand: loads one or two steps ahead)."""
    rng = np.random.default_rng(mt * nt * kt)
    M, K, N = 22, 19, 17
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bv = rng.integers(-5000, 5000, N)
    best = plan_gemm(TINY, GemmShape(M, K, N), bias=True)
    from dataclasses import replace
    plan = replace(best, mt=mt, nt=nt, kt=kt, order=order, a_slots=a_slots,
                   b_slots=b_slots)
    out = output_spec("requant")
    got, prog, _ = gemm_on(Runtime(TINY, "golden"), a, b, bv, out, plan)
    assert (got == expected(a, b, bv, out, TINY)).all()


def test_stream_is_topologically_ordered_and_tokens_balance():
    """Every wait's token comes from a command earlier in the stream (so the dispatcher can
    never block behind a missing producer), and every signal is taken."""
    cfg = preset("default")
    plan = plan_gemm(cfg, GemmShape(300, 200, 100), bias=True)
    prog = lower_gemm(cfg, plan, GemmBuffers(0, 1 << 20, 2 << 20, 3 << 20), OutputSpec())
    chain = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)
    produced, consumed = {}, {}
    for cmd in prog:
        q = cmd.queue
        if q not in chain:
            continue
        i = chain.index(q)
        for side, d in (("prev", -1), ("next", 1)):
            if getattr(cmd, f"wait_{side}"):
                key = (chain[i + d], q)
                consumed[key] = consumed.get(key, 0) + 1
                assert consumed[key] <= produced.get(key, 0), f"wait before its signal: {cmd}"
            if getattr(cmd, f"signal_{side}"):
                key = (q, chain[i + d])
                produced[key] = produced.get(key, 0) + 1
    assert produced == consumed
    assert prog[-1].opcode == Opcode.FINISH


def test_plans_fit_the_memories_and_refuse_what_cannot_run():
    cfg = preset("default")
    plan = plan_gemm(cfg, GemmShape(512, 512, 512))
    assert plan.mt * plan.nt <= cfg.acc_rows // 2
    assert plan.a_slots * plan.mt * plan.kt + plan.b_slots * plan.kt * 16 * plan.nt \
        <= cfg.spad_rows
    assert plan.est_utilization > 0.9
    with pytest.raises(LoweringError, match="weight-stationary"):
        plan_gemm(cfg.replace(dataflow="os"), GemmShape(8, 8, 8))
    with pytest.raises(LoweringError, match="square"):
        plan_gemm(cfg.replace(cols=8), GemmShape(8, 8, 8))
    with pytest.raises(LoweringError, match="positive"):
        GemmShape(0, 8, 8)


def test_runtime_memory_errors():
    rt = Runtime(TINY, "golden", mem_size=4096)
    rt.alloc(4000)
    with pytest.raises(MemoryError, match="main memory is full"):
        rt.alloc(200)
    with pytest.raises(ValueError, match="outside main memory"):
        rt.write(rt.mem_base + 4090, b"\0" * 10)
    with pytest.raises(ValueError, match="unknown backend"):
        Runtime(TINY, "modelsim")


def test_runtime_reports_the_failing_command():
    rt = Runtime(TINY, "golden", mem_size=4096)
    prog = [Command(Opcode.CONFIG, {"os": 0}),
            Command(Opcode.LOAD, dict(dram_addr=rt.mem_base + 4000, stride=64, rows=4,
                                      row_bytes=4))]
    result = rt.run(prog)
    assert result.error == ErrorCode.WINDOW and result.error_index == 1
    assert "WINDOW at command 1" in result.describe()


def test_prefix_leaves_out_commands_waiting_for_later_ones():
    load = Command(Opcode.LOAD, dict(rows=1, row_bytes=4), signal_next=True)
    compute = Command(Opcode.PRELOAD, {"spad_addr": 0}, wait_prev=True)
    late = Command(Opcode.LOAD, dict(rows=1, row_bytes=4), wait_next=True)
    free = Command(Opcode.NOP, {"queue": Queue.EXECUTE}, signal_prev=True)
    prog = [load, compute, late, Command(Opcode.LOAD, dict(rows=1, row_bytes=4)), free]
    # The first four: the third waits for the NOP after them, and the fourth is behind it.
    assert [c.opcode for c in prefix_program(prog, 4)] == [Opcode.LOAD, Opcode.PRELOAD,
                                                           Opcode.FINISH]
    assert len(prefix_program(prog, 5)) == 6


def test_differential_check_names_the_first_differing_command():
    """A golden model with one wrong COMPUTE (it forgets to accumulate into the first
    accumulator row of the second tile) stands in for faulty hardware."""
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, (9, 10)), rng.integers(-128, 128, (10, 12))
    good = Runtime(TINY, "golden")
    _, prog, _ = gemm_on(good, a, b, None, output_spec("requant"))
    accumulating = [(i, c.args["acc_addr"]) for i, c in enumerate(prog)
                    if c.opcode == Opcode.COMPUTE and c.args["acc_addr"] != 0
                    and (c.args["accumulate"] or c.args["count"] > 1)]
    culprit, row = accumulating[0]

    class Faulty(Machine):
        def _compute(self, a_addr, b_addr, rows, acc_addr, accumulate, **run):
            # (A run's tiles come back here one by one, without ``count``.)
            super()._compute(a_addr, b_addr, rows, acc_addr,
                             0 if acc_addr == row else accumulate, **run)

    bad = Runtime(TINY, "golden", machine=Faulty)
    bad.image[:] = good.image
    bad._top = good._top
    good.image[:] = bad.image
    diff = differential_check(bad, good, prog)
    assert diff.index == culprit, diff.describe()
    assert "accumulator rows differ" in diff.what
    assert differential_check(good, good, prog).agree


def _residual_case(rng, cfg, M, K, N):
    d = cfg.rows
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bias = rng.integers(-5000, 5000, N)
    res = rng.integers(-128, 128, (M, N))
    nb = -(-N // d)
    scales = [int(s) for s in rng.integers(1, 300, nb)]
    rt = Runtime(cfg, "golden")
    A, B, C = Blocked(M, K, d), Blocked(K, N, d, d), Blocked(M, N, d)
    at = {n: rt.alloc(s.nbytes) for n, s in (("a", A), ("b", B), ("c", C), ("r", C))}
    rt.write(at["a"], to_blocked(a, A))
    rt.write(at["b"], to_blocked(b, B))
    rt.write(at["r"], to_blocked(res, C))
    raw = bias_bytes(bias, d)
    at["bias"] = rt.alloc(raw.size)
    rt.write(at["bias"], raw)
    per_col = np.repeat(scales, d)[:N]
    acc = gmm_matmul(a, b, cfg) + bias + res * per_col
    buffers = GemmBuffers(at["a"], at["b"], at["c"], at["bias"], at["r"], tuple(scales))
    return rt, acc, buffers, C


def gmm_matmul(a, b, cfg):
    from tessera.sw.golden.matmul import matmul
    return matmul(a, b, cfg)


def test_residual_bias_and_per_block_requantization():
    cfg = TINY
    rng = np.random.default_rng(21)
    M, K, N = 19, 12, 14
    rt, acc, buffers, C = _residual_case(rng, cfg, M, K, N)
    nb = -(-N // cfg.rows)
    outs = [OutputSpec.requant(1 / (3000 + 500 * j), relu=j % 2 == 1) for j in range(nb)]
    plan = plan_gemm(cfg, GemmShape(M, K, N), bias=True)
    rt.run(lower_gemm(cfg, plan, buffers, outs), check=True)
    got = from_blocked(rt.read(buffers.c, C.nbytes), C)
    for j, o in enumerate(outs):
        cols = slice(j * cfg.rows, (j + 1) * cfg.rows)
        assert (got[:, cols] == o.reference(acc[:, cols])).all()


@pytest.mark.parametrize("cfg_name, M, K, N", [("tiny", 13, 10, 22), ("default", 40, 48, 96)])
def test_layernorm_output_over_whole_rows(cfg_name, M, K, N):
    from tessera.sw.golden import layernorm as gln
    from tessera.sw.golden.layernorm import layernorm_table
    from tessera.sw.lower.gemm import LayerNormOutput, layernorm_rows

    cfg = preset(cfg_name)
    rng = np.random.default_rng(M)
    rt, acc, buffers, C = _residual_case(rng, cfg, M, K, N)
    ln = gln.layernorm_constants(rng.normal(1, 0.2, N), rng.normal(0, 0.3, N), 2.0 ** -5)
    raw = layernorm_table(ln.gamma_q, ln.beta_q, cfg.cols)
    table = rt.alloc(raw.size)
    rt.write(table, raw)
    plan = plan_gemm(cfg, GemmShape(M, K, N), bias=True, full_rows=True,
                     reserve=layernorm_rows(cfg, N))
    assert plan.nt == plan.n_blocks
    prog = lower_gemm(cfg, plan, buffers, OutputSpec(), layernorm=LayerNormOutput(
        table, ln.m, ln.e))
    rt.run(prog, check=True)
    got = from_blocked(rt.read(buffers.c, C.nbytes), C)
    assert (got == gln.i_layernorm(acc.astype(np.int32), ln)).all()


@pytest.mark.parametrize("name, dh", [("tiny", 16), ("small", 32), ("default", 64)])
def test_longest_keys_is_where_the_attention_lowering_stops(name, dh):
    """``longest_keys`` (what `tessera run` checks before any work) is the lowering's own
    limit: one key more is refused, by the lowering itself."""
    c = preset(name)
    exp = {"shift": 0, "ln2_q": 1, "q_b": 1, "q_c": 1, "out_shift": 0}
    for decode, cached in ((False, False), (True, False), (False, True), (True, True)):
        most = longest_keys(c, dh, decode, cached)
        assert most >= c.rows
        kt = {"kt": 0, "ident": 0} if cached else {}
        heads = [AttentionHead(1 if decode else t, dh, 0, 0, 0, 0, dh, exp, 1, 0, keys=t,
                               **kt) for t in (most, most + 1)]
        assert lower_attention(c, heads[:1])
        with pytest.raises(LoweringError):
            lower_attention(c, heads[1:])
