"""Every bad input ends in a clear error (docs/errors.md): the `tessera` command prints
``tessera: error: ...`` naming the problem and what is allowed and exits non-zero, before
any work; the Python API raises a TesseraError (a ValueError) with the same message. No
simulator runs here: the checks come first, and the rest runs on the golden model."""

import json
import os

import numpy as np
import pytest

from tessera.hw.config import (
    MAX_JSON_DEPTH,
    ConfigError,
    TesseraConfig,
    TesseraError,
    load_config,
    load_config_file,
    parse_json,
    preset,
)
from tessera.hw.isa import Command, Opcode, command_bits, disassemble, encode
from tessera.sw.check import InputError, output_dir, output_file, whole_number
from tessera.sw.cli import main
from tessera.sw.command_buffer import (
    HEADER_BYTES,
    MAGIC,
    CommandBufferError,
    open_command_buffer,
    write_command_buffer,
)
from tessera.sw.models.minilm import is_installed
from tessera.sw.runtime import MainMemoryFull, Runtime

TINY = preset("tiny")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
needs_minilm = pytest.mark.skipif(not is_installed(), reason="needs all-MiniLM-L6-v2")


def fails(argv, capsys, status=2) -> str:
    """Run the command; it must fail with ``status`` and no traceback. Its stderr."""
    try:
        code = main(argv)
    except SystemExit as e:         # argparse's own form: usage, then the message
        code = e.code
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err and "error: " in err
    return err


# --- configuration files -------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, f"nests arrays and objects more than {MAX_JSON_DEPTH} deep"),
    ('{"rows": ' + "[" * 40 + "]" * 40 + "}", "more than 32 deep"),
    ('{"format": 99, "kind": "accelerator", "config": {}}',
     "configuration format 99 is not one this Tessera reads: it reads format 1"),
    ('{"format": "1", "config": {}}', "configuration format '1' is not one"),
    ('{"kind": "gpu", "config": {}}', "unknown configuration kind 'gpu'; the kinds are: "
                                       "'accelerator', 'array'"),
    ('{"config": {}, "comment": "x"}', "unknown field(s) beside \"config\": comment"),
    ('{"rows": 1' + "0" * 5000 + "}", "is not a usable JSON file"),
    ("", "is not valid JSON"),
    ("[1, 2]", "a configuration must be a JSON object, not list"),
    ('{"rows": 4.0}', "rows must be an integer, not 4.0"),
    ('{"rows": 4, "cols": 4, "rows": 8}', "the configuration gives 'rows' more than once"),
    ('{"config": {}, "config": {}}', "gives 'config' more than once"),
    ('{"rows": true}', "rows must be an integer, not True"),
])
def test_bad_configuration_files(tmp_path, capsys, text, message):
    f = tmp_path / "c.json"
    f.write_text(text)
    assert message in fails(["config", "--config", str(f)], capsys)
    with pytest.raises(ConfigError, match=None) as e:
        load_config_file(f)
    assert message in str(e.value) and str(f) in str(e.value)


def test_configuration_file_that_is_not_a_file(tmp_path, capsys):
    err = fails(["config", "--config", str(tmp_path)], capsys)
    assert "is not a regular file (a folder or a device?)" in err
    err = fails(["config", "--config", str(tmp_path / "no.json")], capsys)
    assert f"configuration file '{tmp_path / 'no.json'}' does not exist" in err
    (tmp_path / "latin1.json").write_bytes(b'{"dataflow": "\xe9"}')
    err = fails(["config", "--config", str(tmp_path / "latin1.json")], capsys)
    assert "is not UTF-8 text (byte 14 is 0xe9)" in err


def test_huge_configuration_file_is_refused_by_size(tmp_path, capsys):
    f = tmp_path / "big.json"
    with open(f, "wb") as out:      # sparse: 2 GiB said, nothing written
        out.truncate(2 << 30)
    assert "is larger than 1024 KiB; a configuration is a small JSON file" in \
        fails(["generate", "--config", str(f), "-o", str(tmp_path / "o")], capsys)
    assert not (tmp_path / "o").exists()


