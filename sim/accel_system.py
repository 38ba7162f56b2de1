"""The simulated system: the accelerator with its AXI4 master on the Verilog main-memory
model (``sim/hdl/tessera_axi_mem.v``), so a run needs no Python on the per-cycle path.

The testbench (``sim/tb_accel.py``) drives only register accesses (a few dozen a run, as
AXI4-Lite transactions made here), the memory model's back door (whole images through
files) and row reads of the scratchpad and accumulator (after a run).
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Signal,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hw.accelerator import Accelerator
from ..hw.config import TesseraConfig
from ..hw.generate import Top
from ..hw.registers import LITE_ADDR_BITS, MEM_BASE

__all__ = ["AccelSystem", "ACCEL_SYSTEM", "MEM_BASE", "MEM_BYTES", "MEM_LATENCY", "mem_bytes",
           "CHECKERS"]

#: How big main memory is (at MEM_BASE), and its latency (the benchmarks' 100 cycles).
MEM_LATENCY = 100
MEM_BYTES = 256 << 20
MEM_MODEL = Path(__file__).with_name("hdl") / "tessera_axi_mem.v"
#: The protocol checkers of the accelerator's AXI4 master and AXI4-Lite register port.
CHECKERS = (Path(__file__).with_name("hdl") / "tessera_axi_checker.v",
            Path(__file__).with_name("hdl") / "tessera_axil_checker.v")


def mem_bytes(config: TesseraConfig) -> int:
    """Main memory of the simulated system: 256 MiB (a whole BERT-base encoder's or GPT-2
    small's weights and activations fit, about 90 MiB each), 4 MiB for configurations with
    a scratchpad of 64 KiB or less and an array of at most 64 MACs (the small ones the
    tests run on Icarus, where a big array costs start-up time; a 16x16 array with a small
    scratchpad, as design-space sweeps make, still runs a BERT-base layer). The native
    path maps it lazily: untouched pages cost nothing."""
    return MEM_BYTES if config.spad_kib > 64 or config.rows * config.cols > 64 else 4 << 20


class AccelSystem(wiring.Component):
    """Accelerator + main-memory model, with a register-access port and a debug port that
    are flopped at the boundary, and the reset flopped too: no logic of the design depends
    combinationally on a top-level input. Verilator evaluates logic fed by a top-level
    input on every call of its model, whatever changed; flopping the ports doubled the
    simulation speed of the default configuration, and flopping the reset (which feeds the
    next-state logic of every register) tripled it again.

    Members
    -------
    host_req, host_write, host_addr, host_wdata : In
        A register access: set the fields, then toggle ``host_req``; the harness does the
        AXI4-Lite transaction and toggles ``host_ack``, with ``host_rdata`` and
        ``host_resp`` (0: OKAY).
    dbg_req, dbg_acc, dbg_addr : In
        Read a scratchpad (``dbg_acc`` = 0) or accumulator row: toggle ``dbg_req``; the row
        is on ``dbg_data`` when ``dbg_ack`` toggles.
    irq : Out(1)
    bd_load, bd_dump, bd_dump_first, bd_dump_last : In
        The memory model's back door (see its header).
    mem_latency, mem_gap : In
        The memory model's latency in cycles (0: :data:`MEM_LATENCY`) and its idle cycles
        after each beat (0: a beat per cycle, the bus's full bandwidth); set before a run.
    mem_cfg_we, mem_cfg_sel, mem_cfg_data : In
        The memory model's configuration port (faults and random timing, see its header
        and :mod:`~tessera.sim.bus_faults`): ``mem_cfg_data`` is written to register
        ``mem_cfg_sel`` in a cycle with ``mem_cfg_we`` high.
    chk_violation, chk_rule, chk_cycle, chk_addr : Out
        The protocol checkers' first violation (:mod:`~tessera.sim.axi_checker`): on
        either port, the earlier (the AXI4 master's in a tie); cleared by reset.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        row_bits = max(c.spad_row_bytes * 8, c.cols * c.acc_bits)
        super().__init__({
            "host_req": In(1), "host_write": In(1), "host_addr": In(LITE_ADDR_BITS),
            "host_wdata": In(32), "host_ack": Out(1), "host_rdata": Out(32),
            "host_resp": Out(2),
            "dbg_req": In(1), "dbg_acc": In(1), "dbg_addr": In(16), "dbg_ack": Out(1),
            "dbg_data": Out(row_bits),
            "irq": Out(1),
            "bd_load": In(1),
            "bd_dump": In(1),
            "bd_dump_first": In(32),
            "bd_dump_last": In(32),
            "mem_latency": In(16),
            "mem_gap": In(8),
            "mem_cfg_we": In(1),
            "mem_cfg_sel": In(5),
            "mem_cfg_data": In(64),
            "chk_violation": Out(1),
            "chk_rule": Out(8),
            "chk_cycle": Out(32),
            "chk_addr": Out(64),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        # Everything runs in a domain whose reset is the top-level reset flopped.
        m.domains.accel = domain = ClockDomain("accel", local=True)
        rst = Signal(init=1, reset_less=True)
        latency, gap = Signal(16, reset_less=True), Signal(8, reset_less=True)
        cfg_we, cfg_sel = Signal(reset_less=True), Signal(5, reset_less=True)
        cfg_data = Signal(64, reset_less=True)
        m.d.sync += [rst.eq(ResetSignal()), latency.eq(self.mem_latency),
                     gap.eq(self.mem_gap), cfg_we.eq(self.mem_cfg_we),
                     cfg_sel.eq(self.mem_cfg_sel), cfg_data.eq(self.mem_cfg_data)]
        m.d.comb += [domain.clk.eq(ClockSignal()), domain.rst.eq(rst)]
        accel = Accelerator(c, debug_ports=True)
        m.submodules.accel = DomainRenamer("accel")(accel)
        m.d.comb += self.irq.eq(accel.irq)
        self._host(m, accel.s_axil)
        self._debug(m, accel)
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
            i_clk=ClockSignal(), i_rst=rst, i_cfg_latency=latency, i_cfg_gap=gap,
            i_cfg_we=cfg_we, i_cfg_sel=cfg_sel, i_cfg_data=cfg_data,
            i_bd_load=self.bd_load, i_bd_dump=self.bd_dump,
            i_bd_dump_first=self.bd_dump_first, i_bd_dump_last=self.bd_dump_last, **ports)
        self._checkers(m, rst, bus, accel.s_axil)
        return m

    def _checkers(self, m: Module, rst, bus, lite) -> None:
        """The protocol checkers on both ports of the accelerator; the earlier violation."""
        c = self._config
        found = {}
        for name, module, port, params in (
                ("axi", "tessera_axi_checker", bus,
                 dict(p_ADDR_BITS=c.addr_bits, p_DATA_BITS=c.bus_bits,
                      p_ID_BITS=bus.signature.id_bits)),
                ("lite", "tessera_axil_checker", lite,
                 dict(p_ADDR_BITS=LITE_ADDR_BITS, p_DATA_BITS=32))):
            out = {k: Signal(w, name=f"{name}_chk_{k}")
                   for k, w in (("violation", 1), ("rule", 8), ("at_cycle", 32),
                                ("at_addr", 64))}
            watched = {f"i_{n}": getattr(port, n) for n in port.signature.members}
            m.submodules[f"{name}_checker"] = Instance(
                module, **params, i_clk=ClockSignal(), i_rst=rst, **watched,
                **{f"o_{k}": v for k, v in out.items()})
            found[name] = out
        a, lt = found["axi"], found["lite"]
        first = Signal()
        m.d.comb += first.eq(a["violation"] & (~lt["violation"]
                                                | (a["at_cycle"] <= lt["at_cycle"])))
        m.d.comb += [
            self.chk_violation.eq(a["violation"] | lt["violation"]),
            self.chk_rule.eq(Mux(first, a["rule"], lt["rule"])),
            self.chk_cycle.eq(Mux(first, a["at_cycle"], lt["at_cycle"])),
            self.chk_addr.eq(Mux(first, a["at_addr"], lt["at_addr"])),
        ]

    def _host(self, m: Module, lite) -> None:
        """An AXI4-Lite manager for one access at a time, from flopped inputs."""
        req, write = Signal(), Signal()
        addr, wdata = Signal(LITE_ADDR_BITS), Signal(32)
        seen = Signal()
        m.d.accel += [req.eq(self.host_req), write.eq(self.host_write),
                      addr.eq(self.host_addr), wdata.eq(self.host_wdata)]
        m.d.comb += [lite.awaddr.eq(addr), lite.araddr.eq(addr), lite.wdata.eq(wdata),
                     lite.wstrb.eq(0xF), lite.awprot.eq(0), lite.arprot.eq(0)]
        with m.FSM(domain="accel"):
            with m.State("IDLE"):
                with m.If(req != seen):
                    m.d.accel += seen.eq(req)
                    with m.If(write):
                        m.d.accel += [lite.awvalid.eq(1), lite.wvalid.eq(1)]
                        m.next = "WRITE"
                    with m.Else():
                        m.d.accel += lite.arvalid.eq(1)
                        m.next = "READ"
            with m.State("WRITE"):
                with m.If(lite.awready):
                    m.d.accel += [lite.awvalid.eq(0), lite.wvalid.eq(0), lite.bready.eq(1)]
                with m.If(lite.bvalid & lite.bready):
                    m.d.accel += [lite.bready.eq(0), self.host_resp.eq(lite.bresp),
                                  self.host_ack.eq(~self.host_ack)]
                    m.next = "IDLE"
            with m.State("READ"):
                with m.If(lite.arready):
                    m.d.accel += [lite.arvalid.eq(0), lite.rready.eq(1)]
                with m.If(lite.rvalid & lite.rready):
                    m.d.accel += [lite.rready.eq(0), self.host_resp.eq(lite.rresp),
                                  self.host_rdata.eq(lite.rdata),
                                  self.host_ack.eq(~self.host_ack)]
                    m.next = "IDLE"

    def _debug(self, m: Module, accel) -> None:
        """Row reads through the accelerator's debug ports, from flopped inputs."""
        req, which, addr, seen = Signal(), Signal(), Signal(16), Signal()
        m.d.accel += [req.eq(self.dbg_req), which.eq(self.dbg_acc), addr.eq(self.dbg_addr)]
        sp, ac = accel.dbg_spad.req, accel.dbg_acc.req
        m.d.comb += [sp.payload.addr.eq(addr), ac.payload.addr.eq(addr),
                     sp.payload.write.eq(0), ac.payload.write.eq(0)]
        with m.FSM(domain="accel"):
            with m.State("IDLE"):
                with m.If(req != seen):
                    m.d.accel += seen.eq(req)
                    with m.If(which):
                        m.d.accel += ac.valid.eq(1)
                    with m.Else():
                        m.d.accel += sp.valid.eq(1)
                    m.next = "ASK"
            with m.State("ASK"):
                with m.If((sp.valid & sp.ready) | (ac.valid & ac.ready)):
                    m.d.accel += [sp.valid.eq(0), ac.valid.eq(0)]
                    m.next = "ANSWER"
            with m.State("ANSWER"):
                with m.If(Mux(which, accel.dbg_acc.resp.valid, accel.dbg_spad.resp.valid)):
                    m.d.accel += [self.dbg_data.eq(Mux(which,
                                                       accel.dbg_acc.resp.data.as_value(),
                                                       accel.dbg_spad.resp.data.as_value())),
                                  self.dbg_ack.eq(~self.dbg_ack)]
                    m.next = "IDLE"


ACCEL_SYSTEM = Top(AccelSystem, "tessera_accel_system",
                   "the accelerator on a main-memory model (simulation harness)",
                   sources=(MEM_MODEL, *CHECKERS), ports_only=True)
