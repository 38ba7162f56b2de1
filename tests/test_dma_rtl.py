"""The DMA engine's generated Verilog against the golden memory model, on both simulators:
random 2-D transfers (wide accumulator loads and stride 0 among them) with pauses on every
AXI channel, injected errors, refused shapes, reset mid-way."""

import pytest

from tessera.hw.config import TesseraConfig, preset
from tessera.sim.dma_rtl import run_job

pytestmark = pytest.mark.rtl

MEM = dict(spad_kib=16, acc_kib=16, max_row_len=256)
CONFIGS = {
    # 4-byte local rows on an 8-byte bus: rows start and end inside beats.
    "tiny": preset("tiny"),
    # 16-byte rows on an 8-byte bus: each row spans beats; two reads and writes in flight.
    "rows16-bus64": TesseraConfig(rows=16, cols=16, bus_bits=64, max_reads=2, max_writes=2,
                                  **MEM),
    # 16-byte rows on a 16-byte bus, as the default configuration.
    "rows16-bus128": TesseraConfig(rows=16, cols=16, bus_bits=128, **MEM),
    # 32-byte rows on a 32-byte bus; one read and one write in flight.
    "rows32-bus256": TesseraConfig(rows=32, cols=32, bus_bits=256, max_reads=1, max_writes=1,
                                   spad_kib=32, acc_kib=32, max_row_len=256),
}


@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["flowing", "pauses"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_transfers_icarus(name, pause):
    transfers = 60 if name == "rows32-bus256" else 150  # wide rows simulate slowly on Icarus
    counts = run_job(CONFIGS[name], "icarus", transfers=transfers, pause=pause, seed=3)
    assert counts["loads"] > transfers // 5 and counts["stores"] > transfers // 5
    assert counts["wide_loads"] > 0
    assert counts["errors"].get("SLVERR", 0) > 0 and counts["errors"].get("WINDOW", 0) > 0


@pytest.mark.parametrize("name", ["tiny", "rows16-bus128"])
def test_thousands_of_transfers_verilator(name):
    counts = run_job(CONFIGS[name], "verilator", transfers=1500, pause=0.3, seed=5)
    assert counts["loads"] + counts["stores"] > 1000
    assert counts["wide_loads"] > 100 and counts["wide_stride0"] > 10
    assert counts["errors"].get("SLVERR", 0) > 0 and counts["errors"].get("SHAPE", 0) > 0


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_reset_in_the_middle_of_transfers(sim):
    counts = run_job(CONFIGS["tiny"], sim, testcase="dma_reset_midway", transfers=40,
                     pause=0.2, seed=7)
    assert counts["loads"] + counts["stores"] > 20


def test_latency_is_hidden_and_decode_errors_reported():
    # A memory with 100 cycles of latency: with bursts in flight the long transfers take
    # about one cycle per beat plus one latency, not a latency per burst.
    cfg = CONFIGS["rows16-bus128"]
    rows = 600
    fig = run_job(cfg, "verilator", testcase="dma_bandwidth", mem_size=1 << 16,
                  extra={"rows": rows, "latency_cycles": 100})
    beats = rows * cfg.spad_row_bytes // cfg.bus_bytes
    for direction in ("read", "write"):
        assert beats < fig[f"{direction}_cycles"] < beats + 100 + 60, fig
