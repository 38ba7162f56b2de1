"""Run tile streams through :class:`MatrixUnit` in Amaranth's simulator (the fast tier)."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ..hw.config import ArrayConfig, TesseraConfig
from ..hw.matrix_unit import MODE_OS, MODE_WS, MatrixUnit
from ..sw.golden.matmul import OsTile, WsTile
from .amaranth_streams import collect, never, send

__all__ = ["run_tiles", "run_segments", "weight_beats", "data_beats"]


def weight_beats(tiles: list[WsTile]) -> list[list[int]]:
    return [[int(v) for v in row] for t in tiles for row in t.weights]


def data_beats(tiles, config: ArrayConfig | TesseraConfig) -> list[dict]:
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


def run_tiles(config: ArrayConfig | TesseraConfig, tiles, **kwargs):
    """Stream ``tiles`` (all WS or all OS) through a fresh unit; see :func:`run_segments`."""
    return run_segments(config, [tiles], **kwargs)


def run_segments(config: ArrayConfig | TesseraConfig, segments, *, weight_pause=never,
                 data_pause=never, result_pause=never, timeout_cycles: int = 100_000):
    """Stream segments of tiles through a fresh unit, switching dataflow between segments
    (each segment is all WS or all OS tiles).

    Returns
    -------
    ((rows, lasts), cycles)
        ``rows``: (n, cols) int64 array of the result rows in arrival order; ``lasts`` their
        ``last`` bits; ``cycles``: the cycle of each result handshake.
    """
    dut = MatrixUnit(config)
    seg_os = [bool(s) and isinstance(s[0], OsTile) for s in segments]
    n_out = sum(len(t.a) if isinstance(t, WsTile) else config.rows
                for s in segments for t in s)
    rows, lasts, cycles = [], [], []
    cycle = [0]
    data_segment = [0]

    async def clock(ctx):
        # A background process: counts cycles and stops a hung run.
        async for _ in ctx.tick():
            cycle[0] += 1
            if cycle[0] > timeout_cycles:
                raise TimeoutError(f"the matrix unit produced {len(rows)} of {n_out} result "
                                   f"rows in {timeout_cycles} cycles")

    async def weights(ctx):
        for i, (seg, os_mode) in enumerate(zip(segments, seg_os, strict=True)):
            if os_mode or not config.has_ws:
                continue
            # Weights of a segment follow its data into the unit, as an execute controller
            # would issue them: never ahead of a pending change of dataflow.
            while data_segment[0] < i:
                await ctx.tick()
            await send(ctx, dut.i_weight, weight_beats(seg), weight_pause)

    async def data(ctx):
        for i, (seg, os_mode) in enumerate(zip(segments, seg_os, strict=True)):
            data_segment[0] = i
            if config.dataflow == "both":
                ctx.set(dut.mode, MODE_OS if os_mode else MODE_WS)
            await send(ctx, dut.i_data, data_beats(seg, config), data_pause)

    async def results(ctx):
        for payload, when in await collect(ctx, dut.o_result, n_out, result_pause, stamp=cycle):
            rows.append([int(v) for v in payload.data])
            lasts.append(bool(payload.last))
            cycles.append(when)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(weights)
    sim.add_testbench(data)
    sim.add_testbench(results)
    sim.run()
    return (np.array(rows, dtype=np.int64).reshape(-1, config.cols), np.array(lasts)), cycles
