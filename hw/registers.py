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

__all__ = ["Field", "Register", "REGISTERS", "REGISTER", "COUNTERS", "REG", "MAGIC",
           "MAP_VERSION", "register_map_markdown",
           "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "CONTROL_START", "CONTROL_IRQ_ENABLE",
           "register_map", "register_map_json", "start_writes", "OUTCOME_READS", "outcome",
           "DONE_CLEAR", "MEM_BASE"]

MAGIC = 0x54535241      # "TSRA"
#: Where the systems Tessera builds around the accelerator (the simulated one, the board
#: top) put main memory, and so where the runtime addresses it.
MEM_BASE = 0x4000_0000
MAP_VERSION = 1
LITE_ADDR_BITS = 12     # a 4 KiB register window

CONTROL_START = 1 << 0
CONTROL_IRQ_ENABLE = 1 << 1
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_CODE_SHIFT = 8


@dataclass(frozen=True)
class Field:
    """Bits ``lsb .. lsb + width - 1`` of a register.

    ``access``:

    * ``"r"``: read-only; the value comes from the design.
    * ``"rw"``: held in the register file, read back as written (``init`` after reset).
    * ``"r/w1c"``: read-only value from the design; writing 1 asks the design to clear it.
    * ``"w1p"``: reads 0; writing 1 gives the design a one-cycle pulse.
    * ``"const"``: read-only, the value fixed by the configuration (``init``, or a value
      the register file's user supplies at elaboration).
    """

    name: str
    lsb: int
    width: int
    access: str
    description: str = ""
    init: int = 0


ACCESSES = ("r", "rw", "r/w1c", "w1p", "const")


@dataclass(frozen=True)
class Register:
    """One 32-bit register: its fields, and whether writes to it are ignored while the
    accelerator runs (``idle_writes``: the run's parameters)."""

    name: str
    offset: int
    description: str
    fields: tuple = ()
    idle_writes: bool = False

    def __post_init__(self):
        if not self.fields:
            raise ValueError(f"register {self.name} has no fields")
        used = 0
        for f in self.fields:
            if f.access not in ACCESSES:
                raise ValueError(f"{self.name}.{f.name}: access must be one of "
                                 f"{', '.join(ACCESSES)}, not {f.access!r}")
            bits = ((1 << f.width) - 1) << f.lsb
            if f.width < 1 or f.lsb < 0 or f.lsb + f.width > 32 or used & bits:
                raise ValueError(f"{self.name}.{f.name}: bits {f.lsb}..{f.lsb + f.width - 1} "
                                 "overlap another field or leave the 32-bit register")
            used |= bits

    @property
    def access(self) -> str:
        """The register's access as a whole (its fields' accesses, joined)."""
        kinds = sorted({f.access for f in self.fields}, key=ACCESSES.index)
        return "/".join(kinds)

    @property
    def writable(self) -> bool:
        return any(f.access in ("rw", "r/w1c", "w1p") for f in self.fields)


def _whole(name, offset, access, description, **kw) -> Register:
    """A register of one 32-bit field named as the register."""
    return Register(name, offset, description, (Field(name, 0, 32, access, description),),
                    **kw)


def _wide(name, offset, access, description, **kw) -> list[Register]:
    """A 64-bit value as two registers, ``_LO`` then ``_HI``."""
    return [_whole(f"{name}_LO", offset, access, f"{description}, low 32 bits", **kw),
            _whole(f"{name}_HI", offset + 4, access, "high 32 bits", **kw)]


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
    _whole("ID", 0x00, "const", f"0x{MAGIC:08X} ('TSRA')"),
    _whole("VERSION", 0x04, "const", f"register map version ({MAP_VERSION})"),
    _whole("CONFIG_HASH", 0x08, "const", "the configuration's 32-bit hash "
           "(TesseraConfig.hash32)"),
    Register("CONTROL", 0x0C, "starts a run; enables the interrupt", (
        Field("START", 0, 1, "w1p", "write 1 while idle: run the command buffer (reads 0)"),
        Field("IRQ_ENABLE", 1, 1, "rw", "the interrupt line follows STATUS.DONE"))),
    Register("STATUS", 0x10, "how the last run went", (
        Field("BUSY", 0, 1, "r", "a run is in progress"),
        Field("DONE", 1, 1, "r/w1c", "the run ended (write 1 to clear it and the interrupt)"),
        Field("ERROR", 2, 1, "r", "the run stopped with an error"),
        Field("CODE", STATUS_CODE_SHIFT, 4, "r", "the error code (hw.isa.ErrorCode)"))),
    _whole("ERROR_INDEX", 0x14, "r", "index of the command that failed (for DEADLOCK: the "
           "earliest command at a blocked queue head)"),
    *_wide("ERROR_ADDR", 0x18, "r", "main-memory address of a failed transfer"),
    *_wide("CMD_ADDR", 0x20, "rw", "address of the command buffer (aligned to a command "
           "word)", idle_writes=True),
    _whole("CMD_COUNT", 0x28, "rw", "number of command words in the buffer",
           idle_writes=True),
    *_wide("WINDOW_BASE", 0x2C, "rw", "main-memory window every transfer must lie in, base",
           idle_writes=True),
    *_wide("WINDOW_SIZE", 0x34, "rw", "window size in bytes", idle_writes=True),
    _whole("COMMAND_BITS", 0x3C, "const", "width of a command word in bits"),
]

COUNTER_BASE = 0x40

REGISTERS: list[Register] = _BASE + [
    reg for i, (name, what) in enumerate(COUNTERS)
    for reg in _wide(name.upper(), COUNTER_BASE + 8 * i, "r", what)
]

