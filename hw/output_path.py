"""The output path: requantization, ReLU, i-GELU, i-Softmax and i-LayerNorm on accumulator
rows, ``config.out_lanes`` elements per cycle (by default ``cols``).

A self-contained stream component: a command processor gives it one operation descriptor
on ``i_cmd`` and a feeder (the accumulator's read port) streams the rows on ``i_row``; the
results leave on ``o_row``, to the DMA or back into the scratchpad.

Streams
-------
``i_cmd`` (:func:`descriptor_layout`)
    ``op`` (:class:`OutputOp`), ``length`` (the logical row length ``L``,
    ``1 .. config.max_row_len``), ``rows`` (0 is a command that does nothing), the
    requantization ``m`` / ``e``, and ``consts``, a union of ``out`` (every operation but
    SOFTMAX: the i-GELU constants, ``gelu``, ``golden.gelu.GeluConstants``' integers, and
    ``digit``, :class:`OutputDigit`: the int8 result or a digit of a wide activation) and
    the i-exp constants (``exp``: ``golden.softmax.ExpConstants``' integers). A descriptor
    is taken once the previous command's chunks have left the pipelines (it changes their
    constants). A descriptor with an unknown ``op`` or ``digit``, or a length outside
    ``1 .. max_row_len``, is dropped and sets ``error``.
``i_row`` (:func:`row_layout`)
    ``data`` (``cols`` accumulator values) and ``last``. A logical row of ``L`` elements is
    ``ceil(L / cols)`` chunks; lanes of the final chunk beyond ``L`` are ignored. The unit
    counts chunks from ``L``; ``last`` must mark each row's final chunk (in every pass), and
    a chunk whose ``last`` disagrees sets ``error`` (the count still rules).
    Multi-pass operations take each row once per pass, back to back: pass 0, pass 1, ...
    of row 0, then row 1, and so on (:data:`PASSES`):

    ========================  ======  ============================================
    op                        passes  per pass
    ========================  ======  ============================================
    NONE, REQUANT, RELU, GELU 1       write-out
    SOFTMAX                   3       maximum; sum of exp; write-out
    LAYERNORM                 3       sum, min, max; sum of squares; write-out
    ========================  ======  ============================================
``i_param`` (:func:`param_layout`)
    LAYERNORM's per-channel ``gamma`` (int16, ``golden.layernorm`` ``gamma_q``) and ``beta``
    (signed 46 bits, ``beta_q``), one beat with each chunk of the write-out pass, lane for
    lane, for every row (the feeder repeats them per row). A write-out chunk is taken only
    together with its ``i_param`` beat (both in the same cycle): offer both, do not wait for
    one to be taken before offering the other.
``o_row`` (:func:`out_layout`)
    ``data`` (``cols`` bytes) and ``last``: one chunk per chunk of the write-out pass,
    ``last`` on each row's final chunk. Lanes beyond ``L`` are 0. Bytes are int8, except
    for SOFTMAX, whose bytes are unsigned probability codes 0..255 at scale ``2**-8`` in the
    same bits (read the lane as ``uint8``).

Operations (the golden model in ``tessera.sw.golden`` is the bit-exact specification):

* NONE: ``saturate(x, 8)`` (requantization with ``m = 1``, ``e = 0``).
* REQUANT: ``requant.requantize(x, m, e, 8)``. RELU: ``requant.relu`` of that.
* GELU: ``requantize(gelu.i_gelu(x, consts.out.gelu), m, e, 8)``.
* With ``consts.out.digit`` HIGH or LOW, every operation but SOFTMAX requantizes to 16
  bits instead of 8 and writes that digit of the wide value (``requant.output_digit``).
* SOFTMAX: ``softmax.i_softmax(x, consts.exp, shift=e)``, rounded to ``8 - e`` bits
  (``e`` = 0: codes 0..255 at ``2**-8``; ``e`` = 1: 0..127 at ``2**-7``, which the array
  can multiply as int8). The Softmax unit gives 9-bit floored codes; the rounding is here.
* LAYERNORM: ``layernorm.i_layernorm`` with its ``m, e`` in the descriptor and its
  ``gamma_q`` / ``beta_q`` on ``i_param``.

Multipliers: i-GELU, i-Softmax and i-LayerNorm never hold chunks at the same time (a
descriptor is taken once the previous command has left the pipelines), so they share one
bank of :data:`~.multipliers.BANK_SLOTS` 18 x 18 multipliers per lane
(:class:`~.multipliers.LaneMultipliers`), each slot's operands chosen by the command's
operation and its product registered in the bank; requantization has its own.

Lanes: the units are ``config.out_lanes`` lanes wide; the streams are ``cols`` wide. With
fewer lanes than columns, each chunk (and its ``i_param`` beat) goes to the units as pieces
of ``out_lanes`` lanes, one per cycle, pieces past the row's end left out, and is taken
with its last piece; the results are packed back into ``cols``-byte chunks (so a chunk
takes as many cycles as it has pieces, and everything below counts pieces).

Timing: every pass takes one chunk per cycle while the streams flow. Between passes the
input waits for the pass's statistic (:func:`gap_cycles`); after a command's last chunk
the next descriptor waits for the pipelines to drain (:func:`command_gap_cycles`). Latency
from a chunk's handshake to its output chunk's: :func:`latency_cycles`. The pipelines never
stall: every register loads every cycle, and a chunk that will leave on ``o_row`` is taken
only while the output FIFO (:data:`OUT_FIFO_DEPTH` entries) has a place for it and for every
chunk ahead of it in the pipelines (a credit count, its room a register). So ``o_row.ready``
reaches no pipeline register, backpressure stops the input instead of the datapath, and
statistics passes, which leave nothing, go on while the output waits.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import MAX_ROW_LEN, TesseraConfig
from .gelu import GELU_CONSTS, GeluLanes
from .gelu import LATENCY as GELU_LATENCY
from .gelu import MUL_SLOTS as GELU_SLOTS
from .intmath import STEPS_PER_CYCLE, chunk_tag_layout
from .layernorm import BETA_BITS, GAMMA_BITS, LayerNormUnit
from .layernorm import LATENCY as LN_LATENCY
from .layernorm import MUL_SLOTS as LN_SLOTS
from .layernorm import gap_cycles as ln_gap_cycles
from .multipliers import BANK_SLOTS, LaneMultipliers
from .requant import LATENCY as RQ_LATENCY
from .requant import MULTIPLIER_BITS, SHIFT_BITS, OutputDigit, RequantLanes
from .softmax import EXP_CONSTS, SoftmaxUnit
from .softmax import LATENCY as SM_LATENCY
from .softmax import MUL_SLOTS as SM_SLOTS
from .softmax import gap_cycles as sm_gap_cycles

__all__ = ["OutputOp", "OutputDigit", "OUT_CONSTS", "OUT_FIFO_DEPTH", "OutputPath", "PASSES",
           "MAX_ROW_LEN", "ROWS_BITS", "STEPS_PER_CYCLE", "descriptor_layout", "row_layout",
           "param_layout", "out_layout", "latency_cycles", "gap_cycles", "command_gap_cycles",
           "row_cycles"]

#: Width of the descriptor's row count.
ROWS_BITS = 16
#: Cycles between loading a descriptor and taking its first chunk: the units register
#: their per-command constants from it.
SETUP_CYCLES = 1


#: Entries of the output FIFO. A chunk that will leave on ``o_row`` holds one from its take
#: until it leaves the FIFO, so a chunk per cycle needs the longest latency's worth; a power
#: of two at least that (LUT RAM comes 16 words deep), never less than the longest latency
#: plus one for the room register.
OUT_FIFO_DEPTH = 1 << max(GELU_LATENCY + RQ_LATENCY, SM_LATENCY,
                          LN_LATENCY + RQ_LATENCY).bit_length()


class OutputOp(enum.Enum, shape=3):
    """The operation of an output-path command."""

    NONE = 0
    REQUANT = 1
    RELU = 2
    GELU = 3
    SOFTMAX = 4
    LAYERNORM = 5


#: Passes over each row, per operation.
PASSES = {OutputOp.NONE: 1, OutputOp.REQUANT: 1, OutputOp.RELU: 1, OutputOp.GELU: 1,
          OutputOp.SOFTMAX: 3, OutputOp.LAYERNORM: 3}


def _length_bits(config: TesseraConfig) -> int:
    return config.max_row_len.bit_length()


#: The constants of every operation but SOFTMAX: GELU's, and which digit of the result
#: to write (:class:`~.requant.OutputDigit`). Softmax's exp constants take the same bits.
OUT_CONSTS = data.StructLayout({"gelu": GELU_CONSTS, "digit": OutputDigit})


def descriptor_layout(config: TesseraConfig) -> data.StructLayout:
    """The layout of an ``i_cmd`` descriptor for ``config``."""
    return data.StructLayout({
        "op": OutputOp,
        "length": unsigned(_length_bits(config)),
        "rows": unsigned(ROWS_BITS),
        "m": unsigned(MULTIPLIER_BITS),
        "e": unsigned(SHIFT_BITS),
        "consts": data.UnionLayout({"out": OUT_CONSTS, "exp": EXP_CONSTS}),
    })


def row_layout(config: TesseraConfig, lanes: int | None = None) -> data.StructLayout:
    """The layout of an ``i_row`` chunk: ``cols`` (or ``lanes``) accumulator values and
    ``last``."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.acc_bits), lanes or config.cols), "last": 1})


