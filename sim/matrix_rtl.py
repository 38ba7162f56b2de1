"""Run tile streams through the generated matrix unit on Icarus or Verilator."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..hw.config import ArrayConfig, TesseraConfig
from ..sw.golden.matmul import OsTile, WsTile
from . import runner

__all__ = ["RtlRun", "run_tiles"]


class RtlRun:
    """What one job returned: result rows, their ``last`` bits and handshake cycles."""

    def __init__(self, npz):
        self.rows: np.ndarray = npz["rows"]
        self.last: np.ndarray = npz["last"]
        self.out_cycles: np.ndarray = npz["out_cycles"]
        self.data_cycles: np.ndarray = npz["data_cycles"]
        self.cycles = int(npz["cycles"])
        self.wall_s = float(npz["wall_s"])


def _job(config: ArrayConfig | TesseraConfig, tiles) -> dict:
    os_mode = bool(tiles) and isinstance(tiles[0], OsTile)
    R, C = config.rows, config.cols
    if os_mode:
        a = np.concatenate([t.a.T for t in tiles])
        b = np.concatenate([t.b for t in tiles])
        last = np.concatenate([np.arange(t.a.shape[1]) == t.a.shape[1] - 1 for t in tiles])
        weights = np.zeros((0, C), np.int64)
        n_out = R * len(tiles)
    else:
        a = np.concatenate([t.a for t in tiles])
        b = np.zeros((len(a), C), np.int64)
        last = np.concatenate([np.arange(len(t.a)) == len(t.a) - 1 for t in tiles])
        weights = np.concatenate([t.weights for t in tiles])
        n_out = len(a)
    return {"os_mode": os_mode, "a": a, "b": b, "last": last, "weights": weights,
            "n_out": n_out}


def run_tiles(config: ArrayConfig | TesseraConfig, sim: str, tiles: list[WsTile] | list[OsTile], *,
              weight_pause: float = 0.0, data_pause: float = 0.0, result_pause: float = 0.0,
              seed: int = 1, timeout_cycles: int | None = None,
              workdir: Path | None = None) -> RtlRun:
    """Stream ``tiles`` (all WS or all OS) through the generated unit on ``sim``.

    Raises
    ------
    runner.SimulationFailed
        If the build or the simulation fails, or the unit hangs (no result within
        ``timeout_cycles``, by default ten times the beats plus latency).
    """
    job = _job(config, tiles)
    beats = len(job["a"]) + len(job["weights"]) + job["n_out"]
    if timeout_cycles is None:
        timeout_cycles = 10 * beats + 50 * (config.rows + config.cols) + 1000
    b = runner.build(config, sim)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "job.npz", seed=seed, weight_pause=weight_pause, data_pause=data_pause,
                 result_pause=result_pause, timeout_cycles=timeout_cycles, **job)
        runner.run(b, "tessera.sim.tb_matrix_unit", test_dir=tmp,
                   env={"TESSERA_JOB": str(tmp / "job.npz"),
                        "TESSERA_RESULT": str(tmp / "result.npz")})
        with np.load(tmp / "result.npz") as npz:
            return RtlRun(npz)
