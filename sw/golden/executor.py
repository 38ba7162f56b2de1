"""Golden executor: runs a command stream (``hw/isa.py``) on a model of the machine's
memories, with the golden model of every unit.

Queues and tokens are modelled as the hardware has them: the dispatcher hands commands to
the LOAD, EXECUTE and STORE queues in program order, each queue runs its commands in order,
and a command that waits for a token runs only once a neighbour has signalled one. Of the
queue heads that can run, the executor runs the earliest in program order. A stream in
which no queue can make progress deadlocks on the hardware too: the executor says which
commands are stuck and on which token.

A stream whose result depends on which queue runs first (a missing token) is not detected
here; the differential check against RTL finds those.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, Queue, decode
from ...hw.output_path import OutputOp
from . import dma as gdma
from . import gelu as ggelu
from . import requant as grq
from . import softmax as gsm
from .intmath import saturate
from .matmul import wrap

__all__ = ["ExecutionError", "Machine"]

_CHAIN = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)


class ExecutionError(RuntimeError):
    """A command the machine would refuse, or a deadlock; the message names the command."""


class Machine:
    """Main memory (``mem_size`` bytes from ``mem_base``), scratchpad and accumulator.

    Members
    -------
    mem, spad, acc : ndarray
        The memories (bytes; int8 rows; ``acc_bits`` rows), readable and writable.
    macs : int
        Multiply-accumulates done by COMPUTE commands (padding included).
    """

    def __init__(self, config: TesseraConfig, mem_size: int, mem_base: int = 0):
        self.config = config
        self.mem_base, self.mem_size = mem_base, mem_size
        self.mem = np.zeros(mem_size, dtype=np.uint8)
        self.spad = np.zeros((config.spad_rows, config.spad_row_bytes), dtype=np.int64)
        self.acc = np.zeros((config.acc_rows, config.cols), dtype=np.int64)
        self.weights = None
        self.os = config.dataflow == "os"   # the dataflow until a CONFIG changes it
        self.macs = 0

    # --- running ---------------------------------------------------------------------

    def run(self, program) -> None:
        """Run a program: command words or :class:`Command` objects.

        Raises
        ------
        ExecutionError
            On an illegal command (with its index) or a deadlock.
        """
        cmds = [decode(self.config, c) if isinstance(c, int) else c for c in program]
        queues = {q: deque() for q in _CHAIN}
        tokens = {(a, b): 0 for a in _CHAIN for b in _CHAIN if abs(_CHAIN.index(a)
                                                                   - _CHAIN.index(b)) == 1}
        for index, cmd in enumerate(cmds):
            if cmd.queue == Queue.DISPATCH:
                # FENCE and FINISH: everything before them finishes first.
                self._drain(queues, tokens)
                continue
            queues[cmd.queue].append((index, cmd))
        self._drain(queues, tokens)

    def _drain(self, queues, tokens) -> None:
        while any(queues.values()):
            ready = [(queues[q][0], q) for q in _CHAIN
                     if queues[q] and self._can_run(q, queues[q][0][1], tokens)]
            if not ready:
                stuck = "; ".join(f"{q.name}: command {queues[q][0][0]} "
                                  f"({queues[q][0][1].opcode.name}) waits for "
                                  f"{self._missing(q, queues[q][0][1], tokens)}"
                                  for q in _CHAIN if queues[q])
                raise ExecutionError(f"deadlock: no queue can run; {stuck}")
            (index, cmd), q = min(ready, key=lambda r: r[0][0])
            queues[q].popleft()
            for side in ("prev", "next"):
                if getattr(cmd, f"wait_{side}"):
                    tokens[(self._neighbour(q, side), q)] -= 1
            try:
                self._execute(cmd)
            except (ValueError, IndexError) as e:
                raise ExecutionError(f"command {index} ({cmd.opcode.name}): {e}") from None
            for side in ("prev", "next"):
                if getattr(cmd, f"signal_{side}"):
                    tokens[(q, self._neighbour(q, side))] += 1

    @staticmethod
    def _neighbour(q: Queue, side: str) -> Queue:
        return _CHAIN[_CHAIN.index(q) + (-1 if side == "prev" else 1)]

    def _can_run(self, q, cmd, tokens) -> bool:
        return not self._missing(q, cmd, tokens)

    def _missing(self, q, cmd, tokens) -> str:
        missing = [f"a token from {self._neighbour(q, side).name}"
                   for side in ("prev", "next")
                   if getattr(cmd, f"wait_{side}") and tokens[(self._neighbour(q, side), q)] < 1]
        return " and ".join(missing)

    # --- the commands ----------------------------------------------------------------

    def _execute(self, cmd: Command) -> None:
        getattr(self, f"_{cmd.opcode.name.lower()}")(**cmd.args)

    def _config(self, os):
        if os and not self.config.has_os or not os and not self.config.has_ws:
            raise ValueError(f"the array's dataflow is {self.config.dataflow!r}")
        self.os = bool(os)

    def _load(self, **args):
        cmd = gdma.DmaCommand(**args)
        error = gdma.check_command(cmd, self.config, self.mem_base, self.mem_size, load=True)
        if error != "NONE":
            raise ValueError(f"the DMA refuses it ({error})")
        gdma.load(self.mem, cmd, self.config, self.acc if cmd.to_acc else self.spad,
                  self.mem_base)

    def _rows(self, memory, start: int, count: int, what: str) -> np.ndarray:
        if not (0 <= start and start + count <= len(memory)):
            raise ValueError(f"{what} rows {start}..{start + count - 1} are outside the "
                             f"{len(memory)} rows there are")
        return memory[start:start + count]

    def _preload(self, spad_addr):
        c = self.config
        self.weights = self._rows(self.spad, spad_addr, c.rows, "weight")[:, :c.cols].copy()

    def _compute(self, a_addr, b_addr, rows, acc_addr, accumulate):
        c = self.config
        if self.os:
            a = self._rows(self.spad, a_addr, rows, "activation")[:, :c.rows].T
            b = self._rows(self.spad, b_addr, rows, "weight")[:, :c.cols]
            out_rows = c.rows
        else:
            if self.weights is None:
                raise ValueError("no weights were preloaded")
            a = self._rows(self.spad, a_addr, rows, "activation")[:, :c.rows]
            b = self.weights
            out_rows = rows
        result = wrap(a @ b, c.acc_bits)
        target = self._rows(self.acc, acc_addr, out_rows, "accumulator")
        target[:] = wrap(target + result, c.acc_bits) if accumulate else result
        self.macs += rows * c.rows * c.cols

    def _fence(self):
        pass  # handled by the dispatcher model in run()

    _finish = _fence

    def _store(self, desc, acc_addr, to_spad, spad_addr, dram_addr, stride):
        c = self.config
        op, length, nrows = OutputOp(desc["op"]), desc["length"], desc["rows"]
        chunks = -(-length // c.cols)
        x = self._rows(self.acc, acc_addr, nrows * chunks, "accumulator")
        x = x.reshape(nrows, chunks * c.cols)[:, :length]
        y = self._output(op, x, desc)
        if to_spad:
            dest = self._rows(self.spad, spad_addr, nrows * chunks, "scratchpad")
            padded = np.zeros((nrows, chunks * c.cols), dtype=np.int64)
            padded[:, :length] = y
            dest[:] = 0
            dest[:, :c.cols] = padded.reshape(-1, c.cols)
        else:
            for r in range(nrows):
                cmd = gdma.DmaCommand(dram_addr + r * stride, length, 1, length)
                end = cmd.dram_addr + length
                if cmd.dram_addr < self.mem_base or end > self.mem_base + self.mem_size:
                    raise ValueError(f"row {r} at {cmd.dram_addr:#x} is outside main memory")
                off = cmd.dram_addr - self.mem_base
                self.mem[off:off + length] = (y[r] & 0xFF).astype(np.uint8)

    @staticmethod
    def _output(op: OutputOp, x: np.ndarray, desc: dict) -> np.ndarray:
        """The output path's operation on int32 rows, as int8 bit patterns."""
        m, e = desc["m"], desc["e"]
        x = x.astype(np.int32)
        if op == OutputOp.NONE:
            return saturate(x.astype(np.int64), 8)
        if op == OutputOp.REQUANT:
            return grq.requantize(x, m, e, 8).astype(np.int64)
        if op == OutputOp.RELU:
            return grq.relu(grq.requantize(x, m, e, 8)).astype(np.int64)
        if op == OutputOp.GELU:
            g = desc["consts"]["gelu"]
            # The output scale is the driver's business; the datapath reads only integers.
            consts = ggelu.GeluConstants(**g, out_scale=1.0)
            return grq.requantize(ggelu.i_gelu(x, consts)[0], m, e, 8).astype(np.int64)
        if op == OutputOp.SOFTMAX:
            s = desc["consts"]["exp"]
            consts = gsm.ExpConstants(**s, out_scale=1.0)
            return gsm.i_softmax(x, consts).view(np.int8).astype(np.int64)
        raise ValueError("LAYERNORM stores need gamma and beta, whose place on chip the "
                         "command set does not define yet")