def test_configuration_text_api():
    with pytest.raises(ConfigError, match="a configuration is JSON text .str or bytes., not "
                                          "NoneType"):
        TesseraConfig.from_json(None)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(b"\xff\xfe{}")
    assert parse_json(b'{"a": [1]}') == {"a": [1]}
    assert TesseraConfig.from_json(TINY.to_json().encode()) == TINY
    assert TesseraConfig.from_json(b"\xef\xbb\xbf" + TINY.to_json().encode()) == TINY  # BOM
    assert issubclass(ConfigError, TesseraError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=r"unknown preset \['x'\]; the presets are: tiny"):
        preset(["x"])
    with pytest.raises(ConfigError, match="named by a path .str or Path., not NoneType"):
        TesseraConfig.from_file(None)
    with pytest.raises(ConfigError, match="unknown configuration field.s.: 1; allowed: acc_"):
        TesseraConfig.from_dict({1: 2})
    with pytest.raises(ConfigError) as e:        # long values read from a file: their start
        TesseraConfig.from_json(json.dumps({"dataflow": "x" * 100_000, **{
            f"f{i}": 0 for i in range(1000)}}))
    assert len(str(e.value)) < 1000 and "f0, f1, f10, f100," in str(e.value) and \
        "and 990 more" in str(e.value)
    with pytest.raises(ConfigError) as e:
        TesseraConfig(dataflow="x" * 100_000)
    assert len(str(e.value)) < 400 and str(e.value).endswith("xxx...")
    with pytest.raises(ConfigError, match=r"unknown configuration kind \[1\]; the kinds are"):
        load_config('{"kind": [1], "config": {}}')


# --- output paths ----------------------------------------------------------------------

def test_generate_onto_an_existing_file(tmp_path, capsys):
    (tmp_path / "f").write_text("keep me")
    err = fails(["generate", "--preset", "tiny", "-o", str(tmp_path / "f")], capsys)
    assert f"-o '{tmp_path / 'f'}' is a file, not a folder; name a folder" in err
    err = fails(["generate", "--preset", "tiny", "-o", str(tmp_path / "f" / "sub")], capsys)
    assert "is a file, so the folder cannot be created" in err
    assert (tmp_path / "f").read_text() == "keep me"
    assert "-o: an empty path; name a folder" in \
        fails(["generate", "--preset", "tiny", "-o", ""], capsys)


@pytest.mark.parametrize("argv, message", [
    (["isa", "-o", "{dir}"], "-o '{dir}' is a folder; name a file to write"),
    (["registers", "-o", "{dir}/no/r.md"],
     "-o '{dir}/no/r.md': the folder '{dir}/no' does not exist (create it first)"),
    (["run", "bert-layer", "--json", "{dir}"], "--json '{dir}' is a folder; name a file"),
    (["run", "bert-layer", "--json", "{dir}/no/x.json"], "the folder '{dir}/no' does not exist"),
    (["bench", "gemm", "--json", "/dev/null/x.json"], "the folder '/dev/null' does not exist"),
    (["demo", "-o", "{dir}/f"], "-o '{dir}/f' is a file, not a folder"),
    (["fpga", "-o", "{dir}/f"], "-o '{dir}/f' is a file, not a folder"),
    (["fuzz", "--out", "{dir}/f"], "--out '{dir}/f' is a file, not a folder"),
])
def test_unusable_output_paths_are_refused_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "f").write_text("")
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    assert message.replace("{dir}", str(tmp_path)) in fails(argv, capsys)


@pytest.mark.skipif(ROOT, reason="root writes anywhere")
def test_unwritable_output_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "cannot be written" in fails(["isa", "-o", str(ro / "isa.md")], capsys)
        assert "no permission to write in" in \
            fails(["generate", "--preset", "tiny", "-o", str(ro / "out")], capsys)
    finally:
        ro.chmod(0o700)


def test_a_file_operation_failing_while_working(monkeypatch, capsys):
    from tessera.sw import cli

    def full(args):
        raise OSError(28, "No space left on device", "/x/r.md")

    monkeypatch.setattr(cli, "cmd_registers", full)
    err = fails(["registers"], capsys, status=1)
    assert "tessera: error: cannot use '/x/r.md': No space left on device" in err

    def stopped(args):      # the machine refusing a command: reported, not a traceback
        Runtime(TINY, "golden").run([0xF], check=True)     # opcode 15: illegal

    monkeypatch.setattr(cli, "cmd_registers", stopped)
    assert "tessera: error: golden: stopped with" in fails(["registers"], capsys, status=1)


