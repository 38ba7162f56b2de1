"""A test harness in HDL: the execute unit with the scratchpad and accumulator, and
back-door ports into both memories for the testbench."""

from __future__ import annotations

import random

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..hw.config import TesseraConfig
from ..hw.execute_unit import EXEC_DONE_LAYOUT, ExecuteUnit
from ..hw.generate import Top
from ..hw.isa import Command, Opcode, command_layout_for
from ..hw.memory import Accumulator, Scratchpad, acc_port_signature, spad_port_signature

__all__ = ["ExecSystem", "EXEC_SYSTEM", "random_program"]


class ExecSystem(wiring.Component):
    """Execute unit + scratchpad + accumulator.

    Members
    -------
    i_cmd, o_done : the execute unit's command and completion streams
    dbg_spad, dbg_acc : In(MemoryPortSignature)
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout_for(config))),
            "o_done": Out(stream.Signature(EXEC_DONE_LAYOUT)),
            "dbg_spad": In(spad_port_signature(config)),
            "dbg_acc": In(acc_port_signature(config)),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        m.submodules.exe = exe = ExecuteUnit(c)
        m.submodules.spad = spad = Scratchpad(c, ports=3)
        m.submodules.acc = acc = Accumulator(c, ports=2)
        wiring.connect(m, wiring.flipped(self.i_cmd), exe.i_cmd)
        wiring.connect(m, exe.o_done, wiring.flipped(self.o_done))
        wiring.connect(m, exe.spad_a, spad.port0)
        wiring.connect(m, exe.spad_b, spad.port1)
        wiring.connect(m, exe.acc, acc.port0)
        wiring.connect(m, wiring.flipped(self.dbg_spad), spad.port2)
        wiring.connect(m, wiring.flipped(self.dbg_acc), acc.port1)
        return m


EXEC_SYSTEM = Top(ExecSystem, "tessera_exec_system",
                  "the execute unit with scratchpad and accumulator (test harness)")


def random_program(cfg, rng: random.Random, n: int):
    """CONFIG / PRELOAD / COMPUTE commands (runs of weight tiles among them) over random
    scratchpad and accumulator rows."""
    prog, os_mode, have_weights = [], not cfg.has_ws, False
    for _ in range(n):
        choice = rng.random()
        if cfg.dataflow == "both" and choice < 0.15:
            os_mode = rng.random() < 0.5
            prog.append(Command(Opcode.CONFIG, {"os": int(os_mode)}))
        elif not os_mode and (choice < 0.35 or not have_weights):
            prog.append(Command(Opcode.PRELOAD, {"spad_addr": rng.randrange(0, 60)}))
            have_weights = True
        elif not os_mode and choice < 0.55:
            # A run of weight tiles (consecutive from b_addr), in the 64 rows tests fill.
            count = rng.choice([1, 2, 3, 5, 8])
            rows = rng.choice([1, 2, cfg.rows, 7])
            stride = rng.randrange(0, 9)
            prog.append(Command(Opcode.COMPUTE, {
                "a_addr": rng.randrange(0, 64 - (count - 1) * stride - rows + 1),
                "b_addr": rng.randrange(0, 64 - count * cfg.rows + 1), "rows": rows,
                "acc_addr": rng.randrange(0, 40 - rows), "accumulate": int(rng.random() < 0.5),
                "count": count, "a_stride": stride}))
        else:
            rows = rng.choice([1, 2, cfg.rows, cfg.rows + 3, 11])
            acc_rows = cfg.rows if os_mode else rows
            prog.append(Command(Opcode.COMPUTE, {
                "a_addr": rng.randrange(0, 50), "b_addr": rng.randrange(0, 50),
                "rows": rows, "acc_addr": rng.randrange(0, 40 - acc_rows),
                "accumulate": int(rng.random() < 0.5)}))
    return prog
