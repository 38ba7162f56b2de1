"""A sweep's results: the table (CSV and JSON), the Pareto fronts, the plots.

Plots are drawn with matplotlib's ``Agg`` backend (no display), each as PNG and SVG:

* ``pareto-WORKLOAD``: latency against area, every point that ran; the front joined;
  points re-run on RTL ringed, with the measured latency beside the predicted one;
* ``heatmap-WORKLOAD``: MAC utilization over two axes (the best over the other axes);
* ``breakdown-WORKLOAD``: each operation's cycles for the front's fastest points (and the
  baseline, when the specification names one).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

__all__ = ["pareto_front", "write_table", "draw_plots", "CSV_COLUMNS"]

#: The table's columns (the JSON form adds each point's per-operation figures).
CSV_COLUMNS = ["point", "workload", "config", "status", "message", "cycles", "useful_macs",
               "utilization", "useful_utilization", "bus_utilization", "clock_mhz",
               "clock_source", "latency_ms", "ecp5_lut4", "ecp5_ff", "ecp5_dsp", "ecp5_bram",
               "sky130_mm2", "sram_bits", "area", "area_source", "runs_per_s_per_mm2",
               "runs_per_s_per_klut", "pareto", "baseline", "rtl_status", "rtl_cycles",
               "model_error_pct"]


def pareto_front(items: list, x, y) -> list:
    """The items not dominated in minimising both ``x(item)`` and ``y(item)``: no other
    item is at most as large in both and smaller in one. In increasing ``x``."""
    ranked = sorted(items, key=lambda it: (x(it), y(it)))
    front, best_y = [], math.inf
    for it in ranked:
        if y(it) < best_y:
            front.append(it)
            best_y = y(it)
    return front


def write_table(rows: list[dict], axes: list[str], folder: Path) -> tuple[Path, Path]:
    """``results.csv`` (one row per point and workload) and ``results.json`` (the same,
    with each point's per-operation figures) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = CSV_COLUMNS[:3] + axes + CSV_COLUMNS[3:]
    csv_path = folder / "results.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in cols})
    json_path = folder / "results.json"
    json_path.write_text(json.dumps(rows, indent=1, sort_keys=True, default=str) + "\n")
    return csv_path, json_path


def _cell(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _save(fig, folder: Path, stem: str) -> list[Path]:
    out = []
    for ext in ("png", "svg"):
        p = folder / f"{stem}.{ext}"
        fig.savefig(p, dpi=120, bbox_inches="tight")
        out.append(p)
    return out


def _label(row: dict, axes: list[str]) -> str:
    return ", ".join(f"{a}={row[a]}" for a in axes)


def draw_plots(rows: list[dict], axes: list[str], workloads: list[str], folder: Path,
               heatmap: tuple | None = None, title: str = "") -> list[Path]:
    """The plots of the module docstring, for each workload; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    varied = [a for a in axes if len({r[a] for r in rows}) > 1]
    hm = heatmap or (tuple(varied[:2]) if len(varied) >= 2 else None)
    for wl in workloads:
        ok = [r for r in rows if r["workload"] == wl and r["status"] == "ok"
              and r.get("area") is not None]
        if not ok:
            continue
        # Pareto front of latency against area.
        fig, ax = plt.subplots(figsize=(7, 4.8))
        ax.scatter([r["area"] for r in ok], [r["latency_ms"] for r in ok], s=18,
                   color="0.65", label="points (model)")
        front = sorted((r for r in ok if r["pareto"]), key=lambda r: r["area"])
        ax.step([r["area"] for r in front], [r["latency_ms"] for r in front],
                where="post", color="C0", lw=1.2)
        ax.scatter([r["area"] for r in front], [r["latency_ms"] for r in front], s=30,
                   color="C0", label="Pareto front", zorder=3)
        for r in front[:6]:
            ax.annotate(_label(r, varied or axes), (r["area"], r["latency_ms"]),
                        fontsize=6, xytext=(4, 4), textcoords="offset points")
        base = [r for r in ok if r.get("baseline")]
        if base:
            ax.scatter([r["area"] for r in base], [r["latency_ms"] for r in base],
                       marker="s", s=50, facecolors="none", edgecolors="C3", zorder=4,
                       label="baseline")
        checked = [r for r in ok if r.get("rtl_cycles")]
        if checked:
            ax.scatter([r["area"] for r in checked], [r["latency_ms"] for r in checked],
                       s=110, facecolors="none", edgecolors="C2", lw=1.5, zorder=4,
                       label="re-run on RTL (model)")
            ax.scatter([r["area"] for r in checked],
                       [r["rtl_cycles"] / (r["clock_mhz"] * 1e3) for r in checked],
                       marker="x", s=40, color="C2", zorder=5, label="RTL measured")
        ax.set_xlabel(ok[0]["area_axis"])
        clocks = {r["clock_source"].split(" (")[0] for r in ok}
        ax.set_ylabel("latency, ms")
        ax.set_title((f"{title}: {wl}" if title else wl) + "\nclock: "
                     + ("; ".join(sorted(clocks)) if len(clocks) < 3 else "per point (table)"),
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written += _save(fig, folder, f"pareto-{wl}")
        plt.close(fig)

        # Utilization heat map over two axes (the best over the others).
        if hm:
            xa, ya = hm
            xs = sorted({r[xa] for r in rows}, key=_order)
            ys = sorted({r[ya] for r in rows}, key=_order)
            grid = [[math.nan] * len(xs) for _ in ys]
            for r in ok:
                i, j = ys.index(r[ya]), xs.index(r[xa])
                if math.isnan(grid[i][j]) or r["utilization"] > grid[i][j]:
                    grid[i][j] = r["utilization"]
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(xs), 1.2 + 0.7 * len(ys)))
            im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1,
                           aspect="auto")
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys])
            ax.set_xlabel(xa)
            ax.set_ylabel(ya)
            for i in range(len(ys)):
                for j in range(len(xs)):
                    v = grid[i][j]
                    ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center",
                            va="center", fontsize=7, color="w" if v != v or v < 0.6 else "k")
            fig.colorbar(im, ax=ax, label="MAC utilization")
            ax.set_title(f"MAC utilization: {wl}\n('-': refused or does not fit)",
                         fontsize=9)
            written += _save(fig, folder, f"heatmap-{wl}")
            plt.close(fig)

        # Per-operation breakdown of the fastest points of the front (and the baseline).
        best = sorted(front, key=lambda r: r["cycles"])[:4]
        best += [r for r in base if r not in best]
        ops = []
        for r in best:
            for op in r.get("ops", []):
                if op["op"] not in ops:
                    ops.append(op["op"])
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.55 * len(best)))
        left = [0.0] * len(best)
        for k, name in enumerate(ops):
            vals = [next((o["cycles"] for o in r.get("ops", []) if o["op"] == name), 0) / 1e6
                    for r in best]
            ax.barh(range(len(best)), vals, left=left, color=f"C{k % 10}", label=name)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        measured = [(i, r["rtl_cycles"] / 1e6) for i, r in enumerate(best) if r.get("rtl_cycles")]
        if measured:
            ax.scatter([m for _, m in measured], [i for i, _ in measured], marker="x",
                       color="k", s=50, zorder=4, label="RTL measured (total)")
        ax.set_yticks(range(len(best)), [("baseline: " if r.get("baseline") else "")
                                         + _label(r, varied or axes) for r in best],
                      fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("cycles (millions), by operation")
        ax.set_title(f"per-operation cycles: {wl}", fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="lower right")
        written += _save(fig, folder, f"breakdown-{wl}")
        plt.close(fig)
    return written


def _order(v):
    return (0, v) if isinstance(v, int | float) else (1, str(v))
