"""The tile planner of a matrix product: which tiles, in which order, with how many
scratchpad slots, by one cost model of the machine.

A plan (:func:`plan_gemm`) gives the output tile (``mt`` rows, ``nt`` column blocks; twice
that fits the accumulator, so stores of one tile overlap the computing of the next), the
reduction step (``kt`` blocks of K per load), the loop order (the operand that is reused
stays on chip: ``"mn"`` keeps an A row-tile across the N tiles, ``"nm"`` a B column-tile
across the M tiles) and how many scratchpad slots each operand has: one (loaded once), two
(double buffering) or three (loads two steps ahead, which memory-bound products such as
decode steps need to keep the bus streaming). :func:`estimate` is the cost model: compute,
main-memory traffic, the pipeline of loads and computes, the exposed first load and last
store. The planner scores every candidate with it and takes the cheapest.

:mod:`tessera.sw.lower.gemm` turns a plan into commands; :mod:`tessera.sw.lower.schedule`
orders them and gives them their dependency tokens.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

from ...hw.config import TesseraConfig

__all__ = ["LoweringError", "GemmShape", "GemmPlan", "plan_gemm", "estimate", "slot_bases",
           "LATENCY_CYCLES", "INIT_ROWS"]

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


def loads_upfront(resident: bool, m: int) -> bool:
    """A resident plan of one row loads every tile's bias and residual with its first step
    (the biases merge into one load): no small load falls between two weight loads."""
    return resident and m == 1


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
    #: Every tile's rows fit the accumulator at once: each tile gets rows of its own.
    resident: bool = False
    #: Digits per element of A (2: wide activations, two passes of the array) and of C
    #: (2: each tile stored twice, one digit each).
    a_planes: int = 1
    c_planes: int = 1
    est_cycles: int = 0
    est_read_bytes: int = 0
    est: dict = field(default_factory=dict, compare=False)

    @property
    def upfront(self) -> bool:
        """Every tile's bias and residual load with the first step (:func:`loads_upfront`)."""
        return loads_upfront(self.resident, self.shape.M)

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
                f"B {self.b_slots}{', C resident' if self.resident else ''}; model: "
                f"{self.est_cycles} cycles, utilization "
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


