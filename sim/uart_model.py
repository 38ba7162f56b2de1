"""A bit-level model of an 8N1 UART line, one level per clock cycle: what a byte looks like
on the wire and what a receiver sampling in the middle of each bit reads from a line. The
tests of :mod:`tessera.hw.uart` compare the gateware with it cycle by cycle."""

from __future__ import annotations

__all__ = ["frame_levels", "line_levels", "LineReceiver"]


def frame_levels(byte: int, divisor: int, stop: int = 1) -> list[int]:
    """The line, one level per cycle, for one frame of ``byte``: start bit, data bits
    least significant first, stop bit (``stop=0`` makes a framing error)."""
    if not 0 <= byte < 256:
        raise ValueError(f"a byte is 0 to 255, not {byte}")
    bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    return [b for b in bits for _ in range(divisor)]


def line_levels(frames, divisor: int) -> list[int]:
    """The line for a sequence of ``(byte, stop, idle_cycles_before)`` frames."""
    out: list[int] = []
    for byte, stop, idle in frames:
        out += [1] * idle + frame_levels(byte, divisor, stop)
    return out


class LineReceiver:
    """A receiver fed one line level per cycle (:meth:`step`): it finds a start bit's
    falling edge, samples every bit ``divisor // 2`` cycles into it, and collects
    ``bytes`` and ``errors`` (the indices in ``bytes`` before which a frame had a bad
    stop bit)."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        self.bytes: list[int] = []
        self.errors: list[int] = []
        self._t = None           # cycles since the start edge, or None while idle
        self._bits: list[int] = []
        self._prev = 1
        self._wait_idle = False

    def step(self, level: int) -> None:
        d = self.divisor
        if self._t is None:
            if self._wait_idle:
                self._wait_idle = not level
            elif self._prev and not level:
                self._t, self._bits = 0, []
        else:
            self._t += 1
        self._prev = level
        if self._t is not None and self._t % d == d // 2:
            self._bits.append(level)
            if len(self._bits) == 1 and level:
                self._t = None                       # a glitch, not a start bit
            elif len(self._bits) == 10:
                if level:
                    self.bytes.append(sum(b << i for i, b in enumerate(self._bits[1:9])))
                else:
                    self.errors.append(len(self.bytes))
                    self._wait_idle = True
                self._t = None
