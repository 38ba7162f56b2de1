"""Command-stream fuzzing: random programs on the RTL and on the golden model, compared.

``tessera fuzz --preset tiny --streams N --seed S`` generates programs no lowering writes
and runs each on both; the outcome must be the same (``docs/semantics.md``): every byte of
main memory, the error code, the index of the failing command and its address.

* **Legal programs** mix every command: loads into the scratchpad and the accumulator
  (narrow, scaled, accumulating, wide), PRELOAD, COMPUTE in both dataflows (single tiles
  and runs), CONFIG, every store operation to main memory and to the scratchpad (blocked,
  transposed, LayerNorm with and without its prescale), NOPs, FENCEs. Shapes, addresses
  and constants are random. Every pair of commands in different queues that touch the
  same rows or bytes is ordered by dependency tokens (through an EXECUTE NOP between LOAD
  and STORE), the token chosen at random among the commands that can carry it, so the
  result does not depend on timing; random extra tokens are added. Some programs hold a
  token wait before its signal with a run of commands between them: they deadlock exactly
  when the waiting queue fills, as the configured queue depths say.
* **Illegal programs** (``--illegal`` of them) end in one bad command: an opcode or token
  that does not exist, a field out of range, a load or store outside the window or the
  on-chip memories, a store of an impossible shape, or a wait that no signal answers. A
  FENCE goes before it, so what the machine has done when it stops is fixed: the memory is
  compared too.

A mismatch is shrunk (commands removed while the mismatch stays) and written to
``--out``: the program as a binary, its disassembly, and the command that replays it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..hw.config import TesseraConfig
from ..hw.isa import (
    Command,
    Opcode,
    Queue,
    command_bits,
    command_layout_for,
    disassemble,
    encode,
    header_layout,
    run_count_shape,
    used_bits,
)
from ..hw.output_path import OutputDigit, OutputOp
from ..hw.store_unit import PARAM_ROWS
from ..sim.bus_faults import BusFaults
from .check import InputError
from .command_buffer import open_command_buffer, write_command_buffer
from .golden.executor import ExecutionError, Machine
from .golden.gelu import gelu_constants
from .golden.softmax import exp_constants

__all__ = ["Case", "Outcome", "generate", "run_case", "schedule_independent", "shrink",
           "fuzz", "replay", "summary"]

_CHAIN = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)
#: Bytes of main memory the programs read and write (inputs, then outputs).
REGION_BYTES = 16 * 1024


@dataclass
class Case:
    """A program and the main memory it starts from."""

    seed: int
    words: list[int]
    image: bytes                    # the data region's initial bytes
    illegal: bool = False
    kind: str = "legal"             # what the generator meant it to be

    def describe(self) -> str:
        return f"seed {self.seed} ({self.kind}, {len(self.words)} commands)"


@dataclass
class Outcome:
    """What a backend did with a case."""

    error: str
    index: int | None
    addr: int
    memory: np.ndarray
    cycles: int | None = None

    def key(self):
        return (self.error, self.index, self.addr)


@dataclass
class _Cmd:
    """A command being generated: its fields and tokens, and what it touches."""

    opcode: Opcode
    args: dict
    queue: Queue
    reads: list = field(default_factory=list)     # (space, lo, hi) half-open
    writes: list = field(default_factory=list)
    tokens: dict = field(default_factory=dict)    # wait_prev, ... -> True

    def command(self) -> Command:
        return Command(self.opcode, self.args, **self.tokens)


def _overlap(a, b) -> bool:
    return any(x[0] == y[0] and x[1] < y[2] and y[1] < x[2] for x in a for y in b)


class _Generator:
    """Random legal commands with the tokens that order their conflicts."""

    def __init__(self, config: TesseraConfig, rng: np.random.Generator, base: int):
        self.c, self.rng, self.base = config, rng, base
        self.prog: list[_Cmd] = []
        self.history: list[int] = []          # commands since the last FENCE
        self.last_signal = {}                 # (from, to) -> index of the last signaller
        self.os = config.dataflow == "os"
        self.weights = False

    # --- tokens --------------------------------------------------------------------

    def _order(self, x: int, y: _Cmd, y_index: int) -> None:
        """Make command ``y`` (about to be at ``y_index``) start after command ``x``
        finishes."""
        a, b = self.prog[x].queue, y.queue
        if abs(_CHAIN.index(a) - _CHAIN.index(b)) == 2:
            # LOAD <-> STORE: through a NOP in the EXECUTE queue just before y.
            nop = _Cmd(Opcode.NOP, {"queue": Queue.EXECUTE}, Queue.EXECUTE)
            self._order(x, nop, len(self.prog))
            self._append(nop)
            self._order(len(self.prog) - 1, y, len(self.prog))
            return
        chan = (a, b)
        last = self.last_signal.get(chan, -1)
        if last >= x:
            return      # a later command of a's queue already signals a wait before y
        later = [i for i in range(max(x, last + 1), y_index) if self.prog[i].queue == a]
        s = int(self.rng.choice(later))
        side = "next" if _CHAIN.index(b) > _CHAIN.index(a) else "prev"
        self.prog[s].tokens[f"signal_{side}"] = True
        y.tokens["wait_prev" if side == "next" else "wait_next"] = True
        self.last_signal[chan] = s

    def _append(self, cmd: _Cmd) -> None:
        self.prog.append(cmd)
        self.history.append(len(self.prog) - 1)

    def add(self, cmd: _Cmd) -> None:
        """Append ``cmd`` after ordering it behind every earlier conflicting command of the
        other queues (the latest of each queue: queues finish in order)."""
        latest = {}
        for i in self.history:
            x = self.prog[i]
            if x.queue == cmd.queue or x.queue not in _CHAIN:
                continue
            if _overlap(x.writes, cmd.reads + cmd.writes) or _overlap(x.reads, cmd.writes):
                latest[x.queue] = i
        if cmd.queue != Queue.EXECUTE and self.rng.random() < 0.1:
            # A token for nothing: orders more than needed, never less.
            earlier = [i for i in self.history if self.prog[i].queue == Queue.EXECUTE]
            if earlier:
                latest[Queue.EXECUTE] = max(latest.get(Queue.EXECUTE, -1),
                                            int(self.rng.choice(earlier)))
        # The far queue first (its relay NOP then covers the EXECUTE queue's order).
        for q in sorted(latest, key=lambda q: -abs(_CHAIN.index(q) - _CHAIN.index(cmd.queue))):
            self._order(latest[q], cmd, len(self.prog))
        self._append(cmd)

    def fence(self) -> None:
        self.prog.append(_Cmd(Opcode.FENCE, {}, Queue.DISPATCH))
        self.history = []

    def restart(self) -> None:
        """A new program after a FENCE (an illegal program's tail): no commands, and no
        signallers, whose indices would be the old program's and would make :meth:`_order`
        take a conflict as already ordered. The dataflow and the preloaded weights carry
        over, as in the hardware."""
        self.prog, self.history, self.last_signal = [], [], {}

    # --- commands ------------------------------------------------------------------

    def _rows(self, total: int, most: int) -> tuple[int, int]:
        n = int(self.rng.integers(1, min(most, total) + 1))
        return int(self.rng.integers(0, total - n + 1)), n

    def _mem_block(self, rows: int, row_bytes: int) -> tuple[int, int]:
        """A main-memory address and stride for ``rows`` rows inside the data region."""
        r = self.rng.random()
        stride = row_bytes if r < 0.4 else int(self.rng.integers(row_bytes, 3 * row_bytes + 8)) \
            if r < 0.9 else 0
        span = (rows - 1) * stride + row_bytes
        if span > 2 * REGION_BYTES:
            stride, span = row_bytes, rows * row_bytes
        at = int(self.rng.integers(0, 2 * REGION_BYTES - span + 1))
        return self.base + at, stride

    def load(self) -> _Cmd:
        c, rng = self.c, self.rng
        kind = rng.choice(["spad", "acc", "wide"], p=[0.6, 0.25, 0.15])
        if kind == "spad":
            local, rows = self._rows(c.spad_rows, 24)
            row_bytes = int(rng.integers(1, c.spad_row_bytes + 1))
            args = dict(local_addr=local, rows=rows, row_bytes=row_bytes)
            space = "spad"
        else:
            local, rows = self._rows(c.acc_rows, 16)
            if kind == "acc":
                row_bytes = int(rng.integers(1, c.cols + 1))
                args = dict(local_addr=local, rows=rows, row_bytes=row_bytes, to_acc=1,
                            accumulate=int(rng.random() < 0.3),
                            scale=int(rng.integers(-300, 300)))
            else:
                lane = c.acc_bits // 8
                row_bytes = lane * int(rng.integers(1, c.cols + 1))
                args = dict(local_addr=local, rows=rows, row_bytes=row_bytes, to_acc=1,
                            wide=1)
            args["shift"] = int(rng.random() < 0.25)
            space = "acc"
        addr, stride = self._mem_block(rows, row_bytes)
        args.update(dram_addr=addr, stride=stride)
        return _Cmd(Opcode.LOAD, args, Queue.LOAD,
                    reads=[("mem", addr, addr + (rows - 1) * stride + row_bytes)],
                    writes=[(space, local, local + rows)])

    def execute(self) -> _Cmd:
        c, rng = self.c, self.rng
        R = c.rows
        r = rng.random()
        if r < 0.08 and c.dataflow == "both":
            self.os = not self.os
            return _Cmd(Opcode.CONFIG, {"os": int(self.os)}, Queue.EXECUTE)
        if r < 0.3 and not self.os:
            at = int(rng.integers(0, c.spad_rows - R + 1))
            self.weights = True
            return _Cmd(Opcode.PRELOAD, {"spad_addr": at}, Queue.EXECUTE,
                        reads=[("spad", at, at + R)])
        rows = int(rng.integers(1, 20))
        acc_n = R if self.os else rows
        acc = int(rng.integers(0, c.acc_rows - acc_n + 1))
        args = dict(rows=rows, acc_addr=acc, accumulate=int(rng.random() < 0.4),
                    shift=int(rng.random() < 0.25))
        writes = [("acc", acc, acc + acc_n)]
        if self.os:
            a = int(rng.integers(0, c.spad_rows - rows + 1))
            b = int(rng.integers(0, c.spad_rows - rows + 1))
            args.update(a_addr=a, b_addr=b)
            reads = [("spad", a, a + rows), ("spad", b, b + rows)]
        elif not self.weights or rng.random() < 0.5:
            count = int(rng.integers(1, min(4, run_count_shape(c).stop - 1) + 1))
            b = int(rng.integers(0, c.spad_rows - count * R + 1))
            a_stride = int(rng.integers(0, 2 * rows + 1)) if count > 1 else 0
            a = int(rng.integers(0, c.spad_rows - (count - 1) * a_stride - rows + 1))
            args.update(a_addr=a, b_addr=b, count=count, a_stride=a_stride)
            reads = [("spad", b, b + count * R)] + \
                [("spad", a + i * a_stride, a + i * a_stride + rows) for i in range(count)]
        else:
            a = int(rng.integers(0, c.spad_rows - rows + 1))
            args.update(a_addr=a)
            reads = [("spad", a, a + rows)]
        return _Cmd(Opcode.COMPUTE, args, Queue.EXECUTE, reads=reads, writes=writes)

    def store(self) -> _Cmd:
        c, rng = self.c, self.rng
        C = c.cols
        ops = [OutputOp.NONE, OutputOp.REQUANT, OutputOp.RELU, OutputOp.GELU,
               OutputOp.SOFTMAX]
        if c.acc_bits == 32:
            ops.append(OutputOp.LAYERNORM)
        op = ops[int(rng.integers(len(ops)))]
        length = int(rng.integers(1, min(c.max_row_len, 4 * C + 3) + 1))
        chunks = -(-length // C)
        rows = int(rng.integers(1, 9))
        desc = {"op": op, "length": length, "rows": rows,
                "m": int(rng.integers(1, 1 << 31)), "e": int(rng.integers(0, 64))}
        if op == OutputOp.GELU:
            g = gelu_constants(float(2.0 ** rng.uniform(-20, -4)))
            desc["consts"] = {"out": {"gelu": {k: getattr(g, k) for k in
                                               ("shift", "q_b", "q_c", "poly_shift")}}}
        elif op == OutputOp.SOFTMAX:
            x = exp_constants(float(2.0 ** rng.uniform(-14, -2)))
            desc["consts"] = {"exp": {k: getattr(x, k) for k in
                                      ("shift", "ln2_q", "q_b", "q_c", "out_shift")}}
        if op != OutputOp.SOFTMAX and rng.random() < 0.3:
            digit = OutputDigit(int(rng.integers(1, 3)))
            desc.setdefault("consts", {"out": {}})["out"]["digit"] = digit
        acc = int(rng.integers(0, c.acc_rows - rows * chunks + 1))
        args = {"desc": desc, "acc_addr": acc}
        reads = [("acc", acc, acc + rows * chunks)]
        if op == OutputOp.LAYERNORM:
            prescale = int(rng.random() < 0.4)
            n = chunks * (PARAM_ROWS + prescale)
            at = int(rng.integers(0, c.acc_rows - n + 1))
            args.update(param_addr=at, prescale=prescale)
            reads.append(("acc", at, at + n))
        blocked = int(rng.random() < 0.25)
        args["blocked"] = blocked
        writes = []
        r = rng.random()
        if r < 0.35:
            transpose = int(length <= C and not blocked and rng.random() < 0.4)
            n = -(-rows // C) * C if transpose else rows * chunks
            at = int(rng.integers(0, c.spad_rows - n + 1))
            args.update(to_spad=1, spad_addr=at, transpose=transpose)
            writes.append(("spad", at, at + n))
        else:
            if blocked:
                stride = rows * C if rng.random() < 0.6 else int(rng.integers(rows * C,
                                                                               rows * C + 64))
                span = (chunks - 1) * stride + rows * C
            else:
                s = rng.random()
                stride = length if s < 0.5 else int(rng.integers(length, length + 40))
                span = (rows - 1) * stride + length
            at = self.base + REGION_BYTES + int(rng.integers(0, REGION_BYTES - span + 1))
            args.update(dram_addr=at, stride=stride)
            writes.append(("mem", at, at + span))
        return _Cmd(Opcode.STORE, args, Queue.STORE, reads=reads, writes=writes)

    def nop(self) -> _Cmd:
        q = _CHAIN[int(self.rng.integers(3))]
        return _Cmd(Opcode.NOP, {"queue": q}, q)

    def forward_wait(self) -> None:
        """A NOP that waits for a token its neighbour signals only after ``n`` more
        commands of the waiting queue: it deadlocks when they overflow the queue."""
        c, rng = self.c, self.rng
        depth = {Queue.LOAD: c.load_queue_depth, Queue.EXECUTE: c.exec_queue_depth,
                 Queue.STORE: c.store_queue_depth}
        b = _CHAIN[int(rng.integers(3))]
        a = _CHAIN[_CHAIN.index(b) + (1 if _CHAIN.index(b) == 0 or
                                      (_CHAIN.index(b) == 1 and rng.random() < 0.5) else -1)]
        side = "prev" if _CHAIN.index(a) < _CHAIN.index(b) else "next"
        n = int(rng.integers(max(0, depth[b] - 3), depth[b] + 2))
        self.prog.append(_Cmd(Opcode.NOP, {"queue": b}, b, tokens={f"wait_{side}": True}))
        for _ in range(n):
            self.prog.append(_Cmd(Opcode.NOP, {"queue": b}, b))
        back = "next" if side == "prev" else "prev"
        self.prog.append(_Cmd(Opcode.NOP, {"queue": a}, a, tokens={f"signal_{back}": True}))
        self.last_signal[(a, b)] = len(self.prog) - 1
        # Ordered against everything before and after: fence around it.
        self.fence()

    def legal(self, n: int) -> None:
        for _ in range(n):
            r = self.rng.random()
            if r < 0.3:
                self.add(self.load())
            elif r < 0.6:
                self.add(self.execute())
            elif r < 0.88:
                self.add(self.store())
            elif r < 0.95:
                self.add(self.nop())
            elif r < 0.98:
                self.fence()
            else:
                self.fence()
                self.forward_wait()


def _illegal_word(config: TesseraConfig, gen: _Generator, rng) -> tuple[int, str]:
    """One bad command word and what is bad about it."""
    c = config
    hbase = command_layout_for(c)["header"].offset
    h = header_layout()
    kinds = ["opcode", "token", "nop_dispatch", "load_window", "load_local", "load_shape",
             "store_window", "store_shape", "store_local", "compute_local", "compute_count",
             "no_weights", "unanswered_wait", "dataflow"]
    kind = kinds[int(rng.integers(len(kinds)))]

    def word(cmd):
        return encode(c, cmd)

    if kind == "opcode":
        w = word(gen.nop().command())
        mask = ((1 << h["opcode"].width) - 1) << (hbase + h["opcode"].offset)
        bad = int(rng.integers(len(Opcode), 1 << h["opcode"].width)) if \
            len(Opcode) < 1 << h["opcode"].width else None
        if bad is None:
            kind = "token"
        else:
            return (w & ~mask) | (bad << (hbase + h["opcode"].offset)), kind
    if kind == "token":
        cmd = gen.load().command()
        w = encode(c, cmd)
        return w | 1 << (hbase + h["wait_prev"].offset), kind
    if kind == "nop_dispatch":
        w = encode(c, Command(Opcode.NOP, {"queue": Queue.LOAD}))
        return w | (Queue.DISPATCH.value << command_layout_for(c)["args"].offset), kind
    if kind.startswith("load"):
        cmd = gen.load()
        a = dict(cmd.args)
        if kind == "load_window":
            a["dram_addr"] = int(rng.choice([gen.base - 8 * c.bus_bytes,
                                             gen.base + _mem_size(c) - a["row_bytes"] + 1,
                                             (1 << c.addr_bits) - 4]))
            a["dram_addr"] %= 1 << c.addr_bits
        elif kind == "load_local":
            limit = c.acc_rows if a.get("to_acc") else c.spad_rows
            a["local_addr"] = limit - 1
            a["rows"] = max(a["rows"], 2)
        elif not a.get("to_acc") and rng.random() < 0.3:
            a["shift"] = 1      # only loads into the accumulator shift
        else:
            a["row_bytes"] = 0 if rng.random() < 0.5 else c.spad_row_bytes + 1 \
                if not a.get("to_acc") else c.acc_row_bytes + 1
            a["row_bytes"] = min(a["row_bytes"], _field_max(c, Opcode.LOAD, "row_bytes"))
        return word(Command(Opcode.LOAD, a)), kind
    if kind.startswith("store"):
        cmd = gen.store()
        a = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cmd.args.items()}
        if kind == "store_window":
            a.update(to_spad=0, transpose=0)
            over = int(rng.integers(0, 3 * c.cols))
            a["dram_addr"] = gen.base + _mem_size(c) - over
            a["stride"] = int(rng.integers(0, 2 * c.cols))
        elif kind == "store_shape":
            r = rng.random()
            if r < 0.3:
                a["desc"]["op"] = int(rng.integers(6, 8))
                a["desc"].pop("consts", None)
            elif r < 0.45 and a["desc"]["op"] != OutputOp.SOFTMAX:
                out = a["desc"].setdefault("consts", {"out": {}})["out"]
                out["digit"] = 3        # no such digit
            elif r < 0.6:
                a["desc"]["length"] = 0 if rng.random() < 0.5 else c.max_row_len + 1
            else:
                a.update(to_spad=0, transpose=1)
        else:
            a["acc_addr"] = c.acc_rows - 1
            a["desc"]["rows"] = max(a["desc"]["rows"], 2)
        return word(Command(Opcode.STORE, a)), kind
    if kind == "compute_local":
        return word(Command(Opcode.COMPUTE, dict(a_addr=c.spad_rows - 2, rows=5, acc_addr=0,
                                                 count=1, b_addr=0))), kind
    if kind == "compute_count":
        most = run_count_shape(c).stop - 1
        if most + 1 > _field_max(c, Opcode.COMPUTE, "count"):
            kind = "no_weights"
        else:
            return word(Command(Opcode.COMPUTE, dict(rows=2, count=most + 1))), kind
    if kind == "no_weights":
        if gen.weights or gen.os:
            kind = "unanswered_wait"
        else:
            return word(Command(Opcode.COMPUTE, dict(rows=3, acc_addr=0))), kind
    if kind == "dataflow":
        if c.dataflow == "both":
            kind = "unanswered_wait"
        else:
            return word(Command(Opcode.CONFIG, {"os": int(c.dataflow == "ws")})), kind
    # A wait that nothing answers.
    return word(Command(Opcode.NOP, {"queue": Queue.STORE}, wait_prev=True)), "deadlock"


def _noise(config: TesseraConfig, rng, cmd: _Cmd) -> int:
    """The command's word, sometimes with random reserved bits set (they are ignored)."""
    word = encode(config, cmd.command())
    if rng.random() < 0.15:
        bits = command_bits(config)
        noise = int.from_bytes(rng.bytes(bits // 8), "little")
        word |= noise & ~used_bits(config, cmd.opcode) & ((1 << bits) - 1)
    return word


def _field_max(config, opcode, name) -> int:
    from ..hw.isa import _tree
    return _tree(config, opcode)[name].hi


def _mem_size(config) -> int:
    from ..sim.accel_system import mem_bytes
    return mem_bytes(config)


def generate(config: TesseraConfig, seed: int, base: int, illegal: bool = False,
             length: int | None = None) -> Case:
    """A random program whose data region starts at ``base`` (2 * REGION_BYTES: inputs,
    then outputs). The illegal commands at the window's edges take ``base`` as the start
    of main memory: the fuzzer's runtimes allocate the region first."""
    rng = np.random.default_rng(seed)
    gen = _Generator(config, rng, base)
    n = length if length is not None else int(rng.integers(4, 40))
    gen.legal(n)
    words = [_noise(config, rng, c) for c in gen.prog]
    kind = "legal"
    if illegal:
        words.append(encode(config, Command(Opcode.FENCE, {})))
        bad, kind = _illegal_word(config, gen, rng)
        words.append(bad)
        words.append(encode(config, Command(Opcode.FENCE, {})))
        gen.restart()
        gen.legal(int(rng.integers(0, 4)))
        words += [_noise(config, rng, c) for c in gen.prog]
    words.append(encode(config, Command(Opcode.FINISH, {})))
    image = rng.integers(0, 256, 2 * REGION_BYTES, dtype=np.uint8).tobytes()
    return Case(seed, words, image, illegal, kind)


def run_case(runtime, case: Case, region: int, timeout_cycles: int = 2_000_000) -> Outcome:
    """Run ``case`` on ``runtime`` with its data region at ``region``."""
    from ..sim.axi_checker import ProtocolViolation

    runtime.write(region, case.image)
    # Nothing else of memory matters: the rest is zero on every backend.
    try:
        result = runtime.run(case.words, timeout_cycles=timeout_cycles)
    except ProtocolViolation as e:
        # A bus protocol violation is a difference too (the golden model has no bus).
        return Outcome(f"PROTOCOL {e}", None, 0, runtime.read(region, 2 * REGION_BYTES))
    mem = runtime.read(region, 2 * REGION_BYTES)
    return Outcome(result.error.name, result.error_index if not result.ok else None,
                   result.error_addr, mem, result.cycles)


def _differs(a: Outcome, b: Outcome) -> str:
    what = []
    if a.key() != b.key():
        what.append(f"error {a.key()} vs {b.key()}")
    diff = np.flatnonzero(a.memory != b.memory)
    if diff.size:
        what.append(f"{diff.size} bytes of memory differ, first at offset {diff[0]:#x}")
    return "; ".join(what)


class _Pair:
    """The two runtimes a fuzz run compares, with one data region each."""

    def __init__(self, config, sim: str, machine: type = Machine, **rtl_options):
        from .runtime import Runtime
        self.config, self.machine = config, machine
        self.rtl = Runtime(config, sim, **rtl_options)
        self.gold = Runtime(config, "golden", mem_size=self.rtl.mem_size,
                            mem_base=self.rtl.mem_base, machine=machine)
        self.region = self.rtl.alloc(2 * REGION_BYTES)
        assert self.gold.alloc(2 * REGION_BYTES) == self.region

    def warm_up(self) -> None:
        """Run an empty program on the RTL: the simulator is built then, not during the
        first case."""
        self.rtl.run([encode(self.config, Command(Opcode.FINISH, {}))])

    def compare(self, case: Case) -> tuple[str, Outcome, Outcome]:
        r = run_case(self.rtl, case, self.region)
        g = run_case(self.gold, case, self.region)
        return _differs(r, g), r, g


def schedule_independent(config: TesseraConfig, case: Case, region: int, mem_base: int,
                         mem_size: int, schedules: int = 4, machine: type = Machine) -> bool:
    """Whether the golden model gives ``case`` one outcome whichever queue head it runs
    first (the earliest, then ``schedules`` random orders): a program whose outcome
    depends on the order lacks a token, and the hardware's timing decides it."""
    outcomes = []
    for k in range(schedules + 1):
        m = machine(config, mem_size, mem_base)
        off = region - mem_base
        m.mem[off:off + len(case.image)] = np.frombuffer(case.image, np.uint8)
        if k:
            m.shuffle = np.random.default_rng(k)
        try:
            m.run(case.words)
            key = ("NONE", None, 0)
        except ExecutionError as e:
            key = (e.code.name, e.index, e.addr)
        outcomes.append((key, m.mem[off:off + len(case.image)].tobytes()))
    return all(o == outcomes[0] for o in outcomes)


def shrink(pair: _Pair, case: Case, budget: int = 400) -> Case:
    """Remove commands (halves, then single ones) while the two backends still disagree
    and the program's outcome still does not depend on timing; the last command (the
    FINISH) stays."""
    body, last = list(case.words[:-1]), case.words[-1:]
    runs = 0

    def bad(ws):
        nonlocal runs
        runs += 1
        trial = replace(case, words=ws + last)
        return schedule_independent(pair.config, trial, pair.region, pair.gold.mem_base,
                                    pair.gold.mem_size, machine=pair.machine) \
            and bool(pair.compare(trial)[0])

    chunk = max(1, len(body) // 2)
    while chunk >= 1 and runs < budget:
        i, changed = 0, False
        while i < len(body) and runs < budget:
            trial = body[:i] + body[i + chunk:]
            if bad(trial):
                body, changed = trial, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return replace(case, words=body + last)


def _write_failure(out: Path, config, case: Case, what: str, replay_cmd: str) -> Path:
    """The program as a command buffer (``.bin``, with its header), the data region it
    starts from (``.img``) and its disassembly with the difference and the replay command
    (``.txt``)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"mismatch-{case.seed}"
    write_command_buffer(stem.with_suffix(".bin"), config, case.words)
    stem.with_suffix(".img").write_bytes(case.image)
    lines = [f"# {case.describe()}: {what}", f"# replay: {replay_cmd}"]
    lines += disassemble(config, case.words)
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return stem


def fuzz(config: TesseraConfig, streams: int, seed: int, sim: str = "verilator",
         illegal: float = 0.2, out: Path | None = None, preset_arg: str = "",
         progress=print, stop_after: int = 1, machine: type = Machine,
         cases: list[Case] | None = None, bus_timing: bool = False,
         **rtl_options) -> dict:
    """Run ``streams`` random programs on ``sim`` and on the golden model (``machine``);
    shrink and write each mismatch, stopping after ``stop_after`` of them. ``cases``:
    run these instead of generated ones. ``bus_timing``: each program on a memory of
    random timing (a latency range per burst, stalls on all five channels), which must
    change nothing but the cycles. Returns a summary."""
    pair = _Pair(config, sim, machine, **rtl_options)
    if cases is not None:
        streams = len(cases)
    rng = np.random.default_rng(seed)
    counts = {"programs": 0, "legal": 0, "illegal": 0, "mismatches": 0, "errors": {},
              "cycles": 0}
    failures = []
    # The simulator is built (or found built) before the clock starts: the figure is the
    # fuzzing's own throughput.
    build = time.time()
    pair.warm_up()
    counts["build_seconds"] = round(time.time() - build, 1)
    t0, last = time.time(), 0.0
    for k in range(streams):
        case_seed = seed * 1_000_003 + k
        bad = bool(rng.random() < illegal)
        case = cases[k] if cases is not None else generate(config, case_seed, pair.region,
                                                           illegal=bad)
        if bus_timing:
            pair.rtl.faults = _random_timing(case.seed)
        what, r, g = pair.compare(case)
        counts["programs"] += 1
        counts["illegal" if case.illegal else "legal"] += 1
        counts["errors"][g.error] = counts["errors"].get(g.error, 0) + 1
        counts["cycles"] += r.cycles or 0
        if what:
            counts["mismatches"] += 1
            small = shrink(pair, case)
            what_small = pair.compare(small)[0] or what
            timing = f" --bus-timing-seed {case.seed}" if bus_timing else ""
            replay_cmd = (f"tessera fuzz {preset_arg} --sim {sim}{timing} --replay "
                          f"{(out or Path('.')) / f'mismatch-{case.seed}.bin'}").replace("  ", " ")
            stem = _write_failure(out or Path("fuzz-failures"), config, small, what_small,
                                  replay_cmd) if out is not None else None
            failures.append({"seed": case.seed, "kind": case.kind, "what": what_small,
                             "commands": len(small.words), "file": str(stem) if stem else None})
            progress(f"MISMATCH {case.describe()}: {what_small}"
                     + (f" (written to {stem}.txt)" if stem else ""))
            if len(failures) >= stop_after:
                break
        now = time.time()
        if now - last > 5 or k == streams - 1:
            last = now
            rate = (k + 1) / (now - t0)
            progress(f"{k + 1}/{streams} programs, {counts['mismatches']} mismatches, "
                     f"{rate:.1f} programs/s, ETA {(streams - k - 1) / rate:.0f} s")
    counts["seconds"] = round(time.time() - t0, 1)
    counts["failures"] = failures
    return counts


def _random_timing(seed: int) -> BusFaults:
    """A memory of random timing for one program: latencies drawn per burst from a random
    range, one stall probability for all five channels."""
    rng = np.random.default_rng([seed, 0x7157])
    lo = int(rng.integers(1, 120))
    return BusFaults.timing(seed, latency=(lo, lo + int(rng.integers(0, 300))),
                            stall=float(rng.choice([0.0, 0.1, 0.3, 0.6])))


def replay(config: TesseraConfig | None, path: Path, sim: str = "verilator",
           machine: type = Machine, bus_timing_seed: int | None = None,
           **rtl_options) -> str:
    """Run a written mismatch (``.bin`` beside its ``.img``) again; returns the difference
    (empty when the backends now agree). ``config`` None: the buffer's own (a preset)."""
    buf = open_command_buffer(path, config)
    words = list(buf.words())
    image_path = Path(path).with_suffix(".img")
    if not image_path.is_file():
        raise InputError(f"{image_path} is missing: a replay needs the data region written "
                         f"beside the program")
    image = image_path.read_bytes()
    if len(image) != 2 * REGION_BYTES:
        raise InputError(f"{image_path} holds {len(image)} bytes, not the "
                         f"{2 * REGION_BYTES} of a fuzz data region")
    pair = _Pair(buf.config, sim, machine, **rtl_options)
    if bus_timing_seed is not None:
        pair.rtl.faults = _random_timing(bus_timing_seed)
    return pair.compare(Case(-1, words, image, kind="replay"))[0]


def summary(counts: dict) -> str:
    """One line: what ran, what it ended in, the mismatches."""
    errs = ", ".join(f"{k} {v}" for k, v in sorted(counts["errors"].items()))
    rate = counts["programs"] / max(counts["seconds"], 1e-9)
    return (f"{counts['programs']} programs ({counts['legal']} legal, {counts['illegal']} "
            f"illegal; outcomes: {errs}), {counts['mismatches']} mismatches, "
            f"{counts['cycles']:,} cycles simulated, {counts['seconds']} s "
            f"({rate:.1f} programs/s on RTL and golden; the simulator's build or check "
            f"before: {counts.get('build_seconds', 0)} s)")
