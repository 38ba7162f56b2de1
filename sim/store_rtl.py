"""Run store-path jobs on the generated Verilog of
:class:`~tessera.sim.store_system.StoreSystem`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..hw.config import TesseraConfig
from . import runner
from .store_system import STORE_SYSTEM

__all__ = ["run_store_job"]


def run_store_job(config: TesseraConfig, sim: str, *, commands: int = 20, pause: float = 0.0,
                  seed: int = 1, mem_base: int = 0x10000, mem_size: int = 2 * 4096) -> dict:
    """Run ``commands`` random store commands (every operation, both destinations).

    Raises
    ------
    runner.SimulationFailed
        When a result differs from the golden model, or the store path hangs.
    """
    b = runner.build(config, sim, STORE_SYSTEM)
    job = {"seed": seed, "commands": commands, "pause": pause, "mem_base": mem_base,
           "mem_size": mem_size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "job.json").write_text(json.dumps(job))
        runner.run(b, "tessera.sim.tb_store", test_dir=tmp, seed=seed,
                   env={"TESSERA_JOB": str(tmp / "job.json"),
                        "TESSERA_RESULT": str(tmp / "result.json")})
        return json.loads((tmp / "result.json").read_text())
