"""Bus faults and timing of the simulated main memory (``sim/bus_faults.py`` over
``sim/hdl/tessera_axi_mem.v``) and the AXI4 / AXI4-Lite protocol checkers
(``sim/hdl/tessera_axi_checker.v``, ``tessera_axil_checker.v``, ``sim/axi_checker.py``).

A lowered product under random latency and backpressure on all five channels gives the
golden model's bytes, reproducibly from its seed (and the same cycles on Icarus as on
Verilator); SLVERR and DECERR at a load's source, a store's destination and the command
buffer stop the program with the code and address the accelerator reports; the checkers
catch violations injected by the memory model and every rule driven on them alone."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_lowering import output_spec

from tessera.hw.config import preset
from tessera.hw.isa import ErrorCode, Opcode, command_bits
from tessera.sim.axi_checker import CHECKERS, RULES, ProtocolViolation, rule_named
from tessera.sim.bus_faults import ERROR_RANGES, STALL_CHANNELS, BusFaults, ErrorRange
from tessera.sim.runner import TIMESCALE, SimulationFailed, build_root
from tessera.sim.toolchain import require
from tessera.sw.lower.gemm import GemmBuffers, bias_bytes, lower_gemm, reference_gemm
from tessera.sw.lower.layout import Blocked, from_blocked, to_blocked
from tessera.sw.lower.plan import GemmShape, plan_gemm
from tessera.sw.runtime import Runtime

RTL = pytest.mark.rtl
TINY = preset("tiny")
SHAPE = (21, 30, 18)
OUT = output_spec("gelu")
#: Random latency from 5 to 250 cycles and every channel stalled a third of the cycles.
TIMING = dict(latency=(5, 250), stall=0.35)


class Product:
    """A lowered product with bias and i-GELU placed in a runtime's memory: the operands'
    and the result's addresses, the program, and the expected result."""

    def __init__(self, rt: Runtime, seed: int = 5):
        rng = np.random.default_rng(seed)
        M, K, N = SHAPE
        self.a, self.b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
        bias = rng.integers(-2**18, 2**18, N)
        d = TINY.rows
        A, B, self.C = Blocked(M, K, d), Blocked(K, N, d, d), Blocked(M, N, d)
        self.pa, self.pb, self.pc = rt.alloc(A.nbytes), rt.alloc(B.nbytes), rt.alloc(self.C.nbytes)
        rt.write(self.pa, to_blocked(self.a, A))
        rt.write(self.pb, to_blocked(self.b, B))
        raw = bias_bytes(bias, d)
        pbias = rt.alloc(raw.size)
        rt.write(pbias, raw)
        plan = plan_gemm(TINY, GemmShape(M, K, N), bias=True)
        self.prog = lower_gemm(TINY, plan, GemmBuffers(self.pa, self.pb, self.pc, pbias), OUT)
        self.want = reference_gemm(TINY, self.a, self.b, bias, OUT)
        wbytes = command_bits(TINY) // 8
        align = max(64, wbytes)
        #: Where :meth:`Runtime.run` will place the command buffer, and a word's size.
        self.buffer = rt.mem_base + -(-rt._top // align) * align
        self.word_bytes = wbytes

    def result(self, rt: Runtime) -> np.ndarray:
        return from_blocked(rt.read(self.pc, self.C.nbytes), self.C)

    def transfer_at(self, addr: int, opcode: Opcode) -> tuple[int, int]:
        """The first LOAD or STORE whose contiguous block holds ``addr``: its index in
        the program, and the address the accelerator reports for a bus error there (the
        first byte of the failing burst: bursts end at multiples of the longest burst,
        ``min(256 beats, 4 KiB)``)."""
        longest = min(256 * TINY.bus_bytes, 4096)
        for i, c in enumerate(self.prog):
            if c.opcode != opcode:
                continue
            if opcode == Opcode.LOAD:
                row, rows, stride = c.args["row_bytes"], c.args["rows"], c.args["stride"]
            else:
                row, rows, stride = c.args["desc"]["length"], c.args["desc"]["rows"], \
                    c.args["stride"]
            start = c.args["dram_addr"]
            if start <= addr < start + rows * stride:
                assert stride == row, "the blocks of this product are contiguous"
                return i, max(start, addr & -longest)
        raise AssertionError(f"no {opcode.name} reads or writes {addr:#x}")


def _run(backend: str, faults: BusFaults | None = None):
    rt = Runtime(TINY, backend, faults=faults)
    p = Product(rt)
    return rt, p, rt.run(p.prog, timeout_cycles=2_000_000)


# ---- the options (no simulator) ---------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: BusFaults(latency=(0, 5)), "low end must be a whole number from 1 to 65535"),
    (lambda: BusFaults(latency=(9, 5)), "high end must be a whole number from 9"),
    (lambda: BusFaults(latency=7), r"latency must be a range \(lo, hi\)"),
    (lambda: BusFaults(stall_r=1.0), "stall_r must be a probability from 0 to below 1"),
    (lambda: BusFaults(stall_w=-0.1), "stall_w must be a probability"),
    (lambda: BusFaults(seed=-1), "seed must be a whole number"),
    (lambda: BusFaults(errors=(ErrorRange(0, 8),) * 5), f"at most {ERROR_RANGES} ErrorRange"),
    (lambda: BusFaults(inject="bogus"), "inject must be one of"),
    (lambda: ErrorRange(0x100, 0x100), "must end after it starts"),
    (lambda: ErrorRange(0, 8, "okay"), "resp must be 'slverr' or 'decerr'"),
    (lambda: ErrorRange(0, 8, reads=False, writes=False), "reads, writes or both"),
    (lambda: Runtime(TINY, "golden", faults=BusFaults(stall_r=0.1)),
     "need the verilator or icarus backend, not golden"),
    (lambda: Runtime(TINY, "amaranth", faults=BusFaults(latency=(1, 3))),
     "need the verilator or icarus backend, not amaranth"),
    (lambda: Runtime(TINY, "verilator", mem_latency=50, faults=BusFaults(latency=(1, 3))),
     "give the memory latency once"),
    (lambda: Runtime(TINY, "verilator", faults={"seed": 1}), "must be a BusFaults value"),
])
def test_fault_options_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_default_changes_nothing():
    assert not BusFaults().active and not BusFaults(seed=99).active
    assert BusFaults(stall_b=0.01).active and BusFaults(inject="rlast").active
    rt = Runtime(TINY, "verilator", faults=BusFaults(seed=3))
    assert rt.memory_timing() == {"latency_cycles": 100, "bytes_per_cycle": 8.0}
    rt.faults = BusFaults.timing(3, (20, 40), 0.25)
    assert rt.memory_timing()["faults"] == {
        "seed": 3, "latency": [20, 40], **{f"stall_{c}": 0.25 for c in STALL_CHANNELS}}
    assert rt.memory_timing()["latency_cycles"] == 20


