"""i-Softmax over rows of up to 4096 int32 values, ``cols`` lanes per cycle, in three passes.

The datapath of ``tessera.sw.golden.softmax.i_softmax`` (I-BERT, Kim et al. 2021, arXiv
2101.01321, section 3.4, with the golden model's 20-bit exp codes). A row of ``L`` elements
arrives as ``ceil(L / cols)`` chunks, once per pass:

pass 0 (maximum)
    ``xm = max(x)`` over the lanes inside the row.
pass 1 (sum)
    ``e = i_exp(x - xm)`` per lane, ``sum(e)`` over the row; then, once per row,
    ``factor = floor(2**32 / sum)`` by the iterative :class:`~.intmath.Reciprocal`.
pass 2 (write-out)
    ``e`` again, ``out = min((e * factor) >> 23, 511)``: unsigned 9-bit probability codes
    at scale ``2**-9``, floored; the output path rounds them to 8 bits or fewer
    (``golden.softmax.i_softmax``: ``floor((floor(y) + 2**k) / 2**(k+1)) = floor((y + 2**k)
    / 2**(k+1))``, so rounding the floored 9-bit code is rounding the exact value).

i-exp per lane (widths of the golden model's table; ``t``, ``N = ln2_q``, ``q_b``, ``q_c``,
``w = out_shift`` are per-command constants):

=====  ==========================================================================  =====
stage  value                                                                       bits
=====  ==========================================================================  =====
1      ``a = xm - x``                                                              u32
2      ``a`` and ``a + 2**(t-1)``                                                  u33
3      ``a >> t`` rounded half up, or ``a << -t``: its low 19 bits, and whether    u19
       any bit above them is set
4      ``a_t = min(that, 30 N)``                                                   u19
5-7    ``z = a_t // N``, ``r = a_t - z N`` (five restoring steps, two per stage)   u5, u14
8      ``q_b - r``                                                                 u16
9, 10  ``r (q_b - r)``; ``z + w``                                                  u30
11     ``poly = q_c - r (q_b - r)``                                                u31
12     ``e = poly >> (z + w)``                                                     u20
13, 14 pass 2: ``(e >> 3) * factor`` (one 18 x 18 DSP) and ``(e & 7) * factor``     u32
15     pass 2: ``min((e * factor) >> 23, 511)``                                    u9
=====  ==========================================================================  =====

Every stage is at most one DSP multiply, one carry chain or one barrel shifter deep (two
19-bit restoring steps), for a 100 MHz clock on an ECP5 (speed 6); a product takes two
stages (:data:`~.multipliers.MULTIPLY_STAGES`: its operands and its result registered at
the shared DSP block). The chunk statistics are lane reductions, one tree level per cycle
(:func:`~.intmath.pipelined_tree`): pass 0's maximum from the input, taken at stage
:func:`max_stage`; pass 1's sum of ``e`` from stage 12, taken at stage :func:`sum_stage`.
Per-row values (``xm``, ``factor``) are only replaced after the last chunk of the pass that
makes them has reached that stage; every chunk of an earlier row that still needs them is
further down the lock-step pipeline by then, past the stage that reads them (``xm`` is read
at the input, ``factor`` from stage 12's register, and ``factor`` is replaced only after
pass 1).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .intmath import (
    STEPS_PER_CYCLE,
    Reciprocal,
    chunk_tag_layout,
    pipelined_tree,
    reciprocal_latency_cycles,
    stage,
    times_const,
    times_unsigned,
    tree_stages,
)
from .multipliers import OPERAND_BITS, MultiplierSignature, multiply

__all__ = ["SoftmaxUnit", "EXP_CONSTS", "LATENCY", "PASSES", "gap_cycles", "max_stage",
           "sum_stage", "MUL_SLOTS"]

#: The integer constants of ``golden.softmax.ExpConstants`` (their full ranges fit).
EXP_CONSTS = data.StructLayout({
    "shift": signed(6),        # t in [-16, 31]
    "ln2_q": unsigned(15),     # N in (2**13, 2**14]
    "q_b": unsigned(16),       # in [N, 2**16)
    "q_c": unsigned(31),       # in [1, 2**31)
    "out_shift": unsigned(5),  # w in [0, 31]
})

#: Pipeline stages from input to output.
LATENCY = 15
#: The stage whose register holds the exp codes ``e``.
EXP_STAGE = 12
#: Passes over each row.
PASSES = 3
#: The golden model's constants (``golden.softmax``).
EXP_Z_MAX = 30
EXP_BITS = 20
RECIP_BITS = 32
#: Bits of the clamp at ``EXP_Z_MAX`` ln 2 (``30 N < 2**19`` for ``N <= 2**14``).
CLAMP_BITS = 19
#: The unit's codes keep one bit more than the golden model's 8 (``2**-9``): the output
#: path rounds them (:class:`~.output_path.OutputPath`).
OUT_SHIFT = 23
OUT_BITS = 9
OUT_MAX = (1 << OUT_BITS) - 1
#: ``factor = floor(2**32 / sum)`` with ``sum >= 2**19`` (the row maximum's own code) is at
#: most ``2**13``.
FACTOR_BITS = 14
#: Low bits of the exp code taken out of pass 2's product, leaving an unsigned 17-bit
#: operand: the product is one signed 18 x 18 DSP block (of the output path's shared bank).
SPLIT_BITS = EXP_BITS - (OPERAND_BITS - 1)
#: Multipliers per lane on the ``mul`` port: the polynomial's ``r (q_b - r)`` (u14 x u16)
#: and pass 2's ``(e >> SPLIT_BITS) * factor`` (u17 x u14).
MUL_SLOTS = 2
INT32_MIN = -(1 << 31)


def max_stage(cols: int) -> int:
    """The stage at which pass 0's chunk maximum is taken."""
    return tree_stages(cols)


