"""Host transports for Amaranth's simulator: the host-link client
(``tessera.sw.runtime.uart.HostLinkClient``) runs unchanged against the simulated link.

Both are synchronous (``write(bytes)``, ``read(n)``) and single-threaded: ``read`` steps
the simulator (``Simulator.advance``) until ``n`` bytes have come or, once everything
written has been sent, ``max_cycles`` have passed without one (a short read, as a serial
port's timeout gives). A background
testbench moves the bytes, a cycle at a time.

* :class:`StreamTransport`: bytes straight into the link's ``i_rx`` stream and out of its
  ``o_tx`` stream, with pause generators for idle cycles and backpressure.
* :class:`LineTransport`: bytes as frames on a UART line (:mod:`~.uart_model`): the
  board top's ``uart_rx`` driven a level per cycle, its ``uart_tx`` decoded.
"""

from __future__ import annotations

from collections import deque

from .amaranth_streams import never
from .uart_model import LineReceiver, frame_levels

__all__ = ["StreamTransport", "LineTransport"]


class _Transport:
    def __init__(self, sim, max_cycles: int):
        self.sim, self.max_cycles = sim, max_cycles
        self.cycles = 0
        self._to: deque = deque()      # bytes (or line levels) not yet sent
        self._from: deque = deque()    # bytes received, not yet read

    def write(self, data: bytes) -> None:
        self._queue(bytes(data))

    def read(self, n: int) -> bytes:
        quiet = 0
        while len(self._from) < n and quiet < self.max_cycles:
            before, had = self.cycles, len(self._from)
            while self.cycles == before:
                self.sim.advance()
            quiet = 0 if len(self._from) != had or self._to else quiet + 1
        return bytes(self._from.popleft() for _ in range(min(n, len(self._from))))


class StreamTransport(_Transport):
    """Bytes through the stream ports ``rx`` (into the device) and ``tx`` (out of it)."""

    def __init__(self, sim, rx, tx, *, idle=never, backpressure=never,
                 max_cycles: int = 2000):
        super().__init__(sim, max_cycles)
        self._queue = self._to.extend

        async def pump(ctx):
            while True:
                send = bool(self._to) and not idle()
                ctx.set(rx.valid, int(send))
                if send:
                    ctx.set(rx.payload, self._to[0])
                take = not backpressure()
                ctx.set(tx.ready, int(take))
                _, _, rx_ready, tx_valid, tx_data = await ctx.tick().sample(
                    rx.ready, tx.valid, tx.payload)
                self.cycles += 1
                if send and rx_ready:
                    self._to.popleft()
                if take and tx_valid:
                    self._from.append(tx_data)

        sim.add_testbench(pump, background=True)


class LineTransport(_Transport):
    """Bytes as 8N1 frames of ``divisor`` cycles per bit on ``rx_pin`` (into the device),
    read back from ``tx_pin`` by the line model's receiver. The line idles for
    ``lead_cycles`` first (the device comes out of reset)."""

    def __init__(self, sim, rx_pin, tx_pin, divisor: int, *, max_cycles: int | None = None,
                 lead_cycles: int = 64):
        super().__init__(sim, max_cycles or 40 * divisor)
        self._to.extend([1] * lead_cycles)
        self.receiver = LineReceiver(divisor)
        self._queue = lambda data: self._to.extend(
            level for byte in data for level in frame_levels(byte, divisor))

        async def pump(ctx):
            while True:
                ctx.set(rx_pin, self._to.popleft() if self._to else 1)
                _, _, level = await ctx.tick().sample(tx_pin)
                self.cycles += 1
                had = len(self.receiver.bytes)
                self.receiver.step(level)
                self._from.extend(self.receiver.bytes[had:])

        sim.add_testbench(pump, background=True)
