"""Design-space sweeps (sw/sweep): the specification and its errors, the Pareto front, the
cost model's fit, and a real local Dask cluster running a tiny sweep end to end, resumed
from its cache."""

import csv
import json

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.version import source_hash
from tessera.sw.check import InputError
from tessera.sw.cli import main
from tessera.sw.sweep import SpecError, expand, load_spec, parse_spec, run_sweep
from tessera.sw.sweep.cost import COLUMNS, FEATURES, CostModel, features
from tessera.sw.sweep.results import pareto_front

GEMM = {"kind": "gemm", "m": 32, "k": 32, "n": 16}


def _table(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _spec(**changes):
    data = {"name": "t", "base": "tiny", "axes": {"spad_kib": [16, 32]}, "workloads": [GEMM]}
    data.update(changes)
    return data


# --- the specification ----------------------------------------------------------------


def test_spec_expands_axes_constraints_and_workloads():
    spec = parse_spec(_spec(
        axes={"spad_kib": [16, 32, 64], "acc_kib": [8, 16], "mem_latency": [50, 100]},
        constraints=["spad_kib + acc_kib <= 40"],
        workloads=[GEMM, {"kind": "bert-layer", "model": "minilm", "seq": [64, 128]}]))
    points, excluded = expand(spec)
    # 3 x 2 x 2 = 12 combinations; spad 64 (4 of them) and spad 32 + acc 16 (2) exceed 40.
    assert (len(points), excluded) == (6, 6)
    assert all(p.config.spad_kib + p.config.acc_kib <= 40 for p in points)
    assert {p.mem_latency for p in points} == {50, 100}
    names = [w.name for w in spec.workloads]
    assert names == ["gemm-32x32x16", "minilm-bert-layer-s64", "minilm-bert-layer-s128"]
    assert spec.workloads[1].p["hidden"] == 384 and spec.workloads[1].p["ffn"] == 1536


def test_spec_keeps_a_refused_configuration_as_a_reported_point():
    points, _ = expand(parse_spec(_spec(axes={"acc_banks": [2, 3]})))
    assert points[0].config is not None and points[0].error is None
    assert points[1].config is None
    assert "acc_banks must be a power of two" in points[1].error


@pytest.mark.parametrize("changes, message", [
    ({"axes": {"spadkib": [16]}}, "axes.spadkib: unknown axis"),
    ({"axes": {"spad_kib": [16, "big"]}}, "axes.spad_kib[1] must be a whole number"),
    ({"axes": {"spad_kib": []}}, "axes.spad_kib lists no values"),
    ({"axes": {"array": [4], "rows": [4]}}, "axes.array sets rows and cols together"),
    ({"workloads": [{"kind": "resnet"}]}, "workloads[0].kind must be one of"),
    ({"workloads": [GEMM, {"kind": "bert-layer", "model": "t5"}]},
     "workloads[1].model must be one of"),
    ({"workloads": [{"kind": "gemm", "m": 4, "k": 4}]}, "workloads[0]: gemm needs m, k and n"),
    ({"workloads": [{"kind": "gemm", "m": 4, "k": 4, "n": 4, "seq": 8}]},
     "workloads[0]: gemm takes m, k, n, not seq"),
    ({"workloads": [{"kind": "bert-layer", "seq": 0}]}, "workloads[0].seq must be a whole"),
    ({"workloads": []}, "workloads must list at least one workload"),
    ({"workloads": [GEMM, GEMM]}, "two workloads are named 'gemm-32x32x16'"),
    ({"constraints": ["spad_kib + sram <= 4"]}, "constraints[0]: 'sram' is not an axis"),
    ({"constraints": ["__import__('os')"]}, "constraints[0]: "),
    ({"baseline": {"acc_kib": 8}}, "baseline.acc_kib is not one of the sweep's axes"),
    ({"baseline": {"spad_kib": 64}}, "baseline.spad_kib = 64 is not among"),
    ({"recheck": "all"}, "recheck must be pareto, none or a number"),
    ({"backend": "spice"}, "backend must be one of"),
    ({"base": "huge"}, "base 'huge' is neither a preset"),
    ({"colour": "red"}, "unknown entry colour"),
])
def test_spec_errors_name_the_entry(changes, message):
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(**changes), "s.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("s.yaml")


def test_spec_files_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nbase: tiny\naxes: {bus_bits: [64, 128]}\n"
                                     "workloads:\n  - {kind: gemm, m: 8, k: 8, n: 8}\n")
    (tmp_path / "b.json").write_text(json.dumps(_spec(name="b")))
    (tmp_path / "c.yaml").write_text("axes: [1,\n")
    assert len(expand(load_spec(tmp_path / "a.yaml"))[0]) == 2
    assert load_spec(tmp_path / "b.json").name == "b"
    with pytest.raises(SpecError, match="is not valid YAML"):
        load_spec(tmp_path / "c.yaml")
    with pytest.raises(SpecError, match="is not a file"):
        load_spec(tmp_path / "missing.yaml")


