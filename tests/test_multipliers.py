# amaranth: UnusedElaboratable=no
"""The output path's shared multiplier bank: what its helpers refuse, products registered
when enabled, and a unit given a bank of its own (the output path's tests check the shared
bank against the golden model)."""

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from tessera.hw.gelu import GeluLanes
from tessera.hw.multipliers import (
    MULTIPLY_STAGES,
    LaneMultipliers,
    MultiplierSignature,
    WithMultipliers,
    multiply,
)
from tessera.hw.requant import RequantLanes


def test_signature_and_operands_are_checked():
    with pytest.raises(ValueError, match="cols must be a positive integer, not 0"):
        MultiplierSignature(0, 3)
    with pytest.raises(ValueError, match="slots must be a positive integer, not -1"):
        MultiplierSignature(2, -1)
    port = MultiplierSignature(1, 1).create()
    m = Module()
    with pytest.raises(ValueError, match=r"operand a \(unsigned\(18\)\) does not fit"):
        multiply(m, port, 0, 0, Signal(unsigned(18)), Signal(unsigned(4)), 1)
    with pytest.raises(ValueError, match=r"operand b \(signed\(19\)\) does not fit"):
        multiply(m, port, 0, 0, Signal(unsigned(17)), Signal(signed(19)), 1)
    with pytest.raises(ValueError, match="RequantLanes has no 'mul' port"):
        WithMultipliers(RequantLanes(2))


@pytest.mark.parametrize("a_shape, b_shape", [(unsigned(17), signed(18)),
                                              (signed(18), signed(18)),
                                              (unsigned(15), unsigned(13))])
def test_products_come_back_exact_in_the_operands_shape(a_shape, b_shape):
    bank = LaneMultipliers(1, 1)
    m = Module()
    m.submodules.bank = bank
    port = MultiplierSignature(1, 1).create()
    a, b, en = Signal(a_shape), Signal(b_shape), Signal()
    p = multiply(m, port, 0, 0, a, b, en)
    m.d.comb += [bank.mul.a[0][0].eq(port.a[0][0]), bank.mul.b[0][0].eq(port.b[0][0]),
                 bank.mul.en[0][0].eq(port.en[0][0]), port.p[0][0].eq(bank.mul.p[0][0])]
    assert p.shape() == (a * b).shape()

    def edges(shape):
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        hi = (1 << (shape.width - (1 if shape.signed else 0))) - 1
        return sorted({lo, lo + 1, -1 if shape.signed else 2, 0, 1, hi // 3, hi - 1, hi})

    async def bench(ctx):
        pairs = [(x, y) for x in edges(a_shape) for y in edges(b_shape)]
        ctx.set(en, 1)
        for n, (x, y) in enumerate(pairs):
            ctx.set(a, x)
            ctx.set(b, y)
            await ctx.tick()                    # a pipeline of two stages: the product of
            if n:                               # the operands of the clock before
                px, py = pairs[n - 1]
                assert ctx.get(p) == px * py, (px, py)
        held = pairs[-2][0] * pairs[-2][1]
        ctx.set(a, 1)
        ctx.set(en, 0)                          # not enabled: both stages hold
        for _ in range(2):
            await ctx.tick()
            assert ctx.get(p) == held
        ctx.set(en, 1)
        await ctx.tick()                        # the last operands, held, come out
        assert ctx.get(p) == pairs[-1][0] * pairs[-1][1]
        await ctx.tick()
        assert ctx.get(p) == 1 * pairs[-1][1]
        assert MULTIPLY_STAGES == 2

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_a_unit_with_its_own_bank_keeps_its_other_ports():
    unit = GeluLanes(2)
    alone = WithMultipliers(unit)
    assert "mul" not in alone.signature.members
    assert set(alone.signature.members) == set(unit.signature.members) - {"mul"}
