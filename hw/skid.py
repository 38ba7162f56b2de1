"""A stream's register slice: :class:`SkidBuffer` cuts every combinational path through a
valid/ready stream, so the timing of the producer and the consumer stay their own.

``o``'s valid and payload are registers (the head), and ``i.ready`` is a register (the
spare place is free): the producer's ready does not depend on the consumer's, nor the
consumer's valid on the producer's. It holds two items, so it passes one per cycle; an
item taken in cycle ``t`` is offered from cycle ``t + 1``.

:func:`room_register` gives a FIFO's ``w_rdy`` as a register, for a lock-step pipeline
whose enable it is: the enable then leaves a flip-flop for its hundreds of loads.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo as _fifo
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "room_register"]


class SkidBuffer(wiring.Component):
    """Two items of ``shape`` between ``i`` and ``o`` (see the module docstring).

    Parameters
    ----------
    shape : ShapeLike
        The payload.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        spare_valid = Signal()
        spare = Signal.like(self.o.payload)
        pop = self.o.valid & self.o.ready
        m.d.comb += self.i.ready.eq(~spare_valid)
        with m.If(spare_valid):
            with m.If(pop):
                m.d.sync += [self.o.payload.eq(spare), spare_valid.eq(0)]
        with m.Elif(self.i.valid):
            with m.If(self.o.valid & ~pop):
                m.d.sync += [spare.eq(self.i.payload), spare_valid.eq(1)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
        with m.Elif(pop):
            m.d.sync += self.o.valid.eq(0)
        return m


def room_register(m: Module, queue: _fifo.SyncFIFO, name: str) -> Signal:
    """A register equal to ``queue.w_rdy`` (a :class:`~amaranth.lib.fifo.SyncFIFO` in the
    same clock domain and reset scope): its next value from this cycle's level and
    handshakes, so the same room, a cycle earlier as a flip-flop."""
    room = Signal(init=1, name=name)
    level = queue.level + (queue.w_en & queue.w_rdy) - (queue.r_en & queue.r_rdy)
    m.d.sync += room.eq(level != queue.depth)
    return room
