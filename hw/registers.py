"""The accelerator's register map (AXI4-Lite, 32-bit registers) and performance counters.

One definition serves the hardware (:class:`~tessera.hw.accelerator.Accelerator`), the
driver (``sw/runtime``) and the JSON written beside the Verilog (``registers.json``).
Counters are 64 bits, read as two registers (``_LO`` then ``_HI``); they are cleared by
START and frozen once the run ends, so a read after completion is consistent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .config import TesseraConfig

__all__ = ["Register", "REGISTERS", "COUNTERS", "REG", "MAGIC", "MAP_VERSION",
           "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "CONTROL_START", "CONTROL_IRQ_ENABLE",
           "register_map", "register_map_json"]

MAGIC = 0x54535241      # "TSRA"
MAP_VERSION = 1
LITE_ADDR_BITS = 12     # a 4 KiB register window

CONTROL_START = 1 << 0
CONTROL_IRQ_ENABLE = 1 << 1
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_CODE_SHIFT = 8


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str          # "r", "rw", "w" (write-only action), "r/w1c"
    description: str


#: The performance counters, in register order: (name, what it counts).
COUNTERS = [
    ("cycles", "cycles from START to the end of the run"),
    ("commands", "commands dispatched"),
    ("macs", "multiply-accumulates issued to the array (rows x cols per row of data)"),
    ("bytes_read", "bytes read on the AXI4 master (beats x bus width; commands included)"),
    ("bytes_written", "bytes written on the AXI4 master (beats x bus width)"),
    ("load_busy", "cycles with a LOAD in flight"),
    ("exec_busy", "cycles with an execute-queue command in flight"),
    ("store_busy", "cycles with a STORE in flight"),
    ("array_busy", "cycles in which a row of data entered the array"),
    ("load_token_wait", "cycles the LOAD queue's head waited for a token"),
    ("exec_token_wait", "cycles the EXECUTE queue's head waited for a token"),
    ("store_token_wait", "cycles the STORE queue's head waited for a token"),
    ("load_mem_wait", "cycles with a LOAD in flight and no read beat arriving for it"),
    ("exec_mem_wait", "cycles with execute work in flight and no row entering the array"),
    ("store_mem_wait", "cycles with a STORE in flight stalled on the write channels"),
    ("nonlinear_busy", "cycles with a GELU, Softmax or LayerNorm store in progress"),
    ("nonlinear_exposed", "of those, cycles in which no row entered the array (non-linear "
                          "work not overlapped by matrix work)"),
]

_BASE = [
    Register("ID", 0x00, "r", f"0x{MAGIC:08X} ('TSRA')"),
    Register("VERSION", 0x04, "r", f"register map version ({MAP_VERSION})"),
    Register("CONFIG_HASH", 0x08, "r", "the configuration's 32-bit hash (TesseraConfig.hash32)"),
    Register("CONTROL", 0x0C, "rw", "bit 0 START (write 1 while idle: run the command buffer; "
             "reads 0), bit 1 IRQ_ENABLE"),
    Register("STATUS", 0x10, "r/w1c", "bit 0 BUSY, bit 1 DONE (write 1 to clear it and the "
             "interrupt), bit 2 ERROR, bits 8..11 the error code (hw.isa.ErrorCode)"),
    Register("ERROR_INDEX", 0x14, "r", "index of the command that failed (for DEADLOCK: "
             "the earliest command at a blocked queue head)"),
    Register("ERROR_ADDR_LO", 0x18, "r", "main-memory address of a failed transfer, low"),
    Register("ERROR_ADDR_HI", 0x1C, "r", "high 32 bits"),
    Register("CMD_ADDR_LO", 0x20, "rw", "address of the command buffer (aligned to a command "
             "word), low"),
    Register("CMD_ADDR_HI", 0x24, "rw", "high 32 bits"),
    Register("CMD_COUNT", 0x28, "rw", "number of command words in the buffer"),
    Register("WINDOW_BASE_LO", 0x2C, "rw", "main-memory window every transfer must lie in, "
             "base, low"),
    Register("WINDOW_BASE_HI", 0x30, "rw", "high 32 bits"),
    Register("WINDOW_SIZE_LO", 0x34, "rw", "window size in bytes, low"),
    Register("WINDOW_SIZE_HI", 0x38, "rw", "high 32 bits"),
    Register("COMMAND_BITS", 0x3C, "r", "width of a command word in bits"),
]

COUNTER_BASE = 0x40

REGISTERS: list[Register] = _BASE + [
    reg for i, (name, what) in enumerate(COUNTERS) for reg in (
        Register(f"{name.upper()}_LO", COUNTER_BASE + 8 * i, "r", f"{what}, low"),
        Register(f"{name.upper()}_HI", COUNTER_BASE + 8 * i + 4, "r", "high 32 bits"))
]

#: Offsets by name.
REG = {r.name: r.offset for r in REGISTERS}


def register_map(config: TesseraConfig) -> dict:
    """The register map as a plain dictionary (what ``registers.json`` holds)."""
    return {
        "format": MAP_VERSION,
        "config_hash": config.hash,
        "config_hash32": config.hash32,
        "data_bits": 32,
        "addr_bits": LITE_ADDR_BITS,
        "registers": [asdict(r) for r in REGISTERS],
        "counters": [{"name": n, "offset": COUNTER_BASE + 8 * i, "bits": 64, "counts": w}
                     for i, (n, w) in enumerate(COUNTERS)],
        "status_bits": {"BUSY": STATUS_BUSY, "DONE": STATUS_DONE, "ERROR": STATUS_ERROR,
                        "CODE_SHIFT": STATUS_CODE_SHIFT},
        "control_bits": {"START": CONTROL_START, "IRQ_ENABLE": CONTROL_IRQ_ENABLE},
    }


def register_map_json(config: TesseraConfig) -> str:
    return json.dumps(register_map(config), indent=2) + "\n"
