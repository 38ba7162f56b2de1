"""The simulated system: the accelerator with its AXI4 master on the Verilog main-memory
model (``sim/hdl/tessera_axi_mem.v``), so a run needs no Python on the per-cycle path.

The testbench (``sim/tb_accel.py``) drives only the AXI4-Lite registers (a few dozen
transactions a run), the memory model's back door (whole images through files) and the
accelerator's debug ports (scratchpad and accumulator rows, after a run).
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hw.accelerator import Accelerator
from ..hw.axi import AxiLiteSignature
from ..hw.config import TesseraConfig
from ..hw.generate import Top
from ..hw.memory import acc_port_signature, spad_port_signature
from ..hw.registers import LITE_ADDR_BITS

__all__ = ["AccelSystem", "ACCEL_SYSTEM", "MEM_BASE", "MEM_BYTES", "MEM_LATENCY", "mem_bytes"]

#: Where main memory is, how big, and its latency (the benchmarks' 100 cycles).
MEM_BASE = 0x4000_0000
MEM_LATENCY = 100
MEM_BYTES = 64 << 20
MEM_MODEL = Path(__file__).with_name("hdl") / "tessera_axi_mem.v"


def mem_bytes(config: TesseraConfig) -> int:
    """Main memory of the simulated system: 64 MiB (a BERT-base layer's weights and
    activations fit), 4 MiB for configurations with a scratchpad of 64 KiB or less (the
    small ones the tests run on Icarus, where a big array costs start-up time)."""
    return MEM_BYTES if config.spad_kib > 64 else 4 << 20


class AccelSystem(wiring.Component):
    """Accelerator + main-memory model.

    Members
    -------
    s_axil : In(AxiLiteSignature)
    irq : Out(1)
    dbg_spad, dbg_acc : In(MemoryPortSignature)
    bd_load, bd_dump, bd_dump_first, bd_dump_last : In
        The memory model's back door (see its header).
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        super().__init__({
            "s_axil": In(AxiLiteSignature(LITE_ADDR_BITS)),
            "irq": Out(1),
            "dbg_spad": In(spad_port_signature(c)),
            "dbg_acc": In(acc_port_signature(c)),
            "bd_load": In(1),
            "bd_dump": In(1),
            "bd_dump_first": In(32),
            "bd_dump_last": In(32),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        m.submodules.accel = accel = Accelerator(c, debug_ports=True)
        wiring.connect(m, wiring.flipped(self.s_axil), accel.s_axil)
        wiring.connect(m, wiring.flipped(self.dbg_spad), accel.dbg_spad)
        wiring.connect(m, wiring.flipped(self.dbg_acc), accel.dbg_acc)
        m.d.comb += self.irq.eq(accel.irq)
        bus = accel.m_axi
        ports = {}
        for name, member in bus.signature.members.items():
            direction = "i" if member.flow == Out else "o"
            ports[f"{direction}_s_axi__{name}"] = getattr(bus, name)
        m.submodules.mem = Instance(
            "tessera_axi_mem",
            p_ADDR_BITS=c.addr_bits, p_DATA_BITS=c.bus_bits, p_ID_BITS=bus.signature.id_bits,
            p_BASE=MEM_BASE, p_WORDS=mem_bytes(c) // c.bus_bytes, p_LATENCY=MEM_LATENCY,
            p_MAX_BURSTS=32,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_bd_load=self.bd_load, i_bd_dump=self.bd_dump,
            i_bd_dump_first=self.bd_dump_first, i_bd_dump_last=self.bd_dump_last, **ports)
        return m


ACCEL_SYSTEM = Top(AccelSystem, "tessera_accel_system",
                   "the accelerator on a main-memory model (simulation harness)",
                   sources=(MEM_MODEL,))