def test_cli_reports_a_bad_spec_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\naxes: {rows: [4, 0]}\nworkloads: [{kind: gemm, m: 8, k: 8, "
                   "n: 8}]\n")
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: error:") and "axes.rows[1]" in err


# --- the Pareto front -------------------------------------------------------------------


def test_pareto_front():
    pts = [(1, 9), (2, 5), (2, 7), (3, 5), (4, 2), (5, 3), (6, 1), (3, 4)]
    front = pareto_front(pts, lambda p: p[0], lambda p: p[1])
    assert front == [(1, 9), (2, 5), (3, 4), (4, 2), (6, 1)]
    # Brute force: nothing outside the front is undominated, nothing in it is dominated.
    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts)
    assert {p for p in pts if not dominated(p)} == set(front)


# --- the cost model ---------------------------------------------------------------------


TRUTH = {"ecp5_lut4": (5000, 900, 150, 300, 1100, 20),
         "ecp5_ff": (3000, 700, 120, 500, 400, 10),
         "ecp5_dsp": (10, 1, 2, 5), "ecp5_bram": (2, 0.5, 0.01),
         "sky130_um2": (4e5, 9e4, 2e4, 3e4, 6e4, 500), "sram_bits": (1000, 8192, 4)}


HW = source_hash()


def _report(folder, config, target, noise=0.0, fmax=None, rng=None,
            hw_version=HW):
    """A report in `tessera synth --json`'s form whose figures follow TRUTH (with
    relative noise), of the hardware as it is unless ``hw_version`` says otherwise."""
    names = dict((n, col) for col, n in COLUMNS[target])
    total = {}
    for name, col in names.items():
        f = features(config)
        value = float(np.dot(TRUTH[name], [f[k] for k in FEATURES[name]]))
        total[col] = value * (1 + (rng.normal(0, noise) if rng is not None else 0))
    data = {"top": "accelerator", "target": target, "config": config.to_dict(),
            "config_hash": config.hash, "total": total,
            "timing": {"fmax_mhz": fmax} if fmax else {}, "hw_version": hw_version}
    (folder / f"{config.hash}-{target}.json").write_text(json.dumps(data))


def _configs():
    t = preset("tiny")
    return [t, t.replace(bus_bits=128), t.replace(rows=2, cols=2),
            t.replace(rows=8, cols=8, spad_kib=32, acc_kib=32), t.replace(rows=6, cols=6,
                                                                          spad_kib=32),
            t.replace(spad_kib=64, acc_kib=32, bus_bits=256), t.replace(dataflow="ws"),
            t.replace(rows=8, cols=8, dataflow="ws"), t.replace(output_lanes=2),
            t.replace(rows=8, cols=8, dataflow="ws", output_lanes=4)]


def test_cost_fit_reproduces_a_linear_truth_and_measures_its_error(tmp_path):
    for c in _configs():
        for target in COLUMNS:
            _report(tmp_path, c, target, fmax=40.0 if c == preset("tiny") else None)
    model = CostModel([tmp_path], reference=None)
    loo = model.loo()
    assert set(loo) == set(FEATURES)
    for name, v in loo.items():
        assert v["points"] == 10 and v["max_abs_pct"] < 1e-6, name
    # A configuration not synthesized: fitted, and exact on a linear truth.
    new = preset("tiny").replace(rows=6, cols=6, bus_bits=128, output_lanes=3)
    cost = model.cost(new, 50.0, "a test clock")
    f = features(new)
    want = float(np.dot(TRUTH["ecp5_lut4"], [f[k] for k in FEATURES["ecp5_lut4"]]))
    assert cost.values["ecp5_lut4"] == pytest.approx(want, rel=1e-6)
    assert cost.sources["ecp5_lut4"] == "fitted"
    assert cost.clock_mhz == 50.0 and cost.clock_source.startswith("assumed: 50 MHz (a test")
    # A synthesized one: its own figures, and the clock of its placed report.
    tiny = model.cost(preset("tiny"), 50.0, "a test clock")
    assert tiny.sources["sky130_um2"] == "synthesized"
    assert tiny.clock_mhz == 40.0 and tiny.clock_source.startswith("measured")
    assert model.cost(preset("tiny"), 50.0, "x", measured_clock=False).clock_mhz == 50.0


