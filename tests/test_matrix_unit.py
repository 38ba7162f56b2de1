"""The matrix unit in Amaranth's simulator against the golden model, bit for bit."""

import numpy as np
import pytest

from tessera.hw.config import ArrayConfig, preset
from tessera.sim.amaranth_streams import random_pauses
from tessera.sim.matrix_amaranth import run_segments, run_tiles
from tessera.sw.golden import matmul as g

CONFIGS = {
    "tiny-both": preset("tiny"),
    "ws-3x5": ArrayConfig(rows=3, cols=5, dataflow="ws"),
    "os-5x3": ArrayConfig(rows=5, cols=3, dataflow="os"),
    "int4": ArrayConfig(rows=4, cols=4, input_bits=4, weight_bits=4, acc_bits=16),
    "int16-acc40": ArrayConfig(rows=2, cols=3, input_bits=16, weight_bits=16, acc_bits=40),
    "wrapping-acc16": ArrayConfig(rows=4, cols=4, acc_bits=16),
    "1x1": ArrayConfig(rows=1, cols=1),
}


def operands(cfg, m, k, n, seed):
    rng = np.random.default_rng(seed)
    ha, hw = 1 << (cfg.input_bits - 1), 1 << (cfg.weight_bits - 1)
    # Extreme values appear often: they are where wrapping and sign bugs live.
    a = rng.choice([-ha, ha - 1, 0, 1, -1], (m, k)) if seed % 3 == 0 else \
        rng.integers(-ha, ha, (m, k))
    b = rng.integers(-hw, hw, (k, n))
    return a, b


def pauses(on, seed):
    return dict(weight_pause=random_pauses(0.3 if on else 0, seed),
                data_pause=random_pauses(0.3 if on else 0, seed + 1),
                result_pause=random_pauses(0.4 if on else 0, seed + 2))


@pytest.mark.parametrize("stalls", [False, True], ids=["flowing", "stalls"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_products(name, stalls):
    cfg = CONFIGS[name]
    for seed, (m, k, n, m_tile) in enumerate([(9, 10, 7, 4), (6, 5, 4, 1), (12, 8, 9, 12)]):
        a, b = operands(cfg, m, k, n, seed)
        for kind in ("ws", "os"):
            if kind == "ws" and not cfg.has_ws or kind == "os" and not cfg.has_os:
                continue
            tiles = g.ws_tiles(a, b, cfg, m_tile=m_tile) if kind == "ws" else \
                g.os_tiles(a, b, cfg)
            (rows, lasts), _ = run_tiles(cfg, tiles, **pauses(stalls, seed))
            per_tile = g.unit_results(tiles, cfg)
            assert (rows == np.concatenate(per_tile)).all(), (kind, m, k, n)
            ends = np.cumsum([len(r) for r in per_tile]) - 1
            assert np.flatnonzero(lasts).tolist() == ends.tolist()
            assert (g.assemble(tiles, np.split(rows, ends[:-1] + 1), (m, n), cfg)
                    == g.matmul(a, b, cfg)).all()


@pytest.mark.parametrize("name", ["tiny-both", "ws-3x5"])
def test_back_to_back_ws_tiles_have_no_bubble(name):
    # With tiles of at least `rows` rows, the next weight tile loads while the current one
    # streams: results leave on consecutive cycles from the first to the last.
    cfg = CONFIGS[name]
    a, b = operands(cfg, 2 * cfg.rows, 3 * cfg.rows, 2 * cfg.cols, 1)
    tiles = g.ws_tiles(a, b, cfg, m_tile=cfg.rows)
    (rows, _), cycles = run_tiles(cfg, tiles)
    assert (rows == np.concatenate(g.unit_results(tiles, cfg))).all()
    assert cycles[-1] - cycles[0] + 1 == len(rows)


def test_back_to_back_os_tiles_have_no_bubble():
    cfg = CONFIGS["tiny-both"]
    a, b = operands(cfg, 3 * cfg.rows, cfg.rows, 2 * cfg.cols, 1)  # K = rows: the minimum
    tiles = g.os_tiles(a, b, cfg)
    (rows, _), cycles = run_tiles(cfg, tiles)
    assert (rows == np.concatenate(g.unit_results(tiles, cfg))).all()
    assert cycles[-1] - cycles[0] + 1 == len(rows)


def test_switch_back_to_ws_after_any_number_of_os_tiles():
    # OS tiles must not count as weight tiles: after 1, 2 or 3 of them (not a multiple of
    # the tile counters' modulus) the unit still becomes idle and switches back.
    cfg = CONFIGS["tiny-both"]
    a, b = operands(cfg, 5, 6, 3, 4)
    for count in (1, 2, 3):
        os_part = g.os_tiles(np.tile(a, (count, 1))[:4 * count], b, cfg)[:count]
        segments = [os_part, g.ws_tiles(a, b, cfg, m_tile=5)]
        (rows, _), _ = run_segments(cfg, segments)
        want = np.concatenate([r for s in segments for r in g.unit_results(s, cfg)])
        assert (rows == want).all(), count


def test_dataflow_switches_at_run_time():
    cfg = CONFIGS["tiny-both"]
    a, b = operands(cfg, 6, 9, 5, 2)
    segments = [g.ws_tiles(a, b, cfg, m_tile=3), g.os_tiles(a, b, cfg),
                g.ws_tiles(a, b, cfg, m_tile=6), g.os_tiles(a.T.copy(), a, cfg)]
    (rows, _), _ = run_segments(cfg, segments, **pauses(True, 5))
    want = np.concatenate([r for s in segments for r in g.unit_results(s, cfg)])
    assert (rows == want).all()
