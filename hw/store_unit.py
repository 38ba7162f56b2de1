"""The store unit: accumulator rows through the output path, to main memory (through the
DMA) or straight back into the scratchpad.

One command moves ``desc.rows`` logical rows of ``desc.length`` elements. Logical row ``r``
occupies ``chunks = ceil(length / cols)`` consecutive accumulator rows from
``acc_addr + r * chunks``. The unit reads each logical row once per pass of the operation
(:data:`~tessera.hw.output_path.PASSES`), in row order, and routes the output chunks:

* ``to_spad``: chunk ``k`` of row ``r`` to scratchpad row ``spad_addr + r * chunks + k``
  (bytes past the row are 0), one per cycle: attention and FFN chains stay on chip.
* ``blocked``: chunks are column blocks of ``rows`` rows instead: chunk ``k`` of row ``r``
  is accumulator row ``acc_addr + k * rows + r`` (as weight-stationary COMPUTEs write a
  tile's column blocks), goes to scratchpad row ``spad_addr + k * rows + r`` (as COMPUTE
  reads activations) or to ``dram_addr + k * stride + r * cols`` in main memory (the
  blocked layout, ``stride`` the block's size; one DMA store per row).
* otherwise: row ``r``'s ``length`` bytes to main memory at ``dram_addr + r * stride``.
  When the rows are whole chunks and follow each other (``length`` a multiple of ``cols``
  and ``stride == length``, as in blocked layouts), the whole command is one DMA store of
  ``rows * chunks`` rows of ``cols`` bytes: one memory round trip instead of one per row.
  Otherwise each row is one DMA store of its whole chunks and, when ``length`` is not a
  multiple of ``cols``, one of the tail.

Errors: an unknown operation or digit, or a length outside ``1 .. max_row_len`` (``SHAPE``) and
accumulator or scratchpad rows out of range (``LOCAL``) are refused before any work; a DMA
error (``WINDOW``, ``SLVERR``, ``DECERR``) is reported with its address once the command
has finished (the DMA still takes the rows it is owed, so nothing hangs). The address is
the DMA's, so it names the failing store: a ``WINDOW`` error names ``dram_addr`` when the
command went as one store (and nothing was written), the first row outside the window
otherwise (and the rows before it were written).
LayerNorm's per-channel parameters reach the output path on its own ``i_param`` stream.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import TesseraConfig
from .dma import CHECK_CYCLES, ROWS_BITS, DmaError, block_layout, done_layout
from .intmath import stage, times_unsigned
from .memory import READ_LATENCY_CYCLES, acc_port_signature, spad_port_signature
from .output_path import (
    PASSES,
    OutputOp,
    descriptor_layout,
    out_layout,
    param_layout,
    row_layout,
)
from .requant import DYADIC_STAGES, MULTIPLIER_BITS, SHIFT_BITS, OutputDigit, dyadic_lanes
from .skid import TurnSlice

__all__ = ["StoreUnit", "store_command_layout", "PARAM_ROWS", "PARAM_LANE_BITS"]

#: Accumulator rows of LayerNorm's table per chunk of a row: gamma (int16 in each lane),
#: beta's low 32 bits, beta's high bits (``beta = high * 2**32 + (low mod 2**32)``).
PARAM_ROWS = 3
#: The table's lanes are 32 bits: LAYERNORM stores need ``acc_bits == 32``.
PARAM_LANE_BITS = 32
#: Register stages between the accumulator's response and the chunk FIFO: the response,
#: the prescale (requantization's multiply, rounding and shift, one DSP or carry chain per
#: stage) and the saturation. Unscaled chunks take the same way with ``m = 1, e = 0``.
PRESCALE_STAGES = 1 + DYADIC_STAGES + 1
#: With ``prescale``, a fourth row per chunk holds the chunk's ``(m, e)`` in lanes 0, 1.
PRESCALE_BITS = 31 + 6


def _times(x, n: int):
    """``x * n`` for a small constant ``n``, as a sum of shifts of ``x``."""
    terms = [x << i for i in range(n.bit_length()) if n >> i & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def store_command_layout(config: TesseraConfig) -> data.StructLayout:
    """A store command: the output-path descriptor and where the rows come from and go."""
    return data.StructLayout({
        "desc": descriptor_layout(config),
        "acc_addr": range(config.acc_rows),
        "to_spad": 1,
        "spad_addr": range(config.spad_rows),
        "dram_addr": config.addr_bits,
        "stride": config.addr_bits,
        "blocked": 1,        # chunk k of row r at acc_addr + k * rows + r (and the same in the
        #                      scratchpad; in main memory at dram_addr + k * stride + r * cols)
        "transpose": 1,      # to_spad, rows of at most cols elements: write cols x cols
        #                      blocks transposed (weight tiles of the results' transpose)
        "param_addr": range(config.acc_rows),  # LAYERNORM: its gamma / beta table
        "prescale": 1,       # LAYERNORM: the table has a fourth row per chunk, (m, e) in
        #                      lanes 0 and 1: each chunk is first requantize(x, m, e, 32)
    })


class StoreUnit(wiring.Component):
    """Sequences one store command at a time (see the module docstring).

    Members
    -------
    i_cmd : In(stream(store_command_layout))
    o_done : Out(stream(done_layout))
        One completion per command: ``NONE``, ``LOCAL``, or the first DMA error.
    acc : Out(acc_port_signature)
        Reads of the accumulator.
    spad : Out(spad_port_signature)
        Writes of results into the scratchpad.
    op_cmd, op_row : Out(stream)
        Descriptor and chunks to the output path; ``op_out`` : In(stream), its results.
    dma_cmd, dma_row : Out(stream)
        Stores and their rows to the DMA; ``dma_done`` : In(stream), its completions.
    op_param : Out(stream)
        LayerNorm's gamma and beta for each write-out chunk, read from the accumulator,
        offered together with the chunk on ``op_row``.
    nonlinear : Out(1)
        A GELU, Softmax or LayerNorm command is in progress (for the counters).
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        self.cmd_layout = store_command_layout(c)
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "o_done": Out(stream.Signature(done_layout(c))),
            "acc": Out(acc_port_signature(c)),
            "spad": Out(spad_port_signature(c)),
            "op_cmd": Out(stream.Signature(descriptor_layout(c))),
            "op_row": Out(stream.Signature(row_layout(c))),
            "op_out": In(stream.Signature(out_layout(c))),
            "dma_cmd": Out(stream.Signature(block_layout(c))),
            "dma_row": Out(stream.Signature(data.ArrayLayout(signed(8), c.spad_row_bytes))),
            "dma_done": In(stream.Signature(done_layout(c))),
            "op_param": Out(stream.Signature(param_layout(c))),
            "nonlinear": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the command's state, shared by the parts below
        self._command_state(m, s)
        self._accept(m, s)          # check the command, hand the descriptor to the output path
        self._read_side(m, s)       # accumulator rows (and LayerNorm's table) to the output path
        self._write_side(m, s)      # results to the scratchpad or to the DMA
        self._completion(m, s)
        return m

    def _command_state(self, m: Module, s) -> None:
        c = self._config
        C = c.cols
        cmd = Signal(self.cmd_layout)
        desc = cmd.desc
        rows = desc.rows
        length = desc.length

        full = Signal(range(c.max_row_len // C + 1))    # whole chunks in a row
        tail = Signal(range(C))                          # elements in the partial chunk
        chunks = Signal(range(c.max_row_len // C + 2))
        m.d.comb += [full.eq(length // C), tail.eq(length % C)]
        # The chunk count is registered with the command (from the taken descriptor's
        # length), so the check's rows * chunks starts from a flip-flop.
        new_length = self.i_cmd.payload.desc.length
        new_full = Signal.like(full)
        m.d.comb += new_full.eq(new_length // C)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += chunks.eq(new_full + (new_length % C != 0))
        passes = Signal(range(4))
        with m.Switch(desc.op):
            for op, n in PASSES.items():
                with m.Case(op):
                    m.d.comb += passes.eq(n)
            with m.Default():
                m.d.comb += passes.eq(1)

        reading = Signal()
        writing = Signal()
        err = Signal(DmaError)
        err_addr = Signal(c.addr_bits)
        done_pending = Signal()
        desc_pending = Signal()
        busy_prev = Signal()
        m.d.sync += busy_prev.eq(reading | writing)
        m.d.comb += self.nonlinear.eq((reading | writing)
                                      & ((desc.op == OutputOp.GELU) | (desc.op == OutputOp.SOFTMAX)
                                         | (desc.op == OutputOp.LAYERNORM)))

        s.cmd, s.desc, s.rows, s.length = cmd, desc, rows, length
        s.full, s.tail, s.chunks, s.passes = full, tail, chunks, passes
        s.reading, s.writing, s.err, s.err_addr = reading, writing, err, err_addr
        s.done_pending, s.desc_pending, s.busy_prev = done_pending, desc_pending, busy_prev

    def _accept(self, m: Module, s) -> None:
        c = self._config
        C = c.cols
        desc, reading, writing = s.desc, s.reading, s.writing
        err, err_addr, cmd = s.err, s.err_addr, s.cmd
        done_pending, desc_pending, busy_prev = s.done_pending, s.desc_pending, s.busy_prev
        # --- Command: register it, check it in two registered steps (the spans, products;
        # then the comparisons), start it (CHECK_CYCLES after it is taken); hand the
        # descriptor to the output path. ---------------------------------------------------
        accept = self.i_cmd.valid & self.i_cmd.ready
        checking = Signal(CHECK_CYCLES)
        m.d.sync += checking.eq(Cat(accept, checking[:-1]))
        s.start = start = checking[-1]
        with m.If(accept):
            m.d.sync += [cmd.eq(self.i_cmd.payload), err_addr.eq(0)]
        p = cmd
        p_len = p.desc.length
        p_ln = p.desc.op == OutputOp.LAYERNORM
        # Step 1: the spans.
        span = Signal(ROWS_BITS + s.chunks.shape().width)
        groups = Signal(ROWS_BITS + 1)        # transposed blocks of cols rows
        bad_shape = Signal()
        bad_digit = (p.desc.op != OutputOp.SOFTMAX) & \
            (p.desc.consts.out.digit.as_value() > OutputDigit.LOW.value)
        shape = (p.desc.op.as_value() > OutputOp.LAYERNORM.value) | bad_digit | (p_len == 0) | \
            (p_len > c.max_row_len) | (p.transpose & (~p.to_spad | (p_len > C))) | \
            (p.prescale & ~p_ln)
        if c.acc_bits != PARAM_LANE_BITS:
            shape = shape | p_ln     # the gamma / beta table needs 32-bit lanes
        # (s.chunks is the registered command's; a row longer than max_row_len, where it
        # would wrap, is refused as SHAPE before LOCAL is looked at.)
        # LayerNorm's table: PARAM_ROWS rows per chunk, one more with the prescale (as
        # shifts and sums: no multiplier in front of the comparison).
        table_span = Signal(range((PARAM_ROWS + 1) * (c.max_row_len // C + 1) + 1))
        # (rows * chunks by shifts and sums: chunks is narrow, a DSP block would be mostly
        # unused; span holds it for the current command from a cycle after it is taken.)
        m.d.sync += [span.eq(times_unsigned(m, p.desc.rows, s.chunks, "span")),
                     groups.eq((p.desc.rows + C - 1) // C), bad_shape.eq(shape),
                     table_span.eq(Mux(p.prescale, _times(s.chunks, PARAM_ROWS + 1),
                                       _times(s.chunks, PARAM_ROWS)))]
        # Step 2: the comparisons.
        bad_local = Signal()
        spad_span = Mux(p.transpose, groups * C, span)
        m.d.sync += bad_local.eq(
            (p.acc_addr + span > c.acc_rows)
            | (p.to_spad & (p.spad_addr + spad_span > c.spad_rows))
            | (p_ln & (p.param_addr + table_span > c.acc_rows)))
        bad_shape2 = Signal()
        m.d.sync += bad_shape2.eq(bad_shape)
        idle = ~reading & ~writing & ~done_pending & ~desc_pending & ~busy_prev & \
            ~checking.any()
        m.d.comb += self.i_cmd.ready.eq(idle)
        with m.If(start):
            with m.If(bad_shape2):
                m.d.sync += [err.eq(DmaError.SHAPE), done_pending.eq(1)]
            with m.Elif(bad_local):
                m.d.sync += [err.eq(DmaError.LOCAL), done_pending.eq(1)]
            with m.Elif(p.desc.rows == 0):
                m.d.sync += [err.eq(DmaError.NONE), done_pending.eq(1)]
            with m.Else():
                m.d.sync += [err.eq(DmaError.NONE), desc_pending.eq(1), reading.eq(1),
                             writing.eq(1)]
        m.d.comb += [self.op_cmd.valid.eq(desc_pending), self.op_cmd.payload.eq(desc)]
        with m.If(self.op_cmd.valid & self.op_cmd.ready):
            m.d.sync += desc_pending.eq(0)

        s.p, s.p_ln, s.bad_shape, s.bad_local, s.span = p, p_ln, bad_shape2, bad_local, span

    def _read_side(self, m: Module, s) -> None:
        """Every row once per pass, through a small credit-checked FIFO; LayerNorm's table
        rows travel with each chunk of its write-out pass, its prescale applied on the
        way. (One function over 80 lines: the three kinds of rows it reads, prescales,
        table rows and chunks, share one accumulator port and one order of requests and
        responses, which is easiest to check in one place.)"""
        c = self._config
        C = c.cols
        cmd, desc, rows, length, chunks = s.cmd, s.desc, s.rows, s.length, s.chunks
        passes, reading, desc_pending = s.passes, s.reading, s.desc_pending
        p, p_ln, bad_shape, bad_local = s.p, s.p_ln, s.bad_shape, s.bad_local
        # --- Read side: every row once per pass, through a small credit-checked FIFO. ----
        # LAYERNORM's write-out pass reads, before each chunk, its gamma, beta-low and
        # beta-high rows from the table at param_addr; they travel with the chunk.
        # Room for the chunks in the prescale pipeline and on their way from the
        # accumulator (READ_LATENCY_CYCLES from request to answer at the least), and one
        # more. The FIFO's head reaches the output path through a register slice (in
        # _to_output_path).
        depth = 4 + READ_LATENCY_CYCLES + PRESCALE_STAGES
        entry_layout = data.StructLayout({"chunk": row_layout(c), "has_param": 1,
                                          "param": param_layout(c)})
        m.submodules.chunks = q = fifo.SyncFIFO(width=entry_layout.size, depth=depth)
        rd_pass = Signal(range(4))
        # LayerNorm's write-out pass (the third): a register that follows rd_pass.
        ln_out = Signal()
        sub = Signal(2)                                   # 0..2: a table row; then the chunk
        rd_chunk = Signal(range(c.max_row_len // C + 1))
        doing_param = Signal()
        m.d.comb += doing_param.eq(ln_out & (sub != PARAM_ROWS))
        # Chunks in the FIFO or on their way to it (requested, in the prescale pipeline):
        # a register, so the credit check is a comparison with a constant.
        used = Signal(range(depth + 1))
        rd_row = Signal(ROWS_BITS)
        rd_end = Signal(range(c.max_row_len + 2 * C))    # the chunk's first element + C
        rd_ptr = Signal(range(c.acc_rows))
        rd_row_start = Signal(range(c.acc_rows))
        with m.If(s.start):
            m.d.sync += [rd_row.eq(0), rd_pass.eq(0), rd_end.eq(C), ln_out.eq(0),
                         sub.eq(0), rd_chunk.eq(0),
                         rd_ptr.eq(p.acc_addr), rd_row_start.eq(p.acc_addr)]
        # LayerNorm's prescale: first read every chunk's (m, e) from the table into a
        # small memory, then look each chunk's up as its data is read.
        n_chunks = c.max_row_len // C + 1
        m.submodules.prescales = ps = memory.Memory(shape=unsigned(PRESCALE_BITS),
                                                    depth=n_chunks, init=[])
        ps_w = ps.write_port()
        ps_r = ps.read_port(transparent_for=(ps_w,))
        pre = Signal()                      # reading the (m, e) rows
        pre_gap = Signal()                  # one cycle for the last one to be written
        pre_k = Signal(range(n_chunks + 1))
        with m.If(s.start):
            m.d.sync += [pre.eq(p_ln & p.prescale & ~bad_shape & ~bad_local
                                & (p.desc.rows != 0)), pre_k.eq(0)]
        m.d.sync += pre_gap.eq(0)
        rd_last = rd_end >= length
        req = self.acc.req
        table_stride = Mux(cmd.prescale, PARAM_ROWS + 1, PARAM_ROWS)
        # The chunk's table rows start at param_addr + rd_chunk * table_stride: kept in a
        # register that follows rd_chunk (no multiplier in front of the request).
        param_row = Signal(range(c.acc_rows + (PARAM_ROWS + 1) * n_chunks))
        with m.If(s.start):
            m.d.sync += param_row.eq(p.param_addr)
        param_ptr = Signal(range(c.acc_rows + (PARAM_ROWS + 1) * n_chunks))
        m.d.comb += param_ptr.eq(param_row + sub)
        pre_ptr = Signal(range(c.acc_rows + (PARAM_ROWS + 1) * n_chunks))
        m.d.comb += pre_ptr.eq(cmd.param_addr + pre_k * (PARAM_ROWS + 1) + PARAM_ROWS)
        main = reading & ~desc_pending & ~pre & ~pre_gap
        m.d.comb += [req.valid.eq((reading & pre)
                                  | (main & (doing_param | (used < depth)))),
                     req.payload.addr.eq(Mux(pre, pre_ptr,
                                             Mux(doing_param, param_ptr, rd_ptr))),
                     req.payload.write.eq(0)]
        issued = req.valid & req.ready
        # What each read is travels with it (the tag) and comes back with its row: the
        # row's kind (a table row 0..2, or PARAM_ROWS: a chunk), whether the chunk carries
        # table rows, whether it ends its row, whether it is an (m, e) row.
        tag_layout = data.StructLayout({"kind": 2, "param": 1, "last": 1, "pre": 1})
        tag_out, tag_in = Signal(tag_layout), Signal(tag_layout)
        m.d.comb += [tag_out.kind.eq(Mux(doing_param, sub, PARAM_ROWS)),
                     tag_out.param.eq(ln_out), tag_out.last.eq(rd_last), tag_out.pre.eq(pre),
                     req.payload.tag.eq(tag_out), tag_in.eq(self.acc.resp.tag)]
        resp_last, resp_kind, resp_param = tag_in.last, tag_in.kind, tag_in.param
        resp_pre = tag_in.pre
        # The answers come in request order: the (m, e) rows count up from 0, and each
        # chunk's (m, e) is read ahead, for the next chunk to come back (the read port
        # gives the value of the cycle before).
        resp_pre_k = Signal.like(pre_k)
        resp_chunk = Signal.like(rd_chunk)
        resp_chunk_next = Signal.like(rd_chunk)
        resp_chunk_in = self.acc.resp.valid & ~resp_pre & (resp_kind == PARAM_ROWS)
        m.d.comb += resp_chunk_next.eq(Mux(resp_chunk_in, Mux(resp_last, 0, resp_chunk + 1),
                                           resp_chunk))
        m.d.sync += resp_chunk.eq(resp_chunk_next)
        with m.If(self.acc.resp.valid & resp_pre):
            m.d.sync += resp_pre_k.eq(resp_pre_k + 1)
        with m.If(s.start):
            m.d.sync += [resp_pre_k.eq(0), resp_chunk.eq(0)]
        with m.If(issued & pre):
            m.d.sync += pre_k.eq(pre_k + 1)
            with m.If(pre_k + 1 == chunks):
                m.d.sync += [pre.eq(0), pre_gap.eq(1)]
        with m.If(issued & ~pre & doing_param):
            m.d.sync += sub.eq(sub + 1)
        m.d.comb += [ps_r.addr.eq(resp_chunk_next),
                     ps_w.addr.eq(resp_pre_k), ps_w.en.eq(self.acc.resp.valid & resp_pre),
                     ps_w.data.eq(Cat(self.acc.resp.data[0][:MULTIPLIER_BITS],
                                      self.acc.resp.data[1][:SHIFT_BITS]))]
        with m.If(issued & ~pre & ~doing_param):
            m.d.sync += [sub.eq(0),
                         rd_chunk.eq(Mux(rd_last, 0, rd_chunk + 1)),
                         param_row.eq(Mux(rd_last, cmd.param_addr, param_row + table_stride))]
            next_row = Mux(cmd.blocked, rd_row_start + 1, rd_ptr + 1)
            with m.If(~rd_last):
                m.d.sync += [rd_end.eq(rd_end + C),
                             rd_ptr.eq(rd_ptr + Mux(cmd.blocked, rows, 1))]
            with m.Elif(rd_pass + 1 < passes):
                m.d.sync += [rd_end.eq(C), rd_pass.eq(rd_pass + 1),
                             rd_ptr.eq(rd_row_start),
                             ln_out.eq((desc.op == OutputOp.LAYERNORM) & (rd_pass == 1))]
            with m.Else():
                m.d.sync += [rd_end.eq(C), rd_pass.eq(0), ln_out.eq(0),
                             rd_row.eq(rd_row + 1),
                             rd_ptr.eq(next_row), rd_row_start.eq(next_row)]
                with m.If(rd_row + 1 == rows):
                    m.d.sync += reading.eq(0)
        resp_data = self.acc.resp.valid & ~resp_pre & (resp_kind == PARAM_ROWS)
        fifo_write = Signal()         # a chunk leaves the prescale pipeline for the FIFO
        # (Chunks only: neither the table rows nor the (m, e) rows reach the FIFO. Counting
        # the (m, e) reads leaked a credit per chunk and command, until reads stopped.)
        m.d.sync += used.eq(used + (issued & ~doing_param & ~pre) - (q.r_en & q.r_rdy))
        self._to_output_path(m, s, SimpleNamespace(
            q=q, entry_layout=entry_layout, resp_pre=resp_pre, resp_kind=resp_kind,
            resp_last=resp_last, resp_param=resp_param, resp_data=resp_data, ps_r=ps_r,
            fifo_write=fifo_write))

    def _to_output_path(self, m: Module, s, r) -> None:
        """An accumulator chunk (prescaled for LayerNorm when asked: requantize(x, m, e,
        32)) and, in LayerNorm's write-out pass, its gamma and beta rows, into the FIFO
        that feeds the output path."""
        C = self._config.cols
        cmd = s.cmd
        q, entry_layout, resp_pre, resp_kind = r.q, r.entry_layout, r.resp_pre, r.resp_kind
        resp_last, resp_param, ps_r = r.resp_last, r.resp_param, r.ps_r
        table = [Signal(data.ArrayLayout(signed(PARAM_LANE_BITS), C), name=f"ln_{n}")
                 for n in ("gamma", "beta_lo", "beta_hi")]
        for kind, reg in enumerate(table):
            with m.If(self.acc.resp.valid & ~resp_pre & (resp_kind == kind)):
                m.d.sync += reg.eq(self.acc.resp.data)
        # The chunk's gamma and beta, as they stand when its data arrives.
        param = Signal(entry_layout["param"].shape)
        for i in range(C):
            m.d.comb += [param.gamma[i].eq(table[0][i]),
                         param.beta[i].eq(Cat(table[1][i], table[2][i]))]
        # The chunk, prescaled: requantize(x, m, e, 32), rounding half away from zero, in
        # PRESCALE_STAGES registered steps (the response; the prescale; the saturation).
        # Unscaled chunks go the same way with m = 1, e = 0 (requantize(x, 1, 0, 32) = x),
        # so every chunk takes the same steps and they reach the FIFO in order.
        one = Const(1, 1)
        ps_m, ps_e = ps_r.data[:MULTIPLIER_BITS], ps_r.data[MULTIPLIER_BITS:]
        v, ctl, par = r.resp_data, Cat(resp_last, resp_param), param
        v, ctl, par = (stage(m, one, x, f"ps_{n}1") for x, n in ((v, "valid"), (ctl, "ctl"),
                                                                 (par, "param")))
        raw1 = stage(m, one, self.acc.resp.data, "ps_raw1")
        m1 = stage(m, one, Mux(cmd.prescale, ps_m, 1), "ps_m1")
        e1 = stage(m, one, Mux(cmd.prescale, ps_e, 0), "ps_e1")
        lanes = [Signal(signed(32), name=f"ps_lane{i}") for i in range(C)]
        m.d.comb += [lane.eq(raw1[i]) for i, lane in enumerate(lanes)]
        shifted = dyadic_lanes(m, one, lanes, m1, e1, "ps", PARAM_LANE_BITS)
        for k in range(2, PRESCALE_STAGES + 1):
            v, ctl, par = (stage(m, one, x, f"ps_{n}{k}") for x, n in (
                (v, "valid"), (ctl, "ctl"), (par, "param")))
        scaled = Signal(data.ArrayLayout(signed(PARAM_LANE_BITS), C))
        for i in range(C):
            m.d.comb += scaled[i].eq(shifted[i])
        scaled_r = stage(m, one, scaled, "ps_scaled")
        entry = Signal(entry_layout)
        # (An unscaled lane is its accumulator value again: it fits acc_bits.)
        m.d.comb += [entry.chunk.data[i].eq(scaled_r[i]) for i in range(C)]
        m.d.comb += [entry.chunk.last.eq(ctl[0]), entry.has_param.eq(ctl[1]),
                     entry.param.eq(par), r.fifo_write.eq(v)]
        # The FIFO's head into a register slice, the slice to the output path: the output
        # path's lanes start from flip-flops and a multiplexer (from the FIFO's LUT RAM
        # read they set the routed critical path), and its take reaches only the slice's
        # pointer, not the FIFO's read (a registered FIFO head put the take, the read and
        # the head's enables in one cycle: the next critical path), nor the enables of the
        # slice's registers (a SkidBuffer's: the one after; a free register of the
        # TurnSlice loads in every cycle, so the FIFO's level does not reach them either).
        m.submodules.to_output = slice_ = TurnSlice(entry_layout)
        head = Signal(entry_layout)
        m.d.comb += [q.w_data.eq(entry), q.w_en.eq(v),
                     slice_.i.valid.eq(q.r_rdy), slice_.i.payload.eq(q.r_data),
                     q.r_en.eq(slice_.i.ready),
                     head.eq(slice_.o.payload),
                     self.op_row.valid.eq(slice_.o.valid), self.op_row.payload.eq(head.chunk),
                     self.op_param.valid.eq(slice_.o.valid & head.has_param),
                     self.op_param.payload.eq(head.param),
                     slice_.o.ready.eq(self.op_row.ready)]

    def _write_side(self, m: Module, s) -> None:
        """The output path's results: transposed into the scratchpad, into the scratchpad,
        or to main memory through the DMA."""
        c = self._config
        C = c.cols
        cmd, length, tail, p = s.cmd, s.length, s.tail, s.p
        out = self.op_out
        padded = Signal(data.ArrayLayout(signed(8), c.spad_row_bytes))
        for i in range(C):
            m.d.comb += padded[i].eq(out.payload.data[i])
        wr_row = Signal(ROWS_BITS)
        wr_spad = Signal(range(c.spad_rows))
        row_addr = Signal(c.addr_bits)
        # Chunks still owed to the DMA: a row's, or the whole command's (at most acc_rows,
        # as the command's accumulator rows were checked).
        seg_left = Signal(range(max(c.acc_rows, c.max_row_len // C + 1) + 1))
        in_tail = Signal()                                 # the segment is the tail chunk
        # Rows of whole chunks, one after the other: the command is one DMA store.
        total = Signal(range(c.acc_rows + 1))
        contiguous = Signal()
        whole_rows = (tail == 0) & (cmd.stride == length)
        if c.acc_rows >= 1 << ROWS_BITS:
            # More rows than one DMA store can carry go row by row.
            whole_rows = whole_rows & (total < 1 << ROWS_BITS)
        # (rows * full = rows * chunks when the rows are whole chunks: the check's span,
        # which fits, as the command's accumulator rows were checked.)
        m.d.comb += [total.eq(s.span), contiguous.eq(whole_rows)]
        wr_spad_row = Signal(range(c.spad_rows))          # blocked: the row's first chunk
        with m.If(s.start):
            m.d.sync += [wr_row.eq(0), wr_spad.eq(p.spad_addr), wr_spad_row.eq(p.spad_addr),
                         row_addr.eq(p.dram_addr)]

        # Transposed: collect a block of cols chunks (rows), then write its cols columns
        # as rows; rows past the command's last are 0.
        tbuf = [Signal(data.ArrayLayout(signed(8), C), name=f"tbuf{i}") for i in range(C)]
        t_count = Signal(range(C + 1))
        flushing = Signal()
        fl_row = Signal(range(C))
        t_row = Signal(data.ArrayLayout(signed(8), c.spad_row_bytes))
        for i in range(C):
            m.d.comb += t_row[i].eq(Mux(i < t_count, tbuf[i].as_value().word_select(fl_row, 8),
                                        0))
        w = SimpleNamespace(out=out, padded=padded, wr_row=wr_row, wr_spad=wr_spad,
                            row_addr=row_addr, seg_left=seg_left, in_tail=in_tail, total=total,
                            contiguous=contiguous, wr_spad_row=wr_spad_row, tbuf=tbuf,
                            t_count=t_count, flushing=flushing, fl_row=fl_row, t_row=t_row)
        with m.If(cmd.to_spad & cmd.transpose):
            self._write_transposed(m, s, w)
        with m.Elif(cmd.to_spad):
            self._write_scratchpad(m, s, w)
        with m.Else():
            self._write_dma(m, s, w)

    def _write_transposed(self, m: Module, s, w) -> None:
        """Transposed: a block of cols chunks (rows) collected, then written as its cols
        columns (rows past the command's last are 0)."""
        C = self._config.cols
        rows, writing = s.rows, s.writing
        out, wr_row, wr_spad, tbuf = w.out, w.wr_row, w.wr_spad, w.tbuf
        t_count, flushing, fl_row, t_row = w.t_count, w.flushing, w.fl_row, w.t_row
        m.d.comb += [self.spad.req.valid.eq(writing & flushing),
                     self.spad.req.payload.addr.eq(wr_spad),
                     self.spad.req.payload.write.eq(1),
                     self.spad.req.payload.tag.eq(0),
                     self.spad.req.payload.data.eq(t_row),
                     out.ready.eq(writing & ~flushing)]
        with m.If(out.valid & out.ready):
            with m.Switch(t_count):
                for i in range(C):
                    with m.Case(i):
                        m.d.sync += tbuf[i].eq(out.payload.data)
            m.d.sync += [t_count.eq(t_count + 1), wr_row.eq(wr_row + 1)]
            with m.If((t_count == C - 1) | (wr_row + 1 == rows)):
                m.d.sync += [flushing.eq(1), fl_row.eq(0)]
        with m.If(self.spad.req.valid & self.spad.req.ready):
            m.d.sync += [wr_spad.eq(wr_spad + 1), fl_row.eq(fl_row + 1)]
            with m.If(fl_row == C - 1):
                m.d.sync += [flushing.eq(0), t_count.eq(0)]
                with m.If(wr_row == rows):
                    m.d.sync += writing.eq(0)

    def _write_scratchpad(self, m: Module, s, w) -> None:
        """Into the scratchpad, row by row (blocked: a block stride apart)."""
        cmd, rows, writing = s.cmd, s.rows, s.writing
        out, padded, wr_row, wr_spad = w.out, w.padded, w.wr_row, w.wr_spad
        wr_spad_row = w.wr_spad_row
        m.d.comb += [self.spad.req.valid.eq(writing & out.valid),
                     self.spad.req.payload.addr.eq(wr_spad),
                     self.spad.req.payload.write.eq(1),
                     self.spad.req.payload.tag.eq(0),
                     self.spad.req.payload.data.eq(padded),
                     out.ready.eq(writing & self.spad.req.ready)]
        with m.If(out.valid & out.ready):
            m.d.sync += wr_spad.eq(wr_spad + Mux(cmd.blocked, rows, 1))
            with m.If(out.payload.last):
                m.d.sync += wr_row.eq(wr_row + 1)
                with m.If(cmd.blocked):
                    m.d.sync += [wr_spad.eq(wr_spad_row + 1), wr_spad_row.eq(wr_spad_row + 1)]
                with m.If(wr_row + 1 == rows):
                    m.d.sync += writing.eq(0)

    def _write_dma(self, m: Module, s, w) -> None:
        """To main memory through the DMA, a segment at a time."""
        C = self._config.cols
        cmd, rows, full, tail, chunks = s.cmd, s.rows, s.full, s.tail, s.chunks
        writing, err, err_addr = s.writing, s.err, s.err_addr
        out, padded, wr_row, row_addr = w.out, w.padded, w.wr_row, w.row_addr
        seg_left, in_tail, total, contiguous = w.seg_left, w.in_tail, w.total, w.contiguous
        dc = self.dma_cmd.payload
        # Per segment (the whole command, or a row's whole chunks, or its tail): ISSUE
        # its DMA store, pass it its chunks (DATA), WAIT for the DMA.
        issue, data_, wait = 0, 1, 2
        state = Signal(range(3))
        seg_rows = Signal.like(seg_left)
        # Blocked: a row is one DMA store of its chunks, a block stride apart (the tail
        # chunk whole: its lanes past the row are 0).
        m.d.comb += seg_rows.eq(Mux(cmd.blocked, chunks,
                                    Mux(contiguous, total, Mux(in_tail, 1, full))))
        with m.If(state == issue):
            m.d.comb += [self.dma_cmd.valid.eq(writing & (cmd.blocked | in_tail
                                                          | (full != 0))),
                         dc.dram_addr.eq(Mux(in_tail, row_addr + full * C, row_addr)),
                         dc.stride.eq(Mux(cmd.blocked, cmd.stride, C)),
                         dc.rows.eq(seg_rows),
                         dc.row_bytes.eq(Mux(in_tail, tail, C))]
            with m.If(writing & (full == 0) & ~in_tail & ~cmd.blocked):
                m.d.sync += in_tail.eq(1)   # a row shorter than a chunk: tail only
            with m.Elif(self.dma_cmd.valid & self.dma_cmd.ready):
                m.d.sync += [seg_left.eq(seg_rows), state.eq(data_)]
        with m.Elif(state == data_):
            m.d.comb += [self.dma_row.valid.eq(out.valid),
                         self.dma_row.payload.eq(padded),
                         out.ready.eq(self.dma_row.ready)]
            with m.If(out.valid & out.ready):
                m.d.sync += seg_left.eq(seg_left - 1)
                with m.If(seg_left == 1):
                    m.d.sync += state.eq(wait)
        with m.Else():
            m.d.comb += self.dma_done.ready.eq(1)
            with m.If(self.dma_done.valid):
                with m.If((self.dma_done.payload.error != DmaError.NONE)
                          & (err == DmaError.NONE)):
                    m.d.sync += [err.eq(self.dma_done.payload.error),
                                 err_addr.eq(self.dma_done.payload.addr)]
                m.d.sync += state.eq(issue)
                with m.If(~in_tail & (tail != 0) & ~cmd.blocked):
                    m.d.sync += in_tail.eq(1)
                with m.Else():
                    m.d.sync += [in_tail.eq(0),
                                 row_addr.eq(row_addr + Mux(cmd.blocked, C, cmd.stride)),
                                 wr_row.eq(wr_row + 1)]
                    with m.If((contiguous & ~cmd.blocked) | (wr_row + 1 == rows)):
                        m.d.sync += writing.eq(0)

    def _completion(self, m: Module, s) -> None:
        """Once both sides are done, and the scratchpad has written every row (another
        unit may read them as soon as the command is reported done)."""
        busy_prev, reading, writing = s.busy_prev, s.reading, s.writing
        done_pending, err, err_addr = s.done_pending, s.err, s.err_addr
        with m.If(busy_prev & ~reading & ~writing):
            m.d.sync += done_pending.eq(1)
        # Scratchpad writes accepted and not yet written (at most the port's buffer of
        # two and the one being written).
        unwritten = Signal(range(4))
        m.d.sync += unwritten.eq(unwritten + (self.spad.req.valid & self.spad.req.ready)
                                 - self.spad.resp.written)
        m.d.comb += [self.o_done.valid.eq(done_pending & (unwritten == 0)),
                     self.o_done.payload.error.eq(err),
                     self.o_done.payload.addr.eq(err_addr)]
        with m.If(self.o_done.valid & self.o_done.ready):
            m.d.sync += done_pending.eq(0)
