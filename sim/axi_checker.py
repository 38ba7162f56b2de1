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

__all__ = ["Rule", "RULES", "rule_named", "ProtocolViolation", "Axi4Checker", "AxiLiteChecker"]


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


def _x(value) -> bool:
    """Whether a sampled value is unknown (a cocotb X or Z, or None)."""
    return value is None or (not isinstance(value, int) and not str(value).isdigit())


def _w_changed(waited: tuple, now: tuple | None) -> bool:
    """Whether a waiting W beat ``(wdata, wstrb, ...)`` fell or changed: its strobes, what
    follows them, or a byte of its data under a strobe (the others carry nothing)."""
    if now is None:
        return True
    mask = sum(0xFF << 8 * i for i in range(waited[1].bit_length()) if waited[1] >> i & 1)
    return now[1:] != waited[1:] or (now[0] ^ waited[0]) & mask != 0


class Axi4Checker:
    """The rules of ``tessera_axi_checker.v`` in Python, for the Amaranth-simulator path
    (``sim/accel_amaranth.py``), where no Verilog runs. Call :meth:`step` once a cycle
    with ``get(name)``, the value of the AXI4 signal ``name`` (``arvalid``, ``rdata``, ...)
    in that cycle; :attr:`first` is then None or ``(rule number, cycle, address)``.

    Parameters
    ----------
    bus_bytes : int
        The data bus width in bytes (AxSIZE may not exceed it).
    """

    _AR = ("arid", "araddr", "arlen", "arsize", "arburst")
    _AW = ("awid", "awaddr", "awlen", "awsize", "awburst")
    _W = ("wdata", "wstrb", "wlast")
    _R = ("rid", "rdata", "rresp", "rlast")
    _B = ("bid", "bresp")

    def __init__(self, bus_bytes: int, depth: int = 64):
        self.shift, self.depth = (bus_bytes - 1).bit_length(), depth
        self.cycle = 0
        self.first: tuple[int, int, int] | None = None
        self.reads: list = []          # [id, addr, len] outstanding, oldest first
        self.w_open: list = []         # write bursts with their data incomplete
        self.w_done: list = []         # write bursts with data complete, unanswered
        self.r_beat = self.w_beat = 0
        self.wait = {}                 # channel -> payload of last cycle, when it waited

    def _report(self, name: str, addr: int = 0) -> None:
        if self.first is None:
            self.first = (rule_named(name).number, self.cycle, addr)

    def step(self, get) -> None:
        v = {ch: get(f"{ch}valid") for ch in ("ar", "aw", "w", "r", "b")}
        rdy = {ch: get(f"{ch}ready") for ch in ("ar", "aw", "w", "r", "b")}
        if any(_x(x) for x in (*v.values(), *rdy.values())):
            self._report("X_VALID")
            self.cycle += 1
            return
        names = {"ar": self._AR, "aw": self._AW, "w": self._W, "r": self._R, "b": self._B}
        pay = {ch: tuple(get(n) for n in names[ch]) if v[ch] else None for ch in names}
        fire = {ch: v[ch] and rdy[ch] for ch in names}
        if self.first is None and (any(v.values()) or self.wait):
            self._rules(v, pay, fire)
        self._advance(pay, fire)
        self.wait = {ch: pay[ch] for ch in names if v[ch] and not rdy[ch]}
        self.cycle += 1

    def _rules(self, v, pay, fire) -> None:
        w_head = self.w_open[0] if self.w_open else None
        r_head = self.reads[0] if self.reads else None
        for ch, name, addr_at in (("ar", "AR_STABLE", 1), ("aw", "AW_STABLE", 1)):
            if ch in self.wait and pay[ch] != self.wait[ch]:
                return self._report(name, self.wait[ch][addr_at])
        if "w" in self.wait and _w_changed(self.wait["w"], pay["w"]):
            return self._report("W_STABLE", w_head[1] if w_head else 0)
        for ch, form in (("ar", "AR_FORM"), ("aw", "AW_FORM")):
            if v[ch]:
                _, addr, length, size, burst = pay[ch]
                if size > self.shift or burst == 3:
                    return self._report(form, addr)
        for ch, cross in (("ar", "AR_4K"), ("aw", "AW_4K")):
            if v[ch]:
                _, addr, length, size, burst = pay[ch]
                if burst == 1 and (addr & 0xFFF) + ((length + 1) << size) > 4096:
                    return self._report(cross, addr)
        if fire["w"] and w_head is None:
            return self._report("W_EARLY")
        if fire["w"] and pay["w"][2] != (self.w_beat == w_head[2]):
            return self._report("W_LAST", w_head[1])
        if v["r"] and r_head is None:
            return self._report("R_UNASKED")
        if "r" in self.wait and pay["r"] != self.wait["r"]:
            return self._report("R_STABLE", r_head[1] if r_head else 0)
        if fire["r"] and pay["r"][3] != (self.r_beat == r_head[2]):
            return self._report("R_LAST", r_head[1])
        if fire["r"] and pay["r"][0] != r_head[0]:
            return self._report("R_ID", r_head[1])
        if v["b"] and not self.w_done:
            return self._report("B_UNASKED")
        if "b" in self.wait and pay["b"] != self.wait["b"]:
            return self._report("B_STABLE", self.w_done[0][1] if self.w_done else 0)
        if fire["b"] and pay["b"][0] != self.w_done[0][0]:
            return self._report("B_ID", self.w_done[0][1])
        if (fire["ar"] and len(self.reads) == self.depth) or \
                (fire["aw"] and len(self.w_open) + len(self.w_done) == self.depth):
            return self._report("OVERFLOW")
        return None

    def _advance(self, pay, fire) -> None:
        if fire["ar"] and len(self.reads) < self.depth:
            self.reads.append(list(pay["ar"][:3]))
        if fire["r"] and self.reads:
            if self.r_beat == self.reads[0][2]:
                self.reads.pop(0)
                self.r_beat = 0
            else:
                self.r_beat += 1
        if fire["aw"] and len(self.w_open) + len(self.w_done) < self.depth:
            self.w_open.append(list(pay["aw"][:3]))
        if fire["w"] and self.w_open:
            if self.w_beat == self.w_open[0][2]:
                self.w_done.append(self.w_open.pop(0))
                self.w_beat = 0
            else:
                self.w_beat += 1
        if fire["b"] and self.w_done:
            self.w_done.pop(0)


