"""Banked on-chip memories: the scratchpad (int8 rows) and the accumulator (int32 rows).

Both are :class:`BankedMemory`: ``banks`` single-port SRAM banks, selected by the high bits
of the row address (bank ``b`` holds rows ``b * rows_per_bank ..``), so the driver decides
which data shares a bank: with double buffering the DMA fills one bank while the matrix
unit reads another. Each requester has its own port; in every cycle each bank serves one
request, chosen round-robin among the ports that want it. A port whose request is not
served sees ``req.ready`` low and keeps it up: conflicts cost cycles, never data.

Every port takes its requests into a buffer of two (``req.ready`` is a register: the
buffer is not full), and the banks are arbitrated among the buffers' heads (registers), so
no combinational path runs from one requester through the arbitration into another: each
unit's timing stays its own (``docs/physical.md``).

A granted request is registered (stage 0) before it reaches its bank, so the arbitration
and the choice of the payload have a cycle of their own and the bank's address comes from
flip-flops.

Timing, for every port: a request accepted in cycle ``t`` is granted in cycle ``t + 1`` at
the earliest (later when another port wins its bank, or while the port's earlier requests
wait); a request granted in cycle ``g`` reads its bank in ``g + 1`` (stage 0) and has its
read data on ``resp.data`` with ``resp.valid`` high in cycle ``g + 2``, and a write (or
accumulate) granted in ``g`` is written at the end of cycle ``g + 2``, with
``resp.written`` high in that cycle. Each port's
requests are served in the order they were accepted, and ``resp.tag`` gives back the
request's ``tag`` with its data (or with ``written``): what the requester needs to know of
the answer travels with the request. Reads see every write granted before them, including
one granted in the previous cycle (the read port is transparent to the bank's write port).
A requester that reports a write as done to others waits for its ``written``: until then
another port may still read the old row. The accumulator's accumulate writes are
read-modify-write in the same cycles: the row read in cycle ``g + 1`` plus the request's
data is written in ``g + 2``. An accumulator request with ``shift`` has its data's lanes
multiplied by ``2**DIGIT_SHIFT`` (wrapping) before they replace or add to the row: the high
digits of a wide activation's product (``hw/requant.py``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .requant import DIGIT_SHIFT
from .skid import SkidBuffer

__all__ = ["MemoryPortSignature", "BankedMemory", "Scratchpad", "Accumulator",
           "READ_LATENCY_CYCLES", "spad_port_signature", "acc_port_signature", "RowReader",
           "ROWS_BITS", "SPAD_TAG_BITS", "ACC_TAG_BITS"]

#: Cycles from an accepted read request to its data, at the least (no other port on its
#: bank, no earlier request of its port waiting).
READ_LATENCY_CYCLES = 3
#: Bits of ``tag`` on a scratchpad port (the row reader's last-row mark).
SPAD_TAG_BITS = 1
#: Bits of ``tag`` on an accumulator port (the store unit's: what the row read is; the
#: execute unit's: the write that finishes a command).
ACC_TAG_BITS = 5
#: Width of a row count in commands (up to 65,535 rows).
ROWS_BITS = 16


def _req_layout(depth: int, row_shape, accumulate: bool, tag_bits: int) -> data.StructLayout:
    fields = {"addr": range(depth), "write": 1, "data": row_shape}
    if accumulate:
        fields["accumulate"] = 1
        fields["shift"] = 1     # the data times 2**DIGIT_SHIFT (wrapping) before it is written
    if tag_bits:
        fields["tag"] = tag_bits
    return data.StructLayout(fields)


def _resp_layout(row_shape, tag_bits: int) -> data.StructLayout:
    fields = {"valid": 1, "data": row_shape, "written": 1}
    if tag_bits:
        fields["tag"] = tag_bits
    return data.StructLayout(fields)


class MemoryPortSignature(wiring.Signature):
    """One requester's port: ``req`` (stream: addr, write, data[, accumulate][, tag]) and
    ``resp`` (no ready): ``valid`` and ``data`` in the cycle after a read is granted,
    ``written`` in the cycle a write is written, with the request's ``tag``."""

    def __init__(self, depth: int, row_shape, accumulate: bool = False, tag_bits: int = 0):
        self.depth = depth
        self.row_shape = row_shape
        self.accumulate = accumulate
        self.tag_bits = tag_bits
        super().__init__({
            "req": Out(stream.Signature(_req_layout(depth, row_shape, accumulate, tag_bits))),
            "resp": In(_resp_layout(row_shape, tag_bits)),
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
    tag_bits : int
        Width of the tag each request carries back to its requester.

    Members
    -------
    port{i} : In(MemoryPortSignature)
    """

    def __init__(self, depth: int, banks: int, row_shape: data.ArrayLayout, ports: int,
                 accumulate: bool = False, tag_bits: int = 0):
        error = None
        if banks <= 0 or banks & (banks - 1):
            error = f"banks must be a power of two, not {banks}"
        elif depth <= 0 or depth % banks:
            error = f"depth must be a positive multiple of banks ({banks}), not {depth}"
        elif ports < 1:
            error = f"ports must be at least 1, not {ports}"
        elif tag_bits < 0:
            error = f"tag_bits must be at least 0, not {tag_bits}"
        if error:
            self._MustUse__silence = True  # never built: no "created but never used" warning
            raise ValueError(error)
        self.depth = depth
        self.banks = banks
        self.rows_per_bank = depth // banks
        self.row_shape = row_shape
        self.n_ports = ports
        self.accumulate = accumulate
        self.tag_bits = tag_bits
        sig = MemoryPortSignature(depth, row_shape, accumulate, tag_bits)
        super().__init__({f"port{i}": In(sig) for i in range(ports)})

    def port(self, i: int):
        return getattr(self, f"port{i}")

    def _buffer(self, m: Module, i: int, layout) -> tuple:
        """Port ``i``'s request buffer (a :class:`SkidBuffer` of two): its head's valid and
        payload (registers) and the head's ``pop``."""
        m.submodules[f"buffer{i}"] = buf = SkidBuffer(layout)
        wiring.connect(m, wiring.flipped(self.port(i).req), buf.i)
        pop = Signal(name=f"pop{i}")
        m.d.comb += buf.o.ready.eq(pop)
        return buf.o.valid, buf.o.payload, pop

    def elaborate(self, platform):
        m = Module()
        n, nb = self.n_ports, self.banks
        bank_bits = (nb - 1).bit_length()
        row_bits = (self.rows_per_bank - 1).bit_length()
        layout = _req_layout(self.depth, self.row_shape, self.accumulate, self.tag_bits)
        heads = [self._buffer(m, i, layout) for i in range(n)]

        # Which bank each port's head wants (registers only in front of the arbitration).
        want = [Signal(nb, name=f"want{i}") for i in range(n)]
        for i, (valid, head, _) in enumerate(heads):
            bank = head.addr[row_bits:row_bits + bank_bits] if bank_bits else 0
            m.d.comb += want[i].eq(Mux(valid, 1 << bank if bank_bits else 1, 0))

        granted_any = [Signal(name=f"granted{i}") for i in range(n)]
        # Per port: the bank of its request in stage 0, to route the answer back.
        s0_bank = [Signal(range(max(nb, 2)), name=f"s0_bank{i}") for i in range(n)]
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

            payload = Signal(layout, name=f"bank{b}_payload")
            m.d.comb += payload.eq(Mux(grant.any(), heads[0][1], 0))
            for i in range(n):
                with m.If(grant[i]):
                    m.d.comb += payload.eq(heads[i][1])

            # Stage 0: the granted request, registered (the arbitration and the payload's
            # choice take their own cycle; the bank's address comes from flip-flops).
            s0_valid = Signal(name=f"bank{b}_s0_valid")
            s0 = Signal(layout, name=f"bank{b}_s0")
            m.d.sync += s0_valid.eq(grant.any())
            with m.If(grant.any()):
                m.d.sync += s0.eq(payload)
            m.d.comb += rp.addr.eq(s0.addr[:row_bits] if row_bits else 0)

            # Stage 1: write (or read-modify-write) one cycle after the read.
            s1_write = Signal(name=f"bank{b}_s1_write")
            s1_addr = Signal(max(row_bits, 1), name=f"bank{b}_s1_addr")
            s1_data = Signal(self.row_shape, name=f"bank{b}_s1_data")
            m.d.sync += [s1_write.eq(s0_valid & s0.write),
                         s1_addr.eq(s0.addr[:row_bits] if row_bits else 0)]
            if self.accumulate:
                # A shifted write's lanes times 2**DIGIT_SHIFT: wiring, between registers.
                for lane in range(self.row_shape.length):
                    d = s0.data[lane]
                    m.d.sync += s1_data[lane].eq(
                        Mux(s0.shift, Cat(Const(0, DIGIT_SHIFT), d), d))
            else:
                m.d.sync += s1_data.eq(s0.data)
            if self.accumulate:
                s1_acc = Signal(name=f"bank{b}_s1_acc")
                m.d.sync += s1_acc.eq(s0.accumulate)
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
                    m.d.sync += s0_bank[i].eq(b)

        for i, (_, head, pop) in enumerate(heads):
            p = self.port(i)
            m.d.comb += pop.eq(granted_any[i])
            # What was granted, a cycle later (stage 0), and its answer a cycle after that.
            s0_read = Signal(name=f"s0_read{i}")
            s0_written = Signal(name=f"s0_written{i}")
            resp_bank = Signal.like(s0_bank[i], name=f"resp_bank{i}")
            resp_read = Signal(name=f"resp_read{i}")
            resp_written = Signal(name=f"resp_written{i}")
            m.d.sync += [s0_read.eq(granted_any[i] & ~head.write),
                         s0_written.eq(granted_any[i] & head.write),
                         resp_read.eq(s0_read), resp_written.eq(s0_written),
                         resp_bank.eq(s0_bank[i])]
            if self.tag_bits:
                s0_tag = Signal(self.tag_bits, name=f"s0_tag{i}")
                resp_tag = Signal(self.tag_bits, name=f"resp_tag{i}")
                with m.If(granted_any[i]):
                    m.d.sync += s0_tag.eq(head.tag)
                m.d.sync += resp_tag.eq(s0_tag)
                m.d.comb += p.resp.tag.eq(resp_tag)
            rdata = bank_rdata[0]
            for b in range(1, nb):
                rdata = Mux(resp_bank == b, bank_rdata[b], rdata)
            m.d.comb += [p.resp.valid.eq(resp_read), p.resp.written.eq(resp_written),
                         p.resp.data.eq(rdata)]
        return m


def spad_port_signature(config: TesseraConfig) -> MemoryPortSignature:
    """A requester's port on the scratchpad."""
    return MemoryPortSignature(config.spad_rows, data.ArrayLayout(signed(8), config.spad_row_bytes),
                               tag_bits=SPAD_TAG_BITS)


def acc_port_signature(config: TesseraConfig) -> MemoryPortSignature:
    """A requester's port on the accumulator."""
    return MemoryPortSignature(config.acc_rows,
                               data.ArrayLayout(signed(config.acc_bits), config.cols),
                               accumulate=True, tag_bits=ACC_TAG_BITS)


class Scratchpad(BankedMemory):
    """The scratchpad: ``config.spad_rows`` rows of ``spad_row_bytes`` signed bytes."""

    def __init__(self, config: TesseraConfig, ports: int):
        self.config = config
        super().__init__(config.spad_rows, config.spad_banks,
                         data.ArrayLayout(signed(8), config.spad_row_bytes), ports,
                         tag_bits=SPAD_TAG_BITS)


class Accumulator(BankedMemory):
    """The accumulator: ``config.acc_rows`` rows of ``cols`` signed ``acc_bits`` lanes;
    writes replace a row or add to it."""

    def __init__(self, config: TesseraConfig, ports: int):
        self.config = config
        super().__init__(config.acc_rows, config.acc_banks,
                         data.ArrayLayout(signed(config.acc_bits), config.cols), ports,
                         accumulate=True, tag_bits=ACC_TAG_BITS)


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
        depth = READ_LATENCY_CYCLES + 2          # a row per cycle: reads in flight, and room
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
        # The last row's read carries its mark in the tag.
        m.d.comb += req.payload.tag.eq(left == 1)
        issued = req.valid & req.ready
        with m.If(issued):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
        m.d.sync += in_flight.eq(in_flight + issued - self.port.resp.valid)
        m.d.comb += self.pending.eq((left != 0) | (in_flight != 0))
        entry = Signal(self.out_layout)
        m.d.comb += [entry.row.eq(self.port.resp.data), entry.last.eq(self.port.resp.tag[0]),
                     q.w_data.eq(entry), q.w_en.eq(self.port.resp.valid),
                     self.o_row.valid.eq(q.r_rdy), self.o_row.payload.eq(q.r_data),
                     q.r_en.eq(self.o_row.ready)]
        return m
