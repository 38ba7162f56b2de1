"""i-GELU on ``cols`` int32 lanes, the datapath of ``tessera.sw.golden.gelu.i_gelu``.

After I-BERT (Kim et al. 2021, arXiv 2101.01321, section 3.3): the erf polynomial
``sgn(x) [a (min(|x|, -b) + b)**2 + 1]`` in integers, negated so that every value is
non-negative (see the golden model's docstring for the derivation and the widths).

Per lane, with the per-command constants ``t`` (``shift``), ``B = -q_b``, ``Pmax = -q_c``,
``r`` (``poly_shift``) and ``one = Pmax >> r``:

=====  ===========================================================================  ======
stage  value                                                                        bits
=====  ===========================================================================  ======
1      ``u = min(|q| >> t`` rounded half up, or ``|q| << -t``, ``B)``               u15
2      ``(B - u)**2``                                                               u30
3      ``G = one + (P >> r)`` if ``q >= 0`` else ``one - (P >> r)``,
       ``P = Pmax - (B - u)**2``                                                    u17
4      ``q * G``                                                                    s50
5      ``(q G + 2**16 - (q G < 0)) >> 17`` (half away from zero)                    s32
=====  ===========================================================================  ======

The int32 result is then requantized by the output path's :class:`~.requant.RequantLanes`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .intmath import chunk_tag_layout, shift_right_half_away, stage

__all__ = ["GeluLanes", "GELU_CONSTS", "LATENCY"]

#: The integer constants of ``golden.gelu.GeluConstants`` (their full ranges fit).
GELU_CONSTS = data.StructLayout({
    "shift": signed(6),       # t in [-13, 31]
    "q_b": signed(16),        # in [-2**14, -2**13 - 1]
    "q_c": signed(30),        # in [-(2**29 - 1), 0]
    "poly_shift": unsigned(5),  # r in [0, 28]
})

#: Pipeline stages from input to output.
LATENCY = 5
#: ``out = round(q * G / 2**OUT_SHIFT)`` (``golden.gelu.GELU_OUT_SHIFT``).
OUT_SHIFT = 17


class GeluLanes(wiring.Component):
    """``cols`` lanes of i-GELU, a lock-step pipeline (:data:`LATENCY` stages).

    Parameters
    ----------
    cols : int
        Lanes per chunk.

    Members
    -------
    en : In(1)
        Advance the pipeline this cycle.
    i_valid, i_data, i_tag : In
        A chunk of ``cols`` int32 values and its tag.
    consts : In(GELU_CONSTS)
        Constant while chunks are in flight; derived constants are registered from it, so
        it must be set one cycle before the first chunk.
    o_valid, o_data, o_tag : Out
        ``cols`` int32 GELU values at the golden model's ``out_scale``.
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
            "consts": In(GELU_CONSTS),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(signed(32), cols)),
            "o_tag": Out(tag),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        c = self.consts

        # Per-command constants, registered.
        t_neg = Signal(range(32))   # left shift, for t < 0
        t_pos = Signal(range(32))   # right shift, for t >= 0
        half_t = Signal(unsigned(31))
        big_b = Signal(unsigned(15))
        p_max = Signal(unsigned(29))
        r = Signal(unsigned(5))
        one = Signal(unsigned(17))
        neg_t = c.shift < 0
        m.d.sync += [
            t_neg.eq(Mux(neg_t, -c.shift, 0)),
            t_pos.eq(Mux(neg_t, 0, c.shift)),
            half_t.eq(Mux(neg_t, 0, (1 << c.shift.as_unsigned()[:5]) >> 1)),
            big_b.eq(-c.q_b),
            p_max.eq(-c.q_c),
            r.eq(c.poly_shift),
            one.eq((-c.q_c).as_unsigned()[:29] >> c.poly_shift),
        ]
        is_left = Signal()
        m.d.sync += is_left.eq(neg_t)

        valid = [self.i_valid]
        tags = [self.i_tag]
        for k in range(1, LATENCY + 1):
            valid.append(stage(m, en, valid[-1], f"gelu_valid{k}"))
            tags.append(stage(m, en, tags[-1], f"gelu_tag{k}"))

        for j in range(self.cols):
            q0 = self.i_data[j]
            # 1: u = min(shifted |q|, B). |q| of -2**31 is 2**31: 32 bits unsigned.
            mag = abs(q0)
            right = (mag + half_t) >> t_pos
            left = mag << t_neg
            shifted = Mux(is_left, left, right)
            u = Signal(unsigned(15), name=f"gelu_u{j}")
            m.d.comb += u.eq(Mux(shifted > big_b, big_b, shifted))
            u1 = stage(m, en, u, f"gelu_u1_{j}")
            q1 = stage(m, en, q0, f"gelu_q1_{j}")
            # 2: (B - u)**2
            diff = Signal(unsigned(15), name=f"gelu_diff{j}")
            m.d.comb += diff.eq(big_b - u1)
            sq = Signal(unsigned(30), name=f"gelu_sq{j}")
            m.d.comb += sq.eq(diff * diff)
            sq2 = stage(m, en, sq, f"gelu_sq2_{j}")
            q2 = stage(m, en, q1, f"gelu_q2_{j}")
            # 3: G = one +/- ((Pmax - sq) >> r), 1 + erf at 2 * one
            p_r = Signal(unsigned(29), name=f"gelu_pr{j}")
            m.d.comb += p_r.eq((p_max - sq2)[:29] >> r)
            g = Signal(unsigned(17), name=f"gelu_g{j}")
            m.d.comb += g.eq(Mux(q2 < 0, one - p_r, one + p_r))
            g3 = stage(m, en, g, f"gelu_g3_{j}")
            q3 = stage(m, en, q2, f"gelu_q3_{j}")
            # 4: q * G
            prod = Signal(signed(50), name=f"gelu_prod{j}")
            m.d.comb += prod.eq(q3 * g3)
            prod4 = stage(m, en, prod, f"gelu_prod4_{j}")
            # 5: round half away from zero, / 2**17; |out| <= |q| fits s32
            out = Signal(signed(32), name=f"gelu_out{j}")
            m.d.comb += out.eq(shift_right_half_away(prod4, OUT_SHIFT, 1 << (OUT_SHIFT - 1)))
            m.d.comb += self.o_data[j].eq(stage(m, en, out, f"gelu_out5_{j}"))

        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_tag.eq(tags[-1]),
                     self.busy.eq(Cat(*valid[1:]).any())]
        return m