class AxiLiteChecker:
    """The rules of ``tessera_axil_checker.v`` in Python (see :class:`Axi4Checker`)."""

    _PAYLOAD = {"ar": ("araddr", "arprot"), "aw": ("awaddr", "awprot"),
                "w": ("wdata", "wstrb"), "r": ("rdata", "rresp"), "b": ("bresp",)}

    def __init__(self):
        self.cycle = 0
        self.first: tuple[int, int, int] | None = None
        self.reads = self.addrs = self.datas = 0
        self.last_ar = self.last_aw = 0
        self.wait = {}

    def _report(self, name: str, addr: int = 0) -> None:
        if self.first is None:
            self.first = (rule_named(name).number, self.cycle, addr)

    def step(self, get) -> None:
        v = {ch: get(f"{ch}valid") for ch in self._PAYLOAD}
        rdy = {ch: get(f"{ch}ready") for ch in self._PAYLOAD}
        if any(_x(x) for x in (*v.values(), *rdy.values())):
            self._report("LITE_X_VALID")
            self.cycle += 1
            return
        pay = {ch: tuple(get(n) for n in names) if v[ch] else None
               for ch, names in self._PAYLOAD.items()}
        if self.first is None and (any(v.values()) or self.wait):
            self._rules(v, pay)
        fire = {ch: v[ch] and rdy[ch] for ch in self._PAYLOAD}
        if fire["ar"]:
            self.last_ar = pay["ar"][0]
        if fire["aw"]:
            self.last_aw = pay["aw"][0]
        self.reads += fire["ar"] - (fire["r"] and self.reads > 0)
        self.addrs += fire["aw"] - (fire["b"] and self.addrs > 0)
        self.datas += fire["w"] - (fire["b"] and self.datas > 0)
        self.wait = {ch: pay[ch] for ch in self._PAYLOAD if v[ch] and not rdy[ch]}
        self.cycle += 1

    def _rules(self, v, pay) -> None:
        for ch, name in (("ar", "LITE_AR_STABLE"), ("aw", "LITE_AW_STABLE")):
            if ch in self.wait and pay[ch] != self.wait[ch]:
                return self._report(name, self.wait[ch][0])
        if "w" in self.wait and _w_changed(self.wait["w"], pay["w"]):
            return self._report("LITE_W_STABLE", self.last_aw)
        if v["r"] and self.reads == 0:
            return self._report("LITE_R_UNASKED")
        if "r" in self.wait and pay["r"] != self.wait["r"]:
            return self._report("LITE_R_STABLE", self.last_ar)
        if v["b"] and (self.addrs == 0 or self.datas == 0):
            return self._report("LITE_B_UNASKED")
        if "b" in self.wait and pay["b"] != self.wait["b"]:
            return self._report("LITE_B_STABLE", self.last_aw)
        return None
