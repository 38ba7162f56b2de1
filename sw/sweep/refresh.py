"""``python -m tessera.sw.sweep.refresh [--targets ecp5,sky130] [--jobs N]``
(``make cost-reference``): synthesize the cost model's reference configurations, two at a
time by default, and write their reports into ``sw/sweep/reference/``
(:func:`tessera.sw.sweep.cost.make_reference`)."""

from __future__ import annotations

import argparse
import os

from .cost import COLUMNS, make_reference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Synthesize the cost model's reference "
                                     "configurations into sw/sweep/reference/.")
    parser.add_argument("--targets", default=",".join(COLUMNS),
                        help="comma-separated: ecp5, sky130 (default: both)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="syntheses at a time (default: 2, or 1 on one core); each "
                             "Yosys uses one core and up to a few GiB")
    args = parser.parse_args(argv)
    targets = args.targets.split(",")
    unknown = [t for t in targets if t not in COLUMNS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; choose from {', '.join(COLUMNS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    made, failed = make_reference(targets, progress=lambda line: print(line, flush=True),
                                  jobs=args.jobs)
    for path in made:
        print(path)
    for message in failed:
        print(f"failed: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
