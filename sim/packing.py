"""Pack numpy rows into the flat bit vectors of stream payloads, and back.

Field positions come from the Amaranth layouts the hardware uses (``layout[name].offset``,
element widths of ``ArrayLayout``), never from a table kept here.
"""

from __future__ import annotations

import numpy as np
from amaranth.lib import data

__all__ = ["pack_lanes", "unpack_lanes", "field"]


def field(layout: data.StructLayout, name: str) -> tuple[int, int]:
    """(offset, width) of a field of a struct layout."""
    f = layout[name]
    return f.offset, f.width


def _lane_bits(layout: data.ArrayLayout) -> int:
    return data.Layout.cast(layout.elem_shape).size if isinstance(
        layout.elem_shape, data.Layout) else layout.elem_shape.width


def pack_lanes(values: np.ndarray, layout: data.ArrayLayout) -> list[int]:
    """Each row of ``values`` (n, length) as the integer of an ``ArrayLayout`` payload."""
    bits = _lane_bits(layout)
    values = np.asarray(values, dtype=np.int64).reshape(-1, layout.length)
    bitmat = ((values[:, :, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    flat = bitmat.reshape(len(values), -1)
    packed = np.packbits(flat, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_lanes(words, layout: data.ArrayLayout, signed: bool = True) -> np.ndarray:
    """Integers of ``ArrayLayout`` payloads back into an (n, length) int64 array."""
    bits = _lane_bits(layout)
    total = bits * layout.length
    nbytes = (total + 7) // 8
    raw = np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words),
                        dtype=np.uint8).reshape(len(words), nbytes)
    flat = np.unpackbits(raw, axis=1, bitorder="little")[:, :total]
    lanes = flat.reshape(len(words), layout.length, bits).astype(np.int64)
    vals = (lanes << np.arange(bits, dtype=np.int64)).sum(axis=2) if bits < 64 else None
    if vals is None:
        raise ValueError("lanes of 64 bits or more are not supported")
    if signed:
        vals = np.where(vals >= (1 << (bits - 1)), vals - (1 << bits), vals)
    return vals
