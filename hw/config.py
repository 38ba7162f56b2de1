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

__all__ = ["ConfigError", "ArrayConfig", "TesseraConfig", "PRESETS", "preset", "load_config",
           "DATAFLOWS", "MAX_ROW_LEN"]

DATAFLOWS = ("ws", "os", "both")
#: Operand widths the systolic array builds (:class:`ArrayConfig`).
OPERAND_BITS = (4, 8, 16)
#: Operand width of the accelerator: its scratchpad rows, DMA and output path are int8.
ACCEL_OPERAND_BITS = 8
#: Widest accumulator of the accelerator: the output path reads the golden model's int32.
ACCEL_ACC_BITS = 32
BUS_BITS = (64, 128, 256, 512)
#: Longest row the Softmax and LayerNorm units normalise (their datapath widths follow it).
MAX_ROW_LEN = 4096
CONFIG_FORMAT = 1


class ConfigError(ValueError):
    """An invalid configuration: the message says what is wrong and what is allowed."""


def _choices(values) -> str:
    return str(values[0]) if len(values) == 1 else \
        f"one of {', '.join(map(str, values))}"


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


class _Spec:
    """Validation at construction and the JSON form, shared by the two configurations."""

    KIND = ""

    def __post_init__(self):
        errors = list(self._errors())
        if errors:
            raise ConfigError(f"invalid {self.KIND} configuration: " + "; ".join(errors))

    def _type_errors(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                yield f"{f.name} must be an integer, not {value!r}"

    def _array_errors(self, operand_bits=OPERAND_BITS, acc_max=64, why=""):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not 1 <= value <= 64:
                yield f"{name} must be between 1 and 64, not {value}"
        for name in ("input_bits", "weight_bits"):
            value = getattr(self, name)
            if value not in operand_bits:
                yield f"{name} must be {_choices(operand_bits)}{why}, not {value}"
        product_bits = self.input_bits + self.weight_bits
        if not product_bits <= self.acc_bits <= acc_max:
            yield (f"acc_bits must be between input_bits + weight_bits ({product_bits}) "
                   f"and {acc_max}{why}, not {self.acc_bits}")
        if self.dataflow not in DATAFLOWS:
            yield (f"dataflow must be one of {', '.join(map(repr, DATAFLOWS))}, "
                   f"not {self.dataflow!r}")

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

    # Identity and serialisation ---------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "kind": self.KIND, "config": self.to_dict(),
                           "hash": self.hash}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        """Read a configuration written by :meth:`to_json` (or a bare field object).

        Raises
        ------
        ConfigError
            If the text is not JSON, is the other kind of configuration, has unknown
            fields, or carries a hash that does not match its fields (a file edited by
            hand after generation).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"configuration is not valid JSON: {e}") from None
        if isinstance(data, dict) and "config" in data:
            kind = data.get("kind", TesseraConfig.KIND)
            if kind != cls.KIND:
                raise ConfigError(f"this is an {kind} configuration, not an {cls.KIND} one")
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

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ArrayConfig(_Spec):
    """The systolic array alone (:class:`~tessera.hw.matrix_unit.MatrixUnit`): the fields of
    :class:`TesseraConfig` it reads, with the operand widths the array builds (4, 8 or 16
    bits) and accumulators up to 64 bits. The accelerator around it takes int8 operands and
    at most 32-bit accumulators; :attr:`TesseraConfig.array` is its array.

    Raises
    ------
    ConfigError
        At construction, for any field or combination that is not allowed.
    """

    KIND = "array"

    rows: int = 16
    cols: int = 16
    input_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    dataflow: str = "both"

    def _errors(self):
        type_errors = list(self._type_errors())
        if type_errors:
            yield from type_errors
            return
        yield from self._array_errors()

    @property
    def array(self) -> ArrayConfig:
        return self

    def describe(self) -> str:
        return (f"{self.rows}x{self.cols} {self.dataflow.upper()} array, "
                f"int{self.input_bits} x int{self.weight_bits} -> int{self.acc_bits}")


@dataclass(frozen=True)
class TesseraConfig(ArrayConfig):
    """The hardware's specification.

    Parameters
    ----------
    rows, cols : int
        Processing elements of the systolic array. In weight-stationary mode an input row
        has ``rows`` elements (the reduction dimension of one tile) and a result row has
        ``cols`` elements.
        ``cols`` is at least 2.
    input_bits, weight_bits : int
        Signed two's-complement width of activations and weights: 8 (the scratchpad, the
        DMA and the output path carry int8; :class:`ArrayConfig` builds the array alone with
        4- or 16-bit operands).
    acc_bits : int
        Signed width of the accumulation, 16 to 32. Sums wrap around at this width (two's
        complement), exactly as in the golden model.
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
        Longest row (in elements) the Softmax and LayerNorm units normalise: a power of two
        from ``cols`` to :data:`MAX_ROW_LEN`.

    Raises
    ------
    ConfigError
        At construction, for any field or combination that is not allowed: a configuration
        that constructs is one every unit builds.
    """

    # The array's fields (rows, cols, input_bits, weight_bits, acc_bits, dataflow) come
    # first, from ArrayConfig; then the rest of the machine.
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

    KIND = "accelerator"

    def _errors(self):
        type_errors = list(self._type_errors())
        if type_errors:
            yield from type_errors
            return
        yield from self._array_errors((ACCEL_OPERAND_BITS,), ACCEL_ACC_BITS,
                                      " in the accelerator (ArrayConfig builds the array "
                                      "alone with other widths)")
        if self.cols == 1:
            yield (f"cols must be at least 2 (a LayerNorm table row keeps a chunk's prescale, "
                   f"multiplier and shift, in two lanes), not {self.cols}")
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
        if not (_is_pow2(self.max_row_len) and self.cols <= self.max_row_len <= MAX_ROW_LEN):
            yield (f"max_row_len must be a power of two from cols ({self.cols}) to "
                   f"{MAX_ROW_LEN}, not {self.max_row_len}")
        # Memory shapes: each bank must hold at least one tile.
        for mem, kib, banks, row_bytes in (
            ("scratchpad", "spad_kib", "spad_banks", self.spad_row_bytes),
            ("accumulator", "acc_kib", "acc_banks", self.acc_row_bytes),
        ):
            total = getattr(self, kib) * 1024
            nbanks = getattr(self, banks)
            if row_bytes <= 0:            # cols or rows already reported
                continue
            rows_total = total // row_bytes
            if rows_total < nbanks * self.rows:
                yield (f"the {mem} ({getattr(self, kib)} KiB of {row_bytes}-byte rows) must hold "
                       f"at least {self.rows} rows in each of its {nbanks} banks; "
                       f"raise {kib} or lower {banks}")

    # Derived values ---------------------------------------------------------------------

    @property
    def bus_bytes(self) -> int:
        """Bytes per beat on the AXI4 master: the DMA's peak bytes per cycle."""
        return self.bus_bits // 8

    @property
    def spad_row_bytes(self) -> int:
        """Bytes of one scratchpad row (wide enough for an input or a weight row)."""
        return math.ceil(max(self.rows * self.input_bits, self.cols * self.weight_bits) / 8)

    @property
    def acc_row_bytes(self) -> int:
        """Bytes of one accumulator row (``cols`` values of ``acc_bits``)."""
        return self.cols * self.acc_bits // 8

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

    @property
    def array(self) -> ArrayConfig:
        """The systolic array of this accelerator."""
        return ArrayConfig(self.rows, self.cols, self.input_bits, self.weight_bits,
                           self.acc_bits, self.dataflow)

    @property
    def hash32(self) -> int:
        """The first 32 bits of :attr:`hash`, as the hardware's identity register holds it."""
        return int(self.hash[:8], 16)

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
    # An 8x8 array with small memories: the FPGA-sized accelerator (an ECP5-85F).
    "small": dataclasses.replace(_DEFAULT, rows=8, cols=8, spad_kib=32, spad_banks=2,
                                 acc_kib=32, acc_banks=2, bus_bits=64, max_reads=4,
                                 max_writes=4, max_row_len=1024),
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


def load_config(text: str) -> ArrayConfig | TesseraConfig:
    """The configuration written by ``to_json`` of either kind (an accelerator's when the
    text does not say).

    Raises
    ------
    ConfigError
        As :meth:`TesseraConfig.from_json`.
    """
    try:
        kind = json.loads(text).get("kind")
    except (json.JSONDecodeError, AttributeError):
        kind = None
    return (ArrayConfig if kind == ArrayConfig.KIND else TesseraConfig).from_json(text)
