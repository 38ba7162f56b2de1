"""AXI4 and AXI4-Lite interface signatures (the manager's view; flip for a subordinate).

Port names follow the AXI specification, so that in the generated Verilog a master port
``m_axi`` becomes ``m_axi__awaddr``, ``m_axi__awvalid`` and so on, which bus models find
with the prefix ``m_axi_``.
"""

from __future__ import annotations

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Axi4Signature", "AxiLiteSignature", "Resp", "BURST_INCR", "MAX_BURST_BEATS",
           "BOUNDARY_BYTES"]

BURST_INCR = 0b01
MAX_BURST_BEATS = 256
BOUNDARY_BYTES = 4096  # an INCR burst must not cross a 4 KiB boundary


class Resp(enum.Enum, shape=2):
    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class Axi4Signature(wiring.Signature):
    """AXI4 manager: ``addr_bits`` addresses, ``data_bits`` data, ``id_bits`` IDs."""

    def __init__(self, addr_bits: int, data_bits: int, id_bits: int = 4):
        if data_bits not in (8, 16, 32, 64, 128, 256, 512, 1024):
            raise ValueError(f"data_bits must be a power of two from 8 to 1024, not {data_bits}")
        self.addr_bits, self.data_bits, self.id_bits = addr_bits, data_bits, id_bits
        super().__init__({
            "awid": Out(id_bits), "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_bits), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_bits), "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite manager with ``addr_bits`` addresses and 32-bit data."""

    def __init__(self, addr_bits: int, data_bits: int = 32):
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__({
            "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })
