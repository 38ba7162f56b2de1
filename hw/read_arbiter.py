"""Two AXI4 read managers on one read channel, with the data returned in order.

The accelerator shares its AXI4 master between the command fetcher and the DMA engine,
and the DMA engine shares its read channel between its two readers: both use this
arbiter. It keeps a FIFO of which manager owns each burst in flight, so R beats (which
the subordinate returns in request order, one ID) go to the burst's owner without looking
at IDs.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi import Axi4Signature
from .skid import SkidBuffer

__all__ = ["READ_MEMBERS", "ReadArbiter", "read_signature", "connect_members",
           "connect_through_ar_slice"]

#: The read channels' members of :class:`~.axi.Axi4Signature`.
READ_MEMBERS = ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "arready",
                "rid", "rdata", "rresp", "rlast", "rvalid", "rready")
_AR_PAYLOAD = ("arid", "araddr", "arlen", "arsize", "arburst")
_R_PAYLOAD = ("rid", "rdata", "rresp", "rlast")


def read_signature(addr_bits: int, data_bits: int, id_bits: int = 4) -> wiring.Signature:
    """The AR and R channels of an AXI4 manager."""
    full = Axi4Signature(addr_bits, data_bits, id_bits).members
    return wiring.Signature({name: full[name] for name in READ_MEMBERS})


def connect_members(m: Module, manager, subordinate, names=READ_MEMBERS) -> None:
    """Join the members ``names`` of a manager's flat ports (e.g. a DMA reader's ``ar*``
    and ``r*`` signals) to a subordinate's: each manager output drives the subordinate's
    input of the same name, and the other way round."""
    flows = Axi4Signature(8, 8).members
    for name in names:
        if flows[name].flow == Out:
            m.d.comb += getattr(subordinate, name).eq(getattr(manager, name))
        else:
            m.d.comb += getattr(manager, name).eq(getattr(subordinate, name))


def connect_through_ar_slice(m: Module, manager, subordinate, name: str) -> None:
    """:func:`connect_members` for the read channels, with a register slice
    (:class:`~.skid.SkidBuffer`) on the address channel: the manager's ``arready`` and the
    subordinate's ``arvalid`` and address come from flip-flops, so no path runs from one
    side's request logic into the other's. A request waits a cycle more; the R channel is
    joined as it is."""
    layout = data.StructLayout({n: len(getattr(manager, n)) for n in _AR_PAYLOAD})
    m.submodules[name] = ar = SkidBuffer(layout)
    m.d.comb += [ar.i.valid.eq(manager.arvalid), manager.arready.eq(ar.i.ready),
                 subordinate.arvalid.eq(ar.o.valid), ar.o.ready.eq(subordinate.arready)]
    for n in _AR_PAYLOAD:
        m.d.comb += [ar.i.payload[n].eq(getattr(manager, n)),
                     getattr(subordinate, n).eq(ar.o.payload[n])]
    connect_members(m, manager, subordinate, ("rid", "rdata", "rresp", "rlast", "rvalid",
                                              "rready"))


class ReadArbiter(wiring.Component):
    """Two AXI4 read managers, ``m0`` and ``m1``, on one read channel, ``bus``.

    When the address channel is free, ``choose`` says which manager's request goes out
    (0 or 1); a request waiting on ``bus`` keeps its manager until it is taken, as AXI
    requires (the managers hold their requests, so the choice is stable). R beats go to
    the owner of the oldest burst in flight; at most ``depth`` bursts are in flight.

    Parameters
    ----------
    addr_bits, data_bits, id_bits : int
        The channels' widths.
    depth : int
        Bursts in flight (requests are held back beyond that).

    Members
    -------
    m0, m1 : In(read_signature(...))
        The managers' ports (this side is their subordinate).
    choose : In(1)
        The manager to serve when the address channel is free.
    bus : Out(read_signature(...))
        The shared read channel.
    """

    def __init__(self, addr_bits: int, data_bits: int, depth: int, id_bits: int = 4):
        if not isinstance(depth, int) or depth < 1:
            self._MustUse__silence = True   # never built
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self._depth = depth
        sig = read_signature(addr_bits, data_bits, id_bits)
        super().__init__({"m0": In(sig), "m1": In(sig), "choose": In(1), "bus": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        bus, managers = self.bus, (self.m0, self.m1)
        # The owners' head is a register (SyncFIFOBuffered): the R beats' routing starts
        # from flip-flops, not a LUT RAM read behind the FIFO's level. A burst's owner is
        # readable two cycles after its AR; a beat sooner than that waits (rready low).
        m.submodules.owner = owner = fifo.SyncFIFOBuffered(width=1, depth=self._depth)
        hold, held, pick = Signal(), Signal(), Signal()
        m.d.comb += pick.eq(Mux(hold, held, self.choose))
        m.d.sync += [hold.eq(bus.arvalid & ~bus.arready), held.eq(pick)]
        for name in _AR_PAYLOAD:
            m.d.comb += getattr(bus, name).eq(Mux(pick, getattr(self.m1, name),
                                                  getattr(self.m0, name)))
        m.d.comb += [bus.arvalid.eq(owner.w_rdy & Mux(pick, self.m1.arvalid, self.m0.arvalid)),
                     owner.w_en.eq(bus.arvalid & bus.arready), owner.w_data.eq(pick)]
        to = owner.r_data[0]
        for i, mgr in enumerate(managers):
            m.d.comb += [mgr.arready.eq(owner.w_rdy & bus.arready & (pick == i)),
                         mgr.rvalid.eq(bus.rvalid & owner.r_rdy & (to == i))]
            m.d.comb += [getattr(mgr, name).eq(getattr(bus, name)) for name in _R_PAYLOAD]
        m.d.comb += [bus.rready.eq(owner.r_rdy & Mux(to, self.m1.rready, self.m0.rready)),
                     owner.r_en.eq(bus.rvalid & bus.rready & bus.rlast)]
        return m
