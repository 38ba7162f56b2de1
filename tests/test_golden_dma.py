"""The golden DMA model: wide loads into the accumulator (whole little-endian lanes,
unscaled, stride 0 for biases) and the shapes the engine refuses."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.dma import command_layout, max_load_row_bytes, max_row_bytes
from tessera.sw.golden import dma as g

TINY = preset("tiny")  # 4 lanes of int32: 16-byte accumulator rows, 4-byte scratchpad rows


def lanes_to_bytes(values, lane_bytes: int) -> np.ndarray:
    """Little-endian two's-complement bytes of ``values``."""
    out = []
    for v in values:
        out += list((int(v) % (1 << 8 * lane_bytes)).to_bytes(lane_bytes, "little"))
    return np.array(out, dtype=np.uint8)


def acc_of(cfg, rows: int = 8, fill: int = 0) -> np.ndarray:
    return np.full((rows, cfg.cols), fill, dtype=np.int64)


def test_lane_bytes_follow_acc_bits():
    assert g.lane_bytes(TINY) == 4
    assert g.lane_bytes(TINY.replace(acc_bits=24)) == 3
    assert g.lane_bytes(TINY.replace(acc_bits=16)) == 2


def test_wide_load_stores_lanes_as_they_are_and_zeroes_the_rest():
    values = [-(1 << 31), (1 << 31) - 1]
    mem = np.concatenate([lanes_to_bytes(values, 4), np.full(8, 0xAB, np.uint8)])
    acc = acc_of(TINY, fill=77)
    cmd = g.DmaCommand(0, 8, 1, 8, local_addr=2, to_acc=True, scale=-7, wide=True)
    assert g.check_command(cmd, TINY, 0, len(mem), load=True) == "NONE"
    g.load(mem, cmd, TINY, acc)
    assert acc[2].tolist() == values + [0, 0]       # no scale; lanes past row_bytes are 0
    assert (acc[[0, 1, 3]] == 77).all()              # other rows untouched


def test_wide_load_of_a_whole_row_with_a_stride():
    rng = np.random.default_rng(0)
    values = rng.integers(-(1 << 31), 1 << 31, (3, TINY.cols))
    gap = 5
    mem = np.zeros(3 * (TINY.acc_row_bytes + gap), dtype=np.uint8)
    for r in range(3):
        at = r * (TINY.acc_row_bytes + gap)
        mem[at:at + TINY.acc_row_bytes] = lanes_to_bytes(values[r], 4)
    base = 0x1000
    cmd = g.DmaCommand(base, TINY.acc_row_bytes + gap, 3, TINY.acc_row_bytes, local_addr=4,
                       to_acc=True, wide=True)
    assert g.check_command(cmd, TINY, base, len(mem), load=True) == "NONE"
    acc = acc_of(TINY)
    g.load(mem, cmd, TINY, acc, base)
    assert (acc[4:7] == values).all()


def test_wide_load_accumulates_and_wraps():
    mem = lanes_to_bytes([(1 << 31) - 1, -1, 5, -(1 << 31)], 4)
    acc = acc_of(TINY)
    acc[0] = [1, -1, -5, -1]
    g.load(mem, g.DmaCommand(0, 16, 1, 16, to_acc=True, accumulate=True, wide=True), TINY, acc)
    assert acc[0].tolist() == [-(1 << 31), -2, 0, (1 << 31) - 1]


def test_wide_load_with_stride_zero_replicates_a_bias():
    bias = [3, -4, 100000, -(1 << 20)]
    mem = np.concatenate([np.zeros(3, np.uint8), lanes_to_bytes(bias, 4)])
    acc = acc_of(TINY, rows=8)
    acc[1:7] = np.arange(6 * TINY.cols).reshape(6, TINY.cols)
    partial = acc.copy()
    cmd = g.DmaCommand(3, 0, 6, 16, local_addr=1, to_acc=True, accumulate=True, wide=True)
    assert g.check_command(cmd, TINY, 0, len(mem), load=True) == "NONE"
    g.load(mem, cmd, TINY, acc)
    assert (acc[1:7] == partial[1:7] + np.array(bias)).all()
    assert (acc[[0, 7]] == 0).all()


def test_wide_lanes_of_three_bytes_are_signed():
    cfg = TINY.replace(acc_bits=24)
    mem = lanes_to_bytes([-1, (1 << 23) - 1, -(1 << 23)], 3)
    acc = acc_of(cfg)
    cmd = g.DmaCommand(0, 9, 1, 9, to_acc=True, wide=True)
    assert g.check_command(cmd, cfg, 0, len(mem), load=True) == "NONE"
    g.load(mem, cmd, cfg, acc)
    assert acc[0].tolist() == [-1, (1 << 23) - 1, -(1 << 23), 0]


