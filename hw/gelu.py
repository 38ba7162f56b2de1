"""i-GELU on ``cols`` int32 lanes, the datapath of ``tessera.sw.golden.gelu.i_gelu``.

After I-BERT (Kim et al. 2021, arXiv 2101.01321, section 3.3): the erf polynomial
``sgn(x) [a (min(|x|, -b) + b)**2 + 1]`` in integers, negated so that every value is
non-negative (see the golden model's docstring for the derivation and the widths).

Per lane, with the per-command constants ``t`` (``shift``), ``B = -q_b``, ``Pmax = -q_c``,
``r`` (``poly_shift``) and ``one = Pmax >> r``:

======  ==========================================================================  ======
stage   value                                                                       bits
======  ==========================================================================  ======
1       ``|q| + 2**(t-1)`` (``|q|`` for a left shift)                                u33
2       ``s = (|q| + 2**(t-1)) >> t`` (rounded half up) or ``|q| << -t``: its       u15
        low 15 bits, and whether any bit above them is set
3       ``d = B - min(s, B)`` (compare and subtract side by side)                   u15
4, 5    ``d**2`` (the operands' registers, then the product's)                      u30
6       ``P = Pmax - d**2``                                                         u29
7       ``P >> r``                                                                  u29
8       ``G = one + (P >> r)`` if ``q >= 0`` else ``one - (P >> r)``                u17
9, 10   ``qh G``, ``ql G`` (``q = qh 2**16 + ql``: one 18 x 18 DSP each)            s34
11      ``q G``                                                                     s50
12      ``(q G + 2**16 - (q G < 0)) >> 17`` (half away from zero)                   s32
======  ==========================================================================  ======

Every stage is at most one DSP multiply, one carry chain or one barrel shifter deep, for a
100 MHz clock on an ECP5 (speed 6); a product takes two stages
(:data:`~.multipliers.MULTIPLY_STAGES`: its operands and its result registered at the
shared DSP block).

The int32 result is then requantized by the output path's :class:`~.requant.RequantLanes`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .intmath import chunk_tag_layout, shift_right_half_away, stage
from .multipliers import MultiplierSignature, multiply

__all__ = ["GeluLanes", "GELU_CONSTS", "LATENCY", "MUL_SLOTS"]

#: The integer constants of ``golden.gelu.GeluConstants`` (their full ranges fit).
GELU_CONSTS = data.StructLayout({
    "shift": signed(6),       # t in [-13, 31]
    "q_b": signed(16),        # in [-2**14, -2**13 - 1]
    "q_c": signed(30),        # in [-(2**29 - 1), 0]
    "poly_shift": unsigned(5),  # r in [0, 28]
})

#: Pipeline stages from input to output.
LATENCY = 12
#: Bits of ``B = -q_b`` (``B < 2**15``).
B_BITS = 15
#: ``out = round(q * G / 2**OUT_SHIFT)`` (``golden.gelu.GELU_OUT_SHIFT``).
OUT_SHIFT = 17
#: Multipliers per lane on the ``mul`` port: ``d**2`` (u15 x u15), ``ql G`` (u16 x u17),
#: ``qh G`` (s16 x u17).
MUL_SLOTS = 3


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
    mul : Out(MultiplierSignature(cols, MUL_SLOTS))
        The lanes' products, computed outside (the output path shares its multipliers
        between GELU, Softmax and LayerNorm); each is registered here.
    """

    def __init__(self, cols: int):
        self.cols = cols
        tag = chunk_tag_layout(cols)
        super().__init__({
            "mul": Out(MultiplierSignature(cols, MUL_SLOTS)),
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
        # The input bits that put the shifted value at 2**B_BITS or more, past any B: bit i
        # of |q| + 2**(t-1) when i >= B_BITS + t (t may be negative: a left shift).
        over_bits = Signal(unsigned(33))
        big_b = Signal(unsigned(15))
        p_max = Signal(unsigned(29))
        r = Signal(unsigned(5))
        one = Signal(unsigned(17))
        neg_t = c.shift < 0
        m.d.sync += [
            t_neg.eq(Mux(neg_t, -c.shift, 0)),
            t_pos.eq(Mux(neg_t, 0, c.shift)),
            half_t.eq(Mux(neg_t, 0, (1 << c.shift.as_unsigned()[:5]) >> 1)),
            over_bits.eq(Cat(i >= B_BITS + c.shift for i in range(33))),
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
            q = [self.i_data[j]]            # q at each stage (its sign at stage 8, q at 9)
            for k in range(1, 9):
                q.append(stage(m, en, q[-1], f"gelu_q{k}_{j}"))
            q0 = q[0]
            # 1: |q| + 2**(t-1), which is |q| for a left shift (half_t is 0 then; |q| of
            # -2**31 is 2**31, 32 bits unsigned)
            rnd = stage(m, en, Mux(q0 < 0, half_t - q0, half_t + q0)[:33], f"gelu_rnd{j}")
            # 2: the shift: the B_BITS bits min(s, B) can keep, and whether any bit above
            # them is set (then s > B): not a 45-bit shifter and compare.
            over = (rnd & over_bits).any()
            low = Mux(is_left, (rnd << t_neg)[:B_BITS], (rnd >> t_pos)[:B_BITS])
            shifted = stage(m, en, low, f"gelu_sh{j}")
            over2 = stage(m, en, over, f"gelu_over{j}")
            # 3: d = B - min(shifted, B)
            b_less = Signal(signed(B_BITS + 1), name=f"gelu_bs{j}")   # its sign: s > B
            m.d.comb += b_less.eq(big_b - shifted)
            diff = stage(m, en, Mux(over2 | b_less[-1], 0, b_less[:B_BITS]), f"gelu_diff{j}")
            # 4, 5: d**2
            sq = multiply(m, self.mul, j, 0, diff, diff, en)
            # 6, 7: (Pmax - d**2) >> r
            pm = stage(m, en, (p_max - sq)[:29], f"gelu_pm{j}")
            p_r = stage(m, en, pm >> r, f"gelu_pr{j}")
            # 8: G = one +/- (P >> r), 1 + erf at 2 * one
            g = Signal(unsigned(17), name=f"gelu_g{j}")
            m.d.comb += g.eq(Mux(q[7] < 0, one - p_r, one + p_r))
            g8 = stage(m, en, g, f"gelu_g8_{j}")
            # 9, 10: q * G
            q8 = q[8]
            lo = multiply(m, self.mul, j, 1, q8[:16], g8, en)
            hi = multiply(m, self.mul, j, 2, q8[16:].as_signed(), g8, en)
            prod = Signal(signed(50), name=f"gelu_prod{j}")
            m.d.comb += prod.eq((hi << 16) + lo)
            prod11 = stage(m, en, prod, f"gelu_prod11_{j}")
            # 12: round half away from zero, / 2**17; |out| <= |q| fits s32
            out = Signal(signed(32), name=f"gelu_out{j}")
            m.d.comb += out.eq(shift_right_half_away(prod11, OUT_SHIFT, 1 << (OUT_SHIFT - 1)))
            m.d.comb += self.o_data[j].eq(stage(m, en, out, f"gelu_out12_{j}"))

        m.d.comb += [self.o_valid.eq(valid[-1]), self.o_tag.eq(tags[-1]),
                     self.busy.eq(Cat(*valid[1:]).any())]
        return m
