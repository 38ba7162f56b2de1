"""cocotb testbench of the protocol checkers alone (``sim/hdl/tessera_axi_checker.v`` and
``tessera_axil_checker.v``): each scenario drives a short sequence on both sides of the
bus, a cycle at a time, and names the rule the checker must latch (or none, for legal
traffic with waits, back-to-back bursts and in-order responses).

``$TESSERA_CHECKER`` says which checker is the top level (``axi`` or ``lite``); the AXI4
one is built with a 64-bit bus (ARSIZE 3) and 4-bit IDs. A scenario is a list of cycles,
each a dict of the signals to change at that cycle's falling edge (the others keep their
values); everything starts at 0 after a reset.
"""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotb.types import Logic

from tessera.sim.axi_checker import RULES, rule_named

#: The checkers' inputs besides the clock and reset.
LITE_PORTS = ("awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
              "bresp", "bvalid", "bready", "araddr", "arprot", "arvalid", "arready", "rdata",
              "rresp", "rvalid", "rready")
AXI_PORTS = ("awid", "awlen", "awsize", "awburst", "wlast", "bid", "arid", "arlen", "arsize",
             "arburst", "rid", "rlast", *(p for p in LITE_PORTS if "prot" not in p))

# AXI4 helpers: one beat or request per cycle, a 64-bit bus.
AR = dict(arvalid=1, arready=1, arsize=3, arburst=1)
AW = dict(awvalid=1, awready=1, awsize=3, awburst=1)
IDLE = dict(arvalid=0, awvalid=0, wvalid=0, rvalid=0, bvalid=0, rlast=0, wlast=0)


def ar(addr, length, id=0, **kw):
    return {**IDLE, **AR, "araddr": addr, "arlen": length, "arid": id, **kw}


def aw(addr, length, id=0, **kw):
    return {**IDLE, **AW, "awaddr": addr, "awlen": length, "awid": id, **kw}


def w(last, data=0, **kw):
    return {**IDLE, "wvalid": 1, "wready": 1, "wlast": last, "wdata": data, "wstrb": 0xFF,
            **kw}


def r(last, data=0, id=0, **kw):
    return {**IDLE, "rvalid": 1, "rready": 1, "rlast": last, "rdata": data, "rid": id, **kw}


def b(id=0, **kw):
    return {**IDLE, "bvalid": 1, "bready": 1, "bid": id, **kw}


AXI_SCENARIOS = {
    "legal traffic": (None, [
        ar(0x1000, 3), {**ar(0x1020, 0), "arready": 0}, {**ar(0x1020, 0)},
        r(0, 1), {**r(0, 2), "rready": 0}, r(0, 2), r(0, 3), r(1, 4), r(1, 5),
        aw(0x2000, 1, id=2), {**w(0, 7), "wready": 0}, w(0, 7), w(1, 8),
        {**b(2), "bready": 0}, b(2), IDLE,
        ar(0xFF8, 0), aw(0xFC0, 7), r(1), *[w(int(i == 7)) for i in range(8)], b(), IDLE]),
    "AR_STABLE": ("AR_STABLE", [{**ar(0x100, 0), "arready": 0}, IDLE]),
    "AR payload changes": ("AR_STABLE", [{**ar(0x100, 0), "arready": 0},
                                         {**ar(0x108, 0), "arready": 0}]),
    "AW_STABLE": ("AW_STABLE", [{**aw(0x100, 0), "awready": 0}, {**aw(0x100, 1),
                                                                 "awready": 0}]),
    "W_STABLE": ("W_STABLE", [aw(0x100, 1), {**w(0, 1), "wready": 0}, {**w(0, 2),
                                                                       "wready": 0}]),
    "WDATA off the strobes may change": (None, [
        aw(0x100, 0), {**w(1, 0x11, wstrb=0x0F), "wready": 0},
        w(1, 0xFF00000011, wstrb=0x0F), b()]),
    "a strobed byte of WDATA changes": ("W_STABLE", [
        aw(0x100, 0), {**w(1, 0x11, wstrb=0x0F), "wready": 0},
        w(1, 0x12, wstrb=0x0F)]),
    "AR_4K": ("AR_4K", [ar(0xFF8, 1)]),
    "AW_4K": ("AW_4K", [aw(0x1F08, 31)]),
    "AR_FORM": ("AR_FORM", [ar(0x100, 0, arsize=4)]),
    "AW_FORM": ("AW_FORM", [aw(0x100, 0, awburst=3)]),
    "W_LAST early": ("W_LAST", [aw(0x100, 1), w(1)]),
    "W_LAST missing": ("W_LAST", [aw(0x100, 1), w(0), w(0)]),
    "W_EARLY": ("W_EARLY", [w(1)]),
    "R_UNASKED": ("R_UNASKED", [{**IDLE, "rvalid": 1, "rready": 0}]),
    "R_STABLE": ("R_STABLE", [ar(0x100, 0), {**r(1, 5), "rready": 0}, {**r(1, 6),
                                                                       "rready": 0}]),
    "R_LAST": ("R_LAST", [ar(0x100, 2), r(0), r(1)]),
    "R_ID": ("R_ID", [ar(0x100, 0, id=1), r(1, id=2)]),
    "B_UNASKED before the data": ("B_UNASKED", [aw(0x100, 0), b()]),
    "B_STABLE": ("B_STABLE", [aw(0x100, 0), w(1), {**b(), "bready": 0},
                              {**b(), "bready": 0, "bresp": 2}]),
    "B_ID": ("B_ID", [aw(0x100, 0, id=3), w(1), b(id=4)]),
    "OVERFLOW": ("OVERFLOW", [ar(0x40 * i, 0) for i in range(65)]),
    "X_VALID": ("X_VALID", [{"arvalid": Logic("X")}]),
}