@functools.lru_cache(maxsize=4096)
def plan_gemm(config: TesseraConfig, shape: GemmShape, bias: bool = False,
              latency: int = LATENCY_CYCLES, *, full_rows: bool = False,
              reserve: int = 0, a_planes: int = 1, c_planes: int = 1) -> GemmPlan:
    """The cheapest plan for ``shape`` on ``config`` by the cost model (kept per
    argument: a model's layers ask for the same few products; the plan is frozen).

    ``full_rows``: every tile spans all of N (a LayerNorm over the output rows needs whole
    rows in the accumulator). ``reserve``: accumulator rows kept out of the tiles (at the
    top; a LayerNorm table). ``a_planes``, ``c_planes``: 2 for wide activations in A (two
    passes; an A slot holds both digits' rows) and in C (two stores per tile).

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
    if a_planes not in (1, 2) or c_planes not in (1, 2):
        raise LoweringError(f"an operand has 1 or 2 digit planes, not {a_planes}, {c_planes}")
    d = c.rows
    M = shape.M
    kb, nb = -(-shape.K // d), -(-shape.N // d)
    acc_half = (c.acc_rows - reserve) // 2
    # Rows fewer than the array's (decode steps) and the whole of C fits the accumulator:
    # each tile has rows of its own. (Taller products keep the two halves in turn: with
    # their tiles no longer held back by the stores, MiniLM's LayerNorm products ran
    # 2.4% and 1.0% slower.)
    resident = M < d and M * nb <= 2 * acc_half
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
                a_rows, b_rows = mt * kt * a_planes, kt * d * nt
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
                        plan = estimate(c, shape, mt, nt, kt, order, a_slots, b_slots,
                                        a_loads, b_loads, bias, latency, resident,
                                        a_planes, c_planes)
                        key = (plan.est_cycles, plan.est["commands"], a_slots + b_slots)
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


#: Cycles the execute unit spends per COMPUTE run beyond its tiles, and per weight tile
#: beyond its rows; per step (a group of loads) beyond its bytes: the token round trips,
#: the DMA's command handling. RUN_CYCLES and WEIGHT_TILE_CYCLES were fitted to the RTL's
#: cycles of 90 plans of six products (the benchmarks' among them): the plan the model
#: picks is within 0.1% of the best of them on each (``docs/architecture.md``).
RUN_CYCLES = 2
WEIGHT_TILE_CYCLES = 1
STEP_CYCLES = 30
LOAD_CYCLES = 30


def slot_bases(c: TesseraConfig, sizes: list[int]) -> tuple[list[int], bool]:
    """Scratchpad rows of the operand slots: each on banks of its own when they fit (the
    array reads an activation and a weight tile while the DMA fills the other slots, each
    bank serving one of them per cycle), else packed one after the other. Returns the
    bases and whether the slots have their own banks."""
    bank = c.spad_rows // c.spad_banks
    spans = [-(-rows // bank) for rows in sizes]
    if sum(spans) <= c.spad_banks:
        return [bank * b for b in itertools.accumulate([0] + spans[:-1])], True
    return list(itertools.accumulate([0] + sizes[:-1])), False


def estimate(c, shape, mt, nt, kt, order, a_slots, b_slots, a_loads, b_loads, bias, latency,
             resident=False, a_planes=1, c_planes=1):
    d = c.rows
    M = shape.M
    kb, nb = -(-shape.K // d), -(-shape.N // d)
    m_tiles, n_tiles, k_steps = -(-M // mt), -(-nb // nt), -(-kb // kt)
    bb = c.bus_bytes
    # Compute: one cycle per row streamed with one more to switch weight tiles, and at
    # least d per weight tile (the cycles it takes to stream into the array, hidden
    # behind d rows or more; a run streams its tiles back to back, so tiles of fewer rows
    # are bound by their weights alone); a few per run (one COMPUTE per column block and
    # K step).
    runs = m_tiles * n_tiles * k_steps * nt * a_planes
    compute = m_tiles * n_tiles * nt * kb * a_planes * max(mt + WEIGHT_TILE_CYCLES, d) + \
        runs * RUN_CYCLES
    # Main memory. A's column blocks are one contiguous range when a tile spans all of M,
    # B's when a step spans all of K (the emitter merges such loads).
    a_bytes = a_loads * mt * kt * d * a_planes
    b_bytes = b_loads * kt * d * nt * d
    a_cmds = a_loads * (1 if mt == M else kt) * a_planes
    b_cmds = b_loads * (1 if k_steps == 1 else nt)
    # A tile's bias goes in pieces of INIT_ROWS rows per column block (one load per tile
    # for one-row tiles, whose pieces the emitter merges). A resident plan of one row loads
    # every tile's bias with the first step, as one load.
    upfront = loads_upfront(resident, M)
    pieces = 1 if mt == 1 else nt * -(-mt // INIT_ROWS)
    bias_cmds = (1 if upfront else m_tiles * n_tiles * pieces) if bias else 0
    piece = nb if upfront else mt if mt == 1 else min(mt, INIT_ROWS)
    bias_cycles = bias_cmds * max(piece * 4 * d // bb, piece * latency // c.max_reads)
    # Plans that would run at the bus's edge are penalised: the DMA reaches about 85% of
    # the bus on realistic blocks; the two DMA readers overlap one command's latency with
    # the other's data, so a LOAD costs about LOAD_CYCLES of its own (measured on 1 KiB
    # loads at a latency of 100).
    load = (a_bytes + b_bytes) / (0.85 * bb) + (a_cmds + b_cmds) * LOAD_CYCLES + bias_cycles
    store_cmds = m_tiles * n_tiles * nt * c_planes
    store = M * nb * d * c_planes / bb + store_cmds * (latency + mt * d // bb)
    # Exposed: the first step's loads (its commands follow one another, two readers
    # overlapping their round trips) and the last tile's stores.
    first = (mt * kt * d * a_planes + kt * d * nt * d) / bb + latency + STEP_CYCLES + \
        (bias_cycles if upfront else 0)
    last = latency + nt * c_planes * (mt * d // bb + 20)
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
    bias_gaps = bias_cmds * latency
    # Each LOAD also costs the DMA about LOAD_CYCLES of command handling: many small loads
    # (a K step of one block across many column blocks) are bound by it, not by bytes.
    step_bus = (a_bytes + b_bytes) / steps / bb + (bias_cycles + bias_gaps) / steps \
        + (a_cmds + b_cmds) / steps * LOAD_CYCLES
    step_load = step_bus + latency + STEP_CYCLES
    pipeline = steps * max(step_compute, step_bus, (step_compute + step_load) / slots) \
        if slots else 0
    bus = (a_bytes + b_bytes + M * nb * d * c_planes) / bb + bias_cycles
    # Slots that do not each have a bank of their own share banks with the loads filling
    # the others: every row the DMA writes there takes a cycle from the array's readers.
    _, own_banks = slot_bases(c, [mt * kt * a_planes] * a_slots + [kt * d * nt] * b_slots)
    if not own_banks:
        compute += (a_bytes + b_bytes) // c.spad_row_bytes
    cycles = int(max(compute, pipeline, bus, store) + first + last)
    commands = a_cmds + b_cmds + bias_cmds + store_cmds + runs
    return GemmPlan(shape, d, mt, nt, kt, order, a_slots, b_slots, resident=resident,
                    a_planes=a_planes, c_planes=c_planes, est_cycles=cycles,
                    est_read_bytes=a_bytes + b_bytes,
                    est={"compute": compute, "load": int(load), "store": int(store),
                         "pipeline": int(pipeline), "commands": commands})
