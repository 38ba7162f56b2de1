"""The runtime: one interface to run command streams on the golden model or on the
generated hardware in simulation.

>>> rt = Runtime(preset("tiny"), backend="golden")      # or "icarus", "verilator"
>>> a = rt.alloc(1024); rt.write(a, data)
>>> result = rt.run(program)                            # Command objects or words
>>> rt.read(c, n), result.counters

Main memory is an image held here (``mem_size`` bytes from ``mem_base``); :meth:`run`
places the command buffer after the allocations, starts the machine and waits for it,
and the image then holds what the run wrote. Every run starts from a fresh machine: the
scratchpad and accumulator are zero and nothing carries over but main memory.

* ``golden``: the golden executor (:class:`~tessera.sw.golden.executor.Machine`) runs the
  buffer's words; its counters are the ones it can know (commands, MACs, bytes moved).
* ``verilator``: the generated Verilog of the accelerator on the Verilog memory model
  (``sim/accel_system.py``), compiled with a C++ harness (``sim/native.py``): main memory
  is shared with the simulator process, Python programs the registers and waits; no
  Python runs per cycle. The counters are the hardware's.
* ``icarus`` (and ``verilator`` with ``harness="cocotb"``): the same system under cocotb,
  driven by ``sim/tb_accel.py``: the image and the results cross through files, the
  testbench only programs the registers and waits for the interrupt.
* ``amaranth``: the accelerator in Amaranth's own simulator (``sim/accel_amaranth.py``),
  with a Python memory model over the image: nothing to build, about 1,000 cycles per
  second on the tiny configuration. For small programs and the fast test tier.
* ``model``: the performance model (:class:`~tessera.sw.perf.PerfModel`): the cycles and
  counters the hardware would report, predicted from the configuration and the memory's
  timing (``mem_latency``, ``mem_gap``) in a fraction of a second, with no data computed
  (main memory is left as it was) unless ``model_data=True``, when the golden executor
  computes it too. Errors the golden model detects (illegal commands, deadlocks) are
  reported as it reports them.
* ``uart``: the accelerator on a board (``hw/board.py``), through its UART host link
  (``sw/runtime/uart.py``; ``port`` is a serial device or a transport object): main
  memory is the board's block RAM; the used part of the image crosses the link each run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, ErrorCode, command_bits, encode
from ...hw.memory import acc_port_signature, spad_port_signature
from ...hw.registers import (
    DONE_CLEAR,
    OUTCOME_READS,
    REG,
    outcome,
    start_writes,
)
from ...sim.accel_system import MEM_BASE, MEM_LATENCY, mem_bytes
from ...sim.axi_checker import ProtocolViolation
from ...sim.bus_faults import BusFaults, ErrorRange
from ...sim.packing import unpack_lanes
from ..check import InputError, whole_number
from ..golden.executor import ExecutionError, Machine

__all__ = ["Runtime", "RunResult", "RunError", "MainMemoryFull", "BACKENDS", "HARNESSES",
           "BusFaults", "ErrorRange", "ProtocolViolation"]

BACKENDS = ("golden", "icarus", "verilator", "amaranth", "uart", "model")
HARNESSES = ("native", "cocotb")


class MainMemoryFull(InputError, MemoryError):
    """The tensors asked for do not fit the runtime's main memory (a bad size of input,
    not an exhausted host: callers may report it like any other bad value)."""


class RunError(RuntimeError):
    """The machine stopped with an error; ``result`` says which command and why."""

    def __init__(self, result: RunResult):
        super().__init__(result.describe())
        self.result = result


@dataclass
class RunResult:
    """How a run ended and what it counted."""

    backend: str
    error: ErrorCode = ErrorCode.NONE
    error_index: int | None = None
    error_addr: int = 0
    message: str = ""
    counters: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    spad: np.ndarray | None = None   # on-chip memories after the run (when asked for)
    acc: np.ndarray | None = None

    memory: dict = field(default_factory=dict)   # RTL: the memory model's timing

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.NONE

    @property
    def cycles(self) -> int | None:
        return self.counters.get("cycles")

    def describe(self) -> str:
        if self.ok:
            return f"{self.backend}: finished" + (f" in {self.cycles} cycles"
                                                  if self.cycles else "")
        where = f" at command {self.error_index}" if self.error_index is not None else ""
        addr = f", address {self.error_addr:#x}" if self.error_addr else ""
        return f"{self.backend}: stopped with {self.error.name}{where}{addr}" + \
            (f": {self.message}" if self.message else "")


class Runtime:
    """Main memory, an allocator, and a backend to run command buffers on.

    Parameters
    ----------
    config : TesseraConfig
    backend : str
        ``golden``, ``icarus``, ``verilator``, ``amaranth``, ``uart`` or ``model``.
    mem_size, mem_base : int
        Main memory; for the RTL backends they must be (and default to) the simulated
        system's (``uart``: the board's, as its ``PING`` reports them).
    machine : type
        The golden backend's executor (a :class:`Machine` subclass, e.g. a model with a
        deliberate fault to test the differential check).
    harness : str
        How the ``verilator`` backend runs: ``native`` (the default: a compiled harness,
        no Python per cycle, main memory shared) or ``cocotb`` (the cocotb testbench,
        as ``icarus`` always runs; kept to compare the two).
    mem_latency, mem_gap : int
        RTL backends and ``model``: the main-memory model's latency in cycles (from an
        address to its first data beat, and from a write's last beat to its response;
        default 100) and its idle cycles after each beat (0: one beat per cycle, the bus's
        full bandwidth; ``g``: ``1 / (g + 1)`` of it). Set per runtime, without a rebuild.
    faults : BusFaults, optional
        ``verilator`` and ``icarus``: random latency, backpressure on the five AXI channels
        and error responses of the memory model (:mod:`tessera.sim.bus_faults`); none by
        default. Set per run without a rebuild (the attribute may be changed between
        runs). Every RTL run on these backends is also watched by the AXI4 and AXI4-Lite
        protocol checkers: a violation raises :class:`ProtocolViolation`.
    model_data : bool
        ``model``: also compute the program's data with the golden executor (main memory
        then holds the results, as on the other backends); off by default.
    port, baud
        ``uart``: the board's serial port (a device name, or an object with ``write`` and
        ``read`` such as the simulated board's transport) and its baud rate.
    trace, trace_from, trace_cycles
        ``verilator`` with the native harness: write an FST waveform of the cycles
        ``trace_from`` .. ``trace_from + trace_cycles``, counted over all runs of this
        runtime from the first START, to the file ``trace`` (a window that spans several
        runs writes one file per run: ``name-1.fst``, ...; :attr:`traced` lists them).
        Off by default, and then free: tracing is a separate build.
    native_build : NativeBuild, optional
        ``verilator`` with the native harness: the simulator to run on (default:
        :func:`~tessera.sim.native.build_native`'s for the configuration, built on first
        use; the profile training of a build runs its instrumented build this way).
    """

    def __init__(self, config: TesseraConfig, backend: str = "golden",
                 mem_size: int | None = None, mem_base: int | None = None,
                 machine: type = Machine, *, harness: str = "native",
                 mem_latency: int = MEM_LATENCY, mem_gap: int = 0,
                 faults: BusFaults | None = None,
                 trace: str | Path | None = None, trace_from: int = 0,
                 trace_cycles: int = 10_000, port=None, baud: int | None = None,
                 model_data: bool = False, native_build=None):
        if not isinstance(config, TesseraConfig):
            raise InputError(f"config must be a TesseraConfig (preset(NAME) or "
                             f"TesseraConfig.from_file(PATH)), not {type(config).__name__}")
        if mem_size is not None:
            # The image is host memory (numpy); 4 GiB is the whole of a 32-bit bus.
            whole_number(mem_size, "mem_size (bytes)", 1, 1 << 32)
        if mem_base is not None:
            whole_number(mem_base, "mem_base", 0)
            if mem_base + (mem_size or 0) > 1 << config.addr_bits:
                raise InputError(f"main memory ({mem_size or 0} bytes at {mem_base:#x}) must lie "
                                 f"within the {config.addr_bits}-bit address space")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not (isinstance(mem_latency, int) and 1 <= mem_latency < 1 << 16):
            raise ValueError(f"mem_latency must be a whole number of cycles from 1 to 65535, "
                             f"not {mem_latency!r}")
        if not (isinstance(mem_gap, int) and 0 <= mem_gap < 256):
            raise ValueError(f"mem_gap must be a whole number of cycles from 0 to 255, "
                             f"not {mem_gap!r}")
        if harness not in HARNESSES:
            raise ValueError(f"unknown harness {harness!r}; choose one of "
                             f"{', '.join(HARNESSES)}")
        if model_data and backend != "model":
            raise ValueError(f"model_data is an option of the model backend, not of {backend}")
        if backend == "icarus":
            harness = "cocotb"
        if backend == "amaranth":
            harness = "amaranth"
            if mem_gap:
                raise ValueError("the amaranth backend's memory model streams at the bus's "
                                 "full bandwidth; mem_gap must be 0")
        if trace is not None:
            if backend != "verilator" or harness != "native":
                raise ValueError("waveforms (trace) need the verilator backend with the native "
                                 "harness")
            if not str(trace).endswith(".fst"):
                raise ValueError(f"the trace is written as FST: name a .fst file, not {trace}")
            if trace_from < 0 or trace_cycles <= 0:
                raise ValueError("the trace window needs trace_from >= 0 and trace_cycles > 0, "
                                 f"not {trace_from} and {trace_cycles}")

        self.config = config
        self.backend = backend
        self.machine = machine
        sys_size, sys_base = mem_bytes(config), MEM_BASE
        if backend == "uart":
            harness = "uart"
            sys_size = self._open_board(port, baud, mem_latency, mem_gap)
        if backend not in ("golden", "model") and (mem_size not in (None, sys_size)
                                    or mem_base not in (None, sys_base)):
            raise ValueError(f"the {'board' if backend == 'uart' else 'simulated system'} has "
                             f"{sys_size} bytes of main memory at {sys_base:#x}; the "
                             f"{backend} backend cannot use others")
        self.mem_size = mem_size or sys_size
        self.mem_base = sys_base if mem_base is None else mem_base
        self.harness = harness if backend not in ("golden", "model") else None
        self.model_data = model_data
        self._model = None
        self.mem_latency, self.mem_gap = mem_latency, mem_gap
        self.faults = faults
        if faults is not None and faults.latency and mem_latency != MEM_LATENCY:
            raise ValueError("give the memory latency once: mem_latency or faults.latency "
                             "(a range), not both")
        self.trace, self.trace_from, self.trace_cycles = trace, trace_from, trace_cycles
        self.traced: list[Path] = []
        if native_build is not None and (backend != "verilator" or harness != "native"):
            raise ValueError("native_build needs the verilator backend with the native "
                             "harness")
        self.native_build = native_build
        self._cycles_run = 0
        if self.harness == "native":
            from ...sim.native import SharedMemory

            self._shared = SharedMemory(self.mem_size)
            self.image = self._shared.array
        else:
            self.image = np.zeros(self.mem_size, dtype=np.uint8)
        self._top = 0            # allocation pointer (offset)
        self._used = 0           # highest byte offset written or allocated

    @property
    def faults(self) -> BusFaults | None:
        """The memory model's faults and random timing for the next runs (None: none)."""
        return self._faults

    @faults.setter
    def faults(self, faults: BusFaults | None) -> None:
        if faults is not None and not isinstance(faults, BusFaults):
            raise ValueError(f"faults must be a BusFaults value or None, not {faults!r}")
        if faults is not None and faults.active and self.backend not in ("icarus",
                                                                         "verilator"):
            raise ValueError(f"bus faults are a feature of the Verilog memory model: they need "
                             f"the verilator or icarus backend, not {self.backend}")
        self._faults = faults

    # --- memory ----------------------------------------------------------------------

    def alloc(self, nbytes: int, align: int = 64) -> int:
        """``nbytes`` of main memory (zeroed), aligned; returns the address.

        Raises
        ------
        InputError
            If ``nbytes`` is not a positive integer or ``align`` not a power of two.
        MainMemoryFull
            If main memory is full.
        """
        whole_number(nbytes, "nbytes")
        if whole_number(align, "align") & (align - 1):
            raise InputError(f"align must be a power of two, not {align}")
        start = -(-self._top // align) * align
        if start + nbytes > self.mem_size:
            raise MainMemoryFull(f"main memory is full: {nbytes} bytes asked, "
                                 f"{self.mem_size - start} left of {self.mem_size} (the "
                                 f"simulated system of this configuration)")
        self._top = start + nbytes
        self._used = max(self._used, self._top)
        return self.mem_base + start

    def _offset(self, addr: int, n: int) -> int:
        whole_number(addr, "addr", 0)
        off = addr - self.mem_base
        if off < 0 or off + n > self.mem_size:
            raise InputError(f"{n} bytes at {addr:#x} are outside main memory "
                             f"({self.mem_base:#x} .. {self.mem_base + self.mem_size - 1:#x})")
        return off

    def write(self, addr: int, data) -> None:
        """Write ``data`` (bytes, or a numpy array's bytes) at ``addr``.

        Raises
        ------
        InputError
            If the data is not bytes or a numeric array, or does not lie inside main
            memory.
        """
        raw = _raw_bytes(data)
        off = self._offset(addr, raw.size)
        self.image[off:off + raw.size] = raw
        self._used = max(self._used, off + raw.size)

    def place(self, data, align: int = 64) -> int:
        """Allocate room for ``data`` (an array's bytes, at least one), aligned, and write it
        there; returns the address."""
        raw = _raw_bytes(data)
        at = self.alloc(max(raw.size, 1), align)
        self.write(at, raw)
        return at

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        """A copy of ``nbytes`` of main memory at ``addr``.

        Raises
        ------
        InputError
            If ``nbytes`` is not a positive integer or the bytes are not all inside main
            memory.
        """
        off = self._offset(addr, whole_number(nbytes, "nbytes"))
        return self.image[off:off + nbytes].copy()

    # --- running ---------------------------------------------------------------------

    def run(self, program, *, timeout_cycles: int = 50_000_000, onchip: bool = False,
            progress=None, check: bool = False) -> RunResult:
        """Run ``program`` (``Command`` objects or command words).

        Parameters
        ----------
        timeout_cycles : int
            RTL backends: give up after this many cycles (a hang is reported, not waited
            for forever).
        onchip : bool
            Also return the scratchpad and accumulator contents after the run.
        progress : callable(dict), optional
            RTL backends: called now and then with ``cycles``, ``commands``,
            ``wall_seconds``.
        check : bool
            Raise :class:`RunError` if the machine stopped with an error.

        Raises
        ------
        InputError
            If a program element is neither a ``Command`` nor a command word (an integer
            of ``command_bits`` bits), or ``timeout_cycles`` is not a positive integer.
        """
        whole_number(timeout_cycles, "timeout_cycles")
        if isinstance(program, str | bytes | bytearray) or not hasattr(program, "__iter__"):
            raise InputError(f"program must be a sequence of Command objects or command "
                             f"words, not {type(program).__name__}")
        wbytes = command_bits(self.config) // 8
        top = (1 << (8 * wbytes)) - 1
        program = list(program)
        words = [encode(self.config, c) if isinstance(c, Command) else c for c in program]
        if not all(type(w) is int for w in words) or words and (min(words) < 0 or
                                                                max(words) > top):
            # Some element is not a plain word in range: check each, to name it.
            words = [w if isinstance(c, Command) else
                     whole_number(c, f"command word {i}", 0, top)
                     for i, (c, w) in enumerate(zip(program, words, strict=True))]
        room = max(len(words), 1) * wbytes     # an empty program's buffer: one word
        buf = self.alloc(room, align=max(64, wbytes))
        if self.backend != "model" or self.model_data:
            # (The performance model without data reads nothing from main memory.)
            self.write(buf, b"".join(w.to_bytes(wbytes, "little") for w in words))
        try:
            if self.backend == "golden":
                result = self._run_golden(words, onchip)
            elif self.backend == "model":
                result = self._run_model(words, buf, onchip)
            else:
                result = self._run_rtl(buf, len(words), timeout_cycles, onchip, progress)
        finally:
            self._top -= room    # the buffer's space is reused next time
        if check and not result.ok:
            raise RunError(result)
        return result

    def _run_golden(self, words, onchip) -> RunResult:
        m = self.machine(self.config, self.mem_size, self.mem_base)
        m.mem = self.image
        t = time.time()
        result = RunResult("golden")
        try:
            m.run(words)
        except ExecutionError as e:
            result.error, result.error_index, result.message = e.code, e.index, str(e)
            result.error_addr = e.addr
        result.wall_seconds = time.time() - t
        result.counters = {"commands": len(words), "macs": m.macs,
                           "bytes_loaded": m.bytes_loaded, "bytes_stored": m.bytes_stored}
        if onchip:
            result.spad, result.acc = m.spad.copy(), m.acc.copy()
        return result

    def _run_model(self, words, cmd_addr, onchip) -> RunResult:
        """The performance model's prediction (the golden executor's data too, with
        ``model_data``)."""
        from ..perf import PerfModel

        if self._model is None:
            self._model = PerfModel(self.config, self.mem_latency, self.mem_gap)
        m = self._model.machine(self.mem_size, self.mem_base,
                                self.machine if self.model_data else None)
        if self.model_data:
            m.mem = self.image
        pred = self._model.predict(words, cmd_addr=cmd_addr, machine=m)
        result = RunResult("model", error=pred.error, error_index=pred.error_index,
                           error_addr=pred.error_addr, message=pred.message,
                           counters=pred.counters, wall_seconds=pred.wall_seconds,
                           memory=self.memory_timing())
        if onchip:
            if not self.model_data:
                raise ValueError("the model backend computes the on-chip memories only with "
                                 "model_data=True")
            result.spad, result.acc = m.spad.copy(), m.acc.copy()
        return result

    def _run_rtl(self, cmd_addr, count, timeout, onchip, progress) -> RunResult:
        job = {"cmd_addr": cmd_addr, "cmd_count": count, "window_base": self.mem_base,
               "window_size": self.mem_size, "timeout_cycles": timeout, "onchip": onchip,
               "mem_latency": self.mem_latency, "mem_gap": self.mem_gap, "faults": []}
        if self.faults is not None and self.faults.active:
            job["mem_latency"] = self.faults.base_latency(self.mem_latency)
            job["faults"] = self.faults.registers()
        if self.harness == "uart":
            from .uart import run_on_board

            out = run_on_board(self._link, self._board, self.image, self._used, job, progress)
        elif self.harness == "amaranth":
            from ...sim.accel_amaranth import run_accelerator

            out = run_accelerator(self.config, self.image, self.mem_base, job)
            if onchip:
                out.update(_onchip(self.config, lambda acc, _: out["acc" if acc else "spad"]))
        elif self.harness == "native":
            out = self._run_native(job, progress)
        else:
            out = self._run_cocotb(job, progress)
        result = RunResult(self.backend, counters=out["counters"],
                           wall_seconds=out["wall_seconds"], memory=self.memory_timing())
        if not out["finished"]:
            result.error = ErrorCode.TIMEOUT
            result.message = (f"no completion within {timeout} cycles (the hardware "
                              f"detected no deadlock; status {out['status']:#x})")
        elif out["error_code"]:
            result.error = ErrorCode(out["error_code"])
            result.error_index = out["error_index"]
            result.error_addr = out["error_addr"]
        if onchip:
            result.spad, result.acc = out["spad"], out["acc"]
        if out.get("protocol"):
            error = ProtocolViolation(*out["protocol"])
            error.result = result
            raise error
        return result

    def memory_timing(self) -> dict:
        """The simulated main memory's timing, as every RTL figure reports it."""
        if self.backend == "golden":
            return {}
        if self.backend == "uart":
            from ...hw.bram import READ_LATENCY_CYCLES

            return {"latency_cycles": READ_LATENCY_CYCLES,
                    "bytes_per_cycle": self.config.bus_bytes}
        timing = {"latency_cycles": self.mem_latency,
                  "bytes_per_cycle": self.config.bus_bytes / (self.mem_gap + 1)}
        if self.faults is not None and self.faults.active:
            timing["latency_cycles"] = self.faults.base_latency(self.mem_latency)
            timing["faults"] = self.faults.describe()
        return timing

    def _open_board(self, port, baud, mem_latency, mem_gap) -> int:
        """Open the board's link and check its bitstream; its memory size."""
        from .uart import open_board

        if (mem_latency, mem_gap) != (MEM_LATENCY, 0):
            raise ValueError("the board's main memory is block RAM: mem_latency and mem_gap "
                             "are for the simulated memory model")
        self._link, self._board = open_board(port, baud)
        b, c = self._board, self.config
        if b.config_hash != c.hash32 or b.bus_bytes != c.bus_bytes or b.mem_base != MEM_BASE:
            raise ValueError(f"the board's bitstream is not this configuration's: it reports "
                             f"configuration hash {b.config_hash:#010x}, a {b.bus_bytes}-byte "
                             f"bus and memory at {b.mem_base:#x}; the runtime expects "
                             f"{c.hash32:#010x}, {c.bus_bytes} bytes and {MEM_BASE:#x} "
                             f"({c.describe()})")
        return b.mem_size

    def _run_native(self, job: dict, progress) -> dict:
        """The run on the native harness (``sim/native.py``): the memory is shared, so
        nothing is copied in or out."""
        from ...sim.native import NativeSim

        c = self.config
        trace = self._trace_window()
        if trace:
            trace["trace"].unlink(missing_ok=True)      # written anew, if the window is met
        with NativeSim(c, self._shared, build=self.native_build, **trace) as sim:
            sim.reset(4)
            sim.memory_timing(job["mem_latency"], job["mem_gap"])
            sim.memory_config(job["faults"])
            chash = sim.read(REG["CONFIG_HASH"])
            if chash != c.hash32:
                raise RuntimeError(f"the simulated hardware has configuration hash "
                                   f"{chash:#x}, the runtime expects {c.hash32:#x}")
            for offset, value in start_writes(job):
                sim.write(offset, value)

            def report(cycles, seconds, values):
                progress({"cycles": values[0] | values[1] << 32, "commands": values[2],
                          "wall_seconds": seconds})

            watch = (REG["CYCLES_LO"], REG["CYCLES_HI"], REG["COMMANDS_LO"])
            ended = sim.run(job["timeout_cycles"], report if progress else None,
                            every=1 << 20, watch=watch)
            self._cycles_run += ended.cycles
            if trace and Path(trace["trace"]).exists():
                self.traced.append(Path(trace["trace"]))
            out = {"finished": ended.finished, "wall_seconds": ended.seconds,
                   **outcome({key: sim.read64(offset) if wide else sim.read(offset)
                              for key, offset, wide in OUTCOME_READS})}
            if ended.finished:
                sim.write(*DONE_CLEAR)
            out["protocol"] = sim.protocol()
            printed = sim.log().strip()
            if printed:
                warnings.warn(f"the simulated system printed: {printed[:2000]}",
                              RuntimeWarning, stacklevel=4)
            if job["onchip"]:
                out.update(_onchip(c, lambda acc, rows: sim.rows(acc, 0, rows)))
        return out

    def _trace_window(self) -> dict:
        """This run's part of the waveform window (counted over all runs of this
        runtime): the file, and where in the run the window starts and how long it is."""
        if self.trace is None:
            return {}
        start = self.trace_from - self._cycles_run
        end = self.trace_from + self.trace_cycles - self._cycles_run
        if end <= 0:
            return {}
        path = Path(self.trace)
        if self.traced:
            path = path.with_name(f"{path.stem}-{len(self.traced)}{path.suffix}")
        return {"trace": path, "trace_from": max(start, 0),
                "trace_cycles": end - max(start, 0)}

    def _run_cocotb(self, job: dict, progress) -> dict:
        """The run under cocotb (``sim/tb_accel.py``): the image and the results cross
        through files."""
        from ...sim import runner
        from ...sim.accel_system import ACCEL_SYSTEM

        bb = self.config.bus_bytes
        used_words = -(-self._used // bb)
        b = runner.build(self.config, self.backend, ACCEL_SYSTEM)
        tmp = Path(tempfile.mkdtemp(prefix="tessera-run-"))
        try:
            np.save(tmp / "image.npy", self.image[:used_words * bb])
            job = dict(job, image=str(tmp / "image.npy"), image_word=0,
                       progress_cycles=1 << 19, dump_word=0, dump_words=used_words)
            (tmp / "job.json").write_text(json.dumps(job))
            stop = threading.Event()
            watcher = None
            if progress is not None:
                watcher = threading.Thread(target=_watch, args=(tmp / "progress.json",
                                                                progress, stop), daemon=True)
                watcher.start()
            try:
                runner.run(b, "tessera.sim.tb_accel", test_dir=tmp,
                           env={"TESSERA_JOB": str(tmp / "job.json"),
                                "TESSERA_RESULT": str(tmp / "result.json")})
            finally:
                stop.set()
                if watcher:
                    watcher.join()
            out = json.loads((tmp / "result.json").read_text())
            dump = tmp / "dump.npy"
            if dump.exists():
                data = np.load(dump)
                self.image[:data.size] = data
            if job["onchip"]:
                out["spad"], out["acc"] = np.load(tmp / "spad.npy"), np.load(tmp / "acc.npy")
            return out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _raw_bytes(data) -> np.ndarray:
    """The bytes of ``data`` to write: bytes-like, or a numeric numpy array (or what
    ``np.asarray`` makes one of) in its memory order."""
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(bytes(data), np.uint8)
    if isinstance(data, str):
        raise InputError("data must be bytes or a numeric array, not str (encode it first)")
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"data must be bytes or an array of integers or floats, not an array "
                         f"of {arr.dtype}")
    return np.ascontiguousarray(arr).view(np.uint8).reshape(-1)


def _onchip(config: TesseraConfig, read_rows) -> dict:
    """The scratchpad and accumulator as lane arrays, from ``read_rows(acc, rows)``: the
    row words of one memory (``acc``: the accumulator) as the debug port reads them."""
    out = {}
    for which, rows, sig in (("spad", config.spad_rows, spad_port_signature(config)),
                             ("acc", config.acc_rows, acc_port_signature(config))):
        mask = (1 << sig.row_shape.size) - 1
        words = read_rows(which == "acc", rows)
        out[which] = np.array(unpack_lanes([w & mask for w in words], sig.row_shape),
                              dtype=np.int64)
    return out


def _watch(path: Path, progress, stop: threading.Event) -> None:
    seen = None
    while not stop.wait(1.0):
        try:
            text = path.read_text()
        except OSError:
            continue
        if text and text != seen:
            seen = text
            try:
                progress(json.loads(text))
            except ValueError:
                pass
