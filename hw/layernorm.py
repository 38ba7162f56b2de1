"""i-LayerNorm over rows of up to 4096 int32 values, ``cols`` lanes per cycle, in three passes.

The datapath of ``tessera.sw.golden.layernorm`` (after I-BERT, Kim et al. 2021, arXiv
2101.01321, section 3.5, with the golden model's exact mean and per-row pre-shift). A row of
``n`` elements arrives as ``ceil(n / cols)`` chunks, once per pass:

pass 0 (sum, minimum, maximum)
    then, once per row (3 cycles): ``dmax = max(n max - sum, sum - n min)`` and the
    pre-shift ``s = bit_length(dmax) - 15`` (0 if ``dmax = 0``).
pass 1 (variance)
    ``d = (n x - sum)`` shifted by ``s`` into int16; ``var = sum(d**2)``; then, once per row,
    ``root = isqrt(var)`` (:class:`~.intmath.IntSqrt`) and ``factor = floor(2**31 / root)``
    (:class:`~.intmath.Reciprocal`).
pass 2 (write-out)
    ``d`` again, ``y = (d * factor) >> 1``, ``acc = y * gamma_q + beta_q``,
    ``acc32 = round_half_away(acc / 2**16)``; the output path then requantizes ``acc32`` with
    the command's ``m, e`` to int8.

Per lane (``s`` is signed: right with floor if ``s >= 0``, left otherwise):

=====  ==================================================================  =====
stage  value                                                               bits
=====  ==================================================================  =====
1      ``n x`` (pass 0: the chunk's sum, minimum and maximum)              s46
2      ``dev = n x - sum``                                                 s46
3      ``d = dev >> s`` or ``dev << -s``                                   s16
4      pass 1: ``d**2``; pass 2: ``y = (d * factor) >> 1`` (one multiplier) s33
5      pass 1: the chunk's sum of ``d**2``; pass 2: ``y * gamma_q``        s48
6      pass 2: ``acc32 = (y gamma_q + beta_q) / 2**16``, half away         s32
=====  ==================================================================  =====

gamma and beta come with each write-out chunk (the output path's ``i_param`` stream) and
travel down the pipeline beside it. Statistics are taken where they are ready: sum / min /
max at stage 1, the variance at stage 5. Per-row values (``sum``, ``s``, ``factor``) are
replaced only after the last chunk of the pass that makes them has reached that stage; every
chunk of an earlier row that still reads them is further down the lock-step pipeline,
past the stage that reads them (``sum`` at 1, ``s`` at 2, ``factor`` at 3).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .config import MAX_ROW_LEN
from .intmath import (
    STEPS_PER_CYCLE,
    IntSqrt,
    Reciprocal,
    bit_length,
    chunk_tag_layout,
    reciprocal_latency_cycles,
    reduce_tree,
    shift_right_half_away,
    sqrt_latency_cycles,
    stage,
)

__all__ = ["LayerNormUnit", "LATENCY", "PASSES", "GAMMA_BITS", "BETA_BITS", "LENGTH_BITS",
           "gap_cycles"]

#: Pipeline stages from input to output.
LATENCY = 6
#: Passes over each row.
PASSES = 3
#: gamma_q is int16; beta_q has ``|beta_q| < 2**45`` (golden ``BETA_LIMIT``): s46.
GAMMA_BITS = 16
BETA_BITS = 46
#: Row lengths up to the configuration's limit (13 bits for 4096).
LENGTH_BITS = MAX_ROW_LEN.bit_length()
#: The golden model's constants (``golden.layernorm``).
DEV_BITS = 15
RECIP_BITS = 31
ACC_SHIFT = 16
VAR_BITS = 43
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def gap_cycles(steps_per_cycle: int = STEPS_PER_CYCLE) -> tuple[int, int]:
    """Idle input cycles after the last chunk of pass 0 and of pass 1 while the streams flow.

    After pass 0: one (the statistics are taken at stage 1) and three for the pre-shift.
    After pass 1: the variance's way to stage 5 and one cycle to take it, one to start the
    square root, its latency, and the reciprocal's (it starts as the root arrives).
    """
    return (1 + 3, 5 + 1 + sqrt_latency_cycles(VAR_BITS, steps_per_cycle)
            + reciprocal_latency_cycles(RECIP_BITS, steps_per_cycle))


class _State(enum.Enum, shape=3):
    READY = 0
    WAIT = 1         # the last chunk of a statistics pass is on its way
    SCALE_MUL = 2    # n * max, n * min
    SCALE_DMAX = 3   # dmax
    SCALE_SHIFT = 4  # s
    SQRT_REQ = 5     # start the square root
    SQRT_WAIT = 6    # square root, then reciprocal, running
    RECIP_WAIT = 7


class LayerNormUnit(wiring.Component):
    """i-LayerNorm, ``cols`` lanes, three passes per row; a lock-step pipeline.

    Parameters
    ----------
    cols : int
        Lanes per chunk.
    steps_per_cycle : int
        Root / quotient bits per cycle of the square root and the reciprocal.

    Members
    -------
    en : In(1)
        Advance the pipeline this cycle.
    i_valid, i_data, i_gamma, i_beta, i_tag : In
        A chunk of ``cols`` int32 values, its gamma_q / beta_q lanes (used in pass 2) and
        its tag. Chunks may be given only while ``accept`` is high.
    length : In(unsigned(LENGTH_BITS))
        ``n``, the row length; constant while a command runs.
    accept : Out(1)
        Low from the last chunk of a statistics pass until its per-row values are ready.
    o_valid, o_data, o_tag : Out
        A write-out chunk: ``cols`` values ``acc32`` (int32, to be requantized).
    busy : Out(1)
        A chunk is in the pipeline or a per-row value is being computed.
    """

    def __init__(self, cols: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        self.cols = cols
        self.sqrt = IntSqrt(VAR_BITS, steps_per_cycle)
        self.recip = Reciprocal(RECIP_BITS, self.sqrt.root_bits, steps_per_cycle)
        tag = chunk_tag_layout(cols)
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "i_data": In(data.ArrayLayout(signed(32), cols)),
            "i_gamma": In(data.ArrayLayout(signed(GAMMA_BITS), cols)),
            "i_beta": In(data.ArrayLayout(signed(BETA_BITS), cols)),
            "i_tag": In(tag),
            "length": In(unsigned(LENGTH_BITS)),
            "accept": Out(1),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(signed(32), cols)),
            "o_tag": Out(tag),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sqrt = isqrt = self.sqrt
        m.submodules.recip = recip = self.recip
        en = self.en
        C = self.cols
        n = self.length

        # Per-row values and statistics.
        sum_acc = Signal(signed(44))
        min_acc = Signal(signed(32))
        max_acc = Signal(signed(32))
        var_acc = Signal(unsigned(VAR_BITS))
        n_max = Signal(signed(46))
        n_min = Signal(signed(46))
        dmax = Signal(unsigned(45))
        row_sum = Signal(signed(44))
        s_right = Signal(range(32))
        s_left = Signal(range(16))
        factor = Signal(unsigned(RECIP_BITS + 1))
        state = Signal(_State)
        m.d.comb += self.accept.eq(state == _State.READY)

        # Tags and valid bits. Pass-0 chunks end at stage 1, pass-1 chunks at stage 5.
        valid = [self.i_valid]
        tags = [self.i_tag]
        for k in range(1, LATENCY + 1):
            keep = valid[-1]
            if k == 2:
                keep = keep & (tags[-1].pass_index != 0)
            if k == 6:
                keep = keep & (tags[-1].pass_index == 2)
            valid.append(stage(m, en, keep, f"ln_valid{k}"))
            tags.append(stage(m, en, tags[-1], f"ln_tag{k}"))

        # Stage 1, pass 0: the chunk's sum, minimum and maximum over the lanes in the row.
        t0 = self.i_tag
        lanes = range(C)
        csum = Signal(signed(32 + C.bit_length()))
        cmin = Signal(signed(32))
        cmax = Signal(signed(32))
        m.d.comb += [
            csum.eq(reduce_tree([Mux(t0.mask[j], self.i_data[j], 0) for j in lanes],
                                lambda a, b: a + b)),
            cmin.eq(reduce_tree([Mux(t0.mask[j], self.i_data[j], INT32_MAX) for j in lanes],
                                lambda a, b: Mux(a < b, a, b))),
            cmax.eq(reduce_tree([Mux(t0.mask[j], self.i_data[j], INT32_MIN) for j in lanes],
                                lambda a, b: Mux(a > b, a, b))),
        ]
        csum1 = stage(m, en, csum, "ln_csum1")
        cmin1 = stage(m, en, cmin, "ln_cmin1")
        cmax1 = stage(m, en, cmax, "ln_cmax1")

        t3 = tags[3]
        t4 = tags[4]
        sq4 = []
        for j in lanes:
            # Stage 1: n x.
            nx = Signal(signed(46), name=f"ln_nx{j}")
            m.d.comb += nx.eq(self.i_data[j] * n)
            nx1 = stage(m, en, nx, f"ln_nx1_{j}")
            # Stage 2: the exact deviation n (x - mean).
            dev = Signal(signed(46), name=f"ln_dev{j}")
            m.d.comb += dev.eq(nx1 - row_sum)
            dev2 = stage(m, en, dev, f"ln_dev2_{j}")
            # Stage 3: the pre-shift into int16.
            d = Signal(signed(16), name=f"ln_d{j}")
            m.d.comb += d.eq(Mux(s_left != 0, dev2 << s_left, dev2 >> s_right)[:16].as_signed())
            d3 = stage(m, en, d, f"ln_d3_{j}")
            # Stage 4: one multiplier for d**2 (pass 1) and d * factor (pass 2).
            other = Signal(signed(RECIP_BITS + 3), name=f"ln_other{j}")
            m.d.comb += other.eq(Mux(t3.pass_index == 1, d3, factor))
            prod = Signal(signed(16 + RECIP_BITS + 3), name=f"ln_prod{j}")
            m.d.comb += prod.eq(d3 * other)
            val = Signal(signed(33), name=f"ln_val{j}")
            # |d| <= root, so |d * factor| <= 2**31 and y = (d * factor) >> 1 fits s32.
            m.d.comb += val.eq(Mux(t3.pass_index == 1, prod, prod >> 1))
            val4 = stage(m, en, val, f"ln_val4_{j}")
            sq4.append(val4)
            # gamma and beta travel beside the chunk.
            gamma = self.i_gamma[j]
            beta = self.i_beta[j]
            for k in range(1, 5):
                gamma = stage(m, en, gamma, f"ln_gamma{k}_{j}")
            for k in range(1, 6):
                beta = stage(m, en, beta, f"ln_beta{k}_{j}")
            # Stage 5, pass 2: y * gamma_q.
            yg = Signal(signed(48), name=f"ln_yg{j}")
            m.d.comb += yg.eq(val4 * gamma)
            yg5 = stage(m, en, yg, f"ln_yg5_{j}")
            # Stage 6: + beta_q, then / 2**16 rounded half away from zero.
            acc = Signal(signed(48), name=f"ln_acc{j}")
            m.d.comb += acc.eq(yg5 + beta)
            out = Signal(signed(32), name=f"ln_out{j}")
            m.d.comb += out.eq(shift_right_half_away(acc, ACC_SHIFT, 1 << (ACC_SHIFT - 1)))
            m.d.comb += self.o_data[j].eq(stage(m, en, out, f"ln_out6_{j}"))

        # Stage 5, pass 1: the chunk's sum of squares.
        cvar = Signal(unsigned(31 + C.bit_length()))
        m.d.comb += cvar.eq(reduce_tree([Mux(t4.mask[j], sq4[j][:31], 0) for j in lanes],
                                        lambda a, b: a + b))
        cvar5 = stage(m, en, cvar, "ln_cvar5")
        t6 = tags[6]
        m.d.comb += [self.o_valid.eq(valid[6]), self.o_tag.eq(t6)]

        # Pass 0 statistics, then the pre-shift.
        t1 = tags[1]
        with m.If(en & valid[1] & (t1.pass_index == 0)):
            new_sum = Mux(t1.first, csum1, sum_acc + csum1)
            m.d.sync += [
                sum_acc.eq(new_sum),
                min_acc.eq(Mux(t1.first | (cmin1 < min_acc), cmin1, min_acc)),
                max_acc.eq(Mux(t1.first | (cmax1 > max_acc), cmax1, max_acc)),
            ]
            with m.If(t1.end):
                m.d.sync += state.eq(_State.SCALE_MUL)
        with m.If(state == _State.SCALE_MUL):
            m.d.sync += [n_max.eq(max_acc * n), n_min.eq(min_acc * n),
                         state.eq(_State.SCALE_DMAX)]
        with m.If(state == _State.SCALE_DMAX):
            hi = n_max - sum_acc
            lo = sum_acc - n_min
            m.d.sync += [dmax.eq(Mux(hi > lo, hi, lo)), state.eq(_State.SCALE_SHIFT)]
        with m.If(state == _State.SCALE_SHIFT):
            s = Signal(signed(7))
            m.d.comb += s.eq(Mux(dmax == 0, 0, bit_length(dmax) - DEV_BITS))
            m.d.sync += [row_sum.eq(sum_acc), s_right.eq(Mux(s > 0, s, 0)),
                         s_left.eq(Mux(s < 0, -s, 0)), state.eq(_State.READY)]

        # Pass 1 statistic, then the square root and the reciprocal.
        t5 = tags[5]
        with m.If(en & valid[5] & (t5.pass_index == 1)):
            new_var = Mux(t5.first, cvar5, var_acc + cvar5)
            m.d.sync += var_acc.eq(new_var)
            with m.If(t5.end):
                m.d.sync += state.eq(_State.SQRT_REQ)
        m.d.comb += [
            isqrt.req.payload.eq(var_acc),
            isqrt.req.valid.eq(state == _State.SQRT_REQ),
            recip.req.payload.eq(isqrt.resp.payload),
            recip.req.valid.eq(isqrt.resp.valid & (state == _State.SQRT_WAIT)),
            isqrt.resp.ready.eq(recip.req.ready & (state == _State.SQRT_WAIT)),
            recip.resp.ready.eq(state == _State.RECIP_WAIT),
        ]
        with m.If(isqrt.req.valid & isqrt.req.ready):
            m.d.sync += state.eq(_State.SQRT_WAIT)
        with m.If(recip.req.valid & recip.req.ready):
            m.d.sync += state.eq(_State.RECIP_WAIT)
        with m.If(recip.resp.valid & recip.resp.ready):
            m.d.sync += [factor.eq(recip.resp.payload), state.eq(_State.READY)]

        with m.If(self.i_valid & self.i_tag.end & (self.i_tag.pass_index != 2)):
            m.d.sync += state.eq(_State.WAIT)

        m.d.comb += self.busy.eq(Cat(*valid[1:]).any() | (state != _State.READY))
        return m
