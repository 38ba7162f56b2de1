"""The ``uart`` backend: the accelerator on a board, driven over its host link
(:mod:`tessera.hw.host_link`, the protocol) through a byte transport.

* :class:`HostLinkClient` speaks the protocol over any transport with ``write(bytes)``
  and ``read(n) -> bytes`` (``read`` may return fewer bytes when it times out). The same
  class drives a real board (:class:`SerialTransport`, pyserial) and the simulated board
  top (``sim/tb_board.py``, and the Amaranth tests).
* :func:`run_on_board` is one run as the other RTL backends do it: the used part of the
  memory image in, the registers that start a job, STATUS polled until DONE (or the cycle
  counter passes the timeout: the accelerator is then reset and the hang reported), then
  STATUS, the error registers, the counters and the image back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...hw.host_link import ARG_BYTES, MAGIC, PING_REPLY, VERSION, Command, Status
from ...hw.registers import (
    DONE_CLEAR,
    OUTCOME_READS,
    REG,
    STATUS_DONE,
    outcome,
    start_writes,
)

__all__ = ["LinkError", "BoardInfo", "HostLinkClient", "SerialTransport", "open_board",
           "run_on_board", "DEFAULT_BAUD"]

#: The board top's default baud rate (``hw/board.py``).
DEFAULT_BAUD = 115_200


class LinkError(RuntimeError):
    """The board did not answer, answered something else than the protocol allows, or
    refused a request (``status``)."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BoardInfo:
    """What ``PING`` reports."""

    magic: int
    version: int
    config_hash: int
    mem_base: int
    mem_size: int
    bus_bytes: int
    clk_hz: int


