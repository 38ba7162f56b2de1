"""High-fanout flip-flops replicated, on the netlist nextpnr places.

A register that enables or selects thousands of cells (the output path's lock-step
``advance``, a slice's read pointer) is one flip-flop with one net: wherever nextpnr puts
it, some of its loads are across the chip, and the route to them is most of the cycle
(10 to 14 ns of the tiny design's worst paths on the speed-6 ECP5). Commercial flows
replicate such registers (a maximum fanout); Yosys and nextpnr do not, so
:func:`replicate_flip_flops` does it on the netlist:

* a ``TRELLIS_FF`` whose output feeds more than ``max_fanout`` cells gets copies, with the
  same input, clock, enable, reset and parameters (so every copy holds the same value in
  every cycle: the same logic), until each drives at most ``max_fanout`` cells;
* its loads are shared out in groups of cells that are likely to be placed together: by
  the unit their name says they belong to, then in the order of their names within it.
  A flattened cell's name is its hierarchy's when Yosys's ``autoname`` named it (``tessera
  synth``); a cell left with a number for a name (``$abc$...``, the board build's flow)
  goes by a net of the design it drives, else one it reads. nextpnr places each copy near
  its group.

What it costs: the copies' flip-flops, and a wider fanout of each replicated register's
input (from one flip-flop to one per group): the route from the input's logic to a far
copy replaces the route from the one register to its far loads, with that logic before it
instead of after.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from .netlist import NetIndex

__all__ = ["ReplicationStats", "replicate_flip_flops", "DEFAULT_MAX_FANOUT"]

#: The most cells a flip-flop drives after :func:`replicate_flip_flops`, unless told.
DEFAULT_MAX_FANOUT = 64

_NUMBER = re.compile(r"(\d+)")


def _natural(name: str):
    """A sort key that orders ``lane_2`` before ``lane_10``."""
    return [int(p) if p.isdigit() else p for p in _NUMBER.split(name)]


def _levels(name: str) -> list[str]:
    return name.lstrip("\\").split(".")


@dataclass
class ReplicationStats:
    """What :func:`replicate_flip_flops` did."""
    max_fanout: int
    replicated: int = 0                 # flip-flops that got copies
    copies: int = 0                     # flip-flops added
    largest: list = field(default_factory=list)     # (fanout, net name), the largest first

    def to_dict(self) -> dict:
        """The figures a report records (``tessera synth --pnr``)."""
        return {"max_fanout": self.max_fanout, "replicated": self.replicated,
                "copies": self.copies, "largest": [list(x) for x in self.largest],
                "summary": self.summary()}

    def summary(self) -> str:
        if not self.replicated:
            return f"no flip-flop drives more than {self.max_fanout} cells"
        top = ", ".join(f"{name} ({n})" for n, name in self.largest[:3])
        return (f"{self.replicated} flip-flops driving more than {self.max_fanout} cells "
                f"replicated ({self.copies} copies); the largest: {top}")


def _groups(keys: dict[str, str], max_fanout: int) -> list[list[str]]:
    """The loads (``keys``: cell -> the hierarchical name it goes by) cut into groups of at
    most ``max_fanout``: by unit (the first level below what all the names share), then in
    name order; each unit's remainder shares a group with the next units' ones."""
    levels = {c: _levels(k) for c, k in keys.items()}
    first = next(iter(levels.values()))
    common = 0
    while all(len(v) > common + 1 and v[common] == first[common] for v in levels.values()):
        common += 1
    by_unit = defaultdict(list)
    for cell, lv in levels.items():
        by_unit[".".join(lv[:common + 1])].append(cell)
    groups, rest = [], []
    for u in sorted(by_unit, key=_natural):
        cells = sorted(by_unit[u], key=lambda c: (_natural(keys[c]), _natural(c)))
        whole = len(cells) - len(cells) % max_fanout
        groups += [cells[i:i + max_fanout] for i in range(0, whole, max_fanout)]
        rest += cells[whole:]
    return groups + [rest[i:i + max_fanout] for i in range(0, len(rest), max_fanout)]


def replicate_flip_flops(netlist: dict, top: str,
                         max_fanout: int = DEFAULT_MAX_FANOUT) -> ReplicationStats:
    """Give every ``TRELLIS_FF`` of module ``top`` of ``netlist`` (Yosys JSON, flattened,
    after ``synth_ecp5``) that drives more than ``max_fanout`` cells copies that share its
    loads, in place (the module docstring says how). The module's ports stay on the
    original. Returns what was done."""
    if max_fanout < 2:
        raise ValueError(f"max_fanout is at least 2, not {max_fanout}")
    module = netlist["modules"][top]
    cells, netnames = module["cells"], module["netnames"]
    nets = NetIndex(module, ports=True)
    names, public = {}, {}          # bit -> a net name; a name of the design's own nets
    for net, info in netnames.items():
        for b in info["bits"]:
            if not isinstance(b, str):
                names.setdefault(b, net)
                if not net.startswith("$"):
                    public.setdefault(b, net)

    def key(cell: str, q) -> str:
        """The hierarchical name ``cell`` goes by (see the module docstring)."""
        if not cell.startswith("$"):
            return cell
        c = cells[cell]
        for output in (True, False):
            for port, bits in c["connections"].items():
                if (c["port_directions"].get(port) == "output") == output:
                    for b in bits:
                        if b != q and b in public:
                            return public[b]
        return cell
    next_bit = 1 + max((b for b in list(nets.driver) + list(nets.loads)), default=1)
    stats = ReplicationStats(max_fanout)
    for name in sorted(n for n, c in cells.items() if c["type"] == "TRELLIS_FF"):
        cell = cells[name]
        q = cell["connections"]["Q"][0]
        if isinstance(q, str):
            continue
        by_cell = defaultdict(list)             # load cell -> its ports on q
        for load, port in nets.loads.get(q, []):
            if load != "$port":
                by_cell[load].append(port)
        if len(by_cell) <= max_fanout:
            continue
        groups = _groups({c: key(c, q) for c in by_cell}, max_fanout)
        stats.replicated += 1
        label = public.get(q) or names.get(q, name)
        stats.largest.append((len(by_cell), label))
        # The first group stays on the original (with the module's ports, if any).
        for k, group in enumerate(groups[1:], 1):
            bit, next_bit = next_bit, next_bit + 1
            copy_name = f"{name}$rep{k}"
            copy = {f: (dict(v) if isinstance(v, dict) else v) for f, v in cell.items()}
            copy["connections"] = {p: list(b) for p, b in cell["connections"].items()}
            copy["connections"]["Q"] = [bit]
            cells[copy_name] = copy
            for p, bits in copy["connections"].items():
                if copy["port_directions"].get(p) != "output":
                    for b in bits:
                        if not isinstance(b, str):
                            nets.loads[b].append((copy_name, p))
            nets.driver[bit] = (copy_name, "Q")
            # (a net's name must not be a cell's: Yosys reads them into one namespace)
            net_name = f"{label}$rep{k}"
            if net_name in netnames or net_name in cells:
                net_name = f"{copy_name}$q"
            netnames[net_name] = {"hide_name": 0, "bits": [bit], "attributes": {}}
            for load in group:
                conn = cells[load]["connections"]
                for port in by_cell[load]:
                    conn[port] = [bit if b == q else b for b in conn[port]]
                    nets.drop_load(q, load, port)
                    nets.loads[bit].append((load, port))
            stats.copies += 1
    stats.largest.sort(reverse=True)
    stats.largest = stats.largest[:10]
    return stats
