"""The execute unit's generated Verilog on Icarus and Verilator: random programs against
the golden executor, bit for bit."""

import pytest

from tessera.hw.config import preset
from tessera.sim.exec_rtl import run_exec_job

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_random_programs(sim):
    result = run_exec_job(preset("tiny"), sim, commands=60, seed=3)
    assert result["commands"] == 60 and result["macs"] > 0
