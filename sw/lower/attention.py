"""Lowering of one attention head to a command stream, kept on chip between its products:

``ctx = requantize(i_softmax(Q K^T + mask, shift=1) V)``

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

A head with a K^T cache (``kt``: a decoder's keys, already transposed, in main memory)
keeps its whole blocks of 16 keys there. A step of one query (a decode step) loads those
weight tiles as they are and transposes only the keys of the last, partial block (at most
16 rows instead of all ``T``), and the scores are one run over the head dimension per key
block. Whenever a block of keys is complete (a prefill's whole blocks, a decode step's
16th key), its tiles go to the cache: the array multiplies them by the identity matrix
(``K^T I``, exact: one PRELOAD of the identity, the tiles streamed as activations), and
the int8 tiles are stored, in order, as the cache's rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputOp
from .gemm import digit_planes, with_digit
from .plan import LoweringError
from .schedule import Load, merge_loads

__all__ = ["AttentionHead", "lower_attention", "lower_attention_head", "causal_mask_bytes",
           "MASK_NEG", "CACHED_MIN_KEYS", "longest_keys", "uses_kt_cache"]

#: The additive mask of a masked key: far below any score, so its exp is 0, and far
#: enough from the int32 limit that adding a score cannot wrap.
MASK_NEG = -(1 << 30)
#: A decode step reads whole key blocks' K^T tiles from the cache from this many keys on;
#: below, transposing every key costs the store unit less than the cache's extra loads cost
#: the DMA (GPT-2-small on the default configuration, Verilator: the two paths cross near
#: 80 keys; docs/architecture.md). Either path is taken when only it fits on chip.
CACHED_MIN_KEYS = 80


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

    ``kt``: the head's K^T cache, key block ``j``'s ``dh`` rows of ``D`` bytes (row ``i``:
    dimension ``i``'s values of the block's keys) at ``kt + j * dh * D``, with ``ident``
    the address of the ``D x D`` int8 identity matrix (see the module docstring); the
    cache holds every whole block of keys before the step's, and the step adds its own.
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
    kt: int | None = None
    ident: int | None = None
    read_cache: bool = True
    #: A wide context (``docs/architecture.md``, *Wide activations*): its high digits at
    #: ``ctx``, its low digits at ``ctx_lo`` (the same layout).
    ctx_lo: int | None = None

    @property
    def n_keys(self) -> int:
        return self.seq if self.keys is None else self.keys

    @property
    def cached(self) -> bool:
        """One query over a K^T cache that it reads (``read_cache``, chosen by
        :func:`lower_attention`): the whole blocks' tiles come from the cache, only the
        last block of keys is staged."""
        return self.kt is not None and self.seq == 1 and self.read_cache


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
    """Query rows per chunk: the scores (``Mq x keys``) fill at most one half of the
    accumulator and the context (``Mq x dh``) the other half."""
    d = config.rows
    half = config.acc_rows // 2
    key_blocks = -(-head.n_keys // d)
    return min(head.seq, half // key_blocks, half // (head.dh // d))


def _acc_rows(c: TesseraConfig, head: AttentionHead, mq: int) -> tuple[int, int]:
    """Accumulator rows of one head: its scores (``Mq`` rows per key block), then its
    context (``Mq`` rows per block of the head dimension), where K is staged first (``T``
    rows per block) for the transposed store."""
    d = c.rows
    kb_n, sb_n = head.dh // d, -(-head.n_keys // d)
    staged = d if head.cached else head.n_keys
    return sb_n * mq, kb_n * max(staged, mq)


def _check_head(c: TesseraConfig, head: AttentionHead) -> None:
    d = c.rows
    if c.rows != c.cols or not c.has_ws:
        raise LoweringError("attention needs a square, weight-stationary array")
    if head.dh % d:
        raise LoweringError(f"the head dimension ({head.dh}) must be a multiple of {d}")
    if c.acc_bits != 32:
        raise LoweringError("the mask and Softmax need 32-bit accumulator lanes")
    S, T = head.seq, head.n_keys
    if T > c.max_row_len:
        raise LoweringError(f"attention over {T} keys: Softmax rows hold at most "
                            f"{c.max_row_len} on this configuration")
    if head.mask is not None and head.causal is not None:
        raise LoweringError("a head takes a key mask or a causal mask, not both")
    if head.causal is not None and head.causal_mask is None and S > 1:
        raise LoweringError("causal attention over several queries needs causal_mask")
    if head.causal is not None and head.causal + S > T:
        raise LoweringError(f"{S} queries from position {head.causal} need {head.causal + S} "
                            f"keys; there are {T}")


def _spad_rows(c: TesseraConfig, head: AttentionHead, mq: int) -> int:
    """Scratchpad rows of one head: Q (kb_n blocks of S rows), K^T tiles (kb_n x sb_n
    tiles), V (kb_n blocks of s_pad rows: weight tiles of d keys), P (sb_n blocks of mq
    rows)."""
    d = c.rows
    kb_n, sb_n = head.dh // d, -(-head.n_keys // d)
    return kb_n * head.seq + 2 * kb_n * sb_n * d + sb_n * mq


def _ident_rows(c: TesseraConfig, head: AttentionHead) -> int:
    """Scratchpad rows of a group's identity matrix (heads with a K^T cache)."""
    return c.rows if head.kt is not None else 0


