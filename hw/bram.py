"""Main memory in block RAM: an AXI4 subordinate for the accelerator's ``m_axi`` master and
a second port for a host, over one :class:`amaranth.lib.memory.Memory` of bus-wide words.

* The memory answers addresses ``base .. base + size_bytes - 1``. A beat outside that
  window reads zeros with RRESP = DECERR, or is not written and its burst's BRESP is
  DECERR. A burst that is not INCR of full bus-width beats answers SLVERR (it is read as
  zeros, not written): the accelerator issues only those.
* Bursts are served one at a time per direction, a beat per cycle: an AR or AW handshake
  is taken when the previous burst of its direction has issued its last beat (reads) or
  been answered (writes). A read beat is read from the memory one cycle before it is
  offered; a small FIFO keeps the read side streaming under RREADY backpressure. Byte
  strobes are the memory's write enables. The write response comes the cycle after the
  last beat; WLAST is not checked (AWLEN ends a burst).
* The memory has one read port and one write port (a simple dual-port RAM, as the ECP5's
  DP16KD blocks build it). The host port shares both and has priority: in a cycle the host
  reads, the AXI read side issues no beat; in a cycle it writes, WREADY is low. A host
  (a UART link) asks at most once per received byte, so the accelerator loses a cycle per
  host byte at most, and the host never waits: its request is always taken at once.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, Axi4Signature, Resp
from .config import TesseraConfig

__all__ = ["AxiBlockRam", "HostPortSignature", "READ_LATENCY_CYCLES", "RFIFO_DEPTH"]

#: An AR handshake in cycle t has its first R beat valid in cycle t + 2 (no host reads).
READ_LATENCY_CYCLES = 2
#: R beats buffered.
RFIFO_DEPTH = 4


class HostPortSignature(wiring.Signature):
    """The host's port (the requester's view): ``req`` (stream: a word ``addr``, byte
    write enables ``mask``, ``data``; a mask of 0 is a read) and ``resp`` (``valid`` and
    ``data``, the cycle after a read was taken)."""

    def __init__(self, words: int, bus_bits: int):
        self.words, self.bus_bits = words, bus_bits
        super().__init__({
            "req": Out(stream.Signature(data.StructLayout({
                "addr": range(words), "mask": bus_bits // 8, "data": bus_bits}))),
            "resp": In(data.StructLayout({"valid": 1, "data": bus_bits})),
        })


class AxiBlockRam(wiring.Component):
    """Block-RAM main memory behind AXI4, with a host port (see the module docstring).

    Parameters
    ----------
    config : TesseraConfig
        Gives the AXI4 address and data widths (the accelerator's).
    size_bytes : int
        A positive multiple of the bus width in bytes.
    base : int
        Address of the first byte; aligned to ``size_bytes`` rounded up to a power of two.

    Members
    -------
    s_axi : In(Axi4Signature)
        For the accelerator's ``m_axi``.
    host : In(HostPortSignature)
        For a host link.
    """

    def __init__(self, config: TesseraConfig, size_bytes: int, base: int):
        c = config
        if not isinstance(size_bytes, int) or size_bytes <= 0 or size_bytes % c.bus_bytes:
            self._MustUse__silence = True   # never built
            raise ValueError(f"size_bytes must be a positive multiple of the bus width "
                             f"({c.bus_bytes} bytes), not {size_bytes!r}")
        span = 1 << (size_bytes - 1).bit_length()
        if not isinstance(base, int) or base < 0 or base % span or \
                base + size_bytes > 1 << c.addr_bits:
            self._MustUse__silence = True
            raise ValueError(f"base must be a multiple of {span:#x} with the memory inside "
                             f"the {c.addr_bits}-bit address space, not {base!r}")
        self._config = config
        self.size_bytes, self.base = size_bytes, base
        self.words = size_bytes // c.bus_bytes
        super().__init__({
            "s_axi": In(Axi4Signature(c.addr_bits, c.bus_bits)),
            "host": In(HostPortSignature(self.words, c.bus_bits)),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=c.bus_bits, depth=self.words, init=[])
        rd = mem.read_port()
        wr = mem.write_port(granularity=8)
        host, bus = self.host, self.s_axi
        shift = (c.bus_bytes - 1).bit_length()
        size_code = shift                           # AxSIZE of a full-width beat

        def inside(addr):
            return (addr >= self.base) & (addr < self.base + self.size_bytes)

        def word(addr):
            return (addr - self.base)[shift:]

        # --- The host: always served at once. --------------------------------------------
        host_read = host.req.valid & (host.req.payload.mask == 0)
        host_write = host.req.valid & (host.req.payload.mask != 0)
        m.d.comb += host.req.ready.eq(1)
        m.d.sync += host.resp.valid.eq(host_read)
        m.d.comb += host.resp.data.eq(rd.data)

        # --- Writes. ---------------------------------------------------------------------
        w_active, b_valid = Signal(), Signal()
        w_addr = Signal(c.addr_bits)
        w_left = Signal(8)
        w_bad, w_decerr = Signal(), Signal()
        m.d.comb += bus.awready.eq(~w_active & ~b_valid)
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [w_active.eq(1), w_addr.eq(bus.awaddr), w_left.eq(bus.awlen),
                         w_bad.eq((bus.awburst != BURST_INCR) | (bus.awsize != size_code)),
                         w_decerr.eq(0), b_valid.eq(0)]
        m.d.comb += bus.wready.eq(w_active & ~host_write)
        beat_ok = Signal()
        m.d.comb += beat_ok.eq(inside(w_addr) & ~w_bad)
        with m.If(host_write):
            m.d.comb += [wr.addr.eq(host.req.payload.addr), wr.data.eq(host.req.payload.data),
                         wr.en.eq(host.req.payload.mask)]
        with m.Elif(bus.wvalid & bus.wready & beat_ok):
            m.d.comb += [wr.addr.eq(word(w_addr)), wr.data.eq(bus.wdata),
                         wr.en.eq(bus.wstrb)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_addr.eq(w_addr + c.bus_bytes), w_left.eq(w_left - 1)]
            with m.If(~inside(w_addr)):
                m.d.sync += w_decerr.eq(1)
            with m.If(w_left == 0):
                m.d.sync += [w_active.eq(0), b_valid.eq(1)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += bus.bid.eq(bus.awid)
        m.d.comb += [bus.bvalid.eq(b_valid),
                     bus.bresp.eq(Mux(w_bad, Resp.SLVERR, Mux(w_decerr, Resp.DECERR,
                                                              Resp.OKAY)))]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += b_valid.eq(0)

        # --- Reads: issue a beat, its data the next cycle into the FIFO. -----------------
        beat = data.StructLayout({"data": c.bus_bits, "resp": 2, "last": 1,
                                  "id": len(bus.rid)})
        m.submodules.rfifo = rfifo = fifo.SyncFIFO(width=beat.size, depth=RFIFO_DEPTH)
        r_active = Signal()
        r_addr = Signal(c.addr_bits)
        r_left = Signal(8)
        r_id = Signal(len(bus.rid))
        r_bad = Signal()
        m.d.comb += bus.arready.eq(~r_active)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_active.eq(1), r_addr.eq(bus.araddr), r_left.eq(bus.arlen),
                         r_id.eq(bus.arid),
                         r_bad.eq((bus.arburst != BURST_INCR) | (bus.arsize != size_code))]
        issued = Signal()                               # a beat read last cycle
        issue = Signal()
        m.d.comb += issue.eq(r_active & ~host_read & (rfifo.level + issued < RFIFO_DEPTH))
        m.d.comb += rd.addr.eq(Mux(host_read, host.req.payload.addr, word(r_addr)))
        pending = Signal(beat)
        m.d.sync += issued.eq(issue)
        with m.If(issue):
            m.d.sync += [r_addr.eq(r_addr + c.bus_bytes), r_left.eq(r_left - 1),
                         pending.resp.eq(Mux(r_bad, Resp.SLVERR,
                                             Mux(inside(r_addr), Resp.OKAY, Resp.DECERR))),
                         pending.last.eq(r_left == 0), pending.id.eq(r_id)]
            with m.If(r_left == 0):
                m.d.sync += r_active.eq(0)
        answered = Signal(beat)
        m.d.comb += [answered.eq(pending),
                     answered.data.eq(Mux(pending.resp == Resp.OKAY, rd.data, 0)),
                     rfifo.w_data.eq(answered), rfifo.w_en.eq(issued)]
        out = Signal(beat)
        m.d.comb += [out.eq(rfifo.r_data), bus.rvalid.eq(rfifo.r_rdy),
                     bus.rdata.eq(out.data), bus.rresp.eq(out.resp), bus.rlast.eq(out.last),
                     bus.rid.eq(out.id), rfifo.r_en.eq(bus.rready)]
        return m
