"""Dyadic requantization of ``cols`` int32 lanes to int8, with optional ReLU, or to a
digit of a wide (15-bit) activation.

The datapath of ``tessera.sw.golden.requant.requantize(q, m, e, 8)`` and ``relu`` (I-BERT,
Kim et al. 2021, arXiv 2101.01321, section 3.1): ``saturate(round(q * m / 2**e), 8)``,
rounding half away from zero.

Wide activations (``digit``, :class:`OutputDigit`): ``y = saturate(round(q * m / 2**e),
16)`` (after ReLU) is clamped to ``[WIDE_MIN, WIDE_MAX]`` and written as two int8 digits,
``y = high * 2**DIGIT_SHIFT + low`` with ``high = floor((y + 64) / 128)`` in
``[-128, 127]`` and ``low`` in ``[-64, 63]`` (``golden.requant.output_digit``). A product
over a wide activation is two passes through the array: the high digits' results
shifted left by ``DIGIT_SHIFT`` as they are written (the accumulator's ``shift``), then
the low digits' added as they are.

Widths (per lane): ``q`` s32, ``m`` u31, ``q * m`` s63 (``|q m| <= 2**62 - 2**31``);
arithmetic shift by ``e`` (0 to 63), keeping the bits the int8 result and its rounding
need; saturation to s8; ReLU after saturation (it commutes with requantization).

Pipeline (lock step, :data:`LATENCY` enabled cycles), every stage at most one DSP multiply
or one carry chain deep, for a 100 MHz clock on an ECP5 (speed 6). The 32 x 31-bit product
takes three 18 x 18 DSPs per lane instead of four (Karatsuba): with ``q = qh 2**16 + ql``
and ``m = mh 2**16 + ml`` (``ql``, ``ml`` u16; ``qh`` s16, ``mh`` u15), the middle term
``qh ml + ql mh`` is ``(qh + ql)(mh + ml) - qh mh - ql ml``, where ``qh + ql`` is s18 (in
``[-2**15, 3 * 2**15 - 2]``) and ``mh + ml`` u17 (below ``3 * 2**15``): one signed 18 x 18
product.

1. ``qh + ql`` per lane, ``mh + ml`` once (side by side); the halves registered
2. ``qh mh``, ``ql ml``, ``(qh + ql)(mh + ml)``: one 18 x 18 DSP each
3. ``(qh + ql)(mh + ml) - qh mh`` (= ``mid + ql ml``) and, beside it,
   ``qh mh 2**32 + ql ml - ql ml 2**16`` (``ql ml < 2**32``: the first two side by side)
4. ``p = q m``: the two added, the first at bit 16
5. ``2 p >> (e & ~7)`` (whole bytes; 16 bits kept), and three flags: the result fits (the
   bits of ``p`` from ``7 + e`` up equal its sign), ``p < 0``, a bit of ``2 p`` below
   ``e`` is set
6. ``>> (e & 7)``: ``r = floor(2 p / 2**e)``, 9 bits kept
7. ``(r + c) >> 1`` (``c``: ``p >= 0``, or the bit below ``e``), saturated: the rounded
   quotient, half away from zero (:func:`dyadic_lanes`)
8. ReLU, then the int8 result or a digit (the clamp, and ``high``'s rounding add, side by
   side)
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .intmath import chunk_tag_layout, saturate, stage

__all__ = ["RequantLanes", "dyadic_lanes", "LATENCY", "DYADIC_STAGES", "MULTIPLIER_BITS",
           "SHIFT_BITS", "OutputDigit", "DIGIT_SHIFT", "WIDE_MIN", "WIDE_MAX", "WIDE_BITS"]

#: Stages of :func:`dyadic_lanes`, the multiply, rounding and shift.
DYADIC_STAGES = 7
#: Pipeline stages from input to output: those, then saturation and ReLU.
LATENCY = DYADIC_STAGES + 1
#: Width of the unsigned multiplier ``m`` and of the shift ``e``.
MULTIPLIER_BITS = 31
SHIFT_BITS = 6
#: A wide activation's digits: ``high * 2**DIGIT_SHIFT + low``.
DIGIT_SHIFT = 7
#: The range of a wide activation: ``high`` in ``[-128, 127]``, ``low`` in ``[-64, 63]``.
WIDE_MIN, WIDE_MAX = -128 << DIGIT_SHIFT, (127 << DIGIT_SHIFT) + 63
#: Bits of the requantization before the digits are taken.
WIDE_BITS = 16


class OutputDigit(enum.Enum, shape=2):
    """What the output path writes of a requantized value."""

    INT8 = 0    # saturated to int8 (the usual activation)
    HIGH = 1    # a wide activation's high digit
    LOW = 2     # its low digit


def dyadic_lanes(m: Module, en, qs, mult, e, name: str, bits: int) -> list:
    """``saturate(round(q * mult / 2**e), bits)``, rounding half away from zero, of every
    int32 lane ``q`` of ``qs``, with the u31 ``mult`` and u6 ``e`` that the lanes share
    given with them: ``signed(bits)`` values :data:`DYADIC_STAGES` enabled cycles later
    (stages 1 to 7 of the module docstring). ``mult`` and ``e`` travel down the pipeline
    with the lanes, so they may change from one set of lanes to the next.

    The rounding is done after the shift, on the few bits kept: with ``p = q * mult`` and
    ``r = floor(2 p / 2**e)`` (``p`` with one bit more, shifted), the result is
    ``floor((r + c) / 2)`` with ``c = 1`` for ``p >= 0`` and, for ``p < 0``, ``c = 1``
    exactly when a bit of ``2 p`` below ``e`` is set (then ``p / 2**e`` is not a tie or
    below it). ``r`` fits ``bits + 1`` bits when the bits of ``p`` from ``bits - 1 + e``
    up all equal its sign; otherwise the result saturates. So the shifters keep ``bits +
    8`` and ``bits + 1`` bits, not 64, and the rounding adds one bit to ``bits + 1``.
    """
    e_at = [e]
    for k in range(1, DYADIC_STAGES):
        e_at.append(stage(m, en, e_at[-1], f"{name}_e{k}"))
    # 1: m's halves and their sum (shared by the lanes).
    ml1 = stage(m, en, mult[:16], f"{name}_ml1")
    mh1 = stage(m, en, mult[16:], f"{name}_mh1")
    msum1 = stage(m, en, mult[:16] + mult[16:], f"{name}_msum1")
    # Which bits of p must equal its sign for the result to fit (i >= bits - 1 + e), and
    # which are below the rounding bit (i + 1 < e): bit i of each a comparison of e with
    # a constant (none where it cannot fail), shared by the lanes, ready at stage 4.
    e3, e_max = e_at[3], (1 << len(e_at[3])) - 1

    def at_most(k):     # e <= k
        return Const(0, 1) if k < 0 else Const(1, 1) if k >= e_max else e3 <= k

    def at_least(k):    # e >= k
        return Const(1, 1) if k <= 0 else Const(0, 1) if k > e_max else e3 >= k

    sign_bits = stage(m, en, Cat(*[at_most(i - (bits - 1)) for i in range(64)]),
                      f"{name}_sign_bits4")
    low_bits = stage(m, en, Cat(*[at_least(i + 2) for i in range(64)]), f"{name}_low_bits4")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    outs = []
    for j, q in enumerate(qs):
        # 1: q's halves and their sum
        ql1 = stage(m, en, q[:16], f"{name}_ql1_{j}")
        qh1 = stage(m, en, q[16:].as_signed(), f"{name}_qh1_{j}")
        qsum1 = stage(m, en, q[:16] + q[16:].as_signed(), f"{name}_qsum1_{j}")
        # 2: the three products (s16 x u15, u16 x u16, s18 x u17: one 18 x 18 DSP each)
        hh = stage(m, en, qh1 * mh1, f"{name}_hh{j}")
        ll = stage(m, en, ql1 * ml1, f"{name}_ll{j}")
        kk = stage(m, en, qsum1 * msum1, f"{name}_kk{j}")
        # 3: (qh + ql)(mh + ml) - qh mh = mid + ll, and qh mh 2**32 + ll - ll 2**16
        mid_ll = Signal(signed(37), name=f"{name}_mid_ll{j}")
        m.d.comb += mid_ll.eq(kk - hh)
        outer = Signal(signed(64), name=f"{name}_outer{j}")
        m.d.comb += outer.eq(Cat(ll[:32], hh).as_signed() - (ll << 16))
        mid3 = stage(m, en, mid_ll, f"{name}_mid3_{j}")
        outer3 = stage(m, en, outer, f"{name}_outer3_{j}")
        # 4: the product
        prod = Signal(signed(64), name=f"{name}_prod{j}")
        m.d.comb += prod.eq(outer3 + (mid3 << 16))
        p4 = stage(m, en, prod, f"{name}_p4_{j}")
        # 5: 2 p shifted by whole bytes (bits + 8 bits kept); whether it fits, its sign and
        # whether a bit below the rounding bit is set
        neg = p4[63]
        fits = ~((p4 ^ neg.replicate(64)) & sign_bits).any()
        sticky = (p4 & low_bits).any()
        twice = Cat(Const(0, 1), p4).as_signed()
        by_bytes = (twice >> Cat(Const(0, 3), e_at[4][3:]))[:bits + 8]
        s5 = stage(m, en, by_bytes, f"{name}_s5_{j}")
        flags5 = stage(m, en, Cat(fits, neg, sticky), f"{name}_flags5_{j}")
        # 6: then by bits: r (bits + 1 bits)
        s6 = stage(m, en, (s5.as_signed() >> e_at[5][:3])[:bits + 1], f"{name}_s6_{j}")
        flags6 = stage(m, en, flags5, f"{name}_flags6_{j}")
        # 7: (r + c) / 2, saturated
        fits6, neg6, sticky6 = flags6[0], flags6[1], flags6[2]
        total = Signal(signed(bits + 2), name=f"{name}_total{j}")
        m.d.comb += total.eq(s6.as_signed() + (~neg6 | sticky6))
        out = Signal(signed(bits), name=f"{name}_out{j}")
        m.d.comb += out.eq(Mux(fits6, saturate(total[1:].as_signed(), bits),
                               Mux(neg6, Const(lo, signed(bits)), Const(hi, signed(bits)))))
        outs.append(stage(m, en, out, f"{name}_p7_{j}"))
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
    m, e, relu, digit : In
        Multiplier, shift, ReLU enable and :class:`OutputDigit`; constant while chunks are
        in flight.
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
            "digit": In(OutputDigit),
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
        mode = [Cat(self.relu, self.digit)]
        for k in range(1, DYADIC_STAGES + 1):
            mode.append(stage(m, en, mode[-1], f"rq_mode{k}"))
        relu, digit = mode[-1][0], mode[-1][1:]
        scaled = dyadic_lanes(m, en, [self.i_data[j] for j in range(self.cols)], self.m,
                              self.e, "rq", WIDE_BITS)
        for j, p7 in enumerate(scaled):
            # 8: ReLU (it commutes with the saturations), then the int8 result or a digit:
            # the comparisons and high's rounding add side by side, then a choice.
            zero = relu & p7[-1]
            byte = Signal(signed(8), name=f"rq_byte{j}")
            m.d.comb += byte.eq(saturate(p7, 8))
            high = Signal(signed(WIDE_BITS - DIGIT_SHIFT + 1), name=f"rq_high{j}")
            m.d.comb += high.eq((p7 + (1 << (DIGIT_SHIFT - 1))) >> DIGIT_SHIFT)
            over, under = p7 > WIDE_MAX, p7 < WIDE_MIN
            hi = Mux(over, 127, Mux(under, -128, high[:8].as_signed()))
            lo = Mux(over, WIDE_MAX & 0x7F, Mux(under, 0, p7[:DIGIT_SHIFT].as_signed()))
            out = Signal(signed(8), name=f"rq_out{j}")
            m.d.comb += out.eq(Mux(zero, 0, Mux(digit == OutputDigit.HIGH, hi,
                                                Mux(digit == OutputDigit.LOW, lo, byte))))
            m.d.comb += self.o_data[j].eq(stage(m, en, out, f"rq_p8_{j}"))
        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_tag.eq(tags[-1]),
                     self.busy.eq(Cat(*valid[1:]).any())]
        return m
