"""Lowering of one attention head to a command stream, kept on chip between its products:

``ctx = requantize((i_softmax(Q K^T + mask) >> 1) V)``

for Q, K, V (``S x dh`` int8, blocked layout in main memory; ``dh`` a multiple of the
array's dimension ``D``), an optional additive int32 mask per key (padding), the i-exp
constants of the scores' scale, and the output requantization. The integer semantics are
those of ``tessera.sw.models.quantize``'s integer layer (7-bit probabilities: the array
multiplies signed int8).

Steps (``Mq`` query rows at a time, as many as the accumulator holds):

1. Q's blocks into the scratchpad (activations); V's blocks into the scratchpad (weight
   tiles: rows are keys); K's blocks into the accumulator (int8 widened), then a
   transposed store writes them back into the scratchpad as K^T's weight tiles.
2. Per query chunk: the mask row replicated over the chunk's rows into the accumulator
   (a wide load, stride 0), the scores ``Q K^T`` on top (weight-stationary, column block
   by column block), a blocked Softmax store into the scratchpad (``P``, 7-bit codes, laid
   out as the next product's activations), ``P V`` into the accumulator, and a blocked
   requantizing store of the context rows to main memory.

Tokens order it: loads before computes (LOAD -> EXECUTE), the transposed K before the
scores (EXECUTE relays to STORE, STORE back to EXECUTE), scores before their Softmax
(EXECUTE -> STORE) and ``P`` before ``P V`` (STORE -> EXECUTE). The stream is in a
topological order of its tokens, so it cannot deadlock on full queues.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputOp
from .gemm import LoweringError

__all__ = ["AttentionHead", "lower_attention_head", "MASK_NEG"]

#: The additive mask of a masked key: far below any score, so its exp is 0, and far
#: enough from the int32 limit that adding a score cannot wrap.
MASK_NEG = -(1 << 30)


@dataclass(frozen=True)
class AttentionHead:
    """Where one head's operands are and how to scale them.

    Q, K, V and the context are blocked ``S x dh`` matrices in main memory at ``q``, ``k``,
    ``v``, ``ctx``; their blocks are ``block_stride`` bytes apart (``rows_total * D`` for
    a head inside a wider blocked matrix, e.g. the Q of all heads). ``mask`` is the address
    of ``S`` int32 values (0 or :data:`MASK_NEG`), or None. ``exp`` holds i-exp's integer
    constants (``shift``, ``ln2_q``, ``q_b``, ``q_c``, ``out_shift``) for the scores'
    scale; ``m``, ``e`` requantize the context.
    """

    seq: int
    dh: int
    q: int
    k: int
    v: int
    ctx: int
    block_stride: int
    exp: dict
    m: int
    e: int
    mask: int | None = None


def _chunk_rows(config: TesseraConfig, head: AttentionHead) -> int:
    """Query rows per chunk: the scores (``Mq x S``) fill at most one half of the
    accumulator and the context (``Mq x dh``) the other half."""
    d = config.rows
    half = config.acc_rows // 2
    key_blocks = -(-head.seq // d)
    mq = min(head.seq, half // key_blocks, half // (head.dh // d))
    if mq < 1:
        raise LoweringError(f"a score row of {head.seq} keys ({key_blocks} accumulator "
                            f"rows) does not fit half the accumulator ({half} rows)")
    return mq


def lower_attention_head(config: TesseraConfig, head: AttentionHead,
                         spad_base: int = 0, finish: bool = True) -> list[Command]:
    """The command stream of one head (see the module docstring)."""
    c = config
    d = c.rows
    S, dh = head.seq, head.dh
    if c.rows != c.cols or not c.has_ws:
        raise LoweringError("attention needs a square, weight-stationary array")
    if dh % d:
        raise LoweringError(f"the head dimension ({dh}) must be a multiple of {d}")
    if c.acc_bits != 32:
        raise LoweringError("the mask and Softmax need 32-bit accumulator lanes")
    kb_n = dh // d                     # blocks of the head dimension
    sb_n = -(-S // d)                  # blocks of keys
    s_pad = sb_n * d
    mq = _chunk_rows(c, head)
    half = c.acc_rows // 2
    # Scratchpad: Q (kb_n blocks of S rows), K^T tiles (kb_n x sb_n tiles), V (kb_n blocks
    # of s_pad rows: weight tiles of d keys), P (sb_n blocks of mq rows).
    q_at = spad_base
    kt_at = q_at + kb_n * S
    v_at = kt_at + kb_n * s_pad
    p_at = v_at + kb_n * s_pad
    if p_at + sb_n * mq > c.spad_rows:
        raise LoweringError(f"a head of {S} x {dh} needs {p_at + sb_n * mq - spad_base} "
                            f"scratchpad rows; there are {c.spad_rows - spad_base}")
    acc_s, acc_c = 0, half             # scores, context
    blk = head.block_stride
    prog: list[Command] = []

    def load(**kw):
        args = dict(stride=d, row_bytes=d, to_acc=0, accumulate=0, scale=1, wide=0)
        args.update(kw)
        return args

    # --- 1. Operands. ----------------------------------------------------------------------
    loads = []
    for kb in range(kb_n):
        loads.append(load(dram_addr=head.q + kb * blk, rows=S, local_addr=q_at + kb * S))
        loads.append(load(dram_addr=head.v + kb * blk, rows=S, local_addr=v_at + kb * s_pad))
        # K goes into the context's half: the first context is written only after the
        # first scores, which wait for the transposed K.
        loads.append(load(dram_addr=head.k + kb * blk, rows=S, local_addr=acc_c + kb * S,
                          to_acc=1))
    if kb_n * S > half:
        raise LoweringError(f"K ({S} x {dh}) does not fit half the accumulator")
    # V's padding rows (keys past S) must be zero: they meet P's zero columns anyway, but
    # the scratchpad may hold anything there; P's padding lanes are 0, so they add 0.
    for i, args in enumerate(loads):
        prog.append(Command(Opcode.LOAD, args, signal_next=i == len(loads) - 1))
    # K^T: the relay lets the store wait for the loads; the store signals back.
    prog.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True,
                        signal_next=True))
    for kb in range(kb_n):
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.NONE, "length": d, "rows": S},
            "acc_addr": acc_c + kb * S, "to_spad": 1, "transpose": 1,
            "spad_addr": kt_at + kb * s_pad}, wait_prev=kb == 0,
            signal_prev=kb == kb_n - 1))

    # --- 2. Query chunks. ------------------------------------------------------------------
    first = True
    for q0 in range(0, S, mq):
        rows = min(mq, S - q0)
        mask_loaded = head.mask is not None
        if mask_loaded:
            # The mask over the chunk's score rows: key block j's d values in every row.
            for j in range(sb_n):
                prog.append(Command(Opcode.LOAD, dict(
                    dram_addr=head.mask + j * d * 4, stride=0, rows=rows, row_bytes=d * 4,
                    local_addr=acc_s + j * rows, to_acc=1, accumulate=0, scale=1, wide=1),
                    wait_next=not first and j == 0, signal_next=j == sb_n - 1))
        # Scores: the first compute waits for K^T (first chunk) and for the previous
        # chunk's P x V to be stored... the accumulator halves are reused in order.
        for j in range(sb_n):
            for kb in range(kb_n):
                prog.append(Command(Opcode.PRELOAD, {"spad_addr": kt_at + kb * s_pad + j * d},
                                    wait_next=first and j == 0 and kb == 0,
                                    wait_prev=mask_loaded and j == 0 and kb == 0))
                prog.append(Command(Opcode.COMPUTE, {
                    "a_addr": q_at + kb * S + q0, "b_addr": 0, "rows": rows,
                    "acc_addr": acc_s + j * rows, "accumulate": int(mask_loaded or kb > 0)},
                    signal_next=j == sb_n - 1 and kb == kb_n - 1))
        # P = Softmax(scores) >> 1, blocked into the scratchpad.
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.SOFTMAX, "length": S, "rows": rows, "e": 1,
                     "consts": {"exp": dict(head.exp)}},
            "acc_addr": acc_s, "to_spad": 1, "spad_addr": p_at, "blocked": 1},
            wait_prev=True, signal_prev=True))
        # P x V: per block of the context, one run over the key blocks (V's weight tiles
        # are consecutive rows, P's blocks ``rows`` apart). The first waits for P (and so
        # for everything the store queue did before it); it then frees the scores' half
        # for the next chunk's mask.
        for n in range(kb_n):
            prog.append(Command(Opcode.COMPUTE, {
                "a_addr": p_at, "b_addr": v_at + n * s_pad, "rows": rows,
                "acc_addr": acc_c + n * rows, "accumulate": 0, "count": sb_n,
                "a_stride": rows},
                wait_next=n == 0, signal_prev=mask_loaded and q0 + mq < S and n == 0,
                signal_next=n == kb_n - 1))
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.REQUANT, "length": dh, "rows": rows, "m": head.m,
                     "e": head.e},
            "acc_addr": acc_c, "to_spad": 0, "dram_addr": head.ctx + q0 * d,
            "stride": blk, "blocked": 1},
            wait_prev=True))
        first = False
    if finish:
        prog.append(Command(Opcode.FINISH, {}))
    return prog