def test_reports_of_other_hardware_are_left_out_and_the_reference_fills_in(tmp_path):
    build, ref = tmp_path / "build", tmp_path / "reference"
    build.mkdir()
    ref.mkdir()
    tiny, big = preset("tiny"), preset("tiny").replace(rows=8, cols=8)
    _report(build, tiny, "ecp5", hw_version="0123456789abcdef")     # earlier hardware
    _report(ref, tiny, "ecp5")
    _report(ref, big, "ecp5")
    _report(build, big, "sky130")
    model = CostModel([build], reference=ref)
    assert model.stale == [build / f"{tiny.hash}-ecp5.json"]
    assert model.reports[(tiny.hash, "ecp5")].path == ref / f"{tiny.hash}-ecp5.json"
    assert model.reports[(big.hash, "sky130")].path == build / f"{big.hash}-sky130.json"
    # The build folder's own report of the same hardware wins over the reference.
    _report(build, big, "ecp5", noise=0.5, rng=np.random.default_rng(1))
    model = CostModel([build], reference=ref)
    assert model.reports[(big.hash, "ecp5")].path == build / f"{big.hash}-ecp5.json"
    assert CostModel([build], reference=None).reports.keys() == {
        (big.hash, "sky130"), (big.hash, "ecp5")}


def test_the_hardware_version_ignores_comments_and_docstrings_but_not_code():
    # A report stays of "this hardware" through an edit of the sources' prose, and only
    # then: the version hashes the code of hw/'s sources.
    from tessera.hw.version import code_of

    base = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    assert code_of(base) == code_of("def f(x):\n    # other words\n    return x+1\n")
    assert code_of('class A:\n    """Only a docstring."""\n') == code_of("class A:\n    pass\n")
    assert code_of(base) != code_of("def f(x):\n    return x + 2\n")
    assert code_of(base) != code_of('def f(x):\n    return "Doc."\n')
    assert code_of(base) != code_of("def g(x):\n    return x + 1\n")
    assert len(HW) == 16 and int(HW, 16) >= 0


