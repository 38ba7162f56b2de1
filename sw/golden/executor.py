"""Golden executor: runs a command stream (``hw/isa.py``) on a model of the machine's
memories, with the golden model of every unit.

Queues and tokens are modelled as the hardware has them (``docs/semantics.md``): the
dispatcher hands commands to the LOAD, EXECUTE and STORE queues in program order, each
queue holds at most its configured depth of commands not yet issued (the dispatcher waits
while the next command's queue is full), each queue runs its commands in order, and a
command that waits for a token runs only once a neighbour has signalled one. Of the queue
heads that can run, the executor runs the earliest in program order. A stream in which no
queue can make progress deadlocks on the hardware too: the executor says which commands
are stuck and on which token, and reports the earliest command at a blocked head.

A stream whose result depends on which queue runs first (a missing token) is not detected
here; the differential check against RTL finds those.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ...hw.config import TesseraConfig
from ...hw.isa import Command, ErrorCode, Opcode, Queue, check_tokens, decode, run_count_shape
from ...hw.output_path import OutputDigit, OutputOp
from ...hw.requant import DIGIT_SHIFT
from ...hw.store_unit import PARAM_LANE_BITS, PARAM_ROWS
from . import dma as gdma
from . import gelu as ggelu
from . import layernorm as gln
from . import requant as grq
from . import softmax as gsm
from .matmul import wrap
from .output import descriptor_digit, output_op

__all__ = ["ExecutionError", "Machine", "store_segments"]

_CHAIN = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)


class ExecutionError(RuntimeError):
    """A command the machine would refuse, or a deadlock; the message names the command.

    Members
    -------
    code : ErrorCode
        What the hardware's status register reports for it.
    index : int or None
        The command's position in the program (for a deadlock, the earliest command at a
        blocked queue head).
    addr : int
        The main-memory address the hardware reports with it (0 where it reports none).
    """

    def __init__(self, message: str, code: ErrorCode, index: int | None = None,
                 addr: int = 0):
        super().__init__(message)
        self.code, self.index, self.addr = code, index, addr


class _Refused(ValueError):
    """A command's own error, with the code (and address) the hardware reports."""

    def __init__(self, message: str, code: ErrorCode, addr: int = 0):
        super().__init__(message)
        self.code, self.addr = code, addr


