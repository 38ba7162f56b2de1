"""Whole models on a backend: all-MiniLM-L6-v2 sentence embeddings, the whole encoder as
one program (``tessera run minilm``).

The host embeds the tokens (the embedding table's gather and its LayerNorm, in float),
quantizes them to the first layer's input scale, and hands the accelerator one program
that runs every layer over every sentence of the batch (``sw/lower/encoder.py``); it then
reads the last layer's int8 output, mean-pools each sentence's tokens and normalizes, as
sentence-transformers does. The embeddings are compared with the float model's, sentence
by sentence, and the sentences' similarity matrix with the float one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..hw.config import TesseraConfig
from .check import InputError, input_file
from .lower.encoder import run_batch
from .models.chain import integer_encoder
from .runtime import Runtime

__all__ = ["run_minilm", "format_minilm", "run_encoder_model", "format_encoder",
           "run_decoder_model", "format_decoder", "read_sentences", "MAX_SENTENCES"]

#: Sentences one run takes (the batch is one program; its tensors must fit main memory).
MAX_SENTENCES = 64

#: How the chained encoder is quantized: the extended dataflow, with per-group scales of
#: the residual stream (``x``, ``out``) as well, the FFN units whose ``w2`` weights are outliers
#: split over one more group of units (``quantize.split_ffn_outliers``: the same function, a
#: finer ``w2`` scale; layers 0 to 3 get 1552 units), the weights rounded by GPTQ
#: (``quantize.gptq_codes``, damping 0.03: least output error on the calibration inputs),
#: calibrated on the 74 ``minilm.ENCODER_CALIBRATION_SENTENCES``. MiniLM-L6's embeddings
#: reach cosine worst 0.99292 / mean 0.99455 with the float model on the 8 evaluation
#: sentences and 0.98742 / 0.99343 on the 28 ``minilm.HELD_OUT_SENTENCES`` (``tessera run
#: minilm [--held-out]``; 0.99285 / 0.99445 and 0.98523 / 0.99275 without GPTQ, on the 16
#: ``CALIBRATION_SENTENCES``). Some sentences of 1 to 4 words stay below 0.985 (to 0.967):
#: the float model is five to eight times as sensitive to the same noise on them. Measured
#: and not taken (``docs/accuracy.md``): 8-bit probabilities, more calibration sentences
#: without GPTQ, calibrating each layer on the integer chain's own outputs, percentile
#: ranges, other alphas, hidden dimensions regrouped, weight scales chosen for least output
#: error, bias correction, ``v`` and ``k`` centred.
ENCODER_QUANTIZATION = {"ln_prescale": True,
                        "smooth": {"h1": 0.5, "f": 0.75, "x": 0.75, "out": 0.75},
                        "split_ffn": True, "gptq": 0.03}


def read_sentences(path) -> list[str]:
    """One sentence per non-empty line of a UTF-8 text file."""
    p = input_file(path, "--sentences file", max_bytes=1 << 20)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path} holds no sentences (one per line)")
    return lines


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors (average ranks for ties)."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):          # ties share their mean rank
            tie = x == v
            r[tie] = r[tie].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _runtime(config: TesseraConfig, backend: str, runtime: dict | None, say):
    """The runtime of a whole-model run, and the progress option of its runs (RTL)."""
    if backend == "golden":
        return Runtime(config, backend), {}

    def report(p):
        say(f"  {p['cycles']:,} cycles, {p['commands']:,} commands, "
            f"{p['cycles'] / max(p['wall_seconds'], 1e-9):,.0f} cycles/s")

    return Runtime(config, backend, **(runtime or {})), {"progress": report}


def run_minilm(config: TesseraConfig, backend: str, sentences: list[str], *,
               max_len: int = 128, progress=None, runtime: dict | None = None,
               check_golden: bool = True, per_op: bool = False,
               explain: bool = False, model_dir=None, layers: int | None = None,
               wide: bool = False) -> dict:
    """The sentences' embeddings through the integer MiniLM-L6 on ``backend``, as one
    program; the figures as a dict (:func:`format_minilm`), the embeddings under
    ``"embeddings"`` (an ndarray, not in the JSON). ``per_op``: on an RTL backend, the same
    commands again with each phase of each layer its own program, for the per-layer and
    per-operation table of the hardware counters. ``explain``: where the error comes from
    (:func:`explain_errors`). ``model_dir``: another BERT-style sentence encoder in the
    same layout (config.json, model.safetensors, tokenizer.json); ``layers``: its first
    ``layers`` layers only. ``wide``: wide activations (15 bits as two int8 digits, every
    product two passes of the array; ``docs/accuracy.md``).

    Raises
    ------
    InputError
        No sentence, too many, or a bad length.
    ModelNotInstalledError, ModelError
        If the model is missing or its folder is broken.
    """
    from .check import whole_number
    from .models import minilm
    from .models.quantize import dequantize, quantize_activation

    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise InputError("give at least one sentence (--text or --sentences)")
    if len(sentences) > MAX_SENTENCES:
        raise InputError(f"{len(sentences)} sentences in one run; at most {MAX_SENTENCES}")
    whole_number(max_len, "--seq (the tokens a sentence is cut to)", 2, 512)
    from .run import check_attention, check_fits, check_layer_shape, layer_bytes

    say = progress or (lambda _: None)
    model = minilm.load_minilm(model_dir)
    name = "all-MiniLM-L6-v2" if model_dir is None else str(model_dir)
    if layers is not None:
        whole_number(layers, "layers", 1, len(model.layers))
        model = dataclasses.replace(model, layers=tuple(model.layers[:layers]))
    ids, mask = minilm.tokenize(sentences, max_len, model)
    keep = mask.astype(bool)
    mc = model.config
    hidden, ffn = mc["hidden_size"], mc["intermediate_size"]
    check_layer_shape(config, hidden, mc["num_attention_heads"])
    check_fits(config, backend, len(model.layers) * layer_bytes(config, "bert",
                                                                int(keep.sum()), hidden, ffn,
                                                                wide=wide),
               f"{name} over {int(keep.sum())} tokens")
    check_attention(config, hidden, mc["num_attention_heads"], keys=int(keep.sum(-1).max()))
    kind = "wide (15-bit) activations" if wide else "int8 activations"
    say(f"quantizing {name} as a chain of integer layers, {kind} (calibration sentences)")
    qls = minilm.quantize_encoder(model=model, max_len=max_len, **ENCODER_QUANTIZATION,
                                  wide=wide)
    emb = minilm.embed(ids, model)
    xs = [quantize_activation(emb[b][keep[b]], qls[0].in_scale, wide=wide)
          for b in range(len(ids))]
    lengths = [len(x) for x in xs]
    say(f"{len(sentences)} sentences of {min(lengths)} to {max(lengths)} tokens "
        f"({sum(lengths)} in all), {len(qls)} layers, one program on {backend}")

    rt, extra = _runtime(config, backend, runtime, say)
    t = time.time()
    outs, result, prog = run_batch(rt, qls, xs, check=True, **extra)
    wall = time.time() - t

    pooled = np.stack([dequantize(o, qls[-1].out_scale).mean(axis=0) for o in outs])
    got = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    states = minilm.hidden_states(ids, mask, model)
    ref = minilm.mean_pool(states[-1], mask)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = np.sum(got * ref, axis=1)
    sim_got, sim_ref = got @ got.T, ref @ ref.T
    upper = np.triu_indices(len(sentences), 1)
    fig = {
        "model": name, "backend": backend, "config": config.hash,
        "sentences": len(sentences), "tokens": lengths, "layers": len(qls),
        "activations": "wide" if wide else "int8",
        "commands": len(prog), "program": "one program: every layer, every sentence",
        "cosine": [float(c) for c in cos], "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "similarity": sim_got.round(4).tolist(), "similarity_float": sim_ref.round(4).tolist(),
        "spearman": _spearman(sim_got[upper], sim_ref[upper]) if len(sentences) > 2
        else None,
        "wall_seconds": round(wall, 1), "embeddings": got,
    }
    if backend != "golden":
        fig.update(_rtl_run_figures(config, result, rt))
    if per_op and backend != "golden":
        fig["layers_table"] = _per_layer(config, backend, qls, xs, runtime, say)
    if explain:
        fig["explain"] = explain_errors(model, qls, states, mask)
    if check_golden:
        # The chained integer layers (no command stream) on the same inputs.
        want = [integer_encoder(x, qls) for x in xs]
        fig["bit_exact_with_integer_model"] = all(
            (a == b).all() for a, b in zip(outs, want, strict=True))
    return fig


def explain_errors(model, qls, states, mask) -> list[dict]:
    """Where the embeddings' error comes from, layer by layer (on the real tokens of
    ``mask``; ``states``: the float model's hidden states, :func:`minilm.hidden_states`):

    * ``chain_cosine``: the integer chain's hidden state after the layer against the float
      model's (the error accumulated so far);
    * ``local``: the layer alone, fed the float model's input of that layer: the cosine of
      each of its integer intermediates against the float ones
      (:func:`~.models.quantize.layer_errors`), so that the operation that loses most
      stands out.
    """
    from .models.quantize import (
        cosine,
        dequantize,
        integer_bert_layer,
        layer_errors,
        quantize_activation,
    )

    keep = mask.astype(bool)
    x = quantize_activation(states[0], qls[0].in_scale, wide=qls[0].wide)
    out = []
    for i, (w, ql) in enumerate(zip(model.layers, qls, strict=True)):
        x = integer_bert_layer(x, ql, keep)
        chain = cosine(dequantize(x, ql.out_scale)[keep], states[i + 1][keep])
        local = layer_errors(states[i], w, ql, keep)
        worst = min(local, key=lambda k: local[k]["cosine"])
        out.append({"layer": i, "chain_cosine": chain, "worst_op": worst,
                    "local": {k: round(v["cosine"], 6) for k, v in local.items()}})
    return out


def _per_layer(config, backend, qls, xs, runtime, say) -> list[dict]:
    """Per layer, the figures of each phase run as its own program (run.layer_figures)."""
    from .lower.bert import PHASES
    from .lower.encoder import run_batch_by_phase
    from .run import PHASE_TITLES, layer_figures

    say("the same commands phase by phase, for the per-layer and per-operation counters")
    rt = Runtime(config, backend, **(runtime or {}))
    _, runs, phases = run_batch_by_phase(rt, qls, xs, check=True)
    table = []
    for i, (run, ph) in enumerate(zip(runs, phases, strict=True)):
        f = layer_figures(config, [run], ph, PHASES, PHASE_TITLES)
        f.pop("_sim_seconds", None)
        table.append({"layer": i, **f})
    return table


def format_minilm(fig: dict, sentences: list[str]) -> str:
    """The figures as text: per sentence, the similarity matrices, the run."""
    acts = "wide (15-bit) activations" if fig.get("activations") == "wide" else \
        "int8 activations"
    out = [f"{fig['model']}, {fig['layers']} layers, {acts}, on {fig['backend']} "
           f"(configuration {fig['config']}): {fig['sentences']} sentences, "
           f"{sum(fig['tokens'])} tokens, {fig['commands']:,} commands in "
           f"{fig['program']}", ""]
    out.append("  #  tokens  cosine with float  sentence")
    for i, s in enumerate(sentences):
        text = s if len(s) <= 60 else s[:57] + "..."
        out.append(f"{i:3d}  {fig['tokens'][i]:6d}  {fig['cosine'][i]:17.5f}  {text}")
    out.append(f"cosine with the float model: worst {fig['cosine_min']:.5f}, mean "
               f"{fig['cosine_mean']:.5f}")
    n = fig["sentences"]
    if n > 1:
        out += ["", "similarity (accelerator | float):"]
        for i in range(n):
            a = " ".join(f"{v:6.3f}" for v in fig["similarity"][i])
            b = " ".join(f"{v:6.3f}" for v in fig["similarity_float"][i])
            out.append(f"{i:3d}  {a}  |  {b}")
        if fig.get("spearman") is not None:
            out.append(f"ranking agreement of the pairs (Spearman): {fig['spearman']:.4f}")
    if "cycles" in fig:
        out += ["", f"{fig['cycles']:,} cycles, MAC utilization {fig['utilization']:.3f}, "
                    f"bus utilization {fig['bus_utilization']:.3f}, " + _speed(fig)]
    if fig.get("layers_table"):
        total = sum(t["cycles"] for t in fig["layers_table"])
        out += ["", "per layer and operation (each phase its own program, the same commands; "
                    f"{total:,} cycles in all):",
                f"  {'layer / operation':48} {'cycles':>11} {'share':>6} {'MAC util':>8} "
                f"{'bus':>6}"]
        for t in fig["layers_table"]:
            out.append(f"  layer {t['layer']:<42} {t['cycles']:>11,} "
                       f"{t['cycles'] / total:>6.1%} {t['utilization']:>8.3f} "
                       f"{t['bus_utilization']:>6.3f}")
            for op in t["ops"]:
                out.append(f"    {op['title']:46} {op['cycles']:>11,} "
                           f"{op['cycles'] / total:>6.1%} {op['utilization']:>8.3f} "
                           f"{op['bus_utilization']:>6.3f}")
    if fig.get("explain"):
        ex = fig["explain"]
        names = list(ex[0]["local"])
        out += ["", "where the error comes from: per layer, the chain's hidden state against "
                    "the float model's, then each operation of the layer alone (cosine):",
                "  layer   chain  " + " ".join(f"{n[:8]:>8}" for n in names)]
        for e in ex:
            out.append(f"  {e['layer']:5d} {e['chain_cosine']:7.4f}  "
                       + " ".join(f"{e['local'][n]:8.4f}" for n in names)
                       + f"   (lowest: {e['worst_op']})")
    if "bit_exact_with_integer_model" in fig:
        out.append("bit-exact with the chained integer layers: "
                   + ("yes" if fig["bit_exact_with_integer_model"] else "NO"))
    out.append(f"wall time {fig['wall_seconds']} s")
    return "\n".join(out)


def save_embeddings(path, emb: np.ndarray) -> Path:
    from .check import output_file
    p = output_file(path, "--out file")
    np.save(p, emb)
    return p


def _counter_figures(config: TesseraConfig, counters: dict) -> dict:
    """Cycles, MACs, MAC and bus utilization of one run's hardware counters."""
    cycles = counters["cycles"]
    moved = counters.get("bytes_read", 0) + counters.get("bytes_written", 0)
    return {"cycles": cycles, "macs": counters["macs"],
            "utilization": counters["macs"] / (cycles * config.rows * config.cols),
            "bus_utilization": moved / (cycles * config.bus_bytes)}


