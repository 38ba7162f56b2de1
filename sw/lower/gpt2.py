"""Lowering of a quantized GPT-2 block (pre-LayerNorm, causal) to command streams that
reproduce :func:`tessera.sw.models.gpt2_quantize.integer_gpt2_decode_step` bit for bit:
a prefill (``n`` tokens on an empty cache) and token-by-token decoding are the same
lowering, of ``n`` new tokens at positions ``offset .. offset + n - 1``.

The KV cache lives in main memory: K and V are blocked ``capacity x H`` int8 matrices
(column block ``j``: ``capacity`` rows of ``D`` bytes), so head ``h``'s keys are the
blocked ``T x dh`` matrix at its first block, and a step appends its tokens' rows in
place: the QKV product stores K's and V's column blocks straight into the cache at row
``offset``. Beside it, a K^T cache holds each head's whole blocks of 16 keys already
transposed, as the scores' weight tiles (head ``h``, key block ``j``: ``dh`` rows of ``D``
bytes), written by the attention phase as blocks complete: a decode step over many keys
transposes only the keys of its last block (:mod:`~tessera.sw.lower.attention`). A cache
too short for any step to read it (``uses_kt_cache``) has none written.

Phases (each a lowering of its own, separated by FENCEs; the numbers are the integer
model's steps):

1. ``ln1``: ``a = LayerNorm(x)``, the int8 ``x`` widened into the accumulator
   (:func:`~tessera.sw.lower.norm.lower_layernorm`; per-group prescale from the table);
2. ``qkv``: one product ``a [Wq Wk Wv] + b``, each column block requantized by its
   group's multiplier, Q to its buffer, K and V into the cache;
3. ``attention``: the heads, :func:`~tessera.sw.lower.attention.lower_attention`
   (groups interleaved stage by stage) over the ``T = offset + n`` cached keys, causal: a
   query chunk's scores end after the last key its last query may see, and only the key
   blocks holding some query's future keys get the causal bias (one new token needs none);
5. ``out_proj``: ``x1 = requantize(ctx Wo + bo + x r1)`` per group, the residual loaded
   into the accumulator with its integer multiplier;
6. ``ln2``: ``h = LayerNorm(x1)``;
7. ``ffn1_gelu``: ``f = requantize(GELU(h W1 + b1))`` per group;
8. ``ffn2``: ``out = requantize(f W2 + b2 + x1 r2)`` per group.

Every tile size and loop order comes from :func:`~tessera.sw.lower.gemm.plan_gemm` on the
configuration and the step's shape (a decode step's products are one row tall).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command
from ..golden.layernorm import layernorm_table
from .attention import AttentionHead, causal_mask_bytes, lower_attention, uses_kt_cache
from .bert import gelu_specs, group_of_block, requant_specs, run_phases
from .gemm import GemmBuffers, LayerNormOutput, lower_gemm
from .layout import Blocked, bias_bytes, from_blocked, to_blocked
from .norm import lower_layernorm
from .plan import GemmShape, LoweringError, plan_gemm

__all__ = ["GPT2_PHASES", "Gpt2Placement", "Gpt2Step", "place_gpt2_layer", "place_gpt2_step",
           "lower_gpt2_step", "run_gpt2_step", "write_kv_cache", "read_kv_cache",
           "read_kt_cache"]

#: The phases, in order, as the per-operation report names them.
GPT2_PHASES = ("ln1", "qkv", "attention", "out_proj", "ln2", "ffn1_gelu", "ffn2")


@dataclass
class Gpt2Placement:
    """Main-memory addresses of one block's weights, tables and KV cache (blocked)."""

    capacity: int       # positions the cache holds
    wqkv: int
    bqkv: int
    ln1: int
    wo: int
    bo: int
    ln2: int
    w1: int
    b1: int
    w2: int
    b2: int
    k_cache: int
    v_cache: int
    kt_cache: int       # per head: ceil(capacity / D) key blocks of dh x D bytes
    ident: int          # the D x D int8 identity matrix (the K^T cache's write-back)

    def kt_of(self, head: int, dh: int, d: int) -> int:
        """Head ``head``'s K^T cache."""
        return self.kt_cache + head * -(-self.capacity // d) * dh * d


@dataclass
class Gpt2Step:
    """Main-memory addresses of one step's activations (blocked, ``n`` rows)."""

    n: int
    offset: int
    x: int
    a: int
    q: int
    ctx: int
    x1: int
    h: int
    f: int
    out: int
    mask: int | None


def _prescale_blocks(prescale, group: int, cols: int, d: int):
    """A per-group LayerNorm prescale (or None) as one per column block."""
    if prescale is None:
        return None
    return [prescale[j * d // group] for j in range(-(-cols // d))]


def place_gpt2_layer(rt, ql, capacity: int) -> Gpt2Placement:
    """Write the block's weights and LayerNorm tables into ``rt``'s main memory and reserve
    a KV cache of ``capacity`` positions."""
    c = rt.config
    d = c.rows
    H = ql.hidden
    if ql.head_dim % d:
        raise LoweringError(f"the head dimension ({ql.head_dim}) must be a multiple of the "
                            f"array's {d}")
    for lin in (ql.wq, ql.wk, ql.wv, ql.wo, ql.w1, ql.w2):
        if lin.group % d and lin.group != lin.out_features:
            raise LoweringError(f"scale groups of {lin.group} columns must be whole blocks "
                                f"of {d}")
    if ql.group % d:
        raise LoweringError(f"LayerNorm prescale groups of {ql.group} columns must be whole "
                            f"blocks of {d}")
    if not 1 <= capacity <= c.max_row_len:
        raise LoweringError(f"a KV cache of {capacity} positions: Softmax rows hold 1 .. "
                            f"{c.max_row_len} keys on this configuration")

    def weights(w):
        return rt.place(to_blocked(w, Blocked(w.shape[0], w.shape[1], d, d)))

    def ln_table(ln, prescale):
        return rt.place(layernorm_table(ln.gamma_q, ln.beta_q, d,
                                        _prescale_blocks(prescale, ql.group, H, d)))

    cache = Blocked(capacity, H, d).nbytes
    return Gpt2Placement(
        capacity=capacity,
        wqkv=weights(np.concatenate([ql.wq.weight, ql.wk.weight, ql.wv.weight], axis=1)),
        bqkv=rt.place(bias_bytes(np.concatenate([ql.wq.bias, ql.wk.bias, ql.wv.bias]), d)),
        ln1=ln_table(ql.ln1, ql.ln1_prescale),
        wo=weights(ql.wo.weight), bo=rt.place(bias_bytes(ql.wo.bias, d)),
        ln2=ln_table(ql.ln2, ql.ln2_prescale),
        w1=weights(ql.w1.weight), b1=rt.place(bias_bytes(ql.w1.bias, d)),
        w2=weights(ql.w2.weight), b2=rt.place(bias_bytes(ql.w2.bias, d)),
        k_cache=rt.alloc(cache), v_cache=rt.alloc(cache),
        kt_cache=rt.alloc(-(-capacity // d) * d * H),
        ident=rt.place(np.eye(d, dtype=np.int8).reshape(-1)))


def place_gpt2_step(rt, ql, p: Gpt2Placement, x_q: np.ndarray | None, offset: int, *,
                    x_at: int | None = None, n: int | None = None) -> Gpt2Step:
    """Write a step's input (``n`` new tokens at positions ``offset ..``) and reserve its
    activations. With ``x_at`` (and ``n``) the input is already in main memory (the
    previous block's output, in a chained decoder) and ``x_q`` is None."""
    d = rt.config.rows
    H, F = ql.hidden, ql.ffn
    if x_at is None:
        x_q = np.asarray(x_q)
        if x_q.ndim != 2 or x_q.shape[1] != H or x_q.shape[0] < 1:
            raise LoweringError(f"the step's input must be (n, {H}), not {x_q.shape}")
        n = x_q.shape[0]
    if offset < 0 or offset + n > p.capacity:
        raise LoweringError(f"{n} tokens at position {offset} do not fit a KV cache of "
                            f"{p.capacity} positions")

    def space(cols):
        return rt.alloc(Blocked(n, cols, d).nbytes)

    mask = None
    if n > 1:
        mask = rt.place(causal_mask_bytes(n, offset, offset + n, d, ql.mask_bias))
    x = x_at if x_at is not None else rt.place(to_blocked(x_q, Blocked(n, H, d)))
    return Gpt2Step(n=n, offset=offset, x=x,
                    a=space(H), q=space(H), ctx=space(H), x1=space(H), h=space(H),
                    f=space(F), out=space(H), mask=mask)


def lower_gpt2_step(config: TesseraConfig, ql, p: Gpt2Placement,
                    s: Gpt2Step) -> dict[str, list[Command]]:
    """The step's command streams, one per phase (:data:`GPT2_PHASES`)."""
    c = config
    d = c.rows
    n, o = s.n, s.offset
    H, F, heads, dh = ql.hidden, ql.ffn, ql.heads, ql.head_dim
    nbh = -(-H // d)
    T = o + n
    blk = n * d                       # bytes between column blocks of a step's tensor
    cblk = p.capacity * d             # ... of the cache
    phases = {}

    def ln(src, dst, table, consts, prescale):
        return lower_layernorm(c, src, dst, n, H, LayerNormOutput(
            table, consts.m, consts.e, prescale is not None), finish=False)

    phases["ln1"] = ln(s.x, s.a, p.ln1, ql.ln1, ql.ln1_prescale)

    # Q, K, V: K's and V's blocks go into the cache at row `offset`.
    out = (requant_specs(ql.wq, ql.q_requant, d) + requant_specs(ql.wk, ql.k_requant, d)
           + requant_specs(ql.wv, ql.v_requant, d))
    dests = tuple([s.q + j * blk for j in range(nbh)]
                  + [p.k_cache + j * cblk + o * d for j in range(nbh)]
                  + [p.v_cache + j * cblk + o * d for j in range(nbh)])
    plan = plan_gemm(c, GemmShape(n, H, 3 * H), bias=True)
    phases["qkv"] = lower_gemm(c, plan, GemmBuffers(s.a, p.wqkv, 0, p.bqkv, c_blocks=dests),
                               out, finish=False)

    exp = {f: getattr(ql.softmax, f) for f in ("shift", "ln2_q", "q_b", "q_c", "out_shift")}
    kt = uses_kt_cache(c, dh, p.capacity)
    att = []
    for h in range(heads):
        b0 = h * dh // d
        att.append(AttentionHead(n, dh, s.q + b0 * blk, p.k_cache + b0 * cblk,
                                 p.v_cache + b0 * cblk, s.ctx + b0 * blk, blk, exp,
                                 *ql.ctx_requant, keys=T, kv_stride=cblk, causal=o,
                                 causal_mask=s.mask, kt=p.kt_of(h, dh, d) if kt else None,
                                 ident=p.ident if kt else None))
    phases["attention"] = lower_attention(c, att, finish=False)

    def residual_gemm(a, w, bias, residual, lin, requants, dst, k):
        plan = plan_gemm(c, GemmShape(n, k, H), bias=True)
        scales = tuple(int(lin.residual[group_of_block(lin, j, d)]) for j in range(nbh))
        return lower_gemm(c, plan, GemmBuffers(a, w, dst, bias, residual, scales),
                          requant_specs(lin, requants, d), finish=False)

    phases["out_proj"] = residual_gemm(s.ctx, p.wo, p.bo, s.x, ql.wo, ql.x1_requant, s.x1, H)
    phases["ln2"] = ln(s.x1, s.h, p.ln2, ql.ln2, ql.ln2_prescale)
    plan = plan_gemm(c, GemmShape(n, H, F), bias=True)
    phases["ffn1_gelu"] = lower_gemm(c, plan, GemmBuffers(s.h, p.w1, s.f, p.b1),
                                     gelu_specs(ql.w1, ql.gelu, ql.f_requant, d), finish=False)
    phases["ffn2"] = residual_gemm(s.f, p.w2, p.b2, s.x1, ql.w2, ql.out_requant, s.out, F)
    return phases


def write_kv_cache(rt, ql, p: Gpt2Placement, cache) -> None:
    """Write an :class:`~tessera.sw.models.gpt2_quantize.Int8KVCache`'s positions into the
    placement's cache (e.g. a context computed elsewhere, to decode after it)."""
    T = len(cache)
    if T > p.capacity:
        raise LoweringError(f"a cache of {T} positions does not fit {p.capacity}")
    d = rt.config.rows
    shape = Blocked(p.capacity, ql.hidden, d)
    for src, at in ((cache.k, p.k_cache), (cache.v, p.v_cache)):
        full = np.zeros((p.capacity, ql.hidden), np.int8)
        full[:T] = src.transpose(1, 0, 2).reshape(T, ql.hidden)
        rt.write(at, to_blocked(full, shape))
    # The K^T cache: each head's whole blocks of keys, block j as dh rows of D keys.
    whole = T // d * d
    for h in range(ql.heads if whole else 0):
        kt = cache.k[h, :whole].reshape(whole // d, d, ql.head_dim).transpose(0, 2, 1)
        rt.write(p.kt_of(h, ql.head_dim, d), np.ascontiguousarray(kt).reshape(-1))


def read_kv_cache(rt, ql, p: Gpt2Placement, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """The cache's first ``positions`` keys and values, as (heads, T, dh) int8 arrays."""
    d = rt.config.rows
    shape = Blocked(p.capacity, ql.hidden, d)
    out = []
    for at in (p.k_cache, p.v_cache):
        full = from_blocked(rt.read(at, shape.nbytes), shape)[:positions]
        out.append(full.reshape(positions, ql.heads, ql.head_dim).transpose(1, 0, 2).copy())
    return out[0], out[1]


def read_kt_cache(rt, ql, p: Gpt2Placement, positions: int) -> np.ndarray:
    """The keys the K^T cache holds for the whole blocks of the first ``positions``, as a
    (heads, whole, dh) int8 array (``whole``: ``positions`` rounded down to blocks)."""
    d, dh = rt.config.rows, ql.head_dim
    whole = positions // d * d
    out = np.zeros((ql.heads, whole, dh), np.int8)
    for h in range(ql.heads):
        raw = rt.read(p.kt_of(h, dh, d), whole * dh).view(np.int8)
        out[h] = raw.reshape(whole // d, dh, d).transpose(0, 2, 1).reshape(whole, dh)
    return out


def run_gpt2_step(rt, ql, p: Gpt2Placement, x_q: np.ndarray, offset: int, *,
                  per_phase: bool = False, **run_args):
    """Place, lower and run one step (``x_q``: ``n`` new tokens at positions ``offset``..)
    on ``rt``; the cache's positions before ``offset`` must hold the earlier tokens.

    Returns
    -------
    (out_q, results, phases)
        The int8 output (n, H), the run results (by phase name with ``per_phase``, else one
        under ``"layer"``) and the phases' command streams.
    """
    s = place_gpt2_step(rt, ql, p, x_q, offset)
    phases = lower_gpt2_step(rt.config, ql, p, s)
    results = run_phases(rt, phases, GPT2_PHASES, per_phase, **run_args)
    shape = Blocked(s.n, ql.hidden, rt.config.rows)
    return from_blocked(rt.read(s.out, shape.nbytes), shape), results, phases
