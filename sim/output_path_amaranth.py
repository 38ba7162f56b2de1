"""Run output-path jobs through :class:`OutputPath` in Amaranth's simulator (the fast tier)."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ..hw.config import TesseraConfig
from ..hw.output_path import OutputPath
from .amaranth_streams import Pause, never
from .output_path_jobs import OutputJob, Run, beats, decode_out, encode_params, encode_rows

__all__ = ["run_jobs", "run_unit"]


async def _send(ctx, port, words, pause: Pause, stamps: list, cycle) -> None:
    raw = port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload
    for w in words:
        while pause():
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(raw, w)
        ctx.set(port.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(port.ready)
            if ready:
                stamps.append(cycle[0] - 1)
                break
    ctx.set(port.valid, 0)


def run_jobs(config: TesseraConfig, jobs: list[OutputJob], *, cmd_pause: Pause = never,
             row_pause: Pause = never, param_pause: Pause = never, out_pause: Pause = never,
             seed: int = 0, timeout_cycles: int = 200_000, settle_cycles: int = 30) -> Run:
    """Stream ``jobs`` back to back through a fresh :class:`OutputPath`.

    Cycles are counted from the first clock edge; a handshake's stamp is the cycle of the
    edge that completes it.

    Raises
    ------
    TimeoutError
        If the results do not all arrive within ``timeout_cycles``.
    """
    dut = OutputPath(config)
    b = beats(config, jobs, seed)
    rows = encode_rows(config, b.row_data, b.row_last)
    params = encode_params(config, b.gamma, b.beta)
    n_out = len(b.out_data)
    cycle = [0]
    cmd_cycles, row_cycles, param_cycles, out_cycles, out_words = [], [], [], [], []
    flags = {}

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1
            if cycle[0] > timeout_cycles:
                raise TimeoutError(f"the output path produced {len(out_words)} of {n_out} "
                                   f"chunks and took {len(row_cycles)} of {len(rows)} input "
                                   f"chunks in {timeout_cycles} cycles")

    async def cmds(ctx):
        await _send(ctx, dut.i_cmd, b.cmd, cmd_pause, cmd_cycles, cycle)

    async def row_feed(ctx):
        await _send(ctx, dut.i_row, rows, row_pause, row_cycles, cycle)

    async def param_feed(ctx):
        await _send(ctx, dut.i_param, params, param_pause, param_cycles, cycle)

    async def sink(ctx):
        raw = dut.o_row.payload.as_value()
        while len(out_words) < n_out:
            ready = not out_pause()
            ctx.set(dut.o_row.ready, int(ready))
            _, _, payload, valid = await ctx.tick().sample(raw, dut.o_row.valid)
            if ready and valid:
                out_words.append(payload)
                out_cycles.append(cycle[0] - 1)
        ctx.set(dut.o_row.ready, 0)
        # Let the unit finish what it is doing (commands with no output, stray chunks).
        while len(row_cycles) < len(rows) or len(cmd_cycles) < len(b.cmd):
            await ctx.tick()
        for _ in range(settle_cycles):
            await ctx.tick()
        flags["error"] = bool(ctx.get(dut.error))
        flags["idle"] = bool(ctx.get(dut.idle))
        flags["extra"] = bool(ctx.get(dut.o_row.valid))
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        flags["error_after_clear"] = bool(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(cmds)
    sim.add_testbench(row_feed)
    sim.add_testbench(param_feed)
    sim.add_testbench(sink)
    sim.run()
    data, last = decode_out(config, out_words)
    assert not flags["extra"], "the unit offers more result chunks than expected"
    return Run(data=data, last=last, want_data=b.out_data, want_last=b.out_last,
               row_cycles=np.array(row_cycles), out_cycles=np.array(out_cycles),
               pass_starts=b.pass_starts, error=flags["error"], idle=flags["idle"],
               cycles=cycle[0], out_where=b.out_where,
               error_after_clear=flags["error_after_clear"])


def run_unit(dut, operands: list[int], *, req_pause: Pause = never, resp_pause: Pause = never,
             timeout_cycles: int = 100_000) -> tuple[list[int], list[int]]:
    """Stream ``operands`` through an iterative unit with ``req`` / ``resp`` streams
    (:class:`~tessera.hw.intmath.IntSqrt`, :class:`~tessera.hw.intmath.Reciprocal`).

    Returns
    -------
    (results, latencies)
        Each response, and the clock edges from each request's handshake to its response's.
    """
    cycle = [0]
    req_cycles, resp_cycles, results = [], [], []

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1
            if cycle[0] > timeout_cycles:
                raise TimeoutError(f"{len(results)} of {len(operands)} responses in "
                                   f"{timeout_cycles} cycles")

    async def requests(ctx):
        await _send(ctx, dut.req, operands, req_pause, req_cycles, cycle)

    async def responses(ctx):
        while len(results) < len(operands):
            ready = not resp_pause()
            ctx.set(dut.resp.ready, int(ready))
            _, _, payload, valid = await ctx.tick().sample(dut.resp.payload, dut.resp.valid)
            if ready and valid:
                results.append(int(payload))
                resp_cycles.append(cycle[0] - 1)
        ctx.set(dut.resp.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(clock)
    sim.add_testbench(requests)
    sim.add_testbench(responses)
    sim.run()
    return results, [b - a for a, b in zip(req_cycles, resp_cycles, strict=True)]