def _group_size(c: TesseraConfig, head: AttentionHead, spad_base: int, most: int) -> int:
    """How many heads to interleave: as many as fit side by side (up to ``most``) in the
    scratchpad and the accumulator, with the query chunks of a head alone."""
    mq = _chunk_rows(c, head)
    if mq < 1:
        return 1                     # _lower_group reports why
    acc = sum(_acc_rows(c, head, mq))
    spad = _spad_rows(c, head, mq)
    room = c.spad_rows - spad_base - _ident_rows(c, head)
    return max(1, min(most, c.acc_rows // acc, room // spad))


def longest_keys(config: TesseraConfig, dh: int, decode: bool = False,
                 cached: bool = False) -> int:
    """The most keys one head of dimension ``dh`` can attend over on ``config`` (its
    scores, context and staged K in the accumulator, its operands in the scratchpad): with
    as many queries as keys (an encoder, a prefill), or one query (``decode``), over a K^T
    cache (``cached``, a decoder's) or not. 0 if none fit."""
    def fits(t: int) -> bool:
        head = AttentionHead(1 if decode else t, dh, 0, 0, 0, 0, dh, {}, 1, 0, keys=t,
                             kt=0 if cached else None, ident=0 if cached else None)
        try:
            _Group(config, _decode_path(config, [head], 0), 0)
        except LoweringError:
            return False
        return True

    lo, hi = 0, config.max_row_len   # Softmax's longest row
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def uses_kt_cache(config: TesseraConfig, dh: int, capacity: int) -> bool:
    """Whether a decoder whose cache holds ``capacity`` positions keeps a K^T cache: when
    some decode step may read it (:data:`CACHED_MIN_KEYS` keys or more, or more than
    transposing every key fits on chip). Otherwise no step writes or reads one, and
    every step transposes its keys."""
    return capacity >= CACHED_MIN_KEYS or capacity > longest_keys(config, dh, decode=True)


def _decode_path(config: TesseraConfig, heads: list[AttentionHead],
                 spad_base: int) -> list[AttentionHead]:
    """Heads of one query over a K^T cache, told whether to read it
    (:data:`CACHED_MIN_KEYS`; the other path when only that one fits); other heads as
    they are."""
    first = heads[0]
    if first.kt is None or first.seq != 1:
        return heads
    prefer = first.n_keys >= CACHED_MIN_KEYS
    for read in (prefer, not prefer):
        chosen = [dataclasses.replace(h, read_cache=read) for h in heads]
        try:
            _Group(config, chosen[:1], spad_base)
        except LoweringError:
            continue
        return chosen
    return heads                # neither fits: the lowering says why


def lower_attention(config: TesseraConfig, heads: list[AttentionHead], spad_base: int = 0,
                    finish: bool = True) -> list[Command]:
    """The command stream of several heads of the same shape: groups of heads
    interleaved stage by stage (see :func:`lower_attention_head`), separated by FENCEs.

    While the store unit runs one head's Softmax, the array computes the next head's
    scores; while it computes one head's ``P V``, the store unit runs the next Softmax and
    the DMA loads; a group's heads use their own scratchpad and accumulator regions."""
    if not heads:
        return [Command(Opcode.FINISH, {})] if finish else []
    heads = _decode_path(config, heads, spad_base)
    g = _group_size(config, heads[0], spad_base, len(heads))
    prog: list[Command] = []
    for i in range(0, len(heads), g):
        if prog:
            prog.append(Command(Opcode.FENCE, {}))   # the groups share the on-chip buffers
        prog += _lower_group(config, heads[i:i + g], spad_base)
    if finish:
        prog.append(Command(Opcode.FINISH, {}))
    return prog


def lower_attention_head(config: TesseraConfig, head: AttentionHead,
                         spad_base: int = 0, finish: bool = True) -> list[Command]:
    """The command stream of one head (see the module docstring)."""
    prog = _lower_group(config, _decode_path(config, [head], spad_base), spad_base)
    if finish:
        prog.append(Command(Opcode.FINISH, {}))
    return prog


def _lower_group(config: TesseraConfig, heads: list[AttentionHead],
                 spad_base: int) -> list[Command]:
    """Heads of one shape, each in its own share of the scratchpad and accumulator, their
    commands software-pipelined (:func:`_pipeline`). Every token channel carries the heads'
    tokens in the same order on both sides, and the stream stays in a topological order of
    its tokens."""
    group = _Group(config, heads, spad_base)
    stages: dict[str, list[list[Command]]] = {}
    for i, head in enumerate(heads):
        group.head_stages(head, group.layout(i), stages)
    return _pipeline(stages, len(heads), len(group.chunks))


def _pipeline(stages: dict[str, list[list[Command]]], g: int, n_chunks: int) -> list[Command]:
    """The program of ``g`` heads' stages (each stage a list of command lists, one per
    head)."""
    def get(stage, i):
        return stages[stage][i] if 0 <= i < g else []

    if n_chunks > 1:     # one head (a group's heads fit whole): chunk after chunk
        order = ["load", "relay", "kt", "wb", "wbst"] + [
            f"{stage}{ci}" for ci in range(n_chunks)
            for stage in ("mask", "scores", "softmax", "pv", "ctx")]
        return [cmd for stage in order for cmds in stages[stage] for cmd in cmds]
    # Software-pipelined: in step i the array computes head i's scores and head i-1's
    # P V, while the store unit transposes head i+1's K, runs head i's Softmax and stores
    # head i-1's context, and the DMA loads head i+2. Each channel's tokens pair up in
    # order: EXECUTE signals STORE for K^T i+1, Softmax i, context i-1 and STORE waits in
    # that order; STORE signals K^T i+1 then Softmax i, which scores i+1 and P V i await.
    # A K^T cache's write-back of head i (``wb``: K^T I on the array, waiting for K^T i
    # instead of the scores; ``wbst``: its store) pairs up between K^T i+1 and Softmax i.
    prog = get("load", 0) + get("load", 1) + get("mask0", 0) + get("relay", 0) + get("kt", 0)
    for i in range(g):
        prog += get("load", i + 2) + get("mask0", i + 1)
        prog += get("relay", i + 1) + get("wb", i) + get("scores0", i) + get("pv0", i - 1)
        prog += get("kt", i + 1) + get("wbst", i) + get("softmax0", i) + get("ctx0", i - 1)
    return prog + get("pv0", g - 1) + get("ctx0", g - 1)


class _Group:
    """A group of heads of one shape: the checks, the query chunks and where each head's
    operands, scores and context go on chip; it writes each head's stages."""

    def __init__(self, c: TesseraConfig, heads: list[AttentionHead], spad_base: int):
        self.c, self.d, self.spad_base = c, c.rows, spad_base
        first = heads[0]
        for head in heads:
            _check_head(c, head)
            if (head.seq, head.dh, head.n_keys, head.causal, head.mask is None,
                    head.kt is None) != (first.seq, first.dh, first.n_keys, first.causal,
                                         first.mask is None, first.kt is None):
                raise LoweringError("heads lowered together must have the same shape and "
                                    "mask")
        g = len(heads)
        S, dh, T = self.S, self.dh, self.T = first.seq, first.dh, first.n_keys
        self.kb_n = dh // self.d                # blocks of the head dimension
        self.sb_n = -(-T // self.d)             # blocks of keys
        self.s_pad = self.sb_n * self.d
        mq = self.mq = _chunk_rows(c, first)
        if mq < 1:
            raise LoweringError(f"a score row of {T} keys ({self.sb_n} accumulator rows) does "
                                f"not fit half the accumulator ({c.acc_rows // 2} rows)")
        self.scores_rows, self.ctx_rows = _acc_rows(c, first, mq)
        if g * (self.scores_rows + self.ctx_rows) > c.acc_rows:
            raise LoweringError(f"{g} heads of {T} keys x {dh} (K staged for its transpose) "
                                f"need {g * (self.scores_rows + self.ctx_rows)} accumulator "
                                f"rows; there are {c.acc_rows}")
        self.rows = _spad_rows(c, first, mq)
        need = g * self.rows + _ident_rows(c, first)
        if spad_base + need > c.spad_rows:
            raise LoweringError(f"{g} heads of {S} queries, {T} keys and {dh} dimensions need "
                                f"{need} scratchpad rows; there are "
                                f"{c.spad_rows - spad_base}")
        self.ident_at = spad_base + g * self.rows
        self.chunks = [self.chunk(first, q0) for q0 in range(0, S, mq)]
        # With a K^T cache: the whole blocks of keys this step completes go to the cache
        # (a prefill's: every whole block; a decode step's: its block, once its 16th key
        # is in), from the key block ``wb_first`` on.
        self.wb_first = self.wb_last = 0
        if first.kt is not None:
            if first.ident is None:
                raise LoweringError("a head with a K^T cache needs the identity matrix")
            self.wb_last = T // self.d
            self.wb_first = (T - 1) // self.d if S == 1 else 0
        self.writes_back = self.wb_last > self.wb_first

    def layout(self, i: int) -> dict:
        """Head ``i``'s Q, K^T, V and P in the scratchpad, its scores and context in the
        accumulator."""
        q_at = self.spad_base + i * self.rows
        kt_at = q_at + self.kb_n * self.S
        v_at = kt_at + self.kb_n * self.s_pad
        acc_s = i * (self.scores_rows + self.ctx_rows)
        return dict(q_at=q_at, kt_at=kt_at, v_at=v_at, p_at=v_at + self.kb_n * self.s_pad,
                    acc_s=acc_s, acc_c=acc_s + self.scores_rows, first=i == 0)

    def tile(self, head: AttentionHead, L: dict, j: int, kb: int) -> int:
        """The scratchpad row of K^T's weight tile for key block ``j`` and block ``kb`` of
        the head dimension: block by block of the head dimension, or with a K^T cache for
        one query, key block by key block (as the cache holds them, and so that a key
        block's tiles are one run)."""
        if head.cached:
            return L["kt_at"] + j * self.dh + kb * self.d
        return L["kt_at"] + kb * self.s_pad + j * self.d

    def chunk(self, head: AttentionHead, q0: int):
        """The chunk's rows, keys (its Softmax length) and key blocks, and the key blocks
        that get a mask (the padding mask: all; causal: those holding a key some query may
        not see)."""
        d, n = self.d, min(self.mq, self.S - q0)
        if head.causal is None:
            keys = self.T
            masked = range(self.sb_n) if head.mask is not None else range(0)
        else:
            keys = head.causal + q0 + n
            first_hidden = head.causal + q0 + 1      # query q0's first future key
            masked = range(first_hidden // d, -(-keys // d)) if n > 1 else range(0)
        return n, keys, -(-keys // d), masked

    def head_stages(self, head: AttentionHead, L: dict, stages: dict) -> None:
        """Append head ``head``'s commands to ``stages``, stage by stage."""
        def emit(stage, cmds):
            stages.setdefault(stage, []).append(cmds)

        self.operand_stages(head, L, emit)
        self.write_back_stages(head, L, emit)
        for ci in range(len(self.chunks)):
            self.score_stages(head, L, ci, emit)
            self.context_stages(head, L, ci, emit)

    def operand_stages(self, head: AttentionHead, L: dict, emit) -> None:
        """Q, V and K loaded (K into the accumulator), then K^T stored into the
        scratchpad."""
        d, kb_n, s_pad = self.d, self.kb_n, self.s_pad
        blk = head.block_stride
        kv_blk = blk if head.kv_stride is None else head.kv_stride

        def load(**kw):
            return dict(dict(stride=d, row_bytes=d, to_acc=0, accumulate=0, scale=1, wide=0),
                        **kw)

        # Q's blocks first, as one load where they continue one another (a decode step's
        # query row: one load instead of four); then V's and K's block by block. (Merged
        # too, an encoder layer's K and V blocks made BERT-base's attention 94 cycles
        # slower on Verilator.)
        q_loads = [ld.cmd for ld in merge_loads([Load(load(
            dram_addr=head.q + kb * blk, rows=self.S, local_addr=L["q_at"] + kb * self.S))
            for kb in range(kb_n)])]
        # Staged for the transposed store: every key, or with a K^T cache for one query
        # the keys of the last block (its whole blocks' tiles come from the cache). K goes
        # into the context's half: the first context is written only after the first
        # scores, which wait for the transposed K.
        first_key = self.wb_first * d if head.cached else 0
        staged = self.T - first_key
        k_loads = [load(dram_addr=head.k + kb * kv_blk + first_key * d, rows=staged,
                        local_addr=L["acc_c"] + kb * (d if head.cached else self.T),
                        to_acc=1) for kb in range(kb_n)]
        v_loads = [load(dram_addr=head.v + kb * kv_blk, rows=self.T,
                        local_addr=L["v_at"] + kb * s_pad) for kb in range(kb_n)]
        if head.cached:
            # The few staged rows first, where the DMA's two readers overlap their round
            # trips, then the large loads back to back: the cache's tiles, Q, V.
            loads = k_loads
            if L["first"] and self.writes_back:     # the group's identity matrix
                loads.append(load(dram_addr=head.ident, rows=d, local_addr=self.ident_at))
            if first_key:
                loads.append(load(dram_addr=head.kt, rows=first_key // d * self.dh,
                                  local_addr=L["kt_at"]))
            loads += q_loads + v_loads
        else:
            loads = q_loads + [ld for pair in zip(v_loads, k_loads, strict=True)
                                for ld in pair]
            if L["first"] and self.writes_back:
                loads.insert(0, load(dram_addr=head.ident, rows=d, local_addr=self.ident_at))
        # V's padding rows (keys past T) may hold anything: they meet P's zero columns.
        emit("load", [Command(Opcode.LOAD, args, signal_next=i == len(loads) - 1)
                      for i, args in enumerate(loads)])
        # K^T: the relay lets the store wait for the loads; the store signals back.
        emit("relay", [Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True,
                               signal_next=True)])
        emit("kt", [Command(Opcode.STORE, {
            "desc": {"op": OutputOp.NONE, "length": d, "rows": staged},
            "acc_addr": L["acc_c"] + kb * (d if head.cached else self.T), "to_spad": 1,
            "transpose": 1, "spad_addr": self.tile(head, L, first_key // d, kb)},
            wait_prev=kb == 0, signal_prev=kb == kb_n - 1) for kb in range(kb_n)])

    def write_back_stages(self, head: AttentionHead, L: dict, emit) -> None:
        """With a K^T cache, the whole key blocks this step completes: ``K^T I`` into the
        context's half of the accumulator (after the transposed K, whose token it takes
        from the scores), then one store of the tiles in the cache's order."""
        d, kb_n = self.d, self.kb_n
        blocks = range(self.wb_first, self.wb_last)
        if not self.writes_back:
            emit("wb", [])
            emit("wbst", [])
            return
        # The identity is the weight tile and K^T's tiles the activations (K^T I = K^T):
        # one PRELOAD, then one COMPUTE per run of tiles that follow one another in the
        # scratchpad (a whole key block's, laid out key block by key block).
        runs: list[list[int]] = []          # [first scratchpad row, rows]
        for j in blocks:
            for kb in range(kb_n):
                at = self.tile(head, L, j, kb)
                if runs and runs[-1][0] + runs[-1][1] == at:
                    runs[-1][1] += d
                else:
                    runs.append([at, d])
        cmds = [Command(Opcode.PRELOAD, {"spad_addr": self.ident_at}, wait_next=True)]
        row = 0
        for i, (at, rows) in enumerate(runs):
            cmds.append(Command(Opcode.COMPUTE, {
                "a_addr": at, "b_addr": 0, "rows": rows, "acc_addr": L["acc_c"] + row,
                "accumulate": 0}, signal_next=i == len(runs) - 1))
            row += rows
        emit("wb", cmds)
        emit("wbst", [Command(Opcode.STORE, {
            "desc": {"op": OutputOp.NONE, "length": d, "rows": len(blocks) * kb_n * d},
            "acc_addr": L["acc_c"], "to_spad": 0,
            "dram_addr": head.kt + self.wb_first * self.dh * d, "stride": d},
            wait_prev=True)])

    def score_stages(self, head: AttentionHead, L: dict, ci: int, emit) -> None:
        """Query chunk ``ci``'s mask loads and scores (``Q K^T`` into the accumulator)."""
        d, kb_n, S = self.d, self.kb_n, self.S
        q0 = ci * self.mq
        n, keys, kbs, masked = self.chunks[ci]
        masks = []
        for i, j in enumerate(masked):
            if head.causal is None:   # the key mask's block j in every row
                src, stride = head.mask + j * d * 4, 0
            else:                     # the causal bias of the chunk's rows, block j
                src, stride = head.causal_mask + (j * S + q0) * d * 4, d * 4
            masks.append(Command(Opcode.LOAD, dict(
                dram_addr=src, stride=stride, rows=n, row_bytes=d * 4,
                local_addr=L["acc_s"] + j * n, to_acc=1, accumulate=0, scale=1, wide=1),
                wait_next=ci > 0 and i == 0, signal_next=i == len(masked) - 1))
        emit(f"mask{ci}", masks)
        # The first compute waits for K^T (first chunk; the write-back's computes take
        # that token when there are any) and for the chunk's mask. The previous chunk's
        # P x V frees the scores before this chunk's mask.
        waits_kt = ci == 0 and not self.writes_back
        scores = []
        if head.cached:      # one run over the head dimension per key block
            for j in range(kbs):
                scores.append(Command(Opcode.COMPUTE, {
                    "a_addr": L["q_at"] + q0, "b_addr": self.tile(head, L, j, 0),
                    "rows": n, "acc_addr": L["acc_s"] + j * n,
                    "accumulate": int(j in masked), "count": kb_n, "a_stride": S},
                    wait_next=waits_kt and j == 0,
                    wait_prev=len(masked) > 0 and j == 0, signal_next=j == kbs - 1))
            emit(f"scores{ci}", scores)
            return
        for j in range(kbs):
            for kb in range(kb_n):
                scores.append(Command(Opcode.PRELOAD, {
                    "spad_addr": L["kt_at"] + kb * self.s_pad + j * d},
                    wait_next=waits_kt and j == 0 and kb == 0,
                    wait_prev=len(masked) > 0 and j == 0 and kb == 0))
                scores.append(Command(Opcode.COMPUTE, {
                    "a_addr": L["q_at"] + kb * S + q0, "b_addr": 0, "rows": n,
                    "acc_addr": L["acc_s"] + j * n,
                    "accumulate": int(j in masked or kb > 0)},
                    signal_next=j == kbs - 1 and kb == kb_n - 1))
        emit(f"scores{ci}", scores)

    def context_stages(self, head: AttentionHead, L: dict, ci: int, emit) -> None:
        """Query chunk ``ci``'s Softmax, ``P V`` and context stores."""
        kb_n, q0 = self.kb_n, ci * self.mq
        n, keys, kbs, _ = self.chunks[ci]
        nxt_masked = ci + 1 < len(self.chunks) and len(self.chunks[ci + 1][3]) > 0
        # P = Softmax(scores) to 7 bits (rounded), blocked into the scratchpad.
        emit(f"softmax{ci}", [Command(Opcode.STORE, {
            "desc": {"op": OutputOp.SOFTMAX, "length": keys, "rows": n, "e": 1,
                     "consts": {"exp": dict(head.exp)}},
            "acc_addr": L["acc_s"], "to_spad": 1, "spad_addr": L["p_at"], "blocked": 1},
            wait_prev=True, signal_prev=True)])
        # P x V: per block of the context, one run over the key blocks (V's weight tiles
        # are consecutive rows, P's blocks ``n`` rows apart). The first waits for P; it
        # then frees the scores for the next chunk's mask.
        emit(f"pv{ci}", [Command(Opcode.COMPUTE, {
            "a_addr": L["p_at"], "b_addr": L["v_at"] + m * self.s_pad, "rows": n,
            "acc_addr": L["acc_c"] + m * n, "accumulate": 0, "count": kbs, "a_stride": n},
            wait_next=m == 0, signal_prev=nxt_masked and m == 0,
            signal_next=m == kb_n - 1) for m in range(kb_n)])
        # The context, a column block per store: each block's rows are contiguous in main
        # memory, so each store is one DMA transfer (a blocked store of whole rows would
        # write every row's blocks apart, one bus write per block).
        # One query row whose blocks follow one another in main memory (a decode step):
        # one store of the whole row, one DMA transfer, instead of one per block.
        blk = head.block_stride
        # A wide context: each store twice, its high digits, then its low ones.
        planes = digit_planes(head.ctx, head.ctx_lo)
        if n == 1 and blk == self.d:
            emit(f"ctx{ci}", [Command(Opcode.STORE, {
                "desc": with_digit({"op": OutputOp.REQUANT, "length": self.dh, "rows": 1,
                                    "m": head.m, "e": head.e}, digit),
                "acc_addr": L["acc_c"], "to_spad": 0,
                "dram_addr": head.ctx + off + q0 * self.d, "stride": self.dh},
                wait_prev=i == 0) for i, (digit, off) in enumerate(planes)])
            return
        emit(f"ctx{ci}", [Command(Opcode.STORE, {
            "desc": with_digit({"op": OutputOp.REQUANT, "length": self.d, "rows": n,
                                "m": head.m, "e": head.e}, digit),
            "acc_addr": L["acc_c"] + m * n, "to_spad": 0,
            "dram_addr": head.ctx + off + m * blk + q0 * self.d, "stride": self.d},
            wait_prev=m == 0 and i == 0)
            for m in range(kb_n) for i, (digit, off) in enumerate(planes)])
