"""The generated Verilog of the output path on Icarus and Verilator, against the golden model
bit for bit. The tiny preset (4 lanes, rows of up to 256); each build is shared by the tests
of its simulator."""

import json
import math

import numpy as np
import pytest

from tessera.hw import output_path as op_
from tessera.hw.config import preset
from tessera.hw.output_path import OutputDigit, OutputOp
from tessera.sim.output_path_jobs import intmath_edges, random_job
from tessera.sim.output_path_rtl import INTMATH_UNITS, run_intmath, run_jobs
from tessera.sw.cli import main
from tessera.sw.golden import intmath as gint

pytestmark = pytest.mark.rtl

SIMS = ["icarus", "verilator"]
CFG = preset("tiny")
KINDS = ("random", "extremes", "equal", "one_hot")
LENGTHS = (1, 3, 4, 9)  # one element, short of a chunk, one chunk, not a multiple of cols


def all_ops_jobs(seed: int):
    rng = np.random.default_rng(seed)
    return [random_job(CFG, op, 2, LENGTHS[i % len(LENGTHS)], rng, kind)
            for op in OutputOp for i, kind in enumerate(KINDS)]


@pytest.mark.parametrize("pause", [0.0, 0.4], ids=["flowing", "stalls"])
@pytest.mark.parametrize("sim", SIMS)
def test_every_op_and_edge_row_matches_golden(sim, pause):
    seed = len(sim) + int(10 * pause)
    run = run_jobs(CFG, sim, all_ops_jobs(seed), cmd_pause=pause, row_pause=pause,
                   param_pause=pause, out_pause=pause, seed=seed)
    run.check()
    assert not run.error and run.idle


@pytest.mark.parametrize("sim", SIMS)
def test_digits_of_wide_activations_match_golden(sim):
    rng = np.random.default_rng(5)
    jobs = [random_job(CFG, op, 2, n, rng, kind, digit=digit)
            for digit in (OutputDigit.HIGH, OutputDigit.LOW, OutputDigit.INT8)
            for op in OutputOp if op != OutputOp.SOFTMAX
            for n, kind in zip(LENGTHS, KINDS, strict=True)]
    run = run_jobs(CFG, sim, jobs, cmd_pause=0.2, row_pause=0.2, param_pause=0.2,
                   out_pause=0.3, seed=5)
    run.check()
    assert not run.error and run.idle


@pytest.mark.parametrize("sim", SIMS)
def test_passes_run_at_cols_elements_per_cycle(sim):
    rng = np.random.default_rng(2)
    L = 4 * CFG.cols + 1
    chunks = -(-L // CFG.cols)
    jobs = [random_job(CFG, op, 2, L, rng) for op in OutputOp]
    run = run_jobs(CFG, sim, jobs)
    run.check()
    rc = run.row_cycles
    for job, starts in zip(jobs, run.pass_starts, strict=True):
        for s in starts:
            assert (np.diff(rc[s:s + chunks]) == 1).all(), job.op
        gaps = [int(rc[s] - rc[s - 1] - 1) for s in starts[1:]]
        want = list(op_.gap_cycles(job.op, CFG.cols)) + [0]
        assert gaps == (want * 2)[:len(gaps)], (job.op, gaps)
        assert rc[starts[job.passes]] - rc[starts[0]] == op_.row_cycles(job.op, L, CFG.cols)
    # The first output of the first command: the documented latency.
    assert run.out_cycles[0] - rc[0] == op_.latency_cycles(OutputOp.NONE)


@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["flowing", "stalls"])
@pytest.mark.parametrize("sim", SIMS)
def test_square_root_and_reciprocals_at_the_edges(sim, pause):
    operands = {name: intmath_edges(u.operand_bits) for name, u in INTMATH_UNITS.items()}
    got = run_intmath(CFG, sim, operands, pause=pause, seed=3)
    for name, unit in INTMATH_UNITS.items():
        results, latencies = got[name]
        ops = np.array(operands[name], dtype=np.int64)
        if unit.k is None:
            want = gint.isqrt(ops)
            assert results == [math.isqrt(int(v)) for v in ops]
        else:
            want = gint.reciprocal(ops, unit.k)
        assert results == want.tolist(), name
        if pause:
            assert min(latencies) >= unit.latency_cycles, name
        else:  # every operand, the largest included, takes exactly the documented latency
            assert set(latencies) == {unit.latency_cycles}, name
    # 22 root bits, 33 and 32 quotient bits, two per cycle, plus the response handshake.
    assert [u.latency_cycles for u in INTMATH_UNITS.values()] == [12, 18, 17]


def test_bad_descriptors_and_wrong_last_bits_on_icarus():
    rng = np.random.default_rng(8)
    bad = random_job(CFG, OutputOp.REQUANT, 2, 3, rng)
    bad.patch = {"length": CFG.max_row_len + 1}
    wrong = random_job(CFG, OutputOp.SOFTMAX, 2, 6, rng)
    wrong.flip_last = 3
    jobs = [random_job(CFG, OutputOp.GELU, 0, 3, rng), bad, wrong,
            random_job(CFG, OutputOp.LAYERNORM, 1, 5, rng)]
    run = run_jobs(CFG, "icarus", jobs, row_pause=0.2, out_pause=0.2)
    run.check()
    assert run.error and run.idle and not run.error_after_clear


def test_bench_nonlinear_prints_and_writes_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "nonlinear", "--preset", "tiny", "--sim", "verilator",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert [r["op"] for r in fig["ops"]] == [op.name for op in OutputOp]
    for r in fig["ops"]:
        assert r["passes"] == op_.PASSES[OutputOp[r["op"]]]
        assert r["pass_elements_per_cycle"] == CFG.cols  # rows of whole chunks, no stall
        assert r["row_cycles"] == r["model_row_cycles"]
        assert 0 < r["elements_per_cycle"] <= r["steady_elements_per_cycle"] <= CFG.cols
    assert {r["operation"] for r in fig["accuracy"]} >= {"i-exp", "i-GELU", "i-Softmax",
                                                          "i-LayerNorm"}
    text = capsys.readouterr().out
    assert "SOFTMAX" in text and "| i-LayerNorm |" in text