def test_fault_registers():
    f = BusFaults(seed=7, latency=(10, 40), stall_ar=0.5, stall_b=1e-4,
                  errors=(ErrorRange(0x100, 0x200, "decerr", writes=False),))
    assert f.stall_levels() == {"ar": 128, "r": 0, "aw": 0, "w": 0, "b": 1}
    assert f.registers() == [(1, 30), (2, 128 | 1 << 32), (3, 0),
                             (4, 0x100), (5, 0x200), (6, 3 | 4), (9, 0), (12, 0), (15, 0),
                             (0, 7)]
    assert BusFaults(inject="spurious_b").registers()[2] == (3, 2)


def test_checker_rules_come_from_the_verilog():
    names = [r.name for r in RULES.values()]
    assert len(set(names)) == len(names) >= 20
    for name in ("AR_STABLE", "AW_4K", "W_LAST", "R_UNASKED", "R_LAST", "B_UNASKED",
                 "R_ID", "LITE_B_UNASKED", "LITE_R_STABLE"):
        assert rule_named(name).number in RULES
    assert rule_named("W_LAST").port == "AXI4"
    assert rule_named("LITE_W_STABLE").port == "AXI4-Lite"
    assert all(r.description for r in RULES.values())
    e = ProtocolViolation(rule_named("R_LAST").number, 1234, 0x40000080)
    assert str(e) == ("protocol violation on the accelerator's memory master (AXI4): R_LAST "
                      "(RLAST not exactly on the last beat of its burst) in cycle 1234, "
                      "address 0x40000080")
    with pytest.raises(KeyError, match="no protocol rule 'R_LATE'"):
        rule_named("R_LATE")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "simulation.md").read_text()
    assert [n for n in names if f"`{n}`" not in doc] == []     # every rule documented


# ---- random timing ------------------------------------------------------------------------

