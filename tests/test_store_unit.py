import pytest

from tessera.hw.config import TesseraConfig
from tessera.hw.store_unit import StoreUnit


def test_store_unit_rejects_chunks_wider_than_a_scratchpad_row():
    cfg = TesseraConfig(rows=4, cols=8, input_bits=4, weight_bits=4, acc_bits=16,
                        spad_kib=16, acc_kib=8, max_row_len=256)
    with pytest.raises(ValueError, match="a result chunk of 8 bytes does not fit a 4-byte"):
        StoreUnit(cfg)
