"""The native simulator's profile training: the workloads a profile-guided build runs on
its instrumented simulator between its two compiles (:func:`tessera.sim.native.build_native`;
registered with :mod:`tessera.sim.profile` when :mod:`tessera.sw` is imported)."""

from __future__ import annotations

import warnings

from ..sim.native import NativeBuild
from .bench import bench_gemm
from .check import InputError
from .lower.plan import LoweringError
from .run import run_bert, run_gpt2

__all__ = ["train_profile"]


def train_profile(build: NativeBuild, say=None) -> dict:
    """Run the profile's training workloads on an instrumented ``build``: a matrix product
    with bias and i-GELU, a BERT layer (extended dataflow where the configuration lowers
    it, else the base one) and two GPT-2 decode steps, sized to the array (a few hundred
    thousand cycles: about 15 s on the default configuration). Each is checked against the
    golden model as any run is.

    A workload the configuration cannot lower is left out (and named with the reason under
    ``skipped``), and one that fails is reported as a warning: the profile then misses
    what it would have run, and the build is as correct (the profile changes how fast the
    code is, never what it computes).

    ``say(text)``, if given, is called with what runs, for a progress line. Returns the
    cycles run per workload, the workloads skipped and the failures.
    """
    c = build.config
    runtime = {"native_build": build}
    s, h = 8 * c.rows, 16 * c.cols
    layer = {"seq": s, "hidden": h, "heads": 4, "ffn": 4 * h, "runtime": runtime}
    workloads = {
        "gemm": lambda: bench_gemm(c, "verilator", 2 * s, 2 * s, 2 * s, bias=True,
                                   activation="gelu", runtime=runtime),
        "bert layer": lambda: _either(lambda d: run_bert(c, "verilator", dataflow=d,
                                                         **layer)),
        "gpt2 decode": lambda: run_gpt2(c, "verilator", decode=True, steps=2, **layer),
    }
    done = {"cycles": {}, "skipped": {}, "failed": {}}
    for name, work in workloads.items():
        if say is not None:
            say(f"the profile's training run: {name}")
        try:
            done["cycles"][name] = work()["cycles"]
        except (LoweringError, InputError) as e:
            done["skipped"][name] = str(e)
        except Exception as e:       # noqa: BLE001 - reported, and the build stays correct
            done["failed"][name] = f"{type(e).__name__}: {e}"
            warnings.warn(f"the native simulator's profile training ({name}) failed: "
                          f"{type(e).__name__}: {e}; the build is correct but may be "
                          "slower", RuntimeWarning, stacklevel=3)
    return done


def _either(run):
    """``run("extended")``, or ``run("base")`` where the configuration cannot lower the
    extended dataflow."""
    try:
        return run("extended")
    except LoweringError:
        return run("base")
