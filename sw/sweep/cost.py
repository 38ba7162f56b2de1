"""Cost per configuration: FPGA resources, a standard-cell area and the clock.

What was measured comes from the reports ``tessera synth --json`` writes (the whole
accelerator, flattened): for the ECP5-85F the LUT4, flip-flops, DSPs (MULT18X18D) and
block RAMs (DP16KD), and the clock nextpnr reached where the report was placed; for
sky130 the standard-cell area (square micrometres of size-1 cells, memories left out) and
the SRAM bits. Reports are read from the build folder (``build/synth-*.json``, and
``build/cost/HASH-TARGET.json``, where :func:`synthesize` writes them), the newest for
each configuration hash and target; where the build folder has none for a configuration,
from the reference reports that come with Tessera (``sw/sweep/reference/``, made by
``make cost-reference``, :mod:`.refresh`). Only reports of the hardware as it is now count (their
``hw_version``, :func:`tessera.hw.version.source_hash`): the others are left out, and
:attr:`CostModel.stale` names them.

For a configuration not synthesized, each figure comes from a least-squares fit on the
synthesized ones over features of the configuration (:data:`FEATURES`); its error is
measured by leaving each synthesized configuration out in turn and predicting it from the
others (:meth:`CostModel.loo`), and every estimate says it is one.

The clock: the measured one where a report was placed (:attr:`Cost.clock_source` says
which report), else the clock the caller names as an assumption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...hw.config import ConfigError, TesseraConfig, TesseraError
from ...hw.version import source_hash
from ..check import whole_number

__all__ = ["CostModel", "Cost", "FEATURES", "COLUMNS", "features", "synthesize",
           "cost_dir", "CostError"]

#: Figures per target: (report column, name in the table).
COLUMNS = {"ecp5": (("LUT4", "ecp5_lut4"), ("FF", "ecp5_ff"), ("DSP", "ecp5_dsp"),
                    ("BRAM", "ecp5_bram")),
           "sky130": (("area um2", "sky130_um2"), ("SRAM bits", "sram_bits"))}

#: The features each figure is fitted on. The array's cost goes with its MACs, and more
#: with both dataflows (``dual_macs``: a second accumulator, adder and drain register per
#: PE, and the muxes between them); the output path's units (requantization, GELU,
#: Softmax, LayerNorm) with their lanes (``lanes``, ``config.out_lanes``); the
#: accumulator's ports, the store unit and LayerNorm's prescale with the columns (cols);
#: the DMA's realignment with the bus; the memories with their bits.
FEATURES = {
    "ecp5_lut4": ("one", "macs", "dual_macs", "cols", "lanes", "bus_bits"),
    "ecp5_ff": ("one", "macs", "dual_macs", "cols", "lanes", "bus_bits"),
    "ecp5_dsp": ("one", "macs", "cols", "lanes"),
    "ecp5_bram": ("one", "sram_kib", "bus_bits"),
    "sky130_um2": ("one", "macs", "dual_macs", "cols", "lanes", "bus_bits"),
    "sram_bits": ("one", "sram_kib", "bus_bits"),
}


class CostError(TesseraError, RuntimeError):
    """No cost can be given (no reports to fit, a synthesis that failed)."""


def features(config: TesseraConfig) -> dict:
    """The configuration's features for the fit."""
    macs = float(config.rows * config.cols)
    return {"one": 1.0, "macs": macs, "dual_macs": macs if config.dataflow == "both" else 0.0,
            "cols": float(config.cols), "lanes": float(config.out_lanes),
            "bus_bits": float(config.bus_bits),
            "sram_kib": float(config.spad_kib + config.acc_kib)}


#: The reference reports that come with Tessera (``make cost-reference``).
REFERENCE_DIR = Path(__file__).parent / "reference"


def cost_dir() -> Path:
    """Where :func:`synthesize` writes its reports (``build/cost``)."""
    from ...sim.runner import build_root

    return build_root() / "cost"


@dataclass
class Cost:
    """One configuration's cost: each figure, and where it comes from."""

    values: dict
    sources: dict = field(default_factory=dict)     # figure -> "synthesized" / "fitted"
    reports: dict = field(default_factory=dict)     # target -> report path
    clock_mhz: float | None = None
    clock_source: str = ""

    def row(self) -> dict:
        out = dict(self.values)
        out["area_source"] = ", ".join(sorted({f"{k.split('_')[0]} {v}" for k, v in
                                               self.sources.items() if k != "sram_bits"}))
        out["clock_mhz"] = self.clock_mhz
        out["clock_source"] = self.clock_source
        return out


