"""``tessera run``: a transformer layer on the accelerator, explained.

``bert-layer`` quantizes a BERT encoder layer (random weights of a given shape, or a layer
of all-MiniLM-L6-v2 on real sentences); ``gpt2-layer`` and ``gpt2-decode`` a GPT-2 block
(a causal prefill, or decode steps after a KV cache). Each is lowered, run phase by phase
on a backend, and reported: from the hardware counters, each operation's cycles, MACs,
utilization, bus utilization and share of the layer; the error against the float
reference; and, on RTL, the bit-for-bit comparison with the golden model.
"""

from __future__ import annotations

import time

import numpy as np

from ..hw.config import TesseraConfig
from ..hw.isa import command_bits
from .check import InputError, format_bytes, whole_number
from .lower.attention import longest_keys, uses_kt_cache
from .lower.bert import PHASES, run_bert_layer
from .lower.gpt2 import GPT2_PHASES, place_gpt2_layer, run_gpt2_step, write_kv_cache
from .models import gpt2_quantize as G
from .models.quantize import (
    EXTENDED,
    cosine,
    dequantize,
    integer_bert_layer,
    quantize_activation,
    quantize_bert_layer,
)
from .models.reference import bert_layer, gpt2_layer, random_bert_weights, random_gpt2_weights
from .runtime import Runtime

__all__ = ["run_bert", "run_gpt2", "format_report", "layer_figures", "layer_bytes",
           "check_fits", "check_layer_shape", "check_attention", "check_run_args", "check_duration",
           "layer_macs"]

#: Said of the counters of a run on the model backend (``Runtime(..., "model",
#: model_data=True)``): the cycles are the performance model's, the data the golden
#: executor's.
PREDICTED = ("cycles and counters predicted by the performance model (docs/perf-model.md); "
             "the data computed by the golden model")


