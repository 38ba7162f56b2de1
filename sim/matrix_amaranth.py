"""Run tile streams through :class:`MatrixUnit` in Amaranth's simulator (the fast tier)."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ..hw.config import TesseraConfig
from ..hw.matrix_unit import MODE_OS, MODE_WS, MatrixUnit
from ..sw.golden.matmul import OsTile, WsTile
from .amaranth_streams import collect, never, send

__all__ = ["run_tiles", "weight_beats", "data_beats"]


def weight_beats(tiles: list[WsTile]) -> list[list[int]]:
    return [[int(v) for v in row] for t in tiles for row in t.weights]


def data_beats(tiles, config: TesseraConfig) -> list[dict]:
    """``i_data`` payloads for WS or OS tiles."""
    beats = []
    zeros_b = [0] * config.cols
    for t in tiles:
        if isinstance(t, WsTile):
            n = len(t.a)
            for i, row in enumerate(t.a):
                beat = {"a": [int(v) for v in row], "last": int(i == n - 1)}
                if config.has_os:
                    beat["b"] = zeros_b
                beats.append(beat)
        else:
            k = t.a.shape[1]
            for s in range(k):
                beats.append({"a": [int(v) for v in t.a[:, s]],
                              "b": [int(v) for v in t.b[s]], "last": int(s == k - 1)})
    return beats


def run_tiles(config: TesseraConfig, tiles, *, weight_pause=never, data_pause=never,
              result_pause=never, timeout_cycles: int = 100_000):
    """Stream ``tiles`` (all WS or all OS) through a fresh unit.

    Returns
    -------
    (results, fire_cycles)
        ``results``: (n, cols) int64 array of the result rows in arrival order, with a
        boolean array of their ``last`` bits; ``fire_cycles``: the cycle of each transfer.
    """
    os_mode = bool(tiles) and isinstance(tiles[0], OsTile)
    dut = MatrixUnit(config)
    n_out = sum(len(t.a) if isinstance(t, WsTile) else config.rows for t in tiles)
    rows, lasts, cycles = [], [], []
    cycle = [0]

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def weights(ctx):
        if not os_mode and config.has_ws:
            await send(ctx, dut.i_weight, weight_beats(tiles), weight_pause)

    async def data(ctx):
        if config.dataflow == "both":
            ctx.set(dut.mode, MODE_OS if os_mode else MODE_WS)
            await ctx.tick()
        await send(ctx, dut.i_data, data_beats(tiles, config), data_pause)

    async def results(ctx):
        for beat in await collect(ctx, dut.o_result, n_out, result_pause, stamp=cycle):
            payload, when = beat
            rows.append([int(v) for v in payload.data])
            lasts.append(bool(payload.last))
            cycles.append(when)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(weights)
    sim.add_testbench(data)
    sim.add_testbench(results)
    sim.run_until(timeout_cycles * 1e-6)
    if len(rows) != n_out:
        raise TimeoutError(f"the matrix unit produced {len(rows)} of {n_out} result rows "
                           f"in {timeout_cycles} cycles")
    return (np.array(rows, dtype=np.int64).reshape(-1, config.cols), np.array(lasts)), cycles