#: Offsets by name.
REG = {r.name: r.offset for r in REGISTERS}
#: Registers by name.
REGISTER = {r.name: r for r in REGISTERS}

assert CONTROL_START == 1 << REGISTER["CONTROL"].fields[0].lsb
assert CONTROL_IRQ_ENABLE == 1 << REGISTER["CONTROL"].fields[1].lsb
assert [STATUS_BUSY, STATUS_DONE, STATUS_ERROR] == [1 << f.lsb for f in
                                                    REGISTER["STATUS"].fields[:3]]


def start_writes(job) -> list[tuple[int, int]]:
    """The register writes ``(offset, 32-bit value)``, in order, that start a job: the
    command buffer (``job["cmd_addr"]``), the main-memory window (``window_base``,
    ``window_size``), the command count (``cmd_count``), then START with the interrupt
    enabled. Every host (simulators, the board's link) starts a job with them."""
    writes = []
    for name in ("CMD_ADDR", "WINDOW_BASE", "WINDOW_SIZE"):
        value = job[name.lower()]
        writes += [(REG[f"{name}_LO"], value & 0xFFFFFFFF), (REG[f"{name}_HI"], value >> 32)]
    return writes + [(REG["CMD_COUNT"], job["cmd_count"]),
                     (REG["CONTROL"], CONTROL_IRQ_ENABLE | CONTROL_START)]


#: What a host reads once a job has ended, in order: ``(key, offset, 64 bits)``.
OUTCOME_READS = [("status", REG["STATUS"], False), ("error_index", REG["ERROR_INDEX"], False),
                 ("error_addr", REG["ERROR_ADDR_LO"], True)] + [
    (name, COUNTER_BASE + 8 * i, True) for i, (name, _) in enumerate(COUNTERS)]
#: The write that clears DONE and the interrupt after a finished job.
DONE_CLEAR = (REG["STATUS"], STATUS_DONE)


def outcome(values: dict) -> dict:
    """A job's outcome from the values of :data:`OUTCOME_READS` (by key): ``status``, its
    ``error_code``, ``error_index``, ``error_addr`` and the ``counters``."""
    status = values["status"]
    return {"status": status, "error_code": (status >> STATUS_CODE_SHIFT) & 0xF,
            "error_index": values["error_index"], "error_addr": values["error_addr"],
            "counters": {name: values[name] for name, _ in COUNTERS}}


def _const_values(config: TesseraConfig) -> dict:
    """The values of the ``const`` registers for ``config``."""
    from .isa import command_bits

    return {"ID": MAGIC, "VERSION": MAP_VERSION, "CONFIG_HASH": config.hash32,
            "COMMAND_BITS": command_bits(config)}


def register_map(config: TesseraConfig) -> dict:
    """The register map as a plain dictionary (what ``registers.json`` holds)."""
    consts = _const_values(config)

    def field(reg: Register, f: Field) -> dict:
        d = asdict(f)
        if f.access == "const":
            d["init"] = consts[reg.name]
        return d

    return {
        "format": MAP_VERSION,
        "config_hash": config.hash,
        "config_hash32": config.hash32,
        "data_bits": 32,
        "addr_bits": LITE_ADDR_BITS,
        "registers": [{"name": r.name, "offset": r.offset, "access": r.access,
                       "description": r.description, "idle_writes": r.idle_writes,
                       "fields": [field(r, f) for f in r.fields]} for r in REGISTERS],
        "counters": [{"name": n, "offset": COUNTER_BASE + 8 * i, "bits": 64, "counts": w}
                     for i, (n, w) in enumerate(COUNTERS)],
        "status_bits": {"BUSY": STATUS_BUSY, "DONE": STATUS_DONE, "ERROR": STATUS_ERROR,
                        "CODE_SHIFT": STATUS_CODE_SHIFT},
        "control_bits": {"START": CONTROL_START, "IRQ_ENABLE": CONTROL_IRQ_ENABLE},
    }


def register_map_json(config: TesseraConfig) -> str:
    return json.dumps(register_map(config), indent=2) + "\n"


def register_map_markdown() -> str:
    """``docs/registers.md``: the map as tables (``tessera registers -o docs/registers.md``
    writes it; a test keeps it in step)."""
    lines = ["# Registers", "",
             "Generated from `hw/registers.py` (the table the hardware's register file, "
             "`registers.json` and the driver are made from); do not edit.", "",
             f"AXI4-Lite, 32-bit registers, {1 << LITE_ADDR_BITS} bytes of address space. "
             "An access to an offset not listed answers SLVERR. Writes to a register "
             "marked *idle only* are ignored while a run is in progress. Counters are 64 "
             "bits (`_LO` then `_HI`), cleared by START and frozen when the run ends.", "",
             "Field accesses: `r` read-only, `rw` read/write, `r/w1c` read-only (write 1 to "
             "clear), `w1p` reads 0 (write 1 for an action), `const` fixed by the "
             "configuration.", "",
             "| offset | register | bits | field | access | description |",
             "|---|---|---|---|---|---|"]
    for r in REGISTERS:
        for i, f in enumerate(r.fields):
            bits = f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
            head = (f"0x{r.offset:02X}", r.name + (" (idle only)" if r.idle_writes else "")) \
                if i == 0 else ("", "")
            lines.append(f"| {head[0]} | {head[1]} | {bits} | {f.name} | {f.access} | "
                         f"{f.description} |")
    return "\n".join(lines) + "\n"
