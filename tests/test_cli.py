"""The `tessera` command line: outputs, figures and error messages."""

import json

import pytest

from tessera.hw.config import TesseraConfig, preset
from tessera.sw.cli import main


def test_generate_writes_verilog_config_and_waivers(tmp_path, capsys):
    assert main(["generate", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    v = (tmp_path / "tessera_accelerator.v").read_text()
    assert "module tessera_accelerator(" in v
    regs = json.loads((tmp_path / "registers.json").read_text())
    assert regs["config_hash32"] == preset("tiny").hash32
    names = {r["name"]: r["offset"] for r in regs["registers"]}
    assert names["STATUS"] == 0x10 and names["CYCLES_LO"] == 0x40
    assert {c["name"] for c in regs["counters"]} >= {"cycles", "macs", "bytes_read",
                                                     "load_token_wait", "store_mem_wait"}
    assert f"Configuration {preset('tiny').hash}" in v
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["hash"] == preset("tiny").hash
    assert TesseraConfig.from_json((tmp_path / "config.json").read_text()) == preset("tiny")
    assert "lint_off" in (tmp_path / "lint.vlt").read_text()
    assert f"(hash {preset('tiny').hash})" in capsys.readouterr().out


def test_generate_from_a_config_file(tmp_path):
    cfg = TesseraConfig(rows=2, cols=3, dataflow="ws", spad_kib=16, acc_kib=8, max_row_len=256)
    (tmp_path / "my.json").write_text(json.dumps(cfg.to_dict()))
    assert main(["generate", "--config", str(tmp_path / "my.json"), "-o", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["hash"] == cfg.hash


@pytest.mark.parametrize("argv, message", [
    (["generate", "--preset", "huge", "-o", "x"], "unknown preset 'huge'; the presets are"),
    (["generate", "--config", "/nonexistent.json", "-o", "x"],
     "configuration file '/nonexistent.json' does not exist"),
    (["bench", "gemv"], "unknown benchmark 'gemv'; available: array, dma"),
    (["bench", "array", "--sim", "modelsim"], "unknown simulator 'modelsim'"),
    (["run", "bert-layer", "--trace", "x.fst"], "--trace needs the verilator backend"),
    (["run", "bert-layer", "--backend", "verilator", "--trace", "x.vcd"],
     "--trace writes FST: name a .fst file"),
    (["run", "bert-layer", "--backend", "verilator", "--trace", "/nonexistent/x.fst"],
     "--trace: the folder '/nonexistent' does not exist"),
    (["bench", "sim", "--sim", "icarus"], "bench sim measures Verilator"),
    (["synth", "--preset", "tiny", "--target", "ice40", "--place"],
     "--pnr, --place and --paths are for --target ecp5"),
    (["synth", "--preset", "tiny", "--freq", "-5"], "--freq must be a positive number of MHz"),
    (["synth", "--preset", "tiny", "--max-fanout", "32"], "--max-fanout is for --place and --pnr"),
    (["synth", "--preset", "tiny", "--seeds", "3"], "--seeds is for --place and --pnr"),
    (["synth", "--preset", "tiny", "--pnr", "--max-fanout", "1"],
     "--max-fanout is 0 (no copies) or at least 2, not 1"),
])
def test_bad_input_gives_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"tessera: error: {message}" in err
    assert "Traceback" not in err


def test_bad_config_file(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"rows": 4, "cols": 4, "dataflow": "diagonal"}')
    assert main(["generate", "--config", str(tmp_path / "bad.json"), "-o", str(tmp_path)]) == 2
    assert "dataflow must be one of 'ws', 'os', 'both', not 'diagonal'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["generate", "--config", str(tmp_path / "bad.json"), "-o", str(tmp_path)]) == 2
    assert "configuration is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "bert-layer", "--mem-latency", "0"],
     "--mem-latency must be an integer from 1 to 65535, not 0"),
    (["run", "bert-layer", "--mem-latency", "70000"],
     "--mem-latency must be an integer from 1 to 65535, not 70000"),
    (["bench", "gemm", "--mem-gap", "256"], "--mem-gap must be an integer from 0 to 255, not 256"),
    (["run", "bert-layer", "--trace-from", "-1"],
     "--trace-from must be an integer from 0 to 9223372036854775807, not -1"),
])
def test_bad_simulation_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_registers_document_is_the_map(tmp_path, capsys):
    from tessera.hw.registers import register_map_markdown

    assert main(["registers", "-o", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text() == register_map_markdown()


@pytest.mark.rtl
def test_bench_sim_and_a_gemm_with_slow_memory_and_a_trace(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["bench", "sim", "--preset", "tiny", "--no-cocotb", "--m", "32", "--k", "32",
                 "--n", "32", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["sim_cycles_per_s"] > 0 and fig["build_s"] > 0 and "cocotb" not in fig
    assert "native" in capsys.readouterr().out
    trace = tmp_path / "g.fst"
    assert main(["bench", "gemm", "--preset", "tiny", "--m", "8", "--k", "8", "--n", "8",
                 "--mem-latency", "40", "--mem-gap", "1", "--trace", str(trace),
                 "--trace-cycles", "300", "--json", str(tmp_path / "g.json")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["memory"] == {"latency_cycles": 40, "bytes_per_cycle": 4.0}
    assert g["traces"] == [str(trace)] and trace.stat().st_size > 0
    assert "40-cycle latency, 4 bytes/cycle" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "-o", "x"])
    assert e.value.code == 2
    assert "one of the arguments --preset --config is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--m", "0"])
    assert e.value.code == 2
    assert "--m must be a positive integer, not 0" in capsys.readouterr().err


def test_config_shows_derived_values(capsys):
    assert main(["config", "--preset", "default"]) == 0
    out = capsys.readouterr().out
    assert "16x16 BOTH array" in out and "macs_per_cycle     256" in out
    assert main(["config", "--preset", "tiny", "--json"]) == 0
    assert TesseraConfig.from_json(capsys.readouterr().out) == preset("tiny")


@pytest.mark.rtl
@pytest.mark.parametrize("top", ["accelerator", "matrix_unit", "dma", "output_path", "store_unit",
                                 "execute_unit"])
def test_lint_is_clean_with_the_documented_waivers(top, capsys):
    assert main(["lint", "--preset", "tiny", "--top", top]) == 0
    assert "lint clean" in capsys.readouterr().out


@pytest.mark.rtl
def test_bench_array_prints_and_writes_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "array", "--preset", "tiny", "--sim", "icarus", "--tiles", "3",
                 "--rows", "16", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert {"cycles", "macs", "utilization", "sim_cycles_per_s"} <= set(fig)
    assert fig["macs"] == 3 * 16 * 16
    # Back-to-back tiles with no bubble: one input row every cycle while they stream, and
    # end-to-end utilization short of 1 only by the pipeline's fill and drain.
    assert fig["steady_utilization"] == 1.0
    assert fig["cycles"] == 3 * 16 + fig["latency_cycles"]
    assert "utilization" in capsys.readouterr().out


@pytest.mark.rtl
def test_demo_on_icarus(tmp_path, capsys):
    assert main(["demo", "--preset", "tiny", "--sim", "icarus", "-o", str(tmp_path),
                 "--m", "9", "--k", "10", "--n", "7"]) == 0
    assert "all 63 results equal the golden model bit for bit" in capsys.readouterr().out



def test_run_bert_layer_reports_every_operation(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "bert-layer", "--preset", "tiny", "--seq", "10", "--hidden", "32",
                 "--heads", "2", "--ffn", "64", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert [op["op"] for op in fig["ops"]] == ["qkv", "attention", "out_proj_ln1",
                                               "ffn1_gelu", "ffn2_ln2"]
    assert fig["macs"] == sum(op["macs"] for op in fig["ops"]) > 0
    assert fig["bit_exact_with_integer_model"] and fig["accuracy"]["cosine"] > 0.99
    text = capsys.readouterr().out
    assert "FFN 1 + i-GELU" in text and "equals the integer model bit for bit: yes" in text
    assert main(["run", "bert-layer", "--preset", "tiny"]) == 2   # BERT-base: no room
    assert "needs at least 7.8 MiB of main memory for its tensors, and main memory holds " \
        "4.0 MiB" in capsys.readouterr().err


def test_run_on_the_model_backend_predicts_the_counters(tmp_path, capsys):
    # The performance model's cycles with the golden model's data: the layer's and the
    # whole encoder's checks hold, and the report says the figures are predicted.
    from tessera.hw.config import preset
    from tessera.sw.run import PREDICTED, run_bert

    small = ["--preset", "tiny", "--seq", "10", "--hidden", "32", "--heads", "2", "--ffn",
             "64"]
    out = tmp_path / "run.json"
    assert main(["run", "bert-layer", *small, "--backend", "model", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["predicted"] and fig["bit_exact_with_integer_model"]
    assert "sim_cycles_per_s" not in fig and "bit_exact_with_golden" not in fig
    want = run_bert(preset("tiny"), "model", seq=10, hidden=32, heads=2, ffn=64,
                    runtime={"model_data": True})
    assert [op["cycles"] for op in fig["ops"]] == [op["cycles"] for op in want["ops"]]
    assert fig["cycles"] == sum(op["cycles"] for op in fig["ops"]) > 0
    assert PREDICTED in capsys.readouterr().out
    assert main(["run", "bert", *small, "--layers", "2", "--backend", "model", "--json",
                 str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["predicted"] and fig["bit_exact_with_integer_model"] and fig["cycles"] > 0
    assert PREDICTED in capsys.readouterr().out
    assert main(["run", "gpt2", "--preset", "tiny", "--layers", "2", "--hidden", "32",
                 "--heads", "2", "--ffn", "64", "--prompt-len", "4", "--generate", "2",
                 "--backend", "model", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["predicted"] and fig["bit_exact_with_integer_model"] and fig["prefill_cycles"]
    assert PREDICTED in capsys.readouterr().out


def test_run_gpt2_prefill_and_decode(tmp_path, capsys):
    small = ["--preset", "tiny", "--seq", "9", "--hidden", "32", "--heads", "2", "--ffn", "64"]
    out = tmp_path / "gpt2.json"
    assert main(["run", "gpt2-layer", *small, "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["mode"] == "prefill" and [op["op"] for op in fig["ops"]] == [
        "ln1", "qkv", "attention", "out_proj", "ln2", "ffn1_gelu", "ffn2"]
    assert fig["bit_exact_with_integer_model"] and fig["accuracy"]["cosine"] > 0.99
    assert main(["run", "gpt2-decode", *small, "--steps", "2", "--dataflow", "extended",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["mode"] == "decode" and fig["steps"] == 2 and fig["dataflow"] == "extended"
    assert fig["bit_exact_with_integer_model"] and fig["accuracy"]["cosine"] > 0.99
    text = capsys.readouterr().out
    assert "2 decode steps after a KV cache of 9 tokens" in text
    assert main(["run", "gpt2-decode", *small, "--model", "minilm"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["run", "gpt2-decode", *small, "--steps", "0"])
    assert e.value.code == 2


def test_run_minilm_layer_on_the_golden_accelerator(capsys):
    """all-MiniLM-L6-v2's first layer on a real sentence, lowered and run on the golden
    model of the accelerator: cosine with the float layer at least 0.99."""
    from tessera.sw.models import minilm

    if not minilm.is_installed():
        pytest.skip(f"all-MiniLM-L6-v2 is not installed: {minilm.INSTALL_COMMAND}")
    from tessera.sw.run import run_bert

    fig = run_bert(preset("default"), "golden", seq=32, model_layer=0)
    assert fig["bit_exact_with_integer_model"]
    assert fig["accuracy"]["cosine"] >= 0.99, fig["accuracy"]


def test_run_a_bert_model_folder(tmp_path, capsys):
    """--model takes a BERT model folder as well (here the installed MiniLM's own)."""
    from tessera.sw.models import minilm

    if not minilm.is_installed():
        pytest.skip(f"all-MiniLM-L6-v2 is not installed: {minilm.INSTALL_COMMAND}")
    out = tmp_path / "run.json"
    assert main(["run", "bert-layer", "--model", f"{minilm.model_dir()}:5", "--seq", "16",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["layer"].endswith("layer 5") and fig["accuracy"]["cosine"] >= 0.99
    assert main(["run", "bert-layer", "--model", f"{minilm.model_dir()}:6"]) == 2
    assert main(["run", "bert-layer", "--model", str(tmp_path)]) == 2
    assert "a BERT model folder" in capsys.readouterr().err
