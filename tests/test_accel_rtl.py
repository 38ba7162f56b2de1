"""The whole accelerator on the generated Verilog (tiny configuration, the Verilog memory
model): tiled products through command fetch, the queues and tokens, against the golden
executor bit for bit on both simulators; illegal commands and addresses stop cleanly with
the command's index; a deadlock is reported instead of hanging; the registers."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode, Queue, encode
from tessera.hw.output_path import OutputOp
from tessera.sw.lower.gemm import OutputSpec, reference_gemm, run_gemm
from tessera.sw.runtime import Runtime
from tessera.sw.runtime.diff import differential_check


def gemm_on(rt, a, b, bias, output):
    got, prog, result, _ = run_gemm(rt, a, b, bias, output, check=True)
    return got, prog, result


def output_spec(kind: str) -> OutputSpec:
    if kind == "gelu":
        return OutputSpec.gelu_of(1 / 2000, 0.05)
    return OutputSpec.requant(1 / 2500, relu=kind == "relu")

pytestmark = pytest.mark.rtl
TINY = preset("tiny")


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_products_match_the_golden_executor(sim):
    rng = np.random.default_rng(11)
    for (M, K, N), bias, kind in [((10, 13, 9), True, "relu"), ((21, 8, 30), False, "gelu")]:
        a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        bv = rng.integers(-2**18, 2**18, N) if bias else None
        out = output_spec(kind)
        rtl, gold = Runtime(TINY, sim), Runtime(TINY, "golden")
        got, prog, result = gemm_on(rtl, a, b, bv, out)
        want, _, gresult = gemm_on(gold, a, b, bv, out)
        assert (got == reference_gemm(TINY, a, b, bv, out)).all()
        assert np.array_equal(rtl.image, gold.image)      # every byte of main memory
        c = result.counters
        assert c["macs"] == gresult.counters["macs"] and c["commands"] == len(prog)
        assert c["cycles"] > 0 and c["array_busy"] * TINY.rows * TINY.cols == c["macs"]
        assert c["bytes_read"] >= gresult.counters["bytes_loaded"]


def test_differential_check_agrees_on_rtl():
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (6, 9)), rng.integers(-128, 128, (9, 7))
    setup = Runtime(TINY, "golden")
    _, prog, _ = gemm_on(setup, a, b, rng.integers(-99, 99, 7), output_spec("requant"))
    rtl, gold = Runtime(TINY, "verilator"), Runtime(TINY, "golden")
    for rt in (rtl, gold):
        rt.image[:] = setup.image
        rt._top = setup._top
    diff = differential_check(rtl, gold, prog)
    assert diff.agree, diff.describe()


def _load(rt, **kw):
    args = dict(dram_addr=rt.mem_base, stride=4, rows=1, row_bytes=4, local_addr=0)
    args.update(kw)
    return Command(Opcode.LOAD, args)


CASES = {
    "illegal opcode": (lambda rt: [_load(rt), 0xF], ErrorCode.ILLEGAL_OPCODE, 1),
    "token to no queue": (lambda rt: [_load(rt), Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.NONE, length=4, rows=1)), signal_next=True)],
        ErrorCode.ILLEGAL_TOKEN, 1),
    "compute without weights": (lambda rt: [Command(Opcode.COMPUTE, dict(rows=2))],
                                ErrorCode.ILLEGAL_FIELD, 0),
    "preload out of range": (lambda rt: [Command(Opcode.PRELOAD, dict(
        spad_addr=TINY.spad_rows - 2))], ErrorCode.LOCAL, 0),
    "load outside memory": (lambda rt: [_load(rt), _load(rt, dram_addr=rt.mem_base
                                                         + rt.mem_size - 2)],
                            ErrorCode.WINDOW, 1),
    "load into missing rows": (lambda rt: [_load(rt, local_addr=TINY.spad_rows - 1, rows=2)],
                               ErrorCode.LOCAL, 0),
    "store of a bad length": (lambda rt: [Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.NONE, length=0, rows=1)))], ErrorCode.SHAPE, 0),
    "layernorm store": (lambda rt: [Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.LAYERNORM, length=4, rows=1)))], ErrorCode.ILLEGAL_FIELD, 0),
    "nop in the dispatcher": (lambda rt: [Command(Opcode.NOP, {"queue": Queue.LOAD}),
                                          Command(Opcode.NOP, {"queue": Queue.DISPATCH})],
                              ErrorCode.ILLEGAL_FIELD, 1),
    "deadlock": (lambda rt: [Command(Opcode.PRELOAD, {"spad_addr": 0}, wait_prev=True),
                             _load(rt), Command(Opcode.FENCE, {})], ErrorCode.DEADLOCK, 0),
}


def _words(rt, prog):
    """Command words; the commands the encoder refuses are built by hand, as a faulty
    driver would."""
    from dataclasses import replace

    from tessera.hw.isa import _tree, command_layout_for, header_layout

    hbase = command_layout_for(TINY)["header"].offset
    out = []
    for c in prog:
        if isinstance(c, int):
            out.append(c)
        elif c.opcode == Opcode.NOP and c.args["queue"] == Queue.DISPATCH:
            offset = _tree(TINY, Opcode.NOP)["queue"].offset
            out.append(encode(TINY, Command(Opcode.NOP, {"queue": Queue.LOAD}))
                       | Queue.DISPATCH.value << offset)
        elif c.opcode == Opcode.STORE and c.signal_next:
            word = encode(TINY, replace(c, signal_next=False))
            out.append(word | 1 << (hbase + header_layout()["signal_next"].offset))
        else:
            out.append(encode(TINY, c))
    return out


def test_illegal_commands_stop_cleanly_with_their_index():
    """Each faulty program stops with the code and command index the golden executor
    reports, and the machine then runs a good program (nothing stuck)."""
    for name, (make, code, index) in CASES.items():
        rtl, gold = Runtime(TINY, "verilator"), Runtime(TINY, "golden")
        words = _words(rtl, make(rtl))
        r, g = rtl.run(words, timeout_cycles=20_000), gold.run(words)
        assert (r.error, r.error_index) == (code, index), f"{name}: {r.describe()}"
        if code != ErrorCode.DEADLOCK:
            assert (g.error, g.error_index) == (code, index), f"{name}: {g.describe()}"
        else:
            assert g.error == ErrorCode.DEADLOCK
        if code == ErrorCode.WINDOW:
            assert r.error_addr == rtl.mem_base + rtl.mem_size - 2
