"""Lowering of a quantized BERT encoder layer (post-LayerNorm) to one command stream that
reproduces :func:`tessera.sw.models.quantize.integer_bert_layer` bit for bit.

Phases, each a lowering of its own, separated by FENCEs (every phase uses the whole
scratchpad and accumulator; overlapping phases is future work):

1. ``QKV = x Wqkv + bqkv``: one product over the three matrices side by side, each
   column block requantized by its group's multiplier (``q``, ``k``, ``v``);
2. the heads, :func:`~tessera.sw.lower.attention.lower_attention` on their blocks of
   Q, K and V (the mask preloaded into the scores), in groups interleaved stage by stage,
   writing their blocks of the context;
3. ``h1 = LayerNorm(ctx Wo + bo + x r1)``: tiles of whole rows, the residual and bias
   loaded into the accumulator first, the rows stored through i-LayerNorm;
4. ``f = requantize(GELU(h1 W1 + b1))`` per column block with its group's constants;
5. ``out = LayerNorm(f W2 + b2 + h1 r2)``.

Everything lives in main memory between phases, in the blocked layout. Both dataflows of
the integer model: with ``ln_prescale`` the LayerNorm tables carry each column block's
``(m, e)``, and the store unit brings every chunk to the row's scale before LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode
from ...hw.output_path import OutputOp
from ..golden.layernorm import layernorm_table
from ..golden.requant import DIGIT_SHIFT, wide_digits
from .attention import AttentionHead, lower_attention
from .gemm import GemmBuffers, LayerNormOutput, OutputSpec, layernorm_rows, lower_gemm
from .layout import Blocked, bias_bytes, from_blocked, to_blocked
from .plan import GemmShape, LoweringError, plan_gemm

__all__ = ["BertPlacement", "place_bert_layer", "lower_bert_layer", "run_bert_layer",
           "PHASES", "group_of_block", "per_block", "requant_specs", "gelu_specs",
           "program_of", "run_phases"]

#: The phases, in order, as the per-operation report names them.
PHASES = ("qkv", "attention", "out_proj_ln1", "ffn1_gelu", "ffn2_ln2")


@dataclass
class BertPlacement:
    """Main-memory addresses of one layer's tensors (blocked layouts). ``seq`` rows: the
    tokens of one sequence, or of a batch of sequences one after the other (``lengths``;
    no padding between them), which share the matrix products and attend each to its
    own tokens."""

    seq: int
    x: int
    wqkv: int
    bqkv: int
    qkv: int
    mask: int | None
    ctx: int
    wo: int
    bo: int
    ln1: int
    h1: int
    w1: int
    b1: int
    f: int
    w2: int
    b2: int
    ln2: int
    out: int
    lengths: tuple = ()
    #: A wide layer (``ql.options["wide"]``): the low digits of ``x``, ``ctx``, ``h1``,
    #: ``f``, ``out`` (each tensor's high digits at its own address).
    lo: dict | None = None

    def sequences(self) -> list[tuple[int, int]]:
        """Each sequence's first row and length."""
        lengths = self.lengths or (self.seq,)
        starts = np.cumsum((0,) + tuple(lengths[:-1]))
        return [(int(r0), int(n)) for r0, n in zip(starts, lengths, strict=True)]


def group_of_block(lin, block: int, d: int) -> int:
    """The scale group (of the QuantizedLinear ``lin``) of column block ``block`` of ``d``
    columns."""
    return block * d // lin.group