@RTL
def test_random_timing_keeps_every_byte():
    """Random latency and backpressure on all five channels: the bytes of the fault-free
    run and of the golden model, the same counts of work, more cycles; the same seed gives
    the same run again, another seed another timing."""
    gold, p, _ = _run("golden")
    base_rt, _, base = _run("verilator")
    assert (p.result(base_rt) == p.want).all()
    cycles = set()
    for seed in (1, 2):
        rt, p, r = _run("verilator", BusFaults.timing(seed, **TIMING))
        assert r.ok, r.describe()
        assert (p.result(rt) == p.want).all()
        assert np.array_equal(rt.image, base_rt.image)
        assert np.array_equal(rt.image, gold.image)
        for k in ("commands", "macs", "bytes_read", "bytes_written", "array_busy"):
            assert r.counters[k] == base.counters[k], k
        assert r.cycles > base.cycles
        again = _run("verilator", BusFaults.timing(seed, **TIMING))[2]
        assert again.counters == r.counters
        cycles.add(r.cycles)
    assert len(cycles) == 2


@RTL
@pytest.mark.parametrize("program", ["stores", "attention"])
def test_every_store_operation_and_an_attention_head_under_random_timing(program):
    """The store program of the accelerator tests (every output operation, to main memory
    and to the scratchpad, blocked and transposed) and an attention head, under four
    random timings (two with heavy stalls, up to 0.9): golden's bytes, and no protocol
    violation (the DMA writer refills a waiting beat's unstrobed bytes: allowed)."""
    from test_accel_rtl import store_program
    from test_attention import place_head

    from tessera.sw.lower.attention import lower_attention_head

    setup = Runtime(TINY, "golden")
    if program == "stores":
        prog = store_program(setup)
    else:
        head = place_head(setup, 37, 8, True, 5)[0]
        prog = lower_attention_head(TINY, head)
    gold = Runtime(TINY, "golden")
    gold.image[:] = setup.image
    gold._top = setup._top
    assert gold.run(prog).ok
    for seed in range(4):
        rt = Runtime(TINY, "verilator",
                     faults=BusFaults.random(seed, max_stall=0.9 if seed % 2 else 0.6))
        rt.image[:] = setup.image
        rt._top = setup._top
        r = rt.run(prog)
        assert r.ok and np.array_equal(rt.image, gold.image), (seed, r.describe())


@RTL
def test_a_bert_layer_under_random_timing():
    """A small quantized BERT layer (QKV, masked heads, projections, LayerNorms, i-GELU)
    under three random timings equals the integer model bit for bit."""
    from tessera.sw.lower.bert import run_bert_layer
    from tessera.sw.models.quantize import (
        integer_bert_layer,
        quantize_activation,
        quantize_bert_layer,
    )
    from tessera.sw.models.reference import random_bert_weights

    rng = np.random.default_rng(4)
    S, H, heads, F = 10, 32, 2, 32
    ql = quantize_bert_layer(random_bert_weights(H, heads, F, rng),
                             [rng.normal(0, 1, (S, H)) for _ in range(2)])
    xq = quantize_activation(rng.normal(0, 1, (S, H)), ql.in_scale)
    mask = np.ones(S, bool)
    mask[-3:] = False
    want = integer_bert_layer(xq, ql, mask)
    for seed in range(3):
        rt = Runtime(TINY, "verilator", faults=BusFaults.random(seed, max_stall=0.9))
        got, _, _ = run_bert_layer(rt, ql, xq, mask, check=True)
        assert (got == want).all(), seed


@RTL
def test_random_faults_for_fuzzers():
    """BusFaults.random(seed): a value from the seed alone, and a correct run under it."""
    assert BusFaults.random(12) == BusFaults.random(12) != BusFaults.random(13)
    base_rt, p, base = _run("verilator")
    for seed in range(3):
        f = BusFaults.random(seed)
        assert f.active and f.seed == seed and 1 <= f.latency[0] <= f.latency[1] <= 300
        rt, _, r = _run("verilator", f)
        assert r.ok and np.array_equal(rt.image, base_rt.image)


@RTL
@pytest.mark.parametrize("channel", STALL_CHANNELS)
def test_each_channel_stalled_alone(channel):
    base_rt, p, base = _run("verilator")
    # (At 0.8 the AW stalls hide behind the output path: the writes ask for their address
    # long before their data is there.)
    rt, _, r = _run("verilator", BusFaults(seed=11, **{f"stall_{channel}": 0.97}))
    assert r.ok and np.array_equal(rt.image, base_rt.image)
    assert r.cycles > base.cycles