def _rtl_run_figures(config: TesseraConfig, result, rt) -> dict:
    """A whole RTL run's figures: its counters', its speed, the memory's timing (on the
    model backend: predicted, with no simulation speed)."""
    fig = {**_counter_figures(config, result.counters), "memory": rt.memory_timing()}
    if rt.backend == "model":
        fig["predicted"] = True
    else:
        fig["cycles_per_second"] = result.counters["cycles"] / max(result.wall_seconds, 1e-9)
    return fig


def _speed(fig: dict) -> str:
    """How a run's cycles were obtained: simulated (at what speed) or predicted."""
    if fig.get("predicted"):
        from .run import PREDICTED

        return PREDICTED
    return f"{fig['cycles_per_second']:,.0f} simulated cycles/s"


def random_encoder(config: TesseraConfig, backend: str, *, layers: int, seq: int,
                   hidden: int, heads: int, ffn: int, batch: int = 1, seed: int = 1,
                   progress=None):
    """A BERT encoder of ``layers`` random layers quantized as a chain, and ``batch`` random
    sequences of ``seq`` tokens, once the shapes are checked to fit ``config`` on
    ``backend``: ``(float weights, quantized layers, float inputs, int8 inputs)``.

    Raises
    ------
    InputError
        For a number of layers or sequences out of range, a shape the array cannot run, or
        tensors that do not fit main memory.
    """
    from .check import whole_number
    from .models.chain import quantize_chain
    from .models.quantize import EXTENDED, quantize_activation
    from .models.reference import random_bert_weights
    from .run import check_attention, check_fits, check_layer_shape, layer_bytes

    whole_number(layers, "layers", 1, 96)
    whole_number(batch, "batch", 1, MAX_SENTENCES)
    check_layer_shape(config, hidden, heads)
    need = layers * layer_bytes(config, "bert", seq * batch, hidden, ffn)
    check_fits(config, backend, need, f"a {layers}-layer encoder over {batch} x {seq} "
                                      f"tokens")
    check_attention(config, hidden, heads, keys=seq)
    rng = np.random.default_rng(seed)
    ws = [random_bert_weights(hidden, heads, ffn, rng) for _ in range(layers)]
    if progress:
        progress(f"quantizing {layers} random layers (hidden {hidden}, {heads} heads, FFN "
                 f"{ffn}) as a chain")
    qls = quantize_chain(ws, [rng.normal(0, 1, (seq, hidden)) for _ in range(2)], **EXTENDED)
    xs_f = [rng.normal(0, 1, (seq, hidden)) for _ in range(batch)]
    xs = [quantize_activation(x, qls[0].in_scale) for x in xs_f]
    return ws, qls, xs_f, xs


