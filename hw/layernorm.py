"""i-LayerNorm over rows of up to 4096 int32 values, ``cols`` lanes per cycle, in three passes.

The datapath of ``tessera.sw.golden.layernorm`` (after I-BERT, Kim et al. 2021, arXiv
2101.01321, section 3.5, with the golden model's exact mean and per-row pre-shift). A row of
``n`` elements arrives as ``ceil(n / cols)`` chunks, once per pass:

pass 0 (sum, minimum, maximum)
    then, once per row (:data:`SCALE_CYCLES` cycles, ``n max`` and ``n min`` in lanes 0
    and 1's multipliers): ``dmax = max(n max - sum, sum - n min)`` and the pre-shift
    ``s = bit_length(dmax) - 15`` (0 if ``dmax = 0``).
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
1, 2   ``xh n``, ``xl n`` (``x = xh 2**16 + xl``: one 18 x 18 DSP each)      s30
3      ``n x``                                                             s46
4      ``dev = n x - sum``                                                 s46
5      ``d = dev >> s`` or ``dev << -s``                                   s16
6, 7   ``d * d`` (pass 1) or ``d * (factor mod 2**17)`` (pass 2): one     s34
       18 x 18 DSP for both (``factor = 2**17`` is a shift, see
       :data:`FACTOR_BITS`)
8      pass 1: ``d**2``; pass 2: ``y = (d * factor) >> 1``                 s33
9, 10  pass 2: the partial products of ``y * gamma_q``                     s34
11     ``y * gamma_q``                                                     s48
12     ``y gamma_q + beta_q``                                              s48
13     ``acc32 = (y gamma_q + beta_q) / 2**16``, half away                 s32
=====  ==================================================================  =====

Every stage is at most one DSP multiply, one carry chain or one barrel shifter deep, for a
100 MHz clock on an ECP5 (speed 6); a product takes two stages
(:data:`~.multipliers.MULTIPLY_STAGES`: its operands and its result registered at the
shared DSP block). The chunk statistics are lane reductions, one tree level per cycle
(:func:`~.intmath.pipelined_tree`): pass 0's sum, minimum and maximum from the input,
taken at stage :func:`stats_stage`; pass 1's sum of ``d**2`` from stage 8, taken at stage
:func:`var_stage`.

gamma and beta come with each write-out chunk (the output path's ``i_param`` stream) and
travel down the pipeline beside it. Per-row values (``sum``, ``s``, ``factor``) are
replaced only after the last chunk of the pass that makes them has reached the stage
where its statistic is taken; every chunk of an earlier row that still reads them is
further down the lock-step pipeline by then, past the stage that reads them (``sum`` and
``s`` are read from the registers of stages 3 and 4, and pass 0's statistics are taken no
earlier than stage 4, whatever the lane count; ``factor`` is read from stage 5's and
replaced after pass 1).
"""

from types import SimpleNamespace

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
    pipelined_tree,
    reciprocal_latency_cycles,
    shift_right_half_away,
    sqrt_latency_cycles,
    stage,
    tree_stages,
)
from .multipliers import MultiplierSignature, multiply

__all__ = ["LayerNormUnit", "LATENCY", "PASSES", "GAMMA_BITS", "BETA_BITS", "LENGTH_BITS",
           "gap_cycles", "stats_stage", "var_stage", "MUL_SLOTS"]

#: Pipeline stages from input to output.
LATENCY = 13
#: Multipliers per lane on the ``mul`` port: ``xl n`` (u16 x u13), ``xh n`` (s16 x u13),
#: ``d * d`` or ``d * factor`` (s16 x s18), ``yl gamma`` (u17 x s16), ``yh gamma``
#: (s16 x s16).
MUL_SLOTS = 5
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
#: ``factor = floor(2**31 / root)`` goes into pass 2's product as its low ``FACTOR_BITS``
#: bits and bit ``FACTOR_BITS``: a row that is not constant has a deviation with
#: ``|d| >= 2**14`` after the pre-shift, so ``root >= 2**14`` and ``factor <= 2**17``, and
#: 2**17 (bit 17 alone) is a shift; a constant row has ``root = 0`` (``factor`` all ones)
#: and every ``d = 0``. (Tested through the golden model in test_output_path_bounds.py.)
FACTOR_BITS = 17
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