def _blocked(config: TesseraConfig, rows: int, cols: int, weights: bool = False) -> int:
    """Bytes of a ``rows x cols`` int8 matrix in main memory's blocked layout (column
    blocks of ``config.rows``; weights also padded to whole blocks of rows)."""
    d = config.rows
    if weights:
        rows = -(-rows // d) * d
    return -(-cols // d) * d * rows


def layer_bytes(config: TesseraConfig, kind: str, seq: int, hidden: int, ffn: int,
                steps: int = 0, wide: bool = False) -> int:
    """A lower bound of the main memory a layer's lowering places (its weights, input,
    activations and KV cache, K^T included, in the blocked layout; tables, biases and the
    command buffer come on top), from the shapes alone: ``kind`` is ``bert`` (``seq`` tokens),
    ``gpt2`` (a prefill of ``seq``), ``gpt2-decode`` (``steps`` tokens after ``seq``) or
    ``gemm`` (``seq x hidden`` times ``hidden x ffn``). ``wide``: a BERT layer's wide
    activations (their low digits too)."""
    H, F = hidden, ffn
    if kind == "gemm":
        return (_blocked(config, seq, H) + _blocked(config, H, F, True)
                + _blocked(config, seq, F))
    weights = sum(_blocked(config, r, c, True) for r, c in ((H, 3 * H), (H, H), (H, F),
                                                             (F, H)))
    if kind == "bert":
        low = sum(_blocked(config, seq, c) for c in (H, H, H, F, H)) if wide else 0
        return weights + sum(_blocked(config, seq, c) for c in (H, 3 * H, H, H, F, H)) + low
    n = 1 if kind == "gpt2-decode" else seq
    positions = seq + (steps if kind == "gpt2-decode" else 0)
    # K and V, and K^T in whole blocks of keys
    cache = 2 * _blocked(config, positions, H) + _blocked(config, positions, H, True)
    return weights + cache + sum(_blocked(config, n, c) for c in (H,) * 7 + (F,))


def check_fits(config: TesseraConfig, backend: str, need: int, what: str,
               mem_size: int | None = None) -> None:
    """Refuse, before any work, a workload whose tensors need more than main memory.

    Raises
    ------
    InputError
        Saying how much is needed and how much there is.
    """
    if backend == "uart":       # the board says its memory size when the link opens
        return
    have = mem_size if mem_size is not None else _main_memory(config)
    if need > have:
        raise InputError(f"{what} needs at least {format_bytes(need)} of main memory for its "
                         f"tensors, and main memory holds {format_bytes(have)} on "
                         f"configuration {config.hash} ({config.describe()}): use smaller "
                         f"shapes")


def check_run_args(config, backend: str, **numbers) -> None:
    """The arguments every layer takes: a configuration, a backend, positive shapes."""
    from .runtime import BACKENDS

    if not isinstance(config, TesseraConfig):
        raise InputError(f"config must be a TesseraConfig, not {type(config).__name__}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for name, value in numbers.items():
        whole_number(value, name, 0 if name == "seed" else 1)


def check_layer_shape(config: TesseraConfig, hidden: int, heads: int) -> None:
    """Refuse, before any work, a transformer layer the lowering cannot map onto
    ``config``: it needs a square array and heads whose dimension is whole blocks of it.

    Raises
    ------
    InputError
        Naming the shape and what is allowed.
    """
    d = config.rows
    if config.rows != config.cols:
        raise InputError(f"the lowering of a transformer layer needs a square array, not "
                         f"{config.rows} x {config.cols} (configuration {config.hash})")
    if hidden % heads:
        raise InputError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if (hidden // heads) % d:
        raise InputError(f"the head dimension hidden / heads = {hidden // heads} must be a "
                         f"multiple of the array's {d} rows (configuration {config.hash})")


def check_attention(config: TesseraConfig, hidden: int, heads: int, keys: int | None = None,
                    decode_keys: int | None = None, capacity: int | None = None) -> None:
    """Refuse, before any work, attention that does not fit ``config``'s on-chip memories:
    with as many queries as ``keys`` (an encoder's sequence, a prefill), and one query over
    ``decode_keys`` (a decode step); ``capacity``: a decoder's cache positions, which
    decide whether it keeps a K^T cache (``uses_kt_cache``). The shape must have passed
    :func:`check_layer_shape`.

    Raises
    ------
    InputError
        Naming the longest that fits.
    """
    dh = hidden // heads
    cached = capacity is not None and uses_kt_cache(config, dh, capacity)
    for n, decode in ((keys, False), (decode_keys, True)):
        if n is None:
            continue
        most = longest_keys(config, dh, decode, cached)
        if n > most:
            how = "one query (a decode step)" if decode else "as many queries as keys"
            raise InputError(
                f"attention over {n} keys does not fit configuration {config.hash}: a head "
                f"of dimension {dh} with {how} attends over at most {most} keys here (its "
                f"scores, context and K in the accumulator's {config.acc_rows} rows, Q, K^T, "
                f"V and P in the scratchpad's {config.spad_rows}); use shorter sequences or "
                f"a configuration with larger memories")


#: The Amaranth simulator's speed (sim/accel_amaranth.py), and the longest run it is given.
AMARANTH_CYCLES_PER_S = 1_000
MAX_AMARANTH_HOURS = 1


def layer_macs(kind: str, seq: int, hidden: int, ffn: int, steps: int = 0) -> int:
    """The multiply-accumulates of a workload (as :func:`layer_bytes` names them): the
    projections, the feed-forward and the attention products."""
    H, F = hidden, ffn
    if kind == "gemm":
        return seq * H * F
    per_token = 4 * H * H + 2 * H * F
    if kind == "gpt2-decode":
        return sum(per_token + 2 * (seq + t + 1) * H for t in range(min(steps, 1 << 20)))
    return seq * per_token + 2 * seq * seq * H


def check_duration(config: TesseraConfig, backend: str, macs: int, what: str) -> None:
    """Refuse, before any work, a run the ``amaranth`` backend would take hours over (it
    reports no progress: a long run looks like a hang). At least ``macs / (rows x cols)``
    cycles, at :data:`AMARANTH_CYCLES_PER_S`.

    Raises
    ------
    InputError
        Saying how long it would take and what to use instead.
    """
    if backend != "amaranth":
        return
    cycles = -(-macs // config.macs_per_cycle)
    hours = cycles / AMARANTH_CYCLES_PER_S / 3600
    if hours > MAX_AMARANTH_HOURS:
        raise InputError(f"{what} takes at least {cycles:,} cycles, {hours:,.1f} hours or more "
                         f"on the amaranth backend (about {AMARANTH_CYCLES_PER_S:,} cycles/s; "
                         f"it is given runs of up to {MAX_AMARANTH_HOURS} hour): use the "
                         f"verilator backend, or smaller shapes")


def _main_memory(config: TesseraConfig) -> int:
    from ..sim.accel_system import mem_bytes

    return mem_bytes(config)

#: What each phase does, for the report.
PHASE_TITLES = {
    "qkv": "Q, K, V projections",
    "attention": "attention (QK^T, i-Softmax, PV)",
    "out_proj_ln1": "output projection + residual + LayerNorm",
    "ffn1_gelu": "FFN 1 + i-GELU",
    "ffn2_ln2": "FFN 2 + residual + LayerNorm",
}


def _bert_inputs(seq, hidden, heads, ffn, model_layer, model_dir, seed, progress):
    """Float weights, input and key mask, and calibration data."""
    if model_layer is None:
        rng = np.random.default_rng(seed)
        w = random_bert_weights(hidden, heads, ffn, rng)
        x = rng.normal(0, 1, (seq, hidden))
        cal = [rng.normal(0, 1, (seq, hidden)) for _ in range(2)]
        return w, x, np.ones(seq, bool), cal, f"random BERT layer (seed {seed})"
    from .models import minilm

    model = minilm.load_minilm(model_dir)
    name = "all-MiniLM-L6-v2" if model_dir is None else str(model_dir)
    ids, mask = minilm.tokenize(minilm.EVALUATION_SENTENCES, seq, model)
    cids, cmask = minilm.tokenize(minilm.CALIBRATION_SENTENCES, seq, model)
    states = minilm.hidden_states(ids, mask, model)
    cal_states = minilm.hidden_states(cids, cmask, model)
    w = model.layers[model_layer]
    if progress:
        progress(f"{name} layer {model_layer}: {len(ids)} sentences of up to "
                 f"{ids.shape[1]} tokens")
    # One sentence runs on the accelerator; the calibration uses all of them.
    x, keep = states[model_layer][0], mask[0].astype(bool)
    cal = [(cal_states[model_layer][i], cmask[i]) for i in range(len(cids))]
    return w, x, keep, cal, f"{name} layer {model_layer}"


def run_bert(config: TesseraConfig, backend: str, *, seq: int = 128, hidden: int = 768,
             heads: int = 12, ffn: int = 3072, model_layer: int | None = None,
             model_dir=None, seed: int = 1, dataflow: str = "extended", progress=None,
             runtime: dict | None = None) -> dict:
    """One BERT layer on ``backend``; the figures as a dict (see :func:`format_report`).

    ``dataflow``: ``"extended"`` (per-group scales of every matrix, LayerNorm inputs
    prescaled per column block: the accurate one) or ``"base"``. ``runtime``: options of
    the RTL backend's :class:`Runtime` (memory timing, harness, waveform trace).

    Raises
    ------
    InputError
        If an argument is out of range, or the layer does not map onto ``config`` or its
        tensors cannot fit main memory (said before any work).
    ModelError
        If the model folder is incomplete, inconsistent or corrupt.
    """
    check_run_args(config, backend, seq=seq, hidden=hidden, heads=heads, ffn=ffn, seed=seed)
    if model_layer is None:
        check_layer_shape(config, hidden, heads)
        what = f"a BERT layer of seq {seq}, hidden {hidden}, FFN {ffn}"
        check_fits(config, backend, layer_bytes(config, "bert", seq, hidden, ffn), what)
        check_attention(config, hidden, heads, keys=seq)
        check_duration(config, backend, layer_macs("bert", seq, hidden, ffn), what)
    else:
        from .models.minilm import check_model_folder
        from .models.minilm import model_dir as installed

        mc = check_model_folder(installed() if model_dir is None else model_dir)
        whole_number(model_layer, "model_layer", 0, mc["num_hidden_layers"] - 1)
        whole_number(seq, "seq (tokens of a sentence)", 2,
                     min(mc["max_position_embeddings"], 512))
        check_layer_shape(config, mc["hidden_size"], mc["num_attention_heads"])
        check_attention(config, mc["hidden_size"], mc["num_attention_heads"], keys=seq)
        # The sentences' length is known after tokenizing: the weights alone here.
        check_fits(config, backend, layer_bytes(config, "bert", 0, mc["hidden_size"],
                                                mc["intermediate_size"]),
                   f"a layer of {model_dir or 'all-MiniLM-L6-v2'}")
    w, x, keep, cal, what = _bert_inputs(seq, hidden, heads, ffn, model_layer, model_dir,
                                         seed, progress)
    if dataflow not in ("base", "extended"):
        raise ValueError(f"dataflow must be 'base' or 'extended', not {dataflow!r}")
    ql = quantize_bert_layer(w, cal, **(EXTENDED if dataflow == "extended" else {}))
    xq = quantize_activation(x, ql.in_scale)
    S, H = xq.shape
    if progress:
        progress(f"{what}: seq {S}, hidden {H}, {ql.heads} heads, FFN {ql.ffn}; "
                 f"running on {backend}, phase by phase")

    def report(p):
        if progress:
            progress(f"  {p['cycles']:,} cycles, {p['commands']:,} commands, "
                     f"{p['cycles'] / max(p['wall_seconds'], 1e-9):,.0f} cycles/s")

    t = time.time()
    extra = {"progress": report} if backend != "golden" else {}
    rt = Runtime(config, backend, **(runtime or {}) if backend != "golden" else {})
    got, results, phases = run_bert_layer(rt, ql, xq, keep, check=True, per_phase=True,
                                          **extra)
    wall = time.time() - t
    want = integer_bert_layer(xq, ql, keep)
    ref = bert_layer(x, w, mask=keep)
    y = dequantize(got, ql.out_scale)
    fig = {
        "layer": what, "backend": backend, "config": config.hash, "dataflow": dataflow,
        "seq": S, "hidden": H, "heads": ql.heads, "ffn": ql.ffn,
        "commands": sum(len(p) for p in phases.values()),
        "bit_exact_with_integer_model": bool((got == want).all()),
        "accuracy": {"cosine": cosine(y[keep], ref[keep]),
                     "max_abs_error": float(np.abs(y[keep] - ref[keep]).max()),
                     "float_range": float(np.abs(ref[keep]).max())},
        "wall_seconds": round(wall, 1),
    }
    fig.update(layer_figures(config, [results], phases, PHASES, PHASE_TITLES))
    _rtl_figures(fig, rt)
    if backend not in ("golden", "model"):
        # The golden executor on the same layer: the RTL must equal it bit for bit (the
        # model backend's data is the golden executor's own).
        gold, _, _ = run_bert_layer(Runtime(config, "golden"), ql, xq, keep, check=True)
        fig["bit_exact_with_golden"] = bool((got == gold).all())
    return fig


GPT2_TITLES = {
    "ln1": "LayerNorm 1 (int8 residual stream)",
    "qkv": "Q, K, V projections (K, V into the cache)",
    "attention": "causal attention (QK^T, i-Softmax, PV)",
    "out_proj": "output projection + residual",
    "ln2": "LayerNorm 2",
    "ffn1_gelu": "FFN 1 + i-GELU",
    "ffn2": "FFN 2 + residual",
}


def run_gpt2(config: TesseraConfig, backend: str, *, decode: bool = False, seq: int = 128,
             hidden: int = 768, heads: int = 12, ffn: int = 3072, steps: int = 1,
             seed: int = 1, dataflow: str = "base", progress=None,
             runtime: dict | None = None) -> dict:
    """A GPT-2 block (random weights of the given shape) on ``backend``: a causal prefill of
    ``seq`` tokens, or with ``decode`` ``steps`` decode steps after a KV cache of ``seq``
    tokens (the integer model's, written into main memory). The figures as a dict (see
    :func:`format_report`); the counters of several steps add up.

    ``dataflow``: ``"base"`` (one scale for the residual stream) or ``"extended"`` (one per
    group of 16 columns, for residual outliers; the LayerNorm inputs are prescaled).
    ``runtime``: options of the RTL backend's :class:`Runtime`.

    Raises
    ------
    InputError
        If the block's tensors and KV cache cannot fit main memory (before any work).
    """
    if dataflow not in ("base", "extended"):
        raise ValueError(f"dataflow must be 'base' or 'extended', not {dataflow!r}")
    check_run_args(config, backend, seq=seq, hidden=hidden, heads=heads, ffn=ffn, steps=steps,
                   seed=seed)
    check_layer_shape(config, hidden, heads)
    kind = "gpt2-decode" if decode else "gpt2"
    what = (f"a GPT-2 block of hidden {hidden}, FFN {ffn}, "
            + (f"{steps} decode steps after {seq} tokens" if decode else
               f"a prefill of {seq} tokens"))
    check_fits(config, backend, layer_bytes(config, kind, seq, hidden, ffn, steps), what)
    check_attention(config, hidden, heads, capacity=seq + (steps if decode else 0),
                    **({"decode_keys": seq + steps} if decode else {"keys": seq}))
    check_duration(config, backend, layer_macs(kind, seq, hidden, ffn, steps), what)
    rng = np.random.default_rng(seed)
    w = random_gpt2_weights(hidden, heads, ffn, rng)
    total = seq + (steps if decode else 0)
    x = rng.normal(0, 1, (total, hidden))
    cal = [rng.normal(0, 1, (total, hidden)) for _ in range(2)]
    ql = G.quantize_gpt2_layer(w, cal, **({"smooth": G.RESIDUAL_PER_GROUP}
                                          if dataflow == "extended" else {}))
    xq = quantize_activation(x, ql.in_scale)
    what = f"random GPT-2 block (seed {seed})"
    mode = (f"{steps} decode step{'s' * (steps > 1)} after a KV cache of {seq} tokens"
            if decode else f"prefill of {seq} tokens")
    if progress:
        progress(f"{what}: {mode}, hidden {hidden}, {heads} heads, FFN {ql.ffn}; running "
                 f"on {backend}, phase by phase")

    def report(p):
        if progress:
            progress(f"  {p['cycles']:,} cycles, {p['commands']:,} commands, "
                     f"{p['cycles'] / max(p['wall_seconds'], 1e-9):,.0f} cycles/s")

    runtimes = []

    def on(rt_backend, extra):
        rt = Runtime(config, rt_backend, **(runtime or {}) if rt_backend != "golden" else {})
        runtimes.append(rt)
        p = place_gpt2_layer(rt, ql, total)
        if not decode:
            got, results, phases = run_gpt2_step(rt, ql, p, xq, 0, check=True,
                                                 per_phase=True, **extra)
            return got, [results], phases
        cache = G.Int8KVCache.for_layer(ql)
        G.integer_gpt2_decode_step(xq[:seq], ql, cache)
        write_kv_cache(rt, ql, p, cache)
        outs, runs = [], []
        for t in range(seq, total):
            if progress and rt_backend == backend:
                progress(f" step {t - seq + 1} of {steps} (position {t})")
            got, results, phases = run_gpt2_step(rt, ql, p, xq[t:t + 1], t, check=True,
                                                 per_phase=True, **extra)
            outs.append(got)
            runs.append(results)
        return np.concatenate(outs), runs, phases

    t = time.time()
    got, runs, phases = on(backend, {"progress": report} if backend != "golden" else {})
    wall = time.time() - t
    first = seq if decode else 0
    want = G.integer_gpt2_layer(xq, ql)[first:]
    ref = gpt2_layer(x, w)[first:]
    y = dequantize(got, ql.out_scale)
    fig = {
        "layer": f"{what}, {mode}", "backend": backend, "config": config.hash,
        "dataflow": dataflow, "seq": seq, "hidden": hidden, "heads": ql.heads, "ffn": ql.ffn,
        "mode": "decode" if decode else "prefill", "steps": steps if decode else None,
        "commands": sum(len(p) for p in phases.values()) * len(runs),
        "bit_exact_with_integer_model": bool((got == want).all()),
        "accuracy": {"cosine": cosine(y, ref), "max_abs_error": float(np.abs(y - ref).max()),
                     "float_range": float(np.abs(ref).max())},
        "wall_seconds": round(wall, 1),
    }
    fig.update(layer_figures(config, runs, phases, GPT2_PHASES, GPT2_TITLES))
    _rtl_figures(fig, runtimes[0])
    if backend not in ("golden", "model"):
        gold, _, _ = on("golden", {})
        fig["bit_exact_with_golden"] = bool((got == gold).all())
    return fig


def _rtl_figures(fig: dict, rt: Runtime) -> None:
    """What an RTL run adds to the figures: the memory model's timing, the simulation's
    own time (START to interrupt, summed over the runs) and its speed, waveform files."""
    if rt.backend == "golden" or not fig.get("cycles"):
        return
    fig["memory"] = rt.memory_timing()
    if rt.backend == "model":
        # Predicted, not simulated: no simulation speed to report.
        fig.pop("_sim_seconds", None)
        fig["predicted"] = True
        return
    fig["harness"] = rt.harness
    sim = fig.pop("_sim_seconds")
    fig["sim_seconds"] = round(sim, 2)
    fig["sim_cycles_per_s"] = round(fig["cycles"] / max(sim, 1e-9))
    if rt.traced:
        fig["traces"] = [str(p) for p in rt.traced]


def layer_figures(config: TesseraConfig, runs: list[dict], phases: dict, names,
                  titles: dict) -> dict:
    """Per-operation and whole-layer figures from the hardware counters of ``runs`` (each
    ``{phase: RunResult}``; several runs, e.g. decode steps, add up)."""
    peak = config.rows * config.cols
    cmd_bytes = command_bits(config) // 8
    ops, total_cycles, total_macs = [], 0, 0
    bus = tensor = exposed = 0
    for name in names:
        counters = [run[name].counters for run in runs]
        cycles = sum(c.get("cycles", 0) for c in counters)
        macs = sum(c["macs"] for c in counters)
        moved = sum(c.get("bytes_read", 0) + c.get("bytes_written", 0) for c in counters)
        fetched = sum(c.get("commands", 0) for c in counters) * cmd_bytes
        ops.append({"op": name, "title": titles[name], "commands": len(phases[name]),
                    "macs": macs, "cycles": cycles or None,
                    "utilization": macs / (cycles * peak) if cycles else None,
                    "bus_utilization": moved / (cycles * config.bus_bytes) if cycles
                    else None,
                    "nonlinear_exposed_cycles": sum(c.get("nonlinear_exposed", 0)
                                                    for c in counters) if cycles else None})
        total_cycles += cycles
        total_macs += macs
        bus += moved
        tensor += moved - fetched
        exposed += ops[-1]["nonlinear_exposed_cycles"] or 0
    for op in ops:
        op["share"] = op["cycles"] / total_cycles if total_cycles else None
    fig = {"ops": ops, "macs": total_macs}
    if total_cycles:
        fig["_sim_seconds"] = sum(run[name].wall_seconds for run in runs for name in names)
        fig.update({"cycles": total_cycles,
                    "utilization": total_macs / (total_cycles * peak),
                    "bus_utilization": bus / (total_cycles * config.bus_bytes),
                    "tensor_bus_utilization": tensor / (total_cycles * config.bus_bytes),
                    "nonlinear_exposed_cycles": exposed,
                    "nonlinear_exposed_share": exposed / total_cycles})
    return fig


def format_report(fig: dict) -> str:
    seq = "" if fig.get("mode") else f"seq {fig['seq']}, "
    lines = [f"{fig['layer']} on {fig['backend']}: {seq}hidden {fig['hidden']}, "
             f"{fig['heads']} heads, FFN {fig['ffn']}, {fig['dataflow']} dataflow, "
             f"{fig['commands']:,} commands",
             f"  {'operation':44} {'cycles':>12} {'MACs':>14} {'util':>6} {'bus':>6} "
             f"{'share':>6}"]
    for op in fig["ops"]:
        cyc = f"{op['cycles']:,}" if op["cycles"] else "-"
        util = f"{op['utilization']:.3f}" if op["utilization"] is not None else "-"
        share = f"{op['share']:.1%}" if op["share"] is not None else "-"
        bus = f"{op['bus_utilization']:.3f}" if op.get("bus_utilization") is not None else "-"
        lines.append(f"  {op['title']:44} {cyc:>12} {op['macs']:>14,} {util:>6} {bus:>6} "
                     f"{share:>6}")
    if fig.get("cycles"):
        lines.append(f"  {'layer':44} {fig['cycles']:>12,} {fig['macs']:>14,} "
                     f"{fig['utilization']:>6.3f} {fig['bus_utilization']:>6.3f} {'100%':>6}")
        lines.append(f"  non-linear work not overlapped by matrix work: "
                     f"{fig['nonlinear_exposed_cycles']:,} cycles "
                     f"({fig['nonlinear_exposed_share']:.1%} of the layer)")
        lines.append(f"  bus: {fig['bus_utilization']:.3f} of its peak "
                     f"({fig['tensor_bus_utilization']:.3f} without command fetch)")
        if fig.get("memory"):
            mem = fig["memory"]
            lines.append(f"  main memory: {mem['latency_cycles']}-cycle latency, "
                         f"{mem['bytes_per_cycle']:g} bytes/cycle")
            if fig.get("predicted"):
                lines.append(f"  {PREDICTED} ({fig['wall_seconds']} s in all)")
            else:
                lines.append(f"  simulated {fig['sim_cycles_per_s']:,} cycles/s "
                             f"({fig['sim_seconds']} s of simulation, {fig['harness']} "
                             f"harness; {fig['wall_seconds']} s in all)")
        for path in fig.get("traces", []):
            lines.append(f"  waveform: {path}")
    a = fig["accuracy"]
    lines.append(f"  against the float layer: cosine {a['cosine']:.5f}, max abs error "
                 f"{a['max_abs_error']:.3f} (values up to {a['float_range']:.2f})")
    lines.append("  equals the integer model bit for bit: "
                 f"{'yes' if fig['bit_exact_with_integer_model'] else 'NO'}")
    if "bit_exact_with_golden" in fig:
        lines.append("  RTL equals the golden model bit for bit: "
                     f"{'yes' if fig['bit_exact_with_golden'] else 'NO'}")
    return "\n".join(lines)
