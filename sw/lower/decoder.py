"""A whole GPT-2-style decoder on the accelerator: greedy generation, one program per
step through every block, with each block's KV cache in main memory.

Where the host and the accelerator meet: the host looks up the token and position
embeddings and quantizes them to the first block's input scale. The accelerator runs
every block, each block reading the previous block's int8 output where it lies; a step is
the prompt's prefill, or one generated token. The host then takes the last block's output
for the last position, applies the final LayerNorm and the tied LM head (``h @ wte^T``),
and picks the most likely token (greedy). The LM head is one row against the whole
vocabulary (50,257 x 768 for GPT-2), a matrix-vector product the array would run at
1/16 of its rows; it stays on the host with the sampling, like the embedding gather.

Blocks are chained by their scales: block ``i + 1`` is quantized with block ``i``'s
output scale as its input scale (:func:`quantize_decoder`). The reference is
:func:`integer_generate`: the same generation through the chained integer blocks
(:func:`~tessera.sw.models.gpt2_quantize.integer_gpt2_decode_step`) with no command stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...hw.isa import Command, Opcode
from .gpt2 import GPT2_PHASES, lower_gpt2_step, place_gpt2_layer, place_gpt2_step
from .layout import Blocked, from_blocked
from .plan import LoweringError

__all__ = ["Gpt2Model", "random_gpt2_model", "quantize_decoder", "float_generate",
           "integer_generate", "AcceleratorDecoder"]


@dataclass
class Gpt2Model:
    """A float GPT-2: token and position embeddings, the blocks, the final LayerNorm; the
    LM head is tied to the token embeddings."""

    wte: np.ndarray             # (vocab, H)
    wpe: np.ndarray             # (positions, H)
    blocks: list[dict]
    ln_f: tuple                 # (gamma, beta, eps)
    heads: int = 12

    @property
    def hidden(self) -> int:
        return int(self.wte.shape[1])

    def embed(self, ids, first: int = 0) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.min() < 0 or ids.max() >= len(self.wte):
            raise LoweringError(f"token ids must be 0 .. {len(self.wte) - 1}")
        if first + len(ids) > len(self.wpe):
            raise LoweringError(f"{first + len(ids)} positions; the model has "
                                f"{len(self.wpe)}")
        return self.wte[ids] + self.wpe[first:first + len(ids)]

    def next_token(self, h_last: np.ndarray) -> int:
        """The final LayerNorm, the tied LM head, the most likely token (float)."""
        from ..models.reference import layer_norm
        gamma, beta, eps = self.ln_f
        logits = layer_norm(h_last, gamma, beta, eps) @ self.wte.T
        return int(np.argmax(logits))


def random_gpt2_model(layers: int, hidden: int, heads: int, ffn: int, vocab: int,
                      positions: int, rng: np.random.Generator) -> Gpt2Model:
    """Random weights of the given shape, with a trained model's magnitudes."""
    from ..models.reference import random_gpt2_weights
    blocks = [random_gpt2_weights(hidden, heads, ffn, rng) for _ in range(layers)]
    return Gpt2Model(wte=rng.normal(0, 0.1, (vocab, hidden)),
                     wpe=rng.normal(0, 0.02, (positions, hidden)), blocks=blocks,
                     ln_f=(1 + rng.normal(0, 0.1, hidden), rng.normal(0, 0.05, hidden), 1e-5),
                     heads=heads)


def _float_hidden(model: Gpt2Model, ids) -> list[np.ndarray]:
    """Every block's float input for the sequence ``ids``, then the last block's output."""
    from ..models.reference import gpt2_layer
    xs = [model.embed(ids)]
    for w in model.blocks:
        xs.append(gpt2_layer(xs[-1], w))
    return xs


def quantize_decoder(model: Gpt2Model, calibration_ids: list, **options) -> list:
    """Quantize the blocks as a chain, each calibrated on the float model's inputs of that
    block for the calibration sequences, with the previous block's output scale as its
    input scale."""
    from ..models.gpt2_quantize import quantize_gpt2_layer
    states = [_float_hidden(model, ids) for ids in calibration_ids]
    qls = []
    for i, w in enumerate(model.blocks):
        in_scale = qls[-1].out_scale if qls else None
        qls.append(quantize_gpt2_layer(w, [s[i] for s in states], in_scale=in_scale,
                                       **options))
    return qls


