"""Benchmarks and the demo job: figures measured on the generated Verilog.

Each function returns a dict of figures; the command line prints it and writes it as JSON.
"""

from __future__ import annotations

import time

import numpy as np

from ..hw.config import TesseraConfig
from ..sim import matrix_rtl, runner
from .check import InputError, whole_number
from .golden import matmul as golden

__all__ = ["bench_array", "matmul_on_rtl", "bench_nonlinear", "bench_gemm", "bench_sim"]


def _log(progress, msg: str) -> None:
    if progress:
        progress(msg)


def _build(config: TesseraConfig, sim: str, progress) -> float:
    _log(progress, f"building {config.describe()} for {sim} (cached per configuration)...")
    t = time.perf_counter()
    runner.build(config, sim)
    return time.perf_counter() - t


#: Most input rows bench_array streams (tiles x rows per tile): the testbench drives and
#: checks each from Python, at a few thousand a second.
MAX_ARRAY_BEATS = 1 << 20


def bench_array(config: TesseraConfig, sim: str, *, dataflow: str = "ws", tiles: int = 32,
                rows_per_tile: int = 256, seed: int = 1, progress=None) -> dict:
    """Sustained throughput of the matrix unit on a long run of back-to-back tiles.

    WS: ``tiles`` weight tiles, each streaming ``rows_per_tile`` activation rows. OS:
    ``tiles`` output tiles, each reducing over ``rows_per_tile`` steps. Every result is
    checked against the golden model.

    Returns
    -------
    dict
        ``cycles`` (first input to last result), ``macs``, ``utilization`` (MACs /
        (cycles x rows x cols)), ``steady_utilization`` (input beats per cycle while the
        input streams, the rate the unit sustains), ``sim_cycles_per_s``, and the run's
        parameters.
    """
    if dataflow == "ws" and not config.has_ws or dataflow == "os" and not config.has_os:
        raise ValueError(f"the configuration's dataflow is {config.dataflow!r}, "
                         f"so it cannot run {dataflow!r} tiles")
    whole_number(tiles, "tiles")
    whole_number(rows_per_tile, "rows_per_tile")
    if tiles * rows_per_tile > MAX_ARRAY_BEATS:
        raise InputError(f"{tiles} tiles of {rows_per_tile} rows stream "
                         f"{tiles * rows_per_tile:,} input rows; the array benchmark streams "
                         f"at most {MAX_ARRAY_BEATS:,} (the testbench holds and checks each)")
    rng = np.random.default_rng(seed)
    R, C = config.rows, config.cols
    lo_a, hi_a = -(1 << (config.input_bits - 1)), 1 << (config.input_bits - 1)
    lo_w, hi_w = -(1 << (config.weight_bits - 1)), 1 << (config.weight_bits - 1)
    if dataflow == "ws":
        ts = [golden.WsTile(rng.integers(lo_w, hi_w, (R, C)),
                            rng.integers(lo_a, hi_a, (rows_per_tile, R)), 0, 0, 0)
              for _ in range(tiles)]
        beats = tiles * rows_per_tile
    else:
        ts = [golden.OsTile(rng.integers(lo_a, hi_a, (R, rows_per_tile)),
                            rng.integers(lo_w, hi_w, (rows_per_tile, C)), 0, 0)
              for _ in range(tiles)]
        beats = tiles * rows_per_tile
    build_s = _build(config, sim, progress)
    _log(progress, f"streaming {tiles} {dataflow.upper()} tiles ({beats} input beats) on {sim}...")
    run = matrix_rtl.run_tiles(config, sim, ts)
    expected = np.concatenate(golden.unit_results(ts, config))
    mismatches = int((run.rows != expected).any(axis=1).sum())
    if mismatches:
        raise AssertionError(f"{mismatches} result rows differ from the golden model")
    macs = beats * R * C
    cycles = int(run.out_cycles[-1] - run.data_cycles[0] + 1)
    in_span = int(run.data_cycles[-1] - run.data_cycles[0] + 1)
    return {
        "simulator": sim,
        "config_hash": config.hash,
        "array": f"{R}x{C}",
        "dataflow": dataflow,
        "tiles": tiles,
        "rows_per_tile": rows_per_tile,
        "cycles": cycles,
        "macs": macs,
        "utilization": macs / (cycles * R * C),
        "steady_utilization": beats / in_span,
        "latency_cycles": int(run.out_cycles[0] - run.data_cycles[0]),
        "sim_cycles": run.cycles,
        "sim_wall_s": run.wall_s,
        "sim_cycles_per_s": run.cycles / run.wall_s if run.wall_s else 0.0,
        "build_s": build_s,
        "checked_rows": len(expected),
    }


