import numpy as np
import pytest

from tessera.hw.config import TesseraConfig, preset
from tessera.sw.golden import matmul as g


def test_wrap_matches_twos_complement():
    x = np.array([0, 127, 128, -129, 255, 256, -(1 << 40)], dtype=np.int64)
    assert g.wrap(x, 8).tolist() == [0, 127, -128, 127, -1, 0, 0]
    assert g.wrap(np.array([(1 << 31)]), 32).tolist() == [-(1 << 31)]
    assert g.wrap(x, 64).tolist() == x.tolist()


def test_matmul_equals_python_integers_wrapped():
    cfg = preset("tiny").replace(acc_bits=20)
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (7, 33))
    b = rng.integers(-128, 128, (33, 5))
    got = g.matmul(a, b, cfg)
    for i in range(7):
        for j in range(5):
            exact = sum(int(a[i, k]) * int(b[k, j]) for k in range(33))
            wrapped = (exact + (1 << 19)) % (1 << 20) - (1 << 19)
            assert got[i, j] == wrapped


@pytest.mark.parametrize("acc_bits", [20, 32])
def test_matmul_exact_at_the_extremes(acc_bits):
    # The largest products summed over a long K (the float64 path must stay exact): every
    # row of -128 against columns of -128, 127 and a mix; sums up to 2^14 x 65,536 = 2^30.
    cfg = preset("default").replace(acc_bits=acc_bits)
    K = 1 << 16
    a = np.full((3, K), -128)
    a[1, ::2] = 127
    b = np.stack([np.full(K, -128), np.full(K, 127), np.where(np.arange(K) % 3, -128, 127)], 1)
    got = g.matmul(a, b, cfg)
    for i in range(3):
        for j in range(3):
            exact = int(np.dot(a[i].astype(object), b[:, j].astype(object)))
            half = 1 << (acc_bits - 1)
            assert got[i, j] == (exact + half) % (1 << acc_bits) - half


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 9), (16, 17, 15), (33, 40, 7)])
@pytest.mark.parametrize("cfg", [preset("tiny"), TesseraConfig(rows=3, cols=5, spad_kib=16,
                                                                 acc_kib=8, max_row_len=256)])
def test_tiles_reassemble_to_the_product(shape, cfg):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + k)
    a = rng.integers(-128, 128, (m, k))
    b = rng.integers(-128, 128, (k, n))
    want = g.matmul(a, b, cfg)
    ws = g.ws_tiles(a, b, cfg, m_tile=4)
    assert all(t.weights.shape == (cfg.rows, cfg.cols) and t.a.shape[1] == cfg.rows for t in ws)
    assert (g.assemble(ws, g.unit_results(ws, cfg), (m, n), cfg) == want).all()
    os_ = g.os_tiles(a, b, cfg)
    assert all(t.a.shape == (cfg.rows, k) and t.b.shape == (k, cfg.cols) for t in os_)
    assert (g.assemble(os_, g.unit_results(os_, cfg), (m, n), cfg) == want).all()


def test_operand_checks():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match=r"a holds values outside the signed 8-bit range"):
        g.matmul(np.array([[128]]), np.array([[1]]), cfg)
    with pytest.raises(ValueError, match="b must be an integer array, not float64"):
        g.matmul(np.array([[1]]), np.array([[1.0]]), cfg)
    with pytest.raises(ValueError, match=r"cannot multiply shapes \(2, 3\) and \(2, 3\)"):
        g.matmul(np.zeros((2, 3), int), np.zeros((2, 3), int), cfg)
