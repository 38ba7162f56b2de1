"""Design-space sweeps (``tessera sweep``): configurations against workloads on Dask, with
cost per configuration, Pareto fronts and an RTL re-check of the front.

* :mod:`.spec`: the specification (axes, constraints, workloads), read and checked;
* :mod:`.workloads`: each workload built by the existing lowerings and run on a backend;
* :mod:`.cost`: area and clock per configuration, measured or fitted;
* :mod:`.execute`: the points as Dask tasks, cached on disk;
* :mod:`.results`: the table, the Pareto fronts, the plots;
* :mod:`.sweep`: the whole, :func:`run_sweep`.
"""

from .spec import SpecError, SweepSpec, Workload, expand, load_spec, parse_spec
from .sweep import format_summary, run_sweep

__all__ = ["SpecError", "SweepSpec", "Workload", "expand", "load_spec", "parse_spec",
           "run_sweep", "format_summary"]
