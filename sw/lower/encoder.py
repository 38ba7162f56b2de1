"""A whole BERT-style encoder as one command stream: every layer's weights placed in main
memory once, each layer's int8 output read by the next layer where it lies (no host round
trip), one FINISH at the end.

Where the host and the accelerator meet (``docs/architecture.md``, "Whole models"): the
host does the embedding lookup and its LayerNorm, and quantizes them to the first layer's
input scale; the accelerator runs every layer; the host reads the last layer's int8
output and pools it (mean over the sentence's tokens, as sentence-transformers does). The
embedding table is a gather by token id, which the accelerator's strided DMA cannot do in
one command per token without a command per token; the pooling is a handful of additions
per sentence. Both are a negligible share of the work (below 0.1% of the MACs of
MiniLM-L6 at 128 tokens).

Layers are chained by their scales: layer ``i + 1`` is quantized with layer ``i``'s output
scale as its input scale (:func:`tessera.sw.models.minilm.quantize_encoder`,
:func:`tessera.sw.models.chain.quantize_chain`), so the int8 tensor one layer writes is the
next one's input as it is. The reference is
:func:`tessera.sw.models.chain.integer_encoder`: the chained integer layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.axi import BOUNDARY_BYTES
from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode
from .bert import PHASES, BertPlacement, lower_bert_layer, place_bert_layer, read_output
from .plan import LoweringError

__all__ = ["EncoderPlacement", "place_encoder", "lower_encoder", "run_encoder", "run_batch",
           "run_batch_by_phase", "check_chain"]


@dataclass
class EncoderPlacement:
    """Main-memory addresses of every layer's tensors; layer ``i + 1``'s input is layer
    ``i``'s output."""

    layers: list[BertPlacement]

    @property
    def x(self) -> int:
        return self.layers[0].x

    @property
    def out(self) -> int:
        return self.layers[-1].out


def check_chain(qls, what: str = "layer") -> None:
    """A non-empty chain of layers of one width, each taking the previous one's output
    scale as its input scale (else the int8 tensors would be read at the wrong scale)."""
    if not qls:
        raise LoweringError(f"a model needs at least one {what}")
    for i in range(1, len(qls)):
        a, b = qls[i - 1], qls[i]
        if a.hidden != b.hidden:
            raise LoweringError(f"{what} {i} takes {b.hidden} features, {what} {i - 1} gives "
                                f"{a.hidden}")
        if a.wide != b.wide:
            raise LoweringError(f"{what} {i} and {what} {i - 1} differ in wide activations: "
                                f"quantize the {what}s as a chain")
        if not np.array_equal(np.asarray(a.out_scale), np.asarray(b.in_scale)):
            raise LoweringError(f"{what} {i}'s input scale is not {what} {i - 1}'s output "
                                f"scale: quantize the {what}s as a chain")


def place_encoder(rt, qls, x_q: np.ndarray, mask=None, lengths: tuple = ()
                  ) -> EncoderPlacement:
    """Write every layer's weights and tables, and the first layer's input, into ``rt``'s
    main memory; each later layer reads its input where the one before writes it.
    ``lengths``: ``x_q``'s rows are a batch of sequences of these lengths.

    Every tensor starts a 4 KiB page (at most a page of padding each, a fraction of a
    percent of a layer's bytes): the DMA cuts its bursts at page boundaries, so every
    layer's transfers are cut alike, and the performance model times the layers after the
    first as the first (it reuses a segment's timing when its commands are cut into the
    same bursts)."""
    check_chain(qls)
    S = x_q.shape[0]
    layers = [place_bert_layer(rt, qls[0], x_q, mask, lengths=lengths, align=BOUNDARY_BYTES)]
    for ql in qls[1:]:
        prev = layers[-1]
        layers.append(place_bert_layer(rt, ql, None, mask, x_at=prev.out, seq=S,
                                       lengths=lengths, align=BOUNDARY_BYTES,
                                       x_lo_at=prev.lo["out"] if prev.lo else None))
    return EncoderPlacement(layers)


def lower_encoder(config: TesseraConfig, qls, p: EncoderPlacement) -> list[Command]:
    """The whole encoder as one stream: each layer's phases (:data:`PHASES`), FENCEs
    between phases and layers, one FINISH at the end."""
    prog = []
    for ql, lp in zip(qls, p.layers, strict=True):
        phases = lower_bert_layer(config, ql, lp)
        for name in PHASES:
            prog += phases[name] + [Command(Opcode.FENCE, {})]
    prog[-1] = Command(Opcode.FINISH, {})
    return prog


def run_encoder(rt, qls, x_q: np.ndarray, mask=None, lengths: tuple = (), **run_args):
    """Place, lower and run the encoder on ``rt`` as one program (``lengths``: ``x_q``'s
    rows are a batch of sequences; see :func:`run_batch`).

    Returns
    -------
    (out_q, result, program)
        The last layer's int8 output, the run's result, the command stream.
    """
    p = place_encoder(rt, qls, x_q, mask, lengths)
    prog = lower_encoder(rt.config, qls, p)
    result = rt.run(prog, **run_args)
    S, H = x_q.shape
    return read_output(rt, p.layers[-1], p.out, S, H), result, prog


def _split(out: np.ndarray, lengths) -> list[np.ndarray]:
    """A batch's output rows, sequence by sequence."""
    ends = np.cumsum(lengths)
    return [out[e - n:e] for e, n in zip(ends, lengths, strict=True)]


def run_batch(rt, qls, xs: list[np.ndarray], **run_args):
    """Several sequences (int8 ``(length, hidden)`` each, any lengths) through the encoder
    in one program: their tokens one after the other, with no padding, so the matrix
    products run over all their rows together and each sequence attends to its own.

    Returns
    -------
    (outs, result, program)
        Each sequence's int8 output, the run's result, the command stream.
    """
    if not xs:
        raise LoweringError("a batch needs at least one sequence")
    lengths = tuple(int(x.shape[0]) for x in xs)
    out, result, prog = run_encoder(rt, qls, np.concatenate(xs), lengths=lengths, **run_args)
    return _split(out, lengths), result, prog


def run_batch_by_phase(rt, qls, xs: list[np.ndarray], **run_args):
    """The same commands as :func:`run_batch`, each phase of each layer run as its own
    program (a FINISH where the one program has a FENCE; main memory carries the tensors),
    so that the hardware counters tell the phases apart.

    Returns
    -------
    (outs, runs, phases)
        Each sequence's int8 output; per layer, ``{phase: RunResult}``; per layer, the
        phases' command streams.
    """
    if not xs:
        raise LoweringError("a batch needs at least one sequence")
    lengths = tuple(int(x.shape[0]) for x in xs)
    p = place_encoder(rt, qls, np.concatenate(xs), lengths=lengths)
    runs, all_phases = [], []
    for ql, lp in zip(qls, p.layers, strict=True):
        phases = lower_bert_layer(rt.config, ql, lp)
        results = {}
        for name in PHASES:
            results[name] = rt.run(phases[name] + [Command(Opcode.FINISH, {})], **run_args)
        runs.append(results)
        all_phases.append(phases)
    out = read_output(rt, p.layers[-1], p.out, sum(lengths), qls[0].hidden)
    return _split(out, lengths), runs, all_phases