def run_encoder_model(config: TesseraConfig, backend: str, *, layers: int = 12,
                      seq: int = 128, hidden: int = 768, heads: int = 12, ffn: int = 3072,
                      batch: int = 1, seed: int = 1, progress=None,
                      runtime: dict | None = None) -> dict:
    """A whole BERT encoder of random weights (``layers`` of the given shape) over
    ``batch`` random sequences of ``seq`` tokens, as one program; the figures as a dict
    (:func:`format_encoder`)."""
    from .models.quantize import cosine, dequantize
    from .models.reference import bert_layer
    from .run import check_run_args

    check_run_args(config, backend, seq=seq, hidden=hidden, heads=heads, ffn=ffn, seed=seed)
    say = progress or (lambda _: None)
    ws, qls, xs_f, xs = random_encoder(config, backend, layers=layers, seq=seq,
                                       hidden=hidden, heads=heads, ffn=ffn, batch=batch,
                                       seed=seed, progress=say)
    say(f"{batch} sequence(s) of {seq} tokens through {layers} layers: one program on "
        f"{backend}")

    rt, extra = _runtime(config, backend, runtime, say)
    t = time.time()
    outs, result, prog = run_batch(rt, qls, xs, check=True, **extra)
    wall = time.time() - t
    refs = []
    for x in xs_f:
        for w in ws:
            x = bert_layer(x, w)
        refs.append(x)
    cos = [cosine(dequantize(o, qls[-1].out_scale), r) for o, r in zip(outs, refs,
                                                                        strict=True)]
    fig = {"model": f"random BERT encoder (seed {seed})", "backend": backend,
           "config": config.hash, "layers": layers, "seq": seq, "batch": batch,
           "hidden": hidden, "heads": heads, "ffn": ffn, "commands": len(prog),
           "cosine_min": float(min(cos)), "wall_seconds": round(wall, 1),
           "bit_exact_with_integer_model": all(
               (o == integer_encoder(x, qls)).all() for o, x in zip(outs, xs, strict=True))}
    if backend != "golden":
        fig.update(_rtl_run_figures(config, result, rt))
    return fig


