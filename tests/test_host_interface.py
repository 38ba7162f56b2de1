"""The host interface misused, on the whole simulated system (native Verilator harness):
START while a program runs, registers that do not exist, a reset in the middle of a
program, and a hung program told apart from a deadlock (docs/semantics.md)."""

import numpy as np
import pytest
from test_lowering import gemm_on, output_spec

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode, Queue, command_bits, encode
from tessera.hw.registers import (
    CONTROL_IRQ_ENABLE,
    CONTROL_START,
    OUTCOME_READS,
    REG,
    outcome,
    start_writes,
)
from tessera.sim.native import NativeSim
from tessera.sim.runner import SimulationFailed
from tessera.sw.runtime import Runtime

TINY = preset("tiny")
pytestmark = pytest.mark.rtl


class _Snapshot(Runtime):
    """A golden runtime that keeps main memory as it was before its last run."""

    def run(self, program, **kw):
        self.before = self.image.copy()
        return super().run(program, **kw)


@pytest.fixture(scope="module")
def product():
    """A lowered product: an RTL runtime holding its inputs, the program, main memory
    before and after it on the golden model, and the RTL's cycles for it."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (21, 30)), rng.integers(-128, 128, (30, 18))
    bias = rng.integers(-2**18, 2**18, 18)
    gold = _Snapshot(TINY, "golden")
    gemm_on(gold, a, b, bias, output_spec("gelu"))
    rt = Runtime(TINY, "verilator")
    _, prog, result = gemm_on(rt, a, b, bias, output_spec("gelu"))
    assert result.ok
    n = rt._used
    return rt, prog, gold.before[:n].copy(), gold.image[:n].copy(), result.cycles


def _start(sim, rt, prog, before):
    """Main memory as before the program, the program after the runtime's allocations
    (where the golden run had it), then START."""
    rt.image[:len(before)] = before
    nbytes = command_bits(TINY) // 8
    buf = rt.alloc(len(prog) * nbytes, align=max(64, nbytes))
    rt._top -= len(prog) * nbytes
    rt.write(buf, b"".join(encode(TINY, c).to_bytes(nbytes, "little") for c in prog))
    job = {"cmd_addr": buf, "cmd_count": len(prog), "window_base": rt.mem_base,
           "window_size": rt.mem_size}
    for offset, value in start_writes(job):
        sim.write(offset, value)
    return job


def _outcome(sim):
    """The run's outcome; the protocol checkers must have seen nothing wrong."""
    assert sim.protocol() is None
    return outcome({key: sim.read64(offset) if wide else sim.read(offset)
                    for key, offset, wide in OUTCOME_READS})


def _open(rt):
    sim = NativeSim(TINY, rt._shared)
    sim.reset(4)
    sim.memory_timing(100, 0)
    return sim


def test_start_while_running_is_ignored(product):
    rt, prog, before, after, cycles = product
    with _open(rt) as sim:
        job = _start(sim, rt, prog, before)
        sim._ask("cycles 400")
        # START again, and another command count, in the middle of the run: the run goes
        # on with the parameters it started with.
        sim.write(REG["CMD_COUNT"], 1)
        sim.write(REG["CONTROL"], CONTROL_START | CONTROL_IRQ_ENABLE)
        assert sim.run(1_000_000).finished
        out = _outcome(sim)
    assert out["error_code"] == 0
    assert out["counters"]["cycles"] == cycles
    assert out["counters"]["commands"] == job["cmd_count"]
    assert (rt.image[:len(after)] == after).all()


def test_unmapped_and_read_only_registers_answer_slverr(product):
    rt, prog, before, after, cycles = product
    with _open(rt) as sim:
        for bad in (0xFFC, 0x800):
            with pytest.raises(SimulationFailed, match="answered 2"):
                sim.read(bad)
            with pytest.raises(SimulationFailed, match="answered 2"):
                sim.write(bad, 5)
        with pytest.raises(SimulationFailed, match="answered 2"):
            sim.write(REG["ID"], 0)
        assert sim.read(REG["ID"]) == 0x54535241
        # and a program then runs as ever
        _start(sim, rt, prog, before)
        assert sim.run(1_000_000).finished
        assert _outcome(sim)["counters"]["cycles"] == cycles
    assert (rt.image[:len(after)] == after).all()


def test_a_reset_in_the_middle_of_a_program(product):
    """Reset while the program's loads, products and stores are in flight; the program,
    run again from the start, gives the golden model's memory in the same cycles."""
    rt, prog, before, after, cycles = product
    with _open(rt) as sim:
        _start(sim, rt, prog, before)
        sim._ask(f"cycles {cycles // 2}")
        assert sim.read(REG["STATUS"]) & 1          # busy
        sim.reset(4)
        assert sim.read(REG["STATUS"]) == 0
        _start(sim, rt, prog, before)
        assert sim.run(1_000_000).finished
        out = _outcome(sim)
    assert out["error_code"] == 0 and out["counters"]["cycles"] == cycles
    assert (rt.image[:len(after)] == after).all()


def test_a_hang_is_a_timeout_and_a_deadlock_is_not():
    rt = Runtime(TINY, "verilator")
    # A long program cut short: TIMEOUT (the hardware saw no deadlock).
    loads = [Command(Opcode.LOAD, dict(dram_addr=rt.mem_base, stride=4, rows=200,
                                       row_bytes=4, local_addr=0))] * 20
    r = rt.run(loads + [Command(Opcode.FINISH, {})], timeout_cycles=300)
    assert r.error == ErrorCode.TIMEOUT and "no completion within 300 cycles" in r.message
    # A wait nothing answers: DEADLOCK, from the hardware, with its index.
    r = rt.run([Command(Opcode.NOP, {"queue": Queue.LOAD}),
                Command(Opcode.NOP, {"queue": Queue.STORE}, wait_prev=True),
                Command(Opcode.FINISH, {})], timeout_cycles=10_000)
    assert (r.error, r.error_index) == (ErrorCode.DEADLOCK, 1)
    # and the runtime runs the next program as ever
    assert rt.run(loads[:1] + [Command(Opcode.FINISH, {})]).ok


@pytest.mark.parametrize("word, want", [(1, (ErrorCode.FETCH, 1)), (3, (ErrorCode.NONE, None))])
def test_a_command_word_that_cannot_be_read_is_refused_in_its_turn(word, want):
    """FETCH at the failing word's index, whenever the fetcher (which reads ahead) saw the
    error: the words before it are dispatched and run first; after a FINISH it is never
    reached."""
    from tessera.sw.runtime import BusFaults, ErrorRange

    rt = Runtime(TINY, "verilator")
    data = rt.alloc(256)
    prog = [Command(Opcode.LOAD, dict(dram_addr=data, stride=4, rows=64, row_bytes=4,
                                      local_addr=0)),
            Command(Opcode.NOP, {"queue": Queue.EXECUTE}),
            Command(Opcode.FINISH, {}),
            Command(Opcode.NOP, {"queue": Queue.STORE}),
            Command(Opcode.NOP, {"queue": Queue.STORE})]
    nbytes = command_bits(TINY) // 8
    align = max(64, nbytes)
    buf = -(-(rt.mem_base + rt._top) // align) * align      # where run() puts the buffer
    at = buf + word * nbytes
    rt.faults = BusFaults(seed=1, errors=(ErrorRange(at, at + 1, "slverr"),))
    r = rt.run(prog)
    assert (r.error, r.error_index) == want, r.describe()
    if r.error == ErrorCode.FETCH:
        assert r.error_addr == at and r.counters["commands"] == word
        assert r.counters["bytes_read"] >= 64 * 4      # the LOAD before it ran
