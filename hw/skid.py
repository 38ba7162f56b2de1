"""A stream's register slice: :class:`SkidBuffer` cuts every combinational path through a
valid/ready stream, so the timing of the producer and the consumer stay their own.

``o``'s valid and payload are registers (the head), and ``i.ready`` is a register (the
spare place is free): the producer's ready does not depend on the consumer's, nor the
consumer's valid on the producer's. It holds two items, so it passes one per cycle; an
item taken in cycle ``t`` is offered from cycle ``t + 1``.

:class:`TurnSlice` behaves the same cycle for cycle, but its two registers are written in
turn and read in turn: the consumer's take moves a one-bit pointer, instead of enabling
every bit of the head and the spare place, and a free register loads the producer's
payload in every cycle, so neither side's handshake reaches the payload's enables. Its
head is a multiplexer of the two by the pointer (a flip-flop), one LUT level in front of
the consumer. It suits a wide payload whose consumer decides its take late and far away,
and whose logic after the slice is short: with :class:`SkidBuffer` the take reaches the
enables of twice the payload's flip-flops in the same cycle.

:func:`room_register` gives a FIFO's ``w_rdy`` as a register, for a lock-step pipeline
whose enable it is: the enable then leaves a flip-flop for its hundreds of loads.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import fifo as _fifo
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "TurnSlice", "room_register"]


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


class TurnSlice(SkidBuffer):
    """Two items of ``shape`` between ``i`` and ``o``, as :class:`SkidBuffer` gives them, in
    two registers written and read in turn (see the module docstring); the same members.
    """

    def elaborate(self, platform):
        m = Module()
        items = [Signal.like(self.o.payload, name=f"item{k}") for k in range(2)]
        held = [Signal(name=f"held{k}") for k in range(2)]
        write, read = Signal(name="write_at"), Signal(name="read_at")
        push = self.i.valid & self.i.ready
        pop = self.o.valid & self.o.ready
        # ready: a place is free; valid: the place to read is held (both registers).
        m.d.comb += [self.i.ready.eq(~held[0] | ~held[1]),
                     self.o.valid.eq(Mux(read, held[1], held[0])),
                     self.o.payload.eq(Mux(read, items[1], items[0]))]
        # A free place loads the producer's payload in every cycle, whether it is pushed or
        # not (a free place's content is never read): its enable is a flip-flop, not the
        # producer's valid, and a push only marks the place held.
        for k in range(2):
            with m.If(~held[k]):
                m.d.sync += items[k].eq(self.i.payload)
        with m.If(push):
            m.d.sync += write.eq(~write)
            with m.If(write):
                m.d.sync += held[1].eq(1)
            with m.Else():
                m.d.sync += held[0].eq(1)
        with m.If(pop):
            m.d.sync += read.eq(~read)
            # (a place read is not the place written in the same cycle: that one is free)
            m.d.sync += held[0].eq(Mux(read, held[0] | (push & ~write), push & ~write))
            m.d.sync += held[1].eq(Mux(read, push & write, held[1] | (push & write)))
        return m


def room_register(m: Module, queue: _fifo.SyncFIFO, name: str) -> Signal:
    """A register equal to ``queue.w_rdy`` (a :class:`~amaranth.lib.fifo.SyncFIFO` in the
    same clock domain and reset scope): its next value from this cycle's level and
    handshakes, so the same room, a cycle earlier as a flip-flop."""
    room = Signal(init=1, name=name)
    level = queue.level + (queue.w_en & queue.w_rdy) - (queue.r_en & queue.r_rdy)
    m.d.sync += room.eq(level != queue.depth)
    return room