@RTL
def test_random_timing_on_icarus_is_the_verilator_run():
    """The same faults on the cocotb path (Icarus): the same bytes and, the generator
    stepping only with bus activity, the same cycles as the native path."""
    faults = BusFaults.timing(4, **TIMING)
    icarus, p, r = _run("icarus", faults)
    native, _, rn = _run("verilator", faults)
    assert r.ok and (p.result(icarus) == p.want).all()
    assert np.array_equal(icarus.image, native.image)
    assert r.counters == rn.counters


# ---- error responses ----------------------------------------------------------------------

@RTL
@pytest.mark.parametrize("resp, operand, offset", [
    ("slverr", "pb", 100), ("decerr", "pa", 0), ("slverr", "pa", 600)])
def test_an_error_at_a_load_source_stops_the_program(resp, operand, offset):
    rt = Runtime(TINY, "verilator")
    p = Product(rt)
    at = getattr(p, operand) + offset
    rt.faults = BusFaults(errors=(ErrorRange(at, at + 1, resp, writes=False),))
    r = rt.run(p.prog)
    index, addr = p.transfer_at(at, Opcode.LOAD)
    assert (r.error, r.error_index, r.error_addr) == (ErrorCode[resp.upper()], index, addr)
    assert not rt.read(p.pc, p.C.nbytes).any()       # nothing was stored


@RTL
@pytest.mark.parametrize("resp", ["slverr", "decerr"])
def test_an_error_at_a_store_destination_stops_the_program(resp):
    rt = Runtime(TINY, "verilator")
    p = Product(rt)
    at = p.pc + 200
    rt.faults = BusFaults(errors=(ErrorRange(at, at + 8, resp, reads=False),))
    r = rt.run(p.prog)
    index, addr = p.transfer_at(at, Opcode.STORE)
    assert (r.error, r.error_index, r.error_addr) == (ErrorCode[resp.upper()], index, addr)
    # The bytes of the failing beat were not written; the stores before it were.
    assert not rt.read(at, 8).any()
    assert rt.read(p.pc, addr - p.pc).any()
    # A range for reads alone leaves the stores alone.
    rt.faults = BusFaults(errors=(ErrorRange(p.pc, p.pc + p.C.nbytes, resp, writes=False),))
    assert rt.run(p.prog).ok and (p.result(rt) == p.want).all()


@RTL
@pytest.mark.parametrize("resp, word", [("decerr", 0), ("slverr", 5), ("decerr", 17)])
def test_an_error_in_the_command_buffer_stops_the_program(resp, word):
    """FETCH at the word that could not be read, with its address, once every word before
    it has been dispatched: the same whatever the timing (fixed, or random with stalls)."""
    for timing in ({}, TIMING):
        rt = Runtime(TINY, "verilator")
        p = Product(rt)
        at = p.buffer + word * p.word_bytes
        faults = BusFaults.timing(word + 1, **timing) if timing else BusFaults()
        rt.faults = replace(faults, errors=(ErrorRange(at, at + 1, resp),))
        r = rt.run(p.prog)
        assert (r.error, r.error_index, r.error_addr) == (ErrorCode.FETCH, word, at), timing
        assert r.counters["commands"] == word


def _block_words(c, bus: int) -> tuple[int, int] | None:
    """The bus words a LOAD reads or a STORE to main memory writes, as (first, end) byte
    addresses of the aligned span (rows in between included: a coarse bound), or None."""
    if c.opcode == Opcode.LOAD:
        start, rows, rb, stride = (c.args["dram_addr"], c.args["rows"], c.args["row_bytes"],
                                   c.args["stride"])
    elif c.opcode == Opcode.STORE and not c.args.get("to_spad"):
        start, rows, rb, stride = (c.args["dram_addr"], c.args["desc"]["rows"],
                                   c.args["desc"]["length"], c.args["stride"])
    else:
        return None
    return start // bus * bus, -(-(start + (rows - 1) * stride + rb) // bus) * bus