LITE_SCENARIOS = {
    "legal traffic": (None, [
        {"awvalid": 1, "awaddr": 0x10, "wvalid": 1, "wdata": 5, "wstrb": 0xF},
        {"awready": 1, "wready": 1}, {"awvalid": 0, "wvalid": 0, "awready": 0, "wready": 0,
                                      "bvalid": 1},
        {"bready": 1}, {"bvalid": 0, "bready": 0, "arvalid": 1, "araddr": 0x14},
        {"arready": 1}, {"arvalid": 0, "arready": 0, "rvalid": 1, "rdata": 9},
        {"rready": 1}, {"rvalid": 0, "rready": 0}]),
    "LITE_AR_STABLE": ("LITE_AR_STABLE", [{"arvalid": 1, "araddr": 0x10},
                                          {"araddr": 0x14}]),
    "LITE_AW_STABLE": ("LITE_AW_STABLE", [{"awvalid": 1}, {"awvalid": 0}]),
    "LITE_W_STABLE": ("LITE_W_STABLE", [{"wvalid": 1, "wdata": 1, "wstrb": 0xF},
                                        {"wdata": 2}]),
    "WDATA off the strobes may change": (None, [
        {"awvalid": 1, "wvalid": 1, "wdata": 0x11, "wstrb": 0x1},
        {"wdata": 0x2211}, {"awready": 1, "wready": 1}]),
    "LITE_R_UNASKED": ("LITE_R_UNASKED", [{"rvalid": 1}]),
    "LITE_R_STABLE": ("LITE_R_STABLE", [{"arvalid": 1, "arready": 1},
                                        {"arvalid": 0, "arready": 0, "rvalid": 1},
                                        {"rvalid": 0}]),
    "LITE_B_UNASKED": ("LITE_B_UNASKED", [{"awvalid": 1, "awready": 1},
                                          {"awvalid": 0, "awready": 0, "bvalid": 1}]),
    "LITE_B_STABLE": ("LITE_B_STABLE", [{"awvalid": 1, "awready": 1, "wvalid": 1,
                                         "wready": 1},
                                        {"awvalid": 0, "awready": 0, "wvalid": 0,
                                         "wready": 0, "bvalid": 1},
                                        {"bresp": 2}]),
    "LITE_X_VALID": ("LITE_X_VALID", [{"bvalid": Logic("Z")}]),
}


async def _scenario(dut, cycles, ports) -> tuple[int | None, int, int]:
    """Reset, drive ``cycles``, return the latched (rule, cycle, address) or None's."""
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    for name in ports:
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for step in cycles:
        for name, value in step.items():
            getattr(dut, name).value = value
        await FallingEdge(dut.clk)
    # The last step was sampled at the rising edge just passed: read now, before anything
    # else moves (the next scenario's reset clears the ports).
    if not int(dut.violation.value):
        return None, 0, 0
    return int(dut.rule.value), int(dut.at_cycle.value), int(dut.at_addr.value)


@cocotb.test()
async def scenarios(dut):
    which = os.environ["TESSERA_CHECKER"]
    table = AXI_SCENARIOS if which == "axi" else LITE_SCENARIOS
    ports = AXI_PORTS if which == "axi" else LITE_PORTS
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await RisingEdge(dut.clk)
    wrong = []
    for label, (want, cycles) in table.items():
        got, cycle, addr = await _scenario(dut, cycles, ports)
        want_n = rule_named(want).number if want else None
        if got != want_n:
            wrong.append(f"{label}: expected {want}, got "
                         f"{RULES[got].name if got in RULES else got}")
        elif label == "AR payload changes" and (cycle, addr) != (1, 0x100):
            wrong.append(f"{label}: reported cycle {cycle} and address {addr:#x}, "
                         f"expected 1 and 0x100")
    assert not wrong, "; ".join(wrong)
