"""Valid/ready stream models for cocotb, with idle and backpressure from pause generators.

All models of a testbench step together in one loop (:func:`run`): at each falling clock
edge they drive their signals, then in the read-only phase they see which handshakes the
next rising edge will complete. Sampling away from the active edge keeps the result the
same on Icarus and Verilator, whose ordering of writes around a rising edge differs.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["StreamSource", "StreamSink", "run", "pauses"]

Pause = Callable[[], bool]


def pauses(probability: float, seed: int) -> Pause:
    """A pause generator: True (wait a cycle) with the given probability."""
    if probability <= 0:
        return lambda: False
    rng = random.Random(seed)
    return lambda: rng.random() < probability


class StreamSource:
    """Drives ``<name>__valid`` / ``<name>__payload`` of ``dut`` from a list of payloads."""

    def __init__(self, dut, name: str, beats: list[int], pause: Pause | None = None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats = beats
        self.pause = pause or (lambda: False)
        self.index = 0
        self.offering = False
        self.fire_cycles: list[int] = []
        self.valid.value = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.beats)

    def drive(self) -> None:
        # Once offered, a beat stays on the bus until it is taken.
        if not self.offering and not self.done and not self.pause():
            self.payload.value = self.beats[self.index]
            self.valid.value = 1
            self.offering = True
        elif not self.offering:
            self.valid.value = 0

    def sample(self, cycle: int) -> None:
        if self.offering and int(self.ready.value):
            self.fire_cycles.append(cycle)
            self.index += 1
            self.offering = False


class StreamSink:
    """Accepts ``count`` beats from ``<name>__payload`` of ``dut``, with backpressure."""

    def __init__(self, dut, name: str, count: int, pause: Pause | None = None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.count = count
        self.pause = pause or (lambda: False)
        self.beats: list[int] = []
        self.fire_cycles: list[int] = []
        self.accepting = False
        self.ready.value = 0

    @property
    def done(self) -> bool:
        return len(self.beats) >= self.count

    def drive(self) -> None:
        self.accepting = not self.done and not self.pause()
        self.ready.value = int(self.accepting)

    def sample(self, cycle: int) -> None:
        if self.accepting and int(self.valid.value):
            self.beats.append(int(self.payload.value))
            self.fire_cycles.append(cycle)


async def run(clock, models, timeout_cycles: int) -> int:
    """Step all ``models`` until each is done; return the number of cycles taken.

    Raises
    ------
    TimeoutError
        If the models are not done within ``timeout_cycles`` (a hang, reported with the
        progress each model made).
    """
    from cocotb.triggers import FallingEdge, ReadOnly

    cycle = 0
    while not all(m.done for m in models):
        if cycle >= timeout_cycles:
            progress = ", ".join(
                f"{type(m).__name__}({getattr(m.valid, '_name', '?')}): "
                f"{len(m.fire_cycles)} beats" for m in models)
            raise TimeoutError(f"no completion after {timeout_cycles} cycles; {progress}")
        await FallingEdge(clock)
        for m in models:
            m.drive()
        await ReadOnly()
        for m in models:
            m.sample(cycle)
        cycle += 1
    await FallingEdge(clock)
    for m in models:
        if isinstance(m, StreamSource):
            m.valid.value = 0
        else:
            m.ready.value = 0
    return cycle
