"""A test harness in HDL: the DMA engine with the scratchpad and accumulator, a scratchpad
reader that feeds stores, and back-door ports into both memories for the testbench."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..hw.axi import Axi4Signature
from ..hw.config import TesseraConfig
from ..hw.dma import DmaEngine, command_layout, done_layout
from ..hw.generate import Top
from ..hw.memory import (
    Accumulator,
    RowReader,
    Scratchpad,
    acc_port_signature,
    spad_port_signature,
)

__all__ = ["DmaSystem", "DMA_SYSTEM"]


class DmaSystem(wiring.Component):
    """DMA engine + scratchpad + accumulator.

    Members
    -------
    m_axi : Out(Axi4Signature)
    i_load, o_load_done, i_store, o_store_done : streams
        Store commands read their rows from the scratchpad (``local_addr`` ..).
    dbg_spad, dbg_acc : In(MemoryPortSignature)
        Back-door ports for the testbench.
    window_base, window_size : In
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        super().__init__({
            "m_axi": Out(Axi4Signature(c.addr_bits, c.bus_bits)),
            "i_load": In(stream.Signature(command_layout(c))),
            "o_load_done": Out(stream.Signature(done_layout(c))),
            "i_store": In(stream.Signature(command_layout(c))),
            "o_store_done": Out(stream.Signature(done_layout(c))),
            "dbg_spad": In(spad_port_signature(c)),
            "dbg_acc": In(acc_port_signature(c)),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        m.submodules.dma = dma = DmaEngine(c)
        m.submodules.spad = spad = Scratchpad(c, ports=3)
        m.submodules.acc = acc = Accumulator(c, ports=2)
        wiring.connect(m, dma.bus, wiring.flipped(self.m_axi))
        wiring.connect(m, wiring.flipped(self.i_load), dma.i_load)
        wiring.connect(m, dma.o_load_done, wiring.flipped(self.o_load_done))
        wiring.connect(m, dma.o_store_done, wiring.flipped(self.o_store_done))
        wiring.connect(m, dma.spad, spad.port0)
        wiring.connect(m, dma.acc, acc.port0)
        wiring.connect(m, wiring.flipped(self.dbg_spad), spad.port2)
        wiring.connect(m, wiring.flipped(self.dbg_acc), acc.port1)
        m.d.comb += [dma.window_base.eq(self.window_base), dma.window_size.eq(self.window_size)]

        # Store feeder: forward the block to the DMA and read its rows from the scratchpad.
        m.submodules.rows = rows = RowReader(c)
        wiring.connect(m, rows.port, spad.port1)
        reading = Signal()
        for name in ("dram_addr", "stride", "rows", "row_bytes"):
            m.d.comb += getattr(dma.i_store.payload, name).eq(getattr(self.i_store.payload, name))
        m.d.comb += [
            dma.i_store.valid.eq(self.i_store.valid & ~reading),
            self.i_store.ready.eq(dma.i_store.ready & ~reading),
            rows.start.eq(self.i_store.valid & self.i_store.ready),
            rows.addr.eq(self.i_store.payload.local_addr),
            rows.count.eq(self.i_store.payload.rows),
            dma.i_store_row.valid.eq(rows.o_row.valid),
            dma.i_store_row.payload.eq(rows.o_row.payload.row),
            rows.o_row.ready.eq(dma.i_store_row.ready),
        ]
        with m.If(rows.start):
            m.d.sync += reading.eq(1)
        with m.Elif(~rows.busy & ~rows.o_row.valid):
            m.d.sync += reading.eq(0)
        return m


DMA_SYSTEM = Top(DmaSystem, "tessera_dma_system",
                 "the DMA engine with scratchpad and accumulator (test harness)")
