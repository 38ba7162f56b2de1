"""The slow paths of a synthesized ECP5 netlist, ranked before placement.

nextpnr names one critical path per routed run, and a run of the whole accelerator takes
half an hour. :func:`estimate_paths` reads the netlist Yosys wrote for nextpnr
(``wrapped.json``) and, in seconds, estimates every register-to-register path's delay
with typical ECP5 (speed 6) cell delays and a routing delay per net that grows with its
fanout, then groups the endpoints that miss a clock period by the unit and signal their
worst path starts from and the unit it ends in. It is a ranking of what to pipeline next,
not a timing sign-off: placement decides the routing, which is most of a slow path's
delay on this device (two thirds to four fifths in the routed reports so far), and the
block RAM and DSP delays are typical values.

After a routed run, :func:`read_routed_arrivals` reads nextpnr's detailed timing report
(``pnr.json``, written with ``--detailed-timing-report``: the routed arrival time at every
endpoint, keyed by the net that feeds it) and :func:`estimate_paths` takes each endpoint's
routed arrival instead of its estimate: which endpoints miss the clock, and by how much,
are then nextpnr's own figures. The path to each (its start, the signals along it) is
still traced through the netlist with the typical delays, so a group's start is the
likeliest one, not necessarily the one nextpnr timed.

The same report also says what kind of input the late endpoints are (:func:`late_pins`:
clock enables, data, LUT RAM write enables, ...) and which wide nets reach theirs late
(:func:`late_fanouts`: a net of many loads whose latest load is over the period, with the
spread of its loads' arrivals, which is the routing of its tree). On the tiny accelerator
most late endpoints are clock enables of wide registers, fed by a handshake's LUT
(``docs/physical.md``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .netlist import NetIndex
from .synth import _unit_of_net as _unit

__all__ = ["DELAYS", "PathGroup", "PathEstimate", "estimate_paths", "format_paths",
           "read_routed_arrivals", "read_report", "LateFanout", "late_pins", "late_fanouts",
           "format_late"]

#: Typical delays, ns (ECP5 speed 6; the logic ones as nextpnr's routed reports give them).
DELAYS = {
    "clk_to_q": 0.52,        # TRELLIS_FF
    "setup": 0.42,
    "lut": 0.24,             # LUT4 input -> output
    "mux_data": 0.17,        # PFUMX / L6MUX21 data input -> output
    "mux_select": 0.26,
    "carry_in": 0.45,        # CCU2C: an operand -> its sum or the carry out
    "carry_through": 0.07,   # CCU2C: carry in -> carry out (two bits)
    "carry_sum": 0.30,       # CCU2C: carry in -> sum
    "lutram_read": 0.60,     # TRELLIS_DPR16X4: read address -> data
    "bram_clk_to_out": 4.0,  # DP16KD without its output register
    "dsp": 4.0,              # MULT18X18D without registers: operand -> product
    "dsp_clk_to_out": 0.74,  # MULT18X18D with its product's register: clock -> product
    "route": 0.8,            # a net of fanout 1 ...
    "route_per_fanout": 0.25,  # ... plus this per doubling of its fanout
}

#: Where Yosys's ``autoname`` starts a derived name (``x_LUT4_Z_C...``): what comes before
#: is the signal of the design it was named after.
_AUTONAME = re.compile(r"_(?:LUT4|CCU2C|PFUMX|L6MUX21|TRELLIS_[A-Z0-9]+|DP16KD|MULT18X18D)(?:_|$)")

#: Cell input ports whose nets are dedicated wires (no general routing).
_DEDICATED = {("CCU2C", "CIN"), ("PFUMX", "ALUT"), ("PFUMX", "BLUT"), ("L6MUX21", "D0"),
              ("L6MUX21", "D1")}
#: Endpoints: the inputs a clock edge samples.
_ENDPOINTS = {"TRELLIS_FF": ("DI", "LSR", "CE"), "TRELLIS_DPR16X4": ("DI", "WAD", "WRE")}


@dataclass
class PathGroup:
    """The endpoints whose worst path starts at ``start_signal`` (in ``start_unit``) and
    ends in ``end_unit``: how many miss the period, the worst delay, its cells and the
    units it crosses, and one endpoint's signal."""

    start_unit: str
    end_unit: str
    start_signal: str
    endpoints: int = 0
    worst_ns: float = 0.0
    cells: int = 0
    units: list = field(default_factory=list)
    example: str = ""
    #: The named signals along the worst path, start to end (what to pipeline).
    through: list = field(default_factory=list)


