"""Banked on-chip memories: the scratchpad (int8 rows) and the accumulator (int32 rows).

Both are :class:`BankedMemory`: ``banks`` single-port SRAM banks, selected by the high bits
of the row address (bank ``b`` holds rows ``b * rows_per_bank ..``), so the driver decides
which data shares a bank: with double buffering the DMA fills one bank while the matrix
unit reads another. Each requester has its own port; in every cycle each bank serves one
request, chosen round-robin among the ports that want it. A port whose request is not
served sees ``req.ready`` low and keeps it up: conflicts cost cycles, never data.

Timing (fixed, for every port): a request accepted in cycle ``t`` has its read data on
``resp.data`` with ``resp.valid`` high in cycle ``t + 1``; a write (or accumulate) accepted
in cycle ``t`` is written at the end of cycle ``t + 1``. Reads see every write accepted
before them, including one accepted in the previous cycle (the read port is transparent to
the bank's write port). The accumulator's accumulate writes are read-modify-write in the
same two cycles: the row read in cycle ``t`` plus the request's data is written in ``t+1``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig

__all__ = ["MemoryPortSignature", "BankedMemory", "Scratchpad", "Accumulator",
           "READ_LATENCY_CYCLES", "spad_port_signature", "acc_port_signature", "RowReader",
           "ROWS_BITS"]

#: Cycles from an accepted read request to its data.
READ_LATENCY_CYCLES = 1
#: Width of a row count in commands (up to 65,535 rows).
ROWS_BITS = 16


def _req_layout(depth: int, row_shape, accumulate: bool) -> data.StructLayout:
    fields = {"addr": range(depth), "write": 1, "data": row_shape}
    if accumulate:
        fields["accumulate"] = 1
    return data.StructLayout(fields)


class MemoryPortSignature(wiring.Signature):
    """One requester's port: ``req`` (stream: addr, write, data[, accumulate]) and ``resp``
    (``valid`` and ``data``, one cycle after the read request was accepted; no ready)."""

    def __init__(self, depth: int, row_shape, accumulate: bool = False):
        self.depth = depth
        self.row_shape = row_shape
        self.accumulate = accumulate
        super().__init__({
            "req": Out(stream.Signature(_req_layout(depth, row_shape, accumulate))),
            "resp": In(data.StructLayout({"valid": 1, "data": row_shape})),
        })


class BankedMemory(wiring.Component):
    """``depth`` rows of ``row_shape`` in ``banks`` banks, shared by ``ports`` requesters.

    Parameters
    ----------
    depth : int
        Rows in all; a multiple of ``banks``.
    banks : int
        A power of two.
    row_shape : ArrayLayout
        The row: lanes of a signed shape.
    ports : int
        Number of requester ports (``port0`` .. ``port{n-1}``).
    accumulate : bool
        Writes may add to the stored row (lane by lane, wrapping) instead of replacing it.

    Members
    -------
    port{i} : In(MemoryPortSignature)
    """

    def __init__(self, depth: int, banks: int, row_shape: data.ArrayLayout, ports: int,
                 accumulate: bool = False):
        error = None
        if banks <= 0 or banks & (banks - 1):
            error = f"banks must be a power of two, not {banks}"
        elif depth <= 0 or depth % banks:
            error = f"depth must be a positive multiple of banks ({banks}), not {depth}"
        elif ports < 1:
            error = f"ports must be at least 1, not {ports}"
        if error:
            self._MustUse__silence = True  # never built: no "created but never used" warning
            raise ValueError(error)
        self.depth = depth
        self.banks = banks
        self.rows_per_bank = depth // banks
        self.row_shape = row_shape
        self.n_ports = ports
        self.accumulate = accumulate
        sig = MemoryPortSignature(depth, row_shape, accumulate)
        super().__init__({f"port{i}": In(sig) for i in range(ports)})

    def port(self, i: int):
        return getattr(self, f"port{i}")

    def elaborate(self, platform):
        m = Module()
        n, nb = self.n_ports, self.banks
        bank_bits = (nb - 1).bit_length()
        row_bits = (self.rows_per_bank - 1).bit_length()
        ports = [self.port(i) for i in range(n)]

        # Which bank each port wants.
        want = [Signal(nb, name=f"want{i}") for i in range(n)]
        for i, p in enumerate(ports):
            bank = p.req.payload.addr[row_bits:row_bits + bank_bits] if bank_bits else 0
            m.d.comb += want[i].eq(Mux(p.req.valid, 1 << bank if bank_bits else 1, 0))

        granted_any = [Signal(name=f"granted{i}") for i in range(n)]
        # Per port: what it asked for in the previous cycle, to route the read data back.
        resp_bank = [Signal(range(max(nb, 2)), name=f"resp_bank{i}") for i in range(n)]
        resp_read = [Signal(name=f"resp_read{i}") for i in range(n)]
        bank_rdata = []

        for b in range(nb):
            mem = memory.Memory(shape=self.row_shape, depth=self.rows_per_bank, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            bank_rdata.append(rp.data)

            # Round-robin grant among the ports that want this bank.
            req = Signal(n, name=f"bank{b}_req")
            m.d.comb += req.eq(Cat(w[b] for w in want))
            last = Signal(range(max(n, 2)), name=f"bank{b}_last")
            grant = Signal(n, name=f"bank{b}_grant")
            with m.Switch(last):
                for start in range(n):
                    # Priority in round-robin order, starting after the last winner.
                    sel = 0
                    for idx in reversed([(start + 1 + k) % n for k in range(n)]):
                        sel = Mux(req[idx], 1 << idx, sel)
                    with m.Case(start):
                        m.d.comb += grant.eq(sel)
            for i in range(n):
                with m.If(grant[i]):
                    m.d.sync += last.eq(i)

            payload = Signal(_req_layout(self.depth, self.row_shape, self.accumulate),
                             name=f"bank{b}_payload")
            m.d.comb += payload.eq(Mux(grant.any(), ports[0].req.payload, 0))
            for i in range(n):
                with m.If(grant[i]):
                    m.d.comb += payload.eq(ports[i].req.payload)
            m.d.comb += rp.addr.eq(payload.addr[:row_bits] if row_bits else 0)

            # Stage 1: write (or read-modify-write) one cycle after acceptance.
            s1_write = Signal(name=f"bank{b}_s1_write")
            s1_addr = Signal(max(row_bits, 1), name=f"bank{b}_s1_addr")
            s1_data = Signal(self.row_shape, name=f"bank{b}_s1_data")
            m.d.sync += [s1_write.eq(grant.any() & payload.write),
                         s1_addr.eq(payload.addr[:row_bits] if row_bits else 0),
                         s1_data.eq(payload.data)]
            if self.accumulate:
                s1_acc = Signal(name=f"bank{b}_s1_acc")
                m.d.sync += s1_acc.eq(payload.accumulate)
                summed = Signal(self.row_shape, name=f"bank{b}_sum")
                for lane in range(self.row_shape.length):
                    m.d.comb += summed[lane].eq(rp.data[lane] + s1_data[lane])
                wdata = Mux(s1_acc, summed, s1_data)
            else:
                wdata = s1_data
            m.d.comb += [wp.en.eq(Mux(s1_write, (1 << len(wp.en)) - 1, 0)),
                         wp.addr.eq(s1_addr), wp.data.eq(wdata)]

            for i in range(n):
                with m.If(grant[i]):
                    m.d.comb += granted_any[i].eq(1)
                    m.d.sync += resp_bank[i].eq(b)

        for i, p in enumerate(ports):
            m.d.comb += p.req.ready.eq(granted_any[i])
            m.d.sync += resp_read[i].eq(granted_any[i] & ~p.req.payload.write)
            rdata = bank_rdata[0]
            for b in range(1, nb):
                rdata = Mux(resp_bank[i] == b, bank_rdata[b], rdata)
            m.d.comb += [p.resp.valid.eq(resp_read[i]), p.resp.data.eq(rdata)]
        return m


def spad_port_signature(config: TesseraConfig) -> MemoryPortSignature:
    """A requester's port on the scratchpad."""
    return MemoryPortSignature(config.spad_rows, data.ArrayLayout(signed(8), config.spad_row_bytes))


