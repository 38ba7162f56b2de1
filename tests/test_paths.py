"""The path ranking before placement (``sw/paths.py``) on hand-made ECP5 netlists: the
arrival times follow the delays, carry chains and multiplexers use their dedicated wires,
endpoints are grouped by where their worst path starts and ends."""

import json

import pytest

from tessera.sw.paths import (
    DELAYS,
    estimate_paths,
    format_late,
    format_paths,
    late_fanouts,
    late_pins,
    read_routed_arrivals,
)
from tessera.sw.paths import main as paths_main

D = DELAYS


def _ff(d, q, clk=1):
    return {"type": "TRELLIS_FF", "port_directions": {"CLK": "input", "DI": "input",
                                                      "LSR": "input", "Q": "output"},
            "connections": {"CLK": [clk], "DI": [d], "LSR": ["0"], "Q": [q]}}


def _lut(ins, z):
    ports = "ABCD"
    nets = (ins + ["0"] * 4)[:4]
    return {"type": "LUT4",
            "port_directions": {**{p: "input" for p in ports}, "Z": "output"},
            "connections": {**{p: [b] for p, b in zip(ports, nets, strict=True)}, "Z": [z]}}


def _carry(a0, cin, s0, cout):
    ports = {p: "input" for p in ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1", "CIN")}
    ports.update(S0="output", S1="output", COUT="output")
    conns = {p: ["0"] for p in ports}
    conns.update(A0=[a0], CIN=[cin], S0=[s0], S1=[900 + s0], COUT=[cout])
    return {"type": "CCU2C", "port_directions": ports, "connections": conns}


def _write(tmp_path, cells, names):
    netnames = {n: {"bits": bits} for n, bits in names.items()}
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"modules": {"tessera_pnr_top": {
        "cells": cells, "netnames": netnames}}}))
    return path


def test_a_chain_of_luts_between_two_units(tmp_path):
    # inner.exe.a (FF) -> three LUTs -> inner.dma.b (FF); another FF straight to an FF.
    cells = {"src": _ff(50, 10), "l1": _lut([10], 11), "l2": _lut([11], 12),
             "l3": _lut([12], 13), "dst": _ff(13, 14),
             "q1": _ff(60, 20), "q2": _ff(20, 21)}
    path = _write(tmp_path, cells, {"inner.exe.a": [10], "inner.dma.b": [13],
                                    "inner.dma.b_LUT4_Z_C": [12], "inner.store.c": [20]})
    e = estimate_paths(path, period_ns=2.0)
    hop = D["route"]                                # every net here has fanout 1
    want = D["clk_to_q"] + 3 * (hop + D["lut"]) + hop + D["setup"]
    assert e.worst_ns == pytest.approx(want)
    assert e.failing == 1                           # the short path meets 2 ns
    g = e.groups[0]
    assert (g.start_unit, g.end_unit, g.start_signal) == ("execute control", "DMA",
                                                           "inner.exe.a")
    assert g.units == ["execute control", "DMA"] and g.cells == 4 and g.endpoints == 1
    # The named signals along it, a name Yosys derived (autoname) cut back to its signal.
    assert g.through == ["inner.exe.a", "inner.dma.b"]
    assert "DMA" in format_paths(e) and "1 of 4 endpoints over 2 ns" in format_paths(e)
    # With a long enough period nothing fails.
    assert estimate_paths(path, period_ns=want + 0.01).failing == 0


def test_carry_chains_ride_their_dedicated_wires(tmp_path):
    # FF -> carry cell 1 (operand) -> carry out -> carry cell 2 (carry in) -> sum -> FF.
    cells = {"src": _ff(50, 10), "c1": _carry(10, "0", 11, 12), "c2": _carry("0", 12, 13, 14),
             "dst": _ff(13, 15)}
    path = _write(tmp_path, cells, {"inner.acc.x": [10], "inner.acc.y": [13]})
    e = estimate_paths(path, period_ns=1.0)
    want = (D["clk_to_q"] + D["route"] + D["carry_in"] + 0.0 + D["carry_sum"]
            + D["route"] + D["setup"])
    assert e.worst_ns == pytest.approx(want)


