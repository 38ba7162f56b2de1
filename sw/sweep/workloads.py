"""A sweep's workloads, built and run on a runtime backend by the existing lowerings.

Each workload is quantized once per process (random weights of the model's shape: the
cycles do not depend on the weights' values) and lowered for each configuration by the
lowering the ``tessera run`` commands use, phase by phase, so that the counters of every
operation come apart:

* ``gemm``: :func:`~tessera.sw.lower.gemm.run_gemm` (one operation);
* ``bert-layer``: :func:`~tessera.sw.lower.bert.run_bert_layer` with ``per_phase``;
* ``encoder``: :func:`~tessera.sw.lower.encoder.run_batch_by_phase` (every layer, each
  phase its own program; the operations add up over the layers);
* ``gpt2-prefill`` and ``gpt2-decode``: :func:`~tessera.sw.lower.gpt2.run_gpt2_step` with
  ``per_phase``, a prefill of ``seq`` tokens or one token after a KV cache of ``seq``
  (the integer model's, written into main memory as ``tessera run gpt2-decode`` does).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from ...hw.config import TesseraConfig, TesseraError
from ...hw.isa import command_bits
from ...sim.accel_system import MEM_BYTES
from ..check import InputError
from ..lower.plan import LoweringError
from ..runtime import MainMemoryFull, RunError, Runtime

__all__ = ["run_workload", "WorkloadUnfit", "check_fits_shape", "useful_macs"]

#: Cycles an RTL run of one phase may take before it counts as hung (a BERT-base layer at
#: 512 tokens on a 4x4 array runs for about a billion).
TIMEOUT_CYCLES = 1 << 40


class WorkloadUnfit(TesseraError, ValueError):
    """A workload the configuration cannot run (its shapes do not fit the array, the
    memories or main memory): the point is reported with this message, not run."""


def check_fits_shape(config: TesseraConfig, kind: str, p: dict) -> None:
    """What can be said before any work: the transformer lowerings need a square array
    and heads of whole blocks of it, and attention rows up to ``max_row_len``.

    Raises
    ------
    WorkloadUnfit
        Naming the shape and the configuration's limit.
    """
    if kind == "gemm":
        return
    d = config.rows
    if config.rows != config.cols:
        raise WorkloadUnfit(f"the transformer lowerings need a square array, not "
                            f"{config.rows} x {config.cols}")
    if (p["hidden"] // p["heads"]) % d:
        raise WorkloadUnfit(f"the head dimension {p['hidden'] // p['heads']} is not whole "
                            f"blocks of the array's {d} rows")
    if p["hidden"] > config.max_row_len:
        raise WorkloadUnfit(f"LayerNorm over rows of {p['hidden']} elements: the units "
                            f"normalise rows of at most max_row_len = {config.max_row_len}")
    keys = p["seq"] + (1 if kind == "gpt2-decode" else 0)
    if keys > config.max_row_len:
        raise WorkloadUnfit(f"attention over {keys} keys: Softmax rows hold at most "
                            f"max_row_len = {config.max_row_len}")


def useful_macs(kind: str, p: dict) -> int:
    """The workload's multiply-accumulates (projections, feed-forward, attention
    products), without padding."""
    if kind == "gemm":
        return p["m"] * p["k"] * p["n"]
    H, F, S = p["hidden"], p["ffn"], p["seq"]
    per_token = 4 * H * H + 2 * H * F
    if kind == "gpt2-decode":
        return per_token + 2 * (S + 1) * H
    if kind == "gpt2-prefill":
        return S * per_token + S * (S + 1) * H      # causal: each token its own keys
    return (S * per_token + 2 * S * S * H) * p.get("layers", 1)


@functools.lru_cache(maxsize=4)
def _bert_layers(hidden: int, heads: int, ffn: int, seq: int, layers: int, seed: int):
    from ..models.chain import quantize_chain
    from ..models.quantize import EXTENDED, quantize_activation
    from ..models.reference import random_bert_weights

    rng = np.random.default_rng(seed)
    ws = [random_bert_weights(hidden, heads, ffn, rng) for _ in range(layers)]
    cal = [rng.normal(0, 1, (seq, hidden)) for _ in range(2)]
    qls = quantize_chain(ws, cal, **EXTENDED)
    x = quantize_activation(rng.normal(0, 1, (seq, hidden)), qls[0].in_scale)
    return qls, x


@functools.lru_cache(maxsize=4)
def _gpt2_block(hidden: int, heads: int, ffn: int, seq: int, decode: bool, seed: int):
    from ..models import gpt2_quantize as G
    from ..models.quantize import quantize_activation
    from ..models.reference import random_gpt2_weights

    rng = np.random.default_rng(seed)
    w = random_gpt2_weights(hidden, heads, ffn, rng)
    total = seq + (1 if decode else 0)
    x = rng.normal(0, 1, (total, hidden))
    cal = [rng.normal(0, 1, (total, hidden)) for _ in range(2)]
    ql = G.quantize_gpt2_layer(w, cal)
    xq = quantize_activation(x, ql.in_scale)
    cache = None
    if decode:
        cache = G.Int8KVCache.for_layer(ql)
        G.integer_gpt2_decode_step(xq[:seq], ql, cache)
    return ql, xq, cache


@functools.lru_cache(maxsize=4)
def _gemm_operands(m: int, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (m, k)).astype(np.int8),
            rng.integers(-128, 128, (k, n)).astype(np.int8))


def _run(config, kind, p, rt, seed):
    """The workload on ``rt``: ``[{phase: RunResult}, ...]`` (one dict per layer or
    step) and the number of commands."""
    args = {"check": True}
    if rt.backend != "golden":
        args["timeout_cycles"] = TIMEOUT_CYCLES
    if kind == "gemm":
        from ..lower.gemm import OutputSpec, run_gemm

        a, b = _gemm_operands(p["m"], p["k"], p["n"], seed)
        ratio = 1 / (128 * 128 * max(1, int(np.sqrt(p["k"]))))
        _, prog, result, _ = run_gemm(rt, a, b, None, OutputSpec.requant(ratio * 64), **args)
        if not result.ok:
            raise RunError(result)
        return [{"gemm": result}], len(prog)
    if kind in ("bert-layer", "encoder"):
        from ..lower.encoder import run_batch_by_phase

        layers = p.get("layers", 1)
        qls, x = _bert_layers(p["hidden"], p["heads"], p["ffn"], p["seq"], layers, seed)
        _, runs, phases = run_batch_by_phase(rt, qls, [x], **args)
        return runs, sum(len(c) for ph in phases for c in ph.values())
    from ..lower.gpt2 import place_gpt2_layer, run_gpt2_step, write_kv_cache

    decode = kind == "gpt2-decode"
    ql, xq, cache = _gpt2_block(p["hidden"], p["heads"], p["ffn"], p["seq"], decode, seed)
    placed = place_gpt2_layer(rt, ql, len(xq))
    if decode:
        write_kv_cache(rt, ql, placed, cache)
        _, results, phases = run_gpt2_step(rt, ql, placed, xq[p["seq"]:], p["seq"],
                                           per_phase=True, **args)
    else:
        _, results, phases = run_gpt2_step(rt, ql, placed, xq, 0, per_phase=True, **args)
    return [results], sum(len(c) for c in phases.values())


def run_workload(config: TesseraConfig, workload: dict, backend: str, mem_latency: int = 100,
                 seed: int = 1) -> dict:
    """Run one workload (:meth:`Workload.to_dict`'s form) on ``config`` with ``backend``.

    Returns
    -------
    dict
        ``cycles``, ``counters`` (summed over the phases), ``ops`` (each operation's
        cycles, MACs, bytes moved; summed over the layers), ``useful_macs``,
        ``commands``, ``wall_seconds``.

    Raises
    ------
    WorkloadUnfit
        If the workload does not fit the configuration (shapes, memories, main memory).
    RunError
        If the machine stopped with an error.
    """
    kind = workload["kind"]
    p = {k: v for k, v in workload.items() if k not in ("kind", "name")}
    check_fits_shape(config, kind, p)
    options = {} if backend == "golden" else {"mem_latency": mem_latency}
    if backend == "model":
        # The model times an accelerator in front of a DRAM: main memory is not the
        # simulated system's (4 MiB for scratchpads of 64 KiB or less, sim/accel_system.py),
        # but the size the largest system has.
        options["mem_size"] = MEM_BYTES
    t = time.time()
    try:
        rt = Runtime(config, backend, **options)
        runs, commands = _run(config, kind, p, rt, seed)
    except MainMemoryFull as e:
        raise WorkloadUnfit(f"main memory: {e}") from None
    except (LoweringError, InputError) as e:
        raise WorkloadUnfit(str(e)) from None
    ops: dict[str, dict] = {}
    total: dict[str, int] = {}
    for run in runs:
        for name, result in run.items():
            op = ops.setdefault(name, {"op": name, "cycles": 0, "macs": 0, "bytes": 0})
            c = result.counters
            op["cycles"] += c.get("cycles", 0)
            op["macs"] += c.get("macs", 0)
            op["bytes"] += c.get("bytes_read", 0) + c.get("bytes_written", 0)
            for k, v in c.items():
                if isinstance(v, int | float):
                    total[k] = total.get(k, 0) + v
    if not total.get("cycles"):
        raise TesseraError(f"the {backend} backend counts no cycles; a sweep needs a backend "
                           f"that does (model, verilator, icarus)")
    return {"cycles": int(total["cycles"]), "counters": total, "ops": list(ops.values()),
            "useful_macs": useful_macs(kind, p), "commands": commands,
            "command_bytes": command_bits(config) // 8,
            "wall_seconds": round(time.time() - t, 3)}
