"""The host link (hw/host_link.py) and the block-RAM main memory (hw/bram.py) in Amaranth's
simulator. The link is driven by the runtime's own client (sw/runtime/uart.py) through a
stream transport, with and without idle cycles and backpressure: every command, and the
error replies (bad command, out of range, a refused register access, a request left
incomplete). The memory's AXI4 side is driven by bursts: strobes, backpressure, the host
port's priority, DECERR outside the window, SLVERR for bursts it does not serve."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from tessera.hw.bram import READ_LATENCY_CYCLES, AxiBlockRam
from tessera.hw.config import preset
from tessera.hw.host_link import RESET_CYCLES, Command, HostLink, Status
from tessera.hw.isa import command_bits
from tessera.hw.register_file import RegisterFile
from tessera.hw.registers import MAGIC, MAP_VERSION, REG
from tessera.sim.amaranth_streams import never, random_pauses
from tessera.sim.axi_amaranth import read_burst, write_burst
from tessera.sim.host_link_amaranth import StreamTransport
from tessera.sw.runtime.uart import HostLinkClient, LinkError

TINY = preset("tiny")
BASE, SIZE = 0x4000_0000, 4096
TIMEOUT = 200


def _bench(timeout=TIMEOUT):
    link = HostLink(TINY, BASE, SIZE, clk_hz=20_000_000, timeout_cycles=timeout)
    ram = AxiBlockRam(TINY, SIZE, BASE)
    regs = RegisterFile({"ID": MAGIC, "VERSION": MAP_VERSION, "CONFIG_HASH": TINY.hash32,
                         "COMMAND_BITS": command_bits(TINY)})
    m = Module()
    m.submodules.link, m.submodules.ram, m.submodules.regs = link, ram, regs
    wiring.connect(m, link.m_axil, regs.bus)
    wiring.connect(m, link.mem, ram.host)
    return m, link, ram


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="size_bytes must be a positive multiple of the bus "
                                         r"width \(8 bytes\), not 100"):
        AxiBlockRam(TINY, 100, BASE)
    with pytest.raises(ValueError, match="base must be a multiple of 0x1000"):
        AxiBlockRam(TINY, 4096, BASE + 8)
    with pytest.raises(ValueError, match="timeout_cycles must be a positive 32-bit integer"):
        HostLink(TINY, BASE, SIZE, 20_000_000, 0)


@pytest.mark.parametrize("pauses", [False, True])
def test_every_command_through_the_runtimes_client(pauses):
    m, link, ram = _bench()
    sim = Simulator(m)
    sim.add_clock(1e-8)
    idle = random_pauses(0.3, 1) if pauses else never
    back = random_pauses(0.5, 2) if pauses else never
    transport = StreamTransport(sim, link.i_rx, link.o_tx, idle=idle, backpressure=back)
    resets, error = _watch(sim, link)
    host = HostLinkClient(transport)

    info = host.ping()
    assert (info.config_hash, info.mem_base, info.mem_size, info.bus_bytes, info.clk_hz) == \
        (TINY.hash32, BASE, SIZE, 8, 20_000_000)
    assert host.reg_read(REG["ID"]) == MAGIC
    assert host.reg_read(REG["CONFIG_HASH"]) == TINY.hash32
    host.reg_write(REG["CMD_COUNT"], 0x1234_5678)
    assert host.reg_read(REG["CMD_COUNT"]) == 0x1234_5678
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    host.mem_write(BASE + 13, data)                       # unaligned, across words
    assert host.mem_read(BASE + 13, 200) == data
    assert host.mem_read(BASE + 12, 1) == b"\0"           # its neighbours untouched
    assert host.mem_read(BASE + 213, 3) == b"\0\0\0"
    host.mem_write(BASE + SIZE - 3, b"end")               # the last bytes
    assert host.mem_read(BASE + SIZE - 4, 4) == b"\0end"
    assert error == [0]
    assert sum(resets) == 0
    host.reset()
    assert sum(resets) == RESET_CYCLES
    assert host.reg_read(REG["CMD_COUNT"]) == 0x1234_5678   # the registers are not the link's

    # Error replies: each one answered, the link in step afterwards.
    cases = [
        (lambda: host.reg_read(0xFFC), Status.BUS_ERROR),       # no register there
        (lambda: host.reg_write(0x1000, 1), Status.OUT_OF_RANGE),
        (lambda: host.reg_read(0x1000), Status.OUT_OF_RANGE),
        (lambda: host.mem_read(BASE + SIZE - 2, 3), Status.OUT_OF_RANGE),   # past the end
        (lambda: host.mem_read(BASE - 1, 1), Status.OUT_OF_RANGE),
        (lambda: host.mem_write(BASE + SIZE - 2, b"xyz"), Status.OUT_OF_RANGE),
        (lambda: host.mem_write(0, b"abc"), Status.OUT_OF_RANGE),
        (lambda: host.mem_read(0xFFFF_FFFF, 2), Status.OUT_OF_RANGE),  # no wrap-around
        (lambda: host.request(0x77), Status.BAD_COMMAND),
        (lambda: host.request(0x00), Status.BAD_COMMAND),
    ]
    for call, status in cases:
        with pytest.raises(LinkError) as e:
            call()
        assert e.value.status == status
        assert host.ping() == info
    assert host.mem_read(BASE + SIZE - 4, 4) == b"\0end"  # the refused write wrote nothing
    assert host.mem_read(BASE, 0) == b""
    assert error == [1]


def _watch(sim, link):
    """The cycles of ``accel_reset`` (a list of levels) and the ``error`` output (a
    one-element list, kept up to date)."""
    resets, error = [], [0]

    async def watch(ctx):
        async for _, _, r, e in ctx.tick().sample(link.accel_reset, link.error):
            resets.append(r)
            error[0] = e

    sim.add_testbench(watch, background=True)
    return resets, error


def test_an_incomplete_request_times_out_and_the_link_recovers():
    m, link, _ = _bench(timeout=50)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    transport = StreamTransport(sim, link.i_rx, link.o_tx, max_cycles=40)
    _, error = _watch(sim, link)
    host = HostLinkClient(transport)
    for partial in (bytes([Command.MEM_READ.value, 0, 0]),
                    bytes([Command.MEM_WRITE.value]) + BASE.to_bytes(4, "little")
                    + (100).to_bytes(4, "little") + b"only some"):
        transport.write(partial)
        assert transport.read(1) == b""                  # no reply within 40 cycles ...
        assert transport.read(1) == b""                  # ... nor after the timeout
        assert host.ping().mem_size == SIZE               # and it takes a new request
    assert host.mem_read(BASE, 9) == b"only some"
    assert error == [1]


@pytest.mark.parametrize("pauses", [False, True])
def test_block_ram_serves_bursts_with_strobes_beside_the_host(pauses):
    ram = AxiBlockRam(TINY, SIZE, BASE)
    bus, words = ram.s_axi, []
    rng = random.Random(7)
    beats = [rng.getrandbits(64) for _ in range(20)]
    strobes = [rng.getrandbits(8) for _ in beats]
    pause = random_pauses(0.3, 3) if pauses else never
    out = {}

    async def manager(ctx):
        out["w"] = await write_burst(ctx, bus, BASE + 64, beats, pause=pause)
        out["r"] = await read_burst(ctx, bus, BASE + 64, len(beats), pause=pause)
        out["ws"] = await write_burst(ctx, bus, BASE + 64, [0] * len(beats), strobes,
                                      pause=pause)
        out["rs"] = await read_burst(ctx, bus, BASE + 64, len(beats), pause=pause)
        # Across the end of the window: the beats inside are served, the burst DECERR.
        out["wend"] = await write_burst(ctx, bus, BASE + SIZE - 8, [1, 2])
        out["rend"] = await read_burst(ctx, bus, BASE + SIZE - 8, 2)
        out["wfixed"] = await write_burst(ctx, bus, BASE, [7], burst=0b00)
        out["rnarrow"] = await read_burst(ctx, bus, BASE + 64, 1, size=2)
        # Latency of a read with the host quiet.
        while "host" not in out:
            await ctx.tick()
        ctx.set(bus.araddr, BASE)
        ctx.set(bus.arlen, 0)
        ctx.set(bus.arsize, 3)
        ctx.set(bus.arburst, 1)
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.rready, 1)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        n = 0
        while not ctx.get(bus.rvalid):
            await ctx.tick()
            n += 1
        out["latency"] = n
        await ctx.tick()
        ctx.set(bus.rready, 0)

    async def host(ctx):
        # Host reads and writes beside the bursts, at another address (priority: they are
        # never held up).
        port = ram.host
        for i in range(60):
            ctx.set(port.req.payload.addr, 400 + i % 4)
            ctx.set(port.req.payload.mask, 0xFF if i < 4 else 0)
            ctx.set(port.req.payload.data, 0x1111_1111 * (i + 1))
            ctx.set(port.req.valid, 1)
            _, _, ready = await ctx.tick().sample(port.req.ready)
            assert ready
            ctx.set(port.req.valid, 0)
            _, _, resp = await ctx.tick().sample(port.resp)
            if i >= 4:
                assert resp.valid
                words.append(resp.data)
            for _ in range(rng.randrange(3)):
                await ctx.tick()
        out["host"] = True

    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(manager)
    sim.add_testbench(host)
    sim.run()
    assert out["w"] == 0 and out["r"] == (beats, [0] * len(beats))
    mask = [sum(0xFF << 8 * k for k in range(8) if s >> k & 1) for s in strobes]
    assert out["rs"][0] == [b & ~mk for b, mk in zip(beats, mask, strict=True)]
    assert out["wend"] == 3 and out["rend"] == ([1, 0], [0, 3])      # DECERR
    assert out["wfixed"] == 2 and out["rnarrow"] == ([0], [2])       # SLVERR
    assert out["latency"] == READ_LATENCY_CYCLES
    assert words == [0x1111_1111 * (i % 4 + 1) for i in range(4, 60)]
