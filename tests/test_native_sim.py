"""The native simulation path (``sim/native.py``: Verilator with a C++ harness, main memory
shared with Python): the same results and counters as the cocotb path, the memory model's
timing set per run, waveforms on demand, progress, clear errors; and the build helpers
(memory-initialization compaction, the progress line)."""

import io
import re
import time

import numpy as np
import pytest
from test_lowering import gemm_on, output_spec

from tessera.hw.config import preset
from tessera.hw.registers import REG
from tessera.sim.native import NativeSim, SharedMemory, build_native
from tessera.sim.runner import BuildProgress, SimulationFailed, compact_memory_init
from tessera.sw.lower.gemm import reference_gemm
from tessera.sw.runtime import Runtime

TINY = preset("tiny")


def _product(rt, seed=5, shape=(21, 30, 18)):
    rng = np.random.default_rng(seed)
    M, K, N = shape
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bias = rng.integers(-2**18, 2**18, N)
    got, prog, result = gemm_on(rt, a, b, bias, output_spec("gelu"))
    assert (got == reference_gemm(TINY, a, b, bias, output_spec("gelu"))).all()
    return result


# --- build helpers (no simulator) ---------------------------------------------------------

def test_memory_initialization_runs_become_loops():
    words = "\n".join(f"    mem[{i}] = 8'h00;" for i in range(20))
    text = (f"module m;\n  reg [7:0] mem [19:0];\n  initial begin\n{words}\n"
            "    other[0] = 1'h1;\n    other[1] = 1'h0;\n  end\nendmodule")
    out = compact_memory_init(text)
    assert "mem[5]" not in out and "other[0] = 1'h1;" in out and "other[1] = 1'h0;" in out
    loop = re.search(r"for \((\w+) = 0; \1 <= 19; \1 = \1 \+ 1\)\n\s+mem\[\1\] = 8'h00;", out)
    assert loop, out
    # the loop variable is declared before the initial block that uses it
    assert out.index(f"integer {loop.group(1)};") < out.index("initial begin")
    # runs shorter than the threshold, different values or gaps in the indices stay
    short = "  initial begin\n    a[0] = 1'h0;\n    a[1] = 1'h0;\n  end"
    assert compact_memory_init(short) == short
    mixed = "\n".join(f"    a[{i}] = 1'h{i % 2};" for i in range(12))
    assert compact_memory_init(mixed) == mixed


