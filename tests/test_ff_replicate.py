"""The replication of high-fanout flip-flops (tessera.sw.ff_replicate): which flip-flops get
copies, how their loads are shared out, and that the netlist is the same logic, by
simulating it beside the original in Icarus on random inputs."""

import json
import shutil
from collections import defaultdict

import pytest
from amaranth import Elaboratable, Module, Mux, Signal
from netlist_sim import needs_icarus, side_by_side, transformed

from tessera.sw.ff_replicate import replicate_flip_flops

MAX_FANOUT = 8


class Fanout(Elaboratable):
    """A registered enable that loads 24-bit registers in two units and is an output too; a
    registered select in front of a 16-bit multiplexer into a register of a third."""

    def __init__(self):
        self.en_in = Signal()
        self.sel_in = Signal()
        self.a = Signal(24)
        self.b = Signal(24)
        self.c = Signal(16)
        self.d = Signal(16)
        self.en = Signal()
        self.x = Signal(24)
        self.y = Signal(24)
        self.z = Signal(16)

    def ports(self):
        return [self.en_in, self.sel_in, self.a, self.b, self.c, self.d, self.en, self.x,
                self.y, self.z]

    def elaborate(self, platform):
        m = Module()
        sel = Signal()
        m.d.sync += [self.en.eq(self.en_in), sel.eq(self.sel_in)]
        for name, data, out in (("left", self.a, self.x), ("right", self.b, self.y)):
            unit = Module()
            reg = Signal(24, name=f"{name}_reg")
            with unit.If(self.en):
                unit.d.sync += reg.eq(data ^ reg)
            unit.d.comb += out.eq(reg)
            m.submodules[name] = unit
        mux = Module()
        reg = Signal(16, name="mux_reg")
        mux.d.sync += reg.eq(Mux(sel, self.c, self.d))
        mux.d.comb += self.z.eq(reg)
        m.submodules.mux = mux
        return m


@pytest.fixture(scope="module")
def netlists(tmp_path_factory):
    work = tmp_path_factory.mktemp("ff_replicate")
    pre, post, stats = transformed(
        work, Fanout(), lambda netlist, top: replicate_flip_flops(netlist, top, MAX_FANOUT))
    return work, pre, post, stats


def _fanouts(netlist):
    """Each flip-flop's name -> the names of the cells its output feeds."""
    module = netlist["modules"]["top"]
    cells = module["cells"]
    by_bit = {c["connections"]["Q"][0]: n for n, c in cells.items()
              if c["type"] == "TRELLIS_FF"}
    loads = defaultdict(set)
    for n, c in cells.items():
        for port, bits in c["connections"].items():
            if c["port_directions"][port] == "input":
                for b in bits:
                    if b in by_bit:
                        loads[by_bit[b]].add(n)
    return {ff: loads[ff] for ff in by_bit.values()}


def test_what_is_replicated(netlists):
    _work, pre, post, stats = netlists
    before, after = _fanouts(pre), _fanouts(post)
    wide = {ff for ff, loads in before.items() if len(loads) > MAX_FANOUT}
    assert len(wide) == stats.replicated >= 2          # the enable and the select at least
    assert max(map(len, after.values())) <= MAX_FANOUT
    assert len(after) - len(before) == stats.copies
    # every copy is its original's flip-flop: the same inputs and parameters
    cells = post["modules"]["top"]["cells"]
    for name, cell in cells.items():
        if "$rep" in name:
            original = cells[name.split("$rep")[0]]
            for key in ("type", "parameters"):
                assert cell[key] == original[key]
            for port in ("CLK", "DI", "LSR", "CE"):
                assert cell["connections"].get(port) == original["connections"].get(port)
    # each flip-flop's loads are the original's, shared out
    for ff in wide:
        copies = [n for n in after if n.split("$rep")[0] == ff]
        assert set().union(*(after[c] for c in copies)) == before[ff]
        assert len(copies) == -(-len(before[ff]) // MAX_FANOUT)
    assert "replicated" in stats.summary() and stats.to_dict()["copies"] == stats.copies


def test_groups_keep_to_a_unit(netlists):
    """The enable's 48 loads, 24 in each unit, go to copies that each serve one unit."""
    _work, _pre, post, _stats = netlists
    units_of_copies = [{load.split(".")[0] for load in loads}
                       for ff, loads in _fanouts(post).items()
                       if any(x.startswith(("left.", "right.")) for x in loads)]
    assert len(units_of_copies) >= 6
    assert all(len(u) == 1 for u in units_of_copies)


def test_the_output_port_stays_on_the_original(netlists):
    _work, pre, post, _stats = netlists
    bits = post["modules"]["top"]["ports"]["en"]["bits"]
    assert bits == pre["modules"]["top"]["ports"]["en"]["bits"]
    drivers = [n for n, c in post["modules"]["top"]["cells"].items()
               if c["connections"].get("Q") == bits]
    assert len(drivers) == 1 and "$rep" not in drivers[0]


def test_a_netlist_without_wide_fanout_is_left_alone(netlists):
    _work, pre, _post, _stats = netlists
    same = json.loads(json.dumps(pre))
    stats = replicate_flip_flops(same, "top", 1000)
    assert same == pre and stats.copies == 0
    assert "no flip-flop drives more than 1000 cells" == stats.summary()
    with pytest.raises(ValueError, match="at least 2"):
        replicate_flip_flops(same, "top", 1)


@needs_icarus
def test_replicated_netlist_is_the_same_logic(netlists):
    work, _pre, post, _stats = netlists
    out = side_by_side(work, post, 400, seed=7)
    assert "ERRORS 0" in out, out[-2000:]


@needs_icarus
def test_a_broken_copy_is_caught(netlists, tmp_path):
    """The side-by-side simulation can fail: a copy of the enable that is never enabled."""
    work, _pre, post, _stats = netlists
    broken = json.loads(json.dumps(post))
    cells = broken["modules"]["top"]["cells"]
    copy = next(c for n, c in cells.items() if "$rep" in n)
    copy["connections"]["DI"] = ["0"]
    shutil.copy(work / "pre.json", tmp_path / "pre.json")
    out = side_by_side(tmp_path, broken, 300, seed=8)
    assert "ERRORS 0" not in out and "ERRORS" in out
