"""cocotb testbench of the generated matrix unit: stream a job of tiles through it.

The job (``$TESSERA_JOB``, an ``.npz`` written by :mod:`tessera.sim.matrix_rtl`) holds the
weight and data beats and the idle / backpressure probabilities; the result
(``$TESSERA_RESULT``) holds every result row with its ``last`` bit and the cycle of each
handshake. Checking against the golden model happens in the caller, which has it.
"""

from __future__ import annotations

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from tessera.hw.config import load_config
from tessera.hw.matrix_unit import MODE_OS, MODE_WS, MatrixUnit
from tessera.sim import cocotb_streams as cs
from tessera.sim.packing import field, pack_lanes, unpack_lanes


def _data_words(unit: MatrixUnit, job) -> list[int]:
    a_off, _ = field(unit.data_layout, "a")
    l_off, _ = field(unit.data_layout, "last")
    words = [w << a_off for w in pack_lanes(job["a"], unit.data_layout["a"].shape)]
    if "b" in unit.data_layout.members:
        b_off, _ = field(unit.data_layout, "b")
        bw = pack_lanes(job["b"], unit.data_layout["b"].shape)
        words = [w | (b << b_off) for w, b in zip(words, bw, strict=True)]
    return [w | (int(last) << l_off) for w, last in zip(words, job["last"], strict=True)]


@cocotb.test()
async def stream_job(dut):
    config = load_config(os.environ["TESSERA_CONFIG"])
    job = dict(np.load(os.environ["TESSERA_JOB"]))
    unit = MatrixUnit(config)  # for its layouts only
    seed = int(job["seed"])
    os_mode = bool(job["os_mode"])

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    if config.dataflow == "both":
        dut.mode.value = MODE_OS if os_mode else MODE_WS
    models = []
    if config.has_ws:
        weights = pack_lanes(job["weights"], unit.weight_layout) if not os_mode else []
        models.append(cs.StreamSource(dut, "i_weight", weights,
                                      cs.pauses(float(job["weight_pause"]), seed)))
    models.append(cs.StreamSource(dut, "i_data", _data_words(unit, job),
                                  cs.pauses(float(job["data_pause"]), seed + 1)))
    sink = cs.StreamSink(dut, "o_result", int(job["n_out"]),
                         cs.pauses(float(job["result_pause"]), seed + 2))
    models.append(sink)
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    start = time.perf_counter()
    cycles = await cs.run(dut.clk, models, int(job["timeout_cycles"]))
    wall = time.perf_counter() - start

    d_off, _ = field(unit.result_layout, "data")
    l_off, _ = field(unit.result_layout, "last")
    data_layout = unit.result_layout["data"].shape
    mask = (1 << data_layout.size) - 1
    rows = unpack_lanes([(w >> d_off) & mask for w in sink.beats], data_layout)
    lasts = np.array([(w >> l_off) & 1 for w in sink.beats], dtype=bool)
    np.savez(os.environ["TESSERA_RESULT"], rows=rows, last=lasts,
             out_cycles=np.array(sink.fire_cycles), data_cycles=np.array(models[-2].fire_cycles),
             cycles=cycles, wall_s=wall)
