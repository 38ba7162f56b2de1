"""The native simulation path: the accelerator system compiled by Verilator with a C++
harness (``sim/native/harness.cpp``), run as a child process that Python only talks to
before and after a run.

Main memory is an anonymous shared block (``memfd``) mapped both here, as a numpy array,
and in the harness, where the Verilog memory model (``sim/hdl/tessera_axi_mem.v`` built
with ``TESSERA_NATIVE``) reads and writes it through DPI. Inputs are placed and results
read with plain numpy accesses: there is no image file and no copy.

A build is cached per configuration, gateware source and harness source (see
:func:`build_native`); a variant with FST tracing compiled in is built only when a trace
is asked for, so the ordinary build pays nothing for it.

>>> mem = SharedMemory(64 << 20)
>>> with NativeSim(config, mem) as sim:
...     sim.reset()
...     sim.write(REG["CMD_COUNT"], 3)
...     outcome = sim.run(max_cycles=10_000_000)
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.config import TesseraConfig
from ..hw.generate import LINT_WAIVERS
from . import profile as profile_hook
from .accel_system import ACCEL_SYSTEM, CHECKERS, MEM_MODEL
from .runner import (
    QUICK_CXX_OPT,
    BuildProgress,
    SimulationFailed,
    generated_verilog,
    locked,
    quick_builds,
    simulation_netlist,
)
from .toolchain import SimulatorMissing, setup_verilator

__all__ = ["SharedMemory", "NativeSim", "NativeBuild", "RunOutcome", "build_native",
           "HARNESS", "VERILATOR_ARGS"]

HARNESS = Path(__file__).with_name("native") / "harness.cpp"

#: Verilator's options for the native build: ``-O3`` and fast X handling as for cocotb;
#: no VPI, no public signals; functions and files of bounded size (the compiler's time
#: grows faster than a function's size). Measured choices: docs/simulation.md.
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal",
                  "--no-timing", "--output-split", "20000",
                  "--output-split-cfuncs", "5000"]
#: The C++ compiler's optimisation for the model's per-cycle code (``OPT_FAST``); its
#: construction and initial blocks run once and are compiled without optimisation
#: (``OPT_SLOW``), which halves the compile time. ``-march=native``: the build is cached
#: per processor model (see :func:`_digest`).
CXX_OPT = "-O3 -march=native"
#: Profile-guided optimisation (``profile`` of :func:`build_native`): the per-cycle code is
#: compiled once instrumented (``PROFILE_GENERATE``), run on the training workloads
#: (:mod:`tessera.sim.profile`), and compiled again with the counts (``PROFILE_USE``).
#: Every always block of the design runs every cycle, and most of their branches (an idle
#: unit's) go one way: the counts let the compiler lay out, inline and unroll for what
#: runs. About 1.4 times the cycles/s of the default configuration (docs/simulation.md).
PROFILE_GENERATE = "-fprofile-generate -fprofile-update=single"
PROFILE_USE = "-fprofile-use -fprofile-correction -Wno-missing-profile"


def _cxx_opt() -> tuple[str, str]:
    """The C++ optimisation of the per-cycle code and of Verilator's runtime library:
    :data:`CXX_OPT` and ``-O2``, or ``-O1`` for both in a quick build
    (:func:`~tessera.sim.runner.quick_builds`)."""
    return (QUICK_CXX_OPT, QUICK_CXX_OPT) if quick_builds() else (CXX_OPT, "-O2")


@dataclass(frozen=True)
class NativeBuild:
    config: TesseraConfig
    directory: Path
    executable: Path
    trace: bool

    def info(self) -> dict:
        """What was recorded when it was built: ``seconds`` (wall time of the Verilator
        build), ``total_seconds`` (with the netlist, when it was made by the same call)
        and ``jobs``."""
        try:
            return json.loads((self.directory / "build-info.json").read_text())
        except (OSError, ValueError):
            return {}


def _cpu() -> str:
    """The processor model (``-march=native`` code runs only on its kind)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _digest(vfile: Path, trace: bool, cxx_opt: tuple[str, str], profile: bool) -> str:
    h = hashlib.sha256(vfile.read_bytes())
    for extra in (MEM_MODEL, *CHECKERS, HARNESS, LINT_WAIVERS):
        h.update(Path(extra).read_bytes())
    h.update(repr((VERILATOR_ARGS, cxx_opt, trace, _cpu(),
                   (PROFILE_GENERATE, PROFILE_USE) if profile else None)).encode())
    return h.hexdigest()


