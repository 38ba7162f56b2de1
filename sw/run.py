"""``tessera run``: a transformer layer on the accelerator, explained.

``bert-layer`` quantizes a BERT encoder layer (random weights of a given shape, or a layer
of all-MiniLM-L6-v2 on real sentences), lowers it, runs it phase by phase on a backend and
reports, from the hardware counters, each operation's cycles, MACs, utilization and share
of the layer; the error against the float reference; and, on RTL, the bit-for-bit
comparison with the golden model.
"""

from __future__ import annotations

import time

import numpy as np

from ..hw.config import TesseraConfig
from .lower.bert import PHASES, run_bert_layer
from .models.quantize import (
    EXTENDED,
    cosine,
    dequantize,
    integer_bert_layer,
    quantize_activation,
    quantize_bert_layer,
)
from .models.reference import bert_layer, random_bert_weights
from .runtime import Runtime

__all__ = ["run_bert", "format_report"]

#: What each phase does, for the report.
PHASE_TITLES = {
    "qkv": "Q, K, V projections",
    "attention": "attention (QK^T, i-Softmax, PV)",
    "out_proj_ln1": "output projection + residual + LayerNorm",
    "ffn1_gelu": "FFN 1 + i-GELU",
    "ffn2_ln2": "FFN 2 + residual + LayerNorm",
}


def _bert_inputs(seq, hidden, heads, ffn, model_layer, seed, progress):
    """Float weights, input and key mask, and calibration data."""
    if model_layer is None:
        rng = np.random.default_rng(seed)
        w = random_bert_weights(hidden, heads, ffn, rng)
        x = rng.normal(0, 1, (seq, hidden))
        cal = [rng.normal(0, 1, (seq, hidden)) for _ in range(2)]
        return w, x, np.ones(seq, bool), cal, f"random BERT layer (seed {seed})"
    from .models import minilm

    model = minilm.load_minilm()
    ids, mask = minilm.tokenize(minilm.EVALUATION_SENTENCES, seq, model)
    cids, cmask = minilm.tokenize(minilm.CALIBRATION_SENTENCES, seq, model)
    states = minilm.hidden_states(ids, mask, model)
    cal_states = minilm.hidden_states(cids, cmask, model)
    w = model.layers[model_layer]
    if progress:
        progress(f"all-MiniLM-L6-v2 layer {model_layer}: {len(ids)} sentences of up to "
                 f"{ids.shape[1]} tokens")
    # One sentence runs on the accelerator; the calibration uses all of them.
    x, keep = states[model_layer][0], mask[0].astype(bool)
    cal = [(cal_states[model_layer][i], cmask[i]) for i in range(len(cids))]
    return w, x, keep, cal, f"all-MiniLM-L6-v2 layer {model_layer}"


def run_bert(config: TesseraConfig, backend: str, *, seq: int = 128, hidden: int = 768,
             heads: int = 12, ffn: int = 3072, model_layer: int | None = None,
             seed: int = 1, dataflow: str = "extended", progress=None) -> dict:
    """One BERT layer on ``backend``; the figures as a dict (see :func:`format_report`).

    ``dataflow``: ``"extended"`` (per-group scales of every matrix, LayerNorm inputs
    prescaled per column block: the accurate one) or ``"base"``."""
    w, x, keep, cal, what = _bert_inputs(seq, hidden, heads, ffn, model_layer, seed,
                                         progress)
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
    got, results, phases = run_bert_layer(Runtime(config, backend), ql, xq, keep, check=True,
                                          per_phase=True, **extra)
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
    peak = config.rows * config.cols
    ops, total_cycles, total_macs = [], 0, 0
    bus = exposed = 0
    for name in PHASES:
        c = results[name].counters
        cycles = c.get("cycles")
        ops.append({"op": name, "title": PHASE_TITLES[name], "commands": len(phases[name]),
                    "macs": c["macs"], "cycles": cycles,
                    "utilization": c["macs"] / (cycles * peak) if cycles else None})
        total_cycles += cycles or 0
        total_macs += c["macs"]
        bus += c.get("bytes_read", 0) + c.get("bytes_written", 0)
        exposed += c.get("nonlinear_exposed", 0)
        ops[-1]["nonlinear_exposed_cycles"] = c.get("nonlinear_exposed")
    for op in ops:
        op["share"] = op["cycles"] / total_cycles if total_cycles else None
    fig["ops"] = ops
    fig["macs"] = total_macs
    if total_cycles:
        fig.update({"cycles": total_cycles,
                    "utilization": total_macs / (total_cycles * peak),
                    "bus_utilization": bus / (total_cycles * config.bus_bytes),
                    "nonlinear_exposed_cycles": exposed,
                    "nonlinear_exposed_share": exposed / total_cycles,
                    "sim_cycles_per_s": round(total_cycles / max(wall, 1e-9))})
    if backend != "golden":
        # The golden executor on the same layer: the RTL must equal it bit for bit.
        gold, _, _ = run_bert_layer(Runtime(config, "golden"), ql, xq, keep, check=True)
        fig["bit_exact_with_golden"] = bool((got == gold).all())
    return fig


def format_report(fig: dict) -> str:
    lines = [f"{fig['layer']} on {fig['backend']}: seq {fig['seq']}, hidden {fig['hidden']}, "
             f"{fig['heads']} heads, FFN {fig['ffn']}, {fig['dataflow']} dataflow, "
             f"{fig['commands']:,} commands",
             f"  {'operation':44} {'cycles':>12} {'MACs':>14} {'util':>6} {'share':>6}"]
    for op in fig["ops"]:
        cyc = f"{op['cycles']:,}" if op["cycles"] else "-"
        util = f"{op['utilization']:.3f}" if op["utilization"] is not None else "-"
        share = f"{op['share']:.1%}" if op["share"] is not None else "-"
        lines.append(f"  {op['title']:44} {cyc:>12} {op['macs']:>14,} {util:>6} {share:>6}")
    if fig.get("cycles"):
        lines.append(f"  {'layer':44} {fig['cycles']:>12,} {fig['macs']:>14,} "
                     f"{fig['utilization']:>6.3f} {'100%':>6}")
        lines.append(f"  non-linear work not overlapped by matrix work: "
                     f"{fig['nonlinear_exposed_cycles']:,} cycles "
                     f"({fig['nonlinear_exposed_share']:.1%} of the layer)")
        lines.append(f"  bus: {fig['bus_utilization']:.3f} of its peak; simulated "
                     f"{fig['sim_cycles_per_s']:,} cycles/s ({fig['wall_seconds']} s)")
    a = fig["accuracy"]
    lines.append(f"  against the float layer: cosine {a['cosine']:.5f}, max abs error "
                 f"{a['max_abs_error']:.3f} (values up to {a['float_range']:.2f})")
    lines.append("  equals the integer model bit for bit: "
                 f"{'yes' if fig['bit_exact_with_integer_model'] else 'NO'}")
    if "bit_exact_with_golden" in fig:
        lines.append("  RTL equals the golden model bit for bit: "
                     f"{'yes' if fig['bit_exact_with_golden'] else 'NO'}")
    return "\n".join(lines)
