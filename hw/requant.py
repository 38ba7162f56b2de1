"""Dyadic requantization of ``cols`` int32 lanes to int8, with optional ReLU.

The datapath of ``tessera.sw.golden.requant.requantize(q, m, e, 8)`` and ``relu`` (I-BERT,
Kim et al. 2021, arXiv 2101.01321, section 3.1): ``saturate(round(q * m / 2**e), 8)``,
rounding half away from zero.

Widths (per lane): ``q`` s32, ``m`` u31, ``q * m`` s63 (``|q m| <= 2**62 - 2**31``), plus the
rounding constant ``2**(e-1) <= 2**62``: the sum fits s64; arithmetic shift by ``e`` (0 to
63); saturation to s8; ReLU after saturation (it commutes with requantization).

Pipeline (lock step, :data:`LATENCY` enabled cycles):

1. ``p = q * m``
2. ``p + 2**(e-1) - (p < 0)`` (``p`` itself when ``e = 0``)
3. ``>> e``, saturate, ReLU
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .intmath import add_half_away, chunk_tag_layout, saturate, stage

__all__ = ["RequantLanes", "LATENCY", "MULTIPLIER_BITS", "SHIFT_BITS"]

#: Pipeline stages from input to output.
LATENCY = 3
#: Width of the unsigned multiplier ``m`` and of the shift ``e``.
MULTIPLIER_BITS = 31
SHIFT_BITS = 6


class RequantLanes(wiring.Component):
    """``cols`` lanes of requantization, a lock-step pipeline.

    Parameters
    ----------
    cols : int
        Lanes per chunk.

    Members
    -------
    en : In(1)
        Advance the pipeline this cycle.
    i_valid, i_data, i_tag : In
        A chunk of ``cols`` int32 values and its tag, taken when ``en`` is high.
    m, e, relu : In
        Multiplier, shift and ReLU enable; constant while chunks are in flight.
    o_valid, o_data, o_tag : Out
        The requantized chunk (``cols`` int8), :data:`LATENCY` enabled cycles later.
    busy : Out(1)
        A chunk is in the pipeline.
    """

    def __init__(self, cols: int):
        self.cols = cols
        tag = chunk_tag_layout(cols)
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "i_data": In(data.ArrayLayout(signed(32), cols)),
            "i_tag": In(tag),
            "m": In(unsigned(MULTIPLIER_BITS)),
            "e": In(unsigned(SHIFT_BITS)),
            "relu": In(1),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(signed(8), cols)),
            "o_tag": Out(tag),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        # 2**(e-1), or 0 for e = 0: a per-command constant (registered; the output path
        # leaves a set-up cycle after loading a command).
        half = Signal(unsigned(63))
        shifts = Signal()  # e > 0: nothing is dropped (or rounded) when e = 0
        m.d.sync += [half.eq((1 << self.e) >> 1), shifts.eq(self.e != 0)]

        v1 = stage(m, en, self.i_valid, "rq_valid1")
        t1 = stage(m, en, self.i_tag, "rq_tag1")
        v2 = stage(m, en, v1, "rq_valid2")
        t2 = stage(m, en, t1, "rq_tag2")
        v3 = stage(m, en, v2, "rq_valid3")
        t3 = stage(m, en, t2, "rq_tag3")
        for j in range(self.cols):
            prod = Signal(signed(64), name=f"rq_prod{j}")
            m.d.comb += prod.eq(self.i_data[j] * self.m)
            p1 = stage(m, en, prod, f"rq_p1_{j}")
            rounded = Signal(signed(64), name=f"rq_round{j}")
            m.d.comb += rounded.eq(add_half_away(p1, half, shifts))
            p2 = stage(m, en, rounded, f"rq_p2_{j}")
            sat = saturate(p2 >> self.e, 8)
            out = Mux(self.relu & (sat < 0), 0, sat)
            res = Signal(signed(8), name=f"rq_out{j}")
            m.d.comb += res.eq(out)
            m.d.comb += self.o_data[j].eq(stage(m, en, res, f"rq_p3_{j}"))
        m.d.comb += [self.o_valid.eq(v3), self.o_tag.eq(t3), self.busy.eq(v1 | v2 | v3)]
        return m
