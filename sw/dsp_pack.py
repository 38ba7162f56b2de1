"""Flip-flops moved into the ECP5 multipliers' own registers, on the netlist nextpnr places.

Yosys's ECP5 flow maps every product to a ``MULT18X18D`` with its registers bypassed, and
leaves the design's registers beside it in the fabric: a product's path is then a route
into the DSP column, the multiplier and a route back out, in one cycle (about 15 ns on
the speed-6 part, two thirds of it routing). The ``MULT18X18D`` has registers of its own
at its operands (``A``, ``B``) and at its product (``P``), with clock enables and a
synchronous reset to 0 that acts whatever the enable. :func:`pack_dsp_registers` moves the
design's flip-flops there where that is the same logic:

* **an operand's register**: every bit of ``A`` (or ``B``) comes from a flip-flop (or is a
  constant 0), and the flip-flops share their clock, enable and reset, reset to 0 and
  enable on a high level. The DSP's register takes their inputs; a flip-flop whose output
  feeds nothing else is removed (one that also feeds other logic stays: the DSP keeps a
  copy, which is the same register).
* **the product's register**: every used bit of ``P`` feeds exactly one flip-flop and
  nothing else, with the same conditions; the DSP's register then drives what the
  flip-flop drove, and the flip-flop is removed.

All registers of one DSP use its ``CLK0`` (what nextpnr's timing model needs), one
``RESETMODE``, and up to four enables and resets. The operands' constant ``SIGNEDA`` and
``SIGNEDB`` go through the operand register with them; they are left alone when they are
not constant. The transform changes no function, only where registers are; nextpnr then
times an operand's route as ending in the DSP and the product's as starting there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .netlist import NetIndex

__all__ = ["DspPackStats", "pack_dsp_registers"]

_OPERAND_BITS = 18
_PRODUCT_BITS = 36


@dataclass
class DspPackStats:
    """What :func:`pack_dsp_registers` did."""
    dsps: int = 0                   # MULT18X18D in the netlist
    operands: int = 0               # operand registers packed (A and B counted apart)
    products: int = 0               # product registers packed
    removed_ffs: int = 0            # flip-flops the DSPs' registers replaced
    skipped: dict = field(default_factory=lambda: defaultdict(int))   # why not, per reason

    def to_dict(self) -> dict:
        """The figures a report records (``tessera synth --pnr``, ``tessera fpga``)."""
        return {"operands": self.operands, "products": self.products, "dsps": self.dsps,
                "flip_flops": self.removed_ffs, "summary": self.summary()}

    def summary(self) -> str:
        why = ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items())) or "none"
        return (f"{self.operands} operand and {self.products} product registers of "
                f"{self.dsps} DSPs packed ({self.removed_ffs} flip-flops removed); "
                f"not packed: {why}")


def _param(cell: dict, name: str, default: str) -> str:
    value = cell.get("parameters", {}).get(name, default)
    return value.strip() if isinstance(value, str) else str(value)


def _ff_control(cell: dict):
    """The (clock, enable, reset, reset mode, GSR) of a TRELLIS_FF that a DSP register can
    take, or None. Enables are nets or None (always enabled)."""
    if cell["type"] != "TRELLIS_FF":
        return None
    conn = cell["connections"]
    if _param(cell, "CLKMUX", "CLK") != "CLK" or _param(cell, "REGSET", "RESET") != "RESET":
        return None
    cemux = _param(cell, "CEMUX", "1")
    if cemux == "CE":
        enable = conn["CE"][0]
    elif cemux == "1":
        enable = None
    else:
        return None                             # an inverted enable: the DSP has none
    lsrmux = _param(cell, "LSRMUX", "LSR")
    reset = conn.get("LSR", ["0"])[0]
    if lsrmux != "LSR":
        return None
    if reset == "0":
        reset = None
    mode = "ASYNC" if _param(cell, "SRMODE", "LSR_OVER_CE") == "ASYNC" else "SYNC"
    return conn["CLK"][0], enable, reset, mode, _param(cell, "GSR", "ENABLED")


class _Controls:
    """The clock, enables and resets one DSP's registers use (four of each at most)."""

    def __init__(self):
        self.clock = None
        self.mode = None
        self.gsr = None
        self.enables: list = []
        self.resets: list = []

    def fits(self, ctrl) -> bool:
        clock, enable, reset, mode, gsr = ctrl
        return ((self.clock in (None, clock)) and (self.mode in (None, mode))
                and (self.gsr in (None, gsr))
                and (enable in self.enables or len(self.enables) < 4)
                and (reset in self.resets or len(self.resets) < 4))

    def take(self, ctrl) -> tuple[str, str]:
        clock, enable, reset, mode, gsr = ctrl
        self.clock, self.mode, self.gsr = clock, mode, gsr
        for lst, value in ((self.enables, enable), (self.resets, reset)):
            if value not in lst:
                lst.append(value)
        return f"CE{self.enables.index(enable)}", f"RST{self.resets.index(reset)}"


def _common_control(cells: dict, names) -> tuple | None:
    ctrls = {_ff_control(cells[n]) for n in names}
    if len(ctrls) != 1 or None in ctrls:
        return None
    return ctrls.pop()


