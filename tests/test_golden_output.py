"""The one software definition of the output path's operations (``sw/golden/output.py``):
its errors. (Its results are checked against the RTL by every output-path, store and
accelerator test, through the executor, the scoreboard and the lowering that all use it.)"""

import numpy as np
import pytest

from tessera.hw.output_path import OutputOp
from tessera.sw.golden.output import output_op


def test_plain_operations_need_no_constants():
    x = np.array([[-300, -1, 0, 1, 300]])
    assert output_op(OutputOp.NONE, x).tolist() == [[-128, -1, 0, 1, 127]]
    assert output_op(OutputOp.RELU, x, 1, 0).tolist() == [[0, 0, 0, 1, 127]]


def test_missing_constants_and_unknown_operations_are_refused():
    x = np.zeros((1, 4), np.int32)
    for op in (OutputOp.GELU, OutputOp.SOFTMAX, OutputOp.LAYERNORM):
        with pytest.raises(ValueError, match=f"{op.name} needs its constants"):
            output_op(op, x)
    with pytest.raises(ValueError):
        output_op(6, x)