@dataclass
class _Report:
    path: Path
    config: TesseraConfig
    target: str
    values: dict
    fmax_mhz: float | None
    placed: bool
    mtime: float
    hw_version: str


def _read_report(path: Path) -> _Report | None:
    """A ``tessera synth --json`` report of the whole accelerator, or None (another top,
    another target, or not a report)."""
    try:
        data = json.loads(path.read_text())
        if data.get("top") != "accelerator" or data.get("target") not in COLUMNS:
            return None
        config = TesseraConfig.from_dict(data["config"])
        total = data["total"]
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return None
    target = data["target"]
    values = {}
    for col, name in COLUMNS[target]:
        if col in total:
            values[name] = float(total[col])
    timing = data.get("timing") or {}
    return _Report(path, config, target, values, timing.get("fmax_mhz"),
                   bool(timing.get("fmax_mhz")), path.stat().st_mtime,
                   str(data.get("hw_version", "")))


def _fit(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    return coef


class CostModel:
    """The measured costs, and least-squares fits for the rest.

    Parameters
    ----------
    folders : list of Path, optional
        Where to look for reports (default: the build folder and its ``cost`` folder).
    reference : Path or None, optional
        Reports used for the configurations ``folders`` have none of (default: the
        reference reports, :data:`REFERENCE_DIR`; None: none).
    """

    def __init__(self, folders=None, reference=REFERENCE_DIR):
        if folders is None:
            from ...sim.runner import build_root

            folders = [build_root(), cost_dir()]
        self.reports: dict[tuple[str, str], _Report] = {}
        self.placed: dict[str, _Report] = {}        # hash -> newest placed ECP5 report
        self.stale: list[Path] = []     # reports of other hardware, left out
        version = source_hash()
        for tier in ([Path(f) for f in folders], [Path(reference)] if reference else []):
            found, placed = {}, {}
            for folder in tier:
                for path in sorted(folder.glob("*.json")):
                    r = _read_report(path)
                    if r is None:
                        continue
                    if r.hw_version != version:
                        self.stale.append(path)
                        continue
                    key = (r.config.hash, r.target)
                    if key not in found or r.mtime > found[key].mtime:
                        found[key] = r
                    old = placed.get(r.config.hash)
                    if r.placed and (old is None or r.mtime > old.mtime):
                        placed[r.config.hash] = r
            # A tier fills in what the tiers before it have not measured.
            for key, r in found.items():
                self.reports.setdefault(key, r)
            for h, r in placed.items():
                self.placed.setdefault(h, r)
        self._coef = {}
        for name in FEATURES:
            pts = self._points(name)
            if len(pts) >= len(FEATURES[name]):
                xs = np.array([[features(c)[f] for f in FEATURES[name]] for c, _ in pts])
                self._coef[name] = _fit(xs, np.array([y for _, y in pts]))

    def _points(self, name: str) -> list[tuple[TesseraConfig, float]]:
        """The synthesized configurations with the figure ``name``, by hash."""
        return [(r.config, r.values[name]) for (h, t), r in sorted(self.reports.items())
                if name in r.values]

    def synthesized(self, target: str) -> list[TesseraConfig]:
        return [r.config for (h, t), r in sorted(self.reports.items()) if t == target]

    def loo(self) -> dict:
        """Leave-one-out error of each figure's fit: each synthesized configuration
        predicted from the others. ``{figure: {"points", "mean_abs_pct", "max_abs_pct",
        "per_point": [(hash, measured, predicted)]}}``; figures with too few points for
        a fit with one left out are absent."""
        out = {}
        for name, feats in FEATURES.items():
            pts = self._points(name)
            if len(pts) < len(feats) + 1:
                continue
            xs = np.array([[features(c)[f] for f in feats] for c, _ in pts])
            ys = np.array([y for _, y in pts])
            rows = []
            for i in range(len(pts)):
                keep = np.arange(len(pts)) != i
                pred = float(xs[i] @ _fit(xs[keep], ys[keep]))
                rows.append((pts[i][0].hash, float(ys[i]), pred))
            errs = [abs(p - y) / y * 100 for _, y, p in rows if y]
            out[name] = {"points": len(pts), "features": list(feats),
                         "mean_abs_pct": float(np.mean(errs)) if errs else None,
                         "max_abs_pct": float(np.max(errs)) if errs else None,
                         "per_point": rows}
        return out

    def cost(self, config: TesseraConfig, assumed_clock_mhz: float,
             assumed_clock_note: str, measured_clock: bool = True) -> Cost:
        """``config``'s cost: measured figures where a report exists, fitted ones else
        (None where there are too few reports to fit). The clock: the newest placed
        report's (with ``measured_clock``), else the assumed one."""
        c = Cost({})
        for target, cols in COLUMNS.items():
            r = self.reports.get((config.hash, target))
            for _, name in cols:
                if r is not None and name in r.values:
                    c.values[name] = r.values[name]
                    c.sources[name] = "synthesized"
                    c.reports[target] = str(r.path)
                elif name in self._coef:
                    x = np.array([features(config)[f] for f in FEATURES[name]])
                    c.values[name] = max(0.0, float(x @ self._coef[name]))
                    c.sources[name] = "fitted"
                else:
                    c.values[name] = None
                    c.sources[name] = "unknown"
        r = self.placed.get(config.hash) if measured_clock else None
        if r is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.mtime))
            c.clock_mhz = float(r.fmax_mhz)
            c.clock_source = f"measured: nextpnr on the ECP5-85F ({r.path.name}, {when} UTC)"
        else:
            c.clock_mhz = assumed_clock_mhz
            c.clock_source = f"assumed: {assumed_clock_mhz:g} MHz ({assumed_clock_note})"
        return c


