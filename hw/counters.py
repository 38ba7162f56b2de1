"""Performance counters: one 64-bit counter per event, cleared together, counting while
enabled (the accelerator: cleared by START, counting while a run is in progress, frozen
when it ends, so a read after the run is consistent)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Counters", "COUNTER_BITS"]

COUNTER_BITS = 64


class Counters(wiring.Component):
    """Counters named by ``increments`` (a dict: name -> the widest increment in a cycle).

    Members
    -------
    clear : In(1)
        Every counter to 0 (it wins over ``enable``; increments not yet added are dropped).
    enable : In(1)
        Add this cycle's increments (they show in the counts a cycle later).
    inc_<name> : In(range(increment + 1))
        The event's count in this cycle.
    <name> : Out(64)
        The count.
    """

    def __init__(self, increments: dict):
        if not increments:
            self._MustUse__silence = True   # never built
            raise ValueError("at least one counter is needed")
        bad = [n for n, inc in increments.items() if not (isinstance(inc, int) and inc >= 1)]
        if bad:
            self._MustUse__silence = True
            raise ValueError(f"increments must be positive integers: {', '.join(bad)}")
        self._increments = dict(increments)
        members = {"clear": In(1), "enable": In(1)}
        for name, inc in increments.items():
            members[f"inc_{name}"] = In(range(inc + 1))
            members[name] = Out(COUNTER_BITS)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name, most in self._increments.items():
            count = getattr(self, name)
            # The increment is registered first, so a count includes a cycle's events one
            # cycle later: the events (bus handshakes, the dispatch decision) and the 64-bit
            # carry chain are in different cycles. Reads come over the register bus, cycles
            # after a run has ended.
            step = Signal(range(most + 1), name=f"{name}_step")
            with m.If(self.clear):
                m.d.sync += [count.eq(0), step.eq(0)]
            with m.Else():
                m.d.sync += [count.eq(count + step),
                             step.eq(Mux(self.enable, getattr(self, f"inc_{name}"), 0))]
        return m
