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
  queue is empty and every unit idle. A refused command stops the dispatch; commands
  dispatched earlier still run.
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

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BOUNDARY_BYTES, BURST_INCR, Axi4Signature, AxiLiteSignature
from .command_check import CommandCheck
from .config import TesseraConfig
from .counters import Counters
from .dma import DmaEngine, DmaError
from .execute_unit import ExecuteUnit
from .isa import ErrorCode, Opcode, Queue, command_bits, command_layout_for
from .memory import Accumulator, Scratchpad, acc_port_signature, spad_port_signature
from .output_path import OutputPath
from .read_arbiter import ReadArbiter, connect_members
from .register_file import RegisterFile
from .registers import (
    COUNTERS,
    LITE_ADDR_BITS,
    MAGIC,
    MAP_VERSION,
)
from .store_unit import StoreUnit

__all__ = ["Accelerator", "CommandFetcher", "FETCH_DEPTH", "FETCH_BURST"]

#: Command words the fetcher buffers, and the most it asks for in one burst.
FETCH_DEPTH = 32
FETCH_BURST = 8
#: Cycles the deadlock condition must hold before it is reported.
DEADLOCK_CYCLES = 8
TOKEN_BITS = 16
INDEX_BITS = 32


def entry_layout(config: TesseraConfig) -> data.StructLayout:
    """A command word with its index in the buffer."""
    return data.StructLayout({"word": command_layout_for(config), "index": INDEX_BITS})