def place_bert_layer(rt, ql, x_q: np.ndarray | None, mask=None, *,
                     x_at: int | None = None, seq: int | None = None,
                     lengths: tuple = (), align: int = 64,
                     x_lo_at: int | None = None) -> BertPlacement:
    """Write the layer's weights, tables and input into ``rt``'s main memory, each tensor
    at an address of ``align`` bytes (a chained encoder places each at the start of a
    4 KiB page, see :func:`~tessera.sw.lower.encoder.place_encoder`). With
    ``x_at`` (and ``seq``), the input is already there, in the blocked layout (the
    previous layer's output, in a chained encoder), and ``x_q`` is None. ``lengths``: the
    rows are a batch of sequences of these lengths, one after the other (no ``mask``:
    each attends to all of its own tokens). A wide layer's input is int16 (its digits are
    placed apart), or at ``x_at`` and ``x_lo_at``."""
    c = rt.config
    d = c.rows
    for lin in (ql.wq, ql.wk, ql.wv, ql.wo, ql.w1, ql.w2):
        if lin.group % d and lin.group != lin.out_features:
            raise LoweringError(f"scale groups of {lin.group} columns must be whole blocks "
                                f"of {d}")
    S, H = (seq, ql.hidden) if x_at is not None else x_q.shape
    F = ql.ffn
    if lengths:
        if sum(lengths) != S or min(lengths) < 1:
            raise LoweringError(f"a batch of sequences of {list(lengths)} tokens has "
                                f"{sum(lengths)} rows, not {S}")
        if mask is not None:
            raise LoweringError("a batch's sequences attend to all of their own tokens: "
                                "give their lengths, not a mask")

    def place(data):
        return rt.place(data, align)

    def weights(w):
        return place(to_blocked(w, Blocked(w.shape[0], w.shape[1], d, d)))

    def space(rows, cols):
        return rt.alloc(Blocked(rows, cols, d).nbytes, align)

    wide = ql.wide
    if wide and x_at is not None and x_lo_at is None:
        raise LoweringError("a wide layer's input in main memory needs its low digits too "
                            "(x_lo_at)")
    x_hi = x_lo = None
    if x_at is None:
        shape = Blocked(S, H, d)
        if wide:
            hi, lo = wide_digits(x_q)
            x_hi, x_lo = place(to_blocked(hi, shape)), place(to_blocked(lo, shape))
        else:
            x_hi = place(to_blocked(x_q, shape))
    wqkv = np.concatenate([ql.wq.weight, ql.wk.weight, ql.wv.weight], axis=1)
    bqkv = np.concatenate([ql.wq.bias, ql.wk.bias, ql.wv.bias])
    p = BertPlacement(
        seq=S, x=x_at if x_at is not None else x_hi,
        wqkv=weights(wqkv),
        bqkv=place(bias_bytes(bqkv, d)), qkv=space(S, 3 * H), mask=None, ctx=space(S, H),
        wo=weights(ql.wo.weight), bo=place(bias_bytes(ql.wo.bias, d)),
        ln1=place(layernorm_table(ql.ln1.gamma_q, ql.ln1.beta_q, d,
                                  per_block(ql.wo, ql.ln1_prescale, d))), h1=space(S, H),
        w1=weights(ql.w1.weight), b1=place(bias_bytes(ql.w1.bias, d)), f=space(S, F),
        w2=weights(ql.w2.weight), b2=place(bias_bytes(ql.w2.bias, d)),
        ln2=place(layernorm_table(ql.ln2.gamma_q, ql.ln2.beta_q, d,
                                  per_block(ql.w2, ql.ln2_prescale, d))), out=space(S, H),
        lengths=tuple(int(n) for n in lengths))
    if wide:
        p.lo = {"x": x_lo_at if x_at is not None else x_lo, "ctx": space(S, H),
                "h1": space(S, H), "f": space(S, F), "out": space(S, H)}
    if mask is not None:
        keep = np.asarray(mask, dtype=bool).reshape(-1)
        if keep.shape != (S,):
            raise LoweringError(f"the mask must hold {S} keys, not {keep.shape}")
        if keep.all():          # adding zeros changes nothing: no mask to load
            return p
        s_pad = -(-S // d) * d
        bias = np.zeros(s_pad, dtype="<i4")
        bias[:S][~keep] = ql.mask_bias
        p.mask = place(bias)
    return p


def per_block(lin, per_group, d: int):
    """Per-group values (or None) as one per column block."""
    if per_group is None:
        return None
    return [per_group[group_of_block(lin, j, d)] for j in range(-(-lin.out_features // d))]


def requant_specs(lin, requants: tuple, d: int) -> list[OutputSpec]:
    return [OutputSpec(OutputOp.REQUANT, *requants[group_of_block(lin, j, d)])
            for j in range(-(-lin.out_features // d))]


def lower_bert_layer(config: TesseraConfig, ql, p: BertPlacement) -> dict[str, list[Command]]:
    """The layer's command streams, one per phase (:data:`PHASES`); concatenated with
    FENCEs between them they are the layer."""
    c = config
    d = c.rows
    S, H, F, heads, dh = p.seq, ql.hidden, ql.ffn, ql.heads, ql.head_dim
    nbh = -(-H // d)
    phases = {}

    lo = p.lo or {}
    planes = 2 if p.lo else 1      # wide: every product over two digits, wide outputs
    qkv_out = (requant_specs(ql.wq, ql.q_requant, d) + requant_specs(ql.wk, ql.k_requant, d)
               + requant_specs(ql.wv, ql.v_requant, d))
    plan = plan_gemm(c, GemmShape(S, H, 3 * H), bias=True, a_planes=planes)
    phases["qkv"] = lower_gemm(c, plan, GemmBuffers(p.x, p.wqkv, p.qkv, p.bqkv,
                                                    a_lo=lo.get("x")), qkv_out, finish=False)

    blk = S * d                                 # bytes between column blocks (S rows)
    exp = {f: getattr(ql.softmax, f) for f in ("shift", "ln2_q", "q_b", "q_c", "out_shift")}
    att = []
    for r0, n in p.sequences():
        # A batch's sequence attends to its own rows: its heads' blocks start at its first
        # row (r0 * d bytes into each column block); the blocks stay blk apart.
        if att:
            att.append(Command(Opcode.FENCE, {}))
        heads_of = []
        for h in range(heads):
            b0 = h * dh // d
            at = r0 * d
            heads_of.append(AttentionHead(
                n, dh, p.qkv + b0 * blk + at, p.qkv + (nbh + b0) * blk + at,
                p.qkv + (2 * nbh + b0) * blk + at, p.ctx + b0 * blk + at, blk, exp,
                *ql.ctx_requant, p.mask,
                ctx_lo=lo["ctx"] + b0 * blk + at if p.lo else None))
        att += lower_attention(c, heads_of, finish=False)
    phases["attention"] = att

    def ln_gemm(a, w, bias, residual, lin, table, ln, out, n_in, prescale, names):
        plan = plan_gemm(c, GemmShape(S, n_in, H), bias=True, full_rows=True,
                         reserve=layernorm_rows(c, H, prescale), a_planes=planes,
                         c_planes=planes)
        per_block = tuple(int(lin.residual[group_of_block(lin, j, d)]) for j in range(nbh))
        a_lo, res_lo, out_lo = (lo.get(n) for n in names)
        return lower_gemm(c, plan, GemmBuffers(a, w, out, bias, residual, per_block,
                                               a_lo=a_lo, residual_lo=res_lo, c_lo=out_lo),
                          OutputSpec(), finish=False,
                          layernorm=LayerNormOutput(table, ln.m, ln.e, prescale))

    phases["out_proj_ln1"] = ln_gemm(p.ctx, p.wo, p.bo, p.x, ql.wo, p.ln1, ql.ln1, p.h1, H,
                                     ql.ln1_prescale is not None, ("ctx", "x", "h1"))
    plan = plan_gemm(c, GemmShape(S, H, F), bias=True, a_planes=planes, c_planes=planes)
    phases["ffn1_gelu"] = lower_gemm(c, plan, GemmBuffers(p.h1, p.w1, p.f, p.b1,
                                                          a_lo=lo.get("h1"), c_lo=lo.get("f")),
                                     gelu_specs(ql.w1, ql.gelu, ql.f_requant, d), finish=False)
    phases["ffn2_ln2"] = ln_gemm(p.f, p.w2, p.b2, p.h1, ql.w2, p.ln2, ql.ln2, p.out, F,
                                 ql.ln2_prescale is not None, ("f", "h1", "out"))
    return phases


def gelu_specs(lin, gelu: tuple, requants: tuple, d: int) -> list[OutputSpec]:
    """i-GELU then requantization per column block, with its scale group's constants."""
    out = []
    for j in range(-(-lin.out_features // d)):
        g = group_of_block(lin, j, d)
        gc = gelu[g]
        out.append(OutputSpec(OutputOp.GELU, *requants[g], {
            "shift": gc.shift, "q_b": gc.q_b, "q_c": gc.q_c, "poly_shift": gc.poly_shift}))
    return out


def program_of(phases: dict[str, list[Command]], names=PHASES) -> list[Command]:
    """The phases as one stream: FENCEs between them, FINISH at the end."""
    prog = []
    for name in names:
        prog += phases[name] + [Command(Opcode.FENCE, {})]
    prog[-1] = Command(Opcode.FINISH, {})
    return prog


def run_phases(rt, phases: dict[str, list[Command]], names, per_phase: bool, **run_args):
    """Run a layer's phases on ``rt``: each on its own (its own counters; main memory
    carries the tensors from one to the next) with ``per_phase``, else as one stream.
    The run results by phase name, or one under ``"layer"``."""
    if not per_phase:
        return {"layer": rt.run(program_of(phases, names), **run_args)}
    results = {}
    for name in names:
        results[name] = rt.run(phases[name] + [Command(Opcode.FINISH, {})], **run_args)
        if not results[name].ok:
            break
    return results


def run_bert_layer(rt, ql, x_q: np.ndarray, mask=None, *, per_phase: bool = False,
                   **run_args):
    """Place, lower and run one layer on ``rt``.

    With ``per_phase`` each phase runs on its own (main memory carries the tensors from
    one to the next), so each has its own counters.

    Returns
    -------
    (out_q, results, phases)
        The int8 output (a wide layer's: int16), the run result (one per phase, by name,
        with ``per_phase``; else one under ``"layer"``), and the phases' command streams.
    """
    p = place_bert_layer(rt, ql, x_q, mask)
    phases = lower_bert_layer(rt.config, ql, p)
    results = run_phases(rt, phases, PHASES, per_phase, **run_args)
    S, H = x_q.shape
    return read_output(rt, p, p.out, S, H), results, phases


def read_output(rt, p: BertPlacement, at: int, rows: int, cols: int) -> np.ndarray:
    """A layer's output from main memory: int8, or a wide layer's int16 from its two
    digits (``p.lo["out"]`` the low ones of ``p.out``)."""
    shape = Blocked(rows, cols, rt.config.rows)
    out = from_blocked(rt.read(at, shape.nbytes), shape)
    if not p.lo:
        return out
    low = from_blocked(rt.read(p.lo["out"] + at - p.out, shape.nbytes), shape)
    return (out.astype(np.int16) << DIGIT_SHIFT) + low.astype(np.int16)