def sum_stage(cols: int) -> int:
    """The stage at which pass 1's chunk sum of exp codes is taken."""
    return EXP_STAGE + tree_stages(cols)


def gap_cycles(cols: int, steps_per_cycle: int = STEPS_PER_CYCLE) -> tuple[int, int]:
    """Idle input cycles after the last chunk of pass 0 and of pass 1 while the streams flow.

    After pass 0: the maximum's way to :func:`max_stage`. After pass 1: the sum's way to
    :func:`sum_stage` and one cycle to take it, one to start the reciprocal, and its
    latency.
    """
    return (max_stage(cols), sum_stage(cols) + 1
            + reciprocal_latency_cycles(RECIP_BITS, steps_per_cycle))


class _State(enum.Enum, shape=2):
    READY = 0       # may take the next chunk
    WAIT = 1        # the last chunk of a statistics pass is on its way
    RECIP_REQ = 2   # the sum is complete: start the reciprocal
    RECIP_WAIT = 3  # waiting for the factor


class SoftmaxUnit(wiring.Component):
    """i-Softmax, ``cols`` lanes, three passes per row; a lock-step pipeline.

    Parameters
    ----------
    cols : int
        Lanes per chunk.
    steps_per_cycle : int
        Quotient bits per cycle of the reciprocal.

    Members
    -------
    en : In(1)
        Advance the pipeline this cycle.
    i_valid, i_data, i_tag : In
        A chunk of ``cols`` int32 values and its tag (``pass_index`` 0, 1, 2). Chunks may be
        given only while ``accept`` is high.
    consts : In(EXP_CONSTS)
        Constant while a command runs; set one cycle before its first chunk.
    accept : Out(1)
        Low from the last chunk of a statistics pass until its per-row value is ready.
    o_valid, o_data, o_tag : Out
        A write-out chunk: ``cols`` unsigned 9-bit probability codes (scale ``2**-9``,
        floored), :data:`LATENCY` enabled cycles after its input.
    busy : Out(1)
        A chunk is in the pipeline or a per-row value is being computed.
    mul : Out(MultiplierSignature(cols, MUL_SLOTS))
        The lanes' products, computed outside (the output path shares its multipliers
        between GELU, Softmax and LayerNorm); each is registered here.
    """

    def __init__(self, cols: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        self.cols = cols
        self.recip = Reciprocal(RECIP_BITS, 32, steps_per_cycle)
        tag = chunk_tag_layout(cols)
        super().__init__({
            "mul": Out(MultiplierSignature(cols, MUL_SLOTS)),
            "en": In(1),
            "i_valid": In(1),
            "i_data": In(data.ArrayLayout(signed(32), cols)),
            "i_tag": In(tag),
            "consts": In(EXP_CONSTS),
            "accept": Out(1),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(unsigned(OUT_BITS), cols)),
            "o_tag": Out(tag),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.recip = self.recip
        s = self._constants(m)
        self._row_registers(m, s)
        self._stages(m, s)
        # Pass 0: the chunk maximum, with the chunk's valid bit and tag beside it.
        t0, k = self.i_tag, max_stage(self.cols)
        s.cmax = pipelined_tree(m, self.en, [Mux(t0.mask[j], self.i_data[j], INT32_MIN)
                                             for j in range(self.cols)],
                                lambda a, b: Mux(a > b, a, b), "sm_cmax", k)
        s.max_valid, s.max_tag = self.i_valid & (t0.pass_index == 0), t0
        for i in range(1, k + 1):
            s.max_valid = stage(m, self.en, s.max_valid, f"sm_max_valid{i}")
            s.max_tag = stage(m, self.en, s.max_tag, f"sm_max_tag{i}")
        s.e12 = [self._exp_lane(m, s, j) for j in range(self.cols)]
        self._sum_and_probabilities(m, s)
        self._row_statistics(m, s)
        m.d.comb += self.busy.eq(Cat(*s.valid[1:]).any() | (s.state != _State.READY))
        return m

    def _constants(self, m: Module) -> SimpleNamespace:
        """The command's constants, registered (with ln 2's multiples for the division)."""
        c = self.consts
        s = SimpleNamespace()
        for name, shape in (("t_neg", range(32)), ("t_pos", range(32)),
                            ("half_t", unsigned(31)), ("clamp", unsigned(CLAMP_BITS)),
                            ("over_bits", unsigned(33))):
            setattr(s, name, Signal(shape, name=name))
        s.n_mul = [Signal(unsigned(19), name=f"ln2_x{1 << k}") for k in range(5)]
        for name, shape in (("q_b", unsigned(16)), ("q_c", unsigned(31)), ("w", unsigned(5)),
                            ("is_left", 1)):
            setattr(s, name, Signal(shape, name=name))
        neg_t = c.shift < 0
        m.d.sync += [
            s.is_left.eq(neg_t),
            s.t_neg.eq(Mux(neg_t, -c.shift, 0)),
            s.t_pos.eq(Mux(neg_t, 0, c.shift)),
            s.half_t.eq(Mux(neg_t, 0, (1 << c.shift.as_unsigned()[:5]) >> 1)),
            s.clamp.eq(times_const(c.ln2_q, EXP_Z_MAX)),
            # The input bits that put the shifted value at 2**CLAMP_BITS or more, past any
            # clamp: bit i of a + 2**(t-1) when i >= CLAMP_BITS + t (t may be negative: a
            # left shift).
            s.over_bits.eq(Cat(i >= CLAMP_BITS + c.shift for i in range(33))),
            s.q_b.eq(c.q_b),
            s.q_c.eq(c.q_c),
            s.w.eq(c.out_shift),
        ]
        m.d.sync += [s.n_mul[k].eq(c.ln2_q << k) for k in range(5)]
        return s

    def _row_registers(self, m: Module, s: SimpleNamespace) -> None:
        """Per-row values and statistics, and the row's state."""
        for name, shape in (("row_max", signed(32)), ("max_acc", signed(32)),
                            ("sum_acc", unsigned(32)), ("factor", unsigned(FACTOR_BITS)),
                            ("state", _State)):
            setattr(s, name, Signal(shape, name=name))
        m.d.comb += self.accept.eq(s.state == _State.READY)

    def _stages(self, m: Module, s: SimpleNamespace) -> None:
        """Tags and valid bits down the pipeline. Pass-0 chunks leave the lanes after stage
        1 (their maximum has a pipeline of its own), pass-1 chunks after the exp codes."""
        s.valid = [self.i_valid]
        s.tags = [self.i_tag]
        for k in range(1, LATENCY + 1):
            keep = s.valid[-1]
            if k == 2:
                keep = keep & (s.tags[-1].pass_index != 0)
            if k == EXP_STAGE + 1:
                keep = keep & (s.tags[-1].pass_index == 2)
            s.valid.append(stage(m, self.en, keep, f"sm_valid{k}"))
            s.tags.append(stage(m, self.en, s.tags[-1], f"sm_tag{k}"))

    def _exp_lane(self, m: Module, s: SimpleNamespace, j: int):
        """Lane ``j`` from ``a = xm - x`` (stage 1) to its exp code (stage 12)."""
        en = self.en
        a = Signal(unsigned(32), name=f"sm_a{j}")
        m.d.comb += a.eq(s.row_max - self.i_data[j])
        a1 = stage(m, en, a, f"sm_a1_{j}")
        # 2-4: the input shift, then the clamp at 30 ln 2. a + 2**(t-1) is a for a left
        # shift (half_t is 0 then).
        rnd2 = stage(m, en, a1 + s.half_t, f"sm_rnd2_{j}")
        # The shift keeps the CLAMP_BITS bits the clamp can leave, and whether any bit
        # above them would be set (then the clamp wins): not a 63-bit shifter and compare.
        over = (rnd2 & s.over_bits).any()
        low = Mux(s.is_left, (rnd2 << s.t_neg)[:CLAMP_BITS], (rnd2 >> s.t_pos)[:CLAMP_BITS])
        sh3 = stage(m, en, low, f"sm_sh3_{j}")
        over3 = stage(m, en, over, f"sm_over3_{j}")
        a_t = Signal(unsigned(CLAMP_BITS), name=f"sm_at{j}")
        m.d.comb += a_t.eq(Mux(over3 | (sh3 > s.clamp), s.clamp, sh3))
        rem = stage(m, en, a_t, f"sm_at4_{j}")
        # 5-7: z = a_t // N and r = a_t % N, a restoring division with z < 32, two steps
        # per stage.
        z_bits = []
        for k in reversed(range(5)):
            # one subtraction: its borrow is the comparison
            diff = Signal(signed(CLAMP_BITS + 1), name=f"sm_div{k}_{j}")
            m.d.comb += diff.eq(rem - s.n_mul[k])
            fits = ~diff[-1]
            rem = Mux(fits, diff[:CLAMP_BITS], rem)
            z_bits.append(fits)
            if k in (3, 1, 0):
                n = {3: 5, 1: 6, 0: 7}[k]
                rem = stage(m, en, rem, f"sm_rem{n}_{j}")
                z_bits = [stage(m, en, b, f"sm_zb{n}_{i}_{j}") for i, b in enumerate(z_bits)]
        z7 = Signal(unsigned(5), name=f"sm_z7_{j}")
        m.d.comb += z7.eq(Cat(*reversed(z_bits)))
        r7 = rem[:14]
        # 8-11: the polynomial (p + q_b) p + q_c with p = -r; z + w beside it.
        qb8 = stage(m, en, (s.q_b - r7)[:16], f"sm_qb8_{j}")
        r8 = stage(m, en, r7, f"sm_r8_{j}")
        z8 = stage(m, en, z7, f"sm_z8_{j}")
        prod10 = multiply(m, self.mul, j, 0, r8, qb8, en)
        zw9 = stage(m, en, z8 + s.w, f"sm_zw9_{j}")
        zw10 = stage(m, en, zw9, f"sm_zw10_{j}")
        poly = Signal(unsigned(31), name=f"sm_poly{j}")
        m.d.comb += poly.eq(s.q_c - prod10)
        poly11 = stage(m, en, poly, f"sm_poly11_{j}")
        zw11 = stage(m, en, zw10, f"sm_zw11_{j}")
        # 12: the exp code.
        e = Signal(unsigned(EXP_BITS), name=f"sm_e{j}")
        m.d.comb += e.eq(poly11 >> zw11)
        return stage(m, en, e, f"sm_e12_{j}")

    def _sum_and_probabilities(self, m: Module, s: SimpleNamespace) -> None:
        """Pass 1: the chunk sum, taken at :func:`sum_stage`; pass 2: the probabilities
        (stages 13 to 15)."""
        en, C, t12 = self.en, self.cols, s.tags[EXP_STAGE]
        k = tree_stages(C)
        s.csum = pipelined_tree(m, en, [Mux(t12.mask[j], s.e12[j], 0) for j in range(C)],
                                lambda a, b: a + b, "sm_csum", k)
        s.sum_valid = s.valid[EXP_STAGE] & (t12.pass_index == 1)
        s.sum_tag = t12
        for i in range(1, k + 1):
            s.sum_valid = stage(m, en, s.sum_valid, f"sm_sum_valid{i}")
            s.sum_tag = stage(m, en, s.sum_tag, f"sm_sum_tag{i}")
        for j in range(C):
            # 13, 14: e * factor (u20 x u14) as one 18 x 18 DSP product, e's top 17 bits
            # times factor, and beside it e's low bits times factor (adders); 15: the two
            # added, shifted and clipped.
            e = s.e12[j]
            hi = multiply(m, self.mul, j, 1, e[SPLIT_BITS:], s.factor, en)
            lo = stage(m, en, times_unsigned(m, s.factor, e[:SPLIT_BITS], f"sm_lo{j}"),
                       f"sm_scaled_lo13_{j}")
            lo = stage(m, en, lo, f"sm_scaled_lo14_{j}")
            scaled = (hi << SPLIT_BITS) + lo
            shifted = scaled >> OUT_SHIFT
            p = Signal(unsigned(OUT_BITS), name=f"sm_p{j}")
            m.d.comb += p.eq(Mux(shifted > OUT_MAX, OUT_MAX, shifted))
            m.d.comb += self.o_data[j].eq(stage(m, en, p, f"sm_p15_{j}"))
        t = s.tags[LATENCY]
        m.d.comb += [self.o_valid.eq(s.valid[LATENCY] & (t.pass_index == 2)), self.o_tag.eq(t)]

    def _row_statistics(self, m: Module, s: SimpleNamespace) -> None:
        """The row's maximum (pass 0), its sum of exp codes (pass 1), then the reciprocal:
        the factor of pass 2."""
        en, recip, t1, t6 = self.en, self.recip, s.max_tag, s.sum_tag
        with m.If(en & s.max_valid):
            new_max = Mux(t1.first | (s.cmax > s.max_acc), s.cmax, s.max_acc)
            m.d.sync += s.max_acc.eq(new_max)
            with m.If(t1.end):
                m.d.sync += [s.row_max.eq(new_max), s.state.eq(_State.READY)]
        with m.If(en & s.sum_valid):
            new_sum = Mux(t6.first, s.csum, s.sum_acc + s.csum)
            m.d.sync += s.sum_acc.eq(new_sum)
            with m.If(t6.end):
                m.d.sync += s.state.eq(_State.RECIP_REQ)
        with m.If(self.i_valid & self.i_tag.end & (self.i_tag.pass_index != 2)):
            m.d.sync += s.state.eq(_State.WAIT)

        m.d.comb += [recip.req.payload.eq(s.sum_acc),
                     recip.req.valid.eq(s.state == _State.RECIP_REQ),
                     recip.resp.ready.eq(s.state == _State.RECIP_WAIT)]
        with m.If(recip.req.valid & recip.req.ready):
            m.d.sync += s.state.eq(_State.RECIP_WAIT)
        with m.If(recip.resp.valid & recip.resp.ready):
            # sum >= 2**19, so the factor fits FACTOR_BITS (see the module docstring).
            m.d.sync += [s.factor.eq(recip.resp.payload[:FACTOR_BITS]),
                         s.state.eq(_State.READY)]
