# amaranth: UnusedElaboratable=no
# (the constructor tests make components that are rightly never elaborated)
"""The output path in Amaranth's simulator against the golden model, bit for bit."""

import math

import numpy as np
import pytest

from tessera.hw import output_path as op_
from tessera.hw.config import TesseraConfig, preset
from tessera.hw.intmath import IntSqrt, Reciprocal
from tessera.hw.output_path import OutputDigit, OutputOp, descriptor_layout
from tessera.sim.amaranth_streams import random_pauses
from tessera.sim.output_path_amaranth import run_jobs, run_unit
from tessera.sim.output_path_jobs import ROW_KINDS, OutputJob, intmath_edges, random_job
from tessera.sw.golden import gelu as ggelu
from tessera.sw.golden import intmath as gint
from tessera.sw.golden import layernorm as gln
from tessera.sw.golden import requant as grq
from tessera.sw.golden import softmax as gsm

SMALL = dict(rows=4, spad_kib=16, acc_kib=8, bus_bits=64)
TINY = preset("tiny")
CONFIGS = {
    "tiny": TINY,
    "cols3": TesseraConfig(cols=3, max_row_len=64, **SMALL),
    "cols2": TesseraConfig(cols=2, max_row_len=16, **SMALL),
    "cols5-acc24": TesseraConfig(cols=5, acc_bits=24, max_row_len=64, **SMALL),
    # Fewer lanes than columns: each chunk in pieces (two; three).
    "tiny-lanes2": TINY.replace(output_lanes=2),
    "cols6-lanes2": TesseraConfig(cols=6, output_lanes=2, max_row_len=64, **SMALL),
}


def pauses(on: bool, seed: int) -> dict:
    p = 0.3 if on else 0.0
    return dict(cmd_pause=random_pauses(p, seed), row_pause=random_pauses(p, seed + 1),
                param_pause=random_pauses(p + 0.1 if on else 0.0, seed + 2),
                out_pause=random_pauses(p + 0.2 if on else 0.0, seed + 3))


def lengths(cols: int, max_len: int) -> list[int]:
    """Row lengths around the chunk size: 1, multiples of cols and their neighbours."""
    ls = {1, cols, cols + 1, 2 * cols - 1, 3 * cols + 2, max(1, cols - 1)}
    return sorted(n for n in ls if n <= max_len)


@pytest.mark.parametrize("stalls", [False, True], ids=["flowing", "stalls"])
@pytest.mark.parametrize("op", list(OutputOp), ids=lambda o: o.name)
def test_every_op_and_row_kind_matches_golden(op, stalls):
    cfg = TINY
    rng = np.random.default_rng(op.value * 2 + stalls)
    jobs = [random_job(cfg, op, 1 + i % 3, n, rng, ROW_KINDS[i % len(ROW_KINDS)])
            for i, n in enumerate(lengths(cfg.cols, cfg.max_row_len) * 2)]
    run = run_jobs(cfg, jobs, **pauses(stalls, op.value))
    run.check()
    assert not run.error and run.idle