def float_generate(model: Gpt2Model, prompt, steps: int) -> list[int]:
    """Greedy generation with the float model (recomputing the whole prefix each step)."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(model.next_token(_float_hidden(model, ids)[-1][-1]))
    return ids[len(prompt):]


def integer_generate(model: Gpt2Model, qls, prompt, steps: int) -> tuple[list[int], list]:
    """Greedy generation through the chained integer blocks with int8 KV caches (no command
    stream): the generated ids and each step's last-block int8 output."""
    from ..models.gpt2_quantize import Int8KVCache, integer_gpt2_decode_step
    from ..models.quantize import dequantize, quantize_activation
    caches = [Int8KVCache.for_layer(ql) for ql in qls]
    ids, outs = list(prompt), []
    x = quantize_activation(model.embed(ids), qls[0].in_scale)
    for _ in range(steps):
        for ql, cache in zip(qls, caches, strict=True):
            x = integer_gpt2_decode_step(x, ql, cache)
        outs.append(x)
        tok = model.next_token(dequantize(x[-1], qls[-1].out_scale))
        ids.append(tok)
        x = quantize_activation(model.embed([tok], len(ids) - 1), qls[0].in_scale)
    return ids[len(prompt):], outs


@dataclass
class AcceleratorDecoder:
    """The decoder placed on a runtime: every block's weights once, a KV cache of
    ``capacity`` positions per block. :meth:`step` runs new tokens through every block as
    one program; :meth:`generate` is greedy generation."""

    rt: object
    model: Gpt2Model
    qls: list
    capacity: int
    placements: list = field(default_factory=list)
    position: int = 0
    results: list = field(default_factory=list)

    def __post_init__(self):
        if not self.qls:
            raise LoweringError("a decoder needs at least one block")
        for i in range(1, len(self.qls)):
            if not np.array_equal(np.asarray(self.qls[i - 1].out_scale),
                                  np.asarray(self.qls[i].in_scale)):
                raise LoweringError(f"block {i}'s input scale is not block {i - 1}'s output "
                                    f"scale: quantize the blocks as a chain")
        self.placements = [place_gpt2_layer(self.rt, ql, self.capacity) for ql in self.qls]

    def step(self, x_q: np.ndarray, **run_args) -> np.ndarray:
        """``x_q``: the new tokens' int8 inputs (n, H) at positions ``position ..``; the
        last block's int8 outputs (n, H)."""
        n, o = x_q.shape[0], self.position
        prog, x_at, last = [], None, None
        for ql, p in zip(self.qls, self.placements, strict=True):
            s = place_gpt2_step(self.rt, ql, p, x_q if x_at is None else None, o,
                                x_at=x_at, n=n)
            phases = lower_gpt2_step(self.rt.config, ql, p, s)
            for name in GPT2_PHASES:
                prog += phases[name] + [Command(Opcode.FENCE, {})]
            x_at, last = s.out, s
        prog[-1] = Command(Opcode.FINISH, {})
        result = self.rt.run(prog, **run_args)
        self.results.append((n, result, len(prog)))
        if not result.ok:
            from ..runtime import RunError
            raise RunError(result)
        self.position += n
        shape = Blocked(n, self.qls[-1].hidden, self.rt.config.rows)
        return from_blocked(self.rt.read(last.out, shape.nbytes), shape)

    def generate(self, prompt, steps: int, progress=None, **run_args) -> list[int]:
        from ..models.quantize import dequantize, quantize_activation
        ids = list(prompt)
        x = quantize_activation(self.model.embed(ids), self.qls[0].in_scale)
        for t in range(steps):
            out = self.step(x, **run_args)
            tok = self.model.next_token(dequantize(out[-1], self.qls[-1].out_scale))
            ids.append(tok)
            if progress:
                progress(t + 1, tok)
            x = quantize_activation(self.model.embed([tok], len(ids) - 1),
                                    self.qls[0].in_scale)
        return ids[len(prompt):]
