"""The DMA engine: an AXI4 master moving 2-D strided blocks between main memory and the
scratchpad or accumulator.

A block is ``rows`` rows of ``row_bytes`` bytes at ``dram_addr``, ``stride`` bytes apart in
main memory, and ``rows`` consecutive local rows from ``local_addr`` (a local row holds one
block row, zero-padded to the local row's width). Any byte address and length is allowed.

* Rows that are contiguous in main memory (``stride == row_bytes``) form one range; each
  range is cut into INCR bursts of up to 256 beats that never cross a 4 KiB boundary.
* Up to ``config.max_reads`` read and ``config.max_writes`` write bursts are in flight.
  All bursts use ID 0, so responses return in order and match their requests by order.
* Loads realign the bytes of each beat into local rows; loads into the accumulator widen
  each int8 to an ``acc_bits`` lane, multiplied by the command's signed ``scale``, and
  replace or add to the row. *Wide* loads into the accumulator (``wide``) instead read
  rows of whole little-endian ``acc_bits`` lanes (``acc_bits / 8`` bytes each, up to a
  whole accumulator row) and store them as they are, unscaled: biases, or partial sums
  saved earlier. With ``stride`` 0 one such row fills many accumulator rows. A reader's
  realignment buffer moves rows in chunks of :func:`chunk_bytes` (a narrow row is one
  chunk; a wide row may be several, one per cycle, at least a beat each, so the bus
  still sets the pace), and the engine assembles a wide row's chunks before writing it:
  the buffer, its shifters and its output register are sized by a chunk, not by the
  widest row, which is four times wider.
* Stores take rows from ``i_row`` (the output path, or a scratchpad reader), realign them
  to the bus and write them with byte strobes, so partial beats touch only the block's
  bytes.

Errors stop the transfer and are reported in the command's completion (``o_done``): a
bad shape (see :class:`DmaError`), a block outside the main-memory window (``window_base``,
``window_size``) or local rows out of range are refused before any bus traffic; an SLVERR
or DECERR response stops issuing bursts, drains the responses of the bursts in flight
(their data is dropped; write beats still owed go out with no strobes) and reports the
first failing burst's address. The engine is then ready for the next command; it never
waits on anything but the bus.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, Value, signed
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BOUNDARY_BYTES, BURST_INCR, MAX_BURST_BEATS, Axi4Signature, Resp
from .config import TesseraConfig
from .intmath import carry_sum
from .memory import ROWS_BITS, acc_port_signature, spad_port_signature
from .read_arbiter import READ_MEMBERS, ReadArbiter, connect_members, connect_through_ar_slice
from .skid import SkidBuffer

__all__ = ["DmaError", "max_row_bytes", "max_load_row_bytes", "chunk_bytes", "max_chunks",
           "command_layout", "block_layout", "done_layout", "local_write_layout", "times_int8",
           "BurstSplitter", "DmaReader", "DmaWriter", "DmaEngine", "ROWS_BITS", "SCALE_BITS",
           "CHECK_CYCLES", "check_cycles"]

SCALE_BITS = 16


class DmaError(enum.Enum, shape=3):
    """Completion code of a DMA command."""

    NONE = 0
    SLVERR = 1     # a subordinate error response
    DECERR = 2     # a decode error response (no memory there)
    WINDOW = 3     # the block is not inside the main-memory window
    LOCAL = 4      # the local rows are not inside the scratchpad or accumulator
    SHAPE = 5      # rows or row_bytes is 0; row_bytes is wider than a local row (a scratchpad
    #                row; cols bytes for loads into the accumulator; acc_row_bytes for wide
    #                loads, which must also be whole lanes); wide or shift but not into the
    #                accumulator


def max_row_bytes(config: TesseraConfig) -> int:
    """The widest row of a store, or of a load into the scratchpad."""
    return config.spad_row_bytes


def max_load_row_bytes(config: TesseraConfig) -> int:
    """The widest row of a load: a whole accumulator row for wide loads."""
    return max(config.spad_row_bytes, config.acc_row_bytes)


def command_layout(config: TesseraConfig) -> data.StructLayout:
    """A DMA command (both directions)."""
    return data.StructLayout({
        "dram_addr": config.addr_bits,
        "stride": config.addr_bits,
        "rows": ROWS_BITS,
        "row_bytes": range(max_load_row_bytes(config) + 1),
        "local_addr": range(max(config.spad_rows, config.acc_rows)),
        "to_acc": 1,        # loads: into the accumulator (widened) instead of the scratchpad
        "accumulate": 1,    # loads into the accumulator: add to the rows instead of replacing
        "scale": signed(SCALE_BITS),  # loads into the accumulator: multiply each int8 by this
        "wide": 1,          # loads into the accumulator: rows of whole acc_bits lanes
        #                     (little-endian, acc_bits / 8 bytes each), stored as they are
        "shift": 1,         # loads into the accumulator: each lane times 2**DIGIT_SHIFT
        #                     (a wide activation's high digits, hw/requant.py)
    })


def block_layout(config: TesseraConfig) -> data.StructLayout:
    """A store command: the block in main memory (the rows come on a stream)."""
    return data.StructLayout({
        "dram_addr": config.addr_bits,
        "stride": config.addr_bits,
        "rows": ROWS_BITS,
        "row_bytes": range(max_row_bytes(config) + 1),
    })


def done_layout(config: TesseraConfig) -> data.StructLayout:
    return data.StructLayout({"error": DmaError, "addr": config.addr_bits})


def chunk_bytes(config: TesseraConfig) -> int:
    """Bytes a reader moves from its realignment buffer to the local memories at a time:
    the smallest power of two that holds a narrow row (a scratchpad row, or ``cols`` bytes
    for a narrow load into the accumulator) and a bus beat, at most the widest row."""
    narrow = max(config.spad_row_bytes, config.cols, config.bus_bytes)
    return min(1 << (narrow - 1).bit_length(), max_load_row_bytes(config))


def max_chunks(config: TesseraConfig) -> int:
    """Chunks of the widest row (a wide load's whole accumulator row)."""
    return -(-max_load_row_bytes(config) // chunk_bytes(config))


def local_write_layout(config: TesseraConfig) -> data.StructLayout:
    """A reader's local write: a chunk of a row, bytes ``part * chunk_bytes`` and up (zero
    past the block's row), whether it ends the row (``end``; a narrow row is one chunk),
    where the row goes and, for the accumulator, how the engine turns it into lanes
    (``wide``; else each int8 times ``scale``, for which ``scale_x3 = 3 scale`` and
    ``scale_neg = -scale``)."""
    return data.StructLayout({
        "addr": range(max(config.spad_rows, config.acc_rows)),
        "to_acc": 1,
        "accumulate": 1,
        "wide": 1,
        "shift": 1,
        "scale": signed(SCALE_BITS),
        "scale_x3": signed(SCALE_BITS + 2),
        "scale_neg": signed(SCALE_BITS + 1),
        "part": range(max_chunks(config)),
        "end": 1,
        "chunk": data.ArrayLayout(signed(8), chunk_bytes(config)),
    })


def times_int8(m: Module, x, scale, scale_x3, scale_neg, name: str):
    """``x * scale`` for an int8 ``x``, by shifts and sums (DSP blocks are kept for the
    array and the output path).

    ``x``'s radix-4 digits, the three low ones unsigned (0..3) and the top one signed
    (-2..1), each choose among ``0, scale, 2 scale, 3 scale`` (or ``-scale, -2 scale``),
    precomputed once per command; the four are summed in a tree of two carry chains'
    depth (:func:`~.intmath.carry_sum`). Returns a signed value of at least 24 bits whose
    low 24 bits are the exact product.
    """
    terms = []
    for k in range(4):
        d1, d0 = x[2 * k + 1], x[2 * k]
        if k < 3:
            term = Mux(d1, Mux(d0, scale_x3, scale << 1), Mux(d0, scale, 0))
        else:   # the sign digit: -2 d1 + d0
            term = Mux(d1, Mux(d0, scale_neg, scale_neg << 1), Mux(d0, scale, 0))
        terms.append(term << (2 * k))
    return carry_sum(m, terms, name)


def _burst_layout(config: TesseraConfig) -> data.StructLayout:
    return data.StructLayout({
        "addr": config.addr_bits,      # beat-aligned start
        "len": 8,                      # beats - 1
        "first": range(config.bus_bytes),  # byte offset of the first valid byte
        "bytes": range(MAX_BURST_BEATS * config.bus_bytes + 1),  # valid bytes in the burst
        "start": config.addr_bits,     # first valid byte's address (for error reports)
    })


class BurstSplitter(wiring.Component):
    """Cuts a 2-D block into AXI INCR bursts, one per cycle.

    A command is taken, set up for a cycle (its first range: the whole block, ``total``
    bytes, when its rows are contiguous, else its first row), then cut. Each burst's
    length and end come from registers without an adder in series with another: a range
    is kept as ``lo``, the offset of its last byte from the current burst's beat-aligned
    start, and the beats to the next burst boundary (4 KiB, or the longest burst) are the
    address's own low bits, inverted; the next burst's start is the current one's
    boundary, an increment.

    Parameters
    ----------
    config : TesseraConfig
    row_bytes_limit : int
        The widest row a command may have.

    Members
    -------
    i_cmd : In(stream)
        ``addr``, ``stride``, ``rows``, ``row_bytes`` (all nonzero), and ``total``, the
        block's bytes ``rows * row_bytes``, read only when the rows are contiguous
        (``stride == row_bytes``; the DMA takes it from its command check, which sums the
        block's extent ``(rows - 1) * stride + row_bytes``, so no multiplier is needed here).
    o_burst : Out(stream)
        ``addr`` (beat-aligned), ``len`` (beats - 1), ``first`` (offset of the first valid
        byte in the first beat), ``bytes`` (valid bytes), ``start`` (address of that byte).
    abort : In(1)
        Drop the rest of the block.
    busy : Out(1)
    """

    #: Cycles from taking a command to its first burst on ``o_burst``: the set-up, then
    #: the first cut.
    START_CYCLES = 2

    def __init__(self, config: TesseraConfig, row_bytes_limit: int):
        self._config = config
        self._row_bytes_limit = row_bytes_limit
        a = config.addr_bits
        self.cmd_layout = data.StructLayout({
            "addr": a, "stride": a, "rows": ROWS_BITS, "row_bytes": range(row_bytes_limit + 1),
            "total": ROWS_BITS + row_bytes_limit.bit_length()})
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "o_burst": Out(stream.Signature(_burst_layout(config))),
            "abort": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        bb = c.bus_bytes
        k = (bb - 1).bit_length()                  # address bits inside a beat (bus_bytes >= 8)
        a = c.addr_bits
        bnd = (BOUNDARY_BYTES - 1).bit_length()    # 12
        max_bytes = min(MAX_BURST_BEATS * bb, BOUNDARY_BYTES)
        lg_max = (max_bytes - 1).bit_length()
        max_beats = max_bytes // bb
        range_bits = ROWS_BITS + self._row_bytes_limit.bit_length()

        setup = Signal()
        active = Signal()
        rows_left = Signal(ROWS_BITS)
        next_row = Signal(a)
        stride = Signal(a)
        row_bytes = Signal(range(self._row_bytes_limit + 1))
        rb_m1 = Signal(range(self._row_bytes_limit))
        total = Signal(range_bits)
        contiguous = Signal()
        # The current range: its next byte, and lo = (offset of that byte in its beat) +
        # (bytes left in the range) - 1, the offset of its last byte from the beat.
        addr = Signal(a)
        lo = Signal(range_bits + 1)

        m.d.comb += [self.busy.eq(setup | active | self.o_burst.valid),
                     self.i_cmd.ready.eq(~setup & ~active & ~self.o_burst.valid)]
        with m.If(self.o_burst.ready):
            m.d.sync += self.o_burst.valid.eq(0)

        off = addr[:k]
        # A burst ends max_bytes (a power of two dividing 4 KiB) after its beat-aligned
        # start, or at 4 KiB, whichever comes first. The beats from addr's beat to the
        # 4 KiB boundary, minus 1, are ~addr's bits k..11; to_end (the burst's beats to
        # its end, minus 1) is that, at most max_beats - 1.
        to_4k = (~addr)[k:bnd]
        if max_beats == BOUNDARY_BYTES // bb:
            to_end, at_4k = to_4k, Const(1)
        else:
            lg_beats = max_beats.bit_length() - 1
            at_4k = ~to_4k[lg_beats:].any()
            to_end = Mux(at_4k, to_4k[:lg_beats], max_beats - 1)
        # The range ends in this burst when its last byte is within to_end + 1 beats.
        fin = Signal()
        m.d.comb += fin.eq(lo[k:] <= to_end)
        # Bytes up to the boundary: (to_end + 1) beats less the offset.
        w_end = len(to_end)
        to_end_bytes = Mux(off == 0, Cat(Const(0, k), to_end + 1), Cat((-off)[:k], to_end))
        # Going on in the range: the next burst starts at the boundary, beat-aligned.
        past_4k = Cat(Const(0, bnd), addr[bnd:] + 1)[:a]
        past_max = Cat(Const(0, k), addr[k:lg_max], addr[lg_max:] + 1)[:a] \
            if lg_max < bnd else past_4k
        w_lo = len(lo) - k
        # lo less the burst's (to_end + 1) beats: lo + ~to_end in the beat bits.
        lo_on = Cat(lo[:k], (lo[k:] + ~Cat(to_end, Const(0, w_lo - w_end)))[:w_lo])
        off_m1 = Signal(signed(k + 1))
        m.d.comb += off_m1.eq(off - 1)

        with m.If(self.abort):
            m.d.sync += [setup.eq(0), active.eq(0), self.o_burst.valid.eq(0)]
        with m.Elif(self.i_cmd.ready):
            # Idle: the command's fields are taken every cycle, and kept once one is valid
            # (so the command's valid, the end of its checks, enables two flip-flops, not
            # every register of the splitter).
            p = self.i_cmd.payload
            same = p.stride == p.row_bytes
            m.d.sync += [
                setup.eq(self.i_cmd.valid),
                addr.eq(p.addr),
                total.eq(p.total),
                contiguous.eq(same),
                rows_left.eq(Mux(same, 0, p.rows - 1)),
                next_row.eq(p.addr + p.stride),
                stride.eq(p.stride),
                row_bytes.eq(p.row_bytes),
                rb_m1.eq(p.row_bytes - 1),
            ]
        with m.Elif(setup):
            m.d.sync += [setup.eq(0), active.eq(1),
                         lo.eq(Mux(contiguous, total, row_bytes) + off_m1)]
        with m.Elif(active & (~self.o_burst.valid | self.o_burst.ready)):
            b = self.o_burst.payload
            m.d.sync += [
                self.o_burst.valid.eq(1),
                b.addr.eq(Cat(Const(0, k), addr[k:])),
                b.len.eq(Mux(fin, lo[k:], to_end)),
                b.first.eq(off),
                b.bytes.eq(Mux(fin, lo - off_m1, to_end_bytes)),
                b.start.eq(addr),
            ]
            with m.If(fin):
                with m.If(rows_left == 0):
                    m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [addr.eq(next_row),
                                 lo.eq(next_row[:k] + rb_m1),
                                 next_row.eq(next_row + stride), rows_left.eq(rows_left - 1)]
            with m.Else():
                m.d.sync += [addr.eq(Mux(at_4k, past_4k, past_max)), lo.eq(lo_on)]
        return m


#: Bits of ``rows - 1`` the block's extent takes per cycle: two radix-4 digits, each a
#: choice among ``0, stride, 2 stride, 3 stride`` (shifted), added in two carry chains.
SPAN_BITS_PER_CYCLE = 4
#: Clock cycles from taking a command to starting (or refusing) it, for blocks of at most
#: ``2**SPAN_BITS_PER_CYCLE`` rows: the command is registered, the block's extent
#: ``(rows - 1) * stride`` is taken by shifts and sums (one cycle per
#: :data:`SPAN_BITS_PER_CYCLE` bits of ``rows - 1``, at least one: :func:`check_cycles`),
#: its end is summed, then compared. No path from a command port to the splitter is
#: longer than two carry chains, and no DSP block is used.
CHECK_CYCLES = 3


def check_cycles(rows: int) -> int:
    """Cycles from taking a command of ``rows`` rows to starting (or refusing) it."""
    steps = max(rows - 1, 0).bit_length()
    return CHECK_CYCLES - 1 + max(1, -(-steps // SPAN_BITS_PER_CYCLE))


class _Check(enum.Enum, shape=2):
    IDLE = 0
    SPAN = 1    # (rows - 1) * stride, SPAN_BITS_PER_CYCLE bits of rows - 1 per cycle
    END = 2     # the block's extent and end
    START = 3   # the comparisons: start the command, or refuse it


def _check_command(m: Module, c: TesseraConfig, p, new, accept, window_base, window_size,
                   is_load: bool):
    """Check the command ``p`` registered from ``new`` when ``accept`` is high, before any
    bus traffic (see :data:`CHECK_CYCLES`).

    Returns ``(busy, start, code, extent)``: a command is being checked; it is checked
    this cycle, with the error code ``code`` (``DmaError.NONE`` if fine); and ``extent``,
    the bytes from its first byte to its last, ``(rows - 1) * stride + row_bytes`` (the
    whole block, ``rows * row_bytes``, when its rows are contiguous).
    """
    a = c.addr_bits
    phase = Signal(_Check)
    # The extent of the block, (rows - 1) * stride, by shifts and sums (a multiply by a
    # 16-bit operand would take DSP blocks): least significant digits first, stride and
    # 3 * stride shifted left as the digits of rows - 1 are used, until no set bit is
    # left. 3 * stride is summed as the command is taken.
    step = SPAN_BITS_PER_CYCLE
    left = Signal(ROWS_BITS)                 # the bits of rows - 1 not yet used
    sh1 = Signal(a + ROWS_BITS)              # stride << (step * k)
    sh3 = Signal(a + ROWS_BITS)              # 3 * stride << (step * k)
    span = Signal(a + ROWS_BITS)
    with m.If(accept):
        m.d.sync += [phase.eq(_Check.SPAN), span.eq(0),
                     left.eq(Mux(new.rows == 0, 0, new.rows - 1)),
                     sh1.eq(new.stride), sh3.eq(new.stride + (new.stride << 1))]

    def multiple(digit, shift):
        """``digit * stride << (step * k + shift)`` for a radix-4 digit."""
        return Mux(digit[1], Mux(digit[0], sh3, sh1 << 1), Mux(digit[0], sh1, 0)) << shift

    with m.If(phase == _Check.SPAN):
        m.d.sync += [span.eq(carry_sum(m, [span, multiple(left[0:2], 0),
                                           multiple(left[2:4], 2)], "span")),
                     left.eq(left >> step), sh1.eq(sh1 << step), sh3.eq(sh3 << step)]
        with m.If((left >> step) == 0):
            m.d.sync += phase.eq(_Check.END)
    with m.If(phase == _Check.END):
        m.d.sync += phase.eq(_Check.START)
    with m.If(phase == _Check.START):
        m.d.sync += phase.eq(_Check.IDLE)

    # The local rows and the shape, from the registered command (registered twice, so
    # they are ready with the end).
    rb = p.row_bytes
    bad_shape = (p.rows == 0) | (rb == 0)
    if is_load:
        if c.acc_bits % 8 == 0:
            bad_wide = ~p.to_acc | (rb > c.acc_row_bytes) | (rb % (c.acc_bits // 8) != 0)
        else:
            bad_wide = Const(1)  # lanes are not whole bytes in main memory
        bad_narrow = Mux(p.to_acc, rb > c.cols, rb > c.spad_row_bytes)
        bad_shape = bad_shape | Mux(p.wide, bad_wide, bad_narrow) | (p.shift & ~p.to_acc)
        local_end = Signal(ROWS_BITS + 1 + len(p.local_addr))
        m.d.comb += local_end.eq(p.local_addr + p.rows)
        bad_local = local_end > Mux(p.to_acc, c.acc_rows, c.spad_rows)
    else:
        bad_shape = bad_shape | (rb > max_row_bytes(c))
        bad_local = Const(0)
    shape1, local1, below1 = Signal(), Signal(), Signal()
    window_end = Signal(a + 1)
    m.d.sync += [shape1.eq(bad_shape), local1.eq(bad_local),
                 below1.eq(p.dram_addr < window_base),
                 window_end.eq(window_base + window_size)]
    shape2, local2, below2 = Signal(), Signal(), Signal()
    m.d.sync += [shape2.eq(shape1), local2.eq(local1), below2.eq(below1)]
    # The block's end and extent.
    end = Signal(a + ROWS_BITS + 2)
    extent = Signal(a + ROWS_BITS + 1)
    span_rb = carry_sum(m, [span, p.row_bytes], "extent")
    with m.If(phase == _Check.END):
        m.d.sync += [extent.eq(span_rb), end.eq(carry_sum(m, [span_rb, p.dram_addr], "end"))]
    code = Signal(DmaError)
    with m.If(shape2):
        m.d.comb += code.eq(DmaError.SHAPE)
    with m.Elif(below2 | (end > window_end)):
        m.d.comb += code.eq(DmaError.WINDOW)
    with m.Elif(local2):
        m.d.comb += code.eq(DmaError.LOCAL)
    with m.Else():
        m.d.comb += code.eq(DmaError.NONE)
    return phase != _Check.IDLE, phase == _Check.START, code, extent


def _resp_error(resp):
    return Mux(resp == Resp.DECERR, DmaError.DECERR, DmaError.SLVERR)


_WRITE_MEMBERS = ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "awready",
                  "wdata", "wstrb", "wlast", "wvalid", "wready", "bid", "bresp", "bvalid",
                  "bready")


def _bus_members(config: TesseraConfig, names) -> dict:
    full = Axi4Signature(config.addr_bits, config.bus_bits).members
    return {n: full[n] for n in names}


class _Transfer:
    """What the reader and the writer share: a command checked and accepted, its burst
    splitter, the address channel (``ar`` or ``aw``), the per-beat byte accounting of the
    data channel and the completion stream. ``unit`` is the component, ``prefix`` its
    address channel's prefix, ``info`` the FIFO that remembers each burst in flight."""

    def __init__(self, m: Module, unit, prefix: str, max_bursts: int, is_load: bool):
        c = unit._config
        self.m, self.unit, self.c = m, unit, c
        bb = c.bus_bytes
        m.submodules.split = self.split = split = BurstSplitter(
            c, max_load_row_bytes(c) if is_load else max_row_bytes(c))
        # (Each burst with the valid bytes of its first beat, so the data channel's byte
        # count does not wait for arithmetic on the FIFO's output.)
        burst_bits = _burst_layout(c).size
        m.submodules.info = self.info = info = fifo.SyncFIFO(
            width=burst_bits + (bb).bit_length(), depth=max_bursts)
        self.cmd = cmd = Signal(unit.i_cmd.payload.shape())
        self.running = running = Signal()
        self.err = err = Signal(DmaError)
        self.err_addr = Signal(c.addr_bits)
        self.outstanding = Signal(range(max_bursts + 1))
        self.done_pending = done_pending = Signal()
        self.failed = err != DmaError.NONE

        # Command: register it, check it (check_cycles), then start the splitter (a refused
        # command only reports).
        accept = unit.i_cmd.valid & unit.i_cmd.ready
        with m.If(accept):
            m.d.sync += cmd.eq(unit.i_cmd.payload)
        checking, start, code, extent = _check_command(
            m, c, cmd, unit.i_cmd.payload, accept, unit.window_base, unit.window_size, is_load)
        self.start = start
        m.d.comb += [
            unit.i_cmd.ready.eq(~running & ~done_pending & ~split.busy & ~checking),
            split.i_cmd.payload.addr.eq(cmd.dram_addr),
            split.i_cmd.payload.stride.eq(cmd.stride),
            split.i_cmd.payload.rows.eq(cmd.rows),
            split.i_cmd.payload.row_bytes.eq(cmd.row_bytes),
            split.i_cmd.payload.total.eq(extent),
            split.i_cmd.valid.eq(start & (code == DmaError.NONE)),
            split.abort.eq(running & self.failed),
        ]
        with m.If(start):
            m.d.sync += [running.eq(1), err.eq(code),
                         self.err_addr.eq(Mux(code == DmaError.NONE, 0, cmd.dram_addr))]

        # Address channel: a burst goes out while fewer than max_bursts are in flight.
        burst = split.o_burst.payload
        self.addr_fire = fire = Signal()
        valid = getattr(unit, f"{prefix}valid")
        m.d.comb += [
            getattr(unit, f"{prefix}id").eq(0),
            getattr(unit, f"{prefix}addr").eq(burst.addr),
            getattr(unit, f"{prefix}len").eq(burst.len),
            getattr(unit, f"{prefix}size").eq((bb - 1).bit_length()),
            getattr(unit, f"{prefix}burst").eq(BURST_INCR),
            valid.eq(split.o_burst.valid & (self.outstanding < max_bursts) & info.w_rdy
                     & ~self.failed),
            fire.eq(valid & getattr(unit, f"{prefix}ready")),
            split.o_burst.ready.eq(fire),
            info.w_data.eq(Cat(burst.as_value(),
                               Mux(burst.bytes < bb - burst.first, burst.bytes,
                                   bb - burst.first))),
            info.w_en.eq(fire),
        ]

        # Data channel: the valid bytes [lo, lo + n) of the current beat of the oldest burst.
        self.head = head = Signal(_burst_layout(c))
        m.d.comb += head.eq(info.r_data[:burst_bits])
        self.first_beat = Signal(init=1)
        self.rem = Signal.like(head.bytes)
        self.cur_rem = Mux(self.first_beat, head.bytes, self.rem)
        self.lo = Mux(self.first_beat, head.first, 0)
        self.n = Signal(range(bb + 1))
        # n = min(cur_rem, bb - lo): for the first beat written with the burst; for the
        # others (lo = 0) from the register rem.
        m.d.comb += self.n.eq(Mux(self.first_beat, info.r_data[burst_bits:],
                                  Mux(self.rem < bb, self.rem, bb)))

    def beat_taken(self, fire, last) -> None:
        """Account for a data beat (``last``: the final beat of the oldest burst)."""
        m = self.m
        with m.If(fire):
            m.d.sync += [self.first_beat.eq(last), self.rem.eq(self.cur_rem - self.n)]

    def complete(self, finished, buffers) -> None:
        """Report the command once ``finished``; clear ``buffers`` for the next one."""
        m, unit = self.m, self.unit
        with m.If(finished):
            m.d.sync += [self.running.eq(0), self.done_pending.eq(1),
                         self.first_beat.eq(1)] + [b.eq(0) for b in buffers]
        m.d.comb += [unit.o_done.valid.eq(self.done_pending),
                     unit.o_done.payload.error.eq(self.err),
                     unit.o_done.payload.addr.eq(self.err_addr)]
        with m.If(unit.o_done.valid & unit.o_done.ready):
            m.d.sync += self.done_pending.eq(0)


def _byte_shift(m: Module, value, amount, nbytes: int, *, left: bool, name: str) -> Value:
    """``value`` shifted by ``amount`` whole bytes (left or right, zeros in), cut or padded
    to ``nbytes`` bytes. A log shifter: one constant shift and one 2-way choice per bit of
    ``amount``, no stage wider than needed. (Amaranth's ``x << (n * 8)`` is as wide as its
    largest shift, and its netlist check visits every input bit of every output bit: with
    a 512-bit bus, elaborating the DMA took four minutes.)"""
    x = Value.cast(value).as_unsigned()
    amount = Value.cast(amount).as_unsigned()
    width = nbytes * 8
    if left:        # the stages are the output's width: what passes it is never needed
        x = Cat(x, Const(0, max(0, width - len(x))))[:width]
    for k in range(len(amount)):
        step = 8 << k
        if left:
            moved = Cat(Const(0, step), x)[:width]
        elif step < len(x):
            moved = x[step:]
        else:
            moved = Const(0, len(x))
        stage = Signal(len(x), name=f"{name}_by{step // 8}")   # a signal per stage: no tree
        m.d.comb += stage.eq(Mux(amount[k], moved, x))
        x = stage
    return Cat(x, Const(0, max(0, width - len(x))))[:width]


def _written_from(m: Module, buf, new, fill, nbytes: int) -> Signal:
    """``nbytes`` bytes: ``buf``'s below ``fill``, then ``new``'s from byte ``fill`` up (a
    realignment buffer with data written over its tail, whose bytes past ``fill`` are
    never read). A byte-wise choice from registers, no OR with the old tail."""
    placed = _byte_shift(m, new, fill, nbytes, left=True, name="placed")
    out = Signal(nbytes * 8)
    for i in range(nbytes):
        byte = placed[i * 8:(i + 1) * 8]
        if i * 8 < len(buf):
            byte = Mux(fill > i, buf[i * 8:(i + 1) * 8], byte)
        m.d.comb += out[i * 8:(i + 1) * 8].eq(byte)
    return out


class DmaReader(wiring.Component):
    """Loads: main memory to scratchpad or accumulator (see the module docstring).

    The realignment buffer holds ``bus_bytes + 2 * chunk_bytes`` bytes: a beat beside a
    chunk (:func:`chunk_bytes`), after up to a chunk's bytes already sent (the content
    starts less than a chunk in; the buffer moves down a whole chunk at a time). Rows
    leave it a chunk per cycle.

    Members
    -------
    i_cmd : In(stream(command_layout))
    o_done : Out(stream(done_layout))
        One completion per command, in order.
    o_write : Out(stream(local_write_layout))
        Rows for the scratchpad or the accumulator, in order, a chunk per transfer; the
        engine assembles a wide row's chunks, and widens and scales narrow rows for the
        accumulator.
    window_base, window_size : In
        The main-memory window the block must lie in.
    may_write : In(1)
        Local writes are allowed (another reader's older command has finished).
    settled : In(1)
        Every local write taken has been written (the memories take writes into a
        buffer): a load is reported done only then, as another unit may read its rows.
    issuing : Out(1)
        Bursts of the current command remain to be issued.
    ar*, r* : the AXI4 read channels.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout(c))),
            "o_done": Out(stream.Signature(done_layout(c))),
            "o_write": Out(stream.Signature(local_write_layout(c))),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
            "may_write": In(1, init=1),
            "settled": In(1, init=1),
            "issuing": Out(1),
            **_bus_members(c, READ_MEMBERS),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        bb = c.bus_bytes
        wc = chunk_bytes(c)
        n_max = max_chunks(c)
        cap = bb + wc  # realignment buffer, bytes
        t = _Transfer(m, self, "ar", c.max_reads, is_load=True)
        cmd, failed, info = t.cmd, t.failed, t.info
        rows_done = Signal(ROWS_BITS)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += rows_done.eq(0)

        # --- R: each beat's valid bytes, moved down to byte 0, into a two-beat FIFO. -----
        # (It decouples the bus from the realignment: rready depends on the FIFO's level
        # only, and the buffer's update starts from registers.)
        n_bits = (bb).bit_length()
        clear = Signal()
        # (Its head is a register, so the realignment starts from flip-flops; three
        # entries keep a beat per cycle.)
        beats = fifo.SyncFIFOBuffered(width=bb * 8 + n_bits, depth=3)
        m.submodules.beats = beats = ResetInserter(clear)(beats)
        r_fire = Signal()
        m.d.comb += [
            # After an error the beats of the bursts in flight are drained and dropped.
            self.rready.eq(info.r_rdy & (beats.w_rdy | failed)),
            r_fire.eq(self.rvalid & self.rready),
            info.r_en.eq(r_fire & self.rlast),
        ]
        t.beat_taken(r_fire, self.rlast)
        with m.If(r_fire & self.rresp[1] & ~failed):  # SLVERR or DECERR
            m.d.sync += [t.err.eq(_resp_error(self.rresp)), t.err_addr.eq(t.head.start)]
        # The n valid bytes: byte i is kept when i < n (a comparison each, not the carry
        # chain of 2**(8 n) - 1, which ended the reader's longest path).
        keep = Cat((t.n > i).replicate(8) for i in range(bb))
        m.d.comb += [beats.w_data.eq(Cat(_byte_shift(m, self.rdata, t.lo, bb, left=False,
                                                     name="rdata") & keep, t.n)),
                     beats.w_en.eq(r_fire & ~failed)]
        m.d.sync += t.outstanding.eq(t.outstanding + t.addr_fire - (r_fire & self.rlast))

        # --- The chunks of a row: all of chunk_bytes but the last, which has the rest.
        # From the command, registered (ready long before its start: the check takes 3
        # cycles): the last chunk's index and size, and which of its bytes are the row's.
        rb = cmd.row_bytes
        lg_wc = (wc - 1).bit_length()
        last_k = Signal(range(n_max))
        last_size = Signal(range(wc + 1))
        if n_max > 1:       # wc is a power of two
            m.d.sync += [last_k.eq((rb - 1) >> lg_wc), last_size.eq((rb - 1)[:lg_wc] + 1)]
        else:
            m.d.sync += last_size.eq(rb)
        last_mask = Signal(wc)
        m.d.sync += last_mask.eq(Cat(i < last_size for i in range(wc)))

        def size(is_last):
            return Mux(is_last, last_size, wc)

        # The current chunk (its index in the row, whether it is the row's last, its size)
        # and the next two (whether each is the last): a row of one chunk repeats it.
        part = Signal(range(n_max))
        last0, last1, last2 = Signal(), Signal(), Signal()
        k2 = Signal(range(n_max))     # the index of the chunk after next
        size0 = Signal(range(wc + 1))

        # --- The realignment buffer: a chunk out when it holds one, a beat in when the
        # bytes left after that are fewer than the next chunk. The content starts at byte
        # ``off`` of the buffer (less than a chunk in) and ends at ``wpos``: a chunk leaves
        # from ``off`` (a shifter on its way into the local writes' register), and the
        # buffer moves down by a whole chunk, a constant shift, once ``off`` passes one. So
        # the next buffer is the beat written over the bytes from ``wpos`` up, then at
        # most that constant shift: no variable shifter after the handshake. The counts'
        # candidates are computed beside each other from registers (fill, fill - the
        # current chunk's size, fill - the sizes of it and the next), then chosen.
        span = 2 * wc + bb    # off < wc; after a take fewer than wc + bb bytes are held
        buf = Signal(span * 8)
        fill = Signal(range(cap + 1))                 # the content's bytes
        off = Signal(range(wc))
        wpos = Signal(range(span + 1))                # off + fill
        fill_less = Signal(range(-2 * wc, cap + 1))   # fill - size0
        fill_less2 = Signal(range(-3 * wc, cap + 1))  # fill - size0 - size1
        beat_bytes, n = beats.r_data[:bb * 8], beats.r_data[bb * 8:]
        # A chunk leaves the buffer into a register slice (the local writes): its ready is
        # a register, so the memories' and the engine's handshake stays out of this logic.
        # (Not a TurnSlice: its multiplexer in front of the engine's scaling of the lanes
        # was a longer path, routed, than a SkidBuffer's enables.)
        m.submodules.writes = writes = SkidBuffer(local_write_layout(c))
        wiring.connect(m, writes.o, wiring.flipped(self.o_write))
        w_pending = writes.o.valid | ~writes.i.ready        # a chunk in the slice
        # may_write: an older command's reader has finished writing (see DmaEngine).
        live = t.running & ~failed
        chunk_ready = live & ~fill_less[-1] & self.may_write      # fill >= size0
        m.d.comb += self.issuing.eq(t.split.busy)
        emit = Signal()
        m.d.comb += emit.eq(chunk_ready & writes.i.ready)
        take = Signal()
        m.d.comb += take.eq(live & beats.r_rdy & Mux(emit, fill_less2[-1], fill_less[-1]))
        m.d.comb += beats.r_en.eq(take)
        # The FIFO's head is written over the bytes from wpos up whether it is taken or
        # not (the buffer's bytes past wpos are never sent).
        beat_in = _written_from(m, buf, beat_bytes, wpos, span + bb)
        off_next = off + size0
        wraps = off_next >= wc                  # the chunk leaving ends past a chunk
        shift = Signal()
        m.d.comb += shift.eq(emit & wraps)
        size2 = size(last2)
        fill_new = Mux(take, Mux(emit, fill_less + n, fill + n), Mux(emit, fill_less, fill))
        less_new = Mux(take, Mux(emit, fill_less2 + n, fill_less + n),
                       Mux(emit, fill_less2, fill_less))
        less2_new = Mux(take, Mux(emit, fill_less2 + n - size2, fill_less2 + n),
                        Mux(emit, fill_less2 - size2, fill_less2))
        wpos_new = Mux(take, Mux(shift, wpos + n - wc, wpos + n), Mux(shift, wpos - wc, wpos))
        with m.If(take | emit):
            m.d.sync += [buf.eq(Mux(shift, beat_in[wc * 8:(wc + span) * 8], beat_in[:span * 8])),
                         fill.eq(fill_new), wpos.eq(wpos_new),
                         fill_less.eq(less_new), fill_less2.eq(less2_new)]
        with m.If(emit):
            m.d.sync += off.eq(Mux(wraps, off_next - wc, off_next))
        with m.If(emit):
            k2_next = Mux(k2 == last_k, 0, k2 + 1)
            m.d.sync += [part.eq(Mux(last0, 0, part + 1)), last0.eq(last1), last1.eq(last2),
                         size0.eq(size(last1)), k2.eq(k2_next), last2.eq(k2_next == last_k)]
        with m.If(t.start):
            # A new command: fill is 0, the first chunk is chunk 0 of the first row. Chunk
            # i of a row is the last when i mod chunks = last_k.
            if n_max > 2:
                start_last1 = last_k <= 1
                start_last2 = (last_k == 0) | (last_k == 2)
                start_k2 = Mux(start_last1, 0, 2)
            else:   # (rows of at most two chunks: no comparison that cannot fail)
                start_last1, start_last2, start_k2 = Const(1), last_k == 0, 0
            m.d.sync += [fill_less.eq(-size(last_k == 0)),
                         fill_less2.eq(-(size(last_k == 0) + size(start_last1))),
                         part.eq(0), last0.eq(last_k == 0), last1.eq(start_last1),
                         last2.eq(start_last2), size0.eq(size(last_k == 0)), k2.eq(start_k2)]

        # --- Local writes: one chunk per cycle, zero past the row's bytes. The engine
        # assembles wide rows, and widens and scales rows for the accumulator (one set of
        # lanes for both readers).
        chunk = Signal(data.ArrayLayout(signed(8), wc))
        in_chunk = Mux(last0, last_mask, (1 << wc) - 1)
        head = _byte_shift(m, buf, off, wc, left=False, name="head")
        for i in range(wc):
            m.d.comb += chunk[i].eq(Mux(in_chunk[i], head[i * 8:(i + 1) * 8], 0))
        # The scale's multiples that the engine's lanes choose among, registered from the
        # command (they are ready long before its first row: the check takes 3 cycles).
        scale_x3 = Signal.like(self.o_write.payload.scale_x3)
        scale_neg = Signal.like(self.o_write.payload.scale_neg)
        m.d.sync += [scale_x3.eq(cmd.scale + (cmd.scale << 1)), scale_neg.eq(-cmd.scale)]
        w = writes.i.payload
        m.d.comb += [
            writes.i.valid.eq(emit),
            w.addr.eq(cmd.local_addr + rows_done), w.chunk.eq(chunk), w.part.eq(part),
            w.end.eq(last0), w.to_acc.eq(cmd.to_acc),
            w.accumulate.eq(cmd.accumulate), w.wide.eq(cmd.wide), w.shift.eq(cmd.shift),
            w.scale.eq(cmd.scale),
            w.scale_x3.eq(scale_x3), w.scale_neg.eq(scale_neg),
        ]
        with m.If(emit & last0):
            m.d.sync += rows_done.eq(rows_done + 1)

        # Finished once every row is out of the buffer and written (also after an error:
        # a row taken from the buffer is written, as it was when rows were written as
        # they left the buffer). No row leaves once all have (the bursts bring exactly
        # rows x row_bytes bytes, and row_bytes > 0), so this is of registers only.
        finished = t.running & (t.outstanding == 0) & ~t.split.busy & ~w_pending \
            & self.settled & (failed | (rows_done == cmd.rows))
        m.d.comb += clear.eq(finished)
        t.complete(finished, [fill, buf, off, wpos])
        return m


class DmaWriter(wiring.Component):
    """Stores: rows from ``i_row`` to main memory (see the module docstring).

    Members
    -------
    i_cmd : In(stream(block_layout))
        The block in main memory; the rows come from ``i_row``, exactly ``rows`` of them
        per command, the first ``row_bytes`` bytes of each written.
    i_row : In(stream(ArrayLayout(signed(8), spad_row_bytes)))
    o_done : Out(stream(done_layout))
    window_base, window_size : In
    aw*, w*, b* : the AXI4 write channels.
    """

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        self.row_layout = data.ArrayLayout(signed(8), max_row_bytes(c))
        super().__init__({
            "i_cmd": In(stream.Signature(block_layout(c))),
            "i_row": In(stream.Signature(self.row_layout)),
            "o_done": Out(stream.Signature(done_layout(c))),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
            **_bus_members(c, _WRITE_MEMBERS),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        bb = c.bus_bytes
        rb_max = max_row_bytes(c)
        cap = bb + rb_max  # realignment buffer, bytes
        t = _Transfer(m, self, "aw", c.max_writes, is_load=False)
        cmd, failed, winfo = t.cmd, t.failed, t.info
        # The start address of each burst in flight, to report a failing one.
        m.submodules.baddr = baddr = fifo.SyncFIFO(width=c.addr_bits, depth=c.max_writes)
        m.d.comb += [baddr.w_data.eq(t.split.o_burst.payload.start), baddr.w_en.eq(t.addr_fire)]
        rows_taken = Signal(ROWS_BITS)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += rows_taken.eq(0)

        # --- W: beats from the realignment buffer, strobes on the block's bytes only. ----
        # Each beat's plan (its valid bytes [lo, lo + n), its strobes, whether it ends its
        # burst) is made a beat ahead from the burst FIFO into a register slice, so the W
        # channel's handshake starts from flip-flops.
        plan_layout = data.StructLayout({"n": range(bb + 1), "lo": range(bb), "strobe": bb,
                                         "last": 1})
        m.submodules.plan = plan = SkidBuffer(plan_layout)
        plan_fire = plan.i.valid & plan.i.ready
        plan_last = t.cur_rem == t.n
        m.d.comb += [
            plan.i.valid.eq(winfo.r_rdy),
            plan.i.payload.n.eq(t.n), plan.i.payload.lo.eq(t.lo), plan.i.payload.last.eq(plan_last),
            plan.i.payload.strobe.eq(((Const(1, bb + 1) << t.n) - 1) << t.lo),
            winfo.r_en.eq(plan_fire & plan_last),
        ]
        t.beat_taken(plan_fire, plan_last)
        beat = plan.o.payload
        buf = Signal(cap * 8)
        fill = Signal(range(cap + 1))
        w_fire = Signal()
        m.d.comb += [
            self.wvalid.eq(plan.o.valid & (fill >= beat.n)),
            self.wdata.eq(_byte_shift(m, buf, beat.lo, bb, left=True, name="wdata")),
            self.wstrb.eq(Mux(failed, 0, beat.strobe)),
            self.wlast.eq(beat.last),
            w_fire.eq(self.wvalid & self.wready),
            plan.o.ready.eq(w_fire),
        ]
        owed = winfo.r_rdy | plan.o.valid       # beats of the bursts out still to send

        # --- Rows in. Once a failed store owes no more beats, its remaining rows are
        # taken and dropped, so the row source never waits on a dead transfer.
        rb = cmd.row_bytes
        fill_less = Signal(range(-bb, cap + 1))     # fill - the beat's bytes (registers)
        m.d.comb += fill_less.eq(fill - beat.n)
        discard = failed & ~t.split.busy & ~owed
        want_row = t.running & (rows_taken != cmd.rows)
        # Room for a row counted without this cycle's beat leaving (registers only: the
        # W channel's handshake stays out of the row source's ready); a full buffer takes
        # its next row a cycle later.
        m.d.comb += self.i_row.ready.eq(want_row & (discard | (fill + rb <= cap)))
        row_fire = self.i_row.valid & self.i_row.ready
        in_row = Signal(rb_max)     # which bytes of a row are the block's, from the command
        m.d.sync += in_row.eq(Cat(i < rb for i in range(rb_max)))
        row_bytes = Signal(rb_max * 8)
        for i in range(rb_max):
            m.d.comb += row_bytes[i * 8:(i + 1) * 8].eq(Mux(in_row[i], self.i_row.payload[i], 0))
        # The row source's head is written over the bytes from fill up whether it is taken
        # or not (the bytes past fill are never sent: the strobes cover a beat's bytes
        # only), then the beat's bytes leave: both shifts from registers, w_fire chooses
        # last. (Placing the row after the beat had left made Yosys share one shifter
        # between the two outcomes, with w_fire in front of it.)
        add_row = row_fire & ~discard
        held = _written_from(m, buf, row_bytes, fill, cap)
        row_in = Mux(add_row, rb, 0)
        m.d.sync += [buf.eq(Mux(w_fire, _byte_shift(m, held, beat.n, cap, left=False,
                                                    name="sent"), held)),
                     fill.eq(Mux(w_fire, fill_less.as_unsigned()[:len(fill)] + row_in,
                                 fill + row_in))]
        with m.If(row_fire):
            m.d.sync += rows_taken.eq(rows_taken + 1)

        # --- B. --------------------------------------------------------------------------
        b_fire = Signal()
        m.d.comb += [self.bready.eq(baddr.r_rdy), b_fire.eq(self.bvalid & self.bready),
                     baddr.r_en.eq(b_fire)]
        with m.If(b_fire & self.bresp[1] & ~failed):
            m.d.sync += [t.err.eq(_resp_error(self.bresp)), t.err_addr.eq(baddr.r_data)]
        m.d.sync += t.outstanding.eq(t.outstanding + t.addr_fire - b_fire)

        t.complete(t.running & (t.outstanding == 0) & ~t.split.busy & ~owed
                   & (rows_taken == cmd.rows) & ~t.addr_fire, [fill, buf])
        return m


class DmaEngine(wiring.Component):
    """Loads and stores on one AXI4 master; they run concurrently on the read and write
    channels.

    Loads alternate between two readers, so that one command's bursts go out while the
    previous command's data is still arriving: back-to-back loads pay the memory latency
    once, not once per command. Order is kept: a reader issues its bursts only after the
    older command's are all out (responses then come back in command order), writes the
    local memories only once the older command has finished writing (so overlapping rows,
    a bias then a residual into the same accumulator rows, land in order), and
    completions are reported in command order.

    Members
    -------
    bus : Out(Axi4Signature)
    i_load, o_load_done, i_store, i_store_row, o_store_done : streams
        See :class:`DmaReader` and :class:`DmaWriter`.
    spad, acc : Out(MemoryPortSignature)
        The loads' write ports.
    window_base, window_size : In
    """

    READERS = 2

    def __init__(self, config: TesseraConfig):
        self._config = config
        c = config
        super().__init__({
            "bus": Out(Axi4Signature(c.addr_bits, c.bus_bits)),
            "i_load": In(stream.Signature(command_layout(c))),
            "o_load_done": Out(stream.Signature(done_layout(c))),
            "i_store": In(stream.Signature(block_layout(c))),
            "i_store_row": In(stream.Signature(data.ArrayLayout(signed(8), max_row_bytes(c)))),
            "o_store_done": Out(stream.Signature(done_layout(c))),
            "spad": Out(spad_port_signature(c)),
            "acc": Out(acc_port_signature(c)),
            "window_base": In(c.addr_bits),
            "window_size": In(c.addr_bits),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        rds = [DmaReader(c) for _ in range(self.READERS)]
        for i, rd in enumerate(rds):
            m.submodules[f"reader{i}"] = rd
        m.submodules.writer = wr = DmaWriter(c)
        wiring.connect(m, wiring.flipped(self.i_store), wr.i_cmd)
        # The rows to store through a register slice: the writer's ready (its buffer's
        # fill against the W channel) stays out of the row source's timing.
        m.submodules.store_rows = rows = SkidBuffer(self.i_store_row.payload.shape())
        wiring.connect(m, wiring.flipped(self.i_store_row), rows.i)
        wiring.connect(m, rows.o, wr.i_row)
        wiring.connect(m, wr.o_done, wiring.flipped(self.o_store_done))
        for unit in (*rds, wr):
            m.d.comb += [unit.window_base.eq(self.window_base),
                         unit.window_size.eq(self.window_size)]
        for name in _WRITE_MEMBERS:
            ours, theirs = getattr(self.bus, name), getattr(wr, name)
            if self.bus.signature.members[name].flow == Out:
                m.d.comb += ours.eq(theirs)
            else:
                m.d.comb += theirs.eq(ours)

        # Commands alternate between the readers; ``order`` holds, oldest first, which
        # reader has each command not yet completed.
        m.submodules.order = order = fifo.SyncFIFO(width=1, depth=self.READERS)
        nxt = Signal()
        head = order.r_data[0]
        for i, rd in enumerate(rds):
            m.d.comb += [rd.i_cmd.payload.eq(self.i_load.payload),
                         rd.i_cmd.valid.eq(self.i_load.valid & (nxt == i) & order.w_rdy)]
        m.d.comb += [self.i_load.ready.eq(Mux(nxt, rds[1].i_cmd.ready, rds[0].i_cmd.ready)
                                          & order.w_rdy),
                     order.w_data.eq(nxt), order.w_en.eq(self.i_load.valid
                                                         & self.i_load.ready)]
        with m.If(self.i_load.valid & self.i_load.ready):
            m.d.sync += nxt.eq(~nxt)
        # The accumulator's writes leave through a register slice: the lanes that widen
        # and scale a row (a multiplexer and two carry chains) end in its register, not
        # in the accumulator's request buffer.
        m.submodules.acc_writes = acc_writes = SkidBuffer(self.acc.req.payload.shape())
        wiring.connect(m, acc_writes.o, wiring.flipped(self.acc.req))
        # Local writes taken and not yet written: the oldest command's (only it writes),
        # counted from the register where the readers' writes meet (below) on: one there,
        # two in the accumulator's slice, two in each port's buffer and one being written.
        unwritten = Signal(range(8))
        # Only the oldest command's reader writes: which reader that is next cycle, as a
        # register (the order FIFO's head is a LUT RAM read, too slow in front of the
        # readers' realignment logic). Commands alternate between the readers, and so do
        # their completions.
        oldest = Signal()
        pushed = self.i_load.valid & self.i_load.ready
        popped = self.o_load_done.valid & self.o_load_done.ready
        with m.If(popped):
            m.d.sync += oldest.eq(~oldest)
        level_next = order.level + pushed - popped
        may_write = [Signal(name=f"may_write{i}") for i in range(self.READERS)]
        for i in range(self.READERS):
            m.d.sync += may_write[i].eq((level_next != 0) & ((oldest ^ popped) == i))
        # Completions in order.
        for i, rd in enumerate(rds):
            is_head = order.r_rdy & (head == i)
            m.d.comb += [rd.may_write.eq(may_write[i]), rd.settled.eq(unwritten == 0),
                         rd.o_done.ready.eq(is_head & self.o_load_done.ready)]
        m.d.comb += [
            self.o_load_done.valid.eq(order.r_rdy & Mux(head, rds[1].o_done.valid,
                                                         rds[0].o_done.valid)),
            self.o_load_done.payload.eq(Mux(head, rds[1].o_done.payload.as_value(),
                                            rds[0].o_done.payload.as_value())),
            order.r_en.eq(self.o_load_done.valid & self.o_load_done.ready),
        ]
        # Local writes: only the oldest command's reader writes, so one set of lanes widens
        # and scales the rows of both, and one register assembles the chunks of their wide
        # rows: chunk k of a row is kept until its last chunk comes, then the row is
        # written whole (bytes past its last chunk are 0). The two readers' writes meet in
        # a register (``w``): the choice between them, by a reader's valid that selects
        # every payload bit, is not in series with the lanes.
        a, b = rds[0].o_write, rds[1].o_write
        w = Signal(local_write_layout(c))
        w_valid = Signal()
        spad, acc = self.spad.req, acc_writes.i
        ready = Mux(w.end, Mux(w.to_acc, acc.ready, spad.ready), 1)
        room = ~w_valid | ready
        incoming = Signal(local_write_layout(c))
        m.d.comb += incoming.eq(Mux(b.valid, b.payload.as_value(), a.payload.as_value()))
        with m.If(room):
            m.d.sync += [w_valid.eq(a.valid | b.valid), w.eq(incoming)]
        m.d.sync += unwritten.eq(unwritten + ((a.valid | b.valid) & room & incoming.end)
                                 - self.spad.resp.written - self.acc.resp.written)
        wc, n_max = chunk_bytes(c), max_chunks(c)
        kept = Signal(max(n_max - 1, 0) * wc * 8)
        with m.If(w_valid & ~w.end):
            for k in range(n_max - 1):
                with m.If(w.part == k):
                    m.d.sync += kept[k * wc * 8:(k + 1) * wc * 8].eq(w.chunk.as_value())
        row = Signal(n_max * wc * 8)
        for k in range(n_max):
            # chunk k: this one, an earlier one kept, or past the row (0)
            earlier = Mux(w.part > k, kept[k * wc * 8:(k + 1) * wc * 8], 0) \
                if k < n_max - 1 else 0
            m.d.comb += row[k * wc * 8:(k + 1) * wc * 8].eq(
                Mux(w.part == k, w.chunk.as_value(), earlier))
        m.d.comb += [
            a.ready.eq(room & a.valid), b.ready.eq(room & b.valid),
            spad.valid.eq(w_valid & w.end & ~w.to_acc),
            spad.payload.addr.eq(w.addr),
            spad.payload.write.eq(1),
            spad.payload.tag.eq(0),
            spad.payload.data.eq(w.chunk.as_value()[:c.spad_row_bytes * 8]),
            acc.valid.eq(w_valid & w.end & w.to_acc),
            acc.payload.addr.eq(w.addr),
            acc.payload.write.eq(1),
            acc.payload.accumulate.eq(w.accumulate),
            acc.payload.shift.eq(w.shift),
            acc.payload.tag.eq(0),
        ]
        for i in range(c.cols):
            # chunk_bytes >= cols: a narrow row is one chunk
            lane = times_int8(m, w.chunk[i], w.scale, w.scale_x3, w.scale_neg, f"scaled{i}")
            if c.acc_bits % 8 == 0:
                # A wide row holds the lanes in order, each little-endian, so lane i is
                # the row's bits i * acc_bits and up; past row_bytes (whole lanes) it is 0.
                wide_lane = row[i * c.acc_bits:(i + 1) * c.acc_bits].as_signed()
                lane = Mux(w.wide, wide_lane, lane)
            m.d.comb += acc.payload.data[i].eq(lane)

        # AR in command order: the younger reader goes once the older one's bursts are out
        # (the choice a register, a cycle behind: a stale choice costs a cycle, as the
        # arbiter only serves a reader that asks, and the owner FIFO routes the beats).
        # R beats go to the reader of their burst. A register slice on AR keeps the
        # readers' burst logic and the accelerator's own arbiter apart.
        m.submodules.arbiter = arb = ReadArbiter(c.addr_bits, c.bus_bits,
                                                 depth=self.READERS * c.max_reads)
        m.d.sync += arb.choose.eq(Mux(order.r_rdy & Mux(head, rds[1].issuing, rds[0].issuing),
                                      head, Mux(order.r_rdy, ~head, nxt)))
        connect_members(m, rds[0], arb.m0)
        connect_members(m, rds[1], arb.m1)
        connect_through_ar_slice(m, arb.bus, self.bus, "ar_slice")
        return m
