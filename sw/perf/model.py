"""A performance model of the accelerator: the cycles and counters of a command program,
predicted from the configuration and the memory's timing, with no data computed.

The model follows the machine's structure (``docs/architecture.md``):

* the **fetcher** reads the command buffer in bursts of up to ``FETCH_BURST`` words into a
  ``FETCH_DEPTH``-word FIFO, asking for a burst only when the FIFO has room for it;
* the **dispatcher** takes one word per cycle, in order, and waits while the next word's
  queue is full (``*_queue_depth`` commands not yet issued); FENCE and FINISH wait until
  every unit is idle;
* each **queue** issues its head once the dependency tokens it waits for have been signalled
  (a token is signalled when the command that sends it completes) and its unit can take it;
* the **DMA's loads** alternate between two readers: a command's bursts (its rows merged
  into ranges, cut at 4 KiB and 256 beats, one address per cycle, at most ``max_reads`` in
  flight) go out once the previous command's are out, their data returns in order on the
  shared read channel ``mem_latency`` cycles after the address, one beat per
  ``mem_gap + 1`` cycles, and local rows leave the buffer a chunk per cycle (a wide row
  may be several);
* the **execute unit** streams a COMPUTE's rows through the array one per cycle; a
  weight-stationary tile costs at least ``rows`` cycles to stream in its weights (hidden
  behind the previous tile's rows when the weights and the activations sit in different
  scratchpad banks), the pipeline fills and drains once per run of back-to-back tiles;
* the **store unit** runs one STORE at a time: the output path's passes over each row
  (``hw.output_path.row_cycles``: Softmax and LayerNorm take three passes and the gaps
  between them), its pipeline latency, and the DMA stores the golden model cuts the rows
  into (:func:`~tessera.sw.golden.executor.store_segments`), each of which waits for its
  write response.

The order in which the queues' commands run is the golden executor's
(:class:`~tessera.sw.golden.executor.Machine`): it decodes the words, makes the dispatcher's
and the units' checks (so an illegal command or a deadlock is reported exactly as the golden
model reports it) and hands each command, once its tokens are there, to the timing model.
Any order the golden executor may choose respects the dependencies the times depend on, so
the times are those of the concurrent machine.

Counters (the names of ``hw.registers.COUNTERS``):

* exact: ``commands`` (words dispatched), ``macs``, ``bytes_read`` (load beats and command
  words, whole beats), ``bytes_written`` (store beats), ``array_busy`` (rows streamed);
* estimates: ``cycles``, the ``*_busy`` and ``*_token_wait`` counters, ``load_mem_wait``
  (load busy cycles less the load's beats), ``exec_mem_wait`` (execute busy less array
  busy), ``store_mem_wait`` (a write response's wait per DMA store), ``nonlinear_busy``
  and ``nonlinear_exposed``.

Not modelled: contention between the command fetch and the DMA for the read channel
(fetch beats are counted, not timed against loads), scratchpad and accumulator bank
conflicts between the DMA, the store unit and the array (only the array's own weight and
activation readers sharing a bank are), and bus faults.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections import deque
from dataclasses import dataclass, field

from ...hw.accelerator import FETCH_BURST, FETCH_DEPTH
from ...hw.axi import BOUNDARY_BYTES, MAX_BURST_BEATS
from ...hw.config import TesseraConfig
from ...hw.dma import CHECK_CYCLES, chunk_bytes
from ...hw.isa import (
    QUEUE_OF,
    Command,
    ErrorCode,
    Opcode,
    Queue,
    _tree,
    command_bits,
    command_layout_for,
    decode,
    encode,
    header_layout,
)
from ...hw.output_path import OutputOp, gap_cycles, latency_cycles, row_cycles
from ...hw.store_unit import PARAM_ROWS
from ..golden import dma as gdma
from ..golden.executor import ExecutionError, Machine, _Refused, store_segments

__all__ = ["Timing", "PerfModel", "Prediction"]


@dataclass(frozen=True)
class Timing:
    """Every latency the model uses, in clock cycles; :meth:`of` derives them from the
    configuration and the memory's timing. The fixed constants were measured with
    single-command programs on the Verilator backend (tiny and default presets).

    Members
    -------
    mem_latency, mem_gap : int
        The memory model's: address to first data beat (and last write beat to its
        response); idle cycles after each beat.
    beats_per_word : int
        Bus beats per command word.
    fetch_start, fetch_ask : int
        Cycles from START to the first burst request; between two burst requests.
    dispatch_delay : int
        From a word's last beat to its dispatch (two registers stand between).
    issue_delay : int
        From dispatch to the earliest start by its unit (the queue's head, then the
        register slice in front of the unit).
    token_delay : int
        From a command's completion to the earliest start of a command waiting for the
        token it signals.
    finish_delay : int
        From the last completion (or FINISH's dispatch) to the end of the run.
    sync_delay : int
        From the last completion to the dispatch of a FENCE or FINISH waiting for it.
    load_setup, load_tail : int
        From a LOAD's issue to its first burst address (the DMA's checks); from its last
        local row to its completion.
    load_order : int
        A LOAD's local rows start this many cycles before the older LOAD completes.
    ws_fill, ws_drain : int
        A weight-stationary run: from issue to its first row entering the array (the first
        weight tile streaming in); from its last row to the last result written.
    os_fill, os_drain : int
        The same for an output-stationary COMPUTE.
    same_bank_extra, same_bank_fill : int
        Cycles added per weight tile, and once before the first, when the weights and the
        activations share a bank.
    exec_simple : int
        CONFIG, PRELOAD, NOP, an empty COMPUTE: issue to completion.
    exec_in_flight : int
        Execute commands in flight at once (the unit's record FIFO).
    store_setup : int
        From a STORE's issue to its first chunk leaving the output path, less the path's
        own latency (``hw.output_path.latency_cycles``).
    store_dma : int
        From the last chunk of a one-piece store to its write response being awaited.
    spad_store_tail : int
        From the last chunk of a store into the scratchpad to its completion (the row
        written).
    segment_extra : int
        Per DMA store of a store cut into pieces, beyond its chunks and the round trip.
    prescale_chunks : int
        A LayerNorm store with ``prescale`` takes a cycle more per this many chunks of a
        row (its fourth table row).
    bank_shares : tuple of float
        The part of the time two units stream into one memory bank together that each
        loses to the other: the DMA's loads and the array, the loads and the store unit,
        the array and the store unit.
    """

    mem_latency: int
    mem_gap: int
    beats_per_word: int
    fetch_start: int = 4
    fetch_ask: int = 2
    dispatch_delay: int = 2
    issue_delay: int = 2
    token_delay: int = 2
    finish_delay: int = 1
    sync_delay: int = 2
    load_setup: int = CHECK_CYCLES + 3
    load_tail: int = 10
    load_order: int = 2
    ws_fill: int = 0
    ws_drain: int = 0
    os_fill: int = 0
    os_drain: int = 0
    same_bank_extra: int = 1
    same_bank_fill: int = 3
    exec_simple: int = 3
    exec_in_flight: int = 8
    store_setup: int = 20
    store_dma: int = 5
    spad_store_tail: int = 2
    segment_extra: int = 9
    prescale_chunks: int = 4
    bank_shares: tuple = (0.4, 0.75, 0.15)

    @classmethod
    def of(cls, config: TesseraConfig, mem_latency: int = 100, mem_gap: int = 0,
           **overrides) -> Timing:
        """The timing of ``config`` with the memory model's ``mem_latency`` and
        ``mem_gap``; ``overrides`` replace single constants (for calibration)."""
        R, C = config.rows, config.cols
        base = {"mem_latency": mem_latency, "mem_gap": mem_gap,
                "beats_per_word": command_bits(config) // config.bus_bits,
                # The pipeline: weights stream in over R cycles; a row crosses R rows and C
                # columns of PEs (a multiplier and an adder each), the execute unit's result
                # slice, then the accumulator (whose port buffers it: a cycle in, a cycle to
                # its bank, a cycle until it is written).
                "ws_fill": R + 4, "ws_drain": R + C + 7,
                "os_fill": 4, "os_drain": 2 * R + C + 7}
        base.update(overrides)
        return cls(**base)


@dataclass
class Prediction:
    """What the model predicts for one program.

    Members
    -------
    counters : dict
        The hardware's counters (``hw.registers.COUNTERS`` names), as far as modelled.
    error : ErrorCode
        How the run ends (NONE, or the golden model's error).
    error_index, error_addr, message
        The error's command, address and text (as :class:`ExecutionError` gives them).
    issue, done : list
        Per command (program index): the cycle its queue issued it and the cycle it
        completed (None for commands that did not run).
    wall_seconds : float
        The model's own run time.
    """

    counters: dict = field(default_factory=dict)
    error: ErrorCode = ErrorCode.NONE
    error_index: int | None = None
    error_addr: int = 0
    message: str = ""
    issue: list = field(default_factory=list)
    done: list = field(default_factory=list)
    wall_seconds: float = 0.0


_CHAIN = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)
#: The queue of each opcode, by its value (NOP: its argument's), as 0 LOAD, 1 EXECUTE,
#: 2 STORE, 3 the dispatcher.
_QUEUE_BY_OPCODE = [Queue.DISPATCH.value if q is None else q.value
                    for q in (QUEUE_OF[Opcode(v)] for v in range(len(Opcode)))]
_BUSY = ("load_busy", "exec_busy", "store_busy")
_NOP, _PRELOAD, _COMPUTE, _CONFIG = Opcode.NOP, Opcode.PRELOAD, Opcode.COMPUTE, Opcode.CONFIG
_TOKEN_WAIT = ("load_token_wait", "exec_token_wait", "store_token_wait")


def _queue_value(cmd) -> int:
    """The queue that runs ``cmd`` (0, 1, 2; 3: the dispatcher), without enum hashing."""
    op = cmd.opcode.value
    if op == Opcode.NOP.value:
        queue = cmd.args.get("queue", Queue.DISPATCH)
        return getattr(queue, "value", queue)
    return _QUEUE_BY_OPCODE[op]
_NONLINEAR = (OutputOp.GELU, OutputOp.SOFTMAX, OutputOp.LAYERNORM)


class _Checker(Machine):
    """The golden executor with the units' checks but without their data: a LOAD is
    checked as the DMA checks it, a STORE as the store unit and the DMA check it; nothing
    is read or written."""

    def _load(self, **args):
        self._check_load(args)

    def _preload(self, spad_addr):
        pass

    def _compute(self, a_addr, b_addr, rows, acc_addr, accumulate, count=0, a_stride=0):
        c = self.config
        self.macs += rows * c.rows * c.cols * (count if count and not self.os else 1)

    def _store(self, desc, acc_addr, to_spad, spad_addr, dram_addr, stride, transpose=0,
               param_addr=0, blocked=0, prescale=0):
        self._check_store(desc, acc_addr, to_spad, spad_addr, transpose, param_addr, prescale)
        nrows, length = desc["rows"], desc["length"]
        if nrows == 0 or to_spad:
            return
        first = None
        for addr, seg_stride, rows, row_bytes, _, _ in store_segments(
                self.config, nrows, length, dram_addr, stride, blocked):
            cmd = gdma.DmaCommand(addr, seg_stride, rows, row_bytes)
            error = gdma.check_command(cmd, self.config, self.mem_base, self.mem_size,
                                       load=False)
            if error != "NONE":
                first = first or (error, addr)
                continue
            self.bytes_stored += rows * row_bytes
        if first:
            error, addr = first
            raise _Refused(f"a DMA store at {addr:#x} is refused ({error}); the others were "
                           f"written", ErrorCode[error], addr)


def _timed(base: type[Machine]) -> type[Machine]:
    """``base`` with each command, once it has run, handed to the timing model."""

    class Timed(base):
        timer: _Timer

        def _execute(self, cmd):
            super()._execute(cmd)
            self.timer.execute(cmd, self.os)

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


_TimedChecker = _timed(_Checker)
_TimedMachine = _timed(Machine)


def _range_bursts(addr: int, nbytes: int, bus_bytes: int) -> tuple[int, ...]:
    """The beats of each INCR burst a contiguous range is cut into (at 4 KiB boundaries and
    at 256 beats), as the DMA's burst splitter cuts it."""
    return _split_range(addr % BOUNDARY_BYTES, nbytes, bus_bytes)


@functools.lru_cache(maxsize=1 << 16)
def _split_range(addr: int, nbytes: int, bus_bytes: int) -> tuple[int, ...]:
    out = []
    end = addr + nbytes
    a = addr - addr % bus_bytes
    while a < end:
        boundary = (a // BOUNDARY_BYTES + 1) * BOUNDARY_BYTES
        stop = min(end, boundary, a + MAX_BURST_BEATS * bus_bytes)
        beats = -(-(stop - a) // bus_bytes)
        out.append(beats)
        a += beats * bus_bytes
    return tuple(out)


@functools.lru_cache(maxsize=1 << 16)
def _load_bursts(addr: int, stride: int, rows: int, row_bytes: int,
                 bus_bytes: int) -> tuple[int, ...]:
    """The beats of each burst of a LOAD at ``addr`` (modulo 4 KiB: all its bursts depend
    on): its rows merged into one range when they follow each other."""
    if stride == row_bytes or rows == 1:
        return _range_bursts(addr, rows * row_bytes, bus_bytes)
    bursts = []
    for r in range(rows):
        bursts += _range_bursts(addr + r * stride, row_bytes, bus_bytes)
    return tuple(bursts)


@functools.lru_cache(maxsize=1 << 16)
def _store_beats(config: TesseraConfig, nrows: int, length: int, addr: int, stride: int,
                 blocked: int) -> tuple[int, ...]:
    """The beats of each DMA store a STORE to main memory at ``addr`` (modulo 4 KiB: all
    they depend on, addresses wrap at a multiple of it) is cut into."""
    bb = config.bus_bytes
    beats = []
    for seg_addr, seg_stride, rows, row_bytes, _, _ in store_segments(
            config, nrows, length, addr, stride, blocked):
        if seg_stride == row_bytes or rows == 1:
            beats.append(sum(_range_bursts(seg_addr, rows * row_bytes, bb)))
        else:
            beats.append(rows * sum(_range_bursts(seg_addr, row_bytes, bb)))
    return tuple(beats)


class _Timer:
    """The timing state of one run; :meth:`execute` times each command in the order the
    golden executor runs it."""

    def __init__(self, config: TesseraConfig, timing: Timing, cmds: list, cmd_addr: int,
                 queue_of: list | None = None):
        self.c, self.t, self.cmds = config, timing, cmds
        n = len(cmds)
        self.cmd_addr = cmd_addr
        self.queue_of = queue_of if queue_of is not None else [_queue_value(c) for c in cmds]
        self.positions = ([], [], [])
        self.pos = [0] * n
        for i, q in enumerate(self.queue_of):
            if q < 3:
                self.pos[i] = len(self.positions[q])
                self.positions[q].append(i)
        self.ran = [0, 0, 0]
        self.queued_before = 0          # queue commands before the next word to dispatch
        self.depth = (config.load_queue_depth, config.exec_queue_depth,
                      config.store_queue_depth)
        self.bank_rows = config.spad_rows // config.spad_banks
        self.acc_bank_rows = config.acc_rows // config.acc_banks
        self.bank_use: dict = {}     # (memory, bank) -> per unit (starts, ends)
        # Per unit, the share of an overlap it loses to each unit: 0 + 1 the DMA and the
        # array, 0 + 2 the DMA and the store unit, 1 + 2 the array and the store unit.
        self.shares = [[timing.bank_shares[u + o - 1] if o != u else 0.0 for o in (0, 1, 2)]
                       for u in (0, 1, 2)]
        self.bus_bytes, self.max_reads = config.bus_bytes, config.max_reads
        self.chunk_bytes = chunk_bytes(config)
        self.issue: list = [None] * n
        self.done: list = [None] * n
        self.disp: list = []
        self.arrive: list = []
        self.fetch_asks = deque()       # (ask cycle, first word, words)
        self.last_ask = None
        self.fetched = 0                # words asked for so far
        self.max_done = 0               # latest completion so far
        self.tokens = [deque() for _ in range(9)]     # from queue a to b: 3 * a + b
        self.last_issue = [-1, -1, -1]
        # Units.
        self.load_dones = deque([0, 0], maxlen=2)     # the two readers
        self.load_addr_end = 0
        self.load_done = 0
        self.read_data_end = 0
        self.read_inflight = deque()                  # data end of bursts in flight
        self.exec_dones = deque(maxlen=timing.exec_in_flight)
        self.exec_done = 0
        self.array_free = 0
        self.weights_at = None                        # scratchpad row of the preloaded tile
        self.store_done = 0
        # Counters.
        self.k = dict.fromkeys(("load_busy", "exec_busy", "store_busy", "array_busy",
                                "load_token_wait", "exec_token_wait", "store_token_wait",
                                "load_mem_wait", "exec_mem_wait", "store_mem_wait",
                                "nonlinear_busy", "nonlinear_exposed", "load_beats",
                                "store_beats"), 0)
        self.busy_end = [0, 0, 0]
        # Per command (by id, with the command: an id may be reused once its command is
        # gone), what its timing needs of its arguments, worked out once.
        self.plans: dict = {}
        self.array_spans: list = []
        self.nonlinear_spans: list = []
        self.exposed = 0        # nonlinear_exposed of the segments whose spans are not kept

    # --- fetch and dispatch ------------------------------------------------------------

    def _arrival(self, j: int) -> int:
        """The cycle command word ``j``'s last beat arrives."""
        t = self.t
        while len(self.arrive) <= j:
            s = self.fetched
            n = min(FETCH_BURST, len(self.cmds) - s)
            word_bytes = t.beats_per_word * self.c.bus_bytes
            to_boundary = (BOUNDARY_BYTES - (self.cmd_addr + s * word_bytes) % BOUNDARY_BYTES) \
                // word_bytes
            n = max(1, min(n, to_boundary))
            ask = t.fetch_start if self.last_ask is None else self.last_ask + t.fetch_ask
            room = s + n - FETCH_DEPTH - 1       # this word must have left the FIFO
            if room >= 0:
                ask = max(ask, self._dispatch(room) + 1)
            self.last_ask = ask
            data = max(ask + 1 + t.mem_latency, self.arrive[-1] if self.arrive else 0)
            gap = t.mem_gap + 1
            for w in range(n):
                self.arrive.append(data + (w + 1) * t.beats_per_word * gap - 1)
            self.fetched += n
        return self.arrive[j]

    def _dispatch(self, j: int) -> int | None:
        """The cycle the dispatcher takes word ``j`` (computed in program order), or None
        while it depends on a command not yet timed (the one whose issue makes room in the
        queue, or for a FENCE any command before it)."""
        t = self.t
        disp = self.disp
        while len(disp) <= j:
            i = len(disp)
            q = self.queue_of[i]
            if q < 3:
                p = self.pos[i]
                depth = self.depth[q]
                room = 0
                if p >= depth:
                    room = self.issue[self.positions[q][p - depth]]
                    if room is None:
                        return None
                    room += 1
                self.queued_before += 1
            else:
                if sum(self.ran) < self.queued_before:
                    return None
                room = self.max_done + t.sync_delay
            arrive = self.arrive
            d = (arrive[i] if i < len(arrive) else self._arrival(i)) + t.dispatch_delay
            if disp and disp[-1] >= d:
                d = disp[-1] + 1
            disp.append(d if d > room else room)
        return disp[j]

    # --- the queues ----------------------------------------------------------------------

    def execute(self, cmd, os_mode: bool, q: int | None = None) -> None:
        """Time ``cmd``, the next command of its queue (``q``, if known: its number)."""
        # The hot path of a prediction: conditional expressions rather than max(), the
        # dispatch time read once known.
        if q is None:
            q = _queue_value(cmd)
        ran = self.ran
        i = self.positions[q][ran[q]]
        ran[q] += 1
        disp = self.disp
        d = disp[i] if i < len(disp) else self._dispatch(i)
        head = d + self.t.issue_delay
        last = self.last_issue[q] + 1
        if last > head:
            head = last
        start = head
        if cmd.wait_prev or cmd.wait_next:
            token = 0
            if cmd.wait_prev:
                token = self.tokens[3 * (q - 1) + q].popleft()
            if cmd.wait_next:
                token = max(token, self.tokens[3 * (q + 1) + q].popleft())
            if token > head:
                self.k[_TOKEN_WAIT[q]] += token - head
                start = token
        if q == 0:
            issue, done = self._load(cmd, start)
        elif q == 1:
            issue, done = self._exec(cmd, start, os_mode)
        else:
            issue, done = self._store(cmd, start)
        self.last_issue[q] = issue
        self.issue[i], self.done[i] = issue, done
        if done > self.max_done:
            self.max_done = done
        # Busy: cycles with a command of the queue in flight (the union of the spans).
        busy_end = self.busy_end
        lo = issue if issue > busy_end[q] else busy_end[q]
        if done > lo:
            self.k[_BUSY[q]] += done - lo
            busy_end[q] = done
        if cmd.signal_prev:
            self.tokens[3 * q + q - 1].append(done + self.t.token_delay)
        if cmd.signal_next:
            self.tokens[3 * q + q + 1].append(done + self.t.token_delay)

    # --- LOAD ------------------------------------------------------------------------------

    def _load(self, cmd, start: int) -> tuple[int, int]:
        t = self.t
        if cmd.opcode is _NOP:
            issue = start
            return issue, max(issue, self.load_done) + 1
        issue = self.load_dones[0]                    # a free reader
        if start > issue:
            issue = start
        plan = self.plans.get(id(cmd))
        if plan is None or plan[0] is not cmd:
            a = cmd.args
            bursts = _load_bursts(a["dram_addr"] % BOUNDARY_BYTES, a["stride"], a["rows"],
                                  a["row_bytes"], self.bus_bytes)
            bank = (1, a["local_addr"] // self.acc_bank_rows) if a["to_acc"] else \
                (0, a["local_addr"] // self.bank_rows)
            # one chunk of a row to the local memories per cycle (a wide row may be several)
            chunks = a["rows"] * -(-a["row_bytes"] // self.chunk_bytes)
            self.plans[id(cmd)] = plan = (cmd, chunks, bursts, sum(bursts), (bank,))
        _, chunks, bursts, nbeats, banks = plan
        gap, latency, max_reads = t.mem_gap + 1, t.mem_latency, self.max_reads
        at = issue + t.load_setup
        if self.load_addr_end + 1 > at:
            at = self.load_addr_end + 1
        inflight = self.read_inflight
        data_end = self.read_data_end
        first_data = None
        for beats in bursts:
            if len(inflight) >= max_reads:
                free = inflight.popleft()
                if free > at:
                    at = free
            data = at + latency
            if data_end > data:
                data = data_end
            if first_data is None:
                first_data = data
            data_end = data + beats * gap
            inflight.append(data_end)
            at += 1
        self.read_data_end = data_end
        self.load_addr_end = at - 1
        self.k["load_beats"] += nbeats
        # Local rows leave the buffer a chunk per cycle, once the older command has written
        # its own, sharing their bank with the other units' accesses there.
        begin = max(first_data, self.load_done - t.load_order)
        local = max(data_end, begin + chunks)
        local += self._share(0, banks, begin, local - begin)
        done = max(local + t.load_tail, self.load_done + 1)
        self.load_done = done
        self.load_dones.append(done)
        return issue, done

    # --- EXECUTE ---------------------------------------------------------------------------

    def _exec(self, cmd, start: int, os_mode: bool) -> tuple[int, int]:
        t = self.t
        issue = start
        if len(self.exec_dones) == t.exec_in_flight:
            issue = max(issue, self.exec_dones[0])
        op, a = cmd.opcode, cmd.args
        if op is _PRELOAD:
            self.weights_at = a["spad_addr"]
        rows = a.get("rows", 0) if op is _COMPUTE else 0
        if op is _CONFIG:
            done = max(issue, self.array_free) + t.exec_simple
        elif not rows:
            done = issue + t.exec_simple
        elif os_mode:
            first = max(issue + t.os_fill, self.array_free)
            extra = self._share(1, ((0, a["a_addr"] // self.bank_rows),
                                    (1, a["acc_addr"] // self.acc_bank_rows)), first, rows)
            self.array_free = first + rows + 1 + extra
            done = first + rows + extra + t.os_drain
            self._array(first, rows + extra, rows)
        else:
            plan = self.plans.get((id(cmd), self.weights_at))
            if plan is None or plan[0] is not cmd:
                plan = self.plans[id(cmd), self.weights_at] = (cmd, *self._ws_plan(a, rows))
            _, tiles, per_tile, fill, banks = plan
            first = issue + fill
            if self.array_free > first:
                first = self.array_free
            span = (tiles - 1) * per_tile + rows
            extra = self._share(1, banks, first, span)
            span += extra
            self.array_free = first + tiles * per_tile + extra
            done = first + span + t.ws_drain
            self._array(first, span, rows * tiles)
        if self.exec_done >= done:
            done = self.exec_done + 1
        self.exec_done = done
        self.exec_dones.append(done)
        return issue, done

    def _ws_plan(self, a: dict, rows: int) -> tuple:
        """What a weight-stationary COMPUTE of ``rows`` rows (arguments ``a``) takes with the
        weights preloaded now: its tiles, the cycles per tile, its fill and its banks."""
        t, R = self.t, self.c.rows
        count = a.get("count", 0)
        weights = a["b_addr"] if count else (self.weights_at or 0)
        bank_rows = self.bank_rows
        fill = t.ws_fill
        if weights // bank_rows == a["a_addr"] // bank_rows:
            per_tile = rows + R + t.same_bank_extra
            fill += t.same_bank_fill
        else:
            per_tile = max(rows + 1, R)
        banks = {(0, a["a_addr"] // bank_rows), (0, weights // bank_rows),
                 (1, a["acc_addr"] // self.acc_bank_rows)}
        return count or 1, per_tile, fill, tuple(banks)

    def _share(self, unit: int, banks: tuple, start: int, span: int) -> int:
        """The cycles a unit's accesses to ``banks`` (``(memory, bank)``: 0 the scratchpad,
        1 the accumulator) over ``span`` cycles from ``start`` lose to the other units'
        accesses to the same banks. Each bank serves one access per cycle, round-robin
        among the ports that want it; of the time two units use a bank together, each
        loses its pair's share (``Timing.bank_shares``, fitted to the benchmark layers:
        the spans are taken as busy throughout, which they are not all). This unit's span
        is extended by its loss; the other unit's next command starts later by its own."""
        if span <= 0:
            return 0
        end = start + span
        lost = [0, 0, 0]
        use = self.bank_use
        mine = []
        for bank in banks:
            units = use.get(bank)
            if units is None:
                use[bank] = units = (([], []), ([], []), ([], []))
            mine.append(units[unit])
            for other in (0, 1, 2):
                starts, ends = units[other]
                if other == unit or not ends or ends[-1] <= start:
                    continue
                j = bisect.bisect_right(ends, start)
                n = len(starts)
                while j < n and starts[j] < end:
                    lost[other] += min(end, ends[j]) - max(start, starts[j])
                    j += 1
        extra = 0
        if lost[0] or lost[1] or lost[2]:
            shares = self.shares[unit]
            extra = int(lost[0] * shares[0] + lost[1] * shares[1] + lost[2] * shares[2])
            for other in (0, 1, 2):
                if lost[other]:
                    self._delay(other, int(lost[other] * shares[other]))
        for starts, ends in mine:
            if ends and ends[-1] > end + extra:
                continue        # inside an earlier span of the same unit: keep them sorted
            starts.append(start)
            ends.append(end + extra)
        return extra

    def _delay(self, unit: int, cycles: int) -> None:
        """The unit's work in flight takes ``cycles`` longer: its next command starts
        that much later, and the run cannot end before."""
        if unit == 0:
            self.load_done += cycles
            self.read_data_end += cycles
            end = self.load_done
        elif unit == 1:
            self.array_free += cycles
            self.exec_done += cycles
            end = self.exec_done
        else:
            self.store_done += cycles
            end = self.store_done
        self.busy_end[unit] = max(self.busy_end[unit], end)
        self.max_done = max(self.max_done, end)

    def _array(self, first: int, span: int, rows: int) -> None:
        self.k["array_busy"] += rows
        self.array_spans.append((first, first + span))

    # --- STORE -----------------------------------------------------------------------------

    def _store(self, cmd, start: int) -> tuple[int, int]:
        t, c = self.t, self.c
        issue = max(start, self.store_done)
        if cmd.opcode == Opcode.NOP:
            done = issue + 1
            self.store_done = done
            return issue, done
        a = cmd.args
        desc = a["desc"]
        op, length, nrows = OutputOp(desc["op"]), desc["length"], desc["rows"]
        if nrows == 0:
            done = issue + t.exec_simple
            self.store_done = done
            return issue, done
        C, lanes, gap = c.cols, c.out_lanes, t.mem_gap + 1
        chunks = -(-length // C)
        pieces = -(-length // lanes)         # a row's cycles per pass in the output path
        if a.get("transpose"):
            # A block of C rows in (each in its pieces of out_lanes elements), then C rows
            # (the block's columns) out.
            work = nrows * pieces + -(-nrows // C) * C
        else:
            per_row = row_cycles(op, length, lanes)
            if op == OutputOp.LAYERNORM:
                # The write-out pass reads the chunk's table rows with it: four reads per
                # chunk against its pieces; what the feeder fetches during the gap after
                # pass 1 is hidden.
                per_row += max(0, ((PARAM_ROWS + 1) * chunks - pieces
                                   - gap_cycles(op, lanes)[1] - 1))
                if a.get("prescale"):
                    per_row += chunks // t.prescale_chunks
            work = nrows * per_row
        setup = t.store_setup + latency_cycles(op)
        # The accumulator's rows are read once per pass (the table's too, for LayerNorm),
        # the scratchpad's written once; both banks are shared with the other units.
        banks = ((1, a["acc_addr"] // self.acc_bank_rows),)
        if a["to_spad"]:
            banks += ((0, a["spad_addr"] // self.bank_rows),)
        work += self._share(2, banks, issue + t.store_setup, work)
        if a["to_spad"]:
            done = issue + setup + work + t.spad_store_tail
        else:
            beats = _store_beats(c, nrows, length, a["dram_addr"] % BOUNDARY_BYTES, a["stride"],
                                 a.get("blocked", 0))
            self.k["store_beats"] += sum(beats)
            if len(beats) == 1:
                done = issue + setup + max(work, beats[0] * gap) + t.store_dma + t.mem_latency
                self.k["store_mem_wait"] += done - issue - 14 - beats[0]
            else:
                # One DMA store at a time, each waiting for its write response.
                seg_cycles = len(beats) * (t.mem_latency + t.segment_extra) + \
                    sum(b * gap for b in beats)
                done = issue + setup + max(work, seg_cycles)
                self.k["store_mem_wait"] += done - issue - sum(beats) - 10 * len(beats)
        if op in _NONLINEAR:
            self.nonlinear_spans.append((issue + 5, done))
            self.k["nonlinear_busy"] += done - issue - 5
        self.store_done = done
        return issue, done

    # --- the end -----------------------------------------------------------------------------

    def finish(self, n_dispatched: int) -> dict:
        """The counters once the words up to ``n_dispatched`` have been dispatched."""
        t, c = self.t, self.c
        last = self._dispatch(n_dispatched - 1) if n_dispatched else t.fetch_start
        end = max(last, self.max_done) + t.finish_delay
        k = self.k
        k["exec_mem_wait"] = max(0, k["exec_busy"] - k["array_busy"])
        k["load_mem_wait"] = max(0, k["load_busy"] - k["load_beats"])
        k["nonlinear_exposed"] = _uncovered(self.nonlinear_spans, self.array_spans) + \
            self.exposed
        words_read = self.fetched if self.fetched else 0
        counters = {
            "cycles": end,
            "commands": n_dispatched,
            "macs": k["array_busy"] * c.rows * c.cols,
            "bytes_read": (k["load_beats"] + words_read * t.beats_per_word) * c.bus_bytes,
            "bytes_written": k["store_beats"] * c.bus_bytes,
        }
        for name in ("load_busy", "exec_busy", "store_busy", "array_busy", "load_token_wait",
                     "exec_token_wait", "store_token_wait", "load_mem_wait", "exec_mem_wait",
                     "store_mem_wait", "nonlinear_busy", "nonlinear_exposed"):
            counters[name] = int(k[name])
        return counters


def _uncovered(spans: list, cover: list) -> int:
    """Cycles of ``spans`` (start, end) not inside any of ``cover`` (both sorted by start;
    ``cover``'s spans may overlap)."""
    total, j, cover_end = 0, 0, -1
    merged = []
    for s, e in sorted(cover):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    for s, e in spans:
        while j < len(merged) and merged[j][1] <= s:
            j += 1
        covered, k = 0, j
        while k < len(merged) and merged[k][0] < e:
            covered += min(e, merged[k][1]) - max(s, merged[k][0])
            k += 1
        total += max(0, e - s - covered)
    del cover_end
    return total


@functools.cache
def _opcode_field(config: TesseraConfig) -> tuple[int, int]:
    """``(offset, mask)`` of the opcode in a command word."""
    field = header_layout()["opcode"]
    return command_layout_for(config)["header"].offset + field.offset, (1 << field.width) - 1


@functools.cache
def _address_field(config: TesseraConfig, opcode: int) -> tuple[int, int] | None:
    """``(offset, mask)`` of the main-memory address in a word of opcode value ``opcode``
    (from the ISA's field table), None if it has none."""
    if opcode not in {op.value for op in Opcode}:
        return None
    field = (_tree(config, Opcode(opcode)) or {}).get("dram_addr")
    if field is None:
        return None
    # The timing reads an address modulo 4 KiB, and addresses wrap at a multiple of it.
    assert (1 << field.width) % BOUNDARY_BYTES == 0
    return field.offset, (1 << field.width) - 1


#: The fields of a LOAD's and a STORE's word whose values the timing does not read: the
#: DMA widens any scale in the same cycles, and the output path's requantization and
#: non-linear units have latencies that do not depend on their constants. A chained
#: model's layers differ in them (each its own scales), and in their addresses.
_UNTIMED_FIELDS = {Opcode.LOAD: ("scale",), Opcode.STORE: ("desc.m", "desc.e", "desc.consts")}


@functools.cache
def _untimed_bits(config: TesseraConfig, opcode: int) -> int:
    """The bits of :data:`_UNTIMED_FIELDS` in a word of opcode value ``opcode``."""
    bits = 0
    for path in _UNTIMED_FIELDS.get(Opcode(opcode), ()):
        node = _tree(config, Opcode(opcode))
        for name in path.split("."):
            node = node[name]
        stack = [node]
        while stack:
            f = stack.pop()
            if isinstance(f, dict):
                stack.extend(f.values())
            else:
                bits |= ((1 << f.width) - 1) << f.offset
    return bits


def _queue_counts(queue_of: list, first: int, last: int) -> list:
    """The commands of each unit's queue among ``first .. last``."""
    part = queue_of[first:last + 1]
    return [part.count(0), part.count(1), part.count(2)]


#: A timer's unit state: each a time (or a container of times) the next segment reads.
_UNIT_TIMES = ("load_addr_end", "load_done", "read_data_end", "exec_done", "array_free",
               "store_done")
_UNIT_QUEUES = ("load_dones", "read_inflight", "exec_dones")


class _Segment:
    """The timing of one FENCE-delimited segment, relative to the FENCE before it: what
    :meth:`apply` writes into a timer to reproduce it (see :meth:`PerfModel._segmented`)."""

    @staticmethod
    def start(timer: _Timer, first: int) -> tuple:
        """What :meth:`end` needs of the timer before commands ``first ..`` are timed."""
        return dict(timer.k), len(timer.array_spans), len(timer.nonlinear_spans)

    @classmethod
    def end(cls, timer: _Timer, state: tuple, first: int, last: int, os_mode: bool,
            checks: tuple) -> _Segment:
        """The segment of commands ``first .. last``, timed just now from ``state``."""
        k0, arrays, nonlinears = state
        t0 = timer.disp[first - 1] if first else 0
        seg = cls()
        seg.os_mode, seg.checks, seg.weights_at = os_mode, checks, timer.weights_at
        seg.counts = _queue_counts(timer.queue_of, first, last)
        seg.issue = [None if x is None else x - t0 for x in timer.issue[first:last + 1]]
        seg.done = [None if x is None else x - t0 for x in timer.done[first:last + 1]]
        seg.disp = [d - t0 for d in timer.disp[first:last + 1]]
        seg.max_done = timer.max_done - t0
        seg.k = {name: value - k0[name] for name, value in timer.k.items()}
        seg.exposed = _uncovered(timer.nonlinear_spans[nonlinears:],
                                 timer.array_spans[arrays:])
        seg.times = [getattr(timer, name) - t0 for name in _UNIT_TIMES]
        seg.queues = [[x - t0 for x in getattr(timer, name)] for name in _UNIT_QUEUES]
        seg.busy_end = [x - t0 for x in timer.busy_end]
        seg.last_issue = [x - t0 for x in timer.last_issue]
        return seg

    def apply(self, timer: _Timer, first: int) -> bool:
        """Time commands ``first ..`` of ``timer`` as this segment (the FENCE before them
        dispatched, the timer in the state the segment's key names), if the dispatcher
        takes its words when it did (the fetcher's state is not in the key); False, with
        the timer as it was, if it does not."""
        t0 = timer.disp[first - 1]
        last = first + len(self.issue) - 1
        before = (len(timer.arrive), timer.fetched, timer.last_ask, timer.queued_before,
                  timer.max_done)
        # The dispatch of a word depends on the fetcher, on the issue of the command a
        # queue's depth before it and, for the FENCE, on the last completion: with this
        # segment's, the dispatch times it was timed with must come out again, and then
        # every command is issued and completes as it did.
        timer.issue[first:last + 1] = [None if x is None else x + t0 for x in self.issue]
        timer.done[first:last + 1] = [None if x is None else x + t0 for x in self.done]
        ran = timer.ran
        for q in (0, 1, 2):
            ran[q] += self.counts[q]
        timer.max_done = self.max_done + t0
        timer._dispatch(last)
        if timer.disp[first:] != [d + t0 for d in self.disp]:
            del timer.disp[first:], timer.arrive[before[0]:]
            timer.fetched, timer.last_ask, timer.queued_before, timer.max_done = before[1:]
            for q in (0, 1, 2):
                ran[q] -= self.counts[q]
            timer.issue[first:last + 1] = timer.done[first:last + 1] = [None] * len(self.issue)
            return False
        k = timer.k
        for name, value in self.k.items():
            k[name] += value
        timer.exposed += self.exposed
        for name, value in zip(_UNIT_TIMES, self.times, strict=True):
            setattr(timer, name, value + t0)
        for name, values in zip(_UNIT_QUEUES, self.queues, strict=True):
            queue = getattr(timer, name)
            queue.clear()
            queue.extend([x + t0 for x in values])
        timer.busy_end = [x + t0 for x in self.busy_end]
        timer.last_issue = [x + t0 for x in self.last_issue]
        timer.weights_at = self.weights_at
        return True


class PerfModel:
    """Predicts the cycles and counters of command programs on one configuration.

    Parameters
    ----------
    config : TesseraConfig
    mem_latency, mem_gap : int
        The memory's timing, as :class:`~tessera.sw.runtime.Runtime` takes it.
    timing : Timing, optional
        The latencies (default: :meth:`Timing.of` the configuration).
    """

    def __init__(self, config: TesseraConfig, mem_latency: int = 100, mem_gap: int = 0,
                 timing: Timing | None = None):
        self.config = config
        self.timing = timing or Timing.of(config, mem_latency, mem_gap)
        self._decoded: dict = {}
        self._checked: dict = {}        # the commands checked, kept alive by their ids
        self._dispatch_checked: dict = {}   # (command, dataflow, weights) -> the state after
        self._unit_checked: set = set()     # LOADs and STOREs that passed their unit's checks
        #: Time the programs of command words segment by segment, each segment's timing
        #: kept (:meth:`_segmented`); False: every command timed (the same predictions).
        self.memo = True
        self._words: dict = {}          # window -> word -> (timing word, its command)
        self._segments: dict = {}       # a segment's key -> its _Segment
        self._bursts_alike: dict = {}   # (timed bits of a word, its bursts) -> a word
        self._page_alike: dict = {}     # (timed bits, address in its page) -> timing
        self._load_extents: dict = {}   # a LOAD's word less its address -> its extent
        self.reused = 0                 # commands whose segment's timing was reused
        self._address_fields = (*_opcode_field(config), {
            op.value: (*_address_field(config, op.value), _untimed_bits(config, op.value))
            for op in Opcode if _address_field(config, op.value) is not None})
        self._segment_commands = 0      # commands in self._segments, for a bound
        self._fence_word = encode(config, Command(Opcode.FENCE, {}))

    def _decode(self, word):
        if not isinstance(word, int):
            return word
        cmd = self._decoded.get(word)
        if cmd is None:
            try:
                cmd = decode(self.config, word)
            except ValueError:
                return None
            if len(self._decoded) < 1 << 20:
                self._decoded[word] = cmd
        return cmd

    def machine(self, mem_size: int, mem_base: int, data: type[Machine] | None = None):
        """The golden executor a prediction runs on: by default one that checks every
        command but computes no data; ``data``: that :class:`Machine` class, computing the
        data as the golden backend does."""
        return (data or _Checker)(self.config, mem_size, mem_base)

    def predict(self, program, *, cmd_addr: int, machine: Machine) -> Prediction:
        """The prediction for ``program`` (command words or :class:`Command` objects), its
        buffer at ``cmd_addr``, with ``machine`` (from :meth:`machine`).

        A program the golden executor runs to its end without an error is timed in time
        order (:meth:`_fast`), with the golden executor's checks of each command (cached
        per command word); a program of command words on the checking machine is timed so
        FENCE by FENCE, a segment's timing kept and reused (:meth:`_segmented`, the same
        prediction; off with ``memo = False``); a machine that computes data runs the
        program first. A program
        with an error is timed in the golden executor's own order up to its error, which is
        reported as the golden backend reports it."""
        t0 = time.perf_counter()
        words = list(program)
        if self.memo and type(machine) is _Checker and all(type(w) is int for w in words):
            timer = self._segmented(words, cmd_addr, machine)
            if timer is not None:
                pred = Prediction(counters=timer.finish(len(timer.cmds)), issue=timer.issue,
                                  done=timer.done)
                pred.wall_seconds = time.perf_counter() - t0
                return pred
        cmds = [self._decode(w) for w in words]
        # A word that does not decode ends the dispatch there (the golden executor reports
        # it); the commands after it are never fetched into a queue.
        stop = next((i for i, cmd in enumerate(cmds) if cmd is None), len(cmds))
        finish = next((i for i, cmd in enumerate(cmds[:stop]) if cmd.opcode == Opcode.FINISH),
                      None)
        dispatched = len(words) if finish is None else finish + 1
        run = [cmds[i] if i < stop else words[i] for i in range(len(words))]
        pred = Prediction()
        error = None
        if type(machine) is not _Checker:
            try:
                machine.run(run)
            except ExecutionError as e:
                error = e
        timer = None
        if error is None and stop == len(words):
            checker = machine if type(machine) is _Checker else \
                _Checker(self.config, machine.mem_size, machine.mem_base)
            timer = self._fast(cmds[:dispatched], cmd_addr, checker)
        if timer is None:
            timed = _TimedChecker(self.config, machine.mem_size, machine.mem_base)
            timed.timer = timer = _Timer(self.config, self.timing, cmds[:stop], cmd_addr)
            try:
                timed.run(run)
            except ExecutionError as e:
                error = error or e
        if error is not None:
            pred.error, pred.error_index, pred.message = error.code, error.index, str(error)
            pred.error_addr = error.addr
            # The dispatcher stops at a refused command; a unit's error or a deadlock ends
            # the run once what was dispatched has drained.
            dispatched = min(dispatched, stop, max(len(timer.disp), (error.index or 0) + 1))
        pred.counters = timer.finish(dispatched)
        pred.issue, pred.done = timer.issue, timer.done
        pred.wall_seconds = time.perf_counter() - t0
        return pred

    def _fast(self, cmds: list, cmd_addr: int, checker: _Checker) -> _Timer | None:
        """The timing of ``cmds`` (up to and including a FINISH): of the queue heads whose
        dispatch and tokens are known, the one that can start first is timed next (so the
        units' shares of the memory banks are taken in time order); None if a command
        fails the golden executor's checks or the queues deadlock (the caller then runs
        the golden executor for its report)."""
        try:
            if not self._checks_pass(cmds, checker):
                return None
        except _Refused:
            return None
        timer = _Timer(self.config, self.timing, cmds, cmd_addr)
        ends = [len(q) for q in timer.positions]
        if self._run_queues(timer, ends, self.config.dataflow == "os") is None:
            return None             # a deadlock: the golden executor names it
        return timer

    @staticmethod
    def _run_queues(timer: _Timer, ends: list, os_mode: bool) -> bool | None:
        """Time the commands of each queue ``q`` up to its ``ends[q]``-th: of the queue
        heads whose dispatch and tokens are known, the one that can start first is timed
        next (so the units' shares of the memory banks are taken in time order). The
        dataflow after them, or None if the queues deadlock first."""
        cmds = timer.cmds
        lists, tokens, ran, last = timer.positions, timer.tokens, timer.ran, timer.last_issue
        dispatch, disp = timer._dispatch, timer.disp
        # A head's earliest start, once known, holds until its queue moves on (its dispatch,
        # the tokens at the front of its waits and its queue's last issue are fixed).
        known = [None, None, None]
        while True:
            best, when = -1, 0
            for q in (0, 1, 2):
                ready = known[q]
                if ready is None:
                    if ran[q] == ends[q]:
                        continue
                    i = lists[q][ran[q]]
                    cmd = cmds[i]
                    ready = last[q] + 1
                    if cmd.wait_prev:
                        waiting = tokens[3 * (q - 1) + q]
                        if not waiting:
                            continue
                        ready = max(ready, waiting[0])
                    if cmd.wait_next:
                        waiting = tokens[3 * (q + 1) + q]
                        if not waiting:
                            continue
                        ready = max(ready, waiting[0])
                    d = disp[i] if i < len(disp) else dispatch(i)
                    if d is None:
                        continue
                    if d > ready:
                        ready = d
                    known[q] = ready
                if best < 0 or ready < when:
                    best, when = q, ready
            if best < 0:
                break
            known[best] = None
            cmd = cmds[lists[best][ran[best]]]
            if best == 1 and cmd.opcode == Opcode.CONFIG:
                os_mode = bool(cmd.args["os"])
            timer.execute(cmd, os_mode, best)
        return os_mode if ran == ends else None

    def _segmented(self, words: list, cmd_addr: int, checker: _Checker) -> _Timer | None:
        """:meth:`_fast` for command words, FENCE-delimited segment by segment, a segment's
        timing kept and reused: the same prediction. None where :meth:`_fast` gives None,
        and for a word that does not decode (the caller then takes the plain way).

        Why a segment's timing can be reused: a FENCE (or FINISH) is dispatched once every
        command before it has completed, so no unit is busy then and the times the units
        keep (their last completions, the bank spans) are all before it: the commands
        after it depend on them only through maxima with later times. What they depend on
        is their own words, the dataflow, the preloaded weights' row (the key) and the
        times the dispatcher takes their words, which depend on the fetcher too: a kept
        segment is reused only if its words are dispatched at the same times relative to
        the FENCE (:meth:`_Segment.apply`), else it is timed again. Of a LOAD's or
        STORE's main-memory address the timing reads only the bursts it is cut into
        (:meth:`_timing_word`). A segment with a token outstanding at either end is
        timed, not kept; so are the first and a last one without a FENCE.
        """
        window = (checker.mem_base, checker.mem_size)
        memo = self._words.setdefault(window, {})
        known = [memo.get(w) for w in words]
        for i, k in enumerate(known):
            if k is None:
                w = words[i]
                k = memo.get(w)         # the same word earlier in this program
                if k is None:
                    k = self._timing_word(w, checker)
                    if k is None:
                        return None
                    if len(memo) < 1 << 20:
                        memo[w] = k
                known[i] = k
        keys = [k[0] for k in known]
        cmds = [k[1] for k in known]
        queues = [k[2] for k in known]
        finish = next((i for i, cmd in enumerate(cmds) if cmd.opcode is Opcode.FINISH), None)
        if finish is not None:
            del cmds[finish + 1:], keys[finish + 1:], queues[finish + 1:]
        n = len(cmds)
        timer = _Timer(self.config, self.timing, cmds, cmd_addr, queues)
        if not n:
            return timer
        fences = [i for i, q in enumerate(timer.queue_of) if q == 3
                  and cmds[i].opcode is not Opcode.NOP]
        if not fences or fences[-1] != n - 1:
            fences.append(n - 1)
        os_mode = self.config.dataflow == "os"
        checks = (checker.os, checker.weights is not None)
        first = 0
        for last in fences:
            key = self._segment_key(timer, keys, first, last, os_mode, checks)
            seg = self._segments.get(key) if key is not None else None
            if seg is not None and seg.apply(timer, first):
                self.reused += last + 1 - first
            else:
                try:
                    after = self._dispatch_checks(cmds[first:last + 1], checks, checker)
                except _Refused:
                    return None
                state = _Segment.start(timer, first)
                os_after = self._run_queues(timer, [first_q + n_q for first_q, n_q in zip(
                    timer.ran, _queue_counts(timer.queue_of, first, last), strict=True)],
                    os_mode)
                if os_after is None or timer._dispatch(last) is None:
                    return None         # a deadlock: the golden executor names it
                seg = _Segment.end(timer, state, first, last, os_after, after)
                # Its nonlinear_exposed is its own (its spans are apart from the others'):
                # counted now, its spans need not be kept.
                timer.exposed += seg.exposed
                del timer.array_spans[state[1]:], timer.nonlinear_spans[state[2]:]
                if key is not None and not any(timer.tokens) and \
                        self._segment_commands + last - first < 1 << 22:
                    self._segments[key] = seg
                    self._segment_commands += last + 1 - first
            os_mode, checks = seg.os_mode, seg.checks
            first = last + 1
        return timer

    def _segment_key(self, timer: _Timer, keys: list, first: int, last: int, os_mode: bool,
                     checks: tuple) -> tuple | None:
        """What the timing of commands ``first .. last`` (a FENCE or FINISH last) depends on
        beside their words (see :meth:`_segmented`), times relative to the FENCE before
        them; None if they are not to be kept (the first segment, the last without a
        FENCE, a token outstanding)."""
        if not first or any(timer.tokens) or timer.queue_of[last] != 3 or \
                timer.cmds[last].opcode is Opcode.NOP:
            return None
        return tuple(keys[first:last + 1]), os_mode, checks, timer.weights_at

    def _timing_word(self, word: int, checker: _Checker) -> tuple | None:
        """``(timing word, its command, its queue)`` for a command word, once the word has
        passed its unit's checks at its own address: a LOAD or STORE is timed as the first
        word seen that differs from it at most in a main-memory address cut into the same
        bursts (all the timing reads of an address) and in fields the timing does not read
        (:data:`_UNTIMED_FIELDS`); None if it does not decode or is refused."""
        at, opcode_mask, fields = self._address_fields
        field = fields.get((word >> at) & opcode_mask)
        if field is None:
            cmd = self._decode(word)
            if cmd is None:
                return None
            if cmd.opcode is Opcode.FINISH:
                # Dispatched as a FENCE is (once every command before it has completed):
                # a program's last segment is timed as the same segment ending in a FENCE.
                return self._fence_word, cmd, _queue_value(cmd)
            return word, cmd, _queue_value(cmd)
        # The word decodes as the one with its address cleared, but for the address: the
        # words of a program's LOADs differ mostly there.
        offset, mask, untimed = field
        addr = (word >> offset) & mask
        alike_word = word & ~(mask << offset)
        # The unit's checks, as Machine._execute makes them. Of a LOAD's, only the window's
        # reads the address: a LOAD alike but for an address inside the window passes as
        # the first one did.
        extent = self._load_extents.get(alike_word)
        if extent is None or not gdma.in_window(addr, extent, checker.mem_base,
                                                checker.mem_size):
            alike = self._decode(alike_word)
            if alike is None:
                return None
            load = alike.opcode == Opcode.LOAD
            try:
                (checker._load if load else checker._store)(**{**alike.args, "dram_addr": addr})
            except _Refused:
                return None
            if load and len(self._load_extents) < 1 << 20:
                self._load_extents[alike_word] = gdma.extent(gdma.DmaCommand(**alike.args))
        # Timed as the first word seen with the same timed bits and the same bursts; the
        # same offset in a page gives the same bursts, whatever the page.
        page_key = (alike_word & ~untimed, addr % BOUNDARY_BYTES)
        known = self._page_alike.get(page_key)
        if known is None:
            alike = self._decode(alike_word)
            a = alike.args
            if alike.opcode == Opcode.LOAD:
                bursts = _load_bursts(page_key[1], a["stride"], a["rows"], a["row_bytes"],
                                      self.config.bus_bytes)
            else:
                desc = a["desc"]
                bursts = _store_beats(self.config, desc["rows"], desc["length"], page_key[1],
                                      a["stride"], a.get("blocked", 0))
            same = (page_key[0], bursts)
            timed = self._bursts_alike.get(same)
            if timed is None:
                timed = word
                if len(self._bursts_alike) < 1 << 20:
                    self._bursts_alike[same] = word
            cmd = self._decode(timed)
            known = (timed, cmd, _queue_value(cmd))
            if len(self._page_alike) < 1 << 20:
                self._page_alike[page_key] = known
        return known

    def _dispatch_check(self, cmd, os_mode: bool, weights: bool, checker: _Checker) -> tuple:
        """The dispatcher's checks of ``cmd`` from the state (dataflow, weights preloaded)
        they depend on, cached per command and state; the state after it. Raises
        _Refused."""
        key = (id(cmd), os_mode, weights)
        after = self._dispatch_checked.get(key)
        if after is None:
            after = checker._check_dispatch(cmd, os_mode, weights)
            if len(self._dispatch_checked) < 1 << 20:
                self._dispatch_checked[key] = after
                self._checked.setdefault(id(cmd), cmd)     # kept alive: its id stays its own
        return after

    def _dispatch_checks(self, cmds: list, checks: tuple, checker: _Checker) -> tuple:
        """The dispatcher's checks of ``cmds`` from the state ``checks``; the state after
        them. Raises _Refused."""
        os_mode, weights = checks
        for cmd in cmds:
            os_mode, weights = self._dispatch_check(cmd, os_mode, weights, checker)
        return os_mode, weights

    def _checks_pass(self, cmds: list, checker: _Checker) -> bool:
        """Whether every command passes the dispatcher's and its unit's checks (the golden
        executor's own, in program order; a unit's check cached per command)."""
        os_mode, weights = checker.os, checker.weights is not None
        seen = self._checked
        for cmd in cmds:
            os_mode, weights = self._dispatch_check(cmd, os_mode, weights, checker)
            op = cmd.opcode
            if (op == Opcode.LOAD or op == Opcode.STORE) and id(cmd) not in self._unit_checked:
                Machine._execute(checker, cmd)     # the unit's checks, untimed
                if len(self._unit_checked) < 1 << 20:
                    self._unit_checked.add(id(cmd))
                    seen.setdefault(id(cmd), cmd)
        return True
