"""``python -m tessera.sw.sweep.refresh [--targets ecp5,sky130]`` (``make cost-reference``):
synthesize the cost model's reference configurations and write their reports into
``sw/sweep/reference/`` (:func:`tessera.sw.sweep.cost.make_reference`)."""

from __future__ import annotations

import argparse

from .cost import COLUMNS, make_reference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Synthesize the cost model's reference "
                                     "configurations into sw/sweep/reference/.")
    parser.add_argument("--targets", default=",".join(COLUMNS),
                        help="comma-separated: ecp5, sky130 (default: both)")
    args = parser.parse_args(argv)
    targets = args.targets.split(",")
    unknown = [t for t in targets if t not in COLUMNS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; choose from {', '.join(COLUMNS)}")
    made, failed = make_reference(targets, progress=print)
    for path in made:
        print(path)
    for message in failed:
        print(f"failed: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
