"""The ECP5 DSP register packing (tessera.sw.dsp_pack): what it packs and what it leaves, and
that the packed netlist is the same logic, by simulating both netlists side by side in
Icarus on random operands, enables and resets."""

import json
import shutil

import pytest
from amaranth import Elaboratable, Module, Mux, Signal, signed
from netlist_sim import needs_icarus, side_by_side, transformed

from tessera.sw.dsp_pack import pack_dsp_registers


class Bank(Elaboratable):
    """Operands registered (one shared with other logic), the product registered on another
    enable; a multiplier whose operand is a multiplexer of registers (packs the product
    only); one whose product also feeds logic (packs nothing)."""

    def __init__(self):
        self.a = Signal(signed(18))
        self.b = Signal(16)
        self.c = Signal(signed(8))
        self.sel = Signal()
        self.en = Signal()
        self.en_a = Signal()
        self.en_p = Signal()
        self.p = Signal(signed(36))
        self.q = Signal(8)
        self.r = Signal(signed(20))
        self.s = Signal(signed(17))
        self.t = Signal(18)

    def ports(self):
        return [self.a, self.b, self.c, self.sel, self.en, self.en_a, self.en_p, self.p,
                self.q, self.r, self.s, self.t]

    def elaborate(self, platform):
        m = Module()
        ra, rb = Signal(signed(18)), Signal(16)
        with m.If(self.en_a):
            m.d.sync += ra.eq(self.a)
        with m.If(self.en):
            m.d.sync += rb.eq(self.b)
        with m.If(self.en_p):
            m.d.sync += self.p.eq(ra * rb)
        m.d.sync += self.q.eq(ra[:8])               # the operand's register feeds logic too
        w0, w1 = Signal(signed(8)), Signal(signed(8))
        m.d.sync += [w0.eq(self.c), w1.eq(w0)]
        m.d.sync += self.r.eq(Mux(self.sel, w1, w0) * self.c)     # the product only
        prod = Signal(signed(17))
        m.d.comb += prod.eq(w0 * self.a[:9].as_signed())
        m.d.sync += self.s.eq(prod)
        m.d.comb += self.t.eq(prod[:9] ^ self.b[:9])                  # the product unregistered
        return m


@pytest.fixture(scope="module")
def netlists(tmp_path_factory):
    work = tmp_path_factory.mktemp("dsp_pack")
    pre, post, stats = transformed(work, Bank(), pack_dsp_registers)
    return work, pre, post, stats


def _dsps(netlist):
    cells = netlist["modules"]["top"]["cells"]
    return {n: c for n, c in cells.items() if c["type"] == "MULT18X18D"}


def test_what_is_packed(netlists):
    _work, pre, post, stats = netlists
    assert stats.dsps == 3
    # the bank's multiplier: both operands and the product; the multiplexed operand's: its
    # product; the one whose product feeds logic: nothing
    assert stats.operands == 2 and stats.products == 2
    assert stats.skipped["product: not all bits into one flip-flop each"] == 1
    modes = sorted(tuple(c["parameters"].get(f"REG_{r}_CLK", "NONE")
                         for r in ("INPUTA", "INPUTB", "OUTPUT"))
                   for c in _dsps(post).values())
    assert modes == [("CLK0", "CLK0", "CLK0"), ("NONE", "NONE", "CLK0"),
                     ("NONE", "NONE", "NONE")]
    count = lambda n: sum(c["type"] == "TRELLIS_FF"  # noqa: E731
                          for c in n["modules"]["top"]["cells"].values())
    # the operand register that also feeds q stays (8 of its bits); the rest moved
    assert count(pre) - count(post) == stats.removed_ffs > 0
    assert "removed" in stats.summary()


def test_operands_with_different_enables_use_two(netlists):
    _work, _pre, post, _stats = netlists
    bank = next(c for c in _dsps(post).values()
                if c["parameters"].get("REG_INPUTA_CLK") == "CLK0")
    p = bank["parameters"]
    assert p["REG_INPUTA_CE"] != p["REG_INPUTB_CE"]
    assert p["RESETMODE"] == "SYNC"


@needs_icarus
def test_packed_netlist_is_the_same_logic(netlists):
    work, _pre, post, _stats = netlists
    out = side_by_side(work, post, 600, seed=5)
    assert "ERRORS 0" in out, out[-2000:]


@needs_icarus
def test_a_broken_pack_is_caught(netlists, tmp_path):
    """The side-by-side simulation can fail: a product register given the operands'
    enable."""
    work, _pre, post, _stats = netlists
    broken = json.loads(json.dumps(post))
    for c in _dsps(broken).values():
        p = c["parameters"]
        if p.get("REG_INPUTA_CLK") == "CLK0":
            p["REG_OUTPUT_CE"] = p["REG_INPUTA_CE"]
    shutil.copy(work / "pre.json", tmp_path / "pre.json")
    out = side_by_side(tmp_path, broken, 300, seed=6)
    assert "ERRORS 0" not in out and "ERRORS" in out
