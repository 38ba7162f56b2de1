"""The command set: encode / decode round trips, token rules, range checks, the
disassembler, and docs/isa.md kept in step with hw/isa.py."""

from pathlib import Path

import pytest

from tessera.hw.config import PRESETS, preset
from tessera.hw.isa import (
    QUEUE_OF,
    Command,
    Opcode,
    Queue,
    command_bits,
    command_layout_for,
    decode,
    disassemble,
    encode,
    isa_markdown,
)
from tessera.hw.output_path import OutputOp
from tessera.sw.cli import main

CFG = preset("default")

EXAMPLES = [
    Command(Opcode.CONFIG, {"os": 1}),
    Command(Opcode.LOAD, {"dram_addr": 0x8000_1234, "stride": 768, "rows": 64, "row_bytes": 16,
                          "local_addr": 4096, "to_acc": 1, "accumulate": 1, "scale": -7,
                          "wide": 0},
            signal_next=True),
    Command(Opcode.STORE, {"desc": {"op": OutputOp.SOFTMAX, "length": 128, "rows": 16,
                                    "m": 12345, "e": 40,
                                    "consts": {"exp": {"shift": -3, "ln2_q": 9000,
                                                       "q_b": 40000, "q_c": 2**30,
                                                       "out_shift": 9}}},
                           "acc_addr": 17, "to_spad": 1, "spad_addr": 300,
                           "dram_addr": 0, "stride": 0, "transpose": 1, "param_addr": 9,
                           "blocked": 1, "prescale": 1},
            wait_prev=True, signal_prev=True),
    Command(Opcode.PRELOAD, {"spad_addr": 16383}, wait_prev=True, wait_next=True),
    Command(Opcode.COMPUTE, {"a_addr": 1, "b_addr": 2, "rows": 65535, "acc_addr": 1023,
                             "accumulate": 1, "count": 1024, "a_stride": 16383},
            signal_prev=True, signal_next=True),
    Command(Opcode.FENCE, {}),
    Command(Opcode.FINISH, {}),
    Command(Opcode.NOP, {"queue": Queue.EXECUTE}, wait_next=True, signal_prev=True),
]


@pytest.mark.parametrize("cmd", EXAMPLES, ids=[c.opcode.name for c in EXAMPLES])
def test_round_trip(cmd):
    word = encode(CFG, cmd)
    assert 0 <= word < 1 << command_bits(CFG)
    assert decode(CFG, word) == cmd


def test_every_opcode_has_a_queue_and_widths_are_whole_words():
    assert set(QUEUE_OF) == set(Opcode)
    assert QUEUE_OF[Opcode.NOP] is None  # a NOP runs in the queue its argument names
    for cfg in PRESETS.values():
        bits = command_bits(cfg)
        assert bits % 64 == 0 and command_layout_for(cfg).size == bits


@pytest.mark.parametrize("cmd, message", [
    (Command(Opcode.LOAD, {}, wait_prev=True),
     "LOAD runs in the LOAD queue, which has no previous queue: wait_prev is not allowed"),
    (Command(Opcode.STORE, {}, signal_next=True),
     "STORE runs in the STORE queue, which has no next queue: signal_next is not allowed"),
    (Command(Opcode.FINISH, {}, wait_prev=True),
     "FINISH runs in the dispatcher, which has no neighbour queues"),
    (Command(Opcode.FENCE, {"x": 1}), r"FENCE takes no arguments, not \['x'\]"),
    (Command(Opcode.PRELOAD, {"spad_row": 1}), r"PRELOAD has no argument\(s\) spad_row"),
    (Command(Opcode.PRELOAD, {"spad_addr": 16384}),
     "PRELOAD: spad_addr must be between 0 and 16383, not 16384"),
    (Command(Opcode.LOAD, {"scale": 40000}), "LOAD: scale must be between -32768 and 32767"),
    (Command(Opcode.STORE, {"desc": {"m": -1}}), r"STORE.desc: m must be between 0 and"),
])
def test_bad_commands_are_refused(cmd, message):
    with pytest.raises(ValueError, match=message):
        encode(CFG, cmd)


def test_illegal_opcode_and_oversized_word():
    with pytest.raises(ValueError, match="illegal opcode 15 in command word 0xf"):
        decode(CFG, 0xF)
    with pytest.raises(ValueError, match="non-negative integer of 256 bits, not 257 bits"):
        decode(CFG, 1 << 256)
    with pytest.raises(ValueError, match="non-negative integer of 256 bits, not negative"):
        decode(CFG, -1)
    with pytest.raises(ValueError, match="an integer of 256 bits, not str"):
        decode(CFG, "x")


def test_disassembler():
    words = [encode(CFG, c) for c in EXAMPLES] + [0xF]
    lines = disassemble(CFG, words)
    assert lines[1].split()[1:3] == ["LOAD", "LOAD"] and "scale=-7" in lines[1]
    assert lines[1].endswith("[signal_next]")
    assert "op=SOFTMAX" in lines[2] and "[wait_prev signal_prev]" in lines[2]
    assert lines[-1].strip().endswith("<illegal opcode 15 in command word 0xf>")
    assert all(c.queue.name in line for c, line in zip(EXAMPLES, lines, strict=False))
    assert Queue.DISPATCH.name in lines[-3] and lines[-2].split()[1:3] == ["EXECUTE", "NOP"]


def test_docs_are_generated_from_the_module():
    doc = Path(__file__).parents[1] / "docs" / "isa.md"
    assert doc.read_text() == isa_markdown(CFG), \
        "docs/isa.md is stale: run `tessera isa -o docs/isa.md`"


def test_disasm_command(tmp_path, capsys):
    size = command_bits(CFG) // 8
    buf = b"".join(encode(CFG, c).to_bytes(size, "little") for c in EXAMPLES)
    (tmp_path / "cmds.bin").write_bytes(buf)
    # A raw dump of words (no header) is read with the configuration named.
    assert main(["disasm", "--preset", "default", str(tmp_path / "cmds.bin")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == disassemble(CFG, [encode(CFG, c) for c in EXAMPLES])
    (tmp_path / "bad.bin").write_bytes(buf[:-1])
    assert main(["disasm", "--preset", "default", str(tmp_path / "bad.bin")]) == 2
    assert "not a whole number of 32-byte commands" in capsys.readouterr().err