#: The stages whose registers feed the reads of ``sum`` (the deviation) and ``s`` (the
#: pre-shift); pass 0's statistics are taken no earlier than the later of them.
SUM_READ_STAGE, SHIFT_READ_STAGE = 3, 4
#: The stage whose register holds pass 1's ``d**2`` (the variance tree's input).
SQUARE_STAGE = 8
#: Cycles from pass 0's statistics to the pre-shift: ``n max`` and ``n min`` (in lanes 0
#: and 1's multipliers: two cycles), their partial products added, ``dmax``, its bit
#: length, ``s``.
SCALE_CYCLES = 6


def stats_stage(cols: int) -> int:
    """The stage at which pass 0's chunk sum, minimum and maximum are taken."""
    return max(tree_stages(cols), SHIFT_READ_STAGE)


def var_stage(cols: int) -> int:
    """The stage at which pass 1's chunk sum of ``d**2`` is taken."""
    return SQUARE_STAGE + tree_stages(cols)


def gap_cycles(cols: int, steps_per_cycle: int = STEPS_PER_CYCLE) -> tuple[int, int]:
    """Idle input cycles after the last chunk of pass 0 and of pass 1 while the streams flow.

    After pass 0: the statistics' way to :func:`stats_stage`, and :data:`SCALE_CYCLES` for the
    pre-shift. After pass 1: the variance's way to :func:`var_stage` and one cycle to take
    it, the square root's latency, and the reciprocal's (it starts as the root arrives).
    """
    return (stats_stage(cols) + SCALE_CYCLES, var_stage(cols) + 1
            + sqrt_latency_cycles(VAR_BITS, steps_per_cycle)
            + reciprocal_latency_cycles(RECIP_BITS, steps_per_cycle))


class _State(enum.Enum, shape=4):
    READY = 0
    WAIT = 1         # the last chunk of a statistics pass is on its way
    SCALE_MUL = 2    # n * max, n * min: their operands into lanes 0 and 1's multipliers
    SCALE_MUL2 = 3   # ... and their products
    SCALE_SUM = 4    # their partial products added
    SCALE_DMAX = 5   # dmax
    SCALE_BITS = 6   # its bit length
    SCALE_SHIFT = 7  # s
    SQRT_REQ = 8     # start the square root
    SQRT_WAIT = 9    # square root, then reciprocal, running
    RECIP_WAIT = 10


