"""The in-order AXI4 read arbiter (``hw/read_arbiter.py``) in Amaranth's simulator: two
managers with random bursts, random choices, backpressure on AR and R; every beat reaches
the manager that asked for it, in order, and a waiting request keeps its manager."""

import random

import pytest
from amaranth.sim import Simulator

from tessera.hw.read_arbiter import ReadArbiter


def _run(seed: int, depth: int, ar_ready_p: float, r_ready_p: float, bursts: int = 12):
    rng = random.Random(seed)
    dut = ReadArbiter(addr_bits=16, data_bits=32, depth=depth)
    # Each manager's bursts: (address, beats - 1); addresses tell the managers apart.
    wanted = [[(0x1000 * (i + 1) + 0x40 * k, rng.randrange(4)) for k in range(bursts)]
              for i in range(2)]
    got = [[], []]
    expect = [[a + 4 * b for a, n in w for b in range(n + 1)] for w in wanted]
    log = {"max_inflight": 0}

    async def bench(ctx):
        pending = [list(w) for w in wanted]
        inflight = []          # bursts taken by the subordinate: [owner, addr, beats left, beat]
        held = None            # (address) of a request left waiting on the bus
        for _ in range(4000):
            if not any(pending) and not inflight:
                break
            for i, mgr in enumerate((dut.m0, dut.m1)):
                ctx.set(mgr.arvalid, bool(pending[i]))
                if pending[i]:
                    ctx.set(mgr.araddr, pending[i][0][0])
                    ctx.set(mgr.arlen, pending[i][0][1])
                ctx.set(mgr.rready, rng.random() < r_ready_p)
            ctx.set(dut.choose, rng.randrange(2))
            ctx.set(dut.bus.arready, rng.random() < ar_ready_p)
            if inflight:
                owner, addr, left, beat = inflight[0]
                ctx.set(dut.bus.rvalid, 1)
                ctx.set(dut.bus.rdata, addr + 4 * beat)
                ctx.set(dut.bus.rlast, left == 0)
            else:
                ctx.set(dut.bus.rvalid, 0)
            # the settled outputs of this cycle
            arvalid, arready = ctx.get(dut.bus.arvalid), ctx.get(dut.bus.arready)
            if held is not None:
                assert arvalid and ctx.get(dut.bus.araddr) == held, "a waiting request moved"
            taken = [ctx.get(mgr.arready) and ctx.get(mgr.arvalid)
                     for mgr in (dut.m0, dut.m1)]
            if arvalid and arready:
                assert sum(taken) == 1
                i = taken.index(True)
                addr, n = pending[i].pop(0)
                assert ctx.get(dut.bus.araddr) == addr and ctx.get(dut.bus.arlen) == n
                inflight.append([i, addr, n, 0])
                log["max_inflight"] = max(log["max_inflight"], len(inflight))
            else:
                assert not any(taken)
            held = ctx.get(dut.bus.araddr) if arvalid and not arready else None
            rvalid = [ctx.get(mgr.rvalid) for mgr in (dut.m0, dut.m1)]
            if inflight and ctx.get(dut.bus.rready):
                owner = inflight[0][0]
                assert rvalid == [owner == 0, owner == 1]
                got[owner].append(ctx.get((dut.m0, dut.m1)[owner].rdata))
                inflight[0][3] += 1
                inflight[0][2] -= 1
                if inflight[0][2] < 0:
                    inflight.pop(0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expect
    return log


@pytest.mark.parametrize("seed, depth, ar_p, r_p", [
    (1, 4, 1.0, 1.0), (2, 4, 0.5, 0.5), (3, 1, 0.7, 0.3), (4, 32, 0.3, 0.9)])
def test_beats_reach_their_manager_in_order(seed, depth, ar_p, r_p):
    log = _run(seed, depth, ar_p, r_p)
    assert log["max_inflight"] <= depth


def test_depth_limits_bursts_in_flight():
    assert _run(5, 2, 1.0, 0.1)["max_inflight"] == 2


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        ReadArbiter(16, 32, depth=0)
