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
    ``e`` again, ``out = min((e * factor) >> 24, 255)``: unsigned 8-bit probabilities at
    scale ``2**-8``.

i-exp per lane (widths of the golden model's table; ``t``, ``N = ln2_q``, ``q_b``, ``q_c``,
``w = out_shift`` are per-command constants):

=====  ==========================================================================  =====
stage  value                                                                       bits
=====  ==========================================================================  =====
1      ``a = xm - x`` (pass 0: the chunk's maximum)                                u32
2      ``a_t = min(a >> t`` rounded half up, or ``a << -t``, ``30 N)``             u19
3      ``z = a_t // N``, ``r = a_t - z N`` (five restoring steps: ``z <= 30``)     u5, u14
4      ``poly = q_c - r (q_b - r)``                                                u31
5      ``e = poly >> (z + w)``                                                     u20
6      pass 1: the chunk's sum of ``e``; pass 2: ``min((e * factor) >> 24, 255)``  u8
=====  ==========================================================================  =====

Statistics are taken where they are ready: the chunk maximum at stage 1, the chunk sum at
stage 6. Per-row values (``xm``, ``factor``) are only replaced after the last chunk of the
pass that makes them has reached that stage; every chunk of an earlier row that still
needs them is further down the lock-step pipeline by then, past the stage that reads them.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .intmath import (
    STEPS_PER_CYCLE,
    Reciprocal,
    chunk_tag_layout,
    reciprocal_latency_cycles,
    reduce_tree,
    stage,
)

__all__ = ["SoftmaxUnit", "EXP_CONSTS", "LATENCY", "PASSES", "gap_cycles"]

#: The integer constants of ``golden.softmax.ExpConstants`` (their full ranges fit).
EXP_CONSTS = data.StructLayout({
    "shift": signed(6),        # t in [-16, 31]
    "ln2_q": unsigned(15),     # N in (2**13, 2**14]
    "q_b": unsigned(16),       # in [N, 2**16)
    "q_c": unsigned(31),       # in [1, 2**31)
    "out_shift": unsigned(5),  # w in [0, 31]
})

#: Pipeline stages from input to output (and to the sum).
LATENCY = 6
#: Passes over each row.
PASSES = 3
#: The golden model's constants (``golden.softmax``).
EXP_Z_MAX = 30
EXP_BITS = 20
RECIP_BITS = 32
OUT_SHIFT = 24
OUT_MAX = 255
#: ``factor = floor(2**32 / sum)`` with ``sum >= 2**19`` (the row maximum's own code) is at
#: most ``2**13``.
FACTOR_BITS = 14
INT32_MIN = -(1 << 31)


def gap_cycles(steps_per_cycle: int = STEPS_PER_CYCLE) -> tuple[int, int]:
    """Idle input cycles after the last chunk of pass 0 and of pass 1 while the streams flow.

    After pass 0: one (the maximum is taken at stage 1). After pass 1: the sum's way to
    stage 6 and one cycle to take it, one to start the reciprocal, and its latency.
    """
    return 1, LATENCY + 1 + reciprocal_latency_cycles(RECIP_BITS, steps_per_cycle)


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
        A write-out chunk: ``cols`` unsigned 8-bit probabilities, :data:`LATENCY` enabled
        cycles after its input.
    busy : Out(1)
        A chunk is in the pipeline or a per-row value is being computed.
    """

    def __init__(self, cols: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        self.cols = cols
        self.recip = Reciprocal(RECIP_BITS, 32, steps_per_cycle)
        tag = chunk_tag_layout(cols)
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "i_data": In(data.ArrayLayout(signed(32), cols)),
            "i_tag": In(tag),
            "consts": In(EXP_CONSTS),
            "accept": Out(1),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(unsigned(8), cols)),
            "o_tag": Out(tag),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.recip = self.recip
        s = self._constants(m)
        self._row_registers(m, s)
        self._stages(m, s)
        # Stage 1: the chunk maximum (pass 0) and a = xm - x (passes 1, 2).
        lanes_in = [Mux(self.i_tag.mask[j], self.i_data[j], INT32_MIN)
                    for j in range(self.cols)]
        cmax = Signal(signed(32))
        m.d.comb += cmax.eq(reduce_tree(lanes_in, lambda a, b: Mux(a > b, a, b)))
        s.cmax1 = stage(m, self.en, cmax, "sm_cmax1")
        s.e5 = [self._exp_lane(m, s, j) for j in range(self.cols)]
        self._sum_and_probabilities(m, s)
        self._row_statistics(m, s)
        m.d.comb += self.busy.eq(Cat(*s.valid[1:]).any() | (s.state != _State.READY))
        return m

    def _constants(self, m: Module) -> SimpleNamespace:
        """The command's constants, registered (with ln 2's multiples for the division)."""
        c = self.consts
        s = SimpleNamespace()
        for name, shape in (("t_neg", range(32)), ("t_pos", range(32)),
                            ("half_t", unsigned(31)), ("clamp", unsigned(19))):
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
            s.clamp.eq(c.ln2_q * EXP_Z_MAX),
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
        """Tags and valid bits down the pipeline. Pass-0 chunks end at stage 1, where their
        maximum is taken."""
        s.valid = [self.i_valid]
        s.tags = [self.i_tag]
        for k in range(1, LATENCY + 1):
            keep = s.valid[-1] if k != 2 else s.valid[-1] & (s.tags[-1].pass_index != 0)
            s.valid.append(stage(m, self.en, keep, f"sm_valid{k}"))
            s.tags.append(stage(m, self.en, s.tags[-1], f"sm_tag{k}"))

    def _exp_lane(self, m: Module, s: SimpleNamespace, j: int):
        """Lane ``j`` from ``a = xm - x`` (stage 1) to its exp code (stage 5)."""
        en = self.en
        a = Signal(unsigned(32), name=f"sm_a{j}")
        m.d.comb += a.eq(s.row_max - self.i_data[j])
        a1 = stage(m, en, a, f"sm_a1_{j}")
        # Stage 2: the input shift, then the clamp at 30 ln 2.
        shifted = Mux(s.is_left, a1 << s.t_neg, (a1 + s.half_t) >> s.t_pos)
        a_t = Signal(unsigned(19), name=f"sm_at{j}")
        m.d.comb += a_t.eq(Mux(shifted > s.clamp, s.clamp, shifted))
        a_t2 = stage(m, en, a_t, f"sm_at2_{j}")
        # Stage 3: z = a_t // N and r = a_t % N, a restoring division with z < 32.
        rem = a_t2
        z_bits = []
        for k in reversed(range(5)):
            fits = rem >= s.n_mul[k]
            rem = Mux(fits, rem - s.n_mul[k], rem)
            z_bits.append(fits)
        z = Signal(unsigned(5), name=f"sm_z{j}")
        r = Signal(unsigned(14), name=f"sm_r{j}")
        m.d.comb += [z.eq(Cat(*reversed(z_bits))), r.eq(rem)]
        z3 = stage(m, en, z, f"sm_z3_{j}")
        r3 = stage(m, en, r, f"sm_r3_{j}")
        # Stage 4: the polynomial (p + q_b) p + q_c with p = -r.
        poly = Signal(unsigned(31), name=f"sm_poly{j}")
        m.d.comb += poly.eq(s.q_c - r3 * (s.q_b - r3))
        poly4 = stage(m, en, poly, f"sm_poly4_{j}")
        z4 = stage(m, en, z3, f"sm_z4_{j}")
        # Stage 5: the exp code.
        e = Signal(unsigned(EXP_BITS), name=f"sm_e{j}")
        m.d.comb += e.eq(poly4 >> (z4 + s.w))
        return stage(m, en, e, f"sm_e5_{j}")

    def _sum_and_probabilities(self, m: Module, s: SimpleNamespace) -> None:
        """Stage 6: the chunk sum (pass 1) or the probabilities (pass 2)."""
        en, C, t5 = self.en, self.cols, s.tags[5]
        csum = Signal(unsigned(EXP_BITS + C.bit_length()))
        m.d.comb += csum.eq(reduce_tree([Mux(t5.mask[j], s.e5[j], 0) for j in range(C)],
                                        lambda a, b: a + b))
        s.csum6 = stage(m, en, csum, "sm_csum6")
        for j in range(C):
            scaled = Signal(unsigned(EXP_BITS + FACTOR_BITS), name=f"sm_scaled{j}")
            m.d.comb += scaled.eq(s.e5[j] * s.factor)
            shifted = scaled >> OUT_SHIFT
            p = Signal(unsigned(8), name=f"sm_p{j}")
            m.d.comb += p.eq(Mux(shifted > OUT_MAX, OUT_MAX, shifted))
            m.d.comb += self.o_data[j].eq(stage(m, en, p, f"sm_p6_{j}"))
        t6 = s.tags[6]
        m.d.comb += [self.o_valid.eq(s.valid[6] & (t6.pass_index == 2)), self.o_tag.eq(t6)]

    def _row_statistics(self, m: Module, s: SimpleNamespace) -> None:
        """The row's maximum (pass 0), its sum of exp codes (pass 1), then the reciprocal:
        the factor of pass 2."""
        en, recip, t1, t6 = self.en, self.recip, s.tags[1], s.tags[6]
        with m.If(en & s.valid[1] & (t1.pass_index == 0)):
            new_max = Mux(t1.first | (s.cmax1 > s.max_acc), s.cmax1, s.max_acc)
            m.d.sync += s.max_acc.eq(new_max)
            with m.If(t1.end):
                m.d.sync += [s.row_max.eq(new_max), s.state.eq(_State.READY)]
        with m.If(en & s.valid[6] & (t6.pass_index == 1)):
            new_sum = Mux(t6.first, s.csum6, s.sum_acc + s.csum6)
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