@dataclass
class PathEstimate:
    period_ns: float
    endpoints: int
    failing: int
    worst_ns: float
    groups: list
    #: The share of the endpoints whose time is nextpnr's routed arrival (0: an estimate
    #: before placement).
    routed_share: float = 0.0

    def to_dict(self) -> dict:
        return {"period_ns": self.period_ns, "endpoints": self.endpoints,
                "failing": self.failing, "worst_ns": round(self.worst_ns, 2),
                "routed_share": round(self.routed_share, 3),
                "groups": [g.__dict__ for g in self.groups]}


def read_report(report) -> dict:
    """nextpnr's JSON report: ``report`` read from its path, or already read (a dict)."""
    return report if isinstance(report, dict) else json.loads(Path(report).read_text())


def _clocked_endpoints(data: dict):
    """(net, endpoint, latest arrival ns) of each clocked load in a nextpnr report (the
    asynchronous reset's are left out)."""
    for net in data.get("detailed_net_timings", []):
        if net.get("event", "").startswith("<async>"):
            continue
        for e in net.get("endpoints", []):
            if e.get("event", "").startswith("<async>"):
                continue
            delay = e.get("delay")
            yield net, e, max(delay) if isinstance(delay, list) else float(delay or 0.0)


def read_routed_arrivals(report) -> dict:
    """nextpnr's routed arrival time, ns after the clock edge, at each endpoint cell of a
    clock-to-clock path (the latest of its inputs; paths from the asynchronous reset are
    left out), from its JSON report with ``--detailed-timing-report`` (a path, or the
    report read: :func:`read_report`). Empty if the report has no detailed timing."""
    out: dict = {}
    for _net, e, ns in _clocked_endpoints(read_report(report)):
        out[e["cell"]] = max(out.get(e["cell"], 0.0), ns)
    return out


#: What an input pin of a routed ECP5 cell is, for :func:`late_pins` (others by name).
PIN_KINDS = {"CE": "clock enable", "DI": "data", "M": "data", "LSR": "set/reset",
             "WRE": "LUT RAM write enable", "WD": "LUT RAM write data",
             "WAD": "LUT RAM write address"}


def _pin_kind(port: str) -> str:
    return PIN_KINDS.get(port) or PIN_KINDS.get(port.rstrip("0123456789")) or \
        "block RAM or DSP input"


