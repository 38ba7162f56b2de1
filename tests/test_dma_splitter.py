"""The DMA's burst splitter in Amaranth's simulator: every burst of random 2-D blocks
(starts near 4 KiB boundaries, contiguous and strided rows, stride 0) against a reference
that cuts greedily, with and without backpressure; one burst per cycle while the bursts
are taken."""

import random

import pytest
from amaranth.sim import Simulator

from tessera.hw.axi import BOUNDARY_BYTES, MAX_BURST_BEATS
from tessera.hw.config import TesseraConfig
from tessera.hw.dma import BurstSplitter
from tessera.sim.amaranth_streams import random_pauses, send

BUSES = [64, 128, 256, 512]


def reference_bursts(bus_bytes: int, addr: int, stride: int, rows: int, row_bytes: int):
    """(addr, len, first, bytes, start) of each burst: ranges (the whole block when the rows
    are contiguous) cut at every 4 KiB boundary and after 256 beats."""
    if stride == row_bytes:
        ranges = [(addr, rows * row_bytes)]
    else:
        ranges = [(addr + r * stride, row_bytes) for r in range(rows)]
    out = []
    for start, left in ranges:
        while left:
            aligned = start & ~(bus_bytes - 1)
            off = start - aligned
            room = min(BOUNDARY_BYTES - aligned % BOUNDARY_BYTES, MAX_BURST_BEATS * bus_bytes)
            take = min(left, room - off)
            beats = -(-(off + take) // bus_bytes)
            assert aligned // BOUNDARY_BYTES == (aligned + beats * bus_bytes - 1) // BOUNDARY_BYTES
            out.append((aligned, beats - 1, off, take, start))
            start, left = start + take, left - take
    return out


def random_block(rng: random.Random, bus_bytes: int, limit: int, addr_bits: int):
    rows = rng.choice([1, 1, 2, 3, 7, rng.randint(1, 300)])
    row_bytes = rng.randint(1, limit)
    near = BOUNDARY_BYTES * rng.randint(1, 20) - rng.randint(0, 3 * bus_bytes)
    addr = rng.choice([near, rng.randrange(1 << 20), rng.randrange(1 << 20) & ~(bus_bytes - 1)])
    stride = rng.choice([row_bytes, row_bytes, 0, row_bytes + rng.randint(1, 64),
                         rng.randint(1, 5000)])
    assert addr + stride * rows + row_bytes < 1 << addr_bits
    return dict(addr=addr, stride=stride, rows=rows, row_bytes=row_bytes)


def run_splitter(bus_bits: int, limit: int, blocks, pause_p: float, seed: int):
    cfg = TesseraConfig(bus_bits=bus_bits)
    dut = BurstSplitter(cfg, limit)
    got, fire_cycles = [], []
    want = sum(len(reference_bursts(cfg.bus_bytes, **b)) for b in blocks)

    async def source(ctx):
        # (total: the block's bytes, which the DMA's command check gives the splitter)
        cmds = [dict(b, total=b["rows"] * b["row_bytes"]) for b in blocks]
        await send(ctx, dut.i_cmd, cmds, random_pauses(pause_p, seed))

    async def sink(ctx):
        pause, cycle = random_pauses(pause_p, seed + 1), 0
        while len(got) < want:
            ready = not pause()
            ctx.set(dut.o_burst.ready, int(ready))
            _, _, payload, valid = await ctx.tick().sample(dut.o_burst.payload,
                                                           dut.o_burst.valid)
            if ready and valid:
                got.append((payload.addr, payload.len, payload.first, payload.bytes,
                            payload.start))
                fire_cycles.append(cycle)
            cycle += 1
            assert cycle < 50 * want + 1000, "the splitter stopped"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return cfg, got, fire_cycles


@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["flowing", "pauses"])
@pytest.mark.parametrize("bus_bits", BUSES)
def test_bursts_match_the_greedy_cut(bus_bits, pause):
    rng = random.Random(bus_bits)
    bus_bytes = bus_bits // 8
    limit = 4 * bus_bytes + 3
    blocks = [random_block(rng, bus_bytes, limit, 32) for _ in range(60)]
    # Edges: a block ending exactly at a boundary, one byte before and after it, the
    # longest burst from a beat-aligned start and from one byte past it.
    for addr in (BOUNDARY_BYTES - limit, BOUNDARY_BYTES - 1, 2 * BOUNDARY_BYTES,
                 MAX_BURST_BEATS * bus_bytes, MAX_BURST_BEATS * bus_bytes + 1):
        blocks.append(dict(addr=addr, stride=limit, rows=300, row_bytes=limit))
        blocks.append(dict(addr=addr, stride=3 * BOUNDARY_BYTES + 1, rows=3, row_bytes=limit))
    cfg, got, _ = run_splitter(bus_bits, limit, blocks, pause, seed=bus_bits + 1)
    want = [b for blk in blocks for b in reference_bursts(cfg.bus_bytes, **blk)]
    assert got == want


def test_one_burst_per_cycle():
    bus_bits = 64
    blocks = [dict(addr=BOUNDARY_BYTES * 3 - 5, stride=4000, rows=40, row_bytes=20),
              dict(addr=77, stride=16, rows=2000, row_bytes=16)]
    cfg, got, cycles = run_splitter(bus_bits, 20, blocks, 0.0, seed=1)
    n0 = len(reference_bursts(cfg.bus_bytes, **blocks[0]))
    assert len(got) > n0 + 10
    # Within a block, a burst every cycle; between blocks, the next command's start.
    assert all(b - a == 1 for a, b in zip(cycles[:n0 - 1], cycles[1:n0], strict=True))
    assert all(b - a == 1 for a, b in zip(cycles[n0:-1], cycles[n0 + 1:], strict=True))
    # (the last burst is taken, the next command then, START_CYCLES to its first burst)
    assert cycles[n0] - cycles[n0 - 1] == BurstSplitter.START_CYCLES + 2