def param_layout(config: TesseraConfig, lanes: int | None = None) -> data.StructLayout:
    """The layout of an ``i_param`` beat: LayerNorm's ``gamma`` and ``beta`` lanes."""
    n = lanes or config.cols
    return data.StructLayout({"gamma": data.ArrayLayout(signed(GAMMA_BITS), n),
                              "beta": data.ArrayLayout(signed(BETA_BITS), n)})


def out_layout(config: TesseraConfig, lanes: int | None = None) -> data.StructLayout:
    """The layout of an ``o_row`` chunk: ``cols`` (or ``lanes``) bytes and ``last``."""
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes or config.cols),
                              "last": 1})


def latency_cycles(op: OutputOp) -> int:
    """Clock edges from a write-out chunk's ``i_row`` handshake to the earliest handshake of
    its ``o_row`` chunk: the pipeline stages (the unit's, then requantization's), plus one
    for the output FIFO."""
    op = OutputOp(op)
    stages = {OutputOp.GELU: GELU_LATENCY + RQ_LATENCY,
              OutputOp.SOFTMAX: SM_LATENCY,
              OutputOp.LAYERNORM: LN_LATENCY + RQ_LATENCY}.get(op, RQ_LATENCY)
    return stages + 1


def gap_cycles(op: OutputOp, lanes: int,
               steps_per_cycle: int = STEPS_PER_CYCLE) -> tuple[int, ...]:
    """Idle ``i_row`` cycles after the last chunk of each statistics pass of a row (one entry
    per pass but the last) while the streams flow: the time to finish the pass's per-row
    value (``softmax.gap_cycles``, ``layernorm.gap_cycles``) with ``lanes`` lanes
    (``config.out_lanes``)."""
    op = OutputOp(op)
    if op == OutputOp.SOFTMAX:
        return sm_gap_cycles(lanes, steps_per_cycle)
    if op == OutputOp.LAYERNORM:
        return ln_gap_cycles(lanes, steps_per_cycle)
    return ()


