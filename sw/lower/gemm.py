"""Lowering of matrix products to command streams:
``C = act(requantize(A @ B + bias))`` for any ``M x K`` A and ``K x N`` B (int8), an
optional int32 bias per column, and an optional ReLU or i-GELU.

The plan (:func:`plan_gemm`) picks, from the configuration, the output tile (``mt`` rows,
``nt`` column blocks; twice that fits the accumulator, so stores of one tile overlap the
computing of the next), the reduction step (``kt`` blocks of K per load), the loop order
(the operand that is reused stays on chip: ``"mn"`` keeps an A row-tile across the N
tiles, ``"nm"`` a B column-tile across the M tiles) and how many scratchpad slots each
operand has: one (loaded once), two (double buffering) or three (loads two steps ahead,
which memory-bound products such as decode steps need to keep the bus streaming). It
scores every candidate with a cost model of the machine (compute, main-memory traffic, the
pipeline of loads and computes, the exposed first load and last store) and takes the
cheapest.

The emitter (:func:`lower_gemm`) writes the three command streams with dependency tokens
(VTA-style). Each column block of a step is one COMPUTE running over the step's K tiles
(``count``, ``hw/isa.py``), so commands cost a few bytes of fetch per step, not 64 bytes
per weight tile. A step's loads signal EXECUTE once, and the step's first command waits for
them; a load into a slot still in use waits for the execute command that last reads it;
a tile's last COMPUTE signals STORE; a STORE signals EXECUTE when its accumulator half is
free again. A bias is loaded straight into the accumulator (a wide load replicated over
the tile's rows), in pieces of INIT_ROWS rows that join the load groups of the previous
tile's later steps, after the step's operand loads (the in-order load queue would
otherwise hold them behind it); they wait for a NOP in the execute queue, a quarter into
the previous tile, that relays the STORE's token. Loads that continue one another (A's
blocks when a tile spans all of M, B's when a step spans all of K, one-row tiles' biases)
are merged into one, and loads are paced over the execute work (:func:`_interleave`).

Matrices are in the blocked layout of :mod:`tessera.sw.lower.layout`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.dma import ROWS_BITS
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputOp
from ...hw.store_unit import PARAM_ROWS
from ..golden.dma import lane_bytes
from ..golden.gelu import GeluConstants, gelu_constants
from ..golden.layernorm import layernorm_table
from ..golden.matmul import matmul
from ..golden.output import output_op
from ..golden.requant import dyadic_multiplier
from .layout import Blocked, bias_bytes, from_blocked, to_blocked

__all__ = ["GemmShape", "GemmPlan", "OutputSpec", "plan_gemm", "lower_gemm", "GemmBuffers",
           "LoweringError", "LATENCY_CYCLES", "run_gemm", "reference_gemm", "LayerNormOutput",
           "layernorm_rows", "layernorm_table"]

#: The memory latency the cost model assumes (cycles), as in the benchmarks.
LATENCY_CYCLES = 100
#: Rows per load of a tile's bias or residual (they go out a piece per step).
INIT_ROWS = 32


class LoweringError(ValueError):
    """A product the configuration cannot run, with the reason."""


@dataclass(frozen=True)
class GemmShape:
    M: int
    K: int
    N: int

    def __post_init__(self):
        for name in ("M", "K", "N"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise LoweringError(f"{name} must be a positive integer, not {v!r}")

    @property
    def macs(self) -> int:
        return self.M * self.K * self.N


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

    def descriptor(self, length: int, rows: int) -> dict:
        desc = {"op": self.op, "length": length, "rows": rows, "m": self.m, "e": self.e}
        if self.op == OutputOp.GELU:
            if self.gelu is None:
                raise LoweringError("a GELU output needs its constants (gelu=...)")
            desc["consts"] = {"gelu": dict(self.gelu)}
        elif self.op not in (OutputOp.NONE, OutputOp.REQUANT, OutputOp.RELU):
            raise LoweringError(f"a matrix product's output cannot be {self.op.name}")
        return desc


@dataclass(frozen=True)
class GemmPlan:
    """Tile sizes, loop order and buffers of one product, with the cost model's figures."""

    shape: GemmShape
    dim: int
    mt: int                 # rows of A (and C) per tile: the rows of each COMPUTE
    nt: int                 # column blocks of B (and C) per tile
    kt: int                 # blocks of K per step (one load of A and of B)
    order: str              # "mn": M tiles outer (A stays); "nm": N tiles outer (B stays)
    a_slots: int
    b_slots: int
    est_cycles: int = 0
    est_read_bytes: int = 0
    est: dict = field(default_factory=dict, compare=False)

    @property
    def m_tiles(self) -> int:
        return -(-self.shape.M // self.mt)

    @property
    def n_tiles(self) -> int:
        return -(-self.n_blocks // self.nt)

    @property
    def k_steps(self) -> int:
        return -(-self.k_blocks // self.kt)

    @property
    def k_blocks(self) -> int:
        return -(-self.shape.K // self.dim)

    @property
    def n_blocks(self) -> int:
        return -(-self.shape.N // self.dim)

    @property
    def est_utilization(self) -> float:
        return self.shape.macs / (self.est_cycles * self.dim * self.dim) if self.est_cycles \
            else 0.0

    def describe(self) -> str:
        d = self.dim
        return (f"tiles {self.mt} x {self.nt * d} (K step {self.kt * d}), order "
                f"{'M outer' if self.order == 'mn' else 'N outer'}, slots A {self.a_slots} "
                f"B {self.b_slots}; model: {self.est_cycles} cycles, utilization "
                f"{self.est_utilization:.3f}, {self.est_read_bytes} bytes read")


def _loads(m_tiles, n_tiles, k_steps, order):
    """How many times A tiles and B tiles are loaded."""
    if k_steps == 1:
        a = m_tiles if order == "mn" else m_tiles * n_tiles
        b = n_tiles if order == "nm" else m_tiles * n_tiles
        if order == "mn" and n_tiles == 1:
            b = 1
        if order == "nm" and m_tiles == 1:
            a = 1
    else:
        a = b = m_tiles * n_tiles * k_steps
    return a, b


def _candidates(limit: int, dim: int, whole: int):
    values = {whole} if whole <= limit else set()
    v = dim
    while v <= min(limit, whole):
        values.add(v)
        v *= 2
    for mult in (3, 6, 12, 24, 48):
        if mult * dim <= min(limit, whole):
            values.add(mult * dim)
    return sorted(values)


def plan_gemm(config: TesseraConfig, shape: GemmShape, bias: bool = False,
              latency: int = LATENCY_CYCLES, *, full_rows: bool = False,
              reserve: int = 0) -> GemmPlan:
    """The cheapest plan for ``shape`` on ``config`` by the cost model.

    ``full_rows``: every tile spans all of N (a LayerNorm over the output rows needs whole
    rows in the accumulator). ``reserve``: accumulator rows kept out of the tiles (at the
    top; a LayerNorm table).

    Raises
    ------
    LoweringError
        If the configuration cannot run it (no weight-stationary dataflow, a non-square
        array, int8 operands only, or memories too small for the smallest tile).
    """
    c = config
    if not c.has_ws:
        raise LoweringError("the lowering uses the weight-stationary dataflow; this "
                            f"configuration's dataflow is {c.dataflow!r}")
    if c.rows != c.cols:
        raise LoweringError(f"the lowering needs a square array, not {c.rows} x {c.cols}")
    if c.input_bits != 8 or c.weight_bits != 8:
        raise LoweringError("the lowering moves int8 operands; input_bits and weight_bits "
                            "must be 8")
    if bias and c.acc_bits % 8:
        raise LoweringError(f"a bias is loaded as whole {c.acc_bits}-bit lanes, which needs "
                            "acc_bits to be a multiple of 8")
    d = c.rows
    M = shape.M
    kb, nb = -(-shape.K // d), -(-shape.N // d)
    acc_half = (c.acc_rows - reserve) // 2
    best = None
    mts = _candidates(min(acc_half, 1 << 15), d, M)
    if full_rows and acc_half // nb >= 1:
        mts = sorted(set(mts) | {min(M, acc_half // nb)})   # whole rows: as many as fit
    # Each also balanced: the same number of tiles, all of (nearly) the same height, so
    # that no short last tile leaves the weight loads exposed.
    mts = sorted(set(mts) | {-(-M // -(-M // mt)) for mt in mts})
    for mt in mts:
        for nt in (range(nb, nb + 1) if full_rows else range(1, nb + 1)):
            if mt * nt > acc_half:
                break
            for kt in sorted({kb} | {k for k in (1, 2, 4, 8, 16, 32, 64) if k < kb}):
                a_rows, b_rows = mt * kt, kt * d * nt
                if kt * d > 65535 or a_rows > 65535:
                    continue
                m_tiles, n_tiles, k_steps = -(-M // mt), -(-nb // nt), -(-kb // kt)
                for order in ("mn", "nm"):
                    a_loads, b_loads = _loads(m_tiles, n_tiles, k_steps, order)
                    # An operand loaded once has one slot; one loaded again and again two
                    # (double buffering) or three, so that loads run two steps ahead.
                    for a_slots, b_slots in itertools.product(
                            (1,) if a_loads == 1 else (2, 3),
                            (1,) if b_loads == 1 else (2, 3)):
                        if a_slots * a_rows + b_slots * b_rows > c.spad_rows:
                            continue
                        plan = _score(c, shape, mt, nt, kt, order, a_slots, b_slots,
                                      a_loads, b_loads, bias, latency)
                        key = (plan.est["key"], plan.est["commands"], a_slots + b_slots)
                        if best is None or key < best[0]:
                            best = (key, plan)
    if best is None and full_rows:
        raise LoweringError(f"a whole output row of {shape.N} columns ({nb} accumulator "
                            f"rows) does not fit half the accumulator ({acc_half} rows "
                            f"after {reserve} reserved)")
    if best is None:
        raise LoweringError(f"no tile of a {M} x {shape.K} x {shape.N} product fits the "
                            f"scratchpad ({c.spad_rows} rows) and accumulator "
                            f"({c.acc_rows} rows)")
    return best[1]


#: Cycles the execute unit spends per COMPUTE run beyond its tiles, and per step (a group
#: of loads) beyond its bytes: the token round trips, the DMA's command handling.
RUN_CYCLES = 4
STEP_CYCLES = 30
LOAD_CYCLES = 30


def _slot_bases(c: TesseraConfig, sizes: list[int]) -> tuple[list[int], bool]:
    """Scratchpad rows of the operand slots: each on banks of its own when they fit (the
    array reads an activation and a weight tile while the DMA fills the other slots, each
    bank serving one of them per cycle), else packed one after the other. Returns the
    bases and whether the slots have their own banks."""
    bank = c.spad_rows // c.spad_banks
    spans = [-(-rows // bank) for rows in sizes]
    if sum(spans) <= c.spad_banks:
        return [bank * b for b in itertools.accumulate([0] + spans[:-1])], True
    return list(itertools.accumulate([0] + sizes[:-1])), False


def _score(c, shape, mt, nt, kt, order, a_slots, b_slots, a_loads, b_loads, bias, latency):
    d = c.rows
    M = shape.M
    kb, nb = -(-shape.K // d), -(-shape.N // d)
    m_tiles, n_tiles, k_steps = -(-M // mt), -(-nb // nt), -(-kb // kt)
    bb = c.bus_bytes
    # Compute: one cycle per row streamed, and at least d per weight tile (the cycles it
    # takes to stream into the array, hidden behind d rows or more); a few per run (one
    # COMPUTE per column block and K step).
    runs = m_tiles * n_tiles * k_steps * nt
    compute = m_tiles * n_tiles * nt * kb * max(mt, d) + runs * RUN_CYCLES
    # Main memory. A's column blocks are one contiguous range when a tile spans all of M,
    # B's when a step spans all of K (the emitter merges such loads).
    a_bytes = a_loads * mt * kt * d
    b_bytes = b_loads * kt * d * nt * d
    a_cmds = a_loads * (1 if mt == M else kt)
    b_cmds = b_loads * (1 if k_steps == 1 else nt)
    bias_cmds = m_tiles * n_tiles * nt if bias else 0
    bias_cycles = bias_cmds * max(mt * 4 * d // bb, mt * latency // max(c.max_reads, 1))
    # Plans that would run at the bus's edge are penalised: the DMA reaches about 85% of
    # the bus on realistic blocks; the two DMA readers overlap one command's latency with
    # the other's data, so a LOAD costs about LOAD_CYCLES of its own (measured on 1 KiB
    # loads at a latency of 100).
    load = (a_bytes + b_bytes) / (0.85 * bb) + (a_cmds + b_cmds) * LOAD_CYCLES + bias_cycles
    store_cmds = m_tiles * n_tiles * nt
    store = M * nb * d / bb + store_cmds * (latency + mt * d // bb)
    # Exposed: the first step's loads (its commands follow one another, two readers
    # overlapping their round trips) and the last tile's stores.
    first = (mt * kt * d + kt * d * nt * d) / bb + latency + STEP_CYCLES
    last = latency + nt * (mt * d // bb + 20)
    # The pipeline of steps (measured to within a few percent on decode-sized products):
    # a step's computes wait for its loads, and the loads into a slot wait for the computes
    # of the step that last read it, ``slots`` steps back; so ``slots`` steps take at least
    # one step's compute plus one step's loads with their round trip. The bus streams the
    # loads back to back.
    steps = m_tiles * n_tiles * k_steps
    slots = min([s for s, n in ((a_slots, a_loads), (b_slots, b_loads)) if n > 1] or [0])
    step_compute = compute / steps
    # A bias load between the operands' loads leaves the bus idle for about a round trip
    # (the DMA holds two loads at a time); one-row tiles' biases are one load per tile.
    bias_gaps = m_tiles * n_tiles * (1 if mt == 1 else nt) * latency if bias else 0
    # Each LOAD also costs the DMA about LOAD_CYCLES of command handling: many small loads
    # (a K step of one block across many column blocks) are bound by it, not by bytes.
    step_bus = (a_bytes + b_bytes) / steps / bb + (bias_cycles + bias_gaps) / steps \
        + (a_cmds + b_cmds) / steps * LOAD_CYCLES
    step_load = step_bus + latency + STEP_CYCLES
    pipeline = steps * max(step_compute, step_bus, (step_compute + step_load) / slots) \
        if slots else 0
    bus = (a_bytes + b_bytes + M * nb * d) / bb + bias_cycles
    # Slots that do not each have a bank of their own share banks with the loads filling
    # the others: every row the DMA writes there takes a cycle from the array's readers.
    _, own_banks = _slot_bases(c, [mt * kt] * a_slots + [kt * d * nt] * b_slots)
    if not own_banks:
        compute += (a_bytes + b_bytes) // c.spad_row_bytes
    # The estimate. A product whose operands and result, moved once, take most of its
    # compute time on the bus (a decode step's) is planned by it; one clearly bound by the
    # compute as before runs (a per-tile cost and margins that keep loads and stores, which
    # share the bus and wait on tokens, well below the compute: the plans it chose were
    # measured at 0.97-0.98 of the array's peak; re-tuning it for runs is left open).
    core = max(compute, pipeline, bus, store)
    cycles = int(core + first + last)
    key = cycles
    once = (M * kb * d + kb * d * nb * d + M * nb * d) / bb
    if 1.25 * once < compute:
        # A weight tile's preload hides behind a COMPUTE's rows only when its slot and the
        # activations' sit on different banks; else they share a port: d cycles more.
        heights = [min(mt, M - m0) for m0 in range(0, M, mt)]
        old_compute = n_tiles * kb * nt * sum(
            (max(h, d) if own_banks else h + d) + 2 for h in heights)
        old_load = load + (a_loads * kt - a_cmds + b_loads * nt - b_cmds) * LOAD_CYCLES
        old_first = (mt * kt * d + kt * d * nt * d) / bb + (kt + nt) * latency
        old_last = nt * (latency + mt * d // bb + 20)
        key = int(max(old_compute, 1.25 * old_load, 1.25 * store) + old_first + old_last)
    commands = a_cmds + b_cmds + bias_cmds + store_cmds + runs
    return GemmPlan(shape, d, mt, nt, kt, order, a_slots, b_slots, cycles,
                    a_bytes + b_bytes, {"compute": compute, "load": int(load),
                                        "store": int(store), "pipeline": int(pipeline),
                                        "commands": commands, "key": key})


@dataclass(frozen=True)
class GemmBuffers:
    """Where the operands are in main memory (byte addresses; blocked layouts)."""

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


@dataclass(frozen=True)
class LayerNormOutput:
    """The output rows go through i-LayerNorm: ``table`` is the main-memory address of its
    int32 table (``PARAM_ROWS`` rows of ``D`` lanes per column block: gamma, beta's low
    and high words), ``m``, ``e`` its output requantization."""

    table: int
    m: int
    e: int
    prescale: bool = False   # the table carries a per-block (m, e) for the LayerNorm input


@dataclass
class _Load:
    cmd: dict
    need: int        # the execute command (index) that must have finished first; -1: none
    signal: bool = False


def _merge_loads(loads: list[_Load]) -> list[_Load]:
    """``loads`` with each run of loads that continue one another (the same kind of load;
    the next block's bytes follow the previous block's in main memory and its rows follow in
    the scratchpad or accumulator, as A's column blocks do when a tile spans all of M, B's
    when a step spans all of K, and one-row tiles' biases) made one LOAD: the same bytes to
    the same rows, one command and one round trip."""
    def contiguous(cmd):    # a block's rows follow one another in main memory
        return cmd["rows"] == 1 or cmd["stride"] == cmd["row_bytes"]

    same = ("to_acc", "accumulate", "scale", "wide", "row_bytes")
    out: list[_Load] = []
    for ld in loads:
        prev = out[-1].cmd if out else None
        cmd = ld.cmd
        if prev is not None and out[-1].need == ld.need and not out[-1].signal and \
                all(prev.get(k, 0) == cmd.get(k, 0) for k in same) and \
                contiguous(prev) and contiguous(cmd) and \
                cmd["dram_addr"] == prev["dram_addr"] + prev["rows"] * prev["row_bytes"] and \
                cmd["local_addr"] == prev["local_addr"] + prev["rows"] and \
                prev["rows"] + cmd["rows"] < 1 << ROWS_BITS:
            out[-1] = _Load(dict(prev, rows=prev["rows"] + cmd["rows"],
                                 stride=prev["row_bytes"]), ld.need, ld.signal)
            continue
        out.append(_Load(dict(cmd), ld.need, ld.signal))
    return out


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
    c = config
    d = plan.dim
    M, K, N = plan.shape.M, plan.shape.K, plan.shape.N
    kb, nb = plan.k_blocks, plan.n_blocks
    outputs = list(output) if isinstance(output, list | tuple) else [output] * nb
    if len(outputs) != nb:
        raise LoweringError(f"{len(outputs)} output specs for {nb} column blocks")
    table_rows = layernorm_rows(c, N, layernorm.prescale) if layernorm else 0
    if layernorm and plan.nt != nb:
        raise LoweringError("a LayerNorm output needs tiles of whole rows (plan_gemm with "
                            "full_rows=True)")
    scales = buffers.residual_scale
    scales = list(scales) if isinstance(scales, list | tuple) else [scales] * nb
    A = Blocked(M, K, d)
    B = Blocked(K, N, d, row_multiple=d)
    C = Blocked(M, N, d)
    if buffers.c_blocks is not None:
        if len(buffers.c_blocks) != nb:
            raise LoweringError(f"{len(buffers.c_blocks)} output block addresses for {nb} "
                                "column blocks")
        if layernorm:
            raise LoweringError("a LayerNorm output is stored in C's own blocked layout")

    def c_at(row: int, block: int) -> int:
        if buffers.c_blocks is None:
            return buffers.c + C.offset(row, block)
        return buffers.c_blocks[block] + row * d

    has_bias = buffers.bias is not None
    has_res = buffers.residual is not None
    has_init = has_bias or has_res         # the accumulator is loaded before computing
    acc_half = (c.acc_rows - table_rows) // 2
    table_at = c.acc_rows - table_rows
    a_rows, b_rows = plan.mt * plan.kt, plan.kt * d * plan.nt

    bases, _ = _slot_bases(c, [a_rows] * plan.a_slots + [b_rows] * plan.b_slots)
    a_base, b_base = bases[:plan.a_slots], bases[plan.a_slots:]

    loads: list[_Load] = []
    execs: list[Command] = []
    exec_wait_prev: set[int] = set()
    exec_wait_next: set[int] = set()
    exec_signal_next: set[int] = set()
    stores: list[Command] = []
    store_waits: set[int] = set()
    store_signals: set[int] = set()

    a_key = [None] * plan.a_slots
    b_key = [None] * plan.b_slots
    a_last = [-1] * plan.a_slots
    b_last = [-1] * plan.b_slots
    a_next = b_next = 0
    relay_of_tile: dict[int, int] = {}

    if plan.order == "mn":
        tiles = [(mi, ni) for mi in range(plan.m_tiles) for ni in range(plan.n_tiles)]
    else:
        tiles = [(mi, ni) for ni in range(plan.n_tiles) for mi in range(plan.m_tiles)]
    n_tiles = len(tiles)

    def init_loads(t: int) -> list[_Load]:
        """Tile ``t``'s bias and residual, into its accumulator rows, in pieces of at most
        INIT_ROWS rows (so that they spread thinly over the steps); they wait for the relay
        of the store that frees those rows."""
        mi, ni = tiles[t]
        m0, n0b = mi * plan.mt, ni * plan.nt
        mt, ntb = min(plan.mt, M - m0), min(plan.nt, nb - n0b)
        acc0 = (t % 2) * acc_half
        need = relay_of_tile.get(t, -1)
        pieces = [(r0, min(INIT_ROWS, mt - r0)) for r0 in range(0, mt, INIT_ROWS)]
        out = []
        if has_bias:
            lb = lane_bytes(c)
            for j in range(ntb):
                for r0, n in pieces:
                    out.append(_Load(dict(
                        dram_addr=buffers.bias + (n0b + j) * d * lb, stride=0, rows=n,
                        row_bytes=d * lb, local_addr=acc0 + j * mt + r0, to_acc=1,
                        accumulate=0, scale=1, wide=1), need))
        if has_res:      # the residual has the output's shape and layout
            for j in range(ntb):
                for r0, n in pieces:
                    out.append(_Load(dict(
                        dram_addr=buffers.residual + C.offset(m0 + r0, n0b + j), stride=d,
                        rows=n, row_bytes=d, local_addr=acc0 + j * mt + r0, to_acc=1,
                        accumulate=int(has_bias), scale=scales[n0b + j], wide=0), need))
        return out

    init_made: set[int] = set()       # tiles whose bias and residual loads are placed
    pending_init: list[_Load] = []
    for t, (mi, ni) in enumerate(tiles):
        m0 = mi * plan.mt
        mt = min(plan.mt, M - m0)
        n0b = ni * plan.nt
        ntb = min(plan.nt, nb - n0b)
        acc0 = (t % 2) * acc_half
        # The relay that lets the next tile's bias into its rows goes once a quarter of the
        # tile's K tiles are computed (the previous tile's store has had time to finish;
        # it splits the run it falls in).
        relay_due = has_init and t + 1 < n_tiles and t + 1 >= 2
        quarter = -(-kb * ntb // 4)
        computed = 0
        for ks in range(plan.k_steps):
            k0b = ks * plan.kt
            ktb = min(plan.kt, kb - k0b)
            step_loads: list[_Load] = []
            if t == 0 and ks == 0 and layernorm:
                lb = lane_bytes(c)
                step_loads.append(_Load(dict(
                    dram_addr=layernorm.table, stride=d * lb, rows=table_rows,
                    row_bytes=d * lb, local_addr=table_at, to_acc=1, accumulate=0, scale=1,
                    wide=1), -1))
            # The tile's bias and residual (what is left of them: most go out with the
            # previous tile's later steps), and a share of the next tile's; after the
            # operands, since they wait for the relay of the store that frees their
            # accumulator rows and the loads queue in order.
            init: list[_Load] = []
            if ks == 0 and has_init:
                if t not in init_made:
                    pending_init = init_loads(t)
                    init_made.add(t)
                init, pending_init = pending_init, []
            elif has_init and t + 1 < n_tiles and (t + 1 < 2 or t + 1 in relay_of_tile):
                if t + 1 not in init_made:
                    pending_init = init_loads(t + 1)
                    init_made.add(t + 1)
                share = -(-len(pending_init) // (plan.k_steps - ks))
                init, pending_init = pending_init[:share], pending_init[share:]
            # A (mi, ks).
            a_slot, fresh, a_next = _take_slot(a_key, (mi, ks), a_next)
            if fresh:
                for j in range(ktb):
                    step_loads.append(_Load(dict(
                        dram_addr=buffers.a + A.offset(m0, k0b + j), stride=d, rows=mt,
                        row_bytes=d, local_addr=a_base[a_slot] + j * mt, to_acc=0,
                        accumulate=0, scale=1, wide=0), a_last[a_slot]))
            # B (ks, ni).
            b_slot, fresh, b_next = _take_slot(b_key, (ks, ni), b_next)
            if fresh:
                for j in range(ntb):
                    step_loads.append(_Load(dict(
                        dram_addr=buffers.b + B.offset(k0b * d, n0b + j), stride=d,
                        rows=ktb * d, row_bytes=d, local_addr=b_base[b_slot] + j * plan.kt * d,
                        to_acc=0, accumulate=0, scale=1, wide=0), b_last[b_slot]))
            step_loads += init
            if step_loads:
                step_loads = _merge_loads(step_loads)
                step_loads[-1].signal = True
                loads.extend(step_loads)
            first_exec = len(execs)
            if step_loads:
                exec_wait_prev.add(first_exec)
            if ks == 0 and t >= 2 and not has_init:
                exec_wait_next.add(first_exec)   # the store freed this accumulator half
            # Computes: per column block, one run over the step's K tiles (their weight
            # tiles are consecutive in the B slot; A's blocks are mt rows apart).
            for n in range(ntb):
                j = 0
                while j < ktb:
                    count = ktb - j
                    if relay_due and t + 1 not in relay_of_tile:
                        count = max(1, min(count, quarter - computed))
                    execs.append(Command(Opcode.COMPUTE, {
                        "a_addr": a_base[a_slot] + j * mt,
                        "b_addr": b_base[b_slot] + n * plan.kt * d + j * d, "rows": mt,
                        "acc_addr": acc0 + n * mt,
                        "accumulate": int(has_init or k0b + j > 0),
                        "count": count, "a_stride": mt}))
                    j += count
                    computed += count
                    # A quarter into the tile: the relay for the next tile's bias.
                    if relay_due and computed >= quarter and t + 1 not in relay_of_tile:
                        relay_of_tile[t + 1] = len(execs)
                        execs.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}))
                        exec_wait_next.add(len(execs) - 1)
            last_exec = len(execs) - 1
            a_last[a_slot] = last_exec
            b_last[b_slot] = last_exec
        exec_signal_next.add(len(execs) - 1 if execs[-1].opcode == Opcode.COMPUTE
                             else len(execs) - 2)
        # Store of the tile.
        first_store = len(stores)
        if layernorm:
            # Whole rows: one store through i-LayerNorm, in the blocked chunk order.
            stores.append(Command(Opcode.STORE, {
                "desc": {"op": OutputOp.LAYERNORM, "length": N, "rows": mt,
                         "m": layernorm.m, "e": layernorm.e},
                "acc_addr": acc0, "to_spad": 0, "blocked": 1, "param_addr": table_at,
                "prescale": int(layernorm.prescale),
                "dram_addr": buffers.c + C.offset(m0, 0), "stride": C.block_bytes}))
        for n in range(ntb if not layernorm else 0):
            stores.append(Command(Opcode.STORE, {
                "desc": outputs[n0b + n].descriptor(d, mt), "acc_addr": acc0 + n * mt,
                "to_spad": 0, "spad_addr": 0, "dram_addr": c_at(m0, n0b + n),
                "stride": d}))
        store_waits.add(first_store)
        if t + 2 < n_tiles:
            store_signals.add(len(stores) - 1)

    # Loads: wait for the latest execute command they need, in order (a wait covers every
    # later load too); each distinct awaited command signals once.
    exec_signal_prev: set[int] = set()
    waited = -1
    load_cmds, load_after = [], []
    for ld in loads:
        wait = ld.need > waited
        if wait:
            waited = ld.need
            exec_signal_prev.add(ld.need)
        load_cmds.append(Command(Opcode.LOAD, ld.cmd, wait_next=wait, signal_next=ld.signal))
        load_after.append(waited)

    def flags(i):
        return dict(wait_prev=i in exec_wait_prev, wait_next=i in exec_wait_next,
                    signal_prev=i in exec_signal_prev, signal_next=i in exec_signal_next)

    exec_cmds = [Command(cmd.opcode, cmd.args, **flags(i)) for i, cmd in enumerate(execs)]
    store_cmds = [Command(cmd.opcode, cmd.args, wait_prev=i in store_waits,
                          signal_prev=i in store_signals) for i, cmd in enumerate(stores)]
    return _interleave(load_cmds, load_after, exec_cmds, store_cmds, finish,
                       max(plan.a_slots, plan.b_slots, 2) - 1)


#: The next steps' loads are spread over this fraction of the execute work before they
#: are needed, so the last of them still has time to arrive.
LOAD_PACING = 0.75


def _interleave(loads, load_after, execs, stores, finish, ahead=1):
    """One program from the three streams. Each queue sees its commands in order; the
    order across queues is a topological order of the tokens (every command comes after
    the commands whose tokens it waits for), so the dispatcher, blocked on a full queue,
    never waits for a command behind it: a legal stream cannot deadlock. Within that, loads
    run up to ``ahead`` steps ahead of the computes that need them (the slots of an operand
    less one), and a tile's stores follow its last compute.

    The loads of a step yet to come are paced evenly over the execute work (weight tiles
    times rows) from when they may go to when they are needed. The dispatcher issues in
    program order, so a burst of loads would fill the load queue and block it while the
    execute queue runs dry (a step of short computes has dozens of loads); spread out, each
    load finds room and the execute queue stays fed."""
    consumers = [i for i, cmd in enumerate(execs) if cmd.wait_prev]
    sizes, n = [], 0
    for ld in loads:
        n += 1
        if ld.signal_next:
            sizes.append(n)
            n = 0
    work = [0]
    for cmd in execs:
        w = 0
        if cmd.opcode == Opcode.COMPUTE:
            w = max(1, cmd.args.get("count", 0)) * max(cmd.args["rows"], 16)
        work.append(work[-1] + w)
    out = []
    li = si = 0
    groups_out = 0          # load groups dispatched (each ends with a signalling load)
    groups_needed = 0
    in_group = 0            # loads of the group being dispatched that are out
    for ei, cmd in enumerate(execs):
        if cmd.wait_prev:
            groups_needed += 1
        while li < len(loads) and load_after[li] < ei and \
                groups_out < groups_needed + ahead:
            g = groups_out
            if g >= groups_needed and g < len(sizes):      # not needed yet: paced
                start = consumers[g - ahead] if g >= ahead else 0
                end = consumers[g] if g < len(consumers) else len(execs)
                span = LOAD_PACING * (work[end] - work[start])
                done = work[ei + 1] - work[start]
                quota = sizes[g] if span <= 0 else -(-sizes[g] * min(done, span) // span)
                if in_group >= max(quota, 1):
                    break
            out.append(loads[li])
            in_group += 1
            if loads[li].signal_next:
                groups_out += 1
                in_group = 0
            li += 1
        if groups_out < groups_needed:
            raise AssertionError("a compute would precede the loads it waits for")
        out.append(cmd)
        if cmd.signal_next:
            while si < len(stores):
                out.append(stores[si])
                si += 1
                if si < len(stores) and stores[si].wait_prev:
                    break
    out.extend(loads[li:])
    out.extend(stores[si:])
    if finish:
        out.append(Command(Opcode.FINISH, {}))
    return out


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
