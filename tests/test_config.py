import dataclasses
import json

import pytest

from tessera.hw.config import PRESETS, ConfigError, TesseraConfig, preset


def test_presets_are_valid_and_named():
    assert set(PRESETS) >= {"tiny", "default", "large"}
    assert (preset("tiny").rows, preset("default").rows, preset("large").rows) == (4, 16, 32)
    assert preset("default") == TesseraConfig()


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; the presets are: tiny, "):
        preset("huge")


@pytest.mark.parametrize("changes, message", [
    ({"rows": 0}, "rows must be between 1 and 64, not 0"),
    ({"cols": 65}, "cols must be between 1 and 64, not 65"),
    ({"input_bits": 7}, "input_bits must be one of 4, 8, 16, not 7"),
    ({"acc_bits": 12}, r"acc_bits must be between input_bits \+ weight_bits \(16\) and 64, not 12"),
    ({"dataflow": "is"}, "dataflow must be one of 'ws', 'os', 'both', not 'is'"),
    ({"bus_bits": 96}, "bus_bits must be one of 64, 128, 256, 512, not 96"),
    ({"spad_banks": 3}, "spad_banks must be a power of two from 1 to 16, not 3"),
    ({"acc_kib": 48}, "acc_kib must be a power of two from 1 to 16384, not 48"),
    ({"addr_bits": 16}, "addr_bits must be between 32 and 64, not 16"),
    ({"max_reads": 0}, "max_reads must be a power of two from 1 to 64, not 0"),
    ({"store_queue_depth": 0}, "store_queue_depth must be between 1 and 256, not 0"),
    ({"max_row_len": 8}, "max_row_len must be a power of two no smaller than cols"),
    ({"rows": "16"}, "rows must be an integer, not '16'"),
    ({"rows": True}, "rows must be an integer, not True"),
    ({"acc_kib": 1, "acc_banks": 16}, "the accumulator .* must hold at least 16 rows in each"),
])
def test_invalid_configurations_say_what_is_wrong(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TesseraConfig(), **changes)


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        TesseraConfig(rows=0, bus_bits=3)
    assert "rows must be" in str(e.value) and "bus_bits must be" in str(e.value)


def test_derived_values():
    c = preset("default")
    assert c.macs_per_cycle == 256
    assert c.bus_bytes == 16
    assert c.spad_row_bytes == 16 and c.spad_rows == 256 * 1024 // 16
    assert c.acc_row_bytes == 64 and c.acc_rows == 4096
    assert c.has_ws and c.has_os
    ws = c.replace(dataflow="ws")
    assert ws.has_ws and not ws.has_os


def test_hash_is_stable_and_sensitive():
    a, b = TesseraConfig(), TesseraConfig(**TesseraConfig().to_dict())
    assert a.hash == b.hash and len(a.hash) == 16
    assert a.hash32 == int(a.hash[:8], 16)
    for f in dataclasses.fields(TesseraConfig):
        if f.name in ("dataflow",):
            other = a.replace(dataflow="ws")
        elif f.name == "max_row_len":
            other = a.replace(max_row_len=8192)
        elif f.name == "addr_bits":
            other = a.replace(addr_bits=40)
        elif f.name in ("spad_kib", "acc_kib", "max_reads", "max_writes", "bus_bits",
                        "spad_banks"):
            other = a.replace(**{f.name: getattr(a, f.name) * 2})
        elif f.name == "acc_banks":
            other = a.replace(acc_banks=1)
        else:
            other = a.replace(**{f.name: getattr(a, f.name) // 2 if f.name in
                                 ("rows", "cols", "input_bits", "weight_bits")
                                 else getattr(a, f.name) + 1})
        assert other.hash != a.hash, f.name


def test_json_round_trip():
    for cfg in PRESETS.values():
        text = cfg.to_json()
        assert json.loads(text)["hash"] == cfg.hash
        assert TesseraConfig.from_json(text) == cfg
    assert TesseraConfig.from_json(json.dumps({"rows": 8, "cols": 8})) == \
        TesseraConfig(rows=8, cols=8)


def test_json_errors():
    with pytest.raises(ConfigError, match="not valid JSON"):
        TesseraConfig.from_json("{rows: 4")
    with pytest.raises(ConfigError, match="unknown configuration field.*: colums; allowed:"):
        TesseraConfig.from_json('{"colums": 4}')
    tampered = json.loads(preset("tiny").to_json())
    tampered["config"]["rows"] = 8
    with pytest.raises(ConfigError, match="does not match its fields"):
        TesseraConfig.from_json(json.dumps(tampered))
    with pytest.raises(ConfigError, match="must be a JSON object, not list"):
        TesseraConfig.from_json("[1, 2]")
