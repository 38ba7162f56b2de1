"""The protocol checkers of the simulated system (``sim/hdl/tessera_axi_checker.v`` on the
accelerator's AXI4 master, ``sim/hdl/tessera_axil_checker.v`` on its AXI4-Lite register
port): their rules, read from the Verilog (one definition), and the error the runtime
raises when a run broke one.

>>> RULES[12].name
'R_LAST'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .accel_system import CHECKERS

__all__ = ["Rule", "RULES", "rule_named", "ProtocolViolation"]


@dataclass(frozen=True)
class Rule:
    number: int
    name: str          # e.g. ``R_LAST``, ``LITE_B_UNASKED``
    description: str
    port: str          # ``AXI4`` (the memory master) or ``AXI4-Lite`` (the registers)


_RULE_LINE = re.compile(r"localparam \[7:0\] RULE_(\w+)\s*=\s*8'd(\d+);\s*//\s*(.+)$")


def _read_rules() -> dict[int, Rule]:
    rules = {}
    for path in CHECKERS:
        for line in path.read_text().splitlines():
            m = _RULE_LINE.search(line)
            if m:
                name, number, text = m.group(1), int(m.group(2)), m.group(3).strip()
                port = "AXI4-Lite" if name.startswith("LITE_") else "AXI4"
                text = text.removeprefix("AXI4-Lite: ")
                if number in rules:
                    raise RuntimeError(f"{path.name}: rule {number} is defined twice")
                rules[number] = Rule(number, name, text, port)
    return rules


#: Every rule of both checkers, by number.
RULES: dict[int, Rule] = _read_rules()


def rule_named(name: str) -> Rule:
    """The rule called ``name`` (e.g. ``"W_LAST"``)."""
    for r in RULES.values():
        if r.name == name:
            return r
    raise KeyError(f"no protocol rule {name!r}; the rules are "
                   f"{', '.join(r.name for r in RULES.values())}")


class ProtocolViolation(RuntimeError):
    """A run broke an AXI4 or AXI4-Lite rule on one of the accelerator's ports: its
    results cannot be trusted. ``rule`` (a :class:`Rule`), ``cycle`` (counted from the
    reset before the run) and ``addr`` (the request's address) say which and where."""

    def __init__(self, number: int, cycle: int, addr: int):
        self.rule = RULES.get(number, Rule(number, f"RULE_{number}", "unknown rule", "AXI4"))
        self.cycle, self.addr = cycle, addr
        port = ("the accelerator's memory master (AXI4)" if self.rule.port == "AXI4"
                else "the accelerator's register port (AXI4-Lite)")
        super().__init__(f"protocol violation on {port}: {self.rule.name} "
                         f"({self.rule.description}) in cycle {cycle}, address {addr:#x}")