@RTL
@pytest.mark.parametrize("program", ["stores", "attention"])
def test_errors_at_random_addresses_stop_cleanly(program):
    """An SLVERR or DECERR range at a random address (reads, writes or both) under random
    timing: the run ends (never a hang), with the range's response at a LOAD or STORE
    whose block reaches the range and an address between the block's start and the
    range's end, or FETCH inside the command buffer, or no error."""
    from test_accel_rtl import store_program
    from test_attention import place_head

    from tessera.sw.lower.attention import lower_attention_head

    setup = Runtime(TINY, "golden")
    if program == "stores":
        prog = store_program(setup)
    else:
        prog = lower_attention_head(TINY, place_head(setup, 37, 8, True, 5)[0])
    wbytes = command_bits(TINY) // 8
    buffer = setup.mem_base + -(-setup._top // 64) * 64
    end = buffer + len(prog) * wbytes
    draw = np.random.default_rng(21)
    seen = set()
    for seed in range(24):
        at = int(draw.integers(setup.mem_base, end))
        width = int(draw.choice([1, 8, 64, 512]))
        resp = str(draw.choice(["slverr", "decerr"]))
        reads, writes = [(True, True), (True, False), (False, True)][seed % 3]
        rt = Runtime(TINY, "verilator", faults=replace(
            BusFaults.random(seed, max_stall=0.8),
            errors=(ErrorRange(at, at + width, resp, reads, writes),)))
        rt.image[:] = setup.image
        rt._top = setup._top
        r = rt.run(prog, timeout_cycles=500_000)
        seen.add(r.error)
        where = (seed, hex(at), width, resp, reads, writes, r.describe())
        if r.error in (ErrorCode.SLVERR, ErrorCode.DECERR):
            c = prog[r.error_index]
            span = _block_words(c, TINY.bus_bytes)
            assert r.error == ErrorCode[resp.upper()] and span is not None, where
            assert (reads if c.opcode == Opcode.LOAD else writes), where
            assert span[0] < at + width and at < span[1], where
            assert c.args["dram_addr"] <= r.error_addr < at + width, where
        elif r.error == ErrorCode.FETCH:
            assert reads and buffer <= r.error_addr < end, where
            assert r.error_addr < at + width and at < r.error_addr + TINY.bus_bytes, where
            assert r.error_index == (r.error_addr - buffer) // wbytes, where
        else:
            assert r.ok, where
    assert {ErrorCode.NONE, ErrorCode.FETCH} <= seen and len(seen) >= 3, seen


# ---- the protocol checkers ----------------------------------------------------------------

@RTL
@pytest.mark.parametrize("inject, rule", [("rlast", "R_LAST"), ("spurious_b", "B_UNASKED")])
def test_the_checker_catches_a_misbehaving_memory(inject, rule):
    rt = Runtime(TINY, "verilator", faults=BusFaults(inject=inject))
    p = Product(rt)
    with pytest.raises(ProtocolViolation, match=f": {rule} ") as caught:
        rt.run(p.prog, timeout_cycles=20_000)
    e = caught.value
    assert e.rule.name == rule and e.cycle > 0 and e.result.backend == "verilator"
    if inject == "rlast":
        assert e.addr == p.buffer      # the first burst read is the command fetch's


def _build_checker(which: str) -> Path:
    from cocotb_tools.runner import get_runner

    require("icarus")
    source = CHECKERS[0 if which == "axi" else 1]
    top = source.stem
    params = {"ADDR_BITS": 32, "DATA_BITS": 64, "ID_BITS": 4} if which == "axi" else {}
    directory = build_root() / f"{top}-icarus"
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes() + repr(params).encode()).hexdigest()
    stamp = directory / "built.sha256"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == digest):
            get_runner("icarus").build(sources=[source], hdl_toplevel=top,
                                       build_dir=directory, build_args=["-g2005"],
                                       parameters=params, timescale=TIMESCALE,
                                       always=True, log_file=directory / "build.log")
            stamp.write_text(digest)
    return directory


@RTL
@pytest.mark.parametrize("which", ["axi", "lite"])
def test_every_rule_of_the_checker_fires(which, tmp_path):
    """The checker alone on Icarus, driven with legal traffic (no violation) and one bad
    sequence per rule (that rule, and no other, latched): ``sim/tb_axi_checker.py``."""
    from cocotb_tools.runner import get_runner

    from tessera.sim import tb_axi_checker as tb

    table = tb.AXI_SCENARIOS if which == "axi" else tb.LITE_SCENARIOS
    covered = {want for want, _ in table.values()} - {None}
    assert covered == {r.name for r in RULES.values()
                       if r.name.startswith("LITE_") == (which == "lite")}
    directory = _build_checker(which)
    results, log = tmp_path / "results.xml", tmp_path / "sim.log"
    env = {"PYTHONPATH": os.pathsep.join(sys.path), "TESSERA_CHECKER": which}
    try:
        get_runner("icarus").test(test_module="tessera.sim.tb_axi_checker",
                                  hdl_toplevel=CHECKERS[0 if which == "axi" else 1].stem,
                                  hdl_toplevel_lang="verilog", build_dir=directory,
                                  test_dir=tmp_path, extra_env=env, results_xml=str(results),
                                  timescale=TIMESCALE, log_file=log)
    except (SystemExit, RuntimeError):
        pass    # under pytest the runner exits on a failed test: the results say which
    if not results.exists():
        raise SimulationFailed(f"icarus wrote no results; log: {log}")
    failures = [f.get("message", "") for c in ET.parse(results).getroot().iter("testcase")
                for f in c if f.tag in ("failure", "error")]
    assert not failures, f"{failures}; log: {log}"


