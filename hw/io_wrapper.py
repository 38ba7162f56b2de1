"""A top level for place and route of a component with more ports than the package has
pins: every input comes from a shift register loaded one bit per cycle from one pin, every
output is captured into a shift register read out one bit per cycle on another.

The component's logic is all kept (every output is observable) and every path into and
out of it starts or ends at a flip-flop, so the timing the tools report is the
component's own. It is for measuring, not for use: a board top (with its host link) is
what runs programs.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ShiftWrapper"]


class ShiftWrapper(wiring.Component):
    """``inner`` behind three pins (and the clock and reset).

    Members
    -------
    si : In(1)
        Serial input: shifted into the input register every cycle.
    capture : In(1)
        Loads the output register from the component's outputs (else it shifts).
    so : Out(1)
        Serial output: the output register's last bit.
    """

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        self.inputs, self.outputs = [], []
        for _path, member, value in inner.signature.flatten(inner):
            (self.inputs if member.flow == wiring.In else self.outputs).append(value)
        super().__init__({"si": In(1), "capture": In(1), "so": Out(1)})

    @property
    def input_bits(self) -> int:
        return sum(len(Value.cast(v)) for v in self.inputs)

    @property
    def output_bits(self) -> int:
        return sum(len(Value.cast(v)) for v in self.outputs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        n_in, n_out = self.input_bits, self.output_bits
        shift_in = Signal(max(n_in, 1))
        m.d.sync += shift_in.eq(Cat(self.si, shift_in[:-1]) if n_in > 1 else self.si)
        offset = 0
        for value in self.inputs:
            width = len(Value.cast(value))
            m.d.comb += value.eq(shift_in[offset:offset + width])
            offset += width
        shift_out = Signal(max(n_out, 1))
        outs = Cat(*(Value.cast(v) for v in self.outputs))
        with m.If(self.capture):
            m.d.sync += shift_out.eq(outs)
        with m.Else():
            m.d.sync += shift_out.eq(shift_out >> 1)
        m.d.comb += self.so.eq(shift_out[0])
        return m
