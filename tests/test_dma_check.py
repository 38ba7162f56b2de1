"""The DMA's arithmetic without DSP blocks, in Amaranth's simulator: the command check's
block extent ``(rows - 1) * stride`` by shifts and sums (against the golden model's check,
on blocks that end one byte inside or one byte outside the window, up to 65,535 rows and
32-bit strides; and its latency, :func:`~tessera.hw.dma.check_cycles`), and the engine's
int8 x scale lanes (every int8 against the edges of the scale)."""

import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from tessera.hw.config import preset
from tessera.hw.dma import (
    SCALE_BITS,
    DmaError,
    DmaReader,
    check_cycles,
    command_layout,
    times_int8,
)
from tessera.sw.golden import dma as golden

CONFIG = preset("tiny")


def window_cases(rng: random.Random) -> list[tuple[golden.DmaCommand, int, int]]:
    """(command, window base, window size): blocks ending on the window's last byte or one
    byte past it, of 1 to 65,535 rows and strides up to 2**32 - 1 (so that the window holds
    them, the address is small); many rows are refused as LOCAL once inside the window."""
    cases = []
    row_counts = [1, 2, 3, 4, 5, 16, 17, 255, 256, 257, 4096, 4097, 65535]
    for rows in row_counts + [rng.randint(1, 65535) for _ in range(12)]:
        for _ in range(3):
            limit = ((1 << CONFIG.addr_bits) - 1 - 4096) // max(rows - 1, 1)
            stride = rng.choice([0, 1, rng.randint(1, 64), rng.randint(1, limit), limit])
            row_bytes = rng.randint(1, CONFIG.spad_row_bytes)
            addr = rng.randint(0, 4096)
            end = addr + (rows - 1) * stride + row_bytes
            base = rng.randint(0, addr)
            for over in (0, 1):
                cmd = golden.DmaCommand(dram_addr=addr, stride=stride, rows=rows,
                                        row_bytes=row_bytes, local_addr=0)
                cases.append((cmd, base, end - base - over))
    return cases


def test_check_extent_and_latency():
    dut = DmaReader(CONFIG)
    rng = random.Random(15)
    cases = [c for c in window_cases(rng) if c[0].rows > CONFIG.spad_rows or c[2] < 0
             or golden.check_command(c[0], CONFIG, c[1], c[2], load=True) != "NONE"]
    cases = [c for c in cases if c[2] >= 0]
    layout = command_layout(CONFIG)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o_done.ready, 1)
        for cmd, base, size in cases:
            ctx.set(dut.window_base, base)
            ctx.set(dut.window_size, size)
            ctx.set(dut.i_cmd.payload, layout.const(cmd.as_payload()))
            ctx.set(dut.i_cmd.valid, 1)
            await ctx.tick().until(dut.i_cmd.ready)
            ctx.set(dut.i_cmd.valid, 0)
            cycles = 0
            while True:
                _, _, valid, done, arvalid = await ctx.tick().sample(
                    dut.o_done.valid, dut.o_done.payload, dut.arvalid)
                assert not arvalid, f"{cmd}: a burst before the check refused it"
                cycles += 1
                if valid:
                    break
            seen.append((cmd, base, size, DmaError(done.error).name, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == len(cases) > 60
    assert {s[3] for s in seen} == {"WINDOW", "LOCAL"}
    for cmd, base, size, got, _ in seen:
        assert got == golden.check_command(cmd, CONFIG, base, size, load=True), cmd
    # The check takes one cycle per 4 bits of rows - 1 (at least one) besides a constant.
    extra = {cycles - check_cycles(cmd.rows) for cmd, _, _, _, cycles in seen}
    assert len(extra) == 1, extra
    assert {check_cycles(s[0].rows) for s in seen} == {3, 4, 5, 6}


@pytest.mark.parametrize("scale", [-(1 << 15), -(1 << 15) + 1, -12345, -2, -1, 0, 1, 2, 3,
                                   255, 256, 12345, (1 << 15) - 1])
def test_int8_times_scale_lanes(scale):
    m = Module()
    x = Signal(signed(8))
    s = Signal(signed(SCALE_BITS))
    s3 = Signal(signed(SCALE_BITS + 2))
    sn = Signal(signed(SCALE_BITS + 1))
    out = Signal(signed(24))
    m.d.comb += out.eq(times_int8(m, x, s, s3, sn, "lane"))

    async def bench(ctx):
        ctx.set(s, scale)
        ctx.set(s3, 3 * scale)
        ctx.set(sn, -scale)
        for v in range(-128, 128):
            ctx.set(x, v)
            assert ctx.get(out) == v * scale, (v, scale)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
