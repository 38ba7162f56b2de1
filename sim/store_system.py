"""A test harness in HDL: the store path of the machine. The store unit reads the
accumulator, runs the rows through the output path, and writes the results to main memory
through the DMA engine or back into the scratchpad; back-door ports load the accumulator
and read the scratchpad for the testbench."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..hw.axi import Axi4Signature
from ..hw.config import TesseraConfig
from ..hw.dma import DmaEngine, done_layout
from ..hw.generate import Top
from ..hw.memory import Accumulator, Scratchpad, acc_port_signature, spad_port_signature
from ..hw.output_path import OutputPath
from ..hw.store_unit import StoreUnit, store_command_layout

__all__ = ["StoreSystem", "STORE_SYSTEM"]


class StoreSystem(wiring.Component):
    """Store unit + output path + DMA engine + scratchpad + accumulator.

    Members
    -------
    m_axi : Out(Axi4Signature)
    i_store, o_store_done : streams of the store unit
    dbg_spad, dbg_acc : In(MemoryPortSignature)
    window_base, window_size : In
    op_error : Out(1)
        The output path's sticky error flag.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        super().__init__({
            "m_axi": Out(Axi4Signature(c.addr_bits, c.bus_bits)),
            "i_store": In(stream.Signature(store_command_layout(c))),
            "o_store_done": Out(stream.Signature(done_layout(c))),
            "dbg_spad": In(spad_port_signature(c)),
            "dbg_acc": In(acc_port_signature(c)),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
            "op_error": Out(1),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        m.submodules.dma = dma = DmaEngine(c)
        m.submodules.spad = spad = Scratchpad(c, ports=3)
        m.submodules.acc = acc = Accumulator(c, ports=3)
        m.submodules.output = out = OutputPath(c)
        m.submodules.store = st = StoreUnit(c)
        wiring.connect(m, dma.bus, wiring.flipped(self.m_axi))
        wiring.connect(m, wiring.flipped(self.i_store), st.i_cmd)
        wiring.connect(m, st.o_done, wiring.flipped(self.o_store_done))
        wiring.connect(m, st.acc, acc.port0)
        wiring.connect(m, st.spad, spad.port0)
        wiring.connect(m, dma.acc, acc.port1)
        wiring.connect(m, dma.spad, spad.port1)
        wiring.connect(m, wiring.flipped(self.dbg_acc), acc.port2)
        wiring.connect(m, wiring.flipped(self.dbg_spad), spad.port2)
        wiring.connect(m, st.op_cmd, out.i_cmd)
        wiring.connect(m, st.op_row, out.i_row)
        wiring.connect(m, out.o_row, st.op_out)
        wiring.connect(m, st.op_param, out.i_param)
        wiring.connect(m, st.dma_cmd, dma.i_store)
        wiring.connect(m, st.dma_row, dma.i_store_row)
        wiring.connect(m, dma.o_store_done, st.dma_done)
        m.d.comb += [dma.window_base.eq(self.window_base), dma.window_size.eq(self.window_size),
                     dma.i_load.valid.eq(0), dma.o_load_done.ready.eq(1),
                     self.op_error.eq(out.error), out.error_clear.eq(0)]
        return m


STORE_SYSTEM = Top(StoreSystem, "tessera_store_system",
                   "the store path: store unit, output path, DMA and memories (test harness)")
