"""The one configuration of a Tessera accelerator.

Everything reads this object: the hardware generator, the driver, the golden model and the
testbenches. The generator writes it (with its hash) beside the Verilog as ``config.json``;
the driver and the testbenches load it from there, never from a copy kept by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

__all__ = ["ConfigError", "TesseraConfig", "PRESETS", "preset", "DATAFLOWS"]

DATAFLOWS = ("ws", "os", "both")
OPERAND_BITS = (4, 8, 16)
BUS_BITS = (64, 128, 256, 512)
CONFIG_FORMAT = 1


class ConfigError(ValueError):
    """An invalid configuration: the message says what is wrong and what is allowed."""


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class TesseraConfig:
    """The hardware's specification.

    Parameters
    ----------
    rows, cols : int
        Processing elements of the systolic array. In weight-stationary mode an input row
        has ``rows`` elements (the reduction dimension of one tile) and a result row has
        ``cols`` elements.
    input_bits, weight_bits : int
        Signed two's-complement width of activations and weights: 4, 8 or 16.
    acc_bits : int
        Signed width of the accumulation. Sums wrap around at this width (two's complement),
        exactly as in the golden model.
    dataflow : str
        ``"ws"`` (weight-stationary), ``"os"`` (output-stationary) or ``"both"`` (chosen
        at run time).
    spad_kib, spad_banks : int
        Scratchpad capacity in KiB and its number of banks.
    acc_kib, acc_banks : int
        Accumulator capacity in KiB and its number of banks.
    bus_bits : int
        Data width of the AXI4 master: 64, 128, 256 or 512.
    addr_bits : int
        Main-memory address width of the AXI4 master: 32 to 64.
    max_reads, max_writes : int
        AXI read and write transactions in flight.
    load_queue_depth, exec_queue_depth, store_queue_depth : int
        Depth of the three command queues.
    max_row_len : int
        Longest row (in elements) the Softmax and LayerNorm units normalise.

    Raises
    ------
    ConfigError
        At construction, for any field or combination that is not allowed.
    """

    rows: int = 16
    cols: int = 16
    input_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    dataflow: str = "both"
    spad_kib: int = 256
    spad_banks: int = 4
    acc_kib: int = 256
    acc_banks: int = 2
    bus_bits: int = 128
    addr_bits: int = 32
    max_reads: int = 16
    max_writes: int = 16
    load_queue_depth: int = 8
    exec_queue_depth: int = 8
    store_queue_depth: int = 2
    max_row_len: int = 4096

    def __post_init__(self):
        errors = list(self._errors())
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))

    def _errors(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                yield f"{f.name} must be an integer, not {value!r}"
                return
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not 1 <= value <= 64:
                yield f"{name} must be between 1 and 64, not {value}"
        for name in ("input_bits", "weight_bits"):
            value = getattr(self, name)
            if value not in OPERAND_BITS:
                yield f"{name} must be one of {', '.join(map(str, OPERAND_BITS))}, not {value}"
        product_bits = self.input_bits + self.weight_bits
        if not product_bits <= self.acc_bits <= 64:
            yield (f"acc_bits must be between input_bits + weight_bits ({product_bits}) "
                   f"and 64, not {self.acc_bits}")
        if self.dataflow not in DATAFLOWS:
            yield (f"dataflow must be one of {', '.join(map(repr, DATAFLOWS))}, "
                   f"not {self.dataflow!r}")
        if self.bus_bits not in BUS_BITS:
            yield f"bus_bits must be one of {', '.join(map(str, BUS_BITS))}, not {self.bus_bits}"
        if not 32 <= self.addr_bits <= 64:
            yield f"addr_bits must be between 32 and 64, not {self.addr_bits}"
        for name in ("spad_banks", "acc_banks"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 16):
                yield f"{name} must be a power of two from 1 to 16, not {value}"
        for name in ("spad_kib", "acc_kib"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 16384):
                yield f"{name} must be a power of two from 1 to 16384, not {value}"
        for name in ("max_reads", "max_writes"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 64):
                yield f"{name} must be a power of two from 1 to 64, not {value}"
        for name in ("load_queue_depth", "exec_queue_depth", "store_queue_depth"):
            value = getattr(self, name)
            if not 1 <= value <= 256:
                yield f"{name} must be between 1 and 256, not {value}"
        if not (_is_pow2(self.max_row_len) and self.max_row_len >= self.cols):
            yield (f"max_row_len must be a power of two no smaller than cols ({self.cols}), "
                   f"not {self.max_row_len}")
        # Memory shapes: each bank must hold at least one tile.
        for mem, kib, banks, row_bytes in (
            ("scratchpad", "spad_kib", "spad_banks", self._spad_row_bytes_unchecked()),
            ("accumulator", "acc_kib", "acc_banks", self._acc_row_bytes_unchecked()),
        ):
            total = getattr(self, kib) * 1024
            nbanks = getattr(self, banks)
            if row_bytes <= 0:
                continue
            rows_total = total // row_bytes
            if rows_total < nbanks * self.rows:
                yield (f"the {mem} ({getattr(self, kib)} KiB of {row_bytes}-byte rows) must hold "
                       f"at least {self.rows} rows in each of its {nbanks} banks; "
                       f"raise {kib} or lower {banks}")

    def _spad_row_bytes_unchecked(self) -> int:
        return math.ceil(max(self.rows * self.input_bits, self.cols * self.weight_bits) / 8) \
            if isinstance(self.rows, int) and isinstance(self.cols, int) else 0

    def _acc_row_bytes_unchecked(self) -> int:
        return self.cols * self.acc_bits // 8 if isinstance(self.acc_bits, int) else 0

    # Derived values ---------------------------------------------------------------------

    @property
    def has_ws(self) -> bool:
        """The array can run weight-stationary tiles."""
        return self.dataflow in ("ws", "both")

    @property
    def has_os(self) -> bool:
        """The array can run output-stationary tiles."""
        return self.dataflow in ("os", "both")

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per cycle (rows x cols)."""
        return self.rows * self.cols

    @property
    def product_bits(self) -> int:
        return self.input_bits + self.weight_bits

    @property
    def bus_bytes(self) -> int:
        """Bytes per beat on the AXI4 master: the DMA's peak bytes per cycle."""
        return self.bus_bits // 8

    @property
    def spad_row_bytes(self) -> int:
        """Bytes of one scratchpad row (wide enough for an input or a weight row)."""
        return self._spad_row_bytes_unchecked()

    @property
    def acc_row_bytes(self) -> int:
        """Bytes of one accumulator row (``cols`` values of ``acc_bits``)."""
        return self._acc_row_bytes_unchecked()

    @property
    def spad_rows(self) -> int:
        """Scratchpad rows: as many as fit, a whole number in each bank."""
        per_bank = self.spad_kib * 1024 // self.spad_row_bytes // self.spad_banks
        return per_bank * self.spad_banks

    @property
    def acc_rows(self) -> int:
        """Accumulator rows: as many as fit, a whole number in each bank."""
        per_bank = self.acc_kib * 1024 // self.acc_row_bytes // self.acc_banks
        return per_bank * self.acc_banks

    # Identity and serialisation ---------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "config": self.to_dict(),
                           "hash": self.hash}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> TesseraConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TesseraConfig:
        """Read a configuration written by :meth:`to_json` (or a bare field object).

        Raises
        ------
        ConfigError
            If the text is not JSON, has unknown fields, or carries a hash that does not
            match its fields (a file edited by hand after generation).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"configuration is not valid JSON: {e}") from None
        if isinstance(data, dict) and "config" in data:
            cfg = cls.from_dict(data["config"])
            if "hash" in data and data["hash"] != cfg.hash:
                raise ConfigError(f"configuration hash {data['hash']} does not match its fields "
                                  f"(they hash to {cfg.hash}); was the file edited by hand?")
            return cfg
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """A stable 16-hex-digit identity of the configuration (independent of field order)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @property
    def hash32(self) -> int:
        """The first 32 bits of :attr:`hash`, as the hardware's identity register holds it."""
        return int(self.hash[:8], 16)

    def replace(self, **changes) -> TesseraConfig:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        return (f"{self.rows}x{self.cols} {self.dataflow.upper()} array, "
                f"int{self.input_bits} x int{self.weight_bits} -> int{self.acc_bits}, "
                f"{self.spad_kib} KiB scratchpad / {self.acc_kib} KiB accumulator, "
                f"{self.bus_bits}-bit bus")


_DEFAULT = TesseraConfig()

PRESETS: dict[str, TesseraConfig] = {
    # Small enough for Icarus: the RTL tests run on it.
    "tiny": dataclasses.replace(_DEFAULT, rows=4, cols=4, spad_kib=16, spad_banks=2,
                                acc_kib=8, acc_banks=2, bus_bits=64, max_reads=4,
                                max_writes=4, max_row_len=256),
    # Gemmini's 16x16 array, 256 KiB scratchpad and 128-bit bus (see shared REFERENCES),
    # with a 256 KiB accumulator: the survey's transformer sizing, and what LayerNorm over
    # a 768-wide row needs to keep tiles tall (32 rows instead of 8 with 64 KiB; a
    # BERT-base layer goes from 0.40 to 0.70 MAC utilization).
    "default": _DEFAULT,
    "large": dataclasses.replace(_DEFAULT, rows=32, cols=32, spad_kib=512, acc_kib=256,
                                 bus_bits=256),
}


def preset(name: str) -> TesseraConfig:
    """The named preset configuration.

    Raises
    ------
    ConfigError
        If there is no preset of that name.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; the presets are: "
                          f"{', '.join(PRESETS)}") from None
