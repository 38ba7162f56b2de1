import dataclasses
import json
import random

import pytest
from amaranth.back import rtlil

from tessera.hw.accelerator import Accelerator
from tessera.hw.config import (
    MAX_ROW_LEN,
    PRESETS,
    ArrayConfig,
    ConfigError,
    TesseraConfig,
    load_config,
    preset,
)
from tessera.hw.matrix_unit import MatrixUnit


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
    ({"cols": 1}, r"cols must be at least 2 \(a LayerNorm table row keeps a chunk's prescale"),
    ({"input_bits": 4, "acc_bits": 16}, r"input_bits must be 8 in the accelerator \(ArrayConfig "
                                        r"builds the array alone with other widths\), not 4"),
    ({"weight_bits": 16}, "weight_bits must be 8 in the accelerator"),
    ({"acc_bits": 12}, r"acc_bits must be between input_bits \+ weight_bits \(16\) and 32 in "
                       r"the accelerator .*, not 12"),
    ({"acc_bits": 40}, r"acc_bits must be between .* and 32 in the accelerator .*, not 40"),
    ({"dataflow": "is"}, "dataflow must be one of 'ws', 'os', 'both', not 'is'"),
    ({"bus_bits": 96}, "bus_bits must be one of 64, 128, 256, 512, not 96"),
    ({"spad_banks": 3}, "spad_banks must be a power of two from 1 to 16, not 3"),
    ({"acc_kib": 48}, "acc_kib must be a power of two from 1 to 16384, not 48"),
    ({"addr_bits": 16}, "addr_bits must be between 32 and 64, not 16"),
    ({"max_reads": 0}, "max_reads must be a power of two from 1 to 64, not 0"),
    ({"store_queue_depth": 0}, "store_queue_depth must be between 1 and 256, not 0"),
    ({"max_row_len": 8}, r"max_row_len must be a power of two from cols \(16\) to 4096, not 8"),
    ({"max_row_len": 2 * MAX_ROW_LEN}, "max_row_len must be a power of two from cols"),
    ({"output_lanes": 1}, r"output_lanes must be 0 \(one per column\) or a divisor of cols "
                          r"\(16\) from 2 up, not 1"),
    ({"output_lanes": 6}, r"output_lanes must be .* divisor of cols \(16\) .*, not 6"),
    ({"output_lanes": 32}, r"output_lanes must be .*, not 32"),
    ({"output_lanes": -4}, r"output_lanes must be .*, not -4"),
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
        if f.name in ("input_bits", "weight_bits"):          # 8 in the accelerator
            arr = a.array
            assert arr.replace(**{f.name: 4}).hash != arr.hash, f.name
            continue
        if f.name in ("dataflow",):
            other = a.replace(dataflow="ws")
        elif f.name == "max_row_len":
            other = a.replace(max_row_len=2048)
        elif f.name == "addr_bits":
            other = a.replace(addr_bits=40)
        elif f.name in ("spad_kib", "acc_kib", "max_reads", "max_writes", "bus_bits",
                        "spad_banks"):
            other = a.replace(**{f.name: getattr(a, f.name) * 2})
        elif f.name == "acc_banks":
            other = a.replace(acc_banks=1)
        elif f.name == "output_lanes":
            other = a.replace(output_lanes=8)
        else:
            other = a.replace(**{f.name: getattr(a, f.name) // 2 if f.name in ("rows", "cols")
                                 else getattr(a, f.name) - 8 if f.name == "acc_bits"
                                 else getattr(a, f.name) + 1})
        assert other.hash != a.hash, f.name


def test_output_lanes_default_to_one_per_column_and_keep_the_hash():
    c = preset("small")
    full = c.replace(output_lanes=0)
    assert full.out_lanes == 8 and c.replace(output_lanes=4).out_lanes == 4
    # Saying "one per column" either way is the same hardware, with the hash it had
    # before the field existed.
    assert full.hash == c.replace(output_lanes=8).hash
    assert "output_lanes" not in full.to_dict()
    assert c.replace(output_lanes=4).to_dict()["output_lanes"] == 4
    assert "4 output lanes" in c.replace(output_lanes=4).describe()
    assert "output lanes" not in full.describe()


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


