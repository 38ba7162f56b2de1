"""The matrix unit: the systolic grid with its skew lines, tile control and streams.

Streams (all valid/ready):

``i_weight`` (weight-stationary only)
    One weight tile is ``rows`` rows of ``cols`` weights, sent in order ``k = 0 .. rows-1``
    (row ``k`` multiplies input element ``k``). Tile ``n + 1`` loads into the shadow
    buffers while the data of tile ``n`` streams, so back-to-back tiles run without a bubble
    whenever a data tile has at least ``rows`` rows.
``i_data``
    WS: rows ``a`` of ``rows`` activations; ``last`` marks the final row of a tile, after
    which the next weight tile applies. Each row yields one result row ``a @ W``.
    OS: one reduction step per beat, ``a`` = column ``k`` of A (``rows`` values) and ``b`` =
    row ``k`` of B (``cols`` values); ``last`` marks the final step. A tile yields ``rows``
    result rows ``(A @ B)[0] .. (A @ B)[rows-1]``. Tiles are at least ``rows`` steps apart
    (shorter ones are padded with stall cycles by the unit).
``o_result``
    Rows of ``cols`` accumulations of ``acc_bits`` (wrapping) with ``last`` on the final row
    of each tile.

The whole datapath advances in lock step whenever the two-entry output FIFO has room, so
``o_result.ready`` never reaches the inputs combinationally and a stalled consumer freezes
the array instead of dropping results.
"""

from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig, TesseraConfig
from .skid import room_register
from .systolic import SystolicGrid

__all__ = ["MatrixUnit", "MODE_WS", "MODE_OS"]

MODE_WS = 0
MODE_OS = 1


def _delay(m: Module, sig, steps: int, en, name: str):
    """``sig`` delayed by ``steps`` enabled clock cycles (``steps = 0``: ``sig`` itself)."""
    for n in range(steps):
        reg = Signal(sig.shape(), name=f"{name}_d{n + 1}")
        with m.If(en):
            m.d.sync += reg.eq(sig)
        sig = reg
    return sig


