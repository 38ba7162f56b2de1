"""``tessera sweep``: a design-space sweep from a specification to a table and plots.

1. The specification's axes expand into configurations (:func:`~.spec.expand`); those
   the configuration refuses are reported, those the constraints exclude are counted.
2. Each configuration's cost (:class:`~.cost.CostModel`): measured where synthesized,
   fitted else, with the fit's leave-one-out error; its clock, measured or assumed.
3. Every configuration x workload is evaluated on the specification's backend (the
   performance model by default) as a Dask task (:class:`~.execute.Executor`).
4. The Pareto front of latency against area per workload; its points (or as many as
   ``recheck`` says) are run again on RTL, and the model's error is reported beside them.
5. The table and the plots (:mod:`~.results`) in the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from .cost import REFERENCE_DIR, CostModel
from .execute import Executor, PointCache, code_version, point_key
from .results import draw_plots, pareto_front, write_table
from .spec import SweepSpec, expand

__all__ = ["run_sweep", "format_summary", "DEFAULT_CLOCK_MHZ", "DEFAULT_CLOCK_NOTE"]

#: The clock a latency uses where no placed report of the configuration exists: the
#: slowest unit placed alone after the timing work (the DMA, docs/physical.md); the whole
#: accelerator has not been placed since, so this is an upper bound, named as assumed.
DEFAULT_CLOCK_MHZ = 68.7
DEFAULT_CLOCK_NOTE = ("no placed report of this configuration; the slowest unit placed alone "
                      "on the ECP5-85F after the timing work, the DMA, docs/physical.md")


def _job(point, workload, backend: str, version: str, seed: int) -> dict:
    wl = workload.to_dict()
    ident = {"config": point.config.hash, "mem_latency": point.mem_latency,
             "workload": wl, "backend": backend, "version": version, "seed": seed}
    return {"key": point_key(point.config, point.mem_latency, wl, backend, version, seed),
            "ident": ident,
            "args": (point.config.to_dict(), point.mem_latency, wl, backend, seed)}


def run_sweep(spec: SweepSpec, *, output: Path | None = None, scheduler: str | None = None,
              workers: int | None = None, recheck=None, progress=None,
              cost_folders=None, cost_reference=REFERENCE_DIR) -> dict:
    """Run the sweep ``spec``; write the table and plots into ``output`` (default: the
    specification's, else ``build/sweep-NAME``). ``recheck`` overrides the
    specification's. ``cost_folders``, ``cost_reference``: where the costs come from
    (:class:`~tessera.sw.sweep.cost.CostModel`). The summary as a dict
    (:func:`format_summary`)."""
    say = progress or (lambda _: None)
    t0 = time.time()
    if output is None:
        from ...sim.runner import build_root

        output = spec.output or build_root() / f"sweep-{spec.name}"
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    recheck = spec.recheck if recheck is None else recheck
    points, excluded = expand(spec)
    valid = [p for p in points if p.config is not None]
    say(f"{spec.name}: {len(points)} configuration(s) ({len(points) - len(valid)} refused, "
        f"{excluded} left out by the constraints) x {len(spec.workloads)} workload(s), on "
        f"the {spec.backend} backend")
    for p in points:
        if p.error:
            say(f"  refused: {p.label}: {p.error}")

    costs_model = CostModel(cost_folders, cost_reference)
    loo = costs_model.loo()
    clock = spec.clock_mhz or DEFAULT_CLOCK_MHZ
    note = spec.clock_note or (DEFAULT_CLOCK_NOTE if spec.clock_mhz is None
                               else "given by the specification")
    # A clock named by the specification holds for every point (one clock to compare
    # at); else each point's measured clock where it was placed, the assumed one else.
    costs = {p.index: costs_model.cost(p.config, clock, note, spec.clock_mhz is None)
             for p in valid}

    version = code_version(spec.backend)
    cache = PointCache(output / "cache")
    jobs = {(p.index, w.name): _job(p, w, spec.backend, version, spec.seed)
            for p in valid for w in spec.workloads}
    with Executor(cache, scheduler, workers or spec.workers, say) as ex:
        results = ex.run(list(jobs.values()), f"{spec.backend} backend")
        computed = ex.computed
        rtl_computed = 0
        rows = _rows(spec, points, jobs, results, costs)
        area = _choose_area(rows)
        fronts = _fronts(rows, spec)
        chosen = _recheck_choice(rows, fronts, recheck)
        rtl = {}
        rtl_note = None
        if chosen and spec.backend == spec.rtl_backend:
            rtl_note = f"the sweep ran on {spec.backend} itself: nothing to re-check"
        elif chosen:
            rtl_version = code_version(spec.rtl_backend)
            rtl_jobs = {}
            for r in chosen:
                p = points[r["point"]]
                w = next(w for w in spec.workloads if w.name == r["workload"])
                rtl_jobs[(p.index, w.name)] = _job(p, w, spec.rtl_backend, rtl_version,
                                                   spec.seed)
            res = ex.run(list(rtl_jobs.values()), f"re-run on {spec.rtl_backend}",
                         parallel=spec.rtl_parallel)
            rtl = {k: res[j["key"]] for k, j in rtl_jobs.items()}
            rtl_computed = ex.computed
    for r in rows:
        got = rtl.get((r["point"], r["workload"]))
        if got is None:
            continue
        r["rtl_status"] = got["status"] if got["status"] != "ok" else \
            f"ok ({spec.rtl_backend})"
        if got["status"] == "ok":
            r["rtl_cycles"] = got["cycles"]
            r["model_error_pct"] = (r["cycles"] - got["cycles"]) / got["cycles"] * 100
            r["rtl_ops"] = got["ops"]
        else:
            r["rtl_status"] = f"{got['status']}: {got['message']}"

    axes = list(spec.axes)
    csv_path, json_path = write_table(rows, axes, output)
    plots = draw_plots(rows, axes, [w.name for w in spec.workloads], output / "plots",
                       spec.heatmap, spec.name)
    summary = {"name": spec.name, "backend": spec.backend, "output": str(output),
               "points": len(points), "refused": len(points) - len(valid),
               "excluded": excluded, "workloads": [w.to_dict() for w in spec.workloads],
               "evaluations": len(jobs), "computed": computed,
               "cached": len(jobs) - computed, "rtl_rechecked": len(rtl),
               "rtl_computed": rtl_computed,
               "rtl_note": rtl_note, "cost_fit": _loo_summary(loo),
               "synthesized": {t: len(costs_model.synthesized(t)) for t in ("ecp5", "sky130")},
               "stale_reports": [str(p) for p in costs_model.stale],
               "area": area, "clock": {"assumed_mhz": clock, "note": note, "sources": sorted(
                   {r["clock_source"] for r in rows if r.get("clock_source")})},
               "fronts": fronts, "findings": _findings(rows, spec),
               "rtl": [{"workload": r["workload"], "axes": {a: r[a] for a in spec.axes},
                        "config": r["config"], "model_cycles": r["cycles"],
                        "rtl_cycles": r.get("rtl_cycles"), "rtl_status": r["rtl_status"],
                        "model_error_pct": r.get("model_error_pct")}
                       for r in rows if r.get("rtl_status")],
               "table": [str(csv_path), str(json_path)], "plots": [str(p) for p in plots],
               "wall_seconds": round(time.time() - t0, 1)}
    (output / "summary.json").write_text(__import__("json").dumps(summary, indent=1,
                                                                  default=str) + "\n")
    return summary


def _rows(spec, points, jobs, results, costs) -> list[dict]:
    """One row per point and workload (refused points too, with the reason)."""
    rows = []
    base_axes = spec.baseline or {}
    for p in points:
        for w in spec.workloads:
            row = {"point": p.index, "workload": w.name, **p.axes,
                   "config": p.config.hash if p.config else None,
                   "baseline": bool(base_axes) and all(p.axes.get(k) == v
                                                       for k, v in base_axes.items())}
            if p.config is None:
                row.update(status="refused", message=p.error)
                rows.append(row)
                continue
            res = results[jobs[(p.index, w.name)]["key"]]
            cost = costs[p.index]
            row.update(cost.row())
            um2 = row.pop("sky130_um2", None)
            row["sky130_mm2"] = um2 / 1e6 if um2 is not None else None
            row["status"] = res["status"]
            row["message"] = res.get("message")
            if res["status"] == "ok":
                c = p.config
                cyc = res["cycles"]
                cnt = res["counters"]
                moved = cnt.get("bytes_read", 0) + cnt.get("bytes_written", 0)
                row.update({
                    "cycles": cyc, "useful_macs": res["useful_macs"],
                    "utilization": cnt.get("macs", 0) / (cyc * c.rows * c.cols),
                    "useful_utilization": res["useful_macs"] / (cyc * c.rows * c.cols),
                    "bus_utilization": moved / (cyc * c.bus_bytes),
                    "latency_ms": cyc / (row["clock_mhz"] * 1e3),
                    "ops": res["ops"], "counters": cnt, "commands": res["commands"]})
                lat_s = row["latency_ms"] / 1e3
                if row.get("sky130_mm2"):
                    row["runs_per_s_per_mm2"] = 1 / lat_s / row["sky130_mm2"]
                if row.get("ecp5_lut4"):
                    row["runs_per_s_per_klut"] = 1 / lat_s / (row["ecp5_lut4"] / 1e3)
            rows.append(row)
    return rows


#: The area a front is drawn against: the first known for every point that ran.
AREAS = (("sky130_mm2", "sky130 standard-cell area, mm² (memories not included)", 1.0),
         ("ecp5_lut4", "ECP5 LUT4, thousands", 1e-3))


def _choose_area(rows) -> str | None:
    """Set each row's ``area`` from the first of :data:`AREAS` known for every point
    that ran; its description (None: no area is known, no front)."""
    ok = [r for r in rows if r["status"] == "ok"]
    for key, what, scale in AREAS:
        if ok and all(r.get(key) is not None for r in ok):
            for r in rows:
                r["area"] = r[key] * scale if r.get(key) is not None else None
                r["area_axis"] = what
            return what
    return None


def _fronts(rows, spec) -> dict:
    """Per workload, the Pareto front (latency against area) as a list of its points;
    each front row gets ``pareto`` set."""
    fronts = {}
    for w in spec.workloads:
        ok = [r for r in rows if r["workload"] == w.name and r["status"] == "ok"
              and r.get("area") is not None]
        front = pareto_front(ok, lambda r: r["area"], lambda r: r["latency_ms"])
        for r in rows:
            if r["workload"] == w.name:
                r["pareto"] = r in front
        fronts[w.name] = [{"point": r["point"], "axes": {a: r[a] for a in spec.axes},
                           "config": r["config"], "cycles": r["cycles"],
                           "latency_ms": r["latency_ms"], "area": r["area"],
                           "utilization": r["utilization"]} for r in front]
    return fronts


def _recheck_choice(rows, fronts, recheck) -> list[dict]:
    """The rows to run again on RTL: the front of each workload (``pareto``), or the
    ``n`` fastest of each (front first), and the baseline's; or none."""
    if recheck == "none" or recheck == 0:
        return []
    chosen = []
    for wl in fronts:
        chosen += [r for r in rows if r["workload"] == wl and r.get("baseline")
                   and r["status"] == "ok" and not r.get("pareto")]
        front = sorted((r for r in rows if r["workload"] == wl and r.get("pareto")),
                       key=lambda r: r["cycles"])
        if recheck == "pareto":
            chosen += front
            continue
        rest = sorted((r for r in rows if r["workload"] == wl and r["status"] == "ok"
                       and not r.get("pareto")), key=lambda r: r["cycles"])
        chosen += (front + rest)[:recheck]
    return chosen


def _findings(rows, spec) -> dict:
    """Per workload: the fastest point, and against the baseline (if any) its cycles'
    reduction."""
    out = {}
    for w in spec.workloads:
        ok = [r for r in rows if r["workload"] == w.name and r["status"] == "ok"]
        unfit = sum(r["status"] == "unfit" for r in rows if r["workload"] == w.name)
        if not ok:
            out[w.name] = {"fastest": None, "unfit": unfit, "why": sorted(
                {r["message"] for r in rows if r["workload"] == w.name and r.get("message")})}
            continue
        best = min(ok, key=lambda r: r["cycles"])
        f = {"fastest": {a: best[a] for a in spec.axes}, "fastest_cycles": best["cycles"],
             "fastest_utilization": best["utilization"], "unfit": unfit}
        base = [r for r in ok if r.get("baseline")]
        if base:
            b = min(base, key=lambda r: r["cycles"])
            f["baseline_cycles"] = b["cycles"]
            f["reduction_pct"] = (b["cycles"] - best["cycles"]) / b["cycles"] * 100
            f["speedup"] = b["cycles"] / best["cycles"]
        out[w.name] = f
    return out


def _loo_summary(loo: dict) -> dict:
    return {k: {"points": v["points"], "features": v["features"],
                "mean_abs_pct": v["mean_abs_pct"], "max_abs_pct": v["max_abs_pct"]}
            for k, v in loo.items()}


def format_summary(s: dict) -> str:
    """The summary as text: what ran, each workload's front, the findings, the files."""
    lines = [f"sweep {s['name']}: {s['points']} configuration(s) ({s['refused']} refused, "
             f"{s['excluded']} left out by the constraints), {s['evaluations']} evaluations "
             f"on the {s['backend']} backend ({s['computed']} computed, {s['cached']} from the "
             f"cache), {s['rtl_rechecked']} re-run on RTL ({s['rtl_computed']} computed, "
             f"{s['rtl_rechecked'] - s['rtl_computed']} from the cache); "
             f"{s['wall_seconds']} s"]
    if s.get("rtl_note"):
        lines.append(f"  {s['rtl_note']}")
    fit = s["cost_fit"]
    lines.append(f"cost: synthesized configurations: {s['synthesized']['ecp5']} (ECP5), "
                 f"{s['synthesized']['sky130']} (sky130); others fitted, leave-one-out error:")
    for k, v in fit.items():
        lines.append(f"  {k:12} {v['points']} points, mean {v['mean_abs_pct']:.1f}%, max "
                     f"{v['max_abs_pct']:.1f}% (features {', '.join(v['features'][1:])})")
    if not fit:
        lines.append("  (too few synthesized configurations to measure a fit's error)")
    if s.get("stale_reports"):
        lines.append(f"  left out: {len(s['stale_reports'])} report(s) of earlier hardware "
                     f"(synthesize again: tessera synth --json, or make cost-reference)")
    for wl, front in s["fronts"].items():
        f = s["findings"][wl]
        lines.append(f"{wl}: Pareto front (latency against {s['area'] or 'no known area'}), "
                     f"{f.get('unfit', 0)} point(s) did not fit")
        for r in front:
            ax = ", ".join(f"{k}={v}" for k, v in r["axes"].items())
            lines.append(f"  {ax:50} {r['cycles']:>14,} cycles {r['latency_ms']:>10.3f} ms "
                         f"{r['area']:>8.3f} area  util {r['utilization']:.3f}")
        if not f.get("fastest"):
            lines.append("  no point runs it: " + "; ".join(f.get("why", []))[:600])
        if f.get("fastest"):
            ax = ", ".join(f"{k}={v}" for k, v in f["fastest"].items())
            line = f"  fastest: {ax}: {f['fastest_cycles']:,} cycles"
            if "reduction_pct" in f:
                line += (f"; {f['reduction_pct']:.1f}% fewer cycles than the baseline "
                         f"({f['baseline_cycles']:,}), {f['speedup']:.2f}x")
            lines.append(line)
    if s.get("rtl"):
        lines.append(f"re-run on RTL ({len(s['rtl'])}): the model's cycles against the "
                     f"measured ones")
        for r in s["rtl"]:
            ax = ", ".join(f"{k}={v}" for k, v in r["axes"].items())
            if r["rtl_cycles"]:
                lines.append(f"  {r['workload']:24} {ax:36} model {r['model_cycles']:>12,} "
                             f"RTL {r['rtl_cycles']:>12,} ({r['model_error_pct']:+.2f}%)")
            else:
                lines.append(f"  {r['workload']:24} {ax:36} {r['rtl_status'][:200]}")
    lines.append("latency at each point's clock: " + "; ".join(s["clock"]["sources"]))
    lines.append(f"table: {', '.join(s['table'])}")
    lines.append(f"plots: {len(s['plots'])} files in {Path(s['output']) / 'plots'}")
    return "\n".join(lines)