def acc_port_signature(config: TesseraConfig) -> MemoryPortSignature:
    """A requester's port on the accumulator."""
    return MemoryPortSignature(config.acc_rows,
                               data.ArrayLayout(signed(config.acc_bits), config.cols),
                               accumulate=True)


class Scratchpad(BankedMemory):
    """The scratchpad: ``config.spad_rows`` rows of ``spad_row_bytes`` signed bytes."""

    def __init__(self, config: TesseraConfig, ports: int):
        self.config = config
        super().__init__(config.spad_rows, config.spad_banks,
                         data.ArrayLayout(signed(8), config.spad_row_bytes), ports)


class Accumulator(BankedMemory):
    """The accumulator: ``config.acc_rows`` rows of ``cols`` signed ``acc_bits`` lanes;
    writes replace a row or add to it."""

    def __init__(self, config: TesseraConfig, ports: int):
        self.config = config
        super().__init__(config.acc_rows, config.acc_banks,
                         data.ArrayLayout(signed(config.acc_bits), config.cols), ports,
                         accumulate=True)


class RowReader(wiring.Component):
    """Reads ``count`` consecutive scratchpad rows from ``addr`` (on ``start``) into a small
    FIFO, issuing a read only while the FIFO has room for its answer (read responses have
    no backpressure); ``last`` marks the final row. ``busy`` while reads remain to issue;
    ``pending`` while any read's answer has not yet reached ``o_row`` (issued or not)."""

    def __init__(self, config: TesseraConfig):
        self._config = config
        self.row_shape = data.ArrayLayout(signed(8), config.spad_row_bytes)
        self.out_layout = data.StructLayout({"row": self.row_shape, "last": 1})
        super().__init__({
            "start": In(1),
            "addr": In(range(config.spad_rows)),
            "count": In(ROWS_BITS),
            "busy": Out(1),
            "pending": Out(1),
            "port": Out(spad_port_signature(config)),
            "o_row": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = 4
        m.submodules.q = q = fifo.SyncFIFO(width=self.out_layout.size, depth=depth)
        addr = Signal.like(self.addr)
        left = Signal(ROWS_BITS)
        in_flight = Signal(range(depth + 1))
        with m.If(self.start):
            m.d.sync += [addr.eq(self.addr), left.eq(self.count)]
        req = self.port.req
        m.d.comb += [req.valid.eq((left != 0) & (q.level + in_flight < depth)),
                     req.payload.addr.eq(addr), req.payload.write.eq(0),
                     self.busy.eq(left != 0)]
        issued = req.valid & req.ready
        last = Signal()
        with m.If(issued):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), last.eq(left == 1)]
        m.d.sync += in_flight.eq(in_flight + issued - self.port.resp.valid)
        m.d.comb += self.pending.eq((left != 0) | (in_flight != 0))
        entry = Signal(self.out_layout)
        m.d.comb += [entry.row.eq(self.port.resp.data), entry.last.eq(last),
                     q.w_data.eq(entry), q.w_en.eq(self.port.resp.valid),
                     self.o_row.valid.eq(q.r_rdy), self.o_row.payload.eq(q.r_data),
                     q.r_en.eq(self.o_row.ready)]
        return m