def test_narrow_loads_into_the_accumulator_still_scale_int8():
    mem = np.array([0x80, 0x7F, 0x01], dtype=np.uint8)
    acc = acc_of(TINY)
    g.load(mem, g.DmaCommand(0, 3, 1, 3, to_acc=True, scale=-3), TINY, acc)
    assert acc[0].tolist() == [384, -381, -3, 0]


@pytest.mark.parametrize("cmd, cfg, error", [
    # Wide loads: whole lanes, at most a whole accumulator row, only into the accumulator.
    (g.DmaCommand(0, 16, 1, 16, to_acc=True, wide=True), TINY, "NONE"),
    (g.DmaCommand(0, 4, 1, 4, to_acc=True, wide=True), TINY, "NONE"),
    (g.DmaCommand(0, 0, 9, 8, to_acc=True, wide=True), TINY, "NONE"),
    (g.DmaCommand(0, 20, 1, 20, to_acc=True, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 6, 1, 6, to_acc=True, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 3, 1, 3, to_acc=True, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 4, 1, 4, to_acc=False, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 4, 0, 4, to_acc=True, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 0, 1, 0, to_acc=True, wide=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 9, 1, 9, to_acc=True, wide=True), TINY.replace(acc_bits=24), "NONE"),
    (g.DmaCommand(0, 8, 1, 8, to_acc=True, wide=True), TINY.replace(acc_bits=24), "SHAPE"),
    (g.DmaCommand(0, 5, 1, 5, to_acc=True, wide=True), TINY.replace(acc_bits=20), "SHAPE"),
    # The old limits of the other loads: a scratchpad row; cols bytes into the accumulator.
    (g.DmaCommand(0, 4, 1, 4), TINY, "NONE"),
    (g.DmaCommand(0, 5, 1, 5), TINY, "SHAPE"),
    (g.DmaCommand(0, 4, 1, 4, to_acc=True), TINY, "NONE"),
    (g.DmaCommand(0, 5, 1, 5, to_acc=True), TINY, "SHAPE"),
    (g.DmaCommand(0, 16, 1, 16, to_acc=True), TINY, "SHAPE"),
])
def test_load_shapes(cmd, cfg, error):
    assert g.check_command(cmd, cfg, 0, 4096, load=True) == error


def test_stores_keep_scratchpad_rows_and_are_never_wide():
    assert g.check_command(g.DmaCommand(0, 4, 2, 4), TINY, 0, 4096, load=False) == "NONE"
    assert g.check_command(g.DmaCommand(0, 8, 2, 8), TINY, 0, 4096, load=False) == "SHAPE"
    assert g.check_command(g.DmaCommand(0, 4, 1, 4, wide=True), TINY, 0, 4096,
                           load=False) == "SHAPE"


def test_shape_comes_before_window_and_local():
    # A bad shape is reported even when the block is also outside the window and the rows.
    cmd = g.DmaCommand(1 << 20, 6, 1, 6, local_addr=TINY.acc_rows, to_acc=True, wide=True)
    assert g.check_command(cmd, TINY, 0, 4096, load=True) == "SHAPE"
    ok = g.DmaCommand(4090, 16, 1, 16, to_acc=True, wide=True)
    assert g.check_command(ok, TINY, 0, 4096, load=True) == "WINDOW"
    rows = g.DmaCommand(0, 0, 2, 16, local_addr=TINY.acc_rows - 1, to_acc=True, wide=True)
    assert g.check_command(rows, TINY, 0, 4096, load=True) == "LOCAL"


@pytest.mark.parametrize("name", ["tiny", "default", "large"])
def test_the_command_layout_holds_a_whole_accumulator_row(name):
    cfg = preset(name)
    assert max_load_row_bytes(cfg) == max(cfg.spad_row_bytes, cfg.acc_row_bytes)
    assert max_row_bytes(cfg) == cfg.spad_row_bytes
    cmd = g.DmaCommand(0x1234, 0, 3, cfg.acc_row_bytes, 7, to_acc=True, accumulate=True,
                       scale=-5, wide=True)
    layout = command_layout(cfg)
    view = layout.const(cmd.as_payload())
    assert int(view.row_bytes) == cfg.acc_row_bytes and int(view.wide) == 1