# ---- the command line ---------------------------------------------------------------------

GEMM = ["bench", "gemm", "--preset", "tiny", "--m", "8", "--k", "8", "--n", "8",
        "--sim", "verilator"]


@pytest.mark.parametrize("argv, message", [
    (GEMM + ["--mem-latency-range", "10-50"], "--mem-latency-range takes LO:HI in cycles"),
    (GEMM + ["--mem-latency-range", "0:5"], "the latency range's low end must be a whole "
                                            "number from 1 to 65535, not 0"),
    (GEMM + ["--mem-latency-range", "10:50", "--mem-latency", "30"],
     "give --mem-latency or --mem-latency-range, not both"),
    (GEMM + ["--mem-stall", "1.5"], "--mem-stall must be a probability from 0 to below 1"),
    (GEMM + ["--mem-seed", "3"], "--mem-seed seeds --mem-latency-range and --mem-stall"),
    (["run", "bert-layer", "--preset", "tiny", "--backend", "golden", "--mem-stall", "0.2"],
     "need the verilator or icarus backend"),
])
def test_bad_random_timing_options_exit_2(argv, message, capsys):
    from tessera.sw.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


@RTL
def test_bench_gemm_with_random_memory_timing(tmp_path, capsys):
    from tessera.sw.cli import main

    out = tmp_path / "gemm.json"
    assert main(GEMM + ["--mem-latency-range", "10:50", "--mem-stall", "0.3", "--mem-seed",
                        "9", "--json", str(out)]) == 0
    memory = json.loads(out.read_text())["memory"]
    assert memory["latency_cycles"] == 10
    assert memory["faults"] == {"seed": 9, "latency": [10, 50],
                                **{f"stall_{c}": 0.3 for c in STALL_CHANNELS}}


# ---- the Amaranth-simulator path (no Verilog: the checkers' rules in Python) ---------------

@pytest.mark.parametrize("which", ["axi", "lite"])
def test_the_python_checkers_follow_the_same_rules(which):
    """``Axi4Checker`` and ``AxiLiteChecker`` on the scenarios the Verilog checkers are
    driven with: the same rule (or none) for each."""
    from tessera.sim import tb_axi_checker as tb
    from tessera.sim.axi_checker import Axi4Checker, AxiLiteChecker

    table, ports = ((tb.AXI_SCENARIOS, tb.AXI_PORTS) if which == "axi"
                    else (tb.LITE_SCENARIOS, tb.LITE_PORTS))
    wrong = []
    for label, (want, cycles) in table.items():
        checker = Axi4Checker(8) if which == "axi" else AxiLiteChecker()
        state = dict.fromkeys(ports, 0)
        for step in cycles:
            state.update(step)
            checker.step(state.__getitem__)
        got = RULES[checker.first[0]].name if checker.first else None
        if got != want:
            wrong.append(f"{label}: expected {want}, got {got}")
    assert wrong == []
    if which == "axi":      # cycle and address as the Verilog checker reports them
        checker = Axi4Checker(8)
        state = dict.fromkeys(ports, 0)
        for step in table["AR payload changes"][1]:
            state.update(step)
            checker.step(state.__getitem__)
        assert checker.first == (rule_named("AR_STABLE").number, 1, 0x100)


def test_the_amaranth_path_checks_the_protocol(monkeypatch):
    from tessera.sim.axi_latency_ram import LatencyAxiRam

    drive = LatencyAxiRam.drive

    def without_rlast(self):
        drive(self)
        self.sig["rlast"].value = 0

    monkeypatch.setattr(LatencyAxiRam, "drive", without_rlast)
    rt = Runtime(TINY, "amaranth")
    p = Product(rt)
    with pytest.raises(ProtocolViolation, match=": R_LAST ") as caught:
        rt.run(p.prog, timeout_cycles=400)
    assert caught.value.addr == p.buffer      # the command fetch's first burst