def command_gap_cycles(op: OutputOp) -> int:
    """Idle ``i_row`` cycles between the last chunk of a command and the first chunk of the
    next, while the streams flow: the pipelines drain, then the descriptor is taken and set
    up."""
    op = OutputOp(op)
    stages = {OutputOp.GELU: GELU_LATENCY + RQ_LATENCY,
              OutputOp.SOFTMAX: SM_LATENCY,
              OutputOp.LAYERNORM: LN_LATENCY + RQ_LATENCY}.get(op, RQ_LATENCY)
    return stages + 1 + SETUP_CYCLES


def row_cycles(op: OutputOp, length: int, lanes: int,
               steps_per_cycle: int = STEPS_PER_CYCLE) -> int:
    """Input cycles per row of ``length`` elements in a long command whose streams flow,
    with ``lanes`` lanes (``config.out_lanes``): one per ``lanes`` elements in every pass,
    plus the gaps between passes."""
    op = OutputOp(op)
    pieces = -(-length // lanes)
    return PASSES[op] * pieces + sum(gap_cycles(op, lanes, steps_per_cycle))


def _mask(remaining, cols: int, taken: int = 0):
    """The lane mask of a chunk with ``remaining - taken`` elements of its row left."""
    return Cat([remaining > taken + j for j in range(cols)])


class _State(enum.Enum, shape=2):
    IDLE = 0
    SETUP = 1
    RUN = 2


class OutputPath(wiring.Component):
    """The output path's non-linear units behind one set of streams (see the module doc).

    Parameters
    ----------
    config : TesseraConfig
        ``cols`` (the streams' lanes), ``out_lanes`` (the units' lanes), ``acc_bits``
        (input width, at most 32) and ``max_row_len`` (at most 4096, the widths of the
        golden model).
    steps_per_cycle : int
        Bits per cycle of the iterative square root and reciprocal.

    Members
    -------
    i_cmd : In(stream.Signature(descriptor_layout(config)))
    i_row : In(stream.Signature(row_layout(config)))
    i_param : In(stream.Signature(param_layout(config)))
    o_row : Out(stream.Signature(out_layout(config)))
    idle : Out(1)
        No command running, nothing in flight, nothing waiting in the output FIFO.
    error : Out(1)
        Sticky: a descriptor was dropped, or a chunk's ``last`` disagreed with the length.
    error_clear : In(1)
        Clears ``error``.
    """

    def __init__(self, config: TesseraConfig, steps_per_cycle: int = STEPS_PER_CYCLE):
        self._config = config
        self.lanes = config.out_lanes
        self.steps_per_cycle = steps_per_cycle
        self.cmd_layout = descriptor_layout(config)
        self.row_layout = row_layout(config)
        self.param_layout = param_layout(config)
        self.out_layout = out_layout(config)
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "i_row": In(stream.Signature(self.row_layout)),
            "i_param": In(stream.Signature(self.param_layout)),
            "o_row": Out(stream.Signature(self.out_layout)),
            "idle": Out(1),
            "error": Out(1),
            "error_clear": In(1),
        })

    @property
    def config(self) -> TesseraConfig:
        return self._config

    def latency_cycles(self, op: OutputOp) -> int:
        """See :func:`latency_cycles`."""
        return latency_cycles(op)

    def gap_cycles(self, op: OutputOp) -> tuple[int, ...]:
        """See :func:`gap_cycles`."""
        return gap_cycles(op, self.lanes, self.steps_per_cycle)

    def elaborate(self, platform):
        c, C = self._config, self.lanes
        m = Module()
        s = SimpleNamespace()
        if C == c.cols:
            s.i_row, s.i_param, s.o_row = self.i_row, self.i_param, self.o_row
        else:
            # The units' streams, ``lanes`` wide, between the splitter and the packer.
            s.i_row = stream.Signature(row_layout(c, C)).create(path=("piece_row",))
            s.i_param = stream.Signature(param_layout(c, C)).create(path=("piece_param",))
            s.o_row = stream.Signature(out_layout(c, C)).create(path=("piece_out",))
        m.submodules.gelu = s.gelu = GeluLanes(C)
        m.submodules.softmax = s.sm = SoftmaxUnit(C, self.steps_per_cycle)
        m.submodules.layernorm = s.ln = LayerNormUnit(C, self.steps_per_cycle)
        m.submodules.requant = s.rq = RequantLanes(C)
        m.submodules.multipliers = s.mul = LaneMultipliers(C, BANK_SLOTS)
        m.submodules.out_fifo = s.out_fifo = fifo.SyncFIFO(width=s.o_row.payload.shape().size,
                                                           depth=OUT_FIFO_DEPTH)
        # The pipelines never stall: the units' enables are tied high (no clock enable on
        # their registers), and the intake holds back a write-out chunk instead (_credits).
        for unit in (s.gelu, s.sm, s.ln, s.rq):
            m.d.comb += unit.en.eq(1)
        self._command(m, s)
        self._credits(m, s)
        self._chunks_in(m, s)
        self._units(m, s)
        self._multipliers(m, s)
        self._chunks_out(m, s)
        pieces_idle = Const(1)
        if C != c.cols:
            pieces_idle = self._split(m, s) & self._pack(m, s)
        m.d.comb += self.idle.eq((s.state == _State.IDLE) & ~s.pipe_busy & ~s.out_fifo.r_rdy
                                 & pieces_idle)
        return m

    def _split(self, m: Module, s: SimpleNamespace):
        """Each ``cols``-lane chunk on ``i_row`` (and its ``i_param`` beat) to the units as
        pieces of ``lanes`` lanes, one per cycle, taken from the chunk as it stands (the
        store unit offers it from a register slice): piece ``k`` until the chunk's last
        piece, which ends the row or holds the chunk's last lanes (pieces past the row's
        end are not sent). The chunk is taken with its last piece; a piece's ``last`` is the
        chunk's on its last piece. Returns "no chunk half taken"."""
        c, L = self._config, self.lanes
        S = c.cols // L
        k = Signal(range(S), name="piece")
        # Elements of the row from the piece's first on; whether the piece is its chunk's
        # last (a register, so the chunk's take is one gate after the units' take).
        rem = Signal(range(c.max_row_len + 1), name="piece_rem")
        final = Signal(name="piece_final")
        outer, inner, outer_p, inner_p = self.i_row, s.i_row, self.i_param, s.i_param

        def piece(view, bits):
            return view.as_value().word_select(k, L * bits)

        m.d.comb += [
            inner.valid.eq(outer.valid),
            inner.payload.data.eq(piece(outer.payload.data, c.acc_bits)),
            inner.payload.last.eq(outer.payload.last & final),
            inner_p.valid.eq(outer_p.valid),
            inner_p.payload.gamma.eq(piece(outer_p.payload.gamma, GAMMA_BITS)),
            inner_p.payload.beta.eq(piece(outer_p.payload.beta, BETA_BITS)),
            outer.ready.eq(inner.ready & final),
            outer_p.ready.eq(inner_p.ready & final),
        ]

        def go(new_rem, new_k):
            m.d.sync += [rem.eq(new_rem), k.eq(new_k),
                         final.eq((new_rem <= L) | (new_k == S - 1))]

        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            go(self.i_cmd.payload.length, 0)
        with m.Elif(inner.valid & inner.ready):
            with m.If(final):
                # The row's end starts its next pass (or row) at its full length.
                go(Mux(rem <= L, s.length, rem - L), 0)
            with m.Else():
                go(rem - L, k + 1)
        return k == 0

    def _pack(self, m: Module, s: SimpleNamespace):
        """The units' ``lanes``-byte pieces back into ``cols``-byte chunks on ``o_row``: the
        pieces before a chunk's last are held; the last (``last``, or the chunk's last
        lanes) leaves with them, lanes past the pieces 0. Returns "no chunk half packed"."""
        c, L = self._config, self.lanes
        S = c.cols // L
        j = Signal(range(S), name="pack_piece")
        held = [Signal(8 * L, name=f"pack{g}") for g in range(S - 1)]
        inner, outer = s.o_row, self.o_row
        done = inner.payload.last | (j == S - 1)
        piece = inner.payload.data.as_value()
        groups = []
        for g in range(S):
            here = Mux(j == g, piece, 0)
            groups.append(Mux(j > g, held[g], here) if g < S - 1 else here)
        m.d.comb += [
            outer.valid.eq(inner.valid & done),
            outer.payload.data.eq(Cat(*groups)),
            outer.payload.last.eq(inner.payload.last),
            inner.ready.eq(~done | outer.ready),
        ]
        with m.If(inner.valid & inner.ready):
            with m.If(done):
                m.d.sync += j.eq(0)
            with m.Else():
                m.d.sync += j.eq(j + 1)
                with m.Switch(j):
                    for g in range(S - 1):
                        with m.Case(g):
                            m.d.sync += held[g].eq(piece)
        return j == 0

    def _command(self, m: Module, s: SimpleNamespace) -> None:
        """The descriptor: accepted when the units are idle, checked (an unknown operation
        or a bad length sets ``error``), then one cycle of set-up."""
        c = self._config
        s.cmd = cmd = Signal(self.cmd_layout, name="cmd")
        s.state = state = Signal(_State, name="state")
        s.op = cmd.op
        s.length = Signal(range(c.max_row_len + 1), name="length")
        m.d.comb += s.length.eq(cmd.length)
        s.pipe_busy = s.gelu.busy | s.sm.busy | s.ln.busy | s.rq.busy
        m.d.comb += self.i_cmd.ready.eq((state == _State.IDLE) & ~s.pipe_busy)

        s.pass_index = Signal(2, name="pass_index")
        # Elements of the row not yet taken; the next chunk's lane mask and whether it ends
        # the row's pass, registered with it (they are the units' first input: the lane
        # reductions' first level takes them).
        s.remaining = Signal(range(c.max_row_len + 1), name="remaining")
        s.mask = Signal(self.lanes, name="mask")
        s.end = Signal(name="end")
        # The same for a row's first chunk.
        s.mask_first = Signal(self.lanes, name="mask_first")
        s.end_first = Signal(name="end_first")
        s.first = Signal(name="first")
        s.rows_left = Signal(ROWS_BITS, name="rows_left")
        multi = (s.op == OutputOp.SOFTMAX) | (s.op == OutputOp.LAYERNORM)
        s.final_pass = Mux(multi, s.pass_index == 2, 1)

        with m.If(self.error_clear):
            m.d.sync += self.error.eq(0)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            new = self.i_cmd.payload
            known_op = (new.op.as_value() <= OutputOp.LAYERNORM.value) & \
                ((new.op == OutputOp.SOFTMAX)
                 | (new.consts.out.digit.as_value() <= OutputDigit.LOW.value))
            good_len = (new.length >= 1) & (new.length <= c.max_row_len)
            m.d.sync += [cmd.eq(new), s.pass_index.eq(0), s.remaining.eq(new.length),
                         s.first.eq(1), s.rows_left.eq(new.rows)]
            m.d.sync += [x.eq(v) for x, v in ((s.mask, _mask(new.length, self.lanes)),
                                              (s.mask_first, _mask(new.length, self.lanes)),
                                              (s.end, new.length <= self.lanes),
                                              (s.end_first, new.length <= self.lanes))]
            with m.If(~known_op | ~good_len):
                m.d.sync += self.error.eq(1)
            with m.Elif(new.rows != 0):
                m.d.sync += state.eq(_State.SETUP)
        with m.If(state == _State.SETUP):
            m.d.sync += state.eq(_State.RUN)

    def _credits(self, m: Module, s: SimpleNamespace) -> None:
        """``room``: a register, high while the output FIFO has a place for one more
        write-out chunk beside those in it and those in the pipelines (``owed``: taken and
        not yet read from the FIFO). A chunk of the final pass is taken only with room, so
        the FIFO never overflows although nothing downstream of the intake ever waits."""
        s.owed = owed = Signal(range(OUT_FIFO_DEPTH + 1), name="owed")
        s.room = room = Signal(init=1, name="room")
        s.take_out = Signal(name="take_out")
        leave = s.out_fifo.r_en & s.out_fifo.r_rdy
        owed_next = owed + s.take_out - leave
        m.d.sync += [owed.eq(owed_next), room.eq(owed_next < OUT_FIFO_DEPTH)]

    def _chunks_in(self, m: Module, s: SimpleNamespace) -> None:
        """Chunks taken (with LayerNorm's parameters in its last pass), tagged with their
        lanes, pass and place in the row; a row's passes, then the next row."""
        C, op = self.lanes, s.op
        unit_accept = Mux(op == OutputOp.SOFTMAX, s.sm.accept,
                          Mux(op == OutputOp.LAYERNORM, s.ln.accept, 1))
        need_param = (op == OutputOp.LAYERNORM) & (s.pass_index == 2)
        # A statistics pass's chunk leaves nothing: it is taken without room.
        can_take = (s.state == _State.RUN) & unit_accept & (s.room | ~s.final_pass)
        i_row, i_param = s.i_row, s.i_param
        m.d.comb += [
            i_row.ready.eq(can_take & (~need_param | i_param.valid)),
            i_param.ready.eq(can_take & need_param & i_row.valid),
        ]
        s.fire = fire = Signal(name="fire")
        m.d.comb += [fire.eq(i_row.valid & i_row.ready), s.take_out.eq(fire & s.final_pass)]

        end = s.end
        s.tag = tag = Signal(chunk_tag_layout(C), name="tag")
        m.d.comb += [
            tag.mask.eq(s.mask),
            tag.pass_index.eq(s.pass_index),
            tag.first.eq(s.first),
            tag.end.eq(end),
            tag.last.eq(end & s.final_pass),
        ]
        with m.If(fire):
            with m.If(i_row.payload.last != end):
                m.d.sync += self.error.eq(1)
            m.d.sync += s.first.eq(end)
            with m.If(end):
                m.d.sync += [s.remaining.eq(s.length), s.mask.eq(s.mask_first),
                             s.end.eq(s.end_first)]
                with m.If(s.final_pass):
                    m.d.sync += [s.pass_index.eq(0), s.rows_left.eq(s.rows_left - 1)]
                    with m.If(s.rows_left == 1):
                        m.d.sync += s.state.eq(_State.IDLE)
                with m.Else():
                    m.d.sync += s.pass_index.eq(s.pass_index + 1)
            with m.Else():
                # The chunk after this one: remaining - C elements left.
                m.d.sync += [s.remaining.eq(s.remaining - C),
                             s.mask.eq(_mask(s.remaining, C, C)),
                             s.end.eq(s.remaining <= 2 * C)]

        s.lanes = Signal(data.ArrayLayout(signed(32), C), name="lanes")
        m.d.comb += [s.lanes[j].eq(i_row.payload.data[j]) for j in range(C)]

    def _units(self, m: Module, s: SimpleNamespace) -> None:
        """The chunk into the operation's unit; requantization after GELU and LayerNorm,
        or alone."""
        op, cmd, fire, lanes, tag = s.op, s.cmd, s.fire, s.lanes, s.tag
        gelu, sm, ln, rq = s.gelu, s.sm, s.ln, s.rq
        m.d.comb += [
            gelu.i_valid.eq(fire & (op == OutputOp.GELU)),
            gelu.i_data.eq(lanes), gelu.i_tag.eq(tag), gelu.consts.eq(cmd.consts.out.gelu),
            sm.i_valid.eq(fire & (op == OutputOp.SOFTMAX)),
            sm.i_data.eq(lanes), sm.i_tag.eq(tag), sm.consts.eq(cmd.consts.exp),
            ln.i_valid.eq(fire & (op == OutputOp.LAYERNORM)),
            ln.i_data.eq(lanes), ln.i_tag.eq(tag), ln.length.eq(s.length),
            ln.i_gamma.eq(s.i_param.payload.gamma), ln.i_beta.eq(s.i_param.payload.beta),
        ]
        direct = (op == OutputOp.NONE) | (op == OutputOp.REQUANT) | (op == OutputOp.RELU)
        with m.Switch(op):
            with m.Case(OutputOp.GELU):
                m.d.comb += [rq.i_valid.eq(gelu.o_valid), rq.i_data.eq(gelu.o_data),
                             rq.i_tag.eq(gelu.o_tag)]
            with m.Case(OutputOp.LAYERNORM):
                m.d.comb += [rq.i_valid.eq(ln.o_valid), rq.i_data.eq(ln.o_data),
                             rq.i_tag.eq(ln.o_tag)]
            with m.Default():
                m.d.comb += [rq.i_valid.eq(fire & direct), rq.i_data.eq(lanes),
                             rq.i_tag.eq(tag)]
        m.d.comb += [
            rq.m.eq(Mux(op == OutputOp.NONE, 1, cmd.m)),
            rq.e.eq(Mux(op == OutputOp.NONE, 0, cmd.e)),
            rq.relu.eq(op == OutputOp.RELU),
            rq.digit.eq(cmd.consts.out.digit),
        ]

    def _multipliers(self, m: Module, s: SimpleNamespace) -> None:
        """One bank of multipliers per lane for GELU, Softmax and LayerNorm, which never
        hold chunks at the same time (a descriptor is taken once the pipelines are empty):
        LayerNorm's five slots, GELU's three in the first of them, Softmax's two in the
        last. Each slot's operands and enable are LayerNorm's or the other unit's, chosen
        by a register per lane set with the descriptor (one LUT level in front of the
        operands' registers at the DSP); its registered product goes back to both."""
        C, bank = self.lanes, s.mul.mul
        assert LN_SLOTS == BANK_SLOTS and GELU_SLOTS + SM_SLOTS <= BANK_SLOTS
        users = [(s.gelu.mul, k) for k in range(GELU_SLOTS)] + \
            [(s.sm.mul, k) for k in range(SM_SLOTS)]
        for j in range(C):
            use_ln = Signal(name=f"mul_ln{j}")
            with m.If(self.i_cmd.valid & self.i_cmd.ready):
                m.d.sync += use_ln.eq(self.i_cmd.payload.op == OutputOp.LAYERNORM)
            for slot in range(BANK_SLOTS):
                m.d.comb += [s.ln.mul.p[j][slot].eq(bank.p[j][slot])]
                if slot >= len(users):
                    m.d.comb += [bank.a[j][slot].eq(s.ln.mul.a[j][slot]),
                                 bank.b[j][slot].eq(s.ln.mul.b[j][slot]),
                                 bank.en[j][slot].eq(s.ln.mul.en[j][slot])]
                    continue
                port, k = users[slot]
                m.d.comb += [
                    bank.a[j][slot].eq(Mux(use_ln, s.ln.mul.a[j][slot], port.a[j][k])),
                    bank.b[j][slot].eq(Mux(use_ln, s.ln.mul.b[j][slot], port.b[j][k])),
                    bank.en[j][slot].eq(Mux(use_ln, s.ln.mul.en[j][slot], port.en[j][k])),
                    port.p[j][k].eq(bank.p[j][slot]),
                ]

    def _chunks_out(self, m: Module, s: SimpleNamespace) -> None:
        """Chunks out, through the output FIFO (a place for each is held, ``_credits``):
        lanes beyond the row are 0."""
        C, sm, rq, out_fifo = self.lanes, s.sm, s.rq, s.out_fifo
        result = Signal(out_layout(self._config, C), name="result")
        out_tag = Mux(sm.o_valid, sm.o_tag.as_value(), rq.o_tag.as_value())
        out_tag = chunk_tag_layout(C)(out_tag)
        # Softmax's codes to 8 - e bits, rounded half up: (p9 + 2**e) >> (e + 1), at most
        # 255 >> e (a one-hot row's 2**32 / 2**23 = 512 is clipped to 511 by the unit and
        # rounds to 256 here; the clip makes it 255). e > 8 leaves nothing.
        # (e's constants are registers that follow the command: its first chunk leaves
        # Softmax many cycles after the command is taken.)
        e = Signal(range(10), name="prob_drop")
        m.d.comb += e.eq(Mux(s.cmd.e > 8, 9, s.cmd.e))
        limit, half, drop = Signal(8), Signal(10), Signal(range(11))
        m.d.sync += [limit.eq(Const(0xFF, 8) >> e), half.eq(Const(1, 10) << e), drop.eq(e + 1)]
        s.prob = []
        for j in range(C):
            rounded = (sm.o_data[j] + half) >> drop
            p = Signal(8, name=f"prob{j}")
            m.d.comb += p.eq(Mux(rounded > limit, limit, rounded))
            s.prob.append(p)
        for j in range(C):
            # SOFTMAX: the 9-bit code rounded to 8 - e bits (e = 1: 7-bit codes at 2**-7,
            # non-negative as int8, for the array's signed operands); e >= 9 gives 0.
            byte = Mux(sm.o_valid, s.prob[j], rq.o_data[j].as_unsigned())
            m.d.comb += result.data[j].eq(Mux(out_tag.mask[j], byte, 0))
        m.d.comb += [
            result.last.eq(out_tag.last),
            out_fifo.w_data.eq(result.as_value()),
            out_fifo.w_en.eq(sm.o_valid | rq.o_valid),
            s.o_row.payload.eq(out_fifo.r_data),
            s.o_row.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(s.o_row.ready),
        ]

