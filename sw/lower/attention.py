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
   out as the next product's activations), ``P V`` into the accumulator, and requantizing
   stores of the context, one per column block (each one contiguous DMA transfer).

Tokens order it: loads before computes (LOAD -> EXECUTE), the transposed K before the
scores (EXECUTE relays to STORE, STORE back to EXECUTE), scores before their Softmax
(EXECUTE -> STORE) and ``P`` before ``P V`` (STORE -> EXECUTE). The stream is in a
topological order of its tokens, so it cannot deadlock on full queues.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputOp
from .gemm import LoweringError

__all__ = ["AttentionHead", "lower_attention_head", "causal_mask_bytes", "MASK_NEG"]

#: The additive mask of a masked key: far below any score, so its exp is 0, and far
#: enough from the int32 limit that adding a score cannot wrap.
MASK_NEG = -(1 << 30)


@dataclass(frozen=True)
class AttentionHead:
    """Where one head's operands are and how to scale them.

    Q and the context are blocked ``seq x dh`` matrices in main memory at ``q`` and
    ``ctx``, K and V blocked ``keys x dh`` ones at ``k`` and ``v`` (``keys`` defaults to
    ``seq``). Column blocks are ``block_stride`` bytes apart in Q and the context (``rows_total
    * D`` for a head inside a wider blocked matrix, e.g. the Q of all heads) and
    ``kv_stride`` apart in K and V (default ``block_stride``; a KV cache of more rows).
    ``mask`` is the address of ``keys`` int32 values (0 or :data:`MASK_NEG`), or None.
    ``exp`` holds i-exp's integer constants (``shift``, ``ln2_q``, ``q_b``, ``q_c``,
    ``out_shift``) for the scores' scale; ``m``, ``e`` requantize the context.

    Causal attention: ``causal`` is the position of query 0 (the keys before it are a
    cache), so query ``i`` sees keys ``0 .. causal + i``; ``causal_mask`` is the address of
    the bias of the future keys (:func:`causal_mask_bytes`). Each query chunk's score rows
    end after the last key its last query sees, and only the key blocks that some of its
    queries may not see get the bias.
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
    keys: int | None = None
    kv_stride: int | None = None
    causal: int | None = None
    causal_mask: int | None = None

    @property
    def n_keys(self) -> int:
        return self.seq if self.keys is None else self.keys


def causal_mask_bytes(queries: int, offset: int, keys: int, block: int,
                      bias: int = MASK_NEG) -> np.ndarray:
    """The bias of future keys for ``queries`` queries at positions ``offset ..``: int32,
    ``bias`` where key ``j > offset + i``, else 0; key block after key block (block ``j``:
    ``queries`` rows of ``block`` lanes), as a wide load reads it into score rows."""
    kb = -(-keys // block)
    j = np.arange(kb * block)[None, :]
    i = np.arange(queries)[:, None]
    m = np.where(j > offset + i, bias, 0).astype("<i4")
    return np.ascontiguousarray(m.reshape(queries, kb, block).transpose(1, 0, 2)).view(
        np.uint8).reshape(-1)


def _chunk_rows(config: TesseraConfig, head: AttentionHead) -> int:
    """Query rows per chunk: the scores (``Mq x S``) fill at most one half of the
    accumulator and the context (``Mq x dh``) the other half."""
    d = config.rows
    half = config.acc_rows // 2
    key_blocks = -(-head.n_keys // d)
    mq = min(head.seq, half // key_blocks, half // (head.dh // d))
    if mq < 1:
        raise LoweringError(f"a score row of {head.n_keys} keys ({key_blocks} accumulator "
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
    T = head.n_keys
    if head.mask is not None and head.causal is not None:
        raise LoweringError("a head takes a key mask or a causal mask, not both")
    if head.causal is not None and head.causal_mask is None and S > 1:
        raise LoweringError("causal attention over several queries needs causal_mask")
    if head.causal is not None and head.causal + S > T:
        raise LoweringError(f"{S} queries from position {head.causal} need {head.causal + S} "
                            f"keys; there are {T}")
    kb_n = dh // d                     # blocks of the head dimension
    sb_n = -(-T // d)                  # blocks of keys
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
        raise LoweringError(f"a head of {S} queries, {T} keys and {dh} dimensions needs "
                            f"{p_at + sb_n * mq - spad_base} scratchpad rows; there are "
                            f"{c.spad_rows - spad_base}")
    acc_s, acc_c = 0, half             # scores, context
    blk = head.block_stride
    kv_blk = blk if head.kv_stride is None else head.kv_stride
    prog: list[Command] = []

    def load(**kw):
        args = dict(stride=d, row_bytes=d, to_acc=0, accumulate=0, scale=1, wide=0)
        args.update(kw)
        return args

    # --- 1. Operands. ----------------------------------------------------------------------
    loads = []
    for kb in range(kb_n):
        loads.append(load(dram_addr=head.q + kb * blk, rows=S, local_addr=q_at + kb * S))
        loads.append(load(dram_addr=head.v + kb * kv_blk, rows=T,
                          local_addr=v_at + kb * s_pad))
        # K goes into the context's half: the first context is written only after the
        # first scores, which wait for the transposed K.
        loads.append(load(dram_addr=head.k + kb * kv_blk, rows=T, local_addr=acc_c + kb * T,
                          to_acc=1))
    if kb_n * T > half:
        raise LoweringError(f"K ({T} x {dh}) does not fit half the accumulator")
    # V's padding rows (keys past T) must be zero: they meet P's zero columns anyway, but
    # the scratchpad may hold anything there; P's padding lanes are 0, so they add 0.
    for i, args in enumerate(loads):
        prog.append(Command(Opcode.LOAD, args, signal_next=i == len(loads) - 1))
    # K^T: the relay lets the store wait for the loads; the store signals back.
    prog.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True,
                        signal_next=True))
    for kb in range(kb_n):
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.NONE, "length": d, "rows": T},
            "acc_addr": acc_c + kb * T, "to_spad": 1, "transpose": 1,
            "spad_addr": kt_at + kb * s_pad}, wait_prev=kb == 0,
            signal_prev=kb == kb_n - 1))

    # --- 2. Query chunks. ------------------------------------------------------------------
    def chunk(q0):
        """The chunk's keys (its Softmax length), key blocks, and the key blocks that get
        a mask (the padding mask: all; causal: those holding a key some query may not
        see)."""
        rows = min(mq, S - q0)
        if head.causal is None:
            keys = T
            masked = range(sb_n) if head.mask is not None else range(0)
        else:
            keys = head.causal + q0 + rows
            first_hidden = head.causal + q0 + 1      # query q0's first future key
            masked = range(first_hidden // d, -(-keys // d)) if rows > 1 else range(0)
        return rows, keys, -(-keys // d), masked

    chunks = [chunk(q0) for q0 in range(0, S, mq)]
    for ci, q0 in enumerate(range(0, S, mq)):
        rows, keys, kbs, masked = chunks[ci]
        nxt_masked = ci + 1 < len(chunks) and len(chunks[ci + 1][3]) > 0
        for i, j in enumerate(masked):
            if head.causal is None:   # the key mask's block j in every row
                src, stride = head.mask + j * d * 4, 0
            else:                     # the causal bias of the chunk's rows, block j
                src, stride = head.causal_mask + (j * S + q0) * d * 4, d * 4
            prog.append(Command(Opcode.LOAD, dict(
                dram_addr=src, stride=stride, rows=rows, row_bytes=d * 4,
                local_addr=acc_s + j * rows, to_acc=1, accumulate=0, scale=1, wide=1),
                wait_next=ci > 0 and i == 0, signal_next=i == len(masked) - 1))
        # Scores: the first compute waits for K^T (first chunk) and for the chunk's mask.
        # The previous chunk's P x V frees the scores' half before this chunk's mask loads.
        for j in range(kbs):
            for kb in range(kb_n):
                prog.append(Command(Opcode.PRELOAD, {"spad_addr": kt_at + kb * s_pad + j * d},
                                    wait_next=ci == 0 and j == 0 and kb == 0,
                                    wait_prev=len(masked) > 0 and j == 0 and kb == 0))
                prog.append(Command(Opcode.COMPUTE, {
                    "a_addr": q_at + kb * S + q0, "b_addr": 0, "rows": rows,
                    "acc_addr": acc_s + j * rows, "accumulate": int(j in masked or kb > 0)},
                    signal_next=j == kbs - 1 and kb == kb_n - 1))
        # P = Softmax(scores) >> 1, blocked into the scratchpad.
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.SOFTMAX, "length": keys, "rows": rows, "e": 1,
                     "consts": {"exp": dict(head.exp)}},
            "acc_addr": acc_s, "to_spad": 1, "spad_addr": p_at, "blocked": 1},
            wait_prev=True, signal_prev=True))
        # P x V.
        for n in range(kb_n):
            for j in range(kbs):
                # The first waits for P (and so for everything the store queue did before
                # it); it then frees the scores' half for the next chunk's mask.
                prog.append(Command(Opcode.PRELOAD, {"spad_addr": v_at + n * s_pad + j * d},
                                    wait_next=n == 0 and j == 0,
                                    signal_prev=nxt_masked and n == 0 and j == 0))
                prog.append(Command(Opcode.COMPUTE, {
                    "a_addr": p_at + j * rows, "b_addr": 0, "rows": rows,
                    "acc_addr": acc_c + n * rows, "accumulate": int(j > 0)},
                    signal_next=n == kb_n - 1 and j == kbs - 1))
        # The context, a column block per store: each block's rows are contiguous in
        # main memory, so each store is one DMA transfer (a blocked store of whole rows
        # would write every row's blocks apart, one bus write per block).
        for n in range(kb_n):
            prog.append(Command(Opcode.STORE, {
                "desc": {"op": OutputOp.REQUANT, "length": d, "rows": rows, "m": head.m,
                         "e": head.e},
                "acc_addr": acc_c + n * rows, "to_spad": 0,
                "dram_addr": head.ctx + n * blk + q0 * d, "stride": d},
                wait_prev=n == 0))
    if finish:
        prog.append(Command(Opcode.FINISH, {}))
    return prog