def format_encoder(fig: dict) -> str:
    out = [f"{fig['model']}: {fig['layers']} layers (hidden {fig['hidden']}, {fig['heads']} "
           f"heads, FFN {fig['ffn']}), {fig['batch']} x {fig['seq']} tokens, on "
           f"{fig['backend']} (configuration {fig['config']}), {fig['commands']:,} commands "
           f"in one program"]
    if "cycles" in fig:
        out.append(f"{fig['cycles']:,} cycles, MAC utilization {fig['utilization']:.3f}, "
                   f"bus utilization {fig['bus_utilization']:.3f}, " + _speed(fig))
    out.append(f"cosine with the float encoder: {fig['cosine_min']:.5f} (worst sequence)")
    out.append("bit-exact with the chained integer layers: "
               + ("yes" if fig["bit_exact_with_integer_model"] else "NO"))
    out.append(f"wall time {fig['wall_seconds']} s")
    return "\n".join(out)


def run_decoder_model(config: TesseraConfig, backend: str, *, layers: int = 12,
                      hidden: int = 768, heads: int = 12, ffn: int = 3072, vocab: int = 1000,
                      prompt_len: int = 32, generate: int = 16, seed: int = 1,
                      progress=None, runtime: dict | None = None, model_dir=None,
                      prompt: str | None = None) -> dict:
    """Greedy generation through a GPT-2-style decoder on ``backend``: a program for the
    prompt's prefill, then one per generated token, through every block; the figures as a
    dict (:func:`format_decoder`). Random weights of the given shape, or ``model_dir``: a
    GPT-2 folder in the Hugging Face layout (its first ``layers`` blocks), with ``prompt``
    as text (else ``prompt_len`` random tokens)."""
    from .check import whole_number
    from .lower.decoder import AcceleratorDecoder
    from .models.chain import (
        float_generate,
        integer_generate,
        quantize_decoder,
        random_gpt2_model,
    )
    from .models.chain import generate as generate_with
    from .run import check_attention, check_fits, check_layer_shape, check_run_args, layer_bytes

    tokenizer = None
    if model_dir is not None:
        from .models.gpt2_folder import load_gpt2_folder
        model, tokenizer, mc = load_gpt2_folder(model_dir)
        whole_number(layers, "layers", 1, mc["n_layer"])
        model = dataclasses.replace(model, blocks=model.blocks[:layers])
        hidden, heads, vocab = mc["n_embd"], mc["n_head"], mc["vocab_size"]
        ffn = model.blocks[0]["w1"].shape[1]
        if prompt is not None:
            ids = tokenizer.encode(prompt).ids
            if not ids:
                raise InputError("the prompt has no tokens")
            prompt_len = len(ids)
    check_run_args(config, backend, hidden=hidden, heads=heads, ffn=ffn, seed=seed)
    whole_number(layers, "layers", 1, 96)
    whole_number(vocab, "vocab", 2, 1 << 17)
    whole_number(prompt_len, "prompt-len (the prompt's tokens)", 1, config.max_row_len - 1)
    whole_number(generate, "generate", 1, config.max_row_len - prompt_len)
    capacity = prompt_len + generate
    check_layer_shape(config, hidden, heads)
    need = layers * layer_bytes(config, "gpt2", capacity, hidden, ffn)
    check_fits(config, backend, need, f"a {layers}-block decoder over {capacity} positions")
    check_attention(config, hidden, heads, keys=prompt_len, decode_keys=capacity,
                    capacity=capacity)
    say = progress or (lambda _: None)
    rng = np.random.default_rng(seed)
    if model_dir is None:
        model = random_gpt2_model(layers, hidden, heads, ffn, vocab, capacity, rng)
        name = f"random GPT-2 decoder (seed {seed})"
    else:
        if capacity > len(model.wpe):
            raise InputError(f"{capacity} positions; {model_dir} has {len(model.wpe)}")
        name = str(model_dir)
    if prompt is not None and tokenizer is not None:
        ids = [int(t) for t in tokenizer.encode(prompt).ids]
    else:
        ids = [int(t) for t in rng.integers(0, vocab, prompt_len)]
    say(f"quantizing {layers} blocks (hidden {hidden}, {heads} heads, FFN {ffn}, "
        f"vocabulary {vocab}) as a chain")
    cal = [ids] + [list(rng.integers(0, vocab, capacity)) for _ in range(2)]
    qls = quantize_decoder(model, cal)
    prompt_ids = ids
    rt, _ = _runtime(config, backend, runtime, say)
    dec = AcceleratorDecoder(rt, qls, capacity)
    t0 = time.time()
    say(f"prompt of {prompt_len} tokens, then {generate} tokens, on {backend}")
    steps = generate
    got, _ = generate_with(model, qls, prompt_ids, steps, dec.step,
                           progress=lambda i, tok: say(f"  token {i} of {steps}: {tok}"))
    wall = time.time() - t0
    want, _ = integer_generate(model, qls, prompt_ids, generate)
    ref = float_generate(model, prompt_ids, generate)
    fig = {"model": name, "backend": backend,
           "config": config.hash, "layers": layers, "hidden": hidden, "heads": heads,
           "ffn": ffn, "vocab": vocab, "prompt_len": prompt_len, "generate": generate,
           "tokens": got, "tokens_float": ref, "tokens_integer_model": want,
           "bit_exact_with_integer_model": got == want,
           "same_as_float_for": next((i for i, (a, b) in enumerate(zip(got, ref,
                                                                       strict=True))
                                      if a != b), generate),
           "programs": len(dec.results), "wall_seconds": round(wall, 1)}
    if tokenizer is not None:
        fig.update({"prompt": tokenizer.decode(prompt_ids), "text": tokenizer.decode(got),
                    "text_float": tokenizer.decode(ref)})
    if backend != "golden":
        steps = [{"tokens": n, "commands": commands,
                  **_counter_figures(config, result.counters)}
                 for n, result, commands in dec.results]
        decode = steps[1:]
        fig.update({"steps": steps, "prefill_cycles": steps[0]["cycles"],
                    "cycles_per_token": (sum(s["cycles"] for s in decode) / len(decode)
                                         if decode else None),
                    "decode_bus_utilization": (
                        sum(s["bus_utilization"] * s["cycles"] for s in decode)
                        / sum(s["cycles"] for s in decode) if decode else None),
                    "memory": rt.memory_timing()})
        if backend == "model":
            fig["predicted"] = True
    return fig