def test_output_path_checks_api(tmp_path):
    assert output_file(tmp_path / "new.txt", "x") == tmp_path / "new.txt"
    assert output_dir(tmp_path / "a" / "b", "x") == tmp_path / "a" / "b"
    with pytest.raises(InputError, match="is a folder"):
        output_file(tmp_path, "x")


# --- numbers on the command line -------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["run", "bert-layer", "--seed", "-1"], "--seed must be an integer from 0 to 4294967295, "
                                            "not -1"),
    (["run", "gpt2-decode", "--steps", "0"], "--steps must be a positive integer, not 0"),
    (["run", "bert-layer", "--seq", "-5"], "--seq must be a positive integer, not -5"),
    (["run", "bert-layer", "--heads", "0"], "--heads must be a positive integer, not 0"),
    (["run", "bert-layer", "--baud", "0"], "--baud must be a positive integer, not 0"),
    (["bench", "dma", "--latency", "-1"], "--latency must be an integer from 0 to 65535"),
    (["bench", "array", "--tiles", "-1"], "--tiles must be an integer of at least 0, not -1"),
    (["bench", "gemm", "--k", "0"], "--k must be a positive integer, not 0"),
    (["fpga", "--mem-kib", "0"], "--mem-kib must be a positive integer, not 0"),
    (["fpga", "--freq", "inf"], "--freq must be a positive number of MHz up to 1000, not inf"),
    (["synth", "--freq", "nan"], "--freq must be a positive number of MHz up to 1000, not nan"),
    (["synth", "--freq", "0"], "--freq must be a positive number of MHz up to 1000, not 0.0"),
    (["bench", "gemm", "--sim", "verilator,"], "--sim 'verilator,' has an empty name; give one "
                                               "or more of golden, icarus, verilator, amaranth"),
    (["bench", "gemm", "--sim", "golden,golden"], "--sim 'golden,golden' names a simulator twice"),
    (["bench", "dma", "--sim", "golden"], "unknown simulator 'golden' for bench dma; give one "
                                          "or more of icarus, verilator"),
    (["bench", "array", "--sim", "icarus", "--tiles", "5000", "--rows", "1000"],
     "5000 tiles of 1000 rows stream 5,000,000 input rows; the array benchmark streams at "
     "most 1,048,576"),
    (["fpga", "--mem-kib", "100000"], "mem_kib (main memory in the ulx3s's block RAM, in KiB) "
                                      "must be an integer from 1 to 468, not 100000"),
    (["run", "bert-layer", "--backend", "verilator", "--trace", ""],
     "--trace writes FST: name a .fst file, not ''"),
    (["run", "bert-layer", "--preset", "tiny", "--hidden", "30", "--heads", "2"],
     "the head dimension hidden / heads = 15 must be a multiple of the array's 4 rows"),
    (["run", "gpt2-layer", "--hidden", "768", "--heads", "7"],
     "hidden (768) must be a multiple of heads (7)"),
])
def test_bad_numbers_and_names(capsys, argv, message):
    assert message in fails(argv, capsys)


def test_bench_api_arguments():
    from tessera.sw.bench import bench_array, bench_dma

    with pytest.raises(InputError, match="latency_cycles must be an integer from 0 to 65535, "
                                         "not -1"):
        bench_dma(TINY, "icarus", latency_cycles=-1)
    with pytest.raises(InputError, match="rows_per_tile must be a positive integer, not 0"):
        bench_array(TINY, "icarus", rows_per_tile=0)


