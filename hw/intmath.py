"""Integer building blocks of the output path: lock-step pipeline registers, lane reductions,
rounding shifts, saturation, and the iterative square root and reciprocal.

The arithmetic mirrors ``tessera.sw.golden.intmath`` (the bit-exact specification); this
module never imports it (``hw`` does not depend on ``sw``), the tests compare the two.

Iterative units (:class:`IntSqrt`, :class:`Reciprocal`) run once per row, between the passes
of Softmax and LayerNorm, so they trade area for a fixed, documented latency: they take a
request on a valid/ready stream and answer exactly :attr:`latency_cycles` cycles later,
whatever the operand (there is no data-dependent early exit, so the worst case is every
case).
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "stage",
    "chunk_tag_layout",
    "reduce_tree",
    "tree_stages",
    "pipelined_tree",
    "add_half_away",
    "shift_right_half_away",
    "saturate",
    "bit_length",
    "times_const",
    "carry_sum",
    "times_unsigned",
    "IntSqrt",
    "Reciprocal",
    "sqrt_latency_cycles",
    "reciprocal_latency_cycles",
    "STEPS_PER_CYCLE",
]

#: Result bits per cycle of the iterative units in the output path. Two bits are one radix-4
#: step: three trial subtractions side by side and a choice, one carry chain deep, which
#: fits a 10 ns cycle on an ECP5 (speed 6) (four chained radix-2 steps took 18 ns, two 11 ns:
#: LayerNorm's and Softmax's critical paths); the per-row square root and reciprocals take
#: 12, 18 and 17 cycles.
STEPS_PER_CYCLE = 2


def stage(m: Module, en, value, name: str):
    """A pipeline register: ``value`` one enabled cycle later.

    A unit's pipeline advances in lock step: every register loads on the cycles in which
    ``en`` is high and holds otherwise. The output path ties ``en`` high (its intake waits
    for room in the output FIFO instead), so there the registers have no enable at all.
    """
    reg = Signal.like(value, name=name)
    with m.If(en):
        m.d.sync += reg.eq(value)
    return reg


def reduce_tree(values, op):
    """Combine ``values`` pairwise in a balanced tree (depth ``ceil(log2(len(values)))``)."""
    values = list(values)
    if not values:
        raise ValueError("reduce_tree needs at least one value")
    while len(values) > 1:
        nxt = [op(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def tree_stages(n: int) -> int:
    """Levels of a balanced tree over ``n`` values: the stages of :func:`pipelined_tree`."""
    return max(n - 1, 0).bit_length()


def pipelined_tree(m: Module, en, values, op, name: str, stages: int | None = None):
    """Combine ``values`` pairwise in a balanced tree with a register after every level
    (loaded when ``en`` is high): the result :func:`tree_stages` enabled cycles later, or
    ``stages`` cycles later if that is more (extra registers at the end). One adder or one
    compare-and-select per cycle keeps the lanes' reductions within a clock cycle at any
    lane count."""
    values = list(values)
    if not values:
        raise ValueError("pipelined_tree needs at least one value")
    level = 0
    while len(values) > 1:
        level += 1
        nxt = [op(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = [stage(m, en, v, f"{name}_l{level}_{i}") for i, v in enumerate(nxt)]
    result = values[0]
    for k in range(level, stages or level):
        result = stage(m, en, result, f"{name}_pad{k + 1}")
    return result


def add_half_away(x, half, shifts=1):
    """``x + 2**(s-1) - (x < 0)``: ``x`` made ready for an arithmetic shift right by ``s``
    that rounds half away from zero (the golden model's ``shift_right(..., "half_away")``).

    ``half`` is ``2**(s-1)``; ``shifts`` says whether ``s > 0`` (a signal or a constant):
    with ``s = 0`` nothing is rounded, so nothing is subtracted. ``x`` must have a bit of
    headroom for the addition (the callers size it). Pipelines may register the sum before
    the shift.
    """
    return x + half - Mux(shifts & (x < 0), 1, 0)


def shift_right_half_away(x, s, half):
    """``x / 2**s`` rounded half away from zero, for a constant ``s > 0`` (``half`` =
    ``2**(s-1)``)."""
    return add_half_away(x, half) >> s


def saturate(x, bits: int):
    """Clip a signed value to ``[-2**(bits-1), 2**(bits-1) - 1]`` (a ``signed(bits)`` value).

    ``x`` fits when its bits from ``bits - 1`` up are all equal (all copies of its sign):
    a reduction of those bits, not two comparisons, each a carry chain as wide as ``x``.
    """
    x = Value.cast(x)
    if not x.shape().signed:
        raise TypeError(f"saturate takes a signed value, not {x.shape()!r}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if len(x) <= bits:
        return x.as_signed()
    upper = x[bits - 1:]
    fits = upper.all() | ~upper.any()
    return Mux(fits, x[:bits].as_signed(),
               Mux(x[-1], Const(lo, signed(bits)), Const(hi, signed(bits))))


def times_const(x, k: int):
    """``x * k`` for a constant ``k >= 0`` as a sum of shifted copies of ``x`` (the non-adjacent
    form of ``k``: at most ``bits(k) / 2 + 1`` terms). Yosys maps a product by a constant
    to DSP blocks on an ECP5; a few adders are cheaper where ``k`` has few non-zero digits.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, not {k!r}")
    terms, i, r = [], 0, k
    while r:
        if r & 1:
            digit = 2 - (r & 3)     # 1 or -1: the non-adjacent form
            terms.append((digit, i))
            r -= digit
        r >>= 1
        i += 1
    width = len(x) + max(k.bit_length(), 1) + 1
    result = Const(0, signed(width) if x.shape().signed else unsigned(width))
    for digit, i in terms:
        result = result + (x << i) if digit > 0 else result - (x << i)
    out = result[:len(x) + max(k.bit_length(), 1)]
    return out.as_signed() if x.shape().signed else out


def carry_sum(m: Module, terms, name: str):
    """The sum of ``terms`` as a balanced tree of two-operand adders, each sum a wire Yosys
    keeps. Yosys merges a tree of adders whose inner sums have no other use into one
    multi-operand adder and builds it from LUTs (full adders, then one carry chain); kept
    wires leave every adder on a carry chain of its own (CCU2C on an ECP5), which costs
    several times fewer LUTs for a few terms. ``terms`` must be Amaranth values."""
    terms = list(terms)
    if not terms:
        raise ValueError("carry_sum needs at least one term")
    level = 0
    while len(terms) > 1:
        nxt = []
        for i in range(0, len(terms) - 1, 2):
            total = terms[i] + terms[i + 1]
            wire = Signal(total.shape(), name=f"{name}_s{level}_{i // 2}",
                          attrs={"keep": 1})
            m.d.comb += wire.eq(total)
            nxt.append(wire)
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms, level = nxt, level + 1
    return terms[0]


def times_unsigned(m: Module, a, b, name: str):
    """``a * b`` of two unsigned values by shifts and sums: each bit of ``b`` selects ``a``
    shifted, summed by :func:`carry_sum` (``ceil(log2(len(b)))`` carry chains deep). For a
    narrow ``b``, where a DSP block would be mostly unused."""
    if a.shape().signed or b.shape().signed:
        raise ValueError("times_unsigned takes unsigned operands")
    return carry_sum(m, [Mux(b[i], a << i, 0) for i in range(len(b))], name)


def bit_length(x):
    """Number of bits of an unsigned value (0 for 0): a priority encoder."""
    width = len(x)
    result = Const(0, range(width + 1))
    for i in range(width):  # the highest set bit wins: it is assigned last
        result = Mux(x[i], i + 1, result)
    return result


def sqrt_latency_cycles(in_bits: int, steps_per_cycle: int) -> int:
    """:attr:`IntSqrt.latency_cycles` without building the unit."""
    root_bits = (in_bits + 1) // 2
    return math.ceil(root_bits / min(steps_per_cycle, root_bits)) + 1


def reciprocal_latency_cycles(k: int, steps_per_cycle: int) -> int:
    """:attr:`Reciprocal.latency_cycles` without building the unit."""
    return math.ceil((k + 1) / min(steps_per_cycle, k + 1)) + 1


class IntSqrt(wiring.Component):
    """``floor(sqrt(n))`` by the restoring (digit-by-digit) square root.

    The golden model (``intmath.isqrt``) computes the same ``floor(sqrt(n))`` by I-BERT's
    Newton iteration; the two agree for every input (the tests check the edges and random
    values against it). The hardware uses the digit recurrence instead because each Newton
    pass needs a full division: six of them (the worst case below ``2**43``,
    ``ISQRT_MAX_PASSES``) would cost six dividers' worth of cycles, while the recurrence
    finds one root bit per step with one subtraction, in a latency that does not depend
    on ``n``.

    Each step: ``rem = 4 rem + next two bits of n``; if ``rem >= 4 root + 1`` then
    ``rem -= 4 root + 1`` and the next root bit is 1, else 0.

    Parameters
    ----------
    in_bits : int
        Width of ``n`` (unsigned), 1 to 64.
    steps_per_cycle : int
        Root bits found per clock cycle (the recurrence is unrolled that many times).

    Members
    -------
    req : In(stream.Signature(unsigned(in_bits)))
        The operand ``n``. Accepted only when the unit is idle.
    resp : Out(stream.Signature(unsigned(root_bits)))
        ``floor(sqrt(n))``, held until taken; the earliest response handshake
        comes exactly :attr:`latency_cycles` clock edges after the request's.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    def __init__(self, in_bits: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        if not isinstance(in_bits, int) or not 1 <= in_bits <= 64:
            raise ValueError(f"in_bits must be an integer from 1 to 64, not {in_bits!r}")
        if not isinstance(steps_per_cycle, int) or steps_per_cycle < 1:
            raise ValueError(f"steps_per_cycle must be a positive integer, not "
                             f"{steps_per_cycle!r}")
        self.in_bits = in_bits
        self.root_bits = (in_bits + 1) // 2
        self.steps_per_cycle = min(steps_per_cycle, self.root_bits)
        super().__init__({
            "req": In(stream.Signature(unsigned(in_bits))),
            "resp": Out(stream.Signature(unsigned(self.root_bits))),
        })

    @property
    def latency_cycles(self) -> int:
        """Clock edges from the request's handshake to the earliest response handshake."""
        return sqrt_latency_cycles(self.in_bits, self.steps_per_cycle)

    @property
    def _iterations(self) -> int:
        return self.latency_cycles - 1

    def elaborate(self, platform):
        m = Module()
        iters = self._iterations
        # The recurrence runs iters * steps_per_cycle steps; the operand is padded with zero
        # bit pairs at the top so that the extra leading steps find root bits of 0.
        R = iters * self.steps_per_cycle
        n = Signal(2 * R)
        rem = Signal(R + 2)
        root = Signal(R)
        root3 = Signal(R + 2)      # 3 root, for the radix-4 steps
        count = Signal(range(iters + 1))
        busy = Signal()

        m.d.comb += self.req.ready.eq(~busy & ~self.resp.valid)
        m.d.comb += self.resp.payload.eq(root[:self.root_bits])
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += self.resp.valid.eq(0)
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [n.eq(self.req.payload), rem.eq(0), root.eq(0), root3.eq(0),
                         count.eq(0), busy.eq(1)]
        with m.Elif(busy):
            # Two steps at a time are one radix-4 step: with C = 16 rem + the next four
            # bits of n, root bits q = 1, 2, 3 leave C - (8 root + 1), C - (16 root + 4),
            # C - (24 root + 9); the three differences are taken side by side (one carry
            # chain deep, 3 root kept in a register) and the largest q that fits chosen.
            r_n, r_rem, r_root, r_root3, j = n, rem, root, root3, 0
            while j < self.steps_per_cycle:
                if self.steps_per_cycle - j >= 2:
                    width = R + 6
                    cur = Signal(width, name=f"cur{j}")
                    m.d.comb += cur.eq(Cat(r_n[2 * R - 4:], r_rem))
                    diffs = []
                    for q, c in ((1, (r_root << 3) | 1), (2, (r_root << 4) | 4),
                                 (3, (r_root3 << 3) + 9)):
                        t = Signal(signed(width + 2), name=f"t{j}_{q}")
                        m.d.comb += t.eq(cur - c)
                        diffs.append(t)
                    fits = [~t[-1] for t in diffs]
                    digit = Mux(fits[2], 3, Mux(fits[1], 2, Mux(fits[0], 1, 0)))
                    r_rem = Mux(fits[2], diffs[2], Mux(fits[1], diffs[1],
                                                       Mux(fits[0], diffs[0], cur)))[:R + 2]
                    r_root3 = Mux(fits[2], (r_root3 << 2) + 9, Mux(
                        fits[1], (r_root3 << 2) + 6, Mux(fits[0], (r_root3 << 2) + 3,
                                                         r_root3 << 2)))[:R + 2]
                    r_root = Cat(digit[:2], r_root)[:R]
                    r_n = (r_n << 4)[:2 * R]
                    j += 2
                else:
                    cur = Signal(R + 4, name=f"cur{j}")
                    m.d.comb += cur.eq((r_rem << 2) | r_n[2 * R - 2:])
                    trial = (r_root << 2) | 1
                    fits1 = cur >= trial
                    r_rem = Mux(fits1, cur - trial, cur)[:R + 2]
                    r_root3 = Mux(fits1, (r_root3 << 1) + 3, r_root3 << 1)[:R + 2]
                    r_root = ((r_root << 1) | fits1)[:R]
                    r_n = (r_n << 2)[:2 * R]
                    j += 1
            m.d.sync += [n.eq(r_n), rem.eq(r_rem), root.eq(r_root), root3.eq(r_root3),
                         count.eq(count + 1)]
            with m.If(count == iters - 1):
                m.d.sync += [busy.eq(0), self.resp.valid.eq(1)]
        return m


class Reciprocal(wiring.Component):
    """``floor(2**k / d)`` by restoring division, as ``intmath.reciprocal`` defines it.

    The dividend ``2**k`` has ``k + 1`` bits, so the quotient does too; ``d = 0`` makes every
    trial subtraction succeed and gives ``2**(k + 1) - 1`` (all ones), exactly as the golden
    model specifies.

    Parameters
    ----------
    k : int
        Dividend exponent, 0 to 62.
    d_bits : int
        Width of the unsigned divisor, 1 to 63.
    steps_per_cycle : int
        Quotient bits found per clock cycle.

    Members
    -------
    req : In(stream.Signature(unsigned(d_bits)))
        The divisor ``d``. Accepted only when the unit is idle.
    resp : Out(stream.Signature(unsigned(k + 1)))
        ``floor(2**k / d)``, held until taken; the earliest response handshake comes
        exactly :attr:`latency_cycles` clock edges after the request's.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    def __init__(self, k: int, d_bits: int, steps_per_cycle: int = STEPS_PER_CYCLE):
        if not isinstance(k, int) or not 0 <= k <= 62:
            raise ValueError(f"k must be an integer from 0 to 62, not {k!r}")
        if not isinstance(d_bits, int) or not 1 <= d_bits <= 63:
            raise ValueError(f"d_bits must be an integer from 1 to 63, not {d_bits!r}")
        if not isinstance(steps_per_cycle, int) or steps_per_cycle < 1:
            raise ValueError(f"steps_per_cycle must be a positive integer, not "
                             f"{steps_per_cycle!r}")
        self.k = k
        self.d_bits = d_bits
        self.steps_per_cycle = min(steps_per_cycle, k + 1)
        super().__init__({
            "req": In(stream.Signature(unsigned(d_bits))),
            "resp": Out(stream.Signature(unsigned(k + 1))),
        })

    @property
    def latency_cycles(self) -> int:
        """Clock edges from the request's handshake to the earliest response handshake."""
        return reciprocal_latency_cycles(self.k, self.steps_per_cycle)

    @property
    def _iterations(self) -> int:
        return self.latency_cycles - 1

    def elaborate(self, platform):
        m = Module()
        Q = self.k + 1
        iters = self._iterations
        steps = iters * self.steps_per_cycle
        # The dividend 2**k padded with zeros at the top to `steps` bits: its one bit comes
        # at step `pad`. The leading steps give quotient bits that fall off the top.
        pad = steps - Q
        d = Signal(self.d_bits)
        # 3 d, for the radix-4 steps (an adder, not a DSP block).
        d3 = Signal(self.d_bits + 2)
        rem = Signal(self.d_bits + 1)
        quot = Signal(Q)
        step = Signal(range(steps + 1))
        busy = Signal()

        m.d.comb += self.req.ready.eq(~busy & ~self.resp.valid)
        m.d.comb += self.resp.payload.eq(quot)
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += self.resp.valid.eq(0)
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [d.eq(self.req.payload), d3.eq(times_const(self.req.payload, 3)),
                         rem.eq(0), quot.eq(0), step.eq(0), busy.eq(1)]
        with m.Elif(busy):
            # Two steps at a time are one radix-4 step: the remainder less d, 2d and 3d
            # side by side (one carry chain deep), the largest that fits chosen.
            r_rem, r_quot, j = rem, quot, 0
            while j < self.steps_per_cycle:
                width = self.d_bits + 3
                if self.steps_per_cycle - j >= 2:
                    cur = Signal(width, name=f"cur{j}")
                    m.d.comb += cur.eq(Cat((step + j + 1) == pad, (step + j) == pad, r_rem))
                    cands = [cur - d, cur - (d << 1), cur - d3]
                    diffs = []
                    for q, c in enumerate(cands, start=1):
                        t = Signal(signed(width + 1), name=f"t{j}_{q}")
                        m.d.comb += t.eq(c)
                        diffs.append(t)
                    fits = [~t[-1] for t in diffs]
                    digit = Mux(fits[2], 3, Mux(fits[1], 2, Mux(fits[0], 1, 0)))
                    r_rem = Mux(fits[2], diffs[2], Mux(fits[1], diffs[1],
                                                       Mux(fits[0], diffs[0], cur)))
                    r_rem = r_rem[:self.d_bits + 1]
                    r_quot = Cat(digit[:2], r_quot)[:Q]
                    j += 2
                else:
                    cur = Signal(self.d_bits + 2, name=f"cur{j}")
                    m.d.comb += cur.eq((r_rem << 1) | ((step + j) == pad))
                    fits1 = cur >= d
                    r_rem = Mux(fits1, cur - d, cur)[:self.d_bits + 1]
                    r_quot = ((r_quot << 1) | fits1)[:Q]
                    j += 1
            m.d.sync += [rem.eq(r_rem), quot.eq(r_quot), step.eq(step + self.steps_per_cycle)]
            with m.If(step == steps - self.steps_per_cycle):
                m.d.sync += [busy.eq(0), self.resp.valid.eq(1)]
        return m


def chunk_tag_layout(cols: int) -> data.StructLayout:
    """What travels beside each chunk down the output path's pipelines.

    ``mask`` (bit ``j``: lane ``j`` is inside the row), ``pass_index`` (0-based pass of a
    multi-pass operation), ``first`` / ``end`` (first / final chunk of its row in this
    pass), ``last`` (final chunk of the row in the write-out pass: ``o_row.last``).
    """
    return data.StructLayout({"mask": unsigned(cols), "pass_index": unsigned(2), "first": 1,
                              "end": 1, "last": 1})
