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
* ``icarus`` / ``verilator``: the generated Verilog of the accelerator on the Verilog
  memory model (``sim/accel_system.py``), driven by ``sim/tb_accel.py``: the image and the
  results cross through files, the testbench only programs the registers and waits for the
  interrupt, so long runs cost no Python per cycle. The counters are the hardware's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, ErrorCode, command_bits, encode
from ..golden.executor import ExecutionError, Machine

__all__ = ["Runtime", "RunResult", "RunError", "MainMemoryFull", "BACKENDS"]

BACKENDS = ("golden", "icarus", "verilator")


class MainMemoryFull(MemoryError, ValueError):
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
        ``golden``, ``icarus`` or ``verilator``.
    mem_size, mem_base : int
        Main memory; for the RTL backends they must be (and default to) the simulated
        system's.
    machine : type
        The golden backend's executor (a :class:`Machine` subclass, e.g. a model with a
        deliberate fault to test the differential check).
    """

    def __init__(self, config: TesseraConfig, backend: str = "golden",
                 mem_size: int | None = None, mem_base: int | None = None,
                 machine: type = Machine):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        from ...sim.accel_system import MEM_BASE, mem_bytes

        self.config = config
        self.backend = backend
        self.machine = machine
        sys_size, sys_base = mem_bytes(config), MEM_BASE
        if backend != "golden" and (mem_size not in (None, sys_size)
                                    or mem_base not in (None, sys_base)):
            raise ValueError(f"the simulated system has {sys_size} bytes of main memory at "
                             f"{sys_base:#x}; the {backend} backend cannot use others")
        self.mem_size = mem_size or sys_size
        self.mem_base = sys_base if mem_base is None else mem_base
        self.image = np.zeros(self.mem_size, dtype=np.uint8)
        self._top = 0            # allocation pointer (offset)
        self._used = 0           # highest byte offset written or allocated

    # --- memory ----------------------------------------------------------------------

    def alloc(self, nbytes: int, align: int = 64) -> int:
        """``nbytes`` of main memory (zeroed), aligned; returns the address.

        Raises
        ------
        MainMemoryFull
            If main memory is full.
        """
        start = -(-self._top // align) * align
        if start + nbytes > self.mem_size:
            raise MainMemoryFull(f"main memory is full: {nbytes} bytes asked, "
                                 f"{self.mem_size - start} left of {self.mem_size} (the "
                                 f"simulated system of this configuration)")
        self._top = start + nbytes
        self._used = max(self._used, self._top)
        return self.mem_base + start

    def _offset(self, addr: int, n: int) -> int:
        off = addr - self.mem_base
        if off < 0 or off + n > self.mem_size:
            raise ValueError(f"{n} bytes at {addr:#x} are outside main memory "
                             f"({self.mem_base:#x} .. {self.mem_base + self.mem_size - 1:#x})")
        return off

    def write(self, addr: int, data) -> None:
        raw = np.frombuffer(bytes(data), np.uint8) if isinstance(data, bytes | bytearray) \
            else np.asarray(data).view(np.uint8).reshape(-1)
        off = self._offset(addr, raw.size)
        self.image[off:off + raw.size] = raw
        self._used = max(self._used, off + raw.size)

    def place(self, data) -> int:
        """Allocate room for ``data`` (an array's bytes, at least one) and write it there;
        returns the address."""
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        at = self.alloc(max(raw.size, 1))
        self.write(at, raw)
        return at

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        off = self._offset(addr, nbytes)
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
        """
        words = [encode(self.config, c) if isinstance(c, Command) else int(c) for c in program]
        wbytes = command_bits(self.config) // 8
        buf = self.alloc(len(words) * wbytes, align=max(64, wbytes))
        raw = b"".join(w.to_bytes(wbytes, "little") for w in words)
        self.write(buf, raw)
        try:
            if self.backend == "golden":
                result = self._run_golden(words, onchip)
            else:
                result = self._run_rtl(buf, len(words), timeout_cycles, onchip, progress)
        finally:
            self._top -= len(words) * wbytes    # the buffer's space is reused next time
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
        result.wall_seconds = time.time() - t
        result.counters = {"commands": len(words), "macs": m.macs,
                           "bytes_loaded": m.bytes_loaded, "bytes_stored": m.bytes_stored}
        if onchip:
            result.spad, result.acc = m.spad.copy(), m.acc.copy()
        return result

    def _run_rtl(self, cmd_addr, count, timeout, onchip, progress) -> RunResult:
        from ...sim import runner
        from ...sim.accel_system import ACCEL_SYSTEM

        c = self.config
        bb = c.bus_bytes
        used_words = -(-self._used // bb)
        b = runner.build(c, self.backend, ACCEL_SYSTEM)
        tmp = Path(tempfile.mkdtemp(prefix="tessera-run-"))
        try:
            np.save(tmp / "image.npy", self.image[:used_words * bb])
            job = {"image": str(tmp / "image.npy"), "image_word": 0,
                   "cmd_addr": cmd_addr, "cmd_count": count,
                   "window_base": self.mem_base, "window_size": self.mem_size,
                   "timeout_cycles": timeout, "progress_cycles": 1 << 19,
                   "dump_word": 0, "dump_words": used_words, "onchip": onchip}
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
            result = RunResult(self.backend, counters=out["counters"],
                               wall_seconds=out["wall_seconds"])
            if not out["finished"]:
                result.error = ErrorCode.DEADLOCK
                result.message = (f"no completion within {timeout} cycles (the hardware "
                                  f"hangs; status {out['status']:#x})")
            elif out["error_code"]:
                result.error = ErrorCode(out["error_code"])
                result.error_index = out["error_index"]
                result.error_addr = out["error_addr"]
            if onchip:
                result.spad, result.acc = np.load(tmp / "spad.npy"), np.load(tmp / "acc.npy")
            return result
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


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
