"""The generated Verilog of the matrix unit on Icarus and Verilator, against the golden
model bit for bit. Small configurations; every configuration is built once per simulator
and shared by the tests."""

import numpy as np
import pytest

from tessera.hw.config import ArrayConfig, preset
from tessera.sim.matrix_rtl import run_tiles
from tessera.sw.golden import matmul as g

pytestmark = pytest.mark.rtl

SIMS = ["icarus", "verilator"]
# (M, K, N, rows per WS tile): K and N not multiples of the array, tiles shorter and
# longer than the array, a single element.
SHAPES = [(9, 10, 7, 4), (5, 3, 9, 1), (17, 13, 6, 17), (1, 1, 1, 1), (8, 8, 8, 8)]


def products(cfg, seed):
    rng = np.random.default_rng(seed)
    ha, hw = 1 << (cfg.input_bits - 1), 1 << (cfg.weight_bits - 1)
    for i, (m, k, n, m_tile) in enumerate(SHAPES):
        a = rng.integers(-ha, ha, (m, k))
        if i == 0:  # extreme values, where sign and wrap-around bugs live
            a = rng.choice([-ha, ha - 1], (m, k))
        yield a, rng.integers(-hw, hw, (k, n)), m_tile


def check(cfg, sim, dataflow, pause, seed):
    jobs, tiles = [], []
    for a, b, m_tile in products(cfg, seed):
        t = g.ws_tiles(a, b, cfg, m_tile=m_tile) if dataflow == "ws" else g.os_tiles(a, b, cfg)
        jobs.append((a, b, len(tiles), len(tiles) + len(t)))
        tiles += t
    run = run_tiles(cfg, sim, tiles, weight_pause=pause, data_pause=pause,
                    result_pause=pause, seed=seed)
    per_tile = g.unit_results(tiles, cfg)
    want = np.concatenate(per_tile)
    assert run.rows.shape == want.shape
    bad = np.flatnonzero((run.rows != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} result rows differ, first at row {bad[:1]}"
    ends = np.cumsum([len(r) for r in per_tile]) - 1
    assert np.flatnonzero(run.last).tolist() == ends.tolist()
    # The tiles reassemble into each product, as the accumulator will do it.
    split = np.split(run.rows, ends[:-1] + 1)
    for a, b, t0, t1 in jobs:
        got = g.assemble(tiles[t0:t1], split[t0:t1], (a.shape[0], b.shape[1]), cfg)
        assert (got == g.matmul(a, b, cfg)).all()
    return run


@pytest.mark.parametrize("pause", [0.0, 0.3], ids=["flowing", "stalls"])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("sim", SIMS)
def test_random_products(sim, dataflow, pause):
    check(preset("tiny"), sim, dataflow, pause, seed=len(sim) + int(pause * 10))


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("sim", SIMS)
def test_back_to_back_tiles_without_bubbles(sim, dataflow):
    cfg = preset("tiny")
    rng = np.random.default_rng(7)
    r = cfg.rows
    k = 3 * r if dataflow == "ws" else r  # OS: the shortest reduction that keeps up
    a, b = rng.integers(-128, 128, (4 * r, k)), rng.integers(-128, 128, (k, 2 * r))
    tiles = g.ws_tiles(a, b, cfg, m_tile=r) if dataflow == "ws" else g.os_tiles(a, b, cfg)
    run = run_tiles(cfg, sim, tiles)
    assert (run.rows == np.concatenate(g.unit_results(tiles, cfg))).all()
    # One result row per cycle from the first to the last: no bubble between tiles.
    assert run.out_cycles[-1] - run.out_cycles[0] + 1 == len(run.rows)
    assert run.data_cycles[-1] - run.data_cycles[0] + 1 == len(run.data_cycles)


@pytest.mark.parametrize("cfg", [
    ArrayConfig(rows=3, cols=5, dataflow="ws"),
    ArrayConfig(rows=5, cols=3, dataflow="os"),
    ArrayConfig(rows=2, cols=2, input_bits=16, weight_bits=4, acc_bits=24),
], ids=["ws-3x5", "os-5x3", "int16xint4-acc24"])
def test_other_configurations_on_icarus(cfg):
    check(cfg, "icarus", "ws" if cfg.has_ws else "os", 0.2, seed=3)
