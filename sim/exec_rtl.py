"""Run execute-unit programs on the generated Verilog of
:class:`~tessera.sim.exec_system.ExecSystem`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..hw.config import TesseraConfig
from . import runner
from .exec_system import EXEC_SYSTEM

__all__ = ["run_exec_job"]


def run_exec_job(config: TesseraConfig, sim: str, *, commands: int = 40, seed: int = 1) -> dict:
    """Run a random program of ``commands`` commands, checked against the golden executor.

    Raises
    ------
    runner.SimulationFailed
        When an accumulator row differs, or the unit hangs.
    """
    b = runner.build(config, sim, EXEC_SYSTEM)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "job.json").write_text(json.dumps({"seed": seed, "commands": commands}))
        runner.run(b, "tessera.sim.tb_exec", test_dir=tmp, seed=seed,
                   env={"TESSERA_JOB": str(tmp / "job.json"),
                        "TESSERA_RESULT": str(tmp / "result.json")})
        return json.loads((tmp / "result.json").read_text())