def test_synth_and_fpga_api_arguments(tmp_path):
    from tessera.sw.fpga import build_bitstream
    from tessera.sw.synth import SynthReport, place_and_route

    report = SynthReport(TINY, "ecp5", "accelerator", {}, {}, {})
    with pytest.raises(InputError, match="freq_mhz must be a positive number of MHz, not -1"):
        place_and_route(report, freq_mhz=-1)
    with pytest.raises(InputError, match="seed must be an integer of at least 0, not -2"):
        place_and_route(report, seed=-2)
    with pytest.raises(InputError, match="freq_mhz must be a positive number of MHz, not nan"):
        build_bitstream(TINY, freq_mhz=float("nan"), build_dir=tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["bench", "dma", "--m", "5"], "--m is for bench gemm and sim, not bench dma: it would be "
                                   "ignored"),
    (["bench", "array", "--latency", "5"], "--latency is for bench dma, not bench array"),
    (["bench", "nonlinear", "--mem-latency=50"], "--mem-latency is for bench gemm, not bench "
                                                 "nonlinear"),
    (["bench", "gemm", "--tiles", "3"], "--tiles is for bench array, not bench gemm"),
    (["bench", "sim", "--bias"], "--bias is for bench gemm, not bench sim"),
    (["run", "bert-layer", "--steps", "3"], "--steps is for run gpt2-decode, not run bert-layer"),
])
def test_options_another_target_would_ignore(capsys, argv, message):
    assert message in fails(argv, capsys)


def test_whole_number_api():
    assert whole_number(3, "n") == 3 and whole_number(np.int64(0), "n", 0) == 0
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(InputError, match="n must be a positive integer, not"):
            whole_number(bad, "n")


# --- shapes that do not fit main memory ------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["run", "bert-layer", "--seq", "100000"],
     "a BERT layer of seq 100000, hidden 768, FFN 3072 needs at least 812.4 MiB of main "
     "memory for its tensors, and main memory holds 256.0 MiB on configuration"),
    (["run", "gpt2-decode", "--preset", "tiny", "--seq", "8", "--steps", "100000000"],
     "100000000 decode steps after 8 tokens needs at least 214.6 GiB of main memory for its "
     "tensors, and main memory holds 4.0 MiB"),
    (["run", "bert-layer", "--hidden", "100000", "--heads", "1", "--seq", "1"],
     "needs at least 37.8 GiB of main memory"),
    (["bench", "gemm", "--sim", "golden", "--m", "100000000"],
     "a 100000000 x 512 x 512 matrix product needs at least 95.4 GiB"),
    (["bench", "sim", "--m", "100000", "--k", "100000"], "needs at least 9.4 GiB"),
])
def test_shapes_beyond_main_memory_are_refused_before_any_work(capsys, argv, message):
    assert message in fails(argv, capsys)


def test_layer_on_a_rectangular_array(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"rows": 4, "cols": 8, "spad_kib": 16,
                                                 "acc_kib": 16, "max_row_len": 256}))
    assert "the lowering of a transformer layer needs a square array, not 4 x 8" in \
        fails(["run", "bert-layer", "--config", str(tmp_path / "c.json"), "--seq", "8",
               "--hidden", "32", "--heads", "2", "--ffn", "64"], capsys)


def test_layer_api_arguments():
    from tessera.sw.bench import bench_gemm
    from tessera.sw.run import run_bert, run_gpt2

    with pytest.raises(InputError, match="seq must be a positive integer, not -1"):
        run_bert(TINY, "golden", seq=-1)
    with pytest.raises(InputError, match="unknown backend 'gpu'; choose one of golden"):
        run_gpt2(TINY, "gpu")
    with pytest.raises(InputError, match="steps must be a positive integer, not 0"):
        run_gpt2(TINY, "golden", decode=True, steps=0)
    with pytest.raises(InputError, match="M must be a positive integer, not 0"):
        bench_gemm(TINY, "golden", 0, 4, 4)
    with pytest.raises(InputError, match="config must be a TesseraConfig, not str"):
        run_bert("tiny", "golden")


@needs_minilm
def test_minilm_layer_api_arguments():
    from tessera.sw.run import run_bert

    # A negative layer used to pick the last one, silently.
    with pytest.raises(InputError, match="model_layer must be an integer from 0 to 5, not -1"):
        run_bert(TINY, "golden", model_layer=-1, seq=8)
    with pytest.raises(InputError, match=r"seq \(tokens of a sentence\) must be an integer "
                                         r"from 2 to 512, not 600"):
        run_bert(TINY, "golden", model_layer=0, seq=600)


def test_hours_on_the_amaranth_backend_are_refused(capsys):
    err = fails(["run", "bert-layer", "--backend", "amaranth"], capsys)
    assert "a BERT layer of seq 128, hidden 768, FFN 3072 takes at least 3,637,248 cycles, " \
           "1.0 hours or more on the amaranth backend" in err and "use the verilator" in err
    assert "takes at least" in fails(["bench", "gemm", "--sim", "amaranth", "--m", "4096"],
                                     capsys)