@pytest.mark.parametrize("digit", [OutputDigit.HIGH, OutputDigit.LOW], ids=lambda d: d.name)
@pytest.mark.parametrize("name", ["tiny", "cols6-lanes2"])
def test_digits_of_wide_activations_match_golden(name, digit):
    """Every operation but SOFTMAX writes a digit of its result requantized to 16 bits; the
    rows' kinds and random scales reach both clamps, ReLU's zeros and every digit value."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(digit.value)
    ops = [o for o in OutputOp if o != OutputOp.SOFTMAX]
    jobs = [random_job(cfg, op, 2, n, rng, ROW_KINDS[i % len(ROW_KINDS)], digit=digit)
            for op in ops for i, n in enumerate(lengths(cfg.cols, cfg.max_row_len))]
    run = run_jobs(cfg, jobs, **pauses(True, digit.value))
    run.check()
    assert not run.error and run.idle
    got = run.data.astype(np.int64)
    lo, hi = (-128, 127) if digit == OutputDigit.HIGH else (-64, 63)
    assert got.min() >= lo and got.max() <= hi
    if digit == OutputDigit.HIGH:       # both clamps
        assert {lo, hi, 0} <= set(got.ravel().tolist()), "the clamps are not reached"
    else:
        assert got.min() < lo // 2 and got.max() > hi // 2, "the low digits are not spread"


@pytest.mark.parametrize("name", ["cols3", "cols2", "cols5-acc24", "tiny-lanes2",
                                  "cols6-lanes2"])
def test_other_configurations_with_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(len(name))
    jobs = [random_job(cfg, OutputOp(i % 6), 1 + i % 2,
                       int(rng.integers(1, min(cfg.max_row_len, 4 * cfg.cols + 3) + 1)), rng,
                       ROW_KINDS[i % len(ROW_KINDS)]) for i in range(12)]
    run = run_jobs(cfg, jobs, **pauses(True, 7))
    run.check()
    assert not run.error and run.idle


def test_longest_rows():
    # Rows of max_row_len: the statistics' widths and the last chunk's mask at the limit.
    cfg = TINY
    rng = np.random.default_rng(3)
    L = cfg.max_row_len
    jobs = [random_job(cfg, op, 1, L, rng, kind)
            for op in (OutputOp.SOFTMAX, OutputOp.LAYERNORM)
            for kind in ("equal", "extremes", "one_hot")]
    run = run_jobs(cfg, jobs, **pauses(True, 11))
    run.check()


def test_extreme_constants():
    # The descriptor's widths hold every constant the golden model can make: input scales
    # at both ends of their ranges, int16 gamma and beta at the limits of its 46 bits.
    cfg = TINY
    rng = np.random.default_rng(5)
    jobs = []
    for scale in (2.0 ** -40, 2.0 ** -20, 1.0):
        for kind in ("random", "extremes"):
            j = random_job(cfg, OutputOp.GELU, 2, 6, rng, kind)
            j.gelu = ggelu.gelu_constants(scale)
            jobs.append(j)
            j = random_job(cfg, OutputOp.SOFTMAX, 2, 6, rng, kind)
            j.exp = gsm.exp_constants(scale)
            jobs.append(j)
    for m, e in ((0, 0), ((1 << 31) - 1, 0), ((1 << 31) - 1, 63), (1, 63), (12345, 1)):
        jobs.append(OutputJob(OutputOp.REQUANT, random_job(cfg, 0, 2, 5, rng, "extremes").x,
                              m=m, e=e))
    L = 7
    gamma = rng.choice([-(1 << 15), (1 << 15) - 1, 0, 1, -1], L).astype(np.int16)
    beta = rng.choice([-(1 << 45) + 1, (1 << 45) - 1, 0], L).astype(np.int64)
    for m, e in (grq.dyadic_multiplier(2.0 ** -20), grq.dyadic_multiplier(1.5)):
        consts = gln.LayerNormConstants(gamma_q=gamma, beta_q=beta, m=m, e=e,
                                        gamma_scale=1.0, out_scale=1.0)
        for kind in ("random", "extremes", "one_hot"):
            jobs.append(OutputJob(OutputOp.LAYERNORM, random_job(cfg, 0, 2, L, rng, kind).x,
                                  ln=consts))
    run = run_jobs(cfg, jobs, **pauses(True, 13))
    run.check()


def test_every_input_shift_of_gelu_and_softmax():
    # Input scales from 2**-40 to 1 give every shift the constants allow, left (t < 0)
    # and right: the units keep only the bits under B (GELU) or the clamp (Softmax) and a
    # flag for any bit above, which must agree with the golden model's full-width shift.
    cfg = TINY
    rng = np.random.default_rng(9)
    shifts = {"gelu": set(), "exp": set()}
    jobs = []
    for k in range(41):
        for kind in ("random", "extremes"):
            j = random_job(cfg, OutputOp.GELU, 1, 5, rng, kind)
            j.gelu = ggelu.gelu_constants(2.0 ** -k)
            shifts["gelu"].add(j.gelu.shift)
            jobs.append(j)
            j = random_job(cfg, OutputOp.SOFTMAX, 1, 5, rng, kind)
            j.exp = gsm.exp_constants(2.0 ** -k)
            shifts["exp"].add(j.exp.shift)
            jobs.append(j)
    assert min(shifts["gelu"]) < 0 < max(shifts["gelu"])
    assert min(shifts["exp"]) < 0 < max(shifts["exp"])
    run_jobs(cfg, jobs).check()


@pytest.mark.parametrize("name", ["tiny", "tiny-lanes2"])
def test_every_pass_takes_lanes_elements_per_cycle(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(9)
    L = 6 * cfg.cols + 1
    lanes = cfg.out_lanes
    # Cycles a chunk of the long rows takes (one per piece of out_lanes elements); a chunk
    # is taken with its last piece.
    chunks = -(-L // cfg.cols)
    pieces = np.array([-(-min(cfg.cols, L - i * cfg.cols) // lanes) for i in range(chunks)])
    for op in OutputOp:
        jobs = [random_job(cfg, op, 3, L, rng), random_job(cfg, op, 1, 5, rng)]
        run = run_jobs(cfg, jobs)
        run.check()
        rc, starts = run.row_cycles, run.pass_starts[0]
        passes = op_.PASSES[op]
        for s in starts:  # within a pass: one piece every cycle
            assert (np.diff(rc[s:s + chunks]) == pieces[1:]).all(), op
        # Idle cycles before a pass's first piece: between passes, then between rows.
        gaps = [int(rc[s] - (pieces[0] - 1) - rc[s - 1] - 1) for s in starts[1:]]
        want = list(op_.gap_cycles(op, lanes)) + [0]
        assert gaps == (want * 3)[:len(gaps)], (op, gaps, want)
        assert rc[starts[passes]] - rc[starts[0]] == op_.row_cycles(op, L, lanes)
        first_out = rc[starts[passes - 1]]
        assert run.out_cycles[0] - first_out == op_.latency_cycles(op)
        # Results leave as fast as they come.
        assert (np.diff(run.out_cycles[:chunks]) == pieces[1:]).all()
        nxt = run.pass_starts[1][0]
        first_piece = rc[nxt] - (min(-(-5 // lanes), cfg.cols // lanes) - 1)
        assert first_piece - rc[nxt - 1] - 1 == op_.command_gap_cycles(op)


def test_heavy_backpressure_loses_and_duplicates_nothing():
    cfg = TINY
    rng = np.random.default_rng(21)
    jobs = [random_job(cfg, OutputOp(i % 6), 2, 9, rng) for i in range(6)]
    run = run_jobs(cfg, jobs, out_pause=random_pauses(0.85, 1), row_pause=random_pauses(0.5, 2))
    run.check()


def blocked_for(cycles: int):
    """A pause that holds the output closed for the first ``cycles`` cycles, then never."""
    calls = [0]

    def pause() -> bool:
        calls[0] += 1
        return calls[0] <= cycles
    return pause


@pytest.mark.parametrize("op", [OutputOp.REQUANT, OutputOp.SOFTMAX], ids=lambda o: o.name)
def test_a_closed_output_stops_only_the_write_out_chunks_past_the_fifo(op):
    # The pipelines never stall: a write-out chunk is taken while the output FIFO has a
    # place for it and everything ahead of it, so exactly OUT_FIFO_DEPTH of them go in
    # while the output is closed; statistics passes (Softmax's first two) leave nothing and
    # go on, up to the row whose write-out has no place.
    cfg, depth, closed = TINY, op_.OUT_FIFO_DEPTH, 1500
    per_pass = 4                    # chunks per pass: rows of 4 * cols elements
    rows = depth // per_pass + 2
    rng = np.random.default_rng(31)
    run = run_jobs(cfg, [random_job(cfg, op, rows, per_pass * cfg.cols, rng)],
                   out_pause=blocked_for(closed))
    run.check()
    taken = int((np.asarray(run.row_cycles) < closed - 10).sum())
    passes = op_.PASSES[op]
    assert taken == depth * passes + (passes - 1) * per_pass
    assert run.out_cycles[0] >= closed - 1


def test_bad_descriptors_are_dropped_and_flagged():
    cfg = TINY
    rng = np.random.default_rng(4)
    good = random_job(cfg, OutputOp.SOFTMAX, 2, 5, rng)
    jobs = [
        random_job(cfg, OutputOp.REQUANT, 0, 3, rng),   # no rows: nothing to do, no error
        good,
    ]
    run = run_jobs(cfg, jobs)
    run.check()
    assert not run.error
    for patch in ({"length": 0}, {"length": cfg.max_row_len + 1}, {"op": 6}, {"op": 7}):
        bad = random_job(cfg, OutputOp.REQUANT, 2, 3, rng)
        bad.patch = patch
        assert bad.dropped(cfg)
        run = run_jobs(cfg, [good, bad, random_job(cfg, OutputOp.GELU, 1, 6, rng)])
        run.check()  # the bad command takes no chunks, the next one runs normally
        assert run.error and run.idle, patch
        assert not run.error_after_clear


def test_wrong_last_bit_is_flagged_and_the_length_rules():
    cfg = TINY
    rng = np.random.default_rng(6)
    job = random_job(cfg, OutputOp.LAYERNORM, 2, 9, rng)
    job.flip_last = 4
    run = run_jobs(cfg, [job, random_job(cfg, OutputOp.RELU, 1, 3, rng)])
    run.check()
    assert run.error


def test_descriptor_layout_holds_the_golden_constants():
    layout = descriptor_layout(TINY)
    for scale in (2.0 ** -40, 2.0 ** -13, 1.0):
        g = ggelu.gelu_constants(scale)
        x = gsm.exp_constants(scale)
        gk = {"shift": g.shift, "q_b": g.q_b, "q_c": g.q_c, "poly_shift": g.poly_shift}
        for consts in ({"out": {"gelu": gk, "digit": OutputDigit.LOW}},
                       {"exp": {"shift": x.shift, "ln2_q": x.ln2_q, "q_b": x.q_b,
                                "q_c": x.q_c, "out_shift": x.out_shift}}):
            fields = {"op": OutputOp.GELU, "length": TINY.max_row_len, "rows": 65535,
                      "m": (1 << 31) - 1, "e": 63, "consts": consts}
            back = layout.from_bits(layout.const(fields).as_bits())
            if "out" in consts:
                for k, v in gk.items():
                    assert back.consts.out.gelu[k] == v, k
                assert back.consts.out.digit == OutputDigit.LOW
                continue
            for k, v in consts["exp"].items():
                assert back.consts.exp[k] == v, k
            assert back.length == TINY.max_row_len and back.op == OutputOp.GELU


@pytest.mark.parametrize("stalls", [False, True], ids=["flowing", "stalls"])
def test_square_root_edges_and_latency(stalls):
    for steps in (1, 2, 3):
        dut = IntSqrt(43, steps)
        rng = np.random.default_rng(steps)
        ops = intmath_edges(43) + [int(v) for v in rng.integers(0, 1 << 43, 20)]
        kw = dict(req_pause=random_pauses(0.3, 1), resp_pause=random_pauses(0.4, 2)) \
            if stalls else {}
        results, latencies = run_unit(dut, ops, **kw)
        assert results == gint.isqrt(np.array(ops, dtype=np.int64)).tolist()
        assert results == [math.isqrt(v) for v in ops]
        if stalls:
            assert min(latencies) >= dut.latency_cycles
        else:  # the documented latency, for every operand: the worst case is every case
            assert set(latencies) == {dut.latency_cycles} == {math.ceil(22 / steps) + 1}


@pytest.mark.parametrize("k, d_bits", [(32, 32), (31, 22), (5, 4)])
def test_reciprocal_edges_and_latency(k, d_bits):
    for steps in (1, 2, 3, 4):
        dut = Reciprocal(k, d_bits, steps)
        ops = intmath_edges(d_bits)
        results, latencies = run_unit(dut, ops)
        assert results == gint.reciprocal(np.array(ops, dtype=np.int64), k).tolist()
        assert set(latencies) == {dut.latency_cycles} == {math.ceil((k + 1) / steps) + 1}


def test_constructors_reject_what_they_cannot_build():
    with pytest.raises(ValueError, match="in_bits must be an integer from 1 to 64, not 0"):
        IntSqrt(0)
    with pytest.raises(ValueError, match="k must be an integer from 0 to 62, not 63"):
        Reciprocal(63, 8)
    with pytest.raises(ValueError, match="steps_per_cycle must be a positive integer, not 0"):
        Reciprocal(8, 8, 0)


def test_pass_counts_and_limits_match_the_golden_model():
    assert op_.MAX_ROW_LEN == gsm.MAX_ROW_LEN == gln.MAX_ROW_LEN
    assert op_.PASSES == {OutputOp.NONE: 1, OutputOp.REQUANT: 1, OutputOp.RELU: 1,
                          OutputOp.GELU: 1, OutputOp.SOFTMAX: 3, OutputOp.LAYERNORM: 3}
