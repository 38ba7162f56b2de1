"""The dispatcher's checks of a command before it is queued, and where it goes.

Combinational: a command word and the dispatch state (the array's dataflow, whether
weights were preloaded) in; an error code and the command's queue out. The checks and
their order are the golden executor's (``Machine._check_dispatch`` in
``sw/golden/executor.py``); ``tests/test_command_check.py`` compares the two on random
command words.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .isa import ErrorCode, Opcode, Queue, command_layout_for, run_count_shape

__all__ = ["CommandCheck"]

#: Width of the sums ``start + count`` the range checks compare (no overflow).
_SUM_BITS = 32 + 18


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
        c = self._config
        m = Module()
        w = self.word
        hdr = w.header
        op = hdr.opcode
        nop_q = w.args.nop.queue
        is_nop = op == Opcode.NOP
        m.d.comb += [
            self.to_load.eq((op == Opcode.LOAD) | (is_nop & (nop_q == Queue.LOAD))),
            self.to_exec.eq((op == Opcode.CONFIG) | (op == Opcode.PRELOAD)
                            | (op == Opcode.COMPUTE) | (is_nop & (nop_q == Queue.EXECUTE))),
            self.to_store.eq((op == Opcode.STORE) | (is_nop & (nop_q == Queue.STORE))),
            self.is_sync.eq((op == Opcode.FENCE) | (op == Opcode.FINISH)),
        ]
        bad_tokens = Mux(self.to_load, hdr.wait_prev | hdr.signal_prev,
                         Mux(self.to_store, hdr.wait_next | hdr.signal_next,
                             Mux(self.is_sync, hdr.wait_prev | hdr.wait_next | hdr.signal_prev
                                 | hdr.signal_next, 0)))

        def past(start, count, total):
            """``start + count > total``, without overflow."""
            s = Signal(_SUM_BITS)
            m.d.comb += s.eq(start + count)
            return s > total

        R = c.rows
        comp = w.args.compute
        os_bit = w.args.config.os
        pre_out = past(w.args.preload.spad_addr, R, c.spad_rows)
        a_out = past(comp.a_addr, comp.rows, c.spad_rows)
        b_out = past(comp.b_addr, comp.rows, c.spad_rows)
        acc_os_out = past(comp.acc_addr, R, c.acc_rows)
        acc_ws_out = past(comp.acc_addr, comp.rows, c.acc_rows)
        # A run (count != 0): its weight tiles, and its last tile's activations.
        is_run = comp.count != 0
        run_w_out = past(comp.b_addr, comp.count * R, c.spad_rows)
        run_a_out = past(comp.a_addr + (comp.count - 1) * comp.a_stride, comp.rows,
                         c.spad_rows)
        code = self.code
        with m.If(hdr.opcode.as_value() > max(o.value for o in Opcode)):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif(is_nop & (nop_q == Queue.DISPATCH)):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
        with m.Elif(bad_tokens):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_TOKEN)
        with m.Elif((op == Opcode.CONFIG) & Mux(os_bit, not c.has_os, not c.has_ws)):
            m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
        with m.Elif((op == Opcode.PRELOAD) & pre_out):
            m.d.comb += code.eq(ErrorCode.LOCAL)
        with m.Elif((op == Opcode.COMPUTE) & (comp.rows != 0)):
            with m.If(a_out):
                m.d.comb += code.eq(ErrorCode.LOCAL)
            with m.Elif(self.os_mode):
                with m.If(is_run):
                    m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
                with m.Elif(b_out | acc_os_out):
                    m.d.comb += code.eq(ErrorCode.LOCAL)
            with m.Elif(comp.count > run_count_shape(c).stop - 1):
                m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
            with m.Elif(is_run & (run_w_out | run_a_out)):
                m.d.comb += code.eq(ErrorCode.LOCAL)
            with m.Elif(~self.weights & ~is_run):
                m.d.comb += code.eq(ErrorCode.ILLEGAL_FIELD)
            with m.Elif(acc_ws_out):
                m.d.comb += code.eq(ErrorCode.LOCAL)
        return m