def test_nan_has_no_int8_value():
    from tessera.sw.models.quantize import quantize_activation

    with pytest.raises(ValueError, match="x holds NaN, which has no int8 value"):
        quantize_activation(np.array([[1.0, np.nan]]), 0.1)
    assert list(quantize_activation(np.array([np.inf, -np.inf]), 0.1)) == [127, -128]


def test_demo_too_big_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert "needs at least" in fails(["demo", "--preset", "tiny", "--m", "100000", "-o",
                                      str(out)], capsys)
    assert not out.exists()


def test_layer_bytes_is_a_lower_bound_of_the_placement():
    from tessera.sw.lower.bert import place_bert_layer
    from tessera.sw.models.quantize import quantize_activation, quantize_bert_layer
    from tessera.sw.models.reference import random_bert_weights
    from tessera.sw.run import layer_bytes

    S, H, heads, F = 12, 32, 2, 64
    rng = np.random.default_rng(0)
    ql = quantize_bert_layer(random_bert_weights(H, heads, F, rng),
                             [rng.normal(0, 1, (S, H)) for _ in range(2)])
    rt = Runtime(TINY, "golden")
    place_bert_layer(rt, ql, quantize_activation(rng.normal(0, 1, (S, H)), ql.in_scale))
    bound = layer_bytes(TINY, "bert", S, H, F)
    # Below what is placed (tables, biases and alignment come on top), but close to it.
    assert 0.8 * rt._top <= bound <= rt._top


# --- model folders ---------------------------------------------------------------------

