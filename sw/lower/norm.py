"""Lowering of a LayerNorm over an int8 matrix in main memory (GPT-2's pre-LayerNorms):

``y = i_layernorm(x * scale)`` row by row, for ``x`` a blocked ``rows x cols`` int8 matrix,
widened into the accumulator by a scaled load, and stored through the store unit's
i-LayerNorm with its table (gamma, beta and, with ``prescale``, each column block's
``(m, e)``: the rows are first brought to one scale, ``requantize(x, m, e, 32)``).

Tiles of whole rows fill half the accumulator each (the table sits at its top), so the
loads of one tile overlap the LayerNorm store of the other. A tile's row blocks are one
load where they continue one another (a tile of all the rows). Tokens: a tile's loads signal
EXECUTE, where a NOP relays to STORE; the store signals back, and a NOP waits for it
before the tile after next loads into the same half.
"""

from __future__ import annotations

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Opcode, Queue
from ...hw.output_path import OutputOp
from ..golden.dma import lane_bytes
from .gemm import LayerNormOutput, layernorm_rows
from .layout import Blocked
from .plan import LoweringError
from .schedule import Load, merge_loads

__all__ = ["lower_layernorm"]


def lower_layernorm(config: TesseraConfig, src: int, dst: int, rows: int, cols: int,
                    layernorm: LayerNormOutput, scale: int = 1,
                    finish: bool = True) -> list[Command]:
    """The command stream of ``dst = i_layernorm(src * scale)`` (see the module docstring);
    ``src`` and ``dst`` are blocked ``rows x cols`` int8 matrices."""
    c = config
    d = c.rows
    if c.rows != c.cols:
        raise LoweringError(f"the lowering needs a square array, not {c.rows} x {c.cols}")
    if cols > c.max_row_len:
        raise LoweringError(f"LayerNorm rows of {cols} elements exceed the output path's "
                            f"{c.max_row_len}")
    nb = -(-cols // d)
    table_rows = layernorm_rows(c, cols, layernorm.prescale)
    half = (c.acc_rows - table_rows) // 2
    mt = min(rows, half // nb)
    if mt < 1:
        raise LoweringError(f"a row of {cols} elements ({nb} accumulator rows) does not fit "
                            f"half the accumulator after its table ({half} rows)")
    table_at = c.acc_rows - table_rows
    shape = Blocked(rows, cols, d)
    lb = lane_bytes(c)
    prog = []
    tiles = range(0, rows, mt)
    for t, m0 in enumerate(tiles):
        n = min(mt, rows - m0)
        acc0 = (t % 2) * half
        if t >= 2:      # the store of tile t - 2 has freed this half
            prog.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_next=True,
                                signal_prev=True))
        loads = []
        if t == 0:
            loads.append(Load(dict(dram_addr=layernorm.table, stride=d * lb, rows=table_rows,
                                   row_bytes=d * lb, local_addr=table_at, to_acc=1,
                                   accumulate=0, scale=1, wide=1)))
        for j in range(nb):
            loads.append(Load(dict(dram_addr=src + shape.offset(m0, j), stride=d, rows=n,
                                   row_bytes=d, local_addr=acc0 + j * n, to_acc=1,
                                   accumulate=0, scale=scale, wide=0)))
        # A tile of all the rows has its blocks one after the other in main memory and in
        # the accumulator: one load (a decode step's row: one instead of 48).
        loads = merge_loads(loads)
        for i, ld in enumerate(loads):
            prog.append(Command(Opcode.LOAD, ld.cmd, wait_next=t >= 2 and i == 0,
                                signal_next=i == len(loads) - 1))
        prog.append(Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True,
                            signal_next=True))
        prog.append(Command(Opcode.STORE, {
            "desc": {"op": OutputOp.LAYERNORM, "length": cols, "rows": n,
                     "m": layernorm.m, "e": layernorm.e},
            "acc_addr": acc0, "to_spad": 0, "blocked": 1, "param_addr": table_at,
            "prescale": int(layernorm.prescale), "dram_addr": dst + shape.offset(m0, 0),
            "stride": shape.block_bytes}, wait_prev=True, signal_prev=t + 2 < len(tiles)))
    if finish:
        prog.append(Command(Opcode.FINISH, {}))
    return prog
