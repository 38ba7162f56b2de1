"""The token scheduler of a lowered product: from the three queues' commands and what each
waits for, one program with its dependency tokens (VTA-style), in an order the in-order
dispatcher runs without stalling.

The emitter (:mod:`tessera.sw.lower.gemm`) says what depends on what: a LOAD needs the
execute command that last read its slot; a step's first COMPUTE needs the step's loads
(the group's last LOAD signals); a tile's first COMPUTE after the first two needs the STORE
that freed its accumulator half; a tile's STOREs need its last COMPUTE. :func:`schedule`
turns these into tokens (a wait covers every later command of the queue, so each distinct
awaited command signals once) and interleaves the queues (:func:`interleave`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...hw.dma import ROWS_BITS
from ...hw.isa import Command, Opcode

__all__ = ["Load", "Streams", "merge_loads", "schedule", "interleave", "LOAD_PACING"]


@dataclass
class Load:
    """A LOAD's arguments, the execute command (index) that must have finished before it
    (-1: none; the last reader of the slot it fills) and whether it signals EXECUTE (the
    last load of a step)."""

    cmd: dict
    need: int = -1
    signal: bool = False


def merge_loads(loads: list[Load]) -> list[Load]:
    """``loads`` with each run of loads that continue one another (the same kind of load;
    the next block's bytes follow the previous block's in main memory and its rows follow in
    the scratchpad or accumulator, as A's column blocks do when a tile spans all of M, B's
    when a step spans all of K, and one-row tiles' biases) made one LOAD: the same bytes to
    the same rows, one command and one round trip."""
    def contiguous(cmd):    # a block's rows follow one another in main memory
        return cmd["rows"] == 1 or cmd["stride"] == cmd["row_bytes"]

    same = ("to_acc", "accumulate", "scale", "wide", "shift", "row_bytes")
    out: list[Load] = []
    for ld in loads:
        prev = out[-1].cmd if out else None
        cmd = ld.cmd
        if prev is not None and out[-1].need == ld.need and not out[-1].signal and \
                all(prev.get(k, 0) == cmd.get(k, 0) for k in same) and \
                contiguous(prev) and contiguous(cmd) and \
                cmd["dram_addr"] == prev["dram_addr"] + prev["rows"] * prev["row_bytes"] and \
                cmd["local_addr"] == prev["local_addr"] + prev["rows"] and \
                prev["rows"] + cmd["rows"] < 1 << ROWS_BITS:
            out[-1] = Load(dict(prev, rows=prev["rows"] + cmd["rows"],
                                 stride=prev["row_bytes"]), ld.need, ld.signal)
            continue
        out.append(Load(dict(cmd), ld.need, ld.signal))
    return out


@dataclass
class Streams:
    """A product's commands per queue, before tokens and ordering. Commands are indexed
    within their queue; the sets name the commands that wait for or signal the next or
    previous queue (LOAD -> EXECUTE -> STORE)."""

    loads: list[Load] = field(default_factory=list)
    execs: list[Command] = field(default_factory=list)
    exec_wait_prev: set[int] = field(default_factory=set)      # a step's loads
    exec_wait_next: set[int] = field(default_factory=set)      # a store freed the rows
    exec_signal_next: set[int] = field(default_factory=set)    # a tile's last compute
    stores: list[Command] = field(default_factory=list)
    store_waits: set[int] = field(default_factory=set)         # the tile's last compute
    store_signals: set[int] = field(default_factory=set)       # the rows are free


def schedule(s: Streams, *, finish: bool, ahead: int, store_depth: int) -> list[Command]:
    """The program of ``s``: loads wait for the latest execute command they need, in order
    (a wait covers every later load too), and each distinct awaited command signals once;
    then the queues are interleaved (:func:`interleave`)."""
    exec_signal_prev: set[int] = set()
    waited = -1
    load_cmds, load_after = [], []
    for ld in s.loads:
        wait = ld.need > waited
        if wait:
            waited = ld.need
            exec_signal_prev.add(ld.need)
        load_cmds.append(Command(Opcode.LOAD, ld.cmd, wait_next=wait, signal_next=ld.signal))
        load_after.append(waited)
    exec_cmds = [Command(cmd.opcode, cmd.args, wait_prev=i in s.exec_wait_prev,
                         wait_next=i in s.exec_wait_next, signal_prev=i in exec_signal_prev,
                         signal_next=i in s.exec_signal_next)
                 for i, cmd in enumerate(s.execs)]
    store_cmds = [Command(cmd.opcode, cmd.args, wait_prev=i in s.store_waits,
                          signal_prev=i in s.store_signals) for i, cmd in enumerate(s.stores)]
    return interleave(load_cmds, load_after, exec_cmds, store_cmds, finish, ahead, store_depth)


#: The next steps' loads are spread over this fraction of the execute work before they
#: are needed, so the last of them still has time to arrive.
LOAD_PACING = 0.75


def interleave(loads, load_after, execs, stores, finish, ahead=1, store_depth=2):
    """One program from the three streams. Each queue sees its commands in order; the
    order across queues is a topological order of the tokens (every command comes after
    the commands whose tokens it waits for), so the dispatcher, blocked on a full queue,
    never waits for a command behind it: a legal stream cannot deadlock. Within that, loads
    run up to ``ahead`` steps ahead of the computes that need them (the slots of an operand
    less one), and a tile's stores follow its last compute.

    The loads of a step yet to come are paced evenly over the execute work (weight tiles
    times rows) from when they may go to when they are needed. The dispatcher issues in
    program order, so a burst of loads would fill the load queue and block it while the
    execute queue runs dry (a step of short computes has dozens of loads); spread out, each
    load finds room and the execute queue stays fed."""
    consumers = [i for i, cmd in enumerate(execs) if cmd.wait_prev]
    sizes, n = [], 0
    for ld in loads:
        n += 1
        if ld.signal_next:
            sizes.append(n)
            n = 0
    work = [0]
    for cmd in execs:
        w = 0
        if cmd.opcode == Opcode.COMPUTE:
            w = max(1, cmd.args.get("count", 0)) * max(cmd.args["rows"], 16)
        work.append(work[-1] + w)
    out = []
    deferred: list[Command] = []
    li = si = 0
    groups_out = 0          # load groups dispatched (each ends with a signalling load)
    groups_needed = 0
    in_group = 0            # loads of the group being dispatched that are out
    for ei, cmd in enumerate(execs):
        if cmd.wait_prev:
            groups_needed += 1
        while li < len(loads) and load_after[li] < ei and \
                groups_out < groups_needed + ahead:
            g = groups_out
            if g >= groups_needed and g < len(sizes):      # not needed yet: paced
                start = consumers[g - ahead] if g >= ahead else 0
                end = consumers[g] if g < len(consumers) else len(execs)
                span = LOAD_PACING * (work[end] - work[start])
                done = work[ei + 1] - work[start]
                quota = sizes[g] if span <= 0 else -(-sizes[g] * min(done, span) // span)
                if in_group >= max(quota, 1):
                    break
            out.append(loads[li])
            in_group += 1
            if loads[li].signal_next:
                groups_out += 1
                in_group = 0
            li += 1
        if groups_out < groups_needed:
            raise AssertionError("a compute would precede the loads it waits for")
        if cmd.wait_next:                 # it waits for a store: that store goes first
            out.extend(deferred)
            deferred.clear()
        out.append(cmd)
        if deferred:                      # one more of the last tile's stores
            out.append(deferred.pop(0))
        if cmd.signal_next:
            out.extend(deferred)
            deferred.clear()
            tile = []
            while si < len(stores):
                tile.append(stores[si])
                si += 1
                if si < len(stores) and stores[si].wait_prev:
                    break
            # As many as the store queue holds now; the others each after one of the next
            # tile's computes, so that the dispatcher never waits on a full store queue
            # while the execute queue runs dry.
            out.extend(tile[:store_depth])
            deferred = tile[store_depth:]
    out.extend(deferred)
    out.extend(loads[li:])
    out.extend(stores[si:])
    if finish:
        out.append(Command(Opcode.FINISH, {}))
    return out
