"""The generic board top (:class:`~tessera.hw.board.BoardTop`) as simulated: a UART fast
enough to move a program's bytes in seconds of simulation (8 clock cycles per bit), the
default 128 KiB of block RAM."""

from __future__ import annotations

from ..hw.board import DEFAULT_MEM_KIB, BoardTop
from ..hw.config import TesseraConfig
from ..hw.generate import Top

__all__ = ["SimBoardTop", "BOARD_SYSTEM", "SIM_CLK_HZ", "SIM_BAUD", "SIM_DIVISOR"]

SIM_CLK_HZ = 8_000_000
SIM_BAUD = 1_000_000
SIM_DIVISOR = SIM_CLK_HZ // SIM_BAUD


class SimBoardTop(BoardTop):
    """:class:`BoardTop` at :data:`SIM_CLK_HZ` and :data:`SIM_BAUD` (its ports and
    behaviour unchanged)."""

    def __init__(self, config: TesseraConfig):
        super().__init__(config, clk_freq=SIM_CLK_HZ, baud=SIM_BAUD, mem_kib=DEFAULT_MEM_KIB)


BOARD_SYSTEM = Top(SimBoardTop, "tessera_board_sim",
                   "the generic board top with a simulation-speed UART (8 cycles per bit)",
                   ports_only=True)
