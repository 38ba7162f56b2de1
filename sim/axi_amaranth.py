"""An AXI4 manager for Amaranth's simulator: one burst at a time, as async testbench
helpers, with pause generators for idle cycles (valid low) and backpressure (ready low)."""

from __future__ import annotations

from .amaranth_streams import never

__all__ = ["write_burst", "read_burst"]


async def write_burst(ctx, bus, addr: int, beats: list[int], strobes: list[int] | None = None,
                      *, size: int | None = None, burst: int = 0b01, pause=never,
                      max_cycles: int = 10_000) -> int:
    """Write ``beats`` from ``addr`` (``strobes``: each beat's byte enables, all by
    default); returns BRESP."""
    nbytes = len(bus.wdata) // 8
    strobes = strobes if strobes is not None else [(1 << nbytes) - 1] * len(beats)
    size = size if size is not None else (nbytes - 1).bit_length()
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.awlen, len(beats) - 1)
    ctx.set(bus.awsize, size)
    ctx.set(bus.awburst, burst)
    ctx.set(bus.awid, 3)
    ctx.set(bus.awvalid, 1)
    await ctx.tick().until(bus.awready)
    ctx.set(bus.awvalid, 0)
    for i, (beat, strobe) in enumerate(zip(beats, strobes, strict=True)):
        while pause():
            ctx.set(bus.wvalid, 0)
            await ctx.tick()
        ctx.set(bus.wdata, beat)
        ctx.set(bus.wstrb, strobe)
        ctx.set(bus.wlast, int(i == len(beats) - 1))
        ctx.set(bus.wvalid, 1)
        await ctx.tick().until(bus.wready)
    ctx.set(bus.wvalid, 0)
    ctx.set(bus.bready, 1)
    for _ in range(max_cycles):
        _, _, valid, resp, bid = await ctx.tick().sample(bus.bvalid, bus.bresp, bus.bid)
        if valid:
            ctx.set(bus.bready, 0)
            assert bid == 3, f"BID {bid}, not the AWID 3"
            return resp
    raise TimeoutError(f"no write response for the burst at {addr:#x}")


async def read_burst(ctx, bus, addr: int, n: int, *, size: int | None = None,
                     burst: int = 0b01, pause=never, max_cycles: int = 10_000):
    """Read ``n`` beats from ``addr``; returns ``(data, resps)``, checking RLAST and RID."""
    nbytes = len(bus.rdata) // 8
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arlen, n - 1)
    ctx.set(bus.arsize, size if size is not None else (nbytes - 1).bit_length())
    ctx.set(bus.arburst, burst)
    ctx.set(bus.arid, 5)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    data, resps = [], []
    for _ in range(max_cycles):
        ready = not pause()
        ctx.set(bus.rready, int(ready))
        _, _, valid, rdata, rresp, rlast, rid = await ctx.tick().sample(
            bus.rvalid, bus.rdata, bus.rresp, bus.rlast, bus.rid)
        if valid and ready:
            data.append(rdata)
            resps.append(rresp)
            assert rid == 5, f"RID {rid}, not the ARID 5"
            assert rlast == (len(data) == n), f"RLAST {rlast} on beat {len(data)} of {n}"
            if len(data) == n:
                ctx.set(bus.rready, 0)
                return data, resps
    raise TimeoutError(f"read burst at {addr:#x}: {len(data)} of {n} beats")
