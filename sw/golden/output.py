"""The output path's operations on int32 accumulator rows: the one software definition,
used by the golden executor, the output-path testbench's scoreboard and the lowering's
reference (``OutputOp`` is the hardware's, ``hw/output_path.py``)."""

from __future__ import annotations

import numpy as np

from ...hw.output_path import OutputDigit, OutputOp
from . import gelu as ggelu
from . import layernorm as gln
from . import requant as grq
from . import softmax as gsm
from .intmath import saturate

__all__ = ["output_op", "descriptor_digit"]


def output_op(op: OutputOp, x: np.ndarray, m: int = 1, e: int = 0, *,
              gelu: ggelu.GeluConstants | None = None, exp: gsm.ExpConstants | None = None,
              ln: gln.LayerNormConstants | None = None, digit=OutputDigit.INT8) -> np.ndarray:
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
    digit : OutputDigit
        Every operation but SOFTMAX: the int8 result (``INT8``), or a digit of the wide
        value, the result requantized to ``WIDE_BITS`` bits (``requant.output_digit``).

    Raises
    ------
    ValueError
        If ``op`` is not an output operation, or its constants are missing.
    """
    op = OutputOp(op)
    x = np.asarray(x).astype(np.int32)
    bits = 8 if digit == OutputDigit.INT8 else grq.WIDE_BITS

    def out(y):
        return grq.output_digit(y, digit) if bits != 8 else np.asarray(y, dtype=np.int64)

    if op == OutputOp.NONE:
        return out(saturate(x.astype(np.int64), bits))
    if op == OutputOp.REQUANT:
        return out(grq.requantize(x, m, e, bits))
    if op == OutputOp.RELU:
        return out(grq.relu(grq.requantize(x, m, e, bits)))
    needs = {OutputOp.GELU: gelu, OutputOp.SOFTMAX: exp, OutputOp.LAYERNORM: ln}
    if op not in needs:
        raise ValueError(f"{op!r} is not an output operation")
    if needs[op] is None:
        raise ValueError(f"{op.name} needs its constants")
    if op == OutputOp.GELU:
        return out(grq.requantize(ggelu.i_gelu(x, gelu)[0], m, e, bits))
    if op == OutputOp.SOFTMAX:
        return gsm.i_softmax(x, exp, e).view(np.int8).astype(np.int64)
    return out(gln.i_layernorm(x, ln, bits))


def descriptor_digit(desc: dict) -> int:
    """The digit a STORE's descriptor asks for (``consts.out.digit``; INT8 when not
    given), as its number (a decoded descriptor may hold one no ``OutputDigit`` has)."""
    digit = desc.get("consts", {}).get("out", {}).get("digit", OutputDigit.INT8)
    return digit.value if isinstance(digit, OutputDigit) else int(digit)