def format_decoder(fig: dict) -> str:
    out = [f"{fig['model']}: {fig['layers']} blocks (hidden {fig['hidden']}, {fig['heads']} "
           f"heads, FFN {fig['ffn']}, vocabulary {fig['vocab']}), on {fig['backend']} "
           f"(configuration {fig['config']}): a prompt of {fig['prompt_len']} tokens, "
           f"{fig['generate']} generated, {fig['programs']} programs (the prefill, then one "
           f"per token, each through every block)", "",
           *([f"prompt: {fig['prompt']!r}", f"generated (accelerator): {fig['text']!r}",
              f"generated (float model): {fig['text_float']!r}"] if "text" in fig else []),
           "generated (accelerator): " + " ".join(map(str, fig["tokens"])),
           "generated (float model): " + " ".join(map(str, fig["tokens_float"])),
           f"the same as the float model's for the first {fig['same_as_float_for']} of "
           f"{fig['generate']} tokens",
           "bit-exact with the chained integer blocks: "
           + ("yes" if fig["bit_exact_with_integer_model"] else "NO")]
    if "steps" in fig:
        out.append(f"prefill: {fig['prefill_cycles']:,} cycles")
        if fig["cycles_per_token"]:
            out.append(f"decode: {fig['cycles_per_token']:,.0f} cycles per generated token, "
                       f"bus utilization {fig['decode_bus_utilization']:.3f}")
        out.append("  step  tokens   cycles  bus utilization")
        for i, st in enumerate(fig["steps"]):
            out.append(f"  {i:4d}  {st['tokens']:6d}  {st['cycles']:8,}  "
                       f"{st['bus_utilization']:.3f}")
        if fig.get("predicted"):
            out.append(_speed(fig))
    out.append(f"wall time {fig['wall_seconds']} s")
    return "\n".join(out)
