"""Run output-path jobs, and edge operands of its iterative units, on the generated Verilog
under Icarus or Verilator."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hw.config import TesseraConfig
from ..hw.generate import Top
from ..hw.intmath import IntSqrt, Reciprocal, reciprocal_latency_cycles, sqrt_latency_cycles
from ..hw.layernorm import RECIP_BITS as LN_RECIP_BITS
from ..hw.layernorm import VAR_BITS
from ..hw.output_path import STEPS_PER_CYCLE
from ..hw.softmax import RECIP_BITS as SM_RECIP_BITS
from . import runner
from .output_path_jobs import OutputJob, Run, beats, decode_out

__all__ = ["IntMathHarness", "INTMATH_HARNESS", "INTMATH_UNITS", "UnitSpec", "run_jobs",
           "run_intmath"]



class UnitSpec(NamedTuple):
    """An iterative unit as the output path instantiates it."""

    make: Callable          #: builds the unit
    operand_bits: int       #: width of its operand
    k: int | None           #: the reciprocal's dividend exponent (None: the square root)
    latency_cycles: int     #: clock edges from request to response handshake


_S = STEPS_PER_CYCLE
_ROOT_BITS = (VAR_BITS + 1) // 2
#: The square root of LayerNorm's variance and the reciprocals of Softmax and LayerNorm.
INTMATH_UNITS = {
    "sqrt": UnitSpec(lambda: IntSqrt(VAR_BITS, _S), VAR_BITS, None,
                     sqrt_latency_cycles(VAR_BITS, _S)),
    "recip_softmax": UnitSpec(lambda: Reciprocal(SM_RECIP_BITS, 32, _S), 32, SM_RECIP_BITS,
                              reciprocal_latency_cycles(SM_RECIP_BITS, _S)),
    "recip_layernorm": UnitSpec(lambda: Reciprocal(LN_RECIP_BITS, _ROOT_BITS, _S), _ROOT_BITS,
                                LN_RECIP_BITS, reciprocal_latency_cycles(LN_RECIP_BITS, _S)),
}


class IntMathHarness(wiring.Component):
    """A test harness in HDL: the output path's square root (43-bit operands) and its two
    reciprocals (``2**32 / d`` for Softmax, ``2**31 / root`` for LayerNorm), each behind its
    own ``<name>_req`` / ``<name>_resp`` streams.

    Parameters
    ----------
    config : TesseraConfig
        Unused (the units' widths are fixed); taken so the harness builds like a top level.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        self._units = {name: spec.make() for name, spec in INTMATH_UNITS.items()}
        members = {}
        for name, unit in self._units.items():
            # A member's signature is seen from the unit's side: "req" (In) comes flipped.
            members[f"{name}_req"] = In(unit.signature.members["req"].signature.flip())
            members[f"{name}_resp"] = Out(unit.signature.members["resp"].signature)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name, unit in self._units.items():
            m.submodules[name] = unit
            wiring.connect(m, wiring.flipped(getattr(self, f"{name}_req")), unit.req)
            wiring.connect(m, unit.resp, wiring.flipped(getattr(self, f"{name}_resp")))
        return m


INTMATH_HARNESS = Top(IntMathHarness, "tessera_output_path_intmath",
                      "the output path's square root and reciprocals (a test harness)")


def run_jobs(config: TesseraConfig, sim: str, jobs: list[OutputJob], *, cmd_pause: float = 0.0,
             row_pause: float = 0.0, param_pause: float = 0.0, out_pause: float = 0.0,
             seed: int = 1, timeout_cycles: int | None = None, settle_cycles: int = 60,
             workdir: Path | None = None) -> Run:
    """Stream ``jobs`` back to back through the generated output path on ``sim``.

    Raises
    ------
    runner.SimulationFailed
        If the build or the simulation fails, or the unit hangs (not every result within
        ``timeout_cycles``, by default ten times the beats plus a margin per row).
    """
    b = beats(config, jobs, seed)
    if timeout_cycles is None:
        per_row = 200 * sum(j.rows * j.passes for j in jobs if not j.dropped(config))
        timeout_cycles = 10 * (len(b.row_data) + len(b.out_data) + len(b.cmd)) + per_row + 1000
    build = runner.build(config, sim, "output_path")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "job.npz", seed=seed, cmd_pause=cmd_pause, row_pause=row_pause,
                 param_pause=param_pause, out_pause=out_pause, timeout_cycles=timeout_cycles,
                 settle_cycles=settle_cycles, n_out=len(b.out_data),
                 cmd_hex=np.array([format(w, "x") for w in b.cmd], dtype=str),
                 row_data=b.row_data, row_last=b.row_last, gamma=b.gamma, beta=b.beta)
        runner.run(build, "tessera.sim.tb_output_path", testcase="stream_jobs", test_dir=tmp,
                   seed=seed, env={"TESSERA_JOB": str(tmp / "job.npz"),
                                   "TESSERA_RESULT": str(tmp / "result.npz")})
        with np.load(tmp / "result.npz") as r:
            words = [int(h, 16) for h in r["out_hex"]]
            data, last = decode_out(config, words)
            if int(r["extra"]):
                raise AssertionError("the unit offers more result chunks than expected")
            return Run(data=data, last=last, want_data=b.out_data, want_last=b.out_last,
                       row_cycles=r["row_cycles"], out_cycles=r["out_cycles"],
                       pass_starts=b.pass_starts, error=bool(r["error"]), idle=bool(r["idle"]),
                       cycles=int(r["cycles"]), out_where=b.out_where, wall_s=float(r["wall_s"]),
                       error_after_clear=bool(r["error_after_clear"]))


def run_intmath(config: TesseraConfig, sim: str, operands: dict[str, list[int]], *,
                pause: float = 0.0, seed: int = 1, workdir: Path | None = None) -> dict:
    """Stream ``operands`` (unit name -> list of operands) through the harness on ``sim``.

    Returns
    -------
    dict
        Unit name -> ``(results, latencies)``: each result, and the clock edges from each
        request's handshake to its response's.
    """
    names = list(operands)
    total = sum(len(v) for v in operands.values())
    build = runner.build(config, sim, INTMATH_HARNESS)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        arrays = {f"{n}_operands": np.array(operands[n], dtype=np.uint64) for n in names}
        np.savez(tmp / "job.npz", seed=seed, pause=pause, units=np.array(names, dtype=str),
                 timeout_cycles=200 * total + 1000, **arrays)
        runner.run(build, "tessera.sim.tb_output_path", testcase="intmath_edges", test_dir=tmp,
                   seed=seed, env={"TESSERA_JOB": str(tmp / "job.npz"),
                                   "TESSERA_RESULT": str(tmp / "result.npz")})
        with np.load(tmp / "result.npz") as r:
            return {n: ([int(h, 16) for h in r[f"{n}_results"]],
                        (r[f"{n}_resp_cycles"] - r[f"{n}_req_cycles"]).tolist()) for n in names}