def test_fanout_slows_a_net(tmp_path):
    cells = {"src": _ff(50, 10)}
    for i in range(8):                               # one net to eight flip-flops
        cells[f"d{i}"] = _ff(10, 100 + i)
    path = _write(tmp_path, cells, {"inner.regs.r": [10]})
    e = estimate_paths(path, period_ns=0.5)
    assert e.worst_ns == pytest.approx(D["clk_to_q"] + D["route"] + 3 * D["route_per_fanout"]
                                       + D["setup"])
    assert e.groups[0].endpoints == 8 and e.groups[0].start_unit == "registers"


def test_routed_arrivals_replace_the_estimates(tmp_path):
    # inner.exe.a (FF) -> a LUT -> two flip-flops.
    cells = {"src": _ff(50, 10), "l1": _lut([10], 11), "near": _ff(11, 20), "far": _ff(11, 21)}
    path = _write(tmp_path, cells, {"inner.exe.a": [10], "inner.dma.b": [11]})
    report = tmp_path / "pnr.json"
    clk, reset = "posedge clk", "<async>"
    report.write_text(json.dumps({"detailed_net_timings": [
        # nextpnr's arrival at each endpoint, listed under the net that feeds it.
        {"net": "inner.dma.b", "driver": "l1", "port": "Z", "event": clk,
         "endpoints": [{"cell": "near", "port": "DI", "event": clk, "delay": [1.0, 2.0]},
                       {"cell": "far", "port": "M", "event": clk, "delay": [3.0, 7.5]}]},
        # A path from the asynchronous reset is not a clock's.
        {"net": "rst", "driver": "io", "port": "O", "event": reset,
         "endpoints": [{"cell": "far", "port": "LSR", "event": clk, "delay": [9.0, 9.0]}]}]}))
    routed = read_routed_arrivals(report)
    assert routed == {"near": 2.0, "far": 7.5}
    e = estimate_paths(path, period_ns=1.5, routed=routed)
    assert e.worst_ns == pytest.approx(7.5) and e.failing == 2   # src's input: 1.22 ns
    # Two of the three endpoints (src's input has no path) took nextpnr's times.
    assert e.routed_share == pytest.approx(2 / 3) and "after routing" in format_paths(e)
    g = e.groups[0]
    assert (g.start_signal, g.end_unit, g.example) == ("inner.exe.a", "DMA", "inner.dma.b")
    # Between the two arrivals only the far flip-flop misses the period.
    assert estimate_paths(path, period_ns=5.0, routed=routed).failing == 1
    # Without the report the same netlist is estimated: fanout 2 on the LUT's net.
    plain = estimate_paths(path, period_ns=1.0)
    assert plain.routed_share == 0.0
    assert plain.worst_ns == pytest.approx(D["clk_to_q"] + D["route"] + D["lut"] + D["route"]
                                           + D["route_per_fanout"] + D["setup"])
    # A report without detailed timing names nothing.
    report.write_text(json.dumps({"fmax": {}}))
    assert read_routed_arrivals(report) == {}


def test_late_pins_and_wide_late_nets_are_told_from_the_routed_report(tmp_path):
    clk = "posedge clk"

    def load(cell, port, ns):
        return {"cell": cell, "port": port, "event": clk, "delay": [ns / 2, ns]}

    report = tmp_path / "pnr.json"
    report.write_text(json.dumps({"detailed_net_timings": [
        # a handshake's LUT to the clock enables of a wide register: 4 to 12 ns
        {"net": "inner.acc.bank0_last_CE", "driver": "lut_ce", "event": clk,
         "endpoints": [load(f"s0_{i}", "CE", 4 + i) for i in range(9)]},
        # a data net: one of its loads over the period, and the same pin through a
        # second net (counted once, at its latest)
        {"net": "inner.dma.w[0]", "driver": "ff_w", "event": clk,
         "endpoints": [load("s0_0", "DI", 11.0), load("ram", "WRE", 10.5),
                       load("ram", "WAD2", 1.0)]},
        {"net": "inner.dma.w[1]", "driver": "ff_w1", "event": clk,
         "endpoints": [load("s0_0", "DI", 9.0)]},
        # the asynchronous reset is no clock's
        {"net": "rst", "driver": "io", "event": "<async>",
         "endpoints": [load("s0_1", "LSR", 30.0)]}]}))
    pins = late_pins(report, 10.0)
    assert pins == {"clock enable": 2, "data": 1, "LUT RAM write enable": 1}
    assert list(pins)[0] == "clock enable"          # most first
    wide = late_fanouts(report, 10.0, min_loads=5)
    assert len(wide) == 1
    f = wide[0]
    assert (f.net, f.unit, f.loads, f.late, f.driver) == (
        "inner.acc.bank0_last_CE", "accumulator", 9, 2, "lut_ce")
    assert (f.earliest_ns, f.latest_ns, f.pins) == (4.0, 12.0, {"clock enable": 9})
    assert late_fanouts(report, 12.0, min_loads=5) == []     # none over the period
    text = format_late(pins, wide, 10.0)
    assert text.startswith("input pins over 10 ns after routing: 4: clock enable 2, data 1, "
                           "LUT RAM write enable 1")
    assert "4.0 ..  12.0 ns     9 loads (9 clock enable)  accumulator: " \
           "inner.acc.bank0_last_CE" in text