def matmul_on_rtl(config: TesseraConfig, sim: str, a: np.ndarray, b: np.ndarray, *,
                  dataflow: str = "ws", progress=None) -> tuple[np.ndarray, dict]:
    """``a @ b`` computed by streaming tiles through the generated unit.

    Partial products of the K tiles are accumulated here, as the accumulator memory will
    do on chip. Returns the product and the run's figures.
    """
    if dataflow == "ws":
        tiles = golden.ws_tiles(a, b, config)
    else:
        tiles = golden.os_tiles(a, b, config)
    _build(config, sim, progress)
    _log(progress, f"streaming {len(tiles)} {dataflow.upper()} tiles of "
                   f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]} on {sim}...")
    run = matrix_rtl.run_tiles(config, sim, tiles)
    per_tile, start = [], 0
    for t in tiles:
        n = len(t.a) if dataflow == "ws" else config.rows
        per_tile.append(run.rows[start:start + n])
        start += n
    product = golden.assemble(tiles, per_tile, (a.shape[0], b.shape[1]), config)
    beats = len(run.data_cycles)
    useful_macs = a.shape[0] * a.shape[1] * b.shape[1]
    cycles = int(run.out_cycles[-1] - run.data_cycles[0] + 1)
    R, C = config.rows, config.cols
    return product, {
        "tiles": len(tiles),
        "cycles": cycles,
        "macs": useful_macs,
        "utilization": useful_macs / (cycles * R * C),
        "array_busy": beats / cycles,
        "sim_cycles_per_s": run.cycles / run.wall_s if run.wall_s else 0.0,
    }


def bench_dma(config: TesseraConfig, sim: str, *, latency_cycles: int = 100,
              rows: int | None = None, seed: int = 1, progress=None) -> dict:
    """DMA bandwidth on one long read and one long write of contiguous scratchpad rows,
    against a main memory that answers ``latency_cycles`` after each address.

    Returns
    -------
    dict
        ``read_bytes_per_cycle``, ``write_bytes_per_cycle`` (bytes over the cycles from
        the command to its completion), ``bus_bytes_per_cycle`` (the peak),
        ``latency_cycles``, the fractions of the peak, and the run's parameters.
    """
    from ..sim.dma_rtl import run_job
    from ..sim.dma_system import DMA_SYSTEM

    whole_number(latency_cycles, "latency_cycles", 0, 65535)
    rows = rows or min(config.spad_rows, 8192)
    if not 1 <= rows <= config.spad_rows:
        raise ValueError(f"rows must be between 1 and the scratchpad's {config.spad_rows}, "
                         f"not {rows}")
    nbytes = rows * config.spad_row_bytes
    mem_size = 1 << max(16, (2 * nbytes + 4096 - 1).bit_length())
    _log(progress, f"building the DMA system of {config.describe()} for {sim}...")
    t = time.perf_counter()
    runner.build(config, sim, DMA_SYSTEM)
    build_s = time.perf_counter() - t
    _log(progress, f"reading and writing {nbytes} bytes with {latency_cycles}-cycle memory "
                   f"latency on {sim}...")
    fig = run_job(config, sim, testcase="dma_bandwidth", seed=seed, mem_size=mem_size,
                  extra={"rows": rows, "latency_cycles": latency_cycles})
    peak = config.bus_bytes
    return {
        "simulator": sim,
        "config_hash": config.hash,
        "bytes": nbytes,
        "read_bytes_per_cycle": fig["read_bytes_per_cycle"],
        "write_bytes_per_cycle": fig["write_bytes_per_cycle"],
        "bus_bytes_per_cycle": peak,
        "read_fraction_of_peak": fig["read_bytes_per_cycle"] / peak,
        "write_fraction_of_peak": fig["write_bytes_per_cycle"] / peak,
        "latency_cycles": latency_cycles,
        "read_cycles": fig["read_cycles"],
        "write_cycles": fig["write_cycles"],
        "sim_cycles_per_s": fig["sim_cycles"] / fig["sim_wall_s"],
        "build_s": build_s,
    }