class CommandFetcher(wiring.Component):
    """Reads ``count`` command words from ``base`` into a FIFO, in bursts of up to
    :data:`FETCH_BURST` words that never cross a 4 KiB boundary, with as many bursts in
    flight as the FIFO has room for.

    Members
    -------
    start : In(1)
        Begin (the fetcher is reset in the cycle before, see :class:`Accelerator`).
    base, count : In
        The command buffer; ``base`` must be aligned to a command word and the buffer must
        lie in the window, or the fetch fails at once.
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

        # --- Start: check the buffer. ------------------------------------------------------
        end = Signal(a + INDEX_BITS + 1)
        m.d.comb += end.eq(self.base + (self.count << word_shift))
        bad = (self.base[:word_shift] != 0) | (self.base < self.window_base) | \
            (end > self.window_base + self.window_size)
        with m.If(self.start):
            with m.If(bad & (self.count != 0)):
                m.d.sync += [self.fault.eq(1), self.fault_addr.eq(self.base)]
            with m.Else():
                m.d.sync += [next_addr.eq(self.base), words_left.eq(self.count),
                             r_addr.eq(self.base)]

        # --- AR: one burst register, held until accepted. ------------------------------------
        to_boundary = Signal(range(BOUNDARY_BYTES // word_bytes + 1))
        m.d.comb += to_boundary.eq((BOUNDARY_BYTES - next_addr[:12]) >> word_shift)
        n = Signal(range(FETCH_BURST + 1))
        with m.If((words_left < FETCH_BURST) & (words_left < to_boundary)):
            m.d.comb += n.eq(words_left)
        with m.Elif(to_boundary < FETCH_BURST):
            m.d.comb += n.eq(to_boundary)
        with m.Else():
            m.d.comb += n.eq(FETCH_BURST)
        popped = self.o_word.valid & self.o_word.ready
        ask = ~self.arvalid & (words_left != 0) & ~self.fault & ~self.abort & \
            (reserved + n <= FETCH_DEPTH)
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


class _QueueControl:
    """One queue: its FIFO of commands, its in-flight FIFO of tokens to signal, the token
    wait at its head. ``unit_in``/``unit_done`` are the unit's command and completion
    streams; a NOP that ``nop_in_unit`` is False for completes in the queue itself once the
    unit has nothing in flight (completions stay in order)."""

    def __init__(self, m: Module, name: str, config: TesseraConfig, depth: int,
                 inflight_depth: int, stop, nop_in_unit: bool):
        self.m, self.name = m, name
        layout = entry_layout(config)
        self.fifo = q = ResetInserter(stop)(fifo.SyncFIFO(width=layout.size, depth=depth))
        m.submodules[f"{name}_q"] = q
        self.inflight = f = fifo.SyncFIFO(width=2 + INDEX_BITS, depth=inflight_depth)
        m.submodules[f"{name}_inflight"] = f
        self.head = head = Signal(layout)
        m.d.comb += head.eq(q.r_data)
        self.hdr = head.word.header
        self.stop = stop
        self.nop_in_unit = nop_in_unit
        # Filled in by the accelerator: token counts available to this queue's waits.
        self.tok_prev = Signal(TOKEN_BITS, name=f"{name}_tok_prev")
        self.tok_next = Signal(TOKEN_BITS, name=f"{name}_tok_next")
        self.tok_ok = Signal(name=f"{name}_tok_ok")
        m.d.comb += self.tok_ok.eq((~self.hdr.wait_prev | (self.tok_prev != 0))
                                   & (~self.hdr.wait_next | (self.tok_next != 0)))
        self.blocked = Signal(name=f"{name}_blocked")   # the head waits for a token
        m.d.comb += self.blocked.eq(q.r_rdy & ~self.tok_ok)
        self.issue = Signal(name=f"{name}_issue")
        self.done = Signal(name=f"{name}_done")          # a completion this cycle
        self.done_signal_prev = Signal(name=f"{name}_done_sp")
        self.done_signal_next = Signal(name=f"{name}_done_sn")
        self.done_index = Signal(INDEX_BITS, name=f"{name}_done_index")
        self.busy = Signal(name=f"{name}_busy")          # commands in flight
        m.d.comb += self.busy.eq(f.r_rdy)

    def connect(self, unit_valid, unit_ready, unit_done_valid, unit_done_ready):
        m, q, f, hdr = self.m, self.fifo, self.inflight, self.hdr
        is_nop = hdr.opcode == Opcode.NOP
        local_nop = is_nop if not self.nop_in_unit else Const(0)
        can = q.r_rdy & self.tok_ok & ~self.stop & f.w_rdy
        m.d.comb += [
            unit_valid.eq(can & ~local_nop),
            self.issue.eq((unit_valid & unit_ready) | (can & local_nop & ~f.r_rdy)),
            q.r_en.eq(self.issue),
        ]
        unit_done = Signal(name=f"{self.name}_unit_done")
        m.d.comb += [unit_done_ready.eq(1), unit_done.eq(unit_done_valid),
                     f.w_en.eq(self.issue & ~local_nop),
                     f.w_data.eq(Cat(hdr.signal_prev, hdr.signal_next, self.head.index)),
                     f.r_en.eq(unit_done)]
        local_done = self.issue & local_nop
        m.d.comb += [
            self.done.eq(unit_done | local_done),
            self.done_signal_prev.eq(Mux(unit_done, f.r_data[0], hdr.signal_prev)),
            self.done_signal_next.eq(Mux(unit_done, f.r_data[1], hdr.signal_next)),
            self.done_index.eq(Mux(unit_done, f.r_data[2:], self.head.index)),
        ]
        return unit_done


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
        c = self._config
        m = Module()
        a = c.addr_bits
        debug = 1 if self._debug else 0

        # --- Control state. ----------------------------------------------------------------
        start = Signal()          # one cycle: clear the run state
        start_d = Signal()        # the cycle after: begin
        running = Signal()
        done = Signal()
        fault = Signal()
        fault_code = Signal(4)
        fault_index = Signal(INDEX_BITS)
        fault_addr = Signal(a)
        # The host's registers (the run's parameters are held there).
        m.submodules.regs = regs = RegisterFile({"ID": MAGIC, "VERSION": MAP_VERSION,
                                                 "CONFIG_HASH": c.hash32,
                                                 "COMMAND_BITS": command_bits(c)})
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        cmd_addr = Cat(regs.cmd_addr_lo, regs.cmd_addr_hi)
        cmd_count = regs.cmd_count
        window_base = Cat(regs.window_base_lo, regs.window_base_hi)
        window_size = Cat(regs.window_size_lo, regs.window_size_hi)
        finished = Signal()       # a FINISH was reached
        m.d.sync += start_d.eq(start)
        stop = Signal()           # no more issuing: a fault, or the end of the run
        m.d.comb += stop.eq(fault)

        # --- Units and memories. -------------------------------------------------------------
        m.submodules.fetch = fetch = ResetInserter(start)(CommandFetcher(c))
        m.submodules.dma = dma = DmaEngine(c)
        m.submodules.exe = exe = ResetInserter(start)(ExecuteUnit(c))
        m.submodules.store = st = StoreUnit(c)
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
        m.d.comb += [out.error_clear.eq(start),
                     dma.window_base.eq(window_base[:a]), dma.window_size.eq(window_size[:a]),
                     fetch.window_base.eq(window_base[:a]),
                     fetch.window_size.eq(window_size[:a]),
                     fetch.start.eq(start_d), fetch.base.eq(cmd_addr[:a]),
                     fetch.count.eq(cmd_count), fetch.abort.eq(stop | ~running | finished)]

        # --- AXI4 read channels: the fetcher (first: its bursts are short) and the DMA. -----
        bus = self.m_axi
        dbus = dma.bus
        m.submodules.arbiter = arb = ReadArbiter(c.addr_bits, c.bus_bits,
                                                 depth=2 * c.max_reads + FETCH_DEPTH)
        m.d.comb += arb.choose.eq(fetch.arvalid)
        connect_members(m, dbus, arb.m0)
        connect_members(m, fetch, arb.m1)
        connect_members(m, arb.bus, bus)
        # Write channels: the DMA writer alone.
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata",
                     "wstrb", "wlast", "wvalid", "bready"):
            m.d.comb += getattr(bus, name).eq(getattr(dbus, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(dbus, name).eq(getattr(bus, name))

        # --- Queues. -------------------------------------------------------------------------
        qs = {
            Queue.LOAD: _QueueControl(m, "load", c, c.load_queue_depth, 2, stop, False),
            Queue.EXECUTE: _QueueControl(m, "exec", c, c.exec_queue_depth, 8, stop, True),
            Queue.STORE: _QueueControl(m, "store", c, c.store_queue_depth, 2, stop, False),
        }
        lq, xq, sq = qs[Queue.LOAD], qs[Queue.EXECUTE], qs[Queue.STORE]
        # LOAD -> DMA reader.
        m.d.comb += dma.i_load.payload.eq(lq.head.word.args.load)
        load_done = lq.connect(dma.i_load.valid, dma.i_load.ready, dma.o_load_done.valid,
                               dma.o_load_done.ready)
        # EXECUTE -> execute unit (all of its commands, NOPs included, complete in order).
        m.d.comb += exe.i_cmd.payload.eq(xq.head.word)
        xq.connect(exe.i_cmd.valid, exe.i_cmd.ready, exe.o_done.valid, exe.o_done.ready)
        # STORE -> store unit.
        m.d.comb += st.i_cmd.payload.eq(sq.head.word.args.store)
        store_done = sq.connect(st.i_cmd.valid, st.i_cmd.ready, st.o_done.valid,
                                st.o_done.ready)

        # --- Tokens: LOAD <-> EXECUTE <-> STORE. ---------------------------------------------
        def token(src: _QueueControl, dst: _QueueControl, src_side: str, dst_side: str):
            count = Signal(TOKEN_BITS, name=f"tok_{src.name}_{dst.name}")
            inc = src.done & getattr(src, f"done_signal_{src_side}")
            dec = dst.issue & getattr(dst.hdr, f"wait_{dst_side}")
            with m.If(start):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += count.eq(count + inc - dec)
            m.d.comb += getattr(dst, f"tok_{dst_side}").eq(count)

        token(lq, xq, "next", "prev")
        token(xq, lq, "prev", "next")
        token(xq, sq, "next", "prev")
        token(sq, xq, "prev", "next")

        # --- Errors reported by the units. -------------------------------------------------
        def raise_fault(cond, code, index, addr=0):
            with m.If(cond & ~fault & running):
                m.d.sync += [fault.eq(1), fault_code.eq(code), fault_index.eq(index),
                             fault_addr.eq(addr)]

        raise_fault(load_done & (dma.o_load_done.payload.error != DmaError.NONE),
                    dma.o_load_done.payload.error.as_value(), lq.done_index,
                    dma.o_load_done.payload.addr)
        raise_fault(store_done & (st.o_done.payload.error != DmaError.NONE),
                    st.o_done.payload.error.as_value(), sq.done_index, st.o_done.payload.addr)

        # --- Dispatcher. ---------------------------------------------------------------------
        dh = Signal(entry_layout(c))
        m.d.comb += dh.eq(fetch.o_word.payload)
        w = dh.word
        op = w.header.opcode
        dispatched = Signal(INDEX_BITS)
        os_mode = Signal()
        weights = Signal()
        with m.If(start):
            m.d.sync += [dispatched.eq(0), finished.eq(0), weights.eq(0),
                         os_mode.eq(int(c.dataflow == "os"))]
        # The checks, in the golden executor's order, and the command's queue.
        m.submodules.check = check = CommandCheck(c)
        m.d.comb += [check.word.eq(w), check.os_mode.eq(os_mode), check.weights.eq(weights)]
        code, is_sync = check.code, check.is_sync
        to_load, to_exec, to_store = check.to_load, check.to_exec, check.to_store
        os_bit = w.args.config.os

        queues_idle = Signal()
        m.d.comb += queues_idle.eq(
            ~lq.fifo.r_rdy & ~xq.fifo.r_rdy & ~sq.fifo.r_rdy & ~lq.busy & ~xq.busy
            & ~sq.busy)
        head = fetch.o_word.valid & running & ~stop & ~finished
        target_ready = Mux(to_load, lq.fifo.w_rdy, Mux(to_exec, xq.fifo.w_rdy, sq.fifo.w_rdy))
        take = Signal()
        m.d.comb += take.eq(head & (code == ErrorCode.NONE)
                            & Mux(is_sync, queues_idle, target_ready))
        m.d.comb += [fetch.o_word.ready.eq(take),
                     lq.fifo.w_data.eq(dh), xq.fifo.w_data.eq(dh), sq.fifo.w_data.eq(dh),
                     lq.fifo.w_en.eq(take & to_load), xq.fifo.w_en.eq(take & to_exec),
                     sq.fifo.w_en.eq(take & to_store)]
        raise_fault(head & (code != ErrorCode.NONE), code.as_value(), dh.index)
        raise_fault(fetch.fault, ErrorCode.FETCH.value, dispatched, fetch.fault_addr)
        with m.If(take):
            m.d.sync += dispatched.eq(dispatched + 1)
            with m.If(op == Opcode.FINISH):
                m.d.sync += finished.eq(1)
            with m.If(op == Opcode.CONFIG):
                m.d.sync += os_mode.eq(os_bit)
            with m.If(op == Opcode.PRELOAD):
                m.d.sync += weights.eq(1)

        # --- Deadlock: nothing in flight, every waiting queue blocked, no way forward. ------
        all_dispatched = (dispatched == cmd_count) | finished
        disp_stuck = (fetch.o_word.valid & (is_sync | ~target_ready)) | all_dispatched
        quiet = [~q.fifo.r_rdy | q.blocked for q in qs.values()]
        some_waiting = lq.fifo.r_rdy | xq.fifo.r_rdy | sq.fifo.r_rdy
        stuck_now = running & ~lq.busy & ~xq.busy & ~sq.busy & quiet[0] & quiet[1] & \
            quiet[2] & some_waiting & disp_stuck
        stuck_for = Signal(range(DEADLOCK_CYCLES + 1))
        m.d.sync += stuck_for.eq(Mux(stuck_now, stuck_for + (stuck_for < DEADLOCK_CYCLES), 0))
        # The earliest command at a blocked head.
        earliest = Const(2**INDEX_BITS - 1, INDEX_BITS)
        for q in qs.values():
            better = Signal(INDEX_BITS, name=f"earliest_{q.name}")
            m.d.comb += better.eq(Mux(q.fifo.r_rdy & (q.head.index < earliest), q.head.index,
                                      earliest))
            earliest = better
        raise_fault(stuck_for == DEADLOCK_CYCLES, ErrorCode.DEADLOCK.value, earliest)

        # --- End of the run: everything dispatched (or a fault), everything drained. ---------
        drained = queues_idle & ~fetch.busy & ~lq.busy & ~xq.busy & ~sq.busy
        end = running & ~start_d & drained & (fault | all_dispatched)
        with m.If(end):
            m.d.sync += [running.eq(0), done.eq(1)]
        # A fault leaves words in the queues; they are dropped (the FIFOs reset on stop).

        # --- Performance counters. -----------------------------------------------------------
        w_beat = bus.wvalid & bus.wready
        r_beat = bus.rvalid & bus.rready
        aw_out = Signal(range(c.max_writes + 2))
        m.d.sync += aw_out.eq(aw_out + (bus.awvalid & bus.awready) - (bus.bvalid & bus.bready))
        events = {
            "cycles": Const(1),
            "commands": take,
            "macs": Mux(exe.beat, c.rows * c.cols, 0),
            "bytes_read": Mux(r_beat, c.bus_bytes, 0),
            "bytes_written": Mux(w_beat, c.bus_bytes, 0),
            "load_busy": lq.busy,
            "exec_busy": xq.busy,
            "store_busy": sq.busy,
            "array_busy": exe.beat,
            "load_token_wait": lq.blocked,
            "exec_token_wait": xq.blocked,
            "store_token_wait": sq.blocked,
            "load_mem_wait": lq.busy & ~(dbus.rvalid & dbus.rready),
            "exec_mem_wait": xq.busy & ~exe.beat,
            "store_mem_wait": sq.busy & ((bus.awvalid & ~bus.awready)
                                         | (bus.wvalid & ~bus.wready)
                                         | (~bus.wvalid & (aw_out != 0))),
            "nonlinear_busy": st.nonlinear,
            "nonlinear_exposed": st.nonlinear & ~exe.beat,
        }
        assert list(events) == [name for name, _ in COUNTERS]
        most = {"macs": c.rows * c.cols, "bytes_read": c.bus_bytes,
                "bytes_written": c.bus_bytes}
        m.submodules.counters = counters = Counters({n: most.get(n, 1) for n in events})
        m.d.comb += [counters.clear.eq(start), counters.enable.eq(running & ~start_d)]
        m.d.comb += [getattr(counters, f"inc_{n}").eq(inc) for n, inc in events.items()]

        # --- What the registers show; START and the clearing of DONE. ------------------------
        m.d.comb += [regs.running.eq(running), regs.status_busy.eq(running),
                     regs.status_done.eq(done), regs.status_error.eq(fault),
                     regs.status_code.eq(fault_code), regs.error_index.eq(fault_index),
                     regs.error_addr_lo.eq(fault_addr), regs.error_addr_hi.eq(fault_addr >> 32)]
        for name, _ in COUNTERS:
            count = getattr(counters, name)
            m.d.comb += [getattr(regs, f"{name}_lo").eq(count[:32]),
                         getattr(regs, f"{name}_hi").eq(count[32:])]
        with m.If(regs.status_done_clear):
            m.d.sync += done.eq(0)
        m.d.comb += start.eq(regs.control_start & ~running)
        with m.If(start):
            m.d.sync += [running.eq(1), done.eq(0), fault.eq(0), fault_code.eq(0),
                         fault_index.eq(0), fault_addr.eq(0)]
        m.d.comb += self.irq.eq(done & regs.control_irq_enable)
        return m
