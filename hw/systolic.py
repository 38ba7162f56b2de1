"""The systolic grid: processing elements wired into a ``rows`` x ``cols`` mesh.

Data moves one hop per *step*; a step happens in every clock cycle in which ``en`` is high,
so the whole grid stalls together (the matrix unit drives ``en``). Every PE registers its
product and adds it a step later, so the multiplier and the adder have a clock cycle each;
as every PE does so, the wavefronts keep their shape and the grid's outputs come one step
later.

Weight-stationary (WS). PE(i, j) holds two weight buffers. Activations enter each grid row
from the left and move right; partial sums enter each column at the top and move down, so a
column's bottom emits ``sum_i a[i] * w[i][j]``. Weights travel down each column through a
pipeline register per PE, tagged with the grid row they belong to and the buffer they load
into; a PE writes the weight into its buffer as the weight passes it. A weight thus lands
in row ``i`` exactly ``i`` steps after entering the column, the same wavefront the
activations follow, so the next tile loads into the shadow buffers while the current tile
streams through the other buffers and neither disturbs the other.

Output-stationary (OS). PE(i, j) accumulates ``sum_k a[i][k] * b[k][j]``; activations move
right and weights move down through the weight pipeline, one of each per step. When the
last step of a tile passes, each PE drops its sum into a drain chain that runs down the
column with two registers per hop (``x`` then ``y``): the PEs of a column finish one step
apart, and a chain that moves at half the speed of that wavefront never lets a new result
land on an older one. The bottom of the drain emits the column's results from grid row
``rows - 1`` up to row 0 on consecutive steps.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig

__all__ = ["ProcessingElement", "SystolicGrid"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell.

    Parameters
    ----------
    config : ArrayConfig
        Widths and dataflows.
    row : int
        The PE's grid row: the weight tag it answers to, and (row 0) the OS last-row tag.

    Members
    -------
    en : In(1)
        Take a step.
    os : In(1)
        Output-stationary mode (only when the configuration has both dataflows).
    a, a_valid, a_last, a_sel : In
        Activation from the left with its valid bit, last-of-tile bit and (WS) the weight
        buffer it uses.
    a_out, a_valid_out, a_last_out, a_sel_out : Out
        The same, registered, to the PE on the right.
    w, w_valid, w_tag, w_buf : In
        Weight pipeline from above: a weight, whether it is a WS load, the grid row it
        belongs to and the buffer it loads into. In OS mode ``w`` is the streaming operand.
    w_out, w_valid_out, w_tag_out, w_buf_out : Out
        The same, registered, to the PE below.
    p_in : In
        WS partial sum from above (``x`` of the PE above).
    x, xv, xl : Out
        WS partial sum, or (OS) the first drain register with its valid and last-row tags.
    y_in, yv_in, yl_in, y, yv, yl : In / Out
        The second OS drain register, from above and to below.
    """

    def __init__(self, config: ArrayConfig, *, row: int = 0):
        self._config = config
        self._row = row
        c = config
        members = {
            "en": In(1),
            "a": In(signed(c.input_bits)),
            "a_valid": In(1),
            "a_last": In(1),
            "a_out": Out(signed(c.input_bits)),
            "a_valid_out": Out(1),
            "a_last_out": Out(1),
            "w": In(signed(c.weight_bits)),
            "w_out": Out(signed(c.weight_bits)),
            "x": Out(signed(c.acc_bits)),
        }
        if c.has_ws:
            members |= {
                "a_sel": In(1),
                "a_sel_out": Out(1),
                "w_valid": In(1),
                "w_tag": In(range(c.rows)),
                "w_buf": In(1),
                "w_valid_out": Out(1),
                "w_tag_out": Out(range(c.rows)),
                "w_buf_out": Out(1),
                "p_in": In(signed(c.acc_bits)),
            }
        if c.has_os:
            members |= {
                "y_in": In(signed(c.acc_bits)),
                "yv_in": In(1),
                "yl_in": In(1),
                "xv": Out(1),
                "xl": Out(1),
                "y": Out(signed(c.acc_bits)),
                "yv": Out(1),
                "yl": Out(1),
            }
        if c.dataflow == "both":
            members["os"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        c = self._config
        m = Module()
        is_os = self.os if c.dataflow == "both" else (c.dataflow == "os")

        # The weight operand: the stationary buffer chosen by the activation (WS), or the
        # operand streaming past from above (OS).
        if c.has_ws:
            w0 = Signal(signed(c.weight_bits))
            w1 = Signal(signed(c.weight_bits))
            stationary = Mux(self.a_sel, w1, w0)
            b = Mux(is_os, self.w, stationary) if c.has_os else stationary
        else:
            b = self.w
        # The product is registered (a step later, with the activation's valid and last bits
        # in a_valid_out and a_last_out): the multiplier and the adder each get a cycle.
        product = Signal(signed(c.product_bits))

        with m.If(self.en):
            m.d.sync += [
                product.eq(self.a * b),
                self.a_out.eq(self.a),
                self.a_valid_out.eq(self.a_valid),
                self.a_last_out.eq(self.a_last),
                self.w_out.eq(self.w),
            ]
            if c.has_ws:
                m.d.sync += [
                    self.a_sel_out.eq(self.a_sel),
                    self.w_valid_out.eq(self.w_valid),
                    self.w_tag_out.eq(self.w_tag),
                    self.w_buf_out.eq(self.w_buf),
                ]
                with m.If(self.w_valid & (self.w_tag == self._row)):
                    with m.If(self.w_buf):
                        m.d.sync += w1.eq(self.w)
                    with m.Else():
                        m.d.sync += w0.eq(self.w)

            def ws_step():
                m.d.sync += self.x.eq(self.p_in + product)

            def os_step():
                acc = Signal(signed(c.acc_bits))
                acc_next = Signal(signed(c.acc_bits))
                m.d.comb += acc_next.eq(acc + product)
                m.d.sync += [self.y.eq(self.x), self.yv.eq(self.xv), self.yl.eq(self.xl)]
                with m.If(self.a_valid_out):
                    m.d.sync += acc.eq(Mux(self.a_last_out, 0, acc_next))
                with m.If(self.a_valid_out & self.a_last_out):
                    m.d.sync += [self.x.eq(acc_next), self.xv.eq(1),
                                 self.xl.eq(int(self._row == 0))]
                with m.Else():
                    m.d.sync += [self.x.eq(self.y_in), self.xv.eq(self.yv_in),
                                 self.xl.eq(self.yl_in)]

            if c.has_ws and c.has_os:
                with m.If(is_os):
                    os_step()
                with m.Else():
                    ws_step()
            elif c.has_ws:
                ws_step()
            else:
                os_step()
        return m


class SystolicGrid(wiring.Component):
    """A ``rows`` x ``cols`` mesh of :class:`ProcessingElement`.

    The grid has no skew of its own: grid row ``i`` must receive its activations ``i`` steps
    after row 0, and column ``j`` its weights ``j`` steps after column 0 (the matrix unit's
    skew lines do this).

    Members
    -------
    en, os : In(1)
        Step enable; output-stationary mode (configurations with both dataflows).
    a, a_valid, a_last, a_sel : In
        The left edge, one lane per grid row.
    w, w_valid, w_tag, w_buf : In
        The top edge, one lane per column.
    out, out_valid, out_last : Out
        The bottom edge, one lane per column: WS partial sums, or the OS drain.
    """

    def __init__(self, config: ArrayConfig):
        self._config = config
        c = config
        members = {
            "en": In(1),
            "a": In(data.ArrayLayout(signed(c.input_bits), c.rows)),
            "a_valid": In(c.rows),
            "a_last": In(c.rows),
            "w": In(data.ArrayLayout(signed(c.weight_bits), c.cols)),
            "out": Out(data.ArrayLayout(signed(c.acc_bits), c.cols)),
            "out_valid": Out(c.cols),
            "out_last": Out(c.cols),
        }
        if c.has_ws:
            members |= {
                "a_sel": In(c.rows),
                "w_valid": In(c.cols),
                "w_tag": In(data.ArrayLayout(range(c.rows), c.cols)),
                "w_buf": In(c.cols),
            }
        if c.dataflow == "both":
            members["os"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        c = self._config
        m = Module()
        is_os = self.os if c.dataflow == "both" else (c.dataflow == "os")
        pe = [[ProcessingElement(c, row=i) for j in range(c.cols)] for i in range(c.rows)]
        a_ports = ["a", "a_valid", "a_last"] + (["a_sel"] if c.has_ws else [])
        w_ports = ["w"] + (["w_valid", "w_tag", "w_buf"] if c.has_ws else [])
        for i in range(c.rows):
            for j in range(c.cols):
                p = pe[i][j]
                m.submodules[f"pe_{i}_{j}"] = p
                m.d.comb += p.en.eq(self.en)
                if c.dataflow == "both":
                    m.d.comb += p.os.eq(self.os)
                for name in a_ports:
                    src = getattr(self, name)[i] if j == 0 else getattr(pe[i][j - 1], name + "_out")
                    m.d.comb += getattr(p, name).eq(src)
                for name in w_ports:
                    src = getattr(self, name)[j] if i == 0 else getattr(pe[i - 1][j], name + "_out")
                    m.d.comb += getattr(p, name).eq(src)
                up = pe[i - 1][j] if i > 0 else None
                if c.has_ws:
                    m.d.comb += p.p_in.eq(up.x if up else 0)
                if c.has_os:
                    m.d.comb += [p.y_in.eq(up.y if up else 0), p.yv_in.eq(up.yv if up else 0),
                                 p.yl_in.eq(up.yl if up else 0)]

        for j, b in enumerate(pe[c.rows - 1]):
            # WS: x holds the sum of the products registered a step earlier, so the
            # activation's valid and last bits take one more register to meet it.
            ws_valid = Signal(name=f"ws_valid{j}")
            ws_last = Signal(name=f"ws_last{j}")
            with m.If(self.en):
                m.d.sync += [ws_valid.eq(b.a_valid_out), ws_last.eq(b.a_last_out)]
            ws_out = (b.x, ws_valid, ws_last)
            os_out = (b.y, b.yv, b.yl) if c.has_os else ws_out
            for dst, ws_src, os_src in zip((self.out[j], self.out_valid[j], self.out_last[j]),
                                           ws_out, os_out, strict=True):
                if c.has_ws and c.has_os:
                    m.d.comb += dst.eq(Mux(is_os, os_src, ws_src))
                else:
                    m.d.comb += dst.eq(ws_src if c.has_ws else os_src)
        return m