def test_build_progress_line(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(BuildProgress, "FIRST_SECONDS", 0.05)
    monkeypatch.setattr(BuildProgress, "EVERY_SECONDS", 0.05)
    with BuildProgress("the thing", phase=lambda: "step 3 of 7"):
        time.sleep(0.3)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("building the thing: 0 s (step 3 of 7)")
    assert lines[-1].startswith("building the thing:") and lines[-1].endswith("(done)")
    quiet = io.StringIO()
    monkeypatch.setattr("sys.stderr", quiet)
    with BuildProgress("fast", quiet=True):
        time.sleep(0.1)
    assert quiet.getvalue() == ""


def test_shared_memory_checks_its_size():
    with pytest.raises(ValueError, match="positive size"):
        SharedMemory(0)
    mem = SharedMemory(4096)
    mem.array[:4] = [1, 2, 3, 4]
    assert mem.array.sum() == 10


def test_runtime_checks_simulation_options():
    with pytest.raises(ValueError, match="mem_latency must be"):
        Runtime(TINY, "verilator", mem_latency=0)
    with pytest.raises(ValueError, match="mem_gap must be"):
        Runtime(TINY, "verilator", mem_gap=300)
    with pytest.raises(ValueError, match="unknown harness"):
        Runtime(TINY, "verilator", harness="spice")
    with pytest.raises(ValueError, match="need the verilator backend"):
        Runtime(TINY, "golden", trace="x.fst")
    with pytest.raises(ValueError, match=r"name a \.fst file"):
        Runtime(TINY, "verilator", trace="x.vcd")
    with pytest.raises(ValueError, match="trace window"):
        Runtime(TINY, "verilator", trace="x.fst", trace_cycles=0)


# --- on the native simulator -------------------------------------------------------------

@pytest.mark.rtl
def test_native_equals_cocotb_cycle_for_cycle():
    """One program on Verilator's native harness and on Icarus under cocotb: main memory
    and every counter alike (the cocotb path's timing is the hardware's: Icarus and
    Verilator agree on it, as the accelerator tests show)."""
    native, cocotb = Runtime(TINY, "verilator"), Runtime(TINY, "icarus")
    assert native.harness == "native" and cocotb.harness == "cocotb"
    r1, r2 = _product(native), _product(cocotb)
    assert np.array_equal(native.image, cocotb.image)
    assert r1.counters == r2.counters
    assert r1.memory == r2.memory == {"latency_cycles": 100, "bytes_per_cycle": 8.0}


@pytest.mark.rtl
def test_memory_timing_changes_cycles_not_results():
    fast = _product(Runtime(TINY, "verilator", mem_latency=10)).counters
    base = _product(Runtime(TINY, "verilator")).counters
    slow = _product(Runtime(TINY, "verilator", mem_latency=300)).counters
    narrow = _product(Runtime(TINY, "verilator", mem_gap=3))
    assert fast["cycles"] < base["cycles"] < slow["cycles"]
    assert narrow.counters["cycles"] > base["cycles"]
    assert narrow.memory == {"latency_cycles": 100, "bytes_per_cycle": 2.0}
    for c in (fast, slow, narrow.counters):
        assert c["macs"] == base["macs"] and c["bytes_read"] == base["bytes_read"]


@pytest.mark.rtl
def test_a_waveform_window_is_written(tmp_path):
    path = tmp_path / "run.fst"
    rt = Runtime(TINY, "verilator", trace=path, trace_from=100, trace_cycles=500)
    _product(rt)
    assert rt.traced == [path]
    data = path.read_bytes()
    assert len(data) > 1000 and data[0] == 0     # FST starts with its header block
    # a window past the end of the run writes nothing
    late = Runtime(TINY, "verilator", trace=tmp_path / "late.fst", trace_from=10**9)
    _product(late)
    assert late.traced == [] and not (tmp_path / "late.fst").exists()


@pytest.mark.rtl
def test_protocol_progress_and_errors():
    mem = SharedMemory(4 << 20)
    with NativeSim(TINY, mem) as sim:
        sim.reset()
        assert sim.read(REG["ID"]) == 0x54535241
        seen = []
        # nothing started: the run waits for an interrupt that never comes
        out = sim.run(2500, progress=lambda c, s, v: seen.append((c, v)), every=1000,
                      watch=(REG["CYCLES_LO"],))
        assert not out.finished and out.cycles >= 2500
        assert [c for c, _ in seen] == [1000, 2000]
        assert all(v == [0] for _, v in seen)     # the cycle counter: no run started
        with pytest.raises(SimulationFailed, match="unknown request"):
            sim._ask("sing")
        assert sim.read(REG["VERSION"]) == 1      # still answering after the error


@pytest.mark.rtl
def test_a_memory_of_the_wrong_size_is_refused():
    with pytest.raises(SimulationFailed, match="memory model has .* words"):
        NativeSim(TINY, SharedMemory(1 << 20))


@pytest.mark.rtl
def test_builds_are_cached():
    first = build_native(TINY)
    t = time.perf_counter()
    again = build_native(TINY)
    assert again.executable == first.executable and time.perf_counter() - t < 5
    assert first.info()["seconds"] > 0


@pytest.mark.rtl
def test_quick_builds_have_folders_and_flags_of_their_own(monkeypatch):
    """The suite's quick builds (tests/conftest.py) compile -O1 in ``native-quick/``, not in
    the ordinary build's ``native/`` that benchmarks use; without the variable the flags
    are the ordinary ones."""
    from tessera.sim import native
    from tessera.sim.runner import QUICK_BUILDS

    quick = build_native(TINY)
    assert quick.directory.name == "native-quick"
    assert "OPT_FAST='-O1'" in (quick.directory / "build.log").read_text().splitlines()[0]
    monkeypatch.setenv(QUICK_BUILDS, "0")
    assert native._cxx_opt() == (native.CXX_OPT, "-O2")
    monkeypatch.setenv(QUICK_BUILDS, "1")
    assert native._cxx_opt() == ("-O1", "-O1")


@pytest.mark.rtl
def test_a_profile_guided_build_trains_and_runs_bit_exact():
    """The profile-guided build that benchmarks and runs use (here at the quick builds'
    -O1, in a folder of its own): compiled instrumented, run on the three training
    workloads (each checked against the golden model), compiled again with the counts;
    the simulator it makes runs a product bit for bit."""
    build = build_native(TINY, profile=True)
    assert build.directory.name == "native-quick-profiled"
    info = build.info()
    assert info["profile"] and info["training"]["failed"] == info["training"]["skipped"] == {}
    cycles = info["training"]["cycles"]
    assert set(cycles) == {"gemm", "bert layer", "gpt2 decode"} and min(cycles.values()) > 0
    log = (build.directory / "build.log").read_text()
    assert "-fprofile-generate" in log and "-fprofile-use" in log
    assert list((build.directory / "obj").glob("*.gcda"))
    _product(Runtime(TINY, "verilator", native_build=build))
    with pytest.raises(ValueError, match="native_build needs the verilator backend"):
        Runtime(TINY, "icarus", native_build=build)


def test_importing_tessera_sw_registers_the_profile_training(monkeypatch):
    """The training workloads come from the layer above ``sim`` (``tessera.sw``, imported
    here); without them a profile-guided build is refused before any work."""
    from tessera.sim import profile
    from tessera.sw.profile_training import train_profile

    assert profile.trainer() is not None
    assert profile.trainer().__module__ == "tessera.sw"
    assert train_profile.__module__ == "tessera.sw.profile_training"
    monkeypatch.setattr(profile, "_trainer", None)
    with pytest.raises(ValueError, match="needs the training workloads"):
        build_native(TINY, profile=True)


@pytest.mark.rtl
def test_an_interrupted_run_ends_its_process_at_once():
    mem = SharedMemory(4 << 20)
    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with NativeSim(TINY, mem) as sim:
            sim.reset()

            def interrupt(cycles, seconds, values):
                raise KeyboardInterrupt

            sim.run(10**9, progress=interrupt, every=1000)
    assert sim._proc.returncode is not None and time.perf_counter() - t < 10
