"""The execute unit: CONFIG, PRELOAD and COMPUTE commands, from the scratchpad through the
matrix unit into the accumulator.

Commands arrive as whole command words (``hw/isa.py``), one at a time, in order.

* CONFIG sets the dataflow of the COMPUTE commands that follow (the matrix unit switches
  once idle). It is taken once the data of earlier commands has entered the array.
* PRELOAD records where the weight tile is (``rows`` scratchpad rows, weights in their
  first ``cols`` bytes); every weight-stationary COMPUTE streams that tile into the array's
  shadow buffers, overlapped with the previous tile, so one PRELOAD serves many COMPUTEs.
* COMPUTE (WS) streams scratchpad rows ``a_addr ..`` (activations in their first ``rows``
  bytes) and writes ``rows`` result rows to the accumulator from ``acc_addr``, replacing
  or adding. A WS COMPUTE with ``count`` = n >= 1 is a run of n weight tiles (``hw/isa.py``):
  the weight reader streams the n tiles ``b_addr ..`` as one block, and the n activation
  blocks (``a_addr + i * a_stride``) are queued with their completion records (the first
  as the command is taken, the others by a sequencer), all but the first accumulating;
  only the last record reports the command done.
  COMPUTE (OS) streams ``rows`` reduction steps, A's column ``k`` from ``a_addr + k`` and
  B's row ``k`` from ``b_addr + k``, and writes ``rows`` (the array's) result rows.

Two scratchpad read ports keep the array fed: one for activations, one for weights (WS)
or B (OS). In weight-stationary mode the weight reader starts a COMPUTE's weight tile as
soon as it is free, while the previous tile's activations still stream (the array buffers
one tile of weights ahead), and up to two COMPUTEs' activations wait for their reader, so
back-to-back COMPUTEs stream with no bubble. ``o_done`` reports every command's completion
in order: a COMPUTE once the accumulator has written its last result row.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .dma import ROWS_BITS
from .isa import Opcode, command_layout_for
from .matrix_unit import MODE_OS, MODE_WS, MatrixUnit
from .memory import RowReader, acc_port_signature, spad_port_signature
from .skid import SkidBuffer

__all__ = ["ExecuteUnit", "EXEC_DONE_LAYOUT"]

#: A completion on ``o_done``: the opcode of the command that finished.
EXEC_DONE_LAYOUT = data.StructLayout({"opcode": Opcode})


class ExecuteUnit(wiring.Component):
    """See the module docstring.

    Members
    -------
    i_cmd : In(stream(command word))
        CONFIG, PRELOAD and COMPUTE commands (others are completed without effect).
    o_done : Out(stream(opcode))
        One beat per command, in order, when it has finished.
    spad_a, spad_b : Out(spad_port_signature)
        Scratchpad reads: activations; weights (WS) or B (OS).
    acc : Out(acc_port_signature)
        Accumulator writes of the results.
    beat : Out(1)
        A row of data entered the array this cycle (``rows x cols`` multiply-accumulates):
        for the performance counters.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        self.cmd_layout = command_layout_for(config)
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "o_done": Out(stream.Signature(EXEC_DONE_LAYOUT)),
            "spad_a": Out(spad_port_signature(config)),
            "spad_b": Out(spad_port_signature(config)),
            "acc": Out(acc_port_signature(config)),
            "beat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # what the parts below share
        self._setup(m, s)
        self._intake(m, s)
        self._rows_in(m, s)
        self._results(m, s)
        return m

    def _setup(self, m: Module, s) -> None:
        """The matrix unit, the two row readers, the dataflow, and the FIFOs of completion
        records and of pending activation reads."""
        c = self._config
        m.submodules.mxu = mxu = MatrixUnit(c)
        m.submodules.read_a = ra = RowReader(c)
        m.submodules.read_b = rb = RowReader(c)
        wiring.connect(m, ra.port, wiring.flipped(self.spad_a))
        wiring.connect(m, rb.port, wiring.flipped(self.spad_b))

        os_mode = Signal(init=int(c.dataflow == "os"))
        if c.dataflow == "both":
            m.d.comb += mxu.mode.eq(Mux(os_mode, MODE_OS, MODE_WS))
        weights_at = Signal(range(c.spad_rows))

        # Completion records, in command order: opcode, result rows, where they go, and
        # whether finishing reports the command done (not for a run's tiles but its last).
        rec_layout = data.StructLayout({"opcode": Opcode, "rows": ROWS_BITS,
                                        "acc_addr": range(c.acc_rows), "accumulate": 1,
                                        "shift": 1, "report": 1})
        # (Buffered: the head is a register, in front of the result rows' handshake.)
        m.submodules.recs = recs = fifo.SyncFIFOBuffered(width=rec_layout.size, depth=8)
        # Weight-stationary COMPUTEs: the weight reader starts as soon as it is free (the
        # array takes the next tile's weights while the current tile streams), and the
        # activation rows wait here for the activation reader.
        pend_layout = data.StructLayout({"addr": range(c.spad_rows), "rows": ROWS_BITS})
        m.submodules.pend_a = pend = fifo.SyncFIFO(width=pend_layout.size, depth=2)
        s.mxu, s.os_mode, s.pend, s.pend_layout, s.ra = mxu, os_mode, pend, pend_layout, ra
        s.rb, s.rec_layout, s.recs, s.weights_at = rb, rec_layout, recs, weights_at

    def _intake(self, m: Module, s) -> None:
        """CONFIG, PRELOAD and COMPUTE taken in order; a run's tiles queued one by one."""
        c = self._config
        R = c.rows
        os_mode, pend, pend_layout, ra, rb = s.os_mode, s.pend, s.pend_layout, s.ra, s.rb
        rec_layout, recs, weights_at = s.rec_layout, s.recs, s.weights_at
        cmd = self.i_cmd.payload
        op = cmd.header.opcode
        args = cmd.args
        comp = args.compute
        # A run being queued: tiles left, where the next one's activations are, and the
        # fields all its tiles share.
        run_left = Signal.like(comp.count)
        run_a = Signal(range(c.spad_rows))
        run_stride = Signal(range(c.spad_rows))
        run_rows = Signal(ROWS_BITS)
        run_acc = Signal(range(c.acc_rows))
        run_accumulate = Signal()
        run_shift = Signal()
        running = run_left != 0
        # (Reads issued but not yet answered count: a row arriving after the switch would
        # be taken in the other dataflow, and an OS beat waits for both readers forever.)
        readers_idle = ~ra.pending & ~rb.pending & ~ra.o_row.valid & ~rb.o_row.valid & \
            ~pend.r_rdy
        take = Signal()
        is_compute = op == Opcode.COMPUTE
        has_rows = is_compute & (comp.rows != 0)
        is_run = has_rows & ~os_mode & (comp.count != 0)
        # A CONFIG waits until earlier data has entered the array; an OS COMPUTE until both
        # readers are free (they run in step); a WS COMPUTE until the weight reader is free
        # and there is room to queue its activations (a run's first tile's; the sequencer
        # queues the others). Nothing is taken while a run's tiles are still being queued:
        # completions stay in order.
        ready = Mux(has_rows,
                    Mux(os_mode, ~ra.busy & ~rb.busy & ~pend.r_rdy, ~rb.busy & pend.w_rdy),
                    Mux(op == Opcode.CONFIG, readers_idle, 1))
        m.d.comb += [
            self.i_cmd.ready.eq(recs.w_rdy & ready & ~running),
            take.eq(self.i_cmd.valid & self.i_cmd.ready),
        ]
        # A run's next tile is queued when there is room for its activations and record.
        run_go = running & pend.w_rdy & recs.w_rdy
        rec = Signal(rec_layout)
        out_rows = Mux(os_mode, R, comp.rows)
        with m.If(run_go):
            m.d.comb += [rec.opcode.eq(Opcode.COMPUTE), rec.rows.eq(run_rows),
                         rec.acc_addr.eq(run_acc), rec.accumulate.eq(run_accumulate),
                         rec.shift.eq(run_shift), rec.report.eq(run_left == 1)]
        with m.Else():
            m.d.comb += [rec.opcode.eq(op), rec.rows.eq(Mux(has_rows, out_rows, 0)),
                         rec.acc_addr.eq(comp.acc_addr), rec.accumulate.eq(comp.accumulate),
                         rec.shift.eq(comp.shift), rec.report.eq(~is_run | (comp.count == 1))]
        m.d.comb += [recs.w_data.eq(rec), recs.w_en.eq(take | run_go)]
        with m.If(take & (op == Opcode.CONFIG)):
            if c.dataflow == "both":
                m.d.sync += os_mode.eq(args.config.os)
        with m.If(take & (op == Opcode.PRELOAD)):
            m.d.sync += weights_at.eq(args.preload.spad_addr)
        # A run's first tile is queued as it is taken, the others by the sequencer.
        with m.If(take & is_run):
            m.d.sync += [run_left.eq(comp.count - 1), run_a.eq(comp.a_addr + comp.a_stride),
                         run_stride.eq(comp.a_stride), run_rows.eq(comp.rows),
                         run_acc.eq(comp.acc_addr), run_accumulate.eq(1),
                         run_shift.eq(comp.shift)]
        with m.If(run_go):
            m.d.sync += [run_left.eq(run_left - 1), run_a.eq(run_a + run_stride),
                         run_accumulate.eq(1)]
        compute_go = take & has_rows
        queued, queueing = Signal(pend_layout), Signal(pend_layout)
        m.d.comb += [queued.eq(pend.r_data),
                     queueing.addr.eq(Mux(running, run_a, comp.a_addr)),
                     queueing.rows.eq(Mux(running, run_rows, comp.rows)),
                     pend.w_data.eq(queueing),
                     pend.w_en.eq((compute_go & ~os_mode) | run_go),
                     pend.r_en.eq(pend.r_rdy & ~ra.busy)]
        # A run's weight tiles are consecutive rows: the weight reader streams them as one
        # block, with no gap between tiles (the array counts the rows of each tile).
        m.d.comb += [
            ra.start.eq((compute_go & os_mode) | pend.r_en),
            ra.addr.eq(Mux(pend.r_en, queued.addr, comp.a_addr)),
            ra.count.eq(Mux(pend.r_en, queued.rows, comp.rows)),
            rb.start.eq(compute_go),
            rb.addr.eq(Mux(os_mode | is_run, comp.b_addr, weights_at)),
            rb.count.eq(Mux(os_mode, comp.rows, Mux(is_run, comp.count * R, R))),
        ]


    def _rows_in(self, m: Module, s) -> None:
        """Weights and activation rows from the readers into the matrix unit."""
        c = self._config
        R, C = c.rows, c.cols
        mxu, os_mode, ra, rb = s.mxu, s.os_mode, s.ra, s.rb
        d = mxu.i_data.payload
        for k in range(R):
            m.d.comb += d.a[k].eq(ra.o_row.payload.row[k])
        if c.has_os:
            for j in range(C):
                m.d.comb += d.b[j].eq(rb.o_row.payload.row[j])
        m.d.comb += d.last.eq(ra.o_row.payload.last)
        if c.has_ws:
            for j in range(C):
                m.d.comb += mxu.i_weight.payload[j].eq(rb.o_row.payload.row[j])
        with m.If(os_mode):
            # OS: one beat takes a row from each reader.
            m.d.comb += [mxu.i_data.valid.eq(ra.o_row.valid & rb.o_row.valid),
                         ra.o_row.ready.eq(mxu.i_data.ready & rb.o_row.valid),
                         rb.o_row.ready.eq(mxu.i_data.ready & ra.o_row.valid)]
        with m.Else():
            m.d.comb += [mxu.i_data.valid.eq(ra.o_row.valid),
                         ra.o_row.ready.eq(mxu.i_data.ready)]
            if c.has_ws:
                m.d.comb += [mxu.i_weight.valid.eq(rb.o_row.valid),
                             rb.o_row.ready.eq(mxu.i_weight.ready)]

        m.d.comb += self.beat.eq(mxu.i_data.valid & mxu.i_data.ready)


    def _results(self, m: Module, s) -> None:
        """Result rows into the accumulator; completions reported in command order."""
        mxu, rec_layout, recs = s.mxu, s.rec_layout, s.recs
        head = Signal(rec_layout)
        m.d.comb += head.eq(recs.r_data)
        # Completions wait here in order. One whose command wrote rows is reported once
        # the accumulator has written its last row (``resp.written`` with the row's mark
        # in the tag): until then another unit could still read the old row.
        done_layout = data.StructLayout({"opcode": Opcode, "wait": 1})
        m.submodules.done_q = done_q = fifo.SyncFIFO(width=done_layout.size, depth=4)
        # The array's result rows through a register slice: the accumulator's handshake
        # stays out of the array's output FIFO and the counters behind it.
        m.submodules.results = res = SkidBuffer(mxu.result_layout)
        wiring.connect(m, mxu.o_result, res.i)
        result = res.o
        written = Signal(ROWS_BITS)
        written_1 = Signal(ROWS_BITS + 1, init=1)      # written + 1, a register
        last_row = written_1 == head.rows
        # The writes leave through a register slice too: the accumulator's arbitration and
        # request buffer stay out of the last-row test and the results' handshake.
        m.submodules.acc_writes = acc_writes = SkidBuffer(self.acc.req.payload.shape())
        wiring.connect(m, acc_writes.o, wiring.flipped(self.acc.req))
        req = acc_writes.i
        writing = result.valid & recs.r_rdy & (head.rows != 0)
        can_report = done_q.w_rdy | ~head.report
        # The last row of a command is written only when its completion can be queued.
        m.d.comb += [req.valid.eq(writing & (~last_row | can_report)),
                     req.payload.addr.eq(head.acc_addr + written),
                     req.payload.write.eq(1),
                     req.payload.accumulate.eq(head.accumulate),
                     req.payload.shift.eq(head.shift),
                     req.payload.tag.eq(last_row & head.report),
                     req.payload.data.eq(result.payload.data),
                     result.ready.eq(req.valid & req.ready)]
        row_done = req.valid & req.ready
        finished = recs.r_rdy & can_report & ((head.rows == 0) | (row_done & last_row))
        entry, out = Signal(done_layout), Signal(done_layout)
        m.d.comb += [entry.opcode.eq(head.opcode), entry.wait.eq(head.rows != 0),
                     out.eq(done_q.r_data)]
        # Marked rows written whose completion is not reported yet (at most one per
        # waiting entry: a mark is written at least two cycles after its entry is queued).
        marked = Signal(range(done_q.depth + 1))
        report = done_q.r_rdy & (~out.wait | (marked != 0))
        reported = report & self.o_done.ready
        m.d.sync += marked.eq(marked + (self.acc.resp.written & self.acc.resp.tag[0])
                              - (reported & out.wait))
        m.d.comb += [done_q.w_en.eq(finished & head.report), done_q.w_data.eq(entry),
                     recs.r_en.eq(finished),
                     self.o_done.valid.eq(report),
                     self.o_done.payload.opcode.eq(out.opcode),
                     done_q.r_en.eq(reported)]
        with m.If(row_done):
            m.d.sync += [written.eq(written + 1), written_1.eq(written_1 + 1)]
        with m.If(finished):
            m.d.sync += [written.eq(0), written_1.eq(1)]
