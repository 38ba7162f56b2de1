"""Build the generated Verilog once per configuration, top level and simulator, and run
cocotb test modules against the build.

Builds live in ``<build root>/<module>-<config hash>-<source digest>/<simulator>/`` (the
build root is ``$TESSERA_BUILD_DIR`` or ``./build``; the source digest changes with the
gateware's code) and are reused while both are unchanged, so every test on one
configuration shares one simulator build. A file lock makes concurrent
builders wait for each other instead of racing.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..hw.config import TesseraConfig
from ..hw.generate import LINT_WAIVERS, Top, top_spec, verilog_text
from .toolchain import require

__all__ = ["Build", "build", "run", "build_root", "generated_verilog", "simulation_netlist",
           "locked", "BuildProgress", "SimulationFailed", "QUICK_BUILDS", "quick_builds"]

TIMESCALE = ("1ns", "1ps")


class SimulationFailed(RuntimeError):
    """A cocotb run failed or produced no results; the message says where its log is."""


def build_root() -> Path:
    return Path(os.environ.get("TESSERA_BUILD_DIR", "build")).resolve()


#: The environment variable that asks for quick builds (the test suite sets it): Verilator's
#: C++ is compiled ``-O1`` (:data:`QUICK_CXX_OPT`), in about half the time, into folders of
#: their own (``verilator-quick/``, ``native-quick/``), so that benchmarks and runs never
#: reuse them. The model is the same design; only its speed differs.
QUICK_BUILDS = "TESSERA_QUICK_BUILDS"
QUICK_CXX_OPT = "-O1"


def quick_builds() -> bool:
    """Whether :data:`QUICK_BUILDS` is set (to anything but 0)."""
    return os.environ.get(QUICK_BUILDS, "0") not in ("", "0")


@contextmanager
def _make_flags(extra: str):
    """``extra`` added to ``$MAKEFLAGS`` while the block runs (cocotb's runner passes the
    environment to ``make``)."""
    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{old} {extra}" if old else extra
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``path`` (created if needed) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Build:
    config: TesseraConfig
    top: Top
    sim: str
    directory: Path
    verilog: Path

    @property
    def module(self) -> str:
        return self.top.module


def _runner(sim: str, ports_only: bool = False):
    """cocotb's runner for ``sim``. ``ports_only`` (Verilator): the testbench touches only
    the top level's ports, so only they are made visible to VPI (``--public-depth 1``)
    instead of every signal (cocotb's ``--public-flat-rw``, which keeps Verilator from
    optimising the design and costs most of the simulation speed)."""
    from cocotb_tools.runner import get_runner

    runner = get_runner(sim)
    if sim != "verilator" or not ports_only:
        return runner
    base = type(runner)

    class PortsOnly(base):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            cmds[0][1:1] = ["--public-depth", "1"]
            return cmds

    return PortsOnly()


def _gateware_modules(root) -> list:
    """The project modules ``root`` depends on, following the names each module holds
    (imported modules, classes, functions), leaving out the generator's own registry."""
    seen, stack = {root}, [root]
    while stack:
        for value in list(vars(stack.pop()).values()):
            mod = value if inspect.ismodule(value) else inspect.getmodule(value)
            if mod is None or mod in seen or not mod.__name__.startswith("tessera."):
                continue
            if mod.__name__ in ("tessera.hw.generate",) or not hasattr(mod, "__file__"):
                continue
            seen.add(mod)
            stack.append(mod)
    return sorted(seen, key=lambda m: m.__name__)


@functools.cache
def _source_digest(component: type) -> str:
    """A digest of the source of every project module the top level is built from: a change
    to that code invalidates the cached Verilog and simulator builds."""
    h = hashlib.sha256()
    for mod in _gateware_modules(inspect.getmodule(component)):
        h.update(mod.__name__.encode() + Path(mod.__file__).read_bytes())
    return h.hexdigest()[:10]


class BuildProgress:
    """A progress line on standard error while a long build step runs: what is being
    built, how long it has taken, and (``phase``, called now and then) what it is doing.
    On a terminal the line is rewritten in place; elsewhere (logs, CI) a line is printed
    every 20 seconds. Steps shorter than two seconds print nothing."""

    FIRST_SECONDS = 2.0     # quiet before the first line
    EVERY_SECONDS = 20.0    # between lines when standard error is not a terminal

    def __init__(self, what: str, *, quiet: bool = False, phase=None, verb: str = "building"):
        self.what, self.quiet, self.phase, self.verb = what, quiet, phase, verb
        self._stop = threading.Event()
        self._thread = None
        self._tty = sys.stderr.isatty()
        self._printed = False

    def _line(self, elapsed: float, final: str = "") -> str:
        m, s = divmod(int(elapsed), 60)
        took = f"{m} min {s:02d} s" if m else f"{s} s"
        doing = final or (self.phase() if self.phase else "")
        return f"{self.verb} {self.what}: {took}" + (f" ({doing})" if doing else "")

    def _loop(self) -> None:
        start = time.monotonic()
        every = 1.0 if self._tty else self.EVERY_SECONDS
        if self._stop.wait(self.FIRST_SECONDS):
            return
        while True:
            text = self._line(time.monotonic() - start)
            if self._tty:
                sys.stderr.write("\r\033[K" + text)
            else:
                sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self._printed = True
            if self._stop.wait(every):
                return

    def __enter__(self) -> BuildProgress:
        self._start = time.monotonic()
        if not self.quiet:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self._printed:
                end = "failed" if exc_type else "done"
                text = self._line(time.monotonic() - self._start, end)
                sys.stderr.write(("\r\033[K" if self._tty else "") + text + "\n")
                sys.stderr.flush()


