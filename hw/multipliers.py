"""One bank of 18 x 18 multipliers per lane, shared by the output path's i-GELU, i-Softmax
and i-LayerNorm.

The three units never hold chunks at the same time (the output path takes a descriptor
only once the previous command has left the pipelines), so the output path owns one bank
of :data:`BANK_SLOTS` multipliers per lane and gives each slot the operands of the unit
that the command's operation names. A unit states what it multiplies through a
:class:`MultiplierSignature` port: per lane and slot, the operands ``a`` and ``b`` and the
registers' enable ``en`` out, the product ``p`` back.

A product takes :data:`MULTIPLY_STAGES` pipeline stages, both registers in the bank and
both loaded when ``en`` is high: the operands (after the choice of unit, at the DSP
block's inputs), then the product (at its outputs). So neither the route from a unit to
its shared DSP nor the route back shares a clock cycle with the DSP's own delay (with the
operands unregistered, the choice of unit and its routes to the DSPs were the largest
group of slow paths of the routed whole design). Every operand fits a signed 18-bit value:
each product is one ECP5 MULT18X18D.

:class:`LaneMultipliers` is the bank; :class:`WithMultipliers` gives a unit a bank of its
own, for a unit synthesized or simulated alone.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["OPERAND_BITS", "PRODUCT_BITS", "BANK_SLOTS", "MULTIPLY_STAGES",
           "MultiplierSignature", "LaneMultipliers", "WithMultipliers", "multiply"]

#: Operands are signed 18-bit values (unsigned ones at most 17 bits): one DSP block each.
OPERAND_BITS = 18
PRODUCT_BITS = 2 * OPERAND_BITS
#: Pipeline stages of a product: its operands' registers, then its own.
MULTIPLY_STAGES = 2
#: Multipliers per lane in the output path's shared bank: i-LayerNorm's five, which also
#: serve i-GELU's three and i-Softmax's two.
BANK_SLOTS = 5


class MultiplierSignature(wiring.Signature):
    """A unit's use of ``slots`` multipliers in each of ``cols`` lanes (from the unit's side:
    the operands ``a``, ``b`` and the registers' enable ``en`` out, the registered product
    ``p`` in).

    Parameters
    ----------
    cols, slots : int
        Lanes, and multipliers per lane (positive integers).

    Raises
    ------
    ValueError
        If ``cols`` or ``slots`` is not a positive integer.
    """

    def __init__(self, cols: int, slots: int):
        for name, value in (("cols", cols), ("slots", slots)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.cols, self.slots = cols, slots

        def lanes(shape):
            return data.ArrayLayout(data.ArrayLayout(shape, slots), cols)

        super().__init__({
            "a": Out(lanes(signed(OPERAND_BITS))),
            "b": Out(lanes(signed(OPERAND_BITS))),
            "en": Out(lanes(unsigned(1))),
            "p": In(lanes(signed(PRODUCT_BITS))),
        })


def multiply(m: Module, port, lane: int, slot: int, a, b, en):
    """``a * b`` on multiplier ``slot`` of ``lane`` of the unit's ``port``, as a pipeline of
    :data:`MULTIPLY_STAGES` stages: the operands and ``en`` are driven onto the port, and
    the product comes back in the shape ``a * b`` has, after the second clock edge on
    which ``en`` is high (what two ``stage(m, en, ...)`` give; it holds otherwise).

    Raises
    ------
    ValueError
        If an operand does not fit a signed :data:`OPERAND_BITS`-bit value.
    """
    for name, x in (("a", a), ("b", b)):
        shape = x.shape()
        if len(x) + (0 if shape.signed else 1) > OPERAND_BITS:
            raise ValueError(f"operand {name} ({shape}) does not fit signed({OPERAND_BITS})")
    shape = (a * b).shape()
    m.d.comb += [port.a[lane][slot].eq(a), port.b[lane][slot].eq(b),
                 port.en[lane][slot].eq(en)]
    p = port.p[lane][slot]
    width = min(shape.width, PRODUCT_BITS)
    return p[:width].as_signed() if shape.signed else p[:width]


class LaneMultipliers(wiring.Component):
    """``slots`` signed 18 x 18 multipliers in each of ``cols`` lanes, each with its operands'
    registers and its product's, all loaded when the slot's ``en`` is high.

    Members
    -------
    mul : In(MultiplierSignature(cols, slots))
        The operands and enables in, the registered products out.
    """

    def __init__(self, cols: int, slots: int):
        super().__init__({"mul": In(MultiplierSignature(cols, slots))})

    def elaborate(self, platform):
        m = Module()
        sig = self.mul.signature
        for j in range(sig.cols):
            for k in range(sig.slots):
                a = Signal(signed(OPERAND_BITS), name=f"mul_a{j}_{k}")
                b = Signal(signed(OPERAND_BITS), name=f"mul_b{j}_{k}")
                with m.If(self.mul.en[j][k]):
                    m.d.sync += [a.eq(self.mul.a[j][k]), b.eq(self.mul.b[j][k]),
                                 self.mul.p[j][k].eq(a * b)]
        return m


class WithMultipliers(wiring.Component):
    """A unit with a :class:`MultiplierSignature` port named ``mul``, given a bank of its
    own: the unit's other ports, unchanged (its cost and timing alone include its
    multipliers).

    Parameters
    ----------
    unit : wiring.Component
        A component whose signature has a ``mul`` member of :class:`MultiplierSignature`
        and plain ports besides.

    Members
    -------
    (``unit``'s, but ``mul``)

    Raises
    ------
    ValueError
        If ``unit`` has no such member, or other members that are not plain ports.
    """

    def __init__(self, unit: wiring.Component):
        members = dict(unit.signature.members.items())
        mul = members.pop("mul", None)
        if mul is None or not mul.is_signature \
                or not isinstance(mul.signature, MultiplierSignature):
            raise ValueError(f"{type(unit).__name__} has no 'mul' port of MultiplierSignature")
        if not all(member.is_port for member in members.values()):
            raise ValueError(f"{type(unit).__name__}'s other members must be plain ports")
        self.unit = unit
        self.cols = mul.signature.cols
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        sig = self.unit.mul.signature
        m.submodules.unit = self.unit
        m.submodules.multipliers = bank = LaneMultipliers(sig.cols, sig.slots)
        wiring.connect(m, self.unit.mul, bank.mul)
        for name, member in self.signature.members.items():
            ours, theirs = getattr(self, name), getattr(self.unit, name)
            if member.flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        return m
