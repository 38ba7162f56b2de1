"""The AXI4-Lite register file, generated from the register map (``hw/registers.py``).

Every register and field of the map becomes a port named after it (lower case;
``<register>`` for a register of one field named as the register, else
``<register>_<field>``):

* ``r`` fields: an input, the value the design shows;
* ``rw`` fields: an output, the value held here (writes to a register marked
  ``idle_writes`` are ignored while ``running``);
* ``r/w1c`` fields: an input, and an output ``<port>_clear`` that pulses for one cycle when
  the host writes 1 to the field;
* ``w1p`` fields: an output that pulses for one cycle when the host writes 1 (reads 0);
* ``const`` fields: no port; the value is given at construction.

Timing: a read's address is taken when no read response is pending, its data follows the
cycle after; a write's address and data are taken together, its pulses are in that cycle,
its response follows the cycle after. An offset that is not in the map, or a write to a
register with nothing writable, answers SLVERR.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiLiteSignature, Resp
from .registers import LITE_ADDR_BITS, REGISTERS, Field, Register

__all__ = ["RegisterFile", "port_name"]


def port_name(reg: Register, field: Field) -> str:
    if len(reg.fields) == 1 and field.name == reg.name:
        return reg.name.lower()
    return f"{reg.name}_{field.name}".lower()


class RegisterFile(wiring.Component):
    """The registers of ``registers`` behind an AXI4-Lite subordinate port, ``bus``.

    Parameters
    ----------
    consts : dict
        The value of every ``const`` register, by register name.
    registers : list of Register
        The map (default: the accelerator's).

    Members
    -------
    bus : In(AxiLiteSignature(LITE_ADDR_BITS))
    running : In(1)
        Writes to ``idle_writes`` registers are ignored while it is high.
    <one port per field> : see the module's docstring.
    """

    def __init__(self, consts: dict, registers: list[Register] = REGISTERS):
        self._registers = registers
        self._consts = dict(consts)
        missing = [r.name for r in registers if any(f.access == "const" for f in r.fields)
                   and r.name not in self._consts]
        if missing:
            self._MustUse__silence = True   # never built
            raise ValueError(f"no value for the const register(s) {', '.join(missing)}")
        members = {"bus": In(AxiLiteSignature(LITE_ADDR_BITS)), "running": In(1)}
        for reg in registers:
            for f in reg.fields:
                name = port_name(reg, f)
                if f.access == "r":
                    members[name] = In(f.width)
                elif f.access == "rw":
                    members[name] = Out(f.width, init=f.init)
                elif f.access == "r/w1c":
                    members[name] = In(f.width)
                    members[f"{name}_clear"] = Out(1)
                elif f.access == "w1p":
                    members[name] = Out(1)
        super().__init__(members)

    def _read_value(self, reg: Register):
        """The 32 bits the host reads from ``reg``."""
        parts, at = [], 0
        for f in sorted(reg.fields, key=lambda f: f.lsb):
            if f.lsb > at:
                parts.append(Const(0, f.lsb - at))
            if f.access == "const":
                parts.append(Const(self._consts[reg.name] >> f.lsb, f.width))
            elif f.access == "w1p":
                parts.append(Const(0, f.width))
            else:
                parts.append(getattr(self, port_name(reg, f)))
            at = f.lsb + f.width
        if at < 32:
            parts.append(Const(0, 32 - at))
        return Cat(*parts)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        word = slice(2, LITE_ADDR_BITS)

        # Reads: the address when no response is pending; the data the cycle after.
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(Resp.OKAY), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[word]):
                for reg in self._registers:
                    with m.Case(reg.offset >> 2):
                        m.d.sync += bus.rdata.eq(self._read_value(reg))
                with m.Default():
                    m.d.sync += bus.rresp.eq(Resp.SLVERR)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)

        # Writes: address and data together; pulses now, the response the cycle after.
        wr = Signal()
        m.d.comb += [wr.eq(bus.awvalid & bus.wvalid & ~bus.bvalid),
                     bus.awready.eq(wr), bus.wready.eq(wr)]
        wdata = bus.wdata
        with m.If(wr):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(Resp.OKAY)]
            with m.Switch(bus.awaddr[word]):
                for reg in self._registers:
                    if not reg.writable:
                        continue
                    with m.Case(reg.offset >> 2):
                        self._write(m, reg, wdata)
                with m.Default():
                    m.d.sync += bus.bresp.eq(Resp.SLVERR)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        return m

    def _write(self, m: Module, reg: Register, wdata) -> None:
        allowed = ~self.running if reg.idle_writes else Const(1)
        for f in reg.fields:
            port = getattr(self, port_name(reg, f), None)
            value = wdata[f.lsb:f.lsb + f.width]
            if f.access == "rw":
                with m.If(allowed):
                    m.d.sync += port.eq(value)
            elif f.access == "r/w1c":
                m.d.comb += getattr(self, f"{port_name(reg, f)}_clear").eq(value.any())
            elif f.access == "w1p":
                m.d.comb += port.eq(value.any())
