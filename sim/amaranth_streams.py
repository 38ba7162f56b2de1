"""Stream drivers and monitors for Amaranth's own simulator (the fast test tier).

Each helper is an async testbench body; idle cycles and backpressure come from a
``pause`` callable that returns True when the model should wait a cycle (seeded random
generators make a run repeatable).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

__all__ = ["random_pauses", "never", "send", "collect"]

Pause = Callable[[], bool]


def never() -> bool:
    return False


def random_pauses(probability: float, seed: int) -> Pause:
    """A pause generator that idles with the given probability each cycle."""
    rng = random.Random(seed)
    return lambda: rng.random() < probability


async def send(ctx, port, beats: Iterable, pause: Pause = never) -> None:
    """Drive ``beats`` (payload values) into the stream ``port``, idling when ``pause()``."""
    for beat in beats:
        while pause():
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, beat)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def collect(ctx, port, count: int, pause: Pause = never, stamp=None) -> list:
    """Accept ``count`` beats from ``port``, holding ``ready`` low when ``pause()``.

    With ``stamp`` (a one-element list holding the current cycle), each beat comes back as
    ``(payload, cycle)``.
    """
    out = []
    while len(out) < count:
        ready = not pause()
        ctx.set(port.ready, int(ready))
        if ready:
            _, _, payload, valid = await ctx.tick().sample(port.payload, port.valid)
            if valid:
                out.append(payload if stamp is None else (payload, stamp[0]))
        else:
            await ctx.tick()
    ctx.set(port.ready, 0)
    return out