class HostLinkClient:
    """The protocol of :mod:`tessera.hw.host_link` over ``transport``.

    Parameters
    ----------
    transport
        An object with ``write(data: bytes)`` and ``read(n: int) -> bytes``; a short read
        means no more bytes came in time.

    Raises
    ------
    LinkError
        From every request: no reply, a malformed one, or a status other than OK.
    """

    def __init__(self, transport):
        self.transport = transport

    def _read(self, n: int, what: str) -> bytes:
        got = self.transport.read(n)
        if len(got) != n:
            raise LinkError(f"{what}: the board sent {len(got)} of the {n} bytes of its "
                            f"reply, then nothing (is the bitstream loaded, the port and "
                            f"the baud rate right?)")
        return bytes(got)

    def request(self, command: Command | int, args: bytes = b"", data: bytes = b"",
                reply_bytes: int = 0, what: str = "") -> bytes:
        """Send a request; return its reply after the status byte (``reply_bytes`` of it
        when the status is OK). A status other than OK raises :class:`LinkError`."""
        code = command.value if isinstance(command, Command) else int(command)
        what = what or (command.name if isinstance(command, Command) else f"command {code:#x}")
        self.transport.write(bytes([code]) + args + data)
        status_byte = self._read(1, what)[0]
        try:
            status = Status(status_byte)
        except ValueError:
            raise LinkError(f"{what}: the board answered status {status_byte:#04x}, which "
                            f"the protocol does not have (out of step?)") from None
        if status != Status.OK:
            if code == Command.REG_READ.value:
                self._read(4, what)                    # a register read's reply is fixed
            raise LinkError(f"{what}: the board answered {status.name}", status)
        return self._read(reply_bytes, what) if reply_bytes else b""

    def ping(self) -> BoardInfo:
        """The board's magic, protocol version, configuration hash, memory and clock.

        Raises
        ------
        LinkError
            Also when the magic or the version is not this protocol's.
        """
        raw = self.request(Command.PING, reply_bytes=sum(n for _, n in PING_REPLY))
        values, at = {}, 0
        for name, n in PING_REPLY:
            values[name] = int.from_bytes(raw[at:at + n], "little")
            at += n
        info = BoardInfo(**values)
        if info.magic != MAGIC or info.version != VERSION:
            raise LinkError(f"PING: the board answered magic {info.magic:#010x} version "
                            f"{info.version}, not a Tessera host link ({MAGIC:#010x} "
                            f"version {VERSION})")
        return info

    def reg_write(self, offset: int, value: int) -> None:
        self.request(Command.REG_WRITE, offset.to_bytes(2, "little")
                     + (value & 0xFFFFFFFF).to_bytes(4, "little"),
                     what=f"register write at {offset:#x}")

    def reg_read(self, offset: int) -> int:
        raw = self.request(Command.REG_READ, offset.to_bytes(2, "little"), reply_bytes=4,
                           what=f"register read at {offset:#x}")
        return int.from_bytes(raw, "little")

    def reg_read64(self, offset: int) -> int:
        return self.reg_read(offset) | self.reg_read(offset + 4) << 32

    def mem_write(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self.request(Command.MEM_WRITE, _addr_len(addr, len(data)), data,
                     what=f"memory write of {len(data)} bytes at {addr:#x}")

    def mem_read(self, addr: int, n: int) -> bytes:
        return self.request(Command.MEM_READ, _addr_len(addr, n), reply_bytes=n,
                            what=f"memory read of {n} bytes at {addr:#x}")

    def reset(self) -> None:
        """Reset the accelerator (not the memories)."""
        self.request(Command.RESET)


assert ARG_BYTES[Command.MEM_WRITE] == ARG_BYTES[Command.MEM_READ] == 8


def _addr_len(addr: int, n: int) -> bytes:
    if not (0 <= addr < 1 << 32 and 0 <= n < 1 << 32):
        raise ValueError(f"{n} bytes at {addr:#x} do not fit the link's 32-bit fields")
    return addr.to_bytes(4, "little") + n.to_bytes(4, "little")


class SerialTransport:
    """A serial port through pyserial (a real board's USB UART).

    Raises
    ------
    LinkError
        pyserial is not installed, or the port cannot be opened.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, timeout_s: float = 2.0):
        try:
            import serial
        except ImportError:
            raise LinkError("the uart backend needs pyserial: pip install pyserial "
                            "(make install brings it)") from None
        try:
            self.port = serial.Serial(port, baud, timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open the serial port {port!r} at {baud} baud: {e}") \
                from None
        self.port.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self, n: int) -> bytes:
        return self.port.read(n)

    def close(self) -> None:
        self.port.close()


def open_board(port, baud: int | None = None) -> tuple[HostLinkClient, BoardInfo]:
    """A client on ``port`` (a serial device name, or a transport object) and its
    ``PING``. A serial link is tried twice, the second time after the link's request
    timeout has passed (the board may have been left in the middle of a request)."""
    if port is None:
        raise LinkError("the uart backend needs a port: --port /dev/ttyUSB0 (or "
                        "Runtime(..., port=...))")
    if isinstance(port, str):
        client = HostLinkClient(SerialTransport(port, baud or DEFAULT_BAUD))
        try:
            return client, client.ping()
        except LinkError:
            time.sleep(0.1)
            client.transport.port.reset_input_buffer()
    else:
        client = HostLinkClient(port)
    return client, client.ping()


def run_on_board(client: HostLinkClient, info: BoardInfo, image: np.ndarray, used: int,
                 job: dict, progress=None) -> dict:
    """One run (see the module docstring): ``image[:used]`` is written to the board's
    memory first and read back into ``image`` after. Returns what the other harnesses
    return (``finished``, ``status``, the error registers, ``counters``,
    ``wall_seconds``)."""
    if job["onchip"]:
        raise ValueError("the uart backend cannot read the scratchpad and accumulator (the "
                         "board top has no debug ports); run without onchip")
    again = client.ping()                 # the same bitstream is still there
    if again != info:
        raise LinkError(f"the board changed since the runtime opened it: {again} instead "
                        f"of {info}")
    base = info.mem_base
    used = -(-used // info.bus_bytes) * info.bus_bytes
    client.mem_write(base, image[:used].tobytes())
    for offset, value in start_writes(job):
        client.reg_write(offset, value)
    started = time.time()
    while True:
        status = client.reg_read(REG["STATUS"])
        if status & STATUS_DONE:
            finished = True
            break
        cycles = client.reg_read64(REG["CYCLES_LO"])
        if progress is not None:
            progress({"cycles": cycles, "commands": client.reg_read(REG["COMMANDS_LO"]),
                      "wall_seconds": time.time() - started})
        if cycles >= job["timeout_cycles"]:
            finished = False
            break
    wall = time.time() - started
    out = {"finished": finished, "wall_seconds": wall,
           **outcome({key: client.reg_read64(offset) if wide else client.reg_read(offset)
                      for key, offset, wide in OUTCOME_READS})}
    if finished:
        client.reg_write(*DONE_CLEAR)
    else:
        client.reset()                                   # a hung run: free the board
    image[:used] = np.frombuffer(client.mem_read(base, used), np.uint8)
    return out