class LayerNormUnit(wiring.Component):
    """i-LayerNorm, ``cols`` lanes, three passes per row; a lock-step pipeline.

    Parameters
    ----------
    cols : int
        Lanes per chunk, at least 2.
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
    mul : Out(MultiplierSignature(cols, MUL_SLOTS))
        The lanes' products, computed outside (the output path shares its multipliers
        between GELU, Softmax and LayerNorm); each is registered here.

    Raises
    ------
    ValueError
        If ``cols`` is below 2.
    """

    def __init__(self, cols: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        if not isinstance(cols, int) or cols < 2:
            raise ValueError(f"cols must be an integer of at least 2 (n max and n min take "
                             f"lanes 0 and 1's multipliers), not {cols!r}")
        self.cols = cols
        self.sqrt = IntSqrt(VAR_BITS, steps_per_cycle)
        self.recip = Reciprocal(RECIP_BITS, self.sqrt.root_bits, steps_per_cycle)
        tag = chunk_tag_layout(cols)
        super().__init__({
            "mul": Out(MultiplierSignature(cols, MUL_SLOTS)),
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
        m.submodules.sqrt = self.sqrt
        m.submodules.recip = self.recip
        s = self._row_registers(m)
        self._stages(m, s)
        self._chunk_stats(m, s)
        for j in range(self.cols):
            self._lane(m, s, j)
        self._square_sum(m, s)
        self._scale(m, s)
        self._root(m, s)
        with m.If(self.i_valid & self.i_tag.end & (self.i_tag.pass_index != 2)):
            m.d.sync += s.state.eq(_State.WAIT)
        m.d.comb += self.busy.eq(Cat(*s.valid[1:]).any() | (s.state != _State.READY))
        return m

    def _row_registers(self, m: Module) -> SimpleNamespace:
        """Per-row values and statistics, and the row's state."""
        s = SimpleNamespace()
        for name, shape in (("sum_acc", signed(44)), ("min_acc", signed(32)),
                            ("max_acc", signed(32)), ("var_acc", unsigned(VAR_BITS)),
                            ("n_max", signed(46)), ("n_min", signed(46)), ("dmax", unsigned(45)),
                            ("dmax_bits", range(46)),
                            ("row_sum", signed(44)), ("s_right", range(32)),
                            ("s_left", range(16)), ("factor", unsigned(RECIP_BITS + 1)),
                            ("state", _State)):
            setattr(s, name, Signal(shape, name=name))
        s.scale_mul = Signal(name="scale_mul")    # state in (SCALE_MUL, SCALE_MUL2)
        m.d.comb += self.accept.eq(s.state == _State.READY)
        return s

    def _stages(self, m: Module, s: SimpleNamespace) -> None:
        """Tags and valid bits down the pipeline. Pass-0 chunks leave the lanes after stage
        1 (their statistics have a pipeline of their own), pass-1 chunks after the stage
        of ``d**2``."""
        s.valid = [self.i_valid]
        s.tags = [self.i_tag]
        for k in range(1, LATENCY + 1):
            keep = s.valid[-1]
            if k == 2:
                keep = keep & (s.tags[-1].pass_index != 0)
            if k == SQUARE_STAGE + 1:
                keep = keep & (s.tags[-1].pass_index == 2)
            s.valid.append(stage(m, self.en, keep, f"ln_valid{k}"))
            s.tags.append(stage(m, self.en, s.tags[-1], f"ln_tag{k}"))

    def _chunk_stats(self, m: Module, s: SimpleNamespace) -> None:
        """Pass 0: the chunk's sum, minimum and maximum over the lanes in the row, taken at
        :func:`stats_stage` (with the chunk's valid bit and tag beside them)."""
        en, t0, lanes, k = self.en, self.i_tag, range(self.cols), stats_stage(self.cols)
        s.csum = pipelined_tree(m, en, [Mux(t0.mask[j], self.i_data[j], 0) for j in lanes],
                                lambda a, b: a + b, "ln_csum", k)
        s.cmin = pipelined_tree(m, en, [Mux(t0.mask[j], self.i_data[j], INT32_MAX)
                                        for j in lanes],
                                lambda a, b: Mux(a < b, a, b), "ln_cmin", k)
        s.cmax = pipelined_tree(m, en, [Mux(t0.mask[j], self.i_data[j], INT32_MIN)
                                        for j in lanes],
                                lambda a, b: Mux(a > b, a, b), "ln_cmax", k)
        s.stats_valid, s.stats_tag = self.i_valid & (t0.pass_index == 0), t0
        for i in range(1, k + 1):
            s.stats_valid = stage(m, en, s.stats_valid, f"ln_stats_valid{i}")
            s.stats_tag = stage(m, en, s.stats_tag, f"ln_stats_tag{i}")
        s.sq, s.nx = [], []

    def _lane(self, m: Module, s: SimpleNamespace, j: int) -> None:
        """Lane ``j``'s datapath: the deviation, its pre-shift, one multiplier pair for
        d**2 (pass 1) and d * factor (pass 2), then gamma, beta and the final shift."""
        en, t5 = self.en, s.tags[5]
        x, load = self.i_data[j], en
        if j < 2:
            # Once per row, in SCALE_MUL and SCALE_MUL2, lanes 0 and 1 take n * max and
            # n * min: no chunk is in stages 1 and 2 then (none is taken from the end of
            # pass 0 until the pre-shift is ready), so their multipliers are free and the
            # bubble's registers may load. (The select is a register of its own: a state
            # decode in front of the operands' registers would be two LUT levels more.)
            x, load = Mux(s.scale_mul, (s.max_acc, s.min_acc)[j], x), en | s.scale_mul
        # 1-3: n x
        lo = multiply(m, self.mul, j, 0, x[:16], self.length, load)
        hi = multiply(m, self.mul, j, 1, x[16:].as_signed(), self.length, load)
        nx = Signal(signed(46), name=f"ln_nx{j}")
        m.d.comb += nx.eq((hi << 16) + lo)
        s.nx.append(nx)
        nx3 = stage(m, en, nx, f"ln_nx3_{j}")
        # 4: the exact deviation n (x - mean)
        dev4 = stage(m, en, (nx3 - s.row_sum)[:46].as_signed(), f"ln_dev4_{j}")
        # 5: the pre-shift into int16
        d = Signal(signed(16), name=f"ln_d{j}")
        m.d.comb += d.eq(Mux(s.s_left != 0, dev4 << s.s_left, dev4 >> s.s_right)[:16]
                         .as_signed())
        d5 = stage(m, en, d, f"ln_d5_{j}")
        # 6, 7: one 18 x 18 multiplier for d**2 (pass 1) and d * factor (pass 2). In pass
        # 2 either factor <= 2**17 (root >= 2**14), whose only value with bit 17 set is
        # 2**17 itself, a shift; or root = 0 and every d of the row is 0 (see FACTOR_BITS).
        other = Signal(signed(FACTOR_BITS + 1), name=f"ln_other{j}")
        m.d.comb += other.eq(Mux(t5.pass_index == 1, d5, s.factor[:FACTOR_BITS]))
        top = stage(m, en, (t5.pass_index != 1) & s.factor[FACTOR_BITS], f"ln_top6_{j}")
        top = stage(m, en, top, f"ln_top7_{j}")
        pd = multiply(m, self.mul, j, 2, d5, other, en)
        d7 = stage(m, en, stage(m, en, d5, f"ln_d6_{j}"), f"ln_d7_{j}")
        prod = Signal(signed(16 + FACTOR_BITS + 1), name=f"ln_prod{j}")
        m.d.comb += prod.eq(Mux(top, d7 << FACTOR_BITS, pd))
        val = Signal(signed(33), name=f"ln_val{j}")
        # |d| <= root, so |d * factor| <= 2**31 and y = (d * factor) >> 1 fits s32.
        m.d.comb += val.eq(Mux(s.tags[7].pass_index == 1, prod, prod >> 1))
        val8 = stage(m, en, val, f"ln_val8_{j}")
        s.sq.append(val8)
        # gamma and beta travel beside the chunk.
        gamma = self.i_gamma[j]
        beta = self.i_beta[j]
        for k in range(1, SQUARE_STAGE + 1):
            gamma = stage(m, en, gamma, f"ln_gamma{k}_{j}")
        for k in range(1, LATENCY - 1):
            beta = stage(m, en, beta, f"ln_beta{k}_{j}")
        # 9-11, pass 2: y * gamma_q
        yl = multiply(m, self.mul, j, 3, val8[:17], gamma, en)
        yh = multiply(m, self.mul, j, 4, val8[17:].as_signed(), gamma, en)
        yg = Signal(signed(48), name=f"ln_yg{j}")
        m.d.comb += yg.eq((yh << 17) + yl)
        yg11 = stage(m, en, yg, f"ln_yg11_{j}")
        # 12: + beta_q; 13: / 2**16 rounded half away from zero
        acc12 = stage(m, en, (yg11 + beta)[:48].as_signed(), f"ln_acc12_{j}")
        out = Signal(signed(32), name=f"ln_out{j}")
        m.d.comb += out.eq(shift_right_half_away(acc12, ACC_SHIFT, 1 << (ACC_SHIFT - 1)))
        m.d.comb += self.o_data[j].eq(stage(m, en, out, f"ln_out13_{j}"))

    def _square_sum(self, m: Module, s: SimpleNamespace) -> None:
        """Pass 1: the chunk's sum of squares, taken at :func:`var_stage`; and the outputs'
        valid and tag."""
        en, t6, k = self.en, s.tags[SQUARE_STAGE], tree_stages(self.cols)
        s.cvar = pipelined_tree(m, en, [Mux(t6.mask[j], s.sq[j][:31], 0)
                                        for j in range(self.cols)], lambda a, b: a + b,
                                "ln_cvar", k)
        s.var_valid = s.valid[SQUARE_STAGE] & (t6.pass_index == 1)
        s.var_tag = t6
        for i in range(1, k + 1):
            s.var_valid = stage(m, en, s.var_valid, f"ln_var_valid{i}")
            s.var_tag = stage(m, en, s.var_tag, f"ln_var_tag{i}")
        m.d.comb += [self.o_valid.eq(s.valid[LATENCY]), self.o_tag.eq(s.tags[LATENCY])]

    def _scale(self, m: Module, s: SimpleNamespace) -> None:
        """Pass 0's statistics, then the pre-shift: n max - sum and sum - n min, the larger
        of them, its bit length over DEV_BITS."""
        t1 = s.stats_tag
        with m.If(self.en & s.stats_valid):
            new_sum = Mux(t1.first, s.csum, s.sum_acc + s.csum)
            m.d.sync += [
                s.sum_acc.eq(new_sum),
                s.min_acc.eq(Mux(t1.first | (s.cmin < s.min_acc), s.cmin, s.min_acc)),
                s.max_acc.eq(Mux(t1.first | (s.cmax > s.max_acc), s.cmax, s.max_acc)),
            ]
            with m.If(t1.end):
                m.d.sync += [s.state.eq(_State.SCALE_MUL), s.scale_mul.eq(1)]
        with m.If(s.state == _State.SCALE_MUL):
            m.d.sync += s.state.eq(_State.SCALE_MUL2)
        with m.If(s.state == _State.SCALE_MUL2):
            m.d.sync += [s.state.eq(_State.SCALE_SUM), s.scale_mul.eq(0)]
        with m.If(s.state == _State.SCALE_SUM):
            m.d.sync += [s.n_max.eq(s.nx[0]), s.n_min.eq(s.nx[1]),
                         s.state.eq(_State.SCALE_DMAX)]
        with m.If(s.state == _State.SCALE_DMAX):
            hi = s.n_max - s.sum_acc
            lo = s.sum_acc - s.n_min
            m.d.sync += [s.dmax.eq(Mux(hi > lo, hi, lo)), s.state.eq(_State.SCALE_BITS)]
        with m.If(s.state == _State.SCALE_BITS):
            # (A cycle of its own: the priority encoder and the subtraction after it were
            # the unit's longest path.)
            m.d.sync += [s.dmax_bits.eq(bit_length(s.dmax)), s.state.eq(_State.SCALE_SHIFT)]
        with m.If(s.state == _State.SCALE_SHIFT):
            sh = Signal(signed(7), name="s")
            m.d.comb += sh.eq(Mux(s.dmax_bits == 0, 0, s.dmax_bits - DEV_BITS))
            m.d.sync += [s.row_sum.eq(s.sum_acc), s.s_right.eq(Mux(sh > 0, sh, 0)),
                         s.s_left.eq(Mux(sh < 0, -sh, 0)), s.state.eq(_State.READY)]

    def _root(self, m: Module, s: SimpleNamespace) -> None:
        """Pass 1's statistic, then the square root and the reciprocal: the factor of
        pass 2."""
        isqrt, recip, t5 = self.sqrt, self.recip, s.var_tag
        with m.If(self.en & s.var_valid):
            new_var = Mux(t5.first, s.cvar, s.var_acc + s.cvar)
            m.d.sync += s.var_acc.eq(new_var)
            with m.If(t5.end):
                m.d.sync += s.state.eq(_State.SQRT_REQ)
        m.d.comb += [
            isqrt.req.payload.eq(s.var_acc),
            isqrt.req.valid.eq(s.state == _State.SQRT_REQ),
            recip.req.payload.eq(isqrt.resp.payload),
            recip.req.valid.eq(isqrt.resp.valid & (s.state == _State.SQRT_WAIT)),
            isqrt.resp.ready.eq(recip.req.ready & (s.state == _State.SQRT_WAIT)),
            recip.resp.ready.eq(s.state == _State.RECIP_WAIT),
        ]
        with m.If(isqrt.req.valid & isqrt.req.ready):
            m.d.sync += s.state.eq(_State.SQRT_WAIT)
        with m.If(recip.req.valid & recip.req.ready):
            m.d.sync += s.state.eq(_State.RECIP_WAIT)
        with m.If(recip.resp.valid & recip.resp.ready):
            m.d.sync += [s.factor.eq(recip.resp.payload), s.state.eq(_State.READY)]