class Machine:
    """Main memory (``mem_size`` bytes from ``mem_base``), scratchpad and accumulator.

    Members
    -------
    mem, spad, acc : ndarray
        The memories (bytes; int8 rows; ``acc_bits`` rows), readable and writable.
    macs : int
        Multiply-accumulates done by COMPUTE commands (padding included).
    bytes_loaded, bytes_stored : int
        Bytes of main memory read by LOADs and written by STOREs.
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
        self.bytes_loaded = 0   # useful bytes moved by LOADs and STOREs to main memory
        self.bytes_stored = 0
        #: None: of the queue heads that can run, the earliest in program order runs first;
        #: a numpy Generator: a random one (another legal schedule, to find programs whose
        #: result depends on timing: a missing token).
        self.shuffle = None

    # --- running ---------------------------------------------------------------------

    def run(self, program) -> None:
        """Run a program: command words or :class:`Command` objects.

        The on-chip state (scratchpad, accumulator, dataflow, preloaded weights) carries
        over from earlier runs; main memory is :attr:`mem`.

        Raises
        ------
        ExecutionError
            On an illegal command (with its index and error code) or a deadlock. A command
            refused when dispatched (an illegal opcode, token or field) ends the dispatch;
            the commands dispatched before it still run, and an error of theirs or a
            deadlock among them is reported instead, as on the hardware.
        """
        queues = {q: deque() for q in _CHAIN}
        c = self.config
        depth = {Queue.LOAD: c.load_queue_depth, Queue.EXECUTE: c.exec_queue_depth,
                 Queue.STORE: c.store_queue_depth}
        tokens = {(a, b): 0 for a in _CHAIN for b in _CHAIN if abs(_CHAIN.index(a)
                                                                   - _CHAIN.index(b)) == 1}
        os_mode, weights = self.os, self.weights is not None
        for index, word in enumerate(program):
            cmd = None
            try:
                try:
                    cmd = decode(self.config, word) if isinstance(word, int) else word
                except ValueError as e:
                    raise _Refused(str(e), ErrorCode.ILLEGAL_OPCODE) from None
                os_mode, weights = self._check_dispatch(cmd, os_mode, weights)
            except _Refused as e:
                # The commands dispatched before it run to their end first; an error of
                # theirs (or a deadlock among them) is the one reported.
                self._drain(queues, tokens)
                what = f"command {index}" + (f" ({cmd.opcode.name})" if cmd else "")
                raise ExecutionError(f"{what}: {e}", e.code, index, e.addr) from None
            if cmd.queue == Queue.DISPATCH:
                # FENCE and FINISH: everything before them finishes first.
                self._drain(queues, tokens)
                if cmd.opcode == Opcode.FINISH:
                    return
                continue
            # The dispatcher waits while the command's queue is full.
            self._drain(queues, tokens, room=(cmd.queue, depth[cmd.queue]))
            queues[cmd.queue].append((index, cmd))
        self._drain(queues, tokens)

    def _check_dispatch(self, cmd: Command, os_mode: bool, weights: bool):
        """The checks the dispatcher makes of an execute or store command before queueing
        it; returns the dataflow and whether weights are preloaded after it."""
        c, op, a = self.config, cmd.opcode, cmd.args

        def refuse(message, code=ErrorCode.ILLEGAL_FIELD):
            raise _Refused(message, code)

        def within(start, count, total, what):
            if start + count > total:
                refuse(f"{what} rows {start}..{start + count - 1} are outside the {total} "
                       f"rows there are", ErrorCode.LOCAL)

        if op == Opcode.NOP and cmd.queue == Queue.DISPATCH:
            refuse("a NOP runs in the LOAD, EXECUTE or STORE queue, not DISPATCH")
        try:
            check_tokens(cmd)
        except ValueError as e:
            refuse(str(e), ErrorCode.ILLEGAL_TOKEN)
        if op == Opcode.CONFIG:
            if a["os"] and not c.has_os or not a["os"] and not c.has_ws:
                refuse(f"the array's dataflow is {c.dataflow!r}")
            return bool(a["os"]), weights
        if op == Opcode.PRELOAD:
            within(a["spad_addr"], c.rows, c.spad_rows, "weight")
            return os_mode, True
        if op == Opcode.COMPUTE and a["rows"]:
            count = a.get("count", 0)
            within(a["a_addr"], a["rows"], c.spad_rows, "activation")
            if os_mode:
                if count:
                    refuse(f"a run of {count} weight tiles (count) is weight-stationary; "
                           "the array is in the output-stationary dataflow")
                within(a["b_addr"], a["rows"], c.spad_rows, "B")
                within(a["acc_addr"], c.rows, c.acc_rows, "accumulator")
            else:
                most = run_count_shape(c).stop - 1
                if count > most:
                    refuse(f"a run of {count} weight tiles (count); at most {most}")
                if count:
                    within(a["b_addr"], count * c.rows, c.spad_rows, "weight")
                    within(a["a_addr"] + (count - 1) * a.get("a_stride", 0), a["rows"],
                           c.spad_rows, "activation")
                elif not weights:
                    refuse("no weights were preloaded")
                within(a["acc_addr"], a["rows"], c.acc_rows, "accumulator")
        return os_mode, weights

    def _drain(self, queues, tokens, room=None) -> None:
        """Run queue heads until every queue is empty, or (``room``: a queue and its depth)
        until that queue has room for one more command."""
        while any(queues.values()):
            if room is not None and len(queues[room[0]]) < room[1]:
                return
            ready = [(queues[q][0], q) for q in _CHAIN
                     if queues[q] and self._can_run(q, queues[q][0][1], tokens)]
            if not ready:
                stuck = "; ".join(f"{q.name}: command {queues[q][0][0]} "
                                  f"({queues[q][0][1].opcode.name}) waits for "
                                  f"{self._missing(q, queues[q][0][1], tokens)}"
                                  for q in _CHAIN if queues[q])
                if room is not None:
                    stuck += (f"; the dispatcher waits for room in the {room[0].name} queue "
                              f"({room[1]} commands)")
                first = min(queues[q][0][0] for q in _CHAIN if queues[q])
                raise ExecutionError(f"deadlock: no queue can run; {stuck}", ErrorCode.DEADLOCK,
                                     first)
            if self.shuffle is None:
                (index, cmd), q = min(ready, key=lambda r: r[0][0])
            else:
                (index, cmd), q = ready[int(self.shuffle.integers(len(ready)))]
            queues[q].popleft()
            for side in ("prev", "next"):
                if getattr(cmd, f"wait_{side}"):
                    tokens[(self._neighbour(q, side), q)] -= 1
            try:
                self._execute(cmd)
            except _Refused as e:
                raise ExecutionError(f"command {index} ({cmd.opcode.name}): {e}", e.code,
                                     index, e.addr) from None
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
        self.os = bool(os)

    def _check_load(self, args: dict) -> gdma.DmaCommand:
        """The DMA's checks of a LOAD (raises _Refused), and the bytes it counts."""
        cmd = gdma.DmaCommand(**args)
        error = gdma.check_command(cmd, self.config, self.mem_base, self.mem_size, load=True)
        if error != "NONE":
            # The DMA names the command's address whatever its check found.
            raise _Refused(f"the DMA refuses it ({error})", ErrorCode[error], cmd.dram_addr)
        self.bytes_loaded += cmd.rows * cmd.row_bytes
        return cmd

    def _load(self, **args):
        cmd = self._check_load(args)
        gdma.load(self.mem, cmd, self.config, self.acc if cmd.to_acc else self.spad,
                  self.mem_base)

    def _rows(self, memory, start: int, count: int, what: str) -> np.ndarray:
        if not (0 <= start and start + count <= len(memory)):
            raise _Refused(f"{what} rows {start}..{start + count - 1} are outside the "
                             f"{len(memory)} rows there are", ErrorCode.LOCAL)
        return memory[start:start + count]

    def _preload(self, spad_addr):
        c = self.config
        self.weights = self._rows(self.spad, spad_addr, c.rows, "weight")[:, :c.cols].copy()

    def _compute(self, a_addr, b_addr, rows, acc_addr, accumulate, count=0, a_stride=0,
                 shift=0):
        c = self.config
        if count and rows and not self.os:
            # A run: the same as ``count`` PRELOAD / COMPUTE pairs (hw/isa.py), the
            # preloaded weights left as they are.
            preloaded = self.weights
            try:
                for i in range(count):
                    self._preload(b_addr + i * c.rows)
                    self._compute(a_addr + i * a_stride, 0, rows, acc_addr,
                                  accumulate or i > 0, shift=shift)
            finally:
                self.weights = preloaded
            return
        if self.os:
            a = self._rows(self.spad, a_addr, rows, "activation")[:, :c.rows].T
            b = self._rows(self.spad, b_addr, rows, "weight")[:, :c.cols]
            out_rows = c.rows
        else:
            a = self._rows(self.spad, a_addr, rows, "activation")[:, :c.rows]
            b = self.weights
            out_rows = rows
        result = wrap((a @ b) << (DIGIT_SHIFT if shift else 0), c.acc_bits)
        target = self._rows(self.acc, acc_addr, out_rows, "accumulator")
        target[:] = wrap(target + result, c.acc_bits) if accumulate else result
        self.macs += rows * c.rows * c.cols

    def _fence(self):
        pass  # handled by the dispatcher model in run()

    _finish = _fence

    def _nop(self, queue):
        pass  # only its tokens

    def _check_store(self, desc, acc_addr, to_spad, spad_addr, transpose=0, param_addr=0,
                     prescale=0):
        """The store unit's checks of a STORE, in its order (the shape, then the local
        rows); returns its operation and the chunks per row.

        Raises
        ------
        _Refused
            With SHAPE or LOCAL, as the unit reports them.
        """
        c = self.config
        C = c.cols
        op, length, nrows = desc["op"], desc["length"], desc["rows"]
        if op not in set(OutputOp):
            raise _Refused(f"output operation {int(op)} does not exist (0 .. "
                           f"{max(o.value for o in OutputOp)})", ErrorCode.SHAPE)
        op = OutputOp(op)
        if not 1 <= length <= c.max_row_len:
            raise _Refused(f"a row of {length} elements (1 .. {c.max_row_len})", ErrorCode.SHAPE)
        digit = descriptor_digit(desc)
        if op != OutputOp.SOFTMAX and digit not in {d.value for d in OutputDigit}:
            raise _Refused(f"output digit {int(digit)} does not exist (0 .. "
                           f"{max(d.value for d in OutputDigit)})", ErrorCode.SHAPE)
        if transpose and (not to_spad or length > C):
            raise _Refused(f"a transposed store goes to the scratchpad with rows of at most "
                           f"{C} elements, not {length}", ErrorCode.SHAPE)
        if prescale and op != OutputOp.LAYERNORM:
            raise _Refused("a prescale belongs to a LAYERNORM store", ErrorCode.SHAPE)
        if op == OutputOp.LAYERNORM and c.acc_bits != PARAM_LANE_BITS:
            raise _Refused(f"LayerNorm's gamma / beta table needs {PARAM_LANE_BITS}-bit "
                           f"accumulator lanes, not {c.acc_bits}", ErrorCode.SHAPE)
        chunks = -(-length // C)
        spad_rows = -(-nrows // C) * C if transpose else nrows * chunks
        if acc_addr + nrows * chunks > c.acc_rows or \
                to_spad and spad_addr + spad_rows > c.spad_rows or \
                op == OutputOp.LAYERNORM and \
                param_addr + chunks * (PARAM_ROWS + bool(prescale)) > c.acc_rows:
            raise _Refused("accumulator, scratchpad or parameter rows out of range",
                           ErrorCode.LOCAL)
        return op, chunks

    def _store(self, desc, acc_addr, to_spad, spad_addr, dram_addr, stride, transpose=0,
               param_addr=0, blocked=0, prescale=0):
        c = self.config
        C = c.cols
        op, length, nrows = desc["op"], desc["length"], desc["rows"]
        op, chunks = self._check_store(desc, acc_addr, to_spad, spad_addr, transpose,
                                       param_addr, prescale)
        if nrows == 0:
            return
        x = self.acc[acc_addr:acc_addr + nrows * chunks]
        if blocked:     # chunk k of row r at acc_addr + k * rows + r
            x = x.reshape(chunks, nrows, C).transpose(1, 0, 2)
        x = x.reshape(nrows, chunks * C)[:, :length]
        params = None
        if op == OutputOp.LAYERNORM:
            rows_per_chunk = PARAM_ROWS + bool(prescale)
            table = self.acc[param_addr:param_addr + chunks * rows_per_chunk]
            table = table.reshape(chunks, rows_per_chunk, C)
            if prescale:
                # Each chunk brought to the row's scale first: requantize(x, m, e, 32).
                x = np.concatenate([x, np.zeros((nrows, chunks * C - length), np.int64)], 1)
                for k in range(chunks):
                    mk = int(table[k, PARAM_ROWS, 0]) & ((1 << 31) - 1)
                    ek = int(table[k, PARAM_ROWS, 1]) & 63
                    cols = slice(k * C, (k + 1) * C)
                    x[:, cols] = grq.requantize(wrap(x[:, cols], 32).astype(np.int32), mk,
                                                ek, 32)
                x = x[:, :length]
            gamma = table[:, 0].reshape(-1)[:length]
            low = table[:, 1].reshape(-1)[:length] & 0xFFFFFFFF
            beta = table[:, 2].reshape(-1)[:length] * (1 << 32) + low
            params = (wrap(gamma, 16), wrap(beta, 46))
        y = self._output(op, x, desc, params)
        if to_spad and transpose:
            for g in range(0, nrows, C):
                block = np.zeros((C, C), dtype=np.int64)
                part = y[g:g + C]
                block[:len(part), :length] = part
                dest = self.spad[spad_addr + g:spad_addr + g + C]
                dest[:] = 0
                dest[:, :C] = block.T
        elif to_spad:
            dest = self.spad[spad_addr:spad_addr + nrows * chunks]
            padded = np.zeros((nrows, chunks, C), dtype=np.int64)
            padded.reshape(nrows, -1)[:, :length] = y
            if blocked:
                padded = padded.transpose(1, 0, 2)
            dest[:] = 0
            dest[:, :C] = padded.reshape(-1, C)
        else:
            self._store_segments(y, nrows, length, dram_addr, stride, blocked)

    def _store_segments(self, y, nrows, length, dram_addr, stride, blocked) -> None:
        """Rows to main memory as the store unit hands them to the DMA (:func:`store_segments`).
        Each segment is checked alone: one outside the window writes nothing, the later ones
        still go, and the first error is reported with the failing segment's address."""
        c = self.config
        C = c.cols
        chunks = -(-length // C)
        padded = np.zeros((nrows, chunks * C), dtype=np.int64)
        padded[:, :length] = y
        data = (padded & 0xFF).astype(np.uint8)
        segments = []   # (address, stride, rows, row bytes, the bytes row by row)
        for addr, seg_stride, rows, row_bytes, row, first_byte in store_segments(
                c, nrows, length, dram_addr, stride, blocked):
            if rows == nrows * chunks and row_bytes == C:       # the whole command
                part = data.reshape(-1, C)
            else:
                part = data[row, first_byte:first_byte + rows * row_bytes].reshape(rows,
                                                                                   row_bytes)
            segments.append((addr, seg_stride, rows, row_bytes, part))
        first = None
        for addr, seg_stride, rows, row_bytes, rows_data in segments:
            cmd = gdma.DmaCommand(addr, seg_stride, rows, row_bytes)
            error = gdma.check_command(cmd, c, self.mem_base, self.mem_size, load=False)
            if error != "NONE":
                first = first or (error, addr)
                continue
            for i in range(rows):
                off = addr + i * seg_stride - self.mem_base
                self.mem[off:off + row_bytes] = rows_data[i]
            self.bytes_stored += rows * row_bytes
        if first:
            error, addr = first
            raise _Refused(f"a DMA store at {addr:#x} is refused ({error}); the others were "
                           f"written", ErrorCode[error], addr)

    @staticmethod
    def _output(op: OutputOp, x: np.ndarray, desc: dict, params=None) -> np.ndarray:
        """The output path's operation on int32 rows, as int8 bit patterns (``params``:
        LayerNorm's gamma and beta)."""
        consts = desc.get("consts", {})
        kw = {}
        if op != OutputOp.SOFTMAX:
            kw["digit"] = descriptor_digit(desc)
        # The scales are the driver's business; the datapath reads only integers.
        if op == OutputOp.GELU:
            kw["gelu"] = ggelu.GeluConstants(**consts["out"]["gelu"], out_scale=1.0)
        elif op == OutputOp.SOFTMAX:
            kw["exp"] = gsm.ExpConstants(**consts["exp"], out_scale=1.0)
        elif op == OutputOp.LAYERNORM:
            gamma, beta = params
            kw["ln"] = gln.LayerNormConstants(gamma.astype(np.int16), beta.astype(np.int64),
                                              desc["m"], desc["e"], gamma_scale=1.0,
                                              out_scale=1.0)
        return output_op(op, x, desc["m"], desc["e"], **kw)


def store_segments(config: TesseraConfig, nrows: int, length: int, dram_addr: int,
                   stride: int, blocked: bool) -> list[tuple]:
    """The DMA stores a STORE to main memory is cut into, as the store unit hands them to
    the DMA: the whole command when its rows are whole chunks that follow each other; a
    blocked row's chunks; otherwise each row's whole chunks, then its tail. Addresses wrap
    at the bus's width, as the unit's row address does.

    Returns
    -------
    list of tuple
        ``(address, stride, rows, row_bytes, logical row, its first byte)`` per DMA store,
        in order (the performance model reads the same list).
    """
    C, wrap_addr = config.cols, (1 << config.addr_bits) - 1
    full, tail = divmod(length, C)
    chunks = full + bool(tail)
    if not blocked and tail == 0 and stride == length:
        return [(dram_addr, C, nrows * full, C, 0, 0)]
    segments = []
    for r in range(nrows):
        if blocked:
            segments.append(((dram_addr + r * C) & wrap_addr, stride, chunks, C, r, 0))
            continue
        row = (dram_addr + r * stride) & wrap_addr
        if full:
            segments.append((row, C, full, C, r, 0))
        if tail:
            segments.append(((row + full * C) & wrap_addr, C, 1, tail, r, full * C))
    return segments
