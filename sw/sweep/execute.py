"""A sweep's points as tasks on Dask (``dask.distributed``), cached on disk.

Each point (configuration x workload) is one task, :func:`evaluate`, run on a worker: a
:class:`~distributed.LocalCluster` on this machine by default (one single-threaded worker
process per core), or any running cluster whose scheduler address is given (its workers
need Tessera installed). Every result is written to the cache as it arrives, keyed by the
configuration, the memory latency, the workload, the backend and the version of the code
that computes it (:func:`code_version`), so an interrupted sweep resumes where it stopped
and a second run of the same sweep computes nothing. RTL re-runs are tasks too, at most
``rtl_parallel`` at a time (a Verilator build and a long simulation each take a core).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ...hw.config import TesseraConfig, TesseraError
from ..runtime import RunError

__all__ = ["evaluate", "PointCache", "code_version", "Executor", "point_key"]

_ROOT = Path(__file__).resolve().parents[2]
#: The sources whose text makes a backend's version: what lowers and quantizes the
#: workloads (both); what times them: the model's code and the golden executor it orders
#: the commands with (``model``), the hardware and the simulated system (RTL backends).
#: Glue that does not change a figure (the runtime's front end) is left out, so that a
#: change to one backend's code does not throw away the other's results.
_VERSION_SOURCES = {
    "common": ["hw/config.py", "hw/isa.py", "sw/lower", "sw/models", "sw/golden",
               "sw/sweep/workloads.py"],
    "model": ["sw/perf"],
    "rtl": ["hw", "sim"],
}
#: Files of the common folders that only one kind of backend reads.
_ONLY = {"sw/golden/executor.py": "model"}


def code_version(backend: str) -> str:
    """A hash of the source files a backend's results depend on (16 hex digits)."""
    kind = "model" if backend == "model" else "rtl"
    h = hashlib.sha256()
    for part in _VERSION_SOURCES["common"] + _VERSION_SOURCES[kind]:
        path = _ROOT / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if path.is_dir() and part in ("hw", "sim"):
            files += sorted(path.rglob("*.v")) + sorted(path.rglob("*.cpp"))
        for f in files:
            name = str(f.relative_to(_ROOT))
            if f.exists() and _ONLY.get(name, kind) == kind:
                h.update(name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def point_key(config: TesseraConfig, mem_latency: int, workload: dict, backend: str,
              version: str, seed: int) -> str:
    """The cache key of one point."""
    ident = {"config": config.to_dict(), "mem_latency": mem_latency, "workload": workload,
             "backend": backend, "version": version, "seed": seed}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def evaluate(config_dict: dict, mem_latency: int, workload: dict, backend: str,
             seed: int) -> dict:
    """One point, on a worker: the workload's figures (:func:`run_workload`) with
    ``status`` ``ok``, or ``unfit`` (the workload does not fit the configuration) or
    ``error`` (the machine stopped, a bad input) with the ``message``."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .workloads import WorkloadUnfit, run_workload

    config = TesseraConfig.from_dict(config_dict)
    t = time.time()
    try:
        out = run_workload(config, workload, backend, mem_latency, seed)
    except WorkloadUnfit as e:
        return {"status": "unfit", "message": str(e), "wall_seconds": time.time() - t}
    except RunError as e:
        return {"status": "error", "message": str(e), "wall_seconds": time.time() - t}
    except (TesseraError, ValueError) as e:
        return {"status": "error", "message": f"{type(e).__name__}: {e}",
                "wall_seconds": time.time() - t}
    out["status"] = "ok"
    return out


class PointCache:
    """Results on disk, one JSON file per point key."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text())["result"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, ident: dict, result: dict) -> None:
        tmp = self._path(key).with_suffix(".tmp")
        tmp.write_text(json.dumps({"ident": ident, "result": result}, sort_keys=True))
        tmp.replace(self._path(key))          # whole or absent, if interrupted


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Executor:
    """A Dask client (a local cluster started here, or a running scheduler) and the
    cache; :meth:`run` evaluates jobs and returns their results.

    Parameters
    ----------
    cache : PointCache
    scheduler : str, optional
        The address of a running scheduler (``tcp://host:8786``); else a
        :class:`~distributed.LocalCluster` of ``workers`` single-threaded processes
        (default: one per core, at most 2 on this machine's size).
    progress : callable(str), optional
    """

    def __init__(self, cache: PointCache, scheduler: str | None = None,
                 workers: int | None = None, progress=None):
        from distributed import Client, LocalCluster

        self.cache = cache
        self.say = progress or (lambda _: None)
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise SweepRunError(f"cannot reach the Dask scheduler at {scheduler}: "
                                    f"{e}") from None
        else:
            n = workers or max(1, min(2, os.cpu_count() or 1))
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", silence_logs=40)
            self.client = Client(self.cluster)
        info = self.client.scheduler_info()
        self.workers = len(info.get("workers", {}))
        where = scheduler or f"a local cluster of {self.workers} worker processes"
        self.say(f"Dask: {where}; dashboard {self.client.dashboard_link}")

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, jobs: list[dict], what: str, parallel: int | None = None) -> dict:
        """Evaluate ``jobs`` (each ``{"key", "ident", "args"}``, ``args`` those of
        :func:`evaluate`), the cached ones from the cache; at most ``parallel`` in flight
        (default: all). Results by key; ``self.computed`` counts the ones computed now."""
        from distributed import as_completed

        results, todo = {}, []
        for job in jobs:
            hit = self.cache.get(job["key"])
            if hit is not None:
                results[job["key"]] = hit
            else:
                todo.append(job)
        total, cached = len(jobs), len(results)
        self.computed = 0
        self.say(f"{what}: {total} point(s), {cached} from the cache, {len(todo)} to run")
        if not todo:
            return results
        start = time.time()
        limit = parallel or len(todo)
        pending = list(todo)
        by_future = {}

        def submit():
            job = pending.pop(0)
            f = self.client.submit(evaluate, *job["args"], pure=False,
                                   key=f"tessera-{job['key']}-{time.time_ns()}")
            by_future[f] = job
            return f

        queue = as_completed([submit() for _ in range(min(limit, len(pending)))])
        last = 0.0
        for f in queue:
            job = by_future.pop(f)
            try:
                res = f.result()
                self.cache.put(job["key"], job["ident"], res)
            except Exception as e:          # a worker that died: not cached, run again
                res = {"status": "error", "message": f"the task failed: "
                                                     f"{type(e).__name__}: {e}"}
            results[job["key"]] = res
            self.computed += 1
            if pending:
                queue.add(submit())
            now = time.time()
            if now - last >= 1.0 or not by_future:
                last = now
                elapsed = now - start
                left = len(todo) - self.computed
                eta = elapsed / self.computed * left
                self.say(f"{what}: {cached + self.computed} of {total} done "
                         f"({self.computed} run in {_fmt_seconds(elapsed)}, ETA "
                         f"{_fmt_seconds(eta)}); dashboard {self.client.dashboard_link}")
        return results


class SweepRunError(TesseraError, RuntimeError):
    """The sweep could not run (no cluster reachable)."""