def test_ranking_a_finished_folder_again(tmp_path, capsys):
    cells = {"src": _ff(50, 10), "l1": _lut([10], 11), "dst": _ff(11, 12)}
    _write(tmp_path, cells, {"inner.exe.a": [10], "inner.dma.b": [11]})
    assert paths_main([str(tmp_path), "--freq", "1000"]) == 0
    assert "estimated before placement" in capsys.readouterr().out
    (tmp_path / "pnr.json").write_text(json.dumps({"detailed_net_timings": [
        {"net": "inner.dma.b", "driver": "l1", "port": "Z", "event": "posedge clk",
         "endpoints": [{"cell": "dst", "port": "DI", "event": "posedge clk",
                        "delay": [4.0, 5.5]}]}]}))
    out_json = tmp_path / "rank.json"
    assert paths_main([str(tmp_path), "--freq", "1000", "--json", str(out_json)]) == 0
    assert "after routing" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["worst_ns"] > 5.0
    with pytest.raises(SystemExit):
        paths_main([str(tmp_path / "missing")])


def _dsp(a_bits, p_bits, regs=()):
    ports = {f"A{i}": "input" for i in range(18)}
    ports.update({f"B{i}": "input" for i in range(18)})
    ports.update({f"P{i}": "output" for i in range(36)})
    conns = {p: ["0"] for p in ports}
    for i, b in enumerate(a_bits):
        conns[f"A{i}"] = [b]
    for i, b in enumerate(p_bits):
        conns[f"P{i}"] = [b]
    params = {f"REG_{r}_CLK": "CLK0" for r in regs}
    return {"type": "MULT18X18D", "port_directions": ports, "connections": conns,
            "parameters": params}


@pytest.mark.parametrize("regs", [(), ("OUTPUT",), ("INPUTA", "INPUTB", "OUTPUT")])
def test_a_dsp_with_its_registers_ends_and_starts_paths(tmp_path, regs):
    # a (FF) -> LUT -> the DSP's operand; its product -> LUT -> b (FF)
    cells = {"src": _ff(50, 10), "l1": _lut([10], 11), "dsp": _dsp([11], [12], regs),
             "l2": _lut([12], 13), "dst": _ff(13, 14)}
    path = _write(tmp_path, cells, {"inner.exe.a": [10], "inner.exe.b": [13]})
    e = estimate_paths(path, period_ns=0.1)
    into = D["clk_to_q"] + D["route"] + D["lut"] + D["route"]
    out = D["route"] + D["lut"] + D["route"] + D["setup"]
    src = D["route"] + D["setup"]                   # src's own input, undriven
    want = {(): [src, into + D["dsp"] + out],       # one path through the multiplier
            # the operand's path ends in the product's register, through the multiplier
            ("OUTPUT",): [src, D["dsp_clk_to_out"] + out, into + D["dsp"] + D["setup"]],
            ("INPUTA", "INPUTB", "OUTPUT"): [src, D["dsp_clk_to_out"] + out,
                                             into + D["setup"]]}[regs]
    assert e.endpoints == len(want)
    assert sorted(g.worst_ns for g in e.groups) == pytest.approx(sorted(want), abs=0.01)
