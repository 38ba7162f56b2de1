"""Main-memory layouts the lowering uses.

**Blocked** (``D`` = the array's dimension): a ``rows x cols`` int8 matrix is stored as
``ceil(cols / D)`` column blocks, one after the other; block ``j`` holds columns
``j*D .. j*D + D - 1`` of every row, ``D`` bytes per row, rows in order, so block ``j`` of
rows ``r0 .. r1`` is one contiguous range (one DMA burst stream) and one row of it is one
scratchpad row. Columns past ``cols`` are zero. Rows are padded with zero rows to a
multiple of ``row_multiple`` (weights: to whole ``D``-row tiles).

The matrix unit's operands and results all use it: activations (``M x K``: a scratchpad
row holds ``D`` values of one row along K), weights (``K x N``: ``D`` consecutive rows of
one block are one weight tile) and results (``M x N``, as the store unit writes them), so
one product's output is the next one's input without any reshuffling.

**Bias**: ``N`` int32 values, little-endian, padded with zeros to whole blocks of ``D``;
block ``j`` is one accumulator row for a wide load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Blocked", "to_blocked", "from_blocked", "bias_bytes"]


@dataclass(frozen=True)
class Blocked:
    """The shape of a blocked matrix in main memory."""

    rows: int
    cols: int
    block: int
    row_multiple: int = 1

    @property
    def padded_rows(self) -> int:
        return -(-self.rows // self.row_multiple) * self.row_multiple

    @property
    def blocks(self) -> int:
        return -(-self.cols // self.block)

    @property
    def block_bytes(self) -> int:
        return self.padded_rows * self.block

    @property
    def nbytes(self) -> int:
        return self.blocks * self.block_bytes

    def offset(self, row: int, block: int) -> int:
        """Byte offset of ``row`` in column block ``block``."""
        return block * self.block_bytes + row * self.block


def to_blocked(x: np.ndarray, shape: Blocked) -> np.ndarray:
    """The bytes (``uint8``) of the int8 matrix ``x`` in ``shape``'s blocked layout."""
    x = np.asarray(x)
    if x.shape != (shape.rows, shape.cols):
        raise ValueError(f"a {shape.rows} x {shape.cols} matrix was expected, not "
                         f"{' x '.join(map(str, x.shape))}")
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError("the matrix holds values outside int8")
    d = shape.block
    padded = np.zeros((shape.padded_rows, shape.blocks * d), dtype=np.int8)
    padded[:shape.rows, :shape.cols] = x
    blocks = padded.reshape(shape.padded_rows, shape.blocks, d).transpose(1, 0, 2)
    return np.ascontiguousarray(blocks).reshape(-1).view(np.uint8)


def from_blocked(raw: np.ndarray, shape: Blocked) -> np.ndarray:
    """The int8 matrix stored in ``raw`` (bytes) in ``shape``'s blocked layout."""
    raw = np.asarray(raw, dtype=np.uint8)[:shape.nbytes]
    d = shape.block
    blocks = raw.view(np.int8).reshape(shape.blocks, shape.padded_rows, d)
    full = blocks.transpose(1, 0, 2).reshape(shape.padded_rows, shape.blocks * d)
    return full[:shape.rows, :shape.cols].copy()


def bias_bytes(bias: np.ndarray, block: int) -> np.ndarray:
    """The bytes of an int32 bias vector, padded with zeros to whole blocks."""
    bias = np.asarray(bias)
    if bias.ndim != 1:
        raise ValueError(f"the bias must be a vector, not of shape {bias.shape}")
    if bias.size and (bias.min() < -2**31 or bias.max() >= 2**31):
        raise ValueError("the bias holds values outside int32")
    n = -(-bias.size // block) * block
    out = np.zeros(n, dtype="<i4")
    out[:bias.size] = bias
    return out.view(np.uint8)
