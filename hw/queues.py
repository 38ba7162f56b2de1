"""The three command queues (LOAD, EXECUTE, STORE) with their dependency tokens and the
exact deadlock detection.

Each queue holds dispatched commands; its head goes to its unit once the tokens it waits
for are there, and a FIFO of the commands in flight says which tokens to signal, in order,
when the unit completes them. Tokens count between neighbours of the chain
LOAD <-> EXECUTE <-> STORE (the scheme of TVM's VTA). A deadlock is reported when nothing is
in flight, every queue with a command waits for a token, and the dispatcher cannot move
(it says so on ``dispatch_stuck``) for :data:`DEADLOCK_CYCLES` cycles; its index is the
earliest command at a blocked head.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .isa import Opcode, command_layout_for

__all__ = ["CommandQueues", "QUEUES", "entry_layout", "INDEX_BITS", "TOKEN_BITS",
           "DEADLOCK_CYCLES"]

#: Cycles the deadlock condition must hold before it is reported.
DEADLOCK_CYCLES = 8
TOKEN_BITS = 16
INDEX_BITS = 32
#: The queues, their units' in-flight depths, and whether the unit runs NOPs itself.
QUEUES = {"load": (2, False), "exec": (8, True), "store": (2, False)}


def entry_layout(config: TesseraConfig) -> data.StructLayout:
    """A command word with its index in the buffer."""
    return data.StructLayout({"word": command_layout_for(config), "index": INDEX_BITS})


class _QueueControl:
    """One queue: its FIFO of commands, its in-flight FIFO of tokens to signal, the token
    wait at its head. ``unit_in``/``unit_done`` are the unit's command and completion
    streams; a NOP that ``nop_in_unit`` is False for completes in the queue itself once the
    unit has nothing in flight (completions stay in order)."""

    def __init__(self, m: Module, name: str, config: TesseraConfig, depth: int,
                 inflight_depth: int, stop, nop_in_unit: bool):
        self.m, self.name = m, name
        layout = entry_layout(config)
        self.fifo = q = ResetInserter(stop)(fifo.SyncFIFO(width=layout.size, depth=depth))
        m.submodules[f"{name}_q"] = q
        self.inflight = f = fifo.SyncFIFO(width=2 + INDEX_BITS, depth=inflight_depth)
        m.submodules[f"{name}_inflight"] = f
        self.head = head = Signal(layout)
        m.d.comb += head.eq(q.r_data)
        self.hdr = head.word.header
        self.stop = stop
        self.nop_in_unit = nop_in_unit
        # Filled in below: a token is there for this queue's waits (registers).
        self.tok_prev = Signal(name=f"{name}_tok_prev")
        self.tok_next = Signal(name=f"{name}_tok_next")
        self.tok_ok = Signal(name=f"{name}_tok_ok")
        m.d.comb += self.tok_ok.eq((~self.hdr.wait_prev | self.tok_prev)
                                   & (~self.hdr.wait_next | self.tok_next))
        self.blocked = Signal(name=f"{name}_blocked")   # the head waits for a token
        m.d.comb += self.blocked.eq(q.r_rdy & ~self.tok_ok)
        self.issue = Signal(name=f"{name}_issue")
        self.done = Signal(name=f"{name}_done")          # a completion this cycle
        self.done_signal_prev = Signal(name=f"{name}_done_sp")
        self.done_signal_next = Signal(name=f"{name}_done_sn")
        self.done_index = Signal(INDEX_BITS, name=f"{name}_done_index")
        self.busy = Signal(name=f"{name}_busy")          # commands in flight
        m.d.comb += self.busy.eq(f.r_rdy)

    def connect(self, unit_valid, unit_ready, unit_done_valid, unit_done_ready):
        m, q, f, hdr = self.m, self.fifo, self.inflight, self.hdr
        is_nop = hdr.opcode == Opcode.NOP
        local_nop = is_nop if not self.nop_in_unit else Const(0)
        can = q.r_rdy & self.tok_ok & ~self.stop & f.w_rdy
        m.d.comb += [
            unit_valid.eq(can & ~local_nop),
            self.issue.eq((unit_valid & unit_ready) | (can & local_nop & ~f.r_rdy)),
            q.r_en.eq(self.issue),
        ]
        unit_done = Signal(name=f"{self.name}_unit_done")
        m.d.comb += [unit_done_ready.eq(1), unit_done.eq(unit_done_valid),
                     f.w_en.eq(self.issue & ~local_nop),
                     f.w_data.eq(Cat(hdr.signal_prev, hdr.signal_next, self.head.index)),
                     f.r_en.eq(unit_done)]
        local_done = self.issue & local_nop
        m.d.comb += [
            self.done.eq(unit_done | local_done),
            self.done_signal_prev.eq(Mux(unit_done, f.r_data[0], hdr.signal_prev)),
            self.done_signal_next.eq(Mux(unit_done, f.r_data[1], hdr.signal_next)),
            self.done_index.eq(Mux(unit_done, f.r_data[2:], self.head.index)),
        ]
        return unit_done


class CommandQueues(wiring.Component):
    """The LOAD, EXECUTE and STORE queues of ``config``'s depths, their tokens, and the
    deadlock detection.

    Members
    -------
    start : In(1)
        A run begins: the tokens are cleared.
    stop : In(1)
        Issue nothing more; the queued commands are dropped (a fault).
    running : In(1)
    i_entry : In(entry_layout(config))
        The command being dispatched.
    push_<q> : In(1)
        Put ``i_entry`` in queue ``q`` (``load``, ``exec``, ``store``).
    room_<q> : Out(1)
        Queue ``q`` has room (a register: after the previous cycle's push and issue).
    <q>_head : Out(entry_layout(config))
        The command at the head of queue ``q``.
    <q>_valid, <q>_ready : Out(1), In(1)
        The head's handshake with its unit.
    <q>_done_valid, <q>_done_ready : In(1), Out(1)
        The unit's completions (in order).
    <q>_done, <q>_done_index : Out(1), Out(INDEX_BITS)
        A unit completion this cycle, and its command's index.
    <q>_busy, <q>_blocked : Out(1)
        Commands in flight; the head waits for a token.
    idle : Out(1)
        Every queue empty, nothing in flight, in the previous cycle and nothing pushed
        then (a register; it may come a cycle after the queues drain, never before).
    dispatch_stuck : In(1)
        The dispatcher cannot move (its command has no room, or waits for idle queues, or
        everything was dispatched).
    deadlock : Out(1)
    deadlock_index : Out(INDEX_BITS)
        The earliest command at a queue's head.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        entry = entry_layout(config)
        members = {"start": In(1), "stop": In(1), "running": In(1), "i_entry": In(entry),
                   "idle": Out(1), "dispatch_stuck": In(1), "deadlock": Out(1),
                   "deadlock_index": Out(INDEX_BITS)}
        for q in QUEUES:
            members.update({
                f"push_{q}": In(1), f"room_{q}": Out(1), f"{q}_head": Out(entry),
                f"{q}_valid": Out(1), f"{q}_ready": In(1), f"{q}_done_valid": In(1),
                f"{q}_done_ready": Out(1), f"{q}_done": Out(1),
                f"{q}_done_index": Out(INDEX_BITS), f"{q}_busy": Out(1),
                f"{q}_blocked": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        c = self._config
        m = Module()
        depths = {"load": c.load_queue_depth, "exec": c.exec_queue_depth,
                  "store": c.store_queue_depth}
        qs = {}
        for name, (inflight, nop_in_unit) in QUEUES.items():
            q = qs[name] = _QueueControl(m, name, c, depths[name], inflight, self.stop,
                                         nop_in_unit)
            push = getattr(self, f"push_{name}")
            # Room as a register (the dispatcher's decision reads it): what the FIFO's
            # ready will be after this cycle's push and issue, from its level.
            room = Signal(init=1, name=f"room_{name}_r")
            level, depth = q.fifo.level, depths[name]
            with m.If(self.stop):
                m.d.sync += room.eq(1)
            with m.Else():
                m.d.sync += room.eq(Mux(push & ~q.issue, level < depth - 1,
                                        Mux(q.issue & ~push, 1, level < depth)))
            m.d.comb += [q.fifo.w_data.eq(self.i_entry),
                         q.fifo.w_en.eq(push),
                         getattr(self, f"room_{name}").eq(room),
                         getattr(self, f"{name}_head").eq(q.head),
                         getattr(self, f"{name}_busy").eq(q.busy),
                         getattr(self, f"{name}_blocked").eq(q.blocked),
                         getattr(self, f"{name}_done_index").eq(q.done_index)]
            unit_done = q.connect(getattr(self, f"{name}_valid"),
                                  getattr(self, f"{name}_ready"),
                                  getattr(self, f"{name}_done_valid"),
                                  getattr(self, f"{name}_done_ready"))
            m.d.comb += getattr(self, f"{name}_done").eq(unit_done)

        # Tokens: LOAD <-> EXECUTE <-> STORE.
        def token(src: _QueueControl, dst: _QueueControl, src_side: str, dst_side: str):
            count = Signal(TOKEN_BITS, name=f"tok_{src.name}_{dst.name}")
            # Whether a token is there, kept as a register beside the count: the head's
            # issue reads one flip-flop, not a 16-bit comparison.
            there = Signal(name=f"tok_{src.name}_{dst.name}_there")
            # (Both outcomes from registers, chosen by the completion and the issue: no
            # adder or comparison behind the issue.)
            inc = src.done & getattr(src, f"done_signal_{src_side}")
            dec = dst.issue & getattr(dst.hdr, f"wait_{dst_side}")
            up, down = inc & ~dec, dec & ~inc
            with m.If(self.start):
                m.d.sync += [count.eq(0), there.eq(0)]
            with m.Elif(up):
                m.d.sync += [count.eq(count + 1), there.eq(count != 2**TOKEN_BITS - 1)]
            with m.Elif(down):
                m.d.sync += [count.eq(count - 1), there.eq(count != 1)]
            m.d.comb += getattr(dst, f"tok_{dst_side}").eq(there)

        lq, xq, sq = qs["load"], qs["exec"], qs["store"]
        token(lq, xq, "next", "prev")
        token(xq, lq, "prev", "next")
        token(xq, sq, "next", "prev")
        token(sq, xq, "prev", "next")

        # Idle as a register, one cycle late: idle in the previous cycle with nothing
        # pushed then (only a push ends idleness), so the dispatcher's decision reads a
        # flip-flop.
        idle_now = ~lq.fifo.r_rdy & ~xq.fifo.r_rdy & ~sq.fifo.r_rdy & ~lq.busy & ~xq.busy \
            & ~sq.busy
        pushed = Cat(getattr(self, f"push_{q}") for q in QUEUES).any()
        m.d.sync += self.idle.eq(idle_now & ~pushed)

        # Deadlock: nothing in flight, every waiting queue blocked, no way forward.
        quiet = [~q.fifo.r_rdy | q.blocked for q in qs.values()]
        some_waiting = lq.fifo.r_rdy | xq.fifo.r_rdy | sq.fifo.r_rdy
        stuck_now = self.running & ~lq.busy & ~xq.busy & ~sq.busy & quiet[0] & quiet[1] & \
            quiet[2] & some_waiting & self.dispatch_stuck
        stuck_for = Signal(range(DEADLOCK_CYCLES + 1))
        m.d.sync += stuck_for.eq(Mux(stuck_now, stuck_for + (stuck_for < DEADLOCK_CYCLES), 0))
        m.d.comb += self.deadlock.eq(stuck_for == DEADLOCK_CYCLES)
        # The earliest command at a blocked head. Two register stages (the heads, then the
        # comparisons): while the queues are stuck their heads do not move, and a deadlock
        # is raised only after DEADLOCK_CYCLES stuck cycles, so the index is exact; it keeps
        # the heads' LUT RAM reads and two comparison chains out of one cycle.
        assert DEADLOCK_CYCLES > 2
        earliest = Const(2**INDEX_BITS - 1, INDEX_BITS)
        for q in qs.values():
            there = Signal(name=f"deadlock_{q.name}_there")
            index = Signal(INDEX_BITS, name=f"deadlock_{q.name}_index")
            m.d.sync += [there.eq(q.fifo.r_rdy), index.eq(q.head.index)]
            better = Signal(INDEX_BITS, name=f"earliest_{q.name}")
            m.d.comb += better.eq(Mux(there & (index < earliest), index, earliest))
            earliest = better
        m.d.sync += self.deadlock_index.eq(earliest)
        return m
