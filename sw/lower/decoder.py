"""A whole GPT-2-style decoder on the accelerator: one program per step (the prompt's
prefill, or one generated token) through every block, with each block's KV cache in main
memory.

Where the host and the accelerator meet: the host looks up the token and position
embeddings and quantizes them to the first block's input scale. The accelerator runs
every block, each block reading the previous block's int8 output where it lies. The host
then takes the last block's output for the last position, applies the final LayerNorm and
the tied LM head (``h @ wte^T``), and picks the next token
(:func:`tessera.sw.models.chain.generate`). The LM head is one row against the whole
vocabulary (50,257 x 768 for GPT-2), a matrix-vector product the array would run at 1/16
of its rows; it stays on the host with the choice of token, like the embedding gather.

Blocks are chained by their scales (:func:`tessera.sw.models.chain.quantize_decoder`); the
reference is :func:`tessera.sw.models.chain.integer_generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...hw.isa import Command, Opcode
from .encoder import check_chain
from .gpt2 import GPT2_PHASES, lower_gpt2_step, place_gpt2_layer, place_gpt2_step
from .layout import Blocked, from_blocked

__all__ = ["AcceleratorDecoder"]


@dataclass
class AcceleratorDecoder:
    """The blocks placed on a runtime: every block's weights once, a KV cache of
    ``capacity`` positions per block. :meth:`step` runs new tokens through every block as
    one program, after the tokens of earlier steps."""

    rt: object
    qls: list
    capacity: int
    placements: list = field(default_factory=list)
    position: int = 0
    results: list = field(default_factory=list)   # (tokens, RunResult, commands) per step

    def __post_init__(self):
        check_chain(self.qls, "block")
        self.placements = [place_gpt2_layer(self.rt, ql, self.capacity) for ql in self.qls]

    def step(self, x_q: np.ndarray, **run_args) -> np.ndarray:
        """``x_q``: the new tokens' int8 inputs (n, H) at positions ``position ..``; the
        last block's int8 outputs (n, H).

        Raises
        ------
        RunError
            If the machine stops with an error.
        """
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
        result = self.rt.run(prog, check=True, **run_args)
        self.results.append((n, result, len(prog)))
        self.position += n
        shape = Blocked(n, self.qls[-1].hidden, self.rt.config.rows)
        return from_blocked(self.rt.read(last.out, shape.nbytes), shape)
