"""Board tops: the accelerator with its main memory in block RAM and a host link over a
UART, for an FPGA (or an ASIC) without anything else around it.

* :class:`BoardTop` is the generic top, no platform: a clock, a reset, the UART's two
  pins, the interrupt and two status outputs. ``tessera generate --top board`` writes its
  Verilog (``tessera_board``) for a user's own flow; ``docs/board.md`` lists the ports,
  the reset and clock rules and the constraints to give.
* :class:`Ulx3sTop` puts it on the ULX3S (ECP5-85F, ``amaranth_boards.ulx3s``): the 25 MHz
  oscillator through an ECP5 PLL (:func:`ecp5_pll` computes its dividers), the FTDI USB
  UART, LEDs for busy, interrupt and error. ``tessera fpga`` builds its bitstream.

Inside: ``UartRx -> HostLink -> UartTx``; the link is an AXI4-Lite manager on the
accelerator's registers and has the host port of :class:`~.bram.AxiBlockRam`, whose AXI4
side is the accelerator's ``m_axi``. The memory sits at :data:`MEM_BASE`, where the
runtime places main memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Const,
    DomainRenamer,
    Elaboratable,
    Instance,
    Module,
    ResetInserter,
    ResetSignal,
    Signal,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .accelerator import Accelerator
from .bram import AxiBlockRam
from .config import TesseraConfig
from .host_link import HostLink
from .registers import MEM_BASE
from .uart import UartRx, UartTx, uart_divisor

__all__ = ["BoardTop", "Ulx3sTop", "ecp5_pll", "Pll", "MEM_BASE", "DEFAULT_CLK_HZ",
           "DEFAULT_BAUD", "DEFAULT_MEM_KIB", "RESET_HOLD_CYCLES"]

#: The clock a bitstream of the tiny accelerator has met on an ECP5 at speed 6
#: (docs/board.md).
DEFAULT_CLK_HZ = 20_000_000
DEFAULT_BAUD = 115_200
#: 128 KiB: 64 of the ECP5-85F's 208 DP16KD blocks (the tiny accelerator uses 18).
DEFAULT_MEM_KIB = 128
#: Cycles the reset is held inside after ``rst`` falls (and after power-up).
RESET_HOLD_CYCLES = 16
#: Cycles the busy output stays high after a beat on the accelerator's memory bus (about
#: 50 ms at 20 MHz, for a LED to show).
BUSY_STRETCH = 1 << 20


class BoardTop(wiring.Component):
    """The accelerator, block-RAM main memory and a UART host link.

    Parameters
    ----------
    config : TesseraConfig
    clk_freq : int
        The clock in Hz (reported to the host; sets the UART divisor).
    baud : int
        The UART's baud rate; ``clk_freq / baud`` rounded must be within 2% of it.
    mem_kib : int
        Main memory in KiB (block RAM).
    link_timeout_s : float
        A host request left incomplete this long is dropped (see :mod:`.host_link`).

    Members
    -------
    uart_rx : In(1)
        From the host (asynchronous: synchronized inside; idles high).
    uart_tx : Out(1)
        To the host, from a flip-flop (idles high).
    irq : Out(1)
        The accelerator's interrupt (STATUS.DONE with CONTROL.IRQ_ENABLE).
    busy : Out(1)
        The accelerator used its memory bus in the last :data:`BUSY_STRETCH` cycles.
    error : Out(1)
        Sticky until reset: a host request was refused or timed out, or a byte arrived
        with a framing error or was lost to an overrun.

    The clock and reset are Amaranth's ``sync`` domain: ports ``clk`` and ``rst`` in the
    Verilog. ``rst`` is synchronous and active high; the design stays in reset for
    :data:`RESET_HOLD_CYCLES` cycles after it falls, and for as long after power-up on an FPGA
    (the flip-flops' initial values), so a pulse of one cycle is enough.

    Raises
    ------
    ValueError
        A baud rate the clock cannot make, or a bad size.
    """

    def __init__(self, config: TesseraConfig, clk_freq: int = DEFAULT_CLK_HZ,
                 baud: int = DEFAULT_BAUD, mem_kib: int = DEFAULT_MEM_KIB,
                 link_timeout_s: float = 0.01):
        try:
            if not isinstance(mem_kib, int) or isinstance(mem_kib, bool) or mem_kib <= 0:
                raise ValueError(f"mem_kib must be a positive integer, not {mem_kib!r}")
            if not isinstance(clk_freq, int) or clk_freq <= 0:
                raise ValueError(f"clk_freq must be a positive integer number of Hz, not "
                                 f"{clk_freq!r}")
            self.divisor = uart_divisor(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True   # never built
            raise
        self._config = config
        self.clk_freq, self.baud, self.mem_kib = clk_freq, baud, mem_kib
        self.mem_bytes = mem_kib << 10
        self.link_timeout_cycles = max(round(clk_freq * link_timeout_s), 20 * self.divisor)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "irq": Out(1),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        c = self._config
        m = Module()
        # Reset: held RESET_HOLD_CYCLES cycles after rst falls, and after power-up.
        hold = Signal(range(RESET_HOLD_CYCLES + 1), init=RESET_HOLD_CYCLES, reset_less=True)
        with m.If(ResetSignal()):
            m.d.sync += hold.eq(RESET_HOLD_CYCLES)
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        m.domains.board = board = ClockDomain("board", local=True)
        m.d.comb += [board.clk.eq(ClockSignal()), board.rst.eq(hold != 0)]

        def here(unit):
            return DomainRenamer("board")(unit)

        accel = Accelerator(c)
        ram = AxiBlockRam(c, self.mem_bytes, MEM_BASE)
        link = HostLink(c, MEM_BASE, self.mem_bytes, self.clk_freq, self.link_timeout_cycles)
        rx, tx = UartRx(self.divisor), UartTx(self.divisor)
        m.submodules.accel = here(ResetInserter(link.accel_reset)(accel))
        m.submodules.ram = here(ram)
        m.submodules.link = here(link)
        m.submodules.uart_rx = here(rx)
        m.submodules.uart_tx = here(tx)
        wiring.connect(m, accel.m_axi, ram.s_axi)
        wiring.connect(m, link.m_axil, accel.s_axil)
        wiring.connect(m, link.mem, ram.host)
        wiring.connect(m, rx.o_data, link.i_rx)
        wiring.connect(m, link.o_tx, tx.i_data)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx), self.irq.eq(accel.irq)]

        bus = accel.m_axi
        busy_left = Signal(range(BUSY_STRETCH))
        with m.If(bus.arvalid | bus.rvalid | bus.awvalid | bus.wvalid):
            m.d.board += busy_left.eq(BUSY_STRETCH - 1)
        with m.Elif(busy_left != 0):
            m.d.board += busy_left.eq(busy_left - 1)
        m.d.comb += self.busy.eq(busy_left != 0)
        line_error = Signal()
        with m.If(rx.framing_error | rx.overrun):
            m.d.board += line_error.eq(1)
        m.d.comb += self.error.eq(line_error | link.error)
        return m


@dataclass(frozen=True)
class Pll:
    """Dividers of an ECP5 EHXPLLL with CLKOP as its feedback: ``freq = fin * clkfb_div /
    clki_div``, the VCO at ``freq * clkop_div``."""

    fin: float
    freq: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def vco(self) -> float:
        return self.freq * self.clkop_div


#: The EHXPLLL's limits (Lattice TN1263): PFD 3.125-400 MHz, VCO 400-800 MHz, output
#: 3.125-400 MHz, dividers 1-128.
PFD_RANGE, VCO_RANGE, OUT_RANGE = (3.125e6, 400e6), (400e6, 800e6), (3.125e6, 400e6)


def ecp5_pll(fin: float, fout: float) -> Pll:
    """The dividers that make exactly ``fout`` from ``fin`` (Hz), the VCO nearest the
    middle of its range.

    Raises
    ------
    ValueError
        No divider setting makes ``fout`` exactly; the message names the nearest
        frequencies the PLL can make.
    """
    if not OUT_RANGE[0] <= fout <= OUT_RANGE[1]:
        raise ValueError(f"the ECP5 PLL makes {OUT_RANGE[0] / 1e6:g} to "
                         f"{OUT_RANGE[1] / 1e6:g} MHz, not {fout / 1e6:g} MHz")
    best, near = None, set()
    for ci in range(1, 129):
        if not PFD_RANGE[0] <= fin / ci <= PFD_RANGE[1]:
            continue
        for fb in range(1, 129):
            f = fin * fb / ci
            if not OUT_RANGE[0] <= f <= OUT_RANGE[1]:
                continue
            ops = [op for op in range(1, 129) if VCO_RANGE[0] <= f * op <= VCO_RANGE[1]]
            if not ops:
                continue
            if abs(f - fout) <= 1e-6 * fout:
                op = min(ops, key=lambda o: abs(f * o - 600e6))
                pll = Pll(fin, f, ci, fb, op)
                if best is None or abs(pll.vco - 600e6) < abs(best.vco - 600e6):
                    best = pll
            elif abs(f - fout) < 0.05 * fout:
                near.add(round(f / 1e3) / 1e3)
    if best is None:
        below = max((f for f in near if f < fout / 1e6), default=None)
        above = min((f for f in near if f > fout / 1e6), default=None)
        options = " or ".join(f"{f:g} MHz" for f in (below, above) if f is not None)
        raise ValueError(f"the ECP5 PLL cannot make {fout / 1e6:g} MHz from "
                         f"{fin / 1e6:g} MHz" + (f"; the nearest it can: {options}"
                                                 if options else ""))
    return best


class Ulx3sTop(Elaboratable):
    """:class:`BoardTop` on the ULX3S (``amaranth_boards.ulx3s.ULX3S_85F_Platform``).

    The 25 MHz oscillator drives an EHXPLLL that makes ``clk_freq``; the design is held in
    reset until the PLL locks. The UART is the FTDI's (``platform.request("uart")``).
    LEDs: 0 busy, 1 interrupt, 2 error, 7 a heartbeat (about 1 Hz: the clock runs).

    Parameters
    ----------
    config, clk_freq, baud, mem_kib
        As :class:`BoardTop`; ``clk_freq`` must be one the PLL makes exactly from 25 MHz.

    Raises
    ------
    ValueError
        A clock the PLL cannot make (:func:`ecp5_pll`), or what :class:`BoardTop` refuses.
    """

    OSC_HZ = 25_000_000

    def __init__(self, config: TesseraConfig, clk_freq: int = DEFAULT_CLK_HZ,
                 baud: int = DEFAULT_BAUD, mem_kib: int = DEFAULT_MEM_KIB):
        try:
            self.pll = ecp5_pll(self.OSC_HZ, clk_freq)
            self.board = BoardTop(config, clk_freq=clk_freq, baud=baud, mem_kib=mem_kib)
        except ValueError:
            self._MustUse__silence = True   # never built
            raise

    def elaborate(self, platform):
        m = Module()
        p = self.pll
        clk25 = platform.request("clk25", 0).i
        clkop, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.fin / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{p.freq / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_div - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=p.clkfb_div,
            i_CLKI=clk25, i_RST=Const(0), i_STDBY=Const(0), i_CLKFB=clkop,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0),
            i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=clkop, o_LOCK=locked)
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += [sync.clk.eq(clkop), sync.rst.eq(~locked)]
        platform.add_clock_constraint(clkop, p.freq)

        m.submodules.board = board = self.board
        uart = platform.request("uart", 0)
        m.d.comb += [board.uart_rx.eq(uart.rx.i), uart.tx.o.eq(board.uart_tx)]
        leds = [platform.request("led", i).o for i in (0, 1, 2, 7)]
        beat = Signal(range(int(p.freq) // 2 + 1))
        blink = Signal()
        with m.If(beat == int(p.freq) // 2):
            m.d.sync += [beat.eq(0), blink.eq(~blink)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        m.d.comb += [leds[0].eq(board.busy), leds[1].eq(board.irq), leds[2].eq(board.error),
                     leds[3].eq(blink)]
        return m