def late_pins(report, period_ns: float) -> dict:
    """How many input pins nextpnr's routed report (``--detailed-timing-report``) has
    over ``period_ns``, by kind (:data:`PIN_KINDS`), most first. ``report``: a path, or
    the report read (:func:`read_report`)."""
    worst: dict = {}
    for _net, e, ns in _clocked_endpoints(read_report(report)):
        key = (e["cell"], e.get("port", ""))
        worst[key] = max(worst.get(key, 0.0), ns)
    kinds: dict = {}
    for (_cell, port), ns in worst.items():
        if ns > period_ns:
            kinds[_pin_kind(port)] = kinds.get(_pin_kind(port), 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


@dataclass
class LateFanout:
    """A net of many loads, some over the period: its loads' earliest and latest arrival
    (the difference is its routing tree), what its loads are, and its driver cell."""

    net: str
    unit: str
    loads: int
    earliest_ns: float
    latest_ns: float
    late: int                   # loads over the period
    pins: dict                  # pin kind -> loads
    driver: str


def late_fanouts(report, period_ns: float, min_loads: int = 64,
                 top_module: str = "tessera_accelerator") -> list:
    """The nets of ``min_loads`` or more clocked loads whose latest load's routed arrival
    is over ``period_ns``, latest first (:class:`LateFanout`)."""
    nets: dict = {}
    for net, e, ns in _clocked_endpoints(read_report(report)):
        nets.setdefault(id(net), (net, []))[1].append((e, ns))
    out = []
    for net, loads in nets.values():
        if len(loads) < min_loads:
            continue
        times = [ns for _, ns in loads]
        if max(times) <= period_ns:
            continue
        pins: dict = {}
        for e, _ in loads:
            k = _pin_kind(e.get("port", ""))
            pins[k] = pins.get(k, 0) + 1
        out.append(LateFanout(net["net"], _unit(net["net"], top_module) or "", len(loads),
                              min(times), max(times), sum(t > period_ns for t in times),
                              dict(sorted(pins.items(), key=lambda kv: -kv[1])),
                              net.get("driver", "")))
    return sorted(out, key=lambda f: -f.latest_ns)


def format_late(pins: dict, fanouts: list, period_ns: float, limit: int = 15) -> str:
    """:func:`late_pins` and :func:`late_fanouts` as text."""
    total = sum(pins.values())
    lines = [f"input pins over {period_ns:g} ns after routing: {total:,}"
             + (": " + ", ".join(f"{k} {n:,}" for k, n in pins.items()) if pins else "")]
    if fanouts:
        lines.append(f"nets of {min(f.loads for f in fanouts)} or more loads reaching some "
                     f"over {period_ns:g} ns: {len(fanouts)}; the latest "
                     f"(arrival at the earliest .. latest load):")
        for f in fanouts[:limit]:
            what = ", ".join(f"{n} {k}" for k, n in f.pins.items())
            lines.append(f"  {f.earliest_ns:5.1f} .. {f.latest_ns:5.1f} ns  {f.loads:4d} loads "
                         f"({what})  {f.unit or '-'}: {f.net}")
    return "\n".join(lines)


def _dsp_registers(cell: dict) -> set:
    """Which of a MULT18X18D's registers are clocked (``INPUTA``, ``INPUTB``, ``OUTPUT``)."""
    params = cell.get("parameters", {})
    return {r for r in ("INPUTA", "INPUTB", "OUTPUT")
            if str(params.get(f"REG_{r}_CLK", "NONE")).strip() != "NONE"}


def _dsp_operands(cell: dict) -> list:
    return [p for p in cell["port_directions"] if p[0] in "AB" and p[1:].isdigit()]


class _Netlist:
    def __init__(self, module: dict):
        self.cells = module["cells"]
        index = NetIndex(module)
        self.driver, self.sinks, self.names = index.driver, index.loads, {}
        for net, info in module["netnames"].items():
            bits = info["bits"]
            if net.startswith("$"):
                continue
            for i, b in enumerate(bits):
                if not isinstance(b, str) and (b not in self.names
                                               or len(net) < len(self.names[b][0])):
                    self.names[b] = (net, i)
        self.arrival, self.pred = {}, {}

    def route(self, bit, cell: str, port: str) -> float:
        if (self.cells[cell]["type"], port) in _DEDICATED:
            return 0.0
        fanout = max(len(self.sinks[bit]), 1)
        return DELAYS["route"] + DELAYS["route_per_fanout"] * math.log2(fanout)

    def _inputs(self, cell: str, ports):
        conns = self.cells[cell]["connections"]
        return [(b, p) for p in ports for b in conns.get(p, []) if not isinstance(b, str)]

    def _worst(self, cell: str, ports, delay: float):
        best, who = -1.0, None
        for b, p in self._inputs(cell, ports):
            t = self.at(b) + self.route(b, cell, p) + delay
            if t > best:
                best, who = t, b
        return best, who

    def at(self, bit) -> float:
        """The arrival time of ``bit``, ns after the clock edge (memoized)."""
        if bit in self.arrival:
            return self.arrival[bit]
        self.arrival[bit] = 0.0                 # a combinational loop counts once
        if bit not in self.driver:
            return 0.0
        cell, port = self.driver[bit]
        c = self.cells[cell]
        t, d = c["type"], DELAYS
        if t == "TRELLIS_FF":
            options = [(d["clk_to_q"], None)]
        elif t in ("DP16KD", "PDPW16KD"):
            options = [(d["bram_clk_to_out"], None)]
        elif t == "LUT4":
            options = [self._worst(cell, "ABCD", d["lut"])]
        elif t == "CCU2C":
            lo, hi = ["A0", "B0", "C0", "D0"], ["A1", "B1", "C1", "D1"]
            if port == "S0":
                options = [self._worst(cell, lo, d["carry_in"]),
                           self._worst(cell, ["CIN"], d["carry_sum"])]
            elif port == "S1":
                options = [self._worst(cell, hi + lo, d["carry_in"]),
                           self._worst(cell, ["CIN"], d["carry_sum"] + d["carry_through"])]
            else:
                options = [self._worst(cell, lo + hi, d["carry_in"]),
                           self._worst(cell, ["CIN"], d["carry_through"])]
        elif t in ("PFUMX", "L6MUX21"):
            data_ports, select = (("ALUT", "BLUT"), "C0") if t == "PFUMX" else \
                (("D0", "D1"), "SD")
            options = [self._worst(cell, data_ports, d["mux_data"]),
                       self._worst(cell, [select], d["mux_select"])]
        elif t == "TRELLIS_DPR16X4":
            options = [self._worst(cell, ["RAD"], d["lutram_read"]), (d["lutram_read"], None)]
        elif t == "MULT18X18D":
            regs = _dsp_registers(c)
            if "OUTPUT" in regs:
                options = [(d["dsp_clk_to_out"], None)]
            elif {"INPUTA", "INPUTB"} <= regs:
                options = [(d["dsp"], None)]            # from the operands' registers
            else:
                options = [self._worst(cell, _dsp_operands(c), d["dsp"])]
        else:                                   # I/O and the rest: a start point
            options = [(0.0, None)]
        value, who = max(options, key=lambda o: o[0])
        self.arrival[bit], self.pred[bit] = value, who
        return value

    def signal(self, bit) -> str:
        name = self.names.get(bit)
        return name[0].lstrip("\\") if name else f"${bit}"

    def chain(self, bit) -> list:
        out = [bit]
        while self.pred.get(out[-1]) is not None:
            out.append(self.pred[out[-1]])
        return out[::-1]


def estimate_paths(netlist: Path, top_module: str = "tessera_accelerator",
                   period_ns: float = 10.0, top: str = "tessera_pnr_top",
                   routed: dict | None = None) -> PathEstimate:
    """Rank the paths of ``netlist`` (Yosys JSON of ``top``, synthesized for the ECP5, the
    design inside :class:`~tessera.hw.io_wrapper.ShiftWrapper` as ``inner``) against
    ``period_ns`` (see the module docstring); ``routed``: :func:`read_routed_arrivals` of a
    routed run of that netlist, whose arrival times replace the estimates of the endpoints
    it names."""
    if sys.getrecursionlimit() < 100_000:
        sys.setrecursionlimit(100_000)      # the arrival times recurse along the paths
    module = json.loads(Path(netlist).read_text())["modules"][top]
    n = _Netlist(module)
    routed = routed or {}
    hits = 0
    ends = []
    for name, c in n.cells.items():
        ports = _ENDPOINTS.get(c["type"])
        setup = DELAYS["setup"]
        if ports is None and c["type"] in ("DP16KD", "PDPW16KD"):
            ports = [p for p, way in c["port_directions"].items()
                     if way == "input" and not p.startswith("CLK")]
        if ports is None and c["type"] == "MULT18X18D" and _dsp_registers(c):
            # a registered DSP ends its operands' paths: in its operand registers, or
            # through the multiplier in its product's
            regs = _dsp_registers(c)
            ports = _dsp_operands(c)
            if not {"INPUTA", "INPUTB"} <= regs:
                setup += DELAYS["dsp"]
        if not ports:
            continue
        worst = max(((n.at(b) + n.route(b, name, p) + setup, b)
                     for b, p in n._inputs(name, ports)), default=None, key=lambda e: e[0])
        if worst and name in routed:
            worst, hits = (routed[name], worst[1]), hits + 1
        if worst:
            ends.append(worst)
    ends.sort(key=lambda e: -e[0])
    groups: dict[tuple, PathGroup] = {}
    failing = 0
    for t, bit in ends:
        if t <= period_ns:
            break
        failing += 1
        chain = n.chain(bit)
        start = n.signal(chain[0]).split("[")[0]
        key = (_unit(start, top_module), _unit(n.signal(bit), top_module), start)
        g = groups.get(key)
        if g is None:
            units, through = [], []
            for b in chain:
                if b not in n.names:
                    continue                    # a net Yosys left unnamed
                u = _unit(n.signal(b), top_module)
                if not units or units[-1] != u:
                    units.append(u)
                name = _AUTONAME.split(n.signal(b))[0]
                if not through or through[-1] != name:
                    through.append(name)
            g = groups[key] = PathGroup(*key, worst_ns=round(t, 2), cells=len(chain),
                                        units=units, example=n.signal(bit), through=through)
        g.endpoints += 1
    ranked = sorted(groups.values(), key=lambda g: (-g.worst_ns, -g.endpoints))
    share = hits / len(ends) if ends else 0.0
    return PathEstimate(period_ns, len(ends), failing, ends[0][0] if ends else 0.0, ranked,
                        share)


def format_paths(e: PathEstimate, limit: int = 20, through: bool = False) -> str:
    """A table of the worst groups; ``through``: each with the named signals along its
    worst path."""
    if e.routed_share:
        how = (f"paths after routing (nextpnr's arrival times at {e.routed_share:.0%} of the "
               f"endpoints; each group's start and signals traced with typical delays)")
    else:
        how = "paths estimated before placement (typical delays; a ranking, not a clock)"
    lines = [f"{how}: "
             f"{e.failing} of {e.endpoints} endpoints over {e.period_ns:g} ns, the worst "
             f"{e.worst_ns:.1f} ns",
             f"{'worst ns':>8}  {'endpoints':>9}  {'cells':>5}  path (units) from the signal"]
    for g in e.groups[:limit]:
        lines.append(f"{g.worst_ns:8.1f}  {g.endpoints:9d}  {g.cells:5d}  "
                     f"{' -> '.join(g.units)}: from {g.start_signal}")
        if through and len(g.through) > 1:
            lines.append(f"{'':28}through {' | '.join(g.through[1:])}")
    if len(e.groups) > limit:
        rest = sum(g.endpoints for g in e.groups[limit:])
        lines.append(f"  ... {len(e.groups) - limit} more groups, {rest} endpoints")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Rank the paths of a finished synthesis folder again (``wrapped.json``, and
    ``pnr.json`` of a routed run if it is there)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tessera.sw.paths", description=main.__doc__)
    p.add_argument("workdir", type=Path, help="a tessera synth work folder (build/synth/...)")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ")
    p.add_argument("--limit", type=int, default=40, help="groups to list (default 40)")
    p.add_argument("--module", default="tessera_accelerator",
                   help="the wrapped top's module (default tessera_accelerator)")
    p.add_argument("--estimate", action="store_true",
                   help="ignore pnr.json: the estimate before placement")
    p.add_argument("--json", metavar="FILE", help="write the ranking as JSON")
    args = p.parse_args(argv)
    from .synth import pnr_netlist

    report = args.workdir / "pnr.json"
    netlist = args.workdir / "wrapped.json" if args.estimate else pnr_netlist(args.workdir)
    if not netlist.exists():
        p.error(f"{netlist} does not exist: run tessera synth --paths or --pnr first")
    if args.freq <= 0:
        p.error("--freq must be positive")
    data = None if args.estimate or not report.exists() else read_report(report)
    routed = None if data is None else read_routed_arrivals(data)
    period = 1e3 / args.freq
    e = estimate_paths(netlist, args.module, period, routed=routed)
    print(format_paths(e, args.limit, through=True))
    out = e.to_dict()
    if routed:
        pins, fanouts = late_pins(data, period), late_fanouts(data, period,
                                                             top_module=args.module)
        print("\n" + format_late(pins, fanouts, period))
        out["late_pins"] = pins
        out["late_fanouts"] = [f.__dict__ for f in fanouts]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
