"""Lowering of matrix products to command streams:
``C = act(requantize(A @ B + bias))`` for any ``M x K`` A and ``K x N`` B (int8), an
optional int32 bias per column, and an optional ReLU or i-GELU.

The tiles, their order and the scratchpad slots come from the tile planner
(:mod:`tessera.sw.lower.plan`). The emitter (:func:`lower_gemm`) walks the plan's tiles and
steps and writes each queue's commands with what they wait for; the token scheduler
(:mod:`tessera.sw.lower.schedule`) turns that into tokens and one program.

Each column block of a step is one COMPUTE running over the step's K tiles (``count``,
``hw/isa.py``), so commands cost a few bytes of fetch per step, not 64 bytes per weight
tile. A step's loads signal EXECUTE once, and the step's first command waits for them; a
load into a slot still in use waits for the execute command that last reads it; a tile's
last COMPUTE signals STORE; a STORE signals EXECUTE when its accumulator half is free
again. A bias is loaded straight into the accumulator (a wide load replicated over the
tile's rows), in pieces of INIT_ROWS rows that join the load groups of the previous tile's
later steps, after the step's operand loads (the in-order load queue would otherwise hold
them behind it); they wait for a NOP in the execute queue, a quarter into the previous
tile, that relays the STORE's token. A resident plan (all of C fits the accumulator) gives
each tile rows of its own: nothing waits for a store, and a one-row product loads every
tile's bias (one load) and residual with its first step. Loads that continue one another
(A's blocks when a tile spans all of M, B's when a step spans all of K, one-row tiles'
biases) are merged into one.

Matrices are in the blocked layout of :mod:`tessera.sw.lower.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputDigit, OutputOp
from ...hw.store_unit import PARAM_ROWS
from ..golden.dma import lane_bytes
from ..golden.gelu import GeluConstants, gelu_constants
from ..golden.matmul import matmul
from ..golden.output import output_op
from ..golden.requant import dyadic_multiplier
from .layout import Blocked, bias_bytes, from_blocked, to_blocked
from .plan import INIT_ROWS, GemmPlan, GemmShape, LoweringError, plan_gemm, slot_bases
from .schedule import Load, Streams, merge_loads, schedule

__all__ = ["OutputSpec", "lower_gemm", "GemmBuffers", "run_gemm", "reference_gemm",
           "LayerNormOutput", "layernorm_rows"]



@dataclass(frozen=True)
class OutputSpec:
    """What the store does to the int32 results: the output path's operation and its
    constants (``m``, ``e``: the dyadic requantization; ``gelu``: i-GELU's integers)."""

    op: OutputOp = OutputOp.REQUANT
    m: int = 1
    e: int = 0
    gelu: dict | None = None

    @classmethod
    def requant(cls, ratio: float, relu: bool = False) -> OutputSpec:
        """Requantize by ``ratio`` (the accumulator's scale over the output's), then ReLU."""
        m, e = dyadic_multiplier(ratio)
        return cls(OutputOp.RELU if relu else OutputOp.REQUANT, m, e)

    @classmethod
    def gelu_of(cls, acc_scale: float, out_scale: float) -> OutputSpec:
        """i-GELU of the accumulator (at ``acc_scale``), requantized to ``out_scale``."""
        g = gelu_constants(acc_scale)
        m, e = dyadic_multiplier(g.out_scale / out_scale)
        consts = {k: getattr(g, k) for k in ("shift", "q_b", "q_c", "poly_shift")}
        return cls(OutputOp.GELU, m, e, consts)

    def reference(self, acc: np.ndarray) -> np.ndarray:
        """The golden model of this output on int32 accumulator values."""
        gelu = GeluConstants(**self.gelu, out_scale=1.0) if self.op == OutputOp.GELU else None
        return output_op(self.op, acc, self.m, self.e, gelu=gelu).astype(np.int8)

    def descriptor(self, length: int, rows: int, digit=OutputDigit.INT8) -> dict:
        """A STORE's descriptor of ``rows`` rows of ``length``; ``digit`` for one digit of
        a wide output."""
        desc = {"op": self.op, "length": length, "rows": rows, "m": self.m, "e": self.e}
        if self.op == OutputOp.GELU:
            if self.gelu is None:
                raise LoweringError("a GELU output needs its constants (gelu=...)")
            desc["consts"] = {"out": {"gelu": dict(self.gelu)}}
        elif self.op not in (OutputOp.NONE, OutputOp.REQUANT, OutputOp.RELU):
            raise LoweringError(f"a matrix product's output cannot be {self.op.name}")
        return with_digit(desc, digit)


def digit_planes(hi: int, lo: int | None) -> list[tuple]:
    """``(digit, offset from hi)`` of each store of an output at ``hi``: the int8 one, or a
    wide output's high digits there and its low digits at ``lo``."""
    return [(OutputDigit.INT8, 0)] if lo is None else \
        [(OutputDigit.HIGH, 0), (OutputDigit.LOW, lo - hi)]


def with_digit(desc: dict, digit) -> dict:
    """``desc`` writing ``digit`` of a wide output (unchanged for INT8)."""
    if digit != OutputDigit.INT8:
        desc.setdefault("consts", {}).setdefault("out", {})["digit"] = digit
    return desc


@dataclass(frozen=True)
class GemmBuffers:
    """Where the operands are in main memory (byte addresses; blocked layouts). A wide
    operand (A, the residual, C: ``docs/architecture.md``, *Wide activations*) has its high
    digits at its address and its low digits at the ``_lo`` one, each in the operand's
    blocked layout."""

    a: int
    b: int
    c: int
    bias: int | None = None
    residual: int | None = None      # an int8 M x N matrix added in the accumulator,
    residual_scale: int | tuple = 1  # times this integer (one per column block, or one)
    #: Where each column block of C goes, when not all at ``c`` in C's own blocked layout:
    #: block ``j``'s row 0 is at ``c_blocks[j]``, its rows ``D`` bytes apart (e.g. K and V
    #: written into a KV cache of more rows).
    c_blocks: tuple | None = None
    a_lo: int | None = None
    residual_lo: int | None = None
    c_lo: int | None = None


@dataclass(frozen=True)
class LayerNormOutput:
    """The output rows go through i-LayerNorm: ``table`` is the main-memory address of its
    int32 table (``PARAM_ROWS`` rows of ``D`` lanes per column block: gamma, beta's low
    and high words), ``m``, ``e`` its output requantization."""

    table: int
    m: int
    e: int
    prescale: bool = False   # the table carries a per-block (m, e) for the LayerNorm input


def _take_slot(keys: list, key, nxt: int) -> tuple[int, bool, int]:
    """The scratchpad slot for operand tile ``key``: the one holding it already, or the
    next one in turn (then marked as holding it). Returns ``(slot, fresh, next)``; a fresh
    slot must be loaded."""
    if key in keys:
        return keys.index(key), False, nxt
    keys[nxt] = key
    return nxt, True, (nxt + 1) % len(keys)


def lower_gemm(config: TesseraConfig, plan: GemmPlan, buffers: GemmBuffers,
               output: OutputSpec | list, finish: bool = True,
               layernorm: LayerNormOutput | None = None) -> list[Command]:
    """The command stream of the product ``plan`` describes (see the module docstring).

    ``output`` is one :class:`OutputSpec`, or one per column block of N (per-group
    requantization). With ``layernorm`` the tiles must span whole rows (a plan made with
    ``full_rows`` and ``reserve=layernorm_rows(config, N)``), and each tile is stored
    through i-LayerNorm instead.
    """
    walk = _TileWalk(config, plan, buffers, output, layernorm)
    for t in range(len(walk.tiles)):
        walk.tile(t)
    return schedule(walk.s, finish=finish, ahead=max(plan.a_slots, plan.b_slots, 2) - 1,
                    store_depth=config.store_queue_depth)


class _Tile:
    """Where tile ``t`` is: its first row and column block, its rows and column blocks
    (the last tiles may be short) and its accumulator half."""

    def __init__(self, walk: _TileWalk, t: int):
        p = walk.plan
        mi, ni = walk.tiles[t]
        self.t, self.mi, self.ni = t, mi, ni
        self.m0, self.n0b = mi * p.mt, ni * p.nt
        self.mt = min(p.mt, p.shape.M - self.m0)
        self.ntb = min(p.nt, p.n_blocks - self.n0b)
        # Resident: every tile has rows of its own; else the two halves in turn.
        self.acc0 = walk.acc_at[t] if p.resident else (t % 2) * walk.acc_half


class _TileWalk:
    """The emitter: walks the plan's tiles and steps, writing each queue's commands and
    what they wait for into :class:`~tessera.sw.lower.schedule.Streams`."""

    def __init__(self, config, plan, buffers, output, layernorm):
        c = self.c = config
        self.plan, self.buf, self.ln = plan, buffers, layernorm
        d = self.d = plan.dim
        M, K, N = plan.shape.M, plan.shape.K, plan.shape.N
        nb = plan.n_blocks
        self.outputs = list(output) if isinstance(output, list | tuple) else [output] * nb
        if len(self.outputs) != nb:
            raise LoweringError(f"{len(self.outputs)} output specs for {nb} column blocks")
        self.table_rows = layernorm_rows(c, N, layernorm.prescale) if layernorm else 0
        if layernorm and plan.nt != nb:
            raise LoweringError("a LayerNorm output needs tiles of whole rows (plan_gemm with "
                                "full_rows=True)")
        scales = buffers.residual_scale
        self.scales = list(scales) if isinstance(scales, list | tuple) else [scales] * nb
        self.A, self.B, self.C = Blocked(M, K, d), Blocked(K, N, d, row_multiple=d), \
            Blocked(M, N, d)
        if buffers.c_blocks is not None:
            if len(buffers.c_blocks) != nb:
                raise LoweringError(f"{len(buffers.c_blocks)} output block addresses for {nb} "
                                    "column blocks")
            if layernorm:
                raise LoweringError("a LayerNorm output is stored in C's own blocked layout")
        if (buffers.a_lo is not None) != (plan.a_planes == 2) or \
                (buffers.c_lo is not None) != (plan.c_planes == 2):
            raise LoweringError("a wide A or C needs a plan made for its two digit planes "
                                "(plan_gemm with a_planes, c_planes 2), and the plan the "
                                "low digits' address")
        if buffers.c_lo is not None and buffers.c_blocks is not None:
            raise LoweringError("a wide output is stored in C's own blocked layout")
        if buffers.residual_lo is not None and buffers.residual is None:
            raise LoweringError("a residual's low digits need its high digits")
        self.has_bias = buffers.bias is not None
        self.has_res = buffers.residual is not None
        self.has_init = self.has_bias or self.has_res   # the accumulator is loaded first
        self.acc_half = (c.acc_rows - self.table_rows) // 2
        self.table_at = c.acc_rows - self.table_rows
        a_rows, b_rows = plan.mt * plan.kt * plan.a_planes, plan.kt * d * plan.nt
        bases, _ = slot_bases(c, [a_rows] * plan.a_slots + [b_rows] * plan.b_slots)
        self.a_base, self.b_base = bases[:plan.a_slots], bases[plan.a_slots:]
        # Which operand tile each slot holds, the next slot in turn, its last reader.
        self.a_key, self.b_key = [None] * plan.a_slots, [None] * plan.b_slots
        self.a_last, self.b_last = [-1] * plan.a_slots, [-1] * plan.b_slots
        self.a_next = self.b_next = 0
        if plan.order == "mn":
            self.tiles = [(mi, ni) for mi in range(plan.m_tiles) for ni in range(plan.n_tiles)]
        else:
            self.tiles = [(mi, ni) for ni in range(plan.n_tiles) for mi in range(plan.m_tiles)]
        # Resident plans give each tile rows of its own (no tile waits for an earlier
        # tile's store); a one-row product's biases and residuals then all go in the
        # first step's loads, where they merge into a few.
        self.acc_at = [0]
        for mi, ni in self.tiles:
            self.acc_at.append(self.acc_at[-1] + min(plan.mt, M - mi * plan.mt)
                               * min(plan.nt, nb - ni * plan.nt))
        if plan.resident and self.acc_at[-1] > self.acc_half * 2:
            raise LoweringError(f"a resident plan's {self.acc_at[-1]} accumulator rows do "
                                f"not fit {self.acc_half * 2}")
        self.relay_of_tile: dict[int, int] = {}   # tile -> the NOP that lets its bias in
        self.init_made: set[int] = set()          # tiles whose bias loads are placed
        self.pending_init: list[Load] = []
        self.s = Streams()

    def c_at(self, row: int, block: int) -> int:
        """Main-memory address of C's ``row`` in column ``block``."""
        if self.buf.c_blocks is None:
            return self.buf.c + self.C.offset(row, block)
        return self.buf.c_blocks[block] + row * self.d

    def tile(self, t: int) -> None:
        """Tile ``t``: its steps (loads and computes), then its stores."""
        p = self.plan
        tl = _Tile(self, t)
        # The relay that lets the next tile's bias into its rows goes once a quarter of the
        # tile's K tiles are computed (the previous tile's store has had time to finish;
        # it splits the run it falls in).
        relay_due = self.has_init and not p.resident and 2 <= t + 1 < len(self.tiles)
        quarter = -(-p.k_blocks * tl.ntb // 4)
        computed = 0
        for ks in range(p.k_steps):
            computed = self.step(tl, ks, relay_due, quarter, computed)
        execs = self.s.execs
        self.s.exec_signal_next.add(len(execs) - 1 if execs[-1].opcode == Opcode.COMPUTE
                                    else len(execs) - 2)
        self.stores(tl)

    def step(self, tl: _Tile, ks: int, relay_due: bool, quarter: int, computed: int) -> int:
        """Step ``ks`` of a tile: its loads (LayerNorm's table first of all, A, B, then a
        share of the biases), then a COMPUTE run per column block over the step's K tiles
        (their weight tiles are consecutive in the B slot; A's blocks are ``mt`` rows
        apart). Returns the K tiles computed so far in the tile."""
        p, s, d = self.plan, self.s, self.d
        k0b = ks * p.kt
        ktb = min(p.kt, p.k_blocks - k0b)
        loads: list[Load] = []
        if tl.t == 0 and ks == 0 and self.ln:
            lb = lane_bytes(self.c)
            loads.append(Load(dict(
                dram_addr=self.ln.table, stride=d * lb, rows=self.table_rows,
                row_bytes=d * lb, local_addr=self.table_at, to_acc=1, accumulate=0, scale=1,
                wide=1)))
        a_slot, b_slot = self.operand_loads(tl, ks, k0b, ktb, loads)
        loads += self.init_share(tl.t, ks)
        if loads:
            loads = merge_loads(loads)
            loads[-1].signal = True
            s.loads.extend(loads)
            s.exec_wait_prev.add(len(s.execs))
        if ks == 0 and tl.t >= 2 and not self.has_init and not p.resident:
            s.exec_wait_next.add(len(s.execs))     # the store freed this accumulator half
        for n in range(tl.ntb):
            j = 0
            while j < ktb:
                count = ktb - j
                if relay_due and tl.t + 1 not in self.relay_of_tile:
                    count = max(1, min(count, quarter - computed))
                run = {"a_addr": self.a_base[a_slot] + j * tl.mt,
                       "b_addr": self.b_base[b_slot] + n * p.kt * d + j * d, "rows": tl.mt,
                       "acc_addr": tl.acc0 + n * tl.mt,
                       "accumulate": int(self.has_init or k0b + j > 0),
                       "count": count, "a_stride": tl.mt}
                if p.a_planes == 2:
                    # Wide A: the high digits' run shifted, then the low digits' adding.
                    s.execs.append(Command(Opcode.COMPUTE, dict(run, shift=1)))
                    run = dict(run, a_addr=run["a_addr"] + p.kt * tl.mt, accumulate=1)
                s.execs.append(Command(Opcode.COMPUTE, run))
                j += count
                computed += count
                # A quarter into the tile: the relay for the next tile's bias.
                if relay_due and computed >= quarter and tl.t + 1 not in self.relay_of_tile:
                    self.relay_of_tile[tl.t + 1] = len(s.execs)
                    s.execs.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}))
                    s.exec_wait_next.add(len(s.execs) - 1)
        self.a_last[a_slot] = self.b_last[b_slot] = len(s.execs) - 1
        return computed

    def operand_loads(self, tl: _Tile, ks: int, k0b: int, ktb: int,
                      loads: list[Load]) -> tuple[int, int]:
        """The step's A tile (row tile ``mi``, step ``ks``) and B tile (step ``ks``, column
        tile ``ni``): appended to ``loads`` unless a slot holds them already. Returns their
        slots."""
        p, d, buf = self.plan, self.d, self.buf
        a_slot, fresh, self.a_next = _take_slot(self.a_key, (tl.mi, ks), self.a_next)
        if fresh:
            planes = (buf.a,) if buf.a_lo is None else (buf.a, buf.a_lo)
            for i, plane in enumerate(planes):      # the low digits after the high ones
                for j in range(ktb):
                    loads.append(Load(dict(
                        dram_addr=plane + self.A.offset(tl.m0, k0b + j), stride=d,
                        rows=tl.mt, row_bytes=d,
                        local_addr=self.a_base[a_slot] + (i * p.kt + j) * tl.mt, to_acc=0,
                        accumulate=0, scale=1, wide=0), self.a_last[a_slot]))
        b_slot, fresh, self.b_next = _take_slot(self.b_key, (ks, tl.ni), self.b_next)
        if fresh:
            for j in range(tl.ntb):
                loads.append(Load(dict(
                    dram_addr=buf.b + self.B.offset(k0b * d, tl.n0b + j), stride=d,
                    rows=ktb * d, row_bytes=d, local_addr=self.b_base[b_slot] + j * p.kt * d,
                    to_acc=0, accumulate=0, scale=1, wide=0), self.b_last[b_slot]))
        return a_slot, b_slot

    def init_share(self, t: int, ks: int) -> list[Load]:
        """The bias and residual loads that go with step ``ks`` of tile ``t``: at its first
        step, what is left of its own (most go out with the previous tile's later steps);
        at the others, a share of the next tile's once its relay is placed. They go after
        the operands, since they wait for the relay of the store that frees their
        accumulator rows and the loads queue in order."""
        if not self.has_init:
            return []
        if self.plan.upfront:
            if t or ks:
                return []
            loads = [ld for n in range(len(self.tiles)) for ld in self.init_loads(n)]
            # The biases first (they merge into one), then the residuals they start.
            return sorted(loads, key=lambda ld: ld.cmd["accumulate"])
        if ks == 0:
            if t not in self.init_made:
                self.pending_init = self.init_loads(t)
                self.init_made.add(t)
            init, self.pending_init = self.pending_init, []
            return init
        nxt = t + 1
        if nxt < len(self.tiles) and (nxt < 2 or self.plan.resident
                                      or nxt in self.relay_of_tile):
            if nxt not in self.init_made:
                self.pending_init = self.init_loads(nxt)
                self.init_made.add(nxt)
            share = -(-len(self.pending_init) // (self.plan.k_steps - ks))
            init, self.pending_init = self.pending_init[:share], self.pending_init[share:]
            return init
        return []

    def init_loads(self, t: int) -> list[Load]:
        """Tile ``t``'s bias and residual, into its accumulator rows, in pieces of at most
        INIT_ROWS rows (so that they spread thinly over the steps); they wait for the relay
        of the store that frees those rows."""
        tl, d, buf = _Tile(self, t), self.d, self.buf
        need = self.relay_of_tile.get(t, -1)
        pieces = [(r0, min(INIT_ROWS, tl.mt - r0)) for r0 in range(0, tl.mt, INIT_ROWS)]
        out = []
        if self.has_bias:
            lb = lane_bytes(self.c)
            for j in range(tl.ntb):
                for r0, n in pieces:
                    out.append(Load(dict(
                        dram_addr=buf.bias + (tl.n0b + j) * d * lb, stride=0, rows=n,
                        row_bytes=d * lb, local_addr=tl.acc0 + j * tl.mt + r0, to_acc=1,
                        accumulate=0, scale=1, wide=1), need))
        if self.has_res:      # the residual has the output's shape and layout
            # (wide: the high digits shifted, then the low digits adding)
            planes = [(buf.residual, 0)] if buf.residual_lo is None else \
                [(buf.residual, 1), (buf.residual_lo, 0)]
            for j in range(tl.ntb):
                for r0, n in pieces:
                    for i, (plane, shift) in enumerate(planes):
                        out.append(Load(dict(
                            dram_addr=plane + self.C.offset(tl.m0 + r0, tl.n0b + j),
                            stride=d, rows=n, row_bytes=d,
                            local_addr=tl.acc0 + j * tl.mt + r0, to_acc=1,
                            accumulate=int(self.has_bias or i > 0),
                            scale=self.scales[tl.n0b + j], wide=0, shift=shift), need))
        return out

    def stores(self, tl: _Tile) -> None:
        """The tile's stores: one through i-LayerNorm over whole rows (in the blocked chunk
        order), or one per column block with its output operation."""
        s, d, buf = self.s, self.d, self.buf
        first = len(s.stores)
        # A wide output: each store twice, the high digits to C, the low ones to C's low
        # plane (the same offsets).
        planes = digit_planes(buf.c, buf.c_lo)
        if self.ln:
            for digit, off in planes:
                s.stores.append(Command(Opcode.STORE, {
                    "desc": with_digit({"op": OutputOp.LAYERNORM, "length": self.plan.shape.N,
                                        "rows": tl.mt, "m": self.ln.m, "e": self.ln.e}, digit),
                    "acc_addr": tl.acc0, "to_spad": 0, "blocked": 1,
                    "param_addr": self.table_at, "prescale": int(self.ln.prescale),
                    "dram_addr": buf.c + off + self.C.offset(tl.m0, 0),
                    "stride": self.C.block_bytes}))
        else:
            for n in range(tl.ntb):
                for digit, off in planes:
                    s.stores.append(Command(Opcode.STORE, {
                        "desc": self.outputs[tl.n0b + n].descriptor(d, tl.mt, digit),
                        "acc_addr": tl.acc0 + n * tl.mt, "to_spad": 0, "spad_addr": 0,
                        "dram_addr": self.c_at(tl.m0, tl.n0b + n) + off, "stride": d}))
        s.store_waits.add(first)
        if tl.t + 2 < len(self.tiles) and not self.plan.resident:
            s.store_signals.add(len(s.stores) - 1)


def layernorm_rows(config: TesseraConfig, n: int, prescale: bool = False) -> int:
    """Accumulator rows of a LayerNorm table for rows of ``n`` elements."""
    return -(-n // config.cols) * (PARAM_ROWS + prescale)


def reference_gemm(config: TesseraConfig, a, b, bias, output: OutputSpec) -> np.ndarray:
    """The golden model of the whole product (what :func:`run_gemm` must return)."""
    acc = matmul(a, b, config) + (0 if bias is None else np.asarray(bias))
    return output.reference(acc)


def run_gemm(rt, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None,
             output: OutputSpec | None = None, plan: GemmPlan | None = None, **run_args):
    """Place ``a``, ``b`` (and ``bias``) in ``rt``'s main memory, lower the product, run it.

    Returns
    -------
    (C, program, result, plan)
        The int8 result, the command stream, the :class:`~tessera.sw.runtime.RunResult`
        and the plan.
    """
    cfg = rt.config
    d = cfg.rows
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise LoweringError(f"cannot multiply {a.shape} by {b.shape}")
    (M, K), N = a.shape, b.shape[1]
    output = output or OutputSpec()
    plan = plan or plan_gemm(cfg, GemmShape(M, K, N), bias=bias is not None)
    A, B, C = Blocked(M, K, d), Blocked(K, N, d, d), Blocked(M, N, d)
    pa, pb, pc = rt.alloc(A.nbytes), rt.alloc(B.nbytes), rt.alloc(C.nbytes)
    rt.write(pa, to_blocked(a, A))
    rt.write(pb, to_blocked(b, B))
    pbias = None
    if bias is not None:
        raw = bias_bytes(bias, d)
        pbias = rt.alloc(raw.size)
        rt.write(pbias, raw)
    prog = lower_gemm(cfg, plan, GemmBuffers(pa, pb, pc, pbias), output)
    result = rt.run(prog, **run_args)
    return from_blocked(rt.read(pc, C.nbytes), C), prog, result, plan
