"""cocotb testbenches of the generated output path and of its iterative units.

``stream_jobs`` (top ``tessera_output_path``): the job (``$TESSERA_JOB``, an ``.npz`` written
by :mod:`tessera.sim.output_path_rtl`) holds the descriptor words, the row and parameter
lanes and the idle / backpressure probabilities; the result (``$TESSERA_RESULT``) holds every
output chunk, the cycle of each handshake, and the unit's ``error`` and ``idle`` flags.

``intmath_edges`` (top ``tessera_output_path_intmath``, the harness in
:mod:`tessera.sim.output_path_rtl`): streams operands through the square root and the two
reciprocals and records each result with its request and response cycles.

Checking against the golden model happens in the caller, which has it.
"""

from __future__ import annotations

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from tessera.hw.config import TesseraConfig
from tessera.sim import cocotb_streams as cs
from tessera.sim.output_path_jobs import encode_params, encode_rows


async def _reset(dut, settle: int = 2) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, settle)


@cocotb.test()
async def stream_jobs(dut):
    config = TesseraConfig.from_json(os.environ["TESSERA_CONFIG"])
    job = dict(np.load(os.environ["TESSERA_JOB"]))
    seed = int(job["seed"])
    cmds = [int(h, 16) for h in job["cmd_hex"]]
    rows = encode_rows(config, job["row_data"], job["row_last"])
    params = encode_params(config, job["gamma"], job["beta"])

    dut.error_clear.value = 0
    await _reset(dut)
    sources = [
        cs.StreamSource(dut, "i_cmd", cmds, cs.pauses(float(job["cmd_pause"]), seed)),
        cs.StreamSource(dut, "i_row", rows, cs.pauses(float(job["row_pause"]), seed + 1)),
        cs.StreamSource(dut, "i_param", params, cs.pauses(float(job["param_pause"]), seed + 2)),
    ]
    sink = cs.StreamSink(dut, "o_row", int(job["n_out"]),
                         cs.pauses(float(job["out_pause"]), seed + 3))
    start = time.perf_counter()
    cycles = await cs.run(dut.clk, sources + [sink], int(job["timeout_cycles"]))
    wall = time.perf_counter() - start
    # Let the unit finish (commands without output) and check it offers nothing more.
    await ClockCycles(dut.clk, int(job["settle_cycles"]))
    await FallingEdge(dut.clk)
    await ReadOnly()
    error, idle, extra = int(dut.error.value), int(dut.idle.value), int(dut.o_row__valid.value)
    await FallingEdge(dut.clk)
    dut.error_clear.value = 1
    await FallingEdge(dut.clk)
    dut.error_clear.value = 0
    await ReadOnly()
    np.savez(os.environ["TESSERA_RESULT"],
             out_hex=np.array([format(w, "x") for w in sink.beats], dtype=str),
             out_cycles=np.array(sink.fire_cycles, dtype=np.int64),
             row_cycles=np.array(sources[1].fire_cycles, dtype=np.int64),
             error=error, idle=idle, extra=extra, error_after_clear=int(dut.error.value),
             cycles=cycles, wall_s=wall)


@cocotb.test()
async def intmath_edges(dut):
    job = dict(np.load(os.environ["TESSERA_JOB"]))
    seed = int(job["seed"])
    pause = float(job["pause"])
    names = [str(n) for n in job["units"]]
    await _reset(dut)
    models = []
    for i, name in enumerate(names):
        operands = [int(v) for v in job[f"{name}_operands"]]
        models.append(cs.StreamSource(dut, f"{name}_req", operands,
                                      cs.pauses(pause, seed + 2 * i)))
        models.append(cs.StreamSink(dut, f"{name}_resp", len(operands),
                                    cs.pauses(pause, seed + 2 * i + 1)))
    await cs.run(dut.clk, models, int(job["timeout_cycles"]))
    out = {}
    for i, name in enumerate(names):
        src, sink = models[2 * i], models[2 * i + 1]
        out[f"{name}_results"] = np.array([format(v, "x") for v in sink.beats], dtype=str)
        out[f"{name}_req_cycles"] = np.array(src.fire_cycles, dtype=np.int64)
        out[f"{name}_resp_cycles"] = np.array(sink.fire_cycles, dtype=np.int64)
    np.savez(os.environ["TESSERA_RESULT"], **out)