def _folder(trace: bool, quick: bool, profile: bool) -> str:
    """A build's folder name: ``native``, with ``-trace``, ``-quick``, and ``-profiled``
    or ``-unprofiled`` where the profile is not the default of its kind."""
    name = "native" + ("-trace" if trace else "") + ("-quick" if quick else "")
    if profile != (not trace and not quick):
        name += "-profiled" if profile else "-unprofiled"
    return name


def build_native(config: TesseraConfig, trace: bool = False, jobs: int | None = None,
                 quiet: bool = False, profile: bool | None = None) -> NativeBuild:
    """Build (or find cached) the native simulator of the accelerator system.

    Parameters
    ----------
    trace : bool
        Compile FST tracing in (a separate build: the ordinary one has none).
    jobs : int, optional
        Parallel compile jobs (default: the machine's cores).
    quiet : bool
        No progress line on standard error while building.
    profile : bool, optional
        Profile-guided: compile instrumented, run the training workloads
        (:func:`tessera.sim.profile.trainer`, which :mod:`tessera.sw` registers), compile
        again with the counts (see :data:`PROFILE_USE`). The default: on for the ordinary
        build when the training is registered, off for traced and quick builds (a second
        compile is not worth it there).

    Raises
    ------
    SimulationFailed
        If Verilator or the C++ compiler fails; the message names the log.
    """
    started = time.monotonic()
    quick, cxx_opt = quick_builds(), _cxx_opt()
    if profile is None:
        profile = not trace and not quick and profile_hook.trainer() is not None
    elif profile and profile_hook.trainer() is None:
        raise ValueError("a profile-guided build needs the training workloads, which "
                         "importing tessera.sw registers (tessera.sim.profile)")
    root = setup_verilator()
    if trace and not Path("/usr/include/lz4.h").exists():
        raise SimulatorMissing("waveforms need the lz4 and zlib headers Verilator's FST "
                               "writer is built with: run `make install` as root, or "
                               "`apt-get install liblz4-dev zlib1g-dev`")
    # The flattened netlist runs fastest; a traced build keeps Amaranth's hierarchy and
    # names, so that the waveform reads like the design.
    base, vfile = (generated_verilog if trace else simulation_netlist)(config, ACCEL_SYSTEM,
                                                                      quiet=quiet)
    out = base / _folder(trace, quick, profile)
    exe = out / "tessera_sim"
    digest = _digest(vfile, trace, cxx_opt, profile)
    stamp = out / "built.sha256"
    with locked(base / ".native.lock"):
        if stamp.exists() and stamp.read_text() == digest and exe.exists():
            return NativeBuild(config, out, exe, trace)
        out.mkdir(parents=True, exist_ok=True)
        obj = out / "obj"
        # A stale build's objects would make the progress line count them as done.
        shutil.rmtree(obj, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        jobs = jobs or os.cpu_count() or 1
        fast, runtime_opt = cxx_opt

        def make_flags(extra: str = "") -> list[str]:
            return [f"OPT_FAST={fast}{extra}", "OPT_SLOW=-O0", f"OPT_GLOBAL={runtime_opt}"]

        cflags = "-std=c++17" + (" -DTESSERA_TRACE" if trace else "")
        first = make_flags(" " + PROFILE_GENERATE if profile else "")
        if profile:
            first.append("LDFLAGS=-fprofile-generate")
        cmd = [str(root / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", str(jobs),
               "--top-module", ACCEL_SYSTEM.module, "--prefix", "Vsystem",
               "-DTESSERA_NATIVE", *VERILATOR_ARGS, *(["--trace-fst"] if trace else []),
               "-CFLAGS", cflags, "-MAKEFLAGS", " ".join(_make_quote(f) for f in first),
               str(LINT_WAIVERS), str(vfile), str(MEM_MODEL), *map(str, CHECKERS), str(HARNESS),
               "-o", str(exe), "--Mdir", str(obj)]
        log = out / "build.log"
        what = (f"the native simulator of {ACCEL_SYSTEM.module} ({config.hash})"
                + (" with tracing" if trace else "") + (" (quick build)" if quick else ""))
        # What the progress line says: a compile step's objects (after the step's name),
        # or what the training says it runs.
        doing = {"step": "instrumented for the profile: " if profile else "", "text": None}

        def phase() -> str:
            return doing["text"] or doing["step"] + _phase(obj)

        def say(text: str) -> None:
            doing["text"] = text

        info = {"jobs": jobs, "profile": profile}
        compile_started = time.monotonic()
        with open(log, "w") as f, BuildProgress(what, quiet=quiet, phase=phase):
            _build_step(cmd, f, log)
            if profile:
                t = time.monotonic()
                info["training"] = profile_hook.trainer()(
                    NativeBuild(config, out, exe, False), say)
                info["training_seconds"] = round(time.monotonic() - t, 1)
                doing.update(step="compiling with the profile: ", text=None)
                for old in (*obj.glob("*.o"), *obj.glob("*.a"), *obj.glob("*.gch"), exe):
                    old.unlink(missing_ok=True)
                _build_step(["make", "-C", str(obj), "-f", "Vsystem.mk", "-j", str(jobs),
                             *make_flags(" " + PROFILE_USE)], f, log)
        if not exe.exists():
            raise SimulationFailed(f"building the native simulator left no program; log: {log}")
        now = time.monotonic()
        (out / "build-info.json").write_text(json.dumps(
            {"seconds": round(now - compile_started, 1),
             "total_seconds": round(now - started, 1), **info}))
        stamp.write_text(digest)
    return NativeBuild(config, out, exe, trace)


def _make_quote(assignment: str) -> str:
    """``NAME=value`` for Verilator's ``-MAKEFLAGS``, which reaches make through a shell:
    the value quoted."""
    name, _, value = assignment.partition("=")
    return f"{name}='{value}'"


def _build_step(cmd: list[str], log, log_path: Path) -> None:
    """Run one step of a build with its output appended to the build's log."""
    log.write(" ".join(cmd) + "\n")
    log.flush()
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        raise SimulationFailed(f"building the native simulator failed (exit {rc}); "
                               f"log: {log_path}")


def _phase(obj: Path) -> str:
    """What a native build is doing, from the files it has written so far: Verilator's
    list of the objects to compile (its classes makefile) against the objects done."""
    mk = obj / "Vsystem_classes.mk"
    if not mk.exists():
        return "Verilator is translating the Verilog"
    units = [w for line in mk.read_text().splitlines()
             if line.startswith("  ") for w in line.split() if w != "\\"]
    total = len(units) + 1     # and the harness
    done = len(list(obj.glob("*.o")))
    if done >= total:
        return "linking"
    return f"compiling C++: {done} of {total} objects"


class SharedMemory:
    """Main memory shared with the native harness: an anonymous file (``memfd``) mapped
    here as :attr:`array` (uint8) and passed to the harness by descriptor."""

    def __init__(self, nbytes: int):
        if nbytes <= 0:
            raise ValueError(f"main memory must have a positive size, not {nbytes}")
        self.nbytes = nbytes
        self.fd = os.memfd_create("tessera-main-memory")
        self._closed = weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, nbytes)
        self.array = np.frombuffer(mmap.mmap(self.fd, nbytes), dtype=np.uint8)


@dataclass
class RunOutcome:
    """How :meth:`NativeSim.run` ended: ``finished`` (the interrupt rose) or not, the
    cycles simulated from START, and the wall time of the run alone."""

    finished: bool
    cycles: int
    seconds: float


class NativeSim:
    """One native simulation process: a fresh accelerator (memories zero) on ``memory``.

    Parameters
    ----------
    config : TesseraConfig
    memory : SharedMemory
        The system's main memory (its size must be the simulated system's).
    trace : str or Path, optional
        Write an FST waveform of the cycles ``trace_from`` .. ``trace_from +
        trace_cycles`` (counted from the first :meth:`run`) to this file.
    build : NativeBuild, optional
        The simulator to run (default: :func:`build_native`'s, built on first use); the
        profile's training runs the instrumented build this way.
    """

    def __init__(self, config: TesseraConfig, memory: SharedMemory, *,
                 trace: str | os.PathLike | None = None, trace_from: int = 0,
                 trace_cycles: int = 10_000, quiet_build: bool = False,
                 build: NativeBuild | None = None):
        self.config = config
        if build is not None and (build.config != config or build.trace != (trace is not None)):
            raise ValueError("the native build given is not this configuration's, or not "
                             "traced as asked")
        self.build = build or build_native(config, trace=trace is not None, quiet=quiet_build)
        cmd = [str(self.build.executable), "--mem-fd", str(memory.fd),
               "--mem-bytes", str(memory.nbytes), "--bus-bytes", str(config.bus_bytes)]
        if trace is not None:
            if trace_from < 0 or trace_cycles <= 0:
                raise ValueError("the trace window needs trace_from >= 0 and trace_cycles > 0, "
                                 f"not {trace_from} and {trace_cycles}")
            cmd += ["--trace", str(Path(trace).resolve()), "--trace-from", str(trace_from),
                    "--trace-cycles", str(trace_cycles)]
        # What the model prints ($display) goes to a file: read after the run, never a
        # pipe that could fill while nobody reads it.
        self._log = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, pass_fds=(memory.fd,),
                                      text=True, bufsize=1)
        try:
            ready = self._line()
            if not ready.startswith("ready "):
                raise SimulationFailed(f"the native simulator did not start: {ready}")
        except BaseException:
            self.close()
            raise
        self.row_bits = int(ready.split()[1])

    # --- protocol ----------------------------------------------------------------------

    def log(self) -> str:
        """What the model and the harness printed so far (warnings of the memory model)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def _line(self) -> str:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            err = self.log().strip()[-2000:]
            raise SimulationFailed(f"the native simulator ended unexpectedly (exit "
                                   f"{self._proc.returncode}): {err or 'no message'}")
        line = line.strip()
        if line.startswith("fatal "):
            raise SimulationFailed(f"the native simulator stopped: {line[6:]}")
        return line

    def _ask(self, request: str) -> list[str]:
        self._proc.stdin.write(request + "\n")
        self._proc.stdin.flush()
        answer = self._line()
        if answer.startswith("error"):
            raise SimulationFailed(f"native simulator: {answer[6:]} (request: {request})")
        return answer.split()

    # --- requests ----------------------------------------------------------------------

    def reset(self, cycles: int = 4) -> None:
        self._ask(f"reset {cycles}")

    def memory_timing(self, latency: int, gap: int) -> None:
        """The memory model's latency in cycles and idle cycles after each beat."""
        self._ask(f"mem {latency} {gap}")

    def memory_config(self, writes) -> None:
        """Writes ``(register, value)`` to the memory model's configuration port (faults
        and random timing: :meth:`~tessera.sim.bus_faults.BusFaults.registers`)."""
        for sel, value in writes:
            self._ask(f"fault {sel} {value:#x}")

    def protocol(self) -> tuple[int, int, int] | None:
        """The protocol checkers' first violation since the reset, as ``(rule, cycle,
        address)``, or None."""
        _, violation, rule, cycle, addr = self._ask("check")
        return (int(rule), int(cycle), int(addr)) if int(violation) else None

    def write(self, addr: int, value: int) -> None:
        _, resp = self._ask(f"w {addr:#x} {value & 0xFFFFFFFF}")
        if int(resp):
            raise SimulationFailed(f"register write at {addr:#x} answered {resp}")

    def read(self, addr: int) -> int:
        _, value, resp = self._ask(f"r {addr:#x}")
        if int(resp):
            raise SimulationFailed(f"register read at {addr:#x} answered {resp}")
        return int(value)

    def read64(self, addr: int) -> int:
        return self.read(addr) | self.read(addr + 4) << 32

    def run(self, max_cycles: int, progress=None, every: int = 1 << 20,
            watch: tuple[int, ...] = ()) -> RunOutcome:
        """Clock until the interrupt rises or ``max_cycles`` have passed. Every ``every``
        cycles, ``progress(cycles, seconds, values)`` is called with the registers at
        ``watch`` read (by the harness, through the host port)."""
        every = every if progress is not None else 0
        self._proc.stdin.write(f"run {max_cycles} {every} "
                               + " ".join(f"{a:#x}" for a in watch) + "\n")
        self._proc.stdin.flush()
        while True:
            answer = self._line()
            word, *rest = answer.split()
            if word == "progress":
                progress(int(rest[0]), float(rest[1]), [int(v) for v in rest[2:]])
            elif word in ("done", "timeout"):
                return RunOutcome(word == "done", int(rest[0]), float(rest[1]))
            else:
                raise SimulationFailed(f"native simulator: {answer}")

    def rows(self, acc: bool, first: int, count: int) -> list[int]:
        """``count`` rows of the scratchpad or accumulator, as integers (the debug port's
        width, lanes packed from bit 0)."""
        self._proc.stdin.write(f"rows {int(acc)} {first} {count}\n")
        self._proc.stdin.flush()
        out = []
        for _ in range(count):
            line = self._line()
            if line.startswith("error"):
                raise SimulationFailed(f"native simulator: {line[6:]}")
            out.append(int(line, 16))
        tail = self._line()
        if tail != "ok":
            raise SimulationFailed(f"native simulator: {tail}")
        return out

    def close(self, kill: bool = False) -> None:
        """End the process: asked to quit (killed if it does not within 30 s), or killed at
        once with ``kill`` (an interrupted run: the harness is not reading requests)."""
        if kill and self._proc.poll() is None:
            self._proc.kill()
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._log):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> NativeSim:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)