def test_the_reference_set_is_made_two_syntheses_at_a_time_and_a_failure_named(
        tmp_path, monkeypatch):
    import threading
    import time

    from tessera.sw.sweep import cost
    from tessera.sw.sweep.refresh import main as refresh

    running, most, calls = [0], [0], []
    lock = threading.Lock()

    def fake_synthesize(config, target, progress=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            calls.append((config.hash, target))
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if config.rows == 16 and target == "sky130":
            raise cost.CostError(f"synthesis of {config.hash} for sky130 failed")
        made = tmp_path / "cost" / f"{config.hash}-{target}.json"
        made.parent.mkdir(exist_ok=True)
        made.write_text(json.dumps({"hash": config.hash, "target": target}))
        return made

    monkeypatch.setattr(cost, "synthesize", fake_synthesize)
    monkeypatch.setattr(cost, "REFERENCE_DIR", tmp_path / "reference")
    made, failed = cost.make_reference(("ecp5", "sky130"), jobs=2)
    configs = cost.reference_configs()
    assert most[0] == 2 and len(calls) == 2 * len(configs)
    assert [p.name for p in made] == [f"{c.hash}-{t}.json" for c in configs
                                      for t in ("ecp5", "sky130")
                                      if not (c.rows == 16 and t == "sky130")]
    assert all(p.parent == tmp_path / "reference" and p.exists() for p in made)
    assert len(failed) == 1 and "for sky130 failed" in failed[0]
    with pytest.raises(InputError, match="jobs must be a positive integer, not 0"):
        cost.make_reference(("ecp5",), jobs=0)
    assert refresh(["--targets", "ecp5", "--jobs", "1"]) == 0 and most[0] == 2
    with pytest.raises(SystemExit):
        refresh(["--jobs", "0"])


def test_cost_fit_error_on_noisy_points_is_reported(tmp_path):
    rng = np.random.default_rng(3)
    for c in _configs():
        _report(tmp_path, c, "ecp5", noise=0.05, rng=rng)
    loo = CostModel([tmp_path], reference=None).loo()
    assert 0.5 < loo["ecp5_lut4"]["mean_abs_pct"] < 50
    assert len(loo["ecp5_lut4"]["per_point"]) == 10
    assert "sky130_um2" not in loo          # no sky130 reports: nothing to fit


# --- a real local Dask cluster ---------------------------------------------------------


def test_sweep_end_to_end_on_a_local_dask_cluster_and_resume(tmp_path):
    costs = tmp_path / "costs"
    costs.mkdir()
    for c in _configs():
        for target in COLUMNS:
            _report(costs, c, target)
    spec = parse_spec({
        "name": "e2e", "base": "tiny",
        "axes": {"spad_kib": [16, 32], "acc_banks": [2, 3]},
        "workloads": [GEMM, {"kind": "bert-layer", "hidden": 32, "heads": 2, "ffn": 64,
                             "seq": 16, "model": "small"},
                      {"kind": "bert-layer", "hidden": 32, "heads": 2, "ffn": 64,
                       "seq": 512, "model": "long"}],
        "baseline": {"spad_kib": 16, "acc_banks": 2}, "recheck": "none"})
    out = tmp_path / "out"
    s = run_sweep(spec, output=out, workers=2, cost_folders=[costs], cost_reference=None)
    assert (s["points"], s["refused"], s["evaluations"], s["computed"]) == (4, 2, 6, 6)
    rows = _table(out)
    assert len(rows) == 4 * 3
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) == 6 and all("acc_banks" in r["message"] for r in refused)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4
    for r in ok:
        assert int(r["cycles"]) > 0 and 0 < float(r["utilization"]) <= 1
        assert 0 < float(r["bus_utilization"]) <= 1
        # (the CSV keeps six significant digits)
        assert float(r["latency_ms"]) == pytest.approx(int(r["cycles"]) / 68.7e3, rel=1e-5)
        assert float(r["sky130_mm2"]) > 0 and float(r["runs_per_s_per_mm2"]) > 0
    # 512 keys do not fit tiny's 256-element Softmax rows: reported, not run.
    unfit = [r for r in rows if r["status"] == "unfit"]
    assert len(unfit) == 2 and all("max_row_len = 256" in r["message"] for r in unfit)
    full = json.loads((out / "results.json").read_text())
    layer = next(r for r in full if r["workload"] == "small-bert-layer-s16"
                 and r["status"] == "ok")
    assert [o["op"] for o in layer["ops"]] == ["qkv", "attention", "out_proj_ln1",
                                               "ffn1_gelu", "ffn2_ln2"]
    assert sum(o["cycles"] for o in layer["ops"]) == layer["cycles"]
    for wl in ("gemm-32x32x16", "small-bert-layer-s16"):
        for kind in ("pareto", "heatmap", "breakdown"):
            for ext in ("png", "svg"):
                assert (out / "plots" / f"{kind}-{wl}.{ext}").stat().st_size > 1000
        assert s["fronts"][wl], wl
    # Resumed, through a running scheduler (--scheduler): the same sweep again computes
    # nothing and writes the same figures.
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        again = run_sweep(spec, output=out, scheduler=cluster.scheduler_address,
                          cost_folders=[costs], cost_reference=None)
    assert (again["computed"], again["cached"]) == (0, 6)
    assert _table(out) == rows


@pytest.mark.rtl
def test_sweep_rechecks_the_front_on_verilator(tmp_path):
    costs = tmp_path / "costs"
    costs.mkdir()
    for c in _configs():
        _report(costs, c, "ecp5")
    spec = parse_spec({"name": "rtl", "base": "tiny", "axes": {"mem_latency": [100]},
                       "workloads": [GEMM], "recheck": "pareto"})
    s = run_sweep(spec, output=tmp_path / "out", workers=1, cost_folders=[costs],
                  cost_reference=None)
    (r,) = s["rtl"]
    assert r["rtl_status"] == "ok (verilator)" and r["rtl_cycles"] > 0
    # The model's cycles against Verilator's: the table carries both.
    assert abs(r["model_error_pct"]) < 10
    row = next(x for x in _table(tmp_path / "out") if x["workload"] == "gemm-32x32x16")
    assert int(row["rtl_cycles"]) == r["rtl_cycles"] and row["pareto"] == "True"
