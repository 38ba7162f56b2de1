"""Golden model of the systolic matrix unit: wrapped integer matrix products and the
tile streams the unit consumes and produces.

The hardware multiplies signed ``input_bits`` activations by signed ``weight_bits`` weights
and accumulates in ``acc_bits`` two's-complement registers that wrap around on overflow.
Wrapping addition is associative, so the unit's result equals the exact integer product
reduced modulo ``2**acc_bits`` into the signed range, whatever the order of the sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import ArrayConfig, TesseraConfig

__all__ = ["wrap", "check_operand", "matmul", "WsTile", "OsTile", "ws_tiles", "os_tiles",
           "unit_results", "assemble"]


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Reduce integers into the signed ``bits``-bit range, as a register of that width does.

    Parameters
    ----------
    x : ndarray of int64
    bits : int
        1 to 64.
    """
    x = np.asarray(x, dtype=np.int64)
    if bits >= 64:
        return x
    mask = np.int64((1 << bits) - 1)
    half = np.int64(1 << (bits - 1))
    return ((x + half) & mask) - half


def check_operand(x: np.ndarray, bits: int, name: str) -> np.ndarray:
    """``x`` as an int64 array after checking that it fits signed ``bits`` bits.

    Raises
    ------
    ValueError
        If ``x`` is not an integer array or holds a value outside the signed range.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not {x.dtype}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name} holds values outside the signed {bits}-bit range "
                         f"[{lo}, {hi}]: min {x.min()}, max {x.max()}")
    return x.astype(np.int64)


def matmul(a: np.ndarray, b: np.ndarray, config: ArrayConfig | TesseraConfig) -> np.ndarray:
    """``a @ b`` as the matrix unit computes it: exact products, sums wrapped to acc_bits.

    Parameters
    ----------
    a : (M, K) int array of signed ``input_bits`` values
    b : (K, N) int array of signed ``weight_bits`` values

    Returns
    -------
    (M, N) int64 array of signed ``acc_bits`` values.

    Raises
    ------
    ValueError
        On shapes that do not chain or values out of range.
    """
    a = check_operand(a, config.input_bits, "a")
    b = check_operand(b, config.weight_bits, "b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    # Every product and partial sum is an integer of at most K 2^(in + w - 2) in magnitude:
    # below 2^53, float64 holds each exactly in any order of summation, and BLAS computes
    # it some hundred times faster than numpy's integer loop. Else numpy's integer matmul,
    # which wraps modulo 2**64 and so agrees with any narrower wrap.
    if a.shape[1] << (config.input_bits + config.weight_bits - 2) < 1 << 53:
        return wrap((a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64),
                    config.acc_bits)
    return wrap(a @ b, config.acc_bits)


@dataclass
class WsTile:
    """One weight-stationary tile: ``weights`` (rows x cols) and ``a`` (m x rows)."""

    weights: np.ndarray
    a: np.ndarray
    m0: int  # where the tile sits in the product: rows m0.., columns n0..; reduction k0..
    n0: int
    k0: int


@dataclass
class OsTile:
    """One output-stationary tile: ``a`` (rows x k) and ``b`` (k x cols)."""

    a: np.ndarray
    b: np.ndarray
    m0: int
    n0: int


def _pad(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def ws_tiles(a: np.ndarray, b: np.ndarray, config: ArrayConfig | TesseraConfig,
             m_tile: int | None = None) -> list[WsTile]:
    """Split ``a @ b`` into weight-stationary tiles for the unit.

    K and N are cut into ``rows`` and ``cols`` wide pieces (the last ones padded with
    zeros); M into pieces of ``m_tile`` rows (all of M by default).
    """
    a = check_operand(a, config.input_bits, "a")
    b = check_operand(b, config.weight_bits, "b")
    (M, K), N = a.shape, b.shape[1]
    R, C = config.rows, config.cols
    m_tile = m_tile or M
    tiles = []
    for n0 in range(0, N, C):
        for k0 in range(0, K, R):
            w = _pad(b[k0:k0 + R, n0:n0 + C], (R, C))
            for m0 in range(0, M, m_tile):
                rows = a[m0:m0 + m_tile, k0:k0 + R]
                tiles.append(WsTile(w, _pad(rows, (rows.shape[0], R)), m0, n0, k0))
    return tiles


def os_tiles(a: np.ndarray, b: np.ndarray, config: ArrayConfig | TesseraConfig) -> list[OsTile]:
    """Split ``a @ b`` into output-stationary tiles (``rows`` x ``cols`` results each, the
    whole reduction K per tile)."""
    a = check_operand(a, config.input_bits, "a")
    b = check_operand(b, config.weight_bits, "b")
    (M, K), N = a.shape, b.shape[1]
    R, C = config.rows, config.cols
    return [OsTile(_pad(a[m0:m0 + R], (R, K)), _pad(b[:, n0:n0 + C], (K, C)), m0, n0)
            for m0 in range(0, M, R) for n0 in range(0, N, C)]


def unit_results(tiles: list[WsTile] | list[OsTile],
                 config: ArrayConfig | TesseraConfig) -> list[np.ndarray]:
    """The result rows the unit emits for each tile, in order (one array per tile)."""
    out = []
    for t in tiles:
        if isinstance(t, WsTile):
            out.append(wrap(t.a @ t.weights, config.acc_bits))
        else:
            out.append(wrap(t.a @ t.b, config.acc_bits))
    return out


def assemble(tiles, results, shape: tuple[int, int],
             config: ArrayConfig | TesseraConfig) -> np.ndarray:
    """Accumulate per-tile results into the (M, N) product, as the accumulator memory does
    (wrapping adds of WS partial sums across the K tiles)."""
    M, N = shape
    out = np.zeros((M, N), dtype=np.int64)
    for t, r in zip(tiles, results, strict=True):
        rows = min(r.shape[0], M - t.m0)
        cols = min(r.shape[1], N - t.n0)
        out[t.m0:t.m0 + rows, t.n0:t.n0 + cols] += r[:rows, :cols]
    return wrap(out, config.acc_bits)