def _model_folder(path, **changes):
    """A one-layer BERT model folder of hidden 8 (config.json, model.safetensors and
    all-MiniLM-L6-v2's tokenizer.json), with ``changes`` to config.json."""
    from safetensors.numpy import save_file

    from tessera.sw.models import minilm

    path.mkdir()
    config = {"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16,
              "num_hidden_layers": 1, "max_position_embeddings": 16, "vocab_size": 30522,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12}
    rng = np.random.default_rng(0)
    H, F = 8, 16
    t = {"embeddings.word_embeddings.weight": (changes.get("vocab_size", 30522), H),
         "embeddings.position_embeddings.weight": (16, H),
         "embeddings.token_type_embeddings.weight": (2, H),
         "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    for name in minilm._LAYER_NAMES.values():
        t[f"encoder.layer.0.{name}"] = {"intermediate.dense.weight": (F, H),
                                        "intermediate.dense.bias": (F,),
                                        "output.dense.weight": (H, F)}.get(
            name, (H, H) if name.endswith("weight") and "LayerNorm" not in name else (H,))
    tensors = {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in t.items()}
    save_file(tensors, str(path / "model.safetensors"))
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_bytes((minilm.model_dir() / "tokenizer.json").read_bytes())
    return path, tensors


@needs_minilm
def test_a_good_small_model_folder_loads(tmp_path):
    from tessera.sw.models.minilm import load_minilm

    folder, _ = _model_folder(tmp_path / "m")
    model = load_minilm(folder)
    assert model.layers[0]["wq"].shape == (8, 8) and model.word.shape == (30522, 8)


@needs_minilm
@pytest.mark.parametrize("damage, message", [
    ("config:hidden_size", "config.json lacks hidden_size (a BERT configuration has"),
    ("config:heads=3", "hidden_size (8) must be a multiple of num_attention_heads (3)"),
    ("config:layers=2", "has no tensor encoder.layer.1.attention.self.query.weight"),
    ("config:eps=-1", "layer_norm_eps must be a positive number, not -1"),
    ("config:deep", "nests arrays and objects more than 32 deep"),
    ("config:list", "config.json must hold a JSON object, not list"),
    ("weights:random", "is not a safetensors file"),
    ("weights:truncated", "points past the end of the file"),
    ("weights:empty", "is not a safetensors file"),
    ("weights:shape", "tensor encoder.layer.0.intermediate.dense.weight has shape (16, 4), "
                      "but config.json (hidden_size 8, intermediate_size 16) makes it (16, 8)"),
    ("weights:int", "tensor embeddings.LayerNorm.bias is I32; the loader reads F16, F32, F64"),
    ("missing:tokenizer.json", "the model's tokenizer.json '"),
])
def test_inconsistent_or_corrupt_model_folders(tmp_path, capsys, damage, message):
    from safetensors.numpy import save_file

    from tessera.sw.models.minilm import ModelError, check_model_folder

    kind, _, what = damage.partition(":")
    changes = {"heads=3": {"num_attention_heads": 3}, "layers=2": {"num_hidden_layers": 2},
               "eps=-1": {"layer_norm_eps": -1}}.get(what, {})
    folder, tensors = _model_folder(tmp_path / "m", **changes)
    weights = folder / "model.safetensors"
    if damage == "config:hidden_size":
        c = json.loads((folder / "config.json").read_text())
        del c["hidden_size"]
        (folder / "config.json").write_text(json.dumps(c))
    elif damage == "config:deep":
        (folder / "config.json").write_text("[" * 50 + "]" * 50)
    elif damage == "config:list":
        (folder / "config.json").write_text("[]")
    elif damage == "weights:random":
        weights.write_bytes(np.random.default_rng(1).bytes(1000))
    elif damage == "weights:truncated":
        weights.write_bytes(weights.read_bytes()[:50_000])
    elif damage == "weights:empty":
        weights.write_bytes(b"")
    elif kind == "weights":
        if what == "shape":
            tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((16, 4), np.float32)
        else:
            tensors["embeddings.LayerNorm.bias"] = np.zeros(8, np.int32)
        save_file(tensors, str(weights))
    elif kind == "missing":
        (folder / what).unlink()
    with pytest.raises(ModelError) as e:
        check_model_folder(folder)
    assert message in str(e.value)
    assert message in fails(["run", "bert-layer", "--preset", "tiny", "--model",
                             f"{folder}:0", "--seq", "8"], capsys)


@needs_minilm
def test_model_values_and_tokenizer_checked_on_load(tmp_path, capsys):
    from safetensors.numpy import save_file

    from tessera.sw.models.minilm import ModelError, load_minilm

    folder, tensors = _model_folder(tmp_path / "m")
    tensors["encoder.layer.0.output.dense.bias"][3] = np.nan
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="encoder.layer.0.output.dense.bias holds NaN or "
                                         "infinite values"):
        load_minilm(folder)
    folder2, _ = _model_folder(tmp_path / "m2")
    (folder2 / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(ModelError, match="tokenizer.json is not a tokenizer file"):
        load_minilm(folder2)
    with pytest.raises(ModelError, match="a model folder is named by a path .str or Path., "
                                         "not int"):
        load_minilm(123)
    folder3, _ = _model_folder(tmp_path / "m3", vocab_size=1000)
    with pytest.raises(ModelError, match="tokenizer.json has 30522 tokens, more than the 1000 "
                                         "of config.json's vocab_size"):
        load_minilm(folder3)
    err = fails(["run", "bert-layer", "--preset", "tiny", "--model", f"{folder2}:3"], capsys)
    assert f"{folder2} has layers 0 to 0, not 3" in err
    err = fails(["run", "bert-layer", "--preset", "tiny", "--model", f"{folder2}", "--seq",
                 "17"], capsys)
    assert "--seq must be from 2 to 16 (the model's positions)" in err
    assert "the layer in --model 'minilm:-1' must be a layer number" in \
        fails(["run", "bert-layer", "--model", "minilm:-1"], capsys)
    assert "--model ':3' names no model" in fails(["run", "bert-layer", "--model", ":3"], capsys)


# --- command buffers -------------------------------------------------------------------

PROGRAM = [Command(Opcode.FENCE, {}), Command(Opcode.FINISH, {})]


def test_buffer_file_says_its_configuration(tmp_path, capsys):
    f = write_command_buffer(tmp_path / "p.bin", TINY, PROGRAM)
    raw = f.read_bytes()
    size = command_bits(TINY) // 8
    assert raw[:8] == MAGIC and len(raw) == HEADER_BYTES + len(PROGRAM) * size
    assert raw[16:24] == int(TINY.hash, 16).to_bytes(8, "little")
    # Without --preset the header's configuration is used (it is a preset) ...
    assert main(["disasm", str(f)]) == 0
    want = disassemble(TINY, [encode(TINY, c) for c in PROGRAM])
    assert capsys.readouterr().out.splitlines() == want
    # ... and another configuration is refused, saying which one wrote it.
    err = fails(["disasm", "--preset", "default", str(f)], capsys)
    assert f"was written for configuration {TINY.hash} (preset tiny), not " \
           f"{preset('default').hash} (preset default)" in err
    assert "use the configuration that wrote it (--preset tiny)" in err


def test_buffer_of_a_configuration_that_is_not_a_preset(tmp_path, capsys):
    cfg = TINY.replace(spad_kib=32)
    f = write_command_buffer(tmp_path / "p.bin", cfg, PROGRAM)
    err = fails(["disasm", str(f)], capsys)
    assert f"is for configuration {cfg.hash}, which is not a preset" in err
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert main(["disasm", "--config", str(tmp_path / "c.json"), str(f)]) == 0
    assert "FINISH" in capsys.readouterr().out


@pytest.mark.parametrize("damage, message", [
    ("raw", "has no Tessera command-buffer header"),
    ("version", "is a command buffer of format version 7; this Tessera reads version 1"),
    ("truncated", "the header says 2 command words (64 bytes) but 63 bytes follow it"),
    ("short", "its header is cut short"),
    ("word_size", "the header says 16-byte command words"),
    ("empty", "has no Tessera command-buffer header"),
])
def test_damaged_or_raw_buffers(tmp_path, capsys, damage, message):
    f = write_command_buffer(tmp_path / "p.bin", TINY, PROGRAM)
    raw = bytearray(f.read_bytes())
    if damage == "raw":
        raw = raw[HEADER_BYTES:]
    elif damage == "version":
        raw[8] = 7
    elif damage == "truncated":
        raw = raw[:-1]
    elif damage == "short":
        raw = raw[:20]
    elif damage == "word_size":
        raw[12] = 16
    elif damage == "empty":
        raw = b""
    f.write_bytes(bytes(raw))
    assert message in fails(["disasm", str(f)], capsys)
    with pytest.raises(CommandBufferError, match=None) as e:
        open_command_buffer(f)
    assert message in str(e.value)


def test_raw_buffer_with_an_explicit_configuration(tmp_path, capsys):
    size = command_bits(TINY) // 8
    words = [encode(TINY, c) for c in PROGRAM]
    f = tmp_path / "raw.bin"
    f.write_bytes(b"".join(w.to_bytes(size, "little") for w in words))
    assert main(["disasm", "--preset", "tiny", str(f)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == disassemble(TINY, words)
    assert "has no header: its words are read as configuration" in captured.err
    assert "does not exist" in fails(["disasm", str(tmp_path / "none.bin")], capsys)
    assert "is not a regular file" in fails(["disasm", str(tmp_path)], capsys)


def test_large_buffer_is_streamed(tmp_path, capsys):
    n = 10_000
    f = write_command_buffer(tmp_path / "p.bin", TINY, [Command(Opcode.FENCE, {})] * n)
    buf = open_command_buffer(f)
    assert buf.count == n and buf.has_header
    assert main(["disasm", str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n and lines[-1].startswith(" 9999  ")


def test_writing_a_bad_word_or_path(tmp_path):
    bits = command_bits(TINY)
    with pytest.raises(ValueError, match=f"is not a {bits}-bit command word"):
        write_command_buffer(tmp_path / "p.bin", TINY, [1 << bits])
    with pytest.raises(InputError, match="is a folder"):
        write_command_buffer(tmp_path, TINY, PROGRAM)
    with pytest.raises(InputError, match="config must be a TesseraConfig .* not str"):
        write_command_buffer(tmp_path / "p.bin", "tiny", PROGRAM)
    with pytest.raises(InputError, match="config must be a TesseraConfig .* not str"):
        open_command_buffer(tmp_path / "p.bin", "tiny")


# --- the runtime's arguments -----------------------------------------------------------

@pytest.fixture
def rt():
    return Runtime(TINY, "golden")


def test_runtime_sizes_and_addresses(rt):
    a = rt.alloc(16)
    assert rt.read(a, 4).size == 4
    for n in (-4, 0, 1.5):
        with pytest.raises(InputError, match=f"nbytes must be a positive integer, not {n}"):
            rt.read(a, n)
        with pytest.raises(InputError, match="nbytes must be a positive integer"):
            rt.alloc(n)
    with pytest.raises(InputError, match="align must be a power of two, not 3"):
        rt.alloc(8, align=3)
    with pytest.raises(InputError, match=r"4 bytes at 0x0 are outside main memory \(0x"):
        rt.read(0, 4)
    end = rt.mem_base + rt.mem_size
    with pytest.raises(InputError, match="outside main memory"):
        rt.write(end - 2, b"abcd")
    with pytest.raises(InputError, match="addr must be an integer of at least 0, not -8"):
        rt.read(-8, 4)
    with pytest.raises(InputError, match="addr must be an integer of at least 0, not '16'"):
        rt.read("16", 4)
    with pytest.raises(MainMemoryFull, match="main memory is full: 8388608 bytes asked"):
        rt.alloc(8 << 20)


def test_runtime_data_and_programs(rt):
    a = rt.alloc(16)
    with pytest.raises(InputError, match="data must be bytes or a numeric array, not str"):
        rt.write(a, "text")
    with pytest.raises(InputError, match="not an array of object"):
        rt.write(a, [object()])
    with pytest.raises(InputError, match="not an array of object"):
        rt.place({"a": 1})
    rt.write(a, np.arange(4, dtype=np.int32)[::-1])         # not contiguous: copied
    assert list(rt.read(a, 16).view(np.int32)) == [3, 2, 1, 0]
    bits = command_bits(TINY)
    with pytest.raises(InputError, match=f"command word 1 must be an integer from 0 to "
                                         f"{(1 << bits) - 1}, not 2.5"):
        rt.run([encode(TINY, PROGRAM[0]), 2.5])
    with pytest.raises(InputError, match="command word 0 must be an integer from 0 to"):
        rt.run([1 << bits])
    for program in (None, 7, "FINISH", b"\x00" * 16):
        with pytest.raises(InputError, match="program must be a sequence of Command objects "
                                             "or command words, not"):
            rt.run(program)
    with pytest.raises(InputError, match="timeout_cycles must be a positive integer, not 0"):
        rt.run(PROGRAM, timeout_cycles=0)
    assert rt.run(PROGRAM).ok


def test_runtime_construction():
    with pytest.raises(InputError, match="config must be a TesseraConfig .* not str"):
        Runtime("tiny")
    with pytest.raises(InputError, match=r"mem_size \(bytes\) must be an integer from 1 to "
                                         r"4294967296, not -1"):
        Runtime(TINY, "golden", mem_size=-1)
    with pytest.raises(InputError, match="not 1099511627776"):     # 1 TiB of host memory
        Runtime(TINY, "golden", mem_size=1 << 40)
    with pytest.raises(InputError, match=r"main memory \(64 bytes at 0xfffffff0\) must lie "
                                         r"within the 32-bit address space"):
        Runtime(TINY, "golden", mem_base=(1 << 32) - 16, mem_size=64)
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of golden"):
        Runtime(TINY, "gpu")


@pytest.mark.parametrize("argv, message", [
    (["run", "bert-layer", "--seq", "513"],
     "attention over 513 keys does not fit configuration eaffadfc4ed04821: a head of "
     "dimension 64 with as many queries as keys attends over at most 512 keys here"),
    (["run", "gpt2-decode", "--seq", "2016", "--steps", "1"],
     "attention over 2017 keys does not fit configuration eaffadfc4ed04821: a head of "
     "dimension 64 with one query (a decode step) attends over at most 2016 keys here"),
    (["run", "bert", "--preset", "tiny", "--layers", "1", "--seq", "65", "--hidden", "16",
      "--heads", "1", "--ffn", "32"], "attends over at most 64 keys"),
    (["run", "gpt2", "--preset", "tiny", "--layers", "1", "--prompt-len", "8", "--generate",
      "117", "--hidden", "64", "--heads", "1", "--ffn", "32", "--vocab", "64"],
     "attention over 125 keys does not fit configuration b8099d5ecf21d51a: a head of "
     "dimension 64 with one query (a decode step) attends over at most 124 keys here"),
])
def test_attention_longer_than_the_memories_hold_is_refused_before_any_work(capsys, argv,
                                                                             message):
    assert message in fails(argv + ["--backend", "golden"], capsys)
