"""Run DMA jobs on the generated Verilog of :class:`~tessera.sim.dma_system.DmaSystem`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..hw.config import TesseraConfig
from . import runner
from .dma_system import DMA_SYSTEM

__all__ = ["run_job"]


def run_job(config: TesseraConfig, sim: str, *, testcase: str = "dma_job", transfers: int = 200,
            pause: float = 0.0, error_rate: float = 0.1, seed: int = 1,
            mem_base: int = 0x10000, mem_size: int = 3 * 4096, extra: dict | None = None) -> dict:
    """Run one cocotb test of ``sim/tb_dma.py``; returns what it reported.

    Raises
    ------
    runner.SimulationFailed
        When a transfer does not match the golden model, or the engine hangs.
    """
    b = runner.build(config, sim, DMA_SYSTEM)
    job = {"seed": seed, "transfers": transfers, "pause": pause, "error_rate": error_rate,
           "mem_base": mem_base, "mem_size": mem_size, **(extra or {})}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "job.json").write_text(json.dumps(job))
        runner.run(b, "tessera.sim.tb_dma", testcase=testcase, test_dir=tmp, seed=seed,
                   env={"TESSERA_JOB": str(tmp / "job.json"),
                        "TESSERA_RESULT": str(tmp / "result.json")})
        return json.loads((tmp / "result.json").read_text())
