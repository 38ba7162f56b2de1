"""The performance model (``sw/perf``, ``Runtime(config, backend="model")``): its counters
against the Verilator backend's on the tiny configuration for programs of different
character, its exact counters equal, its errors the golden model's, and the backend's
interface."""

import numpy as np
import pytest
from test_lowering import gemm_on, output_spec

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode, Queue
from tessera.hw.output_path import OutputOp
from tessera.sw.lower.plan import GemmShape, plan_gemm
from tessera.sw.runtime import Runtime

RTL = pytest.mark.rtl
TINY = preset("tiny")
#: The cycles the model may miss by. Its constants were measured on single commands and
#: it times every queue, burst and tile; what it leaves out (the command fetch competing
#: with loads for the read channel, bank conflicts between the DMA and the array) costs
#: a few percent on programs that mix them (the benchmark layers of ``tessera bench
#: model`` are within 5% on the default configuration).
TOLERANCE = 0.05
EXACT = ("commands", "macs", "bytes_read", "bytes_written", "array_busy")


def _store(rows, length, op=OutputOp.REQUANT, dram=0, **kw):
    args = dict(desc=dict(op=op, length=length, rows=rows, m=1, e=0), acc_addr=0, to_spad=0,
                spad_addr=0, dram_addr=dram, stride=length)
    return Command(Opcode.STORE, {**args, **kw})


def _pair(program_of, config=TINY, **runtime):
    """The counters of the same program on Verilator and on the model."""
    out = []
    for backend in ("verilator", "model"):
        rt = Runtime(config, backend, **runtime)
        out.append(rt.run(program_of(rt), check=True).counters)
    return out


def _gemm(M, K, N, bias, kind, plan=None):
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bv = rng.integers(-99, 99, N) if bias else None
    counters = []
    for backend in ("verilator", "model"):
        rt = Runtime(TINY, backend)
        _, _, result = gemm_on(rt, a, b, bv, output_spec(kind), plan)
        assert result.ok
        counters.append(result.counters)
    return counters


def _check(rtl: dict, model: dict, tolerance: float = TOLERANCE) -> None:
    for name in EXACT:
        assert model[name] == rtl[name], name
    assert abs(model["cycles"] - rtl["cycles"]) <= tolerance * rtl["cycles"], \
        (model["cycles"], rtl["cycles"])


@RTL
def test_array_bound_gemm():
    """Long K runs through the array (every weight tile behind the previous one's rows)."""
    _check(*_gemm(64, 64, 64, False, "requant"))


@RTL
def test_bus_bound_gemm():
    """One activation row per weight tile (a decode-shaped product): the weights' loads and
    their memory round trips set the time."""
    _check(*_gemm(1, 128, 64, True, "requant"))


@RTL
@pytest.mark.parametrize("lanes", [0, 2], ids=["lanes4", "lanes2"])
def test_nonlinear_stores(lanes):
    """Softmax and LayerNorm stores: three passes per row and the gaps between them; GELU;
    blocked stores cut into one DMA store per row. With two output lanes each chunk takes
    two cycles."""
    config = TINY.replace(output_lanes=lanes)

    def program(rt):
        buf = rt.alloc(1 << 14)
        C = TINY.cols
        table = TINY.acc_rows // 2
        return [_store(16, 4 * C, OutputOp.SOFTMAX, buf),
                _store(8, 4 * C, OutputOp.LAYERNORM, buf, param_addr=table),
                # Long rows: the write-out pass at the parameter table's rate shows.
                _store(2, 32 * C, OutputOp.LAYERNORM, buf, param_addr=table, prescale=1),
                _store(16, 4 * C, OutputOp.GELU, buf),
                _store(8, 4 * C, OutputOp.REQUANT, buf, blocked=1, stride=8 * C),
                _store(9, C, OutputOp.NONE, buf, to_spad=1, transpose=1),
                Command(Opcode.FINISH, {})]

    rtl, model = _pair(program, config)
    _check(rtl, model)
    assert model["nonlinear_busy"] == pytest.approx(rtl["nonlinear_busy"], rel=TOLERANCE)


@RTL
def test_token_heavy_program():
    """A load, a compute and a store per step, each waiting for the previous one's token
    (nothing overlaps): the token hand-overs and each unit's latency add up."""
    R = TINY.rows
    bank = TINY.spad_rows // TINY.spad_banks

    def program(rt):
        buf = rt.alloc(1 << 12)
        steps = []
        for i in range(6):
            steps += [
                Command(Opcode.LOAD, dict(dram_addr=buf, stride=R, rows=16, row_bytes=R,
                                          local_addr=16 * (i % 2)), signal_next=True),
                Command(Opcode.COMPUTE, dict(a_addr=16 * (i % 2), b_addr=bank, rows=16,
                                             acc_addr=0, accumulate=0, count=1, a_stride=16),
                        wait_prev=True, signal_next=True),
                Command(Opcode.STORE, dict(desc=dict(op=OutputOp.REQUANT, length=R, rows=16,
                                                     m=1, e=0), acc_addr=0, to_spad=0,
                                           spad_addr=0, dram_addr=buf + 2048, stride=R),
                        wait_prev=True)]
        return steps + [Command(Opcode.FINISH, {})]

    rtl, model = _pair(program)
    _check(rtl, model)