_INIT_LINE = re.compile(r"^(\s+)(\\\S+ |[A-Za-z_][\w$]*)\[(\d+)\] = ([^;]+);$")


def compact_memory_init(text: str, min_run: int = 8) -> str:
    """The Verilog ``text`` with each run of memory-initialization statements that give
    consecutive words one value (``mem[0] = 0; mem[1] = 0; ...``, one line per word as
    Yosys writes a memory's initial contents) written as one ``for`` loop.

    The design is the same; the simulators' work is not: a 16x16 accelerator's memories
    are 21,000 such lines, which Verilator translates and compiles one statement at a time
    (about a minute of its build) and Icarus interprets at start-up.
    """
    out: list[str] = []
    run: list[tuple] = []      # (indent, name, index, value) of the current run
    loops = 0

    def flush():
        nonlocal loops
        if len(run) >= min_run:
            indent, name, first, value = run[0]
            var = f"tessera_init_{loops}"
            loops += 1
            # An integer declared in the initial block's module scope, just before it.
            start = len(out) - 1
            while not out[start].lstrip().startswith("initial"):
                start -= 1
            out.insert(start, f"{indent[:-2]}integer {var};")
            out.append(f"{indent}for ({var} = {first}; {var} <= {run[-1][2]}; "
                       f"{var} = {var} + 1)")
            out.append(f"{indent}  {name}[{var}] = {value};")
        else:
            out.extend(f"{i}{n}[{k}] = {v};" for i, n, k, v in run)
        run.clear()

    for line in text.split("\n"):
        m = _INIT_LINE.match(line)
        if m:
            indent, name, index, value = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            if run and (name, value, indent) == (run[-1][1], run[-1][3], run[-1][0]) \
                    and index == run[-1][2] + 1:
                run.append((indent, name, index, value))
                continue
            flush()
            run.append((indent, name, index, value))
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)


def _base(config: TesseraConfig, spec: Top) -> Path:
    """The build folder of ``spec`` for ``config`` (created, with its ``config.json``)."""
    base = build_root() / f"{spec.module}-{config.hash}-{_source_digest(spec.component)}"
    if not (base / "config.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f"config.json.{os.getpid()}"
        tmp.write_text(config.to_json() + "\n")
        tmp.replace(base / "config.json")
    return base


def _write_once(base: Path, path: Path, what: str, phase: str, make, quiet: bool) -> None:
    """Write ``make()``'s text to ``path`` unless it exists (under the build folder's lock,
    through a temporary file, with a progress line while ``make`` runs)."""
    with locked(base / ".lock"):
        if path.exists():
            return
        with BuildProgress(what, quiet=quiet, phase=lambda: phase):
            text = make()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def generated_verilog(config: TesseraConfig, top: str | Top, quiet: bool = False):
    """The build folder of ``top`` for ``config`` and its generated Verilog file (memory
    initialization compacted: :func:`compact_memory_init`), written on first use. Returns
    ``(folder, verilog file)``."""
    spec = top_spec(top)
    module = spec.module
    base = _base(config, spec)
    vfile = base / f"{module}.v"
    _write_once(base, vfile, f"the Verilog of {module} ({config.hash})", "Amaranth and Yosys",
                lambda: compact_memory_init(verilog_text(config, spec)), quiet)
    return base, vfile


#: Yosys's script for the simulation netlist: processes into multiplexers and flip-flops,
#: the hierarchy flattened, constants propagated through it, logic shared and narrowed,
#: dead logic removed; memories stay arrays.
NETLIST_SCRIPT = ("proc", "flatten", "opt", "wreduce", "opt_clean", "memory_collect")


def simulation_netlist(config: TesseraConfig, top: str | Top, quiet: bool = False):
    """The build folder of ``top`` for ``config`` and a flattened, optimised netlist of it
    for Verilator's native builds (``<module>.netlist.v``), written on first use: Yosys
    (:data:`NETLIST_SCRIPT`) on Amaranth's RTLIL. The same design as the generated
    Verilog, which Verilator simulates about 1.6 times as fast (it cannot optimise across
    Amaranth's module boundaries and process blocks as Yosys does); the tests compare the
    two (``tests/test_native_sim.py``). Returns ``(folder, netlist file)``."""
    from amaranth._toolchain.yosys import find_yosys
    from amaranth.back import rtlil

    spec = top_spec(top)
    base = _base(config, spec)
    netlist = base / f"{spec.module}.netlist.v"

    def make() -> str:
        text = rtlil.convert(spec.component(config), name=spec.module, emit_src=False)
        yosys = find_yosys(lambda ver: ver >= (0, 40))
        script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *NETLIST_SCRIPT,
                  "write_verilog -norename"]
        body = yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)
        return (f"// Simulation netlist of {spec.module} for configuration {config.hash} "
                f"(Yosys: {'; '.join(NETLIST_SCRIPT)}).\n" + compact_memory_init(body))

    _write_once(base, netlist, f"the simulation netlist of {spec.module} ({config.hash})",
                "Amaranth, then Yosys", make, quiet)
    return base, netlist


