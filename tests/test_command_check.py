"""The dispatcher's command checks (``hw/command_check.py``) against the golden executor's
(``Machine._check_dispatch``), on random command words in Amaranth's simulator: the same
error code for every word and dispatch state, and the same queue."""

import random

import pytest
from amaranth.sim import Simulator

from tessera.hw.command_check import CommandCheck
from tessera.hw.config import preset
from tessera.hw.isa import (
    ErrorCode,
    Opcode,
    Queue,
    _tree,
    command_bits,
    command_layout_for,
    decode,
    header_layout,
)
from tessera.sw.golden.executor import Machine


def _leaves(tree):
    for field in tree.values():
        if isinstance(field, dict):
            yield from _leaves(field)
        else:
            yield field


def _random_word(rng: random.Random, config) -> int:
    """A command word: any opcode (some that do not exist), any tokens, and each argument
    field near its limits or anywhere in its bits."""
    raw_op = rng.choice([o.value for o in Opcode] * 3 + [8, 11, 15])
    word = 0
    if raw_op <= max(o.value for o in Opcode) and _tree(config, Opcode(raw_op)):
        for f in _leaves(_tree(config, Opcode(raw_op))):
            top = (1 << f.width) - 1
            near_end = max(f.lo, f.hi - rng.randrange(40))   # row ranges' last tiles
            value = rng.choice([0, 1, f.hi, near_end, near_end, rng.randrange(top + 1), top,
                                rng.randrange(min(top, 64) + 1)])
            word |= (value & top) << f.offset
    if raw_op == Opcode.COMPUTE.value and rng.random() < 0.5:
        word = _at_the_edges(rng, config, word)
    h = header_layout()
    base = command_layout_for(config)["header"].offset
    word |= raw_op << (base + h["opcode"].offset)
    for name in ("wait_prev", "wait_next", "signal_prev", "signal_next"):
        if rng.random() < 0.15:
            word |= 1 << (base + h[name].offset)
    return word


def _at_the_edges(rng: random.Random, config, word: int) -> int:
    """A COMPUTE whose row ranges end just before, at or just after their memory's end."""
    f = _tree(config, Opcode.COMPUTE)
    R = config.rows
    rows = rng.randrange(1, 2 * R + 2)
    count = rng.randrange(0, 4)
    stride = rng.randrange(0, 2 * R)
    ends = {"rows": rows, "count": count, "a_stride": stride,
            "a_addr": config.spad_rows - rows - max(count - 1, 0) * stride,
            "b_addr": config.spad_rows - (count * R if count else rows),
            "acc_addr": config.acc_rows - rows}
    if rng.random() < 0.3:     # the output-stationary accumulator range
        ends["acc_addr"] = config.acc_rows - R
    for name, value in ends.items():
        if name not in ("rows", "count", "a_stride"):
            value += rng.choice([-1, 0, 1])
        field = f[name]
        mask = (1 << field.width) - 1
        word = (word & ~(mask << field.offset)) | ((max(value, 0) & mask) << field.offset)
    return word


def _golden(machine: Machine, config, word: int, os_mode: bool, weights: bool):
    """The golden executor's verdict: (code, queue), or None if it cannot decode the
    word's fields (not the dispatcher's concern: the units check them)."""
    try:
        cmd = decode(config, word)
    except ValueError:
        raw = (word >> (command_layout_for(config)["header"].offset
                        + header_layout()["opcode"].offset)) & 15
        return (ErrorCode.ILLEGAL_OPCODE, None) if raw > 7 else None
    try:
        machine._check_dispatch(cmd, os_mode, weights)
    except Exception as e:            # the executor's refusal, with its code
        return e.code, cmd.queue
    return ErrorCode.NONE, cmd.queue


@pytest.mark.parametrize("name, dataflow", [("tiny", "both"), ("tiny", "ws"),
                                            ("default", "both")])
def test_the_checks_equal_the_golden_executor(name, dataflow):
    config = preset(name).replace(dataflow=dataflow)
    dut = CommandCheck(config)
    machine = Machine(config, 1 << 16)
    rng = random.Random(hash((name, dataflow)) & 0xFFFF)
    seen = {"compared": 0, "codes": set()}

    async def bench(ctx):
        for _ in range(3000):
            word = _random_word(rng, config)
            os_mode, weights = rng.random() < 0.3, rng.random() < 0.7
            want = _golden(machine, config, word, os_mode, weights)
            if want is None:
                continue
            ctx.set(dut.word.as_value(), word)
            ctx.set(dut.os_mode, os_mode)
            ctx.set(dut.weights, weights)
            code, queue = want
            assert ErrorCode(ctx.get(dut.code.as_value())) == code, (hex(word), os_mode,
                                                                    weights)
            if code == ErrorCode.NONE:
                routes = (ctx.get(dut.to_load), ctx.get(dut.to_exec), ctx.get(dut.to_store),
                          ctx.get(dut.is_sync))
                assert routes == (queue == Queue.LOAD, queue == Queue.EXECUTE,
                                  queue == Queue.STORE, queue == Queue.DISPATCH)
            seen["compared"] += 1
            seen["codes"].add(code)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert seen["compared"] > 2000
    # every verdict the dispatcher can give was met
    assert {ErrorCode.NONE, ErrorCode.ILLEGAL_OPCODE, ErrorCode.ILLEGAL_TOKEN,
            ErrorCode.LOCAL, ErrorCode.ILLEGAL_FIELD} <= seen["codes"]
    assert command_bits(config) >= len(dut.word.as_value())