class MatrixUnit(wiring.Component):
    """A ``rows`` x ``cols`` systolic matrix unit with stream ports.

    Parameters
    ----------
    config : TesseraConfig
        Array shape, widths and dataflows.

    Members
    -------
    i_weight : In(stream.Signature(ArrayLayout(signed(weight_bits), cols)))
        Weight rows (configurations with the WS dataflow).
    i_data : In(stream.Signature(StructLayout))
        ``a`` (``rows`` activations), ``b`` (``cols`` weights; configurations with OS) and
        ``last``.
    o_result : Out(stream.Signature(StructLayout))
        ``data`` (``cols`` accumulations) and ``last``.
    mode : In(1)
        ``MODE_WS`` or ``MODE_OS`` (configurations with both dataflows). A new mode takes
        effect once the unit is idle; until then the inputs are held off.
    idle : Out(1)
        Nothing in flight and no weights loaded but unused.
    """

    def __init__(self, config: ArrayConfig | TesseraConfig):
        self._config = c = config.array
        data_fields = {"a": data.ArrayLayout(signed(c.input_bits), c.rows)}
        if c.has_os:
            data_fields["b"] = data.ArrayLayout(signed(c.weight_bits), c.cols)
        data_fields["last"] = 1
        self.data_layout = data.StructLayout(data_fields)
        self.weight_layout = data.ArrayLayout(signed(c.weight_bits), c.cols)
        self.result_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(c.acc_bits), c.cols),
            "last": 1,
        })
        members = {
            "i_data": In(stream.Signature(self.data_layout)),
            "o_result": Out(stream.Signature(self.result_layout)),
            "idle": Out(1),
        }
        if c.has_ws:
            members["i_weight"] = In(stream.Signature(self.weight_layout))
        if c.dataflow == "both":
            members["mode"] = In(1)
        super().__init__(members)

    @property
    def config(self) -> ArrayConfig:
        return self._config

    def elaborate(self, platform):
        c = self._config
        m = Module()
        s = SimpleNamespace()
        m.submodules.grid = s.grid = SystolicGrid(c)
        m.submodules.out_fifo = s.out_fifo = fifo.SyncFIFO(
            width=self.result_layout.size, depth=2)
        # One step of the whole datapath per cycle in which the output FIFO has room (its
        # w_rdy as a register: the enable of every register of the grid).
        s.advance = room_register(m, s.out_fifo, "advance")
        m.d.comb += s.grid.en.eq(s.advance)
        self._mode(m, s)
        self._tile_control(m, s)
        self._input_skew(m, s)
        self._weight_skew(m, s)
        self._output_deskew(m, s)
        # Idle: rows in flight (WS: one result per row; OS: rows per tile).
        inflight = Signal(16)
        incoming = Mux(s.is_os, Mux(s.d_fire & self.i_data.payload.last, c.rows, 0),
                       s.d_fire)
        outgoing = self.o_result.valid & self.o_result.ready
        m.d.sync += inflight.eq(inflight + incoming - outgoing)
        m.d.comb += self.idle.eq((inflight == 0) & (s.ahead == 0) & (s.w_row == 0)
                                 & ~s.d_started & ~s.d_fire & ~s.w_fire)
        return m

    def _mode(self, m: Module, s: SimpleNamespace) -> None:
        """The dataflow: with both, a requested change waits until nothing is in flight."""
        c = self._config
        if c.dataflow == "both":
            s.is_os = Signal(name="is_os")
            m.d.comb += s.grid.os.eq(s.is_os)
            s.mode_ok = self.mode == s.is_os
            with m.If(self.idle):
                m.d.sync += s.is_os.eq(self.mode)
        else:
            s.is_os = Const(int(c.dataflow == "os"), 1)
            s.mode_ok = Const(1, 1)
        s.d_fire = Signal(name="d_fire")
        s.w_fire = Signal(name="w_fire")
        m.d.comb += [s.d_fire.eq(self.i_data.valid & self.i_data.ready)]
        if c.has_ws:
            m.d.comb += s.w_fire.eq(self.i_weight.valid & self.i_weight.ready)

    def _tile_control(self, m: Module, s: SimpleNamespace) -> None:
        """When data and weight rows may enter.

        WS: wj / dj count weight and data tiles (mod 4); their difference is how many weight
        tiles are loaded ahead of the data. Tile wj loads into buffer wj % 2, last used by
        tile wj - 2, which has fully entered the array once dj >= wj - 1. OS: results of
        consecutive tiles must enter the drain chain >= rows steps apart."""
        c, R, is_os = self._config, self._config.rows, s.is_os
        s.wj = wj = Signal(2, name="wj")
        s.dj = dj = Signal(2, name="dj")
        s.w_row = w_row = Signal(range(R), name="w_row")
        s.d_started = Signal(name="d_started")
        s.ahead = Signal(2, name="ahead")
        m.d.comb += s.ahead.eq(wj - dj)
        gap = Signal(range(R), init=R - 1)
        gap_ok = gap == R - 1

        ws_data_ok = s.d_started | (s.ahead != 0)
        os_data_ok = ~self.i_data.payload.last | gap_ok
        if c.has_ws and c.has_os:
            data_ok = Mux(is_os, os_data_ok, ws_data_ok)
        elif c.has_ws:
            data_ok = ws_data_ok
        else:
            data_ok = os_data_ok
        m.d.comb += self.i_data.ready.eq(s.advance & s.mode_ok & data_ok)
        if c.has_ws:
            m.d.comb += self.i_weight.ready.eq(s.advance & s.mode_ok & ~is_os & (s.ahead <= 1))

        with m.If(s.d_fire):
            m.d.sync += s.d_started.eq(~self.i_data.payload.last)
            # Only weight-stationary tiles consume a weight tile.
            with m.If(self.i_data.payload.last & ~is_os):
                m.d.sync += dj.eq(dj + 1)
        with m.If(s.w_fire):
            with m.If(w_row == R - 1):
                m.d.sync += [w_row.eq(0), wj.eq(wj + 1)]
            with m.Else():
                m.d.sync += w_row.eq(w_row + 1)
        with m.If(s.advance):
            with m.If(s.d_fire & self.i_data.payload.last):
                m.d.sync += gap.eq(0)
            with m.Elif(~gap_ok):
                m.d.sync += gap.eq(gap + 1)

    def _input_skew(self, m: Module, s: SimpleNamespace) -> None:
        """Activation k enters grid row rows-1-k, delayed by that row. (Reversing the lanes
        lets weight rows arrive in natural order although the first row shifted into a
        column ends at its bottom, and lets OS results leave in row order although the
        drain emits the bottom grid row first.)"""
        c, R, grid = self._config, self._config.rows, s.grid
        ctrl = Signal(3)
        m.d.comb += ctrl.eq(Mux(s.d_fire, 1, 0) | Mux(self.i_data.payload.last, 2, 0)
                            | Mux(s.dj[0], 4, 0))
        ctrl_at = [ctrl]
        for g in range(1, R):
            ctrl_at.append(_delay(m, ctrl_at[-1], 1, s.advance, f"ctrl_row{g}"))
        for k in range(R):
            g = R - 1 - k
            a_k = _delay(m, self.i_data.payload.a[k], g, s.advance, f"a_lane{k}")
            m.d.comb += [grid.a[g].eq(a_k), grid.a_valid[g].eq(ctrl_at[g][0]),
                         grid.a_last[g].eq(ctrl_at[g][1])]
            if c.has_ws:
                m.d.comb += grid.a_sel[g].eq(ctrl_at[g][2])

    def _weight_skew(self, m: Module, s: SimpleNamespace) -> None:
        """Column j enters j steps after column 0. Weight row k of a tile belongs to grid
        row rows-1-k (see the lane reversal in :meth:`_input_skew`)."""
        c, R, C, grid = self._config, self._config.rows, self._config.cols, s.grid
        w_src = Signal(self.weight_layout)
        if c.has_os:
            os_w = self.i_data.payload.b
        if c.has_ws:
            wctrl = Signal(data.StructLayout({"valid": 1, "tag": range(R), "buf": 1}))
            m.d.comb += [wctrl.valid.eq(s.w_fire & ~s.is_os), wctrl.tag.eq(R - 1 - s.w_row),
                         wctrl.buf.eq(s.wj[0])]
            m.d.comb += w_src.eq(Mux(s.is_os, os_w, self.i_weight.payload)
                                 if c.has_os else self.i_weight.payload)
            wctrl_at = [wctrl]
            for j in range(1, C):
                wctrl_at.append(_delay(m, wctrl_at[-1], 1, s.advance, f"wctrl_col{j}"))
        else:
            m.d.comb += w_src.eq(os_w)
        for j in range(C):
            m.d.comb += grid.w[j].eq(_delay(m, w_src[j], j, s.advance, f"w_col{j}"))
            if c.has_ws:
                m.d.comb += [grid.w_valid[j].eq(wctrl_at[j].valid),
                             grid.w_tag[j].eq(wctrl_at[j].tag),
                             grid.w_buf[j].eq(wctrl_at[j].buf)]

    def _output_deskew(self, m: Module, s: SimpleNamespace) -> None:
        """Column j leaves cols-1-j steps later, into a two-entry FIFO."""
        C, grid, out_fifo = self._config.cols, s.grid, s.out_fifo
        result = Signal(self.result_layout)
        for j in range(C):
            m.d.comb += result.data[j].eq(
                _delay(m, grid.out[j], C - 1 - j, s.advance, f"out_col{j}"))
        m.d.comb += [
            result.last.eq(grid.out_last[C - 1]),
            out_fifo.w_data.eq(result.as_value()),
            out_fifo.w_en.eq(s.advance & grid.out_valid[C - 1]),
            self.o_result.payload.eq(out_fifo.r_data),
            self.o_result.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_result.ready),
        ]