def bench_nonlinear(config: TesseraConfig, sim: str, *, row_len: int | None = None,
                    rows: int = 4, seed: int = 1, accuracy: bool = True,
                    progress=None) -> dict:
    """Throughput of every output-path operation on the generated Verilog, and the accuracy
    of the integer operations against float references.

    One command per operation (``rows`` rows of ``row_len`` elements; by default the smaller
    of 512 and ``max_row_len``), back to back, with no idle input cycles and no
    backpressure. Every result is checked against the golden model.

    Returns
    -------
    dict
        ``ops``: one entry per operation with ``passes``, ``elements_per_cycle`` (end to end:
        the command's elements over the cycles from its first input chunk to its last
        output chunk), ``pass_elements_per_cycle`` (the rate within a pass),
        ``steady_elements_per_cycle`` (a row's elements over the cycles between consecutive
        rows' first chunks: what a long command sustains), ``row_cycles`` (measured) and
        ``model_row_cycles`` (``hw.output_path.row_cycles``), ``latency_cycles``,
        ``gap_cycles``; ``accuracy``: the rows of ``golden.accuracy.accuracy_table()``;
        and the run's parameters.

    Raises
    ------
    ValueError
        If ``row_len`` or ``rows`` is out of range.
    AssertionError
        If a result differs from the golden model.
    """
    from ..hw import output_path as op_
    from ..sim import output_path_rtl
    from ..sim.output_path_jobs import random_job
    from .golden.accuracy import accuracy_table

    L = row_len or min(512, config.max_row_len)
    if not 1 <= L <= config.max_row_len:
        raise ValueError(f"row_len must be between 1 and max_row_len ({config.max_row_len}), "
                         f"not {L}")
    if rows < 2:
        raise ValueError(f"rows must be at least 2 (the steady rate is measured between "
                         f"rows), not {rows}")
    rng = np.random.default_rng(seed)
    jobs = [random_job(config, op, rows, L, rng) for op in op_.OutputOp]
    _log(progress, f"building the output path of {config.describe()} for {sim} "
                   f"(cached per configuration)...")
    t = time.perf_counter()
    runner.build(config, sim, "output_path")
    build_s = time.perf_counter() - t
    _log(progress, f"streaming {len(jobs)} commands of {rows} rows of {L} elements on {sim}...")
    run = output_path_rtl.run_jobs(config, sim, jobs, seed=seed)
    run.check()
    chunks = -(-L // config.cols)
    # A chunk is taken with its last piece of out_lanes elements: a pass starts that many
    # cycles before its first chunk's take, less one.
    lead = -(-min(config.cols, L) // config.out_lanes) - 1
    out_job = np.array([w[0] for w in run.out_where])
    ops = []
    for i, (job, starts) in enumerate(zip(jobs, run.pass_starts, strict=True)):
        rc = run.row_cycles
        outs = np.flatnonzero(out_job == i)
        cycles = int(run.out_cycles[outs[-1]] - rc[starts[0]] + lead + 1)
        spans = [int(rc[s + chunks - 1] - rc[s] + lead + 1) for s in starts]
        row_cycles = (rc[starts[-job.passes]] - rc[starts[0]]) / (rows - 1)
        ops.append({
            "op": job.op.name,
            "passes": job.passes,
            "elements": rows * L,
            "cycles": cycles,
            "elements_per_cycle": rows * L / cycles,
            "pass_elements_per_cycle": L / float(np.mean(spans)),
            "steady_elements_per_cycle": L / row_cycles,
            "row_cycles": float(row_cycles),
            "model_row_cycles": op_.row_cycles(job.op, L, config.out_lanes),
            "latency_cycles": int(run.out_cycles[outs[0]] - rc[starts[job.passes - 1]]),
            "gap_cycles": list(op_.gap_cycles(job.op, config.out_lanes)),
        })
    fig = {
        "simulator": sim,
        "config_hash": config.hash,
        "cols": config.cols,
        "lanes": config.out_lanes,
        "row_len": L,
        "rows": rows,
        "ops": ops,
        "checked_chunks": len(run.data),
        "sim_cycles": run.cycles,
        "sim_cycles_per_s": run.cycles / run.wall_s if run.wall_s else 0.0,
        "build_s": build_s,
    }
    if accuracy:
        _log(progress, "measuring the golden model against float64 references...")
        fig["accuracy"] = accuracy_table(seed=0)
    return fig


def bench_gemm(config: TesseraConfig, backend: str, M: int, K: int, N: int, *,
               bias: bool = False, activation: str = "none", seed: int = 1,
               progress=None, runtime: dict | None = None) -> dict:
    """``C = act(requantize(A x B + bias))`` through the whole accelerator: lowered to a
    command stream, run on ``backend`` (``verilator``, ``icarus`` or ``golden``), checked
    bit for bit against the golden model. Returns the figures: the hardware counters,
    ``utilization`` (useful multiply-accumulates over cycles x peak), the plan.
    ``runtime``: options of the RTL backend's :class:`Runtime` (memory timing, harness,
    waveform trace).

    Raises
    ------
    RuntimeError
        If the result differs from the golden model or the machine stopped with an error.
    """
    from .lower.gemm import OutputSpec, reference_gemm, run_gemm
    from .run import check_duration, check_fits, check_run_args, layer_bytes, layer_macs
    from .runtime import Runtime

    check_run_args(config, backend, M=M, K=K, N=N, seed=seed)
    check_fits(config, backend, layer_bytes(config, "gemm", M, K, N),
               f"a {M} x {K} x {N} matrix product")
    check_duration(config, backend, layer_macs("gemm", M, K, N),
                   f"a {M} x {K} x {N} matrix product")
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (M, K))
    b = rng.integers(-128, 128, (K, N))
    bv = rng.integers(-(1 << 20), 1 << 20, N) if bias else None
    ratio = 1 / (128 * 128 * max(1, int(np.sqrt(K))))   # keeps outputs off saturation
    if activation == "gelu":
        out = OutputSpec.gelu_of(1 / 4096, 1 / 16)
    else:
        out = OutputSpec.requant(ratio * 64, relu=activation == "relu")
    rt = Runtime(config, backend, **(runtime or {}) if backend != "golden" else {})

    def report(p):
        if progress:
            progress(f"{p['cycles']:,} cycles, {p['commands']:,} commands dispatched, "
                     f"{p['cycles'] / max(p['wall_seconds'], 1e-9):,.0f} cycles/s")

    if progress:
        progress(f"{M} x {K} x {N} on {backend}: building (cached) and running...")
    t = time.time()
    got, prog, result, plan = run_gemm(rt, a, b, bv, out, progress=report)
    wall = time.time() - t
    if not result.ok:
        raise RuntimeError(f"the accelerator stopped: {result.describe()}")
    want = reference_gemm(config, a, b, bv, out)
    bad = int((got != want).sum())
    if bad:
        raise RuntimeError(f"{bad} of {want.size} results differ from the golden model")
    fig = {"m": M, "k": K, "n": N, "backend": backend, "config": config.hash,
           "plan": plan.describe(), "commands": len(prog), "checked": True,
           "macs": M * K * N, "wall_seconds": round(wall, 2)}
    fig.update(summarize(config, result.counters, M * K * N))
    if fig.get("cycles") and result.wall_seconds:
        fig["sim_seconds"] = round(result.wall_seconds, 3)
        fig["sim_cycles_per_s"] = round(fig["cycles"] / result.wall_seconds)
        fig["memory"] = result.memory
        fig["harness"] = rt.harness
        if rt.traced:
            fig["traces"] = [str(p) for p in rt.traced]
    return fig


def summarize(config: TesseraConfig, counters: dict, useful_macs: int) -> dict:
    """Derived figures from the hardware counters (when the backend has cycles)."""
    out = {"counters": dict(counters)}
    cycles = counters.get("cycles")
    if not cycles:
        return out
    peak = config.rows * config.cols
    bus = config.bus_bytes
    out.update({
        "cycles": cycles,
        "utilization": useful_macs / (cycles * peak),
        "array_utilization": counters["macs"] / (cycles * peak),
        "bytes_read": counters["bytes_read"],
        "bytes_written": counters["bytes_written"],
        "bus_utilization": (counters["bytes_read"] + counters["bytes_written"])
        / (cycles * bus),
        **{k: counters[k] for k in counters if k.endswith("_wait") or k.endswith("_busy")},
    })
    return out


def format_counters(config: TesseraConfig, fig: dict) -> str:
    """The counters as a table a person can read: totals, then per queue."""
    c = fig["counters"]
    cyc = c.get("cycles")
    if not cyc:
        return "\n".join(f"  {k:18} {v:,}" for k, v in c.items())
    mem = fig.get("memory")
    lines = [f"  cycles             {cyc:,}" + (
        f"   (main memory: {mem['latency_cycles']}-cycle latency, "
        f"{mem['bytes_per_cycle']:g} bytes/cycle)" if mem else ""),
             f"  MACs               {fig['macs']:,} useful, {c['macs']:,} issued "
             f"(padding included)",
             f"  utilization        {fig['utilization']:.4f} of {config.rows * config.cols} "
             f"MACs/cycle (array busy {c['array_busy'] / cyc:.4f})",
             f"  bus                {c['bytes_read']:,} bytes read, {c['bytes_written']:,} "
             f"written ({fig['bus_utilization']:.3f} of {config.bus_bytes} bytes/cycle)",
             "  queue     busy   token wait   memory wait   (fractions of the cycles)"]
    for q in ("load", "exec", "store"):
        lines.append(f"  {q:7} {c[q + '_busy'] / cyc:6.3f} {c[q + '_token_wait'] / cyc:12.3f} "
                     f"{c[q + '_mem_wait'] / cyc:13.3f}")
    return "\n".join(lines)


def bench_sim(config: TesseraConfig, *, m: int = 512, k: int = 512, n: int = 512,
              cocotb: bool = True, fresh: bool = False, seed: int = 1,
              progress=None) -> dict:
    """Simulation speed of the whole accelerator: one matrix product (``m x k x n`` with
    bias and i-GELU, checked against the golden model) on Verilator through the native
    harness and, with ``cocotb``, through the cocotb testbench, side by side.

    ``sim_cycles_per_s`` counts the simulation alone (from START to the interrupt; builds
    and Python's lowering excluded). ``build_s`` is the native simulator's first build,
    netlist included: measured now when it is not cached (with ``fresh``, every build of
    the benchmark is made in a new folder), else the time recorded when it was built;
    ``build_simulator_s`` is Verilator's part of it (translation and compile, and for a
    profile-guided build, ``build_profile``, the training run of ``build_training_s``).
    """
    import os
    import tempfile

    from ..sim.native import build_native
    from .run import check_fits, layer_bytes

    check_fits(config, "verilator", layer_bytes(config, "gemm", m, k, n),
               f"a {m} x {k} x {n} matrix product")
    old_root = os.environ.get("TESSERA_BUILD_DIR")
    if fresh:       # every build of this benchmark in a new folder, timed from nothing
        os.environ["TESSERA_BUILD_DIR"] = tempfile.mkdtemp(prefix="tessera-fresh-build-")
        _log(progress, f"building from nothing in {os.environ['TESSERA_BUILD_DIR']}")
    try:
        t = time.perf_counter()
        nb = build_native(config)
        took = time.perf_counter() - t
        info = nb.info()
        cached = not fresh and took < 0.5 * info.get("seconds", took)
        fig = {"config": config.hash, "workload": f"{m} x {k} x {n} product, bias, i-GELU",
               "build_s": round(took if not cached else info.get("total_seconds",
                                                                 info["seconds"]), 1),
               "build_simulator_s": info.get("seconds"),
               "build_profile": info.get("profile", False),
               "build_training_s": info.get("training_seconds"),
               "build_cached": cached, "build_compile_jobs": info.get("jobs")}
        for h in ["native"] + (["cocotb"] if cocotb else []):
            _log(progress, f"{m} x {k} x {n} on Verilator, {h} harness...")
            fig[h] = bench_gemm(config, "verilator", m, k, n, bias=True, activation="gelu",
                                seed=seed, runtime={"harness": h})
    finally:
        if fresh:
            if old_root is None:
                os.environ.pop("TESSERA_BUILD_DIR", None)
            else:
                os.environ["TESSERA_BUILD_DIR"] = old_root
    fig["sim_cycles_per_s"] = fig["native"]["sim_cycles_per_s"]
    if cocotb:
        fig["cocotb_sim_cycles_per_s"] = fig["cocotb"]["sim_cycles_per_s"]
        fig["speedup"] = round(fig["sim_cycles_per_s"] / fig["cocotb_sim_cycles_per_s"], 1)
        fig["same_counters"] = fig["native"]["counters"] == fig["cocotb"]["counters"]
    return fig


#: The benchmark layers of ``tessera bench model``, by name (:func:`_benchmark_ops` runs
#: each).
MODEL_BENCHMARKS = ("gemm 512x512x512", "gemm 128x768x3072", "bert-base layer (seq 128)",
                    "gpt2 decode step (after 128 tokens)", "minilm (8 sentences)")


def _benchmark_ops(config: TesseraConfig, name: str, backend: str,
                   runtime: dict) -> tuple[list, float]:
    """One benchmark layer on ``backend``: its cycles per operation (``(op, cycles)``; one
    entry for a single program) and the run's wall time, built by the commands that run
    it elsewhere (``tessera bench gemm``, ``tessera run``)."""
    t = time.perf_counter()
    if name.startswith("gemm"):
        m, k, n = (int(v) for v in name.split()[1].split("x"))
        fig = bench_gemm(config, backend, m, k, n, runtime=runtime)
        ops = [("gemm", fig["cycles"])]
    elif name.startswith("bert"):
        from .run import run_bert

        fig = run_bert(config, backend, seq=128, runtime=runtime)
        ops = [(op["op"], op["cycles"]) for op in fig["ops"]]
    elif name.startswith("gpt2"):
        from .run import run_gpt2

        fig = run_gpt2(config, backend, decode=True, seq=128, steps=1, runtime=runtime)
        ops = [(op["op"], op["cycles"]) for op in fig["ops"]]
    else:
        from .models.minilm import EVALUATION_SENTENCES
        from .run_model import run_minilm

        fig = run_minilm(config, backend, list(EVALUATION_SENTENCES), runtime=runtime,
                         check_golden=False)
        ops = [("whole model, one program", fig["cycles"])]
    return ops, time.perf_counter() - t


def bench_model(config: TesseraConfig, *, benchmarks=MODEL_BENCHMARKS, progress=None,
                mem_latency: int = 100, mem_gap: int = 0) -> dict:
    """The performance model (``Runtime(config, backend="model")``) against the Verilator
    counters on the benchmark layers: predicted and measured cycles per operation and in
    total, with the error in percent.

    Returns
    -------
    dict
        ``benchmarks``: per layer its ``ops`` (``op``, ``measured``, ``predicted``,
        ``error_pct``), ``measured``, ``predicted``, ``error_pct``, and the wall seconds of
        both runs; ``max_error_pct``: the largest total error.
    """
    unknown = [b for b in benchmarks if b not in MODEL_BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark {unknown[0]!r}; choose from "
                         f"{', '.join(MODEL_BENCHMARKS)}")
    timing = {"mem_latency": mem_latency, "mem_gap": mem_gap}
    out = []
    for name in benchmarks:
        _log(progress, f"{name}: on Verilator...")
        try:
            measured, rtl_s = _benchmark_ops(config, name, "verilator", timing)
        except InputError as e:
            # A layer this configuration cannot hold (its main memory, its array's shape).
            _log(progress, f"{name}: skipped: {e}")
            out.append({"benchmark": name, "skipped": str(e)})
            continue
        _log(progress, f"{name}: on the model...")
        # The model computes the data too, so that the layers' own checks hold.
        predicted, model_s = _benchmark_ops(config, name, "model",
                                            {**timing, "model_data": True})
        ops = [{"op": op, "measured": m, "predicted": p, "error_pct": _error_pct(p, m)}
               for (op, m), (_, p) in zip(measured, predicted, strict=True)]
        total_m = sum(o["measured"] for o in ops)
        total_p = sum(o["predicted"] for o in ops)
        out.append({"benchmark": name, "ops": ops, "measured": total_m, "predicted": total_p,
                    "error_pct": _error_pct(total_p, total_m),
                    "verilator_seconds": round(rtl_s, 1), "model_seconds": round(model_s, 1)})
    return {"config": config.hash, "describe": config.describe(),
            "memory": {"latency_cycles": mem_latency, "gap_cycles": mem_gap},
            "benchmarks": out,
            "max_error_pct": max((abs(b["error_pct"]) for b in out if "ops" in b),
                                 default=0.0)}


def bench_model_speed(config: TesseraConfig, *, layers: int = 12, seq: int = 128,
                      hidden: int = 768, heads: int = 12, ffn: int = 3072,
                      progress=None) -> dict:
    """How long the performance model takes over a whole encoder (BERT-base's shape by
    default, random weights, one program): CPU seconds to lower it, to encode its
    commands, to predict it (the model backend without data) and to predict it again on
    the same runtime (its segments' timings kept).

    Raises
    ------
    InputError
        If the shapes are not positive or do not fit the configuration's main memory.
    """
    from ..hw.isa import encode
    from .lower.encoder import lower_encoder, place_encoder
    from .run_model import random_encoder
    from .runtime import Runtime

    for name, value in (("seq", seq), ("hidden", hidden), ("heads", heads), ("ffn", ffn)):
        whole_number(value, name, 1)
    _, qls, _, (x,) = random_encoder(config, "model", layers=layers, seq=seq, hidden=hidden,
                                     heads=heads, ffn=ffn, progress=lambda m: _log(
                                         progress, f"{m} (not timed)"))
    rt = Runtime(config, backend="model")
    placement = place_encoder(rt, qls, x, lengths=(seq,))

    def cpu(f):
        t = time.process_time()
        out = f()
        return out, time.process_time() - t

    _log(progress, "lowering, encoding and predicting")
    prog, lower_s = cpu(lambda: lower_encoder(config, qls, placement))
    words, encode_s = cpu(lambda: [encode(config, c) for c in prog])
    first, predict_s = cpu(lambda: rt.run(words, check=True))
    again, again_s = cpu(lambda: rt.run(words, check=True))
    return {"config": config.hash, "describe": config.describe(), "layers": layers,
            "seq": seq, "hidden": hidden, "ffn": ffn, "commands": len(prog),
            "cycles": first.counters["cycles"], "lower_s": round(lower_s, 2),
            "encode_s": round(encode_s, 2), "predict_s": round(predict_s, 2),
            "predict_again_s": round(again_s, 2),
            "reused_commands": rt._model.reused}


def format_model_speed(fig: dict) -> str:
    return "\n".join([
        f"performance model speed: a {fig['layers']}-layer encoder (hidden {fig['hidden']}, "
        f"FFN {fig['ffn']}, {fig['seq']} tokens; random weights) on {fig['describe']}",
        f"  {fig['commands']:,} commands, {fig['cycles']:,} cycles predicted",
        f"  CPU seconds: lowering {fig['lower_s']:.2f}, encoding the commands "
        f"{fig['encode_s']:.2f}, prediction {fig['predict_s']:.2f} (again on the same "
        f"runtime: {fig['predict_again_s']:.2f})"])


def _error_pct(predicted: int, measured: int) -> float:
    return round(100.0 * (predicted - measured) / measured, 2) if measured else 0.0


def format_model_bench(fig: dict) -> str:
    """``tessera bench model``'s table: predicted against measured cycles."""
    lines = [f"performance model against Verilator: {fig['describe']}; memory latency "
             f"{fig['memory']['latency_cycles']} cycles, gap {fig['memory']['gap_cycles']}",
             f"  {'benchmark / operation':44} {'measured':>12} {'predicted':>12} {'error':>8}"]
    for b in fig["benchmarks"]:
        if "skipped" in b:
            lines.append(f"  {b['benchmark']:44} skipped: {b['skipped']}")
            continue
        lines.append(f"  {b['benchmark']:44} {b['measured']:>12,} {b['predicted']:>12,} "
                     f"{b['error_pct']:>+7.2f}%")
        if len(b["ops"]) > 1:
            for o in b["ops"]:
                lines.append(f"    {o['op']:42} {o['measured']:>12,} {o['predicted']:>12,} "
                             f"{o['error_pct']:>+7.2f}%")
        lines.append(f"    (Verilator {b['verilator_seconds']} s, model with data "
                     f"{b['model_seconds']} s)")
    lines.append(f"  largest error in total: {fig['max_error_pct']:.2f}%")
    return "\n".join(lines)
