"""Golden model of the DMA engine: what a 2-D block transfer does to the memories.

Main memory is a flat ``uint8`` array indexed from ``base``; local memories are int64
arrays of rows (scratchpad: ``spad_row_bytes`` signed bytes; accumulator: ``cols`` lanes
of ``acc_bits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.requant import DIGIT_SHIFT
from .matmul import wrap

__all__ = ["DmaCommand", "ERRORS", "check_command", "lane_bytes", "block_offsets", "load", "store"]

#: Completion codes, as the hardware's ``DmaError`` numbers them.
ERRORS = {"NONE": 0, "SLVERR": 1, "DECERR": 2, "WINDOW": 3, "LOCAL": 4, "SHAPE": 5}


@dataclass(frozen=True)
class DmaCommand:
    dram_addr: int
    stride: int
    rows: int
    row_bytes: int
    local_addr: int = 0
    to_acc: bool = False
    accumulate: bool = False
    scale: int = 1
    wide: bool = False
    shift: bool = False

    def as_payload(self) -> dict:
        return {"dram_addr": self.dram_addr, "stride": self.stride, "rows": self.rows,
                "row_bytes": self.row_bytes, "local_addr": self.local_addr,
                "to_acc": int(self.to_acc), "accumulate": int(self.accumulate),
                "scale": self.scale, "wide": int(self.wide), "shift": int(self.shift)}


def check_command(cmd: DmaCommand, config: TesseraConfig, window_base: int, window_size: int,
                  load: bool) -> str:
    """The error the engine reports before any bus traffic, or ``"NONE"``."""
    if load and cmd.to_acc and cmd.wide:
        width, unit = config.acc_row_bytes, lane_bytes(config)
    elif load and cmd.to_acc:
        width, unit = config.cols, 1
    else:
        width, unit = config.spad_row_bytes, 1
    if cmd.rows == 0 or cmd.row_bytes == 0 or cmd.row_bytes > width or cmd.row_bytes % unit \
            or (cmd.wide and not (load and cmd.to_acc and config.acc_bits % 8 == 0)) \
            or (cmd.shift and not (load and cmd.to_acc)):
        return "SHAPE"
    if not in_window(cmd.dram_addr, extent(cmd), window_base, window_size):
        return "WINDOW"
    if load and cmd.local_addr + cmd.rows > (config.acc_rows if cmd.to_acc else config.spad_rows):
        return "LOCAL"
    return "NONE"


def extent(cmd: DmaCommand) -> int:
    """Bytes from the block's first byte in main memory to the byte after its last."""
    return (cmd.rows - 1) * cmd.stride + cmd.row_bytes


def in_window(addr: int, nbytes: int, window_base: int, window_size: int) -> bool:
    """Whether ``nbytes`` from ``addr`` lie inside the window."""
    return window_base <= addr and addr + nbytes <= window_base + window_size


def lane_bytes(config: TesseraConfig) -> int:
    """Bytes of one accumulator lane in main memory, for wide loads (little-endian)."""
    return config.acc_bits // 8


def block_offsets(cmd: DmaCommand, base: int = 0) -> np.ndarray:
    """(rows, row_bytes) byte indices of the block in a main-memory array starting at
    ``base``."""
    starts = cmd.dram_addr - base + cmd.stride * np.arange(cmd.rows)
    return starts[:, None] + np.arange(cmd.row_bytes)[None, :]


def load(mem: np.ndarray, cmd: DmaCommand, config: TesseraConfig, local: np.ndarray,
         base: int = 0) -> None:
    """Apply a load to ``local`` (the scratchpad or accumulator rows), in place."""
    raw = mem[block_offsets(cmd, base)].astype(np.int64)
    signed_bytes = np.where(raw >= 128, raw - 256, raw)
    rows = slice(cmd.local_addr, cmd.local_addr + cmd.rows)
    if cmd.to_acc:
        lanes = np.zeros((cmd.rows, config.cols), dtype=np.int64)
        if cmd.wide:
            lb = lane_bytes(config)
            n = cmd.row_bytes // lb
            weights = 1 << (8 * np.arange(lb, dtype=np.int64))
            values = (raw.reshape(cmd.rows, n, lb) * weights).sum(axis=2)
            lanes[:, :n] = wrap(values, config.acc_bits)
        else:
            lanes[:, :cmd.row_bytes] = signed_bytes * cmd.scale
        if cmd.shift:       # a wide activation's high digits (hw/requant.py)
            lanes = wrap(lanes << DIGIT_SHIFT, config.acc_bits)
        new = local[rows] + lanes if cmd.accumulate else lanes
        local[rows] = wrap(new, config.acc_bits)
    else:
        padded = np.zeros((cmd.rows, config.spad_row_bytes), dtype=np.int64)
        padded[:, :cmd.row_bytes] = signed_bytes
        local[rows] = padded


def store(mem: np.ndarray, cmd: DmaCommand, rows: np.ndarray, base: int = 0) -> None:
    """Apply a store of ``rows`` (signed bytes, at least ``row_bytes`` wide) to ``mem``."""
    mem[block_offsets(cmd, base)] = (rows[:cmd.rows, :cmd.row_bytes] & 0xFF).astype(np.uint8)
