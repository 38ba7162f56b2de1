"""The command queues with their tokens and deadlock detection (``hw/queues.py``) in
Amaranth's simulator: a command waiting for a token is held until its neighbour completes
the command that signals it; completions keep their order and indices; a program that can
never move is reported as a deadlock at its earliest blocked command; ``stop`` drops what
is queued."""

from amaranth.sim import Simulator

from tessera.hw.config import preset
from tessera.hw.isa import Command, Opcode, Queue, command_bits, encode
from tessera.hw.queues import DEADLOCK_CYCLES, CommandQueues

CFG = preset("tiny")


def _entry(cmd: Command, index: int) -> int:
    return encode(CFG, cmd) | index << command_bits(CFG)


def _simulate(bench):
    dut = CommandQueues(CFG)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def run(ctx):
        ctx.set(dut.running, 1)
        await bench(ctx, dut)

    sim.add_testbench(run)
    sim.run()


async def _pulse(ctx, port):
    """``port`` high for one cycle."""
    ctx.set(port, 1)
    await ctx.tick()
    ctx.set(port, 0)


async def _push(ctx, dut, queue: str, entry: int):
    ctx.set(dut.i_entry.as_value(), entry)
    ctx.set(getattr(dut, f"push_{queue}"), 1)
    assert ctx.get(getattr(dut, f"room_{queue}"))
    await ctx.tick()
    ctx.set(getattr(dut, f"push_{queue}"), 0)


def test_a_token_holds_the_waiting_command_until_it_is_signalled():
    load = Command(Opcode.LOAD, {}, signal_next=True)
    compute = Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True)

    async def bench(ctx, dut):
        for q in ("load", "exec", "store"):
            ctx.set(getattr(dut, f"{q}_ready"), 1)
        await _push(ctx, dut, "exec", _entry(compute, 0))
        await _push(ctx, dut, "load", _entry(load, 1))
        issued_load = None
        for cycle in range(20):
            if ctx.get(dut.load_valid):
                issued_load = cycle
            # the execute head never issues before the LOAD has completed
            assert not ctx.get(dut.exec_valid), cycle
            if cycle == 10:
                ctx.set(dut.load_done_valid, 1)     # the DMA completes the LOAD
                assert ctx.get(dut.load_done) and ctx.get(dut.load_done_index) == 1
                await ctx.tick()
                ctx.set(dut.load_done_valid, 0)
                break
            await ctx.tick()
        assert issued_load == 0
        assert ctx.get(dut.exec_valid)          # the token is there now
        await ctx.tick()
        ctx.set(dut.exec_done_valid, 1)
        assert ctx.get(dut.exec_done) and ctx.get(dut.exec_done_index) == 0
        await _pulse(ctx, dut.exec_done_valid)
        await ctx.tick()
        assert ctx.get(dut.idle) and not ctx.get(dut.deadlock)

    _simulate(bench)


def test_a_program_that_cannot_move_is_a_deadlock_at_its_earliest_command():
    waits = Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True)
    store = Command(Opcode.NOP, {"queue": Queue.STORE}, wait_prev=True)

    async def bench(ctx, dut):
        await _push(ctx, dut, "store", _entry(store, 7))
        await _push(ctx, dut, "exec", _entry(waits, 4))
        ctx.set(dut.dispatch_stuck, 1)
        for _ in range(DEADLOCK_CYCLES):
            assert not ctx.get(dut.deadlock)
            assert ctx.get(dut.exec_blocked) and ctx.get(dut.store_blocked)
            await ctx.tick()
        assert ctx.get(dut.deadlock) and ctx.get(dut.deadlock_index) == 4
        # stop drops the queued commands
        await _pulse(ctx, dut.stop)
        await ctx.tick()
        assert ctx.get(dut.idle) and not ctx.get(dut.deadlock)

    _simulate(bench)


def test_a_dispatcher_that_can_still_move_is_no_deadlock():
    waits = Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_prev=True)

    async def bench(ctx, dut):
        await _push(ctx, dut, "exec", _entry(waits, 2))
        ctx.set(dut.dispatch_stuck, 0)          # e.g. a LOAD that signals it is coming
        for _ in range(3 * DEADLOCK_CYCLES):
            await ctx.tick()
            assert not ctx.get(dut.deadlock)

    _simulate(bench)
