"""The dispatcher's checks of a command before it is queued, and where it goes.

Combinational: a command word and the dispatch state (the array's dataflow, whether
weights were preloaded) in; an error code and the command's queue out. The checks and
their order are the golden executor's (``Machine._check_dispatch`` in
``sw/golden/executor.py``); ``tests/test_command_check.py`` compares the two on random
command words.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .isa import ErrorCode, Opcode, Queue, command_layout_for, run_count_shape

__all__ = ["CommandCheck", "FLAGS", "command_flags", "decide", "run_product"]

#: Width of the sums ``start + count`` the range checks compare (no overflow).
_SUM_BITS = 32 + 18


#: What :func:`command_flags` finds in a word.
FLAGS = data.StructLayout({
    "to_load": 1, "to_exec": 1, "to_store": 1, "is_sync": 1,
    "bad_opcode": 1, "bad_nop": 1, "bad_tokens": 1, "bad_config": 1,
    "preload": 1, "pre_out": 1, "compute": 1, "a_out": 1, "is_run": 1, "b_out": 1,
    "acc_os_out": 1, "count_big": 1, "run_out": 1, "acc_ws_out": 1,
})


def run_product(w):
    """``(count - 1) * a_stride`` of a COMPUTE word: where a run's last activation block
    starts, from its first (a multiplier; the dispatcher registers it a stage ahead)."""
    comp = w.args.compute
    return (comp.count - 1) * comp.a_stride


def command_flags(m: Module, c: TesseraConfig, w, product=None):
    """The facts about command word ``w`` that do not depend on the dispatch state (a
    :data:`FLAGS` value); ``product``: ``run_product(w)`` if it is at hand (registered),
    else it is computed here."""
    f = Signal(FLAGS)
    hdr = w.header
    op = hdr.opcode
    nop_q = w.args.nop.queue
    is_nop = op == Opcode.NOP
    m.d.comb += [
        f.to_load.eq((op == Opcode.LOAD) | (is_nop & (nop_q == Queue.LOAD))),
        f.to_exec.eq((op == Opcode.CONFIG) | (op == Opcode.PRELOAD)
                     | (op == Opcode.COMPUTE) | (is_nop & (nop_q == Queue.EXECUTE))),
        f.to_store.eq((op == Opcode.STORE) | (is_nop & (nop_q == Queue.STORE))),
        f.is_sync.eq((op == Opcode.FENCE) | (op == Opcode.FINISH)),
    ]
    m.d.comb += f.bad_tokens.eq(
        Mux(f.to_load, hdr.wait_prev | hdr.signal_prev,
            Mux(f.to_store, hdr.wait_next | hdr.signal_next,
                Mux(f.is_sync, hdr.wait_prev | hdr.wait_next | hdr.signal_prev
                    | hdr.signal_next, 0))))

    def past(start, count, total):
        """``start + count > total``, without overflow."""
        s = Signal(_SUM_BITS)
        m.d.comb += s.eq(start + count)
        return s > total

    R = c.rows
    comp = w.args.compute
    os_bit = w.args.config.os
    m.d.comb += [
        f.bad_opcode.eq(hdr.opcode.as_value() > max(o.value for o in Opcode)),
        f.bad_nop.eq(is_nop & (nop_q == Queue.DISPATCH)),
        f.bad_config.eq((op == Opcode.CONFIG) & Mux(os_bit, not c.has_os, not c.has_ws)),
        f.preload.eq(op == Opcode.PRELOAD),
        f.pre_out.eq(past(w.args.preload.spad_addr, R, c.spad_rows)),
        f.compute.eq((op == Opcode.COMPUTE) & (comp.rows != 0)),
        f.a_out.eq(past(comp.a_addr, comp.rows, c.spad_rows)),
        f.b_out.eq(past(comp.b_addr, comp.rows, c.spad_rows)),
        f.acc_os_out.eq(past(comp.acc_addr, R, c.acc_rows)),
        f.acc_ws_out.eq(past(comp.acc_addr, comp.rows, c.acc_rows)),
        # A run (count != 0): its weight tiles, and its last tile's activations.
        f.is_run.eq(comp.count != 0),
        f.count_big.eq(comp.count > run_count_shape(c).stop - 1),
        f.run_out.eq(past(comp.b_addr, comp.count * R, c.spad_rows)
                     | past(comp.a_addr + (run_product(w) if product is None else product),
                            comp.rows, c.spad_rows)),
    ]
    return f


def decide(m: Module, f, os_mode, weights):
    """The error code of a command with flags ``f`` in the dispatch state ``os_mode``,
    ``weights``: the checks in the golden executor's order."""
    code = Signal(ErrorCode)
    with m.If(f.bad_opcode):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_OPCODE)
    with m.Elif(f.bad_nop):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
    with m.Elif(f.bad_tokens):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_TOKEN)
    with m.Elif(f.bad_config):
        m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
    with m.Elif(f.preload & f.pre_out):
        m.d.comb += code.eq(ErrorCode.LOCAL)
    with m.Elif(f.compute):
        with m.If(f.a_out):
            m.d.comb += code.eq(ErrorCode.LOCAL)
        with m.Elif(os_mode):
            with m.If(f.is_run):
                m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
            with m.Elif(f.b_out | f.acc_os_out):
                m.d.comb += code.eq(ErrorCode.LOCAL)
        with m.Elif(f.count_big):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
        with m.Elif(f.is_run & f.run_out):
            m.d.comb += code.eq(ErrorCode.LOCAL)
        with m.Elif(~weights & ~f.is_run):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
        with m.Elif(f.acc_ws_out):
            m.d.comb += code.eq(ErrorCode.LOCAL)
    return code


class CommandCheck(wiring.Component):
    """Check one command for dispatch.

    Members
    -------
    word : In(command_layout_for(config))
    os_mode : In(1)
        The array is in the output-stationary dataflow (the last CONFIG's).
    weights : In(1)
        A PRELOAD has been dispatched in this run.
    code : Out(ErrorCode)
        ``NONE``, or why the command is refused: ``ILLEGAL_OPCODE``, ``ILLEGAL_FIELD``,
        ``ILLEGAL_TOKEN`` or ``LOCAL`` (on-chip rows out of range).
    to_load, to_exec, to_store : Out(1)
        The queue the command goes to (a NOP: its ``queue`` field).
    is_sync : Out(1)
        FENCE or FINISH: dispatched once every queue is idle.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        super().__init__({
            "word": In(command_layout_for(config)), "os_mode": In(1), "weights": In(1),
            "code": Out(ErrorCode), "to_load": Out(1), "to_exec": Out(1), "to_store": Out(1),
            "is_sync": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = command_flags(m, self._config, self.word)
        m.d.comb += [self.to_load.eq(f.to_load), self.to_exec.eq(f.to_exec),
                     self.to_store.eq(f.to_store), self.is_sync.eq(f.is_sync),
                     self.code.eq(decide(m, f, self.os_mode, self.weights))]
        return m