def build(config: TesseraConfig, sim: str, top: str | Top = "matrix_unit") -> Build:
    """Generate the Verilog of ``top`` (a name in ``hw.generate.TOPS``, or a :class:`Top`)
    for ``config`` and build it for ``sim`` (cached)."""
    require(sim)
    spec = top_spec(top)
    module = spec.module
    base, vfile = generated_verilog(config, spec)
    quick = sim == "verilator" and quick_builds()
    sim_dir = base / (f"{sim}-quick" if quick else sim)
    with locked(base / ".lock"):
        h = hashlib.sha256(vfile.read_bytes())
        for extra in spec.sources:
            h.update(Path(extra).read_bytes())
        h.update(f"ports_only={spec.ports_only}".encode())   # build options that change
        digest = h.hexdigest()
        stamp = sim_dir / "built.sha256"
        if not (stamp.exists() and stamp.read_text() == digest):
            runner = _runner(sim, spec.ports_only)
            if sim == "icarus":
                args = ["-g2005"]
            else:
                args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                        str(LINT_WAIVERS)]
            sim_dir.mkdir(parents=True, exist_ok=True)
            log = sim_dir / "build.log"
            try:
                opt = f"OPT_FAST={QUICK_CXX_OPT} OPT_GLOBAL={QUICK_CXX_OPT}" if quick else ""
                with BuildProgress(f"{module} ({config.hash}) for {sim} under cocotb"
                                   + (" (quick build)" if quick else "")), _make_flags(opt):
                    runner.build(sources=[vfile, *spec.sources], hdl_toplevel=module,
                                 build_dir=sim_dir, build_args=args, timescale=TIMESCALE,
                                 always=True, log_file=log)
            except (SystemExit, RuntimeError) as e:
                raise SimulationFailed(f"building {vfile.name} for {sim} failed ({e}); "
                                       f"log: {log}") from None
            stamp.write_text(digest)
    return Build(config, spec, sim, sim_dir, vfile)


def run(b: Build, test_module: str, *, testcase: str | None = None,
        env: dict[str, str] | None = None, test_dir: Path | None = None, seed: int = 1) -> Path:
    """Run the cocotb ``test_module`` (a dotted module name) against build ``b``.

    Raises
    ------
    SimulationFailed
        When the simulator fails or any cocotb test in the module fails.
    """
    runner = _runner(b.sim)
    test_dir = Path(test_dir or b.directory / "run")
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    log = test_dir / "sim.log"
    extra = {"TESSERA_CONFIG": b.config.to_json(), "PYTHONPATH": os.pathsep.join(sys.path)}
    extra.update(env or {})
    # The runner checks results and exits on failure only under pytest; call it as if it
    # were not, and check the results file here, so both cases behave the same.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        runner.test(test_module=test_module, hdl_toplevel=b.module, hdl_toplevel_lang="verilog",
                    build_dir=b.directory,
                    test_dir=test_dir, testcase=testcase, extra_env=extra, seed=seed,
                    results_xml=str(results), timescale=TIMESCALE, log_file=log)
    except (SystemExit, RuntimeError) as e:
        _keep_log(b, log)
        raise SimulationFailed(f"{b.sim} failed ({e}); log: {log}") from None
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    try:
        _check_results(results, log)
    except SimulationFailed:
        _keep_log(b, log)
        raise
    return results


def _keep_log(b: Build, log: Path) -> None:
    """Keep a failed run's log beside the build (its test folder may be temporary)."""
    if log.exists():
        kept = b.directory / "last-failure.log"
        kept.write_text(log.read_text())
        raise SimulationFailed(f"{b.sim} run of {b.module} failed; its log: {kept}")


def _check_results(results: Path, log: Path) -> None:
    if not results.exists():
        raise SimulationFailed(f"the simulation wrote no results; log: {log}")
    root = ET.parse(results).getroot()
    cases = root.findall(".//testcase")
    failed = [c.get("name") for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    if not cases:
        raise SimulationFailed(f"the simulation ran no test; log: {log}")
    if failed:
        raise SimulationFailed(f"cocotb test(s) failed: {', '.join(failed)}; log: {log}")