@pytest.mark.parametrize("changes, message", [
    ({"input_bits": 7}, "input_bits must be one of 4, 8, 16, not 7"),
    ({"acc_bits": 12}, r"acc_bits must be between input_bits \+ weight_bits \(16\) and 64, not 12"),
    ({"rows": 0}, "rows must be between 1 and 64, not 0"),
    ({"dataflow": "x"}, "dataflow must be one of"),
])
def test_array_configurations_say_what_is_wrong(changes, message):
    with pytest.raises(ConfigError, match="invalid array configuration: " + message):
        ArrayConfig(**changes)


def test_the_array_alone_builds_other_widths():
    for cfg in (ArrayConfig(rows=2, cols=3, input_bits=16, weight_bits=4, acc_bits=40),
                ArrayConfig(rows=1, cols=1, input_bits=4, weight_bits=4, acc_bits=8)):
        unit = MatrixUnit(cfg)
        rtlil.convert(unit, name="top", emit_src=False)
        assert unit.config is cfg
    tiny = preset("tiny")
    assert tiny.array == ArrayConfig(4, 4, 8, 8, 32, "both")


def test_each_kind_reads_back_from_its_json_and_not_the_others():
    a, t = ArrayConfig(rows=3, cols=5, input_bits=4), preset("tiny")
    assert load_config(a.to_json()) == a and load_config(t.to_json()) == t
    assert ArrayConfig.from_json(a.to_json()) == a
    with pytest.raises(ConfigError, match="this is an array configuration, not an accelerator"):
        TesseraConfig.from_json(a.to_json())
    with pytest.raises(ConfigError, match="this is an accelerator configuration, not an array"):
        ArrayConfig.from_json(t.to_json())
    # A file written before the kind was recorded is an accelerator's.
    old = json.loads(t.to_json())
    del old["kind"]
    assert load_config(json.dumps(old)) == t


def random_valid_configs(n: int, seed: int):
    """``n`` configurations drawn over every field's allowed values (small arrays and
    memories, so that elaborating them is quick), rejecting the invalid combinations."""
    rng = random.Random(seed)
    found = []
    while len(found) < n:
        try:
            found.append(TesseraConfig(
                rows=rng.randint(1, 8), cols=rng.randint(2, 8),
                acc_bits=rng.randint(16, 32), dataflow=rng.choice(["ws", "os", "both"]),
                spad_kib=rng.choice([1, 2, 4, 8, 16]), spad_banks=rng.choice([1, 2, 4, 8]),
                acc_kib=rng.choice([1, 2, 4, 8]), acc_banks=rng.choice([1, 2, 4]),
                bus_bits=rng.choice([64, 128, 256, 512]), addr_bits=rng.randint(32, 64),
                max_reads=rng.choice([1, 2, 4, 16, 64]), max_writes=rng.choice([1, 2, 4, 16]),
                load_queue_depth=rng.randint(1, 9), exec_queue_depth=rng.randint(1, 9),
                store_queue_depth=rng.randint(1, 4),
                max_row_len=rng.choice([2, 4, 8, 16, 64, 256, MAX_ROW_LEN]),
                output_lanes=rng.choice([0, 0, 2, 3, 4])))
        except ConfigError:
            continue
    return found


@pytest.mark.parametrize("cfg", random_valid_configs(6, seed=14), ids=lambda c: c.hash)
def test_a_configuration_that_validates_elaborates(cfg):
    """The configuration checks every unit's constraint: no valid one fails to build (a
    1-column array once did, in the store unit's LayerNorm table read)."""
    rtlil.convert(Accelerator(cfg), name="top", emit_src=False)
