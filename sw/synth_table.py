"""The documentation's table of synthesis figures, written from ``tessera synth --json``
reports (``make synth-report``).

``python -m tessera.sw.synth_table REPORT.json ... --docs docs/physical.md`` replaces the
text between the markers ``<!-- synth-report:begin -->`` and ``<!-- synth-report:end -->``
with one table per target: a row per report, named by the report file
(``synth-<preset>-<target>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .synth import TARGETS, ecp5_logic, fit_verdict

__all__ = ["BEGIN", "END", "tables", "replace_between_markers", "main"]

BEGIN = "<!-- synth-report:begin -->"
END = "<!-- synth-report:end -->"


def _name(path: Path) -> str:
    """``synth-tiny-ecp5.json``: ``tiny``."""
    parts = path.stem.split("-")
    return "-".join(parts[1:-1]) if len(parts) >= 3 and parts[0] == "synth" else path.stem


def _clock(timing: dict) -> str:
    if not timing or timing.get("fmax_mhz") is None:
        return "not placed"
    how = "routed" if timing.get("routed") else "after placement"
    text = f"{timing['fmax_mhz']:.1f} MHz ({how})"
    if timing.get("path_units"):
        text += f"; critical path: {' -> '.join(timing['path_units'])}"
    return text


def _mapper(r: dict) -> str:
    """A note for a whole design whose LUTs the classic ABC mapped (see ``synth.py``)."""
    mapper = r.get("lut_mapper", "")
    return " (classic LUT mapping)" if mapper and not mapper.startswith("the target") else ""


def _ecp5_row(name: str, r: dict) -> str:
    t, target = r["total"], r["target"]
    cap = TARGETS[target]["capacity"]

    def part(col: str) -> str:
        n = t.get(col, 0)
        return f"{n:,} of {cap[col]:,}" if col in ("DSP", "BRAM") and col in cap else f"{n:,}"

    if target == "ecp5":
        logic = ecp5_logic(t)
        sites = f"{logic:,} ({logic / cap['logic']:.0%})"
    else:
        sites = f"{t.get('LUT4', 0):,} ({t.get('LUT4', 0) / cap['LUT4']:.0%})"
    return (f"| {name} | {sites} | {t.get('LUT4', 0):,} | {t.get('carry', 0):,} | "
            f"{t.get('FF', 0):,} | {part('DSP')} | {part('BRAM')} | "
            f"{fit_verdict(target, t)} | {_clock(r.get('timing', {}))}{_mapper(r)} |")


def _sky130_row(name: str, r: dict) -> str:
    t = r["total"]
    # A whole ABC could not map, estimated from its units (``synth.whole_from_units``).
    est = " (estimated from its units)" if r.get("whole_estimate") else ""
    return (f"| {name}{est} | {t.get('cells', 0):,} | {t.get('FF', 0):,} | "
            f"{t.get('area um2', 0) / 1e6:.2f} | {t.get('SRAM bits', 0):,} |")


def tables(reports) -> str:
    """Markdown tables of ``reports`` (``(name, SynthReport.to_dict())`` pairs, or a dict
    of them), one per target, in the order given."""
    out = []
    by_target: dict[str, list[tuple[str, dict]]] = {}
    for name, r in (reports.items() if isinstance(reports, dict) else reports):
        by_target.setdefault(r["target"], []).append((name, r))
    for target, rows in by_target.items():
        device = rows[0][1].get("device", target)
        out.append(f"**{device}** (`tessera synth --target {target}`)\n")
        if target == "sky130":
            out.append("| preset | cells | FF | cell area mm² | SRAM bits |")
            out.append("|---|---|---|---|---|")
            out += [_sky130_row(n, r) for n, r in rows]
        elif target in ("ecp5", "ice40"):
            out.append("| preset | LUT4 sites (share) | LUT4 | carry | FF | DSP | BRAM | fits "
                       "| clock |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            out += [_ecp5_row(n, r) for n, r in rows]
        else:
            cols = list(rows[0][1]["total"])
            out.append("| preset | " + " | ".join(cols) + " |")
            out.append("|---" * (len(cols) + 1) + "|")
            out += [f"| {n} | " + " | ".join(f"{r['total'].get(c, 0):,}" for c in cols) + " |"
                    for n, r in rows]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with what lies between :data:`BEGIN` and :data:`END` replaced by ``body``.

    Raises
    ------
    ValueError
        If the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the document needs the markers {BEGIN} and {END}, in that order")
    return text[:start + len(BEGIN)] + "\n" + body + text[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tessera.sw.synth_table",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="tessera synth --json files")
    ap.add_argument("--docs", type=Path, help="the document to update between its markers "
                    "(else the tables are printed)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.reports if not p.exists()]
    if missing:
        print(f"error: no such report: {', '.join(missing)}", file=sys.stderr)
        return 2
    # A preset may come once per target (synth-tiny-ecp5.json, synth-tiny-sky130.json).
    reports = [(_name(p), json.loads(p.read_text())) for p in args.reports]
    body = tables(reports)
    if args.docs is None:
        print(body, end="")
        return 0
    try:
        args.docs.write_text(replace_between_markers(args.docs.read_text(), body))
    except ValueError as e:
        print(f"error: {args.docs}: {e}", file=sys.stderr)
        return 2
    print(f"updated {args.docs} from {len(reports)} report(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
