"""The accelerator: command fetch, dispatcher, three concurrent queues with dependency
tokens, the units, the memories, an AXI4-Lite register file and performance counters.

Structure (see ``docs/architecture.md``)::

    AXI4-Lite -> registers -START-> fetcher -> dispatcher -+-> LOAD queue  -> DMA reader
                                      |                    +-> EXEC queue  -> execute unit
    AXI4 master <- read arbiter <-----+---- DMA reader     +-> STORE queue -> store unit
                <- write channels <------ DMA writer <- output path <- store unit

* The **fetcher** reads the command buffer (``CMD_ADDR``, ``CMD_COUNT`` words) in bursts
  into a FIFO, sharing the AXI4 read channels with the DMA reader through an in-order
  arbiter (all bursts use ID 0; a FIFO remembers whose each burst is).
* The **dispatcher** takes words in order, checks them (opcode, tokens, fields it can check
  without running them) and routes each to its queue; FENCE and FINISH wait until every
  queue is empty and every unit idle. A refused command ends the dispatch as a FINISH
  would: the commands dispatched before it run to their end, then its error is raised
  (``docs/semantics.md``).
* Each **queue** issues its head once the tokens it waits for are there, and counts the
  commands in flight in its unit; when a unit reports a command done, the tokens it signals
  are added. Token counters are 16 bits. The execute unit is pipelined: its queue issues
  without waiting for earlier completions.
* Errors (a refused command, a DMA error, a deadlock, a failed fetch) stop the run: no more
  commands are issued, the units finish what they hold, then STATUS says DONE and ERROR with
  the code, the command's index and the failing address. A **deadlock** is detected exactly:
  nothing in flight, every non-empty queue head waiting for a token, and the dispatcher
  unable to add a command that could signal one.
* The interrupt ``irq`` is STATUS.DONE while CONTROL.IRQ_ENABLE is set.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BOUNDARY_BYTES, BURST_INCR, Axi4Signature, AxiLiteSignature
from .command_check import FLAGS, command_flags, decide, run_product
from .config import TesseraConfig
from .counters import Counters
from .dma import DmaEngine, DmaError
from .execute_unit import ExecuteUnit
from .isa import ErrorCode, Opcode, command_bits
from .memory import Accumulator, Scratchpad, acc_port_signature, spad_port_signature
from .output_path import OutputPath
from .queues import INDEX_BITS, CommandQueues, entry_layout
from .read_arbiter import ReadArbiter, connect_members
from .register_file import RegisterFile
from .registers import (
    COUNTERS,
    LITE_ADDR_BITS,
    MAGIC,
    MAP_VERSION,
)
from .skid import SkidBuffer
from .store_unit import StoreUnit

__all__ = ["Accelerator", "CommandFetcher", "FETCH_DEPTH", "FETCH_BURST"]

#: Command words the fetcher buffers, and the most it asks for in one burst.
FETCH_DEPTH = 32
FETCH_BURST = 8
class CommandFetcher(wiring.Component):
    """Reads ``count`` command words from ``base`` into a FIFO, in bursts of up to
    :data:`FETCH_BURST` words that never cross a 4 KiB boundary, with as many bursts in
    flight as the FIFO has room for.

    Members
    -------
    start : In(1)
        Begin (the fetcher is reset in the cycle before, see :class:`Accelerator`): the
        buffer is checked, and fetching starts, in the next cycle.
    base, count : In
        The command buffer (held from ``start`` on); ``base`` must be aligned to a command
        word and the buffer must lie in the window, or the fetch fails at once.
    abort : In(1)
        Issue no more bursts (the bursts in flight are still taken, and dropped).
    o_word : Out(stream(entry_layout))
    fault : Out(1)
        The buffer is misaligned, outside the window, or a read answered with an error;
        ``fault_addr`` says where. The words before the fault are delivered.
    busy : Out(1)
        Bursts in flight.
    ar*, r* : the AXI4 read channels.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        bus = Axi4Signature(c.addr_bits, c.bus_bits).members
        super().__init__({
            "start": In(1),
            "base": In(c.addr_bits),
            "count": In(INDEX_BITS),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
            "abort": In(1),
            "o_word": Out(stream.Signature(entry_layout(c))),
            "fault": Out(1),
            "fault_addr": Out(c.addr_bits),
            "busy": Out(1),
            **{n: bus[n] for n in ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid",
                                   "arready", "rid", "rdata", "rresp", "rlast", "rvalid",
                                   "rready")},
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        a = c.addr_bits
        wbits = command_bits(c)
        bpw = wbits // c.bus_bits            # beats per command word
        word_bytes = wbits // 8
        word_shift = (word_bytes - 1).bit_length()

        m.submodules.q = q = fifo.SyncFIFO(width=wbits, depth=FETCH_DEPTH)
        next_addr = Signal(a)
        words_left = Signal(INDEX_BITS)
        reserved = Signal(range(FETCH_DEPTH + 1))      # words asked for, not yet popped
        beats_out = Signal(range(FETCH_DEPTH * bpw + 1))
        r_addr = Signal(a)
        out_index = Signal(INDEX_BITS)

        # --- Start: check the buffer, over two cycles: the buffer's and the window's ends
        # (two adders) registered at start, compared in the next cycle (``begin``).
        end = Signal(a + INDEX_BITS + 1)
        window_end = Signal(a + 1)
        misplaced = Signal()
        begin = Signal()
        m.d.sync += begin.eq(self.start)
        with m.If(self.start):
            m.d.sync += [end.eq(self.base + (self.count << word_shift)),
                         window_end.eq(self.window_base + self.window_size),
                         misplaced.eq((self.base[:word_shift] != 0)
                                      | (self.base < self.window_base))]
        bad = misplaced | (end > window_end)
        with m.If(begin):
            with m.If(bad & (self.count != 0)):
                m.d.sync += [self.fault.eq(1), self.fault_addr.eq(self.base)]
            with m.Else():
                m.d.sync += [next_addr.eq(self.base), words_left.eq(self.count),
                             r_addr.eq(self.base)]

        # --- AR: one burst register, held until accepted. ------------------------------------
        # The next burst's size, a register computed from the state a cycle before
        # (``n_ok`` once it is of the current state: a burst changes the state, and the
        # next can only be asked for once the last has been accepted).
        to_boundary = Signal(range(BOUNDARY_BYTES // word_bytes + 1))
        m.d.comb += to_boundary.eq((BOUNDARY_BYTES - next_addr[:12]) >> word_shift)
        n_next = Signal(range(FETCH_BURST + 1))
        with m.If((words_left < FETCH_BURST) & (words_left < to_boundary)):
            m.d.comb += n_next.eq(words_left)
        with m.Elif(to_boundary < FETCH_BURST):
            m.d.comb += n_next.eq(to_boundary)
        with m.Else():
            m.d.comb += n_next.eq(FETCH_BURST)
        n = Signal(range(FETCH_BURST + 1))
        n_ok = Signal()
        m.d.sync += [n.eq(n_next), n_ok.eq(1)]
        popped = self.o_word.valid & self.o_word.ready
        ask = ~self.arvalid & n_ok & (n != 0) & ~self.fault & ~self.abort & \
            (reserved + n <= FETCH_DEPTH)
        with m.If(begin | ask):
            m.d.sync += n_ok.eq(0)
        # Room is reserved when a burst is asked for, and freed as its words leave.
        m.d.sync += reserved.eq(reserved + Mux(ask, n, 0) - popped)
        with m.If(ask):
            m.d.sync += [self.arvalid.eq(1), self.araddr.eq(next_addr),
                         self.arlen.eq(n * bpw - 1),
                         next_addr.eq(next_addr + (n << word_shift)),
                         words_left.eq(words_left - n)]
        with m.If(self.arvalid & self.arready):
            m.d.sync += self.arvalid.eq(0)
        m.d.comb += [self.arid.eq(0), self.arsize.eq((c.bus_bytes - 1).bit_length()),
                     self.arburst.eq(BURST_INCR)]

        # --- R: assemble words (first beat in the low bits). ---------------------------------
        m.d.comb += self.rready.eq(1)
        beat = self.rvalid & self.rready
        m.d.sync += beats_out.eq(beats_out + Mux(self.arvalid & self.arready, self.arlen + 1, 0)
                                 - beat)
        word = Signal(wbits)
        k = Signal(range(bpw + 1))
        assembled = Signal(wbits)
        if bpw == 1:
            m.d.comb += assembled.eq(self.rdata)
        else:
            m.d.comb += assembled.eq(Cat(word[c.bus_bits:], self.rdata))
        with m.If(beat):
            m.d.sync += [word.eq(assembled), r_addr.eq(r_addr + c.bus_bytes)]
            with m.If(k == bpw - 1):
                m.d.sync += k.eq(0)
            with m.Else():
                m.d.sync += k.eq(k + 1)
            with m.If(self.rresp[1] & ~self.fault):
                m.d.sync += [self.fault.eq(1), self.fault_addr.eq(r_addr)]
        m.d.comb += [q.w_data.eq(assembled),
                     q.w_en.eq(beat & (k == bpw - 1) & ~self.fault & ~self.rresp[1])]

        # --- Out. ------------------------------------------------------------------------------
        m.d.comb += [self.o_word.valid.eq(q.r_rdy), self.o_word.payload.word.eq(q.r_data),
                     self.o_word.payload.index.eq(out_index), q.r_en.eq(self.o_word.ready),
                     self.busy.eq((beats_out != 0) | self.arvalid)]
        with m.If(popped):
            m.d.sync += out_index.eq(out_index + 1)
        return m


class Accelerator(wiring.Component):
    """The whole machine (see the module docstring).

    Members
    -------
    s_axil : In(AxiLiteSignature)
        The registers (:mod:`tessera.hw.registers`).
    m_axi : Out(Axi4Signature)
        Command fetch and the DMA.
    irq : Out(1)
    dbg_spad, dbg_acc : In(MemoryPortSignature), only with ``debug_ports``
        Back-door ports into the scratchpad and the accumulator, for testbenches.
    """

    def __init__(self, config: TesseraConfig, debug_ports: bool = False):
        self._config = config
        self._debug = debug_ports
        c = config
        members = {
            "s_axil": In(AxiLiteSignature(LITE_ADDR_BITS)),
            "m_axi": Out(Axi4Signature(c.addr_bits, c.bus_bits)),
            "irq": Out(1),
        }
        if debug_ports:
            members["dbg_spad"] = In(spad_port_signature(c))
            members["dbg_acc"] = In(acc_port_signature(c))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals and units the parts below share
        self._control(m, s)         # run state, the host's registers
        self._units(m, s)           # fetcher, DMA, execute and store units, memories
        self._buses(m, s)           # the AXI4 master: read arbiter, write channels
        self._queues(m, s)          # LOAD / EXECUTE / STORE queues to their units
        self._unit_faults(m, s)     # errors the DMA and the store unit report
        self._dispatcher(m, s)      # checks, routing, FENCE / FINISH, deadlock
        self._end_of_run(m, s)
        self._counters(m, s)        # performance counters
        self._status(m, s)          # what the registers show; START; the interrupt
        return m

    def _control(self, m: Module, s) -> None:
        a = self._config.addr_bits
        s.start = Signal()          # one cycle: clear the run state
        s.start_d = Signal()        # the cycle after: begin
        s.running = Signal()
        s.done = Signal()
        s.fault = Signal()
        s.fault_code = Signal(4)
        s.fault_index = Signal(INDEX_BITS)
        s.fault_addr = Signal(a)
        # The host's registers (the run's parameters are held there).
        c = self._config
        m.submodules.regs = s.regs = regs = RegisterFile({
            "ID": MAGIC, "VERSION": MAP_VERSION, "CONFIG_HASH": c.hash32,
            "COMMAND_BITS": command_bits(c)})
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        s.cmd_addr = Cat(regs.cmd_addr_lo, regs.cmd_addr_hi)
        s.cmd_count = regs.cmd_count
        s.window_base = Cat(regs.window_base_lo, regs.window_base_hi)
        s.window_size = Cat(regs.window_size_lo, regs.window_size_hi)
        s.finished = Signal()       # a FINISH was reached
        s.refused = Signal()        # a command was refused: no more dispatching
        m.d.sync += s.start_d.eq(s.start)
        s.stop = Signal()           # no more issuing: a fault, or the end of the run
        m.d.comb += s.stop.eq(s.fault)

    def _units(self, m: Module, s) -> None:
        c = self._config
        a = c.addr_bits
        debug = 1 if self._debug else 0
        m.submodules.fetch = s.fetch = fetch = ResetInserter(s.start)(CommandFetcher(c))
        m.submodules.dma = s.dma = dma = DmaEngine(c)
        m.submodules.exe = s.exe = exe = ResetInserter(s.start)(ExecuteUnit(c))
        m.submodules.store = s.st = st = StoreUnit(c)
        m.submodules.output = out = OutputPath(c)
        m.submodules.spad = spad = Scratchpad(c, ports=4 + debug)
        m.submodules.acc = acc = Accumulator(c, ports=3 + debug)
        wiring.connect(m, exe.spad_a, spad.port0)
        wiring.connect(m, exe.spad_b, spad.port1)
        wiring.connect(m, dma.spad, spad.port2)
        wiring.connect(m, st.spad, spad.port3)
        wiring.connect(m, exe.acc, acc.port0)
        wiring.connect(m, st.acc, acc.port1)
        wiring.connect(m, dma.acc, acc.port2)
        if self._debug:
            wiring.connect(m, wiring.flipped(self.dbg_spad), spad.port4)
            wiring.connect(m, wiring.flipped(self.dbg_acc), acc.port3)
        wiring.connect(m, st.op_cmd, out.i_cmd)
        wiring.connect(m, st.op_row, out.i_row)
        wiring.connect(m, out.o_row, st.op_out)
        wiring.connect(m, st.dma_cmd, dma.i_store)
        wiring.connect(m, st.dma_row, dma.i_store_row)
        wiring.connect(m, dma.o_store_done, st.dma_done)
        wiring.connect(m, st.op_param, out.i_param)
        m.d.comb += [out.error_clear.eq(s.start),
                     dma.window_base.eq(s.window_base[:a]),
                     dma.window_size.eq(s.window_size[:a]),
                     fetch.window_base.eq(s.window_base[:a]),
                     fetch.window_size.eq(s.window_size[:a]),
                     fetch.start.eq(s.start_d), fetch.base.eq(s.cmd_addr[:a]),
                     fetch.count.eq(s.cmd_count),
                     fetch.abort.eq(s.stop | ~s.running | s.finished | s.refused)]

    def _buses(self, m: Module, s) -> None:
        """The read channels: the fetcher (first: its bursts are short) and the DMA; the
        write channels: the DMA writer alone."""
        c = self._config
        s.bus = bus = self.m_axi
        s.dbus = dbus = s.dma.bus
        m.submodules.arbiter = arb = ReadArbiter(c.addr_bits, c.bus_bits,
                                                 depth=2 * c.max_reads + FETCH_DEPTH)
        m.d.comb += arb.choose.eq(s.fetch.arvalid)
        connect_members(m, dbus, arb.m0)
        connect_members(m, s.fetch, arb.m1)
        connect_members(m, arb.bus, bus)
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata",
                     "wstrb", "wlast", "wvalid", "bready"):
            m.d.comb += getattr(bus, name).eq(getattr(dbus, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(dbus, name).eq(getattr(bus, name))

    def _queues(self, m: Module, s) -> None:
        """LOAD -> DMA reader, EXECUTE -> execute unit (all of its commands, NOPs included,
        complete in order), STORE -> store unit, with their tokens."""
        m.submodules.queues = s.qs = qs = CommandQueues(self._config)
        m.d.comb += [qs.start.eq(s.start), qs.stop.eq(s.stop), qs.running.eq(s.running)]
        for q, (unit_cmd, unit_done), payload in (
                ("load", (s.dma.i_load, s.dma.o_load_done), qs.load_head.word.args.load),
                ("exec", (s.exe.i_cmd, s.exe.o_done), qs.exec_head.word),
                ("store", (s.st.i_cmd, s.st.o_done), qs.store_head.word.args.store)):
            # Each head reaches its unit through a register slice: the head's token checks
            # and the unit's readiness are in different cycles.
            slice_ = ResetInserter(s.start)(SkidBuffer(unit_cmd.payload.shape()))
            m.submodules[f"{q}_issue"] = slice_
            wiring.connect(m, slice_.o, unit_cmd)
            m.d.comb += [slice_.i.payload.eq(payload),
                         slice_.i.valid.eq(getattr(qs, f"{q}_valid")),
                         getattr(qs, f"{q}_ready").eq(slice_.i.ready),
                         getattr(qs, f"{q}_done_valid").eq(unit_done.valid),
                         unit_done.ready.eq(getattr(qs, f"{q}_done_ready"))]

    @staticmethod
    def _raise_fault(m: Module, s, cond, code, index, addr=0) -> None:
        """The first fault of a run stops it: its code, command index and address."""
        with m.If(cond & ~s.fault & s.running):
            m.d.sync += [s.fault.eq(1), s.fault_code.eq(code), s.fault_index.eq(index),
                         s.fault_addr.eq(addr)]

    def _unit_faults(self, m: Module, s) -> None:
        qs, load_done, store_done = s.qs, s.dma.o_load_done.payload, s.st.o_done.payload
        self._raise_fault(m, s, qs.load_done & (load_done.error != DmaError.NONE),
                          load_done.error.as_value(), qs.load_done_index, load_done.addr)
        self._raise_fault(m, s, qs.store_done & (store_done.error != DmaError.NONE),
                          store_done.error.as_value(), qs.store_done_index, store_done.addr)

    def _dispatcher(self, m: Module, s) -> None:
        c = self._config
        fetch, qs = s.fetch, s.qs
        # Two registers between the fetched words and the dispatch decision: the word, then
        # the word with the facts its checks need (command_flags: sums and products), so
        # that those and the decision (in the golden executor's order, with the dispatch
        # state) each get a clock cycle. A word moves on whenever the next register is
        # free or being dispatched: one command per cycle, two cycles later.
        # The first register is a register slice (reset on START): the fetcher's FIFO sees
        # its ready, a flip-flop, not the dispatch decision.
        product = run_product(fetch.o_word.payload.word)
        m.submodules.dispatch1 = d1_slice = ResetInserter(s.start)(SkidBuffer(
            data.StructLayout({"entry": entry_layout(c), "product": product.shape()})))
        d1, d1_valid = d1_slice.o.payload.entry, d1_slice.o.valid
        d1_product = d1_slice.o.payload.product
        dh = Signal(entry_layout(c), name="dispatch_word2")
        d2_valid = Signal(name="dispatch_valid2")
        flags = Signal(FLAGS, name="dispatch_flags2")
        w = dh.word
        op = w.header.opcode
        dispatched = Signal(INDEX_BITS)
        os_mode = Signal()
        weights = Signal()
        code = decide(m, flags, os_mode, weights)
        is_sync, to_load, to_exec, to_store = flags.is_sync, flags.to_load, flags.to_exec, \
            flags.to_store

        # A refused command ends the dispatch as a FINISH would: the commands dispatched
        # before it run to their end, then its error is raised (unless one of theirs, or a
        # deadlock among them, came first: every error then belongs to the earliest
        # command, as in the golden executor).
        refused = s.refused
        refused_code = Signal(ErrorCode)
        refused_index = Signal(INDEX_BITS)
        refused_addr = Signal(c.addr_bits)
        head = d2_valid & s.running & ~s.stop & ~s.finished & ~refused
        target_ready = Mux(to_load, qs.room_load, Mux(to_exec, qs.room_exec, qs.room_store))
        s.take = take = Signal()
        m.d.comb += take.eq(head & (code == ErrorCode.NONE)
                            & Mux(is_sync, qs.idle, target_ready))
        d2_free = ~d2_valid | take
        # (A run's (count - 1) * a_stride, a multiplier, is taken with the word, so that
        # the checks of the next stage are sums and comparisons.)
        with m.If(d2_free):
            m.d.sync += [dh.eq(d1), flags.eq(command_flags(m, c, d1.word, d1_product)),
                         d2_valid.eq(d1_valid)]
        m.d.comb += [d1_slice.i.valid.eq(fetch.o_word.valid),
                     d1_slice.i.payload.entry.eq(fetch.o_word.payload),
                     d1_slice.i.payload.product.eq(product),
                     fetch.o_word.ready.eq(d1_slice.i.ready), d1_slice.o.ready.eq(d2_free),
                     qs.i_entry.eq(dh), qs.push_load.eq(take & to_load),
                     qs.push_exec.eq(take & to_exec), qs.push_store.eq(take & to_store)]
        with m.If(head & (code != ErrorCode.NONE)):
            m.d.sync += [refused.eq(1), refused_code.eq(code), refused_index.eq(dh.index),
                         refused_addr.eq(0)]
        # A word the fetcher could not read is refused in its turn: once every word before
        # it has been dispatched (the fetcher delivers those, then nothing more), whatever
        # the timing of the fault. A FINISH before it ends the program first.
        fetch_turn = fetch.fault & ~fetch.o_word.valid & ~d1_valid & ~d2_valid & s.running \
            & ~s.stop & ~s.finished & ~refused
        with m.If(fetch_turn):
            m.d.sync += [refused.eq(1), refused_code.eq(ErrorCode.FETCH),
                         refused_index.eq(dispatched), refused_addr.eq(fetch.fault_addr)]
        self._raise_fault(m, s, refused & qs.idle, refused_code.as_value(), refused_index,
                          refused_addr)
        with m.If(take):
            m.d.sync += dispatched.eq(dispatched + 1)
            with m.If(op == Opcode.FINISH):
                m.d.sync += s.finished.eq(1)
            with m.If(op == Opcode.CONFIG):
                m.d.sync += os_mode.eq(w.args.config.os)
            with m.If(op == Opcode.PRELOAD):
                m.d.sync += weights.eq(1)

        # Deadlock: nothing in flight, every waiting queue blocked, no way forward.
        s.all_dispatched = (dispatched == s.cmd_count) | s.finished | refused
        m.d.comb += qs.dispatch_stuck.eq((d2_valid & (is_sync | ~target_ready))
                                         | s.all_dispatched)
        with m.If(s.start):
            m.d.sync += [dispatched.eq(0), s.finished.eq(0), refused.eq(0), weights.eq(0),
                         os_mode.eq(int(c.dataflow == "os")), d2_valid.eq(0)]
        self._raise_fault(m, s, qs.deadlock, ErrorCode.DEADLOCK.value, qs.deadlock_index)

    def _end_of_run(self, m: Module, s) -> None:
        """Everything dispatched (or a fault), everything drained. A fault leaves words in
        the queues; they are dropped (the FIFOs reset on stop)."""
        drained = s.qs.idle & ~s.fetch.busy
        end = s.running & ~s.start_d & drained & (s.fault | s.all_dispatched)
        with m.If(end):
            m.d.sync += [s.running.eq(0), s.done.eq(1)]

    def _counters(self, m: Module, s) -> None:
        c = self._config
        bus, dbus, qs, exe, st = s.bus, s.dbus, s.qs, s.exe, s.st
        w_beat = bus.wvalid & bus.wready
        r_beat = bus.rvalid & bus.rready
        aw_out = Signal(range(c.max_writes + 2))
        m.d.sync += aw_out.eq(aw_out + (bus.awvalid & bus.awready) - (bus.bvalid & bus.bready))
        events = {
            "cycles": Const(1),
            "commands": s.take,
            "macs": Mux(exe.beat, c.rows * c.cols, 0),
            "bytes_read": Mux(r_beat, c.bus_bytes, 0),
            "bytes_written": Mux(w_beat, c.bus_bytes, 0),
            "load_busy": qs.load_busy,
            "exec_busy": qs.exec_busy,
            "store_busy": qs.store_busy,
            "array_busy": exe.beat,
            "load_token_wait": qs.load_blocked,
            "exec_token_wait": qs.exec_blocked,
            "store_token_wait": qs.store_blocked,
            "load_mem_wait": qs.load_busy & ~(dbus.rvalid & dbus.rready),
            "exec_mem_wait": qs.exec_busy & ~exe.beat,
            "store_mem_wait": qs.store_busy & ((bus.awvalid & ~bus.awready)
                                               | (bus.wvalid & ~bus.wready)
                                               | (~bus.wvalid & (aw_out != 0))),
            "nonlinear_busy": st.nonlinear,
            "nonlinear_exposed": st.nonlinear & ~exe.beat,
        }
        assert list(events) == [name for name, _ in COUNTERS]
        most = {"macs": c.rows * c.cols, "bytes_read": c.bus_bytes,
                "bytes_written": c.bus_bytes}
        m.submodules.counters = s.counters = counters = Counters(
            {n: most.get(n, 1) for n in events})
        m.d.comb += [counters.clear.eq(s.start), counters.enable.eq(s.running & ~s.start_d)]
        m.d.comb += [getattr(counters, f"inc_{n}").eq(inc) for n, inc in events.items()]

    def _status(self, m: Module, s) -> None:
        regs = s.regs
        m.d.comb += [regs.running.eq(s.running), regs.status_busy.eq(s.running),
                     regs.status_done.eq(s.done), regs.status_error.eq(s.fault),
                     regs.status_code.eq(s.fault_code), regs.error_index.eq(s.fault_index),
                     regs.error_addr_lo.eq(s.fault_addr),
                     regs.error_addr_hi.eq(s.fault_addr >> 32)]
        for name, _ in COUNTERS:
            count = getattr(s.counters, name)
            m.d.comb += [getattr(regs, f"{name}_lo").eq(count[:32]),
                         getattr(regs, f"{name}_hi").eq(count[32:])]
        with m.If(regs.status_done_clear):
            m.d.sync += s.done.eq(0)
        # START from a register: ``start`` resets thousands of flip-flops (the fetcher,
        # the execute unit, the queues), so it leaves a flip-flop rather than the
        # register file's write decoding.
        start_req = Signal()
        m.d.sync += start_req.eq(regs.control_start & ~s.running & ~start_req)
        m.d.comb += s.start.eq(start_req)
        with m.If(s.start):
            m.d.sync += [s.running.eq(1), s.done.eq(0), s.fault.eq(0), s.fault_code.eq(0),
                         s.fault_index.eq(0), s.fault_addr.eq(0)]
        m.d.comb += self.irq.eq(s.done & regs.control_irq_enable)