@RTL
def test_load_sharing_the_arrays_bank():
    """A load into the scratchpad bank the array reads: the two share the bank's cycles
    (the model's share of the overlap is fitted to the benchmark layers; a store into the
    same bank as well is beyond it, see docs/perf-model.md)."""
    bank = TINY.spad_rows // TINY.spad_banks

    def program(rt):
        buf = rt.alloc(1 << 12)
        return [Command(Opcode.PRELOAD, {"spad_addr": bank}),
                Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=128, acc_addr=0,
                                             accumulate=0)),
                Command(Opcode.LOAD, dict(dram_addr=buf, stride=TINY.rows, rows=128,
                                          row_bytes=TINY.rows, local_addr=600)),
                Command(Opcode.FINISH, {})]

    rtl, model = _pair(program)
    _check(rtl, model)
    alone = Runtime(TINY, "model").run(program(Runtime(TINY, "model"))[:2]
                                       + [Command(Opcode.FINISH, {})]).counters
    assert model["cycles"] > alone["cycles"]


@RTL
def test_memory_timing_follows_the_runtime():
    """A slower memory (latency 40, a beat every third cycle) changes both alike."""
    plan = plan_gemm(TINY, GemmShape(16, 32, 16))
    rng = np.random.default_rng(2)
    a, b = rng.integers(-128, 128, (16, 32)), rng.integers(-128, 128, (32, 16))
    counters = []
    for backend in ("verilator", "model"):
        rt = Runtime(TINY, backend, mem_latency=40, mem_gap=2)
        _, _, result = gemm_on(rt, a, b, None, output_spec("requant"), plan)
        counters.append(result.counters)
    _check(*counters)


def test_model_backend_computes_no_data_unless_asked():
    rng = np.random.default_rng(1)
    a, b = rng.integers(-128, 128, (10, 13)), rng.integers(-128, 128, (13, 9))
    gold, plain, full = (Runtime(TINY, "golden"), Runtime(TINY, "model"),
                         Runtime(TINY, "model", model_data=True))
    want, _, gres = gemm_on(gold, a, b, None, output_spec("requant"))
    got, prog, res = gemm_on(plain, a, b, None, output_spec("requant"))
    assert res.ok and res.backend == "model"
    assert not got.any()                     # main memory as it was: no result written
    assert res.counters["cycles"] > 0 and res.counters["commands"] == len(prog)
    assert res.counters["macs"] == gres.counters["macs"]
    got_full, _, res_full = gemm_on(full, a, b, None, output_spec("requant"))
    assert np.array_equal(got_full, want)
    assert np.array_equal(full.image, gold.image)
    assert res_full.counters == res.counters     # the data does not change the timing


def test_model_predictions_follow_the_program():
    """More work is more cycles: twice the rows streamed, a slower memory."""
    def cycles(rows, **runtime):
        rt = Runtime(TINY, "model", **runtime)
        prog = [Command(Opcode.PRELOAD, {"spad_addr": 0}),
                Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=rows, acc_addr=0,
                                             accumulate=0)),
                Command(Opcode.FINISH, {})]
        return rt.run(prog).counters["cycles"]

    assert cycles(64) - cycles(32) == 32        # a row per cycle
    assert cycles(32, mem_latency=200) > cycles(32) + 90    # the command fetch's round trip


@pytest.mark.parametrize("program, code, index", [
    ([Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=4, acc_addr=0, accumulate=0))],
     ErrorCode.ILLEGAL_FIELD, 0),                                    # no weights preloaded
    ([Command(Opcode.NOP, {"queue": Queue.LOAD}, wait_next=True)], ErrorCode.DEADLOCK, 0),
    ([Command(Opcode.LOAD, dict(dram_addr=0, stride=4, rows=1, row_bytes=4, local_addr=0))],
     ErrorCode.WINDOW, 0),
    ([Command(Opcode.NOP, {"queue": Queue.EXECUTE}), 15 << 0], ErrorCode.ILLEGAL_OPCODE, 1),
])
def test_errors_are_reported_as_golden_reports_them(program, code, index):
    results = [Runtime(TINY, b).run(program) for b in ("golden", "model")]
    gold, model = results
    assert gold.error == model.error == code
    assert gold.error_index == model.error_index == index
    assert model.message == gold.message
    assert model.counters["cycles"] > 0


