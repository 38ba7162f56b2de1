"""The register file generated from the register map (``hw/register_file.py``), in
Amaranth's simulator: every kind of field, the idle-only registers, the pulses, SLVERR for
unmapped offsets and read-only registers; and the map as data (JSON, docs)."""

from pathlib import Path

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from tessera.hw.axi import Resp
from tessera.hw.config import preset
from tessera.hw.register_file import RegisterFile, port_name
from tessera.hw.registers import (
    MAGIC,
    REG,
    REGISTER,
    REGISTERS,
    Field,
    Register,
    register_map,
    register_map_markdown,
)

OKAY, SLVERR = Resp.OKAY.value, Resp.SLVERR.value
CONSTS = {"ID": MAGIC, "VERSION": 1, "CONFIG_HASH": 0x12345678, "COMMAND_BITS": 256}


async def _read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    while not ctx.get(bus.arready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(bus.arvalid, 0)
    assert ctx.get(bus.rvalid)
    value, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
    await ctx.tick()
    return value, resp


async def _write(ctx, bus, addr, value, watch=None):
    """A write; with ``watch`` (ports by name), also the names of those high in the
    write's cycle."""
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, value)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    while not ctx.get(bus.awready):
        await ctx.tick()
    pulses = {name for name, port in (watch or {}).items() if ctx.get(port)}
    await ctx.tick()
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    assert ctx.get(bus.bvalid)
    resp = ctx.get(bus.bresp)
    await ctx.tick()
    return (resp, pulses) if watch is not None else resp


def _simulate(bench):
    dut = RegisterFile(CONSTS)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def run(ctx):
        await bench(ctx, dut)

    sim.add_testbench(run)
    sim.run()


def test_reads_show_every_kind_of_field():
    async def bench(ctx, dut):
        bus = dut.bus
        for name, value in CONSTS.items():
            assert await _read(ctx, bus, REG[name]) == (value, OKAY)
        ctx.set(dut.status_busy, 1)
        ctx.set(dut.status_error, 1)
        ctx.set(dut.status_code, 0b1010)
        assert await _read(ctx, bus, REG["STATUS"]) == (0b1010_0000_0101, OKAY)
        ctx.set(dut.cycles_lo, 0xDEADBEEF)
        ctx.set(dut.cycles_hi, 7)
        assert (await _read(ctx, bus, REG["CYCLES_LO"]))[0] == 0xDEADBEEF
        assert (await _read(ctx, bus, REG["CYCLES_HI"]))[0] == 7
        for bad in (0x3FC, 0xFFC, REG["COMMAND_BITS"] + 2 * 4 * 40):
            assert (await _read(ctx, bus, bad))[1] == SLVERR

    _simulate(bench)


def test_writes_store_pulse_and_refuse():
    async def bench(ctx, dut):
        bus = dut.bus
        assert await _write(ctx, bus, REG["CMD_COUNT"], 1234) == OKAY
        assert await _read(ctx, bus, REG["CMD_COUNT"]) == (1234, OKAY)
        assert ctx.get(dut.cmd_count) == 1234
        # the run's parameters keep their value while running (the write answers OKAY)
        ctx.set(dut.running, 1)
        assert await _write(ctx, bus, REG["CMD_COUNT"], 99) == OKAY
        assert ctx.get(dut.cmd_count) == 1234
        # ... but IRQ_ENABLE is not idle-only
        assert await _write(ctx, bus, REG["CONTROL"], 0b10) == OKAY
        assert ctx.get(dut.control_irq_enable) == 1
        ctx.set(dut.running, 0)
        # START pulses in the write's cycle only, and reads 0
        pulses = {"start": dut.control_start, "clear": dut.status_done_clear}
        assert await _write(ctx, bus, REG["CONTROL"], 0b11, pulses) == (OKAY, {"start"})
        assert not ctx.get(dut.control_start)
        assert await _read(ctx, bus, REG["CONTROL"]) == (0b10, OKAY)
        assert await _write(ctx, bus, REG["STATUS"], 0b10, pulses) == (OKAY, {"clear"})
        # BUSY is read-only: nothing happens
        assert await _write(ctx, bus, REG["STATUS"], 0b01, pulses) == (OKAY, set())
        # read-only registers and unmapped offsets refuse writes
        for bad in (REG["ID"], REG["ERROR_INDEX"], REG["CYCLES_LO"], 0xFF0):
            assert await _write(ctx, bus, bad, 1) == SLVERR
        assert await _read(ctx, bus, REG["ID"]) == (MAGIC, OKAY)

    _simulate(bench)


def test_ports_follow_the_map():
    dut = RegisterFile(CONSTS)
    Fragment.get(dut, None)
    for reg in REGISTERS:
        for f in reg.fields:
            if f.access != "const":
                assert hasattr(dut, port_name(reg, f)), (reg.name, f.name)
    assert port_name(REGISTER["CMD_COUNT"], REGISTER["CMD_COUNT"].fields[0]) == "cmd_count"
    with pytest.raises(ValueError, match="no value for the const register"):
        RegisterFile({"ID": 1})


def test_the_map_is_checked():
    with pytest.raises(ValueError, match="overlap"):
        Register("X", 0, "", (Field("A", 0, 4, "r"), Field("B", 3, 2, "r")))
    with pytest.raises(ValueError, match="leave the 32-bit register"):
        Register("X", 0, "", (Field("A", 30, 4, "r"),))
    with pytest.raises(ValueError, match="access must be one of"):
        Register("X", 0, "", (Field("A", 0, 1, "wo"),))


def test_json_and_docs_come_from_the_map():
    m = register_map(preset("tiny"))
    status = next(r for r in m["registers"] if r["name"] == "STATUS")
    assert [(f["name"], f["lsb"], f["width"], f["access"]) for f in status["fields"]] == [
        ("BUSY", 0, 1, "r"), ("DONE", 1, 1, "r/w1c"), ("ERROR", 2, 1, "r"),
        ("CODE", 8, 4, "r")]
    ident = next(r for r in m["registers"] if r["name"] == "CONFIG_HASH")
    assert ident["fields"][0]["init"] == preset("tiny").hash32
    doc = Path(__file__).parents[1] / "docs" / "registers.md"
    assert doc.read_text() == register_map_markdown(), \
        "docs/registers.md is stale: run `tessera registers -o docs/registers.md`"
