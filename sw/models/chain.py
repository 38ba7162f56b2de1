"""Whole models as chains of quantized layers: each layer quantized with the previous
layer's output scale as its input scale, so the int8 tensor one layer writes is the next
one's input as it is; and the references the accelerator's whole-model programs meet bit
for bit (``sw/lower/encoder.py``, ``sw/lower/decoder.py``).

* Encoders: :func:`quantize_chain`, :func:`integer_encoder`.
* GPT-2-style decoders: :class:`Gpt2Model` (embeddings, blocks, final LayerNorm, the LM
  head tied to the token embeddings), :func:`random_gpt2_model`, :func:`quantize_decoder`,
  :func:`float_generate` and :func:`integer_generate` (greedy generation through the
  float model and through the chained integer blocks with int8 KV caches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..check import InputError

__all__ = ["quantize_chain", "integer_encoder", "Gpt2Model",
           "random_gpt2_model", "quantize_decoder", "float_generate", "integer_generate"]


def quantize_chain(weights: list[dict], calibration_inputs: list, **options) -> list:
    """Quantize float BERT layers as a chain: layer 0 calibrated on ``calibration_inputs``
    (float inputs, or ``(x, mask)`` pairs), each later layer on the float reference's
    outputs of the one before, with that layer's output scale as its input scale.

    ``options`` go to :func:`~.quantize.quantize_bert_layer`.
    """
    from .quantize import quantize_bert_layer
    from .reference import bert_layer

    items = [c if isinstance(c, tuple) else (c, None) for c in calibration_inputs]
    qls = []
    for w in weights:
        in_scale = qls[-1].out_scale if qls else None
        qls.append(quantize_bert_layer(w, items, in_scale=in_scale, **options))
        items = [(bert_layer(x, w, mask=m), m) for x, m in items]
    return qls


def integer_encoder(x_q: np.ndarray, qls, mask=None) -> np.ndarray:
    """The chained integer BERT layers (golden, no command stream)."""
    from .quantize import integer_bert_layer

    for ql in qls:
        x_q = integer_bert_layer(x_q, ql, mask)
    return x_q


@dataclass
class Gpt2Model:
    """A float GPT-2: token and position embeddings, the blocks, the final LayerNorm; the
    LM head is tied to the token embeddings."""

    wte: np.ndarray             # (vocab, H)
    wpe: np.ndarray             # (positions, H)
    blocks: list
    ln_f: tuple                 # (gamma, beta, eps)

    @property
    def hidden(self) -> int:
        return int(self.wte.shape[1])

    def embed(self, ids, first: int = 0) -> np.ndarray:
        """Token plus position embeddings of ``ids`` at positions ``first ..``."""
        ids = np.asarray(ids)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= len(self.wte):
            raise InputError(f"token ids must be 0 .. {len(self.wte) - 1}")
        if first + len(ids) > len(self.wpe):
            raise InputError(f"{first + len(ids)} positions; the model has {len(self.wpe)}")
        return self.wte[ids] + self.wpe[first:first + len(ids)]

    def next_token(self, h_last: np.ndarray) -> int:
        """The final LayerNorm, the tied LM head, the most likely token (float)."""
        from .reference import layer_norm
        gamma, beta, eps = self.ln_f
        logits = layer_norm(h_last, gamma, beta, eps) @ self.wte.T
        return int(np.argmax(logits))


def random_gpt2_model(layers: int, hidden: int, heads: int, ffn: int, vocab: int,
                      positions: int, rng: np.random.Generator) -> Gpt2Model:
    """Random weights of the given shape, with a trained model's magnitudes."""
    from .reference import random_gpt2_weights
    blocks = [random_gpt2_weights(hidden, heads, ffn, rng) for _ in range(layers)]
    return Gpt2Model(wte=rng.normal(0, 0.1, (vocab, hidden)),
                     wpe=rng.normal(0, 0.02, (positions, hidden)), blocks=blocks,
                     ln_f=(1 + rng.normal(0, 0.1, hidden), rng.normal(0, 0.05, hidden), 1e-5))


def _float_hidden(model: Gpt2Model, ids) -> list[np.ndarray]:
    """Every block's float input for the sequence ``ids``, then the last block's output."""
    from .reference import gpt2_layer
    xs = [model.embed(ids)]
    for w in model.blocks:
        xs.append(gpt2_layer(xs[-1], w))
    return xs


def quantize_decoder(model: Gpt2Model, calibration_ids: list, **options) -> list:
    """Quantize the blocks as a chain, each calibrated on the float model's inputs of that
    block for the calibration sequences, with the previous block's output scale as its
    input scale (``options`` go to :func:`~.gpt2_quantize.quantize_gpt2_layer`)."""
    from .gpt2_quantize import quantize_gpt2_layer
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


def generate(model: Gpt2Model, qls, prompt, steps: int, step, progress=None
             ) -> tuple[list[int], list]:
    """Greedy generation through integer blocks: ``step(x_q)`` runs new tokens' int8
    inputs through every block (after the earlier ones) and returns the last block's int8
    outputs. Returns the generated ids and each step's outputs."""
    from .quantize import dequantize, quantize_activation
    ids, outs = list(prompt), []
    x = quantize_activation(model.embed(ids), qls[0].in_scale)
    for t in range(steps):
        out = step(x)
        outs.append(out)
        tok = model.next_token(dequantize(out[-1], qls[-1].out_scale))
        ids.append(tok)
        if progress:
            progress(t + 1, tok)
        if t + 1 < steps:
            x = quantize_activation(model.embed([tok], len(ids) - 1), qls[0].in_scale)
    return ids[len(prompt):], outs


def integer_generate(model: Gpt2Model, qls, prompt, steps: int) -> tuple[list[int], list]:
    """Greedy generation through the chained integer blocks with int8 KV caches (no command
    stream): the generated ids and each step's last-block int8 output."""
    from .gpt2_quantize import Int8KVCache, integer_gpt2_decode_step
    caches = [Int8KVCache.for_layer(ql) for ql in qls]

    def step(x):
        for ql, cache in zip(qls, caches, strict=True):
            x = integer_gpt2_decode_step(x, ql, cache)
        return x

    return generate(model, qls, prompt, steps, step)
