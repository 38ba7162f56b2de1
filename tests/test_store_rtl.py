"""The store path on the generated Verilog: accumulator rows through the output path to
main memory (through the DMA) or back into the scratchpad, every operation, against the
golden model bit for bit, with pauses on the AXI write channels; rows one after the other
in main memory as one DMA store; DMA errors on both paths."""

import pytest

from tessera.hw.config import preset
from tessera.sim.store_rtl import run_store_job

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["flowing", "pauses"])
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_store_path(sim, pause):
    commands = 60 if sim == "icarus" else 150
    counts = run_store_job(preset("tiny"), sim, commands=commands, pause=pause,
                           seed=2 + int(pause * 10))
    # Both destinations used; 14 directed commands (and some random ones) as one DMA
    # store; the four DMA errors reported; the out-of-range command refused.
    assert counts["spad"] > commands // 5 and counts["dram"] > commands // 5
    assert counts["contiguous"] > 14
    assert counts["dma_errors"] == 4 and counts["refused"] == 1
