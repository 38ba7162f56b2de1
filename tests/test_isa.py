"""The command set: encode / decode round trips, token rules, range checks, the
disassembler, and docs/isa.md kept in step with hw/isa.py."""

from pathlib import Path

import numpy as np
import pytest
from amaranth.lib.enum import Enum

from tessera.hw.config import PRESETS, preset
from tessera.hw.isa import (
    QUEUE_OF,
    Command,
    Opcode,
    Queue,
    _tree,
    check_tokens,
    command_bits,
    command_layout_for,
    decode,
    disassemble,
    encode,
    isa_markdown,
    used_bits,
)
from tessera.hw.output_path import OutputDigit, OutputOp
from tessera.sw.cli import main

CFG = preset("default")

EXAMPLES = [
    Command(Opcode.CONFIG, {"os": 1}),
    Command(Opcode.LOAD, {"dram_addr": 0x8000_1234, "stride": 768, "rows": 64, "row_bytes": 16,
                          "local_addr": 4096, "to_acc": 1, "accumulate": 1, "scale": -7,
                          "wide": 0, "shift": 1},
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
    Command(Opcode.STORE, {"desc": {"op": OutputOp.GELU, "length": 384, "rows": 8, "m": 7,
                                    "e": 30,
                                    "consts": {"out": {"gelu": {"shift": -3, "q_b": -9000,
                                                                "q_c": -2**28, "poly_shift": 5},
                                                       "digit": OutputDigit.HIGH}}},
                           "acc_addr": 1, "to_spad": 0, "spad_addr": 0,
                           "dram_addr": 0x8000_0000, "stride": 384, "transpose": 0,
                           "param_addr": 0, "blocked": 0, "prescale": 0}),
    Command(Opcode.STORE, {"desc": {"op": OutputOp.LAYERNORM, "length": 384, "rows": 8,
                                    "m": 7, "e": 30,
                                    "consts": {"out": {"digit": OutputDigit.LOW}}},
                           "acc_addr": 1, "to_spad": 1, "spad_addr": 4, "dram_addr": 0,
                           "stride": 0, "transpose": 0, "param_addr": 900, "blocked": 1,
                           "prescale": 1}),
    Command(Opcode.PRELOAD, {"spad_addr": 16383}, wait_prev=True, wait_next=True),
    Command(Opcode.COMPUTE, {"a_addr": 1, "b_addr": 2, "rows": 65535, "acc_addr": 1023,
                             "accumulate": 1, "shift": 1, "count": 1024, "a_stride": 16383},
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


def _random_args(rng, tree: dict) -> dict:
    """Random values for the fields of ``tree`` (one alternative of a union), with the
    same values as Layout.const takes them."""
    out = {}
    for name, field in tree.items():
        if isinstance(field, dict):
            if name == "consts":        # a union: one alternative
                alt = sorted(field)[rng.integers(len(field))]
                out[name] = {alt: _random_args(rng, field[alt])}
            else:
                out[name] = _random_args(rng, field)
        elif field.enum is not None:
            members = list(field.enum)
            out[name] = members[rng.integers(len(members))]
        else:
            out[name] = int(rng.integers(field.lo, field.hi, endpoint=True))
    return out


def _fields_of(view, args: dict) -> dict:
    """The fields named in ``args`` as Amaranth's Layout view reads them."""
    def number(name):
        """An enum field's value as decode gives it: a number when no member has it."""
        field = view.shape()[name]
        return view.as_value().value >> field.offset & ((1 << field.width) - 1)

    return {name: _fields_of(view[name], value) if isinstance(value, dict) else
            (view[name] if isinstance(value, Enum) else
             number(name) if isinstance(view.shape()[name].shape, type) else int(view[name]))
            for name, value in args.items()}


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_encode_and_decode_agree_with_the_layouts(name):
    """encode packs and decode unpacks with shifts and masks from the layouts' offsets: the
    words are Layout.const's, the fields from_bits's, for every opcode and random values
    (signed fields, enums, union alternatives, every legal token), and decode ignores the
    reserved bits."""
    cfg = preset(name)
    layout, bits = command_layout_for(cfg), command_bits(cfg)
    rng = np.random.default_rng(7)
    for op in Opcode:
        tree = _tree(cfg, op)
        for _ in range(60):
            args = _random_args(rng, tree) if tree is not None else {}
            queue = args["queue"] if op == Opcode.NOP else QUEUE_OF[op]
            tokens = {t: bool(rng.integers(2)) for t in
                      ("wait_prev", "wait_next", "signal_prev", "signal_next")}
            cmd = Command(op, args, **tokens)
            try:
                check_tokens(cmd)
            except ValueError:
                with pytest.raises(ValueError):
                    encode(cfg, cmd)
                continue
            init = {"header": {"opcode": op, **{t: int(v) for t, v in tokens.items()}}}
            if tree is not None:
                init["args"] = {op.name.lower(): args}
            word = encode(cfg, cmd)
            assert word == layout.const(init).as_bits(), (op, args, tokens, queue)
            # numpy integers and bools take the checked way: the same word
            slow = Command(op, {k: np.int64(v) if type(v) is int else v
                                for k, v in args.items()}, **tokens)
            assert encode(cfg, slow) == word
            reserved = int(rng.integers(1 << 62)) << 2 | 3
            noisy = word | (reserved & ~used_bits(cfg, op) & ((1 << bits) - 1))
            got = decode(cfg, noisy)
            assert got == decode(cfg, word)
            assert (got.opcode, got.wait_prev, got.wait_next, got.signal_prev,
                    got.signal_next) == (op, *tokens.values())
            view = layout.from_bits(noisy)
            if tree is not None:
                assert got.args == _fields_of(view.args[op.name.lower()], got.args)
                if op != Opcode.STORE:      # decode keeps the constants the op reads
                    assert got.args == args
    # values that do not fit, or of the wrong kind, are refused as before
    with pytest.raises(ValueError, match="between"):
        encode(cfg, Command(Opcode.PRELOAD, {"spad_addr": -1}))
    with pytest.raises(ValueError, match="no argument"):
        encode(cfg, Command(Opcode.PRELOAD, {"spad": 1}))
    with pytest.raises(ValueError, match="not allowed"):
        encode(cfg, Command(Opcode.LOAD, {}, wait_prev=True))
    with pytest.raises(ValueError, match="DISPATCH"):
        encode(cfg, Command(Opcode.NOP, {"queue": Queue.DISPATCH}))
