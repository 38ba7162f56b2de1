"""The DMA's byte shifter (its realignment buffers' and bus lanes' shifts) in Amaranth's
simulator: equal to Python's shifts of whole bytes, cut or padded to the output's bytes,
for values narrower and wider than the output and shifts past either end."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from tessera.hw.dma import _byte_shift


@pytest.mark.parametrize("left", [True, False], ids=["left", "right"])
def test_byte_shift_equals_pythons_shift(left):
    m = Module()
    value, amount = Signal(40), Signal(4)        # 5 bytes, shifts of 0 to 15 bytes
    outs = {nb: _byte_shift(m, value, amount, nb, left=left, name="t") for nb in (1, 3, 5, 7)}
    sim = Simulator(m)

    async def bench(ctx):
        rng = random.Random(3)
        for trial in range(300):
            x, s = rng.getrandbits(40), (trial % 16 if trial < 32 else rng.randrange(16))
            ctx.set(value, x)
            ctx.set(amount, s)
            for nb, out in outs.items():
                want = ((x << 8 * s) if left else (x >> 8 * s)) & ((1 << 8 * nb) - 1)
                assert ctx.get(out) == want, (nb, hex(x), s)

    sim.add_testbench(bench)
    sim.run()
