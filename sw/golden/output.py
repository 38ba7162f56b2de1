"""The output path's operations on int32 accumulator rows: the one software definition,
used by the golden executor, the output-path testbench's scoreboard and the lowering's
reference (``OutputOp`` is the hardware's, ``hw/output_path.py``)."""

from __future__ import annotations

import numpy as np

from ...hw.output_path import OutputOp
from . import gelu as ggelu
from . import layernorm as gln
from . import requant as grq
from . import softmax as gsm
from .intmath import saturate

__all__ = ["output_op"]


def output_op(op: OutputOp, x: np.ndarray, m: int = 1, e: int = 0, *,
              gelu: ggelu.GeluConstants | None = None, exp: gsm.ExpConstants | None = None,
              ln: gln.LayerNormConstants | None = None) -> np.ndarray:
    """``op`` on int32 rows ``x`` (the last axis a row): the int8 results as their bit
    patterns in int64 (Softmax's probability codes are unsigned bytes).

    Parameters
    ----------
    m, e : int
        The dyadic requantization (REQUANT, RELU, GELU); for SOFTMAX, ``e`` is the bits
        dropped from the 8-bit probability codes, with rounding (``i_softmax``'s
        ``shift``).
    gelu, exp, ln : constants
        i-GELU's, i-exp's (Softmax) and i-LayerNorm's integer constants.

    Raises
    ------
    ValueError
        If ``op`` is not an output operation, or its constants are missing.
    """
    op = OutputOp(op)
    x = np.asarray(x).astype(np.int32)
    if op == OutputOp.NONE:
        return saturate(x.astype(np.int64), 8)
    if op == OutputOp.REQUANT:
        return grq.requantize(x, m, e, 8).astype(np.int64)
    if op == OutputOp.RELU:
        return grq.relu(grq.requantize(x, m, e, 8)).astype(np.int64)
    needs = {OutputOp.GELU: gelu, OutputOp.SOFTMAX: exp, OutputOp.LAYERNORM: ln}
    if op not in needs:
        raise ValueError(f"{op!r} is not an output operation")
    if needs[op] is None:
        raise ValueError(f"{op.name} needs its constants")
    if op == OutputOp.GELU:
        return grq.requantize(ggelu.i_gelu(x, gelu)[0], m, e, 8).astype(np.int64)
    if op == OutputOp.SOFTMAX:
        return gsm.i_softmax(x, exp, e).view(np.int8).astype(np.int64)
    return gln.i_layernorm(x, ln).astype(np.int64)
