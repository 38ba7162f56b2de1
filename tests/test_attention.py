"""One attention head lowered to a command stream, on the golden executor, against the
integer semantics written out in numpy."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.sw.golden import requant as grq
from tessera.sw.golden import softmax as gsm
from tessera.sw.golden.matmul import matmul
from tessera.sw.lower.attention import MASK_NEG, AttentionHead, lower_attention_head
from tessera.sw.lower.layout import Blocked, from_blocked, to_blocked
from tessera.sw.runtime import Runtime


def head_reference(q, k, v, mask, exp, m, e, cfg):
    scores = matmul(q, k.T, cfg) + (0 if mask is None else mask[None, :len(k)])
    probs = gsm.i_softmax(scores.astype(np.int32), exp, 1)
    return grq.requantize(matmul(probs.astype(np.int64), v, cfg).astype(np.int32), m, e, 8)


def place_head(rt, S, dh, masked, seed):
    cfg = rt.config
    d = cfg.rows
    rng = np.random.default_rng(seed)
    q, k, v = (rng.integers(-128, 128, (S, dh)) for _ in range(3))
    shape = Blocked(S, dh, d)
    at = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        at[name] = rt.alloc(shape.nbytes)
        rt.write(at[name], to_blocked(x, shape))
    at["ctx"] = rt.alloc(shape.nbytes)
    mask = None
    if masked:
        s_pad = -(-S // d) * d
        mask = np.zeros(s_pad, dtype=np.int64)
        mask[S - S // 3:] = MASK_NEG          # the last third of the keys is padding
        at["mask"] = rt.alloc(s_pad * 4)
        rt.write(at["mask"], mask.astype("<i4"))
    exp = gsm.exp_constants(1 / (128 * 128 * np.sqrt(dh) / 6))
    m, e = grq.dyadic_multiplier(1 / 96)
    head = AttentionHead(S, dh, at["q"], at["k"], at["v"], at["ctx"], S * d,
                         {f: getattr(exp, f) for f in ("shift", "ln2_q", "q_b", "q_c",
                                                       "out_shift")},
                         m, e, at.get("mask"))
    want = head_reference(q, k, v, mask, exp, m, e, cfg)
    return head, shape, want


@pytest.mark.parametrize("cfg_name, S, dh, masked", [
    ("tiny", 10, 8, False), ("tiny", 37, 4, True), ("tiny", 100, 8, True),
    ("default", 64, 32, True), ("default", 128, 64, False),
])
def test_head_matches_the_integer_semantics(cfg_name, S, dh, masked):
    cfg = preset(cfg_name)
    rt = Runtime(cfg, "golden")
    head, shape, want = place_head(rt, S, dh, masked, S + dh)
    prog = lower_attention_head(cfg, head)
    rt.run(prog, check=True)
    got = from_blocked(rt.read(head.ctx, shape.nbytes), shape)
    assert (got == want).all()
    assert np.abs(want).max() > 10        # not a degenerate, all-zero case
