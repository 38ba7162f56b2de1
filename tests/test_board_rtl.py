"""The generic board top (hw/board.py: accelerator, block-RAM main memory, UART host link)
on its generated Verilog under cocotb and Verilator, driven through its UART pins by the
runtime's own ``uart`` backend (sw/runtime/uart.py), as a real board is: a lowered matrix
product checked bit for bit against the golden model, a refused program, a hung run
reported and recovered from. Also the board top in Amaranth's simulator (PING and memory
over the UART line), the PLL's dividers, and the runtime's refusals."""

import json
import os
import sys

import numpy as np
import pytest
from amaranth.sim import Simulator

from tessera.hw.board import MEM_BASE, BoardTop, Ulx3sTop, ecp5_pll
from tessera.hw.config import preset
from tessera.hw.isa import Command, ErrorCode, Opcode
from tessera.sim import runner
from tessera.sim.board_system import BOARD_SYSTEM
from tessera.sim.host_link_amaranth import LineTransport
from tessera.sw.runtime import Runtime
from tessera.sw.runtime.uart import HostLinkClient, LinkError

TINY = preset("tiny")


def board_program(transport) -> dict:
    """The host side, run in the simulator's bridge thread: the runtime's uart backend
    over the simulated UART."""
    from test_lowering import gemm_on, output_spec

    rt = Runtime(TINY, "uart", port=transport)
    out = {"mem_size": rt.mem_size}
    rng = np.random.default_rng(21)
    a, b = rng.integers(-128, 128, (6, 11)), rng.integers(-128, 128, (11, 9))
    bias = rng.integers(-2**16, 2**16, 9)
    spec = output_spec("relu")
    gold = Runtime(TINY, "golden", mem_size=rt.mem_size)
    got, prog, result = gemm_on(rt, a, b, bias, spec)
    want, _, gresult = gemm_on(gold, a, b, bias, spec)
    out.update(product=got.tolist(), golden=want.tolist(), commands=len(prog),
               same_image=bool(np.array_equal(rt.image, gold.image)),
               counters=result.counters, golden_macs=gresult.counters["macs"],
               used=rt._used)
    # A refused program: the error registers come back through the link.
    bad = rt.run([Command(Opcode.LOAD, dict(dram_addr=rt.mem_base, stride=4, rows=1,
                                            row_bytes=4, local_addr=0)), 0xF])
    out["refused"] = [bad.error.name, bad.error_index]
    # A run cut short by its timeout: reported, the accelerator reset, the next run fine.
    again = Runtime(TINY, "uart", port=transport)
    again.image[:] = rt.image
    again._top, again._used = rt._top, rt._used
    cut = again.run(prog, timeout_cycles=50)
    out["timeout"] = [cut.error.name, cut.message]
    rerun = again.run(prog)
    out["rerun_ok"] = rerun.ok and bool(np.array_equal(again.image, gold.image))
    return out


@pytest.mark.rtl
def test_a_lowered_product_runs_on_the_board_top_through_its_uart(tmp_path):
    b = runner.build(TINY, "verilator", BOARD_SYSTEM)
    result = tmp_path / "result.json"
    here = os.path.dirname(__file__)
    runner.run(b, "tessera.sim.tb_board", test_dir=tmp_path,
               env={"TESSERA_HOST_PROGRAM": "test_board_rtl:board_program",
                    "TESSERA_RESULT": str(result),
                    "PYTHONPATH": os.pathsep.join([here, *sys.path])})
    out = json.loads(result.read_text())
    assert out["mem_size"] == 128 << 10
    assert out["product"] == out["golden"] and out["same_image"]
    c = out["counters"]
    assert c["macs"] == out["golden_macs"] and c["commands"] == out["commands"]
    assert c["cycles"] > 0 and c["bytes_written"] > 0
    assert out["refused"] == [ErrorCode.ILLEGAL_OPCODE.name, 1]
    assert out["timeout"][0] == ErrorCode.TIMEOUT.name
    assert "no completion within 50 cycles" in out["timeout"][1]
    assert out["rerun_ok"]
    assert out["framing_errors"] == 0 and out["board_error"] == 0
    print(f"\nboard top over its UART: {out['bytes_to_board']} bytes to the board, "
          f"{out['sim_cycles']:,} cycles in {out['wall_seconds']:.1f} s "
          f"({out['sim_cycles'] / out['wall_seconds']:,.0f} cycles/s)")


def test_the_board_top_answers_over_its_uart_line_in_amaranths_simulator():
    top = BoardTop(TINY, clk_freq=4_000_000, baud=1_000_000, mem_kib=4)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    host = HostLinkClient(LineTransport(sim, top.uart_rx, top.uart_tx, top.divisor))
    info = host.ping()
    assert (info.config_hash, info.mem_base, info.mem_size, info.bus_bytes, info.clk_hz) == \
        (TINY.hash32, MEM_BASE, 4096, TINY.bus_bytes, 4_000_000)
    host.mem_write(MEM_BASE + 5, b"tessera")
    assert host.mem_read(MEM_BASE + 4, 9) == b"\0tessera\0"
    from tessera.hw.registers import MAGIC, REG

    assert host.reg_read(REG["ID"]) == MAGIC
    with pytest.raises(LinkError, match="OUT_OF_RANGE"):
        host.mem_read(MEM_BASE + 4095, 2)
    # The runtime refuses a bitstream of another configuration.
    with pytest.raises(ValueError, match="the board's bitstream is not this configuration's"):
        Runtime(preset("small"), "uart", port=host.transport)


def test_board_parameters_and_pll_are_checked():
    pll = ecp5_pll(25e6, 20e6)
    assert pll.freq == 20e6 and 400e6 <= pll.vco <= 800e6
    assert 25e6 / pll.clki_div >= 3.125e6
    assert (pll.clki_div, pll.clkfb_div) == (5, 4)
    with pytest.raises(ValueError, match="cannot make 22 MHz from 25 MHz; the nearest it "
                                         "can: 21.875 MHz"):
        Ulx3sTop(TINY, clk_freq=22_000_000)
    with pytest.raises(ValueError, match="makes 3.125 to 400 MHz, not 500 MHz"):
        ecp5_pll(25e6, 500e6)
    with pytest.raises(ValueError, match="mem_kib must be a positive integer, not 0"):
        BoardTop(TINY, mem_kib=0)
    with pytest.raises(ValueError, match="more than 2%"):
        BoardTop(TINY, clk_freq=9_000_000, baud=2_000_000)


def test_the_uart_backend_says_what_is_missing(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "serial", None)              # pyserial not installed
        with pytest.raises(LinkError, match="needs pyserial: pip install pyserial"):
            Runtime(TINY, "uart", port="/dev/ttyUSB0")
    with pytest.raises(LinkError, match="needs a port"):
        Runtime(TINY, "uart")
    with pytest.raises(LinkError, match="cannot open the serial port '/nonexistent/tty'"):
        Runtime(TINY, "uart", port="/nonexistent/tty")

    class Silent:
        def write(self, data):
            pass

        def read(self, n):
            return b""

    with pytest.raises(LinkError, match="sent 0 of the 1 bytes of its reply"):
        Runtime(TINY, "uart", port=Silent())