def synthesize(config: TesseraConfig, target: str, folder: Path | None = None,
               progress=None) -> Path:
    """Synthesize ``config``'s accelerator for ``target`` (``ecp5`` or ``sky130``) with
    ``tessera synth --json``, into ``folder`` (default :func:`cost_dir`) as
    ``HASH-TARGET.json``, unless that report exists and is of the hardware as it is now.
    Yosys only (no place and route): minutes for a 4x4 array. Its path.

    Raises
    ------
    CostError
        If the synthesis fails (its output is named).
    """
    if target not in COLUMNS:
        raise CostError(f"cost targets are {', '.join(COLUMNS)}, not {target!r}")
    folder = Path(folder) if folder else cost_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{config.hash}-{target}.json"
    known = _read_report(out) if out.exists() else None
    if known is not None and known.hw_version == source_hash():
        return out
    cfg = folder / "configs" / f"{config.hash}.json"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(config.to_json())
    log = folder / f"{config.hash}-{target}.log"
    if progress:
        progress(f"synthesizing {config.describe()} ({config.hash}) for {target}; log {log}")
    tessera = Path(sys.executable).with_name("tessera")
    argv = ([str(tessera)] if tessera.exists() else [sys.executable, "-m", "tessera.sw.cli"])
    with open(log, "w") as f:
        proc = subprocess.run(argv + ["synth", "--config", str(cfg), "--target", target,
                                      "--json", str(out)], stdout=f, stderr=subprocess.STDOUT,
                              env=os.environ.copy())
    if proc.returncode != 0 or not out.exists():
        raise CostError(f"synthesis of {config.hash} for {target} failed (exit status "
                        f"{proc.returncode}); log: {log}")
    return out


def reference_configs() -> list[TesseraConfig]:
    """The configurations of the reference reports (``make cost-reference``): arrays of
    2x2 to 16x16, a weight-stationary-only array, a wider bus, larger memories and fewer
    output lanes than columns (the 8x8 both ways), so that each feature of
    :data:`FEATURES` varies."""
    from ...hw.config import preset

    tiny, small = preset("tiny"), preset("small")
    return [tiny.replace(rows=2, cols=2), tiny, tiny.replace(dataflow="ws"),
            tiny.replace(bus_bits=128), tiny.replace(spad_kib=64, acc_kib=32),
            tiny.replace(rows=6, cols=6, spad_kib=32, acc_kib=16),
            tiny.replace(output_lanes=2), small, small.replace(output_lanes=small.cols),
            preset("default")]


def make_reference(targets=tuple(COLUMNS), progress=None, jobs: int = 1
                   ) -> tuple[list[Path], list[str]]:
    """Synthesize :func:`reference_configs` for ``targets`` (in the build folder's
    ``cost`` folder, where a report of this hardware is reused) and copy the reports into
    :data:`REFERENCE_DIR`, replacing those of other hardware; ``jobs`` syntheses at a time
    (each is one single-threaded Yosys). A synthesis that fails is named and the others
    go on. Returns the reports' paths (in the order of the configurations, then the
    targets) and the failures."""
    from concurrent.futures import ThreadPoolExecutor

    whole_number(jobs, "jobs")
    folder = REFERENCE_DIR
    folder.mkdir(exist_ok=True)
    work = [(config, target) for config in reference_configs() for target in targets]

    def one(item):
        config, target = item
        try:
            made = synthesize(config, target, progress=progress)
        except CostError as e:
            if progress:
                progress(f"  failed: {e}")
            return None, str(e)
        copy = folder / made.name
        copy.write_bytes(made.read_bytes())
        return copy, None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, work))
    return ([p for p, _ in results if p is not None],
            [e for _, e in results if e is not None])