def _operand_plan(side: str, conn: dict, cells: dict, nets: NetIndex, stats: DspPackStats):
    """(side, its flip-flops, their control) if operand ``side`` can be registered."""
    signed = conn.get(f"SIGNED{side}", ["0"])[0]
    source = conn.get(f"SOURCE{side}", ["0"])[0]
    bits = [conn.get(f"{side}{i}", ["0"])[0] for i in range(_OPERAND_BITS)]
    why = None
    drivers = [nets.driver.get(b) for b in bits if not isinstance(b, str)]
    if not isinstance(signed, str) or source != "0":
        why = "its sign or source is not a constant"
    elif any(b == "1" for b in bits):
        why = "a constant 1 bit"            # a register would hold 0 until enabled
    elif not drivers or any(d is None or d[1] != "Q" or d[0] == "$port" for d in drivers):
        why = "not all from flip-flops"
    else:
        ffs = sorted({d[0] for d in drivers})
        ctrl = _common_control(cells, ffs)
        if ctrl is not None:
            return side, ffs, ctrl
        why = "flip-flops with different controls"
    stats.skipped[f"operand {side}: {why}"] += 1
    return None


def _product_plan(conn: dict, cells: dict, nets: NetIndex, stats: DspPackStats):
    """("P", {product bit: its flip-flop}, their control) if the product can be
    registered."""
    p_ffs = {}
    for i in range(_PRODUCT_BITS):
        b = conn.get(f"P{i}", ["x"])[0]
        loads = [] if isinstance(b, str) else nets.loads.get(b, [])
        if not loads:
            continue
        cell, port = loads[0]
        if len(loads) != 1 or port != "DI" or cell == "$port" \
                or cells[cell]["type"] != "TRELLIS_FF":
            stats.skipped["product: not all bits into one flip-flop each"] += 1
            return None
        p_ffs[i] = cell
    if not p_ffs:
        return None
    ctrl = _common_control(cells, p_ffs.values())
    if ctrl is None:
        stats.skipped["product: flip-flops with different controls"] += 1
        return None
    return "P", p_ffs, ctrl


def _apply(name: str, dsp: dict, plan: list, ctl: _Controls, cells: dict, nets: NetIndex,
           removed: set, stats: DspPackStats):
    """Give DSP ``name`` the registers of ``plan`` and take its flip-flops out."""
    conn, dirs = dsp["connections"], dsp["port_directions"]
    params = dsp.setdefault("parameters", {})

    def wire(port: str, bit):
        conn[port] = [bit]
        dirs[port] = "input"
        if not isinstance(bit, str):
            nets.loads[bit].append((name, port))

    wire("CLK0", ctl.clock)
    for k, en in enumerate(ctl.enables):
        wire(f"CE{k}", "1" if en is None else en)
    for k, rst in enumerate(ctl.resets):
        wire(f"RST{k}", "0" if rst is None else rst)
    params["RESETMODE"] = ctl.mode
    params["GSR"] = ctl.gsr
    for kind, ffs, _ctrl, (ce, rst) in plan:
        if kind in "AB":
            reg = f"REG_INPUT{kind}"
            for i in range(_OPERAND_BITS):
                port = f"{kind}{i}"
                b = conn.get(port, ["0"])[0]
                if isinstance(b, str):
                    continue
                ff = nets.driver[b][0]
                nets.drop_load(b, name, port)
                wire(port, cells[ff]["connections"]["DI"][0])
            for ff in ffs:
                if not nets.loads.get(cells[ff]["connections"]["Q"][0]) and ff not in removed:
                    removed.add(ff)
                    nets.drop_cell(cells[ff], ff)
            stats.operands += 1
        else:
            reg = "REG_OUTPUT"
            for i, ff in ffs.items():
                q = cells[ff]["connections"]["Q"][0]
                nets.drop_cell(cells[ff], ff)
                conn[f"P{i}"] = [q]
                nets.driver[q] = (name, f"P{i}")
                removed.add(ff)
            stats.products += 1
        params[f"{reg}_CLK"] = "CLK0"
        params[f"{reg}_CE"] = ce
        params[f"{reg}_RST"] = rst


def pack_dsp_registers(netlist: dict, top: str) -> DspPackStats:
    """Move flip-flops into the operand and product registers of the ``MULT18X18D`` cells of
    module ``top`` of ``netlist`` (Yosys JSON, flattened, after ``synth_ecp5``), in place;
    see the module docstring for when. Returns what was packed."""
    module = netlist["modules"][top]
    cells = module["cells"]
    nets = NetIndex(module, ports=True)
    stats = DspPackStats()
    removed: set = set()
    for name in sorted(n for n, c in cells.items() if c["type"] == "MULT18X18D"):
        dsp = cells[name]
        stats.dsps += 1
        if any(_param(dsp, p, "NONE") != "NONE" for p in
               ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK")):
            stats.skipped["already registered"] += 1
            continue
        conn = dsp["connections"]
        candidates = [_product_plan(conn, cells, nets, stats)] + \
            [_operand_plan(side, conn, cells, nets, stats) for side in "AB"]
        # The product's register first (it saves the longer route), then the operands', if
        # their controls fit beside it.
        ctl, plan = _Controls(), []
        for entry in filter(None, candidates):
            if ctl.fits(entry[2]):
                plan.append(entry + (ctl.take(entry[2]),))
            else:
                stats.skipped["controls that do not fit one DSP"] += 1
        if {e[0] for e in plan} in ({"A"}, {"B"}):
            # One operand registered alone is not a mode nextpnr times (it would time the
            # DSP as unregistered): leave it in the fabric.
            stats.skipped["one operand alone"] += 1
            continue
        if plan:
            _apply(name, dsp, plan, ctl, cells, nets, removed, stats)
    for ff in removed:
        del cells[ff]
    stats.removed_ffs = len(removed)
    return stats