def test_model_backend_options_are_checked():
    with pytest.raises(ValueError, match="model_data is an option of the model backend"):
        Runtime(TINY, "golden", model_data=True)
    rt = Runtime(TINY, "model")
    with pytest.raises(ValueError, match="model_data=True"):
        rt.run([Command(Opcode.FINISH, {})], onchip=True)
    assert Runtime(TINY, "model", mem_size=1 << 20).mem_size == 1 << 20


def test_bench_model_refuses_unknown_layers_and_reports_skipped_ones():
    from tessera.sw.bench import bench_model, format_model_bench
    from tessera.sw.check import InputError

    with pytest.raises(InputError, match="unknown benchmark 'resnet'"):
        bench_model(TINY, benchmarks=("resnet",))
    fig = {"describe": TINY.describe(), "memory": {"latency_cycles": 100, "gap_cycles": 0},
           "benchmarks": [{"benchmark": "gemm 512x512x512", "measured": 1000,
                           "predicted": 1020, "error_pct": 2.0, "verilator_seconds": 1.0,
                           "model_seconds": 0.1,
                           "ops": [{"op": "gemm", "measured": 1000, "predicted": 1020,
                                    "error_pct": 2.0}]},
                          {"benchmark": "minilm (8 sentences)", "skipped": "no room"}],
           "max_error_pct": 2.0}
    text = format_model_bench(fig)
    assert "+2.00%" in text and "skipped: no room" in text


def _programs(monkeypatch, run) -> list:
    """The programs ``run()`` hands the model backend."""
    programs = []
    plain = Runtime.run

    def recording(self, program, **kw):
        programs.append((list(program), self.mem_size, self.mem_base))
        return plain(self, program, **kw)

    monkeypatch.setattr(Runtime, "run", recording)
    run()
    monkeypatch.undo()
    return programs


def test_segments_timed_once_predict_as_every_command_timed(monkeypatch):
    """The model's fast ways (a segment's timing reused, command words packed and
    unpacked by shifts) predict exactly what timing every command does, counters and each
    command's issue and completion, on lowered programs: a GEMM, a BERT layer, GPT-2
    decode steps and a three-layer encoder (whose layers reuse segments), run three times
    on one model."""
    from tessera.hw.isa import encode
    from tessera.sw.perf import PerfModel
    from tessera.sw.run import run_bert, run_gpt2
    from tessera.sw.run_model import run_encoder_model

    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (40, 72)), rng.integers(-128, 128, (72, 24))
    shape = dict(hidden=64, heads=2, ffn=128)
    programs = _programs(monkeypatch, lambda: (
        gemm_on(Runtime(TINY, "model"), a, b, None, output_spec("requant")),
        run_bert(TINY, "model", seq=32, **shape),
        run_gpt2(TINY, "model", decode=True, seq=16, steps=2, **shape),
        run_encoder_model(TINY, "model", layers=3, seq=32, **shape)))
    assert len(programs) > 10
    # Segments alike but for the state before them: the preloaded weights' bank (the same
    # COMPUTE after a PRELOAD to either bank), and the fetcher's (quick commands that the
    # fetch of their 256-bit words over a 64-bit bus cannot keep up with).
    preload = [Command(Opcode.PRELOAD, {"spad_addr": at}) for at in (0, 2048)]
    compute = Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=8, acc_addr=0,
                                           accumulate=0))
    fence = Command(Opcode.FENCE, {})
    alike = [c for at in (0, 1, 0, 1, 1) for c in (preload[at], fence, compute, fence)]
    alike += [c for n in range(40) for c in [preload[0]] * (1 + n % 7) + [fence]]
    rt = Runtime(TINY, "model")
    programs.append((alike + [Command(Opcode.FINISH, {})], rt.mem_size, rt.mem_base))
    fast, plain = PerfModel(TINY), PerfModel(TINY)
    plain.memo = False
    reused = []
    # The third time the command buffers start elsewhere in a 4 KiB page: the words are
    # fetched in other bursts, and a kept segment is reused only if they are dispatched
    # at the same times.
    for buffer_at in (64, 64, 64 + 33 * 32):
        for program, mem_size, mem_base in programs:
            words = [encode(TINY, c) for c in program]
            got, want = (model.predict(words, cmd_addr=mem_base + buffer_at,
                                       machine=model.machine(mem_size, mem_base))
                         for model in (fast, plain))
            assert want.error == ErrorCode.NONE and got.error == ErrorCode.NONE
            assert got.counters == want.counters
            assert (got.issue, got.done) == (want.issue, want.done)
        reused.append(fast.reused)
    assert 0 < reused[0] and reused[1] - reused[0] > sum(len(p) for p, _, _ in programs) / 3
