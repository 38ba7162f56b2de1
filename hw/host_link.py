"""The host link: a byte protocol over a UART that reads and writes the accelerator's
registers (as an AXI4-Lite manager) and the board's main memory (through the block RAM's
host port, :class:`~tessera.hw.bram.AxiBlockRam`).

Protocol
--------
The host sends a request and waits for its whole reply before it sends the next one (the
link does not take bytes while it replies). Numbers are little-endian. Every reply starts
with a status byte (:class:`Status`).

======================  =====================================  ==============================
request                 bytes after the command byte           reply
======================  =====================================  ==============================
``PING`` (0x01)         none                                   status, then the
                                                               :data:`PING_REPLY` fields
``REG_WRITE`` (0x02)    offset u16, value u32                  status
``REG_READ`` (0x03)     offset u16                             status, value u32 (0 if the
                                                               status is not OK)
``MEM_WRITE`` (0x04)    address u32, length u32, then          status, after the last byte
                        ``length`` bytes
``MEM_READ`` (0x05)     address u32, length u32                status, then ``length`` bytes
                                                               if the status is OK
``RESET`` (0x06)        none                                   status, once the accelerator
                                                               has been held in reset for
                                                               :data:`RESET_CYCLES` cycles
======================  =====================================  ==============================

* ``PING``'s reply: the magic ``0x4C485354`` ("TSHL") u32, the protocol version u8, the
  accelerator's configuration hash (``TesseraConfig.hash32``) u32, the memory's base
  address u32 and size in bytes u32, the bus width in bytes u8, the clock in Hz u32:
  enough for a host to check it talks to the bitstream it expects.
* A register offset at or beyond the register window (4 KiB) answers ``OUT_OF_RANGE``
  without a bus access; an access the register file refuses (SLVERR) answers
  ``BUS_ERROR``.
* A memory access must lie inside ``base .. base + size - 1``, or it answers
  ``OUT_OF_RANGE`` (no wrap-around): a refused ``MEM_WRITE`` still takes (and drops) its
  ``length`` bytes before it answers, so the link stays in step with the host.
* An unknown command byte answers ``BAD_COMMAND`` at once.
* A request left incomplete for ``timeout_cycles`` (no byte arrives) is dropped without a
  reply: a host that lost track waits that long, and the link is ready for a new request.
* Bytes received with a framing error never reach the link (the UART drops them), so a
  request that lost one is incomplete and times out.

Memory accesses are byte by byte through the host port, which has priority over the
accelerator (see :mod:`tessera.hw.bram`): they are safe at any time, but writing the
memory a running program uses changes what it computes. ``RESET`` resets the accelerator
only (registers, queues, units; not the contents of its scratchpad and accumulator, nor
main memory): a host recovers from a hung run with it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiLiteSignature
from .bram import HostPortSignature
from .config import TesseraConfig
from .registers import LITE_ADDR_BITS

__all__ = ["HostLink", "Command", "Status", "MAGIC", "VERSION", "ARG_BYTES", "PING_REPLY",
           "RESET_CYCLES"]

MAGIC = 0x4C485354          # "TSHL"
VERSION = 1
#: Cycles ``RESET`` holds the accelerator in reset.
RESET_CYCLES = 16


class Command(enum.Enum, shape=8):
    PING = 0x01
    REG_WRITE = 0x02
    REG_READ = 0x03
    MEM_WRITE = 0x04
    MEM_READ = 0x05
    RESET = 0x06


class Status(enum.Enum, shape=8):
    OK = 0x00
    BAD_COMMAND = 0x01
    OUT_OF_RANGE = 0x02
    BUS_ERROR = 0x03


#: Argument bytes after each command byte (``MEM_WRITE``'s data not counted).
ARG_BYTES = {Command.PING: 0, Command.REG_WRITE: 6, Command.REG_READ: 2,
             Command.MEM_WRITE: 8, Command.MEM_READ: 8, Command.RESET: 0}

#: ``PING``'s reply after the status byte: (field, bytes), in order.
PING_REPLY = (("magic", 4), ("version", 1), ("config_hash", 4), ("mem_base", 4),
              ("mem_size", 4), ("bus_bytes", 1), ("clk_hz", 4))

_REPLY_BYTES = 1 + sum(n for _, n in PING_REPLY)


class HostLink(wiring.Component):
    """The protocol engine (see the module docstring).

    Parameters
    ----------
    config : TesseraConfig
    mem_base, mem_size : int
        The main memory the host port reaches (bytes).
    clk_hz : int
        The clock, reported by ``PING``.
    timeout_cycles : int
        An incomplete request is dropped after this many cycles without a byte.

    Members
    -------
    i_rx : In(stream.Signature(8))
        Bytes from the host (a :class:`~tessera.hw.uart.UartRx`).
    o_tx : Out(stream.Signature(8))
        Bytes to the host (a :class:`~tessera.hw.uart.UartTx`).
    m_axil : Out(AxiLiteSignature)
        To the accelerator's registers.
    mem : Out(HostPortSignature)
        To the main memory's host port.
    accel_reset : Out(1)
        Held high while ``RESET`` runs.
    error : Out(1)
        Sticky: a request was answered with an error status, or timed out.
    """

    def __init__(self, config: TesseraConfig, mem_base: int, mem_size: int, clk_hz: int,
                 timeout_cycles: int):
        for name, value in (("mem_size", mem_size), ("clk_hz", clk_hz),
                            ("timeout_cycles", timeout_cycles)):
            if not isinstance(value, int) or value <= 0 or value >= 1 << 32:
                self._MustUse__silence = True   # never built
                raise ValueError(f"{name} must be a positive 32-bit integer, not {value!r}")
        if not isinstance(mem_base, int) or mem_base < 0 or mem_base + mem_size > 1 << 32:
            self._MustUse__silence = True
            raise ValueError(f"the memory must lie in the 32-bit address space, not "
                             f"{mem_size} bytes at {mem_base!r}")
        if mem_size % config.bus_bytes:
            self._MustUse__silence = True
            raise ValueError(f"mem_size must be a multiple of the bus width "
                             f"({config.bus_bytes} bytes), not {mem_size}")
        self._config = config
        self.mem_base, self.mem_size = mem_base, mem_size
        self.clk_hz, self.timeout_cycles = clk_hz, timeout_cycles
        super().__init__({
            "i_rx": In(stream.Signature(8)),
            "o_tx": Out(stream.Signature(8)),
            "m_axil": Out(AxiLiteSignature(LITE_ADDR_BITS)),
            "mem": Out(HostPortSignature(mem_size // config.bus_bytes, config.bus_bits)),
            "accel_reset": Out(1),
            "error": Out(1),
        })

    def ping_reply(self) -> bytes:
        """``PING``'s reply (status included), as the link sends it."""
        values = {"magic": MAGIC, "version": VERSION, "config_hash": self._config.hash32,
                  "mem_base": self.mem_base, "mem_size": self.mem_size,
                  "bus_bytes": self._config.bus_bytes, "clk_hz": self.clk_hz}
        return bytes([Status.OK.value]) + b"".join(
            values[name].to_bytes(n, "little") for name, n in PING_REPLY)

    def elaborate(self, platform):
        c = self._config
        m = Module()
        rx, tx, lite, mem = self.i_rx, self.o_tx, self.m_axil, self.mem
        bus_bytes = c.bus_bytes
        lane_bits = (bus_bytes - 1).bit_length()

        command = Signal(8)
        args = Signal(64)
        index = Signal(range(9))                # argument bytes taken
        offset, value = args[:16], args[16:48]
        addr, length = args[:32], args[32:64]
        # The reply: up to _REPLY_BYTES bytes, sent from the low end.
        reply = Signal(8 * _REPLY_BYTES)
        reply_len = Signal(range(_REPLY_BYTES + 1))
        status = Signal(Status)
        in_range = Signal()
        end = Signal(34)
        m.d.comb += [end.eq(addr + length),
                     in_range.eq((addr >= self.mem_base)
                                 & (end <= self.mem_base + self.mem_size))]
        offset_ok = offset < (1 << LITE_ADDR_BITS)

        # Inter-byte timeout while a request is incomplete.
        idle = Signal(range(self.timeout_cycles + 1))
        waiting = Signal()                      # in a request, waiting for its bytes
        timed_out = Signal()
        with m.If(~waiting | (rx.valid & rx.ready)):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout_cycles):
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += timed_out.eq(waiting & (idle == self.timeout_cycles))
        with m.If(timed_out):
            m.d.sync += self.error.eq(1)

        def answer(st, extra=None, extra_bytes=0):
            """Reply the status ``st`` (and ``extra_bytes`` bytes of ``extra``), then IDLE."""
            code = Value.cast(Const(st.value, 8) if isinstance(st, Status) else st)
            m.d.sync += [reply.eq(Cat(code, extra if extra is not None else Const(0, 0))),
                         reply_len.eq(1 + extra_bytes)]
            with m.If(code != Status.OK.value):
                m.d.sync += self.error.eq(1)
            m.next = "REPLY"

        ping = int.from_bytes(self.ping_reply(), "little")
        remaining = Signal(32)                  # bytes of a memory access left
        cursor = Signal(32)                     # its next address (from the memory's base)
        lane = Signal(lane_bits) if lane_bits else Const(0, 1)
        if lane_bits:
            m.d.comb += lane.eq(cursor[:lane_bits])
        word_addr = cursor[lane_bits:]
        reset_left = Signal(range(RESET_CYCLES + 1))
        read_byte = Signal(8)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [command.eq(rx.payload), index.eq(0), args.eq(0)]
                    with m.Switch(rx.payload):
                        for cmd, n in ARG_BYTES.items():
                            with m.Case(cmd.value):
                                m.next = "ARGS" if n else "EXECUTE"
                        with m.Default():
                            answer(Status.BAD_COMMAND)
            with m.State("ARGS"):
                m.d.comb += [rx.ready.eq(1), waiting.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [args.word_select(index, 8).eq(rx.payload),
                                 index.eq(index + 1)]
                    with m.Switch(command):
                        for cmd, n in ARG_BYTES.items():
                            if n:
                                with m.Case(cmd.value):
                                    with m.If(index == n - 1):
                                        m.next = "EXECUTE"
                with m.If(timed_out):
                    m.next = "IDLE"
            with m.State("EXECUTE"):
                m.d.sync += [cursor.eq(addr - self.mem_base), remaining.eq(length)]
                with m.Switch(command):
                    with m.Case(Command.PING.value):
                        m.d.sync += [reply.eq(ping), reply_len.eq(_REPLY_BYTES)]
                        m.next = "REPLY"
                    with m.Case(Command.REG_WRITE.value):
                        with m.If(offset_ok):
                            m.d.sync += [lite.awvalid.eq(1), lite.wvalid.eq(1)]
                            m.next = "REG_WRITE"
                        with m.Else():
                            answer(Status.OUT_OF_RANGE)
                    with m.Case(Command.REG_READ.value):
                        with m.If(offset_ok):
                            m.d.sync += lite.arvalid.eq(1)
                            m.next = "REG_READ"
                        with m.Else():
                            answer(Status.OUT_OF_RANGE, Const(0, 32), 4)
                    with m.Case(Command.MEM_WRITE.value):
                        with m.If(length == 0):
                            answer(Mux(in_range, Status.OK, Status.OUT_OF_RANGE))
                        with m.Else():
                            m.d.sync += status.eq(Mux(in_range, Status.OK,
                                                      Status.OUT_OF_RANGE))
                            m.next = "MEM_WRITE"
                    with m.Case(Command.MEM_READ.value):
                        with m.If(in_range):
                            m.d.sync += [status.eq(Status.OK)]
                            m.next = "MEM_READ_STATUS"
                        with m.Else():
                            answer(Status.OUT_OF_RANGE)
                    with m.Case(Command.RESET.value):
                        m.d.sync += reset_left.eq(RESET_CYCLES)
                        m.next = "RESET"

            # --- Registers: one AXI4-Lite transaction. -----------------------------------
            m.d.comb += [lite.awaddr.eq(offset), lite.araddr.eq(offset),
                         lite.wdata.eq(value), lite.wstrb.eq(0xF), lite.awprot.eq(0),
                         lite.arprot.eq(0)]
            with m.State("REG_WRITE"):
                with m.If(lite.awready):
                    m.d.sync += lite.awvalid.eq(0)
                with m.If(lite.wready):
                    m.d.sync += lite.wvalid.eq(0)
                m.d.comb += lite.bready.eq(~lite.awvalid & ~lite.wvalid)
                with m.If(lite.bvalid & lite.bready):
                    with m.If(lite.bresp == 0):
                        answer(Status.OK)
                    with m.Else():
                        answer(Status.BUS_ERROR)
            with m.State("REG_READ"):
                with m.If(lite.arready):
                    m.d.sync += lite.arvalid.eq(0)
                m.d.comb += lite.rready.eq(~lite.arvalid)
                with m.If(lite.rvalid & lite.rready):
                    with m.If(lite.rresp == 0):
                        answer(Status.OK, lite.rdata, 4)
                    with m.Else():
                        answer(Status.BUS_ERROR, Const(0, 32), 4)

            # --- Memory writes: a byte per received byte (dropped when refused). ---------
            with m.State("MEM_WRITE"):
                m.d.comb += waiting.eq(1)
                m.d.comb += [mem.req.payload.addr.eq(word_addr),
                             mem.req.payload.data.eq(Cat(*[rx.payload] * bus_bytes)),
                             mem.req.payload.mask.eq(1 << lane)]
                m.d.comb += [mem.req.valid.eq(rx.valid & (status == Status.OK)),
                             rx.ready.eq(mem.req.ready | (status != Status.OK))]
                with m.If(rx.valid & rx.ready):
                    m.d.sync += [cursor.eq(cursor + 1), remaining.eq(remaining - 1)]
                    with m.If(remaining == 1):
                        answer(status)
                with m.If(timed_out):
                    m.next = "IDLE"

            # --- Memory reads: the status, then a byte per memory read. ------------------
            with m.State("MEM_READ_STATUS"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(Status.OK)]
                with m.If(tx.ready):
                    m.next = "MEM_READ"
            with m.State("MEM_READ"):
                m.d.comb += [mem.req.valid.eq(1), mem.req.payload.addr.eq(word_addr),
                             mem.req.payload.mask.eq(0)]
                with m.If(mem.req.ready):
                    m.next = "MEM_READ_WAIT"
            with m.State("MEM_READ_WAIT"):
                with m.If(mem.resp.valid):
                    m.d.sync += read_byte.eq(mem.resp.data.word_select(lane, 8))
                    m.next = "MEM_READ_SEND"
            with m.State("MEM_READ_SEND"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(read_byte)]
                with m.If(tx.ready):
                    m.d.sync += [cursor.eq(cursor + 1), remaining.eq(remaining - 1)]
                    with m.If(remaining == 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "MEM_READ"

            with m.State("RESET"):
                m.d.comb += self.accel_reset.eq(1)
                m.d.sync += reset_left.eq(reset_left - 1)
                with m.If(reset_left == 1):
                    answer(Status.OK)

            with m.State("REPLY"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(reply[:8])]
                with m.If(tx.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_len.eq(reply_len - 1)]
                    with m.If(reply_len == 1):
                        m.next = "IDLE"
        return m
