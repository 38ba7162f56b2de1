"""An 8N1 UART: a receiver and a transmitter with valid/ready byte streams.

Both count ``divisor`` clock cycles per bit (``divisor = clk_freq / baud``, rounded: see
:func:`uart_divisor`). A frame is a start bit (0), eight data bits least significant
first, and a stop bit (1); the line idles at 1.

* :class:`UartRx` passes ``rx`` through a two-flop synchronizer (the line is asynchronous
  to the clock), finds the falling edge of a start bit, checks the start bit in its middle
  (a shorter low pulse is a glitch and is ignored) and samples each bit in its middle. A
  frame whose stop bit is 0 is a **framing error**: ``framing_error`` pulses, the byte is
  dropped, and the receiver waits for the line to go back to 1 before it looks for the
  next start bit (so a break gives one error, not a stream of zero bytes). The byte stream
  has one register: a byte that completes while the previous one has not been taken is
  dropped and ``overrun`` pulses.
* :class:`UartTx` sends a byte from its stream; the next byte may start in the cycle after
  the stop bit ends, so back-to-back bytes are exactly ``10 * divisor`` cycles apart.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "uart_divisor", "MIN_DIVISOR", "FRAME_BITS"]

#: Clock cycles per bit the receiver needs at least: one to see the edge after the
#: synchronizer, and room to find the middle of a bit.
MIN_DIVISOR = 4
#: Bits on the line per byte (start, 8 data, stop).
FRAME_BITS = 10


def _check_divisor(unit, divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        unit._MustUse__silence = True   # never built
        raise ValueError(f"divisor must be an integer number of clock cycles per bit of at "
                         f"least {MIN_DIVISOR}, not {divisor!r}")
    return divisor


def uart_divisor(clk_freq: float, baud: float, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` (Hz), rounded to the nearest.

    Raises
    ------
    ValueError
        If the rounded divisor is below :data:`MIN_DIVISOR` or makes a baud rate more than
        ``tolerance`` (relative) away from ``baud``: the receiver at the other end would
        sample the last bits of a frame in the wrong place.
    """
    if not clk_freq > 0 or not baud > 0:
        raise ValueError(f"clk_freq and baud must be positive, not {clk_freq} and {baud}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud:g} baud needs at least {MIN_DIVISOR} clock cycles per bit: "
                         f"a clock of at least {MIN_DIVISOR * baud:g} Hz, not {clk_freq:g} Hz")
    error = abs(clk_freq / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"{clk_freq:g} Hz makes {clk_freq / divisor:.0f} baud at best for "
                         f"{baud:g} baud ({error:.1%} off, more than {tolerance:.0%})")
    return divisor


class UartRx(wiring.Component):
    """The receiver (see the module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : In(1)
        The line (asynchronous; idles at 1).
    o_data : Out(stream.Signature(8))
        The bytes received.
    framing_error : Out(1)
        One-cycle pulse: a frame ended with a stop bit of 0 (its byte is dropped).
    overrun : Out(1)
        One-cycle pulse: a byte arrived while ``o_data`` still held the previous one (the
        new byte is dropped).
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o_data": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o_data.ready):
            m.d.sync += self.o_data.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"         # shorter than half a bit: a glitch
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(d - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        # Back to IDLE in the middle of the stop bit: the next start
                        # bit's edge is half a bit away.
                        with m.If(self.o_data.valid & ~self.o_data.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o_data.payload.eq(shreg),
                                         self.o_data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """The transmitter (see the module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i_data : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while idle and in the last cycle of a stop bit.
    tx : Out(1)
        The line, straight from a flip-flop (idles at 1).
    busy : Out(1)
        A frame is on the line.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "i_data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        shreg = Signal(FRAME_BITS, init=(1 << FRAME_BITS) - 1)
        timer = Signal(range(d))
        bits = Signal(range(FRAME_BITS))
        m.d.comb += self.tx.eq(shreg[0])

        last = Signal()
        m.d.comb += last.eq(self.busy & (timer == 0) & (bits == FRAME_BITS - 1))
        m.d.comb += self.i_data.ready.eq(~self.busy | last)
        with m.If(self.busy):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1))), timer.eq(d - 1),
                             bits.eq(bits + 1)]
                with m.If(last):
                    m.d.sync += self.busy.eq(0)
        with m.If(self.i_data.valid & self.i_data.ready):
            m.d.sync += [shreg.eq(Cat(Const(0), self.i_data.payload, Const(1))),
                         timer.eq(d - 1), bits.eq(0), self.busy.eq(1)]
        return m
