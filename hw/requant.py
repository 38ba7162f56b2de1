"""Dyadic requantization of ``cols`` int32 lanes to int8, with optional ReLU.

The datapath of ``tessera.sw.golden.requant.requantize(q, m, e, 8)`` and ``relu`` (I-BERT,
Kim et al. 2021, arXiv 2101.01321, section 3.1): ``saturate(round(q * m / 2**e), 8)``,
rounding half away from zero.

Widths (per lane): ``q`` s32, ``m`` u31, ``q * m`` s63 (``|q m| <= 2**62 - 2**31``), plus the
rounding constant ``2**(e-1) <= 2**62``: the sum fits s64; arithmetic shift by ``e`` (0 to
63); saturation to s8; ReLU after saturation (it commutes with requantization).

Pipeline (lock step, :data:`LATENCY` enabled cycles), every stage at most one DSP multiply
or one carry chain deep, for a 100 MHz clock on an ECP5 (speed 6):

1. the four partial products of ``q = qh 2**16 + ql`` and ``m = mh 2**16 + ml``
   (``ql``, ``ml`` u16; ``qh`` s16, ``mh`` u15): one 18 x 18 DSP each
2. ``mid = qh ml + ql mh``; ``qh mh`` and ``ql ml`` side by side (no carry between them)
3. ``p = q m``: the two added, ``mid`` at bit 16
4. ``p + 2**(e-1) - (p < 0)`` (``p`` itself when ``e = 0``)
5. ``>> (e & ~7)`` (whole bytes)
6. ``>> (e & 7)``
7. saturate, ReLU
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .intmath import chunk_tag_layout, saturate, stage

__all__ = ["RequantLanes", "dyadic_lanes", "LATENCY", "DYADIC_STAGES", "MULTIPLIER_BITS",
           "SHIFT_BITS"]

#: Stages of :func:`dyadic_lanes`, the multiply, rounding and shift.
DYADIC_STAGES = 6
#: Pipeline stages from input to output: those, then saturation and ReLU.
LATENCY = DYADIC_STAGES + 1
#: Width of the unsigned multiplier ``m`` and of the shift ``e``.
MULTIPLIER_BITS = 31
SHIFT_BITS = 6


def dyadic_lanes(m: Module, en, qs, mult, e, name: str) -> list:
    """``round(q * mult / 2**e)``, rounding half away from zero (not yet saturated), of
    every int32 lane ``q`` of ``qs``, with the u31 ``mult`` and u6 ``e`` that the lanes
    share given with them: s64 values :data:`DYADIC_STAGES` enabled cycles later (stages
    1 to 6 of the module docstring). ``mult`` and ``e`` travel down the pipeline with the
    lanes, so they may change from one set of lanes to the next."""
    ml, mh = mult[:16], mult[16:]
    e_at = [e]
    for k in range(1, DYADIC_STAGES):
        e_at.append(stage(m, en, e_at[-1], f"{name}_e{k}"))
    # The rounding constants 2**(e-1) and 2**(e-1) - 1 of positive and negative products
    # (both 0 for e = 0, where nothing is rounded), ready at stage 3.
    half = stage(m, en, ((Const(1, 64) << e_at[2]) >> 1)[:63], f"{name}_half3")
    half_neg = stage(m, en, Mux(e_at[2] == 0, 0, ((Const(1, 64) << e_at[2]) >> 1) - 1)[:63],
                     f"{name}_half_neg3")
    outs = []
    for j, q in enumerate(qs):
        ql, qh = q[:16], q[16:].as_signed()
        # 1: partial products
        ll = stage(m, en, ql * ml, f"{name}_ll{j}")
        lh = stage(m, en, ql * mh, f"{name}_lh{j}")
        hl = stage(m, en, qh * ml, f"{name}_hl{j}")
        hh = stage(m, en, qh * mh, f"{name}_hh{j}")
        # 2: the middle sum; the outer products side by side (ll < 2**32)
        mid = stage(m, en, hl + lh, f"{name}_mid{j}")
        outer = stage(m, en, Cat(ll[:32], hh).as_signed(), f"{name}_outer{j}")
        # 3: the product
        prod = Signal(signed(64), name=f"{name}_prod{j}")
        m.d.comb += prod.eq(outer + (mid << 16))
        p3 = stage(m, en, prod, f"{name}_p3_{j}")
        # 4: rounded, half away from zero
        rounded = Signal(signed(64), name=f"{name}_round{j}")
        m.d.comb += rounded.eq(p3 + Mux(p3 < 0, half_neg, half))
        p4 = stage(m, en, rounded, f"{name}_p4_{j}")
        # 5, 6: the arithmetic shift, whole bytes then bits
        p5 = stage(m, en, p4 >> Cat(Const(0, 3), e_at[4][3:]), f"{name}_p5_{j}")
        outs.append(stage(m, en, p5 >> e_at[5][:3], f"{name}_p6_{j}"))
    return outs


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
        valid, tags = [self.i_valid], [self.i_tag]
        for k in range(1, LATENCY + 1):
            valid.append(stage(m, en, valid[-1], f"rq_valid{k}"))
            tags.append(stage(m, en, tags[-1], f"rq_tag{k}"))
        relu = [self.relu]
        for k in range(1, DYADIC_STAGES + 1):
            relu.append(stage(m, en, relu[-1], f"rq_relu{k}"))
        shifted = dyadic_lanes(m, en, [self.i_data[j] for j in range(self.cols)], self.m,
                               self.e, "rq")
        for j, p6 in enumerate(shifted):
            # 7: saturate, ReLU
            sat = saturate(p6, 8)
            out = Signal(signed(8), name=f"rq_out{j}")
            m.d.comb += out.eq(Mux(relu[-1] & (sat < 0), 0, sat))
            m.d.comb += self.o_data[j].eq(stage(m, en, out, f"rq_p7_{j}"))
        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_tag.eq(tags[-1]),
                     self.busy.eq(Cat(*valid[1:]).any())]
        return m
